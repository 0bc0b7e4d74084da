//! `log` backends: stderr, or syslog through libc's openlog/syslog. Each line
//! is formatted into a fixed stack buffer (truncated if longer), so logging
//! never allocates and never fails the caller.

use core::fmt::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::sys;

const PREFIX: &str = "subhost-init: ";

struct Stderr;
struct Syslog;

static STDERR: Stderr = Stderr;
static SYSLOG: Syslog = Syslog;

/// Installs the backend. Silent (`Off`) unless asked: `-v` info, `-vv`
/// debug, `-vvv` trace; `--syslog` alone logs at info.
pub fn init(verbosity: u8, syslog: bool) {
    let level = match verbosity {
        0 if syslog => LevelFilter::Info,
        0 => return,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let installed = if syslog {
        // SAFETY: the ident is a static C string, as openlog keeps the
        // pointer; LOG_NDELAY is not used so nothing is opened yet.
        unsafe { libc::openlog(c"subhost-init".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
        log::set_logger(&SYSLOG)
    } else {
        log::set_logger(&STDERR)
    };
    if installed.is_ok() {
        log::set_max_level(level);
    }
}

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

impl Log for Stderr {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        let mut line = Line::new();
        let _ = write!(line, "{PREFIX}{}", record.args());
        if let Some(end) = line.buf.get_mut(line.len) {
            *end = b'\n';
            line.len += 1;
        }
        sys::write_fd(2, line.bytes());
    }

    fn flush(&self) {}
}

impl Log for Syslog {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        let mut line = Line::new();
        let _ = write!(line, "{}", record.args());
        // A NUL inside the message would only cut it short: harmless.
        if let Some(end) = line.buf.get_mut(line.len) {
            *end = 0;
        }
        let priority = match record.level() {
            Level::Error => libc::LOG_ERR,
            Level::Warn => libc::LOG_WARNING,
            Level::Info => libc::LOG_INFO,
            Level::Debug | Level::Trace => libc::LOG_DEBUG,
        };
        // SAFETY: the format is a static "%s" and the buffer is
        // NUL-terminated within its bounds.
        unsafe { libc::syslog(priority, c"%s".as_ptr(), line.buf.as_ptr()) };
    }

    fn flush(&self) {}
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
