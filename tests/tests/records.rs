//! The host-wide records of subhosts under `/run/subhost` (lock,
//! directory, init, cgroup, console) against state the launcher must not
//! believe: the same NAME in two `$SUBHOST` directories, records that are
//! FIFOs, directories or symlinks, records deleted under a running
//! subhost, a config that is a symlink to another file, and two commands
//! naming the same subhosts in other orders.

use std::path::{Path, PathBuf};
use std::time::Duration;

use subhost_tests::*;

/// How long a command that must not hang may take.
const QUICK: Duration = Duration::from_secs(15);

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

fn record(name: &str, ext: &str) -> PathBuf {
    PathBuf::from(format!("/run/subhost/{name}.{ext}"))
}

fn launch_in(base: &Path, args: &[&str]) -> Finished {
    run_timeout(
        std::process::Command::new(launch_bin())
            .env("SUBHOST", base)
            .args(args),
        LAUNCH_LIMIT,
    )
}

/// A busybox subhost directory `base/name` with `config` (and USERNS in
/// that pass), made by hand as an operator would.
fn make_subhost(base: &Path, name: &str, config: &str) {
    busybox_root(&base.join(name).join("root"));
    std::fs::write(base.join(name).join("config"), mode_config(config)).unwrap();
}

/// Stops `name` from `base` on drop, and removes what a failed stop left
/// under its name: for subhosts a test makes beside a `Subhost`. Declared
/// after the `Subhost` (so dropped before it).
struct StopOnDrop {
    base: PathBuf,
    name: String,
    /// Whether the name is this directory's alone (not a `Subhost`'s too):
    /// then its netns and records go as well.
    own_name: bool,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let out = launch_in(&self.base, &["stop", &self.name]);
        if !out.status.success() {
            eprintln!("cleanup: stop {} failed: {}", self.name, out.describe());
        }
        if self.own_name {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.name])
                .stderr(std::process::Stdio::null())
                .status();
            for ext in ["lock", "dir", "init", "cgroup", "console"] {
                let _ = std::fs::remove_file(record(&self.name, ext));
            }
        }
    }
}

fn json_state(out: &Finished) -> String {
    assert!(out.status.success(), "{}", out.describe());
    json::parse_json(&out.stdout_str())
        .get("state")
        .str()
        .to_string()
}

/// Finding: records and netns are keyed by NAME host-wide, so a second
/// `$SUBHOST` with a subhost of the same name saw the first one's as its
/// own, and its `stop --all` killed it.
#[test]
fn a_name_in_use_by_another_directory_is_that_ones_alone() {
    let a = Subhost::busybox("", "");
    let other = TempDir::new();
    let b = other.path();
    make_subhost(b, &a.name, "");
    let _b_guard = StopOnDrop {
        base: b.to_path_buf(),
        name: a.name.clone(),
        own_name: false,
    };
    let name = a.name.as_str();
    let a_dir = a.dir().canonicalize().unwrap();
    assert_ok(&a.run(&["start", "--detach", name]));
    let a_init = std::fs::read_to_string(a.init_record()).unwrap();
    let a_running = || json_state(&a.run(&["status", "--json", name])) == "running";
    assert!(a_running());

    // B's never-started subhost is stopped, with a note naming A's.
    let out = launch_in(b, &["status", "--json", name]);
    assert_ok(&out);
    assert_eq!(json_state(&out), "stopped", "{}", out.describe());
    assert!(
        out.stdout_str()
            .contains(&format!("in use by the subhost in {}", a_dir.display())),
        "{}",
        out.describe()
    );
    let out = launch_in(b, &["list"]);
    assert_ok(&out);
    let row = out
        .stdout_str()
        .lines()
        .find(|l| l.starts_with(name))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(row.contains("stopped"), "{}", out.describe());

    // Its stop, stop --all, start and enter refuse, naming A's directory,
    // and A's subhost runs on untouched.
    for args in [
        vec!["stop", name],
        vec!["start", "--detach", name],
        vec!["start", name, "--", "/bin/true"],
        vec!["enter", name, "--", "true"],
    ] {
        let out = launch_in(b, &args);
        assert!(!out.status.success(), "{args:?}: {}", out.describe());
        assert!(
            out.stderr_str()
                .contains(&format!("in use by the subhost in {}", a_dir.display())),
            "{args:?}: {}",
            out.describe()
        );
        assert!(a_running(), "{args:?} touched A's subhost");
    }
    let out = launch_in(b, &["stop", "--all"]);
    assert_ok(&out);
    assert!(
        out.stdout_str().contains("nothing to stop"),
        "{}",
        out.describe()
    );
    assert!(a_running(), "stop --all of B touched A's subhost");
    assert_eq!(
        std::fs::read_to_string(a.init_record()).unwrap(),
        a_init,
        "A's init changed"
    );

    // Once A's is stopped the name is free for B's.
    assert_ok(&a.stop());
    assert!(!record(name, "dir").exists());
    assert_ok(&launch_in(b, &["start", "--detach", name]));
    assert_eq!(
        json_state(&launch_in(b, &["status", "--json", name])),
        "running"
    );
    let out = a.run(&["status", "--json", name]);
    assert_eq!(json_state(&out), "stopped", "{}", out.describe());
    assert!(
        out.stdout_str().contains(&format!(
            "in use by the subhost in {}",
            b.join(name).canonicalize().unwrap().display()
        )),
        "{}",
        out.describe()
    );
    assert_ok(&launch_in(b, &["stop", name]));
}

