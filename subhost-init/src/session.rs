//! Starting the session: its own process group, the terminal if we have
//! one, an empty signal mask (dispositions were already reset), then exec.

use alloc::vec::Vec;
use core::ffi::{c_char, CStr};

use crate::logger;
use crate::sys::{self, Errno, Pid, SigSet};
use crate::tty::Terminal;

/// Forks and execs `command`; returns the session's pid (also its process
/// group id) or the fork errno. Exec failures are reported by the child,
/// which exits 127 (not found) or 126 (found but not runnable).
pub fn spawn(command: &[&CStr], tty: Option<&Terminal>) -> Result<Pid, i32> {
    // Built before fork: the child only execs or exits.
    let mut argv: Vec<*const c_char> = command.iter().map(|a| a.as_ptr()).collect();
    argv.push(core::ptr::null());
    let Some(program) = command.first() else {
        return Err(libc::EINVAL);
    };

    // SAFETY: the init is single-threaded, so the child may run any code;
    // it only execs or exits.
    match unsafe { libc::fork() } {
        -1 => Err(sys::errno()),
        0 => {
            let pid = sys::getpid();
            let _ = sys::setpgid(0, 0);
            if let Some(t) = tty {
                // SIGTTOU is still blocked here, so a background group may
                // take the terminal.
                let _ = sys::tcsetpgrp(t.fd, pid);
            }
            let _ = SigSet::empty().set_mask();
            // SAFETY: program and argv are NUL-terminated, argv ends in a
            // null pointer, and both outlive the call.
            unsafe { libc::execvp(program.as_ptr(), argv.as_ptr()) };
            let err = sys::errno();
            let name = program.to_str().unwrap_or("COMMAND");
            logger::say(format_args!("cannot run '{name}': {}", Errno(err)));
            let code = if err == libc::ENOENT || err == libc::ENOTDIR {
                127
            } else {
                126
            };
            // SAFETY: _exit skips atexit handlers that belong to the parent.
            unsafe { libc::_exit(code) }
        }
        pid => {
            // Also from here, so that the group exists before we forward
            // any signal to it; the child's own call may come later.
            let _ = sys::setpgid(pid, pid);
            if let Some(t) = tty {
                t.give(pid);
            }
            Ok(pid)
        }
    }
}
