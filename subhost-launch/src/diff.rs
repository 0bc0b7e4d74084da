//! What a subhost changed over its lower layers, read from its overlay's
//! upper layer (not the merged view: what the subhost never touched is
//! never read, so the cost follows what it changed, not its base's size).
//!
//! Each entry of the upper layer is, against the first lower layer that
//! has its path:
//! - deleted: a whiteout (a character device 0/0, or an empty file with
//!   `trusted.overlay.whiteout` / `user.overlay.whiteout`); and, below an
//!   opaque directory (`trusted.overlay.opaque` or `user.overlay.opaque`
//!   `y`), every entry of the lower directory the upper one lacks;
//! - added: no lower layer has it;
//! - modified, `content`: its type, a file's bytes or a symlink's target
//!   differ; `metadata`: only its mode, owner, xattrs or (not for
//!   directories, whose times follow their entries) times do. A file
//!   copied up for its metadata alone (`metacopy`, marked
//!   `trusted.overlay.metacopy`) has its content in the lower layer: it is
//!   a metadata change;
//! - unchanged (not listed): copied up but equal in all of the above.
//!
//! With USERNS the upper layer holds host ids (inside id `n` is `BASE +
//! n`): owners are read back as seen inside before they are compared with
//! the lower layers, which are idmapped, not shifted.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::files::xattr;
use crate::userns::Range;

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// From the subhost's root, starting with `/` (bytes that are not
    /// UTF-8 become U+FFFD).
    pub path: String,
    /// `added`, `modified` or `deleted`.
    pub change: &'static str,
    /// For `modified`: `content` or `metadata`; else null.
    pub what: Option<&'static str>,
    /// For `metadata`: which of `mode`, `owner`, `xattrs`, `time` differ.
    pub details: Vec<&'static str>,
    /// `file`, `dir`, `symlink`, `fifo`, `socket` or `device`: the upper
    /// entry's, or for `deleted` the lower one's.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A file's size in bytes (the upper one's; a deleted file's in the
    /// lower layer); 0 for the rest.
    pub size: u64,
}

const OPAQUE: [&[u8]; 2] = [b"trusted.overlay.opaque", b"user.overlay.opaque"];
const WHITEOUT: [&[u8]; 2] = [b"trusted.overlay.whiteout", b"user.overlay.whiteout"];
const METACOPY: [&[u8]; 2] = [b"trusted.overlay.metacopy", b"user.overlay.metacopy"];

/// What is compared of an entry: one `fstatat` relative to its
/// directory's fd.
#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    rdev: u64,
    mtime: (i64, i64),
}

impl Meta {
    fn fmt(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    fn is_dir(&self) -> bool {
        self.fmt() == libc::S_IFDIR
    }
    fn is_file(&self) -> bool {
        self.fmt() == libc::S_IFREG
    }
    fn is_symlink(&self) -> bool {
        self.fmt() == libc::S_IFLNK
    }
    fn is_device(&self) -> bool {
        matches!(self.fmt(), libc::S_IFCHR | libc::S_IFBLK)
    }
    fn kind(&self) -> &'static str {
        match self.fmt() {
            libc::S_IFDIR => "dir",
            libc::S_IFREG => "file",
            libc::S_IFLNK => "symlink",
            libc::S_IFIFO => "fifo",
            libc::S_IFSOCK => "socket",
            _ => "device",
        }
    }
    fn size(&self) -> u64 {
        if self.is_file() {
            self.size
        } else {
            0
        }
    }
}

/// `name` in directory `dir`, not followed; `None` when there is none.
fn stat_at(dir: RawFd, name: &CStr) -> io::Result<Option<Meta>> {
    // SAFETY: stat is plain data; all-zero is a valid initial value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open directory fd, a NUL-terminated name and a writable
    // stat buffer, all alive for the call.
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(Meta {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        rdev: st.st_rdev,
        mtime: (st.st_mtime, st.st_mtime_nsec),
    }))
}

/// Opens `name` in `dir` without following it (a running subhost may swap
/// a file for a link to the host's); `O_NONBLOCK` so that a FIFO put in a
/// file's place meanwhile does not block.
fn open_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: openat with a NUL-terminated name alive for the call; the
    // result is a new fd or -1.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_dir(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY)
}

