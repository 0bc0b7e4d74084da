//! Stopping subhosts: end their processes, delete their netns and cables,
//! unmount their roots. Idempotent; never deletes data.
//!
//! Several subhosts are stopped together, step by step: every init is
//! told to stop before any is waited for, and every netns is deleted
//! before the kernel's cleanup of their cables is waited for once, so a
//! stop of many takes about as long as the slowest one, not their sum.
//! Each subhost still has its own lock, its own `Outcome`, and every
//! step of its own runs even when a step of it or of another one failed.
//!
//! What is done to each subhost is read first, under its lock, as a
//! `Plan`: `--dry-run` prints that plan, and `run` runs it.

use std::fmt::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use log::{info, warn};
use nix::sys::signal::Signal;

use crate::config::{self, Config};
use crate::layout::Layout;
use crate::{cgroup, detached, forward, join, mounts, netns, publish, run, state};

/// Extra time the init gets beyond its STOP_TIMEOUT: it gives the others
/// that much grace, and needs a moment to exit after them.
const TERM_SLACK: Duration = Duration::from_secs(2);
/// How long SIGKILL is given to take a process down.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// One subhost being stopped.
pub struct Stopping {
    layout: Layout,
    grace: u32,
    halt: Option<Vec<String>>,
    /// How many supervised services it has: stopped before HALT.
    services: usize,
    cgroup_parent: Option<String>,
    lock: Option<state::Lock>,
    /// Something was set up: the outcome is "stopped", not "already".
    did: bool,
    failed: Vec<anyhow::Error>,
    /// What is done to it, read once its lock is held.
    plan: Plan,
    console: Option<(OwnedFd, detached::Console)>,
}

impl Stopping {
    pub fn name(&self) -> &str {
        &self.layout.name
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// What stopping it would do, as the host shows it now (without its
    /// lock: for `--dry-run`).
    pub fn plan(&self) -> Plan {
        Plan::read(self)
    }

    /// The init being stopped.
    fn init(&self) -> Option<state::ProcId> {
        self.plan.init.as_ref().map(|i| i.id)
    }
}

/// What `stop` does to one subhost, in the order its steps run (each step
/// of every subhost's plan before the next step of any): read from the
/// host, printed by `--dry-run`, run by `stop`. The cgroup, netns and
/// mount steps say what they find when planned; each looks again when it
/// runs, since stopping the init can take pieces down before them.
#[derive(Debug, Default)]
pub struct Plan {
    init: Option<InitStop>,
    cgroup: cgroup::Recorded,
    netns: NetnsStep,
    /// What its nftables chain publishes now.
    published: Vec<publish::Published>,
    /// Its port forwarder's record, if there is one.
    forwarder: Option<forward::Status>,
    /// `live` is mounted: unmounted with everything under it.
    live_mounted: bool,
    /// With an image: the loop devices that hold it now.
    image: Option<Vec<String>>,
}

/// A running init and how it is stopped: the stop commands inside, then
/// SIGTERM, then after its grace SIGKILL.
#[derive(Debug)]
struct InitStop {
    id: state::ProcId,
    /// Found in its cgroup, its record lost (a cleaner emptied the run
    /// dir while it ran): recorded again first, so that it is stopped as
    /// gracefully as with its record.
    unrecorded: bool,
    /// SERVICE_<name>s, stopped by the init in reverse first.
    services: usize,
    /// START stopped in reverse, then HALT, with where their output goes.
    halt: Option<(Vec<String>, String)>,
    /// STOP_TIMEOUT.
    grace: u32,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum NetnsStep {
    /// Deleted; the kernel then removes these cables.
    Delete { cables: Vec<String> },
    /// An empty file left by an interrupted start: removed.
    RemoveEmpty,
    #[default]
    None,
}

impl Plan {
    /// The plan for `t` as the host shows it now.
    fn read(t: &Stopping) -> Plan {
        let name = t.name();
        let layout = &t.layout;
        let init = state::running_init(name)
            .map(|id| (id, false))
            .or_else(|| unrecorded_init(t).map(|id| (id, true)))
            .map(|(id, unrecorded)| InitStop {
                id,
                unrecorded,
                services: t.services,
                halt: t.halt.clone().map(|argv| {
                    let out = match detached::recorded_console(name) {
                        Some(c) => format!("console {c}"),
                        None => "stderr".to_string(),
                    };
                    (argv, out)
                }),
                grace: t.grace,
            });
        let netns = if netns::exists(name) {
            NetnsStep::Delete {
                cables: netns::cables_of(name),
            }
        } else if netns::entry(name) == netns::Entry::Empty {
            NetnsStep::RemoveEmpty
        } else {
            NetnsStep::None
        };
        Plan {
            init,
            cgroup: cgroup::recorded(name, t.cgroup_parent.as_deref()),
            netns,
            published: publish::read(Path::new(run::RUN_DIR), name).unwrap_or_default(),
            forwarder: forward::status(Path::new(run::RUN_DIR), name),
            live_mounted: mounts::is_active(layout),
            image: layout
                .image_present()
                .then(|| mounts::image_devices(layout)),
        }
    }

