//! The sockets a `LISTEN_<name>` key declares: parsed from the config,
//! bound on the host by `start --detach` (all or none), and named for
//! the service in the `sd_listen_fds` protocol.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use crate::holder;
use crate::publish::Proto;

/// Connections waiting to be accepted while the subhost wakes: a burst
/// of first connections waits here, none is refused.
pub const BACKLOG: i32 = 4096;

/// One declared socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Socket {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    /// An absolute path on the host.
    Unix(PathBuf),
}

/// The sockets of one service, `LISTEN_<service>`, and the line it was
/// set at (for errors found when they are bound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub service: String,
    pub sockets: Vec<Socket>,
    pub line: usize,
}

impl fmt::Display for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Socket::Tcp(a) => write!(f, "tcp:{a}"),
            Socket::Udp(a) => write!(f, "udp:{a}"),
            Socket::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Socket {
    /// `tcp:PORT`, `tcp:ADDR:PORT`, `tcp:[V6]:PORT`, the same with `udp:`,
    /// or `unix:/ABSOLUTE/PATH`; without ADDR every IPv4 address. The
    /// error is what is wrong and how to fix it.
    pub fn parse(s: &str) -> Result<Socket, (String, String)> {
        let fix =
            "write tcp:8080, tcp:127.0.0.1:8080, tcp:[::]:8443, udp:5353 or unix:/run/web.sock";
        let bad = |what: String| Err((what, fix.to_string()));
        let Some((proto, rest)) = s.split_once(':') else {
            return bad(format!("{s:?} has no protocol"));
        };
        if proto == "unix" {
            let path = Path::new(rest);
            if !path.is_absolute() || rest.len() > 107 {
                return Err((
                    format!("unix socket path {rest:?} is not absolute or is too long"),
                    "give an absolute path of at most 107 bytes, e.g. unix:/run/web.sock"
                        .to_string(),
                ));
            }
            if path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                return Err((
                    format!("unix socket path {rest:?} has a `..`"),
                    "give the path without `..`".to_string(),
                ));
            }
            return Ok(Socket::Unix(path.to_path_buf()));
        }
        if proto != "tcp" && proto != "udp" {
            return bad(format!("unknown protocol {proto:?} in {s:?}"));
        }
        let addr = if let Ok(port) = rest.parse::<u16>() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
        } else if let Ok(a) = rest.parse::<SocketAddr>() {
            a
        } else {
            return bad(format!("{rest:?} in {s:?} is not PORT or ADDR:PORT"));
        };
        if addr.port() == 0 {
            return bad(format!("port 0 in {s:?}"));
        }
        Ok(match proto {
            "tcp" => Socket::Tcp(addr),
            _ => Socket::Udp(addr),
        })
    }

    /// Binds it (and listens, for a stream socket), close-on-exec and
    /// non-blocking. A unix socket's directory must be one only the
    /// operator may write to: otherwise someone else could put their own
    /// socket or a symlink where the subhost's is expected.
    pub fn bind(&self) -> Result<OwnedFd> {
        use nix::sys::socket::{self as so, sockopt, AddressFamily, SockFlag, SockType};
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        let backlog = so::Backlog::new(BACKLOG).unwrap_or(so::Backlog::MAXCONN);
        let inet = |a: &SocketAddr, ty: SockType| -> Result<OwnedFd> {
            let family = match a {
                SocketAddr::V4(_) => AddressFamily::Inet,
                SocketAddr::V6(_) => AddressFamily::Inet6,
            };
            let fd = so::socket(family, ty, flags, None)?;
            if ty == SockType::Stream {
                so::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            }
            if a.is_ipv6() {
                so::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            }
            so::bind(fd.as_raw_fd(), &so::SockaddrStorage::from(*a))
                .map_err(|e| self.taken(io::Error::from(e)))?;
            if ty == SockType::Stream {
                so::listen(&fd, backlog)?;
            }
            Ok(fd)
        };
        match self {
            Socket::Tcp(a) => inet(a, SockType::Stream),
            Socket::Udp(a) => inet(a, SockType::Datagram),
            Socket::Unix(p) => {
                check_directory(p)?;
                // A socket left by a subhost that was not stopped is this
                // path's only legitimate occupant; anything else is kept.
                if let Ok(m) = p.symlink_metadata() {
                    use std::os::unix::fs::FileTypeExt;
                    if !m.file_type().is_socket() || unix_in_use(p) {
                        return Err(anyhow!(
                            "{} exists and is not a free socket: remove it or choose another path",
                            p.display()
                        ));
                    }
                    std::fs::remove_file(p)?;
                }
                let fd = so::socket(AddressFamily::Unix, SockType::Stream, flags, None)?;
                so::bind(fd.as_raw_fd(), &so::UnixAddr::new(p.as_path())?)
                    .map_err(|e| anyhow!("cannot bind {self}: {e}"))?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666))?;
                so::listen(&fd, backlog)?;
                Ok(fd)
            }
        }
    }

    /// A bind refused because the address is in use, with its holder.
    fn taken(&self, e: io::Error) -> anyhow::Error {
        let (proto, addr) = match self {
            Socket::Tcp(a) => (Proto::Tcp, *a),
            Socket::Udp(a) => (Proto::Udp, *a),
            Socket::Unix(_) => return e.into(),
        };
        if e.raw_os_error() != Some(libc::EADDRINUSE) {
            return anyhow!("cannot bind {self}: {e}");
        }
        let holders = holder::holders(proto, addr);
        let who = if holders.is_empty() {
            "by a socket no process of this host's PID namespace holds".to_string()
        } else {
            let named: Vec<String> = holders
                .iter()
                .map(|&pid| format!("pid {pid} ({})", holder::comm(pid)))
                .collect();
            format!("by {}", named.join(", "))
        };
        anyhow!("{self} is taken {who}: choose another port, or stop what holds it")
    }
}

