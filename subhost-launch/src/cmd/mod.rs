//! One module per command of the CLI, each an entry point only: its
//! arguments parsed, its plan or its outcome printed. The work is done by
//! the modules named for what they own: `launch` (a start), `shutdown` (a
//! stop), `join` (a process joining a running subhost), `provision` (a new
//! subhost on disk), `status` (what state a subhost is in), and below them
//! config, mounts, netns, cgroup, sandbox, state, run, userns, ….

pub mod base;
pub mod create;
pub mod diff;
pub mod enter;
pub mod forward;
pub mod list;
pub mod logs;
pub mod start;
pub mod stats;
pub mod stop;
