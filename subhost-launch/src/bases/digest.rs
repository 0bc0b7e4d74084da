//! The digest of a base: one sha256 over a canonical listing of its tree,
//! so that two hosts that import the same tarball get the same digest, and
//! a base that differs in one byte, mode, owner or xattr gets another.
//!
//! The listing has one line per entry, the root included, in the order of
//! the bytes of their paths (`/` for the root, `/bin`, `/bin/sh`, …):
//!
//! ```text
//! PATH \0 TYPE \0 MODE \0 UID \0 GID \0 SIZE \0 TARGET \0 SHA256 \0 XATTRS \n
//! ```
//!
//! - PATH: the path from the root, starting with `/`, as raw bytes;
//! - TYPE: `d` directory, `f` regular file, `l` symlink, `p` FIFO, `c`
//!   character device (only overlay whiteouts, 0/0, are in bases);
//! - MODE: the permission bits with set-id and sticky (`st_mode & 07777`),
//!   in octal; UID, GID: decimal, as stored;
//! - SIZE: a regular file's size in decimal, else `0`;
//! - TARGET: a symlink's target as raw bytes, `MAJOR,MINOR` of a device,
//!   else empty;
//! - SHA256: a regular file's content as lowercase hex, else empty;
//! - XATTRS: each extended attribute as `HEXNAME:HEXVALUE`, sorted by name,
//!   joined with `,`; `security.selinux` is left out (it is the host's
//!   label, not the base's).
//!
//! Times, inode numbers and which paths are hardlinks of one another are
//! not in it: they change with every copy while the files stay the same.
//! The digest is `sha256:` and the lowercase hex sha256 of the listing.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

use crate::files::xattr;

/// Left out of the listing: set by the host's policy, not by the base.
const HOST_XATTRS: &[&[u8]] = &[b"security.selinux"];

/// What a walk of a base's tree found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub digest: String,
    /// Entries below the root.
    pub files: u64,
    /// Sizes of the regular files, summed by path.
    pub bytes: u64,
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The digest of the tree at `root` (see the module doc).
#[allow(dead_code)]
pub fn digest(root: &Path) -> Result<String> {
    Ok(summarize(root)?.digest)
}

/// The digest, entry count and size of the tree at `root`.
pub fn summarize(root: &Path) -> Result<Summary> {
    let mut paths: Vec<Vec<u8>> = vec![b"/".to_vec()];
    walk(root, &PathBuf::new(), &mut paths)?;
    paths.sort();
    let mut listing = Sha256::new();
    let (mut files, mut bytes) = (0u64, 0u64);
    for p in &paths {
        let rel = Path::new(std::ffi::OsStr::from_bytes(&p[1..]));
        let full = root.join(rel);
        let line = line(&full, p).with_context(|| format!("base tree: {}", full.display()))?;
        listing.update(&line.0);
        if p != b"/" {
            files += 1;
        }
        bytes += line.1;
    }
    Ok(Summary {
        digest: format!("sha256:{}", hex(&listing.finalize())),
        files,
        bytes,
    })
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<Vec<u8>>) -> Result<()> {
    let dir = root.join(rel);
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("cannot read {}", dir.display()))?;
        let sub = rel.join(e.file_name());
        let mut bytes = b"/".to_vec();
        bytes.extend_from_slice(sub.as_os_str().as_bytes());
        out.push(bytes);
        if e.file_type()?.is_dir() {
            walk(root, &sub, out)?;
        }
    }
    Ok(())
}

/// One line of the listing, and the entry's size when it is a file.
fn line(full: &Path, path: &[u8]) -> Result<(Vec<u8>, u64)> {
    let md = std::fs::symlink_metadata(full)?;
    let ft = md.file_type();
    let (kind, mut target, mut sum, size) = if ft.is_dir() {
        ("d", Vec::new(), String::new(), 0)
    } else if ft.is_file() {
        ("f", Vec::new(), sha256_file(full)?, md.len())
    } else if ft.is_symlink() {
        let t = std::fs::read_link(full)?;
        ("l", t.as_os_str().as_bytes().to_vec(), String::new(), 0)
    } else if ft.is_fifo() {
        ("p", Vec::new(), String::new(), 0)
    } else if ft.is_char_device() || ft.is_block_device() {
        let rdev = md.rdev();
        let t = format!("{},{}", libc::major(rdev), libc::minor(rdev));
        let k = if ft.is_char_device() { "c" } else { "b" };
        (k, t.into_bytes(), String::new(), 0)
    } else {
        bail!("a socket has no place in a base");
    };
    let mut l = Vec::with_capacity(path.len() + 128);
    l.extend_from_slice(path);
    for field in [
        kind.to_string(),
        format!("{:o}", md.mode() & 0o7777),
        md.uid().to_string(),
        md.gid().to_string(),
        size.to_string(),
    ] {
        l.push(0);
        l.extend_from_slice(field.as_bytes());
    }
    l.push(0);
    l.append(&mut target);
    l.push(0);
    l.extend_from_slice(std::mem::take(&mut sum).as_bytes());
    l.push(0);
    let attrs: Vec<String> = xattr::list(full)?
        .into_iter()
        .filter(|(n, _)| !HOST_XATTRS.contains(&n.as_slice()))
        .map(|(n, v)| format!("{}:{}", hex(&n), hex(&v)))
        .collect();
    l.extend_from_slice(attrs.join(",").as_bytes());
    l.push(b'\n');
    Ok((l, size))
}

/// The sha256 of a regular file's content, as lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 128 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}
