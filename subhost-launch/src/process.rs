//! How the launcher makes processes, and the one channel a parent and its
//! child talk over.
//!
//! Processes: a plain fork, a sibling (the caller's parent becomes the
//! child's: how the sandbox's init and `enter`'s command become the
//! launcher's own children from inside a namespace), a clone straight into a
//! cgroup v2 directory and new namespaces, a worker that runs a closure, and
//! a daemon detached from the launcher. The raw calls are in [`crate::sys`].
//!
//! The channel is a close-on-exec `SOCK_SEQPACKET` socket pair: one
//! [`Message`] per packet, so nothing is split or run together, and the end
//! of the stream (every copy of the other end closed, which an exec does to
//! a close-on-exec end) is seen as such. Sending and receiving allocate
//! nothing (but the text of a [`Message::Failed`] received), so a child of a
//! multi-threaded process may use it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result};
use nix::unistd::{ForkResult, Pid};

use crate::sys;

/// What a parent and its child tell each other.
#[derive(Debug)]
pub enum Message {
    /// A process made, by its PID as the receiver sees it.
    Pid(i32),
    /// Go on: the step the other side waits for is done.
    Go,
    /// A call failed with this errno.
    Errno(i32),
    /// What went wrong, in words.
    Failed(String),
    /// A file descriptor, passed with SCM_RIGHTS.
    Fd(OwnedFd),
}

const TAG_PID: u8 = b'P';
const TAG_GO: u8 = b'G';
const TAG_ERRNO: u8 = b'E';
const TAG_FAILED: u8 = b'F';
const TAG_FD: u8 = b'D';

/// The largest packet: a longer [`Message::Failed`] text is cut.
const MAX_PACKET: usize = 4096;

/// One end of a parent–child channel.
#[derive(Debug)]
pub struct Channel(OwnedFd);

/// A fresh channel: one end for each side, both close-on-exec.
pub fn channel() -> Result<(Channel, Channel)> {
    let (a, b) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .context("cannot create a socket pair")?;
    Ok((Channel(a), Channel(b)))
}

impl Channel {
    /// Sends `msg` (an `Fd` goes through [`Channel::send_fd`]).
    pub fn send(&self, msg: &Message) -> io::Result<()> {
        let mut buf = [0u8; MAX_PACKET];
        let len = match msg {
            Message::Pid(n) | Message::Errno(n) => {
                buf[0] = if matches!(msg, Message::Pid(_)) {
                    TAG_PID
                } else {
                    TAG_ERRNO
                };
                buf[1..5].copy_from_slice(&n.to_ne_bytes());
                5
            }
            Message::Go => {
                buf[0] = TAG_GO;
                1
            }
            Message::Failed(text) => {
                buf[0] = TAG_FAILED;
                let mut n = text.len().min(MAX_PACKET - 1);
                while !text.is_char_boundary(n) {
                    n -= 1;
                }
                buf[1..=n].copy_from_slice(&text.as_bytes()[..n]);
                n + 1
            }
            Message::Fd(fd) => return self.send_fd(fd.as_fd()),
        };
        self.send_packet(&buf[..len], None)
    }

