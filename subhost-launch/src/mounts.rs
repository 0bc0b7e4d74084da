//! The subhost's root on the host: `live` as an overlay of `root` over the
//! lower layers, or an rbind of `root`, optionally from an image file
//! loop-mounted on `mnt`. These mounts live in the host's mount namespace so
//! that they outlive a session (hibernation).
//!
//! Everything is done in-process (mount(2), loop ioctls): a helper exec costs
//! about as much as all the mounting itself.

pub mod idmap;
mod loopdev;
pub mod mountinfo;
mod overlay;
#[cfg(test)]
mod tests;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::config::Config;
use crate::layout::Layout;
use crate::userns::Range;

pub use mountinfo::{mount_points, MountEntry};

/// One host-side mount step, as data: printable for `--dry-run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Attach `image` to a free loop device (LOOP_CONFIGURE, autoclear) and
    /// mount it on `mnt`.
    AttachImage { image: PathBuf, mnt: PathBuf },
    /// `mount -t overlay overlay -o lowerdir=…,upperdir=…,workdir=… live`
    Overlay {
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        live: PathBuf,
        /// With USERNS: each lower layer is an idmapped copy.
        idmap: Option<Idmap>,
    },
    /// `mount --rbind root live`; with USERNS an idmapped copy of root.
    Rbind {
        root: PathBuf,
        live: PathBuf,
        idmap: Option<Range>,
    },
    /// With USERNS and an overlay: the upper layer's top directory belongs
    /// to root inside (host `BASE`), or root inside could not write to `/`
    /// (copied-up directories take their owners from the idmapped lower).
    /// Done when it is owned by an id outside the range; nothing below it
    /// is touched.
    OwnUpper { upper: PathBuf, range: Range },
}

/// How an overlay's lower layers are idmapped: each is cloned with the map
/// of `range` and attached on `staging/N` while the overlay is mounted over
/// them, then detached again (the overlay keeps its own reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idmap {
    pub range: Range,
    pub staging: PathBuf,
}

impl Idmap {
    fn layer(&self, i: usize) -> PathBuf {
        self.staging.join(i.to_string())
    }
    /// `mount(8)` of util-linux 2.39 maps both uids and gids with this.
    fn option(&self) -> String {
        format!("X-mount.idmap=0:{}:{}", self.range.base, self.range.count)
    }
}

impl fmt::Display for Step {
    /// The shell command the step replaces. `mount -o loop` is what does the
    /// same as AttachImage: a free device, autoclear, the type probed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::AttachImage { image, mnt } => {
                write!(
                    f,
                    "mount -o loop {} {}   # refused while losetup -j shows it attached",
                    quote(image),
                    quote(mnt)
                )
            }
            Step::Overlay {
                lower,
                upper,
                work,
                live,
                idmap,
            } => {
                // One line, as -v logs the step.
                let layers = mapped_layers(lower, idmap.as_ref());
                if let Some(m) = idmap {
                    for (i, l) in lower.iter().enumerate() {
                        write!(
                            f,
                            "mkdir -p {1} && mount --bind -o {0} {2} {1} && ",
                            m.option(),
                            quote(m.layer(i)),
                            quote(l)
                        )?;
                    }
                }
                write!(
                    f,
                    "mount -t overlay overlay -o {} {}",
                    quote(overlay_options(&layers, upper, work)),
                    quote(live)
                )?;
                if let Some(m) = idmap {
                    let staged: Vec<String> = (0..lower.len()).map(|i| quote(m.layer(i))).collect();
                    write!(
                        f,
                        " && umount -l {0} && rmdir {0} {1}",
                        staged.join(" "),
                        quote(&m.staging)
                    )?;
                    // What runs where the kernel allows: nothing attached,
                    // so nothing a killed start could leave mounted.
                    write!(
                        f,
                        "   # in-process: the idmapped copies go to overlayfs as file \
                         descriptors, unattached, where the kernel takes them"
                    )?;
                }
                Ok(())
            }
            Step::Rbind {
                root,
                live,
                idmap: None,
            } => write!(f, "mount --rbind {} {}", quote(root), quote(live)),
            Step::Rbind {
                root,
                live,
                idmap: Some(r),
            } => write!(
                f,
                "mount --rbind -o X-mount.idmap=0:{}:{} {} {}",
                r.base,
                r.count,
                quote(root),
                quote(live)
            ),
            Step::OwnUpper { upper, range } => write!(
                f,
                "chown {0}:{0} {1}  # only when owned outside {2}",
                range.base,
                quote(upper),
                range
            ),
        }
    }
}

