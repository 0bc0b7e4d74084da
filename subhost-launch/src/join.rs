//! Joining a running subhost: a command run inside it as one of its own
//! processes, in all its namespaces (its user namespace first, with
//! USERNS) and cgroups, under its root, with no more capabilities than its
//! init, on a pty of the subhost's own devpts. `enter` runs a session this
//! way, `stop` the services' stop and HALT.
//!
//! Three processes take part, so that nothing of the host is ever within
//! reach of the subhost:
//! - the launcher stays in the host's namespaces throughout. It finds the
//!   init through a pidfd and `/proc/INIT`, opens the pty through the
//!   subhost's root, then relays the terminal and waits for the command;
//! - a joiner, forked from it, lives in the host's PID namespace and so is
//!   invisible inside. It closes every fd it does not need, joins the
//!   init's cgroups and namespaces, chroots into the init's root and clones
//!   the command with CLONE_PARENT (the launcher becomes its parent), then
//!   exits;
//! - the command is born in the subhost's PID namespace with root and cwd
//!   already the subhost's and, when a terminal is involved, no fd of the
//!   host at all: a subhost process that inspects it the moment it appears
//!   (`/proc/PID/root`, `/proc/PID/fd`, `pidfd_getfd`) finds nothing of the
//!   host, which `nsenter -t INIT` style entering cannot promise.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability};
use log::info;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigmaskHow, Signal};
use nix::unistd::{ForkResult, Pid};

use crate::layout::Layout;
use crate::process::{self, Channel, Message};
use crate::seccomp::Filter;
use crate::state::{self, PidFd, ProcId};
use crate::{cgroup, config, privileges, procfs, sandbox, supervisor, sys, tty};

/// Every namespace of the init that the command shares. The user namespace
/// of a subhost with USERNS is joined before these (see `RunningInit::userns`).
const NAMESPACES: [(&str, CloneFlags); 6] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    // Last: once in the subhost's mount namespace, /proc/INIT/ns is no
    // longer the host's view.
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Used when SESSION's program does not exist inside (e.g. the default
/// `/bin/bash -l` in a busybox root).
const FALLBACK_SESSION: [&str; 2] = ["/bin/sh", "-l"];

/// What runs inside.
pub struct Session {
    argv: Vec<CString>,
    /// Run instead when `argv`'s program is not found inside.
    fallback: Option<Vec<CString>>,
}

impl Session {
    /// COMMAND if given, else the config's SESSION with a fallback.
    pub fn choose(layout: &Layout, base: &Path, command: Vec<String>) -> Result<Session> {
        if !command.is_empty() {
            return Ok(Session {
                argv: cstrings(&command)?,
                fallback: None,
            });
        }
        let cfg = config::load(&layout.config(), &layout.name, base)?;
        let fallback = (cfg.session != FALLBACK_SESSION).then(|| {
            FALLBACK_SESSION
                .iter()
                .map(|a| CString::new(*a).expect("no NUL"))
                .collect()
        });
        Ok(Session {
            argv: cstrings(&cfg.session)?,
            fallback,
        })
    }
}

fn cstrings(args: &[String]) -> Result<Vec<CString>> {
    args.iter()
        .map(|a| CString::new(a.as_bytes()).context("an argument contains a NUL byte"))
        .collect()
}

/// The running init, held by fds that stay valid for it alone.
pub struct RunningInit {
    init: ProcId,
    pidfd: PidFd,
    /// The init's root directory, in the subhost's mount namespace.
    root: OwnedFd,
    /// The init's capability bounding set.
    capbnd: u64,
    /// The init's cgroup directories, one per hierarchy, as seen on the host.
    cgroups: Vec<PathBuf>,
    /// The init's user namespace when it is not the launcher's (USERNS):
    /// joined first, as its root.
    userns: Option<OwnedFd>,
    /// The filter the init runs under, when it runs under one.
    seccomp: Option<Filter>,
    /// The init's no_new_privs.
    no_new_privs: bool,
}

