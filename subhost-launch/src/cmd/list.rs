//! `list` and `status`: what each subhost is doing, read from the kernel
//! (mountinfo, `/run/netns`, `/sys/class/net`, the verified init), never
//! only from files a crash can leave stale.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Serialize, Serializer};

use crate::config::{self, Config};
use crate::layout::{self, Layout};
use crate::mounts::{self, MountEntry};
use crate::{cgroup, netns, privileges, procfs, state};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Its init runs, verified by the kernel.
    Running,
    /// No init; root mounted, netns and every cable in place.
    Hibernating,
    /// Nothing of it is set up on the host.
    Stopped,
    /// Partly set up: see the problems.
    Broken,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Hibernating => "hibernating",
            State::Stopped => "stopped",
            State::Broken => "broken",
        }
    }
}

/// What the init record says once checked against the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitFact {
    /// No record.
    None,
    /// The recorded process is this subhost's init.
    Verified(state::ProcId),
    /// No usable record, but the kernel shows the subhost's init: PID 1 of
    /// a PID namespace one level below ours, in netns NAME.
    Unrecorded(state::ProcId),
    /// The recorded process still runs as PID 1 of its PID namespace, but
    /// is not in netns NAME (the netns was deleted under it).
    OutsideNetns(i32),
    /// The record names a PID now used by another process.
    Stale(i32),
    /// The recorded init has exited (a zombie left unreaped counts: it
    /// runs nothing and holds no namespace): nothing to report, the rest
    /// of the facts tell the state.
    Exited,
}

/// What the kernel shows of one subhost: the input of `classify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub name: String,
    /// `live` is a mount point.
    pub live: bool,
    /// `NAME.img` exists.
    pub image: bool,
    /// `mnt` is a mount point.
    pub mnt: bool,
    /// A netns is mounted on `/run/netns/NAME`.
    pub netns: bool,
    /// What is wrong with `/run/netns/NAME` when it is there but no netns
    /// (an empty file left by an interrupted start, or something else).
    pub netns_stray: Option<String>,
    pub init: InitFact,
    /// Host ends of the cables (configured ones, or the `NAMEi` links found
    /// when the config is unreadable), and whether each exists.
    pub cables: Vec<(String, bool)>,
}

