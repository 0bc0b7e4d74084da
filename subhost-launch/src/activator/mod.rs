//! Socket activation: subhosts that sleep (hibernate) until the first
//! connection to one of their `LISTEN_<name>` sockets.
//!
//! One process of the host, the activator, holds the sockets of every
//! sleeping subhost and waits for all of them in one `poll`: a subhost
//! asleep costs its sockets and a few hundred bytes, not a process. The
//! first connection makes it run `start --detach --activated` with the
//! sockets on fds 3.. (a warm start: the subhost is hibernating); the
//! init hands them to the service (sd_listen_fds). While the subhost is
//! awake the activator leaves its sockets alone; with IDLE it puts an
//! idle one back to sleep (`hibernate`), and when its init has gone it
//! waits on the sockets again. `stop` has it let go of them first.
//!
//! The activator is started on demand by the first `start --detach` of a
//! subhost with LISTEN keys and exits when it holds nothing. Its control
//! socket is `/run/subhost/activator.sock` (root's alone), one request
//! per connection, sockets passed with SCM_RIGHTS; a client holds
//! `activator.lock` for its whole exchange, and the activator takes it
//! before it exits, so no request reaches an activator on its way out.

pub mod daemon;
pub mod sockets;

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::socket::{self as so, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType};
use serde::Serialize;

use crate::run::RUN_DIR;
use crate::state::ProcId;

/// The largest request or reply.
const MAX_MESSAGE: usize = 16 << 10;
/// The most sockets one subhost may declare (one SCM_RIGHTS message).
pub const MAX_SOCKETS: usize = 200;

fn socket_path() -> PathBuf {
    Path::new(RUN_DIR).join("activator.sock")
}

fn lock_path() -> PathBuf {
    Path::new(RUN_DIR).join("activator.lock")
}

/// The record of a subhost the activator holds: `/run/subhost/NAME.listen`.
pub fn record_path(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{name}.listen"))
}

/// What a subhost's activation looks like, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Activation {
    /// `sleeping`, `waking`, `awake`, `hibernating` or `failed`.
    pub state: String,
    pub wakes: u64,
    /// The last wake, milliseconds since the epoch.
    pub last_wake_ms: Option<u64>,
    /// The activator's PID.
    pub pid: i32,
}

/// The activator's record of `name`, if a live activator wrote it.
pub fn status(name: &str) -> Option<Activation> {
    let text = std::fs::read_to_string(record_path(name)).ok()?;
    let mut lines = text.lines();
    let mut id = lines.next()?.split_whitespace();
    let id = ProcId {
        pid: id.next()?.parse().ok()?,
        start: id.next()?.parse().ok()?,
    };
    if ProcId::of(id.pid).ok()? != id {
        return None;
    }
    let mut f = lines.next()?.split_whitespace();
    let mut state = f.next()?.to_string();
    // The activator looks at its services only on its IDLE checks (and
    // without IDLE never): their own state, read here, is the truth.
    if state == "awake" && service_failed(name) {
        state = "failed".to_string();
    }
    let wakes = f.next()?.parse().ok()?;
    let last = f.next()?.parse::<u64>().ok().filter(|&t| t > 0);
    Some(Activation {
        state,
        wakes,
        last_wake_ms: last,
        pid: id.pid,
    })
}

/// Whether a service of `name`'s running init has failed (its restarts
/// used up), as the init publishes.
fn service_failed(name: &str) -> bool {
    crate::state::running_init(name)
        .and_then(|init| crate::services::read(init.pid))
        .is_some_and(|list| list.iter().any(|s| s.state == "failed"))
}

/// What `start --detach` of a subhost with LISTEN keys does besides the
/// start's own plan, as `--dry-run` prints it.
pub struct Plan<'a> {
    pub name: &'a str,
    pub listen: &'a [sockets::Listen],
    pub idle: Option<u32>,
}

impl std::fmt::Display for Plan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for l in self.listen {
            for s in &l.sockets {
                let how = match s {
                    sockets::Socket::Unix(_) => " mode 0666".to_string(),
                    sockets::Socket::Tcp(_) => format!(" backlog {}", sockets::BACKLOG),
                    sockets::Socket::Udp(_) => String::new(),
                };
                writeln!(f, "bind {s}{how} (for service {})", l.service)?;
            }
        }
        writeln!(f, "hibernate {} (set up, no init)", self.name)?;
        write!(
            f,
            "hand the sockets to the activator ({}): it wakes {} at the first connection",
            socket_path().display(),
            self.name
        )?;
        if let Some(i) = self.idle {
            write!(
                f,
                "\nidle {i} s: hibernated again after that long without activity"
            )?;
        }
        Ok(())
    }
}

/// What the activator is told to hold.
pub struct Hold<'a> {
    pub name: &'a str,
    pub base: &'a Path,
    pub console: Option<&'a str>,
    pub idle: Option<u32>,
    /// The unix socket files, removed when the sockets are let go.
    pub unix: Vec<PathBuf>,
    pub sockets: Vec<OwnedFd>,
}

