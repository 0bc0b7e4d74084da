//! A cgroup per subhost: resource limits (memory, CPU, pids) and a way to
//! kill everything a subhost runs, even processes that left its session.
//!
//! Where it goes: `PARENT/NAME` in every hierarchy used, where PARENT is
//! `CGROUP_PARENT` or else the launcher's own cgroup in that hierarchy
//! followed by `/subhost` (so `/subhost` when the launcher sits in a
//! hierarchy's root). A subhost's cgroup is therefore never a hierarchy's
//! root, and subhosts do not mix with the launcher's siblings. PARENT
//! directories are made when missing and recorded as the launcher's
//! (`/run/subhost/cgroup-parents`) before they are made; when the last
//! subhost under one goes, it is removed again (by `stop` too when a start
//! killed midway made it but no leaf in it). One made by someone else is never removed. The
//! record's lock is held from making a parent until the leaf is in it, and
//! while removing one: a parent is never removed between a `start` making
//! (or finding) it and making its leaf in it.
//!
//! Layouts, detected from /proc/self/mountinfo and /proc/self/cgroup:
//! - pure cgroup v2: one directory; the controllers a limit needs are
//!   switched on in `cgroup.subtree_control` from the hierarchy's root down
//!   to PARENT (only where missing). cgroup v2 allows controllers only below
//!   cgroups without processes (the root excepted), so with limits the
//!   default parent works when the launcher runs in the root cgroup or in
//!   one that already hands the controllers down; otherwise CGROUP_PARENT
//!   must name a cgroup outside the launcher's (e.g. `/subhost`), and
//!   `create` says so. Without limits no controller is needed.
//! - hybrid (v1 controllers, cgroup2 without them): the v2 directory holds
//!   every process (membership and `cgroup.kill`), plus one directory in
//!   each v1 hierarchy a limit needs (memory, pids, cpu), plus the v1
//!   freezer when cgroup v2 has no `cgroup.kill` (kernels before 5.14).
//!
//! Swap: MEMORY_MAX bounds memory plus swap. On v1 `memory.memsw.limit_in_bytes`
//! is set to the same value (RAM + swap <= MEMORY_MAX); on v2
//! `memory.swap.max` is set to 0. Either is skipped when the kernel has no
//! swap accounting, and then swap is not bounded.

// The CLI does not use every part yet.
#![allow(dead_code)]

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[cfg(test)]
mod tests;

/// Resource limits of one subhost; `None` leaves a resource unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory (and swap, see the module docs).
    pub memory_max: Option<u64>,
    /// cgroup v2 syntax: "QUOTA PERIOD" or "max PERIOD" in microseconds
    /// (PERIOD may be left out: 100000).
    pub cpu_max: Option<String>,
    /// Number of processes and threads.
    pub pids_max: Option<u64>,
}

/// What is in use now; `None` when the kernel does not account it here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory_current: Option<u64>,
    pub pids_current: Option<u64>,
}

/// One line of /proc/PID/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Hierarchy ID; 0 is cgroup v2.
    pub hierarchy: u32,
    /// v1 controllers of the hierarchy (and `name=...`); empty on v2.
    pub controllers: Vec<String>,
    /// The cgroup, relative to the hierarchy's root (or the cgroup namespace).
    pub path: String,
}

/// Parses the text of /proc/PID/cgroup.
pub fn parse_proc_cgroup(text: &str) -> Result<Vec<Membership>> {
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
pub fn read_proc_cgroup(pid: Pid) -> Result<Vec<Membership>> {
    let file = format!("/proc/{pid}/cgroup");
    let text = fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?;
    parse_proc_cgroup(&text).with_context(|| format!("cannot parse {file}"))
}

/// The cgroup directories of process PID, one per mounted hierarchy it is
/// in, e.g. to check that a process is inside a subhost's cgroups.
pub fn dirs_of(pid: Pid) -> Result<Vec<PathBuf>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    Ok(member_dirs(
        &parse_mountinfo(&text),
        &read_proc_cgroup(pid)?,
    ))
}

fn member_dirs(mounts: &[Mount], lines: &[Membership]) -> Vec<PathBuf> {
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
fn line_for<'a>(m: &Mount, lines: &'a [Membership]) -> Option<&'a Membership> {
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
fn below_mount_root(m: &Mount, path: &str) -> Option<String> {
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

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// The cgroup mounted (4th mountinfo field); "/" unless a subtree is
    /// bind-mounted.
    root: String,
    point: PathBuf,
    v2: bool,
    /// Super options: v1 controller names are among them.
    options: Vec<String>,
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup and cgroup2 mounts in mountinfo text, in mount order.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(point), Some(fstype), Some(opts)) = (
            fields.get(3),
            fields.get(4),
            fields.get(sep + 1),
            fields.get(sep + 3),
        ) else {
            continue;
        };
        let v2 = match *fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        out.push(Mount {
            root: unescape_mountinfo(root),
            point: PathBuf::from(unescape_mountinfo(point)),
            v2,
            options: opts.split(',').map(str::to_string).collect(),
        });
    }
    out
}

/// The controllers a subhost's cgroup may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctrl {
    Memory,
    Pids,
    Cpu,
    Freezer,
}

