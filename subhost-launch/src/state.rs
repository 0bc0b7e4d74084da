//! What the host knows about a subhost between commands: a lock that keeps
//! two `start`/`stop` of one NAME apart, and a record of its init that is
//! believed only after the kernel confirms it.
//!
//! Both live under `/run/subhost`, which a reboot clears along with the
//! mounts and namespaces they describe.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::netns;

/// Host-wide: NAME is host-wide already through its netns.
pub const RUN_DIR: &str = "/run/subhost";

fn lock_path(name: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(format!("{name}.lock"))
}

fn init_path(name: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(format!("{name}.init"))
}

/// Exclusive hold on one subhost's setup and teardown. Released on drop.
pub struct Lock {
    _file: Flock<File>,
    /// This lock made the lock file: a failed `start` removes it again.
    created: bool,
    /// Set by `removed_unless_kept`: the name whose lock file a drop
    /// removes (if this lock made it).
    remove_on_drop: Option<String>,
}

/// How often a waiting `lock` tries again: short against the few
/// milliseconds a start takes, long enough to cost nothing.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Takes the lock of `name`, waiting up to `wait` for another `start` or
/// `stop` of it to finish: a stop queued behind a start (a boot script
/// and an operator, a shutdown during boot) then does its job instead of
/// failing. A holder that died released the lock with its last fd, so
/// only a live one is waited for.
pub fn lock(name: &str, wait: std::time::Duration) -> Result<Lock> {
    take(name, wait, true)?.context("the lock file was not made")
}

/// `lock` of a subhost that is set up: `None` when its lock file is gone,
/// as a `stop` leaves it; never makes one.
pub fn lock_if_set_up(name: &str, wait: std::time::Duration) -> Result<Option<Lock>> {
    take(name, wait, false)
}

fn take(name: &str, wait: std::time::Duration, make: bool) -> Result<Option<Lock>> {
    std::fs::create_dir_all(RUN_DIR).with_context(|| format!("cannot create {RUN_DIR}"))?;
    let path = lock_path(name);
    let deadline = std::time::Instant::now() + wait;
    let mut waited = false;
    loop {
        let (file, created) = match open_lock_file(&path, make) {
            Ok(f) => f,
            Err(e) if !make && e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot open lock file {}", path.display()))
            }
        };
        let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                if std::time::Instant::now() >= deadline {
                    bail!(
                        "subhost {name} is busy: another start or stop of it is still in \
                         progress after {:.1}s (lock {} is held); try again when it has finished",
                        wait.as_secs_f64(),
                        path.display()
                    );
                }
                if !waited {
                    log::info!("{name}: another start or stop is in progress; waiting for it");
                    waited = true;
                }
                std::thread::sleep(LOCK_POLL);
                continue;
            }
            Err((_, e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        };
        // `unlock_and_forget` may have unlinked the file between our open and
        // our flock; a lock on an unlinked inode guards nothing, so retry.
        let held = locked.metadata()?.ino();
        match std::fs::metadata(&path) {
            Ok(m) if m.ino() == held => {
                return Ok(Some(Lock {
                    _file: locked,
                    created,
                    remove_on_drop: None,
                }))
            }
            _ => continue,
        }
    }
}

/// Waits up to `wait` while a `start` or `stop` of `name` holds its lock;
/// returns at once when none does. For readers: a start holds the lock
/// from before it forks the init until its record is written, so once the
/// lock is free, a running init has its record. Never creates the lock
/// file, and holds it only for the instant of each look.
pub fn wait_unlocked(name: &str, wait: std::time::Duration) {
    use std::os::unix::fs::OpenOptionsExt;
    let path = lock_path(name);
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    else {
        return;
    };
    let deadline = std::time::Instant::now() + wait;
    let mut file = file;
    let mut waited = false;
    loop {
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_) => return,
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                if std::time::Instant::now() >= deadline {
                    return;
                }
                if !waited {
                    log::info!("{name}: a start or stop is in progress; waiting for it");
                    waited = true;
                }
                file = f;
                std::thread::sleep(LOCK_POLL);
            }
            Err(_) => return,
        }
    }
}

