//! A hibernating subhost's cgroup: kept between sessions, empty, with its
//! limits and device program in place, so that a warm start makes none
//! (no mkdir of the leaf or its parents, no program loaded). The next
//! start brings it up to the config as it is then:
//! - limits: what its policy record says was written is compared with the
//!   plan; a changed or removed limit is first reset to the kernel's
//!   default, then the plan's values are written;
//! - devices: the rule list of the attached program is compared with the
//!   plan's, and the program is checked to be still the only one there; a
//!   new one replaces it in one step;
//! - a cgroup somewhere else (CGROUP_PARENT changed, or the launcher's own
//!   cgroup) is removed, with the parents the launcher made for it, and
//!   one is made where the plan says.
//!
//! Anything unexpected (no policy record, a sub-cgroup handing down
//! controllers, a write refused) makes the cgroup again, as a cold start
//! does. Only where there is cgroup2: on a host without it the cgroup goes
//! at the end of each session, as before.
//!
//! The policy record (`/run/subhost/NAME.cgroup-policy`) is removed before
//! the cgroup changes and written after: a start killed in between leaves
//! no record, and the next start makes the cgroup again.

use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::create::{create, enable_controller, wait_drained, write_limit, LEAF_DRAIN};
use super::life::{remove_below, Cgroup};
use super::plan::{Plan, Write};
use crate::state;

/// What a kept cgroup enforces, as its policy record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Policy {
    /// CGROUP_PARENT as configured when the cgroup was made.
    pub parent: Option<String>,
    pub writes: Vec<Write>,
    /// The device program's directory and rules, or the inherited device
    /// cgroup; `None` without a device policy.
    pub devices: Option<String>,
}

impl Policy {
    pub fn of(parent: Option<&str>, plan: &Plan) -> Policy {
        let devices = match (&plan.device_program, &plan.devices_inherited) {
            (Some(p), _) => {
                let rules: Vec<String> = p.rules.iter().map(ToString::to_string).collect();
                Some(format!(
                    "program\t{}\t{}",
                    p.dir.display(),
                    rules.join(", ")
                ))
            }
            (None, Some(d)) => Some(format!("inherited\t{}", d.display())),
            (None, None) => None,
        };
        Policy {
            parent: parent.map(str::to_string),
            writes: plan.writes.clone(),
            devices,
        }
    }

    /// `None` for a record this launcher did not write: the cgroup is made
    /// again then.
    pub fn parse(text: &str) -> Option<Policy> {
        let mut parent = None;
        let mut writes = Vec::new();
        let mut devices = None;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (key, rest) = line.split_once('\t').unwrap_or((line, ""));
            match key {
                "parent" if parent.is_none() => {
                    parent = Some((!rest.is_empty()).then(|| rest.to_string()))
                }
                "write" => {
                    let mut f = rest.splitn(3, '\t');
                    let if_present = match f.next()? {
                        "1" => true,
                        "0" => false,
                        _ => return None,
                    };
                    writes.push(Write {
                        file: PathBuf::from(f.next()?),
                        value: f.next()?.to_string(),
                        if_present,
                    });
                }
                "devices" if devices.is_none() => devices = Some(rest.to_string()),
                _ => return None,
            }
        }
        Some(Policy {
            parent: parent?,
            writes,
            devices,
        })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "parent\t{}", self.parent.as_deref().unwrap_or(""))?;
        for w in &self.writes {
            writeln!(
                f,
                "write\t{}\t{}\t{}",
                u8::from(w.if_present),
                w.file.display(),
                w.value
            )?;
        }
        if let Some(d) = &self.devices {
            writeln!(f, "devices\t{d}")?;
        }
        Ok(())
    }
}

/// The CGROUP_PARENT the kept cgroup of NAME was made under, when its
/// policy record says (for checking its `.cgroup` record).
pub(super) fn recorded_parent(name: &str) -> Option<Option<String>> {
    Some(Policy::parse(&state::recorded_cgroup_policy(name)?)?.parent)
}

