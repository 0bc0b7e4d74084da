//! Starting a subhost: the plan of a start as data (`prepare`), then,
//! under its lock, the host side set up and the sandbox forked (`launch`),
//! the init recorded and its session supervised (`finish`), and a failed
//! start undone.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use log::{info, warn};
use nix::sys::signal::SigmaskHow;

use crate::cgroup::{self, Cgroup};
use crate::config::Config;
use crate::detached;
use crate::layout::Layout;
use crate::{forward, mounts, names, netns, publish, run, sandbox, state, supervisor, tty, userns};

pub fn open_subhost(base: &Path, name: &str) -> Result<(Layout, Config)> {
    let layout = Layout::new(base, name)?;
    if !layout.dir.is_dir() {
        bail!(
            "no subhost {name}: {} is not a directory; make one with \
             `subhost-launch create {name} --lower /` (an overlay over the host's /: \
             what it changes stays in its root/), or see `subhost-launch create --help`",
            layout.dir.display()
        );
    }
    let cfg = crate::config::load(&layout.config(), name, base)?;
    Ok((layout, cfg))
}

/// Undoes the host-side setup of a `start` that failed, unless disarmed.
struct Undo {
    layout: Layout,
    mounts: bool,
    netns: bool,
    /// The subhost's rules in the host's nftables table.
    publish: bool,
    /// Its port forwarder, for the host's loopback.
    forward: bool,
    cgroup: Option<Cgroup>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(cg) = self.cgroup.take() {
            info!("undo: removing the cgroup of {}", self.layout.name);
            release_cgroup(&self.layout.name, &cg);
        }
        if self.forward {
            info!("undo: stopping the port forwarder of {}", self.layout.name);
            if let Err(e) = forward::stop(Path::new(run::RUN_DIR), &self.layout.name) {
                warn!("undo: {e:#}");
            }
        }
        if self.publish {
            info!("undo: removing the published ports of {}", self.layout.name);
            if let Err(e) = publish::remove(Path::new(run::RUN_DIR), &self.layout.name) {
                warn!("undo: {e:#}");
            }
        }
        if self.netns {
            info!("undo: deleting netns {}", self.layout.name);
            if let Err(e) = netns::delete(&self.layout.name, Duration::from_secs(5)) {
                warn!("undo: {e:#}");
            }
        }
        if self.mounts {
            info!("undo: unmounting {}", self.layout.live().display());
            if let Err(e) = mounts::deactivate(&self.layout) {
                warn!("undo: {e:#}");
            }
        }
    }
}

/// How the subhost's init runs.
pub enum Mode {
    /// Under the launcher, with a session: COMMAND, or SESSION when empty.
    Foreground { command: Vec<String> },
    /// On its own with no terminal, running BOOT and START; `console` as
    /// given to `--console`.
    Detached { console: Option<String> },
}

/// Everything a start will do, as data: what `--dry-run` prints.
pub struct Prepared {
    pub layout: Layout,
    cfg: Config,
    pub argv: Vec<std::ffi::CString>,
    /// Set for a detached start.
    pub console: Option<detached::Console>,
    pub mount_steps: Vec<mounts::Step>,
    /// Written into the root at a cold start.
    pub names: names::Plan,
    pub links: Vec<netns::Link>,
    /// Addresses and default routes, set when the netns is made.
    pub addressing: netns::Addressing,
    /// Rules of the published ports, made with the netns.
    pub publish: publish::Plan,
    pub inner: Vec<sandbox::Setup>,
    pub cgroup_plan: cgroup::Plan,
    /// With USERNS: the range of its user namespace, and the delegation of
    /// its cgroup to root of it.
    pub userns: Option<userns::Range>,
    pub delegation: Option<cgroup::Delegation>,
    /// A detached start of a subhost with LISTEN sockets: the host's
    /// sockets when a connection wakes it; none when it is to be set up
    /// and left asleep.
    pub sockets: Vec<OwnedFd>,
}

