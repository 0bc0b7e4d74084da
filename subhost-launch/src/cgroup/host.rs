//! What this host offers: the mounted cgroup hierarchies and the
//! launcher's own cgroup in each, read once for a plan.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;

use super::plan::Limits;
use crate::mounts::mountinfo::{self, MountEntry};

/// One line of /proc/PID/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Membership {
    /// Hierarchy ID; 0 is cgroup v2.
    pub(super) hierarchy: u32,
    /// v1 controllers of the hierarchy (and `name=...`); empty on v2.
    pub(super) controllers: Vec<String>,
    /// The cgroup, relative to the hierarchy's root (or the cgroup namespace).
    pub(super) path: String,
}

/// Parses the text of /proc/PID/cgroup.
pub(super) fn parse_proc_cgroup(text: &str) -> Result<Vec<Membership>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("line {}: expected ID:CONTROLLERS:PATH, got {line:?}", n + 1);
        };
        let hierarchy = id
            .parse()
            .with_context(|| format!("line {}: bad hierarchy ID {id:?}", n + 1))?;
        let controllers = ctrls
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        out.push(Membership {
            hierarchy,
            controllers,
            path: path.to_string(),
        });
    }
    Ok(out)
}

/// Reads and parses /proc/PID/cgroup.
pub(super) fn read_proc_cgroup(pid: Pid) -> Result<Vec<Membership>> {
    let file = format!("/proc/{pid}/cgroup");
    let text =
        crate::procfs::read(Path::new(&file)).with_context(|| format!("cannot read {file}"))?;
    parse_proc_cgroup(&text).with_context(|| format!("cannot parse {file}"))
}

/// The cgroup directories of process PID, one per mounted hierarchy it is
/// in, e.g. to check that a process is inside a subhost's cgroups.
pub fn dirs_of(pid: Pid) -> Result<Vec<PathBuf>> {
    let text = crate::procfs::read(Path::new("/proc/self/mountinfo"))
        .context("cannot read /proc/self/mountinfo")?;
    Ok(member_dirs(&hierarchies(&text)?, &read_proc_cgroup(pid)?))
}

pub(super) fn member_dirs(mounts: &[Hierarchy], lines: &[Membership]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in mounts {
        let Some(rel) = line_for(m, lines).and_then(|l| below_mount_root(m, &l.path)) else {
            continue;
        };
        let dir = m.point.join(rel.trim_start_matches('/'));
        if !out.contains(&dir) {
            out.push(dir);
        }
    }
    out
}

/// The line of /proc/PID/cgroup for the hierarchy mounted as `m`.
pub(super) fn line_for<'a>(m: &Hierarchy, lines: &'a [Membership]) -> Option<&'a Membership> {
    lines.iter().find(|l| {
        if m.v2 {
            l.hierarchy == 0 && l.controllers.is_empty()
        } else {
            l.hierarchy != 0 && l.controllers.iter().any(|c| m.options.contains(c))
        }
    })
}

/// A cgroup path from /proc/PID/cgroup made relative to what `m` shows: a
/// mount of a subtree (a container's) shows only what is below its root.
pub(super) fn below_mount_root(m: &Hierarchy, path: &str) -> Option<String> {
    let path = path.trim_end_matches(" (deleted)");
    let root = m.root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() {
        Some("/".into())
    } else if rest.starts_with('/') {
        Some(rest.into())
    } else {
        None
    }
}

/// A mounted cgroup hierarchy, as the one mountinfo parser reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hierarchy {
    /// The cgroup mounted (4th mountinfo field); "/" unless a subtree is
    /// bind-mounted.
    pub(super) root: String,
    pub(super) point: PathBuf,
    pub(super) v2: bool,
    /// Super options: v1 controller names are among them.
    pub(super) options: Vec<String>,
    /// Mounted read-only, as a container manager mounts the host's v1
    /// hierarchies inside (systemd-nspawn does).
    pub(super) read_only: bool,
}