/// The subhost's cgroup for a session: the one it kept, brought up to
/// `plan`, or else a new one (recorded before it is made, so that a
/// launcher killed in between leaves a cgroup the next `stop` finds).
/// `parent` is CGROUP_PARENT, as for `plan`.
pub fn make(name: &str, parent: Option<&str>, plan: &Plan) -> Result<Cgroup> {
    let want = Policy::of(parent, plan);
    match state::recorded_cgroup(name) {
        Some(dirs) if dirs == plan.dirs => {
            if let Some(cg) = reuse(name, plan, &want)? {
                return Ok(cg);
            }
        }
        Some(dirs) => remove_elsewhere(name, parent, &dirs)?,
        None => {}
    }
    state::clear_cgroup_policy(name);
    state::record_cgroup(name, &plan.dirs)?;
    let cg = match create(plan) {
        Ok(cg) => cg,
        Err(e) => {
            state::clear_cgroup(name);
            return Err(e);
        }
    };
    if plan.v2_dir.is_some() {
        // Without it the cgroup is not kept: no harm but the time.
        if let Err(e) = state::record_cgroup_policy(name, &want.to_string()) {
            log::warn!("subhost {name}: {e:#}; its cgroup goes when the session ends");
        }
    }
    Ok(cg)
}

/// The kept cgroup in `plan.dirs`, brought up to `want`; `None` when it is
/// to be made again.
fn reuse(name: &str, plan: &Plan, want: &Policy) -> Result<Option<Cgroup>> {
    let Some(had) = state::recorded_cgroup_policy(name).and_then(|t| Policy::parse(&t)) else {
        return Ok(None);
    };
    if plan.v2_dir.is_none() || !plan.dirs.iter().all(|d| d.is_dir()) {
        return Ok(None);
    }
    wait_empty(plan)?;
    for d in &plan.dirs {
        remove_below(d)?;
    }
    if plan.v2_dir.as_deref().is_some_and(|d| !plain_leaf(d)) {
        return Ok(None);
    }
    for e in &plan.enable {
        enable_controller(e)?;
    }
    let same_writes = had.writes == want.writes;
    let same_program = had.devices == want.devices
        && match &plan.device_program {
            Some(p) => super::devices::attached_alone(&p.dir)?,
            None => true,
        };
    if same_writes && same_program {
        if had.parent != want.parent {
            state::record_cgroup_policy(name, &want.to_string())?;
        }
        log::info!(
            "subhost {name}: reusing its cgroup {}",
            plan.dirs[0].display()
        );
        return Ok(Some(Cgroup::from_plan(plan)));
    }
    state::clear_cgroup_policy(name);
    if !same_writes {
        let Some(resets) = resets(&had.writes, &want.writes) else {
            return Ok(None);
        };
        let changed = want.writes.iter().filter(|w| !had.writes.contains(w));
        for w in resets.iter().chain(changed) {
            if let Err(e) = write_limit(w) {
                log::info!("{e:#}: making the cgroup again");
                return Ok(None);
            }
        }
    }
    if !same_program {
        match (&plan.device_program, &had.devices) {
            (Some(p), Some(_)) => {
                if let Err(e) = crate::logging::step(p, || super::devices::attach(p)) {
                    log::info!("{e:#}: making the cgroup again");
                    return Ok(None);
                }
            }
            // A program to add or take away: made again, as new.
            _ => return Ok(None),
        }
    }
    state::record_cgroup_policy(name, &want.to_string())?;
    log::info!(
        "subhost {name}: reusing its cgroup {}, its policy updated",
        plan.dirs[0].display()
    );
    Ok(Some(Cgroup::from_plan(plan)))
}

