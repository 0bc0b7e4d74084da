//! What the host knows about a subhost between commands: a lock that keeps
//! two `start`/`stop` of one NAME apart, a record of the directory whose
//! subhost holds NAME, and a record of its init that is believed only
//! after the kernel confirms it.
//!
//! They live under `/run/subhost`, which a reboot clears along with the
//! mounts and namespaces they describe. NAME is host-wide there (as its
//! netns is), while subhost directories are not: two `$SUBHOST`s may each
//! have an `x`, and only the one recorded in `x.dir` may act on what is
//! set up under that name.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::{netns, procfs, run};

pub use crate::run::RUN_DIR;

fn lock_path(name: &str) -> PathBuf {
    run::of(name).lock()
}

fn init_path(name: &str) -> PathBuf {
    run::of(name).init()
}

fn dir_path(name: &str) -> PathBuf {
    run::of(name).dir()
}

/// One message per record of `name` that exists but is not a regular
/// file (a FIFO, a directory, a symlink…): what it is and how to remove
/// it. Such a record is never opened for what it points at.
pub fn bad_records(name: &str) -> Vec<String> {
    bad_records_among(name, |p| {
        p.symlink_metadata().ok().map(|m| m.file_type().is_file())
    })
}

/// [`bad_records`], with whether each record is a regular file (`None`:
/// absent) told by `is_file`: for a caller that listed the run directory
/// once for many names.
pub fn bad_records_among(
    name: &str,
    is_file: impl Fn(&std::path::Path) -> Option<bool>,
) -> Vec<String> {
    run::of(name)
        .files()
        .into_iter()
        .filter(|p| is_file(p) == Some(false))
        .map(|p| not_a_record(&p))
        .collect()
}

fn not_a_record(path: &std::path::Path) -> String {
    format!(
        "record {} is {}: remove it ({}) and try again",
        path.display(),
        crate::files::describe(path),
        crate::files::removal(path)
    )
}

/// Fails with the first of `bad_records`.
pub fn check_records(name: &str) -> Result<()> {
    match bad_records(name).into_iter().next() {
        Some(e) => bail!("subhost {name}: {e}"),
        None => Ok(()),
    }
}