impl Ctrl {
    fn name(self) -> &'static str {
        match self {
            Ctrl::Memory => "memory",
            Ctrl::Pids => "pids",
            Ctrl::Cpu => "cpu",
            Ctrl::Freezer => "freezer",
        }
    }
}

/// What planning needs to know about this host, read once.
#[derive(Debug, Clone)]
struct Host {
    mounts: Vec<Mount>,
    own: Vec<Membership>,
    /// `cgroup.controllers` at the cgroup2 mount point.
    v2_controllers: Vec<String>,
    /// Whether cgroup v2 offers `cgroup.kill`.
    v2_kill: bool,
}

/// The cgroup lines of the mount table, read once per process: no
/// hierarchy is mounted or unmounted while a command runs, and a `stop` of
/// many subhosts would otherwise have the kernel format the whole table,
/// which grows with every subhost, once per subhost.
fn cgroup_mount_lines() -> Result<&'static str> {
    static LINES: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(lines) = LINES.get() {
        return Ok(lines);
    }
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    let lines: String = text
        .lines()
        .filter(|l| l.contains(" - cgroup"))
        .flat_map(|l| [l, "\n"])
        .collect();
    Ok(LINES.get_or_init(|| lines))
}

impl Host {
    fn probe() -> Result<Host> {
        let own = read_proc_cgroup(Pid::this())?;
        let mounts = parse_mountinfo(cgroup_mount_lines()?);
        Host::with_mounts(mounts, own)
    }

    /// Enough of the host for a subhost without limits: only the cgroup v2
    /// hierarchy (membership and `cgroup.kill`). Where it sits at its usual
    /// place and holds our own cgroup there, two statfs calls find it
    /// without reading the mount table, which the kernel formats anew on
    /// every read (a fifth of a warm start's planning). Anything unusual
    /// takes the full probe.
    fn probe_for(limits: &Limits) -> Result<Host> {
        if *limits == Limits::default() {
            let own = read_proc_cgroup(Pid::this())?;
            if let Some(host) = Host::usual_v2(own)? {
                return Ok(host);
            }
        }
        Host::probe()
    }

    fn usual_v2(own: Vec<Membership>) -> Result<Option<Host>> {
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
            let mount = Mount {
                root: "/".into(),
                point: PathBuf::from(point),
                v2: true,
                options: Vec::new(),
            };
            let host = Host::with_mounts(vec![mount], own)?;
            // Without cgroup.kill the v1 freezer is needed: full probe.
            return Ok(host.v2_kill.then_some(host));
        }
        Ok(None)
    }

    fn with_mounts(mounts: Vec<Mount>, own: Vec<Membership>) -> Result<Host> {
        let mut host = Host {
            mounts,
            own,
            v2_controllers: Vec::new(),
            v2_kill: false,
        };
        if let Some(m) = host.v2_mount() {
            let file = m.point.join("cgroup.controllers");
            let text = fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let point = m.point.clone();
            host.v2_controllers = text.split_whitespace().map(str::to_string).collect();
            host.v2_kill = v2_has_kill(&point);
        }
        Ok(host)
    }

    fn v2_mount(&self) -> Option<&Mount> {
        self.mounts.iter().find(|m| m.v2)
    }

    fn v1_mount(&self, c: Ctrl) -> Option<&Mount> {
        self.mounts
            .iter()
            .find(|m| !m.v2 && m.options.iter().any(|o| o == c.name()))
    }

    /// Where the controller lives: cgroup v2 when it offers it, else its v1
    /// hierarchy.
    fn mount_for(&self, c: Ctrl) -> Option<&Mount> {
        match self.v2_mount() {
            Some(m) if self.v2_controllers.iter().any(|x| x == c.name()) => Some(m),
            _ => self.v1_mount(c),
        }
    }

    /// The launcher's cgroup in the hierarchy of `m`, relative to its mount
    /// point.
    fn own_path(&self, m: &Mount) -> Result<String> {
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
    fn dir_in(&self, m: &Mount, name: &str, parent: Option<&str>) -> Result<PathBuf> {
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
fn v2_has_kill(point: &Path) -> bool {
    let Ok(entries) = fs::read_dir(point) else {
        return false;
    };
    entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .any(|e| e.path().join("cgroup.kill").exists())
        || kernel_at_least(5, 14)
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0)) >= (major, minor)
}

/// How to end every process of the cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillVia {
    /// cgroup v2 `cgroup.kill` in this directory.
    CgroupKill(PathBuf),
    /// v1 freezer directory: freeze, SIGKILL each, thaw.
    V1Freezer(PathBuf),
    /// cgroup v2 `cgroup.freeze` (5.2 to 5.13): freeze, SIGKILL each, thaw.
    V2Freeze(PathBuf),
    /// No freezer at all: SIGKILL what `cgroup.procs` lists until it is
    /// empty. Only for cgroups found by `open` on a host that changed.
    Signals,
}

/// A controller to switch on in `DIR/cgroup.subtree_control`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enable {
    pub dir: PathBuf,
    pub controller: String,
}

/// One value to write into a cgroup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub file: PathBuf,
    pub value: String,
    /// Skipped when the kernel lacks the file (swap accounting).
    pub if_present: bool,
}