/// The kernel's default of each limit `had` wrote that `want` changes or
/// drops, in the reverse order of writing, which is the order that keeps
/// v1's pairs valid (the memory+swap limit raised before the memory
/// limit, the CPU quota lifted before its period changes). `None` for a
/// file whose default is not known here.
pub(super) fn resets(had: &[Write], want: &[Write]) -> Option<Vec<Write>> {
    let mut out = Vec::new();
    for w in had.iter().rev().filter(|w| !want.contains(w)) {
        let name = w.file.file_name()?.to_str()?;
        let value = match name {
            "memory.max" | "memory.swap.max" | "pids.max" => "max",
            "cpu.max" => "max 100000",
            "memory.limit_in_bytes" | "memory.memsw.limit_in_bytes" | "cpu.cfs_quota_us" => "-1",
            "cpu.cfs_period_us" => "100000",
            _ => return None,
        };
        out.push(Write {
            file: w.file.clone(),
            value: value.to_string(),
            if_present: w.if_present,
        });
    }
    Some(out)
}

/// What root of a USERNS subhost may have left in its delegated cgroup v2
/// directory: controllers handed down to sub-cgroups (processes could not
/// be cloned into it then), or its OOM grouping turned on.
fn plain_leaf(dir: &std::path::Path) -> bool {
    let read = |f: &str| fs::read_to_string(dir.join(f)).ok();
    let handed_down = read("cgroup.subtree_control").is_none_or(|t| !t.trim().is_empty());
    let grouped = read("memory.oom.group").is_some_and(|t| t.trim() != "0");
    !handed_down && !grouped
}

/// The processes of a session that has just ended are still dying (its
/// init gone, the kernel SIGKILLs them) when the next start comes.
fn wait_empty(plan: &Plan) -> Result<()> {
    let deadline = Instant::now() + LEAF_DRAIN;
    plan.dirs.iter().try_for_each(|d| wait_drained(d, deadline))
}

/// The kept cgroup of NAME is not where the plan puts it now: it goes,
/// with whatever is left in it and the parents the launcher made for it.
/// A record naming a cgroup the launcher could not have made for NAME is
/// refused, and what it names left alone.
fn remove_elsewhere(name: &str, parent: Option<&str>, dirs: &[PathBuf]) -> Result<()> {
    if !dirs.iter().any(|d| d.exists()) {
        super::remove_empty_parents(name, parent, dirs)?;
        state::clear_cgroup(name);
        return Ok(());
    }
    let rec = super::recorded(name, parent);
    if !rec.problems.is_empty() {
        bail!("{}", rec.problems.join("\n"));
    }
    if let Some(cg) = super::open_dirs(&rec.dirs) {
        cg.kill_all(Duration::from_secs(5))
            .and_then(|()| cg.remove())
            .with_context(|| format!("cannot remove the cgroup {name} had kept"))?;
    }
    state::clear_cgroup(name);
    Ok(())
}

/// At the end of a session: the sub-cgroups a delegated subhost made go,
/// and the cgroup, empty, stays for the next start. `false` when it is to
/// be killed and removed instead: no cgroup2, no record of what it
/// enforces, or processes left in it (outside the subhost's PID namespace,
/// which took everything else along with its init). A cgroup that
/// `cgroup.kill` has been used on is no place for the next session: the
/// kernel (6.18 here) SIGKILLs every process cloned into it from then on.
pub fn keep_empty(name: &str, cg: &Cgroup) -> bool {
    let recorded = state::recorded_cgroup(name).as_deref() == Some(cg.dirs())
        && state::recorded_cgroup_policy(name).is_some();
    if !recorded || cg.v2_dir().is_none() {
        return false;
    }
    match cg.pids() {
        Ok(left) if left.is_empty() => {}
        Ok(left) => {
            log::info!("processes {left:?} are left in the cgroup of {name}: it goes with them");
            return false;
        }
        Err(e) => {
            log::warn!("cgroup of {name}: {e:#}");
            return false;
        }
    }
    let emptied = cg.dirs().iter().try_for_each(|d| remove_below(d));
    match emptied {
        Ok(()) => {
            log::info!("subhost {name} hibernates: its empty cgroup stays");
            true
        }
        Err(e) => {
            log::warn!("cgroup of {name}: {e:#}");
            false
        }
    }
}
