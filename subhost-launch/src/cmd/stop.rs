//! `stop`: end subhosts' processes, delete their netns and cables, unmount
//! their roots. Idempotent; never deletes data.
//!
//! Several subhosts are stopped together, step by step: every init is
//! told to stop before any is waited for, and every netns is deleted
//! before the kernel's cleanup of their cables is waited for once, so a
//! stop of many takes about as long as the slowest one, not their sum.
//! Each subhost still has its own lock, its own outcome line, and every
//! step of its own runs even when a step of it or of another one failed.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use log::{info, warn};
use nix::sys::signal::Signal;

use crate::config::{self, Config};
use crate::layout::Layout;
use crate::{cgroup, detached, join, mounts, netns, outcome, state, status};

/// Which subhosts `stop` is for.
pub enum Which {
    /// These, in this order (the order of the outcome lines).
    Names(Vec<String>),
    /// Every subhost `list` shows that is not stopped.
    All,
}

/// Extra time the init gets beyond its STOP_TIMEOUT: it gives the others
/// that much grace, and needs a moment to exit after them.
const TERM_SLACK: Duration = Duration::from_secs(2);
/// How long SIGKILL is given to take a process down.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// One subhost being stopped.
struct Target {
    layout: Layout,
    grace: u32,
    halt: Option<Vec<String>>,
    cgroup_parent: Option<String>,
    lock: Option<state::Lock>,
    /// Something was set up: the outcome is "stopped", not "already".
    did: bool,
    failed: Vec<anyhow::Error>,
    init: Option<state::ProcId>,
    console: Option<(OwnedFd, detached::Console)>,
}

impl Target {
    fn name(&self) -> &str {
        &self.layout.name
    }
}

/// Stops `which`; prints one outcome line per subhost and returns the exit
/// status: 0 when every one is stopped, 1 when any is not (those are
/// named, the others are stopped all the same).
pub fn stop(base: &Path, which: Which, dry_run: bool) -> Result<i32> {
    let names = match which {
        Which::Names(names) => names,
        Which::All => {
            let names = status::not_stopped(base)?;
            if names.is_empty() {
                outcome::say(&format!(
                    "no subhost in {} is running, hibernating or broken: nothing to stop",
                    base.display()
                ));
                return Ok(0);
            }
            names
        }
    };
    let mut status = 0;
    let mut targets = Vec::new();
    for (i, name) in names.iter().enumerate() {
        // Named twice: once is what was meant (a second lock of it would
        // wait for the first).
        if names[..i].contains(name) {
            continue;
        }
        match open(base, name) {
            Ok(t) => targets.push(t),
            Err(e) => {
                outcome::fail(&e);
                status = 1;
            }
        }
    }
    if dry_run {
        let several = targets.len() > 1;
        for t in &targets {
            if several {
                println!("# subhost {}", t.name());
            }
            print_stop_plan(
                &t.layout,
                t.grace,
                t.halt.as_deref(),
                t.cgroup_parent.as_deref(),
            );
        }
        return Ok(status);
    }
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
    let (mut held, busy): (Vec<Target>, Vec<Target>) =
        targets.into_iter().partition(|t| t.lock.is_some());
    stop_inits(&mut held);
    for t in &mut held {
        state::clear_init(t.name(), None);
        detached::clear_console(t.name());
    }
    release_cgroups(&mut held);
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
    for t in held.into_iter().chain(busy) {
        if !report(t) {
            status = 1;
        }
    }
    Ok(status)
}

