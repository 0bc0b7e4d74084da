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

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::bases::xattr;
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

fn kind_of(ft: &fs::FileType) -> &'static str {
    if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else {
        "device"
    }
}

fn size_of(md: &fs::Metadata) -> u64 {
    if md.is_file() {
        md.len()
    } else {
        0
    }
}

struct Walk<'a> {
    upper: &'a Path,
    lowers: &'a [PathBuf],
    shift: Option<Range>,
    out: Vec<Change>,
    /// Buffers of the byte-for-byte comparison, made once: tens of
    /// thousands of copied-up files are compared in one diff.
    bufs: (Vec<u8>, Vec<u8>),
}

/// Bytes compared per read.
const CHUNK: usize = 64 << 10;

/// The value of the first of `names` among `attrs`.
fn find<'x>(attrs: &'x [(Vec<u8>, Vec<u8>)], names: &[&[u8]]) -> Option<&'x [u8]> {
    attrs
        .iter()
        .find(|(n, _)| names.contains(&n.as_slice()))
        .map(|(_, v)| v.as_slice())
}

fn attrs_of(p: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattr::list(p).with_context(|| format!("cannot read xattrs of {}", p.display()))
}

/// The changes in `upper` over `lowers` (top first), sorted by path.
pub fn diff(upper: &Path, lowers: &[PathBuf], shift: Option<Range>) -> Result<Vec<Change>> {
    let mut w = Walk {
        upper,
        lowers,
        shift,
        out: Vec::new(),
        bufs: (vec![0; CHUNK], vec![0; CHUNK]),
    };
    w.dir(Path::new(""))?;
    w.out
        .sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(w.out)
}

fn shown(rel: &Path) -> String {
    let mut b = b"/".to_vec();
    b.extend_from_slice(rel.as_os_str().as_bytes());
    String::from_utf8_lossy(&b).into_owned()
}

