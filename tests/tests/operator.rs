//! What an operator meets running subhosts from a login session or from a
//! service with a restricted capability set: the caller's audit loginuid,
//! capabilities the launcher cannot grant, and who may set the hostname.

use std::process::{Command, Stdio};
use std::time::Duration;

use subhost_tests::json::parse_json;
use subhost_tests::*;

/// What `/proc/PID/loginuid` holds with no login session recorded.
const UNSET: &str = "4294967295";

/// Runs its arguments as a process of a login session would: with the
/// audit loginuid 1000, set in this shell only (never in the test runner).
const AS_LOGIN: [&str; 3] = [
    "sh",
    "-c",
    "echo 1000 > /proc/self/loginuid && exec \"$0\" \"$@\"",
];

fn loginuid(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/loginuid"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/loginuid: {e}"))
        .trim()
        .to_string()
}

/// `subhost-launch ARGS` through `AS_LOGIN`, for `s`.
fn as_login(s: &Subhost, args: &[&str]) -> Command {
    let mut c = cmd(AS_LOGIN[0], &AS_LOGIN[1..]);
    c.arg(launch_bin()).args(args).env("SUBHOST", s.base());
    c
}

/// The process our child `launcher` runs `comm` as, once it is there.
fn child_named(launcher: u32, comm: &str) -> Option<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
        })
}

