//! DNS, SEARCH and HOSTS: the subhost's `/etc/resolv.conf` and the marked
//! block of its `/etc/hosts`, written into its own root (an overlay's
//! upper, never the LOWER) at a cold start, read from inside; symlinks in
//! the root never lead the write out of it. Each subhost is an overlay
//! over a scratch busybox base of the test's own.

use std::path::Path;
use std::time::Duration;

use subhost_tests::*;

const BASE_RESOLV: &str = "nameserver 192.0.2.53\n";
const BASE_HOSTS: &str = "127.0.0.1\tlocalhost\n";

/// A scratch base: a busybox tree with its own resolv.conf and hosts.
fn scratch_base() -> TempDir {
    let base = TempDir::new();
    busybox_root(base.path());
    std::fs::write(base.path().join("etc/resolv.conf"), BASE_RESOLV).unwrap();
    std::fs::write(base.path().join("etc/hosts"), BASE_HOSTS).unwrap();
    base
}

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

fn assert_base_untouched(base: &Path) {
    assert_eq!(
        std::fs::read_to_string(base.join("etc/resolv.conf")).unwrap(),
        BASE_RESOLV
    );
    assert_eq!(
        std::fs::read_to_string(base.join("etc/hosts")).unwrap(),
        BASE_HOSTS
    );
}

const SHOW: &str = "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; \
                    ls -ln /etc/resolv.conf /etc/hosts";

#[test]
fn names_are_written_in_the_root_and_seen_inside() {
    let base = scratch_base();
    let s = Subhost::new(
        "",
        &format!(
            "LOWER={}\nDNS=(10.0.0.1 fd00::1)\nSEARCH=(example.org)\n\
             HOSTS=(db=10.0.0.6 cache=10.0.0.7)\n",
            base.path().display()
        ),
    );
    let out = s.sh(SHOW);
    assert_ok(&out);
    let text = out.stdout_str();
    let parts: Vec<&str> = text.split("---\n").collect();
    assert_eq!(parts.len(), 3, "{text}");
    let resolv: Vec<&str> = parts[0].lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        resolv,
        [
            "nameserver 10.0.0.1",
            "nameserver fd00::1",
            "search example.org"
        ],
        "{text}"
    );
    // The base's lines stay, the block follows them.
    let hosts: Vec<&str> = parts[1].lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        hosts,
        ["127.0.0.1\tlocalhost", "10.0.0.6\tdb", "10.0.0.7\tcache"],
        "{text}"
    );
    assert!(parts[1].contains("# subhost HOSTS"), "{text}");
    // Owned by root inside (with USERNS: the range's root).
    for line in parts[2].lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((f[2], f[3]), ("0", "0"), "{text}");
    }
    // In the upper layer, never the LOWER.
    assert_base_untouched(base.path());
    assert!(s.root().join("etc/resolv.conf").is_file());
    assert!(s.root().join("etc/hosts").is_file());
}

#[test]
fn without_the_keys_the_files_are_left_alone() {
    let base = scratch_base();
    let s = Subhost::new("", &format!("LOWER={}\n", base.path().display()));
    let out = s.sh(SHOW);
    assert_ok(&out);
    let text = out.stdout_str();
    assert!(
        text.starts_with(&format!("{BASE_RESOLV}---\n{BASE_HOSTS}---\n")),
        "{text}"
    );
    assert_base_untouched(base.path());
    // Nothing was copied up.
    assert!(!s.root().join("etc").exists());
}

