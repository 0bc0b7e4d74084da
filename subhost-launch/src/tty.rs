//! Terminals: the session's own pty (from the subhost's devpts instance) and
//! the caller's terminal in raw mode.
//!
//! The caller's terminal never enters the subhost: the session gets a pty of
//! the subhost's own devpts, and the launcher relays bytes between the two
//! (see `supervisor`). That keeps TIOCSTI and friends from reaching the
//! caller's shell.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use nix::errno::Errno;
use nix::sys::termios::{self, SetArg, Termios};

/// A pty pair: the master stays with the launcher, the slave becomes the
/// session's controlling terminal.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Whether `fd` is a terminal.
pub fn is_tty(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

/// Opens a new pty from the `ptmx` at `ptmx` (e.g. `live/dev/pts/ptmx` of a
/// fresh devpts instance), unlocked, slave opened through the master.
///
/// Both ends are close-on-exec and neither becomes anyone's controlling
/// terminal here (`make_controlling` does that deliberately).
pub fn open_pty(ptmx: &Path) -> io::Result<Pty> {
    let master = open_ptmx(ptmx)?;
    unlock(master.as_fd()).map_err(|e| annotate(e, "unlocking the pty of", ptmx))?;
    let slave = match open_peer(master.as_fd()) {
        Ok(slave) => slave,
        // Kernels before 4.13 lack TIOCGPTPEER; the path is only safe to
        // use there because the caller has not pivoted yet.
        Err(e)
            if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOTTY) =>
        {
            open_slave_by_path(master.as_fd(), ptmx)?
        }
        Err(e) => return Err(annotate(e, "opening the slave of the pty of", ptmx)),
    };
    Ok(Pty { master, slave })
}

fn open_ptmx(ptmx: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    // std opens with O_CLOEXEC already.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(ptmx)
        .map_err(|e| annotate(e, "opening", ptmx))?;
    Ok(OwnedFd::from(file))
}

fn unlock(master: BorrowedFd<'_>) -> io::Result<()> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one c_int through the pointer, which points to
    // a live local.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The slave through the master itself, so no path lookup (which could be
/// redirected by whoever controls the subhost's root) is involved.
fn open_peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes its flags by value and returns a new fd.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pty_number(master: BorrowedFd<'_>) -> io::Result<u32> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one c_uint through the pointer, which points to
    // a live local.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

/// Where the slave of a pty from `ptmx` lives: next to it for
/// `.../pts/ptmx`, in `pts/` beside it for `/dev/ptmx`. `ptsname(3)` is no
/// use here: it names the slave as seen from `/dev/pts`, which is the host's
/// devpts, not the subhost's.
fn slave_dir(ptmx: &Path) -> PathBuf {
    let dir = ptmx.parent().unwrap_or(Path::new("/"));
    if dir.file_name().is_some_and(|n| n == "pts") {
        dir.to_path_buf()
    } else {
        dir.join("pts")
    }
}

fn open_slave_by_path(master: BorrowedFd<'_>, ptmx: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let n = pty_number(master).map_err(|e| annotate(e, "asking the pty number of", ptmx))?;
    let path = slave_dir(ptmx).join(n.to_string());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| annotate(e, "opening the pty slave", &path))?;
    Ok(OwnedFd::from(file))
}

/// Turns off echo on the terminal `fd`.
pub fn echo_off(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let mut t = tcgetattr(fd)?;
    t.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(fd, SetArg::TCSANOW, &t)?;
    Ok(())
}

/// In the sandbox child: new session, `slave` as controlling terminal and as
/// stdin/stdout/stderr.
pub fn make_controlling(slave: OwnedFd) -> io::Result<()> {
    nix::unistd::setsid().map_err(|e| os_err(e, "setsid for the session's terminal"))?;
    // SAFETY: TIOCSCTTY takes an int argument by value (0: do not steal a
    // terminal that is some other session's).
    let r = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("making the pty the session's controlling terminal (TIOCSCTTY): {e}"),
        ));
    }
    let raw = slave.as_raw_fd();
    for target in 0..=2 {
        if raw == target {
            // dup2 onto itself would keep close-on-exec set.
            clear_cloexec(raw)?;
        } else {
            // SAFETY: plain dup2 on fds we hold; replacing 0/1/2 is the point.
            if unsafe { libc::dup2(raw, target) } < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("dup2 of the pty onto fd {target}: {e}"),
                ));
            }
        }
    }
    if raw <= 2 {
        // Now one of the standard streams: it must stay open.
        std::mem::forget(slave);
    }
    Ok(())
}

fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD on an fd we hold; no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The caller's terminal in raw mode for as long as this lives.
///
/// The settings are restored on drop, and also by a panic hook: release
/// builds abort on panic, which skips destructors, and a terminal left raw
/// is unusable for whoever typed the command.
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

/// The terminal settings to put back if we panic, with a private fd to the
/// terminal so restoring does not depend on who still holds which fd.
static SAVED: Mutex<Option<(RawFd, Termios)>> = Mutex::new(None);
static PANIC_HOOK: Once = Once::new();

impl RawMode {
    /// Puts the terminal at `fd` in raw mode (cfmakeraw).
    pub fn enter(fd: BorrowedFd<'_>) -> io::Result<RawMode> {
        let fd = fd
            .try_clone_to_owned()
            .map_err(|e| io::Error::new(e.kind(), format!("duplicating the terminal fd: {e}")))?;
        let saved =
            termios::tcgetattr(&fd).map_err(|e| os_err(e, "reading the terminal settings"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        install_panic_hook();
        // Record before switching: a panic right after must still restore.
        if let Ok(mut s) = SAVED.lock() {
            *s = Some((fd.as_raw_fd(), saved.clone()));
        }
        if let Err(e) = termios::tcsetattr(&fd, SetArg::TCSANOW, &raw) {
            forget_saved(fd.as_raw_fd());
            return Err(os_err(e, "putting the terminal in raw mode"));
        }
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        forget_saved(self.fd.as_raw_fd());
        // TCSANOW, not TCSADRAIN: a terminal stopped by flow control must not
        // keep the launcher from exiting.
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}

fn forget_saved(fd: RawFd) {
    if let Ok(mut s) = SAVED.lock() {
        if s.as_ref().is_some_and(|(f, _)| *f == fd) {
            *s = None;
        }
    }
}

fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // try_lock: the panic may have happened while the lock was held.
            if let Ok(s) = SAVED.try_lock() {
                if let Some((fd, t)) = s.as_ref() {
                    // SAFETY: the fd is owned by a live RawMode (entries are
                    // removed before it is dropped); it is only borrowed here.
                    let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
                    let _ = termios::tcsetattr(fd, SetArg::TCSANOW, t);
                }
            }
            previous(info);
        }));
    });
}

/// Copies the window size of the terminal `from` to the terminal `to`
/// (usually the caller's terminal to the session's pty master, whose slave
/// side then gets SIGWINCH from the kernel).
pub fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    let ws = get_winsize(from)?;
    set_winsize(to, &ws)
}

pub fn get_winsize(fd: BorrowedFd<'_>) -> io::Result<libc::winsize> {
    // SAFETY: all-zero is a valid winsize.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which points
    // to a live local.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("reading the window size: {e}"),
        ));
    }
    Ok(ws)
}

pub fn set_winsize(fd: BorrowedFd<'_>, ws: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, which points
    // to a live value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("setting the window size: {e}"),
        ));
    }
    Ok(())
}

