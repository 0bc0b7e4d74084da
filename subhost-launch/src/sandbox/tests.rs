use super::*;
use crate::config::Share;

#[test]
fn plan_order_and_shares() {
    let layout = Layout::new(Path::new("/opt/subhost"), "future").unwrap();
    let mut cfg = Config::defaults("future");
    cfg.share.push(Share {
        host: "/srv/data".into(),
        inner: "/data".into(),
    });
    let steps = plan(&layout, &cfg, None).unwrap();
    assert_eq!(steps.first(), Some(&Setup::ResetLoginuid));
    assert_eq!(steps[1], Setup::PrivateMounts);
    assert_eq!(
        steps[2],
        Setup::Bind {
            source: "/srv/data".into(),
            target: "/opt/subhost/future/live/data".into()
        }
    );
    let n = steps.len();
    assert!(matches!(steps[n - 3], Setup::PivotRoot { .. }));
    assert!(matches!(steps[n - 2], Setup::Seccomp(_)));
    assert!(matches!(steps.last(), Some(Setup::DropCaps { .. })));
    let text: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
    assert!(text.contains(&"hostname future".to_string()), "{text:?}");
    assert!(
        text[0].starts_with("echo 4294967295 > /proc/self/loginuid"),
        "{text:?}"
    );
    assert!(text
        .iter()
        .any(|t| t.starts_with("mount -t devpts -o nosuid,noexec,newinstance")));
    // The pty's devpts must be mounted before the pivot (n - 3, asserted
    // above).
    let pts = text.iter().position(|t| t.contains("devpts")).unwrap();
    assert!(pts < n - 3);
    let pos = |want: &Setup| steps.iter().position(|s| s == want).unwrap();
    let live = Path::new("/opt/subhost/future/live");
    let proc_mount = text
        .iter()
        .position(|t| t.starts_with("mount -t proc"))
        .unwrap();
    let net = pos(&Setup::Writable(live.join("proc/sys/net")));
    let sys = pos(&Setup::ReadOnly(live.join("proc/sys")));
    // The writable island must exist before its parent's rbind copies it.
    assert!(proc_mount < net && net < sys, "{text:#?}");
    let null = text.iter().position(|t| t.starts_with("mknod")).unwrap();
    let kcore = pos(&Setup::Mask {
        path: live.join("proc/kcore"),
        dev_null: live.join("dev/null"),
    });
    assert!(null < kcore && kcore < n - 3, "{text:#?}");
    assert!(steps.contains(&Setup::Mask {
        path: live.join("sys/firmware"),
        dev_null: live.join("dev/null"),
    }));
}

#[test]
fn seccomp_off_leaves_the_filter_out_of_the_plan() {
    let layout = Layout::new(Path::new("/opt/subhost"), "future").unwrap();
    let mut cfg = Config::defaults("future");
    cfg.seccomp = false;
    let steps = plan(&layout, &cfg, None).unwrap();
    assert!(!steps.iter().any(|s| matches!(s, Setup::Seccomp(_))));
    assert!(matches!(steps[steps.len() - 2], Setup::PivotRoot { .. }));
}

#[test]
fn plan_in_a_user_namespace() {
    let layout = Layout::new(Path::new("/opt/subhost"), "future").unwrap();
    let mut cfg = Config::defaults("future");
    cfg.share.push(Share {
        host: "/srv/data".into(),
        inner: "/data".into(),
    });
    cfg.caps_drop.push("CAP_NET_RAW".into());
    let range = Range {
        base: 524288,
        count: 65536,
    };
    let steps = plan(&layout, &cfg, Some(range)).unwrap();
    let live = PathBuf::from("/opt/subhost/future/live");
    // The loginuid goes first: the first process does it as the
    // host's root, before it joins the user namespace.
    assert_eq!(steps[0], Setup::ResetLoginuid);
    // live bound on itself first: pivot_root refuses a locked mount.
    assert_eq!(
        steps[2],
        Setup::Bind {
            source: live.clone(),
            target: live.clone()
        }
    );
    assert_eq!(
        steps[3],
        Setup::AttachTree {
            tree: 0,
            source: "/srv/data".into(),
            target: live.join("data"),
            range
        }
    );
    assert!(steps.contains(&Setup::DevBinds {
        dev: live.join("dev")
    }));
    assert!(!steps.iter().any(|s| matches!(s, Setup::DevNodes { .. })));
    // DEVICES: the launcher's nodes, after the SHARE's copy in the trees.
    cfg.devices
        .push(crate::cgroup::devices::Declared::parse("/dev/null").unwrap());
    let with = plan(&layout, &cfg, Some(range)).unwrap();
    let made = with
        .iter()
        .find(|s| matches!(s, Setup::DevMade { .. }))
        .expect("DevMade");
    assert_eq!(
        made,
        &Setup::DevMade {
            first: 1,
            nodes: vec![("/dev/null".into(), live.join("dev/null"))],
            range
        }
    );
    assert!(made.to_string().contains("chown 524288:524288 N"), "{made}");
    assert!(!with.iter().any(|s| matches!(s, Setup::DevDeclared { .. })));
    cfg.devices.clear();
    assert_eq!(
        steps.last(),
        Some(&Setup::DropCaps {
            drop: vec![Capability::CAP_NET_RAW],
            lacking: Vec::new()
        })
    );
    let text: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
    assert!(
        text[3].contains("X-mount.idmap=0:524288:65536 /srv/data"),
        "{text:?}"
    );
    // The filter still applies.
    assert!(steps.iter().any(|s| matches!(s, Setup::Seccomp(_))));
}

#[test]
fn caps_the_launcher_lacks_show_in_the_plan() {
    let step = Setup::DropCaps {
        drop: vec![Capability::CAP_SYS_MODULE],
        lacking: vec![Capability::CAP_SYS_RESOURCE],
    };
    assert_eq!(
        step.to_string(),
        "capsh --drop=cap_sys_module  # not granted: cap_sys_resource \
         (the launcher's bounding set lacks them)"
    );
}

#[test]
fn reset_loginuid_unsets_it_and_tolerates_an_unset_one() {
    let _one = crate::tty::test_support::serial();
    let path = Path::new("/proc/self/loginuid");
    if !path.exists() {
        return; // a kernel without audit: nothing to reset
    }
    let mut child = crate::tty::test_support::fork_with(|| {
        // This forked test process only, never the test runner.
        if std::fs::write("/proc/self/loginuid", "1000").is_err() {
            return 2;
        }
        reset_loginuid();
        let once = std::fs::read_to_string("/proc/self/loginuid").unwrap_or_default();
        reset_loginuid();
        let twice = std::fs::read_to_string("/proc/self/loginuid").unwrap_or_default();
        if once == LOGINUID_UNSET && twice == LOGINUID_UNSET {
            0
        } else {
            3
        }
    });
    assert_eq!(child.code(crate::tty::test_support::LIMIT), 0);
}

#[test]
fn init_argv_puts_session_after_double_dash() {
    let argv = init_argv(7, &["/bin/sh".into(), "-c".into(), "--x".into()]).unwrap();
    let argv: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
    assert_eq!(
        argv,
        ["subhost-init", "--grace", "7", "--", "/bin/sh", "-c", "--x"]
    );
}