impl Prepared {
    /// The subhost's LISTEN sockets, and its config file.
    pub fn listen(&self) -> (&[crate::activator::sockets::Listen], std::path::PathBuf) {
        (&self.cfg.listen, self.layout.config())
    }

    /// Seconds of idleness after which it is put back to sleep (IDLE).
    pub fn idle(&self) -> Option<u32> {
        self.cfg.idle
    }
}

/// The plan of a start. The USERNS range is checked (FILE:LINE) before
/// anything is set up, and recorded unless `dry_run`.
pub fn prepare(base: &Path, name: &str, mode: Mode, dry_run: bool) -> Result<Prepared> {
    let (layout, cfg) = open_subhost(base, name)?;
    crate::clone::refuse_if_shared(&layout)?;
    let (argv, console) = match mode {
        Mode::Foreground { command } => {
            let session = if command.is_empty() {
                cfg.session.clone()
            } else {
                command
            };
            (sandbox::init_argv(cfg.stop_timeout, &session)?, None)
        }
        Mode::Detached { console } => (
            detached::init_argv(&cfg)?,
            Some(detached::Console::from_arg(&layout, console.as_deref())?),
        ),
    };
    let userns = match cfg.userns {
        Some(req) => {
            mounts::idmap::check_running_kernel()?;
            keep_range_while_set_up(&layout, req)?;
            Some(crate::config::userns_range(&layout, req, dry_run)?)
        }
        None => None,
    };
    let mount_steps = mounts::plan(&layout, &cfg, userns);
    let names = names::Plan::of(&cfg, &layout);
    let links = cfg.links(name);
    let addressing = cfg.addressing();
    let publish = publish::plan(name, &cfg.published(), &addressing, &links);
    let inner = sandbox::plan(&layout, &cfg, userns)?;
    let cgroup_plan = cgroup::plan(name, cfg.cgroup_parent.as_deref(), &limits(&cfg))?;
    let delegation = userns.and_then(|r| cgroup::delegation(&cgroup_plan, r.base));
    Ok(Prepared {
        layout,
        cfg,
        argv,
        console,
        mount_steps,
        names,
        links,
        addressing,
        publish,
        inner,
        cgroup_plan,
        userns,
        delegation,
        sockets: Vec::new(),
    })
}

/// A start whose sandbox is forked and setting itself up; its host side
/// is undone on drop unless `finish` sees the init run.
pub struct Launching {
    name: String,
    cfg: Config,
    // Before the lock: fields drop in order, and the undo is a change of
    // the subhost's state, made under its lock.
    undo: Undo,
    lock: state::Lock,
    pending: sandbox::Pending,
    /// The port forwarder, setting itself up.
    forwarder: Option<forward::Starting>,
    /// The netfilter socket of the published ports' batch, closed once
    /// the init runs.
    committed: Option<publish::Committed>,
    console: Option<detached::Console>,
    /// The console, still open for a line saying the start failed.
    console_note: Option<std::os::fd::OwnedFd>,
    /// For the record of what was applied: the id range and the cgroup.
    range: Option<userns::Range>,
    cgroups: Vec<std::path::PathBuf>,
}

impl Prepared {
    /// How long a start waits for another start or stop of it: at most
    /// the grace a stop gives the init, plus a moment.
    pub fn lock_wait(&self) -> Duration {
        Duration::from_secs(self.cfg.stop_timeout.into()) + Duration::from_secs(2)
    }

