//! Removing a temporary tree without ever leaving its mount.
//!
//! `remove_dir_all` follows a directory wherever it leads: into a bind mount
//! of `/` left below a staging directory, it deletes the host. Here every
//! directory is opened relative to its parent, without following a link,
//! and its mount is compared with the top's before anything in it is
//! touched: a directory on another mount (a mount point, even of the same
//! filesystem) stops the removal with an error, and nothing below it is
//! deleted. Only for trees the caller made itself, for its own temporary
//! use; the launcher removes nothing else recursively.
//!
//! Plain `std` and `libc`, so that the system tests use the same code.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Removes `dir` and everything in it, provided all of it is on the mount
/// that holds `dir`. A symlink at `dir` itself is refused, not followed.
/// On a mount found below, what was already removed stays removed, and the
/// mount and everything from it down are left alone.
pub fn remove_tree_mount_free(dir: &Path) -> io::Result<()> {
    let c = CString::new(dir.as_os_str().as_bytes())?;
    let top = open_dir(libc::AT_FDCWD, &c).map_err(|e| at(dir, e))?;
    let mnt = mnt_id(&top).map_err(|e| at(dir, e))?;
    if is_mount_root(&top).map_err(|e| at(dir, e))? {
        return Err(mounted(dir));
    }
    empty(&top, mnt, dir)?;
    drop(top);
    std::fs::remove_dir(dir).map_err(|e| at(dir, e))
}

fn empty(dir: &OwnedFd, mnt: u64, path: &Path) -> io::Result<()> {
    for name in names(dir).map_err(|e| at(path, e))? {
        let here = path.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        if is_dir_entry(dir, &name).map_err(|e| at(&here, e))? {
            let sub = open_dir(dir.as_raw_fd(), &name).map_err(|e| at(&here, e))?;
            if mnt_id(&sub).map_err(|e| at(&here, e))? != mnt {
                return Err(mounted(&here));
            }
            empty(&sub, mnt, &here)?;
            drop(sub);
            unlink_at(dir, &name, libc::AT_REMOVEDIR).map_err(|e| at(&here, e))?;
        } else {
            // A file bind-mounted over a file is refused by the kernel
            // (EBUSY): that stops the removal too.
            unlink_at(dir, &name, 0).map_err(|e| at(&here, e))?;
        }
    }
    Ok(())
}

fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn mounted(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::ResourceBusy,
        format!(
            "{} is a mount point: nothing from it down was removed (unmount it first)",
            path.display()
        ),
    )
}

fn open_dir(parent: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: openat with a NUL-terminated name alive for the call; the
    // result is a new fd or -1.
    let fd = unsafe { libc::openat(parent, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn statx_fd(fd: &OwnedFd, mask: u32) -> io::Result<libc::statx> {
    // SAFETY: statx is plain data; all-zero is a valid initial value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an open fd, the empty path with AT_EMPTY_PATH, and a writable
    // statx buffer, all alive for the call.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            mask,
            &mut st,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn mnt_id(fd: &OwnedFd) -> io::Result<u64> {
    let st = statx_fd(fd, libc::STATX_MNT_ID)?;
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel does not tell mount ids (statx STATX_MNT_ID, Linux 5.8)",
        ));
    }
    Ok(st.stx_mnt_id)
}

fn is_mount_root(fd: &OwnedFd) -> io::Result<bool> {
    let st = statx_fd(fd, 0)?;
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    Ok(st.stx_attributes_mask & bit != 0 && st.stx_attributes & bit != 0)
}

fn is_dir_entry(dir: &OwnedFd, name: &CStr) -> io::Result<bool> {
    // SAFETY: stat is plain data; all-zero is a valid initial value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open directory fd, a NUL-terminated name and a writable
    // stat buffer, all alive for the call.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

fn unlink_at(dir: &OwnedFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: an open directory fd and a NUL-terminated name alive for the
    // call.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The names in `dir` but `.` and `..`, read through a duplicate of its fd
/// (closedir closes the fd it was given).
fn names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    // SAFETY: duplicating an open fd; the result is a new fd or -1.
    let dup = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is an open directory fd of ours; fdopendir takes it over.
    let d = unsafe { libc::fdopendir(dup) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `dup` is still ours to close.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    let mut out = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; clearing it tells end from error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `d` is an open DIR stream of ours.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error().unwrap_or(0) == 0 {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: readdir returned a valid entry whose d_name is
        // NUL-terminated, valid until the next readdir on `d`; it is copied.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name != c"." && name != c".." {
            out.push(name.to_owned());
        }
    };
    // SAFETY: `d` is open and closed once here, with the fd it owns.
    unsafe { libc::closedir(d) };
    result.map(|()| out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tmp(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("subhost-test-tree-{tag}-{}", std::process::id()));
        std::fs::create_dir(&d).unwrap();
        d
    }

    #[test]
    fn removes_a_plain_tree_with_links_not_followed() {
        let d = tmp("plain");
        let outside = tmp("outside");
        std::fs::write(outside.join("keep"), "x").unwrap();
        std::fs::create_dir_all(d.join("a/b/c")).unwrap();
        std::fs::write(d.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, d.join("a/link")).unwrap();
        remove_tree_mount_free(&d).unwrap();
        assert!(!d.exists());
        assert!(outside.join("keep").exists(), "a symlink was followed");
        remove_tree_mount_free(&outside).unwrap();
    }

    #[test]
    fn a_symlink_at_the_top_is_refused() {
        let outside = tmp("target");
        std::fs::write(outside.join("keep"), "x").unwrap();
        let link = std::env::temp_dir().join(format!("subhost-test-tree-l-{}", std::process::id()));
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(remove_tree_mount_free(&link).is_err());
        assert!(outside.join("keep").exists());
        std::fs::remove_file(&link).unwrap();
        remove_tree_mount_free(&outside).unwrap();
    }

    /// A bind mount of a tree below the one removed: the bind's content
    /// (what a staged copy of `/` would be) is untouched.
    #[test]
    fn stops_at_a_mount_and_deletes_nothing_below_it() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root for a bind mount: run cargo test as root"
        );
        let d = tmp("mount");
        let victim = tmp("victim");
        std::fs::create_dir_all(victim.join("sub")).unwrap();
        std::fs::write(victim.join("a"), "x").unwrap();
        std::fs::create_dir_all(d.join("stage/0")).unwrap();
        nix::mount::mount(
            Some(&victim),
            &d.join("stage/0"),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        let e = remove_tree_mount_free(&d).unwrap_err();
        nix::mount::umount2(&d.join("stage/0"), nix::mount::MntFlags::MNT_DETACH).unwrap();
        assert!(e.to_string().contains("is a mount point"), "{e}");
        assert!(victim.join("a").exists() && victim.join("sub").is_dir());
        remove_tree_mount_free(&d).unwrap();
        remove_tree_mount_free(&victim).unwrap();
    }
}