impl RunningInit {
    pub fn open(name: &str, init: ProcId) -> Result<RunningInit> {
        let pid = init.pid;
        let gone = || anyhow::anyhow!("subhost {name} stopped while entering it");
        let pidfd = PidFd::open(pid).map_err(|_| gone())?;
        let root = open_dir(Path::new(&format!("/proc/{pid}/root")))?;
        let status =
            procfs::status(pid).with_context(|| format!("cannot read /proc/{pid}/status"))?;
        let capbnd = procfs::capbnd(&status)
            .with_context(|| format!("no CapBnd line in /proc/{pid}/status"))?;
        let cgroups = cgroup::dirs_of(Pid::from_raw(pid))
            .with_context(|| format!("cannot find the cgroups of init PID {pid}"))?;
        let ns = |who: &str| -> Result<OwnedFd> {
            let path = format!("/proc/{who}/ns/user");
            Ok(File::open(&path)
                .with_context(|| format!("cannot open {path}"))?
                .into())
        };
        let userns = ns(&pid.to_string())?;
        let userns = (!crate::userns::same_ns(&userns, &ns("self")?)).then_some(userns);
        let seccomp = match procfs::field(&status, "Seccomp") {
            Some("0") => None,
            Some(_) => Some(init_filter(name, init)?),
            None => bail!("no Seccomp line in /proc/{pid}/status"),
        };
        let no_new_privs = procfs::field(&status, "NoNewPrivs") == Some("1");
        // Everything above was opened by PID. The init had that PID before
        // and still has it now, and a PID is not reused while its process
        // lives: so all of it is the init's, not a recycled PID's.
        if state::running_init(name) != Some(init) || pidfd.wait_exit(Duration::ZERO) {
            return Err(gone());
        }
        Ok(RunningInit {
            init,
            pidfd,
            root,
            capbnd,
            cgroups,
            userns,
            seccomp,
            no_new_privs,
        })
    }
}

/// The filter of a subhost whose init runs under one: the one `start`
/// applied, from its record (a name added to SYSCALLS_ALLOW since is not
/// the init's to allow, so not the entered process's either). Without a
/// record (an init started by an older launcher) it is built from the
/// config, found through the init's root, its `live` directory; should
/// that config have turned the filter off since, or be unreadable, the
/// default filter is used: never less than the init has.
fn init_filter(name: &str, init: ProcId) -> Result<Filter> {
    if let Some(applied) = state::applied(name, init) {
        return Filter::wanted(true, &applied.syscalls_allow)?
            .context("no seccomp filter for the entered command");
    }
    let pid = init.pid;
    let live = std::fs::read_link(format!("/proc/{pid}/root")).ok();
    let dir = live.as_deref().and_then(Path::parent);
    let mut cfg = match dir {
        Some(dir) => {
            let base = dir.parent().unwrap_or(Path::new("/"));
            config::load(&dir.join("config"), name, base)
                .unwrap_or_else(|_| config::Config::defaults(name))
        }
        None => config::Config::defaults(name),
    };
    cfg.seccomp = true;
    Filter::wanted(cfg.seccomp, &cfg.syscalls_allow)?
        .context("no seccomp filter for the entered command")
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(file.into())
}

/// Whether the command gets a pty, and how the relay treats it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PtyUse {
    /// No std stream is a terminal: they pass straight through.
    None,
    /// stdin is a terminal: an interactive session.
    Interactive,
    /// stdin is not a terminal but stdout or stderr is. The caller's
    /// terminal must not enter the subhost (its processes could reopen it
    /// through /proc/PID/fd and inject input with TIOCSTI), so the command
    /// still gets a pty, with echo off so piped input is not shown.
    OutputOnly,
}

