use super::*;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

const WAIT: Duration = Duration::from_secs(2);

/// `sht` + tag + pid + counter, at most 12 bytes so `NAME99` fits IFNAMSIZ.
fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!("sht{tag}{:x}{n}", std::process::id() % 0x10000);
    assert!(name.len() <= 12, "test name {name} too long");
    name
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "netns tests need root (they create namespaces, veths and bridges)"
    );
}

/// Runs a command under `timeout`, returning (success, stdout + stderr).
fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("10")
        .args(args)
        .output()
        .expect("running timeout(1)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn run_ok(args: &[&str]) -> String {
    let (ok, text) = run(args);
    assert!(ok, "{args:?} failed: {text}");
    text
}

/// A test bridge, up, deleted on drop.
struct Bridge(String);

impl Bridge {
    fn new() -> Bridge {
        let name = unique("b");
        run_ok(&["ip", "link", "add", &name, "type", "bridge"]);
        let br = Bridge(name);
        run_ok(&["ip", "link", "set", &br.0, "up"]);
        br
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        run(&["ip", "link", "del", &self.0]);
    }
}

/// Deletes the namespace (and so its cables) on drop, even when the test
/// failed before its own `delete`.
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        if delete(&self.0, WAIT).is_err() {
            run(&["ip", "netns", "del", &self.0]);
        }
    }
}

fn cable(host_if: String, inner_if: &str, bridge: Option<&str>, mac: Option<[u8; 6]>) -> Link {
    Link {
        host_if,
        inner_if: inner_if.into(),
        bridge: bridge.map(Into::into),
        mac,
    }
}

/// Flags of `ip -o link show DEV` output, e.g. `BROADCAST,UP,LOWER_UP`.
fn flags(line: &str) -> Vec<&str> {
    let start = line.find('<').expect("flags in ip output") + 1;
    let end = line[start..].find('>').unwrap() + start;
    line[start..end].split(',').collect()
}