/// Where the subhost's cgroups go and what is written there; printable for
/// `--dry-run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every directory the subhost's processes join.
    pub dirs: Vec<PathBuf>,
    /// The one of `dirs` on cgroup v2, known from the mount it is planned
    /// under: before `create` neither it nor its parent may exist.
    pub v2_dir: Option<PathBuf>,
    /// Top-down, done after the parents exist and before the leaves do.
    pub enable: Vec<Enable>,
    pub writes: Vec<Write>,
    pub kill: KillVia,
    pub memory_usage: Option<PathBuf>,
    pub pids_usage: Option<PathBuf>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.dirs {
            if let Some(p) = d.parent() {
                writeln!(f, "mkdir -p {}", p.display())?;
            }
        }
        for e in &self.enable {
            writeln!(
                f,
                "echo +{} > {}/cgroup.subtree_control",
                e.controller,
                e.dir.display()
            )?;
        }
        for d in &self.dirs {
            writeln!(f, "mkdir {}", d.display())?;
        }
        for w in &self.writes {
            let note = if w.if_present { "  # if present" } else { "" };
            writeln!(f, "echo {} > {}{note}", w.value, w.file.display())?;
        }
        match &self.kill {
            KillVia::CgroupKill(d) => write!(f, "# stop: echo 1 > {}/cgroup.kill", d.display()),
            KillVia::V1Freezer(d) => write!(
                f,
                "# stop: freeze {}/freezer.state, SIGKILL each of cgroup.procs, thaw",
                d.display()
            ),
            KillVia::V2Freeze(d) => write!(
                f,
                "# stop: freeze {}/cgroup.freeze, SIGKILL each of cgroup.procs, thaw",
                d.display()
            ),
            KillVia::Signals => write!(f, "# stop: SIGKILL each of cgroup.procs"),
        }
    }
}

/// Handing a subhost's cgroup v2 directory to root of its user namespace
/// (USERNS), so that root inside can make sub-cgroups and move its
/// processes between them: the directory and the files the kernel lists
/// as delegatable (`/sys/kernel/cgroup/delegate`) go to host id `owner`.
/// The resource files (`memory.max`, `pids.max`, …) stay the host's: they
/// are the limits set on the subhost from outside. On a hybrid host this is
/// the controller-less cgroup2 directory (grouping, `cgroup.kill`); the v1
/// directories that hold the limits are not handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    pub dir: PathBuf,
    pub owner: u32,
    pub files: Vec<String>,
}

/// The files a delegatee owns when the kernel cannot list them (before
/// 5.x's `/sys/kernel/cgroup/delegate`): cgroup-v2.rst's minimum.
const DELEGATE_FALLBACK: [&str; 3] = ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"];

/// The delegation of `plan`'s cgroup v2 directory to `owner`, if it has one.
pub fn delegation(plan: &Plan, owner: u32) -> Option<Delegation> {
    let dir = plan.v2_dir.clone()?;
    let files = match fs::read_to_string("/sys/kernel/cgroup/delegate") {
        Ok(text) => parse_delegate(&text),
        Err(_) => DELEGATE_FALLBACK.iter().map(|f| f.to_string()).collect(),
    };
    Some(Delegation { dir, owner, files })
}

/// The kernel's list, one file name a line; `cgroup.procs` always.
fn parse_delegate(text: &str) -> Vec<String> {
    let mut files: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('/'))
        .map(str::to_string)
        .collect();
    if !files.iter().any(|f| f == "cgroup.procs") {
        files.insert(0, "cgroup.procs".into());
    }
    files
}

impl fmt::Display for Delegation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chown {0}:{0} {1}", self.owner, self.dir.display())?;
        for file in &self.files {
            write!(f, " {}/{file}", self.dir.display())?;
        }
        write!(f, "  # those present")
    }
}

impl Delegation {
    /// Done after the directory is made; a listed file the kernel does not
    /// make in this cgroup (a controller not enabled) is skipped.
    pub fn apply(&self) -> Result<()> {
        let give = |p: &Path| std::os::unix::fs::chown(p, Some(self.owner), Some(self.owner));
        give(&self.dir).with_context(|| format!("cannot delegate {}", self.dir.display()))?;
        for file in &self.files {
            let p = self.dir.join(file);
            match give(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot delegate {}", p.display()))
                }
            }
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0', '\n']) {
        bail!("{name:?} cannot name a cgroup: use a plain name without '/'");
    }
    Ok(())
}

/// CGROUP_PARENT: absolute inside the hierarchy, not its root, no `..`.
fn check_parent(parent: &str) -> Result<String> {
    let p = Path::new(parent);
    let ok = parent.starts_with('/')
        && !parent.contains(['\0', '\n'])
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && p.components().count() > 1;
    if !ok {
        bail!(
            "CGROUP_PARENT={parent:?}: must be an absolute path inside the cgroup hierarchy \
             other than its root, without '.' or '..', e.g. CGROUP_PARENT=/subhost"
        );
    }
    Ok(format!("/{}", parent.trim_matches('/')))
}

/// Parses CPU_MAX into (quota, period) in microseconds; `None` is "max".
fn parse_cpu_max(s: &str) -> Result<(Option<u64>, u64)> {
    let bad = || {
        anyhow::anyhow!(
            "CPU_MAX={s:?}: expected \"QUOTA PERIOD\" or \"max PERIOD\" in microseconds, \
             QUOTA at least 1000 and PERIOD from 1000 to 1000000, e.g. \"50000 100000\" \
             for half a CPU"
        )
    };
    let mut words = s.split_whitespace();
    let quota = match words.next().ok_or_else(bad)? {
        "max" => None,
        q => Some(q.parse::<u64>().map_err(|_| bad())?),
    };
    let period = match words.next() {
        Some(p) => p.parse::<u64>().map_err(|_| bad())?,
        None => 100_000,
    };
    if words.next().is_some()
        || quota.is_some_and(|q| q < 1000)
        || !(1000..=1_000_000).contains(&period)
    {
        return Err(bad());
    }
    Ok((quota, period))
}

