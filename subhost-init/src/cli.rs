//! Command line: options up to the first non-option, then the session.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ffi::CStr;

use crate::services::{HealthOptions, Restart, Spec};
use crate::signals;
use crate::sys::Millis;

pub const HELP: &str = "\
Usage: subhost-init [OPTIONS] [--] [COMMAND [ARGS...]]

Runs COMMAND (default /bin/bash) as the session, forwards signals to it,
reaps every process that ends up as its child, and when the session exits
sends SIGTERM+SIGCONT to every process left, waits for them up to the grace
period and SIGKILLs whatever remains. As PID 1 that is every process of the
PID namespace; otherwise it registers as child subreaper and does the same
to its own subtree. Options end at the first non-option.

Options:
      --grace SECONDS    grace period before SIGKILL (default 5; 0.5 is fine)
  -c, --single-child     forward signals to the session process only, not to
                         its process group
  -e, --map-exit CODE    exit 0 when the session's status is CODE (0-255,
                         e.g. 143 for death by SIGTERM); repeatable
  -r, --rewrite S:R      forward signal R when S arrives; R=0 drops S;
                         repeatable
  -p, --pdeathsig SIG    get SIG when the parent dies (SIGTERM shuts down)
  -k, --keep-alive       when the session exits, stay up reaping orphans
                         until SIGTERM, then shut down as usual
  -n, --no-session       start no session at all (implies --keep-alive);
                         takes no COMMAND; exits 0 after SIGTERM
      --service NAME:RESTART:N ARG1..ARGN
                         a supervised service (see below); repeatable
      --health NAME:N ARG1..ARGN
                         the health check of service NAME
      --health-interval SECONDS, --health-timeout SECONDS (default 30, 10)
      --health-retries N failed checks in a row that restart (default 3)
      --state-fd FD      a file to keep the services' state in
      --listen NAME:FD:N the N sockets at FD.. are service NAME's: it gets
                         them at 3.. with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES
  -v, --verbose          log to stderr; -vv and -vvv say more
  -s, --syslog           log to syslog (daemon facility) instead
  -h, --help             print this help
  -V, --version          print the version

Signals: all catchable ones (HUP INT QUIT USR1 USR2 WINCH ALRM ABRT PIPE
CONT TSTP TTIN TTOU real-time ...) go to the session's process group.
SIGTERM also starts the shutdown: the session gets it first; everyone
else when the session has exited or half the grace period has passed;
SIGKILL for what is left when the grace period ends.

Terminal: when started in the foreground of a terminal, the session gets
its own process group and the terminal, and the terminal is handed back
when it exits. When the session is stopped (Ctrl-Z) and the init is a job
of a shell, the init stops too, so that the shell's fg/bg work.

Descriptors: those above 2 go to the session; the init closes its own
copies once the session is started (at start with --no-session).

Services: started when the session has exited (at once with --no-session),
in the order given, each in a process group of its own with its output
relayed to stdout as 'NAME: line'. RESTART is no, on-failure or always:
restarts wait 1 s, doubling to 30 s; a sixth restart within 60 s marks the
service failed. Signal 37 (SIGRTMIN+3) stops them in reverse order, each
with SIGTERM and after the grace period SIGKILL; so does the shutdown.

Exit status: the session's, 128+N when it was killed by signal N, 0 when
mapped by -e; 127 if COMMAND was not found, 126 if it could not be run;
2 for bad usage; 125 if the session could not be started at all.
";

pub const USAGE_EXIT: i32 = 2;

pub struct Options {
    /// Grace period in milliseconds.
    pub grace: Millis,
    pub single_child: bool,
    /// Bit N set: exit status N becomes 0.
    pub map_exit: [u64; 4],
    pub rewrite: Vec<(i32, i32)>,
    pub pdeathsig: Option<i32>,
    pub keep_alive: bool,
    pub no_session: bool,
    pub verbosity: u8,
    pub syslog: bool,
    pub command: Vec<&'static CStr>,
    pub services: Vec<Spec>,
    pub health: HealthOptions,
    pub state_fd: Option<i32>,
}

impl Options {
    /// The status the init exits with for a session status.
    pub fn exit_code(&self, status: i32) -> i32 {
        let mapped = usize::try_from(status)
            .ok()
            .and_then(|s| self.map_exit.get(s / 64).map(|w| w >> (s % 64) & 1 == 1));
        if mapped == Some(true) {
            0
        } else {
            status
        }
    }

    /// What a caught signal is forwarded as; 0 drops it.
    pub fn forward_as(&self, sig: i32) -> i32 {
        self.rewrite
            .iter()
            .rev()
            .find(|&&(from, _)| from == sig)
            .map_or(sig, |&(_, to)| to)
    }
}

pub enum Parsed {
    Run(Options),
    Help,
    Version,
}

