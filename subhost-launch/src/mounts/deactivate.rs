//! Taking a subhost's root down again: unmounting `live` and `mnt` (only
//! what is this subhost's own), waiting for its image's loop device to be
//! released, and telling whether it is mounted at all.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nix::errno::Errno;
use nix::mount::MntFlags;

use crate::layout::Layout;

use super::activate::is_mount_root;
use super::staging::{clear_staging, staging_dir};
use super::{loopdev, mount_points, quote, split_escaped, unescape_backslash, MountEntry};

/// Whether `live` of `layout` is mounted now (read from mountinfo).
pub fn is_active(layout: &Layout) -> bool {
    let Some(live) = resolved(layout, "live") else {
        return false;
    };
    // One statx instead of reading and parsing the whole mount table, which
    // the kernel formats anew on every read; the table is the fallback for
    // kernels before 5.8.
    if let Some(root) = is_mount_root(&live) {
        return root;
    }
    mount_points()
        .map(|m| m.iter().any(|e| e.mount_point == live))
        .unwrap_or(false)
}

/// `dir/NAME/<leaf>` with the subhost directory resolved but not `leaf`:
/// mountinfo has real paths, and a symlinked `live` must never lead the
/// unmounting elsewhere.
fn resolved(layout: &Layout, leaf: &str) -> Option<PathBuf> {
    layout.dir.canonicalize().ok().map(|d| d.join(leaf))
}

/// Unmounts `live` (and everything below it) and `mnt` (detaching the loop
/// device), and clears layers a start left staged. Returns whether anything
/// was mounted. Idempotent; never deletes data, and never unmounts a mount
/// at `live` or `mnt` that is not this subhost's own (see [`foreign`]).
pub fn deactivate(layout: &Layout) -> anyhow::Result<bool> {
    deactivate_all(&[layout]).remove(0)
}

