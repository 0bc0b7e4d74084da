//! Extended attributes of a subhost's or a base's files, never following
//! a symlink: what a file keeps (capabilities, ACLs, labels) and what
//! overlayfs marks its layers with (whiteouts, opaque and metacopy
//! directories). One reader for diff, copy, clone, send/receive and bases.
//!
//! Read on an open file where the caller has one (diff holds its files
//! open to compare them, and an fd cannot be swapped under it), else by
//! path with the `l*` calls: a symlink or a device cannot be opened for
//! its xattrs.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Names and values.
pub type Attrs = Vec<(Vec<u8>, Vec<u8>)>;

/// What the attributes are read of.
#[derive(Clone, Copy)]
enum Of<'a> {
    Fd(RawFd),
    /// Not followed.
    Path(&'a CStr),
}

impl Of<'_> {
    /// `flistxattr` or `llistxattr` into `buf`.
    fn list(self, buf: &mut [u8]) -> isize {
        match self {
            // SAFETY: an open fd and a writable buffer of the given length.
            Of::Fd(fd) => unsafe { libc::flistxattr(fd, buf.as_mut_ptr().cast(), buf.len()) },
            // SAFETY: a NUL-terminated path and a writable buffer of the
            // given length, both alive for the call.
            Of::Path(p) => unsafe {
                libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            },
        }
    }

    /// `fgetxattr` or `lgetxattr` of `name` into `buf`.
    fn get(self, name: &CStr, buf: &mut [u8]) -> isize {
        let (n, b, len) = (name.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        match self {
            // SAFETY: an open fd, a NUL-terminated name and a writable
            // buffer of the given length, all alive for the call.
            Of::Fd(fd) => unsafe { libc::fgetxattr(fd, n, b, len) },
            // SAFETY: NUL-terminated path and name and a writable buffer of
            // the given length, all alive for the call.
            Of::Path(p) => unsafe { libc::lgetxattr(p.as_ptr(), n, b, len) },
        }
    }
}

/// Every attribute, in the order the kernel lists them: one list call,
/// and a read only for the names it lists (most files have none). A
/// filesystem without xattrs has none; one removed between the listing
/// and its read is left out.
fn read(of: Of) -> io::Result<Attrs> {
    let mut buf = vec![0u8; 256];
    let len = loop {
        let n = of.list(&mut buf);
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 16, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in buf[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let c = CString::new(name).expect("split at NUL");
        let mut v = vec![0u8; 256];
        loop {
            let r = of.get(&c, &mut v);
            if r >= 0 {
                v.truncate(r as usize);
                out.push((name.to_vec(), v));
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => v.resize(v.len() * 16, 0),
                Some(libc::ENODATA) | Some(libc::ENOTSUP) => break,
                _ => return Err(e),
            }
        }
    }
    Ok(out)
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Every attribute of open file `fd`, sorted by name.
pub fn of_fd(fd: &impl AsRawFd) -> io::Result<Attrs> {
    let mut out = read(Of::Fd(fd.as_raw_fd()))?;
    out.sort();
    Ok(out)
}

/// Every attribute of `path` (not followed), sorted by name.
pub fn list(path: &Path) -> io::Result<Attrs> {
    let mut out = list_as_listed(path)?;
    out.sort();
    Ok(out)
}

/// Every attribute of `path` (not followed), in the order the kernel
/// lists them: what a `send` stream has always carried, so that a stream
/// of the same files stays the same bytes.
pub fn list_as_listed(path: &Path) -> io::Result<Attrs> {
    read(Of::Path(&cpath(path)?))
}

/// Sets attribute `name` of `path` (not followed).
pub fn set(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let n = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: NUL-terminated path and name and a value buffer of the given
    // length, all alive for the call.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file's attributes read by fd and by path are the same, sorted;
    /// a symlink's own are read by path, never its target's; a value
    /// larger than the first buffer comes whole.
    #[test]
    fn fd_and_path_read_the_same() {
        let d = std::env::temp_dir().join(format!("subhost-xattr-{}", std::process::id()));
        let _ = crate::files::tree::remove_tree_mount_free(&d);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("f");
        std::fs::write(&f, "x").unwrap();
        let big = vec![b'v'; 3000];
        let Ok(()) = set(&f, b"user.b", &big) else {
            // A temp dir on a filesystem without user xattrs (tmpfs of old
            // kernels): nothing to compare.
            crate::files::tree::remove_tree_mount_free(&d).unwrap();
            return;
        };
        set(&f, b"user.a", b"1").unwrap();
        let want = vec![
            (b"user.a".to_vec(), b"1".to_vec()),
            (b"user.b".to_vec(), big),
        ];
        let file = std::fs::File::open(&f).unwrap();
        assert_eq!(of_fd(&file).unwrap(), want);
        assert_eq!(list(&f).unwrap(), want);
        let mut listed = list_as_listed(&f).unwrap();
        listed.sort();
        assert_eq!(listed, want);
        let link = d.join("link");
        std::os::unix::fs::symlink("f", &link).unwrap();
        assert!(!list(&link)
            .unwrap()
            .iter()
            .any(|(n, _)| n.starts_with(b"user.")));
        crate::files::tree::remove_tree_mount_free(&d).unwrap();
    }
}
