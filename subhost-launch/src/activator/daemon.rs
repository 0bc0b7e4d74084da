//! The activator process: every sleeping subhost's sockets in one `poll`,
//! the wake of a subhost on its first connection, the check that puts an
//! idle one back to sleep (IDLE), and the control socket's requests.
//!
//! It is a child subreaper: the inits it wakes (and their console relays)
//! become its children once the `start` that made them exits, so it
//! learns of an init's end from SIGCHLD and reaps it.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{self as so, ControlMessageOwned, MsgFlags, SockaddrLike};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{MAX_MESSAGE, MAX_SOCKETS};
use crate::state::ProcId;

/// Where `spawn` puts the control socket's listener.
pub const LISTENER_FD: RawFd = 3;

/// CPU time (ns) a subhost may use per second of an idle check and still
/// count as idle: its init's and services' bookkeeping.
const IDLE_CPU_NS_PER_SEC: u64 = 5_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its sockets are polled.
    Sleeping,
    /// `start --activated` (this pid) runs.
    Waking(i32),
    /// Its init (this pid) runs; the sockets are left to it.
    Awake(i32),
    /// Woken, its start or its service failed: not woken again until it is
    /// stopped and started.
    Failed,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Sleeping => "sleeping",
            Phase::Waking(_) => "waking",
            Phase::Awake(_) => "awake",
            Phase::Failed => "failed",
        }
    }
}

struct Held {
    name: String,
    base: PathBuf,
    console: Option<String>,
    idle: Option<Duration>,
    sockets: Vec<OwnedFd>,
    unix: Vec<PathBuf>,
    /// The local addresses of its TCP sockets, for its connections.
    tcp: Vec<SocketAddr>,
    phase: Phase,
    wakes: u64,
    last_wake_ms: u64,
    /// Idleness: since when nothing was seen, and the CPU time last read.
    quiet_since: Instant,
    cpu_ns: Option<u64>,
    /// The `hibernate` that runs for it.
    hibernating: Option<i32>,
}

