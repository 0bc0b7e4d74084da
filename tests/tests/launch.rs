//! `subhost-launch start/stop` on the real kernel: mounts, netns, veths on a
//! test bridge, PID 1, ptys. Every test has its own `$SUBHOST` and names, and
//! its guards stop the subhost and remove what it made even on failure.

use std::path::Path;
use std::time::Duration;

use subhost_tests::*;

const LIMIT: Duration = LAUNCH_LIMIT;

fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

fn netns_list() -> String {
    let out = run_timeout(&mut cmd("ip", ["netns", "list"]), LIMIT);
    out.stdout_str()
}

fn has_link(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The lines of `out` as they come, from a thread; the channel closes at
/// end of file.
fn read_lines(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn lock_file(s: &Subhost) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/run/subhost/{}.lock", s.name))
}

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

#[test]
fn overlay_over_a_base_runs_init_as_pid1() {
    let br = Bridge::new();
    let base = ScratchBase::new();
    let s = Subhost::new(
        "",
        &format!(
            "LOWER={}\nBRIDGES=({}=02:5a:00:00:00:07)\n",
            base.path().display(),
            br.name
        ),
    );
    let note = format!("/var/tmp/{}-note", s.name);
    let probe = install_probe(&s.root());
    let checks = [
        ("pid1", "cmdline 1"),
        ("host", "hostname"),
        ("mac", "read /sys/class/net/eth0/address"),
        ("procs", "pid-count"),
    ];
    let script = format!("{probe} \"$@\"; echo upper > {note}; exit 7");
    let mut args = vec!["start", &s.name, "--", "/bin/sh", "-c", &script, "sh"];
    let each = probe_each_args(&checks);
    args.extend(each.iter().map(String::as_str));
    let out = s.run(&args);
    assert_eq!(out.code(), 7, "{}", out.describe());
    let r = probe_results(&out.stdout_str());
    assert!(
        r["pid1"].starts_with("subhost-init --grace 5 -- /bin/sh -c"),
        "{r:#?}"
    );
    assert_eq!(r["host"], s.name, "{r:#?}");
    assert_eq!(r["mac"], "02:5a:00:00:00:07", "{r:#?}");
    // init, the shell, and the probe and its check at most: no host process
    // is visible.
    let procs: usize = r["procs"].parse().expect("procs count");
    assert!(procs <= 8, "host processes visible inside: {r:#?}");
    // The write went to the upper layer, not to the host.
    assert_eq!(
        std::fs::read_to_string(s.root().join(&note[1..])).unwrap(),
        "upper\n"
    );
    assert!(!Path::new(&note).exists(), "{note} written on the host");
    assert!(
        !base.path().join(&note[1..]).exists(),
        "{note} written to the lower layer"
    );
    assert!(has_link(&format!("{}0", s.name)));
}

#[test]
fn rbind_of_busybox_root_with_shares() {
    let shared = TempDir::new();
    std::fs::write(shared.path().join("hello"), "from the host\n").unwrap();
    let file = shared.path().join("single");
    std::fs::write(&file, "one file\n").unwrap();
    let s = Subhost::busybox(
        "",
        &format!(
            "SHARE=({} {}:/srv/one)\nHOSTNAME=inner-{}\n",
            shared.path().display(),
            file.display(),
            "x"
        ),
    );
    let probe = install_probe(&s.root());
    let checks = [
        ("hello", format!("read {}/hello", shared.path().display())),
        ("one", "read /srv/one".into()),
        ("host", "hostname".into()),
        ("busybox", "exists /bin/busybox".into()),
        ("procs", "pid-count".into()),
    ];
    let mut args = vec!["start", s.name.as_str(), "--", probe];
    let each = probe_each_args(&checks);
    args.extend(each.iter().map(String::as_str));
    let out = s.run(&args);
    assert_ok(&out);
    let r = probe_results(&out.stdout_str());
    assert_eq!(r["hello"], "from the host", "{r:#?}");
    assert_eq!(r["one"], "one file", "{r:#?}");
    assert_eq!(r["host"], "inner-x", "{r:#?}");
    assert_eq!(r["busybox"], "yes", "{r:#?}");
    // The init, the probe and its check: no host process.
    assert_eq!(r["procs"], "3", "{r:#?}");
}

#[test]
fn hibernation_keeps_mounts_netns_and_files_until_stop() {
    let br = Bridge::new();
    let s = Subhost::busybox("", &format!("BRIDGES=({})\n", br.name));
    assert_ok(&s.sh("echo kept > /root/note"));
    assert!(
        netns_list().contains(&s.name),
        "netns gone after the session"
    );
    assert!(s.live_mounted(), "live unmounted after the session");
    assert!(has_link(&format!("{}0", s.name)));

    let out = s.sh("cat /root/note");
    assert_ok(&out);
    assert_eq!(out.stdout_str().trim(), "kept");

    assert_ok(&s.stop());
    assert!(!netns_list().contains(&s.name));
    assert!(!s.live_mounted());
    assert!(
        !has_link(&format!("{}0", s.name)),
        "host end of the cable left"
    );
    assert_eq!(
        std::fs::read_to_string(s.root().join("root/note")).unwrap(),
        "kept\n"
    );
    // Idempotent, and says so.
    let again = s.stop();
    assert_ok(&again);
    assert!(
        again.stdout_str().contains("already stopped"),
        "{}",
        again.describe()
    );
}

#[test]
fn stop_then_start_immediately_reuses_the_cable_names() {
    let br = Bridge::new();
    let s = Subhost::busybox("", &format!("BRIDGES=({0} {0})\n", br.name));
    for _ in 0..3 {
        assert_ok(&s.sh("true"));
        assert_ok(&s.stop());
    }
}

#[test]
fn image_file_root() {
    let (s, img) = image_subhost();
    let out = s.sh("cat /etc/motd; echo new > /root/w");
    assert_ok(&out);
    assert!(
        out.stdout_str().contains("in the image"),
        "{}",
        out.describe()
    );
    assert!(mount_points().contains(&s.dir().join("mnt").to_string_lossy().into_owned()));
    assert_ok(&s.stop());
    assert!(!mount_points()
        .iter()
        .any(|m| m.starts_with(&*s.dir().to_string_lossy())));
    let loops = run_timeout(&mut cmd("losetup", ["-j", &img.to_string_lossy()]), LIMIT);
    assert!(
        loops.stdout_str().trim().is_empty(),
        "loop device left: {}",
        loops.stdout_str()
    );
}

/// An image subhost with an `etc/motd`, its image formatted and ready.
fn image_subhost() -> (Subhost, std::path::PathBuf) {
    let s = Subhost::new("", "");
    let scratch = TempDir::new();
    busybox_root(&scratch.path().join("root"));
    std::fs::create_dir_all(scratch.path().join("work")).unwrap();
    std::fs::write(scratch.path().join("root/etc/motd"), "in the image\n").unwrap();
    let img = s.dir().join(format!("{}.img", s.name));
    let out = run_timeout(
        &mut cmd(
            "mkfs.ext4",
            [
                "-q",
                "-F",
                "-d",
                &scratch.path().to_string_lossy(),
                &img.to_string_lossy(),
                "64M",
            ],
        ),
        LIMIT,
    );
    assert_ok(&out);
    (s, img)
}

/// After its last mount goes, an image's loop device stays bound while
/// anything else holds it: a process with the device open (a `losetup`,
/// `blkid`), or a mount namespace copied from the host while the image was
/// mounted (another subhost's start, any `unshare -m`). `stop` must not
/// call that stopped, as a `start` would then mount the filesystem a
/// second time through another device: it waits, says who holds it, and
/// the next `stop` after the holder let go finishes. The holder here is
/// this test with the device open (a mount namespace would also hold the
/// images of the tests running alongside).
#[test]
fn stop_waits_for_the_image_to_be_released_and_names_who_holds_it() {
    let (s, img) = image_subhost();
    assert_ok(&s.sh("cat /etc/motd"));
    let mnt = s.dir().join("mnt");
    let device = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(&*mnt.to_string_lossy()))
        .and_then(|l| l.split(" - ").nth(1)?.split(' ').nth(1).map(str::to_string))
        .expect("mnt mounted from a loop device");
    assert!(device.starts_with("/dev/loop"), "{device}");
    let held = std::fs::File::open(&device).unwrap();
    let out = s.stop();
    assert_eq!(out.code(), 1, "{}", out.describe());
    let err = out.stderr_str();
    assert!(
        err.contains(&format!(
            "still attached to {device} (open by PID {}",
            std::process::id()
        )),
        "{}",
        out.describe()
    );
    assert!(!mount_points()
        .iter()
        .any(|m| m.starts_with(&*s.dir().to_string_lossy())));

    // The last close detaches it (autoclear).
    drop(held);
    let out = s.stop();
    assert_ok(&out);
    let loops = run_timeout(&mut cmd("losetup", ["-j", &img.to_string_lossy()]), LIMIT);
    assert!(
        loops.stdout_str().trim().is_empty(),
        "loop device left: {}",
        loops.stdout_str()
    );
}

