//! Descriptors above 2 that the init inherits. They are the session's: a
//! pipe or socket passed through a subhost must reach its end when the
//! session closes it, not only when PID 1 exits. So the session gets them
//! when it is forked, and the init closes its own copies right after (at
//! start when it runs no session). The init opens nothing of its own but
//! libc's syslog socket, close-on-exec, which `logger::release` lets go of
//! first.

use crate::logger;

/// Closes every descriptor above 2 but `keep` (the services' state file,
/// which the session never gets: it is close-on-exec).
pub fn close_inherited(keep: Option<i32>) {
    logger::release();
    let keep = keep.and_then(|fd| u32::try_from(fd).ok());
    let ranges = match keep {
        Some(k) => [(3, k.saturating_sub(1)), (k.saturating_add(1), u32::MAX)],
        None => [(3, u32::MAX), (1, 0)],
    };
    // SAFETY: close_range takes plain integers; the descriptors closed are
    // not owned by any Rust object of the init. An empty range is EINVAL.
    let failed = ranges
        .iter()
        .filter(|(lo, hi)| lo <= hi)
        .any(|&(lo, hi)| unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) } != 0);
    if !failed {
        return;
    }
    // Kernels before 5.9: every number the descriptor limit allows.
    // SAFETY: sysconf only reads a limit.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    // -1 means no limit: the kernel's own ceiling (fs.nr_open) then.
    let max = if max > 0 { max } else { 1 << 20 };
    let keep = keep.and_then(|k| i32::try_from(k).ok());
    for fd in (3..i32::try_from(max).unwrap_or(i32::MAX)).filter(|&fd| Some(fd) != keep) {
        // SAFETY: as above; EBADF for numbers not open is expected.
        unsafe { libc::close(fd) };
    }
}