/// Quotes for a POSIX shell when needed, so a dry-run line can be pasted.
fn quote(s: impl AsRef<OsStr>) -> String {
    let s = s.as_ref().to_string_lossy().into_owned();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-,:=+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The lower layers as the overlay is given them: the staged idmapped
/// copies, or the layers themselves.
fn mapped_layers(lower: &[PathBuf], idmap: Option<&Idmap>) -> Vec<PathBuf> {
    match idmap {
        Some(m) => (0..lower.len()).map(|i| m.layer(i)).collect(),
        None => lower.to_vec(),
    }
}

/// The steps that activate the root of `layout` under `cfg`, in order.
/// With a user namespace `range` (USERNS) the root is shown through its
/// map: an rbind root or image root idmapped, or an overlay over idmapped
/// lower layers whose upper stays as is, so that what root inside writes
/// lands there as host `BASE + n`.
pub fn plan(layout: &Layout, cfg: &Config, range: Option<Range>) -> Vec<Step> {
    let image = layout.image_present();
    let mut steps = Vec::new();
    if image {
        steps.push(Step::AttachImage {
            image: layout.image(),
            mnt: layout.mnt(),
        });
    }
    let (root, work, live) = (layout.root(image), layout.work(image), layout.live());
    if cfg.lower.is_empty() {
        steps.push(Step::Rbind {
            root,
            live,
            idmap: range,
        });
    } else {
        if let Some(range) = range {
            steps.push(Step::OwnUpper {
                upper: root.clone(),
                range,
            });
        }
        steps.push(Step::Overlay {
            lower: cfg.lower.clone(),
            upper: root,
            work,
            live,
            idmap: range.map(|range| Idmap {
                range,
                staging: staging_dir(&layout.name),
            }),
        });
    }
    steps
}

/// Where the idmapped lower layers of `name` are attached while its
/// overlay is mounted: host-wide and cleared at boot, like the netns.
pub fn staging_dir(name: &str) -> PathBuf {
    Path::new(crate::state::RUN_DIR).join(format!("{name}.lower"))
}

/// Checks the plan's inputs (root exists, lower layers exist, …), creates
/// missing `work`/`live`, and performs the steps. All or nothing.
///
/// A step whose target already holds what it would mount is skipped, so a
/// hibernating subhost is reused as it is. On failure, the steps this call
/// performed are unmounted again (never any data removed).
///
/// `userns` is the user namespace whose map idmapped steps use; they are
/// refused without it.
pub fn activate(steps: &[Step], userns: Option<BorrowedFd<'_>>) -> anyhow::Result<()> {
    // Paths inside an image can only be checked once it is mounted; the
    // rest is checked before anything is done.
    let mut inside_image: Vec<&Path> = Vec::new();
    for step in steps {
        check(step, &inside_image)?;
        if let Step::AttachImage { mnt, .. } = step {
            inside_image.push(mnt);
        }
    }
    let mut done: Vec<PathBuf> = Vec::new();
    for step in steps {
        match run(step, userns) {
            Ok(Some(target)) => done.push(target),
            Ok(None) => {}
            Err(e) => {
                undo(&done);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Unmounts what this call mounted, newest first. Failures are logged, not
/// returned: the caller reports the error that made us undo.
fn undo(done: &[PathBuf]) {
    for target in done.iter().rev() {
        log::info!("undo: unmounting {}", target.display());
        if let Err(e) = unmount_tree(target) {
            log::warn!("undo: {e:#}");
        }
    }
}

/// Performs one step; returns the mount point it mounted, or None when the
/// step was already in place.
fn run(step: &Step, userns: Option<BorrowedFd<'_>>) -> anyhow::Result<Option<PathBuf>> {
    check(step, &[])?;
    if let Step::OwnUpper { upper, range } = step {
        crate::logging::step(step, || own_upper(upper, range))?;
        return Ok(None);
    }
    let mapped = matches!(
        step,
        Step::Overlay { idmap: Some(_), .. } | Step::Rbind { idmap: Some(_), .. }
    );
    let userns = match (mapped, userns) {
        (true, None) => bail!("{step}: an idmapped mount needs the subhost's user namespace"),
        (true, Some(u)) => Some(u),
        (false, _) => None,
    };
    let target = match step {
        Step::AttachImage { mnt, .. } => mnt,
        Step::Overlay { live, work, .. } => {
            ensure_dir(work, "work")?;
            live
        }
        Step::Rbind { live, .. } => live,
        Step::OwnUpper { .. } => unreachable!("done above"),
    };
    ensure_dir(target, target_role(step))?;
    if let Step::Overlay { upper, work, .. } = step {
        same_mount(upper, work)?;
    }
    if let Step::Overlay { idmap: Some(m), .. } = step {
        // Left by a start killed while its layers were attached: detached
        // and its directories removed before anything else is done here.
        clear_staging(&m.staging)?;
    }
    match current(step)? {
        Current::Matches => {
            log::info!("already mounted, reusing: {step}");
            return Ok(None);
        }
        Current::Other(what) => bail!(
            "{} is already a mount point ({what}), not what this subhost needs: \
             unmount it (umount -R {}) or stop the subhost, then start again",
            target.display(),
            quote(target)
        ),
        Current::Nothing => {}
    }
    if let Step::AttachImage { image, .. } = step {
        refuse_attached(image)?;
    }
    crate::logging::step(step, || match step {
        Step::AttachImage { image, mnt } => mount_image(image, mnt),
        Step::Overlay {
            lower,
            upper,
            work,
            live,
            idmap: None,
        } => mount_overlay(lower, upper, work, live),
        Step::Overlay {
            lower,
            upper,
            work,
            live,
            idmap: Some(m),
        } => mount_mapped_overlay(lower, upper, work, live, m, userns.expect("checked")),
        Step::Rbind {
            root,
            live,
            idmap: Some(_),
        } => idmap::clone_mapped(root, userns.expect("checked"), true)
            .and_then(|tree| idmap::attach(&tree, live))
            .with_context(|| format!("{step}")),
        Step::OwnUpper { .. } => unreachable!("done above"),
        Step::Rbind { root, live, .. } => nix::mount::mount(
            Some(root.as_path()),
            live.as_path(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(io::Error::from)
        .with_context(|| format!("{step}")),
    })?;
    Ok(Some(target.clone()))
}

fn target_role(step: &Step) -> &'static str {
    match step {
        Step::AttachImage { .. } => "mnt",
        _ => "live",
    }
}

/// Validates a step's inputs, except paths below `deferred` (not there yet).
fn check(step: &Step, deferred: &[&Path]) -> anyhow::Result<()> {
    let later = |p: &Path| deferred.iter().any(|d| p.starts_with(d));
    match step {
        Step::AttachImage { image, mnt } => {
            if !image.is_file() {
                bail!("image {} is not a regular file", image.display());
            }
            loopdev::probe_fs(image)?;
            no_symlink(mnt, "mnt")?;
        }
        Step::Overlay {
            lower,
            upper,
            work,
            live,
            ..
        } => {
            for l in lower.iter().filter(|l| !later(l)) {
                check_lower(l)?;
            }
            if !later(upper) {
                check_root(upper)?;
            }
            if !later(work) {
                no_symlink(work, "work")?;
            }
            no_symlink(live, "live")?;
        }
        Step::OwnUpper { upper, .. } => {
            if !later(upper) {
                check_root(upper)?;
            }
        }
        Step::Rbind { root, live, .. } => {
            if !later(root) {
                check_root(root)?;
            }
            no_symlink(live, "live")?;
        }
    }
    Ok(())
}

/// The subhost's own filesystem must be a directory of its own: a symlink
/// there would make whatever it points to on the host the subhost's
/// writable root (and, with USERNS, have it chowned), so it is refused,
/// never followed.
fn check_root(root: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symlink{}: the subhost's filesystem must be a directory there, never a \
             link to elsewhere on the host; replace the link with the directory itself (or \
             move the whole subhost directory there)",
            root.display(),
            std::fs::read_link(root)
                .map(|t| format!(" to {}", t.display()))
                .unwrap_or_default()
        ),
        Ok(_) => bail!(
            "{} is not a directory: the subhost's filesystem must be a directory there",
            root.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "{} does not exist: create it (mkdir -p {}) or put the subhost's filesystem there",
            root.display(),
            quote(root)
        ),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", root.display())),
    }
}

fn check_lower(lower: &Path) -> anyhow::Result<()> {
    if !lower.is_absolute() {
        bail!(
            "lower layer {} is not an absolute path: fix LOWER in the config",
            lower.display()
        );
    }
    match std::fs::metadata(lower) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!(
            "lower layer {} is not a directory: fix LOWER in the config",
            lower.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "lower layer {} does not exist: create it or fix LOWER in the config",
            lower.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot inspect lower layer {}", lower.display())),
    }
}

/// `live`, `mnt` and `work` must be real directories: mounting follows a
/// symlink, and unmounting "everything below live" must not follow one to `/`.
fn no_symlink(path: &Path, role: &str) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!(
            "{} ({role}) exists but is not a directory: move it away; it is created when missing",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }
}

fn ensure_dir(path: &Path, role: &str) -> anyhow::Result<()> {
    no_symlink(path, role)?;
    if !path.exists() {
        std::fs::create_dir(path)
            .with_context(|| format!("cannot create {role} directory {}", path.display()))?;
    }
    Ok(())
}

/// overlayfs needs upperdir and workdir under the same mount; saying so
/// here beats the kernel's bare EINVAL.
fn same_mount(upper: &Path, work: &Path) -> anyhow::Result<()> {
    let (u, w) = (mount_id(upper)?, mount_id(work)?);
    if u != w {
        bail!(
            "{} (upper) and {} (work) are on different mounts; overlayfs needs both \
             on the same one: make work a directory next to root on root's filesystem",
            upper.display(),
            work.display()
        );
    }
    Ok(())
}

fn mount_id(path: &Path) -> anyhow::Result<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statx is plain data; all-zero is a valid initial value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path and st a writable statx buffer, both
    // alive for the call.
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_MNT_ID, &mut st) };
    if r != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot inspect {}", path.display()));
    }
    Ok(st.stx_mnt_id)
}