    /// Under `lock`, the subhost's: sets up the host side and forks the
    /// sandbox. `None` when there is nothing to do: a detached start finds
    /// the subhost started by another command since this one began (as two
    /// `start --detach` naming the same subhosts do), not the init that
    /// ran `before`.
    pub fn launch(
        self,
        lock: state::Lock,
        before: Option<state::ProcId>,
    ) -> Result<Option<Launching>> {
        let Prepared {
            layout,
            cfg,
            argv,
            console,
            mount_steps,
            names,
            links,
            addressing,
            publish,
            inner,
            cgroup_plan,
            userns,
            delegation,
            sockets,
        } = self;
        let userns_range = userns;
        // Socket activation: set up now, woken (with the sockets) later.
        let asleep = console.is_some() && !cfg.listen.is_empty() && sockets.is_empty();
        let name = layout.name.clone();
        let name = name.as_str();
        // Dropped on an error, it removes the lock file if it made it, and
        // the directory record if it wrote it.
        let mut lock = lock.removed_unless_kept(name);
        state::check_records(name)?;
        // Before anything host-wide of NAME is touched: it may be another
        // directory's subhost's.
        lock.claim(&layout.dir)?;
        if let Some(init) = state::running_init(name) {
            if console.is_some() && before != Some(init) {
                crate::outcome::say(&format!(
                    "subhost {name}: already running (init PID {}), started meanwhile by \
                     another start",
                    init.pid
                ));
                return Ok(None);
            }
            bail!(
                "subhost {name} is running (init PID {}): it has one session at a time; run a \
                 command in it with `subhost-launch enter {name}`, or stop it first with \
                 `subhost-launch stop {name}`",
                init.pid
            );
        }
        // Left by an interrupted start: for `stop` to clear, never reused.
        if let Some(stray) = netns::stray(name) {
            bail!("cannot start subhost {name}: {stray}");
        }
        // Made with the netns: a port another subhost or a host process
        // has is refused before anything is set up.
        if !netns::exists(name) {
            publish::check_free(name, &cfg.published(), &publish)?;
        }
        // Left by a detached init that died without `stop`.
        detached::clear_console(name);
        let (_, init_fd) = sandbox::open_init()?;
        // Its ports listen once it is forked; it sets itself up while the
        // sandbox does, and `finish` waits for both.
        let mut forwarder = None;
        let mut committed = None;
        let mut undo = Undo {
            layout: layout.clone(),
            mounts: false,
            netns: false,
            publish: false,
            forward: false,
            cgroup: None,
        };
        if let Some(range) = userns {
            userns::check_reachable(&layout.live(), range)?;
        }
        let (user, made_net) = user_namespace(name, userns)?;
        // A new netns of the launcher's is made while the root is mounted.
        let mut origin = match made_net {
            Some(ns) => Some(netns::Origin::Made(ns)),
            None if !netns::exists(name) => Some(netns::Origin::Unsharing(netns::unshare_begin())),
            None => None,
        };
        // A hibernating subhost's mounts are reused only when they are its
        // own (their sources checked): `activate` skips those, and refuses
        // someone else's mount where its own would go.
        let was_active = mounts::is_active(&layout);
        if was_active {
            info!("{} is mounted: reusing it", layout.live().display());
        }
        undo.mounts = !was_active;
        mounts::activate(&mount_steps, user.as_ref().map(|u| u.as_fd()))?;
        // A hibernating subhost's root is as its session left it.
        if !was_active && !names.is_empty() {
            crate::logging::step(&names, || names::write(&names))?;
        }
        // A netns made now is cabled while the sandbox sets itself up in it
        // (but before its ports are published, see below).
        let mut unwired = None;
        if netns::exists(name) {
            info!("netns {name} exists: reusing it");
            netns::replug(name, &netns::unplugged(&links))?;
        } else {
            // All or nothing: a failed create removes what it made, and only
            // that (a link that holds a cable's name is not the start's).
            let origin = origin.take().unwrap_or(netns::Origin::New);
            let mut made = netns::make(name, &links, origin)?;
            undo.netns = true;
            if publish.is_empty() {
                unwired = Some(made);
            } else {
                // Cabled first: a veth made while the kernel releases the
                // socket of the rules' batch waited for that, 5-10 ms
                // (traced), so the cables come before the rules.
                made.wire(&links, &addressing)?;
                drop(made);
                committed = Some(publish_ports(&publish, &mut undo)?);
            }
            forwarder = self::forwarder(&publish, &mut undo)?;
        }
        if asleep {
            // As a start that sleeps always did, it returns with the
            // batch's socket closed and a forwarder still setting itself up
            // ended.
            if let Some(mut made) = unwired.take() {
                made.wire(&links, &addressing)?;
            }
            undo.mounts = false;
            undo.netns = false;
            undo.publish = false;
            undo.forward = false;
            lock.keep();
            return Ok(None);
        }
        let netns_fd = netns::open(name).with_context(|| format!("cannot open netns {name}"))?;
        // The one its last session kept, or a new one recorded before it is
        // made: a launcher killed in between leaves a cgroup that the next
        // `stop` still finds, from any caller's cgroup.
        let cg = cgroup::make(name, cfg.cgroup_parent.as_deref(), &cgroup_plan)?;
        let cg = &*undo.cgroup.insert(cg);
        if let Some(d) = &delegation {
            crate::logging::step(d, || d.apply())?;
        }
        let userns = match user {
            Some(user) => Some(sandbox::Userns {
                trees: {
                    let mut trees: Vec<_> = cfg
                        .share
                        .iter()
                        .map(|s| mounts::idmap::clone_mapped(&s.host, user.as_fd(), true))
                        .collect::<Result<_>>()
                        .context("SHARE")?;
                    // The DEVICES nodes after them, as the plan's `DevMade` says.
                    let root = userns_range.as_ref().map_or(0, |r| r.base);
                    trees.extend(sandbox::devnodes::make(&cfg.devices, root).context("DEVICES")?);
                    trees
                },
                user,
            }),
            None => None,
        };
        let detached = match &console {
            Some(console) => Some(detached_streams(&layout, &cfg, console, sockets)?),
            None => None,
        };
        // From here on a detached start has written "starting" to its
        // console: a failure must be written there too, or the console
        // says nothing.
        let console_note = match &detached {
            Some(d) => Some(d.console.try_clone().context("cannot dup the console")?),
            None => None,
        };
        // Any terminal among the standard streams gets a pty in front of it:
        // passed in, it would let the subhost inject input (TIOCSTI).
        let stdin_tty = tty::is_tty(std::io::stdin().as_fd());
        let pty = detached.is_none()
            && (stdin_tty
                || tty::is_tty(std::io::stdout().as_fd())
                || tty::is_tty(std::io::stderr().as_fd()));

        if detached.is_none() {
            // Signals stay blocked from here on: the supervisor takes them
            // from a signalfd, and the child unblocks them just before exec.
            nix::sys::signal::sigprocmask(
                SigmaskHow::SIG_BLOCK,
                Some(&supervisor::signals()),
                None,
            )
            .context("cannot block signals")?;
        }
        let pending = sandbox::spawn_begin(sandbox::Spawn {
            steps: &inner,
            netns: netns_fd,
            init: init_fd,
            argv,
            env: sandbox::session_env(),
            pty,
            echo: stdin_tty,
            live: layout.live(),
            detached,
            cgroup: Some(cg),
            userns,
            wait_for_network: unwired.is_some(),
        })
        .with_context(|| format!("cannot start subhost {name}"))?;
        if let Some(mut made) = unwired {
            match made.wire(&links, &addressing) {
                Ok(()) => drop(made),
                Err(e) => {
                    // Out of the netns before it is deleted.
                    pending.abandon();
                    return Err(e);
                }
            }
            // Not heard: a sandbox that failed meanwhile has closed its
            // end, and `finish` reports its own error.
            let _ = pending.go();
        }
        Ok(Some(Launching {
            name: name.to_string(),
            cfg,
            undo,
            lock,
            pending,
            forwarder,
            committed,
            console,
            console_note,
            range: userns_range,
            cgroups: cgroup_plan.dirs.clone(),
        }))
    }
}

