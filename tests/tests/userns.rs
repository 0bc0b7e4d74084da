//! Unprivileged subhosts (`USERNS`) on the real kernel: who owns what root
//! inside writes, that the host's base stays as it was, what root inside
//! may do with its own namespaces, and the bad settings refused up front.
//! Every other system test also runs with `USERNS=pick` in the second pass
//! of `tests/run` (SUBHOST_TEST_USERNS=1).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use subhost_tests::*;

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

/// `BASE:COUNT` as recorded beside the subhost.
fn recorded_range(s: &Subhost) -> (u32, u32) {
    let text = std::fs::read_to_string(s.dir().join("userns")).expect("the range is recorded");
    let (b, c) = text.trim().split_once(':').expect("BASE:COUNT");
    (b.parse().unwrap(), c.parse().unwrap())
}

fn owner(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid())
}

#[test]
fn files_made_inside_land_in_root_as_host_ids_of_the_range_and_the_base_stays() {
    let base = TempDir::new();
    busybox_root(base.path());
    std::fs::write(base.path().join("etc/motd"), "from the base\n").unwrap();
    let before = std::fs::read_dir(base.path().join("etc")).unwrap().count();
    let s = Subhost::new(
        "u",
        &format!("LOWER={}\nUSERNS=pick\n", base.path().display()),
    );
    let out = s.sh("id -u; id -g; stat -c '%u:%g' /etc/motd /bin/busybox; \
         echo changed > /etc/motd; echo new > /root/new; mkdir -p /srv/made; \
         chown 1000:1000 /srv/made; echo done");
    assert_ok(&out);
    let lines: Vec<String> = out.stdout_str().lines().map(String::from).collect();
    assert_eq!(
        lines,
        ["0", "0", "0:0", "0:0", "done"],
        "{}",
        out.describe()
    );

    let (b, count) = recorded_range(&s);
    assert_eq!(count, 65536);
    assert!(b >= 524288 && b % 65536 == 0, "{b}");
    // What root inside wrote is the range's root on the host, what it gave
    // to uid 1000 is BASE+1000; nothing is host root's.
    for p in ["etc/motd", "etc", "root/new", "root", "srv"] {
        assert_eq!(owner(&s.root().join(p)), (b, b), "root/{p}");
    }
    assert_eq!(owner(&s.root().join("srv/made")), (b + 1000, b + 1000));
    assert_eq!(owner(&s.root()), (b, b), "the upper's top");
    // The base is as it was: contents, owners, no new entries.
    assert_eq!(
        std::fs::read_to_string(base.path().join("etc/motd")).unwrap(),
        "from the base\n"
    );
    assert_eq!(owner(&base.path().join("etc/motd")), (0, 0));
    assert_eq!(owner(&base.path().join("etc")), (0, 0));
    assert!(!base.path().join("root/new").exists());
    assert!(!base.path().join("srv").exists());
    assert_eq!(
        std::fs::read_dir(base.path().join("etc")).unwrap().count(),
        before
    );
    // `status` shows the range.
    let out = s.run(&["status", "--json", &s.name]);
    assert_ok(&out);
    assert!(
        out.stdout_str().contains(&format!("\"base\": {b}")),
        "{}",
        out.describe()
    );
}

#[test]
fn root_inside_owns_its_namespaces_and_nothing_of_the_host() {
    let br = Bridge::new();
    let s = Subhost::busybox("u", &format!("BRIDGES=({})\nUSERNS=pick\n", br.name));
    let out = s.sh("ip addr add 10.99.0.1/24 dev eth0 && echo addr=ok; \
         echo 1 > /proc/sys/net/ipv4/conf/eth0/forwarding && echo sysctl=ok; \
         hostname renamed && echo hostname=ok; \
         mkdir -p /mnt && mount -t tmpfs none /mnt && echo mount=ok; \
         mount -t cgroup2 none /sys/fs/cgroup && mkdir /sys/fs/cgroup/inner && echo cgroup=ok; \
         mknod /tmp/disk b 8 0 || echo mknod=refused; \
         echo 1 > /proc/sys/kernel/sysrq 2>/dev/null || echo sysrq=refused");
    let text = out.stdout_str();
    for want in [
        "addr=ok",
        "sysctl=ok",
        "hostname=ok",
        "mount=ok",
        "mknod=refused",
        "sysrq=refused",
    ] {
        assert!(text.contains(want), "no {want}: {}", out.describe());
    }
    // Delegation needs cgroup v2 for the subhost's cgroup (pure or hybrid).
    let v2 = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(" - cgroup2 ");
    if v2 {
        assert!(text.contains("cgroup=ok"), "{}", out.describe());
    }
    // `ip netns exec` from the host still works on the subhost's netns.
    let out = run_timeout(
        &mut cmd(
            "ip",
            ["netns", "exec", &s.name, "ip", "-o", "addr", "show", "eth0"],
        ),
        LAUNCH_LIMIT,
    );
    assert!(
        out.stdout_str().contains("10.99.0.1/24"),
        "{}",
        out.describe()
    );
    // stop removes the sub-cgroup made inside along with the subhost's.
    assert_ok(&s.stop());
    assert!(!s.live_mounted());
}