fn os_err(e: Errno, what: &str) -> io::Error {
    io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}"))
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Forked processes for tests that need a process of their own: signal
/// masks and signalfds are per thread, and the test harness has many.
#[cfg(test)]
pub(crate) mod test_support {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
    use std::sync::{Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::unistd::{fork, ForkResult, Pid};

    pub const LIMIT: Duration = Duration::from_secs(10);

    /// Forks that do not exec inherit every fd open at that moment, which
    /// would keep another test's pty or pipe from closing; one at a time.
    pub fn serial() -> MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A forked process, killed and reaped on drop if still running.
    pub struct Forked {
        pub pid: Pid,
        reaped: bool,
    }

    /// Runs `f` in a forked child, which exits with its return value (101 if
    /// it panics). Only the calling thread exists in the child. In the
    /// parent, `f` is dropped unrun, closing the fds it captured.
    pub fn fork_with(f: impl FnOnce() -> i32) -> Forked {
        // SAFETY: the child runs `f` and leaves with _exit; it never returns
        // into the test harness. It uses only fds it owns and the allocator
        // (fork-safe in glibc); it never takes the harness's stdout lock.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
                // SAFETY: _exit skips atexit handlers and destructors, which
                // belong to the parent's copy of the process.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => Forked {
                pid: child,
                reaped: false,
            },
        }
    }

    impl Forked {
        /// Waits at most `limit`; kills the child and panics after that.
        pub fn wait(&mut self, limit: Duration) -> WaitStatus {
            let deadline = Instant::now() + limit;
            loop {
                match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => {}
                    Ok(s) => {
                        self.reaped = true;
                        return s;
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => panic!("waitpid {}: {e}", self.pid),
                }
                if Instant::now() > deadline {
                    self.kill();
                    panic!("process {} still running after {limit:?}", self.pid);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        /// The exit code; panics if it was killed by a signal.
        pub fn code(&mut self, limit: Duration) -> i32 {
            match self.wait(limit) {
                WaitStatus::Exited(_, c) => c,
                s => panic!("process {} did not exit normally: {s:?}", self.pid),
            }
        }

        /// For a child that someone else will reap (e.g. `supervise`).
        pub fn into_pid(mut self) -> Pid {
            self.reaped = true;
            self.pid
        }

        fn kill(&mut self) {
            if !self.reaped {
                let _ = kill(self.pid, Signal::SIGKILL);
                let _ = waitpid(self.pid, None);
                self.reaped = true;
            }
        }
    }

    impl Drop for Forked {
        fn drop(&mut self) {
            self.kill();
        }
    }

    /// Reads from `fd` until the text read so far contains `needle`.
    pub fn read_until(fd: BorrowedFd<'_>, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            if String::from_utf8_lossy(&seen).contains(needle) {
                return String::from_utf8_lossy(&seen).into_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {needle:?} within {limit:?}; got {:?}",
                String::from_utf8_lossy(&seen)
            );
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&mut p, 1, left.as_millis().min(1000) as i32) };
            if p.revents == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => panic!(
                    "end of input before {needle:?}; got {:?}",
                    String::from_utf8_lossy(&seen)
                ),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(e) => panic!(
                    "reading: {e}, before {needle:?}; got {:?}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
    }

    /// dup2 for the child side of a test, where an error means the test is
    /// broken.
    pub fn dup_onto(fd: RawFd, target: RawFd) -> io::Result<()> {
        // SAFETY: plain dup2 on fds of this (forked) process.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use nix::sys::termios::LocalFlags;

    fn dev_ptmx() -> Pty {
        open_pty(Path::new("/dev/ptmx")).expect("open_pty(/dev/ptmx)")
    }

    fn cloexec(fd: BorrowedFd<'_>) -> bool {
        // SAFETY: F_GETFD on a live fd.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    /// Bytes written on one side of the pty come out of the other.
    fn assert_connected(pty: &Pty) {
        nix::unistd::write(&pty.slave, b"ping\n").expect("write slave");
        let got = read_until(pty.master.as_fd(), "ping", LIMIT);
        assert!(got.contains("ping"), "{got:?}");
    }

    #[test]
    fn open_pty_gives_a_connected_unlocked_pair() {
        let pty = dev_ptmx();
        assert!(is_tty(pty.slave.as_fd()), "slave is not a tty");
        assert!(is_tty(pty.master.as_fd()), "master is not a tty");
        assert!(cloexec(pty.master.as_fd()) && cloexec(pty.slave.as_fd()));
        assert_connected(&pty);
    }

    #[test]
    fn slave_by_path_fallback_reaches_the_same_pty() {
        let ptmx = Path::new("/dev/ptmx");
        let master = open_ptmx(ptmx).unwrap();
        unlock(master.as_fd()).unwrap();
        let slave = open_slave_by_path(master.as_fd(), ptmx).unwrap();
        assert_connected(&Pty { master, slave });
    }

    #[test]
    fn slave_dir_is_the_devpts_of_the_ptmx() {
        assert_eq!(slave_dir(Path::new("/dev/ptmx")), Path::new("/dev/pts"));
        assert_eq!(
            slave_dir(Path::new("/x/live/dev/pts/ptmx")),
            Path::new("/x/live/dev/pts")
        );
    }

    #[test]
    fn open_pty_of_a_missing_ptmx_names_it() {
        let e = open_pty(Path::new("/nonexistent-subhost-test/ptmx"))
            .err()
            .expect("must fail");
        assert!(
            e.to_string().contains("/nonexistent-subhost-test/ptmx"),
            "{e}"
        );
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn make_controlling_gives_the_session_its_terminal() {
        let _serial = serial();
        let pty = dev_ptmx();
        let slave_raw = pty.slave.as_raw_fd();
        let slave = pty.slave;
        let mut child = fork_with(move || {
            if make_controlling(slave).is_err() {
                return 2;
            }
            let me = nix::unistd::getpid();
            for fd in 0..=2 {
                // SAFETY: 0..=2 are open in this process (just dup'ed).
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                if !is_tty(fd) || cloexec(fd) {
                    return 3;
                }
            }
            // The slave is the controlling terminal of a new session whose
            // foreground group is this process.
            // SAFETY: plain queries on fd 0.
            if unsafe { libc::tcgetsid(0) } != me.as_raw()
                || unsafe { libc::tcgetpgrp(0) } != me.as_raw()
            {
                return 4;
            }
            // The original fd is not left behind for the session to inherit.
            // SAFETY: F_GETFD on a number that should be closed.
            if slave_raw > 2 && unsafe { libc::fcntl(slave_raw, libc::F_GETFD) } >= 0 {
                return 5;
            }
            0
        });
        assert_eq!(child.code(LIMIT), 0);
    }

    #[test]
    fn raw_mode_is_restored_on_drop() {
        let pty = dev_ptmx();
        let before = termios::tcgetattr(&pty.slave).unwrap();
        assert!(before
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO));
        {
            let _raw = RawMode::enter(pty.slave.as_fd()).unwrap();
            let during = termios::tcgetattr(&pty.slave).unwrap();
            assert!(!during
                .local_flags
                .intersects(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG));
        }
        let after = termios::tcgetattr(&pty.slave).unwrap();
        assert_eq!(after.local_flags, before.local_flags);
        assert_eq!(after.input_flags, before.input_flags);
        assert_eq!(after.output_flags, before.output_flags);
    }

    /// Release builds abort on panic, skipping destructors: the panic hook
    /// alone has to put the terminal back.
    #[test]
    fn raw_mode_is_restored_by_the_panic_hook() {
        let _serial = serial();
        let pty = dev_ptmx();
        let before = termios::tcgetattr(&pty.slave).unwrap();
        let slave = pty.slave.try_clone().unwrap();
        let mut child = fork_with(move || {
            // The panic message is expected; keep it out of the test output.
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = dup_onto(null.as_raw_fd(), 2);
            }
            let Ok(raw) = RawMode::enter(slave.as_fd()) else {
                return 2;
            };
            match termios::tcgetattr(&slave) {
                Ok(t) if !t.local_flags.contains(LocalFlags::ICANON) => {}
                _ => return 3,
            }
            std::mem::forget(raw);
            panic!("deliberate, to run the hook");
        });
        assert_eq!(child.code(LIMIT), 101, "child must have panicked");
        let after = termios::tcgetattr(&pty.slave).unwrap();
        assert_eq!(after.local_flags, before.local_flags);
        assert_eq!(after.input_flags, before.input_flags);
    }

    #[test]
    fn winsize_copies_between_terminals() {
        let a = dev_ptmx();
        let b = dev_ptmx();
        let ws = libc::winsize {
            ws_row: 31,
            ws_col: 97,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        set_winsize(a.master.as_fd(), &ws).unwrap();
        copy_winsize(a.slave.as_fd(), b.master.as_fd()).unwrap();
        let got = get_winsize(b.slave.as_fd()).unwrap();
        assert_eq!((got.ws_row, got.ws_col), (31, 97));
    }
}