/// Writes the record `path` whole or not at all: through a temporary file
/// renamed over it, made afresh and never followed, so that a FIFO or a
/// symlink in either place can neither block the write nor redirect it.
/// Anything but a regular file at `path` is refused, not replaced.
pub fn write_record(path: &std::path::Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if path
        .symlink_metadata()
        .is_ok_and(|m| !m.file_type().is_file())
    {
        bail!("{}", not_a_record(path));
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // Only a writer holding the subhost's lock gets here: a file at the
    // temporary name is one a killed writer left.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot remove {} ({})",
                    tmp.display(),
                    crate::files::removal(&tmp)
                )
            })
        }
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let written = f.write_all(text.as_bytes()).and_then(|()| {
        drop(f);
        std::fs::rename(&tmp, path)
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Exclusive hold on one subhost's setup and teardown. Released on drop.
pub struct Lock {
    _file: Flock<File>,
    name: String,
    /// This lock made the lock file: a failed `start` removes it again.
    created: bool,
    /// `claim` wrote the directory record: a failed `start` removes it
    /// again.
    claimed: bool,
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
/// only a live one is waited for. Whoever holds one lock and takes
/// another takes them in name order, or does not wait (`try_lock`):
/// two commands naming the same subhosts in other orders would each hold
/// a lock the other waits for.
pub fn lock(name: &str, wait: std::time::Duration) -> Result<Lock> {
    match take(name, wait, true)? {
        Took::Held(l) => Ok(l),
        Took::Busy => Err(busy(name, wait)),
        Took::Absent => bail!("the lock file {} was not made", lock_path(name).display()),
    }
}

/// The lock of `name` if it is free now; `None` when another holds it.
pub fn try_lock(name: &str) -> Result<Option<Lock>> {
    match take(name, std::time::Duration::ZERO, true)? {
        Took::Held(l) => Ok(Some(l)),
        Took::Busy | Took::Absent => Ok(None),
    }
}

/// `lock` of a subhost that is set up: `None` when its lock file is gone,
/// as a `stop` leaves it; never makes one.
pub fn lock_if_set_up(name: &str, wait: std::time::Duration) -> Result<Option<Lock>> {
    match take(name, wait, false)? {
        Took::Held(l) => Ok(Some(l)),
        Took::Absent => Ok(None),
        Took::Busy => Err(busy(name, wait)),
    }
}

/// What a try for a lock found.
enum Took {
    Held(Lock),
    /// Another holds it (past the wait).
    Busy,
    /// No lock file, and none was to be made.
    Absent,
}

fn busy(name: &str, wait: std::time::Duration) -> anyhow::Error {
    anyhow::anyhow!(
        "subhost {name} is busy: another start or stop of it is still in \
         progress after {:.1}s (lock {} is held); try again when it has finished",
        wait.as_secs_f64(),
        lock_path(name).display()
    )
}

fn take(name: &str, wait: std::time::Duration, make: bool) -> Result<Took> {
    std::fs::create_dir_all(RUN_DIR).with_context(|| format!("cannot create {RUN_DIR}"))?;
    let path = lock_path(name);
    let deadline = std::time::Instant::now() + wait;
    let mut waited = false;
    loop {
        let (file, created) = match open_lock_file(&path, make) {
            Ok(f) => f,
            Err(e) if !make && e.kind() == io::ErrorKind::NotFound => return Ok(Took::Absent),
            Err(e) => return Err(bad_lock(&path, e)),
        };
        let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                if std::time::Instant::now() >= deadline {
                    return Ok(Took::Busy);
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
                return Ok(Took::Held(Lock {
                    _file: locked,
                    name: name.to_string(),
                    created,
                    claimed: false,
                    remove_on_drop: None,
                }))
            }
            _ => continue,
        }
    }
}

/// Why the lock file could not be opened: what is there instead, and the
/// command that removes it.
fn bad_lock(path: &std::path::Path, e: io::Error) -> anyhow::Error {
    match path.symlink_metadata() {
        Ok(m) if !m.file_type().is_file() => anyhow::anyhow!(
            "lock file {} is {}: remove it ({}) and try again",
            path.display(),
            crate::files::describe(path),
            crate::files::removal(path)
        ),
        _ => anyhow::Error::new(e).context(format!("cannot open lock file {}", path.display())),
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
    // A FIFO or directory in its place is no lock anyone holds.
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return;
    }
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
            // A FIFO opens for writing when it has a reader.
            Ok(f) if !f.metadata()?.is_file() => {
                return Err(io::Error::from_raw_os_error(libc::EINVAL))
            }
            Ok(f) => return Ok((f, false)),
            // Unlinked by its holder between the two opens.
            Err(e) if make && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

impl Lock {
    /// Removes the lock file and the directory record while still holding
    /// the lock, for `stop`: a stopped subhost leaves nothing under the run
    /// dir, and its NAME free for any directory.
    pub fn unlock_and_forget(self, name: &str) {
        let _ = std::fs::remove_file(run::of(name).applied());
        let _ = std::fs::remove_file(dir_path(name));
        let _ = std::fs::remove_file(lock_path(name));
    }

    /// Whose the records and netns of this NAME are (see `owner`).
    pub fn owner(&self, dir: &std::path::Path) -> Result<Owner> {
        owner(&self.name, dir)
    }

    /// For `start`, before anything host-wide is made: records that NAME
    /// is the subhost in `dir`'s, or fails when another directory's holds
    /// it. Kept with the lock file (`keep`); a failed start removes what
    /// it recorded.
    pub fn claim(&mut self, dir: &std::path::Path) -> Result<()> {
        match self.owner(dir)? {
            Owner::Ours => Ok(()),
            Owner::Other(other) => Err(in_use(&self.name, &other, "start")),
            Owner::Unrecorded => {
                write_record(&dir_path(&self.name), &identity(dir).to_record())?;
                self.claimed = true;
                Ok(())
            }
        }
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
        if let Some(name) = &self.remove_on_drop {
            if self.claimed {
                let _ = std::fs::remove_file(dir_path(name));
            }
            if self.created {
                let _ = std::fs::remove_file(lock_path(name));
            }
        }
    }
}

/// Whose the records and netns of a NAME are, for the subhost directory
/// that asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The directory record names this directory.
    Ours,
    /// No directory record (none set up, or set up by a launcher that did
    /// not write one): whoever asks may act on it.
    Unrecorded,
    /// Another directory's subhost holds NAME; its directory as recorded.
    Other(PathBuf),
}

/// A directory as the record holds it: its canonical path, and its device
/// and inode, which name it whatever path (a bind mount, a symlink) it is
/// reached by.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DirId {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl DirId {
    fn to_record(&self) -> String {
        let (dev, ino) = self.id.unwrap_or((0, 0));
        format!("{}\n{dev} {ino}\n", self.path.display())
    }

    fn parse(text: &str) -> Option<DirId> {
        let mut lines = text.lines();
        let path = PathBuf::from(lines.next()?);
        let mut id = lines.next()?.split_whitespace().map(str::parse::<u64>);
        let (dev, ino) = (id.next()?.ok()?, id.next()?.ok()?);
        path.is_absolute().then_some(DirId {
            path,
            id: Some((dev, ino)),
        })
    }

    fn same(&self, other: &DirId) -> bool {
        self.path == other.path || (self.id.is_some() && self.id == other.id)
    }
}

/// `dir` as a `DirId`. A directory that is gone (a `stop` cleaning up
/// after it) is still named by its canonical parent and its name.
fn identity(dir: &std::path::Path) -> DirId {
    let path = dir.canonicalize().unwrap_or_else(|_| {
        match (dir.parent().map(|p| p.canonicalize()), dir.file_name()) {
            (Some(Ok(parent)), Some(leaf)) => parent.join(leaf),
            _ => std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
        }
    });
    let id = std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()));
    DirId { path, id }
}

