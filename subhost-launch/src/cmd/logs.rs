//! `logs`: print a detached subhost's console log (the rotated file, then
//! the current one), filtered by service and time, and follow it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::console_log;
use crate::detached::{self, Console};
use crate::layout::Layout;

pub struct Request {
    pub follow: bool,
    pub lines: Option<usize>,
    pub service: Option<String>,
    pub since: Option<String>,
}

/// Which lines are shown.
struct Filter {
    service: Option<String>,
    /// A stamp: lines stamped before it are left out.
    since: Option<String>,
    /// The stamp of the last stamped line seen: an unstamped line belongs
    /// to the time of the one before it.
    last: Option<String>,
}

impl Filter {
    fn keep(&mut self, line: &str) -> bool {
        let text = match console_log::split(line) {
            Some((stamp, text)) => {
                self.last = Some(stamp.to_string());
                text
            }
            None => line,
        };
        if let Some(since) = &self.since {
            if self.last.as_deref().is_none_or(|l| l < since.as_str()) {
                return false;
            }
        }
        match &self.service {
            Some(s) => console_log::of_service(text, s),
            None => true,
        }
    }
}

/// The log file of `name`: the one its detached start recorded, else the
/// default `$SUBHOST/NAME/console.log`.
fn log_path(layout: &Layout) -> Result<PathBuf> {
    match detached::recorded_console(&layout.name) {
        Some(Console::File(p)) => Ok(p),
        Some(Console::Syslog) => bail!(
            "subhost {0} sends its console to syslog (--console syslog): read it there, e.g. \
             `journalctl -t subhost/{0}`",
            layout.name
        ),
        None => Ok(layout.dir.join("console.log")),
    }
}

pub fn logs(base: &Path, name: &str, req: &Request) -> Result<()> {
    let layout = Layout::new(base, name)?;
    if !crate::status::is_subhost(&layout.dir) {
        bail!(
            "no subhost {name}: {} is not a directory with a config or root \
             (`subhost-launch list` shows the subhosts there)",
            layout.dir.display()
        );
    }
    let since = req
        .since
        .as_deref()
        .map(|s| console_log::since(s, std::time::SystemTime::now()))
        .transpose()?;
    let path = log_path(&layout)?;
    let mut filter = Filter {
        service: req.service.clone(),
        since,
        last: None,
    };
    // Opened before reading: what is written from here on is followed from
    // this file, and what the rotated one holds was complete before it.
    let current = match File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && req.follow => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "subhost {name} has no console log at {}: it is written by `start --detach`",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut kept: Vec<String> = Vec::new();
    let mut keep = |text: &str, filter: &mut Filter| {
        for line in text.lines() {
            if filter.keep(line) {
                kept.push(line.to_string());
            }
        }
    };
    match std::fs::read(console_log::rotated(&path)) {
        Ok(b) => keep(&String::from_utf8_lossy(&b), &mut filter),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read the rotated log of {name}")),
    }
    let mut follower = Follower {
        path: path.clone(),
        file: current,
        pending: Vec::new(),
    };
    keep(&follower.read_new()?, &mut filter);
    let skip = match req.lines {
        Some(n) => kept.len().saturating_sub(n),
        None => 0,
    };
    let mut out = std::io::stdout().lock();
    for line in &kept[skip..] {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    drop(out);
    if req.follow {
        follower.follow(|text| {
            let mut out = std::io::stdout().lock();
            for line in text.lines() {
                if filter.keep(line) {
                    writeln!(out, "{line}")?;
                }
            }
            out.flush()
        })?;
    }
    Ok(())
}

/// Reads a log file as it grows, across rotation.
struct Follower {
    path: PathBuf,
    file: Option<File>,
    /// The start of a line not ended yet.
    pending: Vec<u8>,
}

impl Follower {
    /// The whole lines added since the last read.
    fn read_new(&mut self) -> Result<String> {
        let Some(f) = &mut self.file else {
            return Ok(String::new());
        };
        // Truncated (copytruncate): start again from its beginning.
        let pos = f.stream_position()?;
        if f.metadata()?.len() < pos {
            f.seek(SeekFrom::Start(0))?;
            self.pending.clear();
        }
        f.read_to_end(&mut self.pending)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let end = self.pending.iter().rposition(|&b| b == b'\n');
        let Some(end) = end else {
            return Ok(String::new());
        };
        let whole: Vec<u8> = self.pending.drain(..=end).collect();
        Ok(String::from_utf8_lossy(&whole).into_owned())
    }

    /// Whether the path names another file than the one open (rotated,
    /// or made since).
    fn replaced(&self) -> bool {
        let named = std::fs::metadata(&self.path).ok();
        match (&self.file, named) {
            (Some(f), Some(n)) => f
                .metadata()
                .map(|o| (o.ino(), o.dev()) != (n.ino(), n.dev()))
                .unwrap_or(true),
            (None, Some(_)) => true,
            (_, None) => false,
        }
    }

    /// Until interrupted (or stdout closed): waits on inotify for a change
    /// in the log's directory, then shows what was added; on rotation the
    /// rest of the old file first, then the new one from its start.
    fn follow(&mut self, mut show: impl FnMut(&str) -> std::io::Result<()>) -> Result<()> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let ino = Inotify::init(InitFlags::IN_CLOEXEC).context("cannot start inotify")?;
        ino.add_watch(
            dir,
            AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_DELETE,
        )
        .with_context(|| format!("cannot watch {}", dir.display()))?;
        loop {
            if self.replaced() {
                let rest = self.read_new()?;
                show(&rest)?;
                self.file = File::open(&self.path).ok();
                self.pending.clear();
            }
            let text = self.read_new()?;
            if !text.is_empty() {
                show(&text)?;
            }
            // Blocks until something in the directory changes.
            match ino.read_events() {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e).context("cannot read inotify events"),
            }
        }
    }
}
