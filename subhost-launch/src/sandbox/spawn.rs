//! Making the sandbox's process: forked (into its cgroup, and with USERNS
//! into its user namespace) and set up by the plan's steps, then replaced
//! by `subhost-init`.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{ForkResult, Pid};

use super::{reset_loginuid, run_step, Setup};
use crate::cgroup::Cgroup;
use crate::process::{self, Channel, Message};
use crate::{privileges, sys, tty};

/// What the launcher hands the child.
pub struct Spawn<'a> {
    pub steps: &'a [Setup],
    /// The subhost's netns, joined first so that sysfs shows its links.
    pub netns: OwnedFd,
    /// `subhost-init`, opened on the host: nothing needs to be installed
    /// inside the subhost.
    pub init: OwnedFd,
    /// Full argv for the init, argv[0] included.
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// Give the session its own pty: some standard stream of the caller is
    /// a terminal, which must not enter the subhost.
    pub pty: bool,
    /// The pty echoes input: off when the caller's input is not a terminal,
    /// so piped input is not shown back as output.
    pub echo: bool,
    /// Live dir: where the new devpts instance is found before the pivot.
    pub live: PathBuf,
    /// Set for a subhost that runs without its launcher; `None` for one
    /// that lives and dies with it.
    pub detached: Option<Detached>,
    /// Joined first, so that init and everything below it are in it.
    pub cgroup: Option<&'a Cgroup>,
    /// With USERNS: the user namespace the sandbox runs in.
    pub userns: Option<Userns>,
    /// The launcher cables the netns while the sandbox sets itself up: the
    /// init is exec'd only once [`Pending::go`] says the network is ready.
    pub wait_for_network: bool,
}

/// What a sandbox in a user namespace gets from the launcher.
pub struct Userns {
    /// The subhost's user namespace: the one that owns its netns.
    pub user: OwnedFd,
    /// Idmapped copies of the SHAREs, in order, made by the launcher (only
    /// the host's root may idmap a mount).
    pub trees: Vec<OwnedFd>,
}

/// The std streams of a detached init. It also gets a session of its own
/// and no parent-death signal: it must outlive the launcher, and no signal
/// meant for the launcher's terminal or process group may reach it.
pub struct Detached {
    pub stdin: OwnedFd,
    /// Both stdout and stderr: the console.
    pub console: OwnedFd,
    /// The services' state file (a memfd), on `services::STATE_FD`.
    pub services: Option<OwnedFd>,
    /// Socket activation: the host's sockets for the services, in declared
    /// order, on `services::LISTEN_FD` on.
    pub sockets: Vec<OwnedFd>,
}

/// The running sandbox, seen from the launcher.
pub struct Child {
    pub pid: Pid,
    /// Master side of the session's pty, when it has one.
    pub master: Option<OwnedFd>,
}

/// A sandbox forked and setting itself up: its parent may do other work
/// (set up the next subhost) before [`Pending::finish`] waits for it.
pub struct Pending {
    pid: Pid,
    /// Reaches its end when the init is exec'd; carries the session's pty
    /// master, when it has one, and the child's error if setting up failed.
    channel: Channel,
    pty: bool,
}

impl Pending {
    /// Tells a sandbox made with `wait_for_network` that it may exec its
    /// init.
    pub fn go(&self) -> Result<()> {
        self.channel
            .send(&Message::Go)
            .context("cannot tell the sandbox its network is ready")
    }

    /// Ends a sandbox whose start failed on the launcher's side: one that
    /// waits for [`Pending::go`] exits when its channel closes, and a
    /// parent-death signal is no help to a detached one.
    pub fn abandon(self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        drop(self.channel);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }

