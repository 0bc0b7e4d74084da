//! Copying a subhost's files (an upper layer, a plain root, an image file)
//! so that the copy is the same file for file: owner, mode, times, every
//! xattr (`trusted.overlay.*`, POSIX ACLs, `security.capability`),
//! hardlinks, holes of sparse files, and overlay whiteouts (char 0/0
//! nodes). A regular file is cloned (FICLONE) where the filesystem shares
//! extents (btrfs, XFS), else copied by `copy_file_range` over its data
//! extents only (SEEK_DATA/SEEK_HOLE), so a sparse file stays sparse.
//!
//! A user namespace subhost's files are owned by its range of host ids: a
//! copy for another range shifts every id (owners, ACL entries, a v3 file
//! capability's root id) by offset, and refuses an id outside the range
//! rather than guess.
//!
//! The copy goes into a directory that does not exist yet, made here; the
//! caller removes it on failure (with `tree::remove_tree_mount_free`).

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::xattr;
use crate::userns::Range;

/// Ids owned by `from` become the same offsets in `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    pub from: Range,
    pub to: Range,
}

impl Shift {
    /// `id` moved from one range to the other; `None` outside `from`.
    pub fn id(&self, id: u32) -> Option<u32> {
        let off = id.checked_sub(self.from.base)?;
        (off < self.from.count && off < self.to.count).then(|| self.to.base + off)
    }
}

/// An id to shift, or to keep without a shift.
pub fn shifted(shift: Option<&Shift>, id: u32, path: &Path) -> Result<u32> {
    match shift {
        None => Ok(id),
        Some(s) => s.id(id).with_context(|| {
            format!(
                "{}: id {id} is outside the user namespace range {} its subhost owns; \
                 chown it into the range (or out of the tree) and try again",
                path.display(),
                s.from
            )
        }),
    }
}

/// The owner of a tree's top directory, shifted when in the range, else
/// kept: `create` makes `root/` host root's, outside every range.
pub fn shifted_top(shift: Option<&Shift>, id: u32) -> u32 {
    shift.and_then(|s| s.id(id)).unwrap_or(id)
}

/// How much a copy holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub entries: u64,
    /// Allocated bytes, as `du` counts them (hardlinks once).
    pub bytes: u64,
}

/// Copies the tree `src` to `dst` (which must not exist).
pub fn copy_tree(src: &Path, dst: &Path, shift: Option<&Shift>) -> Result<Totals> {
    let mut c = Copier {
        shift,
        links: HashMap::new(),
        totals: Totals::default(),
    };
    let meta =
        fs::symlink_metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", src.display());
    }
    c.copy_dir(src, dst, &meta, true)?;
    Ok(c.totals)
}

struct Copier<'a> {
    shift: Option<&'a Shift>,
    /// First copy of each multiply-linked inode, by (dev, ino).
    links: HashMap<(u64, u64), PathBuf>,
    totals: Totals,
}

impl Copier<'_> {
    fn copy_dir(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata, top: bool) -> Result<()> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dst)
            .with_context(|| format!("cannot create {}", dst.display()))?;
        self.count(meta);
        let mut names: Vec<_> = fs::read_dir(src)
            .with_context(|| format!("cannot read {}", src.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .with_context(|| format!("cannot read {}", src.display()))?;
        names.sort();
        for name in names {
            let (s, d) = (src.join(&name), dst.join(&name));
            let m =
                fs::symlink_metadata(&s).with_context(|| format!("cannot read {}", s.display()))?;
            let ft = m.file_type();
            if ft.is_dir() {
                self.copy_dir(&s, &d, &m, false)?;
                continue;
            }
            if m.nlink() > 1 {
                if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                    fs::hard_link(first, &d).with_context(|| {
                        format!("cannot link {} to {}", d.display(), first.display())
                    })?;
                    self.totals.entries += 1;
                    continue;
                }
                self.links.insert((m.dev(), m.ino()), d.clone());
            }
            if ft.is_file() {
                copy_file(&s, &d, &m)?;
            } else if ft.is_symlink() {
                let target =
                    fs::read_link(&s).with_context(|| format!("cannot read {}", s.display()))?;
                std::os::unix::fs::symlink(&target, &d)
                    .with_context(|| format!("cannot create {}", d.display()))?;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket()
            {
                mknod(&d, m.mode(), m.rdev())?;
            } else {
                bail!("{}: unknown file type", s.display());
            }
            self.count(&m);
            set_meta(&s, &d, &m, self.shift, false)?;
        }
        set_meta(src, dst, meta, self.shift, top)
    }

    fn count(&mut self, m: &fs::Metadata) {
        self.totals.entries += 1;
        self.totals.bytes += m.blocks() * 512;
    }
}

