//! Supervised services: long-running commands the init starts once the
//! session (BOOT) is done, in declaration order; restarts by policy with
//! backoff (`restart`), health checks with their own timeout, output
//! relayed line by line to the console as `NAME: line`, a stop in reverse
//! order, and a state file for the host's `status`.
//!
//! Nothing here sleeps or polls: every wait is a timer the loop's one
//! blocking wait is bounded by (`next_due`), or a pipe or child it wakes
//! for.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::{c_char, CStr};
use core::fmt::Write as _;

use crate::lines::{self, Lines};
use crate::restart::{self, Window};
use crate::sys::{self, Errno, Millis, Pid};

/// The signal that stops the services (in reverse order) but not the init:
/// sent by `stop` before it runs HALT. SIGRTMIN+3 as glibc numbers it,
/// which systemd also takes as "halt".
pub const STOP_SIGNAL: i32 = 37;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Restart {
    No,
    OnFailure,
    Always,
}

impl Restart {
    pub fn parse(text: &str) -> Option<Restart> {
        match text {
            "no" => Some(Restart::No),
            "on-failure" => Some(Restart::OnFailure),
            "always" => Some(Restart::Always),
            _ => None,
        }
    }
}

pub struct Spec {
    pub name: &'static str,
    pub restart: Restart,
    pub argv: Vec<&'static CStr>,
    pub health: Vec<&'static CStr>,
    /// Its sockets (socket activation): N descriptors of the init's from
    /// FD on, close-on-exec there, handed to it alone at 3...
    pub listen: Option<(i32, i32)>,
}

pub struct HealthOptions {
    pub interval: Millis,
    pub timeout: Millis,
    pub retries: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not started yet: BOOT is still running.
    Starting,
    Running,
    /// Ended; started again when `due`.
    Restarting,
    /// Given up on: not runnable, or too many restarts.
    Failed,
    /// Stopped by `stop` (or the init's shutdown).
    Stopped,
    /// Ended and not to be restarted by its policy.
    Exited,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Failed => "failed",
            State::Stopped => "stopped",
            State::Exited => "exited",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Health {
    None,
    Starting,
    Ok,
    Unhealthy,
}

impl Health {
    fn name(self) -> &'static str {
        match self {
            Health::None => "none",
            Health::Starting => "starting",
            Health::Ok => "ok",
            Health::Unhealthy => "unhealthy",
        }
    }
}

struct Service {
    spec: Spec,
    state: State,
    /// Also its process group.
    pid: Option<Pid>,
    /// Wall-clock seconds of its current start, for uptime on the host.
    started: u64,
    started_at: Millis,
    restarts: u32,
    /// Failures in a row, for the backoff.
    streak: u32,
    window: Window,
    last_exit: Option<i32>,
    /// When it is started again (state Restarting).
    due: Option<Millis>,
    /// The pipe its output comes through; the init keeps both ends, so
    /// it survives restarts and never reads EOF.
    out: Option<(i32, i32)>,
    lines: Lines,
    health: Health,
    /// Failed checks in a row.
    fails: u32,
    /// A running check (its own process group) and when it is killed;
    /// no deadline once it has been.
    check: Option<(Pid, Option<Millis>)>,
    next_check: Option<Millis>,
    /// When it gets SIGKILL if it has not exited (stopping, or unhealthy).
    kill_at: Option<Millis>,
    /// Killed for being unhealthy: restarted even if it exits 0.
    unhealthy_kill: bool,
}

pub struct Services {
    list: Vec<Service>,
    health: HealthOptions,
    grace: Millis,
    /// The file the state is written to, if any.
    state_fd: Option<i32>,
    /// Counts the state's versions, so that a reader can tell a torn read.
    generation: u64,
    dirty: bool,
    /// No more starts: a stop or the init's shutdown has begun.
    halted: bool,
    /// Stopping in reverse order: the one being waited for.
    stopping: Option<usize>,
}

