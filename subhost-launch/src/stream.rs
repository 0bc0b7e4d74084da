//! `send` and `receive`: one subhost as one stream, to move it to another
//! host (`send web | ssh host2 subhost-launch receive web`).
//!
//! The stream is a tar archive (GNU headers, which hold any uid; PAX
//! records for what they do not), in this order:
//! 1. `subhost-stream.json`: `{"format": 1, "name", "kind":
//!    overlay|plain|image, "config": its text, "base": {"name", "digest"}
//!    when a LOWER layer is a base ($SUBHOST/.bases/NAME/root), "lower":
//!    the LOWER paths, "userns": {"base", "count"} of the sender}`;
//! 2. `config`;
//! 3. the files: `root/` and everything below it, parents first (an
//!    overlay's upper layer or a plain root), or `image` (the image file);
//! 4. `subhost-stream.end`: `{"entries": N, "crc32": C}`, where C is the
//!    CRC-32 of every entry's path, type, mode, owner, mtime, size, link
//!    target, xattrs, hole map and data, in order. A stream cut short has
//!    no end; a damaged one fails the tar checksums or C.
//!
//! Per entry: owner and mode in the header; `mtime` (with nanoseconds) and
//! each xattr as PAX records (`SCHILY.xattr.NAME`, as GNU tar and star
//! write them: `trusted.overlay.*`, `system.posix_acl_*`,
//! `security.capability`; a value holding a newline as
//! `SUBHOST.xattr.NAME`, in hex, since the reader splits records at
//! newlines); a hardlink as a tar link to the first path of
//! its inode; a whiteout as a char device 0/0. A sparse file (fewer
//! blocks than its size) carries `SUBHOST.sparse=OFF:LEN,…` and
//! `SUBHOST.size=BYTES` and only its data extents as data; GNU tar would
//! extract it as the extents back to back.
//!
//! `receive` builds the subhost beside its place and renames it in once
//! the end entry checks out (see `provision::Aside`); any error removes
//! what it wrote. Owners in the sender's USERNS range are shifted into
//! the receiver's (a new one with `USERNS=pick`); an id outside it is an
//! error. Paths are checked: only `root` and below, no `..`, no absolute
//! path, no entry below a symlink, no device other than a whiteout.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::clone::{Kind, Source};
use crate::files::copy::{self, Shift};
use crate::layout::Layout;
use crate::provision::Aside;
use crate::userns::{Range, Setting};

pub const FORMAT: u32 = 1;
const MANIFEST: &str = "subhost-stream.json";
const END: &str = "subhost-stream.end";
const BUF: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRef {
    pub name: String,
    pub digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub kind: String,
    pub config: String,
    pub base: Option<BaseRef>,
    pub lower: Vec<PathBuf>,
    pub userns: Option<RangeJson>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RangeJson {
    pub base: u32,
    pub count: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct End {
    entries: u64,
    crc32: u32,
}

/// The base a LOWER layer is, when it is `$SUBHOST/.bases/NAME/root`:
/// its name and the digest its manifest records.
pub fn base_of(subhost: &Path, lower: &Path) -> Result<Option<BaseRef>> {
    let bases = subhost.join(".bases");
    let Ok(rest) = lower.strip_prefix(&bases) else {
        return Ok(None);
    };
    let mut parts = rest.components();
    let (Some(Component::Normal(name)), Some(Component::Normal(root)), None) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    if root != "root" {
        return Ok(None);
    }
    let name = name.to_string_lossy().into_owned();
    let digest = base_digest(&bases.join(&name))?.with_context(|| {
        format!(
            "LOWER {} is a base without a manifest.json",
            lower.display()
        )
    })?;
    Ok(Some(BaseRef { name, digest }))
}

/// The digest of the base in `DIR` (`$SUBHOST/.bases/NAME`); `None` when
/// there is no such base.
fn base_digest(dir: &Path) -> Result<Option<String>> {
    let (Some(subhost), Some(name)) = (dir.parent().and_then(Path::parent), dir.file_name()) else {
        return Ok(None);
    };
    if !dir.is_dir() {
        return Ok(None);
    }
    let name = name.to_string_lossy();
    Ok(Some(crate::bases::manifest(subhost, &name)?.digest))
}

/// The running check of a stream: entries and their CRC-32.
#[derive(Default)]
struct Check {
    crc: crc32fast::Hasher,
    entries: u64,
}

/// What the check covers of one entry, besides its data.
struct Facts<'a> {
    path: &'a [u8],
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: &'a str,
    size: u64,
    link: &'a [u8],
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
    sparse: &'a str,
}

impl Check {
    fn entry(&mut self, f: &Facts<'_>) {
        self.entries += 1;
        let h = &mut self.crc;
        h.update(f.path);
        h.update(&[0, f.kind]);
        h.update(&f.mode.to_le_bytes());
        h.update(&f.uid.to_le_bytes());
        h.update(&f.gid.to_le_bytes());
        h.update(f.mtime.as_bytes());
        h.update(&f.size.to_le_bytes());
        h.update(f.link);
        for (k, v) in f.xattrs {
            h.update(k);
            h.update(&[0]);
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v);
        }
        h.update(f.sparse.as_bytes());
    }

    /// One of the stream's own small files (manifest, config) with its
    /// data, as `send` writes and `receive` reads it.
    fn small(&mut self, path: &[u8], data: &[u8]) {
        self.entry(&Facts {
            path,
            kind: b'0',
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: "",
            size: data.len() as u64,
            link: b"",
            xattrs: &[],
            sparse: "",
        });
        self.crc.update(data);
    }
}

