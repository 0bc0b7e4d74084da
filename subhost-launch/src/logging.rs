//! Where the launcher's log goes: stderr by default, syslog when asked.
//! Errors are always printed to stderr by `main`, whatever the logger.

use log::{LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!(
                "subhost-launch: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
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
    if log::set_logger(&Stderr).is_ok() {
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
