//! `stop`: end a subhost's processes, delete its netns and cables, unmount
//! its root. Idempotent; never deletes data.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use log::{info, warn};
use nix::sys::signal::Signal;

use crate::config::{self, Config};
use crate::layout::Layout;
use crate::{cgroup, mounts, netns, state};

pub fn stop(base: &Path, name: &str, dry_run: bool) -> Result<()> {
    let layout = Layout::new(base, name)?;
    // A broken config must not keep a subhost from being stopped.
    let cfg = match config::load(&layout.config(), name, base) {
        Ok(cfg) => cfg,
        Err(e) => {
            warn!("{e:#}; stopping with the default grace period");
            Config::defaults(name)
        }
    };
    let grace = cfg.stop_timeout;
    if dry_run {
        print_stop_plan(&layout, grace);
        return Ok(());
    }
    let lock = state::lock(name)?;
    let mut did = false;
    if let Some(init) = state::running_init(name) {
        did = true;
        stop_init(name, init, grace)?;
    }
    state::clear_init(name, None);
    // Whatever is still in the subhost's cgroup goes now: processes the
    // init could not take down, or an init the record lost track of.
    let cg = state::recorded_cgroup(name)
        .and_then(|dirs| cgroup::open_dirs(&dirs))
        .or_else(|| cgroup::open(name, cfg.cgroup_parent.as_deref()));
    if let Some(cg) = cg {
        did = true;
        cg.kill_all(Duration::from_secs(5))?;
        cg.remove()?;
    }
    state::clear_cgroup(name);
    did |= netns::delete(name, Duration::from_secs(5))?;
    did |= mounts::deactivate(&layout)?;
    lock.unlock_and_forget(name);
    if did {
        println!("subhost {name}: stopped");
    } else {
        println!("subhost {name}: already stopped");
    }
    Ok(())
}

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
    info!("stopping {name}: SIGTERM to init PID {}", init.pid);
    pidfd
        .signal(Signal::SIGTERM)
        .context("cannot signal init")?;
    if pidfd.wait_exit(Duration::from_secs(grace as u64) + Duration::from_secs(2)) {
        return Ok(());
    }
    warn!(
        "init of {name} (PID {}) still there {grace}s after SIGTERM: killing it",
        init.pid
    );
    pidfd.signal(Signal::SIGKILL).context("cannot kill init")?;
    if !pidfd.wait_exit(Duration::from_secs(5)) {
        bail!("init of {name} (PID {}) survived SIGKILL", init.pid);
    }
    Ok(())
}

fn print_stop_plan(layout: &Layout, grace: u32) {
    let name = &layout.name;
    match state::running_init(name) {
        Some(init) => println!(
            "kill -TERM {0}   # init; after {grace}s + 2s: kill -KILL {0}",
            init.pid
        ),
        None => println!("# no init running"),
    }
    if let Some(dirs) = state::recorded_cgroup(name) {
        for d in dirs {
            println!("kill every process in {0}; rmdir {0}", d.display());
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