/// Parses the arguments after the program name. Errors are one line saying
/// what was wrong with which option.
pub fn parse(args: impl IntoIterator<Item = &'static CStr>) -> Result<Parsed, String> {
    let mut o = Options {
        grace: 5000,
        single_child: false,
        map_exit: [0; 4],
        rewrite: Vec::new(),
        pdeathsig: None,
        keep_alive: false,
        no_session: false,
        verbosity: 0,
        syslog: false,
        command: Vec::new(),
        services: Vec::new(),
        health: HealthOptions {
            interval: 30_000,
            timeout: 10_000,
            retries: 3,
        },
        state_fd: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = match arg.to_str() {
            Ok("--") => {
                o.command.extend(args);
                break;
            }
            Ok(t) if t.starts_with('-') && t.len() > 1 => t.to_string(),
            _ => {
                o.command.push(arg);
                o.command.extend(args);
                break;
            }
        };
        if let Some(long) = text.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            if name == "listen" {
                let value = value_for(inline, &mut args, &text)?;
                take_listen(&mut o, &value)?;
                continue;
            }
            if name == "service" || name == "health" {
                let value = value_for(inline, &mut args, &text)?;
                take_command(&mut o, name, &value, &mut args)?;
                continue;
            }
            let flag = match name {
                "grace" => 'G',
                "health-interval" => 'I',
                "health-timeout" => 'T',
                "health-retries" => 'R',
                "state-fd" => 'F',
                "single-child" => 'c',
                "map-exit" => 'e',
                "rewrite" => 'r',
                "pdeathsig" => 'p',
                "keep-alive" => 'k',
                "no-session" => 'n',
                "verbose" => 'v',
                "syslog" => 's',
                "help" => 'h',
                "version" => 'V',
                _ => return Err(format!("unknown option '--{name}'")),
            };
            if takes_value(flag) {
                let value = value_for(inline, &mut args, &text)?;
                apply_value(&mut o, flag, &value)?;
            } else if inline.is_some() {
                return Err(format!("option '--{name}' takes no value"));
            } else if let Some(done) = apply_flag(&mut o, flag) {
                return Ok(done);
            }
            continue;
        }
        // A cluster of short options: -vv, -k, -e3, -e 3.
        let mut rest = text.get(1..).unwrap_or_default();
        while let Some(flag) = rest.chars().next() {
            rest = rest.get(flag.len_utf8()..).unwrap_or_default();
            if !"cerpknvshV".contains(flag) {
                return Err(format!("unknown option '-{flag}'"));
            }
            if takes_value(flag) {
                let inline = (!rest.is_empty()).then(|| rest.to_string());
                let value = value_for(inline, &mut args, &format!("-{flag}"))?;
                apply_value(&mut o, flag, &value)?;
                break;
            }
            if let Some(done) = apply_flag(&mut o, flag) {
                return Ok(done);
            }
        }
    }
    if o.no_session {
        if !o.command.is_empty() {
            return Err("--no-session takes no COMMAND".into());
        }
        o.keep_alive = true;
    } else if o.command.is_empty() {
        o.command.push(c"/bin/bash");
    }
    Ok(Parsed::Run(o))
}

fn takes_value(flag: char) -> bool {
    matches!(flag, 'G' | 'e' | 'r' | 'p' | 'I' | 'T' | 'R' | 'F')
}

fn value_for(
    inline: Option<String>,
    args: &mut impl Iterator<Item = &'static CStr>,
    opt: &str,
) -> Result<String, String> {
    match inline.or_else(|| args.next().and_then(|a| Some(a.to_str().ok()?.to_string()))) {
        Some(v) => Ok(v),
        None => Err(format!("option '{opt}' needs a value")),
    }
}

fn apply_flag(o: &mut Options, flag: char) -> Option<Parsed> {
    match flag {
        'c' => o.single_child = true,
        'k' => o.keep_alive = true,
        'n' => o.no_session = true,
        'v' => o.verbosity = o.verbosity.saturating_add(1),
        's' => o.syslog = true,
        'h' => return Some(Parsed::Help),
        _ => return Some(Parsed::Version),
    }
    None
}