/// An image attached already (its holder outlived a stop, or a `losetup`
/// by hand) is not mounted a second time through another device, which
/// would mount one ext4 twice: `start` refuses and says where it is.
#[test]
fn start_refuses_an_image_attached_elsewhere() {
    let (s, img) = image_subhost();
    let out = run_timeout(
        &mut cmd("losetup", ["--find", "--show", &*img.to_string_lossy()]),
        LIMIT,
    );
    assert_ok(&out);
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = run_timeout(&mut cmd("losetup", ["-d", &self.0]), LIMIT);
        }
    }
    let attached = Detach(out.stdout_str().trim().to_string());
    let out = s.sh("true");
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr_str()
            .contains(&format!("is already attached to {}", attached.0)),
        "{}",
        out.describe()
    );
    assert!(!mount_points()
        .iter()
        .any(|m| m.starts_with(&*s.dir().to_string_lossy())));
    drop(attached);
    let out = s.sh("cat /etc/motd");
    assert_ok(&out);
    assert!(
        out.stdout_str().contains("in the image"),
        "{}",
        out.describe()
    );
}

#[test]
fn two_subhosts_on_one_bridge_ping_each_other() {
    let br = Bridge::new();
    let a = Subhost::busybox("", &format!("BRIDGES=({})\n", br.name));
    let b = Subhost::busybox("", &format!("BRIDGES=({})\n", br.name));
    // A hibernates with its cable up; its kernel answers pings without any
    // process running.
    assert_ok(&a.sh("ip addr add 10.213.7.1/24 dev eth0"));
    let out = b.sh("ip addr add 10.213.7.2/24 dev eth0 && ping -c 1 -W 5 10.213.7.1");
    assert_ok(&out);
    assert!(
        out.stdout_str().contains("1 packets received"),
        "{}",
        out.describe()
    );
}

