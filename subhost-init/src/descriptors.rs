//! Descriptors above 2 that the init inherits. They are the session's: a
//! pipe or socket passed through a subhost must reach its end when the
//! session closes it, not only when PID 1 exits. So the session gets them
//! when it is forked, and the init closes its own copies right after (at
//! start when it runs no session). The init opens nothing of its own but
//! libc's syslog socket, close-on-exec, which `logger::release` lets go of
//! first.

use alloc::vec::Vec;

use crate::logger;

/// Closes every descriptor above 2 but those in `keep` (the services'
/// state file and their sockets, which the session never gets: they are
/// close-on-exec).
pub fn close_inherited(keep: &[i32]) {
    logger::release();
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.sort_unstable();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    let mut lo = 3u32;
    for &k in &keep {
        if k >= lo {
            if k > lo {
                ranges.push((lo, k - 1));
            }
            lo = k.saturating_add(1);
        }
    }
    ranges.push((lo, u32::MAX));
    // SAFETY: close_range takes plain integers; the descriptors closed are
    // not owned by any Rust object of the init.
    let failed = ranges
        .iter()
        .any(|&(lo, hi)| unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) } != 0);
    if !failed {
        return;
    }
    // Kernels before 5.9: every number the descriptor limit allows.
    // SAFETY: sysconf only reads a limit.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    // -1 means no limit: the kernel's own ceiling (fs.nr_open) then.
    let max = if max > 0 { max } else { 1 << 20 };
    for fd in (3..i32::try_from(max).unwrap_or(i32::MAX))
        .filter(|&fd| u32::try_from(fd).is_ok_and(|f| !keep.contains(&f)))
    {
        // SAFETY: as above; EBADF for numbers not open is expected.
        unsafe { libc::close(fd) };
    }
}