/// The names in directory `fd` but `.` and `..`, read through a
/// duplicate (a `Dir` closes the fd it is given).
fn names(fd: &OwnedFd) -> io::Result<Vec<CString>> {
    let dup = fd.try_clone()?;
    let mut d = nix::dir::Dir::from_fd(dup).map_err(io::Error::from)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name();
        if n != c"." && n != c".." {
            out.push(n.to_owned());
        }
    }
    Ok(out)
}

/// The target of symlink `name` in `dir`.
fn link_at(dir: RawFd, name: &CStr, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.resize(libc::PATH_MAX as usize + 1, 0);
    // SAFETY: an open directory fd, a NUL-terminated name and a writable
    // buffer of the given length, all alive for the call.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(())
}

/// The value of the first of `names` among `attrs`.
fn find<'x>(attrs: &'x [(Vec<u8>, Vec<u8>)], names: &[&[u8]]) -> Option<&'x [u8]> {
    attrs
        .iter()
        .find(|(n, _)| names.contains(&n.as_slice()))
        .map(|(_, v)| v.as_slice())
}

/// The xattrs that are the file's own, not overlayfs' marks nor the
/// host's label.
fn own(attrs: &[(Vec<u8>, Vec<u8>)]) -> impl Iterator<Item = &(Vec<u8>, Vec<u8>)> {
    attrs.iter().filter(|(n, _)| {
        !n.starts_with(b"trusted.overlay.")
            && !n.starts_with(b"user.overlay.")
            && n.as_slice() != b"security.selinux"
    })
}

/// One directory of the walk: the upper one and, per lower layer, the
/// same path there when it is a directory.
struct Level {
    upper: OwnedFd,
    lowers: Vec<Option<OwnedFd>>,
}

/// From this many entries in an upper directory on, each lower one is
/// listed once (sorted) rather than looked up entry by entry: most
/// entries of a busy upper directory are new, and a new entry costs one
/// failed lookup per layer, while a listing costs a few `getdents` for a
/// whole directory. Below it a small upper directory over a large lower
/// one (a changed file in `/usr/lib`) would pay for the listing.
const LIST_LOWER_FROM: usize = 16;

/// One entry found in a lower layer: its directory (open while the
/// `Level` it is of lives), which layer, its metadata.
struct Below<'l> {
    dir: RawFd,
    layer: usize,
    meta: Meta,
    _level: std::marker::PhantomData<&'l Level>,
}

struct Walk<'a> {
    upper: &'a Path,
    lowers: &'a [PathBuf],
    shift: Option<Range>,
    out: Vec<Change>,
    /// The directory being read, from the root without its leading `/`:
    /// one buffer for the whole walk, grown and cut as it goes down and
    /// up, so no entry costs a full path unless it is listed.
    rel: Vec<u8>,
    /// Buffers of the byte-for-byte comparison and of link targets, made
    /// once: tens of thousands of copied-up files are compared in one
    /// diff.
    bufs: (Vec<u8>, Vec<u8>),
    /// At the root of a parallel walk: its subdirectories, walked after
    /// it by a thread each core (the walk is bound by system calls, each
    /// cheap, so it scales with the cores), rather than at once.
    defer: Option<Vec<CString>>,
}

/// Bytes compared per read.
const CHUNK: usize = 64 << 10;

