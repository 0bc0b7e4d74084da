//! Thin wrappers over the few syscalls the init needs. libc directly rather
//! than typed wrappers: signals are forwarded by raw number (real-time ones
//! included) and wait statuses are kept raw, so nothing here can fail to
//! convert.

use std::io::Error;
use std::time::Duration;

pub type Pid = libc::pid_t;

fn check(ret: libc::c_int) -> Result<libc::c_int, i32> {
    if ret == -1 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

pub fn errno() -> i32 {
    Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `strerror` text for log lines.
pub fn describe(err: i32) -> Error {
    Error::from_raw_os_error(err)
}

pub fn getpid() -> Pid {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

pub fn getpgrp() -> Pid {
    // SAFETY: getpgrp has no preconditions and cannot fail.
    unsafe { libc::getpgrp() }
}

pub fn is_session_leader() -> bool {
    // SAFETY: getsid(0) only reads the caller's session id.
    unsafe { libc::getsid(0) == libc::getpid() }
}

pub fn kill(pid: Pid, sig: i32) -> Result<(), i32> {
    // SAFETY: kill takes plain integers; a bad pid or signal is an errno.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

pub fn setpgid(pid: Pid, pgid: Pid) -> Result<(), i32> {
    // SAFETY: plain integers; failures are reported through errno.
    check(unsafe { libc::setpgid(pid, pgid) }).map(drop)
}

pub fn tcgetpgrp(fd: i32) -> Result<Pid, i32> {
    // SAFETY: an invalid or non-tty fd is reported through errno.
    check(unsafe { libc::tcgetpgrp(fd) })
}

pub fn tcsetpgrp(fd: i32, pgrp: Pid) -> Result<(), i32> {
    // SAFETY: an invalid fd or group is reported through errno. The caller
    // keeps SIGTTOU blocked, so this cannot stop us from the background.
    check(unsafe { libc::tcsetpgrp(fd, pgrp) }).map(drop)
}

pub fn prctl(option: i32, arg: libc::c_ulong) -> Result<(), i32> {
    // SAFETY: the options used (subreaper, pdeathsig) take one integer.
    check(unsafe { libc::prctl(option, arg, 0, 0, 0) }).map(drop)
}

/// One `waitpid(-1, WNOHANG | WUNTRACED)` result.
pub enum Wait {
    /// A child changed state: pid and raw status.
    Child(Pid, i32),
    /// Children exist, none has changed state.
    Nothing,
    /// No children at all.
    NoChildren,
    Failed(i32),
}

pub fn wait_any() -> Wait {
    let mut status = 0;
    loop {
        // SAFETY: status points to a live i32.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::WUNTRACED) };
        return match pid {
            0 => Wait::Nothing,
            -1 => match errno() {
                libc::EINTR => continue,
                libc::ECHILD => Wait::NoChildren,
                e => Wait::Failed(e),
            },
            pid => Wait::Child(pid, status),
        };
    }
}

/// A wait status as a shell reports it: exit code, or 128+N for signal N.
/// `None` for a stop.
pub fn status_code(status: i32) -> Option<i32> {
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

/// A signal set: all signals except the synchronous faults, which must stay
/// deliverable so a bug kills the init loudly instead of spinning.
pub struct SigSet(libc::sigset_t);

impl SigSet {
    pub fn empty() -> SigSet {
        // SAFETY: sigemptyset initialises the zeroed set it is given.
        unsafe {
            let mut set = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            SigSet(set)
        }
    }

    pub fn catchable() -> SigSet {
        // SAFETY: sigfillset/sigdelset initialise and edit the set in place.
        unsafe {
            let mut set = std::mem::zeroed();
            libc::sigfillset(&mut set);
            for sig in FAULTS {
                libc::sigdelset(&mut set, sig);
            }
            SigSet(set)
        }
    }

    pub fn set_mask(&self) -> Result<(), i32> {
        // SAFETY: self.0 is an initialised set; the old mask is not wanted.
        let ret = unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
        check(ret).map(drop)
    }

    /// Waits for one signal of the set, at most `timeout` (forever when
    /// `None`). `None` on timeout or interruption.
    pub fn wait(&self, timeout: Option<Duration>) -> Option<i32> {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
        // SAFETY: the set is initialised, info is a null out-pointer (allowed)
        // and tsp is null or points to `ts`, alive for the call.
        let sig = unsafe { libc::sigtimedwait(&self.0, std::ptr::null_mut(), tsp) };
        (sig > 0).then_some(sig)
    }
}

pub const FAULTS: [i32; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// Sets every signal's disposition to default. Ignored dispositions survive
/// exec, and std ignores SIGPIPE at startup; the session must not inherit
/// either, and SIGCHLD ignored would make the kernel reap behind our back.
pub fn default_dispositions() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL needs no handler; signals the libc reserves fail
        // with EINVAL, which is fine to ignore.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

pub fn write_stderr(bytes: &[u8]) {
    write_fd(2, bytes)
}

pub fn write_fd(fd: i32, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: rest is a valid slice for its length.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            rest = rest.get(n as usize..).unwrap_or_default();
        } else if n == 0 || errno() != libc::EINTR {
            return;
        }
    }
}
