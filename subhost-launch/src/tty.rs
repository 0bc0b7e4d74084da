//! Terminals: the session's own pty (from the subhost's devpts instance), the
//! caller's terminal in raw mode, and passing the pty master out of the
//! sandbox.
//!
//! (Interface fixed; bodies are being written.)

use std::os::fd::{BorrowedFd, OwnedFd};

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
pub fn open_pty(ptmx: &std::path::Path) -> std::io::Result<Pty> {
    let _ = ptmx;
    Err(std::io::Error::other("tty::open_pty: not yet implemented"))
}

/// In the sandbox child: new session, `slave` as controlling terminal and as
/// stdin/stdout/stderr.
pub fn make_controlling(slave: OwnedFd) -> std::io::Result<()> {
    let _ = slave;
    Err(std::io::Error::other(
        "tty::make_controlling: not yet implemented",
    ))
}

/// Sends `fd` over the unix socket `sock` (SCM_RIGHTS).
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let _ = (sock, fd);
    Err(std::io::Error::other("tty::send_fd: not yet implemented"))
}

/// Receives one fd sent with `send_fd`.
pub fn recv_fd(sock: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    let _ = sock;
    Err(std::io::Error::other("tty::recv_fd: not yet implemented"))
}
