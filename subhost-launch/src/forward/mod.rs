//! The port forwarder of a subhost: what the kernel cannot do for a
//! published port, a client on the host itself connecting to `127.0.0.1`
//! or `[::1]` (IPv6 never routes `::1` off the loopback, and IPv4 would
//! need `route_localnet` on the host's bridges).
//!
//! One process per subhost, whatever the number of ports: it holds the
//! listening sockets in the host's network namespace and, for each
//! connection (or UDP client), makes the outgoing socket inside the
//! subhost's network namespace and relays both ways. It runs in the
//! host's namespaces, outside the subhost's PID namespace and cgroup, so
//! nothing inside can reach it or its sockets; it passes no fd inside.
//!
//! Its record `NAME.forward` in the run directory holds its identity
//! (`PID START_TIME`, so that a recycled PID is never signalled) and one
//! line per forward (`tcp 127.0.0.1:8080 10.0.0.5:80`).

mod relay;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::process::{self, Message};
use crate::state::{PidFd, ProcId};
use crate::{run, sys};

pub use crate::publish::Proto;

/// Connections to `listen` on the host reach `target` inside the subhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub proto: Proto,
    pub listen: SocketAddr,
    pub target: SocketAddr,
}

impl fmt::Display for Forward {
    /// `tcp:127.0.0.1:8080=10.0.0.5:80`, as `FromStr` reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}={}", self.proto, self.listen, self.target)
    }
}

impl FromStr for Forward {
    type Err = anyhow::Error;
    /// `PROTO:LISTEN=TARGET`, addresses with ports, IPv6 in brackets.
    fn from_str(s: &str) -> Result<Forward> {
        let form = "give PROTO:ADDR:PORT=ADDR:PORT, e.g. tcp:127.0.0.1:8080=10.0.0.5:80 \
                    or udp:[::1]:53=[fd00::5]:53";
        let (proto, rest) = s
            .split_once(':')
            .ok_or_else(|| anyhow!("forward {s:?}: {form}"))?;
        let (listen, target) = rest
            .split_once('=')
            .ok_or_else(|| anyhow!("forward {s:?}: {form}"))?;
        let addr = |a: &str| -> Result<SocketAddr> {
            a.parse()
                .map_err(|_| anyhow!("forward {s:?}: {a:?} is no address with a port: {form}"))
        };
        let fwd = Forward {
            proto: proto.parse().with_context(|| format!("forward {s:?}"))?,
            listen: addr(listen)?,
            target: addr(target)?,
        };
        if fwd.listen.port() == 0 || fwd.target.port() == 0 {
            bail!("forward {s:?}: port 0 is no port to forward");
        }
        Ok(fwd)
    }
}

/// What the record of a forwarder says, and whether it still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub pid: i32,
    /// The recorded process runs (same start time): false for one that
    /// was killed, whose record `stop` clears.
    pub running: bool,
    pub forwards: Vec<Forward>,
}

/// The record of `name`'s forwarder under the run directory `records`.
fn record_path(records: &Path, name: &str) -> PathBuf {
    let own = run::of(name).forward();
    records.join(own.file_name().expect("a record has a file name"))
}

/// The record's text: written by the forwarder itself, before it tells
/// `start` that it runs, so that no forwarder ever runs unrecorded (a
/// launcher killed meanwhile leaves a record that `stop` acts on).
fn format_record(id: ProcId, forwards: &[Forward]) -> String {
    let mut text = format!("{} {}\n", id.pid, id.start);
    for f in forwards {
        text.push_str(&format!("{} {} {}\n", f.proto, f.listen, f.target));
    }
    text
}

fn parse_record(text: &str) -> Option<(ProcId, Vec<Forward>)> {
    let mut lines = text.lines();
    let mut first = lines.next()?.split(' ');
    let id = ProcId {
        pid: first.next()?.parse().ok().filter(|&p: &i32| p > 0)?,
        start: first.next()?.parse().ok()?,
    };
    if first.next().is_some() {
        return None;
    }
    let forwards = lines
        .map(|l| {
            let mut w = l.split(' ');
            let f = Forward {
                proto: w.next()?.parse().ok()?,
                listen: w.next()?.parse().ok()?,
                target: w.next()?.parse().ok()?,
            };
            w.next().is_none().then_some(f)
        })
        .collect::<Option<Vec<_>>>()?;
    Some((id, forwards))
}

/// The record as written; `Ok(None)` when there is none.
fn read_record(path: &Path) -> Result<Option<(ProcId, Vec<Forward>)>> {
    let text = match crate::files::read_text(path, crate::files::RECORD_MAX) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot read the port forwarder's record {}: it must be a regular file \
                     ({})",
                    path.display(),
                    crate::files::removal(path)
                )
            })
        }
    };
    match parse_record(&text) {
        Some(r) => Ok(Some(r)),
        None => bail!(
            "the port forwarder's record {} is damaged (it holds no `PID START_TIME` line \
             followed by `PROTO LISTEN TARGET` lines): if no subhost-forward process of \
             this subhost runs, remove it ({})",
            path.display(),
            crate::files::removal(path)
        ),
    }
}