/// Reads through, adding what it reads to the check.
struct Checked<'a, R> {
    inner: R,
    crc: &'a mut crc32fast::Hasher,
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

fn refuse_terminal(fd: i32, what: &str) -> Result<()> {
    // SAFETY: isatty on a standard fd.
    if unsafe { libc::isatty(fd) } == 1 {
        bail!("{what} is a terminal: redirect it to (or from) a file, or pipe it through ssh");
    }
    Ok(())
}

pub fn send(base: &Path, name: &str) -> Result<()> {
    refuse_terminal(1, "stdout")?;
    // A start waits until the subhost is sent: it would change what is read.
    let (s, _lock) = Source::open_locked(base, name, &[])?;
    s.require_still("send")?;
    s.sync_image()?;
    let mut bref = None;
    for l in &s.cfg.lower {
        if let Some(b) = base_of(base, l)? {
            bref = Some(b);
        }
    }
    let manifest = Manifest {
        format: FORMAT,
        name: name.to_string(),
        kind: s.kind.as_str().into(),
        config: s.text.clone(),
        base: bref,
        lower: s.cfg.lower.clone(),
        userns: s.range()?.map(|r| RangeJson {
            base: r.base,
            count: r.count,
        }),
    };
    let out = BufWriter::with_capacity(BUF, io::stdout().lock());
    let mut tar = tar::Builder::new(out);
    let mut check = Check::default();
    let json = serde_json::to_vec_pretty(&manifest).expect("plain data");
    add_bytes(&mut tar, &mut check, MANIFEST, &json)?;
    add_bytes(&mut tar, &mut check, "config", s.text.as_bytes())?;
    let mut sender = Sender {
        tar: &mut tar,
        check: &mut check,
        links: Default::default(),
    };
    match s.kind {
        Kind::Image => sender.file(&s.layout.image(), Path::new("image"), true)?,
        Kind::Overlay | Kind::Plain => sender.tree(&s.layout.root(false), Path::new("root"))?,
    }
    let end = End {
        entries: check.entries,
        crc32: check.crc.clone().finalize(),
    };
    let json = serde_json::to_vec(&end).expect("plain data");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(json.len() as u64);
    tar.append_data(&mut h, END, &json[..])
        .context("cannot write the stream")?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .context("cannot write the stream")?;
    Ok(())
}

fn add_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    check: &mut Check,
    path: &str,
    data: &[u8],
) -> Result<()> {
    check.small(path.as_bytes(), data);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(data.len() as u64);
    tar.append_data(&mut h, path, data)
        .context("cannot write the stream")
}