#[test]
fn a_config_change_is_written_at_the_next_cold_start_only() {
    let base = scratch_base();
    let s = Subhost::new(
        "",
        &format!("LOWER={}\nDNS=(10.0.0.1)\n", base.path().display()),
    );
    let config = s.dir().join("config");
    assert_ok(&s.sh("true"));
    let resolv = s.root().join("etc/resolv.conf");
    // Dated back, so that any write would show.
    let old = run_timeout(
        cmd("touch", ["-h", "-d", "@1000000000"]).arg(&resolv),
        Duration::from_secs(10),
    );
    assert_ok(&old);
    let stamp = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        use std::os::unix::fs::MetadataExt;
        (m.ino(), m.mtime())
    };
    let before = stamp(&resolv);
    assert_eq!(before.1, 1_000_000_000);
    // Nothing changed: a cold start leaves the file as it is.
    assert_ok(&s.stop());
    assert_ok(&s.sh("true"));
    assert_eq!(stamp(&resolv), before);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("DNS=(10.0.0.1)", "DNS=(10.0.0.2)\nHOSTS=(db=10.0.0.6)");
    std::fs::write(&config, text).unwrap();
    // Hibernating: the root stays as its session left it.
    let out = s.sh("cat /etc/resolv.conf /etc/hosts");
    assert_ok(&out);
    assert!(
        out.stdout_str().contains("nameserver 10.0.0.1\n"),
        "{}",
        out.describe()
    );
    assert!(!out.stdout_str().contains("db"), "{}", out.describe());
    // Cold: rewritten.
    assert_ok(&s.stop());
    let out = s.sh("cat /etc/resolv.conf /etc/hosts");
    assert_ok(&out);
    let text = out.stdout_str();
    assert!(text.contains("nameserver 10.0.0.2\n"), "{text}");
    assert!(!text.contains("10.0.0.1"), "{text}");
    assert!(text.contains("10.0.0.6\tdb\n"), "{text}");
    // Changed again: the block is replaced, not added to.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("HOSTS=(db=10.0.0.6)", "HOSTS=(db=10.0.0.9)");
    std::fs::write(&config, text).unwrap();
    assert_ok(&s.stop());
    let out = s.sh("cat /etc/hosts");
    assert_ok(&out);
    assert_eq!(
        out.stdout_str()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        ["127.0.0.1\tlocalhost", "10.0.0.9\tdb"],
        "{}",
        out.describe()
    );
    assert_base_untouched(base.path());
}

#[test]
fn a_symlink_out_of_the_root_does_not_lead_the_write_out() {
    let outside = TempDir::new();
    let target_resolv = outside.path().join("resolv.conf");
    let target_hosts = outside.path().join("hosts");
    std::fs::write(&target_resolv, "host's resolv.conf\n").unwrap();
    std::fs::write(&target_hosts, "host's hosts\n").unwrap();
    let base = scratch_base();
    for (name, target) in [("resolv.conf", &target_resolv), ("hosts", &target_hosts)] {
        let link = base.path().join("etc").join(name);
        std::fs::remove_file(&link).unwrap();
        // Absolute: what the host would follow out of the root.
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
    let s = Subhost::new(
        "",
        &format!(
            "LOWER={}\nDNS=(10.0.0.1)\nHOSTS=(db=10.0.0.6)\n",
            base.path().display()
        ),
    );
    let out = s.sh("cat /etc/resolv.conf; cat /etc/hosts");
    // The host's files first: written through the symlinks, they changed.
    assert_eq!(
        std::fs::read_to_string(&target_resolv).unwrap(),
        "host's resolv.conf\n"
    );
    assert_eq!(
        std::fs::read_to_string(&target_hosts).unwrap(),
        "host's hosts\n"
    );
    assert_ok(&out);
    let text = out.stdout_str();
    assert!(text.contains("nameserver 10.0.0.1\n"), "{text}");
    assert!(text.contains("10.0.0.6\tdb\n"), "{text}");
    // The base keeps its symlinks; the upper has regular files.
    assert!(base.path().join("etc/resolv.conf").is_symlink());
    assert!(s
        .root()
        .join("etc/resolv.conf")
        .symlink_metadata()
        .unwrap()
        .is_file());

    // A symlinked /etc pointing out of the root: resolved inside it, where
    // that path is not, so the start is refused and undone.
    let base2 = TempDir::new();
    busybox_root(base2.path());
    std::fs::remove_file(base2.path().join("etc/passwd")).unwrap();
    std::fs::remove_file(base2.path().join("etc/group")).unwrap();
    std::fs::remove_dir(base2.path().join("etc")).unwrap();
    std::os::unix::fs::symlink(outside.path(), base2.path().join("etc")).unwrap();
    let s2 = Subhost::new(
        "",
        &format!("LOWER={}\nDNS=(10.0.0.1)\n", base2.path().display()),
    );
    let out = s2.sh("true");
    assert!(!out.status.success(), "{}", out.describe());
    assert!(out.stderr_str().contains("/etc"), "{}", out.describe());
    assert!(!s2.live_mounted(), "a refused start left its root mounted");
    assert_eq!(
        std::fs::read_to_string(&target_resolv).unwrap(),
        "host's resolv.conf\n"
    );
    let mut left: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["hosts", "resolv.conf"]);
}