/// Finding: `start --detach x y` and `start --detach y x` each held one
/// lock while waiting for the other, so both waited STOP_TIMEOUT + 2 s and
/// failed "busy".
#[test]
fn starts_naming_the_same_subhosts_in_other_orders_do_not_stall() {
    let x = Subhost::busybox("", "STOP_TIMEOUT=10\n");
    let y = unique_name("");
    make_subhost(x.base(), &y, "STOP_TIMEOUT=10\n");
    let _y_guard = StopOnDrop {
        base: x.base().to_path_buf(),
        name: y.clone(),
        own_name: true,
    };
    let mut both_ok = 0;
    for _ in 0..5 {
        let one = x.spawn(&["start", "--detach", &x.name, &y]);
        let two = x.spawn(&["start", "--detach", &y, &x.name]);
        let (one, two) = (
            wait_timeout(one, LAUNCH_LIMIT),
            wait_timeout(two, LAUNCH_LIMIT),
        );
        for out in [&one, &two] {
            // Stalled, they took 12 s (STOP_TIMEOUT 10 + 2) and failed busy.
            assert!(out.elapsed < Duration::from_secs(6), "{}", out.describe());
            assert!(!out.stderr_str().contains("busy"), "{}", out.describe());
            // Side by side, each counts what the other started meanwhile
            // as started. One that begins only after the other has
            // started a subhost finds it running already, and says so as
            // any `start --detach` of a running subhost does.
            if !out.status.success() {
                let err = out.stderr_str();
                assert_eq!(out.code(), 125, "{}", out.describe());
                assert!(
                    err.lines().all(|l| l.contains("is running (init PID")),
                    "{}",
                    out.describe()
                );
            }
        }
        both_ok += usize::from(one.status.success() && two.status.success());
        for n in [x.name.as_str(), y.as_str()] {
            let out = x.run(&["status", "--json", n]);
            assert_eq!(json_state(&out), "running", "{}", out.describe());
        }
        assert_ok(&x.run(&["stop", &x.name, &y]));
    }
    eprintln!("both succeeded in {both_ok} of 5 rounds");
}

/// Finding: a FIFO at a record path hung `start` for ever (its write
/// blocks without a reader).
#[test]
fn a_fifo_at_any_record_hangs_no_command() {
    let s = Subhost::busybox("", "");
    for ext in ["cgroup", "init", "console", "dir"] {
        let path = record(&s.name, ext);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let what = format!("{} is a FIFO, not a regular file", path.display());
        let rm = format!("`rm {}`", path.display());

        let out = run_timeout(s.launch().args(["start", "--detach", &s.name]), QUICK);
        assert!(!out.timed_out, "start hangs on {ext}: {}", out.describe());
        assert_eq!(out.code(), 125, "{ext}: {}", out.describe());
        assert!(
            out.stderr_str().contains(&what) && out.stderr_str().contains(&rm),
            "{ext}: {}",
            out.describe()
        );
        assert!(!s.live_mounted(), "{ext}: start set something up");

        let out = run_timeout(s.launch().args(["status", &s.name]), QUICK);
        assert!(!out.timed_out, "status hangs on {ext}: {}", out.describe());
        assert_ok(&out);
        assert!(
            out.stdout_str().contains(&what),
            "{ext}: {}",
            out.describe()
        );

        let out = run_timeout(s.launch().args(["stop", &s.name]), QUICK);
        assert!(!out.timed_out, "stop hangs on {ext}: {}", out.describe());
        assert!(
            out.stderr_str().contains(&what),
            "{ext}: {}",
            out.describe()
        );
        if ext == "dir" {
            // Whose NAME is cannot be told: nothing is done.
            assert_eq!(out.code(), 1, "{}", out.describe());
            std::fs::remove_file(&path).unwrap();
        } else {
            // Not read, and removed with the other records.
            assert_ok(&out);
            assert!(path.symlink_metadata().is_err(), "{ext} left");
        }
    }
    // Once it is gone, all works again.
    assert_ok(&s.sh("true"));
}