struct Sender<'a, W: Write> {
    tar: &'a mut tar::Builder<W>,
    check: &'a mut Check,
    links: std::collections::HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> Sender<'_, W> {
    fn tree(&mut self, dir: &Path, at: &Path) -> Result<()> {
        self.file(dir, at, false)?;
        let mut names: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .with_context(|| format!("cannot read {}", dir.display()))?;
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let m =
                fs::symlink_metadata(&p).with_context(|| format!("cannot read {}", p.display()))?;
            if m.is_dir() {
                self.tree(&p, &at.join(&n))?;
            } else {
                self.file(&p, &at.join(&n), false)?;
            }
        }
        Ok(())
    }

    /// One entry: `path` on disk as `at` in the stream. `image`: its
    /// xattrs and owner are not the subhost's, only its bytes.
    fn file(&mut self, path: &Path, at: &Path, image: bool) -> Result<()> {
        let m = fs::symlink_metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let ft = m.file_type();
        let xattrs = if image {
            Vec::new()
        } else {
            copy::list_xattrs(path)?
        };
        let mtime = format!("{}.{:09}", m.mtime(), m.mtime_nsec());
        let mut h = tar::Header::new_gnu();
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(u64::from(m.uid()));
        h.set_gid(u64::from(m.gid()));
        h.set_mtime(m.mtime().max(0) as u64);
        h.set_size(0);
        let mut pax: Vec<(String, Vec<u8>)> = vec![("mtime".into(), mtime.clone().into_bytes())];
        for (k, v) in &xattrs {
            let k = std::str::from_utf8(k)
                .with_context(|| format!("{}: an xattr name that is not UTF-8", path.display()))?;
            pax.push(xattr_record(k, v));
        }
        let mut link = Vec::new();
        let mut sparse = String::new();
        let mut extents = None;
        let kind;
        let multi = !ft.is_dir() && m.nlink() > 1;
        let first = multi
            .then(|| self.links.get(&(m.dev(), m.ino())).cloned())
            .flatten();
        if let Some(first) = first {
            kind = tar::EntryType::Link;
            link = first.as_os_str().as_bytes().to_vec();
        } else if ft.is_dir() {
            kind = tar::EntryType::Directory;
        } else if ft.is_file() {
            kind = tar::EntryType::Regular;
            let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let ext = if m.blocks() * 512 < m.len() {
                let ext = copy::data_extents(&f, m.len())
                    .with_context(|| format!("cannot map the holes of {}", path.display()))?;
                sparse = ext
                    .iter()
                    .map(|(o, n)| format!("{o}:{n}"))
                    .collect::<Vec<_>>()
                    .join(",");
                pax.push(("SUBHOST.sparse".into(), sparse.clone().into_bytes()));
                pax.push(("SUBHOST.size".into(), m.len().to_string().into_bytes()));
                ext
            } else {
                vec![(0, m.len())]
            };
            h.set_size(ext.iter().map(|e| e.1).sum());
            extents = Some((f, ext));
        } else if ft.is_symlink() {
            kind = tar::EntryType::Symlink;
            link = fs::read_link(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .into_os_string()
                .into_vec();
        } else if ft.is_char_device() || ft.is_block_device() {
            kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            let rdev = m.rdev();
            h.set_device_major(libc::major(rdev))?;
            h.set_device_minor(libc::minor(rdev))?;
        } else if ft.is_fifo() {
            kind = tar::EntryType::Fifo;
        } else {
            bail!(
                "{}: a socket cannot be sent (it means nothing without its process; remove it)",
                path.display()
            );
        }
        if multi && !self.links.contains_key(&(m.dev(), m.ino())) {
            self.links.insert((m.dev(), m.ino()), at.to_path_buf());
        }
        h.set_entry_type(kind);
        let at_bytes = at.as_os_str().as_bytes();
        self.check.entry(&Facts {
            path: at_bytes,
            kind: kind.as_byte(),
            mode: m.mode() & 0o7777,
            uid: u64::from(m.uid()),
            gid: u64::from(m.gid()),
            mtime: &mtime,
            size: h.size()?,
            link: &link,
            xattrs: &xattrs,
            sparse: &sparse,
        });
        add_pax(self.tar, &pax)?;
        let w = "cannot write the stream";
        match kind {
            tar::EntryType::Link | tar::EntryType::Symlink => self
                .tar
                .append_link(&mut h, at, Path::new(std::ffi::OsStr::from_bytes(&link)))
                .context(w)?,
            _ => match extents {
                Some((f, ext)) => {
                    let data = Extents {
                        f: &f,
                        ext: &ext,
                        i: 0,
                        done: 0,
                    };
                    let data = Checked {
                        inner: data,
                        crc: &mut self.check.crc,
                    };
                    self.tar.append_data(&mut h, at, data).context(w)?
                }
                None => self.tar.append_data(&mut h, at, io::empty()).context(w)?,
            },
        }
        Ok(())
    }
}

