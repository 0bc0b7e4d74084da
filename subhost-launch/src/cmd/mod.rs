//! One module per command of the CLI, each an entry point only; the
//! machinery they share lives in the modules named for what it owns
//! (config, mounts, netns, sandbox, join — a process joining a running
//! subhost —, detached — the boot scripts and console of detached
//! subhosts —, status — what state a subhost is in —, procfs, userns, …).

pub mod create;
pub mod enter;
pub mod list;
pub mod start;
pub mod stop;