    /// Waits until the init is exec'd (or setting up failed: then the child
    /// is reaped and the child's own error returned).
    pub fn finish(self) -> Result<Child> {
        let mut master = None;
        let mut failed = None;
        loop {
            match self.channel.recv() {
                Ok(None) => break,
                Ok(Some(Message::Fd(fd))) if self.pty && master.is_none() => master = Some(fd),
                Ok(Some(Message::Failed(text))) => failed = Some(text),
                Ok(Some(other)) => failed = Some(format!("unexpected {other:?} from the sandbox")),
                Err(e) => {
                    failed = Some(format!("cannot read the sandbox's report: {e}"));
                    break;
                }
            }
        }
        if let Some(msg) = failed {
            let _ = nix::sys::wait::waitpid(self.pid, None);
            bail!("{msg}");
        }
        if self.pty && master.is_none() {
            bail!(
                "cannot receive the session's pty: the sandbox closed its end of the socket \
                 without sending the pty (it probably failed before opening it; see its error above)"
            );
        }
        Ok(Child {
            pid: self.pid,
            master,
        })
    }
}

/// Which of the subhost's cgroups a freshly made sandbox process is in.
#[derive(Clone, Copy)]
enum InCgroups<'a> {
    /// All of them: nothing left to join.
    All,
    /// Only the v2 directory it was cloned into, when there is one.
    Cloned(Option<&'a Path>),
}

/// Forks the sandbox and returns at once; [`Pending::finish`] waits for
/// its init to run. The caller must have blocked the signals it will
/// supervise.
pub fn spawn_begin(s: Spawn<'_>) -> Result<Pending> {
    // Said here, by the launcher: a detached sandbox's stderr is its
    // console.
    for step in s.steps {
        if let Setup::DropCaps { lacking, .. } = step {
            if !lacking.is_empty() {
                let name = s.live.parent().and_then(Path::file_name);
                let name = name.unwrap_or_default().to_string_lossy();
                log::warn!("{}", privileges::not_granted_at_start(&name, lacking));
            }
        }
    }
    let (ours, theirs) = process::channel()?;
    // Cloned straight into the cgroup v2 dir when there is one: joining
    // it by a write after the fact costs far more than the whole rest of
    // the start.
    let v2 = s.cgroup.and_then(|cg| cg.v2_dir());
    let v2_fd = match v2 {
        Some(dir) => {
            Some(File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?)
        }
        None => None,
    };
    // For the child to see whether the launcher died before its
    // parent-death signal was set: its parent is outside its PID namespace,
    // so getppid() says 0 either way.
    let launcher = match s.detached {
        Some(_) => None,
        None => Some(
            crate::state::PidFd::open(std::process::id() as i32)
                .context("cannot open a pidfd for the launcher")?,
        ),
    };
    let cgroup_fd = v2_fd.as_ref().map(|f| f.as_fd());
    let (forked, in_cgroups) = match &s.userns {
        None => {
            // SAFETY: the launcher is single-threaded, so the child may
            // allocate and use any library code before it execs.
            let (forked, cloned) =
                unsafe { process::clone_into_cgroup(libc::CLONE_NEWPID as u64, cgroup_fd) }?;
            (forked, InCgroups::Cloned(if cloned { v2 } else { None }))
        }
        Some(u) => {
            let v2 = cgroup_fd.zip(v2);
            let reset = s.steps.contains(&Setup::ResetLoginuid);
            (
                fork_into_userns(s.cgroup, v2, u.user.as_fd(), reset)?,
                InCgroups::All,
            )
        }
    };

    match forked {
        ForkResult::Child => {
            drop(ours);
            let err = child_main(&s, &theirs, in_cgroups, launcher.as_ref()).unwrap_err();
            let _ = theirs.send(&Message::Failed(format!("{err:#}")));
            sys::exit_now(127)
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            Ok(Pending {
                pid: child,
                channel: ours,
                pty: s.pty,
            })
        }
    }
}

