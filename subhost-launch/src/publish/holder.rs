//! Who holds a host port: a bind() in the host's network namespace tells
//! whether it is taken, /proc/net/{tcp,udp}[6] which socket has it, and the
//! processes' fd tables whose socket that is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6};

use super::{Proto, Publish};

/// The holder of the host port of `p`, as "pid 123 (nginx)", when a host
/// socket has it bound (a listening one, for TCP: a connection lingering in
/// TIME_WAIT holds no service).
pub fn bound(p: &Publish) -> Option<String> {
    let addrs: Vec<IpAddr> = match p.host {
        None => vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ],
        Some(ip) => vec![ip],
    };
    let taken = addrs
        .into_iter()
        .any(|ip| in_use(p.proto, SocketAddr::new(ip, p.host_port)));
    if !taken {
        return None;
    }
    let inodes = sockets_on(p.proto, p.host_port);
    if inodes.is_empty() {
        return None;
    }
    Some(owner(&inodes).unwrap_or_else(|| {
        format!(
            "a socket no process of this host's view owns (inode {})",
            inodes[0]
        )
    }))
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

/// Inodes of the host's sockets bound to `port`: listening ones for TCP.
fn sockets_on(proto: Proto, port: u16) -> Vec<u64> {
    let (files, state) = match proto {
        Proto::Tcp => (
            ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"],
            Some("0A"),
        ),
        Proto::Udp => (
            ["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"],
            None,
        ),
    };
    let mut out = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(st), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let p = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if p != Some(port) || state.is_some_and(|s| s != *st) {
                continue;
            }
            if let Ok(i) = inode.parse::<u64>() {
                if i != 0 && !out.contains(&i) {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// "pid N (COMM)" of the first process with one of `inodes` open.
fn owner(inodes: &[u64]) -> Option<String> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if wanted.iter().any(|w| target.as_os_str() == w.as_str()) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    None
}
