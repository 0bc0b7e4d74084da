//! `subhost-launch enter` on the real kernel: a subhost runs `sleep` under
//! its init in the background, and commands entered into it must see
//! exactly what its init sees (namespaces, root, cgroups, capabilities),
//! nothing of the host, and report their exit status.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use subhost_tests::*;

const LIMIT: Duration = LAUNCH_LIMIT;
const MARKER: &str = "subhost-root-marker";

/// A busybox subhost with a marker file in its root.
fn subhost() -> Subhost {
    let s = Subhost::busybox("en", "");
    std::fs::write(s.root().join(MARKER), "inside\n").unwrap();
    s
}

/// `start NAME -- sleep 60` in the background, through `wrap` if given.
fn start_sleeping(s: &mut Subhost, wrap: &[&str]) -> i32 {
    s.start_background(wrap, &["/bin/sleep", "60"])
}

/// A cgroup v2 directory made by the test, removed on drop.
struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    fn new(name: &str) -> TestCgroup {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let point = info
            .lines()
            .find(|l| {
                l.split(" - ")
                    .nth(1)
                    .is_some_and(|t| t.starts_with("cgroup2 "))
            })
            .and_then(|l| l.split(' ').nth(4))
            .expect("no cgroup2 mount");
        let me = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mine = me
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("not in a cgroup v2 hierarchy");
        let dir = Path::new(point)
            .join(mine.trim_start_matches('/'))
            .join(format!("{name}-elsewhere"));
        std::fs::create_dir(&dir).unwrap();
        TestCgroup { dir }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Its last process may take a moment to be gone.
        wait_until(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.dir).is_ok()
        });
    }
}

