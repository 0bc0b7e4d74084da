//! Clones: a new subhost with another's config (its own name, MACs and
//! user namespace range) and a copy of its files, or, `--shared`, the
//! other's upper layer as a read-only lower layer of its own.
//!
//! A shared source is a lower layer of a live overlay whenever its clone
//! runs, and a lower layer must not change under an overlay: so the
//! source is never started again while a clone's LOWER names its root
//! (`refuse_if_shared`, called by every start).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::{self, Config};
use crate::files::copy::{self, Shift};
use crate::layout::Layout;
use crate::provision::Aside;
use crate::state;
use crate::status::State;
use crate::userns::{self, Range, Setting};

/// What holds a subhost's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `root/` is the upper layer over LOWER.
    Overlay,
    /// `root/` is the whole filesystem.
    Plain,
    /// `NAME.img` holds `root/` and `work/`.
    Image,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Overlay => "overlay",
            Kind::Plain => "plain",
            Kind::Image => "image",
        }
    }
}

/// An existing subhost whose files are to be read: its config, as text
/// and parsed, its kind and state.
pub struct Source {
    pub layout: Layout,
    pub text: String,
    pub cfg: Config,
    pub kind: Kind,
    pub state: State,
}

/// The per-name locks of `names` (a name given twice is locked once),
/// taken in name order as every command that holds more than one takes
/// them, each waiting up to `wait` for a start, stop or other command of
/// that name. A lock file this made goes with the lock, so a stopped
/// subhost keeps nothing under the run dir.
pub fn lock(names: &[&str], wait: Duration) -> Result<Vec<state::Lock>> {
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
        .into_iter()
        .map(|n| state::lock(n, wait).map(|l| l.removed_unless_kept(n)))
        .collect()
}

/// How long a command on subhost files waits for another on the same
/// name: as a start does, the grace a stop gives the init plus a moment.
pub fn lock_wait(cfg: &Config) -> Duration {
    Duration::from_secs(cfg.stop_timeout.into()) + Duration::from_secs(2)
}

impl Source {
    /// `open`, with the lock of `name` and of each of `others` (valid
    /// names, as a `Layout` checks them) held: the
    /// state is looked at once no start or stop of it can run, and stays
    /// so while the locks are held.
    pub fn open_locked(
        base: &Path,
        name: &str,
        others: &[&str],
    ) -> Result<(Source, Vec<state::Lock>)> {
        let wait = lock_wait(&Source::open(base, name)?.cfg);
        let mut names = vec![name];
        names.extend_from_slice(others);
        let locks = lock(&names, wait)?;
        Ok((Source::open(base, name)?, locks))
    }

    pub fn open(base: &Path, name: &str) -> Result<Source> {
        let layout = Layout::new(base, name)?;
        if !crate::status::is_subhost(&layout.dir) {
            bail!(
                "no subhost {name}: {} has no config (see `subhost-launch list`)",
                layout.dir.display()
            );
        }
        let text = crate::files::read_text(&layout.config(), crate::files::CONFIG_MAX)
            .with_context(|| format!("cannot read {}", layout.config().display()))?;
        let cfg = config::load(&layout.config(), name, base)?;
        let kind = if layout.image_present() {
            Kind::Image
        } else if cfg.lower.is_empty() {
            Kind::Plain
        } else {
            Kind::Overlay
        };
        let state = crate::status::observe_one(&layout)?.state;
        Ok(Source {
            layout,
            text,
            cfg,
            kind,
            state,
        })
    }

    /// Refuses unless stopped or hibernating (nothing runs that writes),
    /// naming the state and what to do.
    pub fn require_still(&self, verb: &str) -> Result<()> {
        let name = &self.layout.name;
        match self.state {
            State::Stopped | State::Hibernating => Ok(()),
            State::Running => bail!(
                "subhost {name} is running: {verb} needs it stopped or hibernating \
                 (`subhost-launch stop {name}`, or end its session)"
            ),
            State::Broken => bail!(
                "subhost {name} is broken (partly set up): see `subhost-launch status {name}`, \
                 then `subhost-launch stop {name}` before {verb}"
            ),
        }
    }

    /// The range its files are owned by: recorded (`USERNS=pick` and a
    /// start or create since), else as the config fixes it.
    pub fn range(&self) -> Result<Option<Range>> {
        let Some(req) = self.cfg.userns else {
            return Ok(None);
        };
        Ok(match (userns::read_record(&self.layout)?, req.setting) {
            (Some(r), _) => Some(r),
            (None, Setting::Fixed(r)) => Some(r),
            (None, Setting::Pick) => None,
        })
    }