    /// The plan as `--dry-run` shows it: shell lines for the steps, `#`
    /// lines for what is said about them.
    pub fn text(&self, layout: &Layout) -> String {
        let name = &layout.name;
        let mut out = String::new();
        match &self.init {
            Some(i) => {
                let pid = i.id.pid;
                let grace = i.grace;
                if i.unrecorded {
                    let _ = writeln!(
                        out,
                        "# no record of its init, but its cgroup holds it (PID {pid}): \
                         recorded again"
                    );
                }
                if i.services > 0 {
                    let _ = writeln!(
                        out,
                        "kill -37 {pid}   # init stops its {} services in reverse (TERM, after {grace}s KILL)",
                        i.services
                    );
                }
                if let Some((halt, to)) = &i.halt {
                    let _ = writeln!(
                        out,
                        "# START stopped in reverse, then HALT: inside, as `enter` runs a command,"
                    );
                    let _ = writeln!(out, "# killed after {grace}s, output to {to}");
                    let _ = writeln!(out, "{}", detached::shell_words(halt));
                }
                let _ = writeln!(
                    out,
                    "kill -TERM {pid}   # init; after {grace}s + 2s: kill -KILL {pid}"
                );
            }
            None => {
                let _ = writeln!(out, "# no init running");
            }
        }
        for p in &self.cgroup.problems {
            let _ = writeln!(out, "# {p}");
        }
        let dirs = &self.cgroup.dirs;
        if !dirs.is_empty() {
            // As Cgroup::kill_all and Cgroup::remove log them.
            let all: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            let _ = writeln!(out, "kill every process in {}", all.join(" "));
            for d in dirs.iter().rev() {
                let _ = writeln!(out, "rmdir {}", d.display());
            }
        }
        if let Some(f) = &self.forwarder {
            let _ = match f.running {
                true => writeln!(out, "kill -KILL {}  # its port forwarder", f.pid),
                false => writeln!(out, "# its port forwarder (pid {}) is gone", f.pid),
            };
            let record = run::of(name).forward();
            let _ = writeln!(out, "rm {}", record.display());
        }
        if !self.published.is_empty() {
            let _ = writeln!(
                out,
                "# one batch: its jump and hairpin rules deleted by handle, then its chain"
            );
            let _ = writeln!(
                out,
                "nft delete chain inet {} {}",
                publish::TABLE,
                publish::chain(name)
            );
        }
        match &self.netns {
            NetnsStep::Delete { cables } => {
                let _ = writeln!(out, "ip netns del {name}");
                if !cables.is_empty() {
                    let _ = writeln!(out, "# wait until gone: {}", cables.join(" "));
                }
            }
            NetnsStep::RemoveEmpty => {
                let _ = writeln!(out, "{}", netns::RemoveEmpty(name));
            }
            NetnsStep::None => {
                let _ = writeln!(out, "# no netns {name}");
            }
        }
        if self.live_mounted {
            let _ = writeln!(out, "umount -R {}", layout.live().display());
        }
        if let Some(devs) = &self.image {
            let _ = writeln!(
                out,
                "umount {}   # if mounted; detaches the loop device",
                layout.mnt().display()
            );
            // Another mount namespace's copy of the mount, or an open of
            // the device, keeps it bound after the umount.
            let devs = if devs.is_empty() {
                String::new()
            } else {
                format!(" (now: {})", devs.join(" "))
            };
            let _ = writeln!(
                out,
                "# wait until detached: losetup -j {} shows no device{devs}",
                layout.image().display()
            );
        }
        out
    }
}

/// How one subhost's stop ended, in the form its outcome line takes.
pub enum Outcome {
    /// Everything of it is down; `did` when something was set up.
    Stopped { name: String, did: bool },
    /// Its lock could not be had, or it is another directory's: nothing
    /// was done, for these reasons.
    Untouched { failed: Vec<anyhow::Error> },
    /// Some steps failed; the others ran.
    Partly {
        name: String,
        failed: Vec<anyhow::Error>,
    },
}

/// Each of `names` ready to be stopped, or why it cannot be, in their
/// order. A NAME given twice is opened once: once is what was meant (a
/// second lock of it would wait for the first).
pub fn open_all(base: &Path, names: &[String]) -> Vec<Result<Stopping>> {
    names
        .iter()
        .enumerate()
        .filter(|&(i, name)| !names[..i].contains(name))
        .map(|(_, name)| open(base, name))
        .collect()
}

/// Stops `targets`, each step of every one before the next step of any;
/// returns their outcomes, those whose lock was had first.
pub fn run(mut targets: Vec<Stopping>) -> Vec<Outcome> {
    // Taken in name order: two stops of overlapping sets, given in other
    // orders, then never each hold a lock the other waits for.
    let mut order: Vec<usize> = (0..targets.len()).collect();
    order.sort_by(|&a, &b| targets[a].name().cmp(targets[b].name()));
    for i in order {
        let t = &mut targets[i];
        let wait = Duration::from_secs(t.grace.into()) + TERM_SLACK;
        match state::lock(t.name(), wait) {
            Ok(lock) => t.lock = Some(lock),
            Err(e) => t.failed.push(e),
        }
    }
    for t in &mut targets {
        let Some(lock) = &t.lock else { continue };
        // Set up under NAME by another directory's subhost: not this one's
        // to stop. Its lock is let go untouched.
        let refusal = match lock.owner(&t.layout.dir) {
            Ok(state::Owner::Ours | state::Owner::Unrecorded) => None,
            Ok(state::Owner::Other(other)) => Some(state::in_use(t.name(), &other, "stop")),
            Err(e) => Some(e.context(format!("cannot tell whose subhost {} is", t.name()))),
        };
        if let Some(e) = refusal {
            t.failed.push(e);
            t.lock = None;
            continue;
        }
        // A record that is no regular file is never read (it could block
        // or point anywhere); the stop goes on without it and removes it
        // with the others.
        for bad in state::bad_records(t.name()) {
            warn!("subhost {}: {bad}", t.name());
        }
    }
    // A subhost whose lock could not be had is not touched at all.
    let (mut held, busy): (Vec<Stopping>, Vec<Stopping>) =
        targets.into_iter().partition(|t| t.lock.is_some());
    for t in &mut held {
        // Socket activation: nothing may wake it while it is stopped, and
        // nothing listens for it after.
        match crate::activator::release(t.name()) {
            Ok(released) => t.did |= released,
            Err(e) => t.failed.push(e.context("cannot close its LISTEN sockets")),
        }
        t.plan = Plan::read(t);
    }
    stop_inits(&mut held);
    for t in &mut held {
        state::clear_init(t.name(), None);
        detached::clear_console(t.name());
    }
    release_cgroups(&mut held);
    remove_published(&mut held);
    delete_netns(&mut held);
    let layouts: Vec<&Layout> = held.iter().map(|t| &t.layout).collect();
    let unmounted = mounts::deactivate_all(&layouts);
    let mut unmounted_ok = Vec::new();
    for (i, (t, r)) in held.iter_mut().zip(unmounted).enumerate() {
        match r {
            Ok(d) => {
                t.did |= d;
                unmounted_ok.push(i);
            }
            Err(e) => t.failed.push(e),
        }
    }
    // Only then is the image free for the next start or for a host tool
    // (one still mounted here has its failure told already).
    let layouts: Vec<&Layout> = unmounted_ok.iter().map(|&i| &held[i].layout).collect();
    let released = mounts::wait_images_released(&layouts, KILL_WAIT);
    for (i, r) in unmounted_ok.into_iter().zip(released) {
        if let Err(e) = r {
            held[i].failed.push(e);
        }
    }
    for t in &mut held {
        // What removing the records could not remove (a directory).
        for bad in state::bad_records(t.name()) {
            t.failed.push(anyhow!("{bad}"));
        }
    }
    held.into_iter().chain(busy).map(finish).collect()
}

/// Puts a running subhost back to sleep, as the activator does with an
/// idle one: its processes end as with `stop` (services, START's stops,
/// HALT, SIGTERM, the grace, SIGKILL) and its cgroup goes, but its mounts,
/// netns, cables and published ports stay: it hibernates.
pub fn hibernate(base: &Path, name: &str) -> Result<()> {
    let mut t = open(base, name)?;
    let wait = Duration::from_secs(t.grace.into()) + TERM_SLACK;
    let lock = state::lock(name, wait)?;
    if let state::Owner::Other(other) = lock.owner(&t.layout.dir)? {
        return Err(state::in_use(name, &other, "hibernate"));
    }
    t.lock = Some(lock);
    t.plan = Plan::read(&t);
    if t.plan.init.is_none() {
        bail!("subhost {name} is not running: nothing to put to sleep");
    }
    let mut targets = vec![t];
    stop_inits(&mut targets);
    state::clear_init(name, None);
    detached::clear_console(name);
    release_cgroups(&mut targets);
    match targets
        .pop()
        .map(|t| t.failed)
        .unwrap_or_default()
        .into_iter()
        .next()
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The subhost `name` with its config: a broken config must not keep it
/// from being stopped. A NAME with no directory is an error (a typo must
/// not read as success), unless something of it is still set up on the
/// host: then that is cleaned up.
fn open(base: &Path, name: &str) -> Result<Stopping> {
    let layout = Layout::new(base, name)?;
    if !layout.dir.is_dir() {
        if let Ok(state::Owner::Other(other)) = state::owner(name, &layout.dir) {
            return Err(state::in_use(name, &other, "stop"));
        }
        if !leftovers(name) {
            bail!(
                "no subhost {name}: {} is not a directory (`subhost-launch list` shows the \
                 subhosts in {})",
                layout.dir.display(),
                base.display()
            );
        }
        warn!(
            "{} is gone, but netns, cables or records of {name} are left: removing them",
            layout.dir.display()
        );
    }
    let cfg = match config::load(&layout.config(), name, base) {
        Ok(cfg) => cfg,
        Err(e) if layout.dir.is_dir() => {
            warn!("{e:#}; stopping with the default grace period and no HALT");
            Config::defaults(name)
        }
        Err(_) => Config::defaults(name),
    };
    Ok(Stopping {
        layout,
        grace: cfg.stop_timeout,
        halt: detached::halt_command(&cfg),
        services: cfg.services.len(),
        cgroup_parent: cfg.cgroup_parent.clone(),
        lock: None,
        did: false,
        failed: Vec::new(),
        plan: Plan::default(),
        console: None,
    })
}

/// Whether anything of subhost `name` is set up on the host, whatever its
/// directory says.
fn leftovers(name: &str) -> bool {
    netns::path(name).symlink_metadata().is_ok()
        || state::init_record(name).is_some()
        || state::recorded_cgroup(name).is_some()
        || !netns::cables_of(name).is_empty()
        || mounts::staging_dir(name).symlink_metadata().is_ok()
}

/// The outcome of `t`. A stopped subhost's lock goes with its records; a
/// failed one's is let go, its records kept to be looked at.
fn finish(t: Stopping) -> Outcome {
    let name = t.layout.name.clone();
    if !t.failed.is_empty() {
        return match t.lock {
            // Nothing was done: the failures say why.
            None => Outcome::Untouched { failed: t.failed },
            Some(_) => Outcome::Partly {
                name,
                failed: t.failed,
            },
        };
    }
    if let Some(lock) = t.lock {
        lock.unlock_and_forget(&name);
    }
    Outcome::Stopped { name, did: t.did }
}

/// Runs every running subhost's stop commands, then signals every init
/// and waits for them together: each gets its own STOP_TIMEOUT + 2 s
/// before SIGKILL, counted from the same moment.
fn stop_inits(targets: &mut [Stopping]) {
    for t in targets.iter_mut() {
        if let Some(InitStop {
            id,
            unrecorded: true,
            ..
        }) = t.plan.init
        {
            let name = t.name();
            info!(
                "{name}: no record of its init, but its cgroup holds it (PID {}): recording it again",
                id.pid
            );
            if let Err(e) = state::record_init(name, id) {
                // Not stopped through its record then: its cgroup's
                // release takes it down.
                warn!("{e:#}");
                t.plan.init = None;
            }
        }
        if let Some(init) = t.init() {
            t.did = true;
            t.console = detached::reopen_console(t.name(), init.pid);
            if let Some((fd, _)) = &t.console {
                detached::note(fd, &format!("subhost {}: stopping", t.name()));
            }
        }
    }
    stop_services(targets);
    run_halts(targets);
    let mut waiting: Vec<(usize, state::PidFd, Instant, bool)> = Vec::new();
    for (i, t) in targets.iter_mut().enumerate() {
        let Some(InitStop { id, grace, .. }) = t.plan.init else {
            continue;
        };
        match term(t.name(), id) {
            Ok(Some(pidfd)) => {
                let deadline = Instant::now() + Duration::from_secs(grace.into()) + TERM_SLACK;
                waiting.push((i, pidfd, deadline, false));
            }
            Ok(None) => {}
            Err(e) => t.failed.push(e),
        }
    }
    while !waiting.is_empty() {
        let now = Instant::now();
        let next = waiting.iter().map(|w| w.2).min().expect("not empty");
        let exited = wait_any(&waiting, next.saturating_duration_since(now));
        let now = Instant::now();
        let mut still = Vec::new();
        for (k, (i, pidfd, deadline, killed)) in waiting.into_iter().enumerate() {
            let t = &mut targets[i];
            let pid = t.init().map_or(0, |p| p.pid);
            if exited.contains(&k) {
                continue;
            }
            if now < deadline {
                still.push((i, pidfd, deadline, killed));
            } else if killed {
                t.failed
                    .push(anyhow!("init of {} (PID {pid}) survived SIGKILL", t.name()));
            } else {
                let grace = t.plan.init.as_ref().map_or(t.grace, |i| i.grace);
                warn!("{}", still_there(t.name(), pid, grace));
                let kill = crate::logging::step(format_args!("kill -KILL {pid}"), || {
                    pidfd.signal(Signal::SIGKILL)
                });
                match kill {
                    Ok(()) => still.push((i, pidfd, now + KILL_WAIT, true)),
                    Err(e) => t.failed.push(anyhow!(e).context("cannot kill init")),
                }
            }
        }
        waiting = still;
    }
    for t in targets.iter() {
        if let (Some((fd, _)), Some(_)) = (&t.console, t.init()) {
            detached::note(fd, &format!("subhost {}: stopped", t.name()));
        }
    }
}

/// The init of a subhost whose init record is lost, found in its cgroup.
fn unrecorded_init(t: &Stopping) -> Option<state::ProcId> {
    let name = t.name();
    let cg = state::recorded_cgroup(name)
        .and_then(|dirs| cgroup::open_dirs(&dirs))
        .or_else(|| cgroup::open(name, t.cgroup_parent.as_deref()))?;
    let pids = cg.pids().ok()?;
    state::find_init(name, &pids, &t.layout.live())
}

/// SIGTERM to the init `init` of `name`, through a pidfd that is returned
/// to wait on; `None` when it is gone already.
fn term(name: &str, init: state::ProcId) -> Result<Option<state::PidFd>> {
    let pidfd = match state::PidFd::open(init.pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e).context("cannot open a pidfd for init"),
    };
    // The pidfd pins the process; check again that it is still our init so a
    // PID recycled in between is never signalled.
    if state::running_init(name) != Some(init) {
        return Ok(None);
    }
    crate::logging::step(format_args!("kill -TERM {}", init.pid), || {
        pidfd.signal(Signal::SIGTERM)
    })
    .context("cannot signal init")?;
    Ok(Some(pidfd))
}

/// Polls every pidfd in `waiting` once, for up to `timeout`; returns the
/// positions of those whose process has exited.
fn wait_any(waiting: &[(usize, state::PidFd, Instant, bool)], timeout: Duration) -> Vec<usize> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let mut fds: Vec<PollFd> = waiting
        .iter()
        .map(|w| PollFd::new(w.1.as_fd(), PollFlags::POLLIN))
        .collect();
    match poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(n) if n > 0 => fds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(k, _)| k)
            .collect(),
        _ => Vec::new(),
    }
}