/// The forwarder named by a record, if that very process still runs.
fn live(id: ProcId) -> bool {
    ProcId::of(id.pid).is_ok_and(|now| now == id)
}

/// Binds every `forwards` listen address in the current (host) network
/// namespace, then starts the one forwarder process of `name`, which
/// makes its outgoing connections inside the network namespace at
/// `netns`, and records it in `records`. Nothing listens when it fails:
/// a port taken is refused with who holds it.
pub fn start(records: &Path, name: &str, netns: &Path, forwards: &[Forward]) -> Result<()> {
    begin(records, name, netns, forwards)?.wait_confined()
}

/// A forwarder forked and setting itself up: its ports listen already
/// (connections wait in their backlog), and `wait` says whether it runs.
/// Dropped without `wait`, it ends the forwarder.
pub struct Starting {
    name: String,
    path: PathBuf,
    chan: Option<process::Channel>,
    middle: Option<process::Middle>,
}

/// [`start`], without waiting for the forwarder: the caller goes on with
/// its own work while the forwarder sets itself up.
pub fn begin(records: &Path, name: &str, netns: &Path, forwards: &[Forward]) -> Result<Starting> {
    let path = record_path(records, name);
    if let Some((id, _)) = read_record(&path)? {
        if live(id) {
            bail!(
                "subhost {name}: its port forwarder runs already (pid {}, recorded in {})",
                id.pid,
                path.display()
            );
        }
    }
    let mut seen = std::collections::HashSet::new();
    for f in forwards {
        if !seen.insert((f.proto, f.listen)) {
            bail!(
                "subhost {name}: {} {} is forwarded twice",
                f.proto,
                f.listen
            );
        }
    }
    let listeners = forwards
        .iter()
        .map(|f| bind(f).map_err(|e| bind_error(records, name, f, e)))
        .collect::<Result<Vec<OwnedFd>>>()?;
    let target_ns = std::fs::File::open(netns)
        .with_context(|| format!("subhost {name}: cannot open its netns {}", netns.display()))?;
    let host_ns = std::fs::File::open("/proc/self/ns/net")
        .context("cannot open this process's own network namespace")?;
    let (ours, theirs) = process::channel()?;
    let plan = relay::Plan {
        listeners: forwards
            .iter()
            .zip(listeners)
            .map(|(f, fd)| relay::Listening {
                proto: f.proto,
                fd,
                target: f.target,
            })
            .collect(),
        netns: target_ns.into(),
        host: host_ns.into(),
        // Absolute: the forwarder works from `/`.
        record: std::env::current_dir()
            .context("cannot find the current directory")?
            .join(&path),
        forwards: forwards.to_vec(),
    };
    // The daemon closes its copy of `ours` with every other fd it does
    // not use.
    let daemon_main = move || relay::daemon(plan, theirs);
    // SAFETY: the launcher is single-threaded; the daemon leaves through
    // exit_now.
    let middle =
        unsafe { process::daemon_begin(daemon_main) }.context("cannot fork the port forwarder")?;
    // The daemon's copies are its own now; ours closed with the closure.
    Ok(Starting {
        name: name.to_string(),
        path,
        chan: Some(ours),
        middle: Some(middle),
    })
}

impl Starting {
    /// Waits until the forwarder runs and has recorded itself; on a
    /// failure it is gone, and says why. It confines itself meanwhile,
    /// before it relays anything (and exits if it cannot: its record then
    /// shows it dead, and `stop` clears it).
    pub fn wait(mut self) -> Result<()> {
        // Its channel closed: the forwarder's last word goes nowhere.
        self.wait_running().map(drop)
    }

    /// [`Starting::wait`], and then until it has confined itself too.
    pub fn wait_confined(mut self) -> Result<()> {
        let Some((pid, chan)) = self.wait_running()? else {
            return Ok(());
        };
        self.went(pid, &chan)
    }

    /// Up to the forwarder's first Go: its PID and the channel, for
    /// [`Starting::wait_confined`]; `None` if already waited for.
    fn wait_running(&mut self) -> Result<Option<(i32, process::Channel)>> {
        if let Some(m) = self.middle.take() {
            m.reap();
        }
        let Some(chan) = self.chan.take() else {
            return Ok(None);
        };
        let name = &self.name;
        let pid = match chan.recv() {
            Ok(Some(Message::Pid(pid))) => pid,
            other => bail!("subhost {name}: the port forwarder did not start: {other:?}"),
        };
        self.went(pid, &chan)?;
        Ok(Some((pid, chan)))
    }

