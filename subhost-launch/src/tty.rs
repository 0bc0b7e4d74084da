//! Terminals: the session's own pty (from the subhost's devpts instance), the
//! caller's terminal in raw mode, and passing the pty master out of the
//! sandbox.
//!
//! The caller's terminal never enters the subhost: the session gets a pty of
//! the subhost's own devpts, and the launcher relays bytes between the two
//! (see `supervisor`). That keeps TIOCSTI and friends from reaching the
//! caller's shell.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

/// A pty pair: the master stays with the launcher, the slave becomes the
/// session's controlling terminal.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Whether `fd` is a terminal.
pub fn is_tty(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

/// Opens a new pty from the `ptmx` at `ptmx` (e.g. `live/dev/pts/ptmx` of a
/// fresh devpts instance), unlocked, slave opened through the master.
///
/// Both ends are close-on-exec and neither becomes anyone's controlling
/// terminal here (`make_controlling` does that deliberately).
pub fn open_pty(ptmx: &Path) -> io::Result<Pty> {
    let master = open_ptmx(ptmx)?;
    unlock(master.as_fd()).map_err(|e| annotate(e, "unlocking the pty of", ptmx))?;
    let slave = match open_peer(master.as_fd()) {
        Ok(slave) => slave,
        // Kernels before 4.13 lack TIOCGPTPEER; the path is only safe to
        // use there because the caller has not pivoted yet.
        Err(e)
            if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOTTY) =>
        {
            open_slave_by_path(master.as_fd(), ptmx)?
        }
        Err(e) => return Err(annotate(e, "opening the slave of the pty of", ptmx)),
    };
    Ok(Pty { master, slave })
}

fn open_ptmx(ptmx: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    // std opens with O_CLOEXEC already.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(ptmx)
        .map_err(|e| annotate(e, "opening", ptmx))?;
    Ok(OwnedFd::from(file))
}

fn unlock(master: BorrowedFd<'_>) -> io::Result<()> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one c_int through the pointer, which points to
    // a live local.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The slave through the master itself, so no path lookup (which could be
/// redirected by whoever controls the subhost's root) is involved.
fn open_peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes its flags by value and returns a new fd.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pty_number(master: BorrowedFd<'_>) -> io::Result<u32> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one c_uint through the pointer, which points to
    // a live local.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

/// Where the slave of a pty from `ptmx` lives: next to it for
/// `.../pts/ptmx`, in `pts/` beside it for `/dev/ptmx`. `ptsname(3)` is no
/// use here: it names the slave as seen from `/dev/pts`, which is the host's
/// devpts, not the subhost's.
fn slave_dir(ptmx: &Path) -> PathBuf {
    let dir = ptmx.parent().unwrap_or(Path::new("/"));
    if dir.file_name().is_some_and(|n| n == "pts") {
        dir.to_path_buf()
    } else {
        dir.join("pts")
    }
}

fn open_slave_by_path(master: BorrowedFd<'_>, ptmx: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let n = pty_number(master).map_err(|e| annotate(e, "asking the pty number of", ptmx))?;
    let path = slave_dir(ptmx).join(n.to_string());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| annotate(e, "opening the pty slave", &path))?;
    Ok(OwnedFd::from(file))
}

/// In the sandbox child: new session, `slave` as controlling terminal and as
/// stdin/stdout/stderr.
pub fn make_controlling(slave: OwnedFd) -> io::Result<()> {
    nix::unistd::setsid().map_err(|e| os_err(e, "setsid for the session's terminal"))?;
    // SAFETY: TIOCSCTTY takes an int argument by value (0: do not steal a
    // terminal that is some other session's).
    let r = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("making the pty the session's controlling terminal (TIOCSCTTY): {e}"),
        ));
    }
    let raw = slave.as_raw_fd();
    for target in 0..=2 {
        if raw == target {
            // dup2 onto itself would keep close-on-exec set.
            clear_cloexec(raw)?;
        } else {
            // SAFETY: plain dup2 on fds we hold; replacing 0/1/2 is the point.
            if unsafe { libc::dup2(raw, target) } < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("dup2 of the pty onto fd {target}: {e}"),
                ));
            }
        }
    }
    if raw <= 2 {
        // Now one of the standard streams: it must stay open.
        std::mem::forget(slave);
    }
    Ok(())
}

fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD on an fd we hold; no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `fd` over the unix socket `sock` (SCM_RIGHTS).
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    // A stream socket cannot carry control data without at least one byte.
    let byte = [0u8];
    let iov = [io::IoSlice::new(&byte)];
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(os_err(e, "sending the pty to the launcher (SCM_RIGHTS)")),
        }
    }
}

/// Receives one fd sent with `send_fd`.
pub fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut byte = [0u8];
    // Room for a few fds so that a peer sending too many is reported as such
    // rather than silently losing some.
    let mut space = nix::cmsg_space!([RawFd; 4]);
    loop {
        let mut iov = [io::IoSliceMut::new(&mut byte)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(os_err(e, "receiving the pty from the sandbox")),
        };
        let mut received = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    // SAFETY: the kernel installed these fds for us just now
                    // (SCM_RIGHTS); nothing else refers to them.
                    received.extend(fds.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                }
            }
        }
        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
        let bytes = msg.bytes;
        return match (received.len(), truncated, bytes) {
            (1, false, _) => Ok(received.pop().expect("length checked")),
            (0, false, 0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the sandbox closed its end of the socket without sending the pty \
                 (it probably failed before opening it; see its error above)",
            )),
            (0, false, _) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the sandbox sent a message without a file descriptor where the pty was expected",
            )),
            (n, _, _) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "expected exactly one file descriptor (the pty), got {n}{}",
                    if truncated {
                        " and more were cut off"
                    } else {
                        ""
                    }
                ),
            )),
        };
    }
}

/// The caller's terminal in raw mode for as long as this lives.
///
/// The settings are restored on drop, and also by a panic hook: release
/// builds abort on panic, which skips destructors, and a terminal left raw
/// is unusable for whoever typed the command.
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

/// The terminal settings to put back if we panic, with a private fd to the
/// terminal so restoring does not depend on who still holds which fd.
static SAVED: Mutex<Option<(RawFd, Termios)>> = Mutex::new(None);
static PANIC_HOOK: Once = Once::new();

impl RawMode {
    /// Puts the terminal at `fd` in raw mode (cfmakeraw).
    pub fn enter(fd: BorrowedFd<'_>) -> io::Result<RawMode> {
        let fd = fd
            .try_clone_to_owned()
            .map_err(|e| io::Error::new(e.kind(), format!("duplicating the terminal fd: {e}")))?;
        let saved =
            termios::tcgetattr(&fd).map_err(|e| os_err(e, "reading the terminal settings"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        install_panic_hook();
        // Record before switching: a panic right after must still restore.
        if let Ok(mut s) = SAVED.lock() {
            *s = Some((fd.as_raw_fd(), saved.clone()));
        }
        if let Err(e) = termios::tcsetattr(&fd, SetArg::TCSANOW, &raw) {
            forget_saved(fd.as_raw_fd());
            return Err(os_err(e, "putting the terminal in raw mode"));
        }
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        forget_saved(self.fd.as_raw_fd());
        // TCSANOW, not TCSADRAIN: a terminal stopped by flow control must not
        // keep the launcher from exiting.
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}

fn forget_saved(fd: RawFd) {
    if let Ok(mut s) = SAVED.lock() {
        if s.as_ref().is_some_and(|(f, _)| *f == fd) {
            *s = None;
        }
    }
}

fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // try_lock: the panic may have happened while the lock was held.
            if let Ok(s) = SAVED.try_lock() {
                if let Some((fd, t)) = s.as_ref() {
                    // SAFETY: the fd is owned by a live RawMode (entries are
                    // removed before it is dropped); it is only borrowed here.
                    let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
                    let _ = termios::tcsetattr(fd, SetArg::TCSANOW, t);
                }
            }
            previous(info);
        }));
    });
}

/// Copies the window size of the terminal `from` to the terminal `to`
/// (usually the caller's terminal to the session's pty master, whose slave
/// side then gets SIGWINCH from the kernel).
pub fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    let ws = get_winsize(from)?;
    set_winsize(to, &ws)
}

pub fn get_winsize(fd: BorrowedFd<'_>) -> io::Result<libc::winsize> {
    // SAFETY: all-zero is a valid winsize.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which points
    // to a live local.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("reading the window size: {e}"),
        ));
    }
    Ok(ws)
}

pub fn set_winsize(fd: BorrowedFd<'_>, ws: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, which points
    // to a live value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("setting the window size: {e}"),
        ));
    }
    Ok(())
}

fn os_err(e: Errno, what: &str) -> io::Error {
    io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}"))
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}
