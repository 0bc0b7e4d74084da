//! Carrying out a plan: the parents, the controllers handed down, the
//! leaves and the limits, all or nothing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;

use super::life::{errno_of, procs_below, remove_below, remove_dir_retrying, write_file, Cgroup};
use super::parents::Parents;
use super::plan::{Enable, Plan, Write};

/// Makes the subhost's cgroups and writes its limits; all or nothing. A
/// leaf left by a crash is reused when it holds no processes (it is made
/// anew, so no old setting survives); one with processes is an error.
pub fn create(plan: &Plan) -> Result<Cgroup> {
    let parents = Parents::lock()?;
    // Recorded before they are made, as the leaf is: a launcher killed in
    // between leaves parents that are known as the launcher's, for the
    // next `stop` to remove.
    let missing = missing_parents(plan);
    parents.add(&missing)?;
    let mut made = Vec::new();
    let mut made_parents = Vec::new();
    let res = create_steps(plan, &mut made, &mut made_parents);
    if let Err(e) = res {
        for d in made.iter().rev().chain(made_parents.iter().rev()) {
            let _ = fs::remove_dir(d);
        }
        // Forgets those gone again, and any that another made meanwhile.
        let _ = parents.forget(&missing);
        return Err(e);
    }
    let others: Vec<PathBuf> = missing
        .into_iter()
        .filter(|d| !made_parents.contains(d))
        .collect();
    parents.forget(&others)?;
    Ok(Cgroup::from_plan(plan))
}

/// The parent directories of `plan`'s cgroups that do not exist, top-down.
pub(super) fn missing_parents(plan: &Plan) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in &plan.dirs {
        let Some(p) = d.parent() else { continue };
        let mut missing: Vec<PathBuf> = p
            .ancestors()
            .take_while(|a| !a.is_dir())
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        for m in missing {
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    out
}

pub(super) fn create_steps(
    plan: &Plan,
    made: &mut Vec<PathBuf>,
    made_parents: &mut Vec<PathBuf>,
) -> Result<()> {
    for d in &plan.dirs {
        if let Some(p) = d.parent() {
            if !p.is_dir() {
                crate::logging::step(format_args!("mkdir -p {}", p.display()), || {
                    make_parents(p, made_parents)
                })?;
            }
        }
    }
    for e in &plan.enable {
        enable_controller(e)?;
    }
    for d in &plan.dirs {
        if d.exists() {
            reuse_leaf(d)?;
        }
        crate::logging::step(format_args!("mkdir {}", d.display()), || fs::create_dir(d))
            .with_context(|| format!("cannot create cgroup {}", d.display()))?;
        made.push(d.clone());
    }
    for w in &plan.writes {
        write_limit(w)?;
    }
    if let Some(p) = &plan.device_program {
        crate::logging::step(p, || super::devices::attach(p))?;
    }
    Ok(())
}

/// Writes one of a plan's limits (one that is only `if_present` is
/// skipped when the kernel lacks its file).
pub(super) fn write_limit(w: &Write) -> Result<()> {
    if w.if_present && !w.file.exists() {
        return Ok(());
    }
    crate::logging::step(
        format_args!("echo {} > {}", w.value, w.file.display()),
        || write_file(&w.file, &w.value),
    )
    .with_context(|| format!("cannot write {} to {}", w.value, w.file.display()))
}

/// `mkdir -p dir`, noting in `made` (top-down) each directory this call
/// made: those, and only those, are removed when they fall empty.
pub(super) fn make_parents(dir: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
    let mut missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.is_dir()).collect();
    missing.reverse();
    for d in missing {
        match fs::create_dir(d) {
            Ok(()) => made.push(d.to_path_buf()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create cgroup {}", d.display()))
            }
        }
    }
    Ok(())
}

/// How long a leftover leaf may take to empty: the processes of a session
/// that has just ended are still dying (its init gone, they are SIGKILLed
/// by the kernel) when the next `start` finds the leaf.
pub(super) const LEAF_DRAIN: Duration = Duration::from_secs(2);

pub(super) fn reuse_leaf(d: &Path) -> Result<()> {
    wait_drained(d, Instant::now() + LEAF_DRAIN)?;
    remove_below(d)
        .and_then(|()| remove_dir_retrying(d))
        .with_context(|| format!("cgroup {} was left by an earlier run", d.display()))
}

/// Waits until no process is left in `d` or below (up to `deadline`):
/// those of a session that has just ended are still dying.
pub(super) fn wait_drained(d: &Path, deadline: Instant) -> Result<()> {
    loop {
        let pids = procs_below(d)?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "cgroup {} already holds processes {pids:?}: is the subhost running? \
                 Stop it first",
                d.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(super) fn enable_controller(e: &Enable) -> Result<()> {
    let ctl = e.dir.join("cgroup.subtree_control");
    let on = fs::read_to_string(&ctl).with_context(|| format!("cannot read {}", ctl.display()))?;
    if on.split_whitespace().any(|c| c == e.controller) {
        return Ok(());
    }
    let avail_file = e.dir.join("cgroup.controllers");
    let avail = fs::read_to_string(&avail_file)
        .with_context(|| format!("cannot read {}", avail_file.display()))?;
    if !avail.split_whitespace().any(|c| c == e.controller) {
        bail!(
            "cgroup v2 controller {} is not available in {}: enable it in the parent's \
             cgroup.subtree_control, or set CGROUP_PARENT to a cgroup that has it",
            e.controller,
            avail_file.display()
        );
    }
    let value = format!("+{}", e.controller);
    let what = format_args!("echo {value} > {}", ctl.display());
    match crate::logging::step(what, || write_file(&ctl, &value)) {
        Ok(()) => Ok(()),
        Err(err) if errno_of(&err) == Errno::EBUSY => bail!(
            "cannot enable cgroup v2 controller {} in {}: that cgroup holds processes, and \
             cgroup v2 allows controllers only below cgroups without processes; set \
             CGROUP_PARENT to a cgroup without processes, e.g. CGROUP_PARENT=/subhost",
            e.controller,
            ctl.display()
        ),
        Err(err) => Err(err).with_context(|| {
            format!(
                "cannot enable cgroup v2 controller {} in {}",
                e.controller,
                ctl.display()
            )
        }),
    }
}