impl Services {
    /// Services for `specs`; nothing is started yet.
    pub fn new(
        specs: Vec<Spec>,
        health: HealthOptions,
        grace: Millis,
        state_fd: Option<i32>,
    ) -> Services {
        let list = specs
            .into_iter()
            .map(|spec| Service {
                health: if spec.health.is_empty() {
                    Health::None
                } else {
                    Health::Starting
                },
                spec,
                state: State::Starting,
                pid: None,
                started: 0,
                started_at: 0,
                restarts: 0,
                streak: 0,
                window: Window::default(),
                last_exit: None,
                due: None,
                out: None,
                lines: Lines::default(),
                fails: 0,
                check: None,
                next_check: None,
                kill_at: None,
                unhealthy_kill: false,
            })
            .collect();
        Services {
            list,
            health,
            grace,
            state_fd,
            generation: 0,
            dirty: true,
            halted: false,
            stopping: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Starts every service, in declaration order.
    pub fn start_all(&mut self) {
        if self.halted {
            return;
        }
        let now = sys::now();
        for i in 0..self.list.len() {
            self.start(i, now);
        }
    }

    fn start(&mut self, i: usize, now: Millis) {
        let Some(s) = self.list.get_mut(i) else {
            return;
        };
        self.dirty = true;
        s.due = None;
        if s.out.is_none() {
            match sys::pipe() {
                Ok((r, w)) => {
                    if let Err(e) = sys::set_nonblock(r) {
                        note(
                            s.spec.name,
                            format_args!("cannot set up its output: {}", Errno(e)),
                        );
                    }
                    s.out = Some((r, w));
                }
                Err(e) => {
                    note(
                        s.spec.name,
                        format_args!("failed: cannot make a pipe: {}", Errno(e)),
                    );
                    s.state = State::Failed;
                    return;
                }
            }
        }
        let out = s.out.map_or(1, |(_, w)| w);
        let listen = s.spec.listen.map(|(fd, n)| (fd, n, s.spec.name));
        match spawn(&s.spec.argv, out, false, listen) {
            Ok(pid) => {
                s.state = State::Running;
                s.pid = Some(pid);
                s.started = sys::wall_secs();
                s.started_at = now;
                s.fails = 0;
                if !s.spec.health.is_empty() {
                    s.health = Health::Starting;
                    s.next_check = Some(now + self.health.interval);
                }
            }
            Err(e) => {
                let program = s
                    .spec
                    .argv
                    .first()
                    .and_then(|p| p.to_str().ok())
                    .unwrap_or("?");
                note(
                    s.spec.name,
                    format_args!("failed: cannot run '{program}': {}", Errno(e)),
                );
                s.state = State::Failed;
                s.last_exit = Some(if e == libc::ENOENT || e == libc::ENOTDIR {
                    127
                } else {
                    126
                });
            }
        }
    }

    /// Accounts for the exit of `pid` with status `code`; false if it is
    /// none of ours.
    pub fn on_exit(&mut self, pid: Pid, code: i32) -> bool {
        let now = sys::now();
        if let Some(s) = self
            .list
            .iter_mut()
            .find(|s| s.check.is_some_and(|c| c.0 == pid))
        {
            s.check = None;
            let name = s.spec.name;
            let retries = self.health.retries;
            if s.state != State::Running {
                return true;
            }
            s.next_check = Some(now + self.health.interval);
            self.dirty |= checked(s, code, retries);
            if s.fails >= retries && s.kill_at.is_none() {
                note(
                    name,
                    format_args!("unhealthy {} times in a row: restarting it", s.fails),
                );
                s.unhealthy_kill = true;
                signal_group(s.pid, libc::SIGTERM);
                signal_group(s.pid, libc::SIGCONT);
                s.kill_at = Some(now + self.grace);
            }
            return true;
        }
        let Some(i) = self.list.iter().position(|s| s.pid == Some(pid)) else {
            return false;
        };
        self.dirty = true;
        let halted = self.halted;
        let Some(s) = self.list.get_mut(i) else {
            return true;
        };
        s.pid = None;
        s.kill_at = None;
        s.next_check = None;
        s.last_exit = Some(code);
        if let Some((check, _)) = s.check.take() {
            signal_group(Some(check), libc::SIGKILL);
        }
        drain(s);
        if !s.spec.health.is_empty() {
            s.health = Health::Starting;
        }
        let unhealthy = core::mem::take(&mut s.unhealthy_kill);
        if halted {
            s.state = State::Stopped;
            if self.stopping == Some(i) {
                self.stop_next(now);
            }
            return true;
        }
        let again = match s.spec.restart {
            Restart::No => false,
            Restart::OnFailure => code != 0 || unhealthy,
            Restart::Always => true,
        };
        if !again {
            note(s.spec.name, format_args!("exited with status {code}"));
            s.state = State::Exited;
            return true;
        }
        if now.saturating_sub(s.started_at) >= restart::WINDOW {
            s.streak = 0;
        }
        if !s.window.allow(now) {
            note(
                s.spec.name,
                format_args!(
                    "failed: exited with status {code}, and it was restarted {} times within {} s",
                    restart::LIMIT,
                    restart::WINDOW / 1000
                ),
            );
            s.state = State::Failed;
            return true;
        }
        let delay = restart::backoff(s.streak);
        s.streak = s.streak.saturating_add(1);
        note(
            s.spec.name,
            format_args!("exited with status {code}; restarting in {} ms", delay),
        );
        s.state = State::Restarting;
        s.due = Some(now + delay);
        true
    }

    /// The earliest time a timer of a service is due, if any is armed.
    pub fn next_due(&self) -> Option<Millis> {
        self.list
            .iter()
            .flat_map(|s| [s.due, s.check.and_then(|c| c.1), s.next_check, s.kill_at])
            .flatten()
            .min()
    }

    /// Does what is due at `now`: restarts, checks started or killed,
    /// SIGKILL for services that outlived their grace.
    pub fn tick(&mut self) {
        let now = sys::now();
        for i in 0..self.list.len() {
            let Some(s) = self.list.get_mut(i) else {
                continue;
            };
            if s.kill_at.is_some_and(|t| t <= now) {
                s.kill_at = None;
                note(
                    s.spec.name,
                    format_args!("still running after the grace period: SIGKILL"),
                );
                signal_group(s.pid, libc::SIGKILL);
            }
            if let Some((pid, Some(until))) = s.check {
                if until <= now {
                    note(s.spec.name, format_args!("health check timed out: killed"));
                    signal_group(Some(pid), libc::SIGKILL);
                    // Counted as failed when it is reaped.
                    s.check = Some((pid, None));
                }
            }
            if s.next_check.is_some_and(|t| t <= now) && s.check.is_none() {
                s.next_check = None;
                let out = s.out.map_or(1, |(_, w)| w);
                match spawn(&s.spec.health, out, true, None) {
                    Ok(pid) => s.check = Some((pid, Some(now + self.health.timeout))),
                    Err(e) => {
                        note(
                            s.spec.name,
                            format_args!("cannot run its health check: {}", Errno(e)),
                        );
                        s.next_check = Some(now + self.health.interval);
                        self.dirty |= checked(s, 127, self.health.retries);
                    }
                }
            }
            if s.due.is_some_and(|t| t <= now) && !self.halted {
                self.restarts_one(i, now);
            }
        }
    }

    fn restarts_one(&mut self, i: usize, now: Millis) {
        if let Some(s) = self.list.get_mut(i) {
            s.restarts = s.restarts.saturating_add(1);
        }
        self.start(i, now);
    }

    /// Stops the services in reverse order, each with SIGTERM and after the
    /// grace period SIGKILL; none is started again.
    pub fn stop_all(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        self.halt();
        self.stopping = Some(self.list.len());
        self.stop_next(sys::now());
    }

    /// No more starts or restarts (the init is shutting down).
    pub fn halt(&mut self) {
        if self.halted {
            return;
        }
        self.halted = true;
        self.dirty = true;
        for s in &mut self.list {
            s.due = None;
            s.next_check = None;
            if let Some((pid, _)) = s.check.take() {
                signal_group(Some(pid), libc::SIGKILL);
            }
            if matches!(s.state, State::Starting | State::Restarting) {
                s.state = State::Stopped;
            }
        }
    }

    fn stop_next(&mut self, now: Millis) {
        let from = self.stopping.unwrap_or(0);
        let next = self
            .list
            .get(..from)
            .unwrap_or_default()
            .iter()
            .rposition(|s| s.pid.is_some());
        self.stopping = Some(next.unwrap_or(0));
        let Some(s) = next.and_then(|i| self.list.get_mut(i)) else {
            return;
        };
        note(s.spec.name, format_args!("stopping"));
        signal_group(s.pid, libc::SIGTERM);
        signal_group(s.pid, libc::SIGCONT);
        s.kill_at = Some(now + self.grace);
    }

    /// The read ends of the output pipes, for the loop's wait.
    pub fn poll_fds(&self, fds: &mut Vec<libc::pollfd>) {
        for s in &self.list {
            if let Some((r, _)) = s.out {
                fds.push(libc::pollfd {
                    fd: r,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
    }

    /// Relays what the pipes in `ready` hold.
    pub fn read_ready(&mut self, ready: &[libc::pollfd]) {
        for s in &mut self.list {
            let readable = s
                .out
                .is_some_and(|(r, _)| ready.iter().any(|p| p.fd == r && p.revents != 0));
            if readable {
                pump(s);
            }
        }
    }

    /// Relays what every pipe holds (without a signalfd to wake for them).
    pub fn read_all(&mut self) {
        for s in &mut self.list {
            pump(s);
        }
    }

    /// Relays what is left, unfinished last lines too (the init exits).
    pub fn flush(&mut self) {
        for s in &mut self.list {
            drain(s);
        }
    }

    /// Rewrites the state file if anything changed since it was written:
    /// `seq N`, a line per service, `end N`. The host reads it without
    /// locking; a read that met a rewrite has no matching `end N`.
    pub fn publish(&mut self) {
        let Some(fd) = self.state_fd.filter(|_| self.dirty) else {
            return;
        };
        self.dirty = false;
        self.generation += 1;
        let mut text = format!("seq {}\n", self.generation);
        for s in &self.list {
            let _ = writeln!(
                text,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                s.spec.name,
                s.state.name(),
                s.pid.unwrap_or(0),
                if s.pid.is_some() { s.started } else { 0 },
                s.restarts,
                s.last_exit.map_or(String::from("-"), |c| format!("{c}")),
                s.health.name()
            );
        }
        let _ = writeln!(text, "end {}", self.generation);
        if let Err(e) = sys::rewrite(fd, text.as_bytes()) {
            crate::logger::warn!("cannot write the services' state: {}", Errno(e));
        }
    }
}

/// Counts a finished check with status `code`; true when the health
/// shown changes.
fn checked(s: &mut Service, code: i32, retries: u32) -> bool {
    let before = s.health;
    if code == 0 {
        s.fails = 0;
        s.health = Health::Ok;
    } else {
        s.fails = s.fails.saturating_add(1);
        if s.fails >= retries || before != Health::Starting {
            s.health = Health::Unhealthy;
        }
    }
    s.health != before
}

/// Reads what the service's pipe holds now and relays its lines.
fn pump(s: &mut Service) {
    let Some((r, _)) = s.out else { return };
    let mut buf = [0u8; 4096];
    let name = s.spec.name;
    while let Ok(n @ 1..) = sys::read(r, &mut buf) {
        s.lines
            .feed(buf.get(..n).unwrap_or_default(), |line| emit(name, line));
    }
}

fn drain(s: &mut Service) {
    pump(s);
    let name = s.spec.name;
    s.lines.flush(|line| emit(name, line));
}

/// Writes `NAME: line` to the console in one write, so that lines of
/// several writers never interleave.
fn emit(name: &str, line: &[u8]) {
    let mut out = [0u8; 40 + lines::MAX];
    let mut len = 0;
    for part in [name.as_bytes(), b": ", line, b"\n"] {
        for &b in part {
            if let Some(slot) = out.get_mut(len) {
                *slot = b;
                len += 1;
            }
        }
    }
    sys::write_fd(1, out.get(..len).unwrap_or_default());
}

/// A line of the init's own about service `name`, to the console.
fn note(name: &str, args: core::fmt::Arguments) {
    let mut line = String::new();
    let _ = writeln!(line, "subhost-init: service {name}: {args}");
    sys::write_fd(1, line.as_bytes());
}

/// In a service's child, before exec: the sockets at `fd`.. moved to
/// 3.. (each source is at or above its target, and those below were
/// moved already), inheritable, and the sd_listen_fds variables set.
fn pass_sockets(fd: i32, n: i32, name: &str) -> Result<(), i32> {
    for i in 0..n {
        let (from, to) = (fd + i, 3 + i);
        if from == to {
            // SAFETY: F_SETFD on a descriptor of ours; clears close-on-exec.
            sys::check(unsafe { libc::fcntl(to, libc::F_SETFD, 0) })?;
        } else {
            sys::dup2(from, to)?;
        }
    }
    let mut names = String::new();
    for i in 0..n {
        if i > 0 {
            names.push(':');
        }
        names.push_str(name);
    }
    let vars = [
        ("LISTEN_PID", format!("{}", sys::getpid())),
        ("LISTEN_FDS", format!("{n}")),
        ("LISTEN_FDNAMES", names),
    ];
    for (key, value) in vars {
        let key = alloc::ffi::CString::new(key).map_err(|_| libc::EINVAL)?;
        let value = alloc::ffi::CString::new(value).map_err(|_| libc::EINVAL)?;
        // SAFETY: both are NUL-terminated; the child is single-threaded.
        sys::check(unsafe { libc::setenv(key.as_ptr(), value.as_ptr(), 1) })?;
    }
    Ok(())
}

fn signal_group(pid: Option<Pid>, sig: i32) {
    if let Some(pid) = pid {
        // ESRCH: gone already, which is what was wanted.
        let _ = sys::kill(-pid, sig);
    }
}

/// Forks and execs `argv` in a process group of its own, stdout and
/// stderr on `out` (stdout on /dev/null with `quiet`); the errno when it
/// could not be started or its program not run. The child reports a
/// failed exec through a close-on-exec pipe, read here until the exec.
///
/// With `listen` (FD, N, NAME) the child gets the N sockets at FD.. on
/// 3.., and LISTEN_FDS, LISTEN_PID (its own) and LISTEN_FDNAMES set, as
/// sd_listen_fds(3) reads them; every other descriptor above 2 it would
/// have is close-on-exec.
fn spawn(
    argv: &[&CStr],
    out: i32,
    quiet: bool,
    listen: Option<(i32, i32, &str)>,
) -> Result<Pid, i32> {
    let mut ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(core::ptr::null());
    let program = argv.first().ok_or(libc::EINVAL)?;
    let (err_r, err_w) = sys::pipe()?;
    // SAFETY: the init is single-threaded, so the child may run any code;
    // it only execs or exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let _ = sys::setpgid(0, 0);
        let _ = sys::dup2(out, 2);
        let null = quiet.then(|| {
            // SAFETY: a static NUL-terminated path; creates nothing.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY) }
        });
        let _ = sys::dup2(null.filter(|&fd| fd >= 0).unwrap_or(out), 1);
        let _ = sys::SigSet::empty().set_mask();
        if let Some((fd, n, name)) = listen {
            if pass_sockets(fd, n, name).is_err() {
                let e = sys::errno().to_ne_bytes();
                sys::write_fd(err_w, &e);
                // SAFETY: as below.
                unsafe { libc::_exit(126) }
            }
        }
        // SAFETY: program and ptrs are NUL-terminated, ptrs ends in a null
        // pointer, and both outlive the call.
        unsafe { libc::execvp(program.as_ptr(), ptrs.as_ptr()) };
        let e = sys::errno().to_ne_bytes();
        sys::write_fd(err_w, &e);
        // SAFETY: _exit skips atexit handlers that belong to the parent.
        unsafe { libc::_exit(127) }
    }
    let fork_errno = sys::errno();
    sys::close(err_w);
    if pid < 0 {
        sys::close(err_r);
        return Err(fork_errno);
    }
    let _ = sys::setpgid(pid, pid);
    let mut e = [0u8; 4];
    let got = sys::read(err_r, &mut e);
    sys::close(err_r);
    match got {
        Ok(4) => {
            // Reaped by the loop like any child; it is none of ours then.
            Err(i32::from_ne_bytes(e))
        }
        _ => Ok(pid),
    }
}
