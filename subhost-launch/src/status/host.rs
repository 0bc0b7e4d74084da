//! What the host shows of every subhost at once, read once per `list` or
//! `status` call rather than once per subhost: the mount table, the
//! entries of the run directory, `/run/netns` and `/sys/class/net`, the
//! subhost directory resolved, the boot clock. Per subhost only what
//! differs is then read (its records, its init's /proc files, its
//! netns).
//!
//! A listing that cannot be read is not guessed from: each look then
//! falls back to asking the kernel about that one path, as a single
//! `status` would.

use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::FileType;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::layout::Layout;
use crate::mounts::MountEntry;
use crate::netns;

pub(super) struct Host {
    pub mounts: Vec<MountEntry>,
    /// Mount point to the index in `mounts` of the topmost mount there.
    top: HashMap<PathBuf, usize>,
    /// The mounts at or below the run directory (staged layers).
    pub run_mounts: Vec<MountEntry>,
    /// The run directory's entries and their kinds.
    records: Option<HashMap<OsString, FileType>>,
    /// The names in `/run/netns`, and the device of that directory.
    netns: Option<HashSet<OsString>>,
    netns_dev: OnceCell<Option<u64>>,
    /// The links of the host (`/sys/class/net`).
    links: Option<HashSet<OsString>>,
    /// The subhost directory, resolved: `(as given, canonical)`.
    base: Option<(PathBuf, PathBuf)>,
    boot_clock: OnceCell<Option<f64>>,
    bases: RefCell<HashMap<(PathBuf, PathBuf), Option<String>>>,
    /// Whether the cables' addresses are wanted (read from each netns).
    pub addresses: bool,
}

/// The entries of `dir` by name, with their kinds as the directory
/// itself tells (no `stat` of each); an absent directory has none.
fn listing(dir: &Path) -> Option<HashMap<OsString, FileType>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(HashMap::new()),
        Err(_) => return None,
    };
    let mut out = HashMap::new();
    for e in entries {
        let e = e.ok()?;
        out.insert(e.file_name(), e.file_type().ok()?);
    }
    Some(out)
}

/// Each mount point to the index of the last (topmost) mount there, as
/// a look from the end of the table finds it.
pub(super) fn topmost(mounts: &[MountEntry]) -> HashMap<PathBuf, usize> {
    mounts
        .iter()
        .enumerate()
        .map(|(i, m)| (m.mount_point.clone(), i))
        .collect()
}

impl Host {
    pub fn read(base: &Path, mounts: Vec<MountEntry>, addresses: bool) -> Host {
        let run = Path::new(crate::run::RUN_DIR);
        let names =
            |dir: &str| listing(Path::new(dir)).map(|l| l.into_keys().collect::<HashSet<_>>());
        Host {
            top: topmost(&mounts),
            run_mounts: mounts
                .iter()
                .filter(|m| m.is_at_or_below(run))
                .cloned()
                .collect(),
            mounts,
            records: listing(run),
            netns: names(netns::NETNS_RUN_DIR),
            netns_dev: OnceCell::new(),
            links: names("/sys/class/net"),
            base: base
                .canonicalize()
                .ok()
                .map(|real| (base.to_path_buf(), real)),
            boot_clock: OnceCell::new(),
            bases: RefCell::default(),
            addresses,
        }
    }

    /// The topmost mount at `point`.
    pub fn mount_at(&self, point: &Path) -> Option<&MountEntry> {
        self.top.get(point).map(|&i| &self.mounts[i])
    }

    /// Whether the record (or staging directory) `path` under the run
    /// directory is a regular file; `None` when it is absent.
    pub fn record_is_file(&self, path: &Path) -> Option<bool> {
        match (&self.records, path.file_name()) {
            (Some(r), Some(leaf)) if path.parent() == Some(Path::new(crate::run::RUN_DIR)) => {
                r.get(leaf).map(FileType::is_file)
            }
            _ => path
                .symlink_metadata()
                .ok()
                .map(|m| m.file_type().is_file()),
        }
    }

    /// Whether `path` under the run directory may be there: false only
    /// when the listing says it is not.
    pub fn record_there(&self, path: &Path) -> bool {
        self.record_is_file(path).is_some()
    }

