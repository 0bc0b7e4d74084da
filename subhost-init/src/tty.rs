//! Handing the controlling terminal to the session and back.

use crate::logger::debug;
use crate::sys::{self, Errno, Pid};

/// The controlling terminal, when the init was started in its foreground.
pub struct Terminal {
    pub fd: i32,
    /// Foreground group at start, to hand the terminal back to. 0 when that
    /// group lives outside our PID namespace (a shell's job run through
    /// `unshare -pf`): the shell takes the terminal back itself then.
    home: Pid,
}

impl Terminal {
    /// The first of fds 0-2 that is our controlling terminal, if we are in
    /// its foreground group. A background init must not steal the terminal.
    pub fn foreground() -> Option<Terminal> {
        let (fd, fg) = (0..3).find_map(|fd| sys::tcgetpgrp(fd).ok().map(|fg| (fd, fg)))?;
        (fg == sys::getpgrp()).then_some(Terminal { fd, home: fg })
    }

    pub fn give(&self, pgrp: Pid) {
        if let Err(e) = sys::tcsetpgrp(self.fd, pgrp) {
            debug!("cannot give the terminal to group {pgrp}: {}", Errno(e));
        }
    }

    pub fn take_back(&self) {
        if self.home != 0 {
            self.give(self.home);
        }
    }

    /// True when our own group is in the foreground again, e.g. after the
    /// shell that runs us did `fg`.
    pub fn is_home(&self) -> bool {
        self.home != 0 && sys::tcgetpgrp(self.fd) == Ok(self.home)
    }

    /// True when the caller is a job of a shell that can stop and resume it:
    /// not a session leader, not PID 1 (which cannot be stopped), and its
    /// group is visible.
    pub fn shell_job(&self) -> bool {
        self.home != 0 && sys::getpid() != 1 && !sys::is_session_leader()
    }
}
