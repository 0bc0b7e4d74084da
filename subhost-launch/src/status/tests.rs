use super::*;

fn facts() -> Facts {
    Facts {
        name: "web".into(),
        live: false,
        image: false,
        mnt: false,
        netns: false,
        netns_stray: None,
        init: InitFact::None,
        cables: vec![("web0".into(), false), ("web1".into(), false)],
    }
}

fn up() -> Facts {
    Facts {
        live: true,
        netns: true,
        cables: vec![("web0".into(), true), ("web1".into(), true)],
        ..facts()
    }
}

fn verified() -> InitFact {
    InitFact::Verified(state::ProcId { pid: 42, start: 7 })
}

fn has(problems: &[String], word: &str) -> bool {
    problems.iter().any(|p| p.contains(word))
}

#[test]
fn nothing_up_is_stopped() {
    assert_eq!(classify(&facts()), (State::Stopped, vec![]));
    let img = Facts {
        image: true,
        ..facts()
    };
    assert_eq!(classify(&img), (State::Stopped, vec![]));
}

#[test]
fn all_up_without_init_is_hibernating() {
    assert_eq!(classify(&up()), (State::Hibernating, vec![]));
    let img = Facts {
        image: true,
        mnt: true,
        ..up()
    };
    assert_eq!(classify(&img), (State::Hibernating, vec![]));
}

#[test]
fn a_verified_init_is_running() {
    let f = Facts {
        init: verified(),
        ..up()
    };
    assert_eq!(classify(&f), (State::Running, vec![]));
    // Still running, but what is off on the host is said.
    let f = Facts {
        init: verified(),
        live: false,
        ..up()
    };
    let (state, problems) = classify(&f);
    assert_eq!(state, State::Running);
    assert!(has(&problems, "live is not mounted"), "{problems:?}");
}

#[test]
fn partial_setups_are_broken_and_say_what_is_partial() {
    let cases: [(Facts, &str); 7] = [
        (
            Facts {
                netns: false,
                cables: vec![("web0".into(), false), ("web1".into(), false)],
                ..up()
            },
            "no netns web",
        ),
        (
            Facts {
                live: false,
                ..up()
            },
            "netns web exists but live",
        ),
        (
            Facts {
                cables: vec![("web0".into(), true), ("web1".into(), false)],
                ..up()
            },
            "web1: host end missing",
        ),
        (
            Facts {
                init: InitFact::Stale(99),
                ..up()
            },
            "stale init record",
        ),
        (
            Facts {
                init: InitFact::Stale(99),
                ..facts()
            },
            "PID 99",
        ),
        (
            Facts {
                cables: vec![("web0".into(), true), ("web1".into(), false)],
                ..facts()
            },
            "web0: host end exists without netns",
        ),
        (
            Facts {
                image: true,
                mnt: false,
                ..up()
            },
            "image is not mounted",
        ),
    ];
    for (f, word) in cases {
        let (state, problems) = classify(&f);
        assert_eq!(state, State::Broken, "{f:?}");
        assert!(has(&problems, word), "{word:?} not in {problems:?}");
    }
}

#[test]
fn an_init_found_without_its_record_is_running_with_a_problem() {
    let f = Facts {
        init: InitFact::Unrecorded(state::ProcId { pid: 42, start: 7 }),
        ..up()
    };
    let (state, problems) = classify(&f);
    assert_eq!(state, State::Running);
    assert!(has(&problems, "does not name it"), "{problems:?}");
}

#[test]
fn a_netns_file_that_is_no_netns_is_broken() {
    let stray = "/run/netns/web is not a network namespace (an empty file …)";
    let f = Facts {
        netns_stray: Some(stray.into()),
        ..facts()
    };
    assert_eq!(classify(&f), (State::Broken, vec![stray.to_string()]));
}

#[test]
fn an_init_whose_netns_was_deleted_is_broken() {
    let f = Facts {
        netns: false,
        init: InitFact::OutsideNetns(42),
        ..up()
    };
    let (state, problems) = classify(&f);
    assert_eq!(state, State::Broken);
    assert!(has(&problems, "no netns web"), "{problems:?}");
    assert!(has(&problems, "not in netns web"), "{problems:?}");
}

/// The subhost's cgroups and their test-only parent, removed on drop.
struct CgroupGuard {
    cg: cgroup::Cgroup,
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let _ = self.cg.remove();
        for d in self.cg.dirs() {
            if let Some(parent) = d.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

#[test]
fn usage_is_read_from_the_cgroup_only_with_limits_on() {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    let me = std::process::id();
    let name = format!("shtls{:x}", me % 0x10_0000);
    let parent = format!("/shtcg-{me}-ls");
    let limited = Config {
        memory_max: Some(64 << 20),
        pids_max: Some(20),
        cgroup_parent: Some(parent.clone()),
        ..Config::defaults(&name)
    };
    assert!(usage(&name, &limited).is_none(), "no cgroup yet");
    let limits = cgroup::Limits {
        memory_max: limited.memory_max,
        pids_max: limited.pids_max,
        cpu_max: None,
        devices: None,
    };
    let plan = cgroup::plan(&name, Some(&parent), &limits).unwrap();
    let _guard = CgroupGuard {
        cg: cgroup::create(&plan).unwrap(),
    };
    let got = usage(&name, &limited).expect("usage of the new cgroup");
    assert_eq!(got.pids_current, Some(0));
    assert!(got.memory_current.is_some(), "{got:?}");
    let unlimited = Config {
        cgroup_parent: Some(parent),
        ..Config::defaults(&name)
    };
    assert!(usage(&name, &unlimited).is_none());
}