impl Launching {
    /// Waits until the init runs, records it, and then returns (detached)
    /// or supervises the session to its end (foreground).
    pub fn finish(self) -> Result<i32> {
        // Bindings drop in reverse: the undo of a failure runs while the
        // lock is still held.
        let Launching {
            name,
            cfg,
            lock,
            mut undo,
            pending,
            forwarder,
            committed,
            console,
            console_note,
            range,
            cgroups,
        } = self;
        let name = name.as_str();
        let spawned = pending
            .finish()
            .with_context(|| format!("cannot start subhost {name}"))
            .and_then(|child| match forwarder {
                Some(f) => crate::logging::step(
                    format_args!("waiting for the port forwarder of {name}"),
                    || f.wait(),
                )
                .map(|()| child),
                None => Ok(child),
            });
        drop(committed);
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                if let Some(fd) = &console_note {
                    detached::note(fd, &format!("subhost {name}: failed to start: {e:#}"));
                }
                return Err(e);
            }
        };
        drop(console_note);
        let id = state::ProcId::of_child(child.pid.as_raw());
        match &id {
            Ok(id) => {
                // What was applied first: whoever sees the init record
                // (`enter`, a test waiting for it) finds it there too.
                state::record_applied(name, &applied(&cfg, range, cgroups, *id)?)?;
                state::record_init(name, *id)?;
            }
            Err(e) => warn!("cannot record init PID {}: {e}", child.pid),
        }
        undo.mounts = false;
        undo.netns = false;
        undo.publish = false;
        undo.forward = false;
        let cg = undo.cgroup.take();
        if let Some(console) = &console {
            detached::record_console(name, console)?;
            lock.keep();
            // The init is not waited for: it is reparented when we exit.
            crate::outcome::say(&format!(
                "subhost {name}: started (init PID {}), console: {console}",
                child.pid
            ));
            return Ok(0);
        }
        lock.keep();
        info!("subhost {name} started, init PID {}", child.pid);

        let status = supervisor::supervise(child.pid, child.master);
        if status.is_err() {
            // Without its launcher a foreground subhost has no one to wait
            // for it or relay its terminal: take it down rather than orphan
            // it.
            let _ = nix::sys::signal::kill(child.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child.pid, None);
        }
        if let Some(cg) = &cg {
            report_oom(name, &cfg, cg);
        }
        end_session(name, &cfg, id.ok(), cg.as_ref());
        status
    }
}

