use super::create::*;
use super::host::*;
use super::life::*;
use super::parents::*;
use super::plan::*;
use super::recorded::*;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult};

/// What the launcher does through `sandbox`, done here from a test's own
/// children.
impl Cgroup {
    fn join_self(&self) -> io::Result<()> {
        self.join_self_except(None)
    }

    fn attach(&self, pid: Pid) -> Result<()> {
        for d in &self.dirs {
            let file = d.join("cgroup.procs");
            write_file(&file, &pid.to_string())
                .with_context(|| format!("cannot move process {pid} into {}", file.display()))?;
        }
        Ok(())
    }
}

// ---- pure parsing and planning, on fixture text ----

const PURE_V2_MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
28 24 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
const PURE_V2_CGROUP: &str = "0::/user.slice/user-1000.slice/session-2.scope\n";
const PURE_V2_CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma misc";

const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/batch/job7
2:cpu,cpuacct:/
0::/
";

fn host(mountinfo: &str, cgroup: &str, controllers: &str, kill: bool) -> Host {
    Host {
        mounts: hierarchies(mountinfo).unwrap(),
        own: parse_proc_cgroup(cgroup).unwrap(),
        v2_controllers: controllers.split_whitespace().map(str::to_string).collect(),
        v2_kill: kill,
    }
}