/// Whose NAME is, asked by the subhost in `dir`. A directory record that
/// cannot be read is an error: then no one can tell.
pub fn owner(name: &str, dir: &std::path::Path) -> Result<Owner> {
    owner_of(name, identity(dir))
}

/// [`owner`] for a directory resolved already: its canonical path, and
/// its device and inode when it is a directory.
pub fn owner_resolved(name: &str, path: PathBuf, id: Option<(u64, u64)>) -> Result<Owner> {
    owner_of(name, DirId { path, id })
}

fn owner_of(name: &str, asking: DirId) -> Result<Owner> {
    let path = dir_path(name);
    let text = match crate::files::read_text(&path, crate::files::RECORD_MAX) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Owner::Unrecorded),
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    };
    let Some(recorded) = DirId::parse(&text) else {
        bail!(
            "record {} is not a directory record (a path, then device and inode): \
             remove it ({}) if subhost {name} is not set up, else stop it first",
            path.display(),
            crate::files::removal(&path)
        );
    };
    if asking.same(&recorded) {
        Ok(Owner::Ours)
    } else {
        Ok(Owner::Other(recorded.path))
    }
}

/// The refusal of a command (`start`, `stop`, `enter`) on a NAME that
/// the subhost in `other` holds.
pub fn in_use(name: &str, other: &std::path::Path, verb: &str) -> anyhow::Error {
    let base = other.parent().unwrap_or(other);
    anyhow::anyhow!(
        "cannot {verb} subhost {name}: the name {name} is in use by the subhost in {} \
         (its netns and records under {RUN_DIR} are that one's); \
         use `subhost-launch --subhost-dir {} {verb} {name}` for that one, or give this \
         one another name",
        other.display(),
        base.display()
    )
}

/// The note `list` and `status` give a subhost whose NAME `other`'s holds.
pub fn in_use_note(name: &str, other: &std::path::Path) -> String {
    format!(
        "the name {name} is in use by the subhost in {} (its netns, cables and records \
         are that one's): this one cannot start until that one is stopped or renamed",
        other.display()
    )
}