impl PtyUse {
    pub fn for_std_streams() -> PtyUse {
        let is_tty = |fd: RawFd| {
            // SAFETY: 0..=2 are open for the life of the process (or isatty
            // just fails with EBADF); the borrow ends within this call.
            tty::is_tty(unsafe { BorrowedFd::borrow_raw(fd) })
        };
        if is_tty(0) {
            PtyUse::Interactive
        } else if is_tty(1) || is_tty(2) {
            PtyUse::OutputOnly
        } else {
            PtyUse::None
        }
    }
}

/// Opens a pty of the subhost's own devpts: `/dev/pts/ptmx` resolved inside
/// `root` as if it were `/`, so no symlink the subhost plants there can
/// lead to the host's devpts (or anywhere else outside it).
fn open_subhost_pty(root: BorrowedFd<'_>) -> Result<tty::Pty> {
    let ptmx = sys::openat2(
        root,
        c"dev/pts/ptmx",
        libc::O_PATH | libc::O_CLOEXEC,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
    .context("cannot find /dev/pts/ptmx inside the subhost")?;
    // An O_PATH fd can be opened for real through its /proc/self/fd link.
    let path = PathBuf::from(format!("/proc/self/fd/{}", ptmx.as_raw_fd()));
    tty::open_pty(&path).context("cannot open a pty from the subhost's /dev/pts/ptmx")
}

/// What the joiner needs. Built before the fork; only the joiner uses it.
struct Joiner {
    init_pid: i32,
    pidfd: PidFd,
    root: OwnedFd,
    /// `cgroup.procs` of each of the init's cgroups.
    procs: Vec<CString>,
    userns: Option<OwnedFd>,
    slave: Option<OwnedFd>,
    /// Given std streams (never with `slave`); all above 2.
    stdio: Option<[OwnedFd; 3]>,
    /// Where the joiner says what became of it.
    report: Channel,
    cmd: Command,
}

/// What the command process needs; it has its own copy after the clone.
struct Command {
    name: String,
    session: Session,
    env: Vec<CString>,
    capbnd: u64,
    seccomp: Option<Filter>,
    no_new_privs: bool,
    pty: PtyUse,
    /// Start a session of its own, so that it and what it starts can be
    /// killed together (with a pty, making it controlling does that).
    own_session: bool,
    report: RawFd,
}

/// Runs `session` inside under the caller's terminal (through a pty of the
/// subhost's when `pty` says so), supervised; returns its status.
pub fn run(name: &str, target: RunningInit, session: Session, pty: PtyUse) -> Result<i32> {
    // Blocked from here on: the supervisor takes them from a signalfd, and
    // the command unblocks them before exec.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&supervisor::signals()), None)
        .context("cannot block signals")?;
    let (command_pid, master) = launch(name, target, session, Streams::Caller(pty))?;
    info!("entered {name}: command PID {command_pid} (host view)");
    let status = supervisor::supervise(command_pid, master);
    if status.is_err() {
        // Nobody would relay its terminal or wait for it any more.
        let _ = nix::sys::signal::kill(command_pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(command_pid, None);
    }
    status
}

/// The std streams of a command run by [`run_inside`].
pub struct Stdio<'a> {
    pub stdin: BorrowedFd<'a>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
}

/// Runs `argv` inside the running subhost `name`, whose init is `init`,
/// exactly as `enter` would (namespaces, cgroups, root, capabilities) but
/// with the given std streams and in a session of its own. Returns its
/// status as a shell reports it (127 not found, 126 not executable, 128+N
/// killed by signal N). When `timeout` passes first, its whole session is
/// SIGKILLed and the status is 128+9; processes it moved out of its session
/// are left to the subhost.
pub fn run_inside(
    name: &str,
    init: ProcId,
    argv: &[String],
    stdio: Stdio<'_>,
    timeout: Duration,
) -> Result<i32> {
    let target = RunningInit::open(name, init)?;
    let session = Session {
        argv: cstrings(argv)?,
        fallback: None,
    };
    if session.argv.is_empty() {
        bail!("no command to run inside {name}");
    }
    let fds = [stdio.stdin, stdio.stdout, stdio.stderr]
        .map(|fd| fd.try_clone_to_owned().context("cannot copy a std stream"));
    let [i, o, e] = fds;
    let (pid, _) = launch(name, target, session, Streams::Given([i?, o?, e?]))?;
    wait_bounded(pid, timeout)
}

/// Waits for our child `pid` up to `timeout`, then kills its session.
fn wait_bounded(pid: Pid, timeout: Duration) -> Result<i32> {
    use nix::sys::wait::{waitpid, WaitStatus};
    // An unreaped child of ours: its PID cannot be recycled under us.
    let exited = match PidFd::open(pid.as_raw()) {
        Ok(fd) => fd.wait_exit(timeout),
        Err(_) => true,
    };
    if !exited {
        log::warn!("PID {pid} still running after {timeout:?}: killing its session");
        let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    }
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot wait for PID {pid}")),
        }
    }
}

