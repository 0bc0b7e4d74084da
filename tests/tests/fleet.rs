//! Many subhosts at once and control that survives crashes, on the real
//! kernel: `start --detach` and `stop` of several in one call, `stop --all`,
//! a stop that waits for a busy lock, a launcher SIGKILLed at any moment of
//! a start, and output to a closed pipe.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use subhost_tests::json::parse_json;
use subhost_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

/// Several busybox subhosts under one fresh `$SUBHOST`, each with one cable
/// on a test bridge; all stopped on drop, whatever a failed test left.
struct Fleet {
    tmp: TempDir,
    names: Vec<String>,
    bridge: Bridge,
}

impl Fleet {
    fn new(n: usize, config: &str) -> Fleet {
        require_root();
        let fleet = Fleet {
            tmp: TempDir::new(),
            names: (0..n).map(|_| unique_name("fl")).collect(),
            bridge: Bridge::new(),
        };
        for name in &fleet.names {
            let dir = fleet.base().join(name);
            busybox_root(&dir.join("root"));
            std::fs::write(
                dir.join("config"),
                mode_config(&format!("BRIDGES=({})\n{config}", fleet.bridge.name)),
            )
            .unwrap();
        }
        fleet
    }

    fn base(&self) -> &Path {
        self.tmp.path()
    }

    fn run(&self, args: &[&str]) -> Finished {
        run_timeout(
            Command::new(launch_bin())
                .env("SUBHOST", self.base())
                .args(args),
            LIMIT,
        )
    }

    /// `VERB ARGS... NAMES...`
    fn on_all(&self, args: &[&str]) -> Finished {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(self.names.iter().map(String::as_str));
        self.run(&all)
    }

    /// Each subhost's state, from `list --json`.
    fn states(&self) -> Vec<String> {
        let out = self.run(&["list", "--json"]);
        assert!(out.status.success(), "{}", out.describe());
        let all = parse_json(&out.stdout_str());
        self.names
            .iter()
            .map(|n| {
                let o = all
                    .arr()
                    .iter()
                    .find(|o| o.get("name").str() == n)
                    .unwrap_or_else(|| panic!("{n} not listed: {}", out.stdout_str()));
                o.get("state").str().to_string()
            })
            .collect()
    }

    /// What is left of `name` on the host, as words; empty when nothing.
    fn left_of(&self, name: &str) -> Vec<String> {
        let mut left = Vec::new();
        if Path::new("/run/netns").join(name).exists() {
            left.push(format!("netns {name}"));
        }
        let links = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
            });
        left.extend(links.map(|l| format!("link {l}")));
        let live = self.base().join(name).join("live");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        if mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|p| Path::new(p) == live)
        {
            left.push("live mounted".into());
        }
        for ext in ["lock", "init", "cgroup", "console"] {
            let f = format!("/run/subhost/{name}.{ext}");
            if Path::new(&f).exists() {
                left.push(f);
            }
        }
        left
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let out = self.on_all(&["stop"]);
        if !out.status.success() {
            eprintln!("cleanup: stop failed: {}", out.describe());
        }
        for name in &self.names {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
            for ext in ["lock", "init", "cgroup", "console"] {
                let _ = std::fs::remove_file(format!("/run/subhost/{name}.{ext}"));
            }
        }
    }
}

