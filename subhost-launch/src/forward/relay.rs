//! The forwarder process itself: one epoll loop over the listening
//! sockets (host netns) and every relayed connection, no thread, no timer
//! while no UDP client is remembered.
//!
//! TCP: each accepted connection gets an outgoing socket made inside the
//! subhost's netns, connected without blocking; bytes go through a
//! buffer each way, a side's EOF becomes a shutdown of the other side's
//! writing once its buffer is flushed (half-close), and the pair closes
//! when both ways are done or either fails.
//!
//! UDP: each client address gets an outgoing socket inside, connected to
//! the target; replies go back from the listening socket (so from the
//! address the client sent to). An association idle for `UDP_IDLE` is
//! dropped, as docker-proxy does.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use caps::{CapSet, Capability};

use super::{format_record, socket_in, Forward, Proto};
use crate::process::{Channel, Message};
use crate::state::{self, ProcId};
use crate::sys;

/// What the forwarder gets from `start`.
pub struct Plan {
    pub listeners: Vec<Listening>,
    /// The subhost's network namespace, where outgoing sockets are made.
    pub netns: OwnedFd,
    /// The host's, to return to after each.
    pub host: OwnedFd,
    /// Where it records itself, and what.
    pub record: PathBuf,
    pub forwards: Vec<Forward>,
}

/// A listening socket, bound in the host's netns, and where its
/// connections go.
pub struct Listening {
    pub proto: Proto,
    pub fd: OwnedFd,
    pub target: SocketAddr,
}

/// A UDP client forgotten after this long without a datagram either way.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// Bytes buffered each way of a TCP connection.
const TCP_BUF: usize = 32 << 10;
/// UDP clients remembered at once per forwarder; datagrams from further
/// new ones are dropped until some go idle.
const UDP_MAX: usize = 4096;

