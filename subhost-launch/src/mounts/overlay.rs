//! An overlay mounted through the new mount API (fsopen, fsconfig,
//! fsmount, move_mount) with its lower layers given as file descriptors:
//! detached, idmapped copies that are never attached anywhere, so there
//! is no staging directory and nothing for a killed start to leave
//! mounted.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::anyhow;

use crate::sys;

/// Why the fd-based mount did not happen.
pub enum FdError {
    /// This kernel takes no unattached layers (before Linux 6.13 overlayfs
    /// knows no `lowerdir+` fd, before 6.15 no O_PATH fd or detached
    /// mount): the caller attaches them instead. Says what refused.
    Unsupported(String),
    /// The overlay was refused for a reason that attaching the layers
    /// would not change.
    Failed(anyhow::Error),
}

/// Mounts an overlay of `lower` (fds of detached mounts, topmost first)
/// under `upper` and `work` on `live`.
pub fn mount_from_fds(
    lower: &[OwnedFd],
    upper: &Path,
    work: &Path,
    live: &Path,
) -> Result<(), FdError> {
    let fs = sys::fsopen(c"overlay").map_err(|e| FdError::Unsupported(format!("fsopen: {e}")))?;
    let failed = |what: &str, e: io::Error| {
        let said = kernel_says(&fs);
        anyhow!("{what}: {e}{said}")
    };
    let set_string =
        |key: &std::ffi::CStr, value: &std::ffi::CStr| sys::fsconfig_string(fs.as_fd(), key, value);
    set_string(c"source", c"overlay").map_err(|e| FdError::Failed(failed("source", e)))?;
    for (i, layer) in lower.iter().enumerate() {
        if let Err(e) = sys::fsconfig_fd(fs.as_fd(), c"lowerdir+", layer.as_fd()) {
            return Err(FdError::Unsupported(format!("lower layer {i}: {e}")));
        }
    }
    let path =
        |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|e| FdError::Failed(e.into()));
    let (u, w) = (path(upper)?, path(work)?);
    set_string(c"upperdir", &u).map_err(|e| FdError::Failed(failed("upperdir", e)))?;
    set_string(c"workdir", &w).map_err(|e| FdError::Failed(failed("workdir", e)))?;
    if let Err(e) = sys::fsconfig_create(fs.as_fd()) {
        // A kernel that takes the fds but not detached mounts refuses
        // here; attaching them is the way left, and tells a real refusal
        // again with its paths.
        return Err(FdError::Unsupported(format!(
            "overlay: {e}{}",
            kernel_says(&fs)
        )));
    }
    let mnt =
        sys::fsmount(fs.as_fd(), 0).map_err(|e| FdError::Failed(failed("fsmount overlay", e)))?;
    let target = path(live)?;
    sys::move_mount_to(mnt.as_fd(), &target).map_err(|e| {
        FdError::Failed(
            anyhow::Error::new(e)
                .context(format!("cannot attach the overlay on {}", live.display())),
        )
    })?;
    Ok(())
}

/// The messages the filesystem left on its context fd (what `dmesg` would
/// otherwise have), as ` (overlayfs: …)`, or nothing.
fn kernel_says(fs: &OwnedFd) -> String {
    let mut said = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..8 {
        // SAFETY: reading into our own buffer of the given length.
        let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf[..n as usize]);
        // "e overlayfs: …": the first two bytes are the message's level.
        said.push(line.get(2..).unwrap_or(&line).trim().to_string());
    }
    if said.is_empty() {
        String::new()
    } else {
        format!(" ({})", said.join("; "))
    }
}
