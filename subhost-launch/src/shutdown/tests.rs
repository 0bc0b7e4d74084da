use std::path::{Path, PathBuf};

use super::*;

#[test]
fn the_kill_warning_says_how_long_was_waited() {
    // It said "1s" after waiting STOP_TIMEOUT=1 plus the 2 s margin.
    assert_eq!(
        still_there("web", 42, 1),
        "init of web (PID 42) still there 3s after SIGTERM (STOP_TIMEOUT 1s + 2s): killing it"
    );
}

fn layout() -> Layout {
    Layout::new(Path::new("/opt/subhost"), "web").unwrap()
}

fn init(unrecorded: bool, halt: bool) -> Option<InitStop> {
    Some(InitStop {
        id: state::ProcId { pid: 42, start: 7 },
        unrecorded,
        services: 0,
        halt: halt.then(|| {
            (
                vec!["subhost-halt".into(), "2".into(), "sh -c x".into()],
                "stderr".into(),
            )
        }),
        grace: 10,
    })
}

/// The steps of a running subhost with everything set up, in the order
/// they run, as `--dry-run` printed them before the plan was data.
#[test]
fn a_full_plan_reads_as_its_steps_in_order() {
    let plan = Plan {
        init: init(false, true),
        cgroup: cgroup::Recorded {
            dirs: vec![
                PathBuf::from("/sys/fs/cgroup/pids/subhost/web"),
                PathBuf::from("/sys/fs/cgroup/unified/subhost/web"),
            ],
            problems: vec![],
        },
        netns: NetnsStep::Delete {
            cables: vec!["web0".into(), "web1".into()],
        },
        published: vec![crate::publish::Published {
            proto: crate::publish::Proto::Tcp,
            host_address: None,
            host_port: 8080,
            port: 80,
            address: "10.0.0.5".parse().unwrap(),
        }],
        forwarder: Some(crate::forward::Status {
            pid: 77,
            running: true,
            forwards: vec!["tcp:127.0.0.1:8080=10.0.0.5:80".parse().unwrap()],
        }),
        live_mounted: true,
        image: Some(vec!["/dev/loop7".into()]),
    };
    let want = "\
# START stopped in reverse, then HALT: inside, as `enter` runs a command,
# killed after 10s, output to stderr
subhost-halt 2 'sh -c x'
kill -TERM 42   # init; after 10s + 2s: kill -KILL 42
kill every process in /sys/fs/cgroup/pids/subhost/web /sys/fs/cgroup/unified/subhost/web
rmdir /sys/fs/cgroup/unified/subhost/web
rmdir /sys/fs/cgroup/pids/subhost/web
kill -KILL 77  # its port forwarder
rm /run/subhost/web.forward
# one batch: its jump and hairpin rules deleted by handle, then its chain
nft delete chain inet subhost sh_web
ip netns del web
# wait until gone: web0 web1
umount -R /opt/subhost/web/live
umount /opt/subhost/web/mnt   # if mounted; detaches the loop device
# wait until detached: losetup -j /opt/subhost/web/web.img shows no device (now: /dev/loop7)
";
    assert_eq!(plan.text(&layout()), want);
}

#[test]
fn a_stopped_subhost_plans_nothing_but_says_so() {
    assert_eq!(
        Plan::default().text(&layout()),
        "# no init running\n# no netns web\n"
    );
}

/// An init found through its cgroup, its record lost, is stopped as one
/// with its record: the plan says so, and signals it.
#[test]
fn an_init_without_its_record_is_planned_to_be_stopped() {
    let plan = Plan {
        init: init(true, false),
        netns: NetnsStep::RemoveEmpty,
        cgroup: cgroup::Recorded {
            dirs: vec![],
            problems: vec!["the cgroup record names /x".into()],
        },
        ..Plan::default()
    };
    let text = plan.text(&layout());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..2],
        [
            "# no record of its init, but its cgroup holds it (PID 42): recorded again",
            "kill -TERM 42   # init; after 10s + 2s: kill -KILL 42",
        ]
    );
    assert_eq!(lines[2], "# the cgroup record names /x");
    assert!(
        lines[3].starts_with("rm /run/netns/web   # empty"),
        "{text}"
    );
    assert_eq!(lines.len(), 4, "{text}");
}
