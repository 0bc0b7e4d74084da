//! subhost-launch: start and stop subhosts, sandboxed machines on the host
//! without VMs.

mod cgroup;
mod config;
mod layout;
mod logging;
mod mounts;
mod netns;
mod sandbox;
mod state;
mod supervisor;
mod tty;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use log::{info, warn};
use nix::sys::signal::{SigmaskHow, Signal};

use config::Config;
use layout::Layout;

const ABOUT: &str = "Start and stop subhosts: sandboxed machines on this host, without VMs.

A subhost NAME is the directory $SUBHOST/NAME (default /opt/subhost/NAME)
holding `config` (plain bash assignments: LOWER, BRIDGES, HOSTNAME, SHARE,
STOP_TIMEOUT, SESSION), `root` (its filesystem, or the overlay's upper layer),
and optionally NAME.img (an image file holding root/ and work/).";

const AFTER: &str = "Exit status: `start` exits with the session's status (128+N when it was
killed by signal N); 125 when the subhost could not be started. Other
commands exit 0 on success and 1 on error.";

#[derive(Parser)]
#[command(name = "subhost-launch", version, about = ABOUT, after_help = AFTER)]
struct Cli {
    /// Where subhosts live [env: SUBHOST] [default: /opt/subhost]
    #[arg(long, global = true, value_name = "DIR")]
    subhost_dir: Option<PathBuf>,
    /// Log each step (-v), more detail (-vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log to syslog instead of stderr
    #[arg(long, global = true)]
    syslog: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set up a subhost (or wake a hibernating one) and run its session.
    ///
    /// Mounts `live` and creates the netns NAME with one veth cable per
    /// BRIDGES element (host side NAME0, NAME1..., inside eth0, eth1...),
    /// unless they exist already. Then runs subhost-init as PID 1 in new PID,
    /// mount, UTS and IPC namespaces inside `live`, with COMMAND as the
    /// session (default: the config's SESSION, /bin/bash -l). On a terminal
    /// the session gets a pty of its own. When the session ends, every
    /// process of the subhost is gone but mounts and netns stay (the
    /// subhost hibernates) until `stop`.
    Start {
        /// Print what would be done, and do nothing
        #[arg(long)]
        dry_run: bool,
        /// The subhost
        name: String,
        /// The session to run instead of SESSION
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Stop a subhost: end its processes, remove its netns, cables and
    /// mounts. Never deletes `root`, `work` or the image. Stopping a stopped
    /// subhost is not an error.
    Stop {
        /// Print what would be done, and do nothing
        #[arg(long)]
        dry_run: bool,
        /// The subhost
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.syslog);
    let base = layout::base_dir(cli.subhost_dir.as_deref());
    let (result, fail_code) = match cli.command {
        Command::Start {
            dry_run,
            name,
            command,
        } => (start(&base, &name, command, dry_run), 125),
        Command::Stop { dry_run, name } => (stop(&base, &name, dry_run).map(|()| 0), 1),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("subhost-launch: error: {e:#}");
            ExitCode::from(fail_code)
        }
    }
}

/// The cables of a subhost as netns links: `NAMEi` on the host, `ethi`
/// inside.
fn links(layout: &Layout, cfg: &Config) -> Vec<netns::Link> {
    cfg.bridges
        .iter()
        .enumerate()
        .map(|(i, c)| netns::Link {
            host_if: layout.host_if(i),
            inner_if: format!("eth{i}"),
            bridge: c.bridge.clone(),
            mac: c.mac,
        })
        .collect()
}

fn open_subhost(base: &Path, name: &str) -> Result<(Layout, Config)> {
    let layout = Layout::new(base, name)?;
    if !layout.dir.is_dir() {
        bail!(
            "no subhost {name}: {} is not a directory (make it, with root/ inside and a config)",
            layout.dir.display()
        );
    }
    let cfg = config::load(&layout.config(), name, base)?;
    Ok((layout, cfg))
}