/// PIDs of live (not zombie) processes whose argv has `word`.
fn running_with(word: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|a| a == word.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn several_start_and_stop_in_one_call_each_with_its_own_line() {
    let fleet = Fleet::new(3, "");
    let out = fleet.on_all(&["start", "--detach"]);
    assert!(out.status.success(), "{}", out.describe());
    for name in &fleet.names {
        assert!(
            out.stdout_str()
                .contains(&format!("subhost {name}: started (init PID")),
            "{}",
            out.describe()
        );
    }
    assert_eq!(fleet.states(), ["running", "running", "running"]);

    // A name with no directory: an error line for it, the others stopped.
    let (a, b, c) = (&fleet.names[0], &fleet.names[1], &fleet.names[2]);
    // A name given twice is stopped once.
    let out = fleet.run(&["stop", a, "shtnosuch", b, a, c]);
    assert_eq!(out.code(), 1, "{}", out.describe());
    let nosuch = fleet.base().join("shtnosuch");
    assert!(
        out.stderr_str().contains(&format!(
            "no subhost shtnosuch: {} is not a directory",
            nosuch.display()
        )),
        "{}",
        out.describe()
    );
    assert_eq!(
        out.stdout_str(),
        format!("subhost {a}: stopped\nsubhost {b}: stopped\nsubhost {c}: stopped\n")
    );
    assert_eq!(fleet.states(), ["stopped", "stopped", "stopped"]);
    for name in &fleet.names {
        assert_eq!(fleet.left_of(name), Vec::<String>::new());
    }

    // Nothing up: --all says so and succeeds; naming them says "already".
    let out = fleet.run(&["stop", "--all"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        out.stdout_str().contains("nothing to stop"),
        "{}",
        out.describe()
    );
    let out = fleet.on_all(&["stop"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.stdout_str().matches("already stopped").count(), 3);
}

#[test]
fn one_failed_start_among_several_is_undone_alone() {
    let fleet = Fleet::new(3, "");
    let (a, b, c) = (&fleet.names[0], &fleet.names[1], &fleet.names[2]);
    // b's cable names a bridge that does not exist: its start fails after
    // its root is mounted, while a's sandbox may still be setting up.
    std::fs::write(
        fleet.base().join(b).join("config"),
        mode_config("BRIDGES=(shtnobridge)\n"),
    )
    .unwrap();
    let out = fleet.on_all(&["start", "--detach"]);
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr_str()
            .contains("bridge shtnobridge does not exist"),
        "{}",
        out.describe()
    );
    for name in [a, c] {
        assert!(
            out.stdout_str()
                .contains(&format!("subhost {name}: started")),
            "{}",
            out.describe()
        );
    }
    assert!(!out.stdout_str().contains(b.as_str()), "{}", out.describe());
    assert_eq!(fleet.states(), ["running", "stopped", "running"]);
    assert_eq!(fleet.left_of(b), Vec::<String>::new());
}

#[test]
fn stop_all_stops_running_and_hibernating_and_leaves_stopped_alone() {
    let fleet = Fleet::new(3, "");
    let (a, b, c) = (&fleet.names[0], &fleet.names[1], &fleet.names[2]);
    let out = fleet.run(&["start", "--detach", a]);
    assert!(out.status.success(), "{}", out.describe());
    let out = fleet.run(&["start", b, "--", "true"]);
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(fleet.states(), ["running", "hibernating", "stopped"]);

    let out = fleet.run(&["stop", "--all", "--dry-run"]);
    assert!(out.status.success(), "{}", out.describe());
    let plan = out.stdout_str();
    assert!(plan.contains(&format!("# subhost {a}\n")), "{plan}");
    assert!(plan.contains(&format!("ip netns del {b}")), "{plan}");
    assert!(!plan.contains(c.as_str()), "{plan}");
    assert_eq!(fleet.states(), ["running", "hibernating", "stopped"]);

    let out = fleet.run(&["stop", "--all"]);
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(
        out.stdout_str(),
        format!("subhost {a}: stopped\nsubhost {b}: stopped\n")
    );
    assert_eq!(fleet.states(), ["stopped", "stopped", "stopped"]);

    // Usage errors, with the launcher's usage status.
    let out = fleet.run(&["start", a, b]);
    assert_eq!(out.code(), 125, "several need --detach: {}", out.describe());
    assert!(out.stderr_str().contains("--detach"), "{}", out.describe());
    let out = fleet.run(&["stop", "--all", a]);
    assert_eq!(out.code(), 125, "--all with names: {}", out.describe());
    let out = fleet.run(&["stop"]);
    assert_eq!(
        out.code(),
        125,
        "neither names nor --all: {}",
        out.describe()
    );
}

/// Holds the lock of `name` as a start or stop in progress would.
fn hold_lock(name: &str) -> std::fs::File {
    std::fs::create_dir_all("/run/subhost").unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("/run/subhost/{name}.lock"))
        .unwrap();
    // SAFETY: flock on an fd we own.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    f
}

#[test]
fn a_stop_waits_for_a_start_or_stop_in_progress_and_others_go_on() {
    // STOP_TIMEOUT=1: a lock held longer than 1 s + 2 s is given up on.
    let fleet = Fleet::new(3, "STOP_TIMEOUT=1\n");
    let (a, b, c) = (&fleet.names[0], &fleet.names[1], &fleet.names[2]);
    let out = fleet.on_all(&["start", "--detach"]);
    assert!(out.status.success(), "{}", out.describe());

    // Released while the stop waits: it then does its job.
    let lock = hold_lock(a);
    // Its log goes to a file, to be read while it runs.
    let log = fleet.base().join("stop-log");
    let child = spawn_group(
        Command::new(launch_bin())
            .env("SUBHOST", fleet.base())
            .args(["-v", "stop", a])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let waiting = format!("{a}: another start or stop is in progress; waiting for it");
    let said = wait_until(LIMIT, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&waiting))
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(said, "the stop did not wait for the lock:\n{text}");
    assert_eq!(fleet.states()[0], "running", "stop went past a held lock");
    drop(lock);
    let out = wait_timeout(child, LIMIT);
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(fleet.states()[0], "stopped");

    // Held throughout: that one fails "busy" after its wait, the others
    // are stopped all the same, in one call.
    let lock = hold_lock(b);
    let started = Instant::now();
    let out = fleet.run(&["stop", b, c]);
    let took = started.elapsed();
    assert_eq!(out.code(), 1, "{}", out.describe());
    assert!(
        out.stderr_str().contains(&format!("subhost {b} is busy")),
        "{}",
        out.describe()
    );
    assert_eq!(out.stdout_str(), format!("subhost {c}: stopped\n"));
    assert!(took >= Duration::from_secs(3), "gave up after {took:?}");
    assert_eq!(fleet.states()[1..], ["running", "stopped"]);
    drop(lock);
    let out = fleet.run(&["stop", b]);
    assert!(out.status.success(), "{}", out.describe());
}

/// A launcher SIGKILLed at any moment of a start: no session runs on
/// behind it, and the next `stop` cleans up at once, leaving nothing.
#[test]
fn a_start_killed_at_any_moment_leaves_nothing_stop_cannot_clean() {
    let fleet = Fleet::new(1, "");
    let name = &fleet.names[0];
    // A start takes a few milliseconds: kill it before, during and after.
    let delays_us = [
        0, 200, 500, 1000, 1500, 2000, 3000, 4000, 6000, 9000, 15000, 30000,
    ];
    for (i, us) in delays_us.into_iter().enumerate() {
        for detach in [false, true] {
            let marker = format!("{}", 987_000 + i * 2 + detach as usize);
            let mut args = vec!["start"];
            if detach {
                // BOOT starts a marked sleeper that stays up.
                std::fs::write(
                    fleet.base().join(name).join("config"),
                    mode_config(&format!(
                        "BRIDGES=({})\nBOOT=(sh -c 'sleep {marker} &')\n",
                        fleet.bridge.name
                    )),
                )
                .unwrap();
                args.extend(["--detach", name]);
            } else {
                args.extend([name.as_str(), "--", "sleep", marker.as_str()]);
            }
            let mut child = spawn_group(
                Command::new(launch_bin())
                    .env("SUBHOST", fleet.base())
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            std::thread::sleep(Duration::from_micros(us));
            let _ = child.kill();
            let _ = child.wait();
            let what = format!(
                "start{} killed after {us} µs",
                if detach { " --detach" } else { "" }
            );
            if !detach {
                // The parent-death signal takes the session down with it.
                assert!(
                    wait_until(Duration::from_secs(5), || running_with(&marker).is_empty()),
                    "{what}: the session runs on: {:?}",
                    running_with(&marker)
                );
                let out = fleet.run(&["status", "--json", name]);
                assert!(out.status.success(), "{what}: {}", out.describe());
                let o = parse_json(&out.stdout_str());
                assert!(
                    ["stopped", "hibernating", "broken"].contains(&o.get("state").str()),
                    "{what}: {o:?}"
                );
                let problems = format!("{:?}", o.get("problems"));
                assert!(!problems.contains("not in netns"), "{what}: {o:?}");
                assert!(!problems.contains("stale init"), "{what}: {o:?}");
            }
            let out = fleet.run(&["stop", name]);
            assert!(out.status.success(), "{what}: {}", out.describe());
            assert!(
                out.elapsed < Duration::from_secs(2),
                "{what}: stop took {:?}",
                out.elapsed
            );
            assert!(
                running_with(&marker).is_empty(),
                "{what}: still runs after stop"
            );
            assert_eq!(fleet.left_of(name), Vec::<String>::new(), "{what}");
            assert_eq!(fleet.states(), ["stopped"], "{what}");
        }
    }
}

/// `cmd`'s stdout is a pipe whose reader is already gone.
fn with_closed_stdout(cmd: &mut Command) -> Finished {
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    cmd.stdout(Stdio::from(w));
    let child = spawn_group(cmd.stdin(Stdio::null()).stderr(Stdio::piped()));
    wait_timeout(child, LIMIT)
}

#[test]
fn a_closed_pipe_ends_printing_quietly_and_never_stops_the_work() {
    let fleet = Fleet::new(2, "");
    let launch = |args: &[&str]| {
        let mut c = Command::new(launch_bin());
        c.env("SUBHOST", fleet.base()).args(args);
        c
    };
    let (a, b) = (&fleet.names[0], &fleet.names[1]);
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["status", a],
        &["start", "--dry-run", a],
        &["start", "--dry-run", "--detach", a, b],
        &["stop", "--dry-run", a],
        &["man"],
    ] {
        let out = with_closed_stdout(&mut launch(args));
        // Killed by SIGPIPE, as `ls` is: nothing on stderr, no panic.
        assert!(
            out.code() == 141 || out.code() == 0,
            "{args:?}: {}",
            out.describe()
        );
        assert_eq!(out.stderr_str(), "", "{args:?}: {}", out.describe());
    }
    // Work that changes the host is done in full; only the lines are lost.
    let out = with_closed_stdout(&mut launch(&["start", "--detach", a, b]));
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.stderr_str(), "");
    assert_eq!(fleet.states(), ["running", "running"]);
    let out = with_closed_stdout(&mut launch(&["stop", a, b]));
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.stderr_str(), "");
    assert_eq!(fleet.states(), ["stopped", "stopped"]);

    // As a user would type it.
    let out = run_timeout(
        Command::new("sh").env("SUBHOST", fleet.base()).args([
            "-c",
            &format!(
                "'{0}' list | head -c 1 >/dev/null; '{0}' start --dry-run {a} | head -1 >/dev/null",
                launch_bin().display()
            ),
        ]),
        LIMIT,
    );
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(out.stderr_str(), "", "{}", out.describe());
}