fn all_limits() -> Limits {
    Limits {
        memory_max: Some(64 << 20),
        cpu_max: Some("50000 100000".into()),
        pids_max: Some(20),
        devices: None,
    }
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn files(plan: &Plan) -> Vec<(String, String)> {
    plan.writes
        .iter()
        .map(|w| (w.file.display().to_string(), w.value.clone()))
        .collect()
}

#[test]
fn proc_cgroup_parses_v1_lists_and_v2() {
    let lines = parse_proc_cgroup(HYBRID_CGROUP).unwrap();
    assert_eq!(lines.len(), 6);
    assert_eq!(
        lines[4],
        Membership {
            hierarchy: 2,
            controllers: vec!["cpu".into(), "cpuacct".into()],
            path: "/".into()
        }
    );
    assert_eq!(lines[5].hierarchy, 0);
    assert!(lines[5].controllers.is_empty());
    // Paths may contain ':'.
    let odd = parse_proc_cgroup("0::/a:b\n").unwrap();
    assert_eq!(odd[0].path, "/a:b");
    let err = parse_proc_cgroup("garbage\n").unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn hierarchies_are_the_cgroup_mounts_of_mountinfo() {
    let m = hierarchies(HYBRID_MOUNTINFO).unwrap();
    assert_eq!(m.len(), 6);
    assert!(m[0].options.contains(&"cpuacct".to_string()));
    assert!(m[5].v2);
    let esc = hierarchies("1 2 0:1 / /mnt/c\\040g rw - cgroup2 none rw\n").unwrap();
    assert_eq!(esc[0].point, p("/mnt/c g"));
}

#[test]
fn pure_v2_plan_is_one_dir_with_controllers_enabled_top_down() {
    let h = host(PURE_V2_MOUNTINFO, PURE_V2_CGROUP, PURE_V2_CONTROLLERS, true);
    let plan = plan_on(&h, "web", None, &all_limits()).unwrap();
    let leaf = "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope/subhost/web";
    assert_eq!(plan.dirs, [p(leaf)]);
    assert_eq!(plan.kill, KillVia::CgroupKill(p(leaf)));
    assert_eq!(
        files(&plan),
        [
            (format!("{leaf}/memory.max"), "67108864".into()),
            (format!("{leaf}/memory.swap.max"), "0".into()),
            (format!("{leaf}/pids.max"), "20".into()),
            (format!("{leaf}/cpu.max"), "50000 100000".into()),
        ]
    );
    // Every level from the root down to the parent, the root first.
    let first = &plan.enable[0];
    assert_eq!(first.dir, p("/sys/fs/cgroup"));
    let last = plan.enable.last().unwrap();
    assert_eq!(last.dir, p(leaf).parent().unwrap());
    assert_eq!(plan.enable.len(), 5 * 3);
    assert!(plan.enable.iter().all(|e| e.dir != p(leaf)));
    let text = plan.to_string();
    assert!(
        text.contains("echo +memory > /sys/fs/cgroup/cgroup.subtree_control\n"),
        "{text}"
    );
    assert!(text.contains(&format!("mkdir {leaf}\n")), "{text}");
    assert!(
        text.contains(&format!("echo 67108864 > {leaf}/memory.max\n")),
        "{text}"
    );
}

#[test]
fn pure_v2_root_launcher_uses_subhost_and_no_limits_needs_no_controllers() {
    let h = host(PURE_V2_MOUNTINFO, "0::/\n", PURE_V2_CONTROLLERS, true);
    let plan = plan_on(&h, "web", None, &Limits::default()).unwrap();
    assert_eq!(plan.dirs, [p("/sys/fs/cgroup/subhost/web")]);
    assert!(plan.enable.is_empty());
    assert!(plan.writes.is_empty());
}

#[test]
fn pure_v2_without_cgroup_kill_freezes_through_v2() {
    let h = host(PURE_V2_MOUNTINFO, "0::/\n", PURE_V2_CONTROLLERS, false);
    let plan = plan_on(&h, "web", None, &Limits::default()).unwrap();
    assert_eq!(
        plan.kill,
        KillVia::V2Freeze(p("/sys/fs/cgroup/subhost/web"))
    );
}

#[test]
fn pure_v2_missing_controller_is_a_clear_error() {
    let h = host(PURE_V2_MOUNTINFO, "0::/\n", "cpu io", true);
    let limits = Limits {
        pids_max: Some(5),
        ..Limits::default()
    };
    let err = plan_on(&h, "web", None, &limits).unwrap_err().to_string();
    assert!(err.contains("PIDS_MAX"), "{err}");
    assert!(err.contains("/sys/fs/cgroup/cgroup.controllers"), "{err}");
}

#[test]
fn hybrid_plan_uses_v2_for_membership_and_v1_for_limits() {
    let h = host(HYBRID_MOUNTINFO, HYBRID_CGROUP, "hugetlb", true);
    let plan = plan_on(&h, "web", None, &all_limits()).unwrap();
    assert_eq!(
        plan.dirs,
        [
            p("/sys/fs/cgroup/unified/subhost/web"),
            p("/sys/fs/cgroup/memory/batch/job7/subhost/web"),
            p("/sys/fs/cgroup/pids/subhost/web"),
            p("/sys/fs/cgroup/cpu,cpuacct/subhost/web"),
        ]
    );
    assert!(plan.enable.is_empty());
    assert_eq!(
        plan.kill,
        KillVia::CgroupKill(p("/sys/fs/cgroup/unified/subhost/web"))
    );
    let w = files(&plan);
    let mem = "/sys/fs/cgroup/memory/batch/job7/subhost/web";
    assert!(w.contains(&(format!("{mem}/memory.limit_in_bytes"), "67108864".into())));
    assert!(w.contains(&(
        format!("{mem}/memory.memsw.limit_in_bytes"),
        "67108864".into()
    )));
    let cpu = "/sys/fs/cgroup/cpu,cpuacct/subhost/web";
    let period = w
        .iter()
        .position(|x| x.0 == format!("{cpu}/cpu.cfs_period_us"));
    let quota = w
        .iter()
        .position(|x| x.0 == format!("{cpu}/cpu.cfs_quota_us"));
    assert!(period.unwrap() < quota.unwrap(), "{w:?}");
    assert_eq!(w[quota.unwrap()].1, "50000");
    assert_eq!(
        plan.memory_usage,
        Some(p(&format!("{mem}/memory.usage_in_bytes")))
    );
}

/// The first USERNS subhost on a host: neither its cgroup nor the parent
/// the launcher makes for it exists when the delegation is planned. The
/// plan's mounts say which directory is on cgroup v2, not the directories.
#[test]
fn delegation_is_planned_from_the_mounts_while_the_parent_does_not_exist() {
    let parent = format!("/shtcg-{}-absent/subhost", std::process::id());
    for (mountinfo, cgroup, point) in [
        (HYBRID_MOUNTINFO, HYBRID_CGROUP, "/sys/fs/cgroup/unified"),
        (PURE_V2_MOUNTINFO, PURE_V2_CGROUP, "/sys/fs/cgroup"),
    ] {
        let h = host(mountinfo, cgroup, PURE_V2_CONTROLLERS, true);
        for parent in [None, Some(parent.as_str())] {
            let plan = plan_on(&h, "web", parent, &all_limits()).unwrap();
            let v2 = plan.v2_dir.clone().expect("a cgroup v2 directory");
            assert!(v2.starts_with(point), "{v2:?}");
            assert!(plan.dirs.contains(&v2), "{plan:?}");
            // The default parent may be another subhost's on this host.
            if parent.is_some() {
                assert!(!v2.parent().unwrap().exists(), "{v2:?}");
            }
            let d = delegation(&plan, 3_211_264).expect("delegated");
            assert_eq!(d.dir, v2);
            assert!(d.files.iter().any(|f| f == "cgroup.procs"), "{d:?}");
        }
    }
    // No cgroup v2 at all: nothing to delegate.
    let v1_only: String = HYBRID_MOUNTINFO
        .lines()
        .filter(|l| !l.contains(" - cgroup2 "))
        .map(|l| format!("{l}\n"))
        .collect();
    let h = host(&v1_only, HYBRID_CGROUP, "", false);
    let plan = plan_on(&h, "web", None, &Limits::default()).unwrap();
    assert_eq!(plan.v2_dir, None);
    assert!(delegation(&plan, 3_211_264).is_none());
}

/// What `stop` would kill and remove, from a record anyone can write: only
/// a directory where the launcher puts this subhost's cgroup.
#[test]
fn a_recorded_cgroup_is_believed_only_where_the_launcher_puts_it() {
    let h = host(HYBRID_MOUNTINFO, HYBRID_CGROUP, "", true);
    let check = |parent: Option<&str>, dir: &str| not_made_for(&h.mounts, "web", parent, &p(dir));
    // Everything a plan makes, from any cgroup of the launcher.
    for parent in [None, Some("/machines/"), Some("/a/b")] {
        let plan = plan_on(&h, "web", parent, &all_limits()).unwrap();
        for d in &plan.dirs {
            assert_eq!(not_made_for(&h.mounts, "web", parent, d), None, "{d:?}");
        }
    }
    assert_eq!(
        check(None, "/sys/fs/cgroup/unified/other/subhost/web"),
        None
    );
    for (parent, dir, why) in [
        (None, "/sys/fs/cgroup/unified/other", "last component"),
        (
            None,
            "/sys/fs/cgroup/unified/subhost/other",
            "last component",
        ),
        (None, "/sys/fs/cgroup/unified/web", ".../subhost/web"),
        (
            None,
            "/sys/fs/cgroup/unified/machines/web",
            ".../subhost/web",
        ),
        (None, "/sys/fs/cgroup/unified", "not below a cgroup mount"),
        (
            None,
            "/sys/fs/cgroup/subhost/web",
            "not below a cgroup mount",
        ),
        (None, "/tmp/subhost/web", "not below a cgroup mount"),
        (None, "subhost/web", "plain absolute"),
        (
            None,
            "/sys/fs/cgroup/unified/subhost/../x/subhost/web",
            "plain absolute",
        ),
        (
            Some("/machines"),
            "/sys/fs/cgroup/unified/subhost/web",
            "CGROUP_PARENT=/machines",
        ),
        (
            Some("/machines"),
            "/sys/fs/cgroup/unified/x/machines/web",
            "CGROUP_PARENT",
        ),
        (Some("/"), "/sys/fs/cgroup/unified/web", "CGROUP_PARENT"),
    ] {
        let got = check(parent, dir).unwrap_or_else(|| panic!("{dir} believed"));
        assert!(got.contains(why), "{dir}: {got}");
    }
}

/// On the real kernel: a path that resolves elsewhere or is no cgroup is
/// refused; one that is gone has nothing in it to act on.
#[test]
fn a_recorded_cgroup_must_be_a_cgroup_directory_as_named() {
    let tmp = std::env::temp_dir().join(format!("shtcg-vet-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    let link = tmp.join("link");
    let _ = fs::remove_file(&link);
    let point = Host::probe()
        .unwrap()
        .v2_mount()
        .map(|m| m.point.clone())
        .unwrap_or_else(|| p("/sys/fs/cgroup"));
    std::os::unix::fs::symlink(&point, &link).unwrap();
    let on_link = not_a_cgroup_dir(&link);
    let on_tmp = not_a_cgroup_dir(&tmp);
    let gone = not_a_cgroup_dir(&tmp.join("gone"));
    let real = not_a_cgroup_dir(&point);
    fs::remove_file(&link).unwrap();
    fs::remove_dir(&tmp).unwrap();
    assert!(on_link.is_some_and(|w| w.contains("resolves to")));
    assert!(on_tmp.is_some_and(|w| w.contains("cgroup filesystem")));
    assert_eq!(gone, None);
    assert_eq!(real, None);
}

#[test]
fn hybrid_without_cgroup_kill_adds_the_v1_freezer() {
    let h = host(HYBRID_MOUNTINFO, HYBRID_CGROUP, "", false);
    let plan = plan_on(&h, "web", Some("/machines/"), &Limits::default()).unwrap();
    assert_eq!(
        plan.dirs,
        [
            p("/sys/fs/cgroup/unified/machines/web"),
            p("/sys/fs/cgroup/freezer/machines/web"),
        ]
    );
    assert_eq!(
        plan.kill,
        KillVia::V1Freezer(p("/sys/fs/cgroup/freezer/machines/web"))
    );
}

#[test]
fn cpu_max_max_becomes_minus_one_on_v1() {
    let h = host(HYBRID_MOUNTINFO, HYBRID_CGROUP, "", true);
    let limits = Limits {
        cpu_max: Some("max 50000".into()),
        ..Limits::default()
    };
    let w = files(&plan_on(&h, "web", None, &limits).unwrap());
    assert!(
        w.iter()
            .any(|x| x.0.ends_with("cpu.cfs_quota_us") && x.1 == "-1"),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|x| x.0.ends_with("cpu.cfs_period_us") && x.1 == "50000"),
        "{w:?}"
    );
}

#[test]
fn mounted_subtree_is_stripped_and_outside_is_an_error() {
    let mi = "41 31 0:38 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    let h = host(mi, "0::/docker/abc/app\n", "", true);
    let plan = plan_on(&h, "web", None, &Limits::default()).unwrap();
    assert_eq!(plan.dirs, [p("/sys/fs/cgroup/app/subhost/web")]);
    let h = host(mi, "0::/other\n", "", true);
    let err = plan_on(&h, "web", None, &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("CGROUP_PARENT"), "{err}");
}

#[test]
fn bad_parent_name_and_limits_are_refused() {
    let h = host(PURE_V2_MOUNTINFO, "0::/\n", PURE_V2_CONTROLLERS, true);
    let none = Limits::default();
    for parent in ["/", "relative", "/a/../b", "", "//"] {
        let err = plan_on(&h, "web", Some(parent), &none)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CGROUP_PARENT"), "{parent:?}: {err}");
    }
    for name in ["", "..", "a/b"] {
        assert!(plan_on(&h, name, None, &none).is_err(), "{name:?}");
    }
    for cpu in ["", "half", "500 100000", "50000 10", "1 2 3"] {
        let limits = Limits {
            cpu_max: Some(cpu.into()),
            ..Limits::default()
        };
        let err = plan_on(&h, "web", None, &limits).unwrap_err().to_string();
        assert!(err.contains("CPU_MAX"), "{cpu:?}: {err}");
    }
    let zero = Limits {
        memory_max: Some(0),
        ..Limits::default()
    };
    assert!(plan_on(&h, "web", None, &zero).is_err());
    assert_eq!(parse_cpu_max("max").unwrap(), (None, 100_000));
}

#[test]
fn member_dirs_maps_each_hierarchy() {
    let mounts = hierarchies(HYBRID_MOUNTINFO).unwrap();
    let lines = parse_proc_cgroup(HYBRID_CGROUP).unwrap();
    let dirs = member_dirs(&mounts, &lines);
    assert!(
        dirs.contains(&p("/sys/fs/cgroup/memory/batch/job7")),
        "{dirs:?}"
    );
    assert!(dirs.contains(&p("/sys/fs/cgroup/cpu,cpuacct")), "{dirs:?}");
    assert!(dirs.contains(&p("/sys/fs/cgroup/unified")), "{dirs:?}");
    assert_eq!(dirs.len(), 6);
}

// ---- on the real kernel, as root ----

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the cgroup tests need root: run cargo test as root"
    );
}

/// A parent of its own per test, so tests can run side by side and remove
/// everything they made.
fn test_parent(tag: &str) -> String {
    format!("/shtcg-{}-{tag}", std::process::id())
}

/// Kills and removes a test's cgroups and its children, even on failure.
struct Guard {
    plan: Plan,
    cg: Cgroup,
    children: Vec<Child>,
}

impl Guard {
    fn new(tag: &str, limits: &Limits) -> Guard {
        require_root();
        let plan = plan(tag, Some(&test_parent(tag)), limits).unwrap();
        Guard::with_plan(plan)
    }

    fn with_plan(plan: Plan) -> Guard {
        let cg = Cgroup::from_plan(&plan);
        let mut g = Guard {
            plan,
            cg,
            children: Vec::new(),
        };
        g.cg = create(&g.plan).unwrap();
        g
    }

    /// `sh -c SCRIPT` moved into the cgroup before it runs SCRIPT.
    fn spawn(&mut self, script: &str) -> Pid {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("read _ && {{ {script}\n}}"))
            .stdin(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; the shell dies with the test's
        // thread instead of outliving a crashed test.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let stdin: Option<ChildStdin> = child.stdin.take();
        self.children.push(child);
        self.cg.attach(pid).unwrap();
        let mut stdin = stdin.unwrap();
        stdin.write_all(b"go\n").unwrap();
        pid
    }

    fn child(&mut self, pid: Pid) -> &mut Child {
        self.children
            .iter_mut()
            .find(|c| c.id() as i32 == pid.as_raw())
            .unwrap()
    }

    fn wait(&mut self, pid: Pid, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let c = self.child(pid);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{pid} still runs after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.cg.kill_all(Duration::from_secs(5)).is_err() {
            // Whatever the bug, leave no process behind.
            kill_each(&self.cg.pids().unwrap_or_default());
            std::thread::sleep(Duration::from_millis(200));
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A killed fork bomb's children are reparented and reaped a moment
        // later; until then the leaf may still be busy. Retried for up to
        // 10 s, so that no test leaves its parent behind.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let _ = self.cg.remove();
            let mut left = false;
            for d in &self.plan.dirs {
                if let Some(parent) = d.parent() {
                    let ours = parent
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("shtcg-"));
                    if ours && remove_dir_retrying(parent).is_err() {
                        left = true;
                    }
                }
            }
            if !left || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn read_trim(f: &Path) -> String {
    fs::read_to_string(f)
        .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        .trim()
        .to_string()
}

fn self_is_hybrid() -> bool {
    let own = read_proc_cgroup(Pid::this()).unwrap();
    own.iter()
        .any(|l| l.hierarchy != 0 && l.controllers.iter().any(|c| c == "memory"))
}

/// Forks a child that joins the cgroup itself and then runs `body`; the
/// child only makes system calls, as the test binary has other threads.
fn fork_joined(cg: &Cgroup, body: fn() -> i32) -> Pid {
    // SAFETY: the child calls only async-signal-safe code (join_self
    // allocates nothing on success, body makes raw system calls) and leaves
    // with _exit.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            // SAFETY: prctl with integer arguments; _exit never returns.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if cg.join_self().is_err() {
                    libc::_exit(100);
                }
                libc::_exit(body())
            }
        }
        ForkResult::Parent { child } => child,
    }
}

