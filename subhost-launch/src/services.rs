//! Supervised services (`SERVICE_<name>`) as the host sees them: the
//! options that hand them to a detached init, the state the init
//! publishes for `status`, and their stop before HALT.
//!
//! The init keeps their state in a memfd the launcher gives it on fd
//! `STATE_FD`, rewritten on every change, and `status` reads it through
//! `/proc/PID/fd/3` of the init. A memfd, not a file of the host: a
//! descriptor of a host directory held by PID 1 would be a way out of the
//! root for whatever can read PID 1's descriptors inside.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::Config;

/// Where the init finds its state file.
pub const STATE_FD: i32 = 3;
/// Where the init finds the services' sockets (socket activation), in
/// declared order: right after the state file.
pub const LISTEN_FD: i32 = STATE_FD + 1;
/// The signal that has the init stop its services (in reverse order), but
/// not itself: SIGRTMIN+3 as glibc numbers it.
const STOP_SIGNAL: i32 = 37;
/// A state larger than this is not the init's.
const STATE_MAX: u64 = 64 << 10;

/// One service, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub name: String,
    /// running, starting, restarting, failed, stopped or exited.
    pub state: String,
    /// On the host.
    pub pid: Option<i32>,
    /// Seconds since its current start; `None` when it is not running.
    pub uptime: Option<u64>,
    pub restarts: u64,
    /// Its last exit status (128+N for signal N).
    pub last_exit: Option<i32>,
    /// ok, unhealthy, starting (no check has passed yet) or none.
    pub health: String,
}

/// The init's options for the services of `cfg`: each command as a count
/// and its arguments, so nothing is re-quoted or parsed by a shell.
pub fn init_options(cfg: &Config) -> Vec<String> {
    if cfg.services.is_empty() {
        return Vec::new();
    }
    let mut argv = vec![
        "--state-fd".to_string(),
        STATE_FD.to_string(),
        "--health-interval".to_string(),
        cfg.health_interval.to_string(),
        "--health-timeout".to_string(),
        cfg.health_timeout.to_string(),
        "--health-retries".to_string(),
        cfg.health_retries.to_string(),
    ];
    for s in &cfg.services {
        let restart = s.restart.unwrap_or(cfg.restart).as_str();
        argv.push("--service".to_string());
        argv.push(format!("{}:{restart}:{}", s.name, s.argv.len()));
        argv.extend(s.argv.iter().cloned());
        if let Some(health) = &s.health {
            argv.push("--health".to_string());
            argv.push(format!("{}:{}", s.name, health.len()));
            argv.extend(health.iter().cloned());
        }
    }
    let mut fd = LISTEN_FD;
    for l in &cfg.listen {
        argv.push("--listen".to_string());
        argv.push(format!("{}:{fd}:{}", l.service, l.sockets.len()));
        fd += l.sockets.len() as i32;
    }
    argv
}

/// The state file handed to a detached init with services.
pub fn state_file() -> Result<OwnedFd> {
    nix::sys::memfd::memfd_create(c"subhost-services", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .context("cannot create the services' state file (memfd)")
}

/// The services of the running init `pid`, as it last published them;
/// `None` when it has none (or publishes nothing readable).
pub fn read(pid: i32) -> Option<Vec<Service>> {
    let path = format!("/proc/{pid}/fd/{STATE_FD}");
    // A rewrite met halfway is read again.
    for _ in 0..5 {
        let file = std::fs::File::open(&path).ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut text = String::new();
        file.take(STATE_MAX).read_to_string(&mut text).ok()?;
        if let Some(mut services) = parse(&text, now_secs()) {
            let host = host_pids(pid);
            for s in &mut services {
                // As the host numbers it; unknown is better than wrong.
                s.pid = s.pid.and_then(|inner| host.get(&inner).copied());
            }
            return Some(services);
        }
    }
    None
}

/// The init's children: their PID inside (as the init publishes them)
/// to their PID on the host. From `/proc/PID/task/PID/children`, or a scan
/// of /proc for kernels without it.
fn host_pids(init: i32) -> HashMap<i32, i32> {
    let children = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"));
    let pids: Vec<i32> = match children {
        Ok(text) => text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter(|&p| status_field(p, "PPid:").as_deref() == Some(&init.to_string()))
                    .collect()
            })
            .unwrap_or_default(),
    };
    pids.into_iter()
        .filter_map(|host| {
            let nspid = status_field(host, "NSpid:")?;
            let inner = nspid.split_whitespace().last()?.parse().ok()?;
            Some((inner, host))
        })
        .collect()
}