#[test]
fn a_subhost_started_or_entered_from_a_login_session_has_no_loginuid() {
    let mut s = Subhost::busybox("lu", "");
    // The premise: the wrapper really gives what it runs a loginuid.
    let out = run_timeout(
        &mut cmd(
            AS_LOGIN[0],
            [AS_LOGIN[1], AS_LOGIN[2], "cat", "/proc/self/loginuid"],
        ),
        LAUNCH_LIMIT,
    );
    assert_eq!(
        out.stdout_str(),
        "1000",
        "this kernel has no audit loginuid to test: {}",
        out.describe()
    );
    // Both plans show it.
    let out = s.run(&["start", "--dry-run", &s.name]);
    assert!(
        out.stdout_str()
            .contains("echo 4294967295 > /proc/self/loginuid"),
        "{}",
        out.describe()
    );

    // A foreground start, as seen inside (with USERNS, 1000 would show
    // as unset there too, being unmapped: the host's view below counts).
    let out = run_timeout(
        &mut as_login(&s, &["start", &s.name, "--", "cat", "/proc/self/loginuid"]),
        LAUNCH_LIMIT,
    );
    assert_eq!(out.stdout_str(), UNSET, "{}", out.describe());
    // ... and as the host sees its init.
    let init = s.start_background(&AS_LOGIN, &["sleep", "60"]);
    assert_eq!(loginuid(init), UNSET);

    // enter: inside, and the entered process as the host sees it.
    let out = run_timeout(
        &mut as_login(&s, &["enter", &s.name, "--", "cat", "/proc/self/loginuid"]),
        LAUNCH_LIMIT,
    );
    assert_eq!(out.stdout_str(), UNSET, "{}", out.describe());
    let out = s.run(&["enter", "--dry-run", &s.name, "--", "true"]);
    assert!(
        out.stdout_str()
            .contains("echo 4294967295 > /proc/self/loginuid"),
        "{}",
        out.describe()
    );
    let entering = spawn_group(
        as_login(&s, &["enter", &s.name, "--", "sleep", "60"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let launcher = entering.id();
    let mut entered = None;
    let found = wait_until(Duration::from_secs(10), || {
        entered = child_named(launcher, "sleep");
        entered.is_some()
    });
    let entered_loginuid = entered.map(loginuid);
    // Stopping the subhost ends the entered command, and so its launcher.
    let stopped = s.stop();
    let done = wait_timeout(entering, LAUNCH_LIMIT);
    assert!(
        found,
        "the entered command did not show: {}",
        done.describe()
    );
    assert_eq!(entered_loginuid.as_deref(), Some(UNSET));
    assert!(stopped.status.success(), "{}", stopped.describe());

    // A detached start.
    let out = run_timeout(
        &mut as_login(&s, &["start", "--detach", &s.name]),
        LAUNCH_LIMIT,
    );
    assert!(out.status.success(), "{}", out.describe());
    let record = std::fs::read_to_string(s.init_record()).unwrap();
    let init: i32 = record.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(loginuid(init), UNSET);
}

#[test]
fn caps_keep_the_launcher_cannot_grant_is_named_at_start_and_in_status() {
    let s = Subhost::busybox("cap", "CAPS_KEEP=(SYS_RESOURCE)\n");
    let out = run_timeout(
        cmd("setpriv", ["--bounding-set", "-sys_resource"])
            .arg(launch_bin())
            .args(["start", "--detach", &s.name])
            .env("SUBHOST", s.base()),
        LAUNCH_LIMIT,
    );
    assert!(out.status.success(), "{}", out.describe());
    let status = s.run(&["status", &s.name]);
    assert!(status.status.success(), "{}", status.describe());
    let text = status.stdout_str();
    let caps = text
        .lines()
        .find_map(|l| l.strip_prefix("caps:"))
        .unwrap_or_else(|| panic!("no caps line: {}", status.describe()))
        .split_whitespace()
        .map(str::to_string)
        .collect::<Vec<_>>();
    let json = parse_json(&s.run(&["status", "--json", &s.name]).stdout_str());
    let warnings: Vec<&str> = json.get("warnings").arr().iter().map(|w| w.str()).collect();
    if userns_mode() {
        // Joining its user namespace gives it a bounding set of that
        // namespace, whatever the launcher's: granted.
        assert!(caps.contains(&"SYS_RESOURCE".into()), "{text}");
        assert!(
            !out.stderr_str().contains("runs without"),
            "{}",
            out.describe()
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    } else {
        assert!(
            out.stderr_str().contains(&format!(
                "subhost {} runs without CAP_SYS_RESOURCE: the launcher's own capability \
                 bounding set lacks them",
                s.name
            )),
            "{}",
            out.describe()
        );
        // What the init really has, and what it was refused.
        assert!(!caps.contains(&"SYS_RESOURCE".into()), "{text}");
        assert!(caps.contains(&"NET_ADMIN".into()), "{text}");
        let refused = "CAP_SYS_RESOURCE kept by the config but not granted";
        assert!(
            text.contains(&format!("warning:  {refused}")),
            "{}",
            status.describe()
        );
        assert!(
            warnings.iter().any(|w| w.starts_with(refused)),
            "{warnings:?}"
        );
        assert!(!json
            .get("capabilities")
            .arr()
            .iter()
            .any(|c| c.str() == "CAP_SYS_RESOURCE"));
    }

    // Started by a launcher with this test's own bounding set: granted
    // when the test has it (some hosts' sessions lack it too: then the
    // warning is theirs).
    assert!(s.stop().status.success());
    let out = s.run(&["start", "--detach", &s.name]);
    assert!(out.status.success(), "{}", out.describe());
    let status = s.run(&["status", &s.name]);
    let text = status.stdout_str();
    let granted = userns_mode() || own_bounding_set() & (1 << CAP_SYS_RESOURCE) != 0;
    assert_eq!(
        !out.stderr_str().contains("runs without"),
        granted,
        "{}",
        out.describe()
    );
    assert_eq!(
        text.contains(" SYS_RESOURCE"),
        granted,
        "{}",
        status.describe()
    );
    assert_eq!(
        !text.contains("not granted"),
        granted,
        "{}",
        status.describe()
    );
}

const CAP_SYS_RESOURCE: u32 = 24;

fn own_bounding_set() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd in /proc/self/status");
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

#[test]
fn root_inside_sets_its_hostname_only_with_a_user_namespace() {
    // Without a user namespace, the host's UTS namespace rules apply and
    // SYS_ADMIN is dropped: the config's HOSTNAME is the way.
    let plain = Subhost::busybox("hn", "USERNS=no\n");
    let out = plain.sh("hostname renamed 2>&1 && echo rc=0 || echo rc=$?; hostname");
    let text = out.stdout_str();
    assert!(
        text.contains("Operation not permitted"),
        "{}",
        out.describe()
    );
    assert!(text.contains("rc=1"), "{}", out.describe());
    assert!(
        text.ends_with(&format!("{}\n", plain.name)),
        "{}",
        out.describe()
    );
    std::fs::write(plain.dir().join("config"), "USERNS=no\nHOSTNAME=chosen\n").unwrap();
    let out = plain.sh("hostname");
    assert_eq!(out.stdout_str(), "chosen\n", "{}", out.describe());

    // Its own user namespace owns its UTS namespace: root inside may.
    let own = Subhost::busybox("hn", "USERNS=pick\n");
    let out = own.sh("hostname renamed && hostname");
    assert_eq!(out.stdout_str(), "renamed\n", "{}", out.describe());
}
