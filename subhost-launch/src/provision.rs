//! Making a new subhost on disk: its directory (0700; with USERNS 0710 to
//! the group of the range's root), `root/`, `work/` and `live/` or a
//! formatted image with `mnt/`, and its config. All or nothing: a failure
//! removes exactly what was made, each piece with unlink or rmdir, so that
//! nothing else found there is ever deleted.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::layout::Layout;
use crate::userns::{Range, Setting};

/// Smallest image `mkfs.ext4` formats without trouble.
pub const IMAGE_MIN: u64 = 1 << 20;

/// `$SUBHOST/NAME` is made 0700: a privileged subhost's root is the host's
/// uid 0, so a setuid file it leaves in `root/` (or `live/`) would run as
/// host root for any host user who could reach it. With USERNS the
/// sandbox reaches `live` as root of the subhost's user namespace, an
/// ordinary host user: the directory then goes to that root's group, with
/// the search bit for it alone (0710). Not to others: what root inside
/// writes in an rbind or image root, or a SHARE, is owned on disk by its
/// ids inside, so a setuid-root file made there is the host's root's.
fn open_to_range(dir: &Path, range: crate::userns::Range) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(dir, None, Some(range.base))
        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o710)))
        .with_context(|| format!("cannot give {} to the user namespace's root", dir.display()))
}

/// Makes the subhost of `layout` with `config` as its config, an image of
/// `image_size` bytes when given, and with `userns` its range picked and
/// recorded; returns that range.
pub fn provision(
    layout: &Layout,
    config: &str,
    image_size: Option<u64>,
    userns: Option<Setting>,
) -> Result<Option<Range>> {
    let base = &layout.base;
    let name = &layout.name;
    let made_base = make_base(base)?;
    match fs::DirBuilder::new().mode(0o700).create(&layout.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => bail!(
            "{} exists already: not overwriting it (choose another name, or `subhost-launch \
             stop {name}` and remove the directory first to start over)",
            layout.dir.display()
        ),
        Err(e) => {
            remove_base(base, made_base);
            return Err(e).with_context(|| format!("cannot create {}", layout.dir.display()));
        }
    }
    let populated = populate(layout, config, image_size).and_then(|()| match userns {
        Some(setting) => {
            let range = crate::userns::resolve(layout, setting)?.map_err(anyhow::Error::msg)?;
            open_to_range(&layout.dir, range)?;
            Ok(Some(range))
        }
        None => Ok(None),
    });
    let range = match populated {
        Ok(range) => range,
        Err(e) => {
            let left = unmake(layout);
            remove_base(base, made_base);
            if !left.is_empty() {
                return Err(e.context(format!(
                    "after that, {} was left in place, holding what this create did not \
                     make: {}",
                    layout.dir.display(),
                    left.join(", ")
                )));
            }
            return Err(e);
        }
    };
    Ok(range)
}