/// Finding: a lock path that is a FIFO, a directory or a symlink gave
/// "cannot open lock file: No such device or address" and the like.
#[test]
fn a_lock_that_is_no_file_is_named_and_never_followed() {
    let s = Subhost::busybox("", "");
    let lock = record(&s.name, "lock");
    let scratch = TempDir::new();
    let target = scratch.path().join("target");
    std::fs::write(&target, "untouched\n").unwrap();
    type Make = fn(&Path, &Path);
    let cases: [(&str, Make, &str); 4] = [
        (
            "a FIFO",
            |p, _| nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap(),
            "rm",
        ),
        (
            "a directory",
            |p, _| std::fs::create_dir(p).unwrap(),
            "rmdir",
        ),
        (
            "a symbolic link to",
            |p, t| std::os::unix::fs::symlink(t, p).unwrap(),
            "rm",
        ),
        (
            "a symbolic link to",
            |p, t| std::os::unix::fs::symlink(t.with_extension("none"), p).unwrap(),
            "rm",
        ),
    ];
    for (what, make, rm) in cases {
        make(&lock, &target);
        for args in [
            vec!["start", &s.name, "--", "/bin/true"],
            vec!["start", "--detach", &s.name],
            vec!["stop", &s.name],
        ] {
            let out = run_timeout(s.launch().args(&args), QUICK);
            assert!(!out.timed_out, "{what}: {args:?} hangs: {}", out.describe());
            assert!(
                !out.status.success(),
                "{what}: {args:?}: {}",
                out.describe()
            );
            let err = out.stderr_str();
            assert!(
                err.contains(&format!("lock file {} is {what}", lock.display()))
                    && err.contains(&format!("`{rm} {}`", lock.display())),
                "{what}: {args:?}: {}",
                out.describe()
            );
            assert!(!s.live_mounted());
        }
        let out = run_timeout(s.launch().args(["status", &s.name]), QUICK);
        assert!(!out.timed_out, "{what}: status hangs: {}", out.describe());
        assert!(
            out.stdout_str()
                .contains(&format!("{} is {what}", lock.display())),
            "{what}: {}",
            out.describe()
        );
        // Never followed: the target is neither changed nor made.
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
        assert!(!target.with_extension("none").exists());
        if rm == "rmdir" {
            std::fs::remove_dir(&lock).unwrap();
        } else {
            std::fs::remove_file(&lock).unwrap();
        }
    }
    assert_ok(&s.sh("true"));
}

/// Finding: a config that is a symlink to another file (`/etc/shadow`)
/// had its first line quoted in errors by every command.
#[test]
fn a_config_that_is_another_file_is_never_quoted() {
    let s = Subhost::busybox("", "");
    let scratch = TempDir::new();
    let secret = scratch.path().join("shadow");
    let line = "root:s3cretHashXq9abcdef:19000:0:99999:7:::";
    std::fs::write(&secret, format!("{line}\n")).unwrap();
    let config = s.dir().join("config");
    let check = |what: &str| {
        for args in [
            vec!["start", &s.name, "--", "/bin/true"],
            vec!["stop", &s.name],
            vec!["status", &s.name],
            vec!["list"],
        ] {
            let out = run_timeout(s.launch().args(&args), QUICK);
            assert!(!out.timed_out, "{args:?}: {}", out.describe());
            let all = out.stdout_str() + &out.stderr_str();
            assert!(
                !all.contains("s3cret"),
                "{args:?} quotes it: {}",
                out.describe()
            );
            assert!(
                all.contains(&format!("config {} is {what}", config.display()))
                    && all.contains("replace it with a regular file"),
                "{args:?}: {}",
                out.describe()
            );
            if args[0] == "start" {
                assert_eq!(out.code(), 125, "{}", out.describe());
            }
        }
    };
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink(&secret, &config).unwrap();
    check(&format!("a symbolic link to {}", secret.display()));
    // A hard link, or a file handed in by another user: another owner.
    std::fs::remove_file(&config).unwrap();
    std::fs::write(&config, format!("{line}\n")).unwrap();
    std::os::unix::fs::chown(&config, Some(4242), None).unwrap();
    check("owned by uid 4242, not by the owner of");
    std::fs::remove_file(&config).unwrap();
    std::fs::write(&config, mode_config("")).unwrap();
    assert_ok(&s.sh("true"));
}

