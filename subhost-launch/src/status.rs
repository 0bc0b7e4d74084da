//! What state a subhost is in: running, hibernating, stopped or broken,
//! read from the kernel (mountinfo, `/run/netns`, `/sys/class/net`, the
//! verified init), never only from files a crash can leave stale. `list`,
//! `status`, `enter` and `stop --all` ask here; they only print it.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Serialize, Serializer};

use crate::config::{self, Config};
use crate::layout::{self, Layout};
use crate::mounts::{self, MountEntry};
use crate::{cgroup, netns, privileges, procfs, state};

mod host;
use host::Host;

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
    pub fn as_str(self) -> &'static str {
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
pub struct Cable {
    pub host: String,
    /// The bridge the host end is enslaved to when it exists, else the
    /// configured one; `None` for an unattached cable.
    pub bridge: Option<String>,
    /// Configured MAC of the inner end; `None` when the kernel picks one
    /// (`"auto"` in JSON, as in the table).
    #[serde(serialize_with = "mac_or_auto")]
    pub mac: Option<String>,
    pub present: bool,
    /// The inner end's addresses now (`addr/prefix`), read from the netns;
    /// empty when it has none or the netns is not there.
    pub addresses: Vec<String>,
}

/// Everything `list` and `status` show of one subhost; serialized in
/// field order as the JSON of `--json`, whose keys README documents.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    #[serde(serialize_with = "path_lossy")]
    pub dir: PathBuf,
    pub state: State,
    pub pid: Option<i32>,
    #[serde(rename = "uptime_seconds", serialize_with = "whole_seconds")]
    pub uptime: Option<Duration>,
    /// `overlay` or `rbind`; `None` when neither mounted nor configured.
    pub root: Option<&'static str>,
    pub image: bool,
    /// The base (`base list`) its LOWER is in, if any.
    pub base: Option<String>,
    pub cables: Vec<Cable>,
    /// What its nftables chain publishes now.
    pub published: Vec<crate::publish::Published>,
    #[serde(rename = "memory_bytes")]
    pub memory: Option<u64>,
    pub pids: Option<u64>,
    /// Its supervised services, as its init last published them.
    pub services: Vec<crate::services::Service>,
    /// Socket activation: what the activator holding its LISTEN sockets
    /// says (sleeping, awake, …, its wakes and the last one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation: Option<crate::activator::Activation>,
    /// The capability bounding set: the init's when it runs, else what
    /// the config gives; `CAP_…` names.
    #[serde(rename = "capabilities")]
    pub caps: Vec<String>,
    /// Whether the seccomp filter is on, and what SYSCALLS_ALLOW lifts.
    pub seccomp: Option<bool>,
    pub syscalls_allow: Vec<String>,
    /// The device policy: what the device cgroup allows (`c 1:3 rwm`, a
    /// `DEVICES` node's with its path), as configured.
    pub devices: Vec<String>,
    /// Kept capabilities that let root out (see privileges::ESCAPES).
    pub warnings: Vec<String>,
    /// The host ids of its user namespace (USERNS): recorded, else as
    /// configured; `None` without USERNS or before a pick.
    pub userns: Option<crate::userns::Range>,
    pub problems: Vec<String>,
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

/// Every subhost under `base`, observed; the cables' addresses (a look
/// into each netns) only when `addresses`.
pub fn observe_all(base: &Path, addresses: bool) -> Result<Vec<Report>> {
    let names = subhosts(base)?;
    let host = Host::read(base, mount_table()?, addresses);
    let inits = Inits::default();
    Ok(names
        .iter()
        .map(|n| {
            let layout = Layout::new(base, n).expect("names are validated");
            observe(&layout, &host, &inits)
        })
        .collect())
}

/// What is still set up of a subhost whose init does not run: its root
/// mounted on `live`, its netns. A quick look, for `enter` to say why
/// there is nothing to enter; `observe_one` tells the whole state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    pub mounted: bool,
    pub netns: bool,
}

pub fn kept(layout: &Layout) -> Kept {
    Kept {
        mounted: mounts::is_active(layout),
        netns: netns::exists(&layout.name),
    }
}

/// The subhosts under `base` that are not stopped (running, hibernating or
/// broken), in `list` order: what `stop --all` stops.
pub fn not_stopped(base: &Path) -> Result<Vec<String>> {
    Ok(observe_all(base, false)?
        .into_iter()
        .filter(|r| r.state != State::Stopped)
        .map(|r| r.name)
        .collect())
}