/// The published ports of the netns just made and cabled: what is made is
/// undone by `undo` on failure.
fn publish_ports(publish: &publish::Plan, undo: &mut Undo) -> Result<publish::Committed> {
    undo.publish = true;
    let committed = publish::apply(Path::new(run::RUN_DIR), publish)?;
    for off in publish::forwarding_off(&publish.dnat) {
        warn!("subhost {}: {off}", undo.layout.name);
    }
    Ok(committed)
}

/// The port forwarder of the netns just made, forked to set itself up
/// while the start goes on (it needs only the netns, not its cables).
fn forwarder(publish: &publish::Plan, undo: &mut Undo) -> Result<Option<forward::Starting>> {
    if publish.loopback.is_empty() {
        return Ok(None);
    }
    let name = undo.layout.name.clone();
    undo.forward = true;
    // A forwarder a crashed start left would hold the ports.
    forward::stop(Path::new(run::RUN_DIR), &name)?;
    let what = format!("forking the port forwarder of {name}");
    crate::logging::step(&what, || {
        forward::begin(
            Path::new(run::RUN_DIR),
            &name,
            &netns::path(&name),
            &publish.loopback,
        )
    })
    .map(Some)
}

/// What this start applied to its init `id`, for `state::Applied`: the
/// capabilities the init really keeps (without USERNS, those the
/// launcher's own bounding set has), the filter, the range, the cgroup.
fn applied(
    cfg: &Config,
    range: Option<userns::Range>,
    cgroups: Vec<std::path::PathBuf>,
    id: state::ProcId,
) -> Result<state::Applied> {
    let mut caps = crate::privileges::kept(cfg)?;
    if range.is_none() {
        if let Ok(have) = crate::privileges::own_bounding_set() {
            let lacking = crate::privileges::lacking(&caps, &have);
            caps.retain(|c| !lacking.contains(c));
        }
    }
    Ok(state::Applied {
        init: (id.pid, id.start),
        caps: caps.iter().map(|c| c.to_string()).collect(),
        seccomp: cfg.seccomp,
        syscalls_allow: cfg.syscalls_allow.clone(),
        userns: range.map(|r| format!("{}:{}", r.base, r.count)),
        cgroups,
    })
}

