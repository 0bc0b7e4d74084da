//! The PID-1 loop: wait for a signal or a service's output, act on it,
//! reap, run the services' timers, advance the shutdown. All signals stay
//! blocked and are taken with sigtimedwait, or with services from a signalfd
//! polled with their output pipes, so there are no handlers and no races
//! between them and the loop. The one
//! wait is bounded only by the next timer due; with none armed it sleeps
//! until something happens.

use alloc::vec::Vec;

use crate::cli::Options;
use crate::descriptors;
use crate::logger::{debug, info, trace, warn};
use crate::procs;
use crate::services::{self, Services};
use crate::session;
use crate::signals;
use crate::sys::{self, Errno, Millis, Pid, SigSet, Wait};
use crate::tty::Terminal;

/// How long to wait for SIGKILLed processes to be reaped before giving up
/// (one stuck in uninterruptible sleep must not hold the init forever).
const KILL_WAIT: Millis = 1000;

/// Exit status when the session could not be started at all.
pub const SPAWN_FAILED: i32 = 125;

struct Shutdown {
    /// End of the grace period: SIGKILL for what is left.
    deadline: Millis,
    /// When everyone else gets SIGTERM if the session is still running.
    everyone_at: Millis,
    everyone_sent: bool,
    killed_at: Option<Millis>,
}

struct Supervisor {
    o: Options,
    pid1: bool,
    tty: Option<Terminal>,
    /// The running session; its pid is also its process group id.
    session: Option<Pid>,
    /// The session's group, kept after it exits: its members may remain.
    pgid: Option<Pid>,
    /// The session's status once it has exited.
    status: Option<i32>,
    shutdown: Option<Shutdown>,
    services: Services,
    /// Signals as a descriptor, with services; `None` without (then
    /// sigtimedwait), or if it could not be made (then the services' output
    /// is read only at each wake-up).
    sfd: Option<i32>,
}

pub fn run(mut o: Options) -> i32 {
    let pid1 = sys::getpid() == 1;
    let signals = SigSet::catchable();
    // Block first, then reset: a signal in between must not kill us.
    if let Err(e) = signals.set_mask() {
        warn!("cannot block signals: {}", Errno(e));
    }
    sys::default_dispositions();
    if !pid1 {
        if let Err(e) = sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) {
            warn!("cannot become child subreaper: {}", Errno(e));
        }
    }
    if let Some(sig) = o.pdeathsig {
        if let Err(e) = sys::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) {
            warn!("cannot set the parent-death signal: {}", Errno(e));
        }
    }
    if let Some(fd) = o.state_fd {
        // Not the session's to write.
        if let Err(e) = sys::set_cloexec(fd) {
            warn!("--state-fd {fd}: {}", Errno(e));
            o.state_fd = None;
        }
    }
    // The sockets are their service's alone: not the session's, nor any
    // other child's.
    let mut kept: Vec<i32> = o.state_fd.into_iter().collect();
    for s in &o.services {
        if let Some((fd, n)) = s.listen {
            for i in fd..fd + n {
                if let Err(e) = sys::set_cloexec(i) {
                    warn!("--listen {}: fd {i}: {}", s.name, Errno(e));
                }
                kept.push(i);
            }
        }
    }
    let specs = core::mem::take(&mut o.services);
    let health = core::mem::replace(
        &mut o.health,
        services::HealthOptions {
            interval: 0,
            timeout: 0,
            retries: 0,
        },
    );
    let services = Services::new(specs, health, o.grace, o.state_fd);
    let mut sv = Supervisor {
        tty: Terminal::foreground(),
        services,
        sfd: None,
        pid1,
        session: None,
        pgid: None,
        status: None,
        shutdown: None,
        o,
    };
    if !sv.o.no_session {
        match session::spawn(&sv.o.command, sv.tty.as_ref()) {
            Ok(pid) => {
                info!("session started: pid {pid}");
                sv.session = Some(pid);
                sv.pgid = Some(pid);
            }
            Err(e) => {
                crate::logger::say(format_args!("cannot start the session: {}", Errno(e)));
                return SPAWN_FAILED;
            }
        }
    }
    // The session has its copies now; ours would keep its pipes open.
    descriptors::close_inherited(&kept);
    // Without services there is no pipe to watch, and no descriptor of the
    // init's own is wanted.
    if !sv.services.is_empty() {
        match signals.signalfd() {
            Ok(fd) => sv.sfd = Some(fd),
            Err(e) => warn!("cannot make a signalfd: {}", Errno(e)),
        }
    }
    if sv.o.no_session {
        sv.services.start_all();
    }
    loop {
        sv.services.publish();
        sv.wait(&signals);
        let none_left = sv.reap();
        sv.services.tick();
        if let Some(code) = sv.advance(none_left) {
            sv.services.flush();
            // The exit frees it all at once; freed piece by piece first, the
            // last piece would cost an munmap.
            core::mem::forget(sv);
            return code;
        }
    }
}

impl Supervisor {
    /// Sleeps until a signal, a service's output or the next timer; acts on
    /// the signals and relays the output.
    fn wait(&mut self, signals: &SigSet) {
        let timeout = self.timeout();
        let Some(sfd) = self.sfd else {
            if let Some(sig) = signals.wait(timeout) {
                self.on_signal(sig);
            }
            self.services.read_all();
            return;
        };
        let mut fds = alloc::vec![libc::pollfd {
            fd: sfd,
            events: libc::POLLIN,
            revents: 0,
        }];
        self.services.poll_fds(&mut fds);
        sys::poll(&mut fds, timeout);
        while let Some(sig) = sys::next_signal(sfd) {
            self.on_signal(sig);
        }
        self.services.read_ready(fds.get(1..).unwrap_or_default());
    }