#[test]
fn bad_names_are_refused_at_their_line_before_anything_is_set_up() {
    let base = scratch_base();
    for (text, line, what) in [
        ("DNS=(10.0.0.1 resolver.example)", 2, "not an IP address"),
        ("SEARCH=(example..org)", 2, "empty label"),
        ("HOSTS=(db=10.0.0.6 cache)", 2, "not NAME=ADDRESS"),
        ("HOSTS=(db=10.0.0.256)", 2, "not an IP address"),
    ] {
        let s = Subhost::new("", &format!("LOWER={}\n{text}\n", base.path().display()));
        let out = s.sh("true");
        assert!(!out.status.success(), "{text}: {}", out.describe());
        let err = out.stderr_str();
        let at = format!("{}:{line}: ", s.dir().join("config").display());
        assert!(err.contains(&at) && err.contains(what), "{text}: {err}");
        assert!(!s.live_mounted(), "{text}: mounted");
        assert!(!s.root().join("etc").exists(), "{text}");
    }
    assert_base_untouched(base.path());
}

#[test]
fn dry_run_shows_the_writes() {
    let base = scratch_base();
    let s = Subhost::new(
        "",
        &format!(
            "LOWER={}\nDNS=(10.0.0.1)\nSEARCH=(example.org)\nHOSTS=(db=10.0.0.6)\n",
            base.path().display()
        ),
    );
    let out = s.run(&["start", "--dry-run", &s.name, "--", "true"]);
    assert_ok(&out);
    let text = out.stdout_str();
    let live = s.live();
    assert!(text.contains("# names in the root"), "{text}");
    assert!(
        text.contains(&format!("{}/etc/resolv.conf", live.display()))
            && text.contains("nameserver 10.0.0.1; search example.org"),
        "{text}"
    );
    assert!(text.contains("10.0.0.6\tdb"), "{text}");
    // Nothing was done.
    assert!(!s.live_mounted());
    assert!(!s.root().join("etc").exists());
    let plain = Subhost::new("", &format!("LOWER={}\n", base.path().display()));
    let out = plain.run(&["start", "--dry-run", &plain.name, "--", "true"]);
    assert_ok(&out);
    assert!(!out.stdout_str().contains("# names"), "{}", out.describe());
}

#[test]
fn a_plain_tree_root_gets_them_too() {
    // `live` is the root itself (with USERNS an idmapped copy of it).
    let s = Subhost::busybox("", "DNS=(10.0.0.1)\nHOSTS=(db=10.0.0.6)\n");
    let out = s.sh(SHOW);
    assert_ok(&out);
    let text = out.stdout_str();
    assert!(text.contains("nameserver 10.0.0.1\n"), "{text}");
    assert!(text.contains("10.0.0.6\tdb\n"), "{text}");
    let listing = text.split("---\n").nth(2).unwrap();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((f[2], f[3]), ("0", "0"), "{text}");
    }
}