/// A file's data extents back to back.
struct Extents<'a> {
    f: &'a File,
    ext: &'a [(u64, u64)],
    i: usize,
    done: u64,
}

impl Read for Extents<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(&(off, len)) = self.ext.get(self.i) {
            if self.done == len {
                self.i += 1;
                self.done = 0;
                continue;
            }
            let want = buf.len().min((len - self.done) as usize);
            let n = self.f.read_at(&mut buf[..want], off + self.done)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while sent",
                ));
            }
            self.done += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

/// The PAX record of xattr `name`: `SCHILY.xattr.NAME` with the value as
/// it is, unless the value holds a newline (an ACL or a capability whose
/// id has a byte 0x0a, as a USERNS range's ids may), which PAX allows but
/// the tar reader `receive` uses splits records at: then
/// `SUBHOST.xattr.NAME` with the value in hex.
fn xattr_record(name: &str, value: &[u8]) -> (String, Vec<u8>) {
    if !value.contains(&b'\n') {
        return (format!("SCHILY.xattr.{name}"), value.to_vec());
    }
    let hex = value.iter().map(|b| format!("{b:02x}")).collect::<String>();
    (format!("SUBHOST.xattr.{name}"), hex.into_bytes())
}

/// The value of a `SUBHOST.xattr.NAME` record.
fn unhex(hex: &[u8]) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect()
}

/// A PAX extended header with `records`, before the entry it describes.
fn add_pax<W: Write>(tar: &mut tar::Builder<W>, records: &[(String, Vec<u8>)]) -> Result<()> {
    let mut data = Vec::new();
    for (k, v) in records {
        // "LEN KEY=VALUE\n", LEN counting itself.
        let rest = 1 + k.len() + 1 + v.len() + 1;
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len = len.to_string().len() + rest;
        }
        data.extend_from_slice(format!("{len} {k}=").as_bytes());
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeader")?;
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    tar.append(&h, &data[..]).context("cannot write the stream")
}