impl Hierarchy {
    /// The hierarchy mounted as `m`, when `m` is a cgroup or cgroup2 mount.
    pub(super) fn of(m: &MountEntry) -> Option<Hierarchy> {
        let v2 = match m.fs_type.as_str() {
            "cgroup2" => true,
            "cgroup" => false,
            _ => return None,
        };
        Some(Hierarchy {
            root: m.root.to_string_lossy().into_owned(),
            point: m.mount_point.clone(),
            v2,
            options: m.super_options.split(',').map(str::to_string).collect(),
            read_only: m.options.split(',').any(|o| o == "ro"),
        })
    }
}

/// The cgroup and cgroup2 mounts in mountinfo text, in mount order.
pub(super) fn hierarchies(text: &str) -> Result<Vec<Hierarchy>> {
    let table = mountinfo::parse(text.as_bytes())?;
    Ok(table.iter().filter_map(Hierarchy::of).collect())
}

/// The controllers a subhost's cgroup may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ctrl {
    Memory,
    Pids,
    Cpu,
    Freezer,
    Devices,
}

impl Ctrl {
    pub(super) fn name(self) -> &'static str {
        match self {
            Ctrl::Memory => "memory",
            Ctrl::Pids => "pids",
            Ctrl::Cpu => "cpu",
            Ctrl::Freezer => "freezer",
            Ctrl::Devices => "devices",
        }
    }
}

/// What planning needs to know about this host, read once.
#[derive(Debug, Clone)]
pub(super) struct Host {
    pub(super) mounts: Vec<Hierarchy>,
    pub(super) own: Vec<Membership>,
    /// `cgroup.controllers` at the cgroup2 mount point.
    pub(super) v2_controllers: Vec<String>,
    /// Whether cgroup v2 offers `cgroup.kill`.
    pub(super) v2_kill: bool,
}

/// The cgroup lines of the mount table, read once per process: no
/// hierarchy is mounted or unmounted while a command runs, and a `stop` of
/// many subhosts would otherwise have the kernel format the whole table,
/// which grows with every subhost, once per subhost.
pub(super) fn cgroup_mount_lines() -> Result<&'static str> {
    static LINES: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(lines) = LINES.get() {
        return Ok(lines);
    }
    let text = crate::procfs::read(Path::new("/proc/self/mountinfo"))
        .context("cannot read /proc/self/mountinfo")?;
    let lines: String = text
        .lines()
        .filter(|l| l.contains(" - cgroup"))
        .flat_map(|l| [l, "\n"])
        .collect();
    Ok(LINES.get_or_init(|| lines))
}

impl Host {
    pub(super) fn probe() -> Result<Host> {
        Host::probe_with(read_proc_cgroup(Pid::this())?)
    }

    fn probe_with(own: Vec<Membership>) -> Result<Host> {
        let mounts = hierarchies(cgroup_mount_lines()?)?;
        Host::with_mounts(mounts, own)
    }

    /// Enough of the host for a subhost without limits: only the cgroup v2
    /// hierarchy (membership and `cgroup.kill`). Where it sits at its usual
    /// place and holds our own cgroup there, two statfs calls find it
    /// without reading the mount table, which the kernel formats anew on
    /// every read (a fifth of a warm start's planning). Anything unusual
    /// takes the full probe.
    /// A device policy takes the v1 `devices` hierarchy where there is one:
    /// only a pure cgroup v2 host (at /sys/fs/cgroup) is sure to have none.
    pub(super) fn probe_for(limits: &Limits) -> Result<Host> {
        let resources = Limits {
            devices: None,
            ..limits.clone()
        };
        let own = read_proc_cgroup(Pid::this())?;
        // On a hybrid host the policy's hierarchy is known only from the
        // table: the usual place is not even tried.
        let pure = || {
            nix::sys::statfs::statfs("/sys/fs/cgroup")
                .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        };
        if resources == Limits::default() && (limits.devices.is_none() || pure()) {
            if let Some(host) = Host::usual_v2(own.clone())? {
                let pure = host
                    .mounts
                    .iter()
                    .all(|m| m.point == Path::new("/sys/fs/cgroup"));
                if limits.devices.is_none() || pure {
                    return Ok(host);
                }
            }
        }
        Host::probe_with(own)
    }