/// Finding: with its records deleted (a cleaner emptying /run/subhost),
/// a running subhost was "stopped" by `cgroup.kill`: HALT never ran.
#[test]
fn stop_finds_an_init_whose_records_were_deleted_and_runs_halt() {
    let s = Subhost::busybox("", "HALT=(sh -c 'echo halted > /halt-marker')\n");
    assert_ok(&s.run(&["start", "--detach", &s.name]));
    let pid: i32 = std::fs::read_to_string(s.init_record())
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for ext in ["lock", "dir", "init", "cgroup", "console"] {
        let _ = std::fs::remove_file(record(&s.name, ext));
    }
    // The plan printed is the one that runs: the init found, its HALT.
    let dry = s.run(&["stop", "--dry-run", &s.name]);
    assert_ok(&dry);
    let plan = dry.stdout_str();
    for want in [
        format!("its cgroup holds it (PID {pid}): recorded again\n"),
        "then HALT".to_string(),
        format!("kill -TERM {pid}   #"),
    ] {
        assert!(plan.contains(&want), "missing {want:?} in:\n{plan}");
    }
    assert!(!record(&s.name, "init").exists(), "a dry run recorded");
    let out = s.stop();
    assert_ok(&out);
    assert!(out.stdout_str().contains("stopped"), "{}", out.describe());
    assert_eq!(
        std::fs::read_to_string(s.root().join("halt-marker")).unwrap_or_default(),
        "halted\n",
        "HALT did not run: {}",
        out.describe()
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        }
    );
    assert!(!s.live_mounted());
    assert!(!Path::new(&format!("/run/netns/{}", s.name)).exists());
    for ext in ["lock", "dir", "init", "cgroup", "console"] {
        assert!(!record(&s.name, ext).exists(), "{ext} left");
    }
}

/// What `start` applied is what `enter` gives: a call allowed in the
/// config only after the init started is denied to the entered process as
/// it is to the init, and `stop` removes the record with the rest. A
/// subhost started with the call allowed shows the probe can tell.
#[test]
fn enter_gets_the_filter_start_applied_not_the_config_of_now() {
    let mut s = Subhost::busybox("ap", "");
    let probe = install_probe(&s.root());
    s.start_background(&[], &["sleep", "60"]);
    let applied = record(&s.name, "applied");
    let text = std::fs::read_to_string(&applied).expect("start records what it applied");
    assert!(text.contains("\"syscalls_allow\": []"), "{text}");
    std::fs::write(
        s.dir().join("config"),
        mode_config("SYSCALLS_ALLOW=(keyctl)\n"),
    )
    .unwrap();
    let out = s.run(&["enter", &s.name, "--", probe, "keyctl"]);
    assert!(
        out.stdout_str().contains("keyctl: errno EPERM"),
        "{}",
        out.describe()
    );
    // status shows what the init runs under, not the config of now.
    let out = s.run(&["status", "--json", &s.name]);
    assert!(
        out.stdout_str().contains("\"syscalls_allow\": []"),
        "{}",
        out.describe()
    );
    assert_ok(&s.stop());
    assert!(!applied.exists(), "stop leaves the record");
    // Started with it allowed, the init and what enters it may.
    s.start_background(&[], &["sleep", "60"]);
    let out = s.run(&["enter", &s.name, "--", probe, "keyctl"]);
    assert!(
        out.stdout_str().contains("keyctl: ok"),
        "{}",
        out.describe()
    );
    assert_ok(&s.stop());
}