/// Has every init with services stop them (last declared first) and waits
/// for them, before any HALT runs: HALT may expect them down.
/// Every init is asked first, then all are waited for together; the init
/// gives each service the grace period in turn, so a subhost is waited
/// for that long per service, and a little more. Polled: the launcher has
/// no other way to hear of the init's progress.
fn stop_services(targets: &[Stopping]) {
    let mut waiting: Vec<(i32, Instant)> = Vec::new();
    for t in targets {
        let Some(init) = t.init().filter(|_| t.services > 0) else {
            continue;
        };
        if crate::services::ask_stop(t.name(), init) {
            let each = Duration::from_secs(t.grace.into());
            waiting.push((
                init.pid,
                Instant::now() + each * t.services as u32 + TERM_SLACK,
            ));
        }
    }
    while !waiting.is_empty() {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        waiting.retain(|&(pid, until)| now < until && crate::services::any_running(pid));
    }
}

/// Runs the stop commands of every running subhost that has them, all at
/// once: each in a worker process of its own, since each blocks for up to
/// its STOP_TIMEOUT. One subhost alone needs no worker.
fn run_halts(targets: &[Stopping]) {
    let with_halt: Vec<&Stopping> = targets
        .iter()
        .filter(|t| t.plan.init.as_ref().is_some_and(|i| i.halt.is_some()))
        .collect();
    if let [t] = with_halt[..] {
        run_halt(t);
        return;
    }
    let mut workers = Vec::new();
    for t in with_halt {
        // SAFETY: the launcher is single-threaded; the worker runs the
        // halt and exits without returning into the caller's state.
        match unsafe {
            crate::process::worker(|| {
                run_halt(t);
                0
            })
        } {
            Ok(child) => workers.push(child),
            Err(e) => {
                warn!(
                    "cannot fork for the stop commands of {}: {e}; running them here",
                    t.name()
                );
                run_halt(t);
            }
        }
    }
    for w in workers {
        let _ = nix::sys::wait::waitpid(w, None);
    }
}