/// The changes in `upper` over `lowers` (top first), sorted by path.
pub fn diff(upper: &Path, lowers: &[PathBuf], shift: Option<Range>) -> Result<Vec<Change>> {
    let open_root = |p: &Path| -> io::Result<OwnedFd> {
        let c = CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        open_dir(libc::AT_FDCWD, &c)
    };
    let top = Level {
        upper: open_root(upper).with_context(|| format!("cannot open {}", upper.display()))?,
        lowers: lowers.iter().map(|l| open_root(l).ok()).collect(),
    };
    let walk = |defer| Walk {
        upper,
        lowers,
        shift,
        out: Vec::new(),
        rel: Vec::new(),
        bufs: (vec![0; CHUNK], vec![0; CHUNK]),
        defer,
    };
    let mut w = walk(Some(Vec::new()));
    w.dir(&top)?;
    let jobs = w.defer.take().unwrap_or_default();
    let mut out = w.out;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
        .min(jobs.len());
    // Subdirectories are handed out one at a time, as threads come free:
    // a root's subdirectories differ much in size (`/usr` and `/etc`).
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Result<Vec<Change>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<Vec<Change>> {
                    let mut w = walk(None);
                    while !failed.load(Ordering::Relaxed) {
                        let Some(name) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        let r = open_dir(top.upper.as_raw_fd(), name)
                            .with_context(|| {
                                format!("cannot open {}", w.path(w.upper, name).display())
                            })
                            .and_then(|fd| w.descend(&top, name, fd));
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                            return r.map(|()| Vec::new());
                        }
                    }
                    Ok(w.out)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for r in results {
        out.extend(r?);
    }
    out.sort_unstable_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}

/// Threads of a parallel walk at most: past a few, the walk waits on the
/// file system's locks rather than on the cores.
const MAX_THREADS: usize = 4;