fn netns_listed(name: &str) -> bool {
    run_ok(&["ip", "netns", "list"])
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn create_two_cables_then_delete_and_recreate() {
    require_root();
    let br = Bridge::new();
    let name = unique("c");
    let _guard = NsGuard(name.clone());
    let mac = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
    let links = [
        cable(format!("{name}0"), "eth0", Some(&br.0), Some(mac)),
        cable(format!("{name}1"), "eth1", None, None),
    ];
    create(&name, &links).expect("create");
    assert!(exists(&name));
    assert!(netns_listed(&name));

    let h0 = run_ok(&["ip", "-o", "link", "show", &format!("{name}0")]);
    assert!(flags(&h0).contains(&"UP"), "host end 0 not up: {h0}");
    assert!(
        h0.contains(&format!("master {} ", br.0)),
        "not on bridge: {h0}"
    );
    let h1 = run_ok(&["ip", "-o", "link", "show", &format!("{name}1")]);
    assert!(flags(&h1).contains(&"UP"), "host end 1 not up: {h1}");
    assert!(
        !h1.contains("master"),
        "unattached cable has a master: {h1}"
    );
    assert_eq!(
        host_links(&name),
        vec![format!("{name}0"), format!("{name}1")]
    );

    let e0 = run_ok(&["ip", "-n", &name, "-o", "link", "show", "eth0"]);
    assert!(flags(&e0).contains(&"UP"), "eth0 not up: {e0}");
    assert!(
        e0.contains("link/ether 02:00:5e:10:20:30 "),
        "eth0 MAC: {e0}"
    );
    let e1 = run_ok(&["ip", "-n", &name, "-o", "link", "show", "eth1"]);
    assert!(flags(&e1).contains(&"UP"), "eth1 not up: {e1}");
    let lo = run_ok(&["ip", "-n", &name, "-o", "link", "show", "lo"]);
    assert!(flags(&lo).contains(&"UP"), "lo not up: {lo}");

    assert!(delete(&name, WAIT).expect("delete"));
    assert_eq!(host_links(&name), Vec::<String>::new());
    assert!(!exists(&name));
    assert!(!netns_listed(&name));
    // Straight away: the host-side names must be free again.
    create(&name, &links).expect("create right after delete");
    assert!(delete(&name, WAIT).expect("second delete"));
}

#[test]
fn existing_netns_is_refused() {
    require_root();
    let name = unique("e");
    let _guard = NsGuard(name.clone());
    create(&name, &[]).expect("create");
    let err = format!("{:#}", create(&name, &[]).unwrap_err());
    assert!(
        err.contains("already exists") && err.contains(&name),
        "{err}"
    );
    assert!(
        exists(&name),
        "the refused create removed the existing netns"
    );
}

#[test]
fn missing_bridge_leaves_nothing() {
    require_root();
    let name = unique("m");
    let _guard = NsGuard(name.clone());
    let missing = unique("x");
    let links = [
        cable(format!("{name}0"), "eth0", None, None),
        cable(format!("{name}1"), "eth1", Some(&missing), None),
    ];
    let err = format!("{:#}", create(&name, &links).unwrap_err());
    assert!(
        err.contains(&missing),
        "error does not name the bridge: {err}"
    );
    assert!(
        err.contains("cable 1"),
        "error does not name the cable: {err}"
    );
    assert!(
        err.contains(&format!("ip link add {missing} type bridge")),
        "{err}"
    );
    assert!(!exists(&name));
    assert!(host_links(&name).is_empty());
}

/// Writes `value` to the sysctl file `knob` as root of the user
/// namespace `user`, inside the netns `net`, in a child; returns errno
/// (0 on success).
fn sysctl_as_root_inside(user: &OwnedFd, net: &OwnedFd, knob: &str, value: &str) -> i32 {
    let knob = std::ffi::CString::new(knob).unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    // SAFETY: the child makes only raw syscalls on data prepared above,
    // then _exits.
    match unsafe { libc::fork() } {
        0 => unsafe {
            let fail = |code: i32| {
                let e = *libc::__errno_location();
                let v = if e == 0 { code } else { e };
                libc::write(w.as_raw_fd(), (&v as *const i32).cast(), 4);
                libc::_exit(1)
            };
            if libc::setns(user.as_raw_fd(), libc::CLONE_NEWUSER) != 0 {
                fail(1000);
            }
            if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                fail(1001);
            }
            if libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                fail(1002);
            }
            let fd = libc::open(knob.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                fail(1003);
            }
            if libc::write(fd, value.as_ptr().cast(), value.len()) < 0 {
                fail(1004);
            }
            let ok = 0i32;
            libc::write(w.as_raw_fd(), (&ok as *const i32).cast(), 4);
            libc::_exit(0)
        },
        pid => {
            assert!(pid > 0);
            drop(w);
            let mut buf = [0u8; 4];
            let n = nix::unistd::read(&r, &mut buf).unwrap();
            nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
            assert_eq!(n, 4);
            i32::from_ne_bytes(buf)
        }
    }
}

#[test]
fn a_netns_owned_by_a_user_namespace_is_configured_by_its_root() {
    require_root();
    let name = unique("u");
    let _guard = NsGuard(name.clone());
    let range = crate::userns::Range {
        base: 3_145_728,
        count: 65536,
    };
    let ns = crate::userns::acquire(range, true).unwrap();
    let links = [cable(format!("{name}0"), "eth0", None, None)];
    create_from(&name, &links, &Addressing::default(), ns.net).expect("create_from");
    // The named netns gives its owner back: what a wake uses.
    let owner = owner(&name).unwrap();
    assert!(crate::userns::same_ns(&owner, &ns.user));
    // The cable was made from the host, and `ip netns exec` still works.
    assert!(host_links(&name).contains(&format!("{name}0")));
    let out = run_ok(&[
        "ip", "netns", "exec", &name, "ip", "-o", "link", "show", "eth0",
    ]);
    assert!(out.contains("eth0"), "{out}");
    // Root of the user namespace configures its netns...
    let net = open(&name).unwrap();
    let knob = "/proc/sys/net/ipv4/conf/eth0/forwarding";
    assert_eq!(sysctl_as_root_inside(&owner, &net, knob, "1"), 0);
    assert_eq!(
        run_ok(&["ip", "netns", "exec", &name, "cat", knob]).trim(),
        "1"
    );
    // ...and not one the host made, which is what the ownership is for.
    let host_made = unique("h");
    let _g2 = NsGuard(host_made.clone());
    create(&host_made, &[]).unwrap();
    let other = open(&host_made).unwrap();
    let knob = "/proc/sys/net/ipv4/conf/lo/forwarding";
    assert_eq!(
        sysctl_as_root_inside(&owner, &other, knob, "1"),
        libc::EPERM
    );
    drop((net, other));
    assert!(delete(&name, WAIT).unwrap());
    assert!(host_links(&name).is_empty());
}