/// Runs the stop commands (START stopped in reverse, then HALT) inside,
/// as `enter` would, for at most STOP_TIMEOUT seconds; their output goes
/// to the console, or to our stderr when there is none. A failure is
/// reported and the stop goes on: the TERM/KILL sequence comes next either
/// way.
fn run_halt(t: &Stopping) {
    let Some(InitStop {
        id: init,
        halt: Some((argv, _)),
        grace,
        ..
    }) = &t.plan.init
    else {
        return;
    };
    let (init, grace) = (*init, *grace);
    let name = t.name();
    let console = t.console.as_ref().map(|(fd, _)| fd);
    let run = || -> Result<i32> {
        let null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
        let stderr = std::io::stderr();
        let out = match console {
            Some(fd) => fd.as_fd(),
            None => stderr.as_fd(),
        };
        let stdio = join::Stdio {
            stdin: null.as_fd(),
            stdout: out,
            stderr: out,
        };
        info!("stopping {name}: running HALT/START stop inside (up to {grace}s)");
        join::run_inside(name, init, argv, stdio, Duration::from_secs(grace.into()))
    };
    match run() {
        Ok(0) => {}
        Ok(137) => warn!("the stop commands of {name} were killed after {grace}s (STOP_TIMEOUT)"),
        Ok(code) => warn!("the stop commands of {name} exited with status {code}"),
        Err(e) => warn!("cannot run the stop commands of {name}: {e:#}"),
    }
}

