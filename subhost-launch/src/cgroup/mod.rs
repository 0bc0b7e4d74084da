//! A cgroup per subhost: resource limits (memory, CPU, pids) and a way to
//! kill everything a subhost runs, even processes that left its session.
//!
//! Where it goes: `PARENT/NAME` in every hierarchy used, where PARENT is
//! `CGROUP_PARENT` or else the launcher's own cgroup in that hierarchy
//! followed by `/subhost` (so `/subhost` when the launcher sits in a
//! hierarchy's root). A subhost's cgroup is therefore never a hierarchy's
//! root, and subhosts do not mix with the launcher's siblings. PARENT
//! directories are made when missing and recorded as the launcher's
//! (`/run/subhost/cgroup-parents`) before they are made; when the last
//! subhost under one goes, it is removed again (by `stop` too when a start
//! killed midway made it but no leaf in it). One made by someone else is never removed. The
//! record's lock is held from making a parent until the leaf is in it, and
//! while removing one: a parent is never removed between a `start` making
//! (or finding) it and making its leaf in it.
//!
//! Layouts, detected from /proc/self/mountinfo and /proc/self/cgroup:
//! - pure cgroup v2: one directory; the controllers a limit needs are
//!   switched on in `cgroup.subtree_control` from the hierarchy's root down
//!   to PARENT (only where missing). cgroup v2 allows controllers only below
//!   cgroups without processes (the root excepted), so with limits the
//!   default parent works when the launcher runs in the root cgroup or in
//!   one that already hands the controllers down; otherwise CGROUP_PARENT
//!   must name a cgroup outside the launcher's (e.g. `/subhost`), and
//!   `create` says so. Without limits no controller is needed.
//! - hybrid (v1 controllers, cgroup2 without them): the v2 directory holds
//!   every process (membership and `cgroup.kill`), plus one directory in
//!   each v1 hierarchy a limit needs (memory, pids, cpu), plus the v1
//!   freezer when cgroup v2 has no `cgroup.kill` (kernels before 5.14).
//!
//! Swap: MEMORY_MAX bounds memory plus swap. On v1 `memory.memsw.limit_in_bytes`
//! is set to the same value (RAM + swap <= MEMORY_MAX); on v2
//! `memory.swap.max` is set to 0. Either is skipped when the kernel has no
//! swap accounting, and then swap is not bounded.

//!
//! Rooms: `host` reads what this host offers (its hierarchies, the
//! launcher's own cgroup); `plan` turns that and the limits into a
//! printable plan; `create` carries a plan out; `life` is a subhost's
//! cgroup as it exists (joining, usage, killing, removal); `parents` keeps
//! the record of the parents the launcher made; `recorded` checks the
//! `.cgroup` record a start wrote; `kept` is a hibernating subhost's
//! cgroup, kept empty between sessions and brought up to its config by
//! the next start; `devices` is the device policy (a BPF
//! program on the cgroup v2 directory, a v1 `devices` directory only
//! where there is no cgroup2).

mod create;
pub mod devices;
mod host;
mod kept;
mod life;
mod parents;
mod plan;
mod recorded;
#[cfg(test)]
mod tests;

#[cfg(test)]
pub use create::create;
pub use host::dirs_of;
pub use kept::{keep_empty, make};
pub use life::{open, open_dirs, Cgroup, Usage};
pub use parents::remove_empty_parents;
pub use plan::{delegation, plan, Delegation, Limits, Plan};
pub use recorded::{recorded, Recorded};