/// The subhost of `layout`, observed.
pub fn observe_one(layout: &Layout) -> Result<Report> {
    let host = Host::read(&layout.base, mount_table()?, true);
    Ok(observe(layout, &host, &Inits::default()))
}

fn mount_table() -> Result<Vec<MountEntry>> {
    mounts::mount_points().context("cannot read /proc/self/mountinfo")
}

/// Whether `dir` is a subhost's directory: one with a config or a root.
pub fn is_subhost(dir: &Path) -> bool {
    dir.is_dir() && (dir.join("config").exists() || dir.join("root").is_dir())
}

/// Names of the subhosts under `base`, sorted; other entries are skipped
/// silently (the directory may hold base layers, notes, backups).
pub fn subhosts(base: &Path) -> Result<Vec<String>> {
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

fn observe(layout: &Layout, host: &Host, inits: &Inits) -> Report {
    let name = &layout.name;
    let records = crate::run::of(name);
    let cfg = config::load(&layout.config(), name, &layout.base);
    // mountinfo has real paths.
    let (real, dir_id) = host.resolve(layout);
    let mount_at = |leaf: &str| host.mount_at(&real.as_ref()?.join(leaf));
    let live = mount_at("live");
    let mnt = mount_at("mnt");
    let (mut cables, masters) = cables(layout, cfg.as_ref().ok(), host);
    // NAME's netns, cables, init and cgroup are host-wide: another
    // directory's subhost of that name may hold them.
    let owner = match &real {
        _ if !host.record_there(&records.dir()) => Ok(state::Owner::Unrecorded),
        Some(real) => state::owner_resolved(name, real.clone(), dir_id),
        None => state::owner(name, &layout.dir),
    };
    let other = match &owner {
        Ok(state::Owner::Other(other)) => Some(other),
        _ => None,
    };
    if other.is_some() {
        for c in &mut cables {
            c.present = false;
        }
    }
    let (entry, ns_meta) = match other {
        None => host.netns_entry(name),
        Some(_) => (netns::Entry::Absent, None),
    };
    // The netns as a process in it has it; an entry that is no netns
    // mount is followed, as a path to a netns would be.
    let ns_id = match (entry, ns_meta) {
        (netns::Entry::Netns, Some(m)) => Some((m.dev(), m.ino())),
        (netns::Entry::Absent, _) => None,
        _ => std::fs::metadata(netns::path(name))
            .ok()
            .map(|m| (m.dev(), m.ino())),
    };
    let (init, init_status) = match other {
        None => init_fact(name, host, ns_id, inits),
        Some(_) => (InitFact::None, None),
    };
    let facts = Facts {
        name: name.clone(),
        live: live.is_some(),
        image: layout.image_present(),
        mnt: mnt.is_some(),
        netns: entry == netns::Entry::Netns,
        netns_stray: netns::stray_text(name, entry),
        init,
        cables: cables.iter().map(|c| (c.host.clone(), c.present)).collect(),
    };
    if facts.netns && host.addresses {
        addresses(name, &mut cables);
    }
    let (mut state, mut problems) = classify(&facts);
    // What is left on the host where the subhost's own pieces go: records
    // that are no regular file, someone else's mount on live or mnt,
    // layers staged by an interrupted start. `stop --all` must see them.
    // Only the mounts at live and mnt can be foreign: looked up once here.
    let at_root: Vec<MountEntry> = live.into_iter().chain(mnt).cloned().collect();
    let foreign = match at_root.is_empty() {
        true => Vec::new(),
        false => mounts::foreign_below(layout, real.as_deref(), &at_root),
    };
    let mut left: Vec<String> = foreign
        .into_iter()
        .map(|f| format!("{f}: start refuses it and stop leaves it; unmount it yourself"))
        .collect();
    match &owner {
        // Another directory's subhost of this NAME: its records and staged
        // layers are that one's, and this one is told of it.
        Ok(state::Owner::Other(other)) => problems.push(state::in_use_note(name, other)),
        Ok(_) => {
            left.extend(state::bad_records_among(name, |p| host.record_is_file(p)));
            if host.record_there(&records.cgroup()) {
                let parent = cfg.as_ref().ok().and_then(|c| c.cgroup_parent.as_deref());
                left.extend(cgroup::recorded(name, parent).problems);
            }
            let staging = mounts::staging_dir(name);
            let staged = host.run_mounts.iter().any(|e| e.is_at_or_below(&staging));
            if staged || host.record_there(&staging) {
                if let Some(s) = mounts::staged_leftover(&staging, &host.run_mounts) {
                    left.push(format!("{s}: `subhost-launch stop {name}` clears it"));
                }
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
    let run_dir = std::path::Path::new(crate::run::RUN_DIR);
    let mut published = match other {
        None if host.record_there(&records.published()) => {
            crate::publish::read(run_dir, name).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    problems.extend(crate::publish::forwarding_off_for(&published));
    // The host's loopback is served by the forwarder: what its record
    // holds is published too, while it runs.
    if let Some(f) = (other.is_none() && host.record_there(&records.forward()))
        .then(|| crate::forward::status(run_dir, name))
        .flatten()
    {
        match f.running {
            true => published.extend(f.forwards.iter().map(|fwd| crate::publish::Published {
                proto: fwd.proto,
                host_address: Some(fwd.listen.ip()),
                host_port: fwd.listen.port(),
                port: fwd.target.port(),
                address: fwd.target.ip(),
            })),
            false => problems.push(format!(
                "its port forwarder (pid {}) is gone, so the host's loopback does not reach \
                 its published ports: `subhost-launch stop {name}` and start it again",
                f.pid
            )),
        }
    }
    if !published.is_empty() && !facts.netns {
        problems.push(format!(
            "nftables chain inet {} {} is left without a netns: `subhost-launch stop {name}` \
             removes it",
            crate::publish::TABLE,
            crate::publish::chain(name)
        ));
    }
    // Said, but the state stays: a wake plugs them back in.
    if let (true, Ok(c)) = (facts.netns, &cfg) {
        let links = c.links(name);
        // The masters were read with the cables; only the flags are new.
        let look = |host_if: &str| {
            let flags = procfs::read(&Path::new("/sys/class/net").join(host_if).join("flags"));
            let master = match cables.iter().position(|c| c.host == host_if && c.present) {
                Some(i) => masters[i].clone(),
                None => netns::master_of(host_if),
            };
            Some((flags.ok()?, master))
        };
        let plugs = netns::unplugged_with(&links, look);
        problems.extend(plugs.iter().map(|p| p.problem(name)));
    }
    let root = match (live, &cfg) {
        (Some(m), _) if m.fs_type == "overlay" => Some("overlay"),
        (Some(_), _) => Some("rbind"),
        (None, Ok(c)) if c.lower.is_empty() => Some("rbind"),
        (None, Ok(_)) => Some("overlay"),
        (None, Err(_)) => None,
    };
    let (pid, uptime) = match facts.init {
        InitFact::Verified(id) | InitFact::Unrecorded(id) => (
            Some(id.pid),
            host.boot_clock().and_then(|now| state::uptime_at(id, now)),
        ),
        _ => (None, None),
    };
    // A running init's filter lets through what `start` allowed then, not
    // what the config says by now.
    let applied = match facts.init {
        InitFact::Verified(id) if host.record_there(&records.applied()) => state::applied(name, id),
        _ => None,
    };
    // Its /proc status, read once for the checks and the fields below.
    let init_status = match (pid, init_status) {
        (Some(_), Some(s)) => Some(s),
        (Some(pid), None) => procfs::status(pid).ok(),
        (None, _) => None,
    };
    let usage = match other {
        // A hibernating subhost's kept cgroup is empty; what it still
        // shows charged (page cache) is not use.
        None if state != State::Hibernating => cfg.as_ref().ok().and_then(|c| usage(name, c)),
        _ => None,
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
        Some(_) => init_status.as_deref().and_then(init_caps),
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
    let declared = cfg.as_ref().map(|c| c.devices.clone()).unwrap_or_default();
    warnings.extend(crate::cgroup::devices::warnings(&declared));
    // A running init's own state, else what the config asks for.
    let seccomp = match pid {
        Some(_) => init_status.as_deref().and_then(procfs::seccomp),
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
        base: cfg
            .as_ref()
            .ok()
            .and_then(|c| c.lower.iter().find_map(|l| host.base_of(&layout.base, l))),
        cables,
        published,
        memory: usage.as_ref().and_then(|u| u.memory_current),
        pids: usage.and_then(|u| u.pids_current),
        services: pid.and_then(crate::services::read).unwrap_or_default(),
        activation: host
            .record_there(&crate::activator::record_path(name))
            .then(|| crate::activator::status(name))
            .flatten(),
        caps: caps.iter().map(|c| c.to_string()).collect(),
        seccomp,
        syscalls_allow: match applied {
            Some(a) => a.syscalls_allow,
            None => cfg
                .as_ref()
                .map(|c| c.syscalls_allow.clone())
                .unwrap_or_default(),
        },
        devices: crate::cgroup::devices::describe(&declared),
        warnings,
        userns,
        problems,
    }
}

/// The bounding set of a running init, from its /proc status.
fn init_caps(status: &str) -> Option<Vec<caps::Capability>> {
    let mask = procfs::capbnd(status)?;
    let mut set: Vec<caps::Capability> = caps::all()
        .into_iter()
        .filter(|c| c.index() < 64 && mask & (1u64 << c.index()) != 0)
        .collect();
    set.sort_by_key(|c| c.index());
    Some(set)
}

/// How long `list` waits for a start in progress to record its init.
const START_RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the init record of `name` says, checked against the kernel
/// (`ns`: the device and inode of its netns, if there is one); with the
/// verified init's /proc status, read on the way.
fn init_fact(
    name: &str,
    host: &Host,
    ns: Option<(u64, u64)>,
    inits: &Inits,
) -> (InitFact, Option<String>) {
    let rec = match host.record_there(&crate::run::of(name).init()) {
        true => state::init_record(name),
        false => None,
    };
    if let Some(rec) = rec {
        if let Some(status) = state::init_status(rec, || ns) {
            return (InitFact::Verified(rec), Some(status));
        }
    }
    // The record is only a hint: a crash or a cleaned /run can lose it
    // while the init runs on.
    if let Some(id) = ns.and_then(|ns| inits.in_netns(ns)) {
        // A start records its init only after forking it: while it still
        // holds the lock, the record is on its way, not lost. Waited for,
        // so that `running` always comes with the record callers read.
        state::wait_unlocked(name, START_RECORD_WAIT);
        if let Some(id) = state::running_init(name) {
            return (InitFact::Verified(id), None);
        }
        return (InitFact::Unrecorded(id), None);
    }
    let Some(rec) = rec else {
        return (InitFact::None, None);
    };
    let fact = match state::ProcId::of(rec.pid) {
        // Gone, or a zombie: either way it has exited.
        Err(_) => InitFact::Exited,
        // Same start time: the very process recorded, not a recycled PID.
        Ok(id) if id == rec && procfs::nspid_of(rec.pid).last() == Some(&1) => {
            InitFact::OutsideNetns(rec.pid)
        }
        Ok(_) => InitFact::Stale(rec.pid),
    };
    (fact, None)
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
    /// The init in the netns of device and inode `ns`.
    fn in_netns(&self, ns: (u64, u64)) -> Option<state::ProcId> {
        let pids = self.scan().get(&ns)?;
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

/// The cables of the subhost, and the bridge each host end is in now
/// (`None` when absent or in none).
fn cables(layout: &Layout, cfg: Option<&Config>, h: &Host) -> (Vec<Cable>, Vec<Option<String>>) {
    let master = |host: &str| netns::master_of(host);
    let cables: Vec<Cable> = match cfg {
        Some(cfg) => cfg
            .bridges
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let host = layout.host_if(i);
                let present = h.link_present(&host);
                let bridge = if present {
                    master(&host)
                } else {
                    c.bridge.clone()
                };
                Cable {
                    bridge,
                    mac: c.mac.map(|m| netns::mac_string(&m)),
                    present,
                    host,
                    addresses: Vec::new(),
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
                addresses: Vec::new(),
            })
            .collect(),
    };
    let masters = cables
        .iter()
        .map(|c| c.bridge.clone().filter(|_| c.present))
        .collect();
    (cables, masters)
}

/// Fills in what each cable's inner end (`ethI` of host end `NAMEI`) has
/// now in netns `name`.
fn addresses(name: &str, cables: &mut [Cable]) {
    let inner: Vec<String> = cables
        .iter()
        .map(|c| match c.host.strip_prefix(name) {
            Some(i) => format!("eth{i}"),
            None => String::new(),
        })
        .collect();
    if inner.is_empty() {
        return;
    }
    if let Some(found) = netns::read_addresses(name, &inner) {
        for (c, addrs) in cables.iter_mut().zip(found) {
            c.addresses = addrs.iter().map(ToString::to_string).collect();
        }
    }
}

fn usage(name: &str, cfg: &Config) -> Option<cgroup::Usage> {
    let limited = cfg.memory_max.is_some() || cfg.pids_max.is_some() || cfg.cpu_max.is_some();
    if !limited {
        return None;
    }
    cgroup::open(name, cfg.cgroup_parent.as_deref()).map(|c| c.usage())
}

#[cfg(test)]
mod tests;
