//! Log lines to stderr, or to syslog through libc's openlog/syslog. Each
//! line is formatted into a fixed stack buffer (truncated if longer), so
//! logging never allocates and never fails the caller.
//!
//! Its own few macros rather than the `log` crate: one backend chosen at
//! start needs no facade, and `log`'s `std` feature, enabled by any other
//! package of a build, would link std back into the init.

use core::fmt::Write;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::sys;

const PREFIX: &str = "subhost-init: ";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Warn = 1,
    Info,
    Debug,
    Trace,
}

/// The most verbose level logged; 0 logs nothing.
static MAX: AtomicU8 = AtomicU8::new(0);
/// Where lines go: 0 stderr, 1 syslog.
static TO_SYSLOG: AtomicU8 = AtomicU8::new(0);

/// Chooses the backend. Silent unless asked: `-v` info, `-vv` debug,
/// `-vvv` trace; `--syslog` alone logs at info.
pub fn init(verbosity: u8, syslog: bool) {
    let level = match verbosity {
        0 if syslog => Level::Info,
        0 => return,
        1 => Level::Info,
        2 => Level::Debug,
        _ => Level::Trace,
    };
    if syslog {
        open_syslog();
        TO_SYSLOG.store(1, Ordering::Relaxed);
    }
    MAX.store(level as u8, Ordering::Relaxed);
}

fn open_syslog() {
    // SAFETY: the ident is a static C string, as openlog keeps the
    // pointer; LOG_NDELAY is not used so nothing is opened yet.
    unsafe { libc::openlog(c"subhost-init".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX.load(Ordering::Relaxed)
}

/// Lets go of the syslog socket, if one is open; the next line opens it
/// again. For closing every descriptor above 2 without pulling one out
/// from under libc.
pub fn release() {
    if TO_SYSLOG.load(Ordering::Relaxed) == 1 {
        // SAFETY: closelog only closes libc's own socket and marks it
        // closed.
        unsafe { libc::closelog() };
        // glibc's closelog also forgets the ident.
        open_syslog();
    }
}

/// Writes one line at `level`; callers check `enabled` first (the macros
/// do), so that disabled lines are not even formatted.
pub fn write(level: Level, args: core::fmt::Arguments) {
    if TO_SYSLOG.load(Ordering::Relaxed) == 1 {
        to_syslog(level, args);
    } else {
        say(args);
    }
}

macro_rules! log_at {
    ($level:expr, $($arg:tt)+) => {
        if $crate::logger::enabled($level) {
            $crate::logger::write($level, format_args!($($arg)+));
        }
    };
}

macro_rules! warning {
    ($($arg:tt)+) => { $crate::logger::log_at!($crate::logger::Level::Warn, $($arg)+) };
}

macro_rules! info {
    ($($arg:tt)+) => { $crate::logger::log_at!($crate::logger::Level::Info, $($arg)+) };
}

macro_rules! debug {
    ($($arg:tt)+) => { $crate::logger::log_at!($crate::logger::Level::Debug, $($arg)+) };
}

macro_rules! trace {
    ($($arg:tt)+) => { $crate::logger::log_at!($crate::logger::Level::Trace, $($arg)+) };
}

// `warn` by path only: the bare name is also a built-in attribute.
pub(crate) use {debug, info, log_at, trace, warning as warn};

/// A line buffer that silently truncates.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        // Keep one byte for the trailing newline or NUL.
        let room = self.buf.len() - 1 - self.len;
        let n = s.len().min(room);
        if let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.len..self.len + n),
            s.as_bytes().get(..n),
        ) {
            dst.copy_from_slice(src);
            self.len += n;
        }
        Ok(())
    }
}

fn to_syslog(level: Level, args: core::fmt::Arguments) {
    let mut line = Line::new();
    let _ = write!(line, "{args}");
    // A NUL inside the message would only cut it short: harmless.
    if let Some(end) = line.buf.get_mut(line.len) {
        *end = 0;
    }
    let priority = match level {
        Level::Warn => libc::LOG_WARNING,
        Level::Info => libc::LOG_INFO,
        Level::Debug | Level::Trace => libc::LOG_DEBUG,
    };
    // SAFETY: the format is a static "%s" and the buffer is
    // NUL-terminated within its bounds.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), line.buf.as_ptr()) };
}

/// A one-line message that is always printed (usage errors, a session that
/// cannot start), whatever the log settings.
pub fn say(args: core::fmt::Arguments) {
    let mut line = Line::new();
    let _ = write!(line, "{PREFIX}{args}");
    if let Some(end) = line.buf.get_mut(line.len) {
        *end = b'\n';
        line.len += 1;
    }
    sys::write_fd(2, line.bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_sets_the_most_verbose_level() {
        // The only test that sets the level: it is process-wide.
        assert!(!enabled(Level::Warn), "silent unless asked");
        init(2, false);
        assert!(enabled(Level::Warn) && enabled(Level::Info) && enabled(Level::Debug));
        assert!(!enabled(Level::Trace));
    }
}
