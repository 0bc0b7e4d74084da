//! An overlay mounted through the new mount API (fsopen, fsconfig,
//! fsmount, move_mount) with its lower layers given as file descriptors:
//! detached, idmapped copies that are never attached anywhere, so there
//! is no staging directory and nothing for a killed start to leave
//! mounted.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::anyhow;

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

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
    // SAFETY: fsopen takes a NUL-terminated name and flags, returns an fd
    // or -1.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(FdError::Unsupported(format!(
            "fsopen: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: the kernel just returned this fd; nobody else owns it.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let failed = |what: &str, e: io::Error| {
        let said = kernel_says(&fs);
        anyhow!("{what}: {e}{said}")
    };
    set_string(&fs, c"source", c"overlay").map_err(|e| FdError::Failed(failed("source", e)))?;
    for (i, layer) in lower.iter().enumerate() {
        if let Err(e) = set_fd(&fs, c"lowerdir+", layer) {
            return Err(FdError::Unsupported(format!("lower layer {i}: {e}")));
        }
    }
    let path =
        |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|e| FdError::Failed(e.into()));
    let (u, w) = (path(upper)?, path(work)?);
    set_string(&fs, c"upperdir", &u).map_err(|e| FdError::Failed(failed("upperdir", e)))?;
    set_string(&fs, c"workdir", &w).map_err(|e| FdError::Failed(failed("workdir", e)))?;
    // SAFETY: fsconfig on our context fd with no key, value or aux.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        // A kernel that takes the fds but not detached mounts refuses
        // here; attaching them is the way left, and tells a real refusal
        // again with its paths.
        let e = io::Error::last_os_error();
        return Err(FdError::Unsupported(format!(
            "overlay: {e}{}",
            kernel_says(&fs)
        )));
    }
    // SAFETY: fsmount on our created context, flags and no attributes.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if m < 0 {
        let e = io::Error::last_os_error();
        return Err(FdError::Failed(failed("fsmount overlay", e)));
    }
    // SAFETY: the kernel just returned this fd; nobody else owns it.
    let mnt = unsafe { OwnedFd::from_raw_fd(m as i32) };
    let target = path(live)?;
    // SAFETY: move_mount from our fd (empty path) to a NUL-terminated path,
    // both valid for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(FdError::Failed(
            anyhow::Error::new(io::Error::last_os_error())
                .context(format!("cannot attach the overlay on {}", live.display())),
        ));
    }
    Ok(())
}

fn set_string(fs: &OwnedFd, key: &std::ffi::CStr, value: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: fsconfig on our context fd with NUL-terminated key and value
    // alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_fd(fs: &OwnedFd, key: &std::ffi::CStr, fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fsconfig on our context fd with a NUL-terminated key, no
    // value, and an open fd as aux.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_FD,
            key.as_ptr(),
            std::ptr::null::<libc::c_void>(),
            fd.as_raw_fd(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
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
