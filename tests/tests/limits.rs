//! Limits and privileges of a subhost on the real kernel: its cgroup bounds
//! memory and processes, `stop` kills through it, and the capability
//! bounding set really is smaller inside.

use std::path::{Path, PathBuf};
use std::time::Duration;

use subhost_tests::*;

const LIMIT: Duration = LAUNCH_LIMIT;

/// The cgroup directories `start` recorded for `s`.
fn cgroup_dirs(s: &Subhost) -> Vec<PathBuf> {
    std::fs::read_to_string(format!("/run/subhost/{}.cgroup", s.name))
        .unwrap_or_default()
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// Capability bit `n` of the `CapBnd` line in a /proc status text.
fn cap_bound(status: &str, n: u32) -> bool {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd line")
        .trim();
    u64::from_str_radix(hex, 16).unwrap() & (1 << n) != 0
}

const CAP_NET_RAW: u32 = 13;
const CAP_SYS_MODULE: u32 = 16;
const CAP_SYS_BOOT: u32 = 22;
const CAP_SYS_TIME: u32 = 25;
const CAP_SYS_ADMIN: u32 = 21;

#[test]
fn dropped_capabilities_are_gone_inside() {
    let s = Subhost::busybox("l", "");
    // reboot(2) from a child PID namespace only ends that namespace, so it
    // is a harmless probe: without CAP_SYS_BOOT the kernel refuses it.
    let out = s.sh("cat /proc/self/status; poweroff -f; echo poweroff=$?");
    assert!(out.status.success(), "{}", out.describe());
    let text = out.stdout_str();
    assert!(!cap_bound(&text, CAP_SYS_MODULE), "SYS_MODULE kept: {text}");
    assert!(!cap_bound(&text, CAP_SYS_TIME), "SYS_TIME kept: {text}");
    assert!(!cap_bound(&text, CAP_SYS_BOOT), "SYS_BOOT kept: {text}");
    // Dropped by default since the hardening: mounts let root out.
    assert!(!cap_bound(&text, CAP_SYS_ADMIN), "SYS_ADMIN kept: {text}");
    assert!(text.contains("poweroff=1"), "{}", out.describe());
    assert!(
        out.stderr_str().contains("not permitted"),
        "{}",
        out.describe()
    );

    // Kept, the same call goes through: the kernel signals the subhost's
    // init (which may or may not let the shell say so first).
    std::fs::write(
        s.dir().join("config"),
        "CAPS_KEEP=(SYS_BOOT)\nCAPS_DROP=(NET_RAW)\n",
    )
    .unwrap();
    let out = s.sh("cat /proc/self/status; poweroff -f; echo poweroff=$?");
    let text = out.stdout_str();
    assert!(cap_bound(&text, CAP_SYS_BOOT), "CAPS_KEEP ignored: {text}");
    assert!(!cap_bound(&text, CAP_NET_RAW), "CAPS_DROP ignored: {text}");
    assert!(!text.contains("poweroff=1"), "{}", out.describe());
    assert!(
        !out.stderr_str().contains("not permitted"),
        "{}",
        out.describe()
    );
}

#[test]
fn memory_max_kills_a_hog_inside_and_nothing_else() {
    let s = Subhost::busybox("l", "MEMORY_MAX=48M\n");
    // awk doubles a string until the cgroup's OOM killer stops it.
    let out = s.sh(
        "awk 'BEGIN { s = \"x\"; while (1) s = s s }'; echo hog=$?; \
         cat /sys/fs/cgroup/memory.max 2>/dev/null; echo alive",
    );
    assert!(out.status.success(), "{}", out.describe());
    let text = out.stdout_str();
    assert!(
        text.contains("hog=137"),
        "the hog was not OOM-killed: {}",
        out.describe()
    );
    assert!(text.contains("alive"), "{text}");
}

#[test]
fn pids_max_stops_a_fork_bomb() {
    let s = Subhost::busybox("l", "PIDS_MAX=20\n");
    // The bomb runs in a child shell, which dies when fork fails; the
    // outer shell then counts processes with builtins only (no fork left).
    let out = s.sh(
        "sh -c 'i=0; while [ $i -lt 60 ]; do sleep 5 & i=$((i+1)); done; echo all-started'; \
         echo bomb=$?; set -- /proc/[0-9]*; echo procs=$#; kill -9 -1",
    );
    let text = out.stdout_str();
    assert!(!text.contains("all-started"), "{}", out.describe());
    assert!(
        out.stderr_str().contains("can't fork"),
        "{}",
        out.describe()
    );
    let procs: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count: {}", out.describe()));
    assert!(procs <= 20, "{procs} processes despite PIDS_MAX=20");
}

#[test]
fn stop_kills_what_escaped_into_its_own_session() {
    let s = Subhost::busybox("l", "STOP_TIMEOUT=1\n");
    let child = s.spawn(&[
        "start",
        &s.name,
        "--",
        "/bin/sh",
        "-c",
        "setsid sh -c 'trap \"\" TERM; exec sleep 1000' & exec sleep 1000",
    ]);
    let procs = || -> Vec<i32> {
        cgroup_dirs(&s)
            .first()
            .and_then(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .map(|t| t.lines().filter_map(|l| l.parse().ok()).collect())
            .unwrap_or_default()
    };
    assert!(
        wait_until(LIMIT, || procs().len() >= 3),
        "subhost did not come up: {:?}",
        procs()
    );
    let inside = procs();
    let out = run_timeout(s.launch().args(["stop", &s.name]), LIMIT);
    assert!(out.status.success(), "{}", out.describe());
    let _ = wait_timeout(child, LIMIT);
    for pid in inside {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|st| {
                !st.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false);
        assert!(!alive, "process {pid} of the subhost survived stop");
    }
    for d in cgroup_dirs(&s) {
        assert!(!Path::new(&d).exists(), "cgroup {} left", d.display());
    }
    assert!(!Path::new(&format!("/run/subhost/{}.cgroup", s.name)).exists());
}

#[test]
fn a_hibernating_subhost_leaves_no_cgroup() {
    let s = Subhost::busybox("l", "PIDS_MAX=50\n");
    let out = s.sh("cat /proc/self/cgroup");
    assert!(out.status.success(), "{}", out.describe());
    // Inside, the cgroup namespace makes the subhost's own cgroup the root.
    assert!(
        out.stdout_str().lines().any(|l| l == "0::/"),
        "{}",
        out.describe()
    );
    assert!(!Path::new(&format!("/run/subhost/{}.cgroup", s.name)).exists());
}
