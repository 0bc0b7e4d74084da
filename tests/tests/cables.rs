//! A subhost's cables against what the host does to them meanwhile: a
//! bridge deleted and made again under a hibernating subhost, a netns file
//! left empty by an interrupted start, a link that holds a cable's name.
//! Every test has its own `$SUBHOST`, names and bridges; its guards stop the
//! subhosts and remove what it made even when it fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use subhost_tests::json::parse_json;
use subhost_tests::*;

const LIMIT: Duration = LAUNCH_LIMIT;

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

/// `ip ARGS`, which must succeed; its stdout.
fn ip(args: &[&str]) -> String {
    let out = run_timeout(&mut cmd("ip", args), LIMIT);
    assert_ok(&out);
    out.stdout_str()
}

fn has_link(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The interfaces `ip -o link show master BR` lists.
fn ports(br: &str) -> Vec<String> {
    ip(&["-o", "link", "show", "master", br])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// The `problems` of `status --json NAME`, and its state.
fn problems(s: &Subhost) -> (String, Vec<String>) {
    let out = s.run(&["status", "--json", &s.name]);
    assert_ok(&out);
    let j = parse_json(&out.stdout_str());
    let problems = j
        .get("problems")
        .arr()
        .iter()
        .map(|p| p.str().to_string())
        .collect();
    (j.get("state").str().to_string(), problems)
}

/// `ping` from netns `from` to `addr`: one answer within 3 s.
fn pings(from: &str, addr: &str) -> bool {
    let out = run_timeout(
        &mut cmd(
            "ip",
            ["netns", "exec", from, "ping", "-c", "1", "-W", "3", addr],
        ),
        LIMIT,
    );
    out.status.success() && out.stdout_str().contains("1 received")
}

#[test]
fn a_bridge_made_again_under_hibernating_subhosts_is_reported_and_replugged() {
    let br = Bridge::new();
    let config = format!("BRIDGES=({})\n", br.name);
    let a = Subhost::busybox("ca", &config);
    let b = Subhost::busybox("cb", &config);
    let net = std::process::id() % 250 + 1;
    let addr = |host: u32| format!("10.214.{net}.{host}");
    for (s, host) in [(&a, 1), (&b, 2)] {
        assert_ok(&s.sh("true"));
        let cidr = format!("{}/24", addr(host));
        ip(&["-n", &s.name, "addr", "add", &cidr, "dev", "eth0"]);
    }
    let (a0, b0) = (format!("{}0", a.name), format!("{}0", b.name));
    assert!(
        pings(&a.name, &addr(2)),
        "no traffic before the bridge went"
    );
    assert_eq!(problems(&a), ("hibernating".to_string(), vec![]));

    ip(&["link", "del", &br.name]);
    let (state, found) = problems(&a);
    assert_eq!(state, "hibernating", "{found:?}");
    let missing = format!("cable {a0}: bridge {} does not exist", br.name);
    assert!(found.iter().any(|p| p.contains(&missing)), "{found:?}");
    let table = a.run(&["list"]);
    assert!(
        table.stdout_str().contains(&missing),
        "{}",
        table.describe()
    );
    // As a cold start with a missing bridge: refused, naming it, and what
    // is set up stays set up.
    let out = a.sh("true");
    assert_eq!(out.code(), 125, "{}", out.describe());
    let how = format!("ip link add {} type bridge", br.name);
    assert!(out.stderr_str().contains(&how), "{}", out.describe());
    assert!(
        has_link(&a0) && a.live_mounted(),
        "the failed start undid the hibernation"
    );

    ip(&["link", "add", &br.name, "type", "bridge"]);
    ip(&["link", "set", &br.name, "up"]);
    let (state, found) = problems(&a);
    assert_eq!(state, "hibernating", "{found:?}");
    let out_of = format!("cable {a0}: not in its bridge {} (in no bridge)", br.name);
    assert!(found.iter().any(|p| p.contains(&out_of)), "{found:?}");
    let plan = a.run(&["start", "--dry-run", &a.name, "--", "true"]);
    assert_ok(&plan);
    let step = format!("ip link set {a0} master {} up", br.name);
    assert!(plan.stdout_str().contains(&step), "{}", plan.describe());
    assert!(ports(&br.name).is_empty(), "--dry-run plugged a cable in");

    assert_ok(&a.sh("true"));
    assert_eq!(ports(&br.name), vec![a0.clone()]);
    assert_eq!(problems(&a), ("hibernating".to_string(), vec![]));
    assert_ok(&b.sh("true"));
    let mut both = ports(&br.name);
    both.sort();
    let mut want = vec![a0.clone(), b0.clone()];
    want.sort();
    assert_eq!(both, want);
    assert!(pings(&a.name, &addr(2)), "no traffic after the re-plug");

    for s in [&a, &b] {
        assert_ok(&s.stop());
        assert!(!has_link(&format!("{}0", s.name)));
        assert!(!netns_file(&s.name).exists());
    }
}

fn netns_file(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// `/run/netns/NAME` as an interrupted start leaves it: a file with no
/// netns mounted on it. Removed on drop if the launcher did not.
struct StrayFile(PathBuf);

impl StrayFile {
    fn new(name: &str, content: &str) -> StrayFile {
        // `ip netns add` of a throwaway name makes /run/netns the way the
        // launcher needs it (a shared mount).
        let helper = unique_name("cx");
        ip(&["netns", "add", &helper]);
        ip(&["netns", "del", &helper]);
        let path = netns_file(name);
        std::fs::write(&path, content).unwrap();
        StrayFile(path)
    }
}

impl Drop for StrayFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn an_empty_netns_file_is_named_and_stop_clears_it() {
    let br = Bridge::new();
    let s = Subhost::busybox("ce", &format!("BRIDGES=({})\n", br.name));
    let stray = StrayFile::new(&s.name, "");
    let what = format!(
        "{} is not a network namespace (an empty file left by an interrupted start)",
        stray.0.display()
    );
    let (state, found) = problems(&s);
    assert_eq!(state, "broken", "{found:?}");
    assert!(found.iter().any(|p| p.contains(&what)), "{found:?}");

    let out = s.sh("true");
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(out.stderr_str().contains(&what), "{}", out.describe());
    assert!(
        stray.0.exists(),
        "a failed start removed what it did not make"
    );
    assert!(!s.live_mounted(), "the failed start left live mounted");

    let out = s.stop();
    assert_ok(&out);
    assert!(
        out.stdout_str()
            .contains(&format!("subhost {}: stopped", s.name)),
        "{}",
        out.describe()
    );
    assert!(!stray.0.exists(), "stop left the empty file");
    assert_ok(&s.sh("true"));
    assert_ok(&s.stop());
}

#[test]
fn a_netns_file_with_data_in_it_is_never_removed() {
    let s = Subhost::busybox("cd", "");
    let stray = StrayFile::new(&s.name, "someone's notes\n");
    let (state, found) = problems(&s);
    assert_eq!(state, "broken", "{found:?}");
    let what = format!(
        "{} is not a network namespace but a non-empty file",
        stray.0.display()
    );
    assert!(found.iter().any(|p| p.contains(&what)), "{found:?}");
    let out = s.stop();
    assert_eq!(out.code(), 1, "{}", out.describe());
    assert!(out.stderr_str().contains(&what), "{}", out.describe());
    assert_eq!(
        std::fs::read_to_string(&stray.0).unwrap(),
        "someone's notes\n"
    );
    let out = s.sh("true");
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(out.stderr_str().contains(&what), "{}", out.describe());
    assert_eq!(
        std::fs::read_to_string(&stray.0).unwrap(),
        "someone's notes\n"
    );
}

/// A veth made by hand under a cable's name, deleted on drop.
struct Veth(String);

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = run_timeout(&mut cmd("ip", ["link", "del", &self.0]), LIMIT);
    }
}

#[test]
fn a_link_holding_a_cable_name_is_named_and_kept() {
    let br = Bridge::new();
    let s = Subhost::busybox("cl", &format!("BRIDGES=({})\n", br.name));
    let host = format!("{}0", s.name);
    let peer = unique_name("cp");
    ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
    let _veth = Veth(host.clone());
    let out = s.sh("true");
    assert_eq!(out.code(), 125, "{}", out.describe());
    let err = out.stderr_str();
    assert!(
        err.contains(&format!("the name {host} is taken by host link {host}"))
            && err.contains(&format!(
                "other end {peer} is in the host's network namespace"
            ))
            && err.contains(&format!("`ip link del {host}`")),
        "{}",
        out.describe()
    );
    // Named at once: nothing was waited for.
    assert!(
        out.elapsed < Duration::from_millis(900),
        "{}",
        out.describe()
    );
    assert!(
        has_link(&host) && has_link(&peer),
        "start deleted a link not its own"
    );
    assert!(
        !netns_file(&s.name).exists(),
        "the failed start left its netns"
    );
}

/// A netns made by the test, deleted (with the veths in it) on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run_timeout(&mut cmd("ip", ["netns", "del", &self.0]), LIMIT);
    }
}

