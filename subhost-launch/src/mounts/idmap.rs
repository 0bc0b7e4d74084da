//! Idmapped mounts: a tree of the host shown through a user namespace's
//! map, so that the host's root-owned base appears root-owned to root of a
//! subhost with `USERNS`, without a chown of anything.
//!
//! A detached clone of the tree (`open_tree(OPEN_TREE_CLONE)`) gets the map
//! (`mount_setattr(MOUNT_ATTR_IDMAP)`), and is then attached where wanted
//! (`move_mount`). Mapped this way, host id `n` reads as `BASE + n` from the
//! host, hence `n` inside. Overlayfs takes idmapped lower layers since Linux
//! 5.19, which is therefore what USERNS requires.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::sys::{self, MountAttr};

/// The kernel that mounts overlayfs over idmapped layers.
pub const KERNEL: (u32, u32) = (5, 19);

/// Refuses kernels that cannot put an overlay over idmapped layers, naming
/// what is needed; `release` is `uname -r`.
pub fn check_kernel(release: &str) -> Result<()> {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if have < KERNEL {
        bail!(
            "USERNS needs Linux {}.{} or later (idmapped mounts under overlayfs); this kernel \
             is {release}: upgrade the kernel, or remove USERNS from the config",
            KERNEL.0,
            KERNEL.1
        );
    }
    Ok(())
}

/// `check_kernel` for the running kernel.
pub fn check_running_kernel() -> Result<()> {
    let u = nix::sys::utsname::uname().context("cannot read the kernel version")?;
    check_kernel(&u.release().to_string_lossy())
}

/// A detached copy of the mount at `path` (with every mount below it when
/// `recursive`), shown through the map of the user namespace `userns`.
pub fn clone_mapped(path: &Path, userns: BorrowedFd<'_>, recursive: bool) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let recursive = if recursive { sys::AT_RECURSIVE } else { 0 };
    let tree = sys::open_tree(libc::AT_FDCWD, &c, sys::OPEN_TREE_CLONE | recursive)
        .with_context(|| format!("cannot clone the mount at {}", path.display()))?;
    let attr = MountAttr {
        attr_set: sys::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    if let Err(e) = sys::mount_setattr(tree.as_fd(), recursive, &attr) {
        let why = match e.raw_os_error() {
            Some(libc::EINVAL) => {
                " (its filesystem, or one mounted below it, cannot be idmapped: ext4, xfs, \
                 btrfs and tmpfs can on recent kernels; overlayfs, proc and most network \
                 filesystems cannot)"
            }
            Some(libc::ENOSYS) => " (the kernel has no mount_setattr: Linux 5.12 or later needed)",
            _ => "",
        };
        return Err(e)
            .with_context(|| format!("cannot idmap the mount at {}{why}", path.display()));
    }
    Ok(tree)
}

/// Takes the detached mount `tree` out of any peer group: a copy of `/`
/// would otherwise receive every mount made on the host meanwhile, and an
/// unmount below it would reach the host's own mounts.
pub fn make_private(tree: &OwnedFd) -> Result<()> {
    let attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: sys::MOUNT_PROPAGATION_PRIVATE,
        userns_fd: 0,
    };
    sys::mount_setattr(tree.as_fd(), 0, &attr).context("cannot make an idmapped copy private")
}

/// Attaches a detached mount `tree` on `target`.
pub fn attach(tree: &OwnedFd, target: &Path) -> Result<()> {
    let c = CString::new(target.as_os_str().as_bytes())?;
    sys::move_mount_to(tree.as_fd(), &c)
        .with_context(|| format!("cannot attach an idmapped mount on {}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_requirement() {
        for ok in ["5.19.0", "6.18.44-fc-v669", "6.1.0-13-amd64", "10.0"] {
            check_kernel(ok).unwrap();
        }
        for old in ["5.18.19", "5.4.0-150-generic", "4.19.0", "garbage"] {
            let e = check_kernel(old).unwrap_err().to_string();
            assert!(e.contains("Linux 5.19 or later") && e.contains(old), "{e}");
        }
    }
}