/// Where the subhost NAME's cgroups go on this host, and what is written
/// there. Reads the host's cgroup layout; changes nothing.
pub fn plan(name: &str, parent: Option<&str>, limits: &Limits) -> Result<Plan> {
    plan_on(&Host::probe_for(limits)?, name, parent, limits)
}

fn plan_on(host: &Host, name: &str, parent: Option<&str>, limits: &Limits) -> Result<Plan> {
    check_name(name)?;
    let parent = parent.map(check_parent).transpose()?;
    let parent = parent.as_deref();
    if let Some(0) = limits.memory_max {
        bail!("MEMORY_MAX=0 would leave no memory at all: give a size in bytes, or leave it unset");
    }
    if let Some(0) = limits.pids_max {
        bail!("PIDS_MAX=0 would not even allow init: give a number, or leave it unset");
    }
    let cpu = limits.cpu_max.as_deref().map(parse_cpu_max).transpose()?;
    if host.mounts.is_empty() {
        bail!("no cgroup filesystem is mounted (see /proc/self/mountinfo): mount cgroup2 on /sys/fs/cgroup");
    }

    let mut plan = Plan {
        dirs: Vec::new(),
        v2_dir: None,
        enable: Vec::new(),
        writes: Vec::new(),
        kill: KillVia::Signals,
        memory_usage: None,
        pids_usage: None,
    };
    let v2_dir = match host.v2_mount() {
        Some(m) => {
            let d = host.dir_in(m, name, parent)?;
            plan.dirs.push(d.clone());
            Some(d)
        }
        None => None,
    };
    plan.v2_dir.clone_from(&v2_dir);

    let mut needed = Vec::new();
    if limits.memory_max.is_some() {
        needed.push((Ctrl::Memory, "MEMORY_MAX"));
    }
    if limits.pids_max.is_some() {
        needed.push((Ctrl::Pids, "PIDS_MAX"));
    }
    if cpu.is_some() {
        needed.push((Ctrl::Cpu, "CPU_MAX"));
    }
    for (c, setting) in needed {
        let Some(m) = host.mount_for(c) else {
            bail!(
                "{setting} needs the cgroup controller {}, which this host does not offer: \
                 cgroup2 does not list it in {} and no cgroup v1 {} hierarchy is mounted",
                c.name(),
                host.v2_mount()
                    .map(|m| m.point.join("cgroup.controllers").display().to_string())
                    .unwrap_or_else(|| "cgroup.controllers (cgroup2 is not mounted)".into()),
                c.name()
            );
        };
        let dir = host.dir_in(m, name, parent)?;
        if m.v2 {
            enable_down_to(&mut plan.enable, &m.point, &dir, c.name());
        } else if !plan.dirs.contains(&dir) {
            plan.dirs.push(dir.clone());
        }
        let w = |file: &str, value: String, if_present| Write {
            file: dir.join(file),
            value,
            if_present,
        };
        match (c, m.v2) {
            (Ctrl::Memory, v2) => {
                let n = limits.memory_max.unwrap_or_default().to_string();
                if v2 {
                    plan.writes.push(w("memory.max", n, false));
                    plan.writes.push(w("memory.swap.max", "0".into(), true));
                    plan.memory_usage = Some(dir.join("memory.current"));
                } else {
                    plan.writes
                        .push(w("memory.limit_in_bytes", n.clone(), false));
                    plan.writes.push(w("memory.memsw.limit_in_bytes", n, true));
                    plan.memory_usage = Some(dir.join("memory.usage_in_bytes"));
                }
            }
            (Ctrl::Pids, _) => {
                let n = limits.pids_max.unwrap_or_default().to_string();
                plan.writes.push(w("pids.max", n, false));
                plan.pids_usage = Some(dir.join("pids.current"));
            }
            (Ctrl::Cpu, v2) => {
                let (quota, period) = cpu.unwrap_or((None, 100_000));
                if v2 {
                    let q = quota.map_or("max".to_string(), |q| q.to_string());
                    plan.writes
                        .push(w("cpu.max", format!("{q} {period}"), false));
                } else {
                    // The period first: the kernel checks the quota against it.
                    let q = quota.map_or("-1".to_string(), |q| q.to_string());
                    plan.writes
                        .push(w("cpu.cfs_period_us", period.to_string(), false));
                    plan.writes.push(w("cpu.cfs_quota_us", q, false));
                }
            }
            (Ctrl::Freezer, _) => {}
        }
    }

    plan.kill = match (&v2_dir, host.v1_mount(Ctrl::Freezer)) {
        (Some(d), _) if host.v2_kill => KillVia::CgroupKill(d.clone()),
        (_, Some(m)) => {
            let d = host.dir_in(m, name, parent)?;
            plan.dirs.push(d.clone());
            KillVia::V1Freezer(d)
        }
        (Some(d), None) => KillVia::V2Freeze(d.clone()),
        (None, None) => bail!(
            "cannot end a subhost's processes reliably here: cgroup2 is not mounted and \
             neither is a cgroup v1 freezer hierarchy; mount cgroup2 on /sys/fs/cgroup"
        ),
    };
    Ok(plan)
}

