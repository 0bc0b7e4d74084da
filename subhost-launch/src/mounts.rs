//! The subhost's root on the host: `live` as an overlay of `root` over the
//! lower layers, or an rbind of `root`, optionally from an image file
//! loop-mounted on `mnt`. These mounts live in the host's mount namespace so
//! that they outlive a session (hibernation).
//!
//! (Interface fixed; bodies are being written.)

use std::fmt;
use std::path::PathBuf;

use crate::config::Config;
use crate::layout::Layout;

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
    },
    /// `mount --rbind root live`
    Rbind { root: PathBuf, live: PathBuf },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The steps that activate the root of `layout` under `cfg`, in order.
pub fn plan(layout: &Layout, cfg: &Config) -> Vec<Step> {
    let _ = (layout, cfg);
    Vec::new()
}

/// Checks the plan's inputs (root exists, lower layers exist, …), creates
/// missing `work`/`live`, and performs the steps. All or nothing.
pub fn activate(steps: &[Step]) -> anyhow::Result<()> {
    let _ = steps;
    anyhow::bail!("mounts::activate: not yet implemented")
}

/// Whether `live` of `layout` is mounted now (read from mountinfo).
pub fn is_active(layout: &Layout) -> bool {
    let _ = layout;
    false
}

/// Unmounts `live` (and everything below it) and `mnt` (detaching the loop
/// device). Returns whether anything was mounted. Idempotent; never deletes
/// data.
pub fn deactivate(layout: &Layout) -> anyhow::Result<bool> {
    let _ = layout;
    anyhow::bail!("mounts::deactivate: not yet implemented")
}