    /// Sends `fd` as a [`Message::Fd`].
    pub fn send_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.send_packet(&[TAG_FD], Some(fd.as_raw_fd()))
    }

    /// The next message, or `None` once every copy of the other end is
    /// closed.
    pub fn recv(&self) -> io::Result<Option<Message>> {
        let mut buf = [0u8; MAX_PACKET];
        let (n, fd) = self.recv_packet(&mut buf)?;
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a malformed message from the other process ({what})"),
            )
        };
        let int = |b: &[u8]| -> io::Result<i32> {
            Ok(i32::from_ne_bytes(b.try_into().map_err(|_| bad("length"))?))
        };
        if n == 0 {
            return Ok(None);
        }
        let msg = match (buf[0], fd) {
            (TAG_FD, Some(fd)) if n == 1 => Message::Fd(fd),
            (_, Some(_)) => return Err(bad("an fd where none was expected")),
            (TAG_FD, None) => return Err(bad("no fd")),
            (TAG_PID, None) => Message::Pid(int(&buf[1..n])?),
            (TAG_ERRNO, None) => Message::Errno(int(&buf[1..n])?),
            (TAG_GO, None) if n == 1 => Message::Go,
            (TAG_FAILED, None) => Message::Failed(String::from_utf8_lossy(&buf[1..n]).into_owned()),
            _ => return Err(bad("unknown kind")),
        };
        Ok(Some(msg))
    }

    fn send_packet(&self, data: &[u8], fd: Option<RawFd>) -> io::Result<()> {
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut cmsg = CmsgBuf([0; CMSG_ROOM]);
        // SAFETY: msghdr is plain data; zeroed is a valid empty one.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        if let Some(fd) = fd {
            hdr.msg_control = cmsg.0.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE computes a size from an integer.
            hdr.msg_controllen = unsafe { libc::CMSG_SPACE(FD_BYTES) } as _;
            // SAFETY: the control buffer is aligned and large enough for one
            // header with one fd (CMSG_ROOM), so the first header and its
            // data are inside it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&hdr);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(FD_BYTES) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
            }
        }
        loop {
            // SAFETY: hdr points to live locals (iov, data, cmsg) for the
            // call; sendmsg only reads them.
            let r = unsafe { libc::sendmsg(self.0.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL) };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// One packet into `buf`: its length and the fd it carried, if any.
    fn recv_packet(&self, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cmsg = CmsgBuf([0; CMSG_ROOM]);
        // SAFETY: msghdr is plain data; zeroed is a valid empty one.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cmsg.0.as_mut_ptr().cast();
        hdr.msg_controllen = CMSG_ROOM as _;
        let n = loop {
            // SAFETY: hdr points to live locals of the sizes it gives.
            let r = unsafe { libc::recvmsg(self.0.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            // ECONNRESET: the other side closed with a message of ours
            // unread (a sandbox that failed before the launcher's Go
            // reached it). Said once; what it sent before is still queued,
            // then the end.
            if e.kind() != io::ErrorKind::Interrupted && e.raw_os_error() != Some(libc::ECONNRESET)
            {
                return Err(e);
            }
        };
        let mut fds = [None, None, None, None];
        let mut count = 0;
        // SAFETY: the kernel filled the control buffer and set its length;
        // the CMSG_* macros walk it within that length, and every fd in an
        // SCM_RIGHTS header was installed for this process just now.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for k in 0..len / std::mem::size_of::<RawFd>() {
                        let fd = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(k)));
                        if count < fds.len() {
                            fds[count] = Some(fd);
                        }
                        count += 1;
                    }
                }
                c = libc::CMSG_NXTHDR(&hdr, c);
            }
        }
        if count > 1 || hdr.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a malformed message from the other process (cut, or too many fds)",
            ));
        }
        Ok((n, fds[0].take()))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

const FD_BYTES: u32 = std::mem::size_of::<RawFd>() as u32;
/// Room for the control message of up to four fds (more is an error).
const CMSG_ROOM: usize = 64;

#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_ROOM]);

/// A plain fork.
///
/// # Safety
/// As for fork(2): in a multi-threaded caller the child may make only
/// async-signal-safe calls before it execs or leaves through
/// [`sys::exit_now`].
pub unsafe fn fork() -> io::Result<ForkResult> {
    // SAFETY: the caller's contract.
    unsafe { fork_with(0) }
}

/// A fork whose child is a sibling of the caller: its parent (and reaper)
/// is the caller's parent. What makes a process cloned inside a subhost's
/// PID namespace the launcher's own child.
///
/// # Safety
/// As for [`fork`].
pub unsafe fn sibling() -> io::Result<ForkResult> {
    // SAFETY: the caller's contract.
    unsafe { fork_with(libc::CLONE_PARENT) }
}

/// A fork into a new user namespace, with no maps yet.
///
/// # Safety
/// As for [`fork`].
pub unsafe fn fork_into_new_userns() -> io::Result<ForkResult> {
    // SAFETY: the caller's contract.
    unsafe { fork_with(libc::CLONE_NEWUSER) }
}

