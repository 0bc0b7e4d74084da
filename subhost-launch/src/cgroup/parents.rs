//! The record of the parent cgroups the launcher made (see the module
//! docs of `cgroup`), and their removal when the last subhost under one
//! goes.

use std::fs;
use std::io;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;

use super::host::Host;
use super::life::errno_of;
use super::plan::check_parent;

/// For `stop` of a subhost that has no cgroup (left, or never made): the
/// parents the launcher made for it and that are empty go, as they would
/// with its cgroup. A start killed after making them, before its leaf,
/// leaves such parents. `recorded` are the directories its record names
/// (checked); the places `open` looks are added.
pub fn remove_empty_parents(name: &str, parent: Option<&str>, recorded: &[PathBuf]) -> Result<()> {
    if !parents_record().exists() {
        return Ok(());
    }
    let mut leaves = recorded.to_vec();
    let host = Host::probe()?;
    let parent = parent.map(check_parent).transpose()?;
    leaves.extend(
        host.mounts
            .iter()
            .filter_map(|m| host.dir_in(m, name, parent.as_deref()).ok()),
    );
    Parents::lock()?.remove_empty_above(&leaves)
}

/// The parent cgroups the launcher made, one path a line, under an
/// exclusive lock on the record itself (rewritten in place, so the locked
/// inode stays the record).
pub(super) struct Parents {
    file: nix::fcntl::Flock<fs::File>,
}

pub(super) fn parents_record() -> PathBuf {
    crate::run::cgroup_parents()
}

impl Parents {
    pub(super) fn lock() -> Result<Parents> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = parents_record();
        fs::create_dir_all(crate::state::RUN_DIR)
            .with_context(|| format!("cannot create {}", crate::state::RUN_DIR))?;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if !file.metadata()?.is_file() {
            bail!("{} is not a regular file: remove it", path.display());
        }
        let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(Parents { file })
    }

    /// Every path in the record, as written.
    pub(super) fn lines(&self) -> Vec<PathBuf> {
        use std::io::{Read, Seek};
        let mut f: &fs::File = &self.file;
        let mut text = String::new();
        let _ = f.rewind();
        let _ = f.take(crate::files::RECORD_MAX).read_to_string(&mut text);
        text.lines()
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .collect()
    }

    /// The recorded parents that still exist: one removed by hand is
    /// forgotten, lest a directory someone makes there later be taken for
    /// the launcher's.
    pub(super) fn read(&self) -> Vec<PathBuf> {
        self.lines().into_iter().filter(|d| d.is_dir()).collect()
    }

    pub(super) fn write(&self, dirs: &[PathBuf]) -> Result<()> {
        rewrite(&self.file, dirs)
            .with_context(|| format!("cannot write {}", parents_record().display()))
    }

    /// Adds `made`, which need not exist yet.
    pub(super) fn add(&self, made: &[PathBuf]) -> Result<()> {
        if made.is_empty() {
            return Ok(());
        }
        let mut all = self.read();
        for d in made {
            if !all.contains(d) {
                all.push(d.clone());
            }
        }
        self.write(&all)
    }

    /// Drops `dirs` from the record, and every recorded one that is gone.
    pub(super) fn forget(&self, dirs: &[PathBuf]) -> Result<()> {
        let all: Vec<PathBuf> = self
            .read()
            .into_iter()
            .filter(|d| !dirs.contains(d))
            .collect();
        if all.len() != self.lines().len() {
            self.write(&all)?;
        }
        Ok(())
    }

    /// Removes the recorded parents above `leaves` that are empty now,
    /// deepest first; one still in use (by another subhost) stays
    /// recorded, for the last one under it to remove.
    pub(super) fn remove_empty_above(&self, leaves: &[PathBuf]) -> Result<()> {
        let mut all = self.read();
        let before = all.len();
        let stale = self.lines().len() != before;
        for leaf in leaves {
            for p in leaf.ancestors().skip(1) {
                let Some(i) = all.iter().position(|d| d == p) else {
                    break;
                };
                // Logged when done only: most tries meet another subhost.
                match fs::remove_dir(p) {
                    Ok(()) => log::info!("rmdir {}", p.display()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    // Not empty: another subhost (or anyone) uses it.
                    Err(e) if matches!(errno_of(&e), Errno::EBUSY | Errno::ENOTEMPTY) => break,
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("cannot remove cgroup {}", p.display()))
                    }
                }
                all.remove(i);
            }
        }
        if stale || all.len() != before {
            self.write(&all)?;
        }
        Ok(())
    }
}

/// Puts `dirs` in `file`, one a line. Never truncated to zero: on ext4 (a
/// /run that is not a tmpfs) that flushes the file's delayed blocks to
/// disk first (auto_da_alloc), milliseconds on every start and end of a
/// session. An empty record is one empty line, which `lines` skips.
fn rewrite(file: &fs::File, dirs: &[PathBuf]) -> io::Result<()> {
    use std::io::{Seek, Write as _};
    let mut text = String::new();
    for d in dirs {
        text.push_str(&d.to_string_lossy());
        text.push('\n');
    }
    if text.is_empty() {
        text.push('\n');
    }
    let mut f = file;
    f.rewind()?;
    f.write_all(text.as_bytes())?;
    f.set_len(text.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_rewritten_in_place_and_never_emptied() {
        let path = std::env::temp_dir().join(format!(
            "subhost-test-cgroup-parents-{}",
            std::process::id()
        ));
        struct Removed(PathBuf);
        impl Drop for Removed {
            fn drop(&mut self) {
                let _ = fs::remove_file(&self.0);
            }
        }
        let _removed = Removed(path.clone());
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        let long = [PathBuf::from("/sys/fs/cgroup/a/long"), PathBuf::from("/b")];
        rewrite(&file, &long).unwrap();
        rewrite(&file, &[PathBuf::from("/c")]).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "/c\n", "no stale tail");
        rewrite(&file, &[]).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 1, "never cut to zero");
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 0);
    }
}