#[test]
fn interactive_session_through_a_pty() {
    let s = Subhost::busybox("", "SESSION=\"/bin/sh -i\"\n");
    let script = format!(
        r##"
set timeout 20
spawn {launch} start {name}
expect {{
    "# " {{}}
    timeout {{ puts "NO PROMPT"; exit 90 }}
}}
send "tty; echo sum=\$((40+2))\r"
expect {{
    "sum=42" {{}}
    timeout {{ puts "NO OUTPUT"; exit 91 }}
}}
send "exit 5\r"
expect eof
catch wait result
exit [lindex $result 3]
"##,
        launch = launch_bin().display(),
        name = s.name
    );
    let mut c = cmd("expect", ["-c", &script]);
    c.env("SUBHOST", s.base());
    let out = run_timeout(&mut c, LIMIT);
    assert_eq!(out.code(), 5, "{}", out.describe());
    // The session's terminal is a pty of the subhost's own devpts.
    assert!(
        out.stdout_str().contains("/dev/pts/0"),
        "{}",
        out.describe()
    );
}

#[test]
fn sigterm_to_start_shuts_the_subhost_down_gracefully() {
    let s = Subhost::busybox("", "STOP_TIMEOUT=3\n");
    let child = s.spawn(&[
        "start",
        &s.name,
        "--",
        "/bin/sh",
        "-c",
        "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    let mut child = child;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // The trap is set once "ready" is out; the rest of the output is read
    // on, for the trap's line.
    let lines = read_lines(child.stdout.take().unwrap());
    let ready = lines.recv_timeout(LIMIT);
    assert_eq!(ready.as_deref(), Ok("ready"), "no ready line");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = wait_timeout(child, LIMIT);
    assert_eq!(out.code(), 9, "{}", out.describe());
    // Read to the end: the reader may still be behind the exit.
    let mut rest = Vec::new();
    while let Ok(line) = lines.recv_timeout(LIMIT) {
        rest.push(line);
    }
    assert!(
        rest.iter().any(|l| l == "got-term"),
        "{rest:?} {}",
        out.describe()
    );
}

#[test]
fn stop_ends_a_running_subhost() {
    let s = Subhost::busybox("", "STOP_TIMEOUT=2\n");
    let child = s.spawn(&["start", &s.name, "--", "/bin/sleep", "1000"]);
    assert!(wait_until(LIMIT, || s.init_record().exists()));
    // A second start is refused while it runs, naming the init's PID.
    let again = s.sh("true");
    assert_eq!(again.code(), 125, "{}", again.describe());
    assert!(
        again.stderr_str().contains("is running (init PID"),
        "{}",
        again.describe()
    );

    assert_ok(&s.stop());
    let out = wait_timeout(child, LIMIT);
    assert_eq!(out.code(), 128 + 15, "{}", out.describe());
    assert!(!netns_list().contains(&s.name));
    assert!(!s.live_mounted());
}

#[test]
fn concurrent_starts_one_wins() {
    let s = Subhost::busybox("", "");
    let spawn = || s.spawn(&["start", &s.name, "--", "/bin/sleep", "2"]);
    let (a, b) = (spawn(), spawn());
    let (a, b) = (wait_timeout(a, LIMIT), wait_timeout(b, LIMIT));
    let codes = [a.code(), b.code()];
    assert!(codes.contains(&0), "{}\n{}", a.describe(), b.describe());
    let loser = if a.code() == 0 { &b } else { &a };
    assert_eq!(loser.code(), 125, "{}", loser.describe());
    let msg = loser.stderr_str();
    assert!(msg.contains("busy") || msg.contains("is running"), "{msg}");
}

#[test]
fn a_stale_record_never_gets_a_signal() {
    let s = Subhost::busybox("", "");
    assert_ok(&s.sh("true"));
    // Point the record at an unrelated live process, as a recycled PID would.
    let mut victim = spawn_group(cmd("sleep", ["30"]).stdin(std::process::Stdio::null()));
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", victim.id())).unwrap();
    let start = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap();
    std::fs::write(
        format!("/run/subhost/{}.init", s.name),
        format!("{} {}\n", victim.id(), start),
    )
    .unwrap();
    assert_ok(&s.stop());
    assert!(
        victim.try_wait().unwrap().is_none(),
        "an unrelated process was signalled"
    );
    let _ = victim.kill();
    let _ = victim.wait();
}

#[test]
fn dry_run_prints_the_plan_and_does_nothing() {
    let br = Bridge::new();
    let base = ScratchBase::new();
    let s = Subhost::busybox(
        "",
        &format!(
            "LOWER={}\nBRIDGES=({}=02:00:00:00:01:01)\n",
            base.path().display(),
            br.name
        ),
    );
    let out = s.run(&["start", "--dry-run", &s.name, "--", "/bin/true"]);
    assert_ok(&out);
    let text = out.stdout_str();
    let netns = if userns_mode() {
        "unshare --user --map-users=0:"
    } else {
        "ip netns add"
    };
    for want in ["mount -t overlay", netns, "pivot_root", "exec subhost-init"] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    if userns_mode() {
        for want in ["X-mount.idmap=0:", "mount --bind /dev/X", "cgroup.procs"] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(!text.contains("mknod"), "{text}");
        assert!(
            !s.dir().join("userns").exists(),
            "a dry run records no range"
        );
    }
    assert!(text.contains(&format!("{}0", s.name)), "{text}");
    assert!(!s.live_mounted());
    assert!(!netns_list().contains(&s.name));
    let out = s.run(&["stop", "--dry-run", &s.name]);
    assert_ok(&out);
    assert!(
        out.stdout_str().contains("# no init running"),
        "{}",
        out.describe()
    );

    // Of a hibernating subhost: the netns and unmount steps, none done.
    assert_ok(&s.sh("true"));
    let out = s.run(&["stop", "--dry-run", &s.name]);
    assert_ok(&out);
    let text = out.stdout_str();
    for want in [
        format!("ip netns del {}\n", s.name),
        format!("# wait until gone: {}0\n", s.name),
        format!("umount -R {}\n", s.live().display()),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert!(s.live_mounted(), "stop --dry-run unmounted live");
    assert!(
        netns_list().contains(&s.name),
        "stop --dry-run deleted the netns"
    );
    assert!(has_link(&format!("{}0", s.name)));
}

#[test]
fn failures_leave_nothing_behind() {
    // A bridge that does not exist: the mounts made before the netns step
    // are undone.
    let s = Subhost::busybox("", "BRIDGES=(shtnobr0)\n");
    let out = s.sh("true");
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(out.stderr_str().contains("shtnobr0"), "{}", out.describe());
    assert!(!s.live_mounted(), "live left mounted");
    assert!(!netns_list().contains(&s.name), "netns left");
    // Nor its lock file: the failed start made it, and removed it.
    assert!(!lock_file(&s).exists(), "{} left", lock_file(&s).display());

    // Missing root.
    let s = Subhost::new("", "");
    std::fs::remove_dir(s.root()).unwrap();
    let out = s.sh("true");
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(out.stderr_str().contains("root"), "{}", out.describe());
    assert!(!s.live_mounted());
    assert!(!netns_list().contains(&s.name));
    assert!(!lock_file(&s).exists(), "{} left", lock_file(&s).display());

    // A session that cannot be executed: init reports it, exit 127.
    let s = Subhost::busybox("", "");
    let out = s.run(&["start", &s.name, "--", "/no/such/program"]);
    assert_eq!(out.code(), 127, "{}", out.describe());
}

/// The cables of a new netns are made while the sandbox sets itself up:
/// a sandbox that fails meanwhile is what the start reports, and the
/// cables, netns and mounts go with it.
#[test]
fn a_sandbox_failing_while_its_cables_are_made_leaves_nothing() {
    let br = Bridge::new();
    let share = TempDir::new();
    // Made by the sandbox, under a file of the root: ENOTDIR.
    let s = Subhost::busybox(
        "",
        &format!(
            "BRIDGES=({})\nSHARE=({}:/bin/busybox/inside)\n",
            br.name,
            share.path().display()
        ),
    );
    let out = s.sh("true");
    assert_eq!(out.code(), 125, "{}", out.describe());
    let err = out.stderr_str();
    assert!(
        err.contains("/bin/busybox/inside") && err.contains("Not a directory"),
        "{}",
        out.describe()
    );
    assert!(!s.live_mounted(), "live left mounted");
    assert!(!netns_list().contains(&s.name), "netns left");
    assert!(!has_link(&format!("{}0", s.name)), "cable left");
    assert!(!lock_file(&s).exists(), "{} left", lock_file(&s).display());
}

#[test]
fn bad_names_and_configs_are_refused_clearly() {
    let s = Subhost::busybox("", "");
    for bad in ["Bad", "much-too-long-name", "a/b", ""] {
        let out = s.run(&["start", bad, "--", "/bin/true"]);
        assert_eq!(out.code(), 125, "{bad}: {}", out.describe());
        assert!(
            out.stderr_str().contains("invalid subhost name"),
            "{}",
            out.describe()
        );
    }
    let missing = s.run(&["start", "shtnosuch", "--", "/bin/true"]);
    assert_eq!(missing.code(), 125);
    assert!(
        missing.stderr_str().contains("no subhost shtnosuch"),
        "{}",
        missing.describe()
    );

    for (config, what) in [
        ("LOWER=$(echo /)\n", "substitution"),
        ("HOSTNAME=a; rm -rf /\n", ";"),
        ("NOSUCHKEY=1\n", "NOSUCHKEY"),
        ("HOSTNAME=\"unterminated\n", "unterminated"),
        ("f() { :; }\n", "functions are not supported"),
        ("BRIDGES=(br0=zz:00:00:00:00:00)\n", "zz:00"),
    ] {
        std::fs::write(s.dir().join("config"), format!("# ok\n{config}")).unwrap();
        let out = s.sh("true");
        assert_eq!(out.code(), 125, "{config:?}: {}", out.describe());
        let err = out.stderr_str();
        assert!(
            err.contains("config:2"),
            "{config:?} should name config:2: {err}"
        );
        assert!(
            err.contains(what),
            "{config:?} should mention {what:?}: {err}"
        );
        assert!(!s.live_mounted());
    }
}

#[test]
fn a_terminal_on_stdout_alone_still_gets_a_pty_of_its_own() {
    // stdin is not a terminal but stdout is: the caller's terminal must not
    // enter the subhost, so the session still gets a pty of the subhost's.
    let s = Subhost::busybox("", "");
    let script = format!(
        r#"
set timeout 20
spawn -noecho sh -c "{launch} start {name} -- /bin/sh -c 'tty; cat' < /dev/null"
expect {{
    "/dev/pts/0" {{}}
    timeout {{ puts "NO PTY"; exit 90 }}
}}
expect eof
catch wait result
exit [lindex $result 3]
"#,
        launch = launch_bin().display(),
        name = s.name
    );
    let mut c = cmd("expect", ["-c", &script]);
    c.env("SUBHOST", s.base());
    let out = run_timeout(&mut c, LIMIT);
    assert_eq!(out.code(), 0, "{}", out.describe());
}

/// The dry-run plan's command lines, without comments and the final exec.
fn plan_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("exec "))
        .map(|l| l.split("   #").next().unwrap().to_string())
        .collect()
}

#[test]
fn verbose_logs_every_plan_step_and_very_verbose_its_duration() {
    let br = Bridge::new();
    let s = Subhost::busybox(
        "",
        &format!("BRIDGES=({0} {0}=02:00:00:00:02:02 =)\n", br.name),
    );
    let plan = s.run(&["start", "--dry-run", &s.name, "--", "/bin/true"]);
    assert_ok(&plan);
    let steps = plan_lines(&plan.stdout_str());
    assert!(steps.len() >= 15, "{steps:?}");

    let out = s.run(&["-v", "start", &s.name, "--", "/bin/true"]);
    assert_ok(&out);
    let err = out.stderr_str();
    let logged: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("subhost-launch: info: "))
        .collect();
    for step in &steps {
        // Parents and controllers of the cgroup are made only when missing,
        // and other subhosts of this host may have made them already.
        if step.starts_with("mkdir -p ") || step.starts_with("echo +") {
            continue;
        }
        assert!(
            logged.contains(&step.as_str()),
            "{step:?} not logged:\n{err}"
        );
    }
    assert!(!err.contains("subhost-launch: debug: "), "{err}");

    // -v stop: each step of its plan.
    let stop_plan = s.run(&["stop", "--dry-run", &s.name]);
    let out = s.run(&["-v", "stop", &s.name]);
    assert_ok(&out);
    let err = out.stderr_str();
    for step in plan_lines(&stop_plan.stdout_str()) {
        assert!(
            err.contains(&format!("subhost-launch: info: {step}\n")),
            "{step:?} not logged:\n{err}"
        );
    }
    assert!(
        err.contains(&format!("info: ip netns del {}\n", s.name)),
        "{err}"
    );

    // -vv: the same steps, each with how long it took.
    let out = s.run(&["-vv", "start", &s.name, "--", "/bin/true"]);
    assert_ok(&out);
    let err = out.stderr_str();
    let netns_step = if userns_mode() {
        // Made in the user namespace, then named.
        format!("mount --bind /proc/HELPER/ns/net /run/netns/{}", s.name)
    } else {
        format!("ip netns add {}", s.name)
    };
    for step in [
        netns_step,
        format!(
            "ip link add {}0 master {} up type veth peer name eth0 netns {}",
            s.name, br.name, s.name
        ),
        "mount -t proc -o nosuid,nodev,noexec proc".to_string(),
    ] {
        let timed = err.lines().any(|l| {
            l.starts_with("subhost-launch: debug: ") && l.contains(" ms: ") && l.contains(&step)
        });
        assert!(timed, "no duration for {step:?}:\n{err}");
    }

    // Detached, the sandbox's steps still go to the caller, not the console.
    assert_ok(&s.stop());
    let out = s.run(&["-v", "start", "--detach", &s.name]);
    assert_ok(&out);
    assert!(
        out.stderr_str()
            .contains("subhost-launch: info: pivot_root "),
        "{}",
        out.describe()
    );
    let console = std::fs::read_to_string(s.dir().join("console.log")).unwrap();
    assert!(!console.contains("subhost-launch: "), "{console}");

    // -v stop of a running subhost: its init and cgroup steps too.
    let stop_plan = s.run(&["stop", "--dry-run", &s.name]);
    let steps = plan_lines(&stop_plan.stdout_str());
    assert!(
        steps
            .iter()
            .any(|l| l.starts_with("kill every process in ")),
        "{steps:?}"
    );
    let out = s.run(&["-v", "stop", &s.name]);
    assert_ok(&out);
    let err = out.stderr_str();
    for step in steps {
        assert!(
            err.contains(&format!("subhost-launch: info: {step}\n")),
            "{step:?} not logged:\n{err}"
        );
    }
}