/// # Safety
/// As for [`fork`].
unsafe fn fork_with(flags: libc::c_int) -> io::Result<ForkResult> {
    // A plain fork goes through the C library, whose child-side handlers
    // reset its locks and its list of threads; a clone with flags cannot.
    let pid = if flags == 0 {
        // SAFETY: the caller's contract.
        match unsafe { libc::fork() } {
            -1 => return Err(io::Error::last_os_error()),
            pid => pid,
        }
    } else {
        // SAFETY: the caller's contract.
        unsafe { sys::clone_fork(flags) }?
    };
    match pid {
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent {
            child: Pid::from_raw(pid),
        }),
    }
}

/// A fork with the namespace `flags` (CLONE_NEWPID, …), into the cgroup v2
/// directory `cgroup` when given and the kernel can (clone3 with
/// CLONE_INTO_CGROUP, Linux 5.7); returns whether it went there. Older
/// kernels get unshare + fork, and the child joins by itself.
///
/// # Safety
/// As for [`fork`].
pub unsafe fn clone_into_cgroup(
    flags: u64,
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<(ForkResult, bool)> {
    // SAFETY: the caller's contract.
    match unsafe { sys::clone3(flags, cgroup) } {
        Ok(0) => Ok((ForkResult::Child, cgroup.is_some())),
        Ok(pid) => Ok((
            ForkResult::Parent {
                child: Pid::from_raw(pid),
            },
            cgroup.is_some(),
        )),
        Err(err) => {
            if !matches!(
                err.raw_os_error(),
                Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
            ) {
                return Err(err).context("cannot clone the sandbox");
            }
            // The next child forked becomes PID 1 of a new PID namespace;
            // the launcher itself stays where it is.
            if flags & libc::CLONE_NEWPID as u64 != 0 {
                sys::unshare(libc::CLONE_NEWPID).context("cannot create a PID namespace")?;
            }
            // SAFETY: the caller's contract.
            Ok((unsafe { fork() }.context("cannot fork")?, false))
        }
    }
}

/// The signal state a program expects from exec: nothing blocked (the
/// launcher blocks those it supervises before it forks, so none is lost)
/// and SIGPIPE at its default (Rust ignores it, an ignored disposition
/// survives exec, and pipelines inside would break).
pub fn reset_signals_for_exec() -> Result<()> {
    use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .context("cannot reset the signal mask")?;
    // SAFETY: restoring the default disposition installs no handler.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.context("cannot reset SIGPIPE")?;
    Ok(())
}

/// Runs `f` in a forked worker, which exits with what it returns; the
/// worker's PID, for the caller to reap.
///
/// # Safety
/// As for [`fork`]: `f` runs in the child.
pub unsafe fn worker(f: impl FnOnce() -> i32) -> io::Result<Pid> {
    // SAFETY: the caller's contract.
    match unsafe { fork() }? {
        ForkResult::Child => sys::exit_now(f()),
        ForkResult::Parent { child } => Ok(child),
    }
}

/// Runs `f` in a daemon: a grandchild in a session of its own, which init
/// (or the nearest subreaper) reaps, so it outlives the launcher without
/// being its zombie. Returns once the middle process is reaped; the daemon
/// exits with what `f` returns.
///
/// # Safety
/// As for [`fork`]: `f` runs in the grandchild.
pub unsafe fn daemon(f: impl FnOnce() -> i32) -> io::Result<()> {
    // SAFETY: the caller's contract.
    unsafe { daemon_begin(f) }?.reap();
    Ok(())
}

/// The middle process of a daemon, which exits as soon as it has forked
/// the daemon: reaped when the caller has time for it (or when dropped).
pub struct Middle(Option<Pid>);

impl Middle {
    pub fn reap(self) {
        drop(self);
    }
}

impl Drop for Middle {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

/// [`daemon`], without waiting for the middle process: the caller goes on
/// while it runs.
///
/// # Safety
/// As for [`fork`]: `f` runs in the grandchild.
pub unsafe fn daemon_begin(f: impl FnOnce() -> i32) -> io::Result<Middle> {
    // SAFETY: the caller's contract; the middle process only makes a
    // session and forks again.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => Ok(Middle(Some(child))),
        ForkResult::Child => {
            let _ = nix::unistd::setsid();
            // SAFETY: as above; the grandchild never returns.
            if let Ok(ForkResult::Child) = unsafe { fork_with(0) } {
                sys::exit_now(f());
            }
            sys::exit_now(0)
        }
    }
}

#[cfg(test)]
mod tests;