    /// How long the loop may sleep: until the next shutdown step or
    /// service timer, forever when none is due.
    fn timeout(&self) -> Option<Millis> {
        let shutdown = self.shutdown.as_ref().map(|s| match s.killed_at {
            Some(at) => at + KILL_WAIT,
            None if s.everyone_sent => s.deadline,
            None => s.deadline.min(s.everyone_at),
        });
        let next = match (shutdown, self.services.next_due()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(next.saturating_sub(sys::now()))
    }

    fn on_signal(&mut self, sig: i32) {
        trace!("got signal {sig} ({})", signals::name(sig));
        match sig {
            libc::SIGCHLD => {}
            libc::SIGTERM => self.terminate(),
            services::STOP_SIGNAL if !self.services.is_empty() => self.services.stop_all(),
            libc::SIGCONT => {
                // The shell that stopped us resumed us in its foreground:
                // the terminal goes back to the session.
                if let (Some(t), Some(pid)) = (&self.tty, self.session) {
                    if t.is_home() {
                        t.give(pid);
                    }
                }
                self.forward(sig);
            }
            _ => self.forward(sig),
        }
    }

    fn forward(&self, sig: i32) {
        let to = self.o.forward_as(sig);
        if to == 0 {
            debug!("dropping signal {sig} ({})", signals::name(sig));
            return;
        }
        let target = match (self.o.single_child, self.session, self.pgid) {
            (true, Some(pid), _) => pid,
            (false, _, Some(pgid)) => -pgid,
            _ => return,
        };
        debug!("forwarding signal {to} ({}) to {target}", signals::name(to));
        if let Err(e) = sys::kill(target, to) {
            debug!("forwarding signal {to} to {target}: {}", Errno(e));
        }
    }

    /// SIGTERM to the init: the session first, everyone later (see `Shutdown`).
    fn terminate(&mut self) {
        if self.shutdown.is_some() {
            debug!("already shutting down");
            return;
        }
        info!("SIGTERM: shutting down");
        self.services.halt();
        let now = sys::now();
        self.shutdown = Some(Shutdown {
            deadline: now + self.o.grace,
            everyone_at: now + self.o.grace / 2,
            everyone_sent: false,
            killed_at: None,
        });
        if self.session.is_some() {
            self.forward(libc::SIGTERM);
            // A stopped session must run to act on it.
            if let Some(pid) = self.session {
                let target = if self.o.single_child { pid } else { -pid };
                let _ = sys::kill(target, libc::SIGCONT);
            }
        } else {
            self.term_everyone();
        }
    }

    fn term_everyone(&mut self) {
        match &mut self.shutdown {
            Some(s) if !s.everyone_sent => s.everyone_sent = true,
            _ => return,
        }
        debug!("SIGTERM to every process left");
        procs::signal_all(&[libc::SIGTERM, libc::SIGCONT], self.pid1);
    }

    /// Reaps every child that has changed state. True when no child is left.
    fn reap(&mut self) -> bool {
        loop {
            match sys::wait_any() {
                Wait::Child(pid, status) => match sys::status_code(status) {
                    Some(code) if Some(pid) == self.session => self.on_session_exit(code),
                    Some(code) if self.services.on_exit(pid, code) => {}
                    Some(code) => trace!("reaped {pid}: status {code}"),
                    None if Some(pid) == self.session => self.on_session_stop(),
                    None => {}
                },
                Wait::Nothing => return false,
                Wait::NoChildren => return true,
                Wait::Failed(e) => {
                    warn!("waitpid: {}", Errno(e));
                    return false;
                }
            }
        }
    }

    fn on_session_exit(&mut self, code: i32) {
        info!("session exited: status {code}");
        self.session = None;
        self.status = Some(code);
        if let Some(t) = &self.tty {
            t.take_back();
        }
        if self.o.keep_alive && self.shutdown.is_none() {
            self.services.start_all();
            return;
        }
        if self.shutdown.is_none() {
            let deadline = sys::now() + self.o.grace;
            self.shutdown = Some(Shutdown {
                deadline,
                everyone_at: deadline,
                everyone_sent: false,
                killed_at: None,
            });
        }
        self.term_everyone();
    }

    /// The session was stopped (Ctrl-Z, SIGTSTP). When we are a job of a
    /// shell, stop too so that the shell sees its job stopped and can
    /// resume it with fg or bg (we then get SIGCONT).
    fn on_session_stop(&mut self) {
        debug!("session stopped");
        let Some(t) = self.tty.as_ref().filter(|t| t.shell_job()) else {
            return;
        };
        t.take_back();
        let _ = sys::kill(sys::getpid(), libc::SIGSTOP);
    }

    /// Takes the shutdown's next step if it is due; returns the exit status
    /// once the init should exit.
    fn advance(&mut self, none_left: bool) -> Option<i32> {
        let s = self.shutdown.as_mut()?;
        if none_left {
            return Some(self.exit_code());
        }
        let now = sys::now();
        if !s.everyone_sent && now >= s.everyone_at {
            self.term_everyone();
            return None;
        }
        match s.killed_at {
            None if now >= s.deadline => {
                warn!("grace period over: killing every process left");
                s.killed_at = Some(now);
                procs::signal_all(&[libc::SIGKILL], self.pid1);
                None
            }
            Some(at) if now >= at + KILL_WAIT => {
                warn!("processes left after SIGKILL; exiting anyway");
                Some(self.exit_code())
            }
            _ => None,
        }
    }

    fn exit_code(&self) -> i32 {
        let status = match (self.status, self.session) {
            (Some(s), _) => s,
            (None, Some(_)) => 128 + libc::SIGKILL,
            (None, None) => 0,
        };
        self.o.exit_code(status)
    }
}
