//! Tarballs: plain, gzip or zstd, told apart by their first bytes (not by
//! the file's name), applied entry by entry to a base's tree.

use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::build::{self, Kind, Meta, Tree};

const GZIP: &[u8] = &[0x1f, 0x8b];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// `reader` decompressed as its magic says: gzip, zstd, or as it is.
pub fn decompressed<'a>(reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(256 << 10, reader);
    let head = r.fill_buf().context("cannot read the archive")?.to_vec();
    Ok(if head.starts_with(GZIP) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(ZSTD) {
        Box::new(Zstd::new(r))
    } else {
        Box::new(r)
    })
}

/// A zstd stream of one or more frames (`zstd` and `tar --zstd` write one;
/// concatenated files hold several).
struct Zstd<R: BufRead> {
    inner: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> Zstd<R> {
    fn new(r: R) -> Self {
        Zstd {
            inner: Some(
                ruzstd::decoding::StreamingDecoder::new(r)
                    .map_err(|e| e.to_string())
                    .ok(),
            )
            .flatten(),
        }
    }
}

impl<R: BufRead> Read for Zstd<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(dec) = self.inner.as_mut() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "damaged zstd frame header",
                ));
            };
            let n = dec.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame is done: another may follow.
            let mut rest = self.inner.take().expect("checked").into_inner();
            if rest.fill_buf()?.is_empty() {
                self.inner = None;
                return Ok(0);
            }
            match ruzstd::decoding::StreamingDecoder::new(rest) {
                Ok(d) => self.inner = Some(d),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
    }
}

/// Whiteouts of OCI layers, honoured when applying a layer (and never
/// kept as files): `.wh.NAME` deletes NAME, `.wh..wh..opq` empties its
/// directory of what the layers below put there.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// A plain tarball: `.wh.` names are files like any other.
    Keep,
    Apply,
}

/// Applies the tar stream `reader` (already decompressed) to `tree`.
pub fn apply(reader: impl Read, tree: &mut Tree, whiteouts: Whiteouts) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().context("not a tar archive")?;
    for entry in entries {
        let mut entry = entry.context("damaged tar archive")?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        apply_one(&mut entry, &raw, tree, whiteouts).with_context(|| format!("entry {shown:?}"))?;
    }
    Ok(())
}

fn apply_one<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    raw: &[u8],
    tree: &mut Tree,
    whiteouts: Whiteouts,
) -> Result<()> {
    let rel = build::clean(raw)?;
    if whiteouts == Whiteouts::Apply {
        if let Some(name) = rel.file_name().map(|n| n.as_bytes()) {
            let dir = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            if name == b".wh..wh..opq" {
                return tree.opaque(&dir);
            }
            if let Some(hidden) = name.strip_prefix(b".wh.") {
                return tree.whiteout(&dir, std::ffi::OsStr::from_bytes(hidden));
            }
        }
    }
    let h = entry.header();
    let mut meta = Meta {
        mode: h.mode().context("bad mode")?,
        uid: u32::try_from(h.uid().context("bad uid")?).context("uid out of range")?,
        gid: u32::try_from(h.gid().context("bad gid")?).context("gid out of range")?,
        mtime: (h.mtime().context("bad mtime")? as i64, 0),
        xattrs: Vec::new(),
    };
    if let Some(exts) = entry.pax_extensions().context("bad pax header")? {
        for ext in exts {
            let ext = ext.context("bad pax header")?;
            let key = ext.key_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                meta.xattrs
                    .push((name.to_vec(), ext.value_bytes().to_vec()));
            }
            match (key, std::str::from_utf8(ext.value_bytes())) {
                (b"uid", Ok(v)) => meta.uid = v.parse().context("bad pax uid")?,
                (b"gid", Ok(v)) => meta.gid = v.parse().context("bad pax gid")?,
                (b"mtime", Ok(v)) => meta.mtime = pax_time(v),
                _ => {}
            }
        }
    }
    let et = entry.header().entry_type();
    let link = || -> Result<PathBuf> {
        let l = entry.link_name_bytes().context("link without a target")?;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&l)))
    };
    use tar::EntryType as T;
    match et {
        T::Directory => tree.put(&rel, Kind::Dir, &meta),
        T::Regular | T::Continuous | T::GNUSparse => tree.put(&rel, Kind::File(entry), &meta),
        T::Symlink => {
            let target = link()?;
            tree.put(&rel, Kind::Symlink(target), &meta)
        }
        T::Link => {
            let to = build::clean(link()?.as_os_str().as_bytes())?;
            tree.put(&rel, Kind::Hardlink(to), &meta)
        }
        T::Fifo => tree.put(&rel, Kind::Fifo, &meta),
        T::Char | T::Block => {
            let (maj, min) = (
                entry
                    .header()
                    .device_major()
                    .ok()
                    .flatten()
                    .unwrap_or(u32::MAX),
                entry
                    .header()
                    .device_minor()
                    .ok()
                    .flatten()
                    .unwrap_or(u32::MAX),
            );
            if et == T::Char && maj == 0 && min == 0 {
                tree.put(&rel, Kind::Whiteout, &meta)
            } else {
                bail!(
                    "device node {maj},{min}: a base holds no devices (a subhost gets its own \
                     /dev); leave it out of the archive"
                )
            }
        }
        other => bail!("unsupported tar entry type {other:?}"),
    }
}

/// A pax time `SECONDS[.FRACTION]`.
fn pax_time(v: &str) -> (i64, i64) {
    let (s, f) = v.split_once('.').unwrap_or((v, ""));
    let mut digits: String = f.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    (s.parse().unwrap_or(0), digits.parse().unwrap_or(0))
}
