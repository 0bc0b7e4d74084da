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
            Ok(p) if !p.listen().0.is_empty() => {
                if let Some(prev) = waiting.take() {
                    finish(prev, &mut status);
                }
                if let Err(e) =
                    crate::cmd::start::start_asleep(base, p, console.as_deref(), before[i])
                {
                    crate::outcome::fail(&e);
                    status = 125;
                }
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

/// A subhost with LISTEN sockets: its sockets bound on the host (all or
/// none: a port taken is refused before anything is set up), the subhost
/// set up and left asleep, and the sockets handed to the activator, which
/// wakes it at the first connection.
fn start_asleep(
    base: &Path,
    p: Prepared,
    console: Option<&str>,
    before: Option<state::ProcId>,
) -> Result<()> {
    let name = p.layout.name.clone();
    if let Some(a) = crate::activator::status(&name) {
        crate::outcome::say(&format!(
            "subhost {name}: already {} (its sockets held by the activator, pid {})",
            a.state, a.pid
        ));
        return Ok(());
    }
    let (listen, config) = p.listen();
    let listen = listen.to_vec();
    let sockets = crate::activator::sockets::bind_all(&listen, &config)?;
    let unix: Vec<std::path::PathBuf> = listen
        .iter()
        .flat_map(|l| &l.sockets)
        .filter_map(|s| match s {
            crate::activator::sockets::Socket::Unix(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let idle = p.idle();
    let set_up = state::lock(&name, p.lock_wait()).and_then(|lock| p.launch(lock, before));
    if let Err(e) = set_up {
        crate::activator::sockets::remove_unix_files(&unix);
        return Err(e);
    }
    let what: Vec<String> = listen
        .iter()
        .flat_map(|l| &l.sockets)
        .map(|s| s.to_string())
        .collect();
    let held = crate::activator::hold(crate::activator::Hold {
        name: &name,
        base,
        console,
        idle,
        unix: unix.clone(),
        sockets,
    });
    if let Err(e) = held {
        // Nothing half-listening: what this start set up goes again.
        crate::activator::sockets::remove_unix_files(&unix);
        for o in crate::shutdown::run(
            crate::shutdown::open_all(base, std::slice::from_ref(&name))
                .into_iter()
                .flatten()
                .collect(),
        ) {
            drop(o);
        }
        return Err(e.context(format!(
            "subhost {name}: cannot hand its sockets to the activator"
        )));
    }
    crate::outcome::say(&format!(
        "subhost {name}: sleeping until a connection to {}",
        what.join(" ")
    ));
    Ok(())
}

/// The activator's wake of `names` (one): its N sockets are on fds 3...
pub fn start_activated(base: &Path, names: &[String], console: Option<String>, n: usize) -> u8 {
    let ([name], true) = (names, n > 0 && n <= crate::activator::MAX_SOCKETS) else {
        crate::outcome::fail(&anyhow::anyhow!(
            "--activated takes one NAME and 1 to {} sockets",
            crate::activator::MAX_SOCKETS
        ));
        return 125;
    };
    let mut sockets = Vec::with_capacity(n);
    for fd in 3..3 + n as i32 {
        use std::os::unix::fs::FileTypeExt;
        // SAFETY: the activator put the sockets on these fds before exec,
        // and nothing of this process has opened or taken them since.
        let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let file = std::fs::File::from(owned);
        if !file.metadata().is_ok_and(|m| m.file_type().is_socket()) {
            crate::outcome::fail(&anyhow::anyhow!("--activated: fd {fd} is not a socket"));
            std::mem::forget(file);
            return 125;
        }
        let owned = std::os::fd::OwnedFd::from(file);
        let _ = nix::fcntl::fcntl(
            &owned,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        sockets.push(owned);
    }
    let run = || -> Result<i32> {
        let before = state::running_init(name);
        let mut p = launch::prepare(base, name, Mode::Detached { console }, false)?;
        p.sockets = sockets;
        let lock = state::lock(name, p.lock_wait())?;
        match p.launch(lock, before)? {
            Some(launching) => launching.finish(),
            None => Ok(0),
        }
    };
    match run() {
        Ok(_) => 0,
        Err(e) => {
            crate::outcome::fail(&e);
            125
        }
    }
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
        (&net, p.publish.is_empty()),
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
        let (listen, _) = p.listen();
        if !listen.is_empty() {
            println!("# socket activation: the sockets bound on the host first (all or none),");
            println!("# then its host mounts, network and published ports set up as above;");
            println!("# the cgroup and the sandbox (its init) wait for the first connection");
            let plan = crate::activator::Plan {
                name,
                listen,
                idle: p.idle(),
            };
            println!("{plan}");
        }
    }
}

fn print_start_plan(
    layout: &Layout,
    // What is done to the root: mounted, then written at a cold start.
    (mount_steps, names): (&[mounts::Step], &names::Plan),
    // The network, and whether a new netns is cabled while the sandbox sets
    // itself up (without published ports: see `launch`).
    (net, cabled_meanwhile): (&netns::Plan<'_>, bool),
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
    let new_net = !netns::exists(name);
    let later = new_net && cabled_meanwhile;
    match later {
        true => println!(
            "# network: the netns made while the root is mounted, the rest while the \
             sandbox sets itself up in it"
        ),
        false => println!("# network{}", reuse(!new_net)),
    }
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
    if later {
        println!("# waits until the network above is made");
    }
    let argv: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    println!("exec {}", detached::shell_words(&argv));
}
