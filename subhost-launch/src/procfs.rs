//! What the kernel shows of a process in `/proc/PID/status` and
//! `/proc/PID/stat`: one parser for the launcher, so that the state of a
//! subhost, a joining process and the records read the same fields the
//! same way.

use std::io;

/// The text of `/proc/PID/status`.
pub fn status(pid: i32) -> io::Result<String> {
    read(std::path::Path::new(&format!("/proc/{pid}/status")))
}

/// The text of a kernel file. Files of /proc and /sys claim a size of 0,
/// so `read_to_string` would start with a small buffer, take several reads
/// for a page of text and ask for the size and position first; a page of
/// stack takes one `read` (and one more to see the end). A heap buffer of
/// a page would be mapped and unmapped each time by musl's allocator.
/// `stats` of 200 subhosts reads thousands of these.
pub fn read(path: &std::path::Path) -> io::Result<String> {
    String::from_utf8(read_bytes(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// As `read`, for text that need not be UTF-8 (mountinfo shows paths as
/// they are).
pub fn read_bytes(path: &std::path::Path) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        match f.read(&mut buf[len..]) {
            Ok(0) => return Ok(buf[..len].to_vec()),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Longer than a page (/proc/net/dev with many cables, the mount table
    // of many subhosts): the rest too.
    let mut rest = buf.to_vec();
    f.read_to_end(&mut rest)?;
    Ok(rest)
}

/// The value of the `KEY:` line of a `/proc/PID/status` text, trimmed.
pub fn field<'s>(status: &'s str, key: &str) -> Option<&'s str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// The `CapBnd` mask: the capability bounding set.
pub fn capbnd(status: &str) -> Option<u64> {
    u64::from_str_radix(field(status, "CapBnd")?, 16).ok()
}

/// Whether the process runs under a seccomp filter (or strict mode):
/// `Seccomp` is not 0.
pub fn seccomp(status: &str) -> Option<bool> {
    Some(field(status, "Seccomp")? != "0")
}

/// `NSpid`: the PID in our namespace, then in each nested one down to the
/// process's own.
pub fn nspid(status: &str) -> Vec<i32> {
    field(status, "NSpid")
        .map(|l| {
            l.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `NSpid` of `pid`; empty when it cannot be read (the process is gone).
pub fn nspid_of(pid: i32) -> Vec<i32> {
    status(pid).map(|s| nspid(&s)).unwrap_or_default()
}

/// The fields of `/proc/PID/stat` the launcher reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat<'s> {
    /// Field 3: R, S, D, Z, X, …
    pub state: &'s str,
    /// Field 9: the kernel's task flags (PF_…).
    pub flags: u64,
    /// Field 22: the start time in clock ticks since boot.
    pub start: u64,
}

/// The kernel's "getting shut down" task flag (include/linux/sched.h).
pub const PF_EXITING: u64 = 0x4;

impl Stat<'_> {
    /// A zombie (state Z, or X while being reaped), or a process already
    /// on its way out (PF_EXITING): it has dropped its namespaces and runs
    /// nothing more.
    pub fn exited(&self) -> bool {
        self.state == "Z" || self.state == "X" || self.flags & PF_EXITING != 0
    }
}

/// The text of `/proc/PID/stat`.
pub fn stat_text(pid: i32) -> io::Result<String> {
    read(std::path::Path::new(&format!("/proc/{pid}/stat")))
}

/// The fields of a `/proc/PID/stat` text; the command name in field 2 may
/// contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(stat: &str) -> Option<Stat<'_>> {
    let mut after = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = after.next()?;
    let flags = after.nth(5)?.parse().ok()?;
    let start = after.nth(12)?.parse().ok()?;
    Some(Stat {
        state,
        flags,
        start,
    })
}

/// `parse_stat`, as an error when the text is not what the kernel writes.
pub fn parse_stat_io(stat: &str) -> io::Result<Stat<'_>> {
    parse_stat(stat).ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))
}

#[cfg(test)]
mod tests;
