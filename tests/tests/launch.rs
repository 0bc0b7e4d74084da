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

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

#[test]
fn overlay_over_host_root_runs_init_as_pid1() {
    let br = Bridge::new();
    let s = Subhost::new(
        "",
        &format!("LOWER=/\nBRIDGES=({}=02:5a:00:00:00:07)\n", br.name),
    );
    let out = s.sh("echo pid1=$(tr '\\0' ' ' </proc/1/cmdline); \
         echo host=$(hostname); \
         echo mac=$(cat /sys/class/net/eth0/address); \
         echo procs=$(ls /proc | grep -c '^[0-9]'); \
         echo me=$$; exit 7");
    assert_eq!(out.code(), 7, "{}", out.describe());
    let text = out.stdout_str();
    assert!(
        text.contains("pid1=subhost-init --grace 5 -- /bin/sh -c"),
        "{text}"
    );
    assert!(text.contains(&format!("host={}", s.name)), "{text}");
    assert!(text.contains("mac=02:5a:00:00:00:07"), "{text}");
    // init, the shell, and the command substitution's subshell at most: no
    // host process is visible.
    let procs: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|n| n.trim().parse().ok())
        .expect("procs line");
    assert!(procs <= 8, "host processes visible inside: {text}");
    // The write went to the upper layer, not to the host.
    assert!(!s.root().join("proc").join("1").exists());
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
    let out = s.sh(&format!(
        "cat {}/hello /srv/one; hostname; ls /bin/busybox; ps -o pid,comm | wc -l",
        shared.path().display()
    ));
    assert_ok(&out);
    let text = out.stdout_str();
    assert!(text.contains("from the host"), "{text}");
    assert!(text.contains("one file"), "{text}");
    assert!(text.contains("inner-x"), "{text}");
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
    let s = Subhost::new("", "");
    // Build the image's content in a scratch tree, then mkfs from it.
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
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    assert!(wait_until(LIMIT, || s.init_record().exists()));
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = wait_timeout(child, LIMIT);
    assert_eq!(out.code(), 9, "{}", out.describe());
    assert!(out.stdout_str().contains("got-term"), "{}", out.describe());
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
    let s = Subhost::busybox(
        "",
        &format!("LOWER=/\nBRIDGES=({}=02:00:00:00:01:01)\n", br.name),
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

    // Missing root.
    let s = Subhost::new("", "");
    std::fs::remove_dir(s.root()).unwrap();
    let out = s.sh("true");
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(out.stderr_str().contains("root"), "{}", out.describe());
    assert!(!s.live_mounted());
    assert!(!netns_list().contains(&s.name));

    // A session that cannot be executed: init reports it, exit 127.
    let s = Subhost::busybox("", "");
    let out = s.run(&["start", &s.name, "--", "/no/such/program"]);
    assert_eq!(out.code(), 127, "{}", out.describe());
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
        ("f() { :; }\n", ""),
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
