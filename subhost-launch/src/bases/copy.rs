//! A directory as a base's source: copied as it is, with owners, modes,
//! times, xattrs, symlinks (not followed) and hardlinks (one inode stays
//! one inode). The copy stays on the source's filesystem, as `cp -x`:
//! a mount point below it becomes an empty directory (importing `/` takes
//! no `/proc`); and it never enters the bases directory itself.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::build::{Kind, Meta, Tree};
use crate::files::xattr;

/// Copies the tree at `src` into `tree`, skipping the directory whose
/// device and inode are `skip` (where bases live).
pub fn import(src: &Path, tree: &mut Tree, skip: Option<(u64, u64)>) -> Result<()> {
    let top =
        fs::symlink_metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
    let mut links = HashMap::new();
    let mut ctx = Ctx {
        src,
        dev: top.dev(),
        skip,
        links: &mut links,
    };
    ctx.entry(Path::new(""), &top, tree)
}

struct Ctx<'a> {
    src: &'a Path,
    dev: u64,
    skip: Option<(u64, u64)>,
    /// Inodes seen with more than one link, by (dev, ino): their first path.
    links: &'a mut HashMap<(u64, u64), std::path::PathBuf>,
}

impl Ctx<'_> {
    fn entry(&mut self, rel: &Path, md: &fs::Metadata, tree: &mut Tree) -> Result<()> {
        let full = self.src.join(rel);
        let shown = full.display().to_string();
        let ft = md.file_type();
        let meta = Meta {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: (md.mtime(), md.mtime_nsec()),
            xattrs: xattr::list(&full)
                .with_context(|| format!("cannot read the xattrs of {shown}"))?
                .into_iter()
                .filter(|(n, _)| n.as_slice() != b"security.selinux")
                .collect(),
        };
        if ft.is_dir() {
            tree.put(rel, Kind::Dir, &meta)?;
            if md.dev() != self.dev {
                return Ok(());
            }
            let mut names: Vec<_> = fs::read_dir(&full)
                .with_context(|| format!("cannot read {shown}"))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("cannot read {shown}"))?;
            names.sort();
            for n in names {
                let sub = rel.join(&n);
                let smd = fs::symlink_metadata(self.src.join(&sub))
                    .with_context(|| format!("cannot read {}", self.src.join(&sub).display()))?;
                if self.skip == Some((smd.dev(), smd.ino())) {
                    continue;
                }
                self.entry(&sub, &smd, tree)?;
            }
            return Ok(());
        }
        if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                    return tree.put(rel, Kind::Hardlink(first.clone()), &meta);
                }
                self.links.insert((md.dev(), md.ino()), rel.to_path_buf());
            }
            let mut f = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(&full)
                .with_context(|| format!("cannot open {shown}"))?;
            return tree.put(rel, Kind::File(&mut f), &meta);
        }
        if ft.is_symlink() {
            let t = fs::read_link(&full).with_context(|| format!("cannot read {shown}"))?;
            return tree.put(rel, Kind::Symlink(t), &meta);
        }
        if ft.is_fifo() {
            return tree.put(rel, Kind::Fifo, &meta);
        }
        if ft.is_char_device() && md.rdev() == 0 {
            return tree.put(rel, Kind::Whiteout, &meta);
        }
        if ft.is_char_device() || ft.is_block_device() {
            bail!(
                "{shown} is a device node: a base holds no devices (a subhost gets its own /dev); \
                 import a copy without it"
            );
        }
        bail!("{shown} is a socket: a base holds none; import a copy without it")
    }
}