pub fn receive(base: &Path, name: &str) -> Result<()> {
    refuse_terminal(0, "stdin")?;
    let target = Layout::new(base, name)?;
    if target.dir.symlink_metadata().is_ok() {
        bail!(
            "{} exists already: receive makes a new subhost (choose another name, or remove \
             that one first)",
            target.dir.display()
        );
    }
    let input = BufReader::with_capacity(BUF, io::stdin().lock());
    let mut archive = tar::Archive::new(input);
    let mut entries = archive.entries().context("cannot read the stream")?;
    let mut check = Check::default();

    let next = next_entry;
    let manifest: Manifest = {
        let mut e = next(&mut entries)?.ok_or_else(|| bad("it is empty".into()))?;
        if e.path_bytes().as_ref() != MANIFEST.as_bytes() {
            return Err(bad(format!("it does not begin with {MANIFEST}")));
        }
        let data = read_small(&mut e, &mut check, MANIFEST)?;
        serde_json::from_slice(&data).map_err(|e| bad(format!("{MANIFEST}: {e}")))?
    };
    if manifest.format != FORMAT {
        bail!(
            "the stream is of format {}, this subhost-launch reads format {FORMAT} (use the \
             same version on both hosts)",
            manifest.format
        );
    }
    let kind = match manifest.kind.as_str() {
        "overlay" => Kind::Overlay,
        "plain" => Kind::Plain,
        "image" => Kind::Image,
        k => return Err(bad(format!("unknown kind {k:?}"))),
    };
    let text = {
        let mut e = next(&mut entries)?.ok_or_else(|| bad("it ends after its manifest".into()))?;
        if e.path_bytes().as_ref() != b"config" {
            return Err(bad("the config does not follow the manifest".into()));
        }
        String::from_utf8(read_small(&mut e, &mut check, "config")?)
            .map_err(|_| bad("the config is not UTF-8".into()))?
    };
    let mut text = text;
    if let Some(b) = &manifest.base {
        check_base(base, b, &manifest.name)?;
        // The sender's LOWER was its own base's place; here the base is in
        // this $SUBHOST.
        let here = crate::bases::base_root(base, &b.name);
        if manifest.lower.len() == 1 && manifest.lower[0] != here {
            let line = format!(
                "\n# received: base {} is here\nLOWER={}\n",
                b.name,
                crate::config::quote(&here)
            );
            text.push_str(&line);
        }
    }
    let cfg = crate::config::parse(&target.config(), &text, name, base).map_err(|e| {
        anyhow::anyhow!(
            "the config of {} does not parse on this host: {} ({})",
            manifest.name,
            e.what,
            e.fix
        )
    })?;
    // Two receives (or a clone) of one name: the later waits, then finds
    // the name taken; a start of it waits until it is whole.
    let _lock = crate::clone::lock(&[name], crate::clone::lock_wait(&cfg))?;
    if target.dir.symlink_metadata().is_ok() {
        bail!(
            "{} exists already (made while this receive waited): receive makes a new \
             subhost (choose another name, or remove that one first)",
            target.dir.display()
        );
    }
    for l in &cfg.lower {
        if !l.is_dir() {
            bail!(
                "subhost {} needs the lower layer {}, which is not on this host (copy it here \
                 first, or import its base)",
                manifest.name,
                l.display()
            );
        }
    }
    let sender = manifest.userns.map(|r| Range {
        base: r.base,
        count: r.count,
    });
    let range = match cfg.userns.map(|u| u.setting) {
        None => None,
        // An image's files cannot be shifted without mounting it: it keeps
        // the sender's range, when free here.
        Some(Setting::Pick) if kind == Kind::Image => Some(crate::clone::pick_range(
            base,
            name,
            Setting::Fixed(
                sender.context("an image subhost with USERNS=pick, but no range in the stream")?,
            ),
        )?),
        Some(s) => Some(crate::clone::pick_range(base, name, s)?),
    };
    let shift = match (sender, range) {
        (Some(from), Some(to)) if from != to => Some(Shift { from, to }),
        _ => None,
    };

    let aside = Aside::new(&target)?;
    fs::write(aside.dir.join("config"), &text).context("cannot write the config")?;
    aside.make_dirs(kind == Kind::Image, false)?;
    let mut rx = Receiver {
        top: aside.dir.clone(),
        shift: shift.as_ref(),
        dirs: HashSet::new(),
        files: HashSet::new(),
        later: Vec::new(),
        buf: vec![0; BUF],
        image: kind == Kind::Image,
        image_name: format!("{name}.img"),
    };
    let mut ended = None;
    while let Some(mut e) = next(&mut entries)? {
        if e.path_bytes().as_ref() == END.as_bytes() {
            let data = read_small(&mut e, &mut Check::default(), END)?;
            ended =
                Some(serde_json::from_slice::<End>(&data).map_err(|e| bad(format!("{END}: {e}")))?);
            break;
        }
        rx.entry(&mut e, &mut check)
            .map_err(|e| e.context("cannot receive the stream"))?;
    }
    let Some(end) = ended else {
        bail!("the stream ends early (cut short?): nothing was kept");
    };
    if next(&mut entries)?.is_some() {
        return Err(bad(format!("entries follow {END}")));
    }
    if end.entries != check.entries || end.crc32 != check.crc.clone().finalize() {
        bail!(
            "the stream is damaged ({} entries, CRC-32 {:08x}; its end says {} and {:08x}): \
             nothing was kept",
            check.entries,
            check.crc.clone().finalize(),
            end.entries,
            end.crc32
        );
    }
    rx.finish()?;
    if !rx.image && !rx.dirs.contains(Path::new("root")) {
        return Err(bad("it holds no root/".into()));
    }
    if rx.image && !rx.files.contains(Path::new("image")) {
        return Err(bad("it holds no image".into()));
    }
    aside.commit(range)?;
    println!(
        "received subhost {} as {name} in {} ({} entries){}",
        manifest.name,
        target.dir.display(),
        check.entries,
        match (shift, range) {
            (Some(s), _) => format!(", its files moved from host ids {} to {}", s.from, s.to),
            (None, Some(r)) => format!(", user namespace range {r}"),
            _ => String::new(),
        }
    );
    Ok(())
}

fn bad(what: String) -> anyhow::Error {
    anyhow::anyhow!("not a subhost stream, or a damaged one: {what}")
}

fn next_entry<'a, R: Read>(entries: &mut tar::Entries<'a, R>) -> Result<Option<tar::Entry<'a, R>>> {
    match entries.next() {
        None => Ok(None),
        Some(Ok(e)) => Ok(Some(e)),
        Some(Err(e)) => Err(bad(format!("{e}"))),
    }
}