/// Opens the lock file, saying whether this call made it (only when
/// `make`). Never blocks (a FIFO put in its place would) and never follows
/// a symlink.
fn open_lock_file(path: &std::path::Path, make: bool) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |create_new: bool| {
        OpenOptions::new()
            .write(true)
            .create_new(create_new)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    loop {
        if make {
            match open(true) {
                Ok(f) => return Ok((f, true)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        match open(false) {
            Ok(f) => return Ok((f, false)),
            // Unlinked by its holder between the two opens.
            Err(e) if make && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

impl Lock {
    /// Removes the lock file while still holding it, for `stop`: a stopped
    /// subhost leaves nothing under the run dir.
    pub fn unlock_and_forget(self, name: &str) {
        let _ = std::fs::remove_file(lock_path(name));
    }

    /// For `start`: until `keep`, dropping the lock (on an error) removes
    /// the lock file if this lock made it, still holding it, so that a
    /// failed start leaves nothing. A waiter that opened the file
    /// meanwhile sees it unlinked and retries.
    pub fn removed_unless_kept(mut self, name: &str) -> Lock {
        self.remove_on_drop = Some(name.to_string());
        self
    }

    /// Releases the lock and keeps its file: the start succeeded.
    pub fn keep(mut self) {
        self.remove_on_drop = None;
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let (true, Some(name)) = (self.created, &self.remove_on_drop) {
            let _ = std::fs::remove_file(lock_path(name));
        }
    }
}

pub fn cgroup_path(name: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(format!("{name}.cgroup"))
}

/// Records where the cgroup of `name` is: the default place depends on the
/// caller's own cgroup, so a later `stop` from elsewhere could not find it.
pub fn record_cgroup(name: &str, dirs: &[PathBuf]) -> Result<()> {
    let path = cgroup_path(name);
    let mut text = String::new();
    for d in dirs {
        let d = d
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("cgroup path {} is not UTF-8", d.display()))?;
        text.push_str(d);
        text.push('\n');
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The cgroup directories recorded for `name`, if any.
pub fn recorded_cgroup(name: &str) -> Option<Vec<PathBuf>> {
    let text = crate::files::read_text(&cgroup_path(name), crate::files::RECORD_MAX).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .collect(),
    )
}

pub fn clear_cgroup(name: &str) {
    let _ = std::fs::remove_file(cgroup_path(name));
}

/// Identity of a process that survives PID reuse: its PID plus its start
/// time in clock ticks since boot (field 22 of `/proc/PID/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

impl ProcId {
    /// A live process; a zombie is gone (ESRCH).
    pub fn of(pid: i32) -> io::Result<ProcId> {
        Ok(ProcId {
            pid,
            start: start_time(pid)?,
        })
    }

    /// Our own child, even if it has already exited: unreaped, its PID
    /// cannot be recycled, and a session as short as `true` is gone before
    /// its record is written.
    pub fn of_child(pid: i32) -> io::Result<ProcId> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let (_, _, start) =
            parse_stat(&stat).ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))?;
        Ok(ProcId { pid, start })
    }
}

/// Field 22 of `/proc/PID/stat`; the command name in field 2 may contain
/// spaces and parentheses, so fields are counted after the last `)`.
/// A zombie (state Z, or X while being reaped) has exited: it holds no
/// namespace and runs nothing, and on a host whose PID 1 never reaps it
/// stays that way, so it counts as gone (ESRCH) like a reaped process.
/// So does a process already on its way out (PF_EXITING): it has dropped
/// its namespaces, and an init may stay that way for a while, until every
/// process of its PID namespace is gone.
fn start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (state, flags, start) =
        parse_stat(&stat).ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))?;
    if state == "Z" || state == "X" || flags & PF_EXITING != 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(start)
}