/// Owner, xattrs, mode and times of `dst` from `src`, in the order that
/// keeps each: chown clears setuid bits and file capabilities, so it comes
/// first; times last, since every change before updates them.
fn set_meta(
    src: &Path,
    dst: &Path,
    m: &fs::Metadata,
    shift: Option<&Shift>,
    top: bool,
) -> Result<()> {
    let (uid, gid) = if top {
        (shifted_top(shift, m.uid()), shifted_top(shift, m.gid()))
    } else {
        (shifted(shift, m.uid(), src)?, shifted(shift, m.gid(), src)?)
    };
    lchown(dst, uid, gid)?;
    for (name, value) in list_xattrs(src)? {
        let value = shift_xattr(&name, value, shift, src)?;
        set_xattr(dst, &name, &value)?;
    }
    if !m.file_type().is_symlink() {
        fs::set_permissions(
            dst,
            std::os::unix::fs::PermissionsExt::from_mode(m.mode() & 0o7777),
        )
        .with_context(|| format!("cannot chmod {}", dst.display()))?;
    }
    set_times(
        dst,
        (m.atime(), m.atime_nsec()),
        (m.mtime(), m.mtime_nsec()),
    )
}

/// A regular file's data: a clone of its extents where the filesystem can,
/// else its data extents copied and its holes left as holes.
pub fn copy_file(src: &Path, dst: &Path, m: &fs::Metadata) -> Result<()> {
    let from = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dst)
        .with_context(|| format!("cannot create {}", dst.display()))?;
    copy_data(&from, &to, m.len())
        .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))
}

/// FICLONE where it works, else the data extents.
pub fn copy_data(from: &File, to: &File, len: u64) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open.
    let r = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
    if r == 0 {
        return Ok(());
    }
    for (off, n) in data_extents(from, len)? {
        copy_range(from, to, off, n)?;
    }
    to.set_len(len)
}

/// The data extents of a file of `len` bytes, as (offset, length), by
/// SEEK_DATA/SEEK_HOLE; the whole file where the filesystem cannot say.
pub fn data_extents(f: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos: u64 = 0;
    while pos < len {
        // SAFETY: lseek on an open fd.
        let data = unsafe { libc::lseek(f.as_raw_fd(), pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENXIO) => Ok(out),
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) if pos == 0 => Ok(vec![(0, len)]),
                _ => Err(e),
            };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let (data, hole) = (data as u64, (hole as u64).min(len));
        if hole > data {
            out.push((data, hole - data));
        }
        pos = hole.max(data + 1);
    }
    Ok(out)
}

/// `n` bytes at `off` from one file to the same place in the other.
fn copy_range(from: &File, to: &File, off: u64, n: u64) -> io::Result<()> {
    let (mut i, mut o) = (off as libc::loff_t, off as libc::loff_t);
    let mut left = n;
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        // SAFETY: both fds are open; the offsets are ours.
        let r = unsafe {
            libc::copy_file_range(from.as_raw_fd(), &mut i, to.as_raw_fd(), &mut o, chunk, 0)
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.raw_os_error(),
                Some(libc::EXDEV) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
            ) {
                return copy_range_by_hand(from, to, i as u64, left);
            }
            return Err(e);
        }
        if r == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while copied",
            ));
        }
        left -= r as u64;
    }
    Ok(())
}

fn copy_range_by_hand(from: &File, to: &File, mut off: u64, mut left: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = buf.len().min(left as usize);
        from.read_exact_at(&mut buf[..n], off)?;
        to.write_all_at(&buf[..n], off)?;
        off += n as u64;
        left -= n as u64;
    }
    Ok(())
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{}: NUL in path", p.display()))
}

pub fn mknod(p: &Path, mode: u32, rdev: u64) -> Result<()> {
    let c = cpath(p)?;
    // SAFETY: a NUL-terminated path, plain integers.
    if unsafe {
        libc::mknod(
            c.as_ptr(),
            mode & (libc::S_IFMT | 0o7777),
            rdev as libc::dev_t,
        )
    } != 0
    {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot mknod {}", p.display()));
    }
    Ok(())
}

pub fn lchown(p: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .with_context(|| format!("cannot chown {} to {uid}:{gid}", p.display()))
}

