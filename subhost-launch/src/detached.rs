//! Detached subhosts: what their init runs at boot (`BOOT`, then `START`),
//! what runs inside before they are stopped (`START` stopped in reverse,
//! then `HALT`), and their console: a log file on the host or a relay to
//! syslog.
//!
//! BOOT's argv and the service names reach `sh -c` as positional
//! arguments after a fixed script, so nothing from the config is ever
//! re-quoted or parsed by a shell a second time.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::layout::Layout;
use crate::{process, state};

/// How a service named in `START` is started or stopped, as overlay-boot
/// does: an absolute path is run as `PATH ACTION`; a name as
/// `/etc/init.d/NAME ACTION` when that is executable, else through
/// `service NAME ACTION`. A failure is reported and the next one runs.
const RUN_SERVICE: &str = r#"run_service() {
    case $1 in
    /*) "$1" "$2" ;;
    *) if [ -x "/etc/init.d/$1" ]; then "/etc/init.d/$1" "$2"; else service "$1" "$2"; fi ;;
    esac || echo "subhost: $1 $2: exit status $?" >&2
}
"#;

/// $1 is the number of services that follow; BOOT's argv comes after them.
const BOOT_SCRIPT: &str = r#"n=$1; shift
if [ $# -gt "$n" ]; then
    (shift "$n"; exec "$@") || echo "subhost: BOOT: exit status $?" >&2
fi
i=$n
for s do
    [ "$i" -gt 0 ] || break
    i=$((i - 1))
    echo "subhost: starting $s"
    run_service "$s" start
done
"#;

/// $1 is the number of services that follow, in the order they are to be
/// stopped; HALT's argv comes after them.
const HALT_SCRIPT: &str = r#"n=$1; shift
i=$n
for s do
    [ "$i" -gt 0 ] || break
    i=$((i - 1))
    echo "subhost: stopping $s"
    run_service "$s" stop
done
shift "$n"
if [ $# -gt 0 ]; then
    "$@" || echo "subhost: HALT: exit status $?" >&2
fi
"#;

/// `sh -c SCRIPT $0 N SERVICES... COMMAND...`
fn sh_argv(script: &str, arg0: &str, services: &[String], command: &[String]) -> Vec<String> {
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!("{RUN_SERVICE}{script}"),
        arg0.to_string(),
        services.len().to_string(),
    ];
    argv.extend(services.iter().cloned());
    argv.extend(command.iter().cloned());
    argv
}

/// The session a detached init runs: BOOT, then every START service; or
/// `None` when the config has neither.
pub fn boot_session(cfg: &Config) -> Option<Vec<String>> {
    let boot = cfg.boot.as_deref().unwrap_or_default();
    if boot.is_empty() && cfg.start.is_empty() {
        return None;
    }
    Some(sh_argv(BOOT_SCRIPT, "subhost-boot", &cfg.start, boot))
}

/// What runs inside before a detached subhost's init is told to stop:
/// the START services stopped in reverse order, then HALT (the mirror of
/// boot); `None` when the config has neither.
pub fn halt_command(cfg: &Config) -> Option<Vec<String>> {
    let halt = cfg.halt.as_deref().unwrap_or_default();
    if halt.is_empty() && cfg.start.is_empty() {
        return None;
    }
    let reversed: Vec<String> = cfg.start.iter().rev().cloned().collect();
    Some(sh_argv(HALT_SCRIPT, "subhost-halt", &reversed, halt))
}

/// argv of a detached init: it stays up after its session (or runs none),
/// reaping, until `stop` sends SIGTERM; its services (`SERVICE_<name>`)
/// start when the session is done.
pub fn init_argv(cfg: &Config) -> Result<Vec<CString>> {
    let grace = cfg.stop_timeout.to_string();
    let mut argv = vec!["subhost-init".to_string()];
    argv.extend(crate::services::init_options(cfg));
    match boot_session(cfg) {
        Some(session) => {
            argv.extend(["--keep-alive", "--grace", &grace, "--"].map(String::from));
            argv.extend(session);
        }
        None => argv.extend(["--no-session", "--grace", &grace].map(String::from)),
    }
    argv.into_iter()
        .map(|a| CString::new(a).context("an argument contains a NUL byte"))
        .collect()
}

/// Where a detached subhost's console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Console {
    /// Appended to this file (absolute).
    File(PathBuf),
    /// Relayed to syslog under the ident `subhost/NAME`.
    Syslog,
}

impl Console {
    /// `--console` as given: none is `$SUBHOST/NAME/console.log`, `syslog`
    /// is syslog, anything else a file (relative to the current directory;
    /// `./syslog` for a file of that name).
    pub fn from_arg(layout: &Layout, arg: Option<&str>) -> Result<Console> {
        match arg {
            None => Ok(Console::File(layout.dir.join("console.log"))),
            Some("syslog") => Ok(Console::Syslog),
            Some("") => bail!("--console: give a file or `syslog`"),
            Some(p) => {
                let cwd = std::env::current_dir().context("cannot find the current directory")?;
                Ok(Console::File(cwd.join(p)))
            }
        }
    }

    /// Opens the console for writing: a pipe to the relay that stamps
    /// each line into the file (created 0640, rotated at `log_max`), or to
    /// a syslog relay. Writes the first line.
    pub fn open(&self, name: &str, log_max: u64) -> Result<OwnedFd> {
        let fd: OwnedFd = match self {
            Console::File(path) => crate::console_log::spawn(path, log_max)?,
            Console::Syslog => {
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .context("cannot create a pipe")?;
                spawn_relay(r, name)?;
                w
            }
        };
        note(&fd, &format!("subhost {name}: starting"));
        Ok(fd)
    }
}

impl fmt::Display for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Console::File(p) => write!(f, "{}", p.display()),
            Console::Syslog => write!(f, "syslog"),
        }
    }
}

/// Writes one line of the launcher's own to the console (both relays
/// stamp it). Best effort: the console is for reading later, and a full
/// disk must not stop a start or stop.
pub fn note(fd: &OwnedFd, text: &str) {
    let _ = nix::unistd::write(fd, format!("{text}\n").as_bytes());
}

/// The local time broken down, if the C library can tell.
fn local_tm() -> Option<libc::tm> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // The C library's time_t, inferred from localtime_r: the libc crate
    // deprecates naming it on musl, where its width is changing.
    let now = secs as _;
    // SAFETY: tm is plain data (a null tm_zone pointer is valid); the call
    // fills it from `now` and returns null on failure.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers point to live locals.
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return None;
    }
    Some(tm)
}

/// RFC 3164's `Mmm dd hh:mm:ss`, which syslog daemons expect after the
/// priority.
fn syslog_timestamp() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let Some(tm) = local_tm() else {
        return "Jan  1 00:00:00".into();
    };
    let month = MONTHS.get(tm.tm_mon as usize).unwrap_or(&"Jan");
    format!(
        "{month} {:2} {:02}:{:02}:{:02}",
        tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

/// The syslog socket: `/dev/log`, or `SUBHOST_SYSLOG_SOCKET` (for tests,
/// which must not write to the host's log).
fn syslog_socket() -> PathBuf {
    match std::env::var_os("SUBHOST_SYSLOG_SOCKET") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("/dev/log"),
    }
}

/// facility daemon (3), severity info (6).
const PRIORITY: u8 = 3 << 3 | 6;
/// Longer lines are cut into pieces of this size (a datagram's limit on
/// many syslog daemons is about 2 KiB).
const MAX_LINE: usize = 2000;

/// Starts the syslog relay of `name`'s console: a process of the host,
/// detached from the launcher (double fork, a session of its own, no fd
/// but the pipe and its socket), that sends each line read from `input`
/// to syslog and exits at EOF, when the last writer (the subhost's last
/// process) is gone.
fn spawn_relay(input: OwnedFd, name: &str) -> Result<()> {
    let path = syslog_socket();
    let sock = UnixDatagram::unbound().context("cannot create a socket for syslog")?;
    // Fail now, where the caller can be told, rather than in the relay.
    sock.connect(&path)
        .with_context(|| format!("cannot reach syslog at {}", path.display()))?;
    let ident = format!("subhost/{name}");
    let relay_main = || match crate::console_log::relay_fds(input.as_raw_fd(), sock.as_raw_fd()) {
        Ok(()) => {
            // SAFETY: relay_fds put the pipe on 0 and the socket on 3;
            // nothing else owns them now.
            let (input, sock) = unsafe { (File::from_raw_fd(0), UnixDatagram::from_raw_fd(3)) };
            relay(input, &sock, &path, &ident);
            0
        }
        Err(_) => 1,
    };
    // SAFETY: the launcher is single-threaded; the relay leaves through
    // exit_now.
    unsafe { process::daemon(relay_main) }.context("cannot fork the syslog relay")
}

/// Sends every line of `input` to syslog until EOF.
fn relay(mut input: File, sock: &UnixDatagram, path: &Path, ident: &str) {
    let pid = std::process::id();
    let send = |line: &[u8]| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if text.is_empty() {
            return;
        }
        let msg = format!("<{PRIORITY}>{} {ident}[{pid}]: {text}", syslog_timestamp());
        // Unconnected sends: a syslog daemon restarted meanwhile has a new
        // socket at the same path. A lost line cannot be reported anywhere.
        if sock.send(msg.as_bytes()).is_err() {
            let _ = sock.send_to(msg.as_bytes(), path);
        }
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            send(&line[..i]);
        }
        while pending.len() >= MAX_LINE {
            let piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
            send(&piece);
        }
    }
    send(&pending);
}

fn record_path(name: &str) -> PathBuf {
    crate::run::of(name).console()
}

/// Notes that `name` runs detached with `console`; `stop` finds the
/// console through it.
pub fn record_console(name: &str, console: &Console) -> Result<()> {
    let path = record_path(name);
    let text = match console {
        Console::File(p) => format!("file {}\n", p.display()),
        Console::Syslog => "syslog\n".to_string(),
    };
    state::write_record(&path, &text)
}

pub fn clear_console(name: &str) {
    let _ = std::fs::remove_file(record_path(name));
}

/// The console of `name` as recorded at its detached start.
pub fn recorded_console(name: &str) -> Option<Console> {
    let text = crate::files::read_text(&record_path(name), crate::files::RECORD_MAX).ok()?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    match text.split_once(' ') {
        Some(("file", p)) => Some(Console::File(PathBuf::from(p))),
        _ if text == "syslog" => Some(Console::Syslog),
        _ => None,
    }
}

/// The console of a running detached subhost, reopened from its init's
/// stdout: the same file (even if renamed since), or the same pipe to the
/// relay. `None` if it was not started detached or its stdout is anything
/// else.
pub fn reopen_console(name: &str, init_pid: i32) -> Option<(OwnedFd, Console)> {
    let console = recorded_console(name)?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        // A pipe's write side opens at once only if it has a reader; then
        // the flag is cleared so that writers inside block as usual.
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/proc/{init_pid}/fd/1"))
        .ok()?;
    let kind = file.metadata().ok()?.file_type();
    if !(kind.is_file() || kind.is_fifo()) {
        return None;
    }
    let fd = OwnedFd::from(file);
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).ok()?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
    Some((fd, console))
}

/// `argv` as a shell would need it typed, for `--dry-run`.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(crate::config::quote)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A temp dir of executables, removed on drop.
    struct Bin(PathBuf);
    impl Bin {
        fn new(tag: &str) -> Bin {
            let dir = std::env::temp_dir()
                .join(format!("subhost-test-detach-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Bin(dir)
        }
        fn script(&self, name: &str, body: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        }
    }
    impl Drop for Bin {
        fn drop(&mut self) {
            let _ = crate::files::tree::remove_tree_mount_free(&self.0);
        }
    }

    /// Runs `argv` (from `sh_argv`) with the host's sh, `bin` first in
    /// PATH; returns stdout and stderr.
    fn run(argv: &[String], bin: &Bin) -> (String, String) {
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env("PATH", format!("{}:/usr/bin:/bin", bin.0.display()))
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn boot_runs_boot_verbatim_then_services_in_order() {
        let bin = Bin::new("boot");
        let svc = bin.script("my svc", r#"echo "path-svc $1""#);
        bin.script("service", r#"echo "service $1 $2"; exit 3"#);
        let mut cfg = Config::defaults("x");
        cfg.boot = Some(strs(&["printf", "<%s>", "a b", "'q'", "$HOME", "*", "-n"]));
        cfg.start = vec![svc.display().to_string(), "sht-no-such-svc".into()];
        let (out, err) = run(&boot_session(&cfg).unwrap(), &bin);
        let want = format!(
            "<a b><'q'><$HOME><*><-n>subhost: starting {0}\npath-svc start\n\
             subhost: starting sht-no-such-svc\nservice sht-no-such-svc start\n",
            svc.display()
        );
        assert_eq!(out, want);
        assert_eq!(err, "subhost: sht-no-such-svc start: exit status 3\n");
    }

    #[test]
    fn a_failing_boot_is_reported_and_services_still_start() {
        let bin = Bin::new("fail");
        let svc = bin.script("svc", r#"echo "svc $1""#);
        let mut cfg = Config::defaults("x");
        cfg.boot = Some(strs(&["sh", "-c", "exit 4"]));
        cfg.start = vec![svc.display().to_string()];
        let (out, err) = run(&boot_session(&cfg).unwrap(), &bin);
        assert!(out.ends_with("svc start\n"), "{out}");
        assert_eq!(err, "subhost: BOOT: exit status 4\n");
    }

    #[test]
    fn halt_stops_services_in_reverse_then_runs_halt() {
        let bin = Bin::new("halt");
        let a = bin.script("a", r#"echo "a $1""#);
        let b = bin.script("b", r#"echo "b $1""#);
        let mut cfg = Config::defaults("x");
        cfg.start = vec![a.display().to_string(), b.display().to_string()];
        cfg.halt = Some(strs(&["echo", "halt", "x y"]));
        let (out, _) = run(&halt_command(&cfg).unwrap(), &bin);
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with("subhost:")).collect();
        assert_eq!(lines, ["b stop", "a stop", "halt x y"]);
        // START alone is enough to have a stop step; HALT alone too.
        cfg.halt = None;
        assert!(halt_command(&cfg).is_some());
        cfg.start.clear();
        assert!(halt_command(&cfg).is_none());
    }

    #[test]
    fn without_boot_or_start_the_init_runs_no_session() {
        let mut cfg = Config::defaults("x");
        cfg.stop_timeout = 9;
        let argv: Vec<String> = init_argv(&cfg)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(argv, ["subhost-init", "--no-session", "--grace", "9"]);
        cfg.boot = Some(strs(&["/etc/init.d/rc", "2"]));
        let argv: Vec<String> = init_argv(&cfg)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            argv[..5],
            ["subhost-init", "--keep-alive", "--grace", "9", "--"]
        );
        assert_eq!(argv[5..7], ["/bin/sh", "-c"]);
        assert_eq!(argv[8..], ["subhost-boot", "0", "/etc/init.d/rc", "2"]);
    }

    #[test]
    fn console_argument() {
        let layout = Layout::new(Path::new("/opt/subhost"), "box").unwrap();
        assert_eq!(
            Console::from_arg(&layout, None).unwrap(),
            Console::File("/opt/subhost/box/console.log".into())
        );
        assert_eq!(
            Console::from_arg(&layout, Some("syslog")).unwrap(),
            Console::Syslog
        );
        let rel = Console::from_arg(&layout, Some("./syslog")).unwrap();
        assert_eq!(
            rel,
            Console::File(std::env::current_dir().unwrap().join("./syslog"))
        );
        assert!(Console::from_arg(&layout, Some("")).is_err());
    }

    #[test]
    fn shell_words_quote_only_what_needs_it() {
        assert_eq!(
            shell_words(&strs(&["a", "b c", "it's", "", "--grace=5"])),
            r#"a 'b c' 'it'\''s' '' --grace=5"#
        );
    }

    #[test]
    fn timestamps_have_their_shape() {
        assert_eq!(syslog_timestamp().len(), "Jun  1 14:03:59".len());
    }
}
