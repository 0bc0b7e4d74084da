//! Thin wrappers over the few libc calls the init needs. Raw numbers
//! throughout: signals are forwarded by number (real-time ones included) and
//! wait statuses stay raw, so nothing here can fail to convert.

use core::ffi::CStr;
use core::fmt;

pub type Pid = libc::pid_t;

/// Milliseconds on the monotonic clock.
pub type Millis = u64;

pub fn check(ret: libc::c_int) -> Result<libc::c_int, i32> {
    if ret == -1 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

pub fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// An errno that displays as its strerror text.
pub struct Errno(pub i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // SAFETY: strerror returns a NUL-terminated static string (musl and
        // glibc both keep it valid; we are single-threaded).
        let text = unsafe { CStr::from_ptr(libc::strerror(self.0)) };
        f.write_str(text.to_str().unwrap_or("unknown error"))
    }
}

pub fn now() -> Millis {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000) + ts.tv_nsec as u64 / 1_000_000
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
    // SAFETY: an invalid fd or group is reported through errno. SIGTTOU is
    // blocked, so this cannot stop us when called from the background.
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

/// True unless we certainly have no child, running, stopped or exited:
/// one system call, which reaps nothing.
pub fn has_children() -> bool {
    // SAFETY: siginfo_t is plain data.
    let mut info: libc::siginfo_t = unsafe { core::mem::zeroed() };
    let flags = libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: info is a live siginfo_t; WNOWAIT leaves every child as it is.
    let ret = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) };
    !(ret == -1 && errno() == libc::ECHILD)
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

pub struct SigSet(libc::sigset_t);

impl SigSet {
    pub fn empty() -> SigSet {
        // SAFETY: sigemptyset initialises the zeroed set it is given.
        unsafe {
            let mut set = core::mem::zeroed();
            libc::sigemptyset(&mut set);
            SigSet(set)
        }
    }

    /// Every signal except the synchronous faults, which must stay
    /// deliverable so that a bug kills the init loudly instead of spinning.
    pub fn catchable() -> SigSet {
        // SAFETY: sigfillset/sigdelset initialise and edit the set in place.
        unsafe {
            let mut set = core::mem::zeroed();
            libc::sigfillset(&mut set);
            for sig in FAULTS {
                libc::sigdelset(&mut set, sig);
            }
            SigSet(set)
        }
    }

    pub fn set_mask(&self) -> Result<(), i32> {
        // SAFETY: self.0 is an initialised set; the old mask is not wanted.
        let ret = unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.0, core::ptr::null_mut()) };
        check(ret).map(drop)
    }

    /// Waits for one signal of the set, at most `timeout` milliseconds
    /// (forever when `None`). `None` on timeout or interruption.
    pub fn wait(&self, timeout: Option<Millis>) -> Option<i32> {
        let ts = timeout.map(|ms| libc::timespec {
            tv_sec: (ms / 1000).min(i32::MAX as u64) as _,
            tv_nsec: (ms % 1000 * 1_000_000) as libc::c_long,
        });
        let tsp = ts.as_ref().map_or(core::ptr::null(), |t| t as *const _);
        // SAFETY: the set is initialised, info may be null, and tsp is null
        // or points to `ts`, alive for the call.
        let sig = unsafe { libc::sigtimedwait(&self.0, core::ptr::null_mut(), tsp) };
        (sig > 0).then_some(sig)
    }
}

const FAULTS: [i32; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// Sets every signal's disposition to default. Ignored dispositions survive
/// exec: the session must not inherit ours, and SIGCHLD ignored would make
/// the kernel reap children behind our back. The raw syscall, because libc
/// refuses to touch the signals it reserves (32-34), which may still have
/// been inherited as ignored.
pub fn default_dispositions() {
    // The kernel's struct sigaction: handler (0 = SIG_DFL), flags,
    // restorer, mask.
    let dfl = [0u64; 4];
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: dfl matches the kernel's struct sigaction layout on
        // 64-bit targets; 8 is the kernel's sigset size; no old action.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                core::ptr::null_mut::<u64>(),
                8usize,
            )
        };
    }
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

/// Reads up to `buf.len()` bytes from the start of a file; `None` if it
/// cannot be opened or read.
pub fn read_file<'a>(path: &CStr, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    // SAFETY: path is NUL-terminated; the flags create nothing.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: buf is valid for writes of its length; fd is ours to close.
    let n = unsafe {
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    buf.get(..usize::try_from(n).ok()?)
}

