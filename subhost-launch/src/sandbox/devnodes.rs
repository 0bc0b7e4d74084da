//! `DEVICES` nodes for a subhost with `USERNS`, made by the launcher: root
//! of a user namespace can neither make a node (mknod takes the host's
//! CAP_MKNOD) nor open the host's root-only one through a bind (the host's
//! root is nobody inside), and the host's node must never change. So the
//! launcher, the host's root, makes each node anew on a tmpfs of its own,
//! owned by root of the subhost's range with the host node's mode, and
//! hands a detached bind of each to the sandbox, which attaches it at its
//! place in `/dev`.
//!
//! The tmpfs is made with `fsopen` in the host's user namespace and never
//! attached anywhere on the host: its superblock is not marked nodev (one
//! mounted inside the user namespace would be, `SB_I_NODEV`), and no mount
//! flag says nodev, so the kernel lets the nodes open (`may_open_dev`);
//! which ones open is the device policy's to say, as everywhere. It goes
//! when the last mount of it, the subhost's, goes. An idmapped bind of the
//! host's node would need its filesystem to take idmaps: devtmpfs does not.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use anyhow::{Context, Result};

use crate::cgroup::devices::{Declared, Kind};
use crate::sys;

/// A detached tmpfs, in the launcher's (the host's) user namespace.
fn tmpfs() -> io::Result<OwnedFd> {
    let fs = sys::fsopen(c"tmpfs")?;
    for (key, value) in [(c"mode", c"700"), (c"size", c"64k")] {
        sys::fsconfig_string(fs.as_fd(), key, value)?;
    }
    sys::fsconfig_create(fs.as_fd())?;
    // No nodev among the attributes.
    sys::fsmount(fs.as_fd(), sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC)
}

/// One detached bind per declared node, in order: the node made anew with
/// the host node's numbers and mode, owned by `root` (uid and gid: root of
/// the subhost's range). The host's node is only read.
pub fn make(declared: &[Declared], root: u32) -> Result<Vec<OwnedFd>> {
    if declared.is_empty() {
        return Ok(Vec::new());
    }
    let mnt = tmpfs().context("cannot make a tmpfs for the DEVICES nodes")?;
    let mut out = Vec::with_capacity(declared.len());
    for (i, d) in declared.iter().enumerate() {
        let meta =
            std::fs::metadata(&d.path).with_context(|| format!("device {}", d.path.display()))?;
        let perm = meta.permissions().mode() & 0o777;
        let kind = match d.rule.kind {
            Kind::Char => libc::S_IFCHR,
            Kind::Block => libc::S_IFBLK,
        };
        let name = CString::new(i.to_string())?;
        let made = || format!("cannot make a node of {} for the subhost", d.path.display());
        // SAFETY: mknodat/fchownat/fchmodat on our mount fd with a
        // NUL-terminated name that outlives each call.
        let r = unsafe {
            libc::mknodat(
                mnt.as_raw_fd(),
                name.as_ptr(),
                kind | perm,
                meta.rdev() as libc::dev_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error()).with_context(made);
        }
        // SAFETY: as above.
        let r = unsafe { libc::fchownat(mnt.as_raw_fd(), name.as_ptr(), root, root, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error()).with_context(made);
        }
        // mknod honours the umask: the host's mode as it is.
        // SAFETY: as above.
        let r = unsafe { libc::fchmodat(mnt.as_raw_fd(), name.as_ptr(), perm, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error()).with_context(made);
        }
        let bind = sys::open_tree(mnt.as_raw_fd(), &name, sys::OPEN_TREE_CLONE);
        out.push(bind.with_context(made)?);
    }
    Ok(out)
}