/// Whatever is still in each subhost's cgroup goes now: processes the init
/// could not take down, an init the record lost track of, or one a killed
/// `start` left behind.
fn release_cgroups(targets: &mut [Stopping]) {
    for t in targets {
        let name = &t.layout.name;
        // A directory the record names but the launcher never makes for
        // this subhost is not touched, and the record stays to be looked at.
        let rec = cgroup::recorded(name, t.cgroup_parent.as_deref());
        let trusted = rec.problems.is_empty();
        t.failed
            .extend(rec.problems.into_iter().map(|p| anyhow!(p)));
        let cg =
            cgroup::open_dirs(&rec.dirs).or_else(|| cgroup::open(name, t.cgroup_parent.as_deref()));
        let Some(cg) = cg else {
            let parent = t.cgroup_parent.as_deref();
            match cgroup::remove_empty_parents(name, parent, &rec.dirs) {
                Ok(()) if trusted => state::clear_cgroup(name),
                Ok(()) => {}
                Err(e) => t.failed.push(e),
            }
            continue;
        };
        t.did = true;
        match cg.kill_all(KILL_WAIT).and_then(|()| cg.remove()) {
            Ok(()) if trusted => state::clear_cgroup(name),
            Ok(()) => {}
            Err(e) => t.failed.push(e),
        }
    }
}