/// The state the facts add up to, and every partial piece as a problem.
pub fn classify(f: &Facts) -> (State, Vec<String>) {
    let name = &f.name;
    let mut problems = Vec::new();
    match f.init {
        InitFact::Stale(pid) => problems.push(format!(
            "stale init record {}/{name}.init: PID {pid} is not this subhost's init \
             (`subhost-launch stop {name}` clears it)",
            state::RUN_DIR
        )),
        InitFact::OutsideNetns(pid) => problems.push(format!(
            "init PID {pid} runs but is not in netns {name}: the netns was deleted under it"
        )),
        InitFact::Unrecorded(id) => problems.push(format!(
            "init PID {} runs but {}/{name}.init does not name it: `stop` cannot signal it \
             (end its session, or kill it, then `subhost-launch stop {name}`)",
            id.pid,
            state::RUN_DIR
        )),
        InitFact::None | InitFact::Exited | InitFact::Verified(_) => {}
    }
    problems.extend(f.netns_stray.clone());
    let missing = || f.cables.iter().filter(|c| !c.1).map(|c| &c.0);
    if let InitFact::Verified(_) | InitFact::Unrecorded(_) = f.init {
        // A running subhost stays `running`; what is off is still reported.
        if !f.live {
            problems.push(
                "live is not mounted on the host (the subhost's own view is unaffected)"
                    .to_string(),
            );
        }
        if f.image && !f.mnt {
            problems.push("the image is not mounted on mnt".to_string());
        }
        for c in missing() {
            problems.push(format!("cable {c}: host end missing"));
        }
        return (State::Running, problems);
    }
    if f.live && !f.netns {
        problems.push(format!("live is mounted but there is no netns {name}"));
    }
    if f.netns && !f.live {
        problems.push(format!("netns {name} exists but live is not mounted"));
    }
    if f.netns {
        for c in missing() {
            problems.push(format!("cable {c}: host end missing"));
        }
    } else {
        for c in f.cables.iter().filter(|c| c.1) {
            problems.push(format!(
                "cable {}: host end exists without netns {name} (a process may still hold the namespace)",
                c.0
            ));
        }
    }
    if f.image && f.mnt && !f.live {
        problems.push("the image is mounted on mnt but live is not".to_string());
    }
    if f.image && f.live && !f.mnt {
        problems.push("live is mounted but the image is not mounted on mnt".to_string());
    }
    let state = if !problems.is_empty() {
        State::Broken
    } else if f.live && f.netns {
        State::Hibernating
    } else {
        // Any piece up without a problem named would be a hole in the
        // rules above; the facts say only "down" here.
        State::Stopped
    };
    (state, problems)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Cable {
    host: String,
    /// The bridge the host end is enslaved to when it exists, else the
    /// configured one; `None` for an unattached cable.
    bridge: Option<String>,
    /// Configured MAC of the inner end; `None` when the kernel picks one
    /// (`"auto"` in JSON, as in the table).
    #[serde(serialize_with = "mac_or_auto")]
    mac: Option<String>,
    present: bool,
}

/// Everything `list` and `status` show of one subhost; serialized in
/// field order as the JSON of `--json`, whose keys README documents.
#[derive(Debug, Clone, Serialize)]
struct Report {
    name: String,
    #[serde(serialize_with = "path_lossy")]
    dir: PathBuf,
    state: State,
    pid: Option<i32>,
    #[serde(rename = "uptime_seconds", serialize_with = "whole_seconds")]
    uptime: Option<Duration>,
    /// `overlay` or `rbind`; `None` when neither mounted nor configured.
    root: Option<&'static str>,
    image: bool,
    cables: Vec<Cable>,
    #[serde(rename = "memory_bytes")]
    memory: Option<u64>,
    pids: Option<u64>,
    /// The capability bounding set: the init's when it runs, else what
    /// the config gives; `CAP_…` names.
    #[serde(rename = "capabilities")]
    caps: Vec<String>,
    /// Whether the seccomp filter is on, and what SYSCALLS_ALLOW lifts.
    seccomp: Option<bool>,
    syscalls_allow: Vec<String>,
    /// Kept capabilities that let root out (see privileges::ESCAPES).
    warnings: Vec<String>,
    /// The host ids of its user namespace (USERNS): recorded, else as
    /// configured; `None` without USERNS or before a pick.
    userns: Option<crate::userns::Range>,
    problems: Vec<String>,
}

fn mac_or_auto<S: Serializer>(mac: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(mac.as_deref().unwrap_or("auto"))
}

/// A directory that is not UTF-8 is still shown (as `ls` would, lossily)
/// rather than failing the whole listing.
fn path_lossy<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

fn whole_seconds<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    d.map(|d| d.as_secs()).serialize(s)
}

/// Pretty JSON, two spaces per level, keys in declaration order.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("reports hold only strings, numbers and bools")
}

pub fn list(base: &Path, json: bool) -> Result<()> {
    let reports = observe_all(base)?;
    if json {
        println!("{}", to_json(&reports));
    } else if reports.is_empty() {
        println!("no subhosts in {}", base.display());
    } else {
        print!("{}", table(&reports));
    }
    Ok(())
}

pub fn status(base: &Path, name: &str, json: bool) -> Result<()> {
    let layout = Layout::new(base, name)?;
    if !is_subhost(&layout.dir) {
        bail!(
            "no subhost {name}: {} is not a directory with a config or root \
             (`subhost-launch list` shows the subhosts there; `subhost-launch create {name}` makes one)",
            layout.dir.display()
        );
    }
    let report = observe(&layout, &mount_table()?, &Inits::default());
    if json {
        println!("{}", to_json(&report));
    } else {
        print!("{}", block(&report));
    }
    Ok(())
}

/// Every subhost under `base`, observed.
fn observe_all(base: &Path) -> Result<Vec<Report>> {
    let names = subhosts(base)?;
    let mounts = mount_table()?;
    let inits = Inits::default();
    Ok(names
        .iter()
        .map(|n| {
            let layout = Layout::new(base, n).expect("names are validated");
            observe(&layout, &mounts, &inits)
        })
        .collect())
}

