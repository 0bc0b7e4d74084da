//! A subhost's cgroup on the real kernel: delegated to root of its user
//! namespace even when its parent cgroup does not exist yet, released under
//! the subhost's lock when a foreground session ends (so sessions that
//! follow each other never meet the previous one's cgroup half gone), and
//! never taken from a record that names a cgroup the launcher does not
//! make for the subhost.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use subhost_tests::*;

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

/// Where cgroup v2 is mounted, if it is (pure or hybrid).
fn cgroup2_point() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
}

/// Every cgroup directory named `name` on the host, in any hierarchy.
fn cgroups_named(name: &str) -> Vec<PathBuf> {
    let out = run_timeout(
        &mut cmd(
            "find",
            [
                "/sys/fs/cgroup",
                "-maxdepth",
                "8",
                "-type",
                "d",
                "-name",
                name,
            ],
        ),
        LAUNCH_LIMIT,
    );
    out.stdout_str().lines().map(PathBuf::from).collect()
}

/// What the subhost `name` has under /run/subhost.
fn run_files(name: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/subhost") else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with(&format!("{name}.")))
        .collect()
}

/// cgroup directories a test makes by hand, removed on drop deepest first
/// (rmdir only: a cgroup directory holds no data), after killing the
/// processes the test started in them.
struct Scratch {
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in self.dirs.iter().rev() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while d.exists() && std::fs::remove_dir(d).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The first USERNS subhost under a parent cgroup gets its delegation: the
/// parent does not exist until the start makes it, so whether the
/// subhost's directory is on cgroup v2 cannot be read from it.
#[test]
fn a_userns_subhost_under_a_parent_not_made_yet_gets_its_cgroup_delegated() {
    let Some(point) = cgroup2_point() else {
        eprintln!("no cgroup v2 on this host: nothing to delegate");
        return;
    };
    let parent = unique_name("cgp");
    let top = point.join(&parent);
    // Dropped after the subhost, whose drop stops it.
    let mut cleanup = Scratch {
        dirs: vec![top.clone()],
        children: Vec::new(),
    };
    let s = Subhost::busybox(
        "cgd",
        &format!("USERNS=pick\nCGROUP_PARENT=/{parent}\nSTOP_TIMEOUT=1\n"),
    );
    let leaf = top.join(&s.name);
    cleanup.dirs.extend([leaf.clone(), leaf.join("inner")]);
    assert!(!top.exists(), "{} exists before the start", top.display());
    let out = s.sh(
        "mount -t cgroup2 none /sys/fs/cgroup && mkdir /sys/fs/cgroup/inner \
         && echo cgroup=ok",
    );
    assert_ok(&out);
    assert!(out.stdout_str().contains("cgroup=ok"), "{}", out.describe());
    assert_ok(&s.stop());
    // The parent the start made goes with the last subhost under it.
    assert!(!top.exists(), "{} is left", top.display());
}

/// Three shells start one subhost in loops, with no `stop`: each session
/// runs to its end (exit 0), or is refused at once because another one
/// runs (exit 125, "is running"); none is killed or refused for a cgroup
/// another launcher is removing. Then one `stop` leaves nothing.
#[test]
fn foreground_sessions_in_a_loop_from_three_shells_never_meet_a_half_released_cgroup() {
    let s = Subhost::busybox("cgl", "STOP_TIMEOUT=1\n");
    let run_for = Duration::from_secs(5);
    let results: Vec<(i32, String)> = std::thread::scope(|scope| {
        let loops: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let began = Instant::now();
                    let mut got = Vec::new();
                    while began.elapsed() < run_for && got.len() < 300 {
                        let out = s.sh("sleep 0.1; echo a >> /root/log");
                        got.push((out.code(), out.describe()));
                    }
                    got
                })
            })
            .collect();
        loops.into_iter().flat_map(|l| l.join().unwrap()).collect()
    });
    let sessions = results.iter().filter(|(c, _)| *c == 0).count();
    let refused = |(c, d): &&(i32, String)| *c == 125 && d.contains("is running (init PID");
    let bad: Vec<&String> = results
        .iter()
        .filter(|r| r.0 != 0 && !refused(r))
        .map(|r| &r.1)
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} starts failed otherwise; the first: {}",
        bad.len(),
        results.len(),
        bad.iter()
            .take(3)
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join("\n====\n")
    );
    assert!(sessions >= 3, "only {sessions} of {} ran", results.len());
    // Every session that ran wrote its line.
    let log = std::fs::read_to_string(s.root().join("root/log")).unwrap_or_default();
    assert_eq!(log.lines().count(), sessions);

    let out = s.stop();
    assert_ok(&out);
    assert!(!s.live_mounted());
    assert_eq!(run_files(&s.name), Vec::<String>::new());
    assert_eq!(cgroups_named(&s.name), Vec::<PathBuf>::new());
    let ns = run_timeout(&mut cmd("ip", ["netns", "list"]), LAUNCH_LIMIT);
    assert!(!ns.stdout_str().contains(&s.name), "{}", ns.describe());
}

