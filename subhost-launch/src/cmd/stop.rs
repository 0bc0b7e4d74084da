//! `stop`: end a subhost's processes, delete its netns and cables, unmount
//! its root. Idempotent; never deletes data.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use log::{info, warn};
use nix::sys::signal::Signal;

use crate::cmd::{detach, enter};
use crate::config::{self, Config};
use crate::layout::Layout;
use crate::{cgroup, mounts, netns, state};

pub fn stop(base: &Path, name: &str, dry_run: bool) -> Result<()> {
    let layout = Layout::new(base, name)?;
    // A broken config must not keep a subhost from being stopped.
    let cfg = match config::load(&layout.config(), name, base) {
        Ok(cfg) => cfg,
        Err(e) => {
            warn!("{e:#}; stopping with the default grace period and no HALT");
            Config::defaults(name)
        }
    };
    let grace = cfg.stop_timeout;
    let halt = detach::halt_command(&cfg);
    if dry_run {
        print_stop_plan(&layout, grace, halt.as_deref());
        return Ok(());
    }
    let lock = state::lock(name)?;
    let mut did = false;
    // Every step runs even when one before it failed: a stop that gives up
    // halfway leaves more behind than one that reports what it could not do.
    let mut failed: Vec<anyhow::Error> = Vec::new();
    if let Some(init) = state::running_init(name) {
        did = true;
        let console = detach::reopen_console(name, init.pid);
        if let Some((fd, c)) = &console {
            detach::note(fd, c, &format!("subhost {name}: stopping"));
        }
        if let Some(halt) = &halt {
            run_halt(name, init, halt, grace, console.as_ref().map(|(fd, _)| fd));
        }
        if let Err(e) = stop_init(name, init, grace) {
            failed.push(e);
        }
        if let Some((fd, c)) = &console {
            detach::note(fd, c, &format!("subhost {name}: stopped"));
        }
    }
    state::clear_init(name, None);
    detach::clear_console(name);
    // Whatever is still in the subhost's cgroup goes now: processes the
    // init could not take down, or an init the record lost track of.
    let cg = state::recorded_cgroup(name)
        .and_then(|dirs| cgroup::open_dirs(&dirs))
        .or_else(|| cgroup::open(name, cfg.cgroup_parent.as_deref()));
    if let Some(cg) = cg {
        did = true;
        match cg
            .kill_all(Duration::from_secs(5))
            .and_then(|()| cg.remove())
        {
            Ok(()) => state::clear_cgroup(name),
            Err(e) => failed.push(e),
        }
    } else {
        state::clear_cgroup(name);
    }
    match netns::delete(name, Duration::from_secs(5)) {
        Ok(d) => did |= d,
        Err(e) => failed.push(e),
    }
    match mounts::deactivate(&layout) {
        Ok(d) => did |= d,
        Err(e) => failed.push(e),
    }
    if !failed.is_empty() {
        let what: Vec<String> = failed.iter().map(|e| format!("{e:#}")).collect();
        bail!(
            "subhost {name} is only partly stopped: {}; fix that and run stop again",
            what.join("; ")
        );
    }
    lock.unlock_and_forget(name);
    if did {
        println!("subhost {name}: stopped");
    } else {
        println!("subhost {name}: already stopped");
    }
    Ok(())
}

/// Runs the stop commands (START stopped in reverse, then HALT) inside,
/// as `enter` would, for at most `grace` seconds; their output goes to the
/// console, or to our stderr when there is none. A failure is reported and
/// the stop goes on: the TERM/KILL sequence comes next either way.
fn run_halt(
    name: &str,
    init: state::ProcId,
    argv: &[String],
    grace: u32,
    console: Option<&OwnedFd>,
) {
    let run = || -> Result<i32> {
        let null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
        let stderr = std::io::stderr();
        let out = match console {
            Some(fd) => fd.as_fd(),
            None => stderr.as_fd(),
        };
        let stdio = enter::Stdio {
            stdin: null.as_fd(),
            stdout: out,
            stderr: out,
        };
        info!("stopping {name}: running HALT/START stop inside (up to {grace}s)");
        enter::run_inside(name, init, argv, stdio, Duration::from_secs(grace.into()))
    };
    match run() {
        Ok(0) => {}
        Ok(137) => warn!("the stop commands of {name} were killed after {grace}s (STOP_TIMEOUT)"),
        Ok(code) => warn!("the stop commands of {name} exited with status {code}"),
        Err(e) => warn!("cannot run the stop commands of {name}: {e:#}"),
    }
}

/// How long past STOP_TIMEOUT the init gets to finish its own shutdown.
const KILL_AFTER_GRACE: Duration = Duration::from_secs(2);

/// SIGTERM to init (which gives the session and everything else `grace`
/// seconds), then SIGKILL if it is still there a little after that.
fn stop_init(name: &str, init: state::ProcId, grace: u32) -> Result<()> {
    let pidfd = match state::PidFd::open(init.pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(e).context("cannot open a pidfd for init"),
    };
    // The pidfd pins the process; check again that it is still our init so a
    // PID recycled in between is never signalled.
    if state::running_init(name) != Some(init) {
        return Ok(());
    }
    let waited = Duration::from_secs(grace as u64) + KILL_AFTER_GRACE;
    crate::logging::step(format_args!("kill -TERM {}", init.pid), || {
        pidfd.signal(Signal::SIGTERM)
    })
    .context("cannot signal init")?;
    if pidfd.wait_exit(waited) {
        return Ok(());
    }
    warn!("{}", still_there(name, init.pid, grace));
    crate::logging::step(format_args!("kill -KILL {}", init.pid), || {
        pidfd.signal(Signal::SIGKILL)
    })
    .context("cannot kill init")?;
    if !pidfd.wait_exit(Duration::from_secs(5)) {
        bail!("init of {name} (PID {}) survived SIGKILL", init.pid);
    }
    Ok(())
}

/// The warning before SIGKILL, naming the time really waited.
fn still_there(name: &str, pid: i32, grace: u32) -> String {
    let waited = Duration::from_secs(grace.into()) + KILL_AFTER_GRACE;
    format!(
        "init of {name} (PID {pid}) still there {}s after SIGTERM (STOP_TIMEOUT {grace}s + {}s): killing it",
        waited.as_secs(),
        KILL_AFTER_GRACE.as_secs()
    )
}

fn print_stop_plan(layout: &Layout, grace: u32, halt: Option<&[String]>) {
    let name = &layout.name;
    match state::running_init(name) {
        Some(init) => {
            if let Some(halt) = halt {
                let out = match detach::recorded_console(name) {
                    Some(c) => format!("console {c}"),
                    None => "stderr".to_string(),
                };
                println!(
                    "# START stopped in reverse, then HALT: inside, as `enter` runs a command,"
                );
                println!("# killed after {grace}s, output to {out}");
                println!("{}", detach::shell_words(halt));
            }
            println!(
                "kill -TERM {0}   # init; after {grace}s + 2s: kill -KILL {0}",
                init.pid
            );
        }
        None => println!("# no init running"),
    }
    if let Some(dirs) = state::recorded_cgroup(name) {
        // As Cgroup::kill_all and Cgroup::remove log them.
        let all: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        println!("kill every process in {}", all.join(" "));
        for d in dirs.iter().rev() {
            println!("rmdir {}", d.display());
        }
    }
    if netns::exists(name) {
        println!("ip netns del {name}");
        let left = netns::host_links(name);
        if !left.is_empty() {
            println!("# wait until gone: {}", left.join(" "));
        }
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