    /// Writes what a hibernating image's filesystem holds in memory to the
    /// image file, so a copy of the file is whole.
    pub fn sync_image(&self) -> Result<()> {
        if self.kind != Kind::Image || self.state == State::Stopped {
            return Ok(());
        }
        let mnt = self.layout.mnt();
        let f = fs::File::open(&mnt).with_context(|| format!("cannot open {}", mnt.display()))?;
        nix::unistd::syncfs(&f).with_context(|| format!("cannot sync {}", mnt.display()))
    }
}

/// Picks a new range for `name` among those in use under `base`.
pub fn pick_range(base: &Path, name: &str, setting: Setting) -> Result<Range> {
    let taken = userns::taken(base, name)?;
    userns::choose(name, setting, None, &taken)
        .map_err(|r| anyhow::anyhow!("no user namespace range for {name}: {} ({})", r, r.fix()))
}

pub fn clone(base: &Path, src: &str, dst: &str, shared: bool) -> Result<()> {
    let target = Layout::new(base, dst)?;
    // SRC must stay still while it is read, and DST's name free of another
    // clone or receive until this one has put its directory in place.
    let (s, _locks) = Source::open_locked(base, src, &[dst])?;
    s.require_still("clone")?;
    if shared {
        check_shareable(&s)?;
    }
    let src_range = s.range()?;
    let fixed = matches!(s.cfg.userns.map(|u| u.setting), Some(Setting::Fixed(_)));
    let dst_range = match s.cfg.userns.map(|u| u.setting) {
        Some(Setting::Pick) if s.kind == Kind::Image => bail!(
            "subhost {src} has USERNS and an image: its files would need shifting to {dst}'s \
             own range inside the image, which clone does not do (clone a subhost without \
             an image, or send it to another host, where it keeps its range if free)"
        ),
        Some(Setting::Pick) => Some(pick_range(base, dst, Setting::Pick)?),
        _ => None,
    };
    let shift = match (src_range, dst_range) {
        (Some(from), Some(to)) => Some(Shift { from, to }),
        _ => None,
    };
    let mut text = s.text.clone();
    text.push_str(&format!(
        "\n# Set by `subhost-launch clone {src} {dst}`{}: later lines win.\n",
        if shared { " --shared" } else { "" }
    ));
    text.push_str(&new_macs(&s.cfg)?);
    if shared {
        let mut layers = vec![s.layout.root(false)];
        layers.extend(s.cfg.lower.iter().cloned());
        text.push_str(&lower_line(&layers)?);
    }
    config::parse(&target.config(), &text, dst, base).map_err(|e| {
        anyhow::anyhow!("the clone's config does not parse: {} ({})", e.what, e.fix)
    })?;

    let aside = Aside::new(&target)?;
    let started = std::time::Instant::now();
    let totals = match (s.kind, shared) {
        (_, true) => {
            aside.make_dirs(false, true)?;
            copy::Totals::default()
        }
        (Kind::Image, false) => {
            s.sync_image()?;
            aside.make_dirs(true, false)?;
            copy_image(&s.layout.image(), &aside.dir.join(format!("{dst}.img")))?
        }
        (Kind::Overlay | Kind::Plain, false) => {
            aside.make_dirs(false, false)?;
            copy::copy_tree(
                &s.layout.root(false),
                &aside.dir.join("root"),
                shift.as_ref(),
            )?
        }
    };
    let cfg_path = aside.dir.join("config");
    fs::write(&cfg_path, &text).with_context(|| format!("cannot write {}", cfg_path.display()))?;
    aside.commit(dst_range)?;
    let took = started.elapsed();
    println!(
        "cloned subhost {src} to {dst} in {}: {}",
        target.dir.display(),
        if shared {
            format!(
                "{}'s root is its read-only lower layer ({} ms); {src} cannot start while \
                 {dst} exists",
                src,
                took.as_millis()
            )
        } else {
            format!(
                "{} entries, {} MiB copied in {} ms",
                totals.entries,
                totals.bytes >> 20,
                took.as_millis()
            )
        }
    );
    if let Some(r) = dst_range {
        println!("  its user namespace: host ids {}..{}", r.base, r.end() - 1);
    }
    if fixed {
        println!(
            "note: {src}'s config fixes its USERNS range; {dst} keeps that text, so the two \
             cannot run together until {dst}'s USERNS is changed"
        );
    }
    if !s.cfg.addresses.is_empty() {
        println!("note: ADDRESS is kept: give {dst} its own before both run on one bridge");
    }
    Ok(())
}