#[test]
fn a_cable_name_held_by_a_veth_into_another_netns_is_named() {
    // An unattached cable: no bridge is involved.
    let s = Subhost::busybox("cn", "BRIDGES=(=)\n");
    let other = Netns(unique_name("co"));
    ip(&["netns", "add", &other.0]);
    let host = format!("{}0", s.name);
    ip(&[
        "link", "add", &host, "type", "veth", "peer", "name", "eth9", "netns", &other.0,
    ]);
    let out = s.sh("true");
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr_str().contains(&format!(
            "the name {host} is taken by host link {host} (a veth whose other end is in netns {})",
            other.0
        )) && out.stderr_str().contains(&format!("`ip link del {host}`")),
        "{}",
        out.describe()
    );
    assert!(has_link(&host), "start deleted a link not its own");
}

/// What `ip netns del NAME` does, from this process: no exec between it
/// and what the test does next.
fn netns_del(name: &str) {
    let file = netns_file(name);
    nix::mount::umount2(&file, nix::mount::MntFlags::MNT_DETACH).expect("umount netns");
    std::fs::remove_file(&file).expect("remove netns file");
}

/// A process in netns `name` for `seconds`: it keeps the namespace, and so
/// the host ends of its cables, alive after the name is deleted.
fn hold_netns(name: &str, seconds: &str) -> std::process::Child {
    let child = spawn_group(
        cmd("ip", ["netns", "exec", name, "sleep", seconds])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let ns = std::fs::metadata(netns_file(name)).unwrap();
    let inside = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{}/ns/net", child.id()))
            .is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev())
    };
    assert!(
        wait_until(Duration::from_secs(5), inside),
        "holder not in netns {name}"
    );
    child
}

