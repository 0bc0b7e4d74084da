//! The raw system calls the launcher makes where neither nix nor the `caps`
//! crate has them (or musl's libc lacks a binding), each behind a safe
//! function. Raw numbers and `io::Result` throughout, no allocation: several
//! are called in a freshly forked child, some of them in a child of a
//! multi-threaded process (unit tests), where only async-signal-safe calls
//! are allowed.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Leaves this process at once with `code`: no atexit handlers, no
/// destructors, no flushing. The way out of a forked child, whose copy of
/// the parent's state is not its own to tear down.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

pub fn getpid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

pub fn getppid() -> libc::pid_t {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() }
}

/// Closes the fds `first..=last`, or with `cloexec` only marks them
/// close-on-exec (Linux 5.11).
pub fn close_range(first: u32, last: u32, cloexec: bool) -> io::Result<()> {
    let flags = if cloexec {
        libc::CLOSE_RANGE_CLOEXEC
    } else {
        0
    };
    // SAFETY: close_range takes plain integers; the caller keeps the fds it
    // still uses out of the range, and no Rust owner of a closed number
    // closes it again (callers leave through exec or `exit_now`).
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) }).map(drop)
}

/// A copy of `fd` at the lowest free number from `min` up, close-on-exec.
pub fn dup_above(fd: RawFd, min: RawFd) -> io::Result<RawFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on plain integers returns a new fd.
    check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) }.into()).map(|r| r as RawFd)
}

/// `fd` copied onto `target` (closing what was there), not close-on-exec.
pub fn dup2(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on plain integers; the caller owns `target`'s number.
    check(unsafe { libc::dup2(fd, target) }.into()).map(drop)
}

/// Opens `path` with `flags` (no mode), returning the bare number: for a
/// child that places it on a fixed fd.
pub fn open_raw(path: &CStr, flags: libc::c_int) -> io::Result<RawFd> {
    // SAFETY: a NUL-terminated path; returns a new fd or -1.
    check(unsafe { libc::open(path.as_ptr(), flags) }.into()).map(|r| r as RawFd)
}

/// `execveat(fd, "", argv, env, AT_EMPTY_PATH)`: runs the program `fd`
/// holds. Only returns on failure. The raw syscall: musl's libc binding has
/// no execveat.
pub fn execveat_fd(
    fd: BorrowedFd<'_>,
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
) -> io::Error {
    assert!(argv.last() == Some(&std::ptr::null()) && env.last() == Some(&std::ptr::null()));
    // SAFETY: argv and env are NULL-terminated (asserted) arrays of pointers
    // the caller keeps alive across the call; the path is the empty C string.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            env.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    io::Error::last_os_error()
}

/// `struct clone_args` of Linux 5.7 (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A fork-like clone3 with `flags` (no CLONE_VM, no stack; SIGCHLD at
/// exit), into the cgroup v2 directory `cgroup` when given: 0 in the
/// child, the child's PID in the parent.
///
/// # Safety
/// As for fork: in a multi-threaded caller the child may make only
/// async-signal-safe calls.
pub unsafe fn clone3(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> io::Result<libc::pid_t> {
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork
    // (the caller's contract covers the child); `args` is a live local of
    // the size given.
    check(unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    })
    .map(|r| r as libc::pid_t)
}

/// A fork-like clone with `flags` (e.g. CLONE_PARENT, CLONE_NEWUSER) and
/// SIGCHLD at exit: 0 in the child, the child's PID in the parent. For
/// kernels and flags clone3 is not needed for.
///
/// # Safety
/// As for fork: in a multi-threaded caller the child may make only
/// async-signal-safe calls.
pub unsafe fn clone_fork(flags: libc::c_int) -> io::Result<libc::pid_t> {
    // SAFETY: a raw clone without CLONE_VM and without a stack behaves like
    // fork; the caller's contract covers the child.
    check(unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    })
    .map(|r| r as libc::pid_t)
}

/// `unshare(flags)`.
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare with an integer argument.
    check(unsafe { libc::unshare(flags) }.into()).map(drop)
}

/// `setns(fd, nstype)`.
pub fn setns(fd: BorrowedFd<'_>, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: setns on a borrowed (so open) fd with an integer type.
    check(unsafe { libc::setns(fd.as_raw_fd(), nstype) }.into()).map(drop)
}

/// uid and gid 0 (real, effective, saved), no supplementary groups, for
/// the calling thread: raw system calls, because the C library's wrappers
/// make every other thread of the process change too (setxid), and in a
/// child cloned from a multi-threaded process they wait for threads that
/// are not there.
pub fn become_uid_gid_0() -> io::Result<()> {
    // SAFETY: setgroups takes an empty list; the others plain integers.
    unsafe {
        check(libc::syscall(
            libc::SYS_setgroups,
            0usize,
            std::ptr::null::<libc::gid_t>(),
        ))?;
        check(libc::syscall(libc::SYS_setresgid, 0u32, 0u32, 0u32))?;
        check(libc::syscall(libc::SYS_setresuid, 0u32, 0u32, 0u32))?;
    }
    Ok(())
}

/// SIGKILL when the parent (thread) dies.
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) }.into()).map(drop)
}

/// no_new_privs: no exec from here on gains privileges.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }.into()).map(drop)
}

/// Waits for the next signal, forever: a helper kept only for what it holds.
pub fn pause_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// SIGKILL to `pid` and reap it; for a child of ours, whose PID cannot be
/// recycled before it is reaped.
pub fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: kill and waitpid with plain integers, on our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// `struct open_how` of openat2(2); libc's cannot be built outside libc.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dir, path, flags, resolve)` (Linux 5.6), no mode.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: openat2 reads `how` (a live local of the size given) and the
    // NUL-terminated path, and returns a new fd or -1.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: the kernel just returned this fd; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// rename(2) that never replaces: EEXIST when `to` exists. The raw call,
/// as the musl of the static build has no renameat2 wrapper.
pub fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    };
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: two NUL-terminated paths alive for the call; the flags are
    // an integer.
    check(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn openat2_resolves_inside_the_root_only() {
        let root = OwnedFd::from(std::fs::File::open("/proc/self").unwrap());
        // `..` from the root stays the root under RESOLVE_IN_ROOT.
        let fd = openat2(
            root.as_fd(),
            c"../../status",
            libc::O_RDONLY | libc::O_CLOEXEC,
            libc::RESOLVE_IN_ROOT,
        )
        .unwrap();
        let text = std::io::read_to_string(std::fs::File::from(fd)).unwrap();
        assert!(text.contains("CapBnd:"), "{text}");
        let err = openat2(
            root.as_fd(),
            c"nothing-here",
            libc::O_RDONLY,
            libc::RESOLVE_IN_ROOT,
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn dup_above_skips_low_numbers() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let copy = dup_above(f.as_raw_fd(), 100).unwrap();
        assert!(copy >= 100);
        // SAFETY: the copy was just made and is ours alone.
        drop(unsafe { OwnedFd::from_raw_fd(copy) });
    }
}