fn check_shareable(s: &Source) -> Result<()> {
    let name = &s.layout.name;
    if s.kind == Kind::Image {
        bail!(
            "subhost {name} keeps its root in an image: --shared needs a root directory as a \
             lower layer (clone without --shared)"
        );
    }
    if s.cfg.userns.is_some() {
        bail!(
            "subhost {name} has USERNS: its files are owned by its own range, which a shared \
             clone in another range cannot use (clone without --shared: the copy is shifted)"
        );
    }
    if s.state != State::Stopped {
        bail!(
            "subhost {name} is {}: --shared needs it stopped, since its root becomes a \
             read-only layer (`subhost-launch stop {name}`)",
            s.state.as_str()
        );
    }
    Ok(())
}

/// A `BRIDGES` line where every cable with a MAC gets a new one; empty
/// when no cable sets one (the kernel picks each at random).
fn new_macs(cfg: &Config) -> Result<String> {
    if cfg.bridges.iter().all(|c| c.mac.is_none()) {
        return Ok(String::new());
    }
    let mut items = Vec::new();
    for c in &cfg.bridges {
        let br = c.bridge.clone().unwrap_or_default();
        items.push(match c.mac {
            Some(_) => format!("'{br}={}'", crate::netns::mac_string(&random_mac()?)),
            None => format!("'{br}'"),
        });
    }
    Ok(format!("BRIDGES=({})\n", items.join(" ")))
}

/// A unicast, locally administered MAC address, as the kernel makes one.
fn random_mac() -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    // SAFETY: a writable buffer of the length given.
    let n = unsafe { libc::getrandom(mac[1..].as_mut_ptr().cast(), 5, 0) };
    if n != 5 {
        return Err(std::io::Error::last_os_error()).context("cannot read random bytes");
    }
    mac[0] = 0x02;
    Ok(mac)
}

fn lower_line(layers: &[PathBuf]) -> Result<String> {
    let mut parts = Vec::new();
    for l in layers {
        let s = l.to_str().filter(|s| !s.contains(':') && !s.contains('\''));
        match s {
            Some(s) => parts.push(s.to_string()),
            None => bail!(
                "{}: a path with ':' or a quote cannot be a LOWER layer (move the subhosts \
                 elsewhere)",
                l.display()
            ),
        }
    }
    Ok(format!("LOWER='{}'\n", parts.join(":")))
}

/// A sparse copy (or clone) of an image file, with its mode.
pub fn copy_image(src: &Path, dst: &Path) -> Result<copy::Totals> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = fs::metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
    copy::copy_file(src, dst, &m)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))
        .with_context(|| format!("cannot chmod {}", dst.display()))?;
    Ok(copy::Totals {
        entries: 1,
        bytes: fs::metadata(dst).map(|m| m.blocks() * 512).unwrap_or(0),
    })
}

/// Refuses to start `layout` while another subhost under the same
/// `$SUBHOST` has its root among its LOWER layers (a `clone --shared`).
pub fn refuse_if_shared(layout: &Layout) -> Result<()> {
    let users = shared_by(layout);
    if !users.is_empty() {
        bail!(
            "subhost {} is the read-only lower layer of {} (clone --shared): it cannot start \
             while they exist, since its root must not change under them (clone it without \
             --shared to get a subhost that runs)",
            layout.name,
            users.join(", ")
        );
    }
    Ok(())
}

/// The subhosts whose LOWER names `layout`'s root.
pub fn shared_by(layout: &Layout) -> Vec<String> {
    let root = layout.root(false);
    let real = root.canonicalize().unwrap_or(root.clone());
    let Ok(entries) = fs::read_dir(&layout.base) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(other) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if other == layout.name || crate::layout::validate_name(&other).is_err() {
            continue;
        }
        // Only a config that names this subhost can have its root as a
        // layer: every start reads its siblings, so the others are not parsed.
        let path = e.path().join("config");
        match crate::files::read_text(&path, crate::files::CONFIG_MAX) {
            Ok(text) if text.contains(layout.name.as_str()) => {}
            _ => continue,
        }
        let Ok(cfg) = config::load(&path, &other, &layout.base) else {
            continue;
        };
        if cfg
            .lower
            .iter()
            .any(|l| l == &root || l.canonicalize().is_ok_and(|c| c == real))
        {
            out.push(other);
        }
    }
    out.sort();
    out
}
