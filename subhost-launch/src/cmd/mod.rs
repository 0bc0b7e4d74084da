//! One module per command of the CLI, each an entry point only; the
//! machinery they share lives in the modules named for what it owns
//! (config, layout, mounts, netns, sandbox, join, detached, state,
//! supervisor, tty, userns).

pub mod create;
pub mod enter;
pub mod list;
pub mod start;
pub mod stop;