/// The subhost `name` with its config: a broken config must not keep it
/// from being stopped. A NAME with no directory is an error (a typo must
/// not read as success), unless something of it is still set up on the
/// host: then that is cleaned up.
fn open(base: &Path, name: &str) -> Result<Target> {
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
    Ok(Target {
        layout,
        grace: cfg.stop_timeout,
        halt: detached::halt_command(&cfg),
        cgroup_parent: cfg.cgroup_parent.clone(),
        lock: None,
        did: false,
        failed: Vec::new(),
        init: None,
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

/// Prints the outcome of `t`; true when it is stopped.
fn report(t: Target) -> bool {
    let name = t.layout.name.clone();
    if !t.failed.is_empty() {
        let what: Vec<String> = t.failed.iter().map(|e| format!("{e:#}")).collect();
        let e = if t.lock.is_none() {
            // Nothing was done: the one failure says why.
            anyhow!("{}", what.join("; "))
        } else {
            anyhow!(
                "subhost {name} is only partly stopped: {}; fix that and run stop again",
                what.join("; ")
            )
        };
        outcome::fail(&e);
        return false;
    }
    if let Some(lock) = t.lock {
        lock.unlock_and_forget(&name);
    }
    if t.did {
        outcome::say(&format!("subhost {name}: stopped"));
    } else {
        outcome::say(&format!("subhost {name}: already stopped"));
    }
    true
}

/// Runs every running subhost's stop commands, then signals every init
/// and waits for them together: each gets its own STOP_TIMEOUT + 2 s
/// before SIGKILL, counted from the same moment.
fn stop_inits(targets: &mut [Target]) {
    for t in targets.iter_mut() {
        if let Some(init) = state::running_init(t.name()).or_else(|| unrecorded_init(t)) {
            t.did = true;
            t.init = Some(init);
            t.console = detached::reopen_console(t.name(), init.pid);
            if let Some((fd, c)) = &t.console {
                detached::note(fd, c, &format!("subhost {}: stopping", t.name()));
            }
        }
    }
    run_halts(targets);
    let mut waiting: Vec<(usize, state::PidFd, Instant, bool)> = Vec::new();
    for (i, t) in targets.iter_mut().enumerate() {
        let Some(init) = t.init else { continue };
        match term(t.name(), init) {
            Ok(Some(pidfd)) => {
                let deadline = Instant::now() + Duration::from_secs(t.grace.into()) + TERM_SLACK;
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
            let pid = t.init.map_or(0, |p| p.pid);
            if exited.contains(&k) {
                continue;
            }
            if now < deadline {
                still.push((i, pidfd, deadline, killed));
            } else if killed {
                t.failed
                    .push(anyhow!("init of {} (PID {pid}) survived SIGKILL", t.name()));
            } else {
                warn!("{}", still_there(t.name(), pid, t.grace));
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
        if let (Some((fd, c)), Some(_)) = (&t.console, t.init) {
            detached::note(fd, c, &format!("subhost {}: stopped", t.name()));
        }
    }
}

/// The init of a subhost whose init record is lost (a cleaner emptied
/// the run dir while it ran), found in its cgroup and recorded again, so
/// that it is stopped as gracefully as with its record: stop commands,
/// SIGTERM, its grace.
fn unrecorded_init(t: &Target) -> Option<state::ProcId> {
    let name = t.name();
    let cg = state::recorded_cgroup(name)
        .and_then(|dirs| cgroup::open_dirs(&dirs))
        .or_else(|| cgroup::open(name, t.cgroup_parent.as_deref()))?;
    let pids = cg.pids().ok()?;
    let init = state::find_init(name, &pids, &t.layout.live())?;
    info!(
        "{name}: no record of its init, but its cgroup holds it (PID {}): recording it again",
        init.pid
    );
    match state::record_init(name, init) {
        Ok(()) => Some(init),
        Err(e) => {
            warn!("{e:#}");
            None
        }
    }
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

/// Runs the stop commands of every running subhost that has them, all at
/// once: each in a worker process of its own, since each blocks for up to
/// its STOP_TIMEOUT. One subhost alone needs no worker.
fn run_halts(targets: &[Target]) {
    let with_halt: Vec<&Target> = targets
        .iter()
        .filter(|t| t.init.is_some() && t.halt.is_some())
        .collect();
    if let [t] = with_halt[..] {
        run_halt(t);
        return;
    }
    let mut workers = Vec::new();
    for t in with_halt {
        // SAFETY: the launcher is single-threaded; the worker runs the
        // halt and _exits without returning into the caller's state.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                run_halt(t);
                // SAFETY: _exit skips the parent's atexit handlers and
                // destructors, which are not the worker's to run.
                unsafe { libc::_exit(0) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => workers.push(child),
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
fn run_halt(t: &Target) {
    let (Some(init), Some(argv)) = (t.init, &t.halt) else {
        return;
    };
    let name = t.name();
    let grace = t.grace;
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
fn release_cgroups(targets: &mut [Target]) {
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

/// Deletes every netns, then waits once for the kernel to remove all their
/// cables.
fn delete_netns(targets: &mut [Target]) {
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

fn print_stop_plan(layout: &Layout, grace: u32, halt: Option<&[String]>, parent: Option<&str>) {
    let name = &layout.name;
    match state::running_init(name) {
        Some(init) => {
            if let Some(halt) = halt {
                let out = match detached::recorded_console(name) {
                    Some(c) => format!("console {c}"),
                    None => "stderr".to_string(),
                };
                println!(
                    "# START stopped in reverse, then HALT: inside, as `enter` runs a command,"
                );
                println!("# killed after {grace}s, output to {out}");
                println!("{}", detached::shell_words(halt));
            }
            println!(
                "kill -TERM {0}   # init; after {grace}s + 2s: kill -KILL {0}",
                init.pid
            );
        }
        None => println!("# no init running"),
    }
    let rec = cgroup::recorded(name, parent);
    for p in &rec.problems {
        println!("# {p}");
    }
    if !rec.dirs.is_empty() {
        let dirs = rec.dirs;
        // As Cgroup::kill_all and Cgroup::remove log them.
        let all: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        println!("kill every process in {}", all.join(" "));
        for d in dirs.iter().rev() {
            println!("rmdir {}", d.display());
        }
    }
    if netns::exists(name) {
        println!("ip netns del {name}");
        let left = netns::cables_of(name);
        if !left.is_empty() {
            println!("# wait until gone: {}", left.join(" "));
        }
    } else if netns::entry(name) == netns::Entry::Empty {
        println!("{}", netns::RemoveEmpty(name));
    } else {
        println!("# no netns {name}");
    }
    if mounts::is_active(layout) {
        println!("umount -R {}", layout.live().display());
    }
    if layout.image_present() {
        println!(
            "umount {}   # if mounted; detaches the loop device",
            layout.mnt().display()
        );
        // Another mount namespace's copy of the mount, or an open of the
        // device, keeps it bound after the umount.
        let devs = mounts::image_devices(layout);
        let devs = if devs.is_empty() {
            String::new()
        } else {
            format!(" (now: {})", devs.join(" "))
        };
        println!(
            "# wait until detached: losetup -j {} shows no device{devs}",
            layout.image().display()
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kill_warning_says_how_long_was_waited() {
        // It said "1s" after waiting STOP_TIMEOUT=1 plus the 2 s margin.
        assert_eq!(
            super::still_there("web", 42, 1),
            "init of web (PID 42) still there 3s after SIGTERM (STOP_TIMEOUT 1s + 2s): killing it"
        );
    }
}