/// The subhost hibernates once its foreground session has ended: the
/// init's record goes; its cgroup stays, empty, for the next start, or
/// goes with whatever was left in it (see `cgroup::keep_empty`). That is
/// a change of the subhost's state like any other, made under its lock:
/// since the init exited, another `start` may have begun a session of its
/// own in a new cgroup of the same name, or a `stop` may be taking the
/// subhost down. So the record goes only if it still names this session's
/// init, and the cgroup only if no init runs under the lock (a running one
/// is another session's).
fn end_session(name: &str, cfg: &Config, init: Option<state::ProcId>, cg: Option<&Cgroup>) {
    // Long enough for a `stop` that holds the lock to finish: its HALT and
    // the init's grace, SIGKILL, then the netns and the mounts.
    let grace = Duration::from_secs(cfg.stop_timeout.into());
    let wait = 2 * grace + Duration::from_secs(20);
    let lock = match state::lock_if_set_up(name, wait) {
        Ok(Some(lock)) => lock,
        // A `stop` took it down, cgroup and records included.
        Ok(None) => return,
        Err(e) => {
            warn!(
                "{e:#}: the cgroup of {name} is left to it, or to the next start or stop of {name}"
            );
            return;
        }
    };
    // Without an identity nothing was recorded: any record is another's.
    if init.is_some() {
        state::clear_init(name, init);
    }
    if let Some(other) = state::running_init(name) {
        info!(
            "subhost {name} runs another session (init PID {}): its cgroup stays",
            other.pid
        );
    } else if let Some(cg) = cg.filter(|cg| !cgroup::keep_empty(name, cg)) {
        release_cgroup(name, cg);
    }
    drop(lock);
}

/// A hibernating subhost keeps the user namespace (and idmapped mounts)
/// of the range it was set up with: a new explicit range applies after a
/// stop, not halfway.
fn keep_range_while_set_up(layout: &Layout, req: userns::Requested) -> Result<()> {
    let (userns::Setting::Fixed(want), Ok(Some(had))) = (req.setting, userns::read_record(layout))
    else {
        return Ok(());
    };
    if want != had && (netns::exists(&layout.name) || mounts::is_active(layout)) {
        bail!(
            "{}:{}: USERNS={want}, but subhost {} is set up with the range {had}: stop it \
             (`subhost-launch stop {}`), then start it with the new range",
            layout.config().display(),
            req.line,
            layout.name,
            layout.name
        );
    }
    Ok(())
}