impl Walk<'_> {
    fn lower(&self, rel: &Path) -> Option<(PathBuf, fs::Metadata)> {
        self.lowers.iter().find_map(|l| {
            let p = l.join(rel);
            fs::symlink_metadata(&p).ok().map(|m| (p, m))
        })
    }

    fn push(
        &mut self,
        rel: &Path,
        change: &'static str,
        what: Option<&'static str>,
        details: Vec<&'static str>,
        kind: &'static str,
        size: u64,
    ) {
        self.out.push(Change {
            path: shown(rel),
            change,
            what,
            details,
            kind,
            size,
        });
    }

    /// The entries of upper directory `rel`.
    fn dir(&mut self, rel: &Path) -> Result<()> {
        let full = self.upper.join(rel);
        let mut names = Vec::new();
        for e in fs::read_dir(&full).with_context(|| format!("cannot read {}", full.display()))? {
            let e = e.with_context(|| format!("cannot read {}", full.display()))?;
            names.push(e.file_name());
        }
        let opaque = find(&attrs_of(&full)?, &OPAQUE) == Some(b"y");
        if opaque {
            if let Some((lp, lmd)) = self.lower(rel) {
                if lmd.is_dir() {
                    let mut gone: Vec<_> = fs::read_dir(&lp)
                        .with_context(|| format!("cannot read {}", lp.display()))?
                        .filter_map(|e| e.ok())
                        .filter(|e| !names.contains(&e.file_name()))
                        .collect();
                    gone.sort_by_key(|e| e.file_name());
                    for e in gone {
                        let md = fs::symlink_metadata(e.path())?;
                        self.push(
                            &rel.join(e.file_name()),
                            "deleted",
                            None,
                            vec![],
                            kind_of(&md.file_type()),
                            size_of(&md),
                        );
                    }
                }
            }
        }
        for n in names {
            self.entry(&rel.join(n))?;
        }
        Ok(())
    }

    fn entry(&mut self, rel: &Path) -> Result<()> {
        let full = self.upper.join(rel);
        let md = fs::symlink_metadata(&full)
            .with_context(|| format!("cannot read {}", full.display()))?;
        let ft = md.file_type();
        let lower = self.lower(rel);
        // An entry's xattrs are read only where they can matter: most
        // entries of an upper layer are files the subhost added.
        let attrs = if lower.is_some() || (ft.is_file() && md.len() == 0) {
            attrs_of(&full)?
        } else {
            Vec::new()
        };
        let whiteout = (ft.is_char_device() && md.rdev() == 0)
            || (ft.is_file() && md.len() == 0 && find(&attrs, &WHITEOUT).is_some());
        if whiteout {
            let (kind, size) = lower
                .as_ref()
                .map(|(_, l)| (kind_of(&l.file_type()), size_of(l)))
                .unwrap_or(("file", 0));
            self.push(rel, "deleted", None, vec![], kind, size);
            return Ok(());
        }
        let kind = kind_of(&ft);
        match lower {
            None => self.push(rel, "added", None, vec![], kind, size_of(&md)),
            Some((lp, lmd)) => {
                if let Some(c) = self.compare(&full, &md, &attrs, &lp, &lmd)? {
                    let (what, details) = c;
                    self.push(rel, "modified", Some(what), details, kind, size_of(&md));
                }
            }
        }
        if ft.is_dir() {
            self.dir(rel)?;
        }
        Ok(())
    }

    /// How upper `u` differs from lower `l`, if it does.
    fn compare(
        &mut self,
        u: &Path,
        umd: &fs::Metadata,
        uattrs: &[(Vec<u8>, Vec<u8>)],
        l: &Path,
        lmd: &fs::Metadata,
    ) -> Result<Option<(&'static str, Vec<&'static str>)>> {
        let (uft, lft) = (umd.file_type(), lmd.file_type());
        if kind_of(&uft) != kind_of(&lft) {
            return Ok(Some(("content", vec![])));
        }
        if uft.is_symlink() && fs::read_link(u)? != fs::read_link(l)? {
            return Ok(Some(("content", vec![])));
        }
        if uft.is_file() {
            let metacopy = find(uattrs, &METACOPY).is_some();
            if !metacopy && (umd.len() != lmd.len() || !self.same_bytes(u, l, umd.len())?) {
                return Ok(Some(("content", vec![])));
            }
        }
        if (uft.is_char_device() || uft.is_block_device()) && umd.rdev() != lmd.rdev() {
            return Ok(Some(("content", vec![])));
        }
        let mut details = Vec::new();
        if umd.mode() & 0o7777 != lmd.mode() & 0o7777 && !uft.is_symlink() {
            details.push("mode");
        }
        let inside = |id: u32| match self.shift {
            Some(r) if id >= r.base && u64::from(id) < r.end() => id - r.base,
            _ => id,
        };
        if (inside(umd.uid()), inside(umd.gid())) != (lmd.uid(), lmd.gid()) {
            details.push("owner");
        }
        if own(uattrs.to_vec()) != own(attrs_of(l)?) {
            details.push("xattrs");
        }
        if !uft.is_dir() && (umd.mtime(), umd.mtime_nsec()) != (lmd.mtime(), lmd.mtime_nsec()) {
            details.push("time");
        }
        Ok((!details.is_empty()).then_some(("metadata", details)))
    }
}

/// The xattrs that are the file's own, not overlayfs' marks nor the
/// host's label.
fn own(attrs: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    attrs
        .into_iter()
        .filter(|(n, _)| {
            !n.starts_with(b"trusted.overlay.")
                && !n.starts_with(b"user.overlay.")
                && n.as_slice() != b"security.selinux"
        })
        .collect()
}

impl Walk<'_> {
    /// Whether files `a` and `b`, both `len` bytes long when looked at,
    /// hold the same bytes.
    fn same_bytes(&mut self, a: &Path, b: &Path, len: u64) -> Result<bool> {
        // Not followed: a running subhost may swap a file for a link to
        // the host's.
        let open = |p: &Path| {
            File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(p)
                .with_context(|| format!("cannot open {}", p.display()))
        };
        let (mut fa, mut fb) = (open(a)?, open(b)?);
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
