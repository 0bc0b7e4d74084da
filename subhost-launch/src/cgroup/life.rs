//! A subhost's cgroups as they exist: found again, joined, measured,
//! emptied by killing everything in them, and removed.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::host::{Ctrl, Hierarchy, Host};
use super::parents::{parents_record, Parents};
use super::plan::{check_name, check_parent, KillVia, Plan};

/// What is in use now; `None` when the kernel does not account it here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory_current: Option<u64>,
    pub pids_current: Option<u64>,
}

/// A subhost's cgroups as they exist.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub(super) dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each dir, ready for `join_self_except` after a fork.
    pub(super) procs: Vec<CString>,
    pub(super) kill: KillVia,
    pub(super) memory_usage: Option<PathBuf>,
    pub(super) pids_usage: Option<PathBuf>,
}

pub(super) fn write_file(file: &Path, value: &str) -> io::Result<()> {
    fs::write(file, value)
}

pub(super) fn errno_of(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

/// The PIDs in DIR/cgroup.procs; none when DIR is gone. ENODEV: it was
/// removed while being read.
pub(super) fn procs_in(dir: &Path) -> Result<Vec<i32>> {
    let file = dir.join("cgroup.procs");
    match crate::procfs::read(&file) {
        Ok(text) => Ok(text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound || errno_of(&e) == Errno::ENODEV => {
            Ok(Vec::new())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

/// The PIDs in DIR and in every sub-cgroup of it (those a subhost whose
/// cgroup is delegated makes inside).
pub(super) fn procs_below(dir: &Path) -> Result<Vec<i32>> {
    let mut all = procs_in(dir)?;
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(all);
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            all.extend(procs_below(&entry.path())?);
        }
    }
    Ok(all)
}

/// The subhost NAME's cgroups, when any exist (for stop, status, enter).
/// `parent` is CGROUP_PARENT, as for `plan`.
pub fn open(name: &str, parent: Option<&str>) -> Option<Cgroup> {
    let host = Host::probe().ok()?;
    open_on(&host, name, parent)
}

pub(super) fn open_on(host: &Host, name: &str, parent: Option<&str>) -> Option<Cgroup> {
    check_name(name).ok()?;
    let parent = parent.map(check_parent).transpose().ok()?;
    let dirs: Vec<PathBuf> = host
        .mounts
        .iter()
        .filter_map(|m| host.dir_in(m, name, parent.as_deref()).ok())
        .collect();
    existing(host, &dirs)
}

/// The cgroups in `dirs` that still exist, e.g. as recorded from
/// `Cgroup::dirs` at start: `open` computes the default parent from the
/// caller's own cgroup, which differs when `stop` runs from another session.
/// Directories that are not on a cgroup mount are ignored.
pub fn open_dirs(dirs: &[PathBuf]) -> Option<Cgroup> {
    existing(&Host::probe().ok()?, dirs)
}

pub(super) fn existing(host: &Host, candidates: &[PathBuf]) -> Option<Cgroup> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for d in candidates {
        let on_mount = host
            .mounts
            .iter()
            .any(|m| d.starts_with(&m.point) && d != &m.point);
        if on_mount && d.is_dir() && !dirs.contains(d) {
            dirs.push(d.clone());
        }
    }
    if dirs.is_empty() {
        return None;
    }
    let on = |m: Option<&Hierarchy>| {
        m.and_then(|m| dirs.iter().find(|d| d.starts_with(&m.point)))
            .cloned()
    };
    let kill = match (on(host.v2_mount()), on(host.v1_mount(Ctrl::Freezer))) {
        (Some(d), _) if d.join("cgroup.kill").exists() => KillVia::CgroupKill(d),
        (_, Some(d)) => KillVia::V1Freezer(d),
        (Some(d), None) if d.join("cgroup.freeze").exists() => KillVia::V2Freeze(d),
        _ => KillVia::Signals,
    };
    let find = |files: &[&str]| {
        dirs.iter()
            .flat_map(|d| files.iter().map(move |f| d.join(f)))
            .find(|f| f.exists())
    };
    let memory_usage = find(&["memory.current", "memory.usage_in_bytes"]);
    let pids_usage = find(&["pids.current"]);
    Some(Cgroup::new(dirs, kill, memory_usage, pids_usage))
}

/// Freezing, for kernels without `cgroup.kill`.
struct Freezer<'a> {
    file: PathBuf,
    frozen: &'a str,
    thawed: &'a str,
    v2: bool,
}

impl Freezer<'_> {
    fn set(&self, frozen: bool) -> Result<()> {
        let v = if frozen { self.frozen } else { self.thawed };
        write_file(&self.file, v)
            .with_context(|| format!("cannot write {v} to {}", self.file.display()))
    }

    fn is_frozen(&self) -> bool {
        let dir = self.file.parent().unwrap_or(Path::new("/"));
        if self.v2 {
            fs::read_to_string(dir.join("cgroup.events"))
                .map(|t| t.lines().any(|l| l == "frozen 1"))
                .unwrap_or(false)
        } else {
            fs::read_to_string(&self.file)
                .map(|t| t.trim() == "FROZEN")
                .unwrap_or(false)
        }
    }
}

