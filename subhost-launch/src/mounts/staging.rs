//! The idmapped lower layers attached on a staging directory while the
//! overlay is mounted over them (kernels that take no detached layers), and
//! the clearing of what an interrupted start left there.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::activate::mount_overlay;
use super::deactivate::unmount_tree;
use super::{idmap, mapped_layers, mount_points, quote, Idmap, MountEntry};

/// Where the idmapped lower layers of `name` are attached while its
/// overlay is mounted: host-wide and cleared at boot, like the netns.
pub fn staging_dir(name: &str) -> PathBuf {
    crate::run::of(name).staging()
}

/// Set to 1, the idmapped layers are attached on their staging directory
/// even where the kernel takes them as fds: how the tests cover the way
/// older kernels go.
pub(super) const STAGED_LAYERS: &str = "SUBHOST_STAGED_LAYERS";

/// The overlay over `trees` attached on `staging/N`: the staging levels are
/// made here, and removed again with rmdir once the copies are detached.
/// Whatever cannot be detached or removed stays, with a warning: `status`
/// reports it and `stop` clears it.
pub(super) fn mount_staged_overlay(
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
