//! The run directory, `/run/subhost`: what the host keeps of each NAME
//! between commands, beside what `Layout` keeps in the subhost's own
//! directory. A reboot clears it along with the mounts and namespaces it
//! describes. NAME is host-wide here, as its netns is.
//!
//! Every path under it is named here, so that a reader finds each record
//! by its name, and `status` can check every one of them (a FIFO, a
//! directory or a symlink in a record's place is reported, never opened
//! for what it points at).

use std::path::{Path, PathBuf};

/// Host-wide: NAME is host-wide already through its netns.
pub const RUN_DIR: &str = "/run/subhost";

/// The records of one NAME under the run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Records<'a> {
    name: &'a str,
}

/// The records of `name`.
pub fn of(name: &str) -> Records<'_> {
    Records { name }
}

impl Records<'_> {
    fn path(&self, ext: &str) -> PathBuf {
        Path::new(RUN_DIR).join(format!("{}.{ext}", self.name))
    }
    /// flock'ed while a `start` or `stop` of NAME runs.
    pub fn lock(&self) -> PathBuf {
        self.path("lock")
    }
    /// The subhost directory that holds NAME: its canonical path, device
    /// and inode.
    pub fn dir(&self) -> PathBuf {
        self.path("dir")
    }
    /// The init: `PID START_TIME`.
    pub fn init(&self) -> PathBuf {
        self.path("init")
    }
    /// The cgroup directories, one a line, written before they are made.
    pub fn cgroup(&self) -> PathBuf {
        self.path("cgroup")
    }
    /// What the kept cgroup of a hibernating subhost enforces: the parent
    /// it was made under, the limits written and the device rules of the
    /// attached program (see `cgroup::kept`). Written after they are
    /// applied, removed before they change.
    pub fn cgroup_policy(&self) -> PathBuf {
        self.path("cgroup-policy")
    }
    /// A detached subhost's console.
    pub fn console(&self) -> PathBuf {
        self.path("console")
    }
    /// What `start` applied to the init (see `state::Applied`).
    pub fn applied(&self) -> PathBuf {
        self.path("applied")
    }
    /// The port forwarder: `PID START_TIME`, then one `PROTO LISTEN
    /// TARGET` line per forward (see `forward`).
    pub fn forward(&self) -> PathBuf {
        self.path("forward")
    }
    /// The published ports whose rules a start made, or began to make, in
    /// the host's nftables table, one `PUBLISH` element a line (see
    /// `publish`): without it the subhost has no rules there.
    pub fn published(&self) -> PathBuf {
        self.path("published")
    }
    /// Where idmapped lower layers are attached on kernels that take no
    /// unattached ones: a directory, not a record.
    pub fn staging(&self) -> PathBuf {
        self.path("lower")
    }
    /// Every record file NAME may have, for checks of their kind.
    pub fn files(&self) -> [PathBuf; 9] {
        [
            self.lock(),
            self.dir(),
            self.init(),
            self.cgroup(),
            self.cgroup_policy(),
            self.console(),
            self.applied(),
            self.forward(),
            self.published(),
        ]
    }
}

/// The parent cgroups the launcher made, recorded before they are made so
/// that the last `stop` under one removes it.
pub fn cgroup_parents() -> PathBuf {
    Path::new(RUN_DIR).join("cgroup-parents")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_is_named_for_its_subhost_under_the_run_dir() {
        let r = of("web");
        assert_eq!(r.lock(), Path::new("/run/subhost/web.lock"));
        assert_eq!(r.staging(), Path::new("/run/subhost/web.lower"));
        for f in r.files() {
            assert_eq!(f.parent(), Some(Path::new(RUN_DIR)));
            assert!(f.file_name().unwrap().to_str().unwrap().starts_with("web."));
        }
        assert_eq!(cgroup_parents(), Path::new("/run/subhost/cgroup-parents"));
    }
}
