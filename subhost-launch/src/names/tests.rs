use super::*;

fn cfg(text: &str) -> Config {
    crate::config::parse(Path::new("config"), text, "web", Path::new("/opt/subhost")).unwrap()
}

fn plan(text: &str, live: &Path) -> Plan {
    Plan::at(&cfg(text), live.to_path_buf())
}

use std::path::Path;

#[test]
fn without_the_keys_nothing_is_written() {
    assert!(plan("", Path::new("/x")).is_empty());
}

#[test]
fn resolv_conf_and_hosts_block_as_configured() {
    let p = plan(
        "DNS=(10.0.0.1 fd00::1)\nSEARCH=(example.org lan)\nHOSTS=(db=10.0.0.6 cache=fd00::7)\n",
        Path::new("/x"),
    );
    let resolv = p.resolv.as_deref().unwrap();
    assert!(resolv.ends_with("nameserver 10.0.0.1\nnameserver fd00::1\nsearch example.org lan\n"));
    assert_eq!(
        p.hosts.as_deref().unwrap(),
        format!("{HOSTS_BEGIN}\n10.0.0.6\tdb\nfd00::7\tcache\n{HOSTS_END}\n")
    );
    let shown = p.to_string();
    assert!(shown.contains("/x/etc/resolv.conf"), "{shown}");
    assert!(
        shown.contains("nameserver 10.0.0.1; nameserver fd00::1; search example.org lan"),
        "{shown}"
    );
    assert!(shown.contains("10.0.0.6\tdb; fd00::7\tcache"), "{shown}");
}

#[test]
fn the_block_is_replaced_and_other_lines_kept() {
    let block = format!("{HOSTS_BEGIN}\n1.2.3.4\tnew\n{HOSTS_END}\n");
    let old = format!("127.0.0.1 localhost\n{HOSTS_BEGIN}\n9.9.9.9\told\n{HOSTS_END}\n::1 ip6\n");
    assert_eq!(
        with_block(&old, &block).unwrap(),
        format!("127.0.0.1 localhost\n::1 ip6\n{block}")
    );
    // Without a trailing newline, and without a block yet.
    assert_eq!(
        with_block("127.0.0.1 localhost", &block).unwrap(),
        format!("127.0.0.1 localhost\n{block}")
    );
    assert_eq!(with_block("", &block).unwrap(), block);
    // Twice the same: the same text, so nothing is rewritten.
    let once = with_block("a\n", &block).unwrap();
    assert_eq!(with_block(&once, &block).unwrap(), once);
    // A block without its end is not guessed at.
    let err = with_block(&format!("a\n{HOSTS_BEGIN}\nb\n"), &block).unwrap_err();
    assert!(err.contains("no"), "{err}");
}

#[test]
fn writes_replace_a_symlink_and_never_leave_the_root() {
    let dir = std::env::temp_dir().join(format!("names-test-{}", std::process::id()));
    let live = dir.join("live");
    let outside = dir.join("outside");
    std::fs::create_dir_all(live.join("etc")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("resolv.conf"), "host's\n").unwrap();
    std::fs::write(outside.join("hosts"), "host's hosts\n").unwrap();
    // Absolute symlinks pointing out of the root, as a host-side write that
    // follows them would.
    std::os::unix::fs::symlink(outside.join("resolv.conf"), live.join("etc/resolv.conf")).unwrap();
    std::os::unix::fs::symlink(outside.join("hosts"), live.join("etc/hosts")).unwrap();
    let p = plan("DNS=(10.0.0.1)\nHOSTS=(db=10.0.0.6)\n", &live);
    write(&p).unwrap();
    assert_eq!(
        std::fs::read_to_string(outside.join("resolv.conf")).unwrap(),
        "host's\n"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("hosts")).unwrap(),
        "host's hosts\n"
    );
    let resolv = live.join("etc/resolv.conf");
    assert!(resolv.symlink_metadata().unwrap().is_file());
    assert_eq!(
        std::fs::read_to_string(&resolv).unwrap(),
        p.resolv.clone().unwrap()
    );
    // The hosts symlink resolved inside the root finds nothing there.
    assert_eq!(
        std::fs::read_to_string(live.join("etc/hosts")).unwrap(),
        p.hosts.clone().unwrap()
    );
    // Unchanged: not rewritten (the same inode stays).
    let ino = resolv.metadata().unwrap().ino();
    write(&p).unwrap();
    assert_eq!(resolv.metadata().unwrap().ino(), ino);
    // No temporary file is left beside them.
    let names: Vec<_> = std::fs::read_dir(live.join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for f in ["etc/resolv.conf", "etc/hosts"] {
        std::fs::remove_file(live.join(f)).unwrap();
    }
    for f in ["resolv.conf", "hosts"] {
        std::fs::remove_file(outside.join(f)).unwrap();
    }
    for d in [live.join("etc"), live, outside, dir] {
        std::fs::remove_dir(d).unwrap();
    }
}