/// Where the command's std streams come from.
enum Streams {
    /// The launcher's caller's, through a pty of the subhost as `PtyUse`
    /// says.
    Caller(PtyUse),
    /// These, as stdin, stdout and stderr.
    Given([OwnedFd; 3]),
}

/// Forks the joiner, which makes the command our child inside the subhost;
/// returns its PID (host view) and the pty master when it has one.
fn launch(
    name: &str,
    target: RunningInit,
    session: Session,
    streams: Streams,
) -> Result<(Pid, Option<OwnedFd>)> {
    let (pty, stdio) = match streams {
        Streams::Caller(pty) => (pty, None),
        Streams::Given(fds) => (PtyUse::None, Some(fds)),
    };
    let terminal = match pty {
        PtyUse::None => None,
        _ => Some(open_subhost_pty(target.root.as_fd())?),
    };
    let procs = target
        .cgroups
        .iter()
        .map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .context("a cgroup path contains a NUL byte")?;
    let (report_r, report_w) = process::channel()?;
    let stdio_given = stdio.is_some();
    let (master, slave) = match terminal {
        Some(p) => (Some(p.master), Some(p.slave)),
        None => (None, None),
    };
    let report_raw = report_w.as_fd().as_raw_fd();
    let joiner = Joiner {
        init_pid: target.init.pid,
        pidfd: target.pidfd,
        root: target.root,
        procs,
        userns: target.userns,
        slave,
        stdio,
        report: report_w,
        cmd: Command {
            name: name.to_string(),
            session,
            env: sandbox::session_env(),
            capbnd: target.capbnd,
            seccomp: target.seccomp,
            no_new_privs: target.no_new_privs,
            pty,
            own_session: stdio_given,
            report: report_raw,
        },
    };

    // SAFETY: the launcher is single-threaded, so the joiner may allocate and
    // use any library code; it leaves only through exit_now.
    let joiner_pid = match unsafe { process::fork() }.context("cannot fork")? {
        ForkResult::Child => {
            drop(report_r);
            drop(master);
            run_joiner(joiner)
        }
        ForkResult::Parent { child } => child,
    };
    drop(joiner);
    // One message: the command's PID or why there is none. The end of the
    // stream alone (the joiner exited, the command closed its copy first
    // thing) means the joiner died.
    let report = report_r.recv();
    let _ = nix::sys::wait::waitpid(joiner_pid, None);
    match report {
        Ok(Some(Message::Pid(pid))) => Ok((Pid::from_raw(pid), master)),
        Ok(Some(Message::Failed(text))) => bail!("cannot enter subhost {name}: {text}"),
        _ => bail!("cannot enter subhost {name}: the joiner died"),
    }
}

/// The joiner: reports the command's PID, or what went wrong.
fn run_joiner(j: Joiner) -> ! {
    let (code, msg) = match join_and_clone(&j) {
        Ok(pid) => (0, Message::Pid(pid.as_raw())),
        Err(e) => (1, Message::Failed(format!("{e:#}"))),
    };
    let _ = j.report.send(&msg);
    sys::exit_now(code)
}