enum Current {
    Nothing,
    Matches,
    /// Something else is mounted there; says what.
    Other(String),
}

/// What is mounted at the step's target now, compared with what it would
/// mount.
fn current(step: &Step) -> anyhow::Result<Current> {
    let target = match step {
        Step::AttachImage { mnt, .. } => mnt,
        Step::Overlay { live, .. } | Step::Rbind { live, .. } => live,
        Step::OwnUpper { .. } => return Ok(Current::Nothing),
    };
    let target = target
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", target.display()))?;
    // The usual case on a cold start: nothing mounted there, which one
    // statx tells without the mount table (which grows with every subhost
    // up, and which the kernel formats anew on every read).
    if is_mount_root(&target) == Some(false) {
        return Ok(Current::Nothing);
    }
    let entries = mount_points().context("cannot read /proc/self/mountinfo")?;
    // The last entry at a mount point is the one on top, the one visible.
    let Some(top) = entries.iter().rev().find(|e| e.mount_point == target) else {
        return Ok(Current::Nothing);
    };
    let matches = match step {
        Step::AttachImage { image, .. } => {
            top.source.starts_with("/dev/loop")
                && loopdev::backing_id(Path::new(&top.source)).ok().flatten()
                    == Some(loopdev::file_id(image)?)
        }
        Step::Overlay {
            lower,
            upper,
            work,
            idmap,
            ..
        } => {
            top.fs_type == "overlay"
                && overlay_matches(&top.super_options, lower, upper, work, idmap.is_some())
        }
        Step::OwnUpper { .. } => false,
        Step::Rbind { root, live, .. } => {
            matches!((loopdev::file_id(live), loopdev::file_id(root)), (Ok(a), Ok(b)) if a == b)
        }
    };
    Ok(if matches {
        Current::Matches
    } else {
        Current::Other(format!("{} from {}", top.fs_type, top.source))
    })
}