/// Thaws on drop, so no error path leaves a subhost frozen.
struct Thaw<'a, 'b>(&'a Freezer<'b>);

impl Drop for Thaw<'_, '_> {
    fn drop(&mut self) {
        let _ = self.0.set(false);
    }
}

impl Cgroup {
    pub(super) fn new(
        dirs: Vec<PathBuf>,
        kill: KillVia,
        memory_usage: Option<PathBuf>,
        pids_usage: Option<PathBuf>,
    ) -> Cgroup {
        let procs = dirs
            .iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok())
            .collect();
        Cgroup {
            dirs,
            procs,
            kill,
            memory_usage,
            pids_usage,
        }
    }

    pub(super) fn from_plan(plan: &Plan) -> Cgroup {
        Cgroup::new(
            plan.dirs.clone(),
            plan.kill.clone(),
            plan.memory_usage.clone(),
            plan.pids_usage.clone(),
        )
    }

    /// Every directory, e.g. to record where the subhost's cgroups are.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The cgroup v2 directory, if the subhost has one: a child can be
    /// cloned straight into it (CLONE_INTO_CGROUP), which spares the write
    /// to `cgroup.procs` and the migration it costs (an RCU grace period,
    /// ~15 ms here).
    pub fn v2_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| {
                nix::sys::statfs::statfs(d.as_path())
                    .map(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
                    .unwrap_or(false)
            })
            .map(PathBuf::as_path)
    }

    /// Moves the calling process into every one of the cgroups but `skip`
    /// (one the process was cloned into already). Allocates nothing unless
    /// it fails, so a child may call it right after fork.
    pub fn join_self_except(&self, skip: Option<&Path>) -> io::Result<()> {
        for (dir, file) in self.dirs.iter().zip(&self.procs) {
            if Some(dir.as_path()) == skip {
                continue;
            }
            // SAFETY: file is a NUL-terminated path that outlives the call;
            // the fd is closed below on every path.
            let fd = unsafe { libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(join_error(file));
            }
            // SAFETY: writes one byte from a static buffer to the fd opened above.
            let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            let err = (n != 1).then(|| join_error(file));
            // SAFETY: fd was opened above and is not used after this.
            unsafe { libc::close(fd) };
            if let Some(err) = err {
                return Err(err);
            }
        }
        Ok(())
    }

    /// The PIDs in any of the cgroups or their sub-cgroups.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let mut all = Vec::new();
        for d in &self.dirs {
            for p in procs_below(d)? {
                if !all.contains(&p) {
                    all.push(p);
                }
            }
        }
        Ok(all)
    }

    /// Kills every process in the cgroups, including those that left the
    /// subhost's session or ignore SIGTERM, and waits until they are gone.
    pub fn kill_all(&self, timeout: Duration) -> Result<()> {
        let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        crate::logging::step(
            format_args!("kill every process in {}", dirs.join(" ")),
            || self.kill_all_now(timeout),
        )
    }

    fn kill_all_now(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        // At the end of a session the cgroup is empty already: its init's
        // exit took every process of its PID namespace along.
        if self.pids()?.is_empty() {
            return Ok(());
        }
        match &self.kill {
            KillVia::CgroupKill(d) => {
                let file = d.join("cgroup.kill");
                match write_file(&file, "1") {
                    Err(e) if e.kind() == io::ErrorKind::NotFound && !d.exists() => {}
                    r => r.with_context(|| format!("cannot write 1 to {}", file.display()))?,
                }
            }
            KillVia::V1Freezer(d) => self.freeze_and_kill(
                &Freezer {
                    file: d.join("freezer.state"),
                    frozen: "FROZEN",
                    thawed: "THAWED",
                    v2: false,
                },
                deadline,
            )?,
            KillVia::V2Freeze(d) => self.freeze_and_kill(
                &Freezer {
                    file: d.join("cgroup.freeze"),
                    frozen: "1",
                    thawed: "0",
                    v2: true,
                },
                deadline,
            )?,
            KillVia::Signals => {}
        }
        self.wait_empty(deadline)
    }

    fn freeze_and_kill(&self, f: &Freezer<'_>, deadline: Instant) -> Result<()> {
        let Some(dir) = f.file.parent() else {
            return Ok(());
        };
        while !procs_in(dir)?.is_empty() {
            if !dir.exists() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "processes {:?} of cgroup {} survived SIGKILL",
                    procs_in(dir)?,
                    dir.display()
                );
            }
            f.set(true)?;
            let thaw = Thaw(f);
            // A task in uninterruptible sleep can hold off FROZEN; kill what
            // is there anyway and go round again.
            let freeze_by = (Instant::now() + Duration::from_secs(1)).min(deadline);
            while !f.is_frozen() && Instant::now() < freeze_by {
                std::thread::sleep(Duration::from_millis(5));
            }
            kill_each(&procs_in(dir)?);
            drop(thaw);
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Waits until no cgroup lists a process; SIGKILLs stragglers on the way
    /// (only reachable when something moved processes between hierarchies).
    fn wait_empty(&self, deadline: Instant) -> Result<()> {
        loop {
            let left = self.pids()?;
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "processes {left:?} are still in cgroups {:?} after SIGKILL",
                    self.dirs
                );
            }
            if matches!(self.kill, KillVia::Signals) {
                kill_each(&left);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes every directory; removing removed ones is not an error.
    /// Then the PARENT directories the launcher made, when no other subhost
    /// is left in them (see the module docs).
    pub fn remove(&self) -> Result<()> {
        for d in self.dirs.iter().rev() {
            remove_below(d)?;
            crate::logging::step(format_args!("rmdir {}", d.display()), || {
                remove_dir_retrying(d)
            })?;
        }
        if !parents_record().exists() {
            return Ok(());
        }
        Parents::lock()?.remove_empty_above(&self.dirs)
    }

    /// How many processes the kernel killed for hitting the memory limit:
    /// `oom_kill` of `memory.events` (v2) or of `memory.oom_control` (v1).
    /// `None` without a memory controller.
    pub fn oom_kills(&self) -> Option<u64> {
        let dir = self.memory_usage.as_ref()?.parent()?;
        ["memory.events", "memory.oom_control"]
            .iter()
            .find_map(|f| fs::read_to_string(dir.join(f)).ok())
            .and_then(|t| oom_kill_count(&t))
    }

    /// Memory and pids in use, where limits made the kernel account them.
    pub fn usage(&self) -> Usage {
        let read = |f: &Option<PathBuf>| {
            f.as_ref()
                .and_then(|f| fs::read_to_string(f).ok())
                .and_then(|t| t.trim().parse().ok())
        };
        Usage {
            memory_current: read(&self.memory_usage),
            pids_current: read(&self.pids_usage),
        }
    }
}