fn join_and_clone(j: &Joiner) -> Result<Pid> {
    if let Some(slave) = &j.slave {
        nix::unistd::dup2_stdin(slave).context("cannot put the pty on stdin")?;
        nix::unistd::dup2_stdout(slave).context("cannot put the pty on stdout")?;
        nix::unistd::dup2_stderr(slave).context("cannot put the pty on stderr")?;
    } else if let Some([i, o, e]) = &j.stdio {
        nix::unistd::dup2_stdin(i).context("cannot set up stdin")?;
        nix::unistd::dup2_stdout(o).context("cannot set up stdout")?;
        nix::unistd::dup2_stderr(e).context("cannot set up stderr")?;
    }
    // The joiner's std streams were the caller's; with a pty they are now
    // the subhost's. Everything else the launcher had open goes here, the
    // pty slave's original fd included.
    let mut keep = vec![
        j.pidfd.as_fd().as_raw_fd(),
        j.root.as_raw_fd(),
        j.report.as_fd().as_raw_fd(),
    ];
    keep.extend(j.userns.as_ref().map(|u| u.as_raw_fd()));
    close_all_but(&keep)?;
    // The command is cloned from here: it must not carry the caller's
    // login session, and only the host's root may unset it.
    sandbox::reset_loginuid();
    // As the host's root: cgroup v1 hierarchies are not delegated.
    join_cgroups(&j.procs)?;
    if let Some(user) = &j.userns {
        crate::userns::become_root_of(user.as_fd())
            .context("cannot join the subhost's user namespace as its root")?;
        close_range(user.as_raw_fd() as u32, user.as_raw_fd() as u32)?;
    }
    join_namespaces(j.init_pid, &j.pidfd)?;
    nix::unistd::fchdir(&j.root).context("cannot enter the init's root")?;
    nix::unistd::chroot(".").context("cannot chroot into the init's root")?;
    nix::unistd::chdir("/").context("cannot chdir to / inside")?;
    // Closed, not dropped: their owners in `j` must not close the numbers
    // again once something else may have them.
    close_range(
        j.pidfd.as_fd().as_raw_fd() as u32,
        j.pidfd.as_fd().as_raw_fd() as u32,
    )?;
    close_range(j.root.as_raw_fd() as u32, j.root.as_raw_fd() as u32)?;
    spawn_command(&j.cmd)
}

/// Closes every fd above 2 except `keep`.
fn close_all_but(keep: &[RawFd]) -> Result<()> {
    let all: Vec<RawFd> = [0, 1, 2].into_iter().chain(keep.iter().copied()).collect();
    sys::close_all_but(&all).context("cannot close the launcher's file descriptors")
}

fn close_range(first: u32, last: u32) -> Result<()> {
    sys::close_range(first, last, false).context("cannot close the launcher's file descriptors")
}