fn check_base(subhost: &Path, b: &BaseRef, sender: &str) -> Result<()> {
    let dir = subhost.join(".bases").join(&b.name);
    match base_digest(&dir)? {
        None => bail!(
            "subhost {sender} needs base {} ({}), which is not on this host: import it first \
             (`subhost-launch base import {} SOURCE`)",
            b.name,
            b.digest,
            b.name
        ),
        Some(d) if d != b.digest => bail!(
            "subhost {sender} needs base {} with digest {}, but this host's base {} has {d}: \
             import the same base (under another name, and fix LOWER after), or send the base",
            b.name,
            b.digest,
            b.name
        ),
        Some(_) => Ok(()),
    }
}

fn read_small<R: Read>(
    e: &mut tar::Entry<'_, R>,
    check: &mut Check,
    what: &str,
) -> Result<Vec<u8>> {
    if e.size() > crate::files::CONFIG_MAX {
        bail!("{what} in the stream is too large ({} bytes)", e.size());
    }
    let mut data = Vec::new();
    e.read_to_end(&mut data)
        .with_context(|| format!("cannot read {what}"))?;
    check.small(what.as_bytes(), &data);
    Ok(data)
}

struct Receiver<'a> {
    top: PathBuf,
    shift: Option<&'a Shift>,
    /// Directories made from the stream, by stream path: each entry's
    /// parent must be one (so nothing is written through a symlink).
    dirs: HashSet<PathBuf>,
    /// Non-directories made, for hardlinks.
    files: HashSet<PathBuf>,
    /// Directories' metadata, set once everything in them is made.
    later: Vec<(PathBuf, DirMeta)>,
    buf: Vec<u8>,
    image: bool,
    image_name: String,
}

struct DirMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A stream path, checked: relative, no `.` or `..`.
fn clean(p: &[u8]) -> Result<PathBuf> {
    let trimmed = p.strip_suffix(b"/").unwrap_or(p);
    let path = Path::new(std::ffi::OsStr::from_bytes(trimmed));
    // Byte by byte: Path::components would drop a `.` and a doubled `/`.
    if trimmed
        .split(|&b| b == b'/')
        .any(|s| s.is_empty() || s == b"." || s == b"..")
    {
        bail!("refused path {path:?}: only relative paths without . or ..");
    }
    Ok(path.to_path_buf())
}

fn mtime_of(pax: &str, header: u64) -> (i64, i64) {
    if let Some((s, ns)) = pax.split_once('.') {
        if let (Ok(s), Ok(ns)) = (s.parse::<i64>(), format!("{ns:0<9}")[..9].parse::<i64>()) {
            return (s, ns);
        }
    }
    pax.parse().map(|s| (s, 0)).unwrap_or((header as i64, 0))
}

