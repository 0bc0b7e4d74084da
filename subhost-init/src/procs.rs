//! Signalling "everyone": the whole PID namespace as PID 1, otherwise our
//! subtree as found in /proc.

use log::debug;

use crate::sys::{self, Pid};

pub fn signal_all(signals: &[i32], pid1: bool) {
    if pid1 {
        // kill(-1) from PID 1 reaches every other process of the namespace.
        for &sig in signals {
            let _ = sys::kill(-1, sig);
        }
        return;
    }
    for pid in descendants(sys::getpid()) {
        for &sig in signals {
            if let Err(e) = sys::kill(pid, sig) {
                debug!("kill {pid}: {}", sys::describe(e));
            }
        }
    }
}

/// Every process below `root`. Orphans of the subtree are reparented to us
/// (we are its subreaper), so parent links are enough to find them.
fn descendants(root: Pid) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let links: Vec<(Pid, Pid)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<Pid>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while let Some(&parent) = found.get(i) {
        found.extend(links.iter().filter(|l| l.1 == parent).map(|l| l.0));
        i += 1;
    }
    found.retain(|&p| p != root);
    found
}

/// The ppid field of /proc/PID/stat, which follows the last ')' (the
/// command name may itself contain parentheses and spaces).
fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}