/// Moves the joiner, and so the command, into every cgroup of the init:
/// accounted and limited with the subhost, and killed with it.
fn join_cgroups(procs: &[CString]) -> Result<()> {
    for file in procs {
        let path = Path::new(std::ffi::OsStr::from_bytes(file.as_bytes()));
        std::fs::write(path, "0").with_context(|| {
            format!(
                "cannot join the subhost's cgroup ({} refused this process)",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// All of the init's namespaces in one step through its pidfd (Linux 5.8);
/// older kernels get one `/proc/INIT/ns/*` fd per namespace.
fn join_namespaces(init_pid: i32, pidfd: &PidFd) -> Result<()> {
    let all = NAMESPACES
        .iter()
        .fold(CloneFlags::empty(), |acc, (_, f)| acc | *f);
    match nix::sched::setns(pidfd, all) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => join_namespaces_one_by_one(init_pid, pidfd),
        Err(Errno::ESRCH) => bail!("the subhost's init exited while entering it"),
        Err(e) => Err(e).context("cannot join the init's namespaces (setns)"),
    }
}

fn join_namespaces_one_by_one(init_pid: i32, pidfd: &PidFd) -> Result<()> {
    let mut fds = Vec::new();
    for (ns, flag) in NAMESPACES {
        let path = format!("/proc/{init_pid}/ns/{ns}");
        let fd = File::open(&path).with_context(|| format!("cannot open {path}"))?;
        fds.push((OwnedFd::from(fd), flag, path));
    }
    // Opened by PID: only if the init is still alive were they its own.
    if pidfd.wait_exit(Duration::ZERO) {
        bail!("the subhost's init exited while entering it");
    }
    for (fd, flag, path) in fds {
        nix::sched::setns(&fd, flag).with_context(|| format!("cannot join {path}"))?;
    }
    Ok(())
}

/// Makes the command the launcher's child (the joiner's sibling), in the
/// subhost's PID namespace (joined above, for children).
fn spawn_command(cmd: &Command) -> Result<Pid> {
    // SAFETY: the joiner is single-threaded (a fork of the launcher); the
    // command leaves through exec or exit_now.
    match unsafe { process::sibling() }.context("cannot create the command's process (clone)")? {
        ForkResult::Child => command_main(cmd),
        ForkResult::Parent { child } => Ok(child),
    }
}

/// The command's process: its terminal, signals and capabilities, then exec.
fn command_main(cmd: &Command) -> ! {
    // The report channel is the joiner's business; this process's copy is
    // closed before anything else so nobody inside can write to it.
    let _ = sys::close_range(cmd.report as u32, cmd.report as u32, false);
    let code = match prepare_command(cmd) {
        Ok(()) => exec_session(cmd),
        Err(e) => {
            eprintln!("subhost-launch: enter {}: {e:#}", cmd.name);
            1
        }
    };
    sys::exit_now(code)
}

fn prepare_command(cmd: &Command) -> Result<()> {
    if cmd.own_session {
        nix::unistd::setsid().context("cannot start a session")?;
    }
    if cmd.pty != PtyUse::None {
        // SAFETY: fd 0 is the pty slave the joiner put there; ownership
        // passes to make_controlling, which keeps it open as fd 0.
        let slave = unsafe { OwnedFd::from_raw_fd(0) };
        tty::make_controlling(slave).context("cannot make the pty the command's terminal")?;
        if cmd.pty == PtyUse::OutputOnly {
            echo_off(0)?;
        }
    }
    // The init's profile: its filter (installed while CAP_SYS_ADMIN is still
    // held, as start does, so without no_new_privs), its no_new_privs, its
    // capabilities.
    if let Some(filter) = &cmd.seccomp {
        filter.install()?;
    }
    if cmd.no_new_privs {
        sys::set_no_new_privs().context("cannot set no_new_privs")?;
    }
    limit_caps(cmd.capbnd)?;
    process::reset_signals_for_exec()
}

fn echo_off(fd: RawFd) -> Result<()> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    // SAFETY: fd 0 is open (the pty slave) for the life of this process.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut t = tcgetattr(fd).context("cannot read the pty's settings")?;
    t.local_flags.remove(LocalFlags::ECHO | LocalFlags::ECHONL);
    tcsetattr(fd, SetArg::TCSANOW, &t).context("cannot turn off the pty's echo")
}

/// Leaves the command no capability outside `bnd`, the init's bounding
/// set: the bounding set itself, the inheritable set (which root's exec
/// would otherwise add to the permitted set) and the ambient set.
fn limit_caps(bnd: u64) -> Result<()> {
    let kept = |c: &Capability| c.index() < 64 && bnd & (1u64 << c.index()) != 0;
    for cap in privileges::known() {
        if kept(&cap) {
            continue;
        }
        caps::drop(None, CapSet::Bounding, cap).with_context(|| {
            format!(
                "cannot drop capability {} from the bounding set",
                cap.index()
            )
        })?;
    }
    let inheritable = caps::read(None, CapSet::Inheritable).context("cannot read capabilities")?;
    let inheritable = inheritable.into_iter().filter(kept).collect();
    caps::set(None, CapSet::Inheritable, &inheritable).context("cannot set capabilities")?;
    caps::clear(None, CapSet::Ambient).context("cannot clear ambient capabilities")
}

/// Execs the session (or its fallback); returns the exit code to use when
/// it cannot be run, after saying why on stderr.
fn exec_session(cmd: &Command) -> i32 {
    let (mut code, mut msg) = exec_search(&cmd.session.argv, &cmd.env);
    if code == 127 {
        if let Some(fallback) = &cmd.session.fallback {
            info!(
                "{} not found inside {}: running {}",
                cmd.session.argv[0].to_string_lossy(),
                cmd.name,
                fallback[0].to_string_lossy()
            );
            (code, msg) = exec_search(fallback, &cmd.env);
        }
    }
    eprintln!("subhost-launch: enter {}: {msg}", cmd.name);
    code
}

/// execvp inside the subhost with the session's PATH. Only returns on
/// failure: 127 when the program is not there, 126 when it is but cannot be
/// executed, as shells report them.
fn exec_search(argv: &[CString], env: &[CString]) -> (i32, String) {
    let prog = &argv[0];
    let shown = prog.to_string_lossy();
    if prog.as_bytes().contains(&b'/') {
        let e = exec(prog, argv, env);
        return failure(e, &shown);
    }
    let path = env
        .iter()
        .find_map(|e| e.to_bytes().strip_prefix(b"PATH="))
        .unwrap_or(b"/usr/sbin:/usr/bin:/sbin:/bin");
    let mut denied = None;
    for dir in path.split(|&b| b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let mut full = dir.to_vec();
        full.push(b'/');
        full.extend_from_slice(prog.as_bytes());
        let Ok(full) = CString::new(full) else {
            continue;
        };
        match exec(&full, argv, env) {
            Errno::ENOENT | Errno::ENOTDIR => {}
            Errno::EACCES => denied = Some((Errno::EACCES, full)),
            e => return failure(e, &full.to_string_lossy()),
        }
    }
    match denied {
        Some((e, full)) => failure(e, &full.to_string_lossy()),
        None => (127, format!("{shown}: command not found")),
    }
}

fn exec(path: &CStr, argv: &[CString], env: &[CString]) -> Errno {
    match nix::unistd::execve(path, argv, env) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

fn failure(e: Errno, what: &str) -> (i32, String) {
    match e {
        Errno::ENOENT | Errno::ENOTDIR => (127, format!("{what}: no such file inside the subhost")),
        e => (126, format!("{what}: cannot execute: {}", e.desc())),
    }
}

/// What `run` would do, for `--dry-run`.
pub fn print_plan(target: &RunningInit, session: &Session, pty: PtyUse) {
    let pid = target.init.pid;
    println!("# running: init PID {pid}");
    println!("# fork a joiner; it closes every fd but the few below, then:");
    println!("{}", sandbox::Setup::ResetLoginuid);
    for d in &target.cgroups {
        println!("echo $$ > {}/cgroup.procs", d.display());
    }
    if target.userns.is_some() {
        println!(
            "setns(/proc/{pid}/ns/user); setgroups(); setresgid(0); setresuid(0)   # its root: nsenter -U -S 0 -G 0"
        );
    }
    let names: Vec<&str> = NAMESPACES.iter().map(|(n, _)| *n).collect();
    println!(
        "setns(pidfd of {pid}, {})   # nsenter -t {pid} -C -i -u -n -p -m",
        names.join("|")
    );
    println!("chroot /proc/{pid}/root; cd /   # fd opened before setns");
    println!("# clone(CLONE_PARENT) the command into the subhost's PID namespace; it:");
    let dropped: Vec<&str> = (0..config::CAPABILITIES.len())
        .filter(|&c| target.capbnd & (1u64 << c) == 0)
        .map(|c| config::CAPABILITIES[c])
        .collect();
    if dropped.is_empty() {
        println!("#   keeps the init's capability bounding set (full); clears ambient caps");
    } else {
        println!(
            "#   drops from its bounding, inheritable and ambient sets: {}",
            dropped.join(" ")
        );
    }
    match &target.seccomp {
        Some(f) => println!("#   installs the init's filter: {f}"),
        None => println!("#   no seccomp filter (the init runs without one)"),
    }
    if target.no_new_privs {
        println!("#   sets no_new_privs, as the init has it");
    }
    match pty {
        PtyUse::None => println!("#   uses the caller's std streams (no terminal among them)"),
        PtyUse::Interactive => println!(
            "#   gets a pty of /proc/{pid}/root/dev/pts/ptmx as its controlling terminal; relayed in raw mode"
        ),
        PtyUse::OutputOnly => println!(
            "#   gets a pty of /proc/{pid}/root/dev/pts/ptmx with echo off (output is a terminal)"
        ),
    }
    let show = |argv: &[CString]| {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    print!("exec {}", show(&session.argv));
    match &session.fallback {
        Some(f) => println!("   # if not found inside: exec {}", show(f)),
        None => println!(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tty::test_support::{fork_with, serial, LIMIT};

    #[test]
    fn close_all_but_keeps_exactly_the_listed_fds() {
        let _one = serial();
        let mut child = fork_with(|| {
            let open: Vec<OwnedFd> = (0..6)
                .map(|_| File::open("/dev/null").unwrap().into())
                .collect();
            let keep = [open[1].as_raw_fd(), open[4].as_raw_fd()];
            if close_all_but(&keep).is_err() {
                return 2;
            }
            let left: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|&fd| fd > 2)
                .collect();
            // read_dir's own fd is among them.
            std::mem::forget(open);
            let extra = left.iter().filter(|fd| !keep.contains(fd)).count();
            if keep.iter().all(|fd| left.contains(fd)) && extra <= 1 {
                0
            } else {
                3
            }
        });
        assert_eq!(child.code(LIMIT), 0);
    }

    #[test]
    fn limit_caps_leaves_nothing_outside_the_bounding_set() {
        let _one = serial();
        let time = config::capability_number("CAP_SYS_TIME").unwrap();
        let module = config::capability_number("CAP_SYS_MODULE").unwrap();
        let mut child = fork_with(move || {
            let full =
                procfs::capbnd(&std::fs::read_to_string("/proc/self/status").unwrap()).unwrap();
            let want = full & !(1u64 << time) & !(1u64 << module);
            // Raise an inheritable cap that is about to leave the bounding
            // set: it must go too.
            if caps::raise(None, CapSet::Inheritable, Capability::CAP_SYS_TIME).is_err() {
                return 2;
            }
            if limit_caps(want).is_err() {
                return 3;
            }
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                    .unwrap()
            };
            let ok =
                field("CapBnd:") == want && field("CapInh:") & !want == 0 && field("CapAmb:") == 0;
            if ok {
                0
            } else {
                4
            }
        });
        assert_eq!(child.code(LIMIT), 0);
    }

    #[test]
    fn exec_search_reports_missing_and_unexecutable() {
        let env = vec![CString::new("PATH=/nonexistent-dir:/proc/self").unwrap()];
        let argv = |s: &str| vec![CString::new(s).unwrap()];
        let (code, msg) = exec_search(&argv("no-such-program-here"), &env);
        assert_eq!(code, 127, "{msg}");
        assert!(msg.contains("command not found"), "{msg}");
        let (code, msg) = exec_search(&argv("/nonexistent-dir/x"), &env);
        assert_eq!(code, 127, "{msg}");
        // A directory is there but cannot be executed.
        let (code, msg) = exec_search(&argv("/proc/self/"), &env);
        assert_eq!(code, 126, "{msg}");
    }
}
