//! Starting the session: its own process group, the terminal if we have
//! one, an empty signal mask (dispositions were already reset), then exec.
//!
//! The child shares our memory and runs on a stack of its own while we wait
//! for its exec (`CLONE_VM`, as posix_spawn does): no copy of our page
//! tables, no copy-on-write faults in either process, no copy to tear down
//! at its exec, and it runs at once instead of queueing behind us. We wait
//! in a read of a close-on-exec pipe, which its exec (or exit) closes,
//! rather than with `CLONE_VFORK`, whose wait is uninterruptible: an init
//! shown in state D while its session execs would look hung. (The futex
//! that `CLONE_CHILD_CLEARTID` clears at exec would be cheaper than the
//! pipe, but musl's clone refuses that flag.) Sharing the memory is safe
//! because the child only makes system calls (getpid, setpgid, tcsetpgrp,
//! sigprocmask, execve, write, _exit) and formats an error line into a
//! buffer on its own stack: it allocates nothing, takes no lock, and writes
//! no memory of ours but errno, which we read only when the clone itself
//! failed. No signal handler can run in it on our memory: the init installs
//! none (every disposition is the default), and every catchable signal
//! stays blocked until just before the exec.

use alloc::vec::Vec;
use core::ffi::{c_char, c_int, c_void, CStr};

use crate::logger;
use crate::sys::{self, Errno, Pid, SigSet};
use crate::tty::Terminal;

/// The child's stack: enough for execvp's PATH buffer (a path of up to
/// PATH_MAX on the stack) and the formatting of its one error line.
const STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

/// Used by one child at a time: we wait while it runs on it, and it is done
/// with it once it has exec'd or exited, when we go on.
static mut STACK: Stack = Stack([0; STACK_SIZE]);

/// What the child needs, on our stack, read-only for it.
struct Exec<'a> {
    program: &'a CStr,
    argv: *const *const c_char,
    tty: Option<i32>,
}

/// Starts `command` as the session; returns its pid (also its process
/// group id) or the errno of the clone. Exec failures are reported by the
/// child, which exits 127 (not found) or 126 (found but not runnable).
pub fn spawn(command: &[&CStr], tty: Option<&Terminal>) -> Result<Pid, i32> {
    // Built before the clone: the child only execs or exits.
    let mut argv: Vec<*const c_char> = command.iter().map(|a| a.as_ptr()).collect();
    argv.push(core::ptr::null());
    let Some(&program) = command.first() else {
        return Err(libc::EINVAL);
    };
    let exec = Exec {
        program,
        argv: argv.as_ptr(),
        tty: tty.map(|t| t.fd),
    };
    // SAFETY: only the address of the static is taken, never a reference;
    // the stack grows down from its end, which is 16-byte aligned.
    let top = unsafe { core::ptr::addr_of_mut!(STACK).cast::<u8>().add(STACK_SIZE) };
    // Without a pipe (no descriptor left), the kernel's vfork wait instead.
    let (pipe, wait) = match sys::pipe() {
        Ok(p) => (Some(p), 0),
        Err(_) => (None, libc::CLONE_VFORK),
    };
    // SAFETY: see the module's comment: the child runs `child` on its own
    // stack with `exec`, which stays alive and untouched until the child
    // has exec'd or exited (the read below, or CLONE_VFORK), and only
    // makes system calls; SIGCHLD reports its exit to us as for a forked
    // child.
    let pid = unsafe {
        libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | wait | libc::SIGCHLD,
            (&exec as *const Exec).cast_mut().cast(),
        )
    };
    // Read now, as the child may write errno while it runs.
    let clone_errno = if pid == -1 { sys::errno() } else { 0 };
    if let Some((r, w)) = pipe {
        sys::close(w);
        if pid != -1 {
            // EOF once the child's copy of `w` is closed by its exec or
            // exit; nobody writes to it. Signals are blocked, so nothing
            // should interrupt the read; whatever does, it is made again
            // without a look at errno, which the child may be writing.
            let mut byte = 0u8;
            // SAFETY: byte is valid for a write of one byte; r is ours.
            while unsafe { libc::read(r, (&mut byte as *mut u8).cast(), 1) } < 0 {}
        }
        sys::close(r);
    }
    if pid == -1 {
        return Err(clone_errno);
    }
    // The child took its group and the terminal before it exec'd, so both
    // are in place before any signal is forwarded to it.
    Ok(pid)
}

extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Exec` that spawn passed, alive while we run.
    let exec = unsafe { &*arg.cast::<Exec>() };
    let pid = sys::getpid();
    let _ = sys::setpgid(0, 0);
    if let Some(fd) = exec.tty {
        // SIGTTOU is still blocked here, so a background group may
        // take the terminal.
        let _ = sys::tcsetpgrp(fd, pid);
    }
    let _ = SigSet::empty().set_mask();
    // SAFETY: program and argv are NUL-terminated, argv ends in a null
    // pointer, and both outlive the call.
    unsafe { libc::execvp(exec.program.as_ptr(), exec.argv) };
    let err = sys::errno();
    let name = exec.program.to_str().unwrap_or("COMMAND");
    logger::say(format_args!("cannot run '{name}': {}", Errno(err)));
    let code = if err == libc::ENOENT || err == libc::ENOTDIR {
        127
    } else {
        126
    };
    // SAFETY: _exit ends the child at once: no atexit handler of ours, no
    // flush of anything shared with the parent.
    unsafe { libc::_exit(code) }
}