/// Access and modification times, (seconds, nanoseconds), not following a
/// symlink.
pub fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) -> Result<()> {
    let c = cpath(p)?;
    let ts = |(s, ns): (i64, i64)| libc::timespec {
        tv_sec: s as _,
        tv_nsec: ns as _,
    };
    let times = [ts(atime), ts(mtime)];
    // SAFETY: a NUL-terminated path and an array of two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot set the times of {}", p.display()));
    }
    Ok(())
}

/// Every xattr of `p` (a symlink's own), name and value, in the kernel's
/// order.
pub fn list_xattrs(p: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattr::list_as_listed(p).with_context(|| format!("cannot read the xattrs of {}", p.display()))
}

pub fn set_xattr(p: &Path, name: &[u8], value: &[u8]) -> Result<()> {
    xattr::set(p, name, value).with_context(|| {
        format!(
            "cannot set xattr {} on {}",
            OsStr::from_bytes(name).to_string_lossy(),
            p.display()
        )
    })
}

/// An xattr's value with the ids in it shifted: the named users and groups
/// of a POSIX ACL, the root id of a v3 file capability.
pub fn shift_xattr(
    name: &[u8],
    mut value: Vec<u8>,
    shift: Option<&Shift>,
    path: &Path,
) -> Result<Vec<u8>> {
    let Some(s) = shift else { return Ok(value) };
    let u32_at = |v: &[u8], i: usize| u32::from_le_bytes(v[i..i + 4].try_into().expect("4 bytes"));
    match name {
        b"system.posix_acl_access" | b"system.posix_acl_default" => {
            // Header: version (u32); entries: tag (u16), perm (u16), id (u32).
            const USER: u16 = 2;
            const GROUP: u16 = 8;
            let mut i = 4;
            while i + 8 <= value.len() {
                let tag = u16::from_le_bytes([value[i], value[i + 1]]);
                if tag == USER || tag == GROUP {
                    let id = shifted(Some(s), u32_at(&value, i + 4), path)?;
                    value[i + 4..i + 8].copy_from_slice(&id.to_le_bytes());
                }
                i += 8;
            }
        }
        b"security.capability" if value.len() == 24 && value[3] == 3 => {
            // VFS_CAP_REVISION_3: magic, 2 × (permitted, inheritable), rootid.
            let id = shifted(Some(s), u32_at(&value, 20), path)?;
            value[20..24].copy_from_slice(&id.to_le_bytes());
        }
        _ => {}
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_move_ids_by_offset_and_refuse_strangers() {
        let s = Shift {
            from: Range {
                base: 100_000,
                count: 65536,
            },
            to: Range {
                base: 300_000,
                count: 65536,
            },
        };
        assert_eq!(s.id(100_000), Some(300_000));
        assert_eq!(s.id(100_000 + 65535), Some(300_000 + 65535));
        assert_eq!(s.id(99_999), None);
        assert_eq!(s.id(100_000 + 65536), None);
        let e = shifted(Some(&s), 0, Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("outside the user namespace range 100000:65536"),
            "{e}"
        );
        assert_eq!(shifted(None, 7, Path::new("/x")).unwrap(), 7);
    }

    #[test]
    fn acl_and_capability_ids_shift() {
        let s = Shift {
            from: Range {
                base: 1000,
                count: 10,
            },
            to: Range {
                base: 5000,
                count: 10,
            },
        };
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, id) in [
            (1u16, u32::MAX),
            (2, 1003),
            (4, u32::MAX),
            (8, 1009),
            (32, u32::MAX),
        ] {
            acl.extend(tag.to_le_bytes());
            acl.extend(7u16.to_le_bytes());
            acl.extend(id.to_le_bytes());
        }
        let out = shift_xattr(
            b"system.posix_acl_access",
            acl.clone(),
            Some(&s),
            Path::new("/x"),
        )
        .unwrap();
        let id = |v: &[u8], e: usize| {
            u32::from_le_bytes(v[4 + e * 8 + 4..4 + e * 8 + 8].try_into().unwrap())
        };
        assert_eq!(
            (id(&out, 0), id(&out, 1), id(&out, 3), id(&out, 4)),
            (u32::MAX, 5003, 5009, u32::MAX)
        );
        let mut cap = vec![0, 0, 0, 3];
        cap.extend([0u8; 16]);
        cap.extend(1000u32.to_le_bytes());
        let out = shift_xattr(b"security.capability", cap, Some(&s), Path::new("/x")).unwrap();
        assert_eq!(u32::from_le_bytes(out[20..24].try_into().unwrap()), 5000);
        assert_eq!(
            shift_xattr(b"user.x", vec![1, 2], Some(&s), Path::new("/x")).unwrap(),
            [1, 2]
        );
    }
}