#[test]
fn enter_sees_the_init_s_namespaces_root_and_cgroups_and_nothing_of_the_host() {
    let mut s = subhost();
    let probe = install_probe(&s.root());
    let init = start_sleeping(&mut s, &[]);
    // Visible on the host; it must not be inside.
    let host_marker = s.base().join("host-marker");
    std::fs::write(&host_marker, "host\n").unwrap();
    let host_marker = host_marker.display().to_string();

    const NS: [&str; 6] = ["net", "pid", "mnt", "uts", "ipc", "cgroup"];
    let mut checks: Vec<(&str, String)> = vec![
        ("host", "hostname".into()),
        ("pid1", "cmdline 1".into()),
        ("root", "ls /".into()),
        ("root1", "ls /proc/1/root/".into()),
        ("rootself", "ls /proc/self/root/".into()),
        ("rootme", "readlink /proc/self/root".into()),
        ("cwd", "readlink /proc/self/cwd".into()),
        ("hostfile", format!("exists {host_marker}")),
        ("hostfile1", format!("exists /proc/1/root{host_marker}")),
        // What a program started inside inherits.
        ("fds", "fds".into()),
        ("cgroup", "cgroup self".into()),
        ("cgroup1", "cgroup 1".into()),
    ];
    let ns_ids: Vec<String> = NS.iter().map(|ns| format!("ns_{ns}")).collect();
    for (id, ns) in ns_ids.iter().zip(NS) {
        checks.push((id, format!("ns {ns}")));
    }
    // enter runs from a cgroup of its own, so that ending up in the init's
    // is the joining's doing, not inheritance.
    let elsewhere = TestCgroup::new(&s.name);
    let mut enter = Command::new("sh");
    enter
        .arg("-c")
        .arg("echo $$ > \"$0\" && exec \"$@\"")
        .arg(elsewhere.dir.join("cgroup.procs"))
        .arg(launch_bin())
        .args(["enter", &s.name, "--", "sh", "-c"])
        .arg(format!("{probe} \"$@\"; exit 7"))
        .arg("sh")
        .args(probe_each_args(&checks))
        .env("SUBHOST", s.base());
    let out = run_timeout(&mut enter, LIMIT);
    assert_eq!(out.code(), 7, "{}", out.describe());
    let r = probe_results(&out.stdout_str());
    let field = |id: &str| -> &str {
        r.get(id)
            .unwrap_or_else(|| panic!("no {id} in output:\n{}", out.describe()))
    };

    assert_eq!(field("host"), s.name);
    assert!(
        field("pid1").starts_with("subhost-init "),
        "PID 1 inside is not subhost-init: {r:#?}"
    );
    for ns in NS {
        let want = std::fs::read_link(format!("/proc/{init}/ns/{ns}")).unwrap();
        assert_eq!(
            field(&format!("ns_{ns}")),
            want.to_string_lossy(),
            "{ns} namespace differs from the init's"
        );
    }
    // The host's own namespaces are different ones: the comparison above
    // would not catch a command left on the host otherwise.
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_ne!(field("ns_mnt"), host_mnt.to_string_lossy());

    // Exactly the subhost's root (an rbind of `root`), not the host's.
    let mut want: Vec<String> = std::fs::read_dir(s.dir().join("root"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    want.sort();
    for key in ["root", "root1", "rootself"] {
        let seen: Vec<&str> = field(key).split_whitespace().collect();
        assert_eq!(seen, want, "{key}: not the subhost's root: {r:#?}");
    }
    assert_eq!(field("rootme"), "/", "{r:#?}");
    assert_eq!(field("cwd"), "/", "{r:#?}");
    assert_eq!(field("hostfile"), "no", "{r:#?}");
    assert_eq!(field("hostfile1"), "no", "{r:#?}");
    // The three standard streams, nothing else of the launcher's.
    assert_eq!(field("fds"), "0 1 2", "{r:#?}");

    // Both seen from inside the subhost's cgroup namespace: had enter stayed
    // in the test's cgroup, its own line would read `0::/../..`.
    assert_eq!(field("cgroup"), field("cgroup1"), "{r:#?}");
    assert!(
        field("cgroup").split_whitespace().any(|w| w == "0::/"),
        "{r:#?}"
    );
}

#[test]
fn exit_status_passes_through_and_missing_commands_are_127() {
    let mut s = subhost();
    start_sleeping(&mut s, &[]);
    assert_eq!(s.enter_sh("exit 0").code(), 0);
    assert_eq!(s.enter_sh("exit 42").code(), 42);
    let killed = s.enter_sh("kill -9 $$");
    assert_eq!(killed.code(), 128 + 9, "{}", killed.describe());

    let missing = s.run(&["enter", &s.name, "--", "no-such-command"]);
    assert_eq!(missing.code(), 127, "{}", missing.describe());
    let msg = missing.stderr_str();
    assert!(msg.contains("no-such-command"), "{msg}");
    assert_eq!(msg.trim().lines().count(), 1, "not one line: {msg}");

    let not_exec = s.run(&["enter", &s.name, "--", "/etc/passwd"]);
    assert_eq!(not_exec.code(), 126, "{}", not_exec.describe());

    // Default session: the config has no SESSION and the root no bash, so
    // it is /bin/sh, reading commands from stdin.
    let out = run_input(
        s.launch().args(["enter", &s.name]),
        b"echo from-default-$((1+1))\n".to_vec(),
        LIMIT,
    );
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        out.stdout_str().contains("from-default-2"),
        "{}",
        out.describe()
    );
}

#[test]
fn capabilities_outside_the_init_s_bounding_set_are_gone() {
    let mut s = subhost();
    let probe = install_probe(&s.root());
    // The init (and so the subhost) without CAP_SYS_TIME (25); enter runs
    // with all of the test's. Joining a user namespace gives a full
    // bounding set, so there only the config can take it away.
    if userns_mode() {
        std::fs::write(
            s.dir().join("config"),
            "USERNS=pick\nCAPS_DROP=(SYS_TIME)\n",
        )
        .unwrap();
        start_sleeping(&mut s, &[]);
    } else {
        start_sleeping(&mut s, &["setpriv", "--bounding-set", "-sys_time", "--"]);
    }
    let out = s.run(&["enter", &s.name, "--", probe, "caps"]);
    assert!(out.status.success(), "{}", out.describe());
    let text = out.stdout_str();
    let sets = text
        .trim()
        .strip_prefix("caps: ")
        .unwrap_or_else(|| panic!("{}", out.describe()));
    for set in sets.split_whitespace() {
        let (key, hex) = set.split_once('=').unwrap();
        let mask = u64::from_str_radix(hex, 16).unwrap();
        assert_eq!(mask & (1 << 25), 0, "{key} still has CAP_SYS_TIME: {text}");
    }
    assert_eq!(sets.split_whitespace().count(), 5, "{text}");
}

#[test]
fn interactive_enter_gets_a_pty_of_the_subhost_s_devpts() {
    let mut s = subhost();
    let init = start_sleeping(&mut s, &[]);
    let devpts = std::fs::metadata(format!("/proc/{init}/root/dev/pts"))
        .unwrap()
        .dev();
    let script = s.base().join("enter.exp");
    std::fs::write(
        &script,
        format!(
            r#"set timeout 15
spawn -noecho {launch} enter {name}
expect {{
  -re {{[#$] }} {{}}
  timeout {{ puts "NO PROMPT"; exit 100 }}
}}
send "echo tty=\$(tty) dev=\$(stat -c %d \$(tty)) sum=\$((40+2))\r"
expect {{
  -re {{sum=42}} {{}}
  timeout {{ puts "NO OUTPUT"; exit 101 }}
}}
expect -re {{[#$] }}
send "exit 3\r"
expect eof
catch wait result
exit [lindex $result 3]
"#,
            launch = launch_bin().display(),
            name = s.name
        ),
    )
    .unwrap();
    let mut expect = Command::new("expect");
    expect
        .arg(&script)
        .env("SUBHOST", s.base())
        .env("TERM", "dumb");
    let out = run_timeout(&mut expect, Duration::from_secs(40));
    assert_eq!(out.code(), 3, "{}", out.describe());
    let text = out.stdout_str();
    let line = text
        .lines()
        .find(|l| l.contains("tty=") && l.contains("sum=42"))
        .unwrap_or_else(|| panic!("no tty line:\n{text}"));
    assert!(line.contains("tty=/dev/pts/"), "{line}");
    let dev: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("dev="))
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no dev= in {line}"));
    assert_eq!(
        dev, devpts,
        "the pty is not of the subhost's devpts: {line}"
    );
    let host_devpts = std::fs::metadata("/dev/pts").unwrap().dev();
    assert_ne!(dev, host_devpts);
}

#[test]
fn a_hibernating_or_stopped_subhost_is_refused_with_how_to_start_it() {
    let s = subhost();
    let once = s.run(&["start", &s.name, "--", "true"]);
    assert!(once.status.success(), "{}", once.describe());

    let out = s.enter_sh("echo should-not-run");
    assert_eq!(out.code(), 1, "{}", out.describe());
    let msg = out.stderr_str();
    assert!(msg.contains("hibernat"), "{msg}");
    assert!(
        msg.contains(&format!("subhost-launch start {}", s.name)),
        "{msg}"
    );
    assert!(!out.stdout_str().contains("should-not-run"));

    let stop = s.run(&["stop", &s.name]);
    assert!(stop.status.success(), "{}", stop.describe());
    let out = s.enter_sh("echo should-not-run");
    assert_eq!(out.code(), 1, "{}", out.describe());
    let msg = out.stderr_str();
    assert!(msg.contains("stopped"), "{msg}");
    assert!(
        msg.contains(&format!("subhost-launch start {}", s.name)),
        "{msg}"
    );

    let dry = s.run(&["enter", "--dry-run", &s.name]);
    assert_eq!(dry.code(), 1, "{}", dry.describe());
}

#[test]
fn dry_run_prints_the_plan_and_runs_nothing() {
    let mut s = subhost();
    let init = start_sleeping(&mut s, &[]);
    let out = s.run(&["enter", "--dry-run", &s.name, "--", "touch", "/dry-run-ran"]);
    assert!(out.status.success(), "{}", out.describe());
    let text = out.stdout_str();
    assert!(text.contains(&format!("init PID {init}")), "{text}");
    assert!(text.contains("setns("), "{text}");
    assert!(text.contains("cgroup.procs"), "{text}");
    assert!(text.contains("exec touch /dry-run-ran"), "{text}");
    assert!(!s.dir().join("root/dry-run-ran").exists());
}