/// Whether an overlay's superblock options name the same directories
/// (compared by identity, so differently spelled paths still match). The
/// staged copies of `mapped` lower layers are gone once it is mounted:
/// their number is what can be compared.
fn overlay_matches(
    options: &str,
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    mapped: bool,
) -> bool {
    let opts = split_escaped(options.as_bytes(), b',');
    let get = |key: &str| {
        opts.iter()
            .find_map(|o| o.strip_prefix(format!("{key}=").as_bytes()))
    };
    let same = |shown: &[u8], want: &Path| {
        let shown = PathBuf::from(OsString::from_vec(unescape_backslash(shown)));
        matches!(
            (loopdev::file_id(&shown), loopdev::file_id(want)),
            (Ok(a), Ok(b)) if a == b
        )
    };
    let (Some(u), Some(w)) = (get("upperdir"), get("workdir")) else {
        return false;
    };
    // Layers given as fds are listed one `lowerdir+=` each, by the path
    // of a copy that is attached nowhere.
    let layers = match get("lowerdir") {
        Some(l) => split_escaped(l, b':'),
        None => opts
            .iter()
            .filter_map(|o| o.strip_prefix(b"lowerdir+=".as_slice()))
            .collect(),
    };
    !layers.is_empty()
        && layers.len() == lower.len()
        && (mapped || layers.iter().zip(lower).all(|(s, p)| same(s, p)))
        && same(u, upper)
        && same(w, work)
}

