//! A detached subhost's console log file: its writer, a host process (the
//! log relay) that holds the read end of the console pipe, stamps each line
//! with the time it arrived (ISO 8601 UTC with milliseconds), appends it to
//! the file and rotates the file at LOG_MAX; and the format of its lines,
//! which `logs` reads back.
//!
//! Why a relay and not the file as the init's stdout: the subhost's
//! processes write whatever they like, unstamped and without bound; only a
//! writer that sees each line can stamp it, and only the one writer of the
//! file can rotate it without losing or repeating a line.
//!
//! Rotation: when a line would take the file past LOG_MAX, the file is
//! renamed to `LOG.1` (replacing the previous one) and a new one started.
//! The relay reopens the file by its path whenever it was renamed or
//! removed from under it (checked before each write: logrotate's `create`
//! needs no signal) or on SIGHUP; logrotate's `copytruncate` works too, as
//! the file is written with O_APPEND (each write lands at the end, also
//! after a truncation).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::{process, sys};

/// A partial line longer than this is written as a line of its own.
const MAX_LINE: usize = 64 << 10;

/// The rotated file of `path`: `path.1`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// Opens `path` for appending (created 0640).
fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
}

/// Opens the log at `path` and starts its relay, detached from the
/// launcher; returns the pipe's write end, the console of the subhost.
pub fn spawn(path: &Path, max: u64) -> Result<OwnedFd> {
    // Opened here, where a failure can still be told to the caller.
    let file =
        open_log(path).with_context(|| format!("cannot open the console {}", path.display()))?;
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let path = path.to_path_buf();
    let relay_main = || match relay_fds(r.as_raw_fd(), file.as_raw_fd()) {
        Ok(()) => {
            // SAFETY: relay_fds put the pipe on 0 and the file on 3;
            // nothing else owns them now.
            let (input, file) = unsafe { (OwnedFd::from_raw_fd(0), File::from_raw_fd(3)) };
            let mut w = Writer::new(file, path, max);
            relay(input, &mut w);
            0
        }
        Err(_) => 1,
    };
    // SAFETY: the launcher is single-threaded; the relay leaves through
    // exit_now.
    unsafe { process::daemon(relay_main) }.context("cannot fork the console log relay")?;
    Ok(w)
}

/// In the relay: the pipe on 0, /dev/null on 1 and 2, `out` on 3, every
/// other fd closed (the launcher's lock among them, which would otherwise
/// be held for the subhost's whole life), and `/` as cwd.
pub fn relay_fds(input: RawFd, out: RawFd) -> std::io::Result<()> {
    // Rust objects owning the old numbers are never dropped (the relay
    // leaves through exit_now).
    let input = sys::dup_above(input, 10)?;
    let out = sys::dup_above(out, 10)?;
    let null = sys::open_raw(c"/dev/null", libc::O_RDWR)?;
    sys::dup2(input, 0)?;
    sys::dup2(null, 1)?;
    sys::dup2(null, 2)?;
    sys::dup2(out, 3)?;
    sys::close_range(4, u32::MAX, false)?;
    std::env::set_current_dir("/")?;
    Ok(())
}

static REOPEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sighup(_: libc::c_int) {
    REOPEN.store(true, Ordering::Relaxed);
}

/// Reads lines from `input` until EOF and hands each to `w`, stamped.
/// SIGHUP interrupts a read (no SA_RESTART) and makes the next write go
/// to a newly opened file.
fn relay(input: OwnedFd, w: &mut Writer) {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_sighup),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    let _ = unsafe { sigaction(Signal::SIGHUP, &act) };
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
        Some(&SigSet::from(Signal::SIGHUP)),
        None,
    );
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let n = match nix::unistd::read(&input, &mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        let stamp = timestamp(SystemTime::now());
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            stamp_line(&mut out, &stamp, &line[..i]);
        }
        while pending.len() >= MAX_LINE {
            let piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
            stamp_line(&mut out, &stamp, &piece);
        }
        if !out.is_empty() {
            w.write(&out);
        }
    }
    if !pending.is_empty() {
        let mut out = Vec::new();
        stamp_line(&mut out, &timestamp(SystemTime::now()), &pending);
        w.write(&out);
    }
}

