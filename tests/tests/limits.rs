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

/// Runs `probe each` for `checks` as the session of `s`; the verdicts by id.
fn probe_inside(
    s: &Subhost,
    probe: &str,
    checks: &[(&str, &str)],
) -> std::collections::HashMap<String, String> {
    let mut args = vec!["start", s.name.as_str(), "--", probe];
    let each = probe_each_args(checks);
    args.extend(each.iter().map(String::as_str));
    let out = s.run(&args);
    assert!(out.status.success(), "{}", out.describe());
    probe_results(&out.stdout_str())
}

/// Whether each capability is in the bounding set inside, and what
/// reboot(2) says: EPERM without CAP_SYS_BOOT, EINVAL past the check (the
/// probe's command is none the kernel knows, so nothing reboots).
const CAPS: [(&str, &str); 6] = [
    ("SYS_MODULE", "cap-bound SYS_MODULE"),
    ("SYS_TIME", "cap-bound SYS_TIME"),
    ("SYS_BOOT", "cap-bound SYS_BOOT"),
    ("SYS_ADMIN", "cap-bound SYS_ADMIN"),
    ("NET_RAW", "cap-bound NET_RAW"),
    ("reboot", "reboot"),
];

fn expect(r: &std::collections::HashMap<String, String>, want: &[(&str, &str)]) {
    let wrong: Vec<String> = want
        .iter()
        .filter(|(id, v)| r.get(*id).map(String::as_str) != Some(v))
        .map(|(id, v)| format!("{id}: want {v:?}, got {:?}", r.get(*id)))
        .collect();
    assert!(wrong.is_empty(), "{}\nall: {r:#?}", wrong.join("\n"));
}

#[test]
fn dropped_capabilities_are_gone_inside() {
    let s = Subhost::busybox("l", "");
    let probe = install_probe(&s.root());
    if userns_mode() {
        return capabilities_of_a_user_namespace(&s, probe);
    }
    let r = probe_inside(&s, probe, &CAPS);
    expect(
        &r,
        &[
            ("SYS_MODULE", "no"),
            ("SYS_TIME", "no"),
            ("SYS_BOOT", "no"),
            // Dropped by default since mounts reach host-wide state (see
            // README's Security model); NET_RAW is among the kept ones.
            ("SYS_ADMIN", "no"),
            ("NET_RAW", "yes"),
            ("reboot", "errno EPERM"),
        ],
    );

    // Kept, the same call gets past the permission check.
    std::fs::write(
        s.dir().join("config"),
        "CAPS_KEEP=(SYS_BOOT)\nCAPS_DROP=(NET_RAW)\n",
    )
    .unwrap();
    let r = probe_inside(&s, probe, &CAPS);
    expect(
        &r,
        &[
            ("SYS_BOOT", "yes"),
            ("NET_RAW", "no"),
            ("reboot", "errno EINVAL"),
        ],
    );
}

/// With USERNS, root inside holds every capability of its own user
/// namespace but CAPS_DROP's, and they reach nothing of the host's.
fn capabilities_of_a_user_namespace(s: &Subhost, probe: &str) {
    // swapoff of a path that does not exist is harmless either way; the
    // host's root gets past the permission check (CAP_SYS_ADMIN of the
    // host) to the missing file.
    let swapoff = "swapoff /nonexistent-sht";
    let host = run_timeout(&mut cmd(probe_bin(), swapoff.split(' ')), LIMIT);
    assert_eq!(
        host.stdout_str(),
        "swapoff: errno ENOENT\n",
        "the probe must pass the permission check on the host: {}",
        host.describe()
    );
    let mut checks = CAPS.to_vec();
    checks.push(("swapoff", swapoff));
    let r = probe_inside(s, probe, &checks);
    expect(
        &r,
        &[
            ("SYS_MODULE", "yes"),
            ("SYS_TIME", "yes"),
            ("SYS_BOOT", "yes"),
            ("SYS_ADMIN", "yes"),
            ("swapoff", "errno EPERM"),
        ],
    );
    // CAPS_DROP still drops.
    std::fs::write(
        s.dir().join("config"),
        "USERNS=pick\nCAPS_DROP=(NET_RAW SYS_BOOT)\n",
    )
    .unwrap();
    let r = probe_inside(s, probe, &CAPS);
    expect(
        &r,
        &[
            ("NET_RAW", "no"),
            ("SYS_BOOT", "no"),
            ("reboot", "errno EPERM"),
        ],
    );
}

