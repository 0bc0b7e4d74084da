//! What the launcher tells its caller: a line per subhost on stdout when a
//! step of it is done, a line on stderr per failure.
//!
//! Neither ever stops the work: a `start` or `stop` piped into `head` (or
//! run by a service manager that closed its pipe) must still finish what it
//! set out to do for every subhost, so a write that fails is dropped, never
//! a panic. Commands that only print get the default SIGPIPE instead (see
//! `main`), and end quietly as `ls` does.

use std::io::Write;

/// One line on stdout.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// One error line on stderr, in the form every command uses.
pub fn fail(e: &anyhow::Error) {
    let _ = writeln!(std::io::stderr(), "subhost-launch: error: {e:#}");
}