/// Removes every subhost's rules from the host's nftables table, before
/// the netns they lead into goes.
fn remove_published(targets: &mut [Stopping]) {
    for t in targets {
        // Before the netns goes: the forwarder holds it open.
        match forward::stop(Path::new(run::RUN_DIR), t.name()) {
            Ok(()) => t.did |= t.plan.forwarder.is_some(),
            Err(e) => t.failed.push(e),
        }
        match publish::remove(Path::new(run::RUN_DIR), t.name()) {
            Ok(d) => t.did |= d,
            Err(e) => t.failed.push(e),
        }
    }
}

/// Deletes every netns, then waits once for the kernel to remove all their
/// cables.
fn delete_netns(targets: &mut [Stopping]) {
    let mut issued = Vec::new();
    for (i, t) in targets.iter_mut().enumerate() {
        match netns::begin_delete(t.name()) {
            Ok(d) => issued.push((i, d)),
            Err(e) => t.failed.push(e),
        }
    }
    let (which, deletions): (Vec<usize>, Vec<netns::Deleting>) = issued.into_iter().unzip();
    for (i, r) in which
        .into_iter()
        .zip(netns::finish_deletes(deletions, KILL_WAIT))
    {
        match r {
            Ok(d) => targets[i].did |= d,
            Err(e) => targets[i].failed.push(e),
        }
    }
}

/// How long past STOP_TIMEOUT the init gets to finish its own shutdown.
const KILL_AFTER_GRACE: Duration = TERM_SLACK;

/// The warning before SIGKILL, naming the time really waited.
fn still_there(name: &str, pid: i32, grace: u32) -> String {
    let waited = Duration::from_secs(grace.into()) + KILL_AFTER_GRACE;
    format!(
        "init of {name} (PID {pid}) still there {}s after SIGTERM (STOP_TIMEOUT {grace}s + {}s): killing it",
        waited.as_secs(),
        KILL_AFTER_GRACE.as_secs()
    )
}

#[cfg(test)]
mod tests;