/// The subhosts under `base` that are not stopped (running, hibernating or
/// broken), in `list` order: what `stop --all` stops.
pub fn not_stopped(base: &Path) -> Result<Vec<String>> {
    Ok(observe_all(base)?
        .into_iter()
        .filter(|r| r.state != State::Stopped)
        .map(|r| r.name)
        .collect())
}

fn mount_table() -> Result<Vec<MountEntry>> {
    mounts::mount_points().context("cannot read /proc/self/mountinfo")
}

fn is_subhost(dir: &Path) -> bool {
    dir.is_dir() && (dir.join("config").exists() || dir.join("root").is_dir())
}

/// Names of the subhosts under `base`, sorted; other entries are skipped
/// silently (the directory may hold base layers, notes, backups).
fn subhosts(base: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", base.display())),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| layout::validate_name(n).is_ok() && is_subhost(&base.join(n)))
        .collect();
    names.sort();
    Ok(names)
}

fn observe(layout: &Layout, mounts: &[MountEntry], inits: &Inits) -> Report {
    let name = &layout.name;
    let cfg = config::load(&layout.config(), name, &layout.base);
    // mountinfo has real paths.
    let real = layout.dir.canonicalize().ok();
    let mount_at = |leaf: &str| {
        let p = real.as_ref()?.join(leaf);
        mounts.iter().rev().find(|m| m.mount_point == p)
    };
    let live = mount_at("live");
    let mut cables = cables(layout, cfg.as_ref().ok());
    // NAME's netns, cables, init and cgroup are host-wide: another
    // directory's subhost of that name may hold them.
    let owner = state::owner(name, &layout.dir);
    let other = match &owner {
        Ok(state::Owner::Other(other)) => Some(other),
        _ => None,
    };
    if other.is_some() {
        for c in &mut cables {
            c.present = false;
        }
    }
    let facts = Facts {
        name: name.clone(),
        live: live.is_some(),
        image: layout.image_present(),
        mnt: mount_at("mnt").is_some(),
        netns: other.is_none() && netns::exists(name),
        netns_stray: other.is_none().then(|| netns::stray(name)).flatten(),
        init: match other {
            None => init_fact(name, inits),
            Some(_) => InitFact::None,
        },
        cables: cables.iter().map(|c| (c.host.clone(), c.present)).collect(),
    };
    let (mut state, mut problems) = classify(&facts);
    // What is left on the host where the subhost's own pieces go: records
    // that are no regular file, someone else's mount on live or mnt,
    // layers staged by an interrupted start. `stop --all` must see them.
    let mut left: Vec<String> = mounts::foreign(layout, mounts)
        .into_iter()
        .map(|f| format!("{f}: start refuses it and stop leaves it; unmount it yourself"))
        .collect();
    match &owner {
        // Another directory's subhost of this NAME: its records and staged
        // layers are that one's, and this one is told of it.
        Ok(state::Owner::Other(other)) => problems.push(state::in_use_note(name, other)),
        Ok(_) => {
            left.extend(state::bad_records(name));
            let parent = cfg.as_ref().ok().and_then(|c| c.cgroup_parent.as_deref());
            left.extend(cgroup::recorded(name, parent).problems);
            if let Some(s) = mounts::staged_leftover(&mounts::staging_dir(name), mounts) {
                left.push(format!("{s}: `subhost-launch stop {name}` clears it"));
            }
        }
        Err(e) => problems.push(format!("{e:#}")),
    }
    if !left.is_empty() {
        if state != State::Running {
            state = State::Broken;
        }
        problems.extend(left);
    }
    if let Err(e) = &cfg {
        problems.push(format!("{e:#}"));
    }
    // Said, but the state stays: a wake plugs them back in.
    if let (true, Ok(c)) = (facts.netns, &cfg) {
        let links = crate::cmd::start::links(layout, c);
        problems.extend(netns::unplugged(&links).iter().map(|p| p.problem(name)));
    }
    let root = match (live, &cfg) {
        (Some(m), _) if m.fs_type == "overlay" => Some("overlay"),
        (Some(_), _) => Some("rbind"),
        (None, Ok(c)) if c.lower.is_empty() => Some("rbind"),
        (None, Ok(_)) => Some("overlay"),
        (None, Err(_)) => None,
    };
    let (pid, uptime) = match facts.init {
        InitFact::Verified(id) | InitFact::Unrecorded(id) => (Some(id.pid), state::uptime(id)),
        _ => (None, None),
    };
    let usage = match other {
        None => cfg.as_ref().ok().and_then(|c| usage(name, c)),
        Some(_) => None,
    };
    let userns = match cfg.as_ref().ok().and_then(|c| c.userns) {
        None => None,
        Some(u) => match crate::userns::read_record(layout) {
            Ok(Some(r)) => Some(r),
            Ok(None) => match u.setting {
                crate::userns::Setting::Fixed(r) => Some(r),
                crate::userns::Setting::Pick => None,
            },
            Err(e) => {
                problems.push(format!("{e:#}"));
                None
            }
        },
    };
    let caps = match pid {
        Some(pid) => init_caps(pid),
        None => cfg.as_ref().ok().and_then(|c| privileges::kept(c).ok()),
    }
    .unwrap_or_default();
    // In its own user namespace no capability reaches the host.
    let mut warnings = match cfg.as_ref().ok().and_then(|c| c.userns) {
        Some(_) => Vec::new(),
        None => privileges::warnings(&caps),
    };
    // `caps` is what the init really has: what the config keeps beyond
    // that was never granted (the launcher's bounding set lacked it).
    if let (Some(_), false, Ok(c)) = (pid, caps.is_empty(), &cfg) {
        let have = caps.iter().copied().collect();
        let lacking = privileges::kept(c).map(|want| privileges::lacking(&want, &have));
        if let Ok(lacking) = lacking.as_deref() {
            if !lacking.is_empty() {
                warnings.push(privileges::not_granted_to_init(lacking));
            }
        }
    }
    // A running init's own state, else what the config asks for.
    let seccomp = match pid {
        Some(pid) => init_seccomp(pid),
        None => None,
    }
    .or_else(|| cfg.as_ref().ok().map(|c| c.seccomp));
    Report {
        name: name.clone(),
        dir: layout.dir.clone(),
        state,
        pid,
        uptime,
        root,
        image: facts.image,
        cables,
        memory: usage.as_ref().and_then(|u| u.memory_current),
        pids: usage.and_then(|u| u.pids_current),
        caps: caps.iter().map(|c| c.to_string()).collect(),
        seccomp,
        syscalls_allow: cfg
            .as_ref()
            .map(|c| c.syscalls_allow.clone())
            .unwrap_or_default(),
        warnings,
        userns,
        problems,
    }
}

