//! Who holds a host port, for a start refused because of it: bind() in
//! the caller's network namespace tells whether the port is taken,
//! `/proc/thread-self/net/{tcp,udp}{,6}` which sockets have it (by inode),
//! and the processes' fd tables whose sockets those are. Both the check
//! of `PUBLISH` before the rules are made and the forwarder's refused
//! bind name the holder this one way.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6};

use crate::publish::Proto;

/// TCP's LISTEN state in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// One `local_address` of `/proc/net/*`: the address as the kernel
/// stores it (32-bit words in host byte order, hex), `:`, the port (hex).
pub fn parse_local(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether a socket bound to `bound` keeps `want` from being bound: same
/// port and same address, or either the wildcard (an IPv6 wildcard may be
/// dual-stack, which `/proc` does not tell).
pub fn conflicts(bound: SocketAddr, want: SocketAddr) -> bool {
    if bound.port() != want.port() {
        return false;
    }
    let canon = |ip: IpAddr| ip.to_canonical();
    bound.ip().is_unspecified()
        || want.ip().is_unspecified()
        || canon(bound.ip()) == canon(want.ip())
}

/// The inodes of the sockets in one `/proc/net/*` table that keep `want`
/// from being bound (for TCP, only listening ones: a connection lingering
/// in TIME_WAIT holds no service).
pub fn inodes(table: &str, proto: Proto, want: SocketAddr) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = parse_local(f.get(1)?)?;
            let st = *f.get(3)?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            let listening = proto == Proto::Udp || st == TCP_LISTEN;
            (listening && inode != 0 && conflicts(local, want)).then_some(inode)
        })
        .collect()
}

/// The processes holding a socket that keeps `want` from being bound, in
/// the caller's network namespace, lowest PID first.
pub fn holders(proto: Proto, want: SocketAddr) -> Vec<i32> {
    pids_holding(&sockets(proto, want))
}

/// The inodes of the caller's network namespace's sockets that keep
/// `want` from being bound.
fn sockets(proto: Proto, want: SocketAddr) -> Vec<u64> {
    let tables: &[&str] = match proto {
        Proto::Tcp => &["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"],
        Proto::Udp => &["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"],
    };
    tables
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|text| inodes(&text, proto, want))
        .collect()
}

/// The processes with one of the sockets `inodes` open, lowest PID first.
fn pids_holding(inodes: &[u64]) -> Vec<i32> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| wanted.iter().any(|w| l.as_os_str() == w.as_str()))
                })
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The command name of `pid`, `?` when it is gone.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The holder of `proto` port `addr` (a wildcard: on any address of its
/// family), as "pid 123 (nginx)", when bind() says a socket of the
/// caller's network namespace has it.
/// A TCP port that only connections lingering in TIME_WAIT keep bind()
/// from taking has no holder: no service is there, and the rules do not
/// need the port free.
pub fn of_taken(proto: Proto, addr: SocketAddr) -> Option<String> {
    if !in_use(proto, addr) {
        return None;
    }
    let inodes = sockets(proto, addr);
    if inodes.is_empty() {
        return None;
    }
    Some(match pids_holding(&inodes).first() {
        Some(&pid) => format!("pid {pid} ({})", comm(pid)),
        None => format!(
            "a socket no process of this host's PID namespace holds (inode {})",
            inodes[0]
        ),
    })
}

/// Whether bind() of `addr`, without SO_REUSEADDR, says it is in use.
fn in_use(proto: Proto, addr: SocketAddr) -> bool {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let kind = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let Ok(fd) = socket(family, kind, SockFlag::SOCK_CLOEXEC, None) else {
        return false;
    };
    if addr.is_ipv6() {
        // `[::]` alone: the IPv4 side is checked on its own.
        let on: libc::c_int = 1;
        // SAFETY: `fd` is an open socket; the option value is a c_int that
        // lives across the call, and its size is passed with it.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                std::ptr::from_ref(&on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    let r = match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => bind(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    };
    r == Err(Errno::EADDRINUSE)
}

#[cfg(test)]
mod tests;
