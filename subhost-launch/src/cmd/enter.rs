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
    let plan = Plan {
        session: join::Session::choose(&layout, base, command)?,
        target: join::RunningInit::open(name, init)?,
        pty: join::PtyUse::for_std_streams(),
    };
    if dry_run {
        plan.print();
        return Ok(0);
    }
    plan.run(name)
}

/// What `enter` does, read from the running init (its namespaces,
/// cgroups, capabilities, filter) and the caller's streams: `--dry-run`
/// prints it, `enter` runs this very value.
struct Plan {
    target: join::RunningInit,
    session: join::Session,
    pty: join::PtyUse,
}

impl Plan {
    fn print(&self) {
        join::print_plan(&self.target, &self.session, self.pty);
    }

    fn run(self, name: &str) -> Result<i32> {
        join::run(name, self.target, self.session, self.pty)
    }
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