/// Adds the controller to every `cgroup.subtree_control` from the mount
/// point down to the leaf's parent, so that the leaf gets it.
fn enable_down_to(enable: &mut Vec<Enable>, point: &Path, leaf: &Path, controller: &str) {
    let Some(parent) = leaf.parent() else {
        return;
    };
    let mut chain: Vec<PathBuf> = parent
        .ancestors()
        .take_while(|a| a.starts_with(point))
        .map(Path::to_path_buf)
        .collect();
    chain.reverse();
    for dir in chain {
        let e = Enable {
            dir,
            controller: controller.to_string(),
        };
        if !enable.contains(&e) {
            enable.push(e);
        }
    }
    // Keep each level together, the root's first.
    enable.sort_by_key(|e| e.dir.components().count());
}

/// A subhost's cgroups as they exist.
#[derive(Debug, Clone)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each dir, ready for `join_self` after a fork.
    procs: Vec<CString>,
    kill: KillVia,
    memory_usage: Option<PathBuf>,
    pids_usage: Option<PathBuf>,
}

fn write_file(file: &Path, value: &str) -> io::Result<()> {
    fs::write(file, value)
}

fn errno_of(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

/// The PIDs in DIR/cgroup.procs; none when DIR is gone. ENODEV: it was
/// removed while being read.
fn procs_in(dir: &Path) -> Result<Vec<i32>> {
    let file = dir.join("cgroup.procs");
    match fs::read_to_string(&file) {
        Ok(text) => Ok(text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound || errno_of(&e) == Errno::ENODEV => {
            Ok(Vec::new())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

/// The PIDs in DIR and in every sub-cgroup of it (those a subhost whose
/// cgroup is delegated makes inside).
fn procs_below(dir: &Path) -> Result<Vec<i32>> {
    let mut all = procs_in(dir)?;
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(all);
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            all.extend(procs_below(&entry.path())?);
        }
    }
    Ok(all)
}

/// Makes the subhost's cgroups and writes its limits; all or nothing. A
/// leaf left by a crash is reused when it holds no processes (it is made
/// anew, so no old setting survives); one with processes is an error.
pub fn create(plan: &Plan) -> Result<Cgroup> {
    let parents = Parents::lock()?;
    // Recorded before they are made, as the leaf is: a launcher killed in
    // between leaves parents that are known as the launcher's, for the
    // next `stop` to remove.
    let missing = missing_parents(plan);
    parents.add(&missing)?;
    let mut made = Vec::new();
    let mut made_parents = Vec::new();
    let res = create_steps(plan, &mut made, &mut made_parents);
    if let Err(e) = res {
        for d in made.iter().rev().chain(made_parents.iter().rev()) {
            let _ = fs::remove_dir(d);
        }
        // Forgets those gone again, and any that another made meanwhile.
        let _ = parents.forget(&missing);
        return Err(e);
    }
    let others: Vec<PathBuf> = missing
        .into_iter()
        .filter(|d| !made_parents.contains(d))
        .collect();
    parents.forget(&others)?;
    Ok(Cgroup::from_plan(plan))
}

/// The parent directories of `plan`'s cgroups that do not exist, top-down.
fn missing_parents(plan: &Plan) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in &plan.dirs {
        let Some(p) = d.parent() else { continue };
        let mut missing: Vec<PathBuf> = p
            .ancestors()
            .take_while(|a| !a.is_dir())
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        for m in missing {
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    out
}

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

fn create_steps(
    plan: &Plan,
    made: &mut Vec<PathBuf>,
    made_parents: &mut Vec<PathBuf>,
) -> Result<()> {
    for d in &plan.dirs {
        if let Some(p) = d.parent() {
            if !p.is_dir() {
                crate::logging::step(format_args!("mkdir -p {}", p.display()), || {
                    make_parents(p, made_parents)
                })?;
            }
        }
    }
    for e in &plan.enable {
        enable_controller(e)?;
    }
    for d in &plan.dirs {
        if d.exists() {
            reuse_leaf(d)?;
        }
        crate::logging::step(format_args!("mkdir {}", d.display()), || fs::create_dir(d))
            .with_context(|| format!("cannot create cgroup {}", d.display()))?;
        made.push(d.clone());
    }
    for w in &plan.writes {
        if w.if_present && !w.file.exists() {
            continue;
        }
        crate::logging::step(
            format_args!("echo {} > {}", w.value, w.file.display()),
            || write_file(&w.file, &w.value),
        )
        .with_context(|| format!("cannot write {} to {}", w.value, w.file.display()))?;
    }
    Ok(())
}

/// `mkdir -p dir`, noting in `made` (top-down) each directory this call
/// made: those, and only those, are removed when they fall empty.
fn make_parents(dir: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
    let mut missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.is_dir()).collect();
    missing.reverse();
    for d in missing {
        match fs::create_dir(d) {
            Ok(()) => made.push(d.to_path_buf()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create cgroup {}", d.display()))
            }
        }
    }
    Ok(())
}

/// The parent cgroups the launcher made, one path a line, under an
/// exclusive lock on the record itself (rewritten in place, so the locked
/// inode stays the record).
struct Parents {
    file: nix::fcntl::Flock<fs::File>,
}

fn parents_record() -> PathBuf {
    Path::new(crate::state::RUN_DIR).join("cgroup-parents")
}

impl Parents {
    fn lock() -> Result<Parents> {
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
    fn lines(&self) -> Vec<PathBuf> {
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
    fn read(&self) -> Vec<PathBuf> {
        self.lines().into_iter().filter(|d| d.is_dir()).collect()
    }

    fn write(&self, dirs: &[PathBuf]) -> Result<()> {
        use std::io::{Seek, Write as _};
        let mut text = String::new();
        for d in dirs {
            text.push_str(&d.to_string_lossy());
            text.push('\n');
        }
        let mut f: &fs::File = &self.file;
        f.set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(text.as_bytes()))
            .with_context(|| format!("cannot write {}", parents_record().display()))
    }

    /// Adds `made`, which need not exist yet.
    fn add(&self, made: &[PathBuf]) -> Result<()> {
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
    fn forget(&self, dirs: &[PathBuf]) -> Result<()> {
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
    fn remove_empty_above(&self, leaves: &[PathBuf]) -> Result<()> {
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

/// How long a leftover leaf may take to empty: the processes of a session
/// that has just ended are still dying (its init gone, they are SIGKILLed
/// by the kernel) when the next `start` finds the leaf.
const LEAF_DRAIN: Duration = Duration::from_secs(2);

fn reuse_leaf(d: &Path) -> Result<()> {
    let deadline = Instant::now() + LEAF_DRAIN;
    loop {
        let pids = procs_below(d)?;
        if pids.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "cgroup {} already holds processes {pids:?}: is the subhost running? \
                 Stop it first",
                d.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    remove_below(d)
        .and_then(|()| remove_dir_retrying(d))
        .with_context(|| format!("cgroup {} was left by an earlier run", d.display()))
}

fn enable_controller(e: &Enable) -> Result<()> {
    let ctl = e.dir.join("cgroup.subtree_control");
    let on = fs::read_to_string(&ctl).with_context(|| format!("cannot read {}", ctl.display()))?;
    if on.split_whitespace().any(|c| c == e.controller) {
        return Ok(());
    }
    let avail_file = e.dir.join("cgroup.controllers");
    let avail = fs::read_to_string(&avail_file)
        .with_context(|| format!("cannot read {}", avail_file.display()))?;
    if !avail.split_whitespace().any(|c| c == e.controller) {
        bail!(
            "cgroup v2 controller {} is not available in {}: enable it in the parent's \
             cgroup.subtree_control, or set CGROUP_PARENT to a cgroup that has it",
            e.controller,
            avail_file.display()
        );
    }
    let value = format!("+{}", e.controller);
    let what = format_args!("echo {value} > {}", ctl.display());
    match crate::logging::step(what, || write_file(&ctl, &value)) {
        Ok(()) => Ok(()),
        Err(err) if errno_of(&err) == Errno::EBUSY => bail!(
            "cannot enable cgroup v2 controller {} in {}: that cgroup holds processes, and \
             cgroup v2 allows controllers only below cgroups without processes; set \
             CGROUP_PARENT to a cgroup without processes, e.g. CGROUP_PARENT=/subhost",
            e.controller,
            ctl.display()
        ),
        Err(err) => Err(err).with_context(|| {
            format!(
                "cannot enable cgroup v2 controller {} in {}",
                e.controller,
                ctl.display()
            )
        }),
    }
}

/// The subhost NAME's cgroups, when any exist (for stop, status, enter).
/// `parent` is CGROUP_PARENT, as for `plan`.
pub fn open(name: &str, parent: Option<&str>) -> Option<Cgroup> {
    let host = Host::probe().ok()?;
    open_on(&host, name, parent)
}

fn open_on(host: &Host, name: &str, parent: Option<&str>) -> Option<Cgroup> {
    check_name(name).ok()?;
    let parent = parent.map(check_parent).transpose().ok()?;
    let dirs: Vec<PathBuf> = host
        .mounts
        .iter()
        .filter_map(|m| host.dir_in(m, name, parent.as_deref()).ok())
        .collect();
    existing(host, &dirs)
}

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
    let mounts = match cgroup_mount_lines() {
        Ok(lines) => parse_mountinfo(lines),
        Err(e) => {
            return Recorded {
                dirs: Vec::new(),
                problems: vec![format!("{}: {e:#}", record.display())],
            }
        }
    };
    let mut out = Recorded::default();
    for d in dirs {
        let why = not_made_for(&mounts, name, parent, &d).or_else(|| not_a_cgroup_dir(&d));
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
fn not_made_for(mounts: &[Mount], name: &str, parent: Option<&str>, dir: &Path) -> Option<String> {
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
fn not_a_cgroup_dir(dir: &Path) -> Option<String> {
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

/// The cgroups in `dirs` that still exist, e.g. as recorded from
/// `Cgroup::dirs` at start: `open` computes the default parent from the
/// caller's own cgroup, which differs when `stop` runs from another session.
/// Directories that are not on a cgroup mount are ignored.
pub fn open_dirs(dirs: &[PathBuf]) -> Option<Cgroup> {
    existing(&Host::probe().ok()?, dirs)
}

fn existing(host: &Host, candidates: &[PathBuf]) -> Option<Cgroup> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for d in candidates {
        let on_mount = host
            .mounts
            .iter()
            .any(|m| d.starts_with(&m.point) && d != &m.point);
        if on_mount && d.is_dir() && !dirs.contains(d) {
            dirs.push(d.clone());
        }
    }
    if dirs.is_empty() {
        return None;
    }
    let on = |m: Option<&Mount>| {
        m.and_then(|m| dirs.iter().find(|d| d.starts_with(&m.point)))
            .cloned()
    };
    let kill = match (on(host.v2_mount()), on(host.v1_mount(Ctrl::Freezer))) {
        (Some(d), _) if d.join("cgroup.kill").exists() => KillVia::CgroupKill(d),
        (_, Some(d)) => KillVia::V1Freezer(d),
        (Some(d), None) if d.join("cgroup.freeze").exists() => KillVia::V2Freeze(d),
        _ => KillVia::Signals,
    };
    let find = |files: &[&str]| {
        dirs.iter()
            .flat_map(|d| files.iter().map(move |f| d.join(f)))
            .find(|f| f.exists())
    };
    let memory_usage = find(&["memory.current", "memory.usage_in_bytes"]);
    let pids_usage = find(&["pids.current"]);
    Some(Cgroup::new(dirs, kill, memory_usage, pids_usage))
}

/// Freezing, for kernels without `cgroup.kill`.
struct Freezer<'a> {
    file: PathBuf,
    frozen: &'a str,
    thawed: &'a str,
    v2: bool,
}

impl Freezer<'_> {
    fn set(&self, frozen: bool) -> Result<()> {
        let v = if frozen { self.frozen } else { self.thawed };
        write_file(&self.file, v)
            .with_context(|| format!("cannot write {v} to {}", self.file.display()))
    }

    fn is_frozen(&self) -> bool {
        let dir = self.file.parent().unwrap_or(Path::new("/"));
        if self.v2 {
            fs::read_to_string(dir.join("cgroup.events"))
                .map(|t| t.lines().any(|l| l == "frozen 1"))
                .unwrap_or(false)
        } else {
            fs::read_to_string(&self.file)
                .map(|t| t.trim() == "FROZEN")
                .unwrap_or(false)
        }
    }
}

/// Thaws on drop, so no error path leaves a subhost frozen.
struct Thaw<'a, 'b>(&'a Freezer<'b>);

impl Drop for Thaw<'_, '_> {
    fn drop(&mut self) {
        let _ = self.0.set(false);
    }
}

impl Cgroup {
    fn new(
        dirs: Vec<PathBuf>,
        kill: KillVia,
        memory_usage: Option<PathBuf>,
        pids_usage: Option<PathBuf>,
    ) -> Cgroup {
        let procs = dirs
            .iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok())
            .collect();
        Cgroup {
            dirs,
            procs,
            kill,
            memory_usage,
            pids_usage,
        }
    }

    fn from_plan(plan: &Plan) -> Cgroup {
        Cgroup::new(
            plan.dirs.clone(),
            plan.kill.clone(),
            plan.memory_usage.clone(),
            plan.pids_usage.clone(),
        )
    }

    /// Every directory, e.g. to record where the subhost's cgroups are.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Moves the calling process into every one of the cgroups. Allocates
    /// nothing unless it fails, so a child may call it right after fork.
    pub fn join_self(&self) -> io::Result<()> {
        self.join_self_except(None)
    }

    /// The cgroup v2 directory, if the subhost has one: a child can be
    /// cloned straight into it (CLONE_INTO_CGROUP), which spares the write
    /// to `cgroup.procs` and the migration it costs (an RCU grace period,
    /// ~15 ms here).
    pub fn v2_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| {
                nix::sys::statfs::statfs(d.as_path())
                    .map(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
                    .unwrap_or(false)
            })
            .map(PathBuf::as_path)
    }

    /// `join_self` for every cgroup but `skip` (one the process was cloned
    /// into already).
    pub fn join_self_except(&self, skip: Option<&Path>) -> io::Result<()> {
        for (dir, file) in self.dirs.iter().zip(&self.procs) {
            if Some(dir.as_path()) == skip {
                continue;
            }
            // SAFETY: file is a NUL-terminated path that outlives the call;
            // the fd is closed below on every path.
            let fd = unsafe { libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(join_error(file));
            }
            // SAFETY: writes one byte from a static buffer to the fd opened above.
            let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            let err = (n != 1).then(|| join_error(file));
            // SAFETY: fd was opened above and is not used after this.
            unsafe { libc::close(fd) };
            if let Some(err) = err {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Moves the process PID into every one of the cgroups.
    pub fn attach(&self, pid: Pid) -> Result<()> {
        for d in &self.dirs {
            let file = d.join("cgroup.procs");
            write_file(&file, &pid.to_string())
                .with_context(|| format!("cannot move process {pid} into {}", file.display()))?;
        }
        Ok(())
    }

    /// The PIDs in any of the cgroups or their sub-cgroups.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let mut all = Vec::new();
        for d in &self.dirs {
            for p in procs_below(d)? {
                if !all.contains(&p) {
                    all.push(p);
                }
            }
        }
        Ok(all)
    }

    /// Kills every process in the cgroups, including those that left the
    /// subhost's session or ignore SIGTERM, and waits until they are gone.
    pub fn kill_all(&self, timeout: Duration) -> Result<()> {
        let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        crate::logging::step(
            format_args!("kill every process in {}", dirs.join(" ")),
            || self.kill_all_now(timeout),
        )
    }

    fn kill_all_now(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        match &self.kill {
            KillVia::CgroupKill(d) => {
                let file = d.join("cgroup.kill");
                match write_file(&file, "1") {
                    Err(e) if e.kind() == io::ErrorKind::NotFound && !d.exists() => {}
                    r => r.with_context(|| format!("cannot write 1 to {}", file.display()))?,
                }
            }
            KillVia::V1Freezer(d) => self.freeze_and_kill(
                &Freezer {
                    file: d.join("freezer.state"),
                    frozen: "FROZEN",
                    thawed: "THAWED",
                    v2: false,
                },
                deadline,
            )?,
            KillVia::V2Freeze(d) => self.freeze_and_kill(
                &Freezer {
                    file: d.join("cgroup.freeze"),
                    frozen: "1",
                    thawed: "0",
                    v2: true,
                },
                deadline,
            )?,
            KillVia::Signals => {}
        }
        self.wait_empty(deadline)
    }

    fn freeze_and_kill(&self, f: &Freezer<'_>, deadline: Instant) -> Result<()> {
        let Some(dir) = f.file.parent() else {
            return Ok(());
        };
        while !procs_in(dir)?.is_empty() {
            if !dir.exists() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "processes {:?} of cgroup {} survived SIGKILL",
                    procs_in(dir)?,
                    dir.display()
                );
            }
            f.set(true)?;
            let thaw = Thaw(f);
            // A task in uninterruptible sleep can hold off FROZEN; kill what
            // is there anyway and go round again.
            let freeze_by = (Instant::now() + Duration::from_secs(1)).min(deadline);
            while !f.is_frozen() && Instant::now() < freeze_by {
                std::thread::sleep(Duration::from_millis(5));
            }
            kill_each(&procs_in(dir)?);
            drop(thaw);
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Waits until no cgroup lists a process; SIGKILLs stragglers on the way
    /// (only reachable when something moved processes between hierarchies).
    fn wait_empty(&self, deadline: Instant) -> Result<()> {
        loop {
            let left = self.pids()?;
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "processes {left:?} are still in cgroups {:?} after SIGKILL",
                    self.dirs
                );
            }
            if matches!(self.kill, KillVia::Signals) {
                kill_each(&left);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes every directory; removing removed ones is not an error.
    /// Then the PARENT directories the launcher made, when no other subhost
    /// is left in them (see the module docs).
    pub fn remove(&self) -> Result<()> {
        for d in self.dirs.iter().rev() {
            remove_below(d)?;
            crate::logging::step(format_args!("rmdir {}", d.display()), || {
                remove_dir_retrying(d)
            })?;
        }
        if !parents_record().exists() {
            return Ok(());
        }
        Parents::lock()?.remove_empty_above(&self.dirs)
    }

    /// How many processes the kernel killed for hitting the memory limit:
    /// `oom_kill` of `memory.events` (v2) or of `memory.oom_control` (v1).
    /// `None` without a memory controller.
    pub fn oom_kills(&self) -> Option<u64> {
        let dir = self.memory_usage.as_ref()?.parent()?;
        ["memory.events", "memory.oom_control"]
            .iter()
            .find_map(|f| fs::read_to_string(dir.join(f)).ok())
            .and_then(|t| oom_kill_count(&t))
    }

    /// Memory and pids in use, where limits made the kernel account them.
    pub fn usage(&self) -> Usage {
        let read = |f: &Option<PathBuf>| {
            f.as_ref()
                .and_then(|f| fs::read_to_string(f).ok())
                .and_then(|t| t.trim().parse().ok())
        };
        Usage {
            memory_current: read(&self.memory_usage),
            pids_current: read(&self.pids_usage),
        }
    }
}

/// The `oom_kill N` line of `memory.events` or `memory.oom_control`.
fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

fn kill_each(pids: &[i32]) {
    for &p in pids {
        // ESRCH: it is gone already, which is the point.
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
}

fn join_error(file: &CString) -> io::Error {
    let err = io::Error::last_os_error();
    io::Error::new(
        err.kind(),
        format!("cannot join cgroup {}: {err}", file.to_string_lossy()),
    )
}

/// Removes the sub-cgroups of `d`, deepest first: those a subhost whose
/// cgroup is delegated to it (USERNS) made inside.
fn remove_below(d: &Path) -> Result<()> {
    let entries = match fs::read_dir(d) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read cgroup {}", d.display())),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let sub = entry.path();
            remove_below(&sub)?;
            remove_dir_retrying(&sub)?;
        }
    }
    Ok(())
}

/// Dying processes leave their cgroups a moment after SIGKILL; until then
/// rmdir says EBUSY.
fn remove_dir_retrying(d: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if errno_of(&e) == Errno::EBUSY && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                let pids = procs_in(d).unwrap_or_default();
                return Err(e).with_context(|| {
                    format!(
                        "cannot remove cgroup {} (processes in it: {pids:?}; sub-cgroups \
                         in it must be removed first)",
                        d.display()
                    )
                });
            }
        }
    }
}