    /// What `/run/netns/NAME` is, and its metadata.
    pub fn netns_entry(&self, name: &str) -> (netns::Entry, Option<std::fs::Metadata>) {
        if self
            .netns
            .as_ref()
            .is_some_and(|n| !n.contains(OsStr::new(name)))
        {
            return (netns::Entry::Absent, None);
        }
        let dev = || {
            *self.netns_dev.get_or_init(|| {
                Path::new(netns::NETNS_RUN_DIR)
                    .metadata()
                    .map(|m| m.dev())
                    .ok()
            })
        };
        netns::entry_in(name, dev)
    }

    /// Whether the host has a link named `ifname`.
    pub fn link_present(&self, ifname: &str) -> bool {
        match &self.links {
            Some(l) => l.contains(OsStr::new(ifname)),
            None => Path::new("/sys/class/net").join(ifname).exists(),
        }
    }

    /// The canonical path of the subhost directory of `layout`, and its
    /// device and inode: resolved once for the directory holding them all,
    /// unless this one is a symlink.
    pub fn resolve(&self, layout: &Layout) -> (Option<PathBuf>, Option<(u64, u64)>) {
        let meta = layout.dir.symlink_metadata().ok();
        let plain = meta.as_ref().is_some_and(|m| m.is_dir());
        match (&self.base, layout.dir.file_name()) {
            (Some((given, real)), Some(leaf))
                if plain && layout.dir.parent() == Some(given.as_path()) =>
            {
                let id = meta.map(|m| (m.dev(), m.ino()));
                (Some(real.join(leaf)), id)
            }
            _ => {
                let id = std::fs::metadata(&layout.dir)
                    .ok()
                    .filter(|m| m.is_dir())
                    .map(|m| (m.dev(), m.ino()));
                (layout.dir.canonicalize().ok(), id)
            }
        }
    }

    /// Seconds since boot, read once.
    pub fn boot_clock(&self) -> Option<f64> {
        *self.boot_clock.get_or_init(crate::state::boot_clock)
    }

    /// The base LOWER `lower` of a subhost under `base` is in, looked up
    /// once for every subhost that shares it.
    pub fn base_of(&self, base: &Path, lower: &Path) -> Option<String> {
        let key = (base.to_path_buf(), lower.to_path_buf());
        if let Some(b) = self.bases.borrow().get(&key) {
            return b.clone();
        }
        let b = crate::bases::base_of(base, lower);
        self.bases.borrow_mut().insert(key, b.clone());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u32, point: &str, fs: &str) -> MountEntry {
        MountEntry {
            id,
            parent: 1,
            dev: (0, id),
            root: PathBuf::from("/"),
            mount_point: PathBuf::from(point),
            options: "rw".into(),
            fs_type: fs.into(),
            source: fs.into(),
            super_options: String::new(),
        }
    }

    /// The same mount a look from the end of the table finds: the last
    /// one at a point stacked on others.
    #[test]
    fn the_topmost_mount_is_the_last_at_its_point() {
        let table = vec![
            entry(1, "/", "ext4"),
            entry(2, "/s/a/live", "overlay"),
            entry(3, "/s/b/live", "overlay"),
            entry(4, "/s/a/live", "tmpfs"),
            entry(5, "/s/a/live/proc", "proc"),
        ];
        let top = topmost(&table);
        for point in ["/", "/s/a/live", "/s/b/live", "/s/a/live/proc", "/s/c/live"] {
            let p = Path::new(point);
            let want = table.iter().rev().find(|m| m.mount_point == p);
            assert_eq!(top.get(p).map(|&i| &table[i]), want, "{point}");
        }
    }

    #[test]
    fn a_listing_tells_kinds_without_following_symlinks() {
        let d = std::env::temp_dir().join(format!("subhost-status-host-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("x.init"), "1 2\n").unwrap();
        std::os::unix::fs::symlink(d.join("x.init"), d.join("x.dir")).unwrap();
        let l = listing(&d).unwrap();
        assert!(l[OsStr::new("x.init")].is_file());
        assert!(l[OsStr::new("x.dir")].is_symlink());
        assert!(l[OsStr::new("sub")].is_dir());
        assert_eq!(l.len(), 3);
        assert_eq!(listing(&d.join("gone")).unwrap().len(), 0);
        crate::files::tree::remove_tree_mount_free(&d).unwrap();
    }
}