pub fn cgroup_path(name: &str) -> PathBuf {
    run::of(name).cgroup()
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
    write_record(&path, &text)
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

/// Forgets the cgroup of `name`: where it is, and what it enforces.
pub fn clear_cgroup(name: &str) {
    let _ = std::fs::remove_file(cgroup_path(name));
    clear_cgroup_policy(name);
}

/// The policy record of the kept cgroup of `name` (see `cgroup::kept`).
pub fn recorded_cgroup_policy(name: &str) -> Option<String> {
    crate::files::read_text(&run::of(name).cgroup_policy(), crate::files::RECORD_MAX).ok()
}

pub fn record_cgroup_policy(name: &str, text: &str) -> Result<()> {
    write_record(&run::of(name).cgroup_policy(), text)
}

pub fn clear_cgroup_policy(name: &str) {
    let _ = std::fs::remove_file(run::of(name).cgroup_policy());
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
        let stat = procfs::stat_text(pid)?;
        let start = procfs::parse_stat_io(&stat)?.start;
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
    let stat = procfs::stat_text(pid)?;
    let stat = procfs::parse_stat_io(&stat)?;
    if stat.exited() {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(stat.start)
}

/// Records that `init` is the init of `name`.
pub fn record_init(name: &str, init: ProcId) -> Result<()> {
    write_record(&init_path(name), &format!("{} {}\n", init.pid, init.start))
}

/// Forgets the init record of `name`, and what was applied to that init,
/// but only if it still names `init` (a newer `start` may have replaced
/// it).
pub fn clear_init(name: &str, init: Option<ProcId>) {
    let path = init_path(name);
    if let Some(want) = init {
        if read_record(name) != Some(want) {
            return;
        }
    }
    let _ = std::fs::remove_file(run::of(name).applied());
    let _ = std::fs::remove_file(path);
}

/// What `start` applied to the init it started, recorded beside the init
/// record: `enter` gives an entered process exactly this, and `status`
/// shows it, whatever the config says by now (a name added to
/// SYSCALLS_ALLOW after `start` is not the init's to allow).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    /// The init it was applied to, `[PID, START_TIME]`: a record naming
    /// another init is stale.
    pub init: (i32, u64),
    /// The capabilities kept in the bounding set, as `CAP_…` names.
    pub caps: Vec<String>,
    /// Whether the init runs under the seccomp filter.
    pub seccomp: bool,
    /// The calls the filter lets through beyond the default.
    pub syscalls_allow: Vec<String>,
    /// The user namespace's range, `BASE:COUNT`, with USERNS.
    pub userns: Option<String>,
    /// The cgroup directories it runs in.
    pub cgroups: Vec<PathBuf>,
}

/// Records what was applied to the init of `name`.
pub fn record_applied(name: &str, applied: &Applied) -> Result<()> {
    let mut text = serde_json::to_string_pretty(applied).context("cannot encode the record")?;
    text.push('\n');
    write_record(&run::of(name).applied(), &text)
}

/// What was applied to `init`, the running init of `name`, if `start`
/// recorded it (a launcher from before the record did not).
pub fn applied(name: &str, init: ProcId) -> Option<Applied> {
    let text = crate::files::read_text(&run::of(name).applied(), crate::files::RECORD_MAX).ok()?;
    let a: Applied = serde_json::from_str(&text).ok()?;
    (a.init == (init.pid, init.start)).then_some(a)
}

/// The init record of `name` as written, unverified: for reporting a stale
/// one. Anything that acts on an init uses `running_init`.
pub fn init_record(name: &str) -> Option<ProcId> {
    read_record(name)
}

/// Seconds since boot (`/proc/uptime`), for [`uptime_at`].
pub fn boot_clock() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How long `id` has been running at `now` ([`boot_clock`], read once for
/// many inits): now since boot minus its start since boot, both on the
/// boot clock, so no wall-clock step skews it.
pub fn uptime_at(id: ProcId, now: f64) -> Option<std::time::Duration> {
    // SAFETY: sysconf only reads a constant of the C library.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
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

/// The init of `name` when its record is lost (a cleaner emptied the run
/// dir under it): among `pids` (its cgroup's), the one the kernel shows
/// as PID 1 of its own PID namespace, in netns NAME, whose root is the
/// very directory mounted on `live` (so not another directory's subhost
/// of that NAME).
pub fn find_init(name: &str, pids: &[i32], live: &std::path::Path) -> Option<ProcId> {
    let live = std::fs::metadata(live).ok()?;
    let launcher = std::fs::metadata("/proc/self/exe").ok();
    pids.iter().find_map(|&pid| {
        let id = ProcId::of(pid).ok()?;
        if !is_init_of(name, id) {
            return None;
        }
        // A sandbox whose start was killed before it exec'd the init is
        // still a copy of the launcher, with every signal blocked: it
        // would sit out a graceful stop's whole grace. It is no init, and
        // goes with the cgroup.
        let exe = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
        if launcher
            .as_ref()
            .is_some_and(|l| l.dev() == exe.dev() && l.ino() == exe.ino())
        {
            return None;
        }
        let root = std::fs::metadata(format!("/proc/{pid}/root")).ok()?;
        (root.dev() == live.dev() && root.ino() == live.ino()).then_some(id)
    })
}

fn is_init_of(name: &str, rec: ProcId) -> bool {
    let ns = || {
        std::fs::metadata(netns::path(name))
            .ok()
            .map(|m| (m.dev(), m.ino()))
    };
    init_status(rec, ns).is_some()
}

/// The checks of [`running_init`] on the record `rec`, with the device
/// and inode of the subhost's netns told by `ns` (`None`: there is none),
/// for a caller that has looked at the netns already. Hands back the
/// init's `/proc/PID/status`, read once for its other fields too.
pub fn init_status(rec: ProcId, ns: impl FnOnce() -> Option<(u64, u64)>) -> Option<String> {
    if start_time(rec.pid).ok() != Some(rec.start) {
        return None;
    }
    let status = procfs::status(rec.pid).ok()?;
    if procfs::nspid(&status).last() != Some(&1) {
        return None;
    }
    let ns = ns()?;
    let m = std::fs::metadata(format!("/proc/{}/ns/net", rec.pid)).ok()?;
    (m.ino() == ns.1 && m.dev() == ns.0).then_some(status)
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
        self.signal_number(sig as i32)
    }

    /// `signal` for any number, real-time signals too.
    pub fn signal_number(&self, sig: i32) -> io::Result<()> {
        // SAFETY: a valid pidfd, a signal number (an invalid one is EINVAL),
        // no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
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

    /// A child that has exited and is not reaped yet is gone, as after a
    /// SIGKILLed launcher on a host whose PID 1 does not reap.
    #[test]
    fn a_zombie_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            if procfs::parse_stat(&stat).unwrap().state == "Z" {
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
        let uptime = |id| uptime_at(id, boot_clock().unwrap());
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
    fn a_directory_record_names_one_directory_by_any_path() {
        let d = std::env::temp_dir().join(format!("subhost-state-dir-{}", std::process::id()));
        let (a, b) = (d.join("a/x"), d.join("b/x"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::os::unix::fs::symlink(d.join("a"), d.join("alias")).unwrap();
        let rec = DirId::parse(&identity(&a).to_record()).unwrap();
        assert_eq!(rec, identity(&a));
        assert!(
            identity(&d.join("alias/x")).same(&rec),
            "same dir, other path"
        );
        assert!(!identity(&b).same(&rec), "same NAME, another directory");
        // Gone, it is still named by where it was.
        assert!(identity(&d.join("a/gone")).same(&DirId {
            path: d.canonicalize().unwrap().join("a/gone"),
            id: Some((1, 2)),
        }));
        for bad in ["", "relative\n1 2\n", "/abs\n", "/abs\nx y\n"] {
            assert_eq!(DirId::parse(bad), None, "{bad:?}");
        }
        crate::files::tree::remove_tree_mount_free(&d).unwrap();
    }

    #[test]
    fn a_record_is_never_written_through_a_fifo_or_symlink() {
        let d = std::env::temp_dir().join(format!("subhost-state-rec-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let rec = d.join("r.init");
        write_record(&rec, "1 2\n").unwrap();
        write_record(&rec, "3 4\n").unwrap();
        assert_eq!(std::fs::read_to_string(&rec).unwrap(), "3 4\n");
        // A FIFO left at the temporary name would block a plain create.
        let tmp = d.join("r.init.tmp");
        nix::unistd::mkfifo(&tmp, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        write_record(&rec, "5 6\n").unwrap();
        assert!(!tmp.exists());
        std::fs::remove_file(&rec).unwrap();
        nix::unistd::mkfifo(&rec, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = write_record(&rec, "7 8\n").unwrap_err().to_string();
        assert!(
            e.contains("is a FIFO, not a regular file: remove it (`rm "),
            "{e}"
        );
        std::fs::remove_file(&rec).unwrap();
        let target = d.join("target");
        std::os::unix::fs::symlink(&target, &rec).unwrap();
        let e = write_record(&rec, "7 8\n").unwrap_err().to_string();
        assert!(e.contains("is a symbolic link to"), "{e}");
        assert!(!target.exists());
        crate::files::tree::remove_tree_mount_free(&d).unwrap();
    }

    /// A listing of the run directory tells the kinds: only a record
    /// that is there and no regular file is reported.
    #[test]
    fn bad_records_among_reports_only_what_is_there_and_no_file() {
        let kinds = |p: &std::path::Path| match p.extension()?.to_str()? {
            "init" | "lock" => Some(true),
            "dir" => Some(false),
            _ => None,
        };
        let bad = bad_records_among("shtbr", kinds);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].starts_with(&format!("record {RUN_DIR}/shtbr.dir is ")),
            "{bad:?}"
        );
        assert!(bad_records_among("shtbr", |_| None).is_empty());
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
