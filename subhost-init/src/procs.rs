//! Signalling "everyone": the whole PID namespace as PID 1, otherwise our
//! subtree as found in /proc.

use alloc::vec::Vec;
use core::ffi::CStr;

use crate::logger::debug;
use crate::sys::{self, Errno, Pid};

pub fn signal_all(signals: &[i32], pid1: bool) {
    // Every descendant hangs below a child of ours. With no child the
    // loop's next reap finds none and the init exits at once: as PID 1 its
    // exit has the kernel SIGKILL what is left of the namespace (processes
    // entered from outside, which are no children of ours) anyway. kill(-1)
    // walks every process of the host to find those of the namespace.
    if !sys::has_children() {
        return;
    }
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
                debug!("kill {pid}: {}", Errno(e));
            }
        }
    }
}

/// Every process below `root`. Orphans of the subtree are reparented to us
/// (we are its subreaper), so parent links are enough to find them.
fn descendants(root: Pid) -> Vec<Pid> {
    let links: Vec<(Pid, Pid)> = proc_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut found = alloc::vec![root];
    let mut i = 0;
    while let Some(&parent) = found.get(i) {
        found.extend(links.iter().filter(|l| l.1 == parent).map(|l| l.0));
        i += 1;
    }
    found.retain(|&p| p != root);
    found
}

fn proc_pids() -> Vec<Pid> {
    let mut pids = Vec::new();
    // SAFETY: the path is NUL-terminated; a null result is handled.
    let dir = unsafe { libc::opendir(c"/proc".as_ptr()) };
    if dir.is_null() {
        return pids;
    }
    loop {
        // SAFETY: dir is an open DIR stream, used by this thread only.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: a non-null dirent from readdir holds a NUL-terminated
        // name, valid until the next readdir on this stream.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        if let Some(pid) = parse_pid(name.to_bytes()) {
            pids.push(pid);
        }
    }
    // SAFETY: dir is open and closed exactly once.
    unsafe { libc::closedir(dir) };
    pids
}

fn parse_pid(digits: &[u8]) -> Option<Pid> {
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits.iter().try_fold(0, |n: Pid, &d| {
        d.is_ascii_digit().then(|| n * 10 + Pid::from(d - b'0'))
    })
}

/// The ppid field of /proc/PID/stat, which follows the last ')' (the
/// command name may itself contain parentheses and spaces).
fn parent_of(pid: Pid) -> Option<Pid> {
    let mut path = [0u8; 32];
    let mut w = Cursor {
        buf: &mut path,
        len: 0,
    };
    let _ = core::fmt::write(&mut w, format_args!("/proc/{pid}/stat\0"));
    let path = CStr::from_bytes_until_nul(&path).ok()?;
    let mut buf = [0u8; 256];
    let stat = sys::read_file(path, &mut buf)?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat
        .get(close + 1..)?
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    parse_pid(fields.nth(1)?)
}

struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_parent() {
        let me = sys::getpid();
        // SAFETY: getppid cannot fail.
        let parent = unsafe { libc::getppid() };
        assert_eq!(parent_of(me), Some(parent));
        assert!(proc_pids().contains(&me));
        assert_eq!(parse_pid(b"12x"), None);
        assert_eq!(parse_pid(b"self"), None);
    }
}