#[test]
fn memory_max_kills_a_hog_inside_and_nothing_else() {
    let s = Subhost::busybox("l", "MEMORY_MAX=48M\n");
    let probe = install_probe(&s.root());
    // The hog wants more than the limit; the cgroup's OOM killer stops it,
    // and the next check runs in the same subhost all the same.
    let mut args = vec!["start", s.name.as_str(), "--", probe];
    let each = probe_each_args(&[("hog", "hog 256"), ("alive", "hostname")]);
    args.extend(each.iter().map(String::as_str));
    let out = s.run(&args);
    assert!(out.status.success(), "{}", out.describe());
    let r = probe_results(&out.stdout_str());
    assert_eq!(r["hog"], "killed 9", "the hog was not OOM-killed: {r:#?}");
    assert_eq!(r["alive"], s.name, "{r:#?}");
    // The kill is not only a bare 137 inside: the launcher says why.
    assert!(
        out.stderr_str()
            .contains("hit its memory limit MEMORY_MAX=50331648"),
        "{}",
        out.describe()
    );
}

#[test]
fn limits_below_a_floor_are_config_errors_at_their_line() {
    for (config, line, what) in [
        ("\nMEMORY_MAX=1\n", 2, "below the floor of 4M"),
        ("PIDS_MAX=1\n", 1, "init and its session"),
        ("\n\nCPU_MAX=500000%\n", 3, "more than any host has"),
    ] {
        let s = Subhost::busybox("l", config);
        let out = s.sh("echo ran");
        assert_eq!(out.code(), 125, "{config}: {}", out.describe());
        let err = out.stderr_str();
        let at = format!("{}:{line}: ", s.dir().join("config").display());
        assert!(err.contains(&at) && err.contains(what), "{config}: {err}");
        assert!(!out.stdout_str().contains("ran"), "{}", out.describe());
        assert!(!s.live_mounted());
    }
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
    // Read before stop, which deletes the record.
    let dirs = cgroup_dirs(&s);
    assert!(!dirs.is_empty(), "no cgroup recorded");
    assert!(dirs.iter().all(|d| d.is_dir()), "{dirs:?}");
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
    for d in &dirs {
        assert!(!d.exists(), "cgroup {} left", d.display());
    }
    assert!(!Path::new(&format!("/run/subhost/{}.cgroup", s.name)).exists());
}

/// A CGROUP_PARENT of its own, two levels deep, that no one else uses.
fn own_parent(tag: &str) -> String {
    format!("/{}/p", unique_name(tag))
}

/// Where `parent` is in each hierarchy holding one of `dirs`.
fn parents_in(dirs: &[PathBuf], parent: &str) -> Vec<PathBuf> {
    dirs.iter()
        .map(|d| {
            let s = d.to_string_lossy();
            let at = s.find(parent).expect("the leaf is below its parent");
            PathBuf::from(&s[..at + parent.len()])
        })
        .collect()
}

/// Removes what a failed test may leave of a test's own parent cgroups.
struct ParentGuard(Vec<PathBuf>);

impl Drop for ParentGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir(p);
            if let Some(top) = p.parent() {
                let _ = std::fs::remove_dir(top);
            }
        }
    }
}

/// Runs a session in the background that ends when `root/go` appears, and
/// returns the cgroup directories it runs in, checked to exist.
fn start_waiting(s: &mut Subhost) -> Vec<PathBuf> {
    s.start_background(
        &[],
        &["/bin/sh", "-c", "while [ ! -e /go ]; do sleep 0.05; done"],
    );
    let dirs = cgroup_dirs(s);
    assert!(!dirs.is_empty(), "no cgroup recorded");
    assert!(dirs.iter().all(|d| d.is_dir()), "{dirs:?}");
    dirs
}

/// The one of `dirs` on cgroup v2 (where `cgroup.kill` is), if any.
fn v2_dir(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter()
        .find(|d| d.join("cgroup.kill").exists())
        .cloned()
}