impl Receiver<'_> {
    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>, check: &mut Check) -> Result<()> {
        let rel = clean(&e.path_bytes())?;
        let mut xattrs = Vec::new();
        let (mut mtime_s, mut sparse, mut real_size) = (String::new(), String::new(), None);
        if let Some(pax) = e.pax_extensions()? {
            for r in pax {
                let r = r?;
                let k = r.key_bytes();
                if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), r.value_bytes().to_vec()));
                } else if let Some(name) = k.strip_prefix(b"SUBHOST.xattr.") {
                    let v = unhex(r.value_bytes()).with_context(|| {
                        format!(
                            "a bad SUBHOST.xattr.{} (not hex)",
                            String::from_utf8_lossy(name)
                        )
                    })?;
                    xattrs.push((name.to_vec(), v));
                } else if k == b"mtime" {
                    mtime_s = String::from_utf8_lossy(r.value_bytes()).into_owned();
                } else if k == b"SUBHOST.sparse" {
                    sparse = String::from_utf8_lossy(r.value_bytes()).into_owned();
                } else if k == b"SUBHOST.size" {
                    real_size = Some(
                        std::str::from_utf8(r.value_bytes())
                            .ok()
                            .and_then(|s| s.parse::<u64>().ok())
                            .context("a bad SUBHOST.size")?,
                    );
                }
            }
        }
        let h = e.header().clone();
        let kind = h.entry_type();
        let (mode, uid, gid) = (h.mode()? & 0o7777, h.uid()?, h.gid()?);
        let link = e
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        check.entry(&Facts {
            path: e.path_bytes().as_ref(),
            kind: kind.as_byte(),
            mode,
            uid,
            gid,
            mtime: &mtime_s,
            size: e.size(),
            link: &link,
            xattrs: &xattrs,
            sparse: &sparse,
        });
        // Where it goes, and whether its parent came from the stream.
        let dest = if rel == Path::new("image") {
            if !self.image || !kind.is_file() || self.files.contains(&rel) {
                bail!("refused entry image: not one image file of an image subhost");
            }
            self.top.join(&self.image_name)
        } else {
            let in_root = rel.starts_with("root") && !self.image;
            let parent_ok =
                rel == Path::new("root") || rel.parent().is_some_and(|p| self.dirs.contains(p));
            if !in_root || !parent_ok {
                bail!(
                    "refused entry {}: not below root/, or below something that is not a \
                     directory of the stream",
                    rel.display()
                );
            }
            self.top.join(&rel)
        };
        let here = || format!("{}", rel.display());
        let to_u32 = |id: u64| {
            u32::try_from(id).map_err(|_| anyhow::anyhow!("{}: id {id} too large", here()))
        };
        let (uid, gid) = (to_u32(uid)?, to_u32(gid)?);
        let (uid, gid) = if rel == Path::new("root") {
            (
                copy::shifted_top(self.shift, uid),
                copy::shifted_top(self.shift, gid),
            )
        } else {
            (
                copy::shifted(self.shift, uid, &rel)?,
                copy::shifted(self.shift, gid, &rel)?,
            )
        };
        let mtime = mtime_of(&mtime_s, h.mtime()?);
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                if rel != Path::new("root") || !self.dirs.contains(&rel) {
                    std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700)
                        .create(&dest)
                        .with_context(|| format!("cannot create {}", dest.display()))?;
                }
                self.dirs.insert(rel);
                self.later.push((
                    dest,
                    DirMeta {
                        mode,
                        uid,
                        gid,
                        mtime,
                        xattrs,
                    },
                ));
                return Ok(());
            }
            T::Link => {
                let target = clean(&link)?;
                if !self.files.contains(&target) {
                    bail!(
                        "refused hardlink {} to {}: not a file of the stream before it",
                        here(),
                        target.display()
                    );
                }
                fs::hard_link(self.top.join(&target), &dest)
                    .with_context(|| format!("cannot link {}", dest.display()))?;
                self.files.insert(rel);
                return Ok(());
            }
            T::Regular | T::Continuous => {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dest)
                    .with_context(|| format!("cannot create {}", dest.display()))?;
                let ext: Vec<(u64, u64)> = if sparse.is_empty() && real_size.is_none() {
                    vec![(0, e.size())]
                } else {
                    parse_sparse(&sparse)
                        .with_context(|| format!("{}: a bad SUBHOST.sparse", here()))?
                };
                let total: u64 = ext.iter().map(|x| x.1).sum();
                if total != e.size() {
                    bail!("{}: its holes map does not match its size", here());
                }
                let mut data = Checked {
                    inner: &mut *e,
                    crc: &mut check.crc,
                };
                for (off, len) in ext {
                    let mut at = off;
                    let mut left = len;
                    while left > 0 {
                        let n = (left as usize).min(self.buf.len());
                        data.read_exact(&mut self.buf[..n])
                            .with_context(|| format!("the stream ends inside {}", here()))?;
                        f.write_all_at(&self.buf[..n], at)
                            .with_context(|| format!("cannot write {}", dest.display()))?;
                        at += n as u64;
                        left -= n as u64;
                    }
                }
                if let Some(size) = real_size {
                    f.set_len(size)
                        .with_context(|| format!("cannot size {}", dest.display()))?;
                }
            }
            T::Symlink => {
                if link.is_empty() {
                    bail!("{}: a symlink to nothing", here());
                }
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&link), &dest)
                    .with_context(|| format!("cannot create {}", dest.display()))?;
            }
            T::Char if h.device_major()? == Some(0) && h.device_minor()? == Some(0) => {
                copy::mknod(&dest, libc::S_IFCHR, 0)?;
            }
            T::Fifo => copy::mknod(&dest, libc::S_IFIFO | 0o600, 0)?,
            T::Char | T::Block => bail!(
                "refused device node {}: only overlay whiteouts (char 0/0) are received",
                here()
            ),
            other => bail!(
                "refused entry {}: tar type {:?} is not received",
                here(),
                other
            ),
        }
        self.files.insert(rel);
        copy::lchown(&dest, uid, gid)?;
        for (k, v) in xattrs {
            let v = copy::shift_xattr(&k, v, self.shift, &dest)?;
            copy::set_xattr(&dest, &k, &v)?;
        }
        if !kind.is_symlink() {
            fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .with_context(|| format!("cannot chmod {}", dest.display()))?;
        }
        copy::set_times(&dest, mtime, mtime)
    }

    fn finish(&mut self) -> Result<()> {
        for (dest, m) in self.later.drain(..).rev() {
            copy::lchown(&dest, m.uid, m.gid)?;
            for (k, v) in m.xattrs {
                let v = copy::shift_xattr(&k, v, self.shift, &dest)?;
                copy::set_xattr(&dest, &k, &v)?;
            }
            fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(m.mode))
                .with_context(|| format!("cannot chmod {}", dest.display()))?;
            copy::set_times(&dest, m.mtime, m.mtime)?;
        }
        Ok(())
    }
}