fn stamp_line(out: &mut Vec<u8>, stamp: &str, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    out.extend_from_slice(stamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// The one writer of a log file: appends, reopens, rotates.
pub struct Writer {
    file: File,
    path: PathBuf,
    max: u64,
}

impl Writer {
    pub fn new(file: File, path: PathBuf, max: u64) -> Writer {
        Writer { file, path, max }
    }

    /// Whether `path` still names the open file.
    fn current(&self) -> bool {
        match (self.file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(open), Ok(named)) => open.ino() == named.ino() && open.dev() == named.dev(),
            _ => false,
        }
    }

    fn reopen(&mut self) {
        // A file that cannot be opened leaves the old one in use: a line
        // is never dropped for want of a new file.
        if let Ok(f) = open_log(&self.path) {
            self.file = f;
        }
    }

    /// Appends `lines` (whole lines), rotating first when they would take
    /// the file past `max`. Best effort: a write error (a full disk) loses
    /// these lines and the relay goes on.
    pub fn write(&mut self, lines: &[u8]) {
        if REOPEN.swap(false, Ordering::Relaxed) || !self.current() {
            self.reopen();
        }
        let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if size > 0 && size + lines.len() as u64 > self.max {
            // rename, then a new file: a line is in exactly one of them.
            if std::fs::rename(&self.path, rotated(&self.path)).is_ok() {
                self.reopen();
            }
        }
        let _ = self.file.write_all(lines);
    }
}

/// `2026-12-07T14:30:00.123Z`.
pub fn timestamp(t: SystemTime) -> String {
    let u = crate::clock::Utc::of(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.milli
    )
}

/// Length of a stamp: `2026-12-07T14:30:00.123Z`.
pub const STAMP_LEN: usize = 24;

/// A log line split into its stamp and text; `None` for a line without a
/// stamp (written by an older launcher, or by hand).
pub fn split(line: &str) -> Option<(&str, &str)> {
    let stamp = line.get(..STAMP_LEN)?;
    let b = stamp.as_bytes();
    let shaped = b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[23] == b'Z'
        && line.as_bytes().get(STAMP_LEN) == Some(&b' ');
    shaped.then(|| (stamp, &line[STAMP_LEN + 1..]))
}

/// Whether `text` (a line without its stamp) is a line of service `s`:
/// services' lines are prefixed `NAME: `.
pub fn of_service(text: &str, s: &str) -> bool {
    text.strip_prefix(s)
        .is_some_and(|rest| rest.starts_with(": "))
}

/// `--since`: an ISO 8601 time (`2026-12-07T14:30:00[.123][Z]`, UTC; a
/// space for the T; the date alone is midnight) or a time ago (`30s`,
/// `10m`, `2h`, `1d`), as a stamp to compare lines' stamps with.
pub fn since(arg: &str, now: SystemTime) -> Result<String> {
    let bad = || {
        anyhow::anyhow!(
            "--since {arg:?}: give an ISO 8601 UTC time like 2026-12-07T14:30:00Z, or a time \
             ago like 30s, 10m, 2h or 1d"
        )
    };
    if let Some(unit) = arg.chars().last().filter(|c| "smhd".contains(*c)) {
        let n: u64 = arg[..arg.len() - 1].parse().map_err(|_| bad())?;
        let secs = match unit {
            's' => n,
            'm' => n * 60,
            'h' => n * 3600,
            _ => n * 86_400,
        };
        let t = now.checked_sub(Duration::from_secs(secs)).ok_or_else(bad)?;
        return Ok(timestamp(t));
    }
    let s = arg.strip_suffix('Z').unwrap_or(arg);
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, t),
        None => (s, "00:00:00"),
    };
    let num = |t: &str| t.parse::<u32>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, day] = d.as_slice() else {
        bail!(bad());
    };
    let (y, mo, day) = (num(y)?, num(mo)?, num(day)?);
    let (hms, ms) = match time.split_once('.') {
        Some((h, f)) => {
            let f = format!("{f:0<3}");
            (h, num(f.get(..3).ok_or_else(bad)?)?)
        }
        None => (time, 0),
    };
    let t: Vec<&str> = hms.split(':').collect();
    let (h, mi, sec) = match t.as_slice() {
        [h, m] => (num(h)?, num(m)?, 0),
        [h, m, s] => (num(h)?, num(m)?, num(s)?),
        _ => bail!(bad()),
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        bail!(bad());
    }
    let days = crate::clock::days_from_civil(i64::from(y), mo, day);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + sec);
    let t = UNIX_EPOCH + Duration::from_millis((secs.max(0) as u64) * 1000 + u64::from(ms));
    Ok(timestamp(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_with_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_653_800_123);
        assert_eq!(timestamp(t), "2026-12-07T14:30:00.123Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(t).len(), STAMP_LEN);
    }

    #[test]
    fn days_round_trip() {
        for z in [-1000, 0, 59, 60, 11_016, 20_000, 20_794, 100_000] {
            let (y, m, d) = crate::clock::civil_from_days(z);
            assert_eq!(crate::clock::days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn lines_split_into_stamp_and_text() {
        assert_eq!(
            split("2026-12-07T14:30:00.123Z web: up"),
            Some(("2026-12-07T14:30:00.123Z", "web: up"))
        );
        assert_eq!(split("2026-12-07T14:30:00+0100 old"), None);
        assert_eq!(split("short"), None);
        assert!(of_service("web: up", "web"));
        assert!(!of_service("webby: up", "web"));
        assert!(!of_service("web:up", "web"));
    }

    #[test]
    fn since_takes_iso_times_and_times_ago() {
        let now = UNIX_EPOCH + Duration::from_millis(1_796_653_800_123);
        assert_eq!(since("10m", now).unwrap(), "2026-12-07T14:20:00.123Z");
        assert_eq!(since("2h", now).unwrap(), "2026-12-07T12:30:00.123Z");
        assert_eq!(since("30s", now).unwrap(), "2026-12-07T14:29:30.123Z");
        assert_eq!(since("1d", now).unwrap(), "2026-12-06T14:30:00.123Z");
        for (arg, want) in [
            ("2026-12-07T14:30:00Z", "2026-12-07T14:30:00.000Z"),
            ("2026-12-07T14:30:00.5Z", "2026-12-07T14:30:00.500Z"),
            ("2026-12-07 14:30", "2026-12-07T14:30:00.000Z"),
            ("2026-12-07", "2026-12-07T00:00:00.000Z"),
        ] {
            assert_eq!(since(arg, now).unwrap(), want, "{arg}");
        }
        for bad in [
            "",
            "10x",
            "m",
            "2026-13-01",
            "2026-12-07T25:00",
            "yesterday",
        ] {
            let e = since(bad, now).unwrap_err().to_string();
            assert!(e.contains("ISO 8601"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_writer_rotates_at_max_keeping_one_file() {
        let dir = std::env::temp_dir().join(format!("subhost-test-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.log");
        let mut w = Writer::new(open_log(&path).unwrap(), path.clone(), 100);
        for i in 0..30 {
            w.write(format!("line {i:03}\n").as_bytes());
        }
        let cur = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(rotated(&path)).unwrap();
        assert!(cur.len() <= 100 && old.len() <= 100, "{cur:?} {old:?}");
        let all = format!("{old}{cur}");
        let last: Vec<String> = (0..30).map(|i| format!("line {i:03}")).collect();
        // The oldest lines are gone; the ones kept are in order, none twice.
        assert!(last.join("\n").ends_with(all.trim_end()), "{all}");
        // Renamed from under it: the writer starts a new file at the path.
        std::fs::rename(&path, dir.join("moved")).unwrap();
        w.write(b"after\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        for f in ["c.log", "c.log.1", "moved"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let _ = std::fs::remove_dir(&dir);
    }
}