/// Splits at `sep` not preceded by a backslash escape (overlayfs's syntax).
fn split_escaped(s: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < s.len() {
        if s[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i] == sep {
            parts.push(&s[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    parts.push(&s[start.min(s.len())..]);
    parts
}

fn unescape_backslash(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.iter();
    while let Some(&b) = it.next() {
        if b == b'\\' {
            if let Some(&n) = it.next() {
                out.push(n);
                continue;
            }
        }
        out.push(b);
    }
    out
}

/// overlayfs splits its options at `,`, lowerdir at `:`, and takes `\` as
/// the escape for both.
fn escape_overlay(p: &Path) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.as_os_str().len());
    for &b in p.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b',' | b':') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

fn overlay_options(lower: &[PathBuf], upper: &Path, work: &Path) -> OsString {
    let mut o = b"lowerdir=".to_vec();
    for (i, l) in lower.iter().enumerate() {
        if i > 0 {
            o.push(b':');
        }
        o.extend(escape_overlay(l));
    }
    o.extend(b",upperdir=");
    o.extend(escape_overlay(upper));
    o.extend(b",workdir=");
    o.extend(escape_overlay(work));
    OsString::from_vec(o)
}

/// mount(2) copies at most one page of options.
const MAX_MOUNT_DATA: usize = 4095;

fn mount_overlay(lower: &[PathBuf], upper: &Path, work: &Path, live: &Path) -> anyhow::Result<()> {
    let opts = overlay_options(lower, upper, work);
    if opts.len() > MAX_MOUNT_DATA {
        bail!(
            "overlay options for {} are {} bytes, the kernel takes at most {MAX_MOUNT_DATA}: \
             use fewer or shorter LOWER paths",
            live.display(),
            opts.len()
        );
    }
    nix::mount::mount(
        Some("overlay"),
        live,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_os_str()),
    )
    .map_err(io::Error::from)
    .with_context(|| {
        format!(
            "mount -t overlay overlay -o {} {} failed (the kernel log, dmesg, has overlayfs's reason)",
            quote(&opts),
            quote(live)
        )
    })
}

/// An overlay over idmapped copies of `lower`. Where the kernel takes
/// layers as file descriptors (Linux 6.15: detached mounts as layers), the
/// copies go to overlayfs unattached: nothing is ever mounted but the
/// overlay, and a start killed half-way leaves no copy behind (the copies
/// die with the launcher's fds). Elsewhere each copy is attached on its
/// staging directory for the overlay's mount, then detached again.
fn mount_mapped_overlay(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    live: &Path,
    m: &Idmap,
    userns: BorrowedFd<'_>,
) -> anyhow::Result<()> {
    let mut trees = Vec::with_capacity(lower.len());
    for l in lower {
        // Whole layers only, as overlayfs takes them: no mounts below.
        let tree = idmap::clone_mapped(l, userns, false)
            .and_then(|t| idmap::make_private(&t).map(|()| t))
            .with_context(|| format!("lower layer {}", l.display()))?;
        trees.push(tree);
    }
    // The tests take the older kernels' way here too.
    if std::env::var_os(STAGED_LAYERS).is_some_and(|v| v == "1") {
        log::info!(
            "{STAGED_LAYERS}=1: attaching the layers on {}",
            m.staging.display()
        );
        return mount_staged_overlay(&trees, lower, upper, work, live, m);
    }
    match overlay::mount_from_fds(&trees, upper, work, live) {
        Ok(()) => Ok(()),
        Err(overlay::FdError::Unsupported(why)) => {
            log::info!(
                "overlayfs takes no unattached layers here ({why}): attaching them on {}",
                m.staging.display()
            );
            mount_staged_overlay(&trees, lower, upper, work, live, m)
        }
        Err(overlay::FdError::Failed(e)) => Err(e),
    }
}

/// Set to 1, the idmapped layers are attached on their staging directory
/// even where the kernel takes them as fds: how the tests cover the way
/// older kernels go.
const STAGED_LAYERS: &str = "SUBHOST_STAGED_LAYERS";

/// The overlay over `trees` attached on `staging/N`: the staging levels are
/// made here, and removed again with rmdir once the copies are detached.
/// Whatever cannot be detached or removed stays, with a warning: `status`
/// reports it and `stop` clears it.
fn mount_staged_overlay(
    trees: &[std::os::fd::OwnedFd],
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    live: &Path,
    m: &Idmap,
) -> anyhow::Result<()> {
    let mut made = Vec::new();
    let mut staged = Vec::new();
    let mut result = make_staging_dir(&m.staging);
    if result.is_ok() {
        made.push(m.staging.clone());
    }
    for (i, tree) in trees.iter().enumerate() {
        if result.is_err() {
            break;
        }
        let at = m.layer(i);
        match std::fs::create_dir(&at) {
            Ok(()) => made.push(at.clone()),
            Err(e) => {
                result =
                    Err(anyhow::Error::new(e).context(format!("cannot create {}", at.display())));
                break;
            }
        }
        match idmap::attach(tree, &at) {
            Ok(()) => staged.push(at),
            Err(e) => result = Err(e.context(format!("lower layer {}", lower[i].display()))),
        }
    }
    if result.is_ok() {
        result = mount_overlay(&mapped_layers(lower, Some(m)), upper, work, live);
    }
    let mut detached = true;
    for at in &staged {
        if let Err(e) = nix::mount::umount2(at, MntFlags::MNT_DETACH) {
            log::warn!("cannot detach the staged layer {}: {e}", at.display());
            detached = false;
        }
    }
    if detached {
        for d in made.iter().rev() {
            if let Err(e) = std::fs::remove_dir(d) {
                log::warn!("cannot remove {}: {e}", d.display());
            }
        }
    } else {
        log::warn!(
            "{} is left in place: `subhost-launch status` reports it, `stop` clears it",
            m.staging.display()
        );
    }
    result
}

/// Makes the staging directory, which must not exist: `clear_staging` has
/// removed a leftover, so one there now was put there meanwhile.
fn make_staging_dir(staging: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(staging)
        .with_context(|| format!("cannot create the staging directory {}", staging.display()))
}

/// What a start left under `staging`: the mounts at or below it, and
/// whether the directory is there at all. None when nothing is.
pub fn staged_leftover(staging: &Path, mounts: &[MountEntry]) -> Option<String> {
    let n = mounts.iter().filter(|e| e.is_at_or_below(staging)).count();
    let there = staging.symlink_metadata().is_ok();
    match (there, n) {
        (false, 0) => None,
        (_, 0) => Some(format!(
            "leftover staging directory {} (from an interrupted start)",
            staging.display()
        )),
        (_, n) => Some(format!(
            "{n} staged lower layer{} still mounted under {} (from an interrupted start)",
            if n == 1 { "" } else { "s" },
            staging.display()
        )),
    }
}

/// Clears what an interrupted start left under `staging`: every mount at
/// or below it is made private (a staged copy of `/` shares the host's
/// propagation, and unmounting a mount below it would unmount the host's
/// own mount at the same place) and unmounted, the newest first; then the
/// directories a start makes there (`N/` for each layer, and `staging`)
/// are removed with rmdir. Anything else found there is reported, never
/// deleted. Returns whether anything was there.
pub fn clear_staging(staging: &Path) -> anyhow::Result<bool> {
    let meta = match staging.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", staging.display())),
    };
    if !meta.is_dir() {
        bail!(
            "{} is not a directory (a start stages layers in a directory there): look at \
             what it is and remove it (rm {}) if nothing of yours needs it",
            staging.display(),
            quote(staging)
        );
    }
    let below: Vec<MountEntry> = mount_points()
        .context("cannot read /proc/self/mountinfo")?
        .into_iter()
        .filter(|e| e.is_at_or_below(staging))
        .collect();
    if !below.is_empty() {
        crate::logging::step(
            format_args!(
                "mount --make-rprivate {0} && umount -R {0}   # staged layers of an interrupted start",
                quote(staging)
            ),
            || {
                for e in &below {
                    match nix::mount::mount(
                        None::<&str>,
                        &e.mount_point,
                        None::<&str>,
                        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                        None::<&str>,
                    ) {
                        // Gone already, with a parent or by propagation.
                        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                        Err(err) => {
                            return Err(io::Error::from(err)).with_context(|| {
                                format!(
                                    "cannot make {} private before unmounting it",
                                    e.mount_point.display()
                                )
                            })
                        }
                    }
                }
                unmount_tree(staging).map(|_| ())
            },
        )?;
    }
    let mut unexpected = Vec::new();
    let entries =
        std::fs::read_dir(staging).with_context(|| format!("cannot read {}", staging.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", staging.display()))?;
        let name = entry.file_name();
        let layer = name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !(layer && is_dir) || std::fs::remove_dir(entry.path()).is_err() {
            unexpected.push(entry.path());
        }
    }
    if !unexpected.is_empty() {
        bail!(
            "{} holds what a start does not leave there ({}): left in place; look at it and \
             remove it yourself when nothing needs it",
            staging.display(),
            unexpected
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    std::fs::remove_dir(staging).with_context(|| format!("cannot remove {}", staging.display()))?;
    Ok(true)
}

/// Gives the upper layer's top directory to root inside, unless an id of
/// the range owns it already.
fn own_upper(upper: &Path, range: &Range) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Opened without following a link, and chowned through that very fd:
    // a symlink swapped in after the check gives nothing of the host away.
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(upper)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => anyhow!(
                "{} is not a directory (a symlink?): the subhost's filesystem must be a \
                 directory there; replace it with the directory itself",
                upper.display()
            ),
            _ => anyhow::Error::new(e).context(format!("cannot open {}", upper.display())),
        })?;
    let meta = dir
        .metadata()
        .with_context(|| format!("cannot inspect {}", upper.display()))?;
    let inside = |id: u32| id >= range.base && u64::from(id) < range.end();
    if inside(meta.uid()) && inside(meta.gid()) {
        return Ok(());
    }
    std::os::unix::fs::fchown(&dir, Some(range.base), Some(range.base)).with_context(|| {
        format!(
            "cannot give {} to root of the subhost's user namespace (host id {})",
            upper.display(),
            range.base
        )
    })
}