/// Undoes the host-side setup of a `start` that failed, unless disarmed.
struct Undo<'a> {
    layout: &'a Layout,
    mounts: bool,
    netns: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.netns {
            info!("undo: deleting netns {}", self.layout.name);
            if let Err(e) = netns::delete(&self.layout.name, Duration::from_secs(5)) {
                warn!("undo: {e:#}");
            }
        }
        if self.mounts {
            info!("undo: unmounting {}", self.layout.live().display());
            if let Err(e) = mounts::deactivate(self.layout) {
                warn!("undo: {e:#}");
            }
        }
    }
}

fn start(base: &Path, name: &str, command: Vec<String>, dry_run: bool) -> Result<i32> {
    let (layout, cfg) = open_subhost(base, name)?;
    let session = if command.is_empty() {
        cfg.session.clone()
    } else {
        command
    };
    let mount_steps = mounts::plan(&layout, &cfg);
    let links = links(&layout, &cfg);
    let inner = sandbox::plan(&layout, &cfg);
    let argv = sandbox::init_argv(cfg.stop_timeout, &session)?;
    if dry_run {
        print_start_plan(&layout, &mount_steps, &links, &inner, &argv);
        return Ok(0);
    }

    let lock = state::lock(name)?;
    if let Some(init) = state::running_init(name) {
        bail!(
            "subhost {name} is running (init PID {}); stop it first with `subhost-launch stop {name}`",
            init.pid
        );
    }
    let (_, init_fd) = sandbox::open_init()?;
    let mut undo = Undo {
        layout: &layout,
        mounts: false,
        netns: false,
    };
    if mounts::is_active(&layout) {
        info!("{} is mounted: reusing it", layout.live().display());
    } else {
        undo.mounts = true;
        mounts::activate(&mount_steps)?;
    }
    if netns::exists(name) {
        info!("netns {name} exists: reusing it");
    } else {
        undo.netns = true;
        netns::create(name, &links)?;
    }
    let netns_fd = netns::open(name).with_context(|| format!("cannot open netns {name}"))?;
    let pty = tty::is_tty(std::io::stdin().as_fd());

    // Signals stay blocked from here on: the supervisor takes them from a
    // signalfd, and the child unblocks them just before exec.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&supervisor::signals()), None)
        .context("cannot block signals")?;
    let child = sandbox::spawn(sandbox::Spawn {
        steps: &inner,
        netns: netns_fd,
        init: init_fd,
        argv,
        env: sandbox::session_env(),
        pty,
        live: layout.live(),
    })
    .with_context(|| format!("cannot start subhost {name}"))?;
    let id = state::ProcId::of(child.pid.as_raw());
    match &id {
        Ok(id) => state::record_init(name, *id)?,
        Err(e) => warn!("cannot record init PID {}: {e}", child.pid),
    }
    undo.mounts = false;
    undo.netns = false;
    drop(lock);
    info!("subhost {name} started, init PID {}", child.pid);

    let status = supervisor::supervise(child.pid, child.master);
    state::clear_init(name, id.ok());
    status
}

fn print_start_plan(
    layout: &Layout,
    mount_steps: &[mounts::Step],
    links: &[netns::Link],
    inner: &[sandbox::Step],
    argv: &[std::ffi::CString],
) {
    let name = &layout.name;
    let reuse = |yes: bool| if yes { " (exists: reused)" } else { "" };
    println!("# host mounts{}", reuse(mounts::is_active(layout)));
    for s in mount_steps {
        println!("{s}");
    }
    println!("# network{}", reuse(netns::exists(name)));
    println!("ip netns add {name}");
    for l in links {
        println!("{l}");
    }
    println!("ip -n {name} link set lo up");
    for l in links {
        println!("ip -n {name} link set {} up", l.inner_if);
    }
    println!("# sandbox: new pid, mount, uts and ipc namespaces, joining netns {name}");
    for s in inner {
        println!("{s}");
    }
    let argv: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    println!("exec {}", argv.join(" "));
}

fn stop(base: &Path, name: &str, dry_run: bool) -> Result<()> {
    let layout = Layout::new(base, name)?;
    // A broken config must not keep a subhost from being stopped.
    let grace = match config::load(&layout.config(), name, base) {
        Ok(cfg) => cfg.stop_timeout,
        Err(e) => {
            warn!("{e:#}; stopping with the default grace period");
            Config::defaults(name).stop_timeout
        }
    };
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