/// A unix socket's directory exists, is owned by the operator (this
/// process's user) and is writable by no one else.
fn check_directory(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let m = std::fs::symlink_metadata(dir)
        .map_err(|e| anyhow!("cannot use {}: its directory: {e}", path.display()))?;
    // SAFETY: geteuid only reads this process's credentials.
    let me = unsafe { libc::geteuid() };
    if !m.is_dir() || m.uid() != me || m.mode() & 0o022 != 0 {
        return Err(anyhow!(
            "unix socket {}: its directory {} is not a directory owned by uid {me} and \
             writable by no one else: choose a path in such a directory (e.g. under /run)",
            path.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// Whether something accepts connections on the unix socket `path`.
fn unix_in_use(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Binds every socket of `listen`, in order; on an error none stays
/// bound (unix socket files made are removed).
pub fn bind_all(listen: &[Listen], config: &Path) -> Result<Vec<OwnedFd>> {
    let mut fds = Vec::new();
    let mut made: Vec<&Path> = Vec::new();
    for l in listen {
        for s in &l.sockets {
            match s.bind() {
                Ok(fd) => {
                    if let Socket::Unix(p) = s {
                        made.push(p);
                    }
                    fds.push(fd);
                }
                Err(e) => {
                    drop(fds);
                    for p in made {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(anyhow!(
                        "{}:{}: LISTEN_{}: {e:#}",
                        config.display(),
                        l.line,
                        l.service
                    ));
                }
            }
        }
    }
    Ok(fds)
}

/// The unix socket files of `listen`, removed when the host's sockets
/// are closed (only sockets: anything else there is not ours).
pub fn remove_unix_files(paths: &[PathBuf]) {
    use std::os::unix::fs::FileTypeExt;
    for p in paths {
        if p.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_socket())
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form() {
        assert_eq!(
            Socket::parse("tcp:8080").unwrap(),
            Socket::Tcp("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            Socket::parse("tcp:[::]:8443").unwrap(),
            Socket::Tcp("[::]:8443".parse().unwrap())
        );
        assert_eq!(
            Socket::parse("udp:127.0.0.1:5353").unwrap(),
            Socket::Udp("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            Socket::parse("unix:/run/web.sock").unwrap(),
            Socket::Unix("/run/web.sock".into())
        );
    }

    #[test]
    fn refuses_bad_ones() {
        for bad in [
            "8080",
            "sctp:80",
            "tcp:0",
            "tcp:70000",
            "tcp:-1",
            "tcp:host:80",
            "unix:web.sock",
            "unix:/run/../etc/x",
        ] {
            assert!(Socket::parse(bad).is_err(), "{bad}");
        }
    }
}