#[test]
fn bad_ranges_are_refused_at_their_line_before_anything_is_set_up() {
    let s = Subhost::busybox("u", "");
    // Another subhost's recorded range, in the same $SUBHOST.
    let b = 1_048_576;
    std::fs::create_dir_all(s.base().join("other")).unwrap();
    std::fs::write(s.base().join("other/userns"), format!("{b}:65536\n")).unwrap();
    let cases = [
        (
            format!("HOSTNAME=x\nUSERNS={}\n", b + 100),
            2,
            "overlaps subhost other",
        ),
        ("USERNS=1000\n".to_string(), 1, "host's own users"),
        ("USERNS=\"yes please\"\n".to_string(), 1, "is not no, pick"),
        ("USERNS=0:65536\n".to_string(), 1, "host's own users"),
    ];
    for (config, line, what) in cases {
        std::fs::write(s.dir().join("config"), &config).unwrap();
        let out = s.sh("true");
        assert_eq!(out.code(), 125, "{config}: {}", out.describe());
        let err = out.stderr_str();
        let at = format!("{}:{line}: ", s.dir().join("config").display());
        assert!(err.contains(&at) && err.contains(what), "{config}: {err}");
        assert!(!s.live_mounted(), "{config}: mounted");
        assert!(!s.dir().join("userns").exists(), "{config}: recorded");
    }
}

#[test]
fn create_userns_picks_and_records_a_range() {
    let tmp = TempDir::new();
    let name = unique_name("u");
    let out = run_timeout(
        cmd(launch_bin(), ["create", &name, "--lower", "/", "--userns"]).env("SUBHOST", tmp.path()),
        LAUNCH_LIMIT,
    );
    assert_ok(&out);
    let dir = tmp.path().join(&name);
    let config = std::fs::read_to_string(dir.join("config")).unwrap();
    assert!(config.contains("\nUSERNS=pick\n"), "{config}");
    let range = std::fs::read_to_string(dir.join("userns")).unwrap();
    assert!(
        out.stdout_str().contains("user namespace"),
        "{}",
        out.describe()
    );
    let out = run_timeout(
        cmd(launch_bin(), ["status", &name]).env("SUBHOST", tmp.path()),
        LAUNCH_LIMIT,
    );
    assert_ok(&out);
    let base = range.trim().split(':').next().unwrap();
    assert!(
        out.stdout_str()
            .contains(&format!("userns:   host ids {base}..")),
        "{}",
        out.describe()
    );
}

#[test]
fn a_detached_subhost_and_its_boot_and_halt_run_as_root_of_its_user_namespace() {
    let base = TempDir::new();
    busybox_root(base.path());
    let s = Subhost::new(
        "u",
        &format!(
            "LOWER={}\nUSERNS=pick\nBOOT=(sh -c 'id -u > /boot-uid')\n\
             HALT=(sh -c 'id -u > /halt-uid')\n",
            base.path().display()
        ),
    );
    let out = s.run(&["start", "--detach", &s.name]);
    assert_ok(&out);
    let (b, _) = recorded_range(&s);
    let record = s.init_record();
    assert!(wait_until(LAUNCH_LIMIT, || record.exists()));
    let pid: i32 = std::fs::read_to_string(&record)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // On the host, the init is the range's root, not root.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let b_text = b.to_string();
    assert_eq!(
        uids.split_whitespace().skip(1).collect::<Vec<_>>(),
        [b_text.as_str(); 4],
        "{status}"
    );
    assert!(wait_until(LAUNCH_LIMIT, || s
        .root()
        .join("boot-uid")
        .exists()));
    assert_ok(&s.stop());
    // BOOT and HALT: root inside, host uid BASE on the files they wrote.
    for f in ["boot-uid", "halt-uid"] {
        let p = s.root().join(f);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "0\n", "{f}");
        assert_eq!(owner(&p), (b, b), "{f}");
    }
}

#[test]
fn a_hibernating_subhost_keeps_its_range_and_mode_until_stopped() {
    let s = Subhost::busybox("u", "USERNS=pick\n");
    assert_ok(&s.sh("true"));
    let (b, _) = recorded_range(&s);
    let other = b + 65536 * 3;
    std::fs::write(s.dir().join("config"), format!("USERNS={other}\n")).unwrap();
    let out = s.sh("true");
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr_str().contains(&format!(
            "{}:1: USERNS={other}:65536, but subhost {} is set up with the range {b}:65536",
            s.dir().join("config").display(),
            s.name
        )),
        "{}",
        out.describe()
    );
    assert_eq!(recorded_range(&s).0, b, "the record changed");
    // Without USERNS, a subhost set up with one is refused the same way.
    std::fs::write(s.dir().join("config"), "").unwrap();
    let out = s.sh("true");
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr_str().contains("set up with a user namespace"),
        "{}",
        out.describe()
    );
    // Stopped, the new range applies.
    assert_ok(&s.stop());
    std::fs::write(s.dir().join("config"), format!("USERNS={other}\n")).unwrap();
    let out = s.sh("id -u; stat -c %u /");
    assert_ok(&out);
    assert_eq!(recorded_range(&s).0, other);
}