/// Attaches, mounts, and checks that the image has a `root/`; leaves
/// nothing behind when any of that fails.
fn mount_image(image: &Path, mnt: &Path) -> anyhow::Result<()> {
    let fs = loopdev::probe_fs(image)?;
    let dev = loopdev::attach(image)?;
    // Dropping `dev` on an error path releases the device (autoclear).
    nix::mount::mount(
        Some(dev.device.as_path()),
        mnt,
        Some(fs),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(io::Error::from)
    .with_context(|| {
        format!(
            "mount -t {fs} {} {} (image {}) failed",
            dev.device.display(),
            mnt.display(),
            image.display()
        )
    })?;
    drop(dev);
    let root = mnt.join("root");
    if !root.is_dir() {
        if let Err(e) = unmount_tree(mnt) {
            log::warn!("{e:#}");
        }
        bail!(
            "image {} has no root/ directory at its top: mount it (mount -o loop {} DIR), \
             create DIR/root and DIR/work, and put the subhost's filesystem in DIR/root",
            image.display(),
            quote(image)
        );
    }
    Ok(())
}

/// Whether `live` of `layout` is mounted now (read from mountinfo).
pub fn is_active(layout: &Layout) -> bool {
    let Some(live) = resolved(layout, "live") else {
        return false;
    };
    // One statx instead of reading and parsing the whole mount table, which
    // the kernel formats anew on every read; the table is the fallback for
    // kernels before 5.8.
    if let Some(root) = is_mount_root(&live) {
        return root;
    }
    mount_points()
        .map(|m| m.iter().any(|e| e.mount_point == live))
        .unwrap_or(false)
}

/// Whether `path` (not followed if a symlink) is the root of a mount, when
/// the kernel can say (STATX_ATTR_MOUNT_ROOT).
fn is_mount_root(path: &Path) -> Option<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statx is plain data; all-zero is a valid initial value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path and st a writable statx buffer, both
    // alive for the call.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            0,
            &mut st,
        )
    };
    if r != 0 {
        // Missing: certainly not mounted.
        return (io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT)).then_some(false);
    }
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    (st.stx_attributes_mask & bit != 0).then_some(st.stx_attributes & bit != 0)
}

/// `dir/NAME/<leaf>` with the subhost directory resolved but not `leaf`:
/// mountinfo has real paths, and a symlinked `live` must never lead the
/// unmounting elsewhere.
fn resolved(layout: &Layout, leaf: &str) -> Option<PathBuf> {
    layout.dir.canonicalize().ok().map(|d| d.join(leaf))
}

/// Unmounts `live` (and everything below it) and `mnt` (detaching the loop
/// device), and clears layers a start left staged. Returns whether anything
/// was mounted. Idempotent; never deletes data, and never unmounts a mount
/// at `live` or `mnt` that is not this subhost's own (see [`foreign`]).
pub fn deactivate(layout: &Layout) -> anyhow::Result<bool> {
    deactivate_all(&[layout]).remove(0)
}