/// A field of `/proc/PID/status`, its value trimmed.
fn status_field(pid: i32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `seq N`, `NAME STATE PID STARTED RESTARTS LAST_EXIT HEALTH` lines
/// (tab-separated), `end N`; `None` when torn or not of that shape.
fn parse(text: &str, now: u64) -> Option<Vec<Service>> {
    let mut lines = text.lines();
    let seq = lines.next()?.strip_prefix("seq ")?;
    let mut services = Vec::new();
    for line in lines {
        if let Some(end) = line.strip_prefix("end ") {
            return (end == seq).then_some(services);
        }
        let f: Vec<&str> = line.split('\t').collect();
        let [name, state, pid, started, restarts, last_exit, health] = f[..] else {
            return None;
        };
        let pid: i32 = pid.parse().ok()?;
        let started: u64 = started.parse().ok()?;
        services.push(Service {
            name: name.to_string(),
            state: state.to_string(),
            pid: (pid > 0).then_some(pid),
            uptime: (pid > 0 && started > 0).then(|| now.saturating_sub(started)),
            restarts: restarts.parse().ok()?,
            last_exit: match last_exit {
                "-" => None,
                code => Some(code.parse().ok()?),
            },
            health: health.to_string(),
        });
    }
    None
}

/// Whether any service of the init `pid` still has a process.
pub fn any_running(pid: i32) -> bool {
    read(pid).is_some_and(|s| s.iter().any(|s| s.pid.is_some()))
}

/// Has the init `init` of `name` stop its services, last declared first
/// (each gets SIGTERM, and SIGKILL after the grace period); false when
/// none runs or it could not be asked.
pub fn ask_stop(name: &str, init: crate::state::ProcId) -> bool {
    if !any_running(init.pid) {
        return false;
    }
    let sent = crate::logging::step(format_args!("kill -{STOP_SIGNAL} {}", init.pid), || {
        let pidfd = crate::state::PidFd::open(init.pid)?;
        // The pidfd pins the process: checked again, a recycled PID is
        // never signalled.
        if crate::state::running_init(name) != Some(init) {
            return Ok(false);
        }
        pidfd.signal_number(STOP_SIGNAL).map(|()| true)
    });
    sent.unwrap_or_else(|e| {
        log::warn!("cannot have the init of {name} stop its services: {e}");
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Restart, Service as Declared};

    #[test]
    fn options_carry_each_argument_as_is() {
        let mut cfg = Config::defaults("x");
        assert!(init_options(&cfg).is_empty());
        cfg.restart = Restart::Always;
        cfg.services = vec![
            Declared {
                name: "web".into(),
                argv: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
                restart: None,
                health: Some(vec!["curl".into(), "-f".into()]),
            },
            Declared {
                name: "db".into(),
                argv: vec!["pg".into()],
                restart: Some(Restart::No),
                health: None,
            },
        ];
        let o = init_options(&cfg);
        let want = [
            "--state-fd",
            "3",
            "--health-interval",
            "30",
            "--health-timeout",
            "10",
            "--health-retries",
            "3",
            "--service",
            "web:always:3",
            "nginx",
            "-g",
            "daemon off;",
            "--health",
            "web:2",
            "curl",
            "-f",
            "--service",
            "db:no:1",
            "pg",
        ];
        assert_eq!(o, want);
    }

    #[test]
    fn state_is_read_whole_or_not_at_all() {
        let text =
            "seq 4\nweb\trunning\t42\t1000\t1\t137\tok\ndb\tfailed\t0\t0\t5\t1\tnone\nend 4\n";
        let s = parse(text, 1010).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].pid, s[0].uptime, s[0].restarts),
            (Some(42), Some(10), 1)
        );
        assert_eq!((s[0].last_exit, s[0].health.as_str()), (Some(137), "ok"));
        assert_eq!(
            (s[1].pid, s[1].uptime, s[1].state.as_str()),
            (None, None, "failed")
        );
        // A rewrite met halfway: the end is another version's, or missing.
        assert!(parse("seq 5\nweb\trunning\t42\t1000\t1\t-\tok\nend 4\n", 0).is_none());
        assert!(parse("seq 5\nweb\trunning\t42\t1000\t1\t-\tok\n", 0).is_none());
        assert!(parse("seq 5\nweb\trunning\n", 0).is_none());
        assert!(parse("", 0).is_none());
        // Shorter after longer: what follows the end is the old tail.
        let s = parse("seq 6\nend 6\nb\trunning\t1\t1\t0\t-\tnone\nend 5\n", 0).unwrap();
        assert!(s.is_empty());
    }
}