/// Forks a child that is root of the user namespace `user` and PID 1 of a
/// new PID namespace owned by it (so that it may mount its /proc): a first
/// child, cloned into the cgroup like a sandbox without USERNS is, joins
/// the user namespace, unshares the PID namespace and makes the init its
/// sibling (the launcher's own child), reports its PID and exits. A new
/// user namespace of the clone would not do: the subhost's one must be the
/// one that owns its netns, which outlives every process (hibernation).
fn fork_into_userns(
    cgroup: Option<&Cgroup>,
    v2: Option<(BorrowedFd<'_>, &Path)>,
    user: BorrowedFd<'_>,
    reset_loginuid_first: bool,
) -> Result<ForkResult> {
    let (ours, theirs) = process::channel()?;
    // SAFETY: the launcher is single-threaded; the first child leaves
    // through exit_now, the init goes on to exec.
    let (forked, cloned) = unsafe { process::clone_into_cgroup(0, v2.map(|(fd, _)| fd)) }?;
    let ForkResult::Parent { child: first } = forked else {
        drop(ours);
        // Every cgroup is joined while still root of the host: v1
        // hierarchies (limits on hybrid hosts) are not delegated.
        let cloned = if cloned { v2.map(|(_, p)| p) } else { None };
        let errno = |e: std::io::Error| Message::Errno(e.raw_os_error().unwrap_or(libc::EIO));
        if let Some(cg) = cgroup {
            if let Err(e) = cg.join_self_except(cloned) {
                let _ = theirs.send(&errno(e));
                sys::exit_now(0)
            }
        }
        if reset_loginuid_first {
            crate::logging::step(&Setup::ResetLoginuid, reset_loginuid);
        }
        let init = crate::userns::become_root_of(user)
            .and_then(|()| sys::unshare(libc::CLONE_NEWPID))
            // SAFETY: this first child is single-threaded, a fork of the
            // launcher; the init goes on as the sandbox.
            .and_then(|()| unsafe { process::sibling() });
        let report = match init {
            Ok(ForkResult::Child) => {
                drop(theirs);
                return Ok(ForkResult::Child);
            }
            Ok(ForkResult::Parent { child }) => Message::Pid(child.as_raw()),
            Err(e) => errno(e),
        };
        let _ = theirs.send(&report);
        sys::exit_now(0)
    };
    drop(theirs);
    let report = ours.recv();
    let _ = nix::sys::wait::waitpid(first, None);
    match report {
        Ok(Some(Message::Pid(pid))) if pid > 0 => Ok(ForkResult::Parent {
            child: Pid::from_raw(pid),
        }),
        Ok(Some(Message::Errno(e))) => Err(std::io::Error::from_raw_os_error(e)).context(
            "cannot join the subhost's user namespace as its root and make a PID namespace",
        ),
        _ => bail!("the sandbox's first process died before it cloned the init"),
    }
}

/// Only returns on failure.
fn child_main(
    s: &Spawn<'_>,
    channel: &Channel,
    in_cgroups: InCgroups<'_>,
    launcher: Option<&crate::state::PidFd>,
) -> Result<std::convert::Infallible> {
    // First, while stderr is still the caller's (a detached init's is its
    // console), so a warning reaches whoever started it. With USERNS the
    // sandbox's first process did it, as the host's root.
    if s.userns.is_none() && s.steps.contains(&Setup::ResetLoginuid) {
        crate::logging::step(&Setup::ResetLoginuid, reset_loginuid);
    }
    match &s.detached {
        Some(d) => detach(d)?,
        None => {
            // Die with the launcher: a foreground subhost must not outlive it.
            sys::die_with_parent().context("cannot set the parent-death signal")?;
            // A launcher killed between the clone and the prctl sent no
            // signal: then no session may start behind the caller's back.
            if launcher.is_some_and(|l| l.wait_exit(std::time::Duration::ZERO)) {
                bail!("the launcher is gone");
            }
        }
    }
    close_inherited_fds()?;
    if let (Some(cg), InCgroups::Cloned(cloned)) = (s.cgroup, in_cgroups) {
        cg.join_self_except(cloned)
            .context("cannot join the subhost's cgroup")?;
    }
    setns(&s.netns, CloneFlags::CLONE_NEWNET).context("cannot join the subhost's netns")?;
    // The cgroup namespace is made after joining, so that inside, the
    // subhost's cgroup is the root.
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .context("cannot create mount, UTS, IPC and cgroup namespaces")?;
    for step in s.steps {
        // The pty comes from the subhost's own devpts, so it has to be made
        // after devpts is mounted and before the pivot hides nothing of it.
        if matches!(step, Setup::PivotRoot { .. }) && s.pty {
            let pty = tty::open_pty(&s.live.join("dev/pts/ptmx"))
                .context("cannot open a pty for the session")?;
            channel
                .send_fd(pty.master.as_fd())
                .context("cannot pass the pty to the launcher")?;
            drop(pty.master);
            if !s.echo {
                tty::echo_off(pty.slave.as_fd()).context("cannot turn off the pty's echo")?;
            }
            tty::make_controlling(pty.slave)
                .context("cannot make the pty the session's terminal")?;
        }
        // Done first, above.
        if matches!(step, Setup::ResetLoginuid) {
            continue;
        }
        let trees = s.userns.as_ref().map_or(&[][..], |u| &u.trees[..]);
        crate::logging::step(step, || run_step(step, trees)).with_context(|| format!("{step}"))?;
    }
    if s.wait_for_network {
        match channel.recv() {
            Ok(Some(Message::Go)) => {}
            _ => bail!("the launcher did not finish the subhost's network"),
        }
    }
    process::reset_signals_for_exec()?;
    let state = s.detached.as_ref().and_then(|d| d.services.as_ref());
    let sockets = s.detached.as_ref().map_or(&[][..], |d| &d.sockets[..]);
    let init = match state {
        Some(fd) if !sockets.is_empty() => Some(place_fds(fd, sockets, &s.init)?),
        Some(fd) => place_state_file(fd, &s.init)?,
        None => None,
    };
    exec_fd(init.as_ref().unwrap_or(&s.init), &s.argv, &s.env)
}

/// Puts the services' state file on the fd number the init is told, not
/// close-on-exec; a copy of the init's own fd when that held the number.
fn place_state_file(state: &OwnedFd, init: &OwnedFd) -> Result<Option<OwnedFd>> {
    let target = crate::services::STATE_FD;
    let moved = if init.as_raw_fd() == target {
        let fd = sys::dup_above(target, target + 1).context("cannot copy the init's fd")?;
        // SAFETY: dup_above returned a new descriptor that nothing else owns.
        Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    } else {
        None
    };
    // Already on it, it is close-on-exec: a copy put back clears that.
    let from = match state.as_raw_fd() {
        fd if fd == target => sys::dup_above(fd, target + 1).context("cannot copy a fd")?,
        fd => fd,
    };
    sys::dup2(from, target).context("cannot pass the services' state file")?;
    Ok(moved)
}

/// The state file on `STATE_FD` and the sockets on `LISTEN_FD` on, not
/// close-on-exec; returns a copy of the init's fd above them. Every
/// source is first copied above the targets, so that none is overwritten
/// before it is placed.
fn place_fds(state: &OwnedFd, sockets: &[OwnedFd], init: &OwnedFd) -> Result<OwnedFd> {
    let first = crate::services::STATE_FD;
    let above = crate::services::LISTEN_FD + sockets.len() as i32;
    let mut sources = vec![state.as_raw_fd()];
    sources.extend(sockets.iter().map(|s| s.as_raw_fd()));
    let copies = sources
        .iter()
        .map(|&fd| sys::dup_above(fd, above))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot copy the sockets")?;
    let init = sys::dup_above(init.as_raw_fd(), above).context("cannot copy the init's fd")?;
    for (i, fd) in copies.into_iter().enumerate() {
        sys::dup2(fd, first + i as i32).context("cannot pass the sockets")?;
    }
    // SAFETY: dup_above returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(init) })
}

/// A session of its own and the console on the std streams.
fn detach(d: &Detached) -> Result<()> {
    nix::unistd::setsid().context("cannot start a session for the init")?;
    install_stdio([
        d.stdin.as_raw_fd(),
        d.console.as_raw_fd(),
        d.console.as_raw_fd(),
    ])
}

/// Nothing but the std streams (and the pty, which becomes them) may reach
/// the init: any other fd the caller left open, e.g. a directory of the
/// host (`8</`), would be a way out of the new root, as runc's
/// CVE-2024-21626 was. Close-on-exec rather than closed: the netns, init
/// and channel fds are still needed until the exec.
fn close_inherited_fds() -> Result<()> {
    sys::close_range(3, u32::MAX, true).context("cannot mark the launcher's fds close-on-exec")
}

/// Puts `fds` on 0, 1 and 2. Copies go above 2 first so that a source that
/// is itself 0, 1 or 2 is neither overwritten before use nor left with
/// close-on-exec set (dup2 onto itself changes nothing).
fn install_stdio(fds: [std::os::fd::RawFd; 3]) -> Result<()> {
    let mut high = Vec::with_capacity(3);
    for fd in fds {
        high.push(sys::dup_above(fd, 3).context("cannot copy a console fd")?);
    }
    // The copies are close-on-exec and not used again.
    for (target, fd) in high.into_iter().enumerate() {
        sys::dup2(fd, target as i32).context("cannot put the console on the init's std streams")?;
    }
    Ok(())
}

fn exec_fd(fd: &OwnedFd, argv: &[CString], env: &[CString]) -> Result<std::convert::Infallible> {
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());
    let err = sys::execveat_fd(fd.as_fd(), &argv_p, &env_p);
    let hint = if err.raw_os_error() == Some(libc::ENOENT) {
        " (a dynamically linked subhost-init cannot run in a root without its \
         libraries: install the static build from musl-build)"
    } else {
        ""
    };
    Err(err).with_context(|| format!("cannot execute subhost-init{hint}"))
}