/// [`deactivate`] for many subhosts, with one read of the mount table for
/// all of them instead of a few each (the table grows with every subhost,
/// so reading it per subhost costs the square of their number). One result
/// per layout; when the shared pass fails, each is done on its own so the
/// failure is told of the subhost it belongs to.
pub fn deactivate_all(layouts: &[&Layout]) -> Vec<anyhow::Result<bool>> {
    let mut out: Vec<anyhow::Result<bool>> = layouts.iter().map(|_| Ok(false)).collect();
    let table = match mount_points().context("cannot read /proc/self/mountinfo") {
        Ok(t) => t,
        Err(e) => {
            let e = format!("{e:#}");
            return layouts.iter().map(|_| Err(anyhow!("{e}"))).collect();
        }
    };
    let mut dirs: Vec<(usize, PathBuf)> = Vec::new();
    for (i, l) in layouts.iter().enumerate() {
        let (Some(live), Some(mnt)) = (resolved(l, "live"), resolved(l, "mnt")) else {
            continue;
        };
        let theirs = foreign(l, &table);
        if !theirs.is_empty() {
            out[i] = Err(anyhow!(
                "{}: left mounted, as it is not this subhost's; unmount it yourself once \
                 nothing needs it",
                theirs.join("; ")
            ));
            continue;
        }
        dirs.push((i, live));
        dirs.push((i, mnt));
    }
    let paths: Vec<&Path> = dirs.iter().map(|(_, d)| d.as_path()).collect();
    match unmount_trees(&paths) {
        Ok(had) => {
            for ((i, dir), had) in dirs.iter().zip(had) {
                if had {
                    // What `-v` shows of each.
                    log::info!("umount -R {}", quote(dir));
                }
                if let Ok(any) = &mut out[*i] {
                    *any |= had;
                }
            }
        }
        Err(_) => {
            // One by one, so that each failure is told of its subhost.
            for (i, dir) in &dirs {
                let r = unmount_step(dir);
                out[*i] = match (std::mem::replace(&mut out[*i], Ok(false)), r) {
                    (Ok(a), Ok(b)) => Ok(a || b),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
            }
        }
    }
    for (i, l) in layouts.iter().enumerate() {
        let cleared = clear_staging(&staging_dir(&l.name));
        out[i] = match (std::mem::replace(&mut out[i], Ok(false)), cleared) {
            (Ok(a), Ok(b)) => Ok(a || b),
            (Err(e), Ok(_)) => Err(e),
            (Ok(_), Err(e)) => Err(e),
            (Err(a), Err(b)) => Err(anyhow!("{a:#}; {b:#}")),
        };
    }
    out
}

/// What is mounted on top at `live` and `mnt` of `layout` that this
/// subhost's start does not make, each described: at `live` only an overlay
/// whose upper and work are this subhost's, or a bind of its own root; at
/// `mnt` only a loop device of its own image. Someone else's mount there
/// is neither reused by `start` nor unmounted by `stop`.
pub fn foreign(layout: &Layout, table: &[MountEntry]) -> Vec<String> {
    let mut out = Vec::new();
    let image = layout.image_present();
    let top = |leaf: &str| {
        let p = resolved(layout, leaf)?;
        table.iter().rev().find(|e| e.mount_point == p).cloned()
    };
    let same = |a: &Path, b: &Path| matches!((loopdev::file_id(a), loopdev::file_id(b)), (Ok(x), Ok(y)) if x == y);
    if let Some(e) = top("live") {
        let (root, work) = (layout.root(image), layout.work(image));
        let ours = if e.fs_type == "overlay" {
            let opts = split_escaped(e.super_options.as_bytes(), b',');
            let get = |key: &str| {
                opts.iter()
                    .find_map(|o| o.strip_prefix(format!("{key}=").as_bytes()))
                    .map(|v| PathBuf::from(OsString::from_vec(unescape_backslash(v))))
            };
            matches!((get("upperdir"), get("workdir")), (Some(u), Some(w))
                if same(&u, &root) && same(&w, &work))
        } else {
            same(&e.mount_point, &root)
        };
        if !ours {
            out.push(format!(
                "{} holds a mount that is not this subhost's ({} from {})",
                e.mount_point.display(),
                e.fs_type,
                e.source
            ));
        }
    }
    if let Some(e) = top("mnt") {
        let ours = image
            && e.source.starts_with("/dev/loop")
            && loopdev::backing_id(Path::new(&e.source)).ok().flatten()
                == loopdev::file_id(&layout.image()).ok();
        if !ours {
            out.push(format!(
                "{} holds a mount that is not this subhost's image ({} from {})",
                e.mount_point.display(),
                e.fs_type,
                e.source
            ));
        }
    }
    out
}

/// The loop devices (`loop3`, …) bound to the image of `layout` now.
pub fn image_devices(layout: &Layout) -> Vec<String> {
    if !layout.image_present() {
        return Vec::new();
    }
    loopdev::bound_to(&layout.image())
}

/// How often the wait for images' loop devices looks again.
const RELEASE_POLL: Duration = Duration::from_millis(5);

/// Waits up to `timeout` in all until no loop device is bound to the image
/// of any of `layouts`; one result per layout.
///
/// Unmounting `mnt` releases the device only when that was the last mount
/// of the image's filesystem: a mount namespace copied from the host while
/// it was mounted (another subhost's start, any `unshare -m`) keeps a copy
/// until that namespace drops it, and a process with the device open (a
/// `losetup`, `blkid`) keeps it bound until it closes it. Autoclear then
/// detaches it later, on its own; until then a new `start` would mount the
/// same filesystem a second time through another device.
pub fn wait_images_released(layouts: &[&Layout], timeout: Duration) -> Vec<anyhow::Result<()>> {
    let mut bound: Vec<(usize, Vec<String>)> = layouts
        .iter()
        .enumerate()
        .map(|(i, l)| (i, image_devices(l)))
        .filter(|(_, d)| !d.is_empty())
        .collect();
    if !bound.is_empty() {
        let all: Vec<&str> = bound
            .iter()
            .flat_map(|(_, d)| d)
            .map(String::as_str)
            .collect();
        let what = format!("# wait until detached: {}", all.join(" "));
        crate::logging::step(what, || {
            let end = Instant::now() + timeout;
            loop {
                for (i, devs) in bound.iter_mut() {
                    *devs = image_devices(layouts[*i]);
                }
                bound.retain(|(_, d)| !d.is_empty());
                if bound.is_empty() || Instant::now() >= end {
                    break;
                }
                std::thread::sleep(RELEASE_POLL);
            }
        });
    }
    let mut out: Vec<anyhow::Result<()>> = layouts.iter().map(|_| Ok(())).collect();
    for (i, devs) in bound {
        out[i] = Err(anyhow!(
            "image {} is still attached to {} {timeout:?} after its last mount here \
             was unmounted: the holder must let go (`losetup -j {}` shows when it has)",
            layouts[i].image().display(),
            with_holders(&devs),
            quote(layouts[i].image())
        ));
    }
    out
}

/// Loop devices with who holds each, for a message.
fn with_holders(devs: &[String]) -> String {
    let held: Vec<String> = devs
        .iter()
        .map(|d| {
            let who = loopdev::holders(d);
            if who.is_empty() {
                format!("/dev/{d}")
            } else {
                format!("/dev/{d} ({})", who.join(", "))
            }
        })
        .collect();
    held.join(", ")
}

/// An image still attached to a loop device (its holder outlived a
/// `stop`, or a `losetup` by hand) is not mounted again through another
/// device: two mounts of one ext4 at once corrupt it.
fn refuse_attached(image: &Path) -> anyhow::Result<()> {
    let devs = loopdev::bound_to(image);
    if devs.is_empty() {
        return Ok(());
    }
    bail!(
        "image {} is already attached to {}: a second device would mount its filesystem \
         twice; let the holder go (or `losetup -d` a device set up by hand), then start again",
        image.display(),
        with_holders(&devs)
    )
}

/// `unmount_tree` as a logged step of `stop`, when anything is mounted there.
fn unmount_step(dir: &Path) -> anyhow::Result<bool> {
    let mounted = mount_points()
        .context("cannot read /proc/self/mountinfo")?
        .iter()
        .any(|e| e.is_at_or_below(dir));
    if !mounted {
        return Ok(false);
    }
    crate::logging::step(format_args!("umount -R {}", quote(dir)), || {
        unmount_tree(dir)
    })
}

/// Passes over mountinfo before giving up: stacked mounts and mounts that
/// reappear by propagation need more than one.
const UNMOUNT_ROUNDS: usize = 8;

/// Unmounts every mount at or below `dir`, deepest first; a mount still busy
/// after the others are gone is detached lazily, with a warning. Returns
/// whether anything was mounted.
pub fn unmount_tree(dir: &Path) -> anyhow::Result<bool> {
    unmount_trees(&[dir]).map(|had| had[0])
}

/// [`unmount_tree`] for several directories at once; says for each whether
/// anything was mounted at or below it.
fn unmount_trees(dirs: &[&Path]) -> anyhow::Result<Vec<bool>> {
    let mut any = vec![false; dirs.len()];
    for _ in 0..UNMOUNT_ROUNDS {
        let mut below: Vec<(usize, MountEntry)> = mount_points()
            .context("cannot read /proc/self/mountinfo")?
            .into_iter()
            .enumerate()
            .filter(|(_, e)| {
                let mut hit = false;
                for (k, d) in dirs.iter().enumerate() {
                    if e.is_at_or_below(d) {
                        any[k] = true;
                        hit = true;
                    }
                }
                hit
            })
            .collect();
        if below.is_empty() {
            return Ok(any);
        }
        // Deepest first; at one mount point, the newest (topmost) first.
        below.sort_by_key(|(i, e)| std::cmp::Reverse((e.mount_point.components().count(), *i)));
        let mut busy = Vec::new();
        let mut progress = false;
        for (_, e) in &below {
            match nix::mount::umount2(&e.mount_point, MntFlags::empty()) {
                Ok(()) => progress = true,
                // Already gone (with a parent, or by propagation).
                Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(Errno::EBUSY) => busy.push(e.mount_point.clone()),
                Err(err) => {
                    return Err(io::Error::from(err))
                        .with_context(|| format!("cannot unmount {}", e.mount_point.display()))
                }
            }
        }
        if !progress {
            for p in busy {
                log::warn!(
                    "{} is busy (a process still uses it): detaching it lazily; \
                     it goes away when no longer used",
                    p.display()
                );
                nix::mount::umount2(&p, MntFlags::MNT_DETACH)
                    .map_err(io::Error::from)
                    .with_context(|| format!("cannot detach {}", p.display()))?;
            }
        }
    }
    Err(anyhow!(
        "mounts below {} remain after {UNMOUNT_ROUNDS} attempts to unmount them: \
         see /proc/self/mountinfo",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