/// The processes in each of `dirs`.
fn procs_of(dirs: &[PathBuf]) -> Vec<String> {
    dirs.iter()
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What `file` says in the first of `dirs` that has it.
fn value_in(dirs: &[PathBuf], file: &str) -> Option<String> {
    dirs.iter()
        .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
        .map(|t| t.trim().to_string())
}

/// The inode of a cgroup directory: a cgroup made again gets a new one.
fn ino(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .ino()
}

/// A hibernating subhost keeps its cgroup, empty: the directories stay
/// (parents too), a warm start runs in them again, and `stop` removes them
/// all. A process left in the cgroup when a session ends is killed, and
/// the cgroup goes with it (the kernel kills whatever is cloned into a
/// cgroup once killed through `cgroup.kill`): the next start makes a new
/// one, and its session runs.
#[test]
fn a_hibernating_subhost_keeps_an_empty_cgroup_until_stop() {
    let s = Subhost::busybox("l", "PIDS_MAX=50\n");
    let out = s.sh("cat /proc/self/cgroup");
    assert!(out.status.success(), "{}", out.describe());
    // Inside, the cgroup namespace makes the subhost's own cgroup the root.
    assert!(
        out.stdout_str().lines().any(|l| l == "0::/"),
        "{}",
        out.describe()
    );

    // The directories themselves, read while a session runs.
    let parent = own_parent("l");
    let mut s = Subhost::busybox("l", &format!("PIDS_MAX=50\nCGROUP_PARENT={parent}\n"));
    let dirs = start_waiting(&mut s);
    let parents = parents_in(&dirs, &parent);
    let _guard = ParentGuard(parents.clone());
    let v2 = v2_dir(&dirs).expect("a cgroup v2 directory");
    let inode = ino(&v2);
    std::fs::write(s.root().join("go"), "").unwrap();
    assert!(
        wait_until(LIMIT, || !s.init_record().exists()),
        "the session did not end"
    );
    // The end of the session holds the lock while it keeps the cgroup.
    let status = s.run(&["status", &s.name]);
    assert!(
        status.stdout_str().contains("state:    hibernating"),
        "{}",
        status.describe()
    );
    assert!(dirs.iter().all(|d| d.is_dir()), "cgroups gone: {dirs:?}");
    assert_eq!(procs_of(&dirs), Vec::<String>::new(), "{dirs:?}");
    assert!(parents.iter().all(|p| p.is_dir()), "{parents:?}");

    // A warm start runs in the same cgroup, not in one made again.
    let out = s.sh("cat /proc/self/cgroup");
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(cgroup_dirs(&s), dirs);
    assert_eq!(ino(&v2), inode, "the cgroup was made again");

    // A process of the host's put into the subhost's cgroup.
    rm_go(&s);
    start_waiting(&mut s);
    let mut stray = spawn_group(cmd("sleep", ["60"]).stdin(std::process::Stdio::null()));
    std::fs::write(v2.join("cgroup.procs"), stray.id().to_string()).unwrap();
    std::fs::write(s.root().join("go"), "").unwrap();
    let gone = wait_until(LIMIT, || stray.try_wait().unwrap().is_some());
    if !gone {
        let _ = stray.kill();
        let _ = stray.wait();
    }
    assert!(gone, "a process left in the cgroup survived the session");
    assert!(
        wait_until(LIMIT, || !v2.exists()),
        "the killed cgroup stays"
    );
    let out = s.sh("true");
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(cgroup_dirs(&s), dirs);

    let out = s.stop();
    assert!(out.status.success(), "{}", out.describe());
    assert!(dirs.iter().all(|d| !d.exists()), "cgroups left: {dirs:?}");
    // The parents were made for it alone, so they went with it.
    assert!(parents.iter().all(|p| !p.exists()), "{parents:?}");
    assert!(!Path::new(&format!("/run/subhost/{}.cgroup", s.name)).exists());
    assert!(!Path::new(&format!("/run/subhost/{}.cgroup-policy", s.name)).exists());
}

fn rm_go(s: &Subhost) {
    let _ = std::fs::remove_file(s.root().join("go"));
}

/// A kept cgroup whose policy record is missing (a start killed while it
/// changed the cgroup removes the record first) is not trusted: the next
/// start makes it again, and `stop` still finds and removes it through the
/// `.cgroup` record, parents included.
#[test]
fn a_kept_cgroup_without_its_policy_record_is_made_again_and_stop_removes_it() {
    let parent = own_parent("l");
    let s = Subhost::busybox("l", &format!("PIDS_MAX=50\nCGROUP_PARENT={parent}\n"));
    let policy = PathBuf::from(format!("/run/subhost/{}.cgroup-policy", s.name));
    let out = s.sh("true");
    assert!(out.status.success(), "{}", out.describe());
    let dirs = cgroup_dirs(&s);
    let parents = parents_in(&dirs, &parent);
    let _guard = ParentGuard(parents.clone());
    let v2 = v2_dir(&dirs).expect("a kept cgroup v2 directory");
    let inode = ino(&v2);
    assert!(policy.is_file(), "no policy record");

    std::fs::remove_file(&policy).unwrap();
    let out = s.sh("true");
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(cgroup_dirs(&s), dirs);
    assert_ne!(ino(&v2), inode, "a cgroup of unknown policy was reused");
    assert!(policy.is_file(), "no policy record after a new cgroup");

    std::fs::remove_file(&policy).unwrap();
    let out = s.stop();
    assert!(out.status.success(), "{}", out.describe());
    assert!(dirs.iter().all(|d| !d.exists()), "cgroups left: {dirs:?}");
    assert!(parents.iter().all(|p| !p.exists()), "{parents:?}");
}

/// A warm start applies the limits of the config as it is then: changed
/// ones are written into the kept cgroup (raising and lowering v1's
/// memory+swap pair in a valid order), removed ones no longer hold.
#[test]
fn a_warm_start_applies_the_limits_the_config_has_now() {
    let s = Subhost::busybox(
        "l",
        "PIDS_MAX=50\nMEMORY_MAX=67108864\nCPU_MAX=\"50000 100000\"\n",
    );
    let config = |text: &str| std::fs::write(s.dir().join("config"), mode_config(text)).unwrap();
    let session = || {
        let out = s.sh("true");
        assert!(out.status.success(), "{}", out.describe());
        cgroup_dirs(&s)
    };
    let dirs = session();
    let v2 = v2_dir(&dirs).expect("a cgroup v2 directory");
    let inode = ino(&v2);
    assert_eq!(value_in(&dirs, "pids.max").as_deref(), Some("50"));
    let memory = |dirs: &[PathBuf]| {
        value_in(dirs, "memory.max").or_else(|| value_in(dirs, "memory.limit_in_bytes"))
    };
    let cpu = |dirs: &[PathBuf]| {
        value_in(dirs, "cpu.max").or_else(|| {
            Some(format!(
                "{} {}",
                value_in(dirs, "cpu.cfs_quota_us")?,
                value_in(dirs, "cpu.cfs_period_us")?
            ))
        })
    };
    assert_eq!(memory(&dirs).as_deref(), Some("67108864"));
    assert_eq!(cpu(&dirs).as_deref(), Some("50000 100000"));

    config("PIDS_MAX=60\nMEMORY_MAX=134217728\nCPU_MAX=\"20000 50000\"\n");
    let again = session();
    assert_eq!(again, dirs);
    assert_eq!(ino(&v2), inode, "the cgroup was made again");
    assert_eq!(value_in(&dirs, "pids.max").as_deref(), Some("60"));
    assert_eq!(memory(&dirs).as_deref(), Some("134217728"));
    if let Some(memsw) = value_in(&dirs, "memory.memsw.limit_in_bytes") {
        assert_eq!(memsw, "134217728");
    }
    assert_eq!(cpu(&dirs).as_deref(), Some("20000 50000"));

    config("MEMORY_MAX=33554432\n");
    let now = session();
    assert_eq!(memory(&now).as_deref(), Some("33554432"));
    let pids = value_in(&now, "pids.max");
    assert!(pids.is_none() || pids.as_deref() == Some("max"), "{pids:?}");
    let cpu_now = cpu(&now);
    assert!(
        cpu_now
            .as_deref()
            .is_none_or(|c| c.starts_with("max") || c.starts_with("-1")),
        "{cpu_now:?}"
    );
    // A directory the plan no longer has (a v1 hierarchy's) is gone.
    for d in dirs.iter().filter(|d| !now.contains(d)) {
        assert!(!d.exists(), "{} left", d.display());
    }
    let out = s.stop();
    assert!(out.status.success(), "{}", out.describe());
    assert!(now.iter().all(|d| !d.exists()), "cgroups left: {now:?}");
}

/// CGROUP_PARENT changed while the subhost hibernates: `status` does not
/// take the kept cgroup's record for a wrong one, and the next start moves
/// the cgroup, removing the old one and the parents made for it.
#[test]
fn a_changed_cgroup_parent_moves_the_kept_cgroup() {
    let (a, b) = (own_parent("l"), own_parent("l"));
    let s = Subhost::busybox("l", &format!("PIDS_MAX=50\nCGROUP_PARENT={a}\n"));
    let out = s.sh("true");
    assert!(out.status.success(), "{}", out.describe());
    let dirs_a = cgroup_dirs(&s);
    let parents_a = parents_in(&dirs_a, &a);
    let _guard_a = ParentGuard(parents_a.clone());
    assert!(!dirs_a.is_empty(), "no cgroup kept");
    assert!(dirs_a.iter().all(|d| d.is_dir()), "{dirs_a:?}");

    std::fs::write(
        s.dir().join("config"),
        mode_config(&format!("PIDS_MAX=50\nCGROUP_PARENT={b}\n")),
    )
    .unwrap();
    let status = s.run(&["status", &s.name]);
    assert!(
        status.stdout_str().contains("state:    hibernating")
            && status.stdout_str().contains("problems: none"),
        "{}",
        status.describe()
    );
    let out = s.sh("true");
    assert!(out.status.success(), "{}", out.describe());
    let dirs_b = cgroup_dirs(&s);
    let parents_b = parents_in(&dirs_b, &b);
    let _guard_b = ParentGuard(parents_b.clone());
    assert!(dirs_b.iter().all(|d| d.is_dir()), "{dirs_b:?}");
    assert!(dirs_a.iter().all(|d| !d.exists()), "{dirs_a:?} left");
    assert!(parents_a.iter().all(|p| !p.exists()), "{parents_a:?} left");

    let out = s.stop();
    assert!(out.status.success(), "{}", out.describe());
    assert!(dirs_b.iter().all(|d| !d.exists()), "{dirs_b:?} left");
    assert!(parents_b.iter().all(|p| !p.exists()), "{parents_b:?} left");
}

/// What `status`, `list` and `stats` say of a hibernating subhost whose
/// cgroup is kept: not running, and no use of memory (an empty memory
/// cgroup still has page cache charged to it).
#[test]
fn a_kept_cgroup_does_not_make_a_hibernating_subhost_look_running() {
    let s = Subhost::busybox("l", "MEMORY_MAX=67108864\nPIDS_MAX=50\n");
    let out = s.sh("cat /bin/busybox > /tmp/copy && sync");
    assert!(out.status.success(), "{}", out.describe());
    let dirs = cgroup_dirs(&s);
    assert!(!dirs.is_empty(), "no cgroup kept");
    assert!(dirs.iter().all(|d| d.is_dir()), "{dirs:?}");

    let status = s.run(&["status", &s.name, "--json"]);
    let text = status.stdout_str();
    assert!(
        text.contains("\"state\": \"hibernating\""),
        "{}",
        status.describe()
    );
    assert!(
        text.contains("\"memory_bytes\": null"),
        "{}",
        status.describe()
    );
    assert!(text.contains("\"pids\": null"), "{}", status.describe());
    let list = s.run(&["list"]);
    let row = list.stdout_str();
    let row = row.lines().find(|l| l.starts_with(&s.name));
    assert!(
        row.is_some_and(|r| r.split_whitespace().nth(1) == Some("hibernating")),
        "{}",
        list.describe()
    );
    let stats = s.run(&["stats", &s.name]);
    assert!(
        stats.stdout_str().contains("(not running)"),
        "{}",
        stats.describe()
    );
}

#[test]
fn parent_cgroups_the_launcher_made_go_with_the_last_subhost() {
    let parent = own_parent("l");
    let config = format!("PIDS_MAX=50\nCGROUP_PARENT={parent}\n");
    let mut a = Subhost::busybox("l", &config);
    let mut b = Subhost::busybox("l", &config);
    let dirs_a = start_waiting(&mut a);
    let dirs_b = start_waiting(&mut b);
    let parents = parents_in(&dirs_a, &parent);
    let _guard = ParentGuard(parents.clone());
    assert_eq!(parents, parents_in(&dirs_b, &parent));

    // b still runs in the parents: they stay.
    let out = a.stop();
    assert!(out.status.success(), "{}", out.describe());
    assert!(dirs_a.iter().all(|d| !d.exists()), "{dirs_a:?}");
    assert!(
        parents.iter().all(|p| p.is_dir()),
        "removed under b: {parents:?}"
    );

    // The last one out removes them, both levels the launcher made.
    let out = b.stop();
    assert!(out.status.success(), "{}", out.describe());
    for p in &parents {
        assert!(!p.exists(), "parent cgroup {} left", p.display());
        assert!(
            !p.parent().unwrap().exists(),
            "{} left",
            p.parent().unwrap().display()
        );
    }

    // A parent someone else made is theirs: it stays.
    for p in &parents {
        std::fs::create_dir_all(p).unwrap();
    }
    let dirs = start_waiting(&mut a);
    let out = a.stop();
    assert!(out.status.success(), "{}", out.describe());
    assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?}");
    assert!(parents.iter().all(|p| p.is_dir()), "removed: {parents:?}");
}
