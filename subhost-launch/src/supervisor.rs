//! The launcher's side of a running session: relay between the caller's
//! terminal and the session's pty, forward signals to init, and wait for it.
//!
//! One poll loop over stdin, the pty master, stdout and a signalfd; no
//! threads and no signal handlers, so there is nothing asynchronous to get
//! wrong.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::tty;

/// Signals the launcher handles synchronously while a session runs. Blocked
/// before the sandbox is forked so none is lost; the child unblocks them.
pub fn signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        nix::sys::signal::Signal::SIGCHLD,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGQUIT,
        nix::sys::signal::Signal::SIGWINCH,
    ] {
        s.add(sig);
    }
    s
}

/// Runs until `init` exits; returns its status as a shell would (code, or
/// 128+N). With `master`, the caller's stdin is a terminal: it is put in raw
/// mode (restored on every exit path), its size is copied to the pty at start
/// and on SIGWINCH, and bytes are relayed both ways. SIGTERM/SIGINT/SIGHUP/
/// SIGQUIT to the launcher are forwarded to init.
///
/// `signals()` stay blocked in the calling thread afterwards: a SIGTERM that
/// arrives while the launcher winds down must not kill it before it reports
/// the session's status.
pub fn supervise(init: Pid, master: Option<OwnedFd>) -> anyhow::Result<i32> {
    let mask = signals();
    mask.thread_block()
        .context("blocking the launcher's signals")?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("creating a signalfd for the launcher's signals")?;
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut session = Session {
        init,
        sfd,
        relay: None,
        status: None,
    };
    // Declared after `session` so it is dropped (and the terminal restored)
    // first, on every return path.
    let mut _raw = None;
    if let Some(master) = master {
        let stdin_tty = tty::is_tty(stdin.as_fd());
        set_nonblocking(master.as_fd()).context("making the pty master non-blocking")?;
        if stdin_tty {
            _raw = Some(
                tty::RawMode::enter(stdin.as_fd())
                    .context("putting the caller's terminal in raw mode")?,
            );
            // A terminal without a size (some serial consoles) is not an
            // error; the session just gets the kernel default.
            let _ = tty::copy_winsize(stdin.as_fd(), master.as_fd());
        }
        session.relay = Some(Relay::new(master, stdin_tty));
    }
    // SIGCHLD may have fired before the mask was in place (when the caller
    // did not block it before forking).
    session.reap()?;
    while session.status.is_none() {
        session.step(stdin.as_fd(), stdout.as_fd())?;
    }
    if let Some(relay) = session.relay.as_mut() {
        relay.drain(stdout.as_fd());
    }
    Ok(session.status.unwrap_or(1))
}

struct Session {
    init: Pid,
    sfd: SignalFd,
    relay: Option<Relay>,
    status: Option<i32>,
}

impl Session {
    /// One poll round: signals first (so a SIGWINCH sent before some input
    /// is applied before that input reaches the session), then the relay.
    fn step(&mut self, stdin: BorrowedFd<'_>, stdout: BorrowedFd<'_>) -> anyhow::Result<()> {
        let mut fds = vec![pollfd(self.sfd.as_fd().as_raw_fd(), libc::POLLIN)];
        if let Some(relay) = &self.relay {
            fds.extend(relay.interest(stdin, stdout));
        }
        poll(&mut fds).context("waiting for the session (poll)")?;
        if fds[0].revents != 0 {
            self.handle_signals(stdin)?;
        }
        if let Some(relay) = self.relay.as_mut() {
            relay.pump(stdin, stdout, &fds[1..]);
        }
        Ok(())
    }

    fn handle_signals(&mut self, stdin: BorrowedFd<'_>) -> anyhow::Result<()> {
        loop {
            let info = match self.sfd.read_signal() {
                Ok(Some(info)) => info,
                Ok(None) | Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("reading the launcher's signalfd"),
            };
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => self.reap()?,
                Signal::SIGWINCH => {
                    if let Some(relay) = &self.relay {
                        relay.resize(stdin);
                    }
                }
                Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT => {
                    log::debug!("forwarding {sig} to init (pid {})", self.init);
                    // ESRCH: init is already gone and SIGCHLD is on its way.
                    let _ = kill(self.init, sig);
                }
                _ => {}
            }
        }
    }

    fn reap(&mut self) -> anyhow::Result<()> {
        let status = retry(|| waitpid(self.init, Some(WaitPidFlag::WNOHANG)))
            .with_context(|| format!("waiting for the subhost's init (pid {})", self.init))?;
        self.status = shell_status(status);
        Ok(())
    }
}