/// Whether a running init has a seccomp filter.
fn init_seccomp(pid: i32) -> Option<bool> {
    procfs::seccomp(&procfs::status(pid).ok()?)
}

/// The bounding set of a running init.
fn init_caps(pid: i32) -> Option<Vec<caps::Capability>> {
    let mask = procfs::capbnd(&procfs::status(pid).ok()?)?;
    let mut set: Vec<caps::Capability> = caps::all()
        .into_iter()
        .filter(|c| c.index() < 64 && mask & (1u64 << c.index()) != 0)
        .collect();
    set.sort_by_key(|c| c.index());
    Some(set)
}

/// How long `list` waits for a start in progress to record its init.
const START_RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn init_fact(name: &str, inits: &Inits) -> InitFact {
    if let Some(id) = state::running_init(name) {
        return InitFact::Verified(id);
    }
    // The record is only a hint: a crash or a cleaned /run can lose it
    // while the init runs on.
    if let Some(id) = inits.in_netns(name) {
        // A start records its init only after forking it: while it still
        // holds the lock, the record is on its way, not lost. Waited for,
        // so that `running` always comes with the record callers read.
        state::wait_unlocked(name, START_RECORD_WAIT);
        if let Some(id) = state::running_init(name) {
            return InitFact::Verified(id);
        }
        return InitFact::Unrecorded(id);
    }
    let Some(rec) = state::init_record(name) else {
        return InitFact::None;
    };
    match state::ProcId::of(rec.pid) {
        // Gone, or a zombie: either way it has exited.
        Err(_) => InitFact::Exited,
        // Same start time: the very process recorded, not a recycled PID.
        Ok(id) if id == rec && procfs::nspid_of(rec.pid).last() == Some(&1) => {
            InitFact::OutsideNetns(rec.pid)
        }
        Ok(_) => InitFact::Stale(rec.pid),
    }
}