fn apply_value(o: &mut Options, flag: char, v: &str) -> Result<(), String> {
    match flag {
        'G' => {
            o.grace = parse_seconds(v).ok_or_else(|| {
                format!("--grace: '{v}' is not a number of seconds (e.g. 5 or 0.5)")
            })?
        }
        'I' | 'T' => {
            let ms = parse_seconds(v).filter(|&ms| ms > 0).ok_or_else(|| {
                format!("health interval and timeout: '{v}' is not a number of seconds above 0")
            })?;
            if flag == 'I' {
                o.health.interval = ms;
            } else {
                o.health.timeout = ms;
            }
        }
        'R' => {
            o.health.retries = v
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("--health-retries: '{v}' is not a count above 0"))?
        }
        'F' => {
            o.state_fd = Some(
                v.parse()
                    .ok()
                    .filter(|&fd| fd > 2)
                    .ok_or_else(|| format!("--state-fd: '{v}' is not a descriptor above 2"))?,
            )
        }
        'e' => {
            let code = v
                .parse::<usize>()
                .ok()
                .filter(|&c| c <= 255)
                .ok_or_else(|| format!("-e: '{v}' is not an exit status (0-255)"))?;
            if let Some(word) = o.map_exit.get_mut(code / 64) {
                *word |= 1 << (code % 64);
            }
        }
        'r' => {
            let bad = || {
                format!("-r: '{v}' is not S:R with two signals (e.g. TERM:INT, or USR1:0 to drop)")
            };
            let (from, to) = v.split_once(':').ok_or_else(bad)?;
            let from = signals::parse(from).ok_or_else(bad)?;
            let to = if to == "0" {
                0
            } else {
                signals::parse(to).ok_or_else(bad)?
            };
            o.rewrite.push((from, to));
        }
        _ => {
            let sig = signals::parse(v)
                .ok_or_else(|| format!("-p: '{v}' is not a signal (e.g. TERM or 15)"))?;
            o.pdeathsig = Some(sig);
        }
    }
    Ok(())
}

/// `--service NAME:RESTART:N` or `--health NAME:N`, and the N arguments
/// that follow: the command, each argument as given (nothing re-parsed).
fn take_command(
    o: &mut Options,
    kind: &str,
    value: &str,
    args: &mut impl Iterator<Item = &'static CStr>,
) -> Result<(), String> {
    let form = if kind == "service" {
        "NAME:RESTART:N"
    } else {
        "NAME:N"
    };
    let bad = || format!("--{kind}: '{value}' is not {form}");
    let (name, rest) = value.split_once(':').ok_or_else(bad)?;
    let (restart, count) = match rest.split_once(':') {
        Some((r, n)) if kind == "service" => (Restart::parse(r).ok_or_else(bad)?, n),
        None if kind == "health" => (Restart::No, rest),
        _ => return Err(bad()),
    };
    let count: usize = count.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
    let valid = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(format!(
            "--{kind}: '{name}' is not a service name (a-z, 0-9, _; up to 32)"
        ));
    }
    let mut argv = Vec::with_capacity(count);
    for _ in 0..count {
        argv.push(
            args.next()
                .ok_or_else(|| format!("--{kind} {name}: {count} arguments expected"))?,
        );
    }
    let known = o.services.iter_mut().find(|s| s.name == name);
    match (kind, known) {
        ("service", None) => o.services.push(Spec {
            name: alloc::boxed::Box::leak(name.to_string().into_boxed_str()),
            restart,
            argv,
            health: Vec::new(),
            listen: None,
        }),
        ("service", Some(_)) => return Err(format!("--service: '{name}' given twice")),
        (_, Some(s)) if s.health.is_empty() => s.health = argv,
        (_, Some(_)) => return Err(format!("--health: '{name}' given twice")),
        (_, None) => return Err(format!("--health: no --service '{name}' before it")),
    }
    Ok(())
}

/// `--listen NAME:FD:N`: the sockets at FD..FD+N-1 are for service NAME
/// (given before it), handed to it by the sd_listen_fds protocol.
fn take_listen(o: &mut Options, value: &str) -> Result<(), String> {
    let bad = || format!("--listen: '{value}' is not NAME:FD:N (FD above 2, N above 0)");
    let mut parts = value.split(':');
    let (Some(name), Some(fd), Some(n), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let fd: i32 = fd.parse().ok().filter(|&fd| fd > 2).ok_or_else(bad)?;
    let n: i32 = n
        .parse()
        .ok()
        .filter(|&n| n > 0 && n < 1024)
        .ok_or_else(bad)?;
    let s = o
        .services
        .iter_mut()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("--listen: no --service '{name}' before it"))?;
    if s.listen.is_some() {
        return Err(format!("--listen: '{name}' given twice"));
    }
    s.listen = Some((fd, n));
    Ok(())
}