/// Bytes in flight one way, with what is left to write.
struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            data: vec![0; 16 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Reads into the buffer if it is empty. `Ok(0)` is end of input.
    fn fill(&mut self, fd: BorrowedFd<'_>) -> Result<usize, Errno> {
        debug_assert!(self.is_empty());
        let n = retry(|| nix::unistd::read(fd, &mut self.data))?;
        self.start = 0;
        self.end = n;
        Ok(n)
    }

    /// Writes as much as the fd takes without blocking. EAGAIN is not an
    /// error: the rest goes when poll says the fd is writable.
    fn flush(&mut self, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        while !self.is_empty() {
            match retry(|| nix::unistd::write(fd, self.pending())) {
                Ok(n) => self.start += n,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}

/// The two byte streams between the caller's terminal and the session's pty.
struct Relay {
    master: OwnedFd,
    stdin_tty: bool,
    /// stdin → master
    input: Buf,
    /// master → stdout
    output: Buf,
    stdin_open: bool,
    /// False once every slave fd is closed (EIO on read).
    master_open: bool,
    /// False once stdout failed; output is then read and dropped so the
    /// session never blocks on a full pty.
    stdout_open: bool,
    eof_sent: bool,
}

impl Relay {
    fn new(master: OwnedFd, stdin_tty: bool) -> Relay {
        Relay {
            master,
            stdin_tty,
            input: Buf::new(),
            output: Buf::new(),
            stdin_open: true,
            master_open: true,
            stdout_open: true,
            eof_sent: false,
        }
    }

    /// What to poll for, in the order `pump` expects: stdin, master, stdout.
    /// Fds we are not interested in are passed as -1, which poll skips (an
    /// fd with no events would still report POLLHUP and spin the loop).
    fn interest(&self, stdin: BorrowedFd<'_>, stdout: BorrowedFd<'_>) -> [libc::pollfd; 3] {
        let want_stdin = self.stdin_open && self.input.is_empty();
        let mut master_events = 0;
        if self.master_open && self.output.is_empty() {
            master_events |= libc::POLLIN;
        }
        if self.master_open && !self.input.is_empty() {
            master_events |= libc::POLLOUT;
        }
        let want_stdout = !self.output.is_empty();
        [
            pollfd(
                if want_stdin { stdin.as_raw_fd() } else { -1 },
                libc::POLLIN,
            ),
            pollfd(
                if master_events != 0 {
                    self.master.as_raw_fd()
                } else {
                    -1
                },
                master_events,
            ),
            pollfd(
                if want_stdout { stdout.as_raw_fd() } else { -1 },
                libc::POLLOUT,
            ),
        ]
    }

    fn pump(&mut self, stdin: BorrowedFd<'_>, stdout: BorrowedFd<'_>, fds: &[libc::pollfd]) {
        if fds[0].revents != 0 {
            self.read_stdin(stdin);
        }
        if fds[1].revents != 0 {
            self.read_master();
        }
        self.write_master();
        self.write_stdout(stdout);
    }

    fn read_stdin(&mut self, stdin: BorrowedFd<'_>) {
        match self.input.fill(stdin) {
            Ok(0) => self.stdin_eof(),
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(e) => {
                // A hung-up terminal reads as EIO; treat it as the end of
                // input (SIGHUP, forwarded to init, follows).
                log::debug!("stdin: {e}; no more input for the session");
                self.stdin_eof();
            }
        }
    }

    /// Stdin ended. When it is not a terminal (`... | subhost-launch`), the
    /// session only sees the end if it gets the terminal's EOF character,
    /// once, as lxc does.
    fn stdin_eof(&mut self) {
        self.stdin_open = false;
        if self.stdin_tty || self.eof_sent || !self.master_open {
            return;
        }
        self.eof_sent = true;
        if let Ok(t) = nix::sys::termios::tcgetattr(&self.master) {
            let veof = t.control_chars[nix::sys::termios::SpecialCharacterIndices::VEOF as usize];
            self.input.clear();
            self.input.data[0] = veof;
            self.input.end = 1;
        }
    }

    fn read_master(&mut self) {
        if !self.master_open || !self.output.is_empty() {
            return;
        }
        match self.output.fill(self.master.as_fd()) {
            Ok(0) | Err(Errno::EIO) => self.master_closed(),
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(e) => {
                log::warn!("reading the session's terminal: {e}");
                self.master_closed();
            }
        }
    }

    /// Every slave fd is closed: the session is gone or has given up its
    /// terminal. Input has nowhere to go any more.
    fn master_closed(&mut self) {
        self.master_open = false;
        self.input.clear();
    }

    fn write_master(&mut self) {
        if !self.master_open {
            return;
        }
        match self.input.flush(self.master.as_fd()) {
            Ok(()) => {}
            Err(Errno::EIO) => self.master_closed(),
            Err(e) => {
                log::warn!("writing to the session's terminal: {e}");
                self.master_closed();
            }
        }
    }

    fn write_stdout(&mut self, stdout: BorrowedFd<'_>) {
        if !self.stdout_open {
            self.output.clear();
            return;
        }
        if let Err(e) = self.output.flush(stdout) {
            log::warn!("writing the session's output: {e}; discarding the rest");
            self.stdout_open = false;
            self.output.clear();
        }
    }

    fn resize(&self, stdin: BorrowedFd<'_>) {
        if self.stdin_tty && self.master_open {
            let _ = tty::copy_winsize(stdin, self.master.as_fd());
        }
    }

    /// After init is gone: whatever the session wrote last still goes out.
    /// Nobody writes to the slave any more, so reading stops at EIO (or
    /// EAGAIN when some fd to the slave survives elsewhere).
    fn drain(&mut self, stdout: BorrowedFd<'_>) {
        self.input.clear();
        loop {
            self.write_stdout_blocking(stdout);
            if !self.master_open {
                return;
            }
            match self.output.fill(self.master.as_fd()) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn write_stdout_blocking(&mut self, stdout: BorrowedFd<'_>) {
        while self.stdout_open && !self.output.is_empty() {
            self.write_stdout(stdout);
            if !self.output.is_empty() {
                let mut fds = [pollfd(stdout.as_raw_fd(), libc::POLLOUT)];
                // A terminal that stays unwritable for seconds is held by
                // flow control or gone; do not hang the exit on it.
                if !matches!(poll_timeout(&mut fds, 5000), Ok(n) if n > 0) {
                    self.stdout_open = false;
                }
            }
        }
        self.output.clear();
    }
}

/// The status as a shell reports it: the exit code, or 128+N after signal N.
/// `None` while the process still runs.
fn shell_status(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// poll(2) without timeout; EINTR (e.g. after SIGSTOP/SIGCONT) is a spurious
/// wake-up, not an error.
fn poll(fds: &mut [libc::pollfd]) -> Result<(), Errno> {
    match poll_timeout(fds, -1) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e),
    }
}

fn poll_timeout(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> Result<usize, Errno> {
    // SAFETY: the pointer and length describe a live, exclusively borrowed
    // slice of pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        return Err(Errno::last());
    }
    Ok(n as usize)
}

fn retry<T>(mut f: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    loop {
        match f() {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tty::test_support::*;
    use crate::tty::{open_pty, set_winsize, Pty};
    use nix::sys::termios::{tcgetattr, LocalFlags, Termios};
    use std::ffi::CString;
    use std::path::Path;

    /// Writes to an fd of a forked child without std's stream locks, which
    /// another thread of the parent may have held at the fork.
    fn say(fd: RawFd, msg: &str) {
        // SAFETY: fd is an fd of this process; the buffer is live.
        unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) };
    }

    /// Forks the session as the sandbox child would start it: the
    /// launcher's signals unblocked, optionally the pty `slave` as
    /// controlling terminal, then `sh -c script`. The caller reaps it.
    fn spawn_sh(script: &str, slave: Option<OwnedFd>, stdout: Option<RawFd>) -> Pid {
        let argv = [
            c"/bin/sh".to_owned(),
            c"-c".to_owned(),
            CString::new(script).unwrap(),
        ];
        fork_with(move || {
            if signals().thread_unblock().is_err() {
                return 120;
            }
            if let Some(slave) = slave {
                if crate::tty::make_controlling(slave).is_err() {
                    return 121;
                }
            }
            if let Some(fd) = stdout {
                if dup_onto(fd, 1).is_err() {
                    return 122;
                }
            }
            let _ = nix::unistd::execv(&argv[0], &argv);
            123
        })
        .into_pid()
    }

    fn supervised_code(init: Pid, master: Option<OwnedFd>) -> i32 {
        match supervise(init, master) {
            Ok(code) => code,
            Err(e) => {
                say(2, &format!("supervise: {e:#}\n"));
                99
            }
        }
    }

    #[test]
    fn exit_code_passes_through() {
        let _serial = serial();
        let mut launcher = fork_with(|| {
            let init = fork_with(|| 7).into_pid();
            supervised_code(init, None)
        });
        assert_eq!(launcher.code(LIMIT), 7);
    }

    #[test]
    fn death_by_signal_is_128_plus_n() {
        let _serial = serial();
        let mut launcher = fork_with(|| {
            let init = fork_with(|| {
                let _ = signals().thread_unblock();
                let _ = nix::sys::signal::raise(Signal::SIGTERM);
                0
            })
            .into_pid();
            supervised_code(init, None)
        });
        assert_eq!(launcher.code(LIMIT), 128 + libc::SIGTERM);
    }

    /// Each forwarded signal reaches init: the session exits with a code
    /// that says which one it got.
    #[test]
    fn signals_are_forwarded_to_init() {
        let _serial = serial();
        let script = "trap 'exit 41' HUP; trap 'exit 42' INT; trap 'exit 43' QUIT; \
                      trap 'exit 44' TERM; echo ready; \
                      i=0; while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; exit 9";
        for (sig, want) in [
            (Signal::SIGHUP, 41),
            (Signal::SIGINT, 42),
            (Signal::SIGQUIT, 43),
            (Signal::SIGTERM, 44),
        ] {
            let (r, w) = nix::unistd::pipe().unwrap();
            let w_raw = w.as_raw_fd();
            let mut launcher = fork_with(move || {
                // As the launcher does: blocked before the session is forked,
                // so a signal sent the moment it runs is not fatal here.
                if signals().thread_block().is_err() {
                    return 98;
                }
                let init = spawn_sh(script, None, Some(w_raw));
                drop(w);
                supervised_code(init, None)
            });
            read_until(r.as_fd(), "ready", LIMIT);
            kill(launcher.pid, sig).unwrap();
            assert_eq!(launcher.code(LIMIT), want, "after {sig}");
        }
    }

    /// A launcher relaying between an outer pty (its stdin/stdout, driven
    /// by the test through the outer master) and a session on an inner pty.
    struct Relayed {
        outer: Pty,
        before: Termios,
        launcher: Forked,
    }

    fn winsize(rows: u16, cols: u16) -> libc::winsize {
        libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }

    fn relay(script: &'static str, rows: u16, cols: u16) -> Relayed {
        let outer = open_pty(Path::new("/dev/ptmx")).unwrap();
        set_winsize(outer.master.as_fd(), &winsize(rows, cols)).unwrap();
        let before = tcgetattr(&outer.slave).unwrap();
        let slave = outer.slave.try_clone().unwrap();
        let launcher = fork_with(move || {
            if dup_onto(slave.as_raw_fd(), 0).is_err() || dup_onto(slave.as_raw_fd(), 1).is_err() {
                return 97;
            }
            drop(slave);
            if signals().thread_block().is_err() {
                return 98;
            }
            let Ok(inner) = open_pty(Path::new("/dev/ptmx")) else {
                return 96;
            };
            let init = spawn_sh(script, Some(inner.slave), None);
            supervised_code(init, Some(inner.master))
        });
        Relayed {
            outer,
            before,
            launcher,
        }
    }

    impl Relayed {
        fn expect(&self, text: &str) -> String {
            read_until(self.outer.master.as_fd(), text, LIMIT)
        }

        fn type_in(&self, text: &str) {
            nix::unistd::write(&self.outer.master, text.as_bytes()).unwrap();
        }

        fn assert_restored(&self) {
            let now = tcgetattr(&self.outer.slave).unwrap();
            assert_eq!(now.local_flags, self.before.local_flags);
            assert_eq!(now.input_flags, self.before.input_flags);
            assert_eq!(now.output_flags, self.before.output_flags);
        }
    }

    #[test]
    fn relay_carries_input_output_and_exit_code() {
        let _serial = serial();
        let mut s = relay("stty size; read x; echo got:$x; exit 5", 33, 77);
        s.expect("33 77");
        let during = tcgetattr(&s.outer.slave).unwrap();
        assert!(
            !during
                .local_flags
                .intersects(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG),
            "the caller's terminal must be raw while the session runs"
        );
        s.type_in("hello\r");
        s.expect("got:hello");
        assert_eq!(s.launcher.code(LIMIT), 5);
        s.assert_restored();
    }

    #[test]
    fn window_size_follows_sigwinch() {
        let _serial = serial();
        let mut s = relay("stty size; read x; stty size; exit 0", 33, 77);
        s.expect("33 77");
        set_winsize(s.outer.master.as_fd(), &winsize(40, 100)).unwrap();
        // The launcher is not in the outer pty's session, so the kernel does
        // not signal it; a terminal emulator's SIGWINCH is simulated here.
        kill(s.launcher.pid, Signal::SIGWINCH).unwrap();
        s.type_in("\r");
        s.expect("40 100");
        assert_eq!(s.launcher.code(LIMIT), 0);
        s.assert_restored();
    }

    /// ^C and ^Z typed at the caller's terminal are plain bytes on the way
    /// (it is raw) and become SIGINT/SIGTSTP for the session's foreground
    /// job on the inner pty, so job control works inside.
    #[test]
    fn control_keys_reach_the_session_foreground_job() {
        let _serial = serial();
        let mut s = relay("PS1='prompt> ' exec /bin/sh -i", 24, 80);
        s.expect("prompt> ");
        // The quotes keep the echo of the typed line from matching; the
        // child prints only once it is the foreground job.
        s.type_in("/bin/sh -c 'echo st\"\"arted; exec sleep 30'\r");
        s.expect("started");
        s.type_in("\x03");
        s.expect("prompt> ");
        s.type_in("echo rc=$?\r");
        s.expect("rc=130");
        s.type_in("/bin/sh -c 'echo su\"\"spended; exec sleep 30'\r");
        s.expect("suspended");
        s.type_in("\x1a");
        s.expect("Stopped");
        s.type_in("kill -9 %1\r");
        s.expect("prompt> ");
        // The shell may not have noticed the job's death yet and refuse
        // the first exit over a stopped job; the second always works.
        s.type_in("exit 3\r");
        s.type_in("exit 3\r");
        assert_eq!(s.launcher.code(LIMIT), 3);
        s.assert_restored();
    }

    /// An error after raw mode was entered (here: `init` is not our child)
    /// is reported, and the caller's terminal is not left raw.
    #[test]
    fn error_path_restores_the_terminal() {
        let _serial = serial();
        let outer = open_pty(Path::new("/dev/ptmx")).unwrap();
        let before = tcgetattr(&outer.slave).unwrap();
        let slave = outer.slave.try_clone().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut launcher = fork_with(move || {
            for fd in [0, 1] {
                if dup_onto(slave.as_raw_fd(), fd).is_err() {
                    return 97;
                }
            }
            if dup_onto(w.as_raw_fd(), 2).is_err() {
                return 97;
            }
            let Ok(inner) = open_pty(Path::new("/dev/ptmx")) else {
                return 96;
            };
            supervised_code(Pid::from_raw(1), Some(inner.master))
        });
        assert_eq!(launcher.code(LIMIT), 99);
        let msg = read_until(r.as_fd(), "\n", LIMIT);
        assert!(
            msg.contains("waiting for the subhost's init (pid 1)"),
            "{msg}"
        );
        let now = tcgetattr(&outer.slave).unwrap();
        assert_eq!(now.local_flags, before.local_flags);
        assert_eq!(now.input_flags, before.input_flags);
    }

    /// With a pty but stdin not a terminal (`echo hello | ...`), the end of
    /// stdin reaches the session as the terminal's EOF character.
    #[test]
    fn end_of_piped_stdin_reaches_the_session() {
        let _serial = serial();
        let (in_r, in_w) = nix::unistd::pipe().unwrap();
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let in_w_raw = in_w.as_raw_fd();
        let mut launcher = fork_with(move || {
            if dup_onto(in_r.as_raw_fd(), 0).is_err() || dup_onto(out_w.as_raw_fd(), 1).is_err() {
                return 97;
            }
            // The test's end of stdin must not stay open here, or EOF never
            // comes.
            // SAFETY: closing this process's inherited copy; the OwnedFd
            // that owned it lives in the parent only.
            unsafe { libc::close(in_w_raw) };
            drop((in_r, out_w));
            if signals().thread_block().is_err() {
                return 98;
            }
            let Ok(inner) = open_pty(Path::new("/dev/ptmx")) else {
                return 96;
            };
            let init = spawn_sh(
                "read x; echo got:$x; cat >/dev/null; echo done:$x",
                Some(inner.slave),
                None,
            );
            supervised_code(init, Some(inner.master))
        });
        nix::unistd::write(&in_w, b"hello\n").unwrap();
        drop(in_w);
        let out = read_until(out_r.as_fd(), "done:hello", LIMIT);
        assert!(out.contains("got:hello"), "{out:?}");
        assert_eq!(launcher.code(LIMIT), 0);
    }
}