#[test]
fn only_an_empty_file_in_place_of_a_netns_is_removed() {
    require_root();
    let name = unique("f");
    let _guard = NsGuard(name.clone());
    assert_eq!(entry(&name), Entry::Absent);
    create(&name, &[]).unwrap();
    assert_eq!(entry(&name), Entry::Netns);
    assert!(exists(&name) && stray(&name).is_none());
    assert!(delete(&name, WAIT).unwrap());

    std::fs::write(path(&name), "").unwrap();
    assert_eq!(entry(&name), Entry::Empty);
    assert!(!exists(&name));
    let why = stray(&name).unwrap();
    assert!(
        why.contains("an empty file left by an interrupted start"),
        "{why}"
    );
    let err = format!("{:#}", owner(&name).unwrap_err());
    assert!(
        err.contains("an empty file left by an interrupted start"),
        "{err}"
    );
    assert!(!err.contains("tty"), "{err}");
    assert!(delete(&name, WAIT).unwrap());
    assert_eq!(entry(&name), Entry::Absent);

    std::fs::write(path(&name), "data").unwrap();
    assert_eq!(entry(&name), Entry::Other("a non-empty file"));
    let err = format!("{:#}", delete(&name, WAIT).unwrap_err());
    assert!(
        err.contains("is not a network namespace but a non-empty file"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(path(&name)).unwrap(), "data");
    std::fs::remove_file(path(&name)).unwrap();
}

#[test]
fn a_cable_out_of_its_bridge_is_found_and_plugged_back_in() {
    require_root();
    let br = Bridge::new();
    let name = unique("g");
    let _guard = NsGuard(name.clone());
    let links = [
        cable(format!("{name}0"), "eth0", Some(&br.0), None),
        cable(format!("{name}1"), "eth1", None, None),
    ];
    create(&name, &links).unwrap();
    assert_eq!(unplugged(&links), vec![]);
    run_ok(&["ip", "link", "del", &br.0]);
    let out = unplugged(&links);
    assert_eq!(
        out,
        vec![Plug {
            cable: 0,
            host_if: format!("{name}0"),
            bridge: br.0.clone(),
            master: None,
            up: true,
        }]
    );
    assert_eq!(
        out[0].to_string(),
        format!("ip link set {name}0 master {} up", br.0)
    );
    assert!(out[0].problem(&name).contains("does not exist"));
    let err = format!("{:#}", replug(&name, &out).unwrap_err());
    assert!(
        err.contains(&format!("ip link add {} type bridge", br.0)),
        "{err}"
    );
    run_ok(&["ip", "link", "add", &br.0, "type", "bridge"]);
    let out = unplugged(&links);
    assert!(
        out[0]
            .problem(&name)
            .contains(&format!("not in its bridge {} (in no bridge)", br.0)),
        "{out:?}"
    );
    run_ok(&["ip", "link", "set", &format!("{name}0"), "down"]);
    replug(&name, &unplugged(&links)).unwrap();
    assert_eq!(unplugged(&links), vec![]);
    let h0 = run_ok(&["ip", "-o", "link", "show", &format!("{name}0")]);
    assert!(h0.contains(&format!("master {} ", br.0)), "{h0}");
    assert!(flags(&h0).contains(&"UP"), "{h0}");
    assert!(delete(&name, WAIT).unwrap());
}

#[test]
fn not_a_bridge_is_refused() {
    require_root();
    let name = unique("n");
    let _guard = NsGuard(name.clone());
    let links = [cable(format!("{name}0"), "eth0", Some("lo"), None)];
    let err = format!("{:#}", create(&name, &links).unwrap_err());
    assert!(err.contains("lo is a plain device, not a bridge"), "{err}");
    assert!(!exists(&name));
}

#[test]
fn failure_after_first_cable_rolls_back() {
    require_root();
    let br = Bridge::new();
    let name = unique("r");
    let _guard = NsGuard(name.clone());
    // The second host end collides with the first one's name: EEXIST
    // after the namespace and the first cable exist.
    let links = [
        cable(format!("{name}0"), "eth0", Some(&br.0), None),
        cable(format!("{name}0"), "eth1", None, None),
    ];
    let err = format!("{:#}", create(&name, &links).unwrap_err());
    assert!(
        err.contains("cable 1") && err.contains("File exists"),
        "{err}"
    );
    assert!(!exists(&name), "netns left behind");
    assert!(host_links(&name).is_empty(), "cable left behind");
    assert!(!Path::new("/sys/class/net")
        .join(format!("{name}0"))
        .exists());
}

#[test]
fn delete_is_idempotent_and_handles_half_made_states() {
    require_root();
    let name = unique("i");
    let _guard = NsGuard(name.clone());
    assert!(!delete(&name, WAIT).expect("delete of nothing"));

    create(&name, &[]).expect("create");
    assert!(delete(&name, WAIT).expect("delete"));
    assert!(!delete(&name, WAIT).expect("delete again"));

    // A crashed create: the file exists but nothing is mounted on it.
    ensure_run_dir_shared().unwrap();
    File::create(path(&name)).unwrap();
    assert!(delete(&name, WAIT).expect("delete of a bare file"));
    assert!(!path(&name).exists());

    // A cable whose peer never left the host: the kernel will not
    // remove it, so delete must.
    let peer = format!("{name}p");
    run_ok(&[
        "ip",
        "link",
        "add",
        &format!("{name}0"),
        "type",
        "veth",
        "peer",
        "name",
        &peer,
    ]);
    assert!(delete(&name, WAIT).expect("delete of a half-made cable"));
    assert!(host_links(&name).is_empty());
    assert!(!Path::new("/sys/class/net").join(&peer).exists());
}

#[test]
fn delete_leaves_cables_of_a_longer_name_alone() {
    require_root();
    let short = unique("o");
    let long = format!("{short}1");
    assert!(long.len() <= 12);
    let _gs = NsGuard(short.clone());
    let _gl = NsGuard(long.clone());
    create(&short, &[cable(format!("{short}0"), "eth0", None, None)]).expect("create");
    // `{long}0` also reads as cable 10 of `short`.
    create(&long, &[cable(format!("{long}0"), "eth0", None, None)]).expect("create");
    // `{long}0` reads as a cable of `short`, but its peer is in `long`.
    assert_eq!(cables_of(&short), vec![format!("{short}0")]);
    assert_eq!(cables_of(&long), vec![format!("{long}0")]);
    assert!(delete(&short, WAIT).expect("delete of the shorter name"));
    assert_eq!(host_links(&short), vec![format!("{long}0")]);
    assert!(exists(&long));
    assert!(delete(&long, WAIT).expect("delete of the longer name"));
    assert!(host_links(&short).is_empty());
}

#[test]
fn two_namespaces_on_one_bridge_ping() {
    require_root();
    let br = Bridge::new();
    let (a, b) = (unique("p"), unique("p"));
    let _ga = NsGuard(a.clone());
    let _gb = NsGuard(b.clone());
    let net = std::process::id() % 250 + 1;
    for (ns, host) in [(&a, 1), (&b, 2)] {
        let mac = [0x02, 0, 0, 0, 0, host as u8];
        create(
            ns,
            &[cable(format!("{ns}0"), "eth0", Some(&br.0), Some(mac))],
        )
        .expect("create");
        let addr = format!("10.213.{net}.{host}/24");
        run_ok(&["ip", "-n", ns, "addr", "add", &addr, "dev", "eth0"]);
    }
    let target = format!("10.213.{net}.2");
    let out = run_ok(&[
        "ip", "netns", "exec", &a, "ping", "-c", "1", "-W", "3", &target,
    ]);
    assert!(out.contains("1 received"), "{out}");
    assert!(delete(&a, WAIT).unwrap() && delete(&b, WAIT).unwrap());
}

#[test]
fn plan_reads_like_ip() {
    let links = [
        cable(
            "web0".into(),
            "eth0",
            Some("br0"),
            Some([2, 0, 0, 0, 1, 0xab]),
        ),
        cable("web1".into(), "eth1", None, None),
    ];
    assert_eq!(
        links[0].to_string(),
        "ip link add web0 master br0 up type veth peer name eth0 address 02:00:00:00:01:ab"
    );
    assert_eq!(
        plan("web", &links).to_string(),
        "ip netns add web\n\
         ip link add web0 master br0 up type veth peer name eth0 netns web address 02:00:00:00:01:ab\n\
         ip link add web1 up type veth peer name eth1 netns web\n\
         ip -n web link set lo up\n\
         ip -n web link set eth0 up\n\
         ip -n web link set eth1 up"
    );
}

#[test]
fn cable_names() {
    assert!(is_cable_of("web", "web0"));
    assert!(is_cable_of("web", "web12"));
    assert!(!is_cable_of("web", "web"));
    assert!(!is_cable_of("web", "webx0"));
    assert!(!is_cable_of("web", "web1a"));
    assert!(!is_cable_of("we", "web0"));
    assert!(is_cable_of("web", "web99"));
    // Not indices host_if writes: another subhost's, or no cable.
    assert!(!is_cable_of("web", "web00"));
    assert!(!is_cable_of("web", "web01"));
    assert!(!is_cable_of("web", "web100"));
    assert!(!is_cable_of("web", "web+1"));
    assert!(!is_cable_of("ab", "ab100"), "cable 0 of ab10");
    assert!(is_cable_of("ab10", "ab100"));
    assert_eq!(CABLE_INDICES, crate::config::MAX_CABLES);
}

#[test]
fn bad_interface_names_are_refused() {
    let long = cable("a".repeat(16), "eth0", None, None);
    assert!(format!("{:#}", create("shtq", &[long]).unwrap_err()).contains("cable 0"));
    let lo = cable("shtq0".into(), "lo", None, None);
    assert!(format!("{:#}", create("shtq", &[lo]).unwrap_err()).contains("lo"));
}

#[test]
fn a_batch_answers_each_request_in_order_and_goes_on_after_a_failure() {
    require_root();
    let answers = std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let mut sock = Netlink::open().expect("netlink socket");
        sock.batch(vec![
            (netlink::get_link("lo"), 0),
            (netlink::get_link("shtnosuch0"), 0),
            (netlink::set_up("lo"), 0),
            (netlink::get_link("lo"), 0),
        ])
        .expect("batch")
    })
    .join()
    .expect("thread");
    assert_eq!(answers.len(), 4);
    let up = |a: &Result<Option<RouteNetlinkMessage>, netlink::NlError>| match a {
        Ok(Some(RouteNetlinkMessage::NewLink(m))) => Some(m.header.flags.contains(LinkFlags::Up)),
        _ => None,
    };
    assert_eq!(up(&answers[0]), Some(false), "{:?}", answers[0]);
    assert_eq!(
        answers[1].as_ref().err().map(|e| e.errno),
        Some(libc::ENODEV),
        "{:?}",
        answers[1]
    );
    assert!(matches!(answers[2], Ok(None)), "{:?}", answers[2]);
    // Made after the failure, in order: lo is up by then.
    assert_eq!(up(&answers[3]), Some(true), "{:?}", answers[3]);
}