/// The forwarder's `main`, in the freshly forked daemon: tells `start`
/// its PID, then, once it has checked the subhost's netns and recorded
/// itself, that it runs (or why not); confines itself and says so (or
/// why not) before it relays anything, and relays until killed. A
/// subhost's start goes on at the first word: the confinement is off its
/// critical path.
pub fn daemon(plan: Plan, chan: Channel) -> i32 {
    let _ = chan.send(&Message::Pid(sys::getpid()));
    if let Err(e) = check_netns(&plan).and_then(|()| record(&plan)) {
        let _ = chan.send(&Message::Failed(e));
        return 1;
    }
    if chan.send(&Message::Go).is_err() {
        return 1;
    }
    // Never relays unconfined; a start that no longer listens is no
    // reason to stop.
    if let Err(e) = set_up(&plan, &chan) {
        let _ = chan.send(&Message::Failed(e));
        return 1;
    }
    let _ = chan.send(&Message::Go);
    drop(chan);
    match Relay::new(plan).and_then(|mut r| r.run()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Proves the netns usable now, where `start` can report it.
fn check_netns(plan: &Plan) -> Result<(), String> {
    sys::setns(plan.netns.as_fd(), libc::CLONE_NEWNET)
        .map_err(|e| format!("cannot enter the subhost's network namespace: {e}"))?;
    sys::setns(plan.host.as_fd(), libc::CLONE_NEWNET)
        .map_err(|e| format!("cannot return to the host's network namespace: {e}"))
}

fn record(plan: &Plan) -> Result<(), String> {
    let id =
        ProcId::of(sys::getpid()).map_err(|e| format!("cannot read its own start time: {e}"))?;
    state::write_record(&plan.record, &format_record(id, &plan.forwards))
        .map_err(|e| format!("{e:#}"))
}

/// Detaches and confines the forwarder: stdio on /dev/null, every fd
/// closed but its sockets, namespaces and `chan`; signals as a fresh
/// process has them (SIGPIPE ignored: a write to a closed connection is
/// an error, not death); no_new_privs and no capability but
/// CAP_SYS_ADMIN, which `setns` into the subhost's netns needs for each
/// outgoing socket.
fn set_up(plan: &Plan, chan: &Channel) -> Result<(), String> {
    let err = |what: &str| {
        let what = what.to_string();
        move |e: io::Error| format!("{what}: {e}")
    };
    let null = sys::open_raw(c"/dev/null", libc::O_RDWR).map_err(err("cannot open /dev/null"))?;
    for fd in 0..3 {
        sys::dup2(null, fd).map_err(err("cannot put /dev/null on stdio"))?;
    }
    let mut keep: Vec<RawFd> = vec![
        0,
        1,
        2,
        plan.netns.as_raw_fd(),
        plan.host.as_raw_fd(),
        chan_fd(chan),
    ];
    keep.extend(plan.listeners.iter().map(|l| l.fd.as_raw_fd()));
    sys::close_all_but(&keep).map_err(err("cannot close inherited files"))?;
    std::env::set_current_dir("/").map_err(err("cannot change to /"))?;
    crate::process::reset_signals_for_exec().map_err(|e| format!("{e:#}"))?;
    // SAFETY: ignoring a signal installs no handler.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        )
    }
    .map_err(|e| format!("cannot ignore SIGPIPE: {e}"))?;
    // SAFETY: prctl with a pointer to a NUL-terminated name of ≤ 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"subhost-forward".as_ptr()) };
    raise_fd_limit();
    sys::set_no_new_privs().map_err(err("cannot set no_new_privs"))?;
    drop_caps().map_err(|e| format!("cannot drop capabilities: {e}"))?;
    Ok(())
}

fn chan_fd(chan: &Channel) -> RawFd {
    chan.as_fd().as_raw_fd()
}

/// Soft fd limit up to the hard one: two fds per TCP connection.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a live local; setrlimit reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Keeps CAP_SYS_ADMIN alone, in the bounding, permitted and effective
/// sets.
fn drop_caps() -> Result<(), caps::errors::CapsError> {
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    for cap in caps::all() {
        if cap != Capability::CAP_SYS_ADMIN {
            // A capability this kernel does not know is not in the set.
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    let only: caps::CapsHashSet = [Capability::CAP_SYS_ADMIN].into_iter().collect();
    caps::set(None, CapSet::Effective, &only)?;
    caps::set(None, CapSet::Permitted, &only)?;
    Ok(())
}

/// What an epoll event is about: kind in the low 2 bits, index above.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Token {
    Listener(usize),
    Client(usize),
    Upstream(usize),
    Datagrams(usize),
}

impl Token {
    fn encode(self) -> u64 {
        let (i, k) = match self {
            Token::Listener(i) => (i, 0),
            Token::Client(i) => (i, 1),
            Token::Upstream(i) => (i, 2),
            Token::Datagrams(i) => (i, 3),
        };
        (i as u64) << 2 | k
    }
    fn decode(v: u64) -> Token {
        let i = (v >> 2) as usize;
        match v & 3 {
            0 => Token::Listener(i),
            1 => Token::Client(i),
            2 => Token::Upstream(i),
            _ => Token::Datagrams(i),
        }
    }
}

/// An epoll instance, level-triggered.
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 with a flag returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this fd; nobody else owns it.
        Ok(Epoll(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }

    fn ctl(
        &self,
        op: libc::c_int,
        fd: BorrowedFd<'_>,
        events: u32,
        token: Token,
    ) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events,
            u64: token.encode(),
        };
        // SAFETY: both fds are open; ev is a live local.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for `events` (none: not at all, so that a hang-up a
    /// side no longer listens for cannot wake the loop again and again).
    fn watch(&self, fd: BorrowedFd<'_>, was: u32, events: u32, token: Token) -> io::Result<()> {
        match (was, events) {
            (a, b) if a == b => Ok(()),
            (0, _) => self.ctl(libc::EPOLL_CTL_ADD, fd, events, token),
            (_, 0) => self.ctl(libc::EPOLL_CTL_DEL, fd, 0, token),
            _ => self.ctl(libc::EPOLL_CTL_MOD, fd, events, token),
        }
    }

    fn wait(
        &self,
        events: &mut [libc::epoll_event],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let ms = match timeout {
            // Rounded up: waking a little early would find nothing to do.
            Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
            None => -1,
        };
        // SAFETY: `events` is a live buffer of its length.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;

/// One way of a TCP connection: bytes read from one side, not yet
/// written to the other.
struct Way {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The reading side is at EOF.
    eof: bool,
    /// The writing side has been shut down for writing after the EOF.
    shut: bool,
}

impl Way {
    fn new() -> Way {
        Way {
            buf: vec![0; TCP_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            shut: false,
        }
    }
    fn pending(&self) -> bool {
        self.start < self.end
    }

    /// Moves bytes from `src` to `dst` until either would block.
    fn pump(&mut self, mut src: &TcpStream, mut dst: &TcpStream) -> io::Result<()> {
        loop {
            if self.pending() {
                match dst.write(&self.buf[self.start..self.end]) {
                    Ok(n) => self.start += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                if !self.pending() {
                    self.start = 0;
                    self.end = 0;
                }
                continue;
            }
            if self.eof {
                if !self.shut {
                    self.shut = true;
                    dst.shutdown(Shutdown::Write)?;
                }
                return Ok(());
            }
            match src.read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The events its reading side waits for.
    fn read_interest(&self) -> u32 {
        if self.pending() || self.eof {
            0
        } else {
            IN
        }
    }
    fn write_interest(&self) -> u32 {
        if self.pending() {
            OUT
        } else {
            0
        }
    }
}

/// A relayed TCP connection.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    connected: bool,
    /// Client to upstream.
    up: Way,
    /// Upstream to client.
    down: Way,
    client_events: u32,
    upstream_events: u32,
}

/// A UDP client and its socket inside.
struct Assoc {
    listener: usize,
    client: SocketAddr,
    upstream: UdpSocket,
    last: Instant,
}

enum Listener {
    Tcp(TcpListener, SocketAddr),
    Udp(UdpSocket, SocketAddr),
}

struct Relay {
    epoll: Epoll,
    listeners: Vec<Listener>,
    netns: OwnedFd,
    host: OwnedFd,
    conns: Vec<Option<Conn>>,
    free_conns: Vec<usize>,
    assocs: Vec<Option<Assoc>>,
    free_assocs: Vec<usize>,
    by_client: HashMap<(usize, SocketAddr), usize>,
    /// Accepting stopped for want of fds, until a connection closes.
    paused: bool,
    datagram: Vec<u8>,
}

impl Relay {
    fn new(plan: Plan) -> io::Result<Relay> {
        let epoll = Epoll::new()?;
        let mut listeners = Vec::new();
        for (i, l) in plan.listeners.into_iter().enumerate() {
            epoll.ctl(libc::EPOLL_CTL_ADD, l.fd.as_fd(), IN, Token::Listener(i))?;
            listeners.push(match l.proto {
                Proto::Tcp => Listener::Tcp(TcpListener::from(l.fd), l.target),
                Proto::Udp => Listener::Udp(UdpSocket::from(l.fd), l.target),
            });
        }
        Ok(Relay {
            epoll,
            listeners,
            netns: plan.netns,
            host: plan.host,
            conns: Vec::new(),
            free_conns: Vec::new(),
            assocs: Vec::new(),
            free_assocs: Vec::new(),
            by_client: HashMap::new(),
            paused: false,
            datagram: Vec::new(),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            let timeout = self
                .next_expiry()
                .map(|t| t.saturating_duration_since(Instant::now()));
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for ev in &events[..n] {
                match Token::decode(ev.u64) {
                    Token::Listener(i) => self.on_listener(i),
                    Token::Client(i) | Token::Upstream(i) => self.on_conn(i),
                    Token::Datagrams(i) => self.on_reply(i),
                }
            }
            self.expire();
        }
    }

    fn on_listener(&mut self, i: usize) {
        match &self.listeners[i] {
            Listener::Tcp(..) => self.accept(i),
            Listener::Udp(..) => self.on_datagrams(i),
        }
    }

    fn accept(&mut self, i: usize) {
        let Listener::Tcp(_, target) = &self.listeners[i] else {
            return;
        };
        let target = *target;
        loop {
            let Listener::Tcp(listener, _) = &self.listeners[i] else {
                return;
            };
            let client = match listener.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    self.pause();
                    return;
                }
                // WouldBlock, or a connection reset before it was accepted.
                Err(_) => return,
            };
            if client.set_nonblocking(true).is_err() {
                continue;
            }
            let Ok(upstream) = self.connect_inside(target) else {
                // Out of fds, or the subhost unreachable: the client sees
                // its connection closed.
                continue;
            };
            let conn = Conn {
                client,
                upstream,
                connected: false,
                up: Way::new(),
                down: Way::new(),
                client_events: 0,
                upstream_events: 0,
            };
            let idx = match self.free_conns.pop() {
                Some(idx) => {
                    self.conns[idx] = Some(conn);
                    idx
                }
                None => {
                    self.conns.push(Some(conn));
                    self.conns.len() - 1
                }
            };
            self.on_conn(idx);
        }
    }

    /// A TCP socket inside the subhost, connecting to `target`.
    fn connect_inside(&self, target: SocketAddr) -> io::Result<TcpStream> {
        let sock = socket_in(&self.netns, &self.host, domain(target), libc::SOCK_STREAM)?;
        match connect(&sock, target) {
            Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => Ok(TcpStream::from(sock)),
            Err(e) => Err(e.into()),
        }
    }

    fn on_conn(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let keep = match step(conn) {
            Ok(false) => rewatch(&self.epoll, conn, idx).is_ok(),
            Ok(true) | Err(_) => false,
        };
        if !keep {
            self.close_conn(idx);
        }
    }

    fn close_conn(&mut self, idx: usize) {
        // Closing an fd takes it out of every epoll set.
        if self.conns[idx].take().is_some() {
            self.free_conns.push(idx);
            self.resume();
        }
    }

    fn pause(&mut self) {
        if self.paused {
            return;
        }
        self.paused = true;
        for (i, l) in self.listeners.iter().enumerate() {
            if let Listener::Tcp(l, _) = l {
                let _ = self
                    .epoll
                    .ctl(libc::EPOLL_CTL_DEL, l.as_fd(), 0, Token::Listener(i));
            }
        }
    }

    fn resume(&mut self) {
        if !self.paused {
            return;
        }
        self.paused = false;
        for (i, l) in self.listeners.iter().enumerate() {
            if let Listener::Tcp(l, _) = l {
                let _ = self
                    .epoll
                    .ctl(libc::EPOLL_CTL_ADD, l.as_fd(), IN, Token::Listener(i));
            }
        }
    }

    /// Datagrams from clients: each to its client's socket inside.
    fn on_datagrams(&mut self, i: usize) {
        if self.datagram.is_empty() {
            self.datagram = vec![0; 65536];
        }
        loop {
            let Listener::Udp(listener, target) = &self.listeners[i] else {
                return;
            };
            let target = *target;
            let (n, client) = match listener.recv_from(&mut self.datagram) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let idx = match self.by_client.get(&(i, client)) {
                Some(&idx) => idx,
                None => match self.associate(i, client, target) {
                    Some(idx) => idx,
                    None => continue,
                },
            };
            if let Some(a) = self.assocs[idx].as_mut() {
                a.last = Instant::now();
                // A datagram the socket cannot take now is dropped, as
                // the network would.
                let _ = a.upstream.send(&self.datagram[..n]);
            }
        }
    }

    fn associate(
        &mut self,
        listener: usize,
        client: SocketAddr,
        target: SocketAddr,
    ) -> Option<usize> {
        if self.by_client.len() >= UDP_MAX {
            return None;
        }
        let sock = socket_in(&self.netns, &self.host, domain(target), libc::SOCK_DGRAM).ok()?;
        connect(&sock, target).ok()?;
        let upstream = UdpSocket::from(sock);
        let idx = self.free_assocs.pop().unwrap_or_else(|| {
            self.assocs.push(None);
            self.assocs.len() - 1
        });
        if self
            .epoll
            .ctl(
                libc::EPOLL_CTL_ADD,
                upstream.as_fd(),
                IN,
                Token::Datagrams(idx),
            )
            .is_err()
        {
            self.free_assocs.push(idx);
            return None;
        }
        self.assocs[idx] = Some(Assoc {
            listener,
            client,
            upstream,
            last: Instant::now(),
        });
        self.by_client.insert((listener, client), idx);
        Some(idx)
    }

    /// Replies from inside: each back to its client, from the address it
    /// sent to.
    fn on_reply(&mut self, idx: usize) {
        if self.datagram.is_empty() {
            self.datagram = vec![0; 65536];
        }
        let Some(a) = self.assocs.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let Listener::Udp(listener, _) = &self.listeners[a.listener] else {
            return;
        };
        loop {
            match a.upstream.recv(&mut self.datagram) {
                Ok(n) => {
                    a.last = Instant::now();
                    let _ = listener.send_to(&self.datagram[..n], a.client);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock, or an ICMP error of an earlier send
                // (nothing listens inside): the client hears nothing.
                Err(_) => return,
            }
        }
    }

    /// When the next UDP association goes idle; `None` (no timer at all)
    /// without one.
    fn next_expiry(&self) -> Option<Instant> {
        self.assocs
            .iter()
            .flatten()
            .map(|a| a.last + UDP_IDLE)
            .min()
    }

    fn expire(&mut self) {
        if self.by_client.is_empty() {
            return;
        }
        let now = Instant::now();
        for idx in 0..self.assocs.len() {
            if self.assocs[idx]
                .as_ref()
                .is_some_and(|a| a.last + UDP_IDLE <= now)
            {
                if let Some(a) = self.assocs[idx].take() {
                    self.by_client.remove(&(a.listener, a.client));
                    self.free_assocs.push(idx);
                }
            }
        }
    }
}

/// Watches each side of `conn` for what it waits for now: nothing from
/// the client until the connection inside is made.
fn rewatch(epoll: &Epoll, conn: &mut Conn, idx: usize) -> io::Result<()> {
    let (client, upstream) = if conn.connected {
        (
            conn.up.read_interest() | conn.down.write_interest(),
            conn.down.read_interest() | conn.up.write_interest(),
        )
    } else {
        (0, OUT)
    };
    epoll.watch(
        conn.client.as_fd(),
        conn.client_events,
        client,
        Token::Client(idx),
    )?;
    conn.client_events = client;
    epoll.watch(
        conn.upstream.as_fd(),
        conn.upstream_events,
        upstream,
        Token::Upstream(idx),
    )?;
    conn.upstream_events = upstream;
    Ok(())
}

/// Moves what can be moved on `conn`; true once both ways are done.
fn step(conn: &mut Conn) -> io::Result<bool> {
    if !conn.connected {
        if let Some(e) = conn.upstream.take_error()? {
            return Err(e);
        }
        match conn.upstream.peer_addr() {
            Ok(_) => conn.connected = true,
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    conn.up.pump(&conn.client, &conn.upstream)?;
    conn.down.pump(&conn.upstream, &conn.client)?;
    Ok(conn.up.shut && conn.down.shut)
}

/// connect(2) of a non-blocking socket to `target`; EINPROGRESS is an
/// error here, for the caller to take as "connecting".
fn connect(sock: &OwnedFd, target: SocketAddr) -> nix::Result<()> {
    let fd = sock.as_raw_fd();
    let r = match target {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of_val(&sin) as libc::socklen_t;
            // SAFETY: a live sockaddr_in of the length given.
            unsafe { libc::connect(fd, (&sin as *const libc::sockaddr_in).cast(), len) }
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            let len = std::mem::size_of_val(&sin6) as libc::socklen_t;
            // SAFETY: a live sockaddr_in6 of the length given.
            unsafe { libc::connect(fd, (&sin6 as *const libc::sockaddr_in6).cast(), len) }
        }
    };
    nix::errno::Errno::result(r).map(drop)
}

fn domain(addr: SocketAddr) -> libc::c_int {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for t in [
            Token::Listener(0),
            Token::Client(7),
            Token::Upstream(1 << 40),
            Token::Datagrams(3),
        ] {
            assert_eq!(Token::decode(t.encode()), t);
        }
    }
}