fn parse_sparse(s: &str) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut end = 0;
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (o, n) = part.split_once(':').context("OFF:LEN expected")?;
        let (o, n): (u64, u64) = (o.parse()?, n.parse()?);
        if o < end {
            bail!("extents out of order");
        }
        end = o.checked_add(n).context("extent too large")?;
        out.push((o, n));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_xattr_value_with_a_newline_goes_in_hex() {
        let (k, v) = super::xattr_record("user.a", b"x\ny");
        assert_eq!(
            (k.as_str(), v.as_slice()),
            ("SUBHOST.xattr.user.a", &b"780a79"[..])
        );
        assert_eq!(super::unhex(&v).unwrap(), b"x\ny");
        let (k, v) = super::xattr_record("user.a", b"plain");
        assert_eq!(
            (k.as_str(), v.as_slice()),
            ("SCHILY.xattr.user.a", &b"plain"[..])
        );
        assert!(super::unhex(b"7").is_none() && super::unhex(b"zz").is_none());
    }

    use super::*;

    #[test]
    fn paths_are_checked() {
        assert_eq!(clean(b"root/a/b").unwrap(), Path::new("root/a/b"));
        assert_eq!(clean(b"root/").unwrap(), Path::new("root"));
        for bad in [
            &b"/etc/passwd"[..],
            b"root/../x",
            b"./root",
            b"",
            b"root/./a",
        ] {
            assert!(clean(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn sparse_maps_and_times() {
        assert_eq!(
            parse_sparse("0:4096,8192:10").unwrap(),
            [(0, 4096), (8192, 10)]
        );
        assert_eq!(parse_sparse("").unwrap(), []);
        assert!(parse_sparse("8192:10,0:1").is_err());
        assert!(parse_sparse("x").is_err());
        assert_eq!(mtime_of("1700000000.5", 0), (1_700_000_000, 500_000_000));
        assert_eq!(mtime_of("1700000000.000000001", 0), (1_700_000_000, 1));
        assert_eq!(mtime_of("", 42), (42, 0));
    }

    #[test]
    fn bases_are_found_by_their_place() {
        let d = std::env::temp_dir().join(format!("shtstream{}", std::process::id()));
        let b = d.join(".bases/deb");
        fs::create_dir_all(b.join("root")).unwrap();
        fs::write(
            b.join("manifest.json"),
            r#"{"name":"deb","source":"t","kind":"dir","digest":"sha256:ab","date":"d","files":0,"bytes":0}"#,
        )
        .unwrap();
        let r = base_of(&d, &b.join("root")).unwrap();
        assert_eq!(
            r,
            Some(BaseRef {
                name: "deb".into(),
                digest: "sha256:ab".into()
            })
        );
        assert_eq!(base_of(&d, Path::new("/srv/base")).unwrap(), None);
        assert!(check_base(&d, r.as_ref().unwrap(), "web").is_ok());
        let other = BaseRef {
            name: "deb".into(),
            digest: "sha256:cd".into(),
        };
        let e = check_base(&d, &other, "web").unwrap_err().to_string();
        assert!(e.contains("sha256:cd") && e.contains("sha256:ab"), "{e}");
        let missing = BaseRef {
            name: "alp".into(),
            digest: "sha256:cd".into(),
        };
        assert!(check_base(&d, &missing, "web")
            .unwrap_err()
            .to_string()
            .contains("not on this host"));
        crate::files::tree::remove_tree_mount_free(&d).unwrap();
    }
}