impl Walk<'_> {
    /// `name` in the directory being read, as listed: from `/`.
    fn shown(&self, name: &CStr) -> String {
        let mut b = Vec::with_capacity(self.rel.len() + name.to_bytes().len() + 2);
        b.push(b'/');
        if !self.rel.is_empty() {
            b.extend_from_slice(&self.rel);
            b.push(b'/');
        }
        b.extend_from_slice(name.to_bytes());
        String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// `name` of the directory being read, below `top`: for messages,
    /// and for the xattrs of what cannot be opened (symlinks, devices).
    fn path(&self, top: &Path, name: &CStr) -> PathBuf {
        let mut p = top.join(OsStr::from_bytes(&self.rel));
        p.push(OsStr::from_bytes(name.to_bytes()));
        p
    }

    fn push(
        &mut self,
        name: &CStr,
        change: &'static str,
        what: Option<&'static str>,
        details: Vec<&'static str>,
        kind: &'static str,
        size: u64,
    ) {
        let path = self.shown(name);
        self.out.push(Change {
            path,
            change,
            what,
            details,
            kind,
            size,
        });
    }

    /// The first lower layer with `name` in the directory being read;
    /// `listed` has, per layer, its sorted names when they were read.
    fn below<'l>(
        &self,
        level: &'l Level,
        listed: &[Option<Vec<CString>>],
        name: &CStr,
    ) -> Result<Option<Below<'l>>> {
        for (i, fd) in level.lowers.iter().enumerate() {
            let Some(fd) = fd else { continue };
            if let Some(Some(ns)) = listed.get(i) {
                if ns.binary_search_by(|n| n.as_c_str().cmp(name)).is_err() {
                    continue;
                }
            }
            let found = stat_at(fd.as_raw_fd(), name).with_context(|| {
                format!("cannot read {}", self.path(&self.lowers[i], name).display())
            })?;
            if let Some(meta) = found {
                return Ok(Some(Below {
                    dir: fd.as_raw_fd(),
                    layer: i,
                    meta,
                    _level: std::marker::PhantomData,
                }));
            }
        }
        Ok(None)
    }

    /// The entries of one upper directory.
    fn dir(&mut self, level: &Level) -> Result<()> {
        let at = |w: &Self| w.upper.join(OsStr::from_bytes(&w.rel));
        let names =
            names(&level.upper).with_context(|| format!("cannot read {}", at(self).display()))?;
        let attrs = xattr::of_fd(&level.upper)
            .with_context(|| format!("cannot read xattrs of {}", at(self).display()))?;
        if find(&attrs, &OPAQUE) == Some(b"y") {
            // Below an opaque directory, the first lower one's entries that
            // the upper one lacks are gone.
            if let Some((i, lfd)) = level
                .lowers
                .iter()
                .enumerate()
                .find_map(|(i, l)| l.as_ref().map(|l| (i, l)))
            {
                let mut gone = names_or_not(lfd).with_context(|| {
                    format!(
                        "cannot read {}",
                        self.lowers[i].join(OsStr::from_bytes(&self.rel)).display()
                    )
                })?;
                gone.retain(|n| !names.contains(n));
                for n in gone {
                    if let Some(m) = stat_at(lfd.as_raw_fd(), &n)? {
                        self.push(&n, "deleted", None, vec![], m.kind(), m.size());
                    }
                }
            }
        }
        let listed: Vec<Option<Vec<CString>>> = if names.len() >= LIST_LOWER_FROM {
            level
                .lowers
                .iter()
                .enumerate()
                .map(|(i, l)| match l {
                    Some(fd) => names_or_not(fd).map(Some).with_context(|| {
                        format!(
                            "cannot read {}",
                            self.lowers[i].join(OsStr::from_bytes(&self.rel)).display()
                        )
                    }),
                    None => Ok(None),
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        for n in &names {
            self.entry(level, &listed, n)?;
        }
        Ok(())
    }

    fn entry(&mut self, level: &Level, listed: &[Option<Vec<CString>>], name: &CStr) -> Result<()> {
        let ufd = level.upper.as_raw_fd();
        let Some(md) = stat_at(ufd, name)
            .with_context(|| format!("cannot read {}", self.path(self.upper, name).display()))?
        else {
            // Removed while it was read (a subhost that runs).
            return Ok(());
        };
        let lower = self.below(level, listed, name)?;
        // An entry's xattrs are read only where they can matter: most
        // entries of an upper layer are files the subhost added. A file is
        // opened once, for its xattrs and its bytes.
        let empty = md.is_file() && md.size == 0;
        let need = lower.is_some() || empty;
        let mut file = None;
        let attrs = if !need {
            Vec::new()
        } else if md.is_file() {
            let f = open_at(ufd, name, libc::O_RDONLY).with_context(|| {
                format!("cannot open {}", self.path(self.upper, name).display())
            })?;
            let a = xattr::of_fd(&f);
            file = Some(f);
            a.with_context(|| {
                format!(
                    "cannot read xattrs of {}",
                    self.path(self.upper, name).display()
                )
            })?
        } else if md.is_dir() {
            // Read with the directory's own entries.
            Vec::new()
        } else {
            let p = self.path(self.upper, name);
            xattr::list(&p).with_context(|| format!("cannot read xattrs of {}", p.display()))?
        };
        let whiteout = (md.fmt() == libc::S_IFCHR && md.rdev == 0)
            || (empty && find(&attrs, &WHITEOUT).is_some());
        if whiteout {
            let (kind, size) = lower
                .as_ref()
                .map(|l| (l.meta.kind(), l.meta.size()))
                .unwrap_or(("file", 0));
            self.push(name, "deleted", None, vec![], kind, size);
            return Ok(());
        }
        let sub = if md.is_dir() {
            let fd = open_dir(ufd, name).with_context(|| {
                format!("cannot open {}", self.path(self.upper, name).display())
            })?;
            Some(fd)
        } else {
            None
        };
        match &lower {
            None => self.push(name, "added", None, vec![], md.kind(), md.size()),
            Some(l) => {
                let uattrs = match &sub {
                    Some(fd) => xattr::of_fd(fd).with_context(|| {
                        format!(
                            "cannot read xattrs of {}",
                            self.path(self.upper, name).display()
                        )
                    })?,
                    None => attrs,
                };
                if let Some((what, details)) = self.compare(ufd, name, &md, file, &uattrs, l)? {
                    self.push(name, "modified", Some(what), details, md.kind(), md.size());
                }
            }
        }
        if let Some(upper) = sub {
            if self.rel.is_empty() {
                if let Some(d) = &mut self.defer {
                    d.push(name.to_owned());
                    return Ok(());
                }
            }
            self.descend(level, name, upper)?;
        }
        Ok(())
    }

    /// Walks subdirectory `name` of `level`, open as `upper`.
    fn descend(&mut self, level: &Level, name: &CStr, upper: OwnedFd) -> Result<()> {
        {
            let lowers = level
                .lowers
                .iter()
                .map(|l| {
                    l.as_ref()
                        .and_then(|fd| open_dir(fd.as_raw_fd(), name).ok())
                })
                .collect();
            let mark = self.rel.len();
            if mark > 0 {
                self.rel.push(b'/');
            }
            self.rel.extend_from_slice(name.to_bytes());
            let r = self.dir(&Level { upper, lowers });
            self.rel.truncate(mark);
            r?;
        }
        Ok(())
    }

    /// How upper entry `name` differs from its lower `l`, if it does.
    fn compare(
        &mut self,
        ufd: RawFd,
        name: &CStr,
        umd: &Meta,
        ufile: Option<OwnedFd>,
        uattrs: &[(Vec<u8>, Vec<u8>)],
        l: &Below<'_>,
    ) -> Result<Option<(&'static str, Vec<&'static str>)>> {
        let lmd = &l.meta;
        let lpath = |w: &Self| w.path(&w.lowers[l.layer], name);
        if umd.kind() != lmd.kind() {
            return Ok(Some(("content", vec![])));
        }
        if umd.is_symlink() {
            let (a, b) = (&mut self.bufs.0, &mut self.bufs.1);
            link_at(ufd, name, a)?;
            link_at(l.dir, name, b)?;
            let same = a == b;
            a.resize(CHUNK, 0);
            b.resize(CHUNK, 0);
            if !same {
                return Ok(Some(("content", vec![])));
            }
        }
        let mut lfile = None;
        if umd.is_file() {
            let metacopy = find(uattrs, &METACOPY).is_some();
            // Different sizes settle it without a read.
            if !metacopy && umd.size != lmd.size {
                return Ok(Some(("content", vec![])));
            }
            let lf = File::from(
                open_at(l.dir, name, libc::O_RDONLY)
                    .with_context(|| format!("cannot open {}", lpath(self).display()))?,
            );
            if !metacopy {
                let uf = File::from(ufile.expect("a file with a lower one is opened"));
                if !self.same_bytes(&uf, &lf, umd.size)? {
                    return Ok(Some(("content", vec![])));
                }
            }
            lfile = Some(lf);
        }
        if umd.is_device() && umd.rdev != lmd.rdev {
            return Ok(Some(("content", vec![])));
        }
        let mut details = Vec::new();
        if umd.mode & 0o7777 != lmd.mode & 0o7777 && !umd.is_symlink() {
            details.push("mode");
        }
        let inside = |id: u32| match self.shift {
            Some(r) if id >= r.base && u64::from(id) < r.end() => id - r.base,
            _ => id,
        };
        if (inside(umd.uid), inside(umd.gid)) != (lmd.uid, lmd.gid) {
            details.push("owner");
        }
        let lattrs = match (&lfile, lmd.is_dir()) {
            (Some(f), _) => xattr::of_fd(f),
            (None, true) => open_dir(l.dir, name).and_then(|d| xattr::of_fd(&d)),
            (None, false) => xattr::list(&lpath(self)),
        }
        .with_context(|| format!("cannot read xattrs of {}", lpath(self).display()))?;
        if !own(uattrs).eq(own(&lattrs)) {
            details.push("xattrs");
        }
        if !umd.is_dir() && umd.mtime != lmd.mtime {
            details.push("time");
        }
        Ok((!details.is_empty()).then_some(("metadata", details)))
    }

    /// Whether open files `a` and `b`, both `len` bytes long when looked
    /// at, hold the same bytes.
    fn same_bytes(&mut self, mut fa: &File, mut fb: &File, len: u64) -> Result<bool> {
        let (ba, bb) = (&mut self.bufs.0, &mut self.bufs.1);
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            // A file that shrank meanwhile differs.
            if fa.read_exact(&mut ba[..n]).is_err() || fb.read_exact(&mut bb[..n]).is_err() {
                return Ok(false);
            }
            if ba[..n] != bb[..n] {
                return Ok(false);
            }
            left -= n as u64;
        }
        Ok(true)
    }
}

/// `names`, sorted so that the deleted entries of an opaque directory
/// come in order.
fn names_or_not(fd: &OwnedFd) -> io::Result<Vec<CString>> {
    let mut n = names(fd)?;
    n.sort();
    Ok(n)
}