/// `sleep 60` in a cgroup of its own, made for the test.
fn sleep_in(dir: &Path, scratch: &mut Scratch) -> i32 {
    std::fs::create_dir(dir).unwrap();
    scratch.dirs.push(dir.to_path_buf());
    let child = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    scratch.children.push(child);
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
    pid
}

fn alive(scratch: &mut Scratch, pid: i32) -> bool {
    scratch
        .children
        .iter_mut()
        .find(|c| c.id() as i32 == pid)
        .is_some_and(|c| c.try_wait().unwrap().is_none())
}

/// A `.cgroup` record that names a cgroup the launcher does not make for
/// the subhost is a problem `status` and `stop` name, and `stop` neither
/// kills what runs there nor removes it: it stops the subhost through the
/// default place.
#[test]
fn stop_leaves_alone_a_cgroup_the_record_names_but_the_launcher_never_makes() {
    let Some(point) = cgroup2_point() else {
        eprintln!("no cgroup v2 on this host");
        return;
    };
    let mut s = Subhost::busybox("cgr", "STOP_TIMEOUT=1\n");
    let record = PathBuf::from(format!("/run/subhost/{}.cgroup", s.name));
    let mut scratch = Scratch {
        dirs: Vec::new(),
        children: Vec::new(),
    };
    let other = point.join(unique_name("cgo"));
    let sleep = sleep_in(&other, &mut scratch);

    s.start_background(&[], &["sleep", "60"]);
    let own = std::fs::read_to_string(&record).expect("start records its cgroup");
    let own: Vec<PathBuf> = own.lines().map(PathBuf::from).collect();
    assert!(own.iter().all(|d| d.is_dir()), "{own:?}");
    std::fs::write(&record, format!("{}\n", other.display())).unwrap();

    let status = s.run(&["status", &s.name]);
    let text = status.stdout_str();
    assert!(
        text.contains(&record.display().to_string()) && text.contains(&other.display().to_string()),
        "status names neither the record nor what it names: {}",
        status.describe()
    );

    let out = s.stop();
    assert_eq!(out.code(), 1, "{}", out.describe());
    let err = out.stderr_str();
    assert!(
        err.contains(&record.display().to_string()) && err.contains(&other.display().to_string()),
        "{}",
        out.describe()
    );
    assert!(
        alive(&mut scratch, sleep),
        "stop killed a process of {}",
        other.display()
    );
    assert!(other.is_dir(), "stop removed {}", other.display());
    let procs = std::fs::read_to_string(other.join("cgroup.procs")).unwrap();
    assert_eq!(procs.trim(), sleep.to_string());
    // The subhost itself is stopped, its own cgroup found where the
    // launcher puts it.
    assert!(!s.live_mounted());
    assert!(!s.init_record().exists());
    assert!(own.iter().all(|d| !d.exists()), "{own:?} left");

    // The record is the operator's to check and remove; then all is stopped.
    std::fs::remove_file(&record).unwrap();
    let out = s.stop();
    assert_ok(&out);
    assert!(alive(&mut scratch, sleep));
}

/// A USERNS subhost's delegated cgroup is kept too: the sub-cgroups root
/// inside made in a session go when it ends, the directory stays (still
/// the range's root's), and the next session runs in it again.
#[test]
fn a_delegated_cgroup_is_kept_without_the_sub_cgroups_made_inside() {
    let Some(_) = cgroup2_point() else {
        eprintln!("no cgroup v2 on this host: nothing to delegate");
        return;
    };
    let s = Subhost::busybox("cgk", "USERNS=pick\nSTOP_TIMEOUT=1\n");
    let out = s.sh(
        "mount -t cgroup2 none /sys/fs/cgroup && mkdir /sys/fs/cgroup/inner \
         && echo $$ > /sys/fs/cgroup/inner/cgroup.procs && echo cgroup=ok",
    );
    assert_ok(&out);
    assert!(out.stdout_str().contains("cgroup=ok"), "{}", out.describe());
    let record = PathBuf::from(format!("/run/subhost/{}.cgroup", s.name));
    let dirs = std::fs::read_to_string(&record).expect("the cgroup is kept");
    let v2 = dirs
        .lines()
        .map(PathBuf::from)
        .find(|d| d.join("cgroup.kill").exists())
        .expect("a cgroup v2 directory");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&v2).unwrap();
    assert_ne!(meta.uid(), 0, "{} is not delegated", v2.display());
    assert!(
        !v2.join("inner").exists(),
        "the sub-cgroup made inside stays"
    );

    let out = s.sh("mount -t cgroup2 none /sys/fs/cgroup && ls /sys/fs/cgroup/ | grep -c inner");
    assert_eq!(out.stdout_str().trim(), "0", "{}", out.describe());
    assert_eq!(std::fs::metadata(&v2).unwrap().ino(), meta.ino());
    assert_ok(&s.stop());
    assert!(!v2.exists(), "{} is left", v2.display());
}
