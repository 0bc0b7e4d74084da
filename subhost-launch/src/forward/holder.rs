//! Who holds a port: the sockets `/proc/net/{tcp,udp}{,6}` lists for
//! this network namespace, by inode, and the processes whose fds are
//! those sockets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Proto;

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
/// from being bound (for TCP, only listening ones).
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
/// this network namespace, lowest PID first.
pub fn holders(proto: Proto, want: SocketAddr) -> Vec<i32> {
    let tables: &[&str] = match proto {
        Proto::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
        Proto::Udp => &["/proc/net/udp", "/proc/net/udp6"],
    };
    let wanted: Vec<String> = tables
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|text| inodes(&text, proto, want))
        .map(|i| format!("socket:[{i}]"))
        .collect();
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