/// The kernel's "getting shut down" task flag (include/linux/sched.h).
const PF_EXITING: u64 = 0x4;

/// (state, flags, start time) from the text of `/proc/PID/stat`.
fn parse_stat(stat: &str) -> Option<(&str, u64, u64)> {
    let mut after = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = after.next()?;
    let flags = after.nth(5)?.parse().ok()?;
    let start = after.nth(12)?.parse().ok()?;
    Some((state, flags, start))
}

/// Records that `init` is the init of `name`.
pub fn record_init(name: &str, init: ProcId) -> Result<()> {
    let path = init_path(name);
    let tmp = path.with_extension("init.tmp");
    let mut f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    writeln!(f, "{} {}", init.pid, init.start)?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Forgets the init record of `name`, but only if it still names `init`
/// (a newer `start` may have replaced it).
pub fn clear_init(name: &str, init: Option<ProcId>) {
    let path = init_path(name);
    if let Some(want) = init {
        if read_record(name) != Some(want) {
            return;
        }
    }
    let _ = std::fs::remove_file(path);
}

/// The init record of `name` as written, unverified: for reporting a stale
/// one. Anything that acts on an init uses `running_init`.
pub fn init_record(name: &str) -> Option<ProcId> {
    read_record(name)
}

/// How long `id` has been running: now since boot (`/proc/uptime`) minus its
/// start since boot, both on the boot clock, so no wall-clock step skews it.
pub fn uptime(id: ProcId) -> Option<std::time::Duration> {
    // SAFETY: sysconf only reads a constant of the C library.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    let now: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let started = id.start as f64 / hz as f64;
    std::time::Duration::try_from_secs_f64((now - started).max(0.0)).ok()
}

fn read_record(name: &str) -> Option<ProcId> {
    let text = crate::files::read_text(&init_path(name), crate::files::RECORD_MAX).ok()?;
    let mut it = text.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    let start = it.next()?.parse().ok()?;
    Some(ProcId { pid, start })
}

/// The running init of `name`, if the record names a live process that the
/// kernel confirms is it: same start time (not a recycled PID), PID 1 of its
/// own PID namespace, and a member of the subhost's network namespace.
pub fn running_init(name: &str) -> Option<ProcId> {
    let rec = read_record(name)?;
    if is_init_of(name, rec) {
        Some(rec)
    } else {
        None
    }
}

fn is_init_of(name: &str, rec: ProcId) -> bool {
    if start_time(rec.pid).ok() != Some(rec.start) {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", rec.pid)) else {
        return false;
    };
    let pid1_inside = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        == Some("1");
    if !pid1_inside {
        return false;
    }
    let Ok(ns) = std::fs::metadata(netns::path(name)) else {
        return false;
    };
    std::fs::metadata(format!("/proc/{}/ns/net", rec.pid))
        .map(|m| m.ino() == ns.ino() && m.dev() == ns.dev())
        .unwrap_or(false)
}

/// A pidfd: signals sent through it cannot hit a recycled PID, and it
/// polls readable when the process exits, child of ours or not.
pub struct PidFd(std::os::fd::OwnedFd);

/// For `setns(pidfd, ...)`: entering a process's namespaces through its
/// pidfd cannot pick up a recycled PID's.
impl std::os::fd::AsFd for PidFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl PidFd {
    pub fn open(pid: i32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this fd; nobody else owns it.
        Ok(PidFd(unsafe {
            std::os::fd::FromRawFd::from_raw_fd(fd as i32)
        }))
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) -> io::Result<()> {
        // SAFETY: a valid pidfd, a valid signal number, no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig as i32,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // Already gone: that is what the caller wanted.
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit; true if it did.
    pub fn wait_exit(&self, timeout: std::time::Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(n) if n > 0 => return true,
                Ok(_) => return false,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_paren() {
        let line = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 1";
        assert_eq!(parse_stat(line), Some(("S", 4194560, 98765)));
        let zombie = line.replace(") S ", ") Z ");
        assert_eq!(parse_stat(&zombie), Some(("Z", 4194560, 98765)));
        let exiting = line.replace(" 4194560 ", " 4194564 ");
        assert_eq!(parse_stat(&exiting).unwrap().1 & PF_EXITING, PF_EXITING);
        assert_eq!(parse_stat("42 (x) S 1"), None);
    }

    /// A child that has exited and is not reaped yet is gone, as after a
    /// SIGKILLed launcher on a host whose PID 1 does not reap.
    #[test]
    fn a_zombie_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            if parse_stat(&stat).unwrap().0 == "Z" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let err = start_time(pid).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
        assert!(ProcId::of(pid).is_err());
        child.wait().unwrap();
    }

    #[test]
    fn start_time_of_self() {
        let me = std::process::id() as i32;
        let a = start_time(me).unwrap();
        assert_eq!(a, start_time(me).unwrap());
        assert!(start_time(i32::MAX).is_err());
    }

    #[test]
    fn uptime_of_self_is_small_and_grows() {
        let me = ProcId::of(std::process::id() as i32).unwrap();
        let a = uptime(me).unwrap();
        assert!(a < std::time::Duration::from_secs(3600), "{a:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(uptime(me).unwrap() > a);
    }

    #[test]
    fn a_failed_start_removes_only_a_lock_file_it_made() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root for {RUN_DIR}: run cargo test as root"
        );
        let name = format!("shtlk{}", std::process::id() % 100_000);
        let path = lock_path(&name);
        let _ = std::fs::remove_file(&path);
        // Made by this lock and dropped on an error path: gone.
        drop(
            lock(&name, std::time::Duration::ZERO)
                .unwrap()
                .removed_unless_kept(&name),
        );
        assert!(!path.exists());
        // Kept on success: stays, and a second holder is refused meanwhile.
        let held = lock(&name, std::time::Duration::ZERO)
            .unwrap()
            .removed_unless_kept(&name);
        assert!(lock(&name, std::time::Duration::ZERO).is_err());
        held.keep();
        assert!(path.exists());
        // Not made by this lock (a hibernating subhost's): stays.
        drop(
            lock(&name, std::time::Duration::ZERO)
                .unwrap()
                .removed_unless_kept(&name),
        );
        assert!(path.exists());
        lock(&name, std::time::Duration::ZERO)
            .unwrap()
            .unlock_and_forget(&name);
        assert!(!path.exists());
    }

    /// For a foreground session that ends after a `stop`: the subhost is
    /// stopped, and no lock file may come back.
    #[test]
    fn lock_if_set_up_never_makes_a_lock_file() {
        assert!(nix::unistd::geteuid().is_root(), "needs root for {RUN_DIR}");
        let name = format!("shtlks{}", std::process::id() % 100_000);
        let path = lock_path(&name);
        let _ = std::fs::remove_file(&path);
        let wait = std::time::Duration::ZERO;
        assert!(lock_if_set_up(&name, wait).unwrap().is_none());
        assert!(!path.exists());
        let held = lock(&name, wait).unwrap();
        assert!(lock_if_set_up(&name, wait).is_err(), "held: busy");
        held.unlock_and_forget(&name);
        assert!(lock_if_set_up(&name, wait).unwrap().is_none());
        lock(&name, wait).unwrap().keep();
        lock_if_set_up(&name, wait)
            .unwrap()
            .expect("set up: locked")
            .unlock_and_forget(&name);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_record_is_not_believed() {
        // Our own PID is alive but is not PID 1 of a namespace, nor in the
        // subhost's netns: the record must not be taken for an init.
        let me = ProcId::of(std::process::id() as i32).unwrap();
        assert!(!is_init_of("shtnosuch", me));
        let recycled = ProcId {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(!is_init_of("shtnosuch", recycled));
    }
}