    /// The forwarder's next word: Go, or why it failed (its record then
    /// goes).
    fn went(&self, pid: i32, chan: &process::Channel) -> Result<()> {
        let name = &self.name;
        match chan.recv() {
            Ok(Some(Message::Go)) => Ok(()),
            failed => {
                forget(&self.path, pid);
                match failed {
                    Ok(Some(Message::Failed(why))) => {
                        bail!("subhost {name}: port forwarder: {why}")
                    }
                    other => bail!("subhost {name}: the port forwarder did not start: {other:?}"),
                }
            }
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        let Some(chan) = self.chan.take() else {
            return;
        };
        // Its record is written before it says Go: once it has answered,
        // `forget` finds it there, or it exits on its own.
        if let Ok(Some(Message::Pid(pid))) = chan.recv() {
            let _ = chan.recv();
            forget(&self.path, pid);
        }
    }
}

/// After a failed start: the forwarder `pid` gone, and its record if it
/// wrote one.
fn forget(path: &Path, pid: i32) {
    if let Ok(Some((id, _))) = read_record(path) {
        if id.pid == pid {
            kill(id);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A listening socket for `f`, non-blocking and close-on-exec.
fn bind(f: &Forward) -> io::Result<OwnedFd> {
    let fd: OwnedFd = match f.proto {
        Proto::Tcp => TcpListener::bind(f.listen)?.into(),
        Proto::Udp => UdpSocket::bind(f.listen)?.into(),
    };
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok(fd)
}

fn bind_error(records: &Path, name: &str, f: &Forward, e: io::Error) -> anyhow::Error {
    if e.raw_os_error() != Some(libc::EADDRINUSE) {
        return anyhow!(
            "subhost {name}: cannot listen on {} {}: {e}",
            f.proto,
            f.listen
        );
    }
    let holders = crate::holder::holders(f.proto, f.listen);
    let who = if holders.is_empty() {
        "by a socket no process of this host's PID namespace holds".to_string()
    } else {
        let named: Vec<String> = holders
            .iter()
            .map(|&pid| match forwarder_of(records, pid) {
                Some(other) => format!("pid {pid} (the port forwarder of subhost {other})"),
                None => format!("pid {pid} ({})", crate::holder::comm(pid)),
            })
            .collect();
        format!("by {}", named.join(", "))
    };
    anyhow!(
        "subhost {name}: {} {} is taken {who}: publish another port, or stop what holds it",
        f.proto,
        f.listen
    )
}

/// The subhost whose recorded forwarder is `pid`.
fn forwarder_of(records: &Path, pid: i32) -> Option<String> {
    std::fs::read_dir(records).ok()?.flatten().find_map(|e| {
        let file = e.file_name();
        let other = file.to_str()?.strip_suffix(".forward")?.to_string();
        let (id, _) = read_record(&e.path()).ok()??;
        (id.pid == pid && live(id)).then_some(other)
    })
}

/// Ends `name`'s forwarder, if it runs, and forgets its record: after
/// it, nothing listens on its ports. Not an error when there is none, or
/// when it is dead already (killed, or gone with a reboot of the PID).
pub fn stop(records: &Path, name: &str) -> Result<()> {
    let path = record_path(records, name);
    let Some((id, _)) = read_record(&path)? else {
        return Ok(());
    };
    if live(id) && !kill(id) {
        bail!(
            "subhost {name}: its port forwarder (pid {}) did not exit within {} s of SIGKILL",
            id.pid,
            STOP_WAIT.as_secs()
        );
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// How long a killed forwarder may take to be gone, with its sockets.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// SIGKILL to the forwarder `id` through a pidfd opened and then checked
/// to be that very process; true once it has exited (so its sockets are
/// closed: a process's files close before its pidfd reports the exit).
fn kill(id: ProcId) -> bool {
    let Ok(pidfd) = PidFd::open(id.pid) else {
        return true;
    };
    if !live(id) {
        return true;
    }
    if pidfd.signal(nix::sys::signal::Signal::SIGKILL).is_err() {
        return false;
    }
    pidfd.wait_exit(STOP_WAIT)
}

/// What the record of `name`'s forwarder says; `None` without one (or
/// with one that cannot be read, which `stop` reports).
pub fn status(records: &Path, name: &str) -> Option<Status> {
    let (id, forwards) = read_record(&record_path(records, name)).ok()??;
    Some(Status {
        pid: id.pid,
        running: live(id),
        forwards,
    })
}

/// Makes a socket of `domain` and `ty` inside the network namespace
/// `netns`, then returns to `host`: a socket keeps the namespace it was
/// made in. Exits the process if it cannot return, rather than go on in
/// the wrong namespace.
fn socket_in(
    netns: &OwnedFd,
    host: &OwnedFd,
    domain: libc::c_int,
    ty: libc::c_int,
) -> io::Result<OwnedFd> {
    sys::setns(netns.as_fd(), libc::CLONE_NEWNET)?;
    // SAFETY: socket(2) with integer arguments returns a new fd or -1.
    let raw = unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    let made = if raw < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: the kernel just gave us this fd; nobody else owns it.
        Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) })
    };
    if sys::setns(host.as_fd(), libc::CLONE_NEWNET).is_err() {
        sys::exit_now(1);
    }
    made
}

#[cfg(test)]
mod tests;