/// The global allocator: libc's malloc, which the static libc brings anyway.
pub struct Malloc;

// SAFETY: malloc/free/realloc meet GlobalAlloc's contract for alignments up
// to 16 (max_align_t); larger alignments go through posix_memalign.
unsafe impl core::alloc::GlobalAlloc for Malloc {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        if layout.align() <= 16 {
            return libc::malloc(layout.size()).cast();
        }
        let mut p = core::ptr::null_mut();
        if libc::posix_memalign(&mut p, layout.align(), layout.size()) != 0 {
            return core::ptr::null_mut();
        }
        p.cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: core::alloc::Layout) {
        libc::free(ptr.cast());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: core::alloc::Layout, size: usize) -> *mut u8 {
        if layout.align() <= 16 {
            return libc::realloc(ptr.cast(), size).cast();
        }
        let new = self.alloc(core::alloc::Layout::from_size_align_unchecked(
            size,
            layout.align(),
        ));
        if !new.is_null() {
            core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

/// Seconds since the epoch, for times the host reads (uptime in `status`).
pub fn wall_secs() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live timespec; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0)
}

/// A close-on-exec pipe: (read, write).
pub fn pipe() -> Result<(i32, i32), i32> {
    let mut fds = [-1; 2];
    // SAFETY: fds has room for the two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

pub fn close(fd: i32) {
    // SAFETY: callers pass descriptors they own and do not use again.
    unsafe { libc::close(fd) };
}

pub fn set_nonblock(fd: i32) -> Result<(), i32> {
    // SAFETY: F_GETFL/F_SETFL take plain integers.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

pub fn set_cloexec(fd: i32) -> Result<(), i32> {
    // SAFETY: F_SETFD takes plain integers; a bad fd is an errno.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).map(drop)
}

pub fn dup2(from: i32, to: i32) -> Result<(), i32> {
    // SAFETY: plain integers; failures are reported through errno.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

/// One read; `Ok(0)` at EOF, `Err(EAGAIN)` when a non-blocking fd is empty.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(n) => return Ok(n),
            Err(_) if errno() == libc::EINTR => continue,
            Err(_) => return Err(errno()),
        }
    }
}

impl SigSet {
    /// A non-blocking, close-on-exec signalfd for the set (which must stay
    /// blocked).
    pub fn signalfd(&self) -> Result<i32, i32> {
        // SAFETY: the set is initialised; -1 asks for a new descriptor.
        check(unsafe { libc::signalfd(-1, &self.0, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })
    }
}

/// The next signal queued on a signalfd, if any.
pub fn next_signal(sfd: i32) -> Option<i32> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { core::mem::zeroed() };
    let size = core::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: info is valid for writes of its size.
    let n = unsafe { libc::read(sfd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
    (usize::try_from(n) == Ok(size)).then(|| i32::try_from(info.ssi_signo).unwrap_or(0))
}

/// Sleeps until one of `fds` is readable or `timeout` milliseconds pass
/// (forever when `None`); sets each entry's revents.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Millis>) {
    let ts = timeout.map(|ms| libc::timespec {
        tv_sec: (ms / 1000).min(i32::MAX as u64) as _,
        tv_nsec: (ms % 1000 * 1_000_000) as libc::c_long,
    });
    let tsp = ts.as_ref().map_or(core::ptr::null(), |t| t as *const _);
    // SAFETY: fds is a valid array of its length; tsp is null or points to
    // `ts`; a null sigmask keeps the current (all blocked) mask.
    let n = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as _, tsp, core::ptr::null()) };
    if n < 0 {
        for f in fds.iter_mut() {
            f.revents = 0;
        }
    }
}

/// Makes `bytes` the whole content of the file `fd`: written from the
/// start, then cut to their length.
pub fn rewrite(fd: i32, bytes: &[u8]) -> Result<(), i32> {
    let mut done = 0;
    while let Some(rest) = bytes.get(done..).filter(|r| !r.is_empty()) {
        // SAFETY: rest is a valid slice for its length; the offset is
        // within i64 as the slice is.
        let n = unsafe { libc::pwrite(fd, rest.as_ptr().cast(), rest.len(), done as libc::off_t) };
        match usize::try_from(n) {
            Ok(0) => return Err(libc::EIO),
            Ok(n) => done += n,
            Err(_) if errno() == libc::EINTR => {}
            Err(_) => return Err(errno()),
        }
    }
    // SAFETY: plain integers; failures are reported through errno.
    check(unsafe { libc::ftruncate(fd, done as libc::off_t) }).map(drop)
}