/// [`deactivate`] for many subhosts, with one read of the mount table for
/// all of them instead of a few each (the table grows with every subhost,
/// so reading it per subhost costs the square of their number). One result
/// per layout; when the shared pass fails, each is done on its own so the
/// failure is told of the subhost it belongs to.
pub fn deactivate_all(layouts: &[&Layout]) -> Vec<anyhow::Result<bool>> {
    let mut out: Vec<anyhow::Result<bool>> = layouts.iter().map(|_| Ok(false)).collect();
    let table = match mount_points().context("cannot read /proc/self/mountinfo") {
        Ok(t) => t,
        Err(e) => {
            let e = format!("{e:#}");
            return layouts.iter().map(|_| Err(anyhow!("{e}"))).collect();
        }
    };
    let mut dirs: Vec<(usize, PathBuf)> = Vec::new();
    for (i, l) in layouts.iter().enumerate() {
        let (Some(live), Some(mnt)) = (resolved(l, "live"), resolved(l, "mnt")) else {
            continue;
        };
        let theirs = foreign(l, &table);
        if !theirs.is_empty() {
            out[i] = Err(anyhow!(
                "{}: left mounted, as it is not this subhost's; unmount it yourself once \
                 nothing needs it",
                theirs.join("; ")
            ));
            continue;
        }
        dirs.push((i, live));
        dirs.push((i, mnt));
    }
    let paths: Vec<&Path> = dirs.iter().map(|(_, d)| d.as_path()).collect();
    match unmount_trees(&paths) {
        Ok(had) => {
            for ((i, dir), had) in dirs.iter().zip(had) {
                if had {
                    // What `-v` shows of each.
                    log::info!("umount -R {}", quote(dir));
                }
                if let Ok(any) = &mut out[*i] {
                    *any |= had;
                }
            }
        }
        Err(_) => {
            // One by one, so that each failure is told of its subhost.
            for (i, dir) in &dirs {
                let r = unmount_step(dir);
                out[*i] = match (std::mem::replace(&mut out[*i], Ok(false)), r) {
                    (Ok(a), Ok(b)) => Ok(a || b),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
            }
        }
    }
    for (i, l) in layouts.iter().enumerate() {
        let cleared = clear_staging(&staging_dir(&l.name));
        out[i] = match (std::mem::replace(&mut out[i], Ok(false)), cleared) {
            (Ok(a), Ok(b)) => Ok(a || b),
            (Err(e), Ok(_)) => Err(e),
            (Ok(_), Err(e)) => Err(e),
            (Err(a), Err(b)) => Err(anyhow!("{a:#}; {b:#}")),
        };
    }
    out
}

/// What is mounted on top at `live` and `mnt` of `layout` that this
/// subhost's start does not make, each described: at `live` only an overlay
/// whose upper and work are this subhost's, or a bind of its own root; at
/// `mnt` only a loop device of its own image. Someone else's mount there
/// is neither reused by `start` nor unmounted by `stop`.
pub fn foreign(layout: &Layout, table: &[MountEntry]) -> Vec<String> {
    foreign_below(layout, layout.dir.canonicalize().ok().as_deref(), table)
}

/// [`foreign`] with the subhost directory resolved already (`real`), for
/// a caller that resolved it once for many looks.
pub fn foreign_below(layout: &Layout, real: Option<&Path>, table: &[MountEntry]) -> Vec<String> {
    let mut out = Vec::new();
    let image = layout.image_present();
    let top = |leaf: &str| {
        let p = real?.join(leaf);
        table.iter().rev().find(|e| e.mount_point == p).cloned()
    };
    let same = |a: &Path, b: &Path| matches!((loopdev::file_id(a), loopdev::file_id(b)), (Ok(x), Ok(y)) if x == y);
    if let Some(e) = top("live") {
        let (root, work) = (layout.root(image), layout.work(image));
        let ours = if e.fs_type == "overlay" {
            let opts = split_escaped(e.super_options.as_bytes(), b',');
            let get = |key: &str| {
                opts.iter()
                    .find_map(|o| o.strip_prefix(format!("{key}=").as_bytes()))
                    .map(|v| PathBuf::from(OsString::from_vec(unescape_backslash(v))))
            };
            matches!((get("upperdir"), get("workdir")), (Some(u), Some(w))
                if same(&u, &root) && same(&w, &work))
        } else {
            same(&e.mount_point, &root)
        };
        if !ours {
            out.push(format!(
                "{} holds a mount that is not this subhost's ({} from {})",
                e.mount_point.display(),
                e.fs_type,
                e.source
            ));
        }
    }
    if let Some(e) = top("mnt") {
        let ours = image
            && e.source.starts_with("/dev/loop")
            && loopdev::backing_id(Path::new(&e.source)).ok().flatten()
                == loopdev::file_id(&layout.image()).ok();
        if !ours {
            out.push(format!(
                "{} holds a mount that is not this subhost's image ({} from {})",
                e.mount_point.display(),
                e.fs_type,
                e.source
            ));
        }
    }
    out
}

/// The loop devices (`loop3`, …) bound to the image of `layout` now.
pub fn image_devices(layout: &Layout) -> Vec<String> {
    if !layout.image_present() {
        return Vec::new();
    }
    loopdev::bound_to(&layout.image())
}

/// How often the wait for images' loop devices looks again.
const RELEASE_POLL: Duration = Duration::from_millis(5);

/// Waits up to `timeout` in all until no loop device is bound to the image
/// of any of `layouts`; one result per layout.
///
/// Unmounting `mnt` releases the device only when that was the last mount
/// of the image's filesystem: a mount namespace copied from the host while
/// it was mounted (another subhost's start, any `unshare -m`) keeps a copy
/// until that namespace drops it, and a process with the device open (a
/// `losetup`, `blkid`) keeps it bound until it closes it. Autoclear then
/// detaches it later, on its own; until then a new `start` would mount the
/// same filesystem a second time through another device.
pub fn wait_images_released(layouts: &[&Layout], timeout: Duration) -> Vec<anyhow::Result<()>> {
    let mut bound: Vec<(usize, Vec<String>)> = layouts
        .iter()
        .enumerate()
        .map(|(i, l)| (i, image_devices(l)))
        .filter(|(_, d)| !d.is_empty())
        .collect();
    if !bound.is_empty() {
        let all: Vec<&str> = bound
            .iter()
            .flat_map(|(_, d)| d)
            .map(String::as_str)
            .collect();
        let what = format!("# wait until detached: {}", all.join(" "));
        crate::logging::step(what, || {
            let end = Instant::now() + timeout;
            loop {
                for (i, devs) in bound.iter_mut() {
                    *devs = image_devices(layouts[*i]);
                }
                bound.retain(|(_, d)| !d.is_empty());
                if bound.is_empty() || Instant::now() >= end {
                    break;
                }
                std::thread::sleep(RELEASE_POLL);
            }
        });
    }
    let mut out: Vec<anyhow::Result<()>> = layouts.iter().map(|_| Ok(())).collect();
    for (i, devs) in bound {
        out[i] = Err(anyhow!(
            "image {} is still attached to {} {timeout:?} after its last mount here \
             was unmounted: the holder must let go (`losetup -j {}` shows when it has)",
            layouts[i].image().display(),
            with_holders(&devs),
            quote(layouts[i].image())
        ));
    }
    out
}

/// Loop devices with who holds each, for a message.
pub(super) fn with_holders(devs: &[String]) -> String {
    let held: Vec<String> = devs
        .iter()
        .map(|d| {
            let who = loopdev::holders(d);
            if who.is_empty() {
                format!("/dev/{d}")
            } else {
                format!("/dev/{d} ({})", who.join(", "))
            }
        })
        .collect();
    held.join(", ")
}

/// `unmount_tree` as a logged step of `stop`, when anything is mounted there.
fn unmount_step(dir: &Path) -> anyhow::Result<bool> {
    let mounted = mount_points()
        .context("cannot read /proc/self/mountinfo")?
        .iter()
        .any(|e| e.is_at_or_below(dir));
    if !mounted {
        return Ok(false);
    }
    crate::logging::step(format_args!("umount -R {}", quote(dir)), || {
        unmount_tree(dir)
    })
}

/// Passes over mountinfo before giving up: stacked mounts and mounts that
/// reappear by propagation need more than one.
const UNMOUNT_ROUNDS: usize = 8;

/// Unmounts every mount at or below `dir`, deepest first; a mount still busy
/// after the others are gone is detached lazily, with a warning. Returns
/// whether anything was mounted.
pub fn unmount_tree(dir: &Path) -> anyhow::Result<bool> {
    unmount_trees(&[dir]).map(|had| had[0])
}

/// [`unmount_tree`] for several directories at once; says for each whether
/// anything was mounted at or below it.
fn unmount_trees(dirs: &[&Path]) -> anyhow::Result<Vec<bool>> {
    let mut any = vec![false; dirs.len()];
    for _ in 0..UNMOUNT_ROUNDS {
        let mut below: Vec<(usize, MountEntry)> = mount_points()
            .context("cannot read /proc/self/mountinfo")?
            .into_iter()
            .enumerate()
            .filter(|(_, e)| {
                let mut hit = false;
                for (k, d) in dirs.iter().enumerate() {
                    if e.is_at_or_below(d) {
                        any[k] = true;
                        hit = true;
                    }
                }
                hit
            })
            .collect();
        if below.is_empty() {
            return Ok(any);
        }
        // Deepest first; at one mount point, the newest (topmost) first.
        below.sort_by_key(|(i, e)| std::cmp::Reverse((e.mount_point.components().count(), *i)));
        let mut busy = Vec::new();
        let mut progress = false;
        for (_, e) in &below {
            match nix::mount::umount2(&e.mount_point, MntFlags::empty()) {
                Ok(()) => progress = true,
                // Already gone (with a parent, or by propagation).
                Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(Errno::EBUSY) => busy.push(e.mount_point.clone()),
                Err(err) => {
                    return Err(io::Error::from(err))
                        .with_context(|| format!("cannot unmount {}", e.mount_point.display()))
                }
            }
        }
        if !progress {
            for p in busy {
                log::warn!(
                    "{} is busy (a process still uses it): detaching it lazily; \
                     it goes away when no longer used",
                    p.display()
                );
                nix::mount::umount2(&p, MntFlags::MNT_DETACH)
                    .map_err(io::Error::from)
                    .with_context(|| format!("cannot detach {}", p.display()))?;
            }
        }
    }
    Err(anyhow!(
        "mounts below {} remain after {UNMOUNT_ROUNDS} attempts to unmount them: \
         see /proc/self/mountinfo",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
