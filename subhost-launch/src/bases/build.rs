//! Building a base's tree from entries, whatever they come from (a
//! directory, a tarball, the layers of an OCI image): every path is checked
//! before anything is written, so that no entry lands outside the tree.
//!
//! - A path with `..`, or an absolute one, is refused (`./` prefixes are
//!   normal and dropped).
//! - Nothing is written through a symlink of the tree: a path whose parent
//!   is a symlink in the tree is refused.
//! - A symlink may point anywhere inside the tree. Absolute targets are
//!   normal in distribution trees (`/bin/sh -> /usr/bin/dash` style) and
//!   read relative to the base's root, as they are inside a subhost; a
//!   target is resolved lexically from the link's directory (or the root,
//!   when absolute), and one whose `..` climbs above the root is refused.
//! - Device nodes are refused, but for overlay whiteouts (character device
//!   0/0). Sockets are refused.
//! - Hardlinks must name an entry already in the tree, by a path that
//!   passes the same checks.
//!
//! Directories' times are set at the end, once nothing is added to them.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::files::xattr;

/// Owner, mode, time and xattrs of an entry.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Permission bits with set-id and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds and nanoseconds since the epoch.
    pub mtime: (i64, i64),
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What an entry is.
pub enum Kind<'a> {
    Dir,
    File(&'a mut dyn Read),
    Symlink(PathBuf),
    /// A path of the tree this one becomes another name of.
    Hardlink(PathBuf),
    Fifo,
    /// A character device 0/0: an overlay whiteout.
    Whiteout,
}

pub struct Tree {
    root: PathBuf,
    dirs: Vec<(PathBuf, (i64, i64))>,
    /// Paths written since `new_layer`: an OCI layer's whiteouts delete
    /// only what the layers below it made.
    this_layer: HashSet<PathBuf>,
}

/// `path` as a relative path of the tree: `./` dropped; `..`, absolute
/// paths and empty components refused. The root is the empty path.
pub fn clean(path: &[u8]) -> Result<PathBuf> {
    let shown = String::from_utf8_lossy(path);
    if path.starts_with(b"/") {
        bail!("{shown:?} is an absolute path: a base's entries must be relative to its root");
    }
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(path)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                bail!("{shown:?} has a `..` component: it would reach outside the base")
            }
            Component::RootDir | Component::Prefix(_) => bail!("{shown:?} is an absolute path"),
        }
    }
    Ok(out)
}

/// Whether symlink `link` (a clean relative path) pointing to `target`
/// leads out of the tree, read lexically (see the module doc).
pub fn escapes(link: &Path, target: &Path) -> bool {
    let mut depth: Vec<&OsStr> = Vec::new();
    if !target.is_absolute() {
        if let Some(parent) = link.parent() {
            depth.extend(parent.components().map(|c| c.as_os_str()));
        }
    }
    for c in target.components() {
        match c {
            Component::Normal(n) => depth.push(n),
            Component::ParentDir if depth.pop().is_none() => return true,
            _ => {}
        }
    }
    false
}

impl Tree {
    /// A tree to build in `root`, an empty directory.
    pub fn new(root: &Path) -> Tree {
        Tree {
            root: root.to_path_buf(),
            dirs: Vec::new(),
            this_layer: HashSet::new(),
        }
    }

    pub fn new_layer(&mut self) {
        self.this_layer.clear();
    }

