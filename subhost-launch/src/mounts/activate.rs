//! Carrying out a mount plan: each step's inputs checked, a step already
//! in place reused (a hibernating subhost), what this call mounted undone
//! on failure.

use std::ffi::OsString;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use nix::mount::MsFlags;

use crate::userns::Range;

use super::deactivate::unmount_tree;
use super::deactivate::with_holders;
use super::staging::clear_staging;
use super::staging::{mount_staged_overlay, STAGED_LAYERS};
use super::{
    idmap, loopdev, mount_points, overlay, overlay_options, quote, split_escaped,
    unescape_backslash, Idmap, Step,
};

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

/// mount(2) copies at most one page of options.
const MAX_MOUNT_DATA: usize = 4095;

pub(super) fn mount_overlay(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    live: &Path,
) -> anyhow::Result<()> {
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

/// Whether `path` (not followed if a symlink) is the root of a mount, when
/// the kernel can say (STATX_ATTR_MOUNT_ROOT).
pub(super) fn is_mount_root(path: &Path) -> Option<bool> {
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
