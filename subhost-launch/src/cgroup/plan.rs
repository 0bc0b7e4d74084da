//! Where a subhost's cgroups go and what is written there, as data:
//! printed by `--dry-run`, carried out by `create`.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::devices;
use super::host::{Ctrl, Host};

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
    /// The device policy (see `devices`); `None`: no device cgroup.
    pub devices: Option<Vec<devices::Rule>>,
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
    /// Where cgroup2 is mounted (hybrid hosts too), the policy as a BPF
    /// program on the cgroup v2 directory, attached after the writes.
    pub device_program: Option<devices::Program>,
    /// The launcher's own device cgroup, which the subhost stays under when
    /// the v1 `devices` hierarchy is read-only (inside a container whose
    /// manager restricts it): no policy of its own.
    pub devices_inherited: Option<PathBuf>,
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
        if let Some(p) = &self.device_program {
            writeln!(f, "{p}")?;
        }
        if let Some(d) = &self.devices_inherited {
            writeln!(
                f,
                "# devices: the hierarchy is read-only; the subhost stays under {} (devices.list restricted)",
                d.display()
            )?;
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
pub(super) const DELEGATE_FALLBACK: [&str; 3] =
    ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"];

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
pub(super) fn parse_delegate(text: &str) -> Vec<String> {
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

pub(super) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0', '\n']) {
        bail!("{name:?} cannot name a cgroup: use a plain name without '/'");
    }
    Ok(())
}

/// CGROUP_PARENT: absolute inside the hierarchy, not its root, no `..`.
pub(super) fn check_parent(parent: &str) -> Result<String> {
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
pub(super) fn parse_cpu_max(s: &str) -> Result<(Option<u64>, u64)> {
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

pub(super) fn plan_on(
    host: &Host,
    name: &str,
    parent: Option<&str>,
    limits: &Limits,
) -> Result<Plan> {
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
        device_program: None,
        devices_inherited: None,
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
            (Ctrl::Freezer | Ctrl::Devices, _) => {}
        }
    }

    if let Some(rules) = &limits.devices {
        // The BPF program wherever there is a cgroup2 directory: the sandbox
        // is cloned into it, while a v1 devices cgroup has to be joined by a
        // write to its cgroup.procs, a migration that waits out an RCU grace
        // period (~14 ms a start on a hybrid host). Inside a container whose
        // manager mounts the v1 hierarchy read-only (systemd-nspawn), bpf()
        // is refused (EPERM) as well: the manager's v1 device cgroup, which
        // the subhost stays in, is the policy there.
        match (&v2_dir, host.v1_mount(Ctrl::Devices)) {
            (_, Some(m)) if m.read_only => {
                let own = m.point.join(host.own_path(m)?.trim_start_matches('/'));
                plan.devices_inherited = Some(devices::inherited(&own)?);
            }
            (Some(d), _) => {
                plan.device_program = Some(devices::Program {
                    dir: d.clone(),
                    rules: rules.clone(),
                })
            }
            (None, Some(m)) => {
                let dir = host.dir_in(m, name, parent)?;
                if !plan.dirs.contains(&dir) {
                    plan.dirs.push(dir.clone());
                }
                for (file, value) in devices::v1_files(&dir, rules) {
                    plan.writes.push(Write {
                        file,
                        value,
                        if_present: false,
                    });
                }
            }
            (None, None) => bail!(
                "cannot give the subhost a device policy: this host mounts neither a cgroup v1 \
                 devices hierarchy nor cgroup2; mount cgroup2 on /sys/fs/cgroup"
            ),
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
pub(super) fn enable_down_to(
    enable: &mut Vec<Enable>,
    point: &Path,
    leaf: &Path,
    controller: &str,
) {
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
