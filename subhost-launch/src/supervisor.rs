//! The launcher's side of a running session: relay between the caller's
//! terminal and the session's pty, forward signals to init, and wait for it.
//!
//! (Interface fixed; bodies are being written.)

use std::os::fd::OwnedFd;

use nix::sys::signal::SigSet;
use nix::unistd::Pid;

/// Signals the launcher handles synchronously while a session runs. Blocked
/// before the sandbox is forked so none is lost; the child unblocks them.
pub fn signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        nix::sys::signal::Signal::SIGCHLD,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGQUIT,
        nix::sys::signal::Signal::SIGWINCH,
    ] {
        s.add(sig);
    }
    s
}

/// Runs until `init` exits; returns its status as a shell would (code, or
/// 128+N). With `master`, the caller's stdin is a terminal: it is put in raw
/// mode (restored on every exit path), its size is copied to the pty at start
/// and on SIGWINCH, and bytes are relayed both ways. SIGTERM/SIGINT/SIGHUP/
/// SIGQUIT to the launcher are forwarded to init.
pub fn supervise(init: Pid, master: Option<OwnedFd>) -> anyhow::Result<i32> {
    let _ = (init, master);
    anyhow::bail!("supervisor::supervise: not yet implemented")
}
