//! `enter`: run a shell or COMMAND inside a running subhost (see `join` for
//! how a process becomes one of the subhost's own).

use std::path::Path;

use anyhow::{bail, Result};

use crate::layout::Layout;
use crate::{join, state, status};

pub fn enter(base: &Path, name: &str, command: Vec<String>, dry_run: bool) -> Result<i32> {
    let layout = Layout::new(base, name)?;
    if !layout.dir.is_dir() {
        bail!(
            "no subhost {name}: {} is not a directory",
            layout.dir.display()
        );
    }
    if let state::Owner::Other(other) = state::owner(name, &layout.dir)? {
        return Err(state::in_use(name, &other, "enter"));
    }
    let Some(init) = state::running_init(name) else {
        return Err(not_running(&layout));
    };
    let session = join::Session::choose(&layout, base, command)?;
    let target = join::Target::open(name, init)?;
    let pty = join::PtyUse::for_std_streams();
    if dry_run {
        join::print_plan(&target, &session, pty);
        return Ok(0);
    }
    join::run(name, target, session, pty)
}

/// Why there is nothing to enter, and how to change that.
fn not_running(layout: &Layout) -> anyhow::Error {
    let name = &layout.name;
    let status::Kept { mounted, netns } = status::kept(layout);
    if mounted || netns {
        let kept = match (mounted, netns) {
            (true, true) => "its root is mounted and its netns exists",
            (true, false) => "its root is mounted",
            _ => "its netns exists",
        };
        anyhow::anyhow!(
            "subhost {name} is hibernating ({kept}, but no init runs in it): \
             start it with `subhost-launch start {name}`, then enter it from another terminal"
        )
    } else {
        anyhow::anyhow!(
            "subhost {name} is stopped: start it with `subhost-launch start {name}`, \
             then enter it from another terminal"
        )
    }
}