impl Held {
    fn write_record(&self, me: ProcId) {
        let text = format!(
            "{} {}\n{} {} {}\n",
            me.pid,
            me.start,
            if self.hibernating.is_some() {
                "hibernating"
            } else {
                self.phase.name()
            },
            self.wakes,
            self.last_wake_ms
        );
        let path = super::record_path(&self.name);
        let tmp = path.with_extension("listen.tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }

    fn forget(self) {
        let _ = std::fs::remove_file(super::record_path(&self.name));
        drop(self.sockets);
        super::sockets::remove_unix_files(&self.unix);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The activator's main loop; returns its exit status.
pub fn run() -> i32 {
    // SAFETY: `spawn` put the control socket's listener on this fd before
    // exec, and nothing else here owns it.
    let listener = unsafe { OwnedFd::from_raw_fd(LISTENER_FD) };
    let _ = nix::fcntl::fcntl(
        &listener,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let _ = nix::fcntl::fcntl(
        &listener,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    // SAFETY: prctl with plain integers; it only marks this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // SAFETY: ignoring SIGPIPE installs no handler.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let _ = chld.thread_block();
    let Ok(sfd) = SignalFd::with_flags(&chld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
    else {
        return 1;
    };
    let Ok(me) = ProcId::of(std::process::id() as i32) else {
        return 1;
    };
    let mut held: Vec<Held> = Vec::new();
    let mut next_tick: Option<Instant> = None;
    loop {
        while sfd.read_signal().ok().flatten().is_some() {}
        reap(&mut held, me);
        // The client that let go of the last sockets may still hold the
        // lock for a moment: then it is tried again shortly.
        let exit_retry = held.is_empty();
        if exit_retry && may_exit(&listener, &mut held, me) {
            return 0;
        }
        let tick = tick_interval(&held);
        if tick.is_none() {
            next_tick = None;
        } else if next_tick.is_none() {
            next_tick = tick.map(|t| Instant::now() + t);
        }
        let mut fds = vec![
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        let mut owners = Vec::new();
        for (i, h) in held.iter().enumerate() {
            if h.phase == Phase::Sleeping {
                for s in &h.sockets {
                    fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                    owners.push(i);
                }
            }
        }
        let timeout = match next_tick {
            _ if exit_retry => PollTimeout::from(100u8),
            Some(t) => {
                let ms = t.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        if let Err(e) = poll(&mut fds, timeout) {
            if e != nix::errno::Errno::EINTR {
                return 1;
            }
            continue;
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let control = ready(&fds[0]);
        let mut to_wake: Vec<usize> = fds[2..]
            .iter()
            .zip(&owners)
            .filter(|(f, _)| ready(f))
            .map(|(_, &i)| i)
            .collect();
        drop(fds);
        to_wake.dedup();
        for i in to_wake {
            wake(&mut held[i], me);
        }
        if control {
            while let Ok(conn) = accept(&listener) {
                serve(conn, &mut held, me);
            }
        }
        if next_tick.is_some_and(|t| Instant::now() >= t) {
            next_tick = None;
            if let Some(t) = tick {
                idle_check(&mut held, me, t);
            }
        }
    }
}

fn accept(listener: &OwnedFd) -> nix::Result<OwnedFd> {
    so::accept4(listener, so::SockFlag::SOCK_CLOEXEC)
}

/// With nothing held: exits (true) once no client is talking to it or
/// waiting; the lock keeps new clients out until the socket is gone.
fn may_exit(listener: &OwnedFd, held: &mut Vec<Held>, me: ProcId) -> bool {
    let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .open(super::lock_path())
    else {
        return false;
    };
    // SAFETY: flock takes a descriptor of ours and plain flags.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false;
    }
    let mut served = false;
    while let Ok(conn) = accept(listener) {
        serve(conn, held, me);
        served = true;
    }
    if served || !held.is_empty() {
        return false;
    }
    let _ = std::fs::remove_file(super::socket_path());
    // The lock goes with the process.
    std::mem::forget(f);
    true
}

/// How often idle subhosts are looked at: a fifth of the shortest IDLE of
/// an awake one (1 s to 60 s); none when no awake one has IDLE.
fn tick_interval(held: &[Held]) -> Option<Duration> {
    held.iter()
        .filter(|h| matches!(h.phase, Phase::Awake(_)))
        .filter_map(|h| h.idle)
        .min()
        .map(|i| (i / 5).clamp(Duration::from_secs(1), Duration::from_secs(60)))
}

/// `start --detach --activated N NAME` with the sockets on fds 3.., a
/// child of ours.
fn wake(h: &mut Held, me: ProcId) {
    let n = h.sockets.len();
    let mut args: Vec<std::ffi::CString> = Vec::new();
    let mut push = |s: &str| {
        if let Ok(c) = std::ffi::CString::new(s) {
            args.push(c);
        }
    };
    push("subhost-launch");
    push("--subhost-dir");
    push(&h.base.to_string_lossy());
    push("start");
    push("--detach");
    if let Some(c) = &h.console {
        push("--console");
        push(c);
    }
    push("--activated");
    push(&n.to_string());
    push(&h.name);
    let raw: Vec<RawFd> = h.sockets.iter().map(|s| s.as_raw_fd()).collect();
    // SAFETY: this process is single-threaded; the child only moves
    // descriptors, resets its signal mask and execs.
    match unsafe { crate::process::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let above = 3 + n as RawFd;
            let copies: Vec<RawFd> = raw
                .iter()
                .filter_map(|&fd| crate::sys::dup_above(fd, above).ok())
                .collect();
            for (i, fd) in copies.into_iter().enumerate() {
                let _ = crate::sys::dup2(fd, 3 + i as RawFd);
            }
            let _ = crate::sys::close_range(above as u32, u32::MAX, true);
            let _ = SigSet::all().thread_unblock();
            let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
            argv.push(std::ptr::null());
            // SAFETY: NUL-terminated strings and a NULL-terminated argv,
            // alive until exec.
            unsafe { libc::execv(c"/proc/self/exe".as_ptr(), argv.as_ptr()) };
            crate::sys::exit_now(127);
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            h.phase = Phase::Waking(child.as_raw());
            h.wakes += 1;
            h.last_wake_ms = now_ms();
        }
        Err(_) => h.phase = Phase::Failed,
    }
    h.write_record(me);
}

/// `hibernate NAME`, a child of ours.
fn hibernate(h: &mut Held) {
    let args = [
        "subhost-launch".to_string(),
        "--subhost-dir".to_string(),
        h.base.to_string_lossy().into_owned(),
        "hibernate".to_string(),
        h.name.clone(),
    ];
    let args: Vec<std::ffi::CString> = args
        .iter()
        .filter_map(|a| std::ffi::CString::new(a.as_str()).ok())
        .collect();
    // SAFETY: as in `wake`.
    match unsafe { crate::process::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = crate::sys::close_range(3, u32::MAX, true);
            let _ = SigSet::all().thread_unblock();
            let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
            argv.push(std::ptr::null());
            // SAFETY: as in `wake`.
            unsafe { libc::execv(c"/proc/self/exe".as_ptr(), argv.as_ptr()) };
            crate::sys::exit_now(127);
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => h.hibernating = Some(child.as_raw()),
        Err(_) => {}
    }
}

/// Every child that has exited, accounted to its subhost.
fn reap(held: &mut [Held], me: ProcId) {
    loop {
        let (pid, ok) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code == 0),
            Ok(WaitStatus::Signaled(pid, _, _)) => (pid.as_raw(), false),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        };
        for h in held.iter_mut() {
            if h.hibernating == Some(pid) {
                h.hibernating = None;
                h.write_record(me);
            }
            match h.phase {
                Phase::Waking(child) if child == pid => {
                    h.phase = match (ok, crate::state::running_init(&h.name)) {
                        (true, Some(init)) => Phase::Awake(init.pid),
                        // A start that failed says why in the console;
                        // waking it again would fail again.
                        _ => Phase::Failed,
                    };
                    h.quiet_since = Instant::now();
                    h.cpu_ns = None;
                    h.write_record(me);
                }
                Phase::Awake(init) if init == pid => {
                    h.phase = Phase::Sleeping;
                    h.write_record(me);
                }
                _ => {}
            }
        }
    }
}

/// Puts every awake subhost with IDLE that had no connection and used
/// no CPU for IDLE seconds back to sleep; one whose service failed is
/// marked failed instead, and stays awake, so that no connection wakes
/// it into the same failure again.
fn idle_check(held: &mut [Held], me: ProcId, tick: Duration) {
    let tables: String = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .collect();
    let unix_table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let now = Instant::now();
    for h in held.iter_mut() {
        let (Phase::Awake(init), Some(idle), None) = (h.phase, h.idle, h.hibernating) else {
            continue;
        };
        // First: connections its failed service never accepts would keep
        // it looking busy for ever.
        if service_failed(h, init) {
            h.phase = Phase::Failed;
            h.write_record(me);
            continue;
        }
        let cpu = cpu_ns(&h.name);
        let busy_cpu = match (h.cpu_ns, cpu) {
            (Some(a), Some(b)) => b.saturating_sub(a) > IDLE_CPU_NS_PER_SEC * tick.as_secs().max(1),
            _ => false,
        };
        h.cpu_ns = cpu;
        if busy_cpu || connected(h, &tables, &unix_table) || pending(h) || inbound(init) {
            h.quiet_since = now;
            continue;
        }
        if now.duration_since(h.quiet_since) < idle {
            continue;
        }
        hibernate(h);
        h.write_record(me);
    }
}

/// Whether a connection to one of its sockets is open (TCP in the
/// host's tables, unix by its path).
fn connected(h: &Held, tcp: &str, unix: &str) -> bool {
    let tcp_open = tcp.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(local), Some(st)) = (f.get(1), f.get(3)) else {
            return false;
        };
        OPEN.contains(st)
            && crate::holder::parse_local(local)
                .is_some_and(|a| h.tcp.iter().any(|t| crate::holder::conflicts(*t, a)))
    });
    // Num RefCount Protocol Flags Type St Inode Path; St 03 is connected.
    let unix_open = unix.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(5) == Some(&"03")
            && f.get(7)
                .is_some_and(|p| h.unix.iter().any(|u| u.as_os_str() == *p))
    });
    tcp_open || unix_open
}

/// Whether a client is connected to a server of its own netns (its
/// published ports, or any port it serves itself): the netns of its init,
/// read through the init's pid. Read on the IDLE timer only.
fn inbound(init: i32) -> bool {
    // Both tables as one: a server on `[::]` lists its IPv4 clients in
    // tcp6, as v4-mapped addresses.
    let tables: String = ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{init}/net/{t}")).ok())
        .collect();
    inbound_open(&tables)
}

/// Whether the `/proc/net/tcp{,6}` tables hold an open connection whose
/// local port is one a socket of the table listens on: a connection to a
/// server there, not one the subhost made to the outside (its local port
/// is an ephemeral one), which would keep it awake for ever.
fn inbound_open(table: &str) -> bool {
    const LISTEN: &str = "0A";
    let rows: Vec<(std::net::SocketAddr, &str)> = table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((crate::holder::parse_local(f.get(1)?)?, *f.get(3)?))
        })
        .collect();
    let listening: Vec<std::net::SocketAddr> = rows
        .iter()
        .filter(|(_, st)| *st == LISTEN)
        .map(|(a, _)| *a)
        .collect();
    rows.iter().any(|(a, st)| {
        OPEN.contains(st) && listening.iter().any(|l| crate::holder::conflicts(*l, *a))
    })
}