/// Removes what a failed `create` made in the subhost's directory, and the
/// directory: each file it writes is unlinked and each directory it makes
/// removed with rmdir, so anything else found there (or put there
/// meanwhile, a mount among them) stays, and is returned for the message.
fn unmake(layout: &Layout) -> Vec<String> {
    let tree = layout.dir.join(IMAGE_TREE);
    let files = [layout.config(), layout.userns_record(), layout.image()];
    let dirs = [
        tree.join("root"),
        tree.join("work"),
        tree,
        layout.root(false),
        layout.work(false),
        layout.mnt(),
        layout.live(),
    ];
    for f in &files {
        let _ = fs::remove_file(f);
    }
    for d in &dirs {
        let _ = fs::remove_dir(d);
    }
    match fs::remove_dir(&layout.dir) {
        Ok(()) => Vec::new(),
        Err(_) => fs::read_dir(&layout.dir)
            .map(|entries| {
                entries
                    .filter_map(|e| Some(e.ok()?.path().display().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Where `make_image` lays out the image's top directories for mkfs.
const IMAGE_TREE: &str = ".image-tree";

/// Creates `$SUBHOST` if missing; returns whether this call made it.
fn make_base(base: &Path) -> Result<bool> {
    if base.is_dir() {
        return Ok(false);
    }
    match fs::create_dir(base) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot create the subhost directory {} (set SUBHOST or --subhost-dir to \
                 another place, or create it first)",
                base.display()
            )
        }),
    }
}

fn remove_base(base: &Path, made: bool) {
    if made {
        let _ = fs::remove_dir(base);
    }
}

fn populate(layout: &Layout, text: &str, image_size: Option<u64>) -> Result<()> {
    match image_size {
        None => {
            for d in [layout.root(false), layout.work(false)] {
                mkdir(&d, 0o755)?;
            }
        }
        Some(size) => {
            make_image(layout, size)?;
            mkdir(&layout.mnt(), 0o755)?;
        }
    }
    mkdir(&layout.live(), 0o755)?;
    fs::write(layout.config(), text)
        .with_context(|| format!("cannot write {}", layout.config().display()))
}

fn mkdir(d: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(d)
        .with_context(|| format!("cannot create {}", d.display()))
}

/// A sparse `NAME.img` formatted ext4 with empty `root/` and `work/` at its
/// top, made from a staging tree so nothing needs mounting.
fn make_image(layout: &Layout, size: u64) -> Result<()> {
    let image = layout.image();
    let file = fs::File::create_new(&image)
        .with_context(|| format!("cannot create {}", image.display()))?;
    file.set_len(size)
        .with_context(|| format!("cannot size {} to {size} bytes", image.display()))?;
    drop(file);
    let tree = layout.dir.join(IMAGE_TREE);
    let levels = [tree.clone(), tree.join("root"), tree.join("work")];
    for d in &levels {
        mkdir(d, 0o755)?;
    }
    let out = Command::new("mkfs.ext4")
        .arg("-q")
        .arg("-d")
        .arg(&tree)
        .arg(&image)
        .output();
    // Each level made above, with rmdir: anything else there is kept.
    for d in levels.iter().rev() {
        fs::remove_dir(d).with_context(|| format!("cannot remove {}", d.display()))?;
    }
    let out = out.context("cannot run mkfs.ext4 (install e2fsprogs)")?;
    if !out.status.success() {
        bail!(
            "mkfs.ext4 failed on {} ({}): {}",
            image.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A new subhost built beside `$SUBHOST/NAME` (in `$SUBHOST/.NAME.new`, a
/// name `list` skips) and renamed into place whole once complete, for
/// `clone` and `receive`: a failure or an interruption never leaves a
/// subhost that looks usable. Dropped uncommitted, the directory is
/// removed with the walk that never leaves its mount.
pub struct Aside {
    pub dir: std::path::PathBuf,
    target: Layout,
    made_base: bool,
    committed: bool,
}

impl Aside {
    pub fn new(target: &Layout) -> Result<Aside> {
        if target.dir.symlink_metadata().is_ok() {
            bail!(
                "{} exists already: not overwriting it (choose another name)",
                target.dir.display()
            );
        }
        let made_base = make_base(&target.base)?;
        let dir = target.base.join(format!(".{}.new", target.name));
        if let Err(e) = fs::DirBuilder::new().mode(0o700).create(&dir) {
            remove_base(&target.base, made_base);
            if e.kind() == io::ErrorKind::AlreadyExists {
                bail!(
                    "{} exists: another clone or receive of {} is under way, or one was \
                     interrupted (then look inside and remove it)",
                    dir.display(),
                    target.name
                );
            }
            return Err(e).with_context(|| format!("cannot create {}", dir.display()));
        }
        Ok(Aside {
            dir,
            target: target.clone(),
            made_base,
            committed: false,
        })
    }

    /// Makes the empty directories a subhost has beside its root:
    /// `work/` and `live/`, or `mnt/` and `live/` for an image.
    pub fn make_dirs(&self, image: bool, root: bool) -> Result<()> {
        let mut dirs = vec![self.dir.join("live")];
        if image {
            dirs.push(self.dir.join("mnt"));
        } else {
            dirs.push(self.dir.join("work"));
            if root {
                dirs.push(self.dir.join("root"));
            }
        }
        for d in &dirs {
            mkdir(d, 0o755)?;
        }
        Ok(())
    }

    /// Renames the directory to `$SUBHOST/NAME`, refused if that exists
    /// now; with a user namespace, opened to the range's root first.
    pub fn commit(mut self, range: Option<Range>) -> Result<()> {
        if let Some(r) = range {
            open_to_range(&self.dir, r)?;
            let record = self.dir.join("userns");
            fs::write(&record, format!("{r}\n"))
                .with_context(|| format!("cannot write {}", record.display()))?;
        }
        // Never replaces a subhost made meanwhile.
        crate::sys::rename_noreplace(&self.dir, &self.target.dir).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.dir.display(),
                self.target.dir.display()
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Err(e) = crate::files::tree::remove_tree_mount_free(&self.dir) {
            log::warn!("cannot remove {}: {e}", self.dir.display());
        }
        remove_base(&self.target.base, self.made_base);
    }
}