/// Reaps a forked child, SIGKILLing it after `limit`.
fn reap(pid: Pid, limit: Duration) -> WaitStatus {
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            WaitStatus::StillAlive => {
                let _ = kill(pid, Signal::SIGKILL);
                let st = waitpid(pid, None);
                panic!("{pid} still ran after {limit:?}; killed: {st:?}");
            }
            st => return st,
        }
    }
}

fn sleep_body() -> i32 {
    let ts = libc::timespec {
        tv_sec: 60,
        tv_nsec: 0,
    };
    // SAFETY: nanosleep with a valid timespec and no remainder pointer.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    0
}

#[test]
fn plan_on_this_host_never_uses_a_root() {
    let plan = plan("shtcg-plan", None, &all_limits()).unwrap();
    let mounts = hierarchies(&fs::read_to_string("/proc/self/mountinfo").unwrap()).unwrap();
    let points: Vec<&Path> = mounts.iter().map(|m| m.point.as_path()).collect();
    for d in &plan.dirs {
        assert!(d.ends_with("subhost/shtcg-plan"), "{d:?}");
        assert!(
            points.iter().any(|pt| d.starts_with(pt)),
            "{d:?} not on a cgroup mount"
        );
        assert!(
            !points.contains(&d.as_path()),
            "{d:?} is a hierarchy's root"
        );
        assert!(
            !points.contains(&d.parent().unwrap()),
            "{d:?} sits in a root"
        );
    }
    let v2 = mounts.iter().find(|m| m.v2).expect("cgroup2 is mounted");
    assert!(plan.dirs[0].starts_with(&v2.point), "{:?}", plan.dirs);
    let writes = files(&plan);
    let text = plan.to_string();
    println!("{text}");
    assert!(text.contains("echo 67108864 > "), "{text}");
    if self_is_hybrid() {
        assert!(plan.enable.is_empty(), "{text}");
        let mem = mounts
            .iter()
            .find(|m| !m.v2 && m.options.iter().any(|o| o == "memory"))
            .unwrap();
        let limit = writes
            .iter()
            .find(|w| w.0.ends_with("/memory.limit_in_bytes"))
            .expect("a v1 memory limit");
        assert!(Path::new(&limit.0).starts_with(&mem.point), "{text}");
        assert!(writes
            .iter()
            .any(|w| w.0.ends_with("/pids.max") && w.1 == "20"));
        assert!(writes.iter().any(|w| w.0.ends_with("/cpu.cfs_quota_us")));
        assert_eq!(plan.dirs.len(), 4, "v2, memory, pids, cpu: {text}");
    } else {
        assert_eq!(plan.dirs.len(), 1, "{text}");
        assert!(writes.iter().any(|w| w.0.ends_with("/memory.max")));
    }
    if kernel_at_least(5, 14) {
        assert_eq!(plan.kill, KillVia::CgroupKill(plan.dirs[0].clone()));
    }
}

#[test]
fn create_writes_limits_that_read_back() {
    let g = Guard::new("shtcg-limits", &all_limits());
    let mut seen = 0;
    for w in &g.plan.writes {
        if w.if_present && !w.file.exists() {
            continue;
        }
        let got = read_trim(&w.file);
        assert_eq!(got, w.value, "{}", w.file.display());
        seen += 1;
    }
    let any = |suffix: &str, want: &str| {
        g.plan
            .writes
            .iter()
            .any(|w| w.file.to_string_lossy().ends_with(suffix) && read_trim(&w.file) == want)
    };
    assert!(any("memory.max", "67108864") || any("memory.limit_in_bytes", "67108864"));
    assert!(any("pids.max", "20"));
    assert!(any("cpu.max", "50000 100000") || any("cpu.cfs_quota_us", "50000"));
    assert!(seen >= 3);
    // The kernel accounts it: nothing runs in it yet.
    assert_eq!(g.cg.usage().pids_current, Some(0));
}

