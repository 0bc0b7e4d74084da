//! Where the launcher's log goes: stderr by default, syslog when asked.
//! Errors are always printed to stderr by `main`, whatever the logger.

use log::{LevelFilter, Log, Metadata, Record};

/// The launcher's stderr as it was at start, also for the sandbox's child
/// after a detached start has put the console on its fd 2: the log of its
/// steps belongs to whoever ran `-v start`, not to the console. A
/// close-on-exec copy, so the subhost's init never gets it.
struct Stderr {
    fd: Option<std::os::fd::OwnedFd>,
}

impl Log for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format!(
            "subhost-launch: {}: {}\n",
            r.level().as_str().to_lowercase(),
            r.args()
        );
        match &self.fd {
            Some(fd) => {
                let _ = nix::unistd::write(fd, line.as_bytes());
            }
            None => eprint!("{line}"),
        }
    }
    fn flush(&self) {}
}

/// `verbosity` counts `-v`: warnings by default, then info, debug, trace.
pub fn init(verbosity: u8, syslog: bool) {
    let level = match verbosity {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    if syslog {
        let fmt = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: "subhost-launch".into(),
            pid: std::process::id(),
        };
        match syslog::unix(fmt) {
            Ok(writer) => {
                if log::set_boxed_logger(Box::new(syslog::BasicLogger::new(writer))).is_ok() {
                    log::set_max_level(level);
                }
                return;
            }
            Err(e) => eprintln!("subhost-launch: cannot reach syslog ({e}); logging to stderr"),
        }
    }
    // Only -v logs from the sandbox's child; without it, no copy is made.
    let fd = if verbosity > 0 {
        nix::fcntl::fcntl(std::io::stderr(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).ok()
    } else {
        None
    };
    let fd = fd.map(|fd| {
        // SAFETY: fcntl just returned this new descriptor; nothing else owns it.
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    });
    if log::set_boxed_logger(Box::new(Stderr { fd })).is_ok() {
        log::set_max_level(level);
    }
}

/// Runs one step of a plan (what `--dry-run` prints for it): logged before
/// it runs at `-v`, so a step that hangs is the last line, and with its
/// duration at `-vv`.
pub fn step<T>(what: impl std::fmt::Display, run: impl FnOnce() -> T) -> T {
    log::info!("{what}");
    if !log::log_enabled!(log::Level::Debug) {
        return run();
    }
    let t = std::time::Instant::now();
    let r = run();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    log::debug!("{ms:.3} ms: {what}");
    r
}