/// Hands `h`'s sockets to the activator, starting it when none runs.
pub fn hold(h: Hold<'_>) -> Result<()> {
    if h.sockets.len() > MAX_SOCKETS {
        bail!("subhost {}: more than {MAX_SOCKETS} LISTEN sockets", h.name);
    }
    let _lock = lock()?;
    let conn = match connect() {
        Some(c) => c,
        None => {
            spawn().context("cannot start the activator")?;
            connect().ok_or_else(|| anyhow!("the activator did not start"))?
        }
    };
    let base = std::path::absolute(h.base).unwrap_or_else(|_| h.base.to_path_buf());
    let mut fields = vec![
        "hold".to_string(),
        h.name.to_string(),
        base.to_str()
            .ok_or_else(|| anyhow!("{} is not UTF-8", base.display()))?
            .to_string(),
        h.console.unwrap_or_default().to_string(),
        h.idle.map(|i| i.to_string()).unwrap_or_default(),
    ];
    for p in &h.unix {
        fields.push(p.to_string_lossy().into_owned());
    }
    let fds: Vec<RawFd> = h.sockets.iter().map(|f| f.as_raw_fd()).collect();
    send(&conn, &fields, &fds)?;
    reply(&conn)
}

/// Has the activator close `name`'s sockets (and remove its unix socket
/// files): after it nothing listens for the subhost. True when it held
/// them; false when there is no activator or it did not hold them.
pub fn release(name: &str) -> Result<bool> {
    if !socket_path().exists() {
        return Ok(false);
    }
    let _lock = lock()?;
    let Some(conn) = connect() else {
        return Ok(false);
    };
    send(&conn, &["drop".to_string(), name.to_string()], &[])?;
    match reply(&conn) {
        Ok(()) => Ok(true),
        Err(e) if e.to_string() == "not held" => Ok(false),
        Err(e) => Err(e),
    }
}

/// `activator.lock`, held (flock) while the returned file is open.
pub(super) fn lock() -> Result<File> {
    std::fs::create_dir_all(RUN_DIR).with_context(|| format!("cannot create {RUN_DIR}"))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(lock_path())
        .with_context(|| format!("cannot open {}", lock_path().display()))?;
    // SAFETY: flock takes a descriptor of ours and plain flags.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot lock {}", lock_path().display()));
    }
    Ok(f)
}

/// A connection to the running activator, if one listens.
fn connect() -> Option<OwnedFd> {
    let fd = so::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let addr = so::UnixAddr::new(socket_path().as_path()).ok()?;
    so::connect(fd.as_raw_fd(), &addr).ok()?;
    Some(fd)
}

/// Binds the control socket and starts the activator on it, a daemon
/// reaped by init (or the nearest subreaper).
fn spawn() -> Result<()> {
    let path = socket_path();
    if path.symlink_metadata().is_ok() {
        use std::os::unix::fs::FileTypeExt;
        if !path.symlink_metadata()?.file_type().is_socket() {
            bail!(
                "{} is not a socket: remove it ({})",
                path.display(),
                crate::files::removal(&path)
            );
        }
        std::fs::remove_file(&path)?;
    }
    let listener = so::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    so::bind(listener.as_raw_fd(), &so::UnixAddr::new(path.as_path())?)
        .with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    so::listen(&listener, so::Backlog::new(64)?)?;
    let raw = listener.as_raw_fd();
    let run = move || -> i32 {
        let _ = crate::sys::dup2(raw, daemon::LISTENER_FD);
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            for fd in 0..3 {
                let _ = crate::sys::dup2(null.as_raw_fd(), fd);
            }
        }
        let _ = crate::sys::close_range(daemon::LISTENER_FD as u32 + 1, u32::MAX, false);
        let argv = [
            c"subhost-launch".as_ptr(),
            c"activator".as_ptr(),
            std::ptr::null(),
        ];
        // SAFETY: a static path and a NULL-terminated argv of static strings.
        unsafe { libc::execv(c"/proc/self/exe".as_ptr(), argv.as_ptr()) };
        127
    };
    // SAFETY: the launcher is single-threaded; the daemon only moves
    // descriptors and execs.
    unsafe { crate::process::daemon(run) }.context("cannot fork the activator")?;
    Ok(())
}

fn send(conn: &OwnedFd, fields: &[String], fds: &[RawFd]) -> Result<()> {
    let text = fields.join("\0");
    if text.len() > MAX_MESSAGE {
        bail!("a request to the activator is too long");
    }
    let iov = [IoSlice::new(text.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    so::sendmsg::<()>(conn.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .context("cannot talk to the activator")?;
    Ok(())
}

fn reply(conn: &OwnedFd) -> Result<()> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = nix::unistd::read(conn, &mut buf).context("no answer from the activator")?;
    let text = String::from_utf8_lossy(&buf[..n]);
    match text.strip_prefix("error: ") {
        None if text == "ok" => Ok(()),
        None => bail!("the activator answered {text:?}"),
        Some(e) => bail!("{e}"),
    }
}