    pub(super) fn usual_v2(own: Vec<Membership>) -> Result<Option<Host>> {
        let Some(mine) = own.iter().find(|m| m.hierarchy == 0) else {
            return Ok(None);
        };
        let mine = mine.path.trim_start_matches('/').to_string();
        for point in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let is_v2 = nix::sys::statfs::statfs(point)
                .map(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
                .unwrap_or(false);
            // Our own cgroup must be right there: a hierarchy mounted from a
            // subtree (as in some containers) needs the mount table's root.
            if !is_v2 || !Path::new(point).join(&mine).is_dir() {
                continue;
            }
            let mount = Hierarchy {
                root: "/".into(),
                point: PathBuf::from(point),
                v2: true,
                options: Vec::new(),
                read_only: false,
            };
            let host = Host::with_mounts(vec![mount], own)?;
            // Without cgroup.kill the v1 freezer is needed: full probe.
            return Ok(host.v2_kill.then_some(host));
        }
        Ok(None)
    }

    pub(super) fn with_mounts(mounts: Vec<Hierarchy>, own: Vec<Membership>) -> Result<Host> {
        let mut host = Host {
            mounts,
            own,
            v2_controllers: Vec::new(),
            v2_kill: false,
        };
        if let Some(m) = host.v2_mount() {
            let file = m.point.join("cgroup.controllers");
            let text = crate::procfs::read(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let point = m.point.clone();
            host.v2_controllers = text.split_whitespace().map(str::to_string).collect();
            host.v2_kill = v2_has_kill(&point);
        }
        Ok(host)
    }

    pub(super) fn v2_mount(&self) -> Option<&Hierarchy> {
        self.mounts.iter().find(|m| m.v2)
    }

    pub(super) fn v1_mount(&self, c: Ctrl) -> Option<&Hierarchy> {
        self.mounts
            .iter()
            .find(|m| !m.v2 && m.options.iter().any(|o| o == c.name()))
    }

    /// Where the controller lives: cgroup v2 when it offers it, else its v1
    /// hierarchy.
    pub(super) fn mount_for(&self, c: Ctrl) -> Option<&Hierarchy> {
        match self.v2_mount() {
            Some(m) if self.v2_controllers.iter().any(|x| x == c.name()) => Some(m),
            _ => self.v1_mount(c),
        }
    }

    /// The launcher's cgroup in the hierarchy of `m`, relative to its mount
    /// point.
    pub(super) fn own_path(&self, m: &Hierarchy) -> Result<String> {
        let Some(line) = line_for(m, &self.own) else {
            bail!(
                "/proc/self/cgroup has no line for the cgroup hierarchy mounted at {}",
                m.point.display()
            );
        };
        match below_mount_root(m, &line.path) {
            Some(rel) => Ok(rel),
            None => bail!(
                "this process's cgroup {} is outside the hierarchy mounted at {} \
                 (which shows only {}); set CGROUP_PARENT",
                line.path,
                m.point.display(),
                m.root
            ),
        }
    }

    /// The subhost's directory in the hierarchy of `m`.
    pub(super) fn dir_in(
        &self,
        m: &Hierarchy,
        name: &str,
        parent: Option<&str>,
    ) -> Result<PathBuf> {
        let parent = match parent {
            Some(p) => p.to_string(),
            None => {
                let own = self.own_path(m)?;
                format!("{}/subhost", own.trim_end_matches('/'))
            }
        };
        Ok(m.point.join(parent.trim_start_matches('/')).join(name))
    }
}

/// Kernels from 5.14 have `cgroup.kill` in every cgroup but the root; look
/// at a child of the root to tell.
pub(super) fn v2_has_kill(point: &Path) -> bool {
    let Ok(entries) = fs::read_dir(point) else {
        return false;
    };
    entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .any(|e| e.path().join("cgroup.kill").exists())
        || kernel_at_least(5, 14)
}

pub(super) fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0)) >= (major, minor)
}