/// "5", "0.5", "2.250" in milliseconds: at most millisecond precision, at
/// most a day.
fn parse_seconds(v: &str) -> Option<Millis> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 3 {
        return None;
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(frac) {
        return None;
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let millis: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<3}").parse().ok()?
    };
    (secs <= 86_400).then_some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::ffi::CString;

    fn run(args: &[&str]) -> Result<Options, String> {
        let args = args
            .iter()
            .map(|a| &*Box::leak(CString::new(*a).unwrap().into_boxed_c_str()));
        match parse(args)? {
            Parsed::Run(o) => Ok(o),
            _ => Err("not a run".into()),
        }
    }

    #[test]
    fn options_stop_at_first_non_option() {
        let o = run(&["-vv", "--grace", "0.5", "bash", "-l", "--grace"]).unwrap();
        assert_eq!(o.verbosity, 2);
        assert_eq!(o.grace, 500);
        assert_eq!(o.command, [c"bash", c"-l", c"--grace"]);
    }

    #[test]
    fn defaults_to_bash() {
        let o = run(&[]).unwrap();
        assert_eq!(o.command, [c"/bin/bash"]);
        assert_eq!(o.grace, 5000);
    }

    #[test]
    fn values_inline_and_separate() {
        let o = run(&[
            "-e3",
            "-e",
            "143",
            "--grace=2",
            "-rUSR1:0",
            "-r",
            "TERM:INT",
            "--",
            "-x",
        ])
        .unwrap();
        assert_eq!(o.exit_code(3), 0);
        assert_eq!(o.exit_code(143), 0);
        assert_eq!(o.exit_code(4), 4);
        assert_eq!(o.forward_as(libc::SIGUSR1), 0);
        assert_eq!(o.forward_as(libc::SIGTERM), libc::SIGINT);
        assert_eq!(o.forward_as(libc::SIGHUP), libc::SIGHUP);
        assert_eq!(o.grace, 2000);
        assert_eq!(o.command, [c"-x"]);
    }

    #[test]
    fn bad_usage_is_explained() {
        for (args, needle) in [
            (&["--nope"][..], "unknown option '--nope'"),
            (&["-z"], "unknown option '-z'"),
            (&["--grace"], "needs a value"),
            (&["--grace", "x"], "not a number of seconds"),
            (&["--grace", "1.2345"], "not a number of seconds"),
            (&["-e", "256"], "not an exit status"),
            (&["-r", "TERM"], "not S:R"),
            (&["-r", "TERM:NOPE"], "not S:R"),
            (&["-p", "0"], "not a signal"),
            (&["-n", "true"], "takes no COMMAND"),
            (&["--keep-alive=1"], "takes no value"),
        ] {
            let err = run(args).err().unwrap_or_default();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn listen_gives_a_declared_service_its_sockets() {
        let o = run(&[
            "--service",
            "web:no:1",
            "x",
            "--listen",
            "web:4:2",
            "--no-session",
        ])
        .unwrap();
        assert_eq!(o.services[0].listen, Some((4, 2)));
        for (args, needle) in [
            (&["--listen", "web:4:2"][..], "no --service 'web'"),
            (
                &["--service", "web:no:1", "x", "--listen", "web:2:1"],
                "not NAME:FD:N",
            ),
            (
                &["--service", "web:no:1", "x", "--listen", "web:4:0"],
                "not NAME:FD:N",
            ),
            (
                &["--service", "web:no:1", "x", "--listen", "web:4"],
                "not NAME:FD:N",
            ),
            (
                &[
                    "--service",
                    "web:no:1",
                    "x",
                    "--listen",
                    "web:4:1",
                    "--listen",
                    "web:5:1",
                ],
                "given twice",
            ),
        ] {
            let err = run(args).err().unwrap_or_default();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn services_take_their_arguments_verbatim() {
        let o = run(&[
            "--service",
            "web:always:3",
            "nginx",
            "-g",
            "daemon off;",
            "--health=web:2",
            "curl",
            "-f",
            "--health-interval",
            "0.5",
            "--state-fd",
            "3",
            "--no-session",
        ])
        .unwrap();
        assert_eq!(o.services.len(), 1);
        let s = &o.services[0];
        assert_eq!((s.name, s.restart), ("web", Restart::Always));
        assert_eq!(s.argv, [c"nginx", c"-g", c"daemon off;"]);
        assert_eq!(s.health, [c"curl", c"-f"]);
        assert_eq!(o.health.interval, 500);
        assert_eq!(o.state_fd, Some(3));
        assert!(o.no_session);
        for (args, needle) in [
            (&["--service", "Web:no:1", "x"][..], "not a service name"),
            (&["--service", "web:sometimes:1", "x"], "not NAME:RESTART:N"),
            (&["--service", "web:no:0"], "not NAME:RESTART:N"),
            (&["--service", "web:no:2", "x"], "2 arguments expected"),
            (&["--health", "web:1", "x"], "no --service 'web'"),
            (&["--health-interval", "0"], "above 0"),
            (&["--health-retries", "0"], "above 0"),
            (&["--state-fd", "1"], "above 2"),
        ] {
            let err = run(args).err().unwrap_or_default();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn no_session_implies_keep_alive() {
        let o = run(&["--no-session"]).unwrap();
        assert!(o.keep_alive && o.command.is_empty());
    }
}