/// Inits of PID namespaces directly below ours, by network namespace:
/// what `start` makes a subhost's init (deeper ones are containers inside
/// a subhost). Read from /proc once, and only when a subhost's init is
/// not found through its record, so that `list` of many is one pass.
#[derive(Default)]
struct Inits {
    by_netns: std::cell::OnceCell<std::collections::HashMap<(u64, u64), Vec<i32>>>,
}

impl Inits {
    fn in_netns(&self, name: &str) -> Option<state::ProcId> {
        use std::os::unix::fs::MetadataExt;
        let ns = std::fs::metadata(netns::path(name)).ok()?;
        let pids = self.scan().get(&(ns.dev(), ns.ino()))?;
        let depth = procfs::nspid_of(std::process::id() as i32).len();
        pids.iter().find_map(|&pid| {
            let ids = procfs::nspid_of(pid);
            if ids.len() == depth + 1 && ids.last() == Some(&1) {
                state::ProcId::of(pid).ok()
            } else {
                None
            }
        })
    }

    fn scan(&self) -> &std::collections::HashMap<(u64, u64), Vec<i32>> {
        use std::os::unix::fs::MetadataExt;
        self.by_netns.get_or_init(|| {
            let mut map: std::collections::HashMap<(u64, u64), Vec<i32>> = Default::default();
            let Ok(dir) = std::fs::read_dir("/proc") else {
                return map;
            };
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                // A zombie has no namespaces: it fails here and is skipped.
                if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
                    map.entry((m.dev(), m.ino())).or_default().push(pid);
                }
            }
            map
        })
    }
}

fn cables(layout: &Layout, cfg: Option<&Config>) -> Vec<Cable> {
    let net = Path::new("/sys/class/net");
    let master = |host: &str| {
        std::fs::read_link(net.join(host).join("master"))
            .ok()
            .and_then(|p| p.file_name()?.to_str().map(str::to_string))
    };
    match cfg {
        Some(cfg) => cfg
            .bridges
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let host = layout.host_if(i);
                let present = net.join(&host).exists();
                let bridge = if present {
                    master(&host)
                } else {
                    c.bridge.clone()
                };
                Cable {
                    bridge,
                    mac: c.mac.map(|m| mac_string(&m)),
                    present,
                    host,
                }
            })
            .collect(),
        // Without a config, the links that exist are all there is to show.
        None => netns::cables_of(&layout.name)
            .into_iter()
            .map(|host| Cable {
                bridge: master(&host),
                mac: None,
                present: true,
                host,
            })
            .collect(),
    }
}

fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn usage(name: &str, cfg: &Config) -> Option<cgroup::Usage> {
    let limited = cfg.memory_max.is_some() || cfg.pids_max.is_some() || cfg.cpu_max.is_some();
    if !limited {
        return None;
    }
    cgroup::open(name, cfg.cgroup_parent.as_deref()).map(|c| c.usage())
}

// ---- output ----

fn root_kind(r: &Report) -> String {
    let kind = r.root.unwrap_or("?");
    if r.image {
        format!("{kind}+image")
    } else {
        kind.to_string()
    }
}

fn cable_summary(c: &Cable) -> String {
    format!("{}:{}", c.host, c.bridge.as_deref().unwrap_or("-"))
}