    /// The full path of `rel`, after checking that every directory above it
    /// in the tree is a directory, not a symlink; missing ones are made
    /// (root-owned, 0755), as tar does.
    fn place(&self, rel: &Path) -> Result<PathBuf> {
        let mut at = self.root.clone();
        let parents: Vec<_> = rel
            .parent()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        for c in parents {
            at.push(c);
            match fs::symlink_metadata(&at) {
                Ok(md) if md.is_dir() => {}
                Ok(md) if md.file_type().is_symlink() => bail!(
                    "{} goes through the symlink {}: nothing is written through a link of the base",
                    rel.display(),
                    at.strip_prefix(&self.root).unwrap_or(&at).display()
                ),
                Ok(_) => bail!(
                    "{} is below {}, which is no directory",
                    rel.display(),
                    at.strip_prefix(&self.root).unwrap_or(&at).display()
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at).with_context(|| format!("cannot make {}", at.display()))?;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot inspect {}", at.display()))
                }
            }
        }
        Ok(self.root.join(rel))
    }

    /// Removes what is at `full`, a directory with all it holds (a tree we
    /// are building: no mount below it, checked by the walk).
    fn clear(full: &Path) -> Result<()> {
        match fs::symlink_metadata(full) {
            Ok(md) if md.is_dir() => crate::files::tree::remove_tree_mount_free(full)
                .with_context(|| format!("cannot replace {}", full.display())),
            Ok(_) => {
                fs::remove_file(full).with_context(|| format!("cannot replace {}", full.display()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot inspect {}", full.display())),
        }
    }

    /// Writes one entry at `rel` (a clean relative path; empty for the
    /// root, which only takes a directory's metadata). A later entry
    /// replaces an earlier one, as in tar and image layers.
    pub fn put(&mut self, rel: &Path, kind: Kind<'_>, meta: &Meta) -> Result<()> {
        let shown = rel.display().to_string();
        let full = if rel.as_os_str().is_empty() {
            if !matches!(kind, Kind::Dir) {
                bail!("the base's root must be a directory");
            }
            self.root.clone()
        } else {
            self.place(rel)?
        };
        let existing = fs::symlink_metadata(&full).ok();
        match kind {
            Kind::Dir => {
                if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                    Self::clear(&full)?;
                    fs::create_dir(&full).with_context(|| format!("cannot make {shown}"))?;
                }
            }
            Kind::File(reader) => {
                Self::clear(&full)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&full)
                    .with_context(|| format!("cannot make {shown}"))?;
                io::copy(reader, &mut f).with_context(|| format!("cannot write {shown}"))?;
            }
            Kind::Symlink(target) => {
                if escapes(rel, &target) {
                    bail!(
                        "symlink {shown} -> {} points out of the base (absolute targets are read \
                         from the base's root; this one's `..` climbs above it)",
                        target.display()
                    );
                }
                Self::clear(&full)?;
                std::os::unix::fs::symlink(&target, &full)
                    .with_context(|| format!("cannot make symlink {shown}"))?;
            }
            Kind::Hardlink(to) => {
                let src = self.root.join(&to);
                let md = fs::symlink_metadata(&src).map_err(|_| {
                    anyhow!(
                        "hardlink {shown} -> {}: no such entry before it in the base",
                        to.display()
                    )
                })?;
                if md.is_dir() {
                    bail!("hardlink {shown} -> {} names a directory", to.display());
                }
                self.place(&to)?;
                if src != full {
                    Self::clear(&full)?;
                    fs::hard_link(&src, &full).with_context(|| format!("cannot link {shown}"))?;
                }
                self.this_layer.insert(rel.to_path_buf());
                // A hardlink shares its inode: its metadata is the target's.
                return Ok(());
            }
            Kind::Fifo => {
                Self::clear(&full)?;
                mknod(&full, libc::S_IFIFO, 0)
                    .with_context(|| format!("cannot make FIFO {shown}"))?;
            }
            Kind::Whiteout => {
                Self::clear(&full)?;
                mknod(&full, libc::S_IFCHR, 0)
                    .with_context(|| format!("cannot make whiteout {shown}"))?;
            }
        }
        self.this_layer.insert(rel.to_path_buf());
        self.set_meta(&full, meta)
            .with_context(|| format!("cannot set owner, mode or xattrs of {shown}"))
    }

    fn set_meta(&mut self, full: &Path, meta: &Meta) -> Result<()> {
        std::os::unix::fs::lchown(full, Some(meta.uid), Some(meta.gid))?;
        let md = fs::symlink_metadata(full)?;
        if !md.file_type().is_symlink() {
            // After the chown, which clears set-id bits.
            fs::set_permissions(full, fs::Permissions::from_mode(meta.mode & 0o7777))?;
        }
        for (n, v) in &meta.xattrs {
            xattr::set(full, n, v)
                .with_context(|| format!("xattr {}", String::from_utf8_lossy(n)))?;
        }
        if md.is_dir() {
            self.dirs.push((full.to_path_buf(), meta.mtime));
        } else {
            set_mtime(full, meta.mtime)?;
        }
        Ok(())
    }

    /// An OCI whiteout `.wh.NAME` at `rel` (its directory and NAME):
    /// deletes NAME as the layers below made it.
    pub fn whiteout(&mut self, dir: &Path, name: &OsStr) -> Result<()> {
        let rel = dir.join(name);
        if self.this_layer.contains(&rel) {
            return Ok(());
        }
        let full = self.place(&rel)?;
        Self::clear(&full)
    }

    /// An OCI opaque marker in `dir`: what the layers below put in it goes.
    pub fn opaque(&mut self, dir: &Path) -> Result<()> {
        let full = self
            .place(&dir.join("x"))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for e in fs::read_dir(&full).with_context(|| format!("cannot read {}", full.display()))? {
            let e = e?;
            if !self.this_layer.contains(&dir.join(e.file_name())) {
                Self::clear(&e.path())?;
            }
        }
        Ok(())
    }

    /// Sets the directories' times, deepest first, now that nothing is
    /// added to them any more.
    pub fn finish(mut self) -> Result<()> {
        // Stable: of a path made twice, the later entry's time wins.
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (d, t) in &self.dirs {
            // Gone since (a later whiteout, a file in its place): no time.
            if !fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            set_mtime(d, *t).with_context(|| format!("cannot set the time of {}", d.display()))?;
        }
        Ok(())
    }
}

/// A node of `kind` (FIFO, or a whiteout's char 0/0), owner-only until
/// its metadata is set.
fn mknod(path: &Path, kind: libc::mode_t, dev: u64) -> Result<()> {
    crate::files::copy::mknod(path, kind | 0o600, dev)
}

/// The modification time, and the access time with it, of `path` itself.
fn set_mtime(path: &Path, t: (i64, i64)) -> Result<()> {
    crate::files::copy::set_times(path, t, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_or_refused() {
        assert_eq!(clean(b"./a/b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(clean(b"./").unwrap(), PathBuf::new());
        assert!(clean(b"/etc/passwd")
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        assert!(clean(b"a/../../x").unwrap_err().to_string().contains(".."));
    }

    #[test]
    fn symlinks_escape_only_above_the_root() {
        let l = Path::new("usr/bin/sh");
        assert!(!escapes(l, Path::new("/bin/dash")));
        assert!(!escapes(l, Path::new("../../bin/dash")));
        assert!(escapes(l, Path::new("/../bin")));
        assert!(escapes(l, Path::new("../../../etc/shadow")));
        assert!(escapes(Path::new("x"), Path::new("..")));
        assert!(!escapes(Path::new("x"), Path::new(".")));
    }
}