/// Opens the init binary that `start` will run: `SUBHOST_INIT`, else
/// `subhost-init` next to this launcher.
pub fn open_init() -> Result<(PathBuf, OwnedFd)> {
    let path = match std::env::var_os("SUBHOST_INIT") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => std::env::current_exe()
            .context("cannot find the launcher's own path")?
            .with_file_name("subhost-init"),
    };
    let file = File::open(&path).with_context(|| {
        format!(
            "cannot open {} (install subhost-init next to subhost-launch, or set SUBHOST_INIT)",
            path.display()
        )
    })?;
    Ok((path, file.into()))
}

/// The environment a session starts with: fixed and small, as a login on a
/// fresh machine would have, plus the caller's TERM so the terminal works.
pub fn session_env() -> Vec<CString> {
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "HOME=/root".to_string(),
        "USER=root".to_string(),
        "LOGNAME=root".to_string(),
        "container=subhost".to_string(),
    ];
    for key in ["TERM", "LANG"] {
        if let Some(v) = std::env::var_os(key) {
            env.push(format!("{key}={}", v.to_string_lossy()));
        }
    }
    env.into_iter()
        .filter_map(|e| CString::new(e).ok())
        .collect()
}

/// argv for `subhost-init` running `session`.
pub fn init_argv(grace: u32, session: &[String]) -> Result<Vec<CString>> {
    let mut argv = vec![
        "subhost-init".to_string(),
        "--grace".to_string(),
        grace.to_string(),
        "--".to_string(),
    ];
    argv.extend(session.iter().cloned());
    argv.into_iter()
        .map(|a| CString::new(a.as_bytes()).context("an argument contains a NUL byte"))
        .collect()
}