#[test]
fn start_waits_for_the_cables_of_a_deleted_netns_to_go() {
    let br = Bridge::new();
    let s = Subhost::busybox("cw", &format!("BRIDGES=({0} {0})\n", br.name));
    assert_ok(&s.sh("true"));
    // The kernel removes the host ends only once nothing holds the netns:
    // here after 0.6 s, a slow version of its own cleanup after a delete.
    let holder = hold_netns(&s.name, "0.6");
    netns_del(&s.name);
    assert!(has_link(&format!("{}0", s.name)));
    let out = s.sh("true");
    assert_ok(&out);
    let _ = wait_timeout(holder, LIMIT);
    assert_eq!(ports(&br.name).len(), 2);
    assert_ok(&s.stop());
    assert!(!has_link(&format!("{}0", s.name)));
}

#[test]
fn cables_of_a_deleted_netns_that_stay_are_named_after_a_second() {
    let s = Subhost::busybox("cs", "BRIDGES=(=)\n");
    assert_ok(&s.sh("true"));
    let holder = hold_netns(&s.name, "4");
    netns_del(&s.name);
    let host = format!("{}0", s.name);
    let out = s.sh("true");
    assert_eq!(out.code(), 125, "{}", out.describe());
    let err = out.stderr_str();
    assert!(
        err.contains(&format!("the names {host} are still taken 1s later"))
            && err.contains("lsns -t net")
            && err.contains(&format!("`ip link del {host}`")),
        "{}",
        out.describe()
    );
    assert!(out.elapsed >= Duration::from_secs(1), "{}", out.describe());
    assert!(has_link(&host), "start deleted a link not provably its own");
    let _ = wait_timeout(holder, LIMIT);
    assert!(wait_until(Duration::from_secs(5), || !has_link(&host)));
    assert_ok(&s.sh("true"));
    assert_ok(&s.stop());
}

#[test]
fn start_right_after_the_netns_was_deleted_succeeds() {
    let br = Bridge::new();
    let s = Subhost::busybox("cr", &format!("BRIDGES=({0} {0})\n", br.name));
    for round in 0..20 {
        assert_ok(&s.sh("true"));
        // What a stop killed right after deleting the netns leaves: the
        // kernel removes the host ends some milliseconds later.
        netns_del(&s.name);
        let out = s.sh("true");
        assert!(out.status.success(), "round {round}: {}", out.describe());
    }
    assert_ok(&s.stop());
    assert!(!has_link(&format!("{}0", s.name)));
}