#[test]
fn usage_errors_exit_125_unlike_a_session_exiting_2() {
    let s = Subhost::busybox("", "");
    for args in [
        &["start"][..],
        &["--bogus", "list"],
        &["start", "--nosuch", &s.name],
        &["nosuch"],
    ] {
        let out = s.run(args);
        assert_eq!(out.code(), 125, "{args:?}: {}", out.describe());
        assert!(out.stderr_str().contains("Usage:"), "{}", out.describe());
    }
    let out = s.run(&["--help"]);
    assert_ok(&out);
    assert!(
        out.stdout_str().contains("A usage error"),
        "{}",
        out.describe()
    );
    assert_eq!(s.sh("exit 2").code(), 2);
}

#[test]
fn a_config_that_is_no_regular_file_or_too_large_is_refused_at_once() {
    // Another subhost beside it, which `list` must still show.
    let s = Subhost::busybox("", "");
    let other = s.base().join(unique_name("o"));
    std::fs::create_dir_all(other.join("root")).unwrap();
    let config = s.dir().join("config");
    let quick = Duration::from_secs(10);
    let check = |what: &str| {
        for args in [
            vec!["start", &s.name, "--", "/bin/true"],
            vec!["stop", &s.name],
            vec!["status", &s.name],
            vec!["list"],
        ] {
            let out = run_timeout(s.launch().args(&args), quick);
            assert!(!out.timed_out, "{what}: {args:?} hangs: {}", out.describe());
            // status and list name it among the problems, on stdout.
            let err = out.stderr_str() + &out.stdout_str();
            assert!(
                err.contains(&config.display().to_string()) && err.contains(what),
                "{args:?}: {}",
                out.describe()
            );
            if args[0] == "start" {
                assert_eq!(out.code(), 125, "{}", out.describe());
                assert!(!s.live_mounted());
                assert!(!lock_file(&s).exists());
            }
            if args[0] == "list" {
                let name = other.file_name().unwrap().to_str().unwrap();
                assert!(out.stdout_str().contains(name), "{}", out.describe());
            }
        }
    };
    std::fs::remove_file(&config).unwrap();
    nix::unistd::mkfifo(&config, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    check("a FIFO, not a regular file");
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
    check("a character device, not a regular file");
    std::fs::remove_file(&config).unwrap();
    // Valid text, just too much of it.
    std::fs::write(&config, "# padding\n".repeat(110_000)).unwrap();
    check("larger than 1 MiB");

    // The records under /run/subhost are read the same way.
    std::fs::remove_file(&config).unwrap();
    for ext in ["init", "cgroup", "console"] {
        let record = format!("/run/subhost/{}.{ext}", s.name);
        nix::unistd::mkfifo(
            record.as_str(),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    }
    for args in [vec!["status", &s.name], vec!["list"], vec!["stop", &s.name]] {
        let out = run_timeout(s.launch().args(&args), quick);
        assert!(
            !out.timed_out,
            "{args:?} hangs on a FIFO record: {}",
            out.describe()
        );
        assert_ok(&out);
    }
}

#[test]
fn console_file_gets_boot_output_and_a_failed_start_says_why() {
    let s = Subhost::busybox("", "BOOT=(sh -c 'echo boot-marker; sleep 1000')\n");
    let cwd = TempDir::new();
    let mut c = s.launch();
    c.current_dir(cwd.path())
        .args(["start", "--detach", "--console", "my.log", &s.name]);
    let out = run_timeout(&mut c, LIMIT);
    assert_ok(&out);
    let file = cwd.path().join("my.log");
    assert!(
        out.stdout_str()
            .ends_with(&format!("console: {}\n", file.display())),
        "{}",
        out.describe()
    );
    let text = || std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        wait_until(LIMIT, || text().contains("boot-marker\n")),
        "{}",
        text()
    );
    assert!(
        text().contains(&format!(" subhost {}: starting\n", s.name)),
        "{}",
        text()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert!(!s.dir().join("console.log").exists());
    assert_ok(&s.stop());
    assert!(
        text().ends_with(&format!(" subhost {}: stopped\n", s.name)),
        "{}",
        text()
    );

    // A BOOT too long for execve: the start fails after the console got
    // its "starting" line, and the console says so too.
    let big = "x".repeat(140_000);
    std::fs::write(s.dir().join("config"), format!("BOOT=(echo {big})\n")).unwrap();
    let out = s.run(&["start", "--detach", &s.name]);
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr_str().contains("Argument list too long"),
        "{}",
        out.describe()
    );
    let console = std::fs::read_to_string(s.dir().join("console.log")).unwrap();
    let last = console.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!(" subhost {}: failed to start: ", s.name))
            && last.contains("Argument list too long"),
        "{console}"
    );
    assert!(!s.live_mounted());
    assert!(!lock_file(&s).exists());
}

/// Cables are `NAME0`…`NAME99`, so `ab1`'s cable `ab10` also reads as cable
/// 10 of `ab`. `stop ab` of an `ab` that does not exist must not take
/// `ab1`'s cables for leftovers of `ab` (and report success): it says
/// there is no such subhost, and leaves `ab1` alone.
#[test]
fn stop_of_a_missing_name_does_not_take_a_longer_name_s_cables_for_its_own() {
    let br = Bridge::new();
    let long = Subhost::busybox("pfx", &format!("BRIDGES=({})\n", br.name));
    assert_ok(&long.sh("true"));
    let short = &long.name[..long.name.len() - 1];
    let cable = format!("{}0", long.name);
    assert!(has_link(&cable));
    let out = long.run(&["stop", short]);
    assert_eq!(out.code(), 1, "{}", out.describe());
    assert!(
        out.stderr_str().contains(&format!("no subhost {short}")),
        "{}",
        out.describe()
    );
    assert!(has_link(&cable), "the cable of {} went", long.name);
    assert!(netns_list().contains(&long.name));
}
