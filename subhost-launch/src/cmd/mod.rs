//! One module per command of the CLI; the machinery they share lives in the
//! modules named for what it owns (config, layout, mounts, netns, sandbox,
//! state, supervisor, tty).

pub mod create;
pub mod detach;
pub mod enter;
pub mod list;
pub mod start;
pub mod stop;