/// The user namespace of a subhost with USERNS (`range`), and, when its
/// netns has to be made, a new netns owned by it. A hibernating subhost's
/// is the one its netns pins. A netns of the other kind (USERNS set or
/// removed since the subhost was set up) is refused: the mounts were made
/// for it.
fn user_namespace(
    name: &str,
    range: Option<userns::Range>,
) -> Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    let stop_first = |how: &str| {
        anyhow::anyhow!(
            "subhost {name} is set up {how}, as its config was when it started: stop it \
             (`subhost-launch stop {name}`) and start it again to apply USERNS"
        )
    };
    if !netns::exists(name) {
        return Ok(match range {
            None => (None, None),
            Some(r) => {
                let ns = crate::logging::step(
                    format_args!(
                        "unshare --user --map-users=0:{0}:{1} --map-groups=0:{0}:{1} --net \
                         (a helper, killed once its namespaces are open)",
                        r.base, r.count
                    ),
                    || userns::acquire(r, true),
                )?;
                (Some(ns.user), ns.net)
            }
        });
    }
    let owner = netns::owner(name)?;
    let own = std::fs::File::open("/proc/self/ns/user")
        .context("cannot open /proc/self/ns/user")?
        .into();
    match (range, userns::same_ns(&owner, &own)) {
        (None, true) => Ok((None, None)),
        (None, false) => Err(stop_first("with a user namespace")),
        (Some(_), true) => Err(stop_first("without a user namespace")),
        (Some(_), false) => Ok((Some(owner), None)),
    }
}

/// Says so when the memory limit made the kernel kill processes of the
/// subhost: otherwise a session killed by it only shows as status 137.
fn report_oom(name: &str, cfg: &Config, cg: &Cgroup) {
    if let (Some(max), Some(n)) = (cfg.memory_max, cg.oom_kills()) {
        if n > 0 {
            warn!(
                "subhost {name} hit its memory limit MEMORY_MAX={max} bytes: the kernel \
                 killed {n} process{} of it; raise MEMORY_MAX in its config",
                if n == 1 { "" } else { "es" }
            );
        }
    }
}

/// stdin and console of a detached init. BOOT and START run through the
/// subhost's `/bin/sh`: better refused here than an init that is up with
/// nothing started and only a line in the console saying why.
fn detached_streams(
    layout: &Layout,
    cfg: &Config,
    console: &detached::Console,
    sockets: Vec<OwnedFd>,
) -> Result<sandbox::Detached> {
    let declared: usize = cfg.listen.iter().map(|l| l.sockets.len()).sum();
    if sockets.len() != declared {
        bail!(
            "subhost {}: {} sockets given for the {declared} its LISTEN keys declare",
            layout.name,
            sockets.len()
        );
    }
    if detached::boot_session(cfg).is_some() {
        // Not followed: a symlink is resolved inside the subhost, not here.
        let sh = layout.live().join("bin/sh");
        if std::fs::symlink_metadata(&sh).is_err() {
            bail!(
                "subhost {}: BOOT and START run with /bin/sh, and its root has none ({} is missing)",
                layout.name,
                sh.display()
            );
        }
    }
    let stdin = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
    let services = match cfg.services.is_empty() {
        true => None,
        false => Some(crate::services::state_file()?),
    };
    Ok(sandbox::Detached {
        stdin: stdin.into(),
        console: console.open(&layout.name, cfg.log_max)?,
        services,
        sockets,
    })
}

/// The cgroup limits of `cfg`.
pub fn limits(cfg: &Config) -> cgroup::Limits {
    cgroup::Limits {
        memory_max: cfg.memory_max,
        cpu_max: cfg.cpu_max.clone(),
        pids_max: cfg.pids_max,
        devices: Some(cgroup::devices::rules(&cfg.devices)),
    }
}

/// Kills whatever is left in `cg`, removes it and forgets it: the record
/// goes if it names `cg`, as this start wrote it (one written otherwise is
/// for `stop` and `status` to report).
pub fn release_cgroup(name: &str, cg: &Cgroup) {
    if let Err(e) = cg
        .kill_all(Duration::from_secs(5))
        .and_then(|()| cg.remove())
    {
        warn!("cgroup of {name}: {e:#}");
    }
    if state::recorded_cgroup(name).as_deref() == Some(cg.dirs()) {
        state::clear_cgroup(name);
    }
}
