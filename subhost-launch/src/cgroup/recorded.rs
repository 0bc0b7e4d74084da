//! The `.cgroup` record a start wrote, checked before `stop` acts on it:
//! the record is anyone's to write.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::host::{cgroup_mount_lines, hierarchies, Hierarchy};
use super::plan::check_parent;

/// What the `.cgroup` record of a subhost says, checked: `dirs` are the
/// recorded directories the launcher could have made for it, `problems`
/// name each one it could not have (the record is anyone's to write, and
/// `stop` kills and removes what it names).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub dirs: Vec<PathBuf>,
    pub problems: Vec<String>,
}

/// The `.cgroup` record of NAME, checked against where the launcher puts a
/// cgroup for it (`parent` is CGROUP_PARENT, as for `plan`).
pub fn recorded(name: &str, parent: Option<&str>) -> Recorded {
    let Some(dirs) = crate::state::recorded_cgroup(name) else {
        return Recorded::default();
    };
    let record = crate::state::cgroup_path(name);
    let mounts = match cgroup_mount_lines().and_then(hierarchies) {
        Ok(mounts) => mounts,
        Err(e) => {
            return Recorded {
                dirs: Vec::new(),
                problems: vec![format!("{}: {e:#}", record.display())],
            }
        }
    };
    // A kept cgroup stays where it was made while CGROUP_PARENT changes,
    // until the next start moves it: the parent it was made under is its
    // policy record's.
    let made_under = super::kept::recorded_parent(name);
    let mut out = Recorded::default();
    for d in dirs {
        let why = not_made_for(&mounts, name, parent, &d)
            .and_then(|why| match &made_under {
                Some(p) if p.as_deref() != parent => not_made_for(&mounts, name, p.as_deref(), &d),
                _ => Some(why),
            })
            .or_else(|| not_a_cgroup_dir(&d));
        match why {
            None => out.dirs.push(d),
            Some(why) => out.problems.push(format!(
                "{} names {}, which is not a cgroup the launcher makes for {name} ({why}): \
                 it is left alone; see what it is, then remove {}",
                record.display(),
                d.display(),
                record.display()
            )),
        }
    }
    out
}

/// Why `dir` is not where the launcher puts the cgroup of NAME in any
/// mounted hierarchy: `PARENT/NAME` below a cgroup mount, where PARENT is
/// CGROUP_PARENT, or else (the launcher's own cgroup, whatever it was at
/// the start) followed by `/subhost`. `None` when it is.
pub(super) fn not_made_for(
    mounts: &[Hierarchy],
    name: &str,
    parent: Option<&str>,
    dir: &Path,
) -> Option<String> {
    let plain = dir.is_absolute()
        && dir
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain {
        return Some("not a plain absolute path".into());
    }
    let Some(m) = mounts
        .iter()
        .filter(|m| dir.starts_with(&m.point) && dir != m.point)
        .max_by_key(|m| m.point.components().count())
    else {
        return Some("not below a cgroup mount".into());
    };
    if dir.file_name() != Some(std::ffi::OsStr::new(name)) {
        return Some(format!("its last component is not {name}"));
    }
    match parent {
        Some(p) => {
            let p = match check_parent(p) {
                Ok(p) => p,
                Err(e) => return Some(format!("{e:#}")),
            };
            let want = m.point.join(p.trim_start_matches('/')).join(name);
            (dir != want).then(|| format!("CGROUP_PARENT={p} puts it at {}", want.display()))
        }
        None => {
            let in_subhost = dir
                .parent()
                .filter(|p| *p != m.point)
                .and_then(Path::file_name)
                == Some(std::ffi::OsStr::new("subhost"));
            (!in_subhost).then(|| {
                format!("without CGROUP_PARENT the launcher puts it at .../subhost/{name}")
            })
        }
    }
}

/// Why an existing `dir` is not the cgroup directory its path says: a
/// symlink on the way, or another filesystem. One that does not exist is
/// fine: there is nothing in it to act on.
pub(super) fn not_a_cgroup_dir(dir: &Path) -> Option<String> {
    let real = match fs::canonicalize(dir) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("cannot resolve it: {e}")),
    };
    if real != dir {
        return Some(format!("it resolves to {}", real.display()));
    }
    let on_cgroupfs = nix::sys::statfs::statfs(dir).is_ok_and(|fs| {
        let t = fs.filesystem_type();
        t == nix::sys::statfs::CGROUP2_SUPER_MAGIC || t == nix::sys::statfs::CGROUP_SUPER_MAGIC
    });
    (!on_cgroupfs || !dir.is_dir()).then(|| "not a directory of a cgroup filesystem".into())
}