#[test]
fn a_child_that_joins_is_in_every_hierarchy() {
    let g = Guard::new("shtcg-join", &all_limits());
    let child = fork_joined(&g.cg, sleep_body);
    let inside = wait_until(Duration::from_secs(5), || {
        let dirs = dirs_of(child).unwrap_or_default();
        g.cg.dirs().iter().all(|d| dirs.contains(d))
    });
    let dirs = dirs_of(child);
    let pids = g.cg.pids();
    let usage = g.cg.usage();
    let _ = kill(child, Signal::SIGKILL);
    reap(child, Duration::from_secs(5));
    assert!(inside, "child in {dirs:?}, cgroup is {:?}", g.cg.dirs());
    assert_eq!(pids.unwrap(), [child.as_raw()]);
    assert_eq!(usage.pids_current, Some(1));
    assert!(usage.memory_current.is_some_and(|m| m > 0), "{usage:?}");
}

fn escaped_and_term_ignoring_are_killed(mut g: Guard) {
    // The shell ignores SIGTERM, leaves a sleep behind in a session of its
    // own (setsid forks, the inner shell forks again and exits), then
    // becomes a sleep that still ignores SIGTERM.
    let main = g.spawn(
        "setsid sh -c 'sleep 120 & exit 0' </dev/null >/dev/null 2>&1; \
         trap '' TERM; exec sleep 120",
    );
    let main_sid = nix::unistd::getsid(Some(main)).unwrap();
    let mut escaped = None;
    let found = wait_until(Duration::from_secs(5), || {
        escaped =
            g.cg.pids()
                .unwrap()
                .into_iter()
                .map(Pid::from_raw)
                .find(|&p| {
                    nix::unistd::getsid(Some(p)).is_ok_and(|s| s != main_sid)
                        && fs::read_to_string(format!("/proc/{p}/comm"))
                            .is_ok_and(|c| c.trim() == "sleep")
                });
        escaped.is_some()
            && fs::read_to_string(format!("/proc/{main}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    assert!(found, "no escaped sleep; cgroup has {:?}", g.cg.pids());
    let escaped = escaped.unwrap();

    kill(main, Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        g.child(main).try_wait().unwrap().is_none(),
        "SIGTERM was not ignored"
    );

    g.cg.kill_all(Duration::from_secs(10)).unwrap();
    assert_eq!(g.cg.pids().unwrap(), Vec::<i32>::new());
    let st = g.wait(main, Duration::from_secs(5));
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    // The escaped one is dead: gone, or a zombie its new parent has yet to reap.
    let state = fs::read_to_string(format!("/proc/{escaped}/stat")).unwrap_or_default();
    let zombie_or_gone = state.is_empty()
        || state
            .rsplit(") ")
            .next()
            .is_some_and(|s| s.starts_with('Z'));
    assert!(zombie_or_gone, "escaped {escaped} lives: {state}");
    g.cg.remove().unwrap();
}

#[test]
fn kill_all_with_cgroup_kill_reaches_escaped_processes() {
    if !kernel_at_least(5, 14) {
        // The freezer's test below covers this kernel's way.
        eprintln!("skipped: this kernel has no cgroup.kill (Linux 5.14)");
        return;
    }
    let g = Guard::new("shtcg-kill", &Limits::default());
    assert!(matches!(g.plan.kill, KillVia::CgroupKill(_)), "{}", g.plan);
    escaped_and_term_ignoring_are_killed(g);
}

#[test]
fn kill_all_by_freezing_reaches_escaped_processes() {
    require_root();
    let mut h = Host::probe().unwrap();
    // As on a kernel without cgroup.kill.
    h.v2_kill = false;
    let tag = "shtcg-freeze";
    let plan = plan_on(&h, tag, Some(&test_parent(tag)), &Limits::default()).unwrap();
    assert!(
        matches!(plan.kill, KillVia::V1Freezer(_) | KillVia::V2Freeze(_)),
        "{plan}"
    );
    escaped_and_term_ignoring_are_killed(Guard::with_plan(plan));
}

fn hog_body() -> i32 {
    const SIZE: usize = 200 << 20;
    // SAFETY: a fresh private anonymous mapping; only this process uses it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return 3;
    }
    let mut off = 0;
    while off < SIZE {
        // SAFETY: off < SIZE, inside the mapping made above.
        unsafe { p.cast::<u8>().add(off).write_volatile(1) };
        off += 4096;
    }
    0
}

#[test]
fn memory_hog_is_oom_killed_inside() {
    let limits = Limits {
        memory_max: Some(64 << 20),
        ..Limits::default()
    };
    let g = Guard::new("shtcg-oom", &limits);
    let hog = fork_joined(&g.cg, hog_body);
    let st = reap(hog, Duration::from_secs(30));
    assert_eq!(st, WaitStatus::Signaled(hog, Signal::SIGKILL, false));
    let mem_dir = g.plan.memory_usage.as_ref().unwrap().parent().unwrap();
    let events = ["memory.events", "memory.oom_control"]
        .iter()
        .map(|f| mem_dir.join(f))
        .find(|f| f.exists())
        .unwrap();
    let text = read_trim(&events);
    let kills: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(kills >= 1, "{}: {text}", events.display());
}

#[test]
fn fork_bomb_stops_at_pids_max_and_is_killed() {
    let limits = Limits {
        pids_max: Some(20),
        ..Limits::default()
    };
    let mut g = Guard::new("shtcg-bomb", &limits);
    let bomb = g.spawn("i=0; while [ $i -lt 100 ]; do sleep 120 & i=$((i+1)); done; wait");
    let pids_dir = g
        .plan
        .pids_usage
        .as_ref()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let refused = || {
        fs::read_to_string(pids_dir.join("pids.events"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("max ")?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || refused() > 0),
        "no fork was refused; pids.current is {:?}",
        g.cg.usage().pids_current
    );
    let current = g.cg.usage().pids_current.unwrap();
    assert!((1..=20).contains(&current), "pids.current {current}");
    g.cg.kill_all(Duration::from_secs(10)).unwrap();
    assert_eq!(g.cg.pids().unwrap(), Vec::<i32>::new());
    g.wait(bomb, Duration::from_secs(5));
    // pids.current counts the dead until their parents reap them.
    assert!(
        wait_until(Duration::from_secs(5), || g.cg.usage().pids_current
            == Some(0)),
        "pids.current is {:?}",
        g.cg.usage().pids_current
    );
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(g.child(bomb).stderr.as_mut().unwrap(), &mut err);
    assert!(
        err.to_lowercase().contains("fork"),
        "the shell saw no fork failure: {err}"
    );
}

#[test]
fn create_reuses_an_empty_leftover_and_refuses_a_busy_one() {
    let limits = Limits {
        pids_max: Some(7),
        ..Limits::default()
    };
    let mut g = Guard::new("shtcg-reuse", &limits);
    // As after a crash: the directories are there, nothing runs in them.
    create(&g.plan).unwrap();
    // exec: the shell becomes the sleep, so one process at any moment.
    g.spawn("exec sleep 60");
    let err = format!("{:#}", create(&g.plan).unwrap_err());
    assert!(err.contains("already holds processes"), "{err}");
    // The failed call removed nothing of the running subhost's.
    assert!(g.plan.dirs.iter().all(|d| d.is_dir()));
    assert_eq!(g.cg.pids().unwrap().len(), 1);
}

#[test]
fn failed_create_leaves_nothing_behind() {
    require_root();
    let tag = "shtcg-undo";
    let mut plan = plan(tag, Some(&test_parent(tag)), &Limits::default()).unwrap();
    let bad = plan.dirs.last().unwrap().join("no.such.file");
    plan.writes.push(Write {
        file: bad,
        value: "1".into(),
        if_present: false,
    });
    let guard = Guard {
        cg: Cgroup::from_plan(&plan),
        plan: plan.clone(),
        children: Vec::new(),
    };
    let err = format!("{:#}", create(&plan).unwrap_err());
    assert!(err.contains("no.such.file"), "{err}");
    for d in &plan.dirs {
        assert!(!d.exists(), "{} is left", d.display());
    }
    drop(guard);
}

#[test]
fn remove_is_idempotent_and_open_finds_only_what_exists() {
    let g = Guard::new("shtcg-remove", &all_limits());
    let tag = "shtcg-remove";
    let found = open(tag, Some(&test_parent(tag))).expect("open finds the new cgroup");
    let mut want = g.cg.dirs().to_vec();
    let mut got = found.dirs().to_vec();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(found.kill, g.cg.kill);
    let recorded = open_dirs(g.cg.dirs()).expect("open_dirs finds the new cgroup");
    assert_eq!(recorded.dirs(), g.cg.dirs());
    assert_eq!(recorded.kill, g.cg.kill);
    // Never a hierarchy's root, even when asked.
    assert!(open_dirs(&[p("/sys/fs/cgroup/pids"), p("/tmp")]).is_none());
    found.remove().unwrap();
    for d in g.cg.dirs() {
        assert!(!d.exists(), "{}", d.display());
    }
    found.remove().unwrap();
    g.cg.remove().unwrap();
    assert!(open(tag, Some(&test_parent(tag))).is_none());
}

#[test]
fn the_quick_probe_plans_what_the_mount_table_plans() {
    require_root();
    let own = read_proc_cgroup(Pid::this()).unwrap();
    let quick = Host::usual_v2(own)
        .unwrap()
        .expect("cgroup v2 at its usual place here");
    let full = Host::probe().unwrap();
    let limits = Limits::default();
    assert_eq!(
        plan_on(&quick, "shtcgq", None, &limits).unwrap(),
        plan_on(&full, "shtcgq", None, &limits).unwrap()
    );
}

#[test]
fn delegation_lets_root_of_the_user_namespace_make_sub_cgroups() {
    use std::os::unix::fs::MetadataExt;
    let g = Guard::new("shtcg-deleg", &Limits::default());
    let range = crate::userns::Range {
        base: 3_211_264,
        count: 65536,
    };
    let d = delegation(&g.plan, range.base).expect("this host has cgroup v2");
    assert!(d.files.iter().any(|f| f == "cgroup.procs"), "{d:?}");
    assert!(d.to_string().starts_with("chown 3211264:3211264 "), "{d}");
    let ns = crate::userns::acquire(range, false).unwrap();
    let sub = d.dir.join("inner");
    let mkdir = || match fs::create_dir(&sub) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(99),
    };
    // Not delegated: the host's cgroup is not root inside's.
    assert_eq!(crate::userns::as_root_inside(&ns.user, mkdir), libc::EACCES);
    d.apply().unwrap();
    assert_eq!(crate::userns::as_root_inside(&ns.user, mkdir), 0);
    assert_eq!(fs::metadata(&sub).unwrap().uid(), range.base);
    let procs = fs::metadata(d.dir.join("cgroup.procs")).unwrap();
    assert_eq!((procs.uid(), procs.gid()), (range.base, range.base));
    // What is not delegatable stays the host's.
    assert_eq!(
        fs::metadata(d.dir.join("cgroup.max.depth")).unwrap().uid(),
        0
    );
    fs::remove_dir(&sub).unwrap();
}

#[test]
fn delegate_list_always_has_cgroup_procs() {
    assert_eq!(
        parse_delegate("cgroup.threads\ncgroup.subtree_control\n\n"),
        ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"]
    );
    assert_eq!(
        parse_delegate("cgroup.procs\nmemory.reclaim\n"),
        ["cgroup.procs", "memory.reclaim"]
    );
}

#[test]
fn oom_kill_count_reads_v2_events_and_v1_oom_control() {
    let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
    assert_eq!(oom_kill_count(v2), Some(2));
    let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
    assert_eq!(oom_kill_count(v1), Some(1));
    assert_eq!(oom_kill_count("oom 3\n"), None);
}

/// Two subhosts come and go under one parent the launcher makes: the one
/// leaving removes the parent when it is empty, and must never do so
/// between the other's making (or finding) it and making its leaf in it.
#[test]
fn parents_come_and_go_without_breaking_a_concurrent_create() {
    require_root();
    let parent = format!("{}/p", test_parent("race"));
    let limits = Limits {
        pids_max: Some(10),
        ..Limits::default()
    };
    let plans: Vec<Plan> = ["a", "b"]
        .iter()
        .map(|n| plan(&format!("shtcg-race{n}"), Some(&parent), &limits).unwrap())
        .collect();
    let top: Vec<PathBuf> = plans[0]
        .dirs
        .iter()
        .map(|d| d.parent().unwrap().parent().unwrap().to_path_buf())
        .collect();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = plans
            .iter()
            .map(|plan| {
                scope.spawn(move || {
                    let mut failed = Vec::new();
                    for _ in 0..150 {
                        match create(plan) {
                            Ok(cg) => {
                                if let Err(e) = cg.remove() {
                                    failed.push(format!("remove: {e:#}"));
                                }
                            }
                            Err(e) => failed.push(format!("create: {e:#}")),
                        }
                    }
                    failed
                })
            })
            .collect();
        runs.into_iter().flat_map(|r| r.join().unwrap()).collect()
    });
    // Whatever happened, leave nothing.
    for p in &plans {
        let _ = Cgroup::from_plan(p).remove();
    }
    let left: Vec<&PathBuf> = top.iter().filter(|t| t.exists()).collect();
    for t in &top {
        let _ = fs::remove_dir(t.join("p"));
        let _ = fs::remove_dir(t);
    }
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    // The last one out removed both levels the launcher made.
    assert!(left.is_empty(), "{left:?}");
}

/// A start killed after making the parents of its cgroup, before its leaf:
/// the parents are recorded as the launcher's (before they are made), and
/// `stop`, finding no cgroup, removes those that are empty, and only those.
#[test]
fn parents_a_killed_start_left_go_with_the_next_stop() {
    require_root();
    let top = test_parent("killed");
    let parent = format!("{top}/p");
    let limits = Limits {
        pids_max: Some(10),
        ..Limits::default()
    };
    let plan = plan("shtcg-killed", Some(&parent), &limits).unwrap();
    let other = Guard::with_plan(super::plan("shtcg-other", Some(&top), &limits).unwrap());
    let mine: Vec<PathBuf> = plan
        .dirs
        .iter()
        .map(|d| d.parent().unwrap().to_path_buf())
        .collect();
    // What `create` does up to the kill.
    {
        let parents = Parents::lock().unwrap();
        let missing = missing_parents(&plan);
        for m in &mine {
            assert!(missing.contains(m), "{m:?} not in {missing:?}");
        }
        parents.add(&missing).unwrap();
        for m in &missing {
            fs::create_dir(m).unwrap();
        }
    }
    // Someone else's directory beside them, not the launcher's.
    let foreign = mine[0].join("foreign");
    fs::create_dir(&foreign).unwrap();
    let busy = remove_empty_parents("shtcg-killed", Some(&parent), &[]);
    let kept = mine[0].is_dir();
    fs::remove_dir(&foreign).unwrap();
    remove_empty_parents("shtcg-killed", Some(&parent), &[]).unwrap();
    let left: Vec<&PathBuf> = mine.iter().filter(|d| d.exists()).collect();
    let others_kept = other.cg.dirs().iter().all(|d| d.is_dir());
    drop(other);
    for m in mine.iter().chain(plan.dirs.iter()) {
        let _ = fs::remove_dir(m);
    }
    busy.unwrap();
    assert!(kept, "removed a parent that was not empty");
    assert!(left.is_empty(), "{left:?}");
    assert!(others_kept, "another subhost's cgroup went");
}

// ---- the device policy ----

use super::devices::{self as dev, Access, Declared, Kind, Rule};

/// Runs an assembled program on one `struct bpf_cgroup_dev_ctx`, as the
/// kernel would: only the instructions `assemble` emits are known.
fn run_bpf(prog: &[dev::Insn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
    let ctx = [(access << 16) | kind, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
        let k = i.imm as u32 as u64;
        pc += 1;
        match i.code {
            0x61 => r[dst] = ctx[(i.off / 4) as usize] as u64,
            0x54 => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
            0x74 => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
            0xbc => r[dst] = r[src] as u32 as u64,
            0xb7 => r[dst] = i.imm as i64 as u64,
            0xb4 => r[dst] = i.imm as u32 as u64,
            0x7c => r[dst] = ((r[dst] as u32) >> (r[src] as u32 & 31)) as u64,
            0x55 if r[dst] != k => pc += i.off as usize,
            0x5d if r[dst] != r[src] => pc += i.off as usize,
            0x15 if r[dst] == k => pc += i.off as usize,
            0x35 if r[dst] >= k => pc += i.off as usize,
            0x55 | 0x5d | 0x15 | 0x35 => {}
            0x95 => return r[0],
            other => panic!("opcode {other:#x} at {}", pc - 1),
        }
        assert!(pc < prog.len(), "ran off the end");
    }
}

const BLOCK: u32 = 1;
const CHAR: u32 = 2;
const MKNOD: u32 = 1;
const READ: u32 = 2;
const WRITE: u32 = 4;

#[test]
fn the_device_program_allows_exactly_the_default_policy() {
    let prog = dev::assemble(&dev::DEFAULT);
    let allowed = |kind, access, major, minor| run_bpf(&prog, kind, access, major, minor) == 1;
    // The default nodes, for every access.
    for (maj, min) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
        (136, 7),
    ] {
        assert!(allowed(CHAR, READ | WRITE, maj, min), "{maj}:{min}");
        assert!(allowed(CHAR, MKNOD, maj, min), "{maj}:{min}");
    }
    // Any node may be made, none other opened.
    assert!(allowed(BLOCK, MKNOD, 254, 0));
    assert!(allowed(CHAR, MKNOD, 10, 200));
    assert!(!allowed(BLOCK, READ, 254, 0));
    assert!(!allowed(BLOCK, READ | WRITE, 8, 0));
    assert!(!allowed(CHAR, READ, 1, 11), "kmsg");
    assert!(!allowed(CHAR, WRITE, 1, 1), "mem");
    assert!(!allowed(CHAR, READ, 10, 200), "tun");
    // The type counts: a block device 1:3 is not /dev/null.
    assert!(!allowed(BLOCK, READ, 1, 3));
}

#[test]
fn a_declared_mode_limits_the_access() {
    let kvm = Rule {
        kind: Kind::Char,
        major: Some(10),
        minor: Some(232),
        access: Access::parse("rw").unwrap(),
    };
    let mut rules = dev::DEFAULT.to_vec();
    rules.push(kvm);
    let prog = dev::assemble(&rules);
    assert_eq!(run_bpf(&prog, CHAR, READ | WRITE, 10, 232), 1);
    assert_eq!(run_bpf(&prog, CHAR, READ, 10, 232), 1);
    let ro = Rule {
        kind: Kind::Block,
        access: Access::parse("r").unwrap(),
        major: Some(7),
        minor: Some(0),
    };
    let prog = dev::assemble(&[ro]);
    assert_eq!(run_bpf(&prog, BLOCK, READ, 7, 0), 1);
    assert_eq!(run_bpf(&prog, BLOCK, READ | WRITE, 7, 0), 0);
    assert_eq!(run_bpf(&prog, BLOCK, WRITE, 7, 0), 0);
    assert_eq!(run_bpf(&prog, BLOCK, READ, 7, 1), 0);
    assert_eq!(kvm.to_string(), "c 10:232 rw");
    assert_eq!(dev::DEFAULT[0].to_string(), "c *:* m");
    assert_eq!(dev::DEFAULT[10].to_string(), "c 136:* rwm");
}

#[test]
fn modes_and_declared_devices_are_checked() {
    for bad in ["", "x", "rr", "rwmx", "R"] {
        assert_eq!(Access::parse(bad), None, "{bad:?}");
    }
    assert_eq!(Access::parse("mwr"), Some(Access::RWM));
    let null = Declared::parse("/dev/null").unwrap();
    assert_eq!(null.rule.to_string(), "c 1:3 rwm");
    assert_eq!(null.host_wide(), None);
    let (what, _) = Declared::parse("/dev/null:rx").unwrap_err();
    assert!(what.contains("\"rx\""), "{what}");
    let (what, _) = Declared::parse("/dev/nosuch-sht").unwrap_err();
    assert!(what.contains("/dev/nosuch-sht"), "{what}");
    let (what, _) = Declared::parse("/etc/passwd").unwrap_err();
    assert!(what.contains("is not a device node"), "{what}");
    let (what, _) = Declared::parse("dev/null").unwrap_err();
    assert!(what.contains("absolute"), "{what}");
    // The disk holding /: a block device wants a mode.
    let disk = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .and_then(|l| {
            l.split(" - ")
                .nth(1)
                .map(|r| r.split(' ').nth(1).unwrap().to_string())
        })
        .filter(|s| Path::new(s).exists() && s.starts_with("/dev/"));
    if let Some(disk) = disk {
        let (what, fix) = Declared::parse(&disk).unwrap_err();
        assert!(what.contains("block device"), "{what}");
        assert!(fix.contains(&format!("{disk}:rw")), "{fix}");
        let d = Declared::parse(&format!("{disk}:r")).unwrap();
        assert!(d.host_wide().unwrap().contains("block"));
        assert_eq!(dev::warnings(&[d]).len(), 1);
    }
    // A node whose name holds ':' is a path, not a mode.
    let odd = std::env::temp_dir().join(format!("shtdev-{}:0", std::process::id()));
    nix::sys::stat::mknod(
        &odd,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let plain = Declared::parse(&odd.to_string_lossy());
    let with_mode = Declared::parse(&format!("{}:r", odd.display()));
    fs::remove_file(&odd).unwrap();
    assert_eq!(plain.unwrap().rule.to_string(), "c 1:3 rwm");
    assert_eq!(with_mode.unwrap().rule.to_string(), "c 1:3 r");
    let kmsg = Declared::parse("/dev/kmsg").unwrap();
    assert!(kmsg.host_wide().unwrap().contains("kernel log"));
    let shown = dev::describe(&[kmsg]);
    assert_eq!(shown.last().unwrap(), "c 1:11 rwm /dev/kmsg");
}

/// A hybrid host's v1 devices hierarchy, mounted read-write or (inside a
/// container) read-only.
fn devices_host(read_only: bool, with_cgroup2: bool) -> Host {
    let ro = if read_only { "ro" } else { "rw" };
    let mut mountinfo = format!(
        "{HYBRID_MOUNTINFO}36 31 0:33 / /sys/fs/cgroup/devices {ro},relatime - cgroup cgroup rw,devices\n"
    );
    let mut cgroup = format!("{HYBRID_CGROUP}5:devices:/\n");
    if !with_cgroup2 {
        mountinfo = mountinfo
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        cgroup = cgroup
            .lines()
            .filter(|l| !l.starts_with("0::"))
            .map(|l| format!("{l}\n"))
            .collect();
    }
    host(&mountinfo, &cgroup, "hugetlb", with_cgroup2)
}

fn default_devices() -> Limits {
    Limits {
        devices: Some(dev::DEFAULT.to_vec()),
        ..Limits::default()
    }
}

/// On a hybrid host the program goes on the cgroup2 directory the sandbox
/// is cloned into: no v1 devices cgroup to join (a migration per start).
#[test]
fn hybrid_device_policy_is_a_bpf_program_on_cgroup2() {
    let plan = plan_on(&devices_host(false, true), "web", None, &default_devices()).unwrap();
    let p = plan.device_program.as_ref().unwrap();
    assert_eq!(p.dir, PathBuf::from("/sys/fs/cgroup/unified/subhost/web"));
    assert_eq!(Some(&p.dir), plan.v2_dir.as_ref());
    assert!(
        !plan
            .dirs
            .iter()
            .any(|d| d.starts_with("/sys/fs/cgroup/devices")),
        "{:?}",
        plan.dirs
    );
    assert!(
        !files(&plan).iter().any(|w| w.0.contains("/devices.")),
        "{plan}"
    );
    assert!(plan.devices_inherited.is_none());
    let text = plan.to_string();
    assert!(
        text.contains("bpf prog attach to /sys/fs/cgroup/unified/subhost/web type cgroup_device"),
        "{text}"
    );
}

/// Only without cgroup2 (a legacy layout) is the v1 controller used.
#[test]
fn without_cgroup2_the_device_policy_is_v1_deny_all_then_allow() {
    let plan = plan_on(&devices_host(false, false), "web", None, &default_devices()).unwrap();
    let w = files(&plan);
    let (deny, allow) = (&w[w.len() - 12], &w[w.len() - 11]);
    assert!(deny.0.ends_with("/devices.deny") && deny.1 == "a", "{w:?}");
    assert!(
        allow.0.ends_with("/devices.allow") && allow.1 == "c *:* m",
        "{w:?}"
    );
    assert!(plan.device_program.is_none());
    assert!(
        plan.dirs.contains(&p("/sys/fs/cgroup/devices/subhost/web")),
        "{:?}",
        plan.dirs
    );
    let text = plan.to_string();
    assert!(
        text.contains("echo c 1:3 rwm > /sys/fs/cgroup/devices/subhost/web/devices.allow"),
        "{text}"
    );
}

/// Inside a container with a read-only v1 devices hierarchy (nspawn, which
/// refuses bpf() too), with or without cgroup2: the launcher's own device
/// cgroup, nothing to make or attach. Here the fixture's own devices cgroup
/// is this host's root one, which allows every device: refused.
#[test]
fn a_read_only_devices_hierarchy_is_inherited_with_or_without_cgroup2() {
    for with_cgroup2 in [true, false] {
        match plan_on(
            &devices_host(true, with_cgroup2),
            "web",
            None,
            &default_devices(),
        ) {
            Ok(plan) => {
                assert!(plan.devices_inherited.is_some(), "{plan}");
                assert!(plan.device_program.is_none(), "{plan}");
                assert!(
                    !files(&plan).iter().any(|w| w.0.contains("/devices.")),
                    "{plan}"
                );
            }
            Err(e) => assert!(e.to_string().contains("allows every device"), "{e:#}"),
        }
    }
}

#[test]
fn pure_v2_device_policy_is_a_bpf_program() {
    let h = host(PURE_V2_MOUNTINFO, PURE_V2_CGROUP, "memory pids cpu", true);
    let limits = Limits {
        devices: Some(dev::DEFAULT.to_vec()),
        ..Limits::default()
    };
    let plan = plan_on(&h, "web", None, &limits).unwrap();
    let p = plan.device_program.as_ref().unwrap();
    assert_eq!(Some(&p.dir), plan.v2_dir.as_ref());
    assert!(plan.to_string().contains("type cgroup_device"), "{plan}");
}

/// The plan's policy on this host, for real (on a hybrid host, the
/// program on cgroup2 next to a mounted v1 controller): a process in the
/// subhost's cgroup opens /dev/zero but not a node the policy leaves out.
#[test]
fn the_device_cgroup_stops_opening_nodes_outside_the_policy() {
    let limits = Limits {
        devices: Some(dev::DEFAULT.to_vec()),
        ..Limits::default()
    };
    let mut g = Guard::new("devv1", &limits);
    let pid =
        g.spawn("exec 3</dev/zero || exit 3; (exec 4</dev/net/tun) 2>/dev/null && exit 4; exit 0");
    assert!(g.wait(pid, Duration::from_secs(10)).success());
}

/// The BPF program attached to a cgroup v2 directory, for real: on a hybrid
/// host too, where it stands next to the v1 controller.
#[test]
fn the_bpf_device_program_stops_opening_nodes_outside_the_policy() {
    let limits = Limits {
        devices: Some(dev::DEFAULT.to_vec()),
        ..Limits::default()
    };
    require_root();
    let tag = "devbpf";
    let mut plan = plan(tag, Some(&test_parent(tag)), &limits).unwrap();
    // Only the v2 directory, as on a host without the v1 controller.
    plan.dirs
        .retain(|d| Some(d) == plan.v2_dir.as_ref() || !d.starts_with("/sys/fs/cgroup/devices"));
    plan.writes
        .retain(|w| !w.file.to_string_lossy().contains("/devices."));
    let v2 = plan.v2_dir.clone().expect("cgroup2 is mounted");
    plan.device_program = Some(dev::Program {
        dir: v2,
        rules: dev::DEFAULT.to_vec(),
    });
    let mut g = Guard::with_plan(plan);
    let pid =
        g.spawn("exec 3</dev/zero || exit 3; (exec 4</dev/net/tun) 2>/dev/null && exit 4; exit 0");
    assert!(g.wait(pid, Duration::from_secs(10)).success());
}

#[test]
fn a_read_only_devices_hierarchy_is_inherited_only_when_restricted() {
    let dir = std::env::temp_dir().join(format!("subhost-unit-devlist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("devices.list");
    std::fs::write(&list, "a *:* rwm\n").unwrap();
    let err = dev::inherited(&dir).unwrap_err().to_string();
    assert!(err.contains("allows every device"), "{err}");
    std::fs::write(&list, "c 1:3 rwm\nc 136:* rwm\n").unwrap();
    assert_eq!(dev::inherited(&dir).unwrap(), dir);
    std::fs::remove_file(&list).unwrap();
    assert!(dev::inherited(&dir).is_err(), "no list: refused");
    std::fs::remove_dir(&dir).unwrap();
}

/// The ids of the device programs attached to `dir` (or, `effective`, run
/// for its processes).
fn device_programs(dir: &Path, effective: bool) -> Vec<u32> {
    dev::programs(dir, effective).expect("BPF_PROG_QUERY").0
}

/// Whether the kernel still holds program `id`.
fn program_exists(id: u32) -> bool {
    let mut attr = [id, 0, 0];
    // SAFETY: attr is a live bpf_attr prefix (prog_id, next_id, open_flags)
    // of the size passed; a descriptor returned is closed at once.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            13, // BPF_PROG_GET_FD_BY_ID
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    if fd >= 0 {
        // SAFETY: fd was just returned to us and is used nowhere else.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}

/// The plan's program, for real on this host: a process in a cgroup the
/// subhost makes below its own is still held by it, nothing can be attached
/// there to lift it, and the program goes with the subhost's cgroup.
#[test]
fn the_device_program_holds_for_nested_cgroups_and_goes_with_the_cgroup() {
    let limits = default_devices();
    let mut g = Guard::new("devnest", &limits);
    let prog = g
        .plan
        .device_program
        .clone()
        .expect("cgroup2 is mounted here");
    let ids = device_programs(&prog.dir, false);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let inner = prog.dir.join("inner");
    fs::create_dir(&inner).unwrap();
    assert_eq!(device_programs(&inner, true), ids, "inherited below");
    let lifted = dev::Program {
        dir: inner.clone(),
        rules: vec![
            Rule {
                kind: Kind::Char,
                major: None,
                minor: None,
                access: Access::RWM,
            },
            Rule {
                kind: Kind::Block,
                major: None,
                minor: None,
                access: Access::RWM,
            },
        ],
    };
    let err = dev::attach(&lifted).unwrap_err();
    assert!(format!("{err:#}").contains("inner"), "{err:#}");
    let pid = g.spawn(&format!(
        "echo $$ > {}/cgroup.procs || exit 2; exec 3</dev/zero || exit 3; \
         (exec 4</dev/net/tun) 2>/dev/null && exit 4; exit 0",
        inner.display()
    ));
    let st = g.wait(pid, Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    drop(g);
    assert!(!prog.dir.exists());
    assert!(
        wait_until(Duration::from_secs(10), || !program_exists(ids[0])),
        "program {} outlived its cgroup",
        ids[0]
    );
}

/// What the policy allows, rule by rule, as the v1 controller reads it.
fn allowed_by_rules(rules: &[Rule], kind: u32, access: u32, major: u32, minor: u32) -> bool {
    rules.iter().any(|r| {
        let k = match r.kind {
            Kind::Char => CHAR,
            Kind::Block => BLOCK,
        };
        let bits =
            r.access.mknod as u32 | (r.access.read as u32) << 1 | (r.access.write as u32) << 2;
        k == kind
            && access & !bits == 0
            && r.major.is_none_or(|m| m == major)
            && r.minor.is_none_or(|m| m == minor)
    })
}

/// The grouped program decides as the rules do, one by one: for the
/// default, for declared nodes around the bit test's edges (minor 31, 32,
/// 0), and for random rule sets, over every type, access and the numbers
/// the rules name and their neighbours.
#[test]
fn the_grouped_program_decides_exactly_as_the_rules() {
    let rule = |kind, major, minor, access: &str| Rule {
        kind,
        major,
        minor,
        access: Access::parse(access).unwrap(),
    };
    let mut sets: Vec<Vec<Rule>> = vec![
        dev::DEFAULT.to_vec(),
        dev::rules(&[]),
        vec![],
        vec![rule(Kind::Block, None, None, "rwm")],
        vec![
            rule(Kind::Char, None, Some(5), "r"),
            rule(Kind::Char, Some(1), None, "w"),
        ],
    ];
    let mut declared = dev::DEFAULT.to_vec();
    declared.extend([
        rule(Kind::Char, Some(10), Some(232), "rw"),
        rule(Kind::Char, Some(10), Some(200), "rwm"),
        rule(Kind::Char, Some(10), Some(31), "rwm"),
        rule(Kind::Char, Some(10), Some(32), "rwm"),
        rule(Kind::Char, Some(10), Some(0), "rwm"),
        rule(Kind::Block, Some(7), Some(0), "r"),
        rule(Kind::Block, Some(259), Some(1 << 19), "rw"),
    ]);
    sets.push(declared);
    // Random sets from a fixed seed: the same on every run.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..300 {
        let len = next(8) as usize;
        let set = (0..len)
            .map(|_| {
                let kind = if next(2) == 0 {
                    Kind::Char
                } else {
                    Kind::Block
                };
                let major = (next(4) != 0).then(|| next(4) as u32 * 3);
                let minor = (next(4) != 0).then(|| [0, 1, 5, 31, 32, 33, 63, 64][next(8) as usize]);
                let access = ["r", "w", "m", "rw", "rm", "wm", "rwm"][next(7) as usize];
                rule(kind, major, minor, access)
            })
            .collect();
        sets.push(set);
    }
    require_root();
    for rules in &sets {
        let prog = dev::assemble(rules);
        // The kernel's verifier takes every such program (it refuses one
        // with a path that reaches no exit, or code that none reaches).
        drop(dev::load(rules).unwrap_or_else(|e| panic!("rules {rules:?}: {e:#}")));
        let mut majors: Vec<u32> = vec![0, 1, 2, 3, 5, 9, 10, 136, 254, (1 << 12) - 1];
        let mut minors: Vec<u32> = (0..=34)
            .chain([63, 64, 65, 200, 232, 1 << 19, (1 << 20) - 1])
            .collect();
        for r in rules {
            majors.extend(r.major.iter().flat_map(|m| [*m, m + 1]));
            minors.extend(r.minor.iter().flat_map(|m| [*m, m + 1]));
        }
        for kind in [BLOCK, CHAR] {
            for access in 1..=7 {
                for &major in &majors {
                    for &minor in &minors {
                        let want = allowed_by_rules(rules, kind, access, major, minor);
                        let got = run_bpf(&prog, kind, access, major, minor) == 1;
                        assert_eq!(
                            got, want,
                            "rules {rules:?}: type {kind} access {access} {major}:{minor}"
                        );
                    }
                }
            }
        }
    }
    assert_eq!(dev::assemble(&dev::DEFAULT).len(), 40);
}

fn w(file: &str, value: &str, if_present: bool) -> Write {
    Write {
        file: PathBuf::from(file),
        value: value.into(),
        if_present,
    }
}

#[test]
fn a_policy_record_reads_back_as_written_and_anything_else_is_none() {
    let policy = super::kept::Policy {
        parent: Some("/a b/p".into()),
        writes: vec![
            w("/sys/fs/cgroup/x/cpu.max", "50000 100000", false),
            w("/sys/fs/cgroup/x/memory.swap.max", "0", true),
        ],
        devices: Some("program\t/sys/fs/cgroup/x\tc 1:3 rwm, c 136:* rwm".into()),
    };
    let text = policy.to_string();
    assert_eq!(super::kept::Policy::parse(&text), Some(policy.clone()));
    let default_parent = super::kept::Policy {
        parent: None,
        writes: Vec::new(),
        devices: None,
    };
    assert_eq!(
        super::kept::Policy::parse(&default_parent.to_string()),
        Some(default_parent)
    );
    // Not a record this launcher wrote: the cgroup is made again.
    for bad in [
        "",
        "write\t0\t/f\t1\n",
        "parent\t\nwrite\t2\t/f\t1\n",
        "parent\t\nwrite\t0\t/f\n",
        "parent\t\nsomething\n",
        "parent\t\nparent\t/x\n",
    ] {
        assert_eq!(super::kept::Policy::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn limits_changed_or_dropped_are_reset_first_in_an_order_v1_accepts() {
    let had = [
        w("/m/memory.limit_in_bytes", "100", false),
        w("/m/memory.memsw.limit_in_bytes", "100", true),
        w("/p/pids.max", "50", false),
        w("/c/cpu.cfs_period_us", "100000", false),
        w("/c/cpu.cfs_quota_us", "50000", false),
    ];
    let want = [
        w("/m/memory.limit_in_bytes", "200", false),
        w("/m/memory.memsw.limit_in_bytes", "200", true),
        w("/p/pids.max", "50", false),
    ];
    let resets = super::kept::resets(&had, &want).unwrap();
    let got: Vec<(String, &str)> = resets
        .iter()
        .map(|r| (r.file.display().to_string(), r.value.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("/c/cpu.cfs_quota_us".to_string(), "-1"),
            ("/c/cpu.cfs_period_us".to_string(), "100000"),
            ("/m/memory.memsw.limit_in_bytes".to_string(), "-1"),
            ("/m/memory.limit_in_bytes".to_string(), "-1"),
        ]
    );
    assert!(resets[2].if_present, "skipped without swap accounting");
    let v2 = [
        w("/x/memory.max", "100", false),
        w("/x/memory.swap.max", "0", true),
        w("/x/cpu.max", "1000 1000", false),
    ];
    let resets = super::kept::resets(&v2, &[]).unwrap();
    let values: Vec<&str> = resets.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(values, ["max 100000", "max", "max"]);
    // A file whose default is unknown: made again rather than guessed.
    assert_eq!(
        super::kept::resets(&[w("/x/devices.allow", "a", false)], &[]),
        None
    );
}
