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

/// Closes every fd but those in `keep` (in any order). No allocation: a
/// process just forked may call it.
pub fn close_all_but(keep: &[RawFd]) -> io::Result<()> {
    let mut next: u32 = 0;
    loop {
        let lowest = keep
            .iter()
            .filter_map(|&fd| u32::try_from(fd).ok())
            .filter(|&fd| fd >= next)
            .min();
        match lowest {
            Some(k) => {
                if k > next {
                    close_range(next, k - 1, false)?;
                }
                next = k + 1;
            }
            None => return close_range(next, u32::MAX, false),
        }
    }
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

// The new mount API (open_tree, mount_setattr, move_mount, fsopen,
// fsconfig, fsmount): musl's libc has no wrappers for it.

pub const OPEN_TREE_CLONE: libc::c_uint = 1;
pub const AT_RECURSIVE: libc::c_uint = 0x8000;
pub const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
pub const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// `MS_PRIVATE` as `struct mount_attr` takes it, a u64 on every target.
pub const MOUNT_PROPAGATION_PRIVATE: u64 = 1 << 18;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

fn owned(r: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check(r)?;
    // SAFETY: the kernel just returned this fd; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A detached copy (`OPEN_TREE_CLONE` in `flags`) of, or a handle on, the
/// mount at `path` relative to `dirfd` (`libc::AT_FDCWD` for the cwd).
/// Close-on-exec.
pub fn open_tree(dirfd: RawFd, path: &CStr, flags: libc::c_uint) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: open_tree takes a NUL-terminated path that outlives the call
    // and returns a new fd or -1.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) })
}

/// Sets `attr` on the detached or attached mount `tree` itself (and every
/// mount below it when `at` has `AT_RECURSIVE`).
pub fn mount_setattr(tree: BorrowedFd<'_>, at: libc::c_uint, attr: &MountAttr) -> io::Result<()> {
    let at = at | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: mount_setattr on a valid fd with the empty path and a
    // mount_attr that lives across the call, its size given.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            at,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// Attaches the detached mount `tree` on `target`.
pub fn move_mount_to(tree: BorrowedFd<'_>, target: &CStr) -> io::Result<()> {
    // SAFETY: move_mount from a valid fd (empty path) to a NUL-terminated
    // path, both valid for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// A filesystem context for `fstype` (close-on-exec).
pub fn fsopen(fstype: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: fsopen takes a NUL-terminated name and flags, returns an fd
    // or -1.
    owned(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })
}

/// `fsconfig(FSCONFIG_SET_STRING)`: option `key` of the context is `value`.
pub fn fsconfig_string(fs: BorrowedFd<'_>, key: &CStr, value: &CStr) -> io::Result<()> {
    // SAFETY: fsconfig on a context fd with NUL-terminated key and value
    // alive for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// `fsconfig(FSCONFIG_SET_FD)`: option `key` of the context is the open
/// file `fd`.
pub fn fsconfig_fd(fs: BorrowedFd<'_>, key: &CStr, fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fsconfig on a context fd with a NUL-terminated key, no
    // value, and an open fd as aux.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_FD,
            key.as_ptr(),
            std::ptr::null::<libc::c_void>(),
            fd.as_raw_fd(),
        )
    })
    .map(drop)
}

/// `fsconfig(FSCONFIG_CMD_CREATE)`: the superblock made from the options.
pub fn fsconfig_create(fs: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fsconfig on a context fd with no key, value or aux.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })
    .map(drop)
}

/// A detached mount of the created context `fs`, with the mount
/// attributes `attrs` (MOUNT_ATTR_*); close-on-exec.
pub fn fsmount(fs: BorrowedFd<'_>, attrs: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: fsmount on a created context fd with flags and attributes.
    owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
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