/// The `oom_kill N` line of `memory.events` or `memory.oom_control`.
pub(super) fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

pub(super) fn kill_each(pids: &[i32]) {
    for &p in pids {
        // ESRCH: it is gone already, which is the point.
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
}

pub(super) fn join_error(file: &CString) -> io::Error {
    let err = io::Error::last_os_error();
    io::Error::new(
        err.kind(),
        format!("cannot join cgroup {}: {err}", file.to_string_lossy()),
    )
}

/// Removes the sub-cgroups of `d`, deepest first: those a subhost whose
/// cgroup is delegated to it (USERNS) made inside.
pub(super) fn remove_below(d: &Path) -> Result<()> {
    let entries = match fs::read_dir(d) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read cgroup {}", d.display())),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let sub = entry.path();
            remove_below(&sub)?;
            remove_dir_retrying(&sub)?;
        }
    }
    Ok(())
}

/// Dying processes leave their cgroups a moment after SIGKILL; until then
/// rmdir says EBUSY.
pub(super) fn remove_dir_retrying(d: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if errno_of(&e) == Errno::EBUSY && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                let pids = procs_in(d).unwrap_or_default();
                return Err(e).with_context(|| {
                    format!(
                        "cannot remove cgroup {} (processes in it: {pids:?}; sub-cgroups \
                         in it must be removed first)",
                        d.display()
                    )
                });
            }
        }
    }
}

/// Frozen cgroups, thawed on drop (see `Cgroup::freeze`).
pub struct Frozen {
    freezer: Freezer<'static>,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = self.freezer.set(false) {
            log::warn!("cannot thaw: {e:#}");
        }
    }
}

impl Cgroup {
    /// Freezes every process of the subhost (cgroup.freeze on cgroup v2,
    /// else the v1 freezer) and waits until the kernel says so, for a copy
    /// of its files that nothing changes meanwhile. Thawed when the result
    /// is dropped, on every path.
    pub fn freeze(&self, wait: Duration) -> Result<Frozen> {
        let freezer = if let Some(d) = self.dirs.iter().find(|d| d.join("cgroup.freeze").exists()) {
            Freezer {
                file: d.join("cgroup.freeze"),
                frozen: "1",
                thawed: "0",
                v2: true,
            }
        } else if let Some(d) = self.dirs.iter().find(|d| d.join("freezer.state").exists()) {
            Freezer {
                file: d.join("freezer.state"),
                frozen: "FROZEN",
                thawed: "THAWED",
                v2: false,
            }
        } else {
            bail!(
                "no freezer for cgroups {:?} (neither cgroup.freeze nor freezer.state): stop the \
                 subhost, or let it hibernate, to copy its files",
                self.dirs
            );
        };
        freezer.set(true)?;
        let frozen = Frozen { freezer };
        let deadline = Instant::now() + wait;
        while !frozen.freezer.is_frozen() {
            if Instant::now() >= deadline {
                bail!(
                    "{} did not freeze within {} ms (a process in uninterruptible sleep?); it \
                     was thawed again",
                    frozen.freezer.file.display(),
                    wait.as_millis()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(frozen)
    }
}
