//! `start`: set up (or reuse) a subhost's mounts and network, run its init
//! as PID 1 of new namespaces, and supervise the session.
//! The work is `launch`'s; this file reads the names in and prints the plan.

use std::path::Path;

use anyhow::Result;

use crate::launch::{self, Launching, Mode, Prepared};
use crate::layout::Layout;
use crate::{cgroup, detached, mounts, names, netns, sandbox, state};

/// `start --detach` of several subhosts, begun one after the other in the
/// order given, each on its own: one that fails is undone alone and the
/// rest still start. While one's sandbox sets itself up, the next one's
/// host side is made (the two run on different CPUs), and its outcome
/// line follows once its init runs. Returns 0, or 125 when any could not
/// be started (each such one named).
pub fn start_detached(
    base: &Path,
    names: &[String],
    console: Option<String>,
    dry_run: bool,
) -> i32 {
    let mut status = 0;
    let mut waiting: Option<Launching> = None;
    // What runs already, before any of them is started: one started
    // meanwhile by another command was not.
    let before: Vec<Option<state::ProcId>> = names.iter().map(|n| state::running_init(n)).collect();
    let finish = |l: Launching, status: &mut i32| {
        if let Err(e) = l.finish() {
            crate::outcome::fail(&e);
            *status = 125;
        }
    };
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            continue;
        }
        if dry_run && names.len() > 1 {
            println!("# subhost {name}");
        }
        let mode = Mode::Detached {
            console: console.clone(),
        };
        let next = match launch::prepare(base, name, mode, dry_run) {
            Ok(p) if dry_run => {
                print_plan(&p);
                continue;
            }
            // The previous one still holds its lock until it has finished:
            // a lock taken meanwhile is only taken if free, never waited
            // for, or a `start --detach y x` holding y and waiting for x
            // would wait for this one, holding x and waiting for y.
            Ok(p) => match state::try_lock(name) {
                Ok(Some(lock)) => p.launch(lock, before[i]),
                Ok(None) => {
                    if let Some(prev) = waiting.take() {
                        finish(prev, &mut status);
                    }
                    state::lock(name, p.lock_wait()).and_then(|lock| p.launch(lock, before[i]))
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Some(prev) = waiting.take() {
            finish(prev, &mut status);
        }
        match next {
            Ok(l) => waiting = l,
            Err(e) => {
                crate::outcome::fail(&e);
                status = 125;
            }
        }
    }
    if let Some(last) = waiting {
        finish(last, &mut status);
    }
    // Under a systemd unit of Type=notify: one subhost, its init the
    // unit's main process from here on.
    if let ([name], false, 0) = (names, dry_run, status) {
        if let Some(init) = state::running_init(name) {
            if let Err(e) = crate::notify::send(&crate::notify::message(name, init.pid)) {
                crate::outcome::fail(&e);
                status = 125;
            }
        }
    }
    status
}

pub fn start(base: &Path, name: &str, mode: Mode, dry_run: bool) -> Result<i32> {
    let before = state::running_init(name);
    let prepared = launch::prepare(base, name, mode, dry_run)?;
    if dry_run {
        print_plan(&prepared);
        return Ok(0);
    }
    let lock = state::lock(name, prepared.lock_wait())?;
    match prepared.launch(lock, before)? {
        Some(launching) => launching.finish(),
        None => Ok(0),
    }
}

/// What a start will do, as `--dry-run` prints it.
fn print_plan(p: &Prepared) {
    let name = &p.layout.name;
    let net = match p.userns {
        Some(r) => netns::plan(name, &p.links).owned_by(r.base, r.count),
        None => netns::plan(name, &p.links),
    }
    .addressed(&p.addressing);
    // Woken, it plugs back in what is out of its bridge now.
    let net = match netns::exists(name) {
        true => net.replugging(netns::unplugged(&p.links)),
        false => net,
    };
    print_start_plan(
        &p.layout,
        (&p.mount_steps, &p.names),
        &net,
        &p.cgroup_plan,
        p.delegation.as_ref(),
        &p.inner,
        &p.argv,
    );
    // Kept while the netns is: hibernation keeps them.
    let kept = match netns::exists(name) {
        true => " (netns exists: kept as they are)",
        false => "",
    };
    if !p.publish.is_empty() {
        println!("# published ports: one batch in the host's nftables{kept}");
        println!("{}", p.publish);
    }
    if !p.publish.loopback.is_empty() {
        println!("# the host's loopback: the port forwarder, a process of the host{kept}");
        for fwd in &p.publish.loopback {
            println!("forward {fwd}");
        }
    }
    if let Some(console) = &p.console {
        println!("# detached: a session of its own, no parent-death signal;");
        println!("# stdin /dev/null, stdout and stderr appended to console: {console}");
    }
}

fn print_start_plan(
    layout: &Layout,
    // What is done to the root: mounted, then written at a cold start.
    (mount_steps, names): (&[mounts::Step], &names::Plan),
    net: &netns::Plan<'_>,
    cgroup_plan: &cgroup::Plan,
    delegation: Option<&cgroup::Delegation>,
    inner: &[sandbox::Setup],
    argv: &[std::ffi::CString],
) {
    let name = &layout.name;
    let reuse = |yes: bool| if yes { " (exists: reused)" } else { "" };
    println!("# host mounts{}", reuse(mounts::is_active(layout)));
    for s in mount_steps {
        println!("{s}");
    }
    if !names.is_empty() {
        let skip = if mounts::is_active(layout) {
            " (mounted: left as they are)"
        } else {
            ""
        };
        println!("# names in the root, at a cold start{skip}");
        println!("{names}");
    }
    println!("# network{}", reuse(netns::exists(name)));
    println!("{net}");
    println!("# cgroup");
    println!("{cgroup_plan}");
    if let Some(d) = delegation {
        println!("{d}");
    }
    println!("# sandbox: joins the cgroup and netns {name}, new pid, mount, uts, ipc and cgroup namespaces");
    for s in inner {
        println!("{s}");
    }
    let argv: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    println!("exec {}", detached::shell_words(&argv));
}
