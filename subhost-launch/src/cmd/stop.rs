//! `stop`: the names to stop, the `--dry-run` plan or an outcome line per
//! subhost, and the exit status; `shutdown` does the stopping.

use std::path::Path;

use anyhow::{anyhow, Result};

use crate::shutdown::{self, Outcome};
use crate::{outcome, status};

/// Which subhosts `stop` is for.
pub enum Which {
    /// These, in this order (the order of the outcome lines).
    Names(Vec<String>),
    /// Every subhost `list` shows that is not stopped.
    All,
}

/// Stops `which`; prints one outcome line per subhost and returns the exit
/// status: 0 when every one is stopped, 1 when any is not (those are
/// named, the others are stopped all the same).
pub fn stop(base: &Path, which: Which, dry_run: bool) -> Result<i32> {
    let names = match which {
        Which::Names(names) => names,
        Which::All => {
            let names = status::not_stopped(base)?;
            if names.is_empty() {
                outcome::say(&format!(
                    "no subhost in {} is running, hibernating or broken: nothing to stop",
                    base.display()
                ));
                return Ok(0);
            }
            names
        }
    };
    let mut status = 0;
    let mut targets = Vec::new();
    for opened in shutdown::open_all(base, &names) {
        match opened {
            Ok(t) => targets.push(t),
            Err(e) => {
                outcome::fail(&e);
                status = 1;
            }
        }
    }
    if dry_run {
        let several = targets.len() > 1;
        for t in &targets {
            if several {
                println!("# subhost {}", t.name());
            }
            print!("{}", t.plan().text(t.layout()));
        }
        return Ok(status);
    }
    for o in shutdown::run(targets) {
        if !report(o) {
            status = 1;
        }
    }
    Ok(status)
}

/// Prints `o`; true when its subhost is stopped.
fn report(o: Outcome) -> bool {
    let e = match o {
        Outcome::Stopped { name, did: true } => {
            outcome::say(&format!("subhost {name}: stopped"));
            return true;
        }
        Outcome::Stopped { name, did: false } => {
            outcome::say(&format!("subhost {name}: already stopped"));
            return true;
        }
        // Nothing was done: the one failure says why.
        Outcome::Untouched { failed } => anyhow!("{}", joined(&failed)),
        Outcome::Partly { name, failed } => anyhow!(
            "subhost {name} is only partly stopped: {}; fix that and run stop again",
            joined(&failed)
        ),
    };
    outcome::fail(&e);
    false
}

fn joined(failed: &[anyhow::Error]) -> String {
    let what: Vec<String> = failed.iter().map(|e| format!("{e:#}")).collect();
    what.join("; ")
}