fn table(reports: &[Report]) -> String {
    let header = ["NAME", "STATE", "PID", "UPTIME", "ROOT", "CABLES"].map(String::from);
    let rows: Vec<[String; 6]> = reports
        .iter()
        .map(|r| {
            let cables: Vec<String> = r.cables.iter().map(cable_summary).collect();
            [
                r.name.clone(),
                r.state.as_str().to_string(),
                r.pid.map_or("-".into(), |p| p.to_string()),
                r.uptime.map_or("-".into(), human_duration),
                root_kind(r),
                if cables.is_empty() {
                    "-".into()
                } else {
                    cables.join(",")
                },
            ]
        })
        .collect();
    let mut width = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(width).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for r in reports {
        for w in &r.warnings {
            let _ = writeln!(out, "{}: warning: {w}", r.name);
        }
        for p in &r.problems {
            let _ = writeln!(out, "{}: {p}", r.name);
        }
    }
    out
}

fn block(r: &Report) -> String {
    let mut out = String::new();
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "name:     {}", r.name);
    let _ = writeln!(out, "dir:      {}", r.dir.display());
    let _ = writeln!(out, "state:    {}", r.state.as_str());
    let _ = writeln!(out, "pid:      {}", dash(r.pid.map(|p| p.to_string())));
    let _ = writeln!(out, "uptime:   {}", dash(r.uptime.map(human_duration)));
    let _ = writeln!(out, "root:     {}", root_kind(r));
    if r.cables.is_empty() {
        let _ = writeln!(out, "cables:   none");
    }
    for (i, c) in r.cables.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}{}  bridge {}  mac {}  host end {}",
            if i == 0 { "cables:   " } else { "          " },
            c.host,
            c.bridge.as_deref().unwrap_or("-"),
            c.mac.as_deref().unwrap_or("auto"),
            if c.present { "up" } else { "absent" }
        );
    }
    if let Some(u) = r.userns {
        let _ = writeln!(
            out,
            "userns:   host ids {}..{} (root inside is host uid {})",
            u.base,
            u.end() - 1,
            u.base
        );
    }
    if r.memory.is_some() || r.pids.is_some() {
        let _ = writeln!(out, "memory:   {}", dash(r.memory.map(human_bytes)));
        let _ = writeln!(out, "pids:     {}", dash(r.pids.map(|p| p.to_string())));
    }
    let short: Vec<&str> = r
        .caps
        .iter()
        .map(|c| c.strip_prefix("CAP_").unwrap_or(c))
        .collect();
    let _ = writeln!(out, "caps:     {}", short.join(" "));
    let seccomp = match (r.seccomp, r.syscalls_allow.is_empty()) {
        (Some(true), true) => "on".to_string(),
        (Some(true), false) => format!("on, allowing {}", r.syscalls_allow.join(" ")),
        (Some(false), _) => "off".to_string(),
        (None, _) => "-".to_string(),
    };
    let _ = writeln!(out, "seccomp:  {seccomp}");
    for w in &r.warnings {
        let _ = writeln!(out, "warning:  {w}");
    }
    if r.problems.is_empty() {
        let _ = writeln!(out, "problems: none");
    }
    for (i, p) in r.problems.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}{p}",
            if i == 0 { "problems: " } else { "          " }
        );
    }
    out
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            name: "web".into(),
            dir: PathBuf::from("/opt/subhost/web"),
            state: State::Running,
            pid: Some(26249),
            uptime: Some(Duration::from_millis(61_900)),
            root: Some("overlay"),
            image: false,
            cables: vec![
                Cable {
                    host: "web0".into(),
                    bridge: Some("br0".into()),
                    mac: None,
                    present: true,
                },
                Cable {
                    host: "web1".into(),
                    bridge: None,
                    mac: Some("02:00:00:00:01:01".into()),
                    present: false,
                },
            ],
            memory: None,
            pids: Some(3),
            caps: vec!["CAP_CHOWN".into(), "CAP_SYS_ADMIN".into()],
            seccomp: Some(true),
            syscalls_allow: vec!["bpf".into()],
            warnings: vec!["CAP_SYS_ADMIN is kept: …".into()],
            userns: Some(crate::userns::Range {
                base: 524288,
                count: 65536,
            }),
            problems: vec![],
        }
    }

    /// The schema README documents, byte for byte: scripts parse it.
    #[test]
    fn json_keeps_the_documented_schema() {
        let want = r#"{
  "name": "web",
  "dir": "/opt/subhost/web",
  "state": "running",
  "pid": 26249,
  "uptime_seconds": 61,
  "root": "overlay",
  "image": false,
  "cables": [
    {
      "host": "web0",
      "bridge": "br0",
      "mac": "auto",
      "present": true
    },
    {
      "host": "web1",
      "bridge": null,
      "mac": "02:00:00:00:01:01",
      "present": false
    }
  ],
  "memory_bytes": null,
  "pids": 3,
  "capabilities": [
    "CAP_CHOWN",
    "CAP_SYS_ADMIN"
  ],
  "seccomp": true,
  "syscalls_allow": [
    "bpf"
  ],
  "warnings": [
    "CAP_SYS_ADMIN is kept: …"
  ],
  "userns": {
    "base": 524288,
    "count": 65536
  },
  "problems": []
}"#;
        assert_eq!(to_json(&report()), want);
        let stopped = Report {
            state: State::Stopped,
            pid: None,
            uptime: None,
            root: None,
            cables: vec![],
            userns: None,
            ..report()
        };
        let got = to_json(&vec![stopped]);
        assert!(got.starts_with("[\n  {\n    \"name\": \"web\","), "{got}");
        assert!(got.contains("\"state\": \"stopped\""), "{got}");
        assert!(got.contains("\"cables\": [],"), "{got}");
        assert!(got.contains("\"pid\": null,"), "{got}");
        assert!(got.contains("\"userns\": null,"), "{got}");
        assert_eq!(to_json(&Vec::<Report>::new()), "[]");
    }

    #[test]
    fn json_escapes_what_it_must_and_keeps_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let r = Report {
            dir: PathBuf::from(std::ffi::OsStr::from_bytes(b"/srv/\xff\"q\"")),
            problems: vec!["a\\b\n\t\u{0}\u{1f}\u{7f} héllo 🦀".into()],
            ..report()
        };
        let got = to_json(&r);
        assert!(
            got.contains("\"dir\": \"/srv/\u{fffd}\\\"q\\\"\","),
            "{got}"
        );
        assert!(
            got.contains("\"a\\\\b\\n\\t\\u0000\\u001f\u{7f} héllo 🦀\""),
            "{got}"
        );
    }

    fn facts() -> Facts {
        Facts {
            name: "web".into(),
            live: false,
            image: false,
            mnt: false,
            netns: false,
            netns_stray: None,
            init: InitFact::None,
            cables: vec![("web0".into(), false), ("web1".into(), false)],
        }
    }

    fn up() -> Facts {
        Facts {
            live: true,
            netns: true,
            cables: vec![("web0".into(), true), ("web1".into(), true)],
            ..facts()
        }
    }

    fn verified() -> InitFact {
        InitFact::Verified(state::ProcId { pid: 42, start: 7 })
    }

    fn has(problems: &[String], word: &str) -> bool {
        problems.iter().any(|p| p.contains(word))
    }

    #[test]
    fn nothing_up_is_stopped() {
        assert_eq!(classify(&facts()), (State::Stopped, vec![]));
        let img = Facts {
            image: true,
            ..facts()
        };
        assert_eq!(classify(&img), (State::Stopped, vec![]));
    }

    #[test]
    fn all_up_without_init_is_hibernating() {
        assert_eq!(classify(&up()), (State::Hibernating, vec![]));
        let img = Facts {
            image: true,
            mnt: true,
            ..up()
        };
        assert_eq!(classify(&img), (State::Hibernating, vec![]));
    }

    #[test]
    fn a_verified_init_is_running() {
        let f = Facts {
            init: verified(),
            ..up()
        };
        assert_eq!(classify(&f), (State::Running, vec![]));
        // Still running, but what is off on the host is said.
        let f = Facts {
            init: verified(),
            live: false,
            ..up()
        };
        let (state, problems) = classify(&f);
        assert_eq!(state, State::Running);
        assert!(has(&problems, "live is not mounted"), "{problems:?}");
    }

    #[test]
    fn partial_setups_are_broken_and_say_what_is_partial() {
        let cases: [(Facts, &str); 7] = [
            (
                Facts {
                    netns: false,
                    cables: vec![("web0".into(), false), ("web1".into(), false)],
                    ..up()
                },
                "no netns web",
            ),
            (
                Facts {
                    live: false,
                    ..up()
                },
                "netns web exists but live",
            ),
            (
                Facts {
                    cables: vec![("web0".into(), true), ("web1".into(), false)],
                    ..up()
                },
                "web1: host end missing",
            ),
            (
                Facts {
                    init: InitFact::Stale(99),
                    ..up()
                },
                "stale init record",
            ),
            (
                Facts {
                    init: InitFact::Stale(99),
                    ..facts()
                },
                "PID 99",
            ),
            (
                Facts {
                    cables: vec![("web0".into(), true), ("web1".into(), false)],
                    ..facts()
                },
                "web0: host end exists without netns",
            ),
            (
                Facts {
                    image: true,
                    mnt: false,
                    ..up()
                },
                "image is not mounted",
            ),
        ];
        for (f, word) in cases {
            let (state, problems) = classify(&f);
            assert_eq!(state, State::Broken, "{f:?}");
            assert!(has(&problems, word), "{word:?} not in {problems:?}");
        }
    }

    #[test]
    fn an_init_found_without_its_record_is_running_with_a_problem() {
        let f = Facts {
            init: InitFact::Unrecorded(state::ProcId { pid: 42, start: 7 }),
            ..up()
        };
        let (state, problems) = classify(&f);
        assert_eq!(state, State::Running);
        assert!(has(&problems, "does not name it"), "{problems:?}");
    }

    #[test]
    fn a_netns_file_that_is_no_netns_is_broken() {
        let stray = "/run/netns/web is not a network namespace (an empty file …)";
        let f = Facts {
            netns_stray: Some(stray.into()),
            ..facts()
        };
        assert_eq!(classify(&f), (State::Broken, vec![stray.to_string()]));
    }

    #[test]
    fn an_init_whose_netns_was_deleted_is_broken() {
        let f = Facts {
            netns: false,
            init: InitFact::OutsideNetns(42),
            ..up()
        };
        let (state, problems) = classify(&f);
        assert_eq!(state, State::Broken);
        assert!(has(&problems, "no netns web"), "{problems:?}");
        assert!(has(&problems, "not in netns web"), "{problems:?}");
    }

    /// The subhost's cgroups and their test-only parent, removed on drop.
    struct CgroupGuard {
        cg: cgroup::Cgroup,
    }

    impl Drop for CgroupGuard {
        fn drop(&mut self) {
            let _ = self.cg.remove();
            for d in self.cg.dirs() {
                if let Some(parent) = d.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
            }
        }
    }

    #[test]
    fn usage_is_read_from_the_cgroup_only_with_limits_on() {
        assert!(nix::unistd::geteuid().is_root(), "needs root");
        let me = std::process::id();
        let name = format!("shtls{:x}", me % 0x10_0000);
        let parent = format!("/shtcg-{me}-ls");
        let limited = Config {
            memory_max: Some(64 << 20),
            pids_max: Some(20),
            cgroup_parent: Some(parent.clone()),
            ..Config::defaults(&name)
        };
        assert!(usage(&name, &limited).is_none(), "no cgroup yet");
        let limits = cgroup::Limits {
            memory_max: limited.memory_max,
            pids_max: limited.pids_max,
            cpu_max: None,
        };
        let plan = cgroup::plan(&name, Some(&parent), &limits).unwrap();
        let _guard = CgroupGuard {
            cg: cgroup::create(&plan).unwrap(),
        };
        let got = usage(&name, &limited).expect("usage of the new cgroup");
        assert_eq!(got.pids_current, Some(0));
        assert!(got.memory_current.is_some(), "{got:?}");
        let unlimited = Config {
            cgroup_parent: Some(parent),
            ..Config::defaults(&name)
        };
        assert!(usage(&name, &unlimited).is_none());
    }

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(human_duration(Duration::from_secs(7)), "7s");
        assert_eq!(human_duration(Duration::from_secs(307)), "5m07s");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600 + 240)), "3h04m");
        assert_eq!(human_duration(Duration::from_secs(90000)), "1d01h");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