/// TCP states in which a client is there: ESTABLISHED, SYN_RECV,
/// CLOSE_WAIT. A closed connection's TIME_WAIT (a minute) is none.
const OPEN: [&str; 3] = ["01", "03", "08"];

/// Whether a connection or datagram waits on one of its sockets.
fn pending(h: &Held) -> bool {
    let mut fds: Vec<PollFd> = h
        .sockets
        .iter()
        .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
        .collect();
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// The CPU time its cgroup used, in ns.
fn cpu_ns(name: &str) -> Option<u64> {
    let dirs = crate::state::recorded_cgroup(name)?;
    dirs.iter().find_map(|d| {
        if let Ok(text) = std::fs::read_to_string(d.join("cpu.stat")) {
            let usec = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse::<u64>()
                .ok()?;
            return Some(usec * 1000);
        }
        std::fs::read_to_string(d.join("cpuacct.usage"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
}

/// Whether a service its sockets are for has failed (its restarts used
/// up), as its init publishes.
fn service_failed(h: &Held, init: i32) -> bool {
    crate::services::read(init).is_some_and(|list| list.iter().any(|s| s.state == "failed"))
        && !h.sockets.is_empty()
}

/// One request on `conn`: `hold` (with the sockets) or `drop`.
fn serve(conn: OwnedFd, held: &mut Vec<Held>, me: ProcId) {
    let _ = nix::fcntl::fcntl(
        &conn,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    );
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = nix::cmsg_space!([RawFd; MAX_SOCKETS]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let Ok(msg) = so::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) else {
            return;
        };
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(list) = c {
                    // SAFETY: the kernel just gave us these descriptors.
                    fds.extend(
                        list.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
        }
        (msg.bytes, fds)
    };
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let fields: Vec<&str> = text.split('\0').collect();
    let answer = match fields.as_slice() {
        ["hold", name, base, console, idle, unix @ ..] => {
            if held.iter().any(|h| h.name == *name) {
                format!("error: subhost {name}: the activator holds its sockets already")
            } else {
                let tcp = fds.iter().filter_map(tcp_address).collect();
                let h = Held {
                    name: name.to_string(),
                    base: PathBuf::from(base),
                    console: (!console.is_empty()).then(|| console.to_string()),
                    idle: idle.parse::<u64>().ok().map(Duration::from_secs),
                    sockets: fds,
                    unix: unix.iter().map(PathBuf::from).collect(),
                    tcp,
                    phase: Phase::Sleeping,
                    wakes: 0,
                    last_wake_ms: 0,
                    quiet_since: Instant::now(),
                    cpu_ns: None,
                    hibernating: None,
                };
                h.write_record(me);
                held.push(h);
                "ok".to_string()
            }
        }
        ["drop", name] => match held.iter().position(|h| h.name == *name) {
            Some(i) => {
                let h = held.remove(i);
                // A start or hibernate of it waits for the lock the
                // `stop` that asks holds: it must not run after it.
                let helper = match h.phase {
                    Phase::Waking(pid) => Some(pid),
                    _ => h.hibernating,
                };
                if let Some(pid) = helper {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                    let _ = waitpid(Pid::from_raw(pid), None);
                }
                h.forget();
                "ok".to_string()
            }
            None => "error: not held".to_string(),
        },
        _ => "error: a request the activator does not know".to_string(),
    };
    let _ = nix::unistd::write(&conn, answer.as_bytes());
}

/// The local address of a TCP listening socket.
fn tcp_address(fd: &OwnedFd) -> Option<SocketAddr> {
    let ty = so::getsockopt(fd, so::sockopt::SockType).ok()?;
    if ty != so::SockType::Stream {
        return None;
    }
    let addr: so::SockaddrStorage = so::getsockname(fd.as_raw_fd()).ok()?;
    match addr.family()? {
        so::AddressFamily::Inet => addr.as_sockaddr_in().map(|a| SocketAddr::V4((*a).into())),
        so::AddressFamily::Inet6 => addr.as_sockaddr_in6().map(|a| SocketAddr::V6((*a).into())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    #[test]
    fn a_connection_to_a_listening_port_is_inbound() {
        let t = format!(
            "{HEAD}   0: 00000000:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n   1: 0100007F:2328 0100007F:D112 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n"
        );
        assert!(inbound_open(&t));
    }

    #[test]
    fn an_outbound_or_closed_connection_is_not() {
        // Its own connection out (ephemeral local port), a TIME_WAIT to
        // its server, and a listener alone.
        let t = format!(
            "{HEAD}   0: 00000000:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n   1: 0A000002:D112 08080808:0050 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n   2: 0100007F:2328 0100007F:D113 06 00000000:00000000 00:00000000 00000000     0        0 0 1\n"
        );
        assert!(!inbound_open(&t));
        assert!(!inbound_open(HEAD));
    }

    #[test]
    fn a_v4_client_of_a_v6_wildcard_server_is_inbound() {
        let t = format!(
            "{HEAD}   0: 00000000000000000000000000000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n   1: 0000000000000000FFFF00000100007F:2328 0000000000000000FFFF00000100007F:ED5A 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n"
        );
        assert!(inbound_open(&t));
    }
}
