//! Nothing of the host is ever lost: what an interrupted start leaves
//! staged, someone else's mount where the subhost's own goes, and a root
//! that is a symlink. Each test that could delete data if the launcher
//! were wrong works on a scratch base with a canary tree, never on `/`,
//! and checks the canary byte for byte afterwards.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use subhost_tests::*;

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

/// Every entry below `dir` (not following links) with its type, mode,
/// owner and content or link target: equal before and after means the
/// tree is intact.
fn digest(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(top: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(top, &p, out);
                "dir".to_string()
            } else {
                format!("file {:?}", std::fs::read(&p).unwrap())
            };
            out.insert(
                p.strip_prefix(top).unwrap().to_path_buf(),
                format!("{what} {:o} {}:{}", m.mode(), m.uid(), m.gid()),
            );
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A tree shaped like a host's `/etc`: files, a subdirectory, a link out,
/// odd owners and modes.
fn canary(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(dir.join("a"), "canary a\n").unwrap();
    std::fs::write(dir.join("sub/deeper/b"), vec![7u8; 70_000]).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", dir.join("sub/link")).unwrap();
    std::os::unix::fs::chown(dir.join("a"), Some(1234), Some(4321)).unwrap();
    std::fs::set_permissions(
        dir.join("sub"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
}

fn staging(s: &Subhost) -> PathBuf {
    PathBuf::from(format!("/run/subhost/{}.lower", s.name))
}

fn mounts_at_or_below(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|p| p == &dir || p.starts_with(&format!("{dir}/")))
        .collect()
}

/// A USERNS subhost over a scratch base (busybox) that holds a canary
/// tree at `etc/canary`, and a victim tree outside it.
struct Scene {
    s: Subhost,
    base: TempDir,
    victim: TempDir,
}

impl Scene {
    fn new(tag: &str, extra: &str) -> Scene {
        let base = TempDir::new();
        busybox_root(base.path());
        canary(&base.path().join("etc/canary"));
        let victim = TempDir::new();
        canary(victim.path());
        let s = Subhost::new(
            tag,
            &format!("LOWER={}\nUSERNS=pick\n{extra}", base.path().display()),
        );
        Scene { s, base, victim }
    }

    /// What a start killed with its layers attached leaves: a copy of the
    /// victim tree mounted on the staging directory's first layer.
    fn leave_staged_victim(&self, how: &str) {
        let at = staging(&self.s).join("0");
        std::fs::create_dir_all(&at).unwrap();
        assert_ok(&run_timeout(
            &mut cmd(
                "mount",
                [
                    how,
                    &self.victim.path().to_string_lossy(),
                    &at.to_string_lossy(),
                ],
            ),
            LAUNCH_LIMIT,
        ));
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        // A failed test may have left the staged copy: detach it before
        // the temp dirs go (never through it).
        let at = staging(&self.s);
        for p in mounts_at_or_below(&at).iter().rev() {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir(at.join("0"));
        let _ = std::fs::remove_dir(&at);
    }
}

/// The reproduction: a staged copy of a tree left mounted by a killed
/// USERNS start. The next `start` detaches it and uses its own layers; the
/// tree behind it is untouched, and nothing stays mounted there.
#[test]
fn a_leftover_staged_layer_is_detached_by_start_never_deleted() {
    let scene = Scene::new("sf", "");
    let before = digest(scene.victim.path());
    scene.leave_staged_victim("--bind");
    let out = scene.s.sh("cat /etc/canary/a");
    assert_ok(&out);
    assert_eq!(out.stdout_str(), "canary a\n", "{}", out.describe());
    assert_eq!(
        digest(scene.victim.path()),
        before,
        "the victim tree changed"
    );
    assert!(mounts_at_or_below(&staging(&scene.s)).is_empty());
    assert!(!staging(&scene.s).exists(), "the staging directory stays");
    assert_ok(&scene.s.stop());
    assert_eq!(digest(scene.victim.path()), before);
}

/// `status` reports a leftover staged layer of a stopped subhost, and
/// `stop` clears it: detached, its levels removed with rmdir, the tree
/// behind it intact.
#[test]
fn status_reports_a_staged_leftover_and_stop_clears_it() {
    let scene = Scene::new("sg", "");
    let before = digest(scene.victim.path());
    scene.leave_staged_victim("--bind");
    let out = scene.s.run(&["status", &scene.s.name]);
    assert_ok(&out);
    let text = out.stdout_str();
    assert!(text.contains("broken"), "{}", out.describe());
    assert!(
        text.contains("staged lower layer still mounted under"),
        "{}",
        out.describe()
    );
    let out = scene.s.run(&["list"]);
    assert!(out.stdout_str().contains("broken"), "{}", out.describe());
    let out = scene.s.stop();
    assert_ok(&out);
    assert!(out.stdout_str().contains("stopped"), "{}", out.describe());
    assert!(mounts_at_or_below(&staging(&scene.s)).is_empty());
    assert!(!staging(&scene.s).exists());
    assert_eq!(
        digest(scene.victim.path()),
        before,
        "the victim tree changed"
    );
    // Anything but the layers' own directories is reported, never deleted.
    std::fs::create_dir_all(staging(&scene.s).join("0")).unwrap();
    std::fs::write(staging(&scene.s).join("0/keep"), "mine").unwrap();
    let out = scene.s.stop();
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr_str()
            .contains("holds what a start does not leave there"),
        "{}",
        out.describe()
    );
    assert_eq!(
        std::fs::read_to_string(staging(&scene.s).join("0/keep")).unwrap(),
        "mine"
    );
    std::fs::remove_file(staging(&scene.s).join("0/keep")).unwrap();
    assert_ok(&scene.s.stop());
    assert!(!staging(&scene.s).exists());
}

/// A staged copy of a tree whose mount is shared (as `/` is on a systemd
/// host) is a peer of it: unmounting a mount below the copy would unmount
/// the tree's own mount at the same place too. `stop` makes the copies
/// private first, so the tree's own submount stays.
#[test]
fn clearing_a_staged_copy_of_a_shared_tree_leaves_its_own_mounts() {
    let scene = Scene::new("sh", "");
    let v = scene.victim.path();
    let sub = v.join("sub/deeper");
    // The victim's own mount, shared, with a submount holding a file.
    let mount = |args: &[&str]| assert_ok(&run_timeout(&mut cmd("mount", args), LAUNCH_LIMIT));
    mount(&["--bind", &v.to_string_lossy(), &v.to_string_lossy()]);
    mount(&["--make-shared", &v.to_string_lossy()]);
    mount(&["-t", "tmpfs", "shttmp", &sub.to_string_lossy()]);
    std::fs::write(sub.join("inner"), "inner\n").unwrap();
    scene.leave_staged_victim("--rbind");
    let staged_sub = staging(&scene.s).join("0/sub/deeper");
    assert!(
        mounts_at_or_below(&staging(&scene.s)).contains(&staged_sub.to_string_lossy().into_owned()),
        "the rbind copied the submount"
    );
    let out = scene.s.stop();
    let still = mounts_at_or_below(&sub);
    let inner = std::fs::read_to_string(sub.join("inner"));
    // Take the victim's mounts down before asserting.
    let _ = nix::mount::umount2(&sub, nix::mount::MntFlags::MNT_DETACH);
    let _ = nix::mount::umount2(v, nix::mount::MntFlags::MNT_DETACH);
    assert_ok(&out);
    assert_eq!(
        still,
        [sub.to_string_lossy().into_owned()],
        "the tree's own submount went"
    );
    assert_eq!(inner.unwrap(), "inner\n");
    assert!(mounts_at_or_below(&staging(&scene.s)).is_empty());
}

/// The PID of the first child of `pid` (strace's tracee).
fn child_of(pid: u32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// SIGKILLs a USERNS `start` at many moments of its setup (spread over a
/// whole start, on both ways of mounting the idmapped layers), and once
/// for certain while its layers are attached; after each, `start` and
/// `stop` again. The base's canary tree stays byte for byte as it was,
/// and nothing stays mounted or staged.
#[test]
fn a_userns_start_killed_at_any_moment_loses_nothing() {
    let scene = Scene::new("sk", "");
    let s = &scene.s;
    let before = digest(scene.base.path());
    // How long a whole start takes here, to spread the kills over it.
    let t = Instant::now();
    assert_ok(&s.sh("true"));
    let whole = t.elapsed();
    assert_ok(&s.stop());
    let moments = 24u32;
    for k in 0..moments {
        for staged in [false, true] {
            let mut c = s.launch();
            c.args(["start", &s.name, "--", "/bin/true"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if staged {
                c.env("SUBHOST_STAGED_LAYERS", "1");
            }
            let child = spawn_group(&mut c);
            std::thread::sleep(whole * k / moments);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = wait_timeout(child, LAUNCH_LIMIT);
            assert_ok(&s.stop());
            assert!(mounts_at_or_below(&staging(s)).is_empty(), "moment {k}");
            let out = s.sh("cat /etc/canary/a");
            assert_ok(&out);
            assert_eq!(out.stdout_str(), "canary a\n");
            assert_ok(&s.stop());
            assert!(mounts_at_or_below(&staging(s)).is_empty(), "moment {k}");
            assert!(!staging(s).exists(), "moment {k}");
        }
    }
    // Deterministically between attach and detach: every umount2 of the
    // launcher is held up, and it is killed once a layer is attached.
    let mut c = cmd(
        "strace",
        [
            "-f",
            "-o",
            "/dev/null",
            "-e",
            "trace=umount2",
            "-e",
            "inject=umount2:delay_enter=3000000",
        ],
    );
    c.arg(launch_bin())
        .args(["start", &s.name, "--", "/bin/true"])
        .env("SUBHOST", s.base())
        .env("SUBHOST_STAGED_LAYERS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let strace = spawn_group(&mut c);
    let staged0 = staging(s).join("0").to_string_lossy().into_owned();
    let attached = wait_until(Duration::from_secs(20), || {
        mounts_at_or_below(&staging(s)).contains(&staged0)
    });
    if let Some(pid) = child_of(strace.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-(strace.id() as i32)),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = wait_timeout(strace, LAUNCH_LIMIT);
    assert!(attached, "the layer was never seen attached");
    assert!(
        mounts_at_or_below(&staging(s)).contains(&staged0),
        "the kill came after the detach"
    );
    let out = s.sh("cat /etc/canary/a");
    assert_ok(&out);
    assert_ok(&s.stop());
    assert!(mounts_at_or_below(&staging(s)).is_empty());
    assert!(!staging(s).exists());
    assert_eq!(digest(scene.base.path()), before, "the base changed");
}

/// Someone else's overlay on `live` is neither used by `start` (its upper
/// layer gets nothing) nor unmounted by `stop`; `status` reports it.
#[test]
fn someone_elses_mount_on_live_is_neither_used_nor_unmounted() {
    let base = TempDir::new();
    busybox_root(base.path());
    let s = Subhost::new("sl", &format!("LOWER={}\n", base.path().display()));
    let other = TempDir::new();
    let (upper, work) = (other.path().join("upper"), other.path().join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(s.live()).unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        base.path().display(),
        upper.display(),
        work.display()
    );
    assert_ok(&run_timeout(
        &mut cmd(
            "mount",
            [
                "-t",
                "overlay",
                "overlay",
                "-o",
                &opts,
                &s.live().to_string_lossy(),
            ],
        ),
        LAUNCH_LIMIT,
    ));
    let out = s.sh("echo x > /probe");
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr_str().contains("not what this subhost needs"),
        "{}",
        out.describe()
    );
    assert_eq!(
        std::fs::read_dir(&upper).unwrap().count(),
        0,
        "the foreign upper got files"
    );
    let out = s.run(&["status", &s.name]);
    assert!(
        out.stdout_str().contains("is not this subhost's"),
        "{}",
        out.describe()
    );
    let out = s.stop();
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr_str().contains("left mounted"),
        "{}",
        out.describe()
    );
    assert!(s.live_mounted(), "stop unmounted someone else's mount");
    let _ = nix::mount::umount2(&s.live(), nix::mount::MntFlags::empty());
    assert_ok(&s.stop());
}

/// A `root` that is a symlink to a host directory is refused with the path
/// named: nothing is mounted, and (USERNS) the link's target keeps its
/// owner.
#[test]
fn a_root_that_is_a_symlink_is_refused_and_its_target_untouched() {
    for lower in [false, true] {
        let target = TempDir::new();
        canary(target.path());
        let before = digest(target.path());
        let owner = std::fs::metadata(target.path()).unwrap().uid();
        let base = TempDir::new();
        busybox_root(base.path());
        let config = if lower {
            format!("LOWER={}\nUSERNS=pick\n", base.path().display())
        } else {
            "USERNS=pick\n".to_string()
        };
        let s = Subhost::new("sy", &config);
        std::fs::remove_dir(s.root()).unwrap();
        std::os::unix::fs::symlink(target.path(), s.root()).unwrap();
        let out = s.sh("echo x > /probe");
        assert_eq!(out.code(), 125, "{}", out.describe());
        assert!(
            out.stderr_str().contains("is a symlink"),
            "{}",
            out.describe()
        );
        assert!(out.stderr_str().contains(&*s.root().to_string_lossy()));
        assert!(!s.live_mounted());
        assert_eq!(std::fs::metadata(target.path()).unwrap().uid(), owner);
        assert_eq!(digest(target.path()), before);
        assert_ok(&s.stop());
    }
}

/// The same inside an image: its `root/` is a symlink to a host directory.
#[test]
fn an_image_whose_root_is_a_symlink_is_refused() {
    let target = TempDir::new();
    canary(target.path());
    let before = digest(target.path());
    let s = Subhost::new("si", "USERNS=pick\n");
    let tree = TempDir::new();
    std::fs::create_dir_all(tree.path().join("work")).unwrap();
    std::os::unix::fs::symlink(target.path(), tree.path().join("root")).unwrap();
    let img = s.dir().join(format!("{}.img", s.name));
    assert_ok(&run_timeout(
        &mut cmd(
            "mkfs.ext4",
            [
                "-q",
                "-F",
                "-d",
                &tree.path().to_string_lossy(),
                &img.to_string_lossy(),
                "16M",
            ],
        ),
        LAUNCH_LIMIT,
    ));
    let out = s.sh("echo x > /probe");
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr_str().contains("is a symlink"),
        "{}",
        out.describe()
    );
    assert_eq!(digest(target.path()), before);
    assert!(!s.live_mounted());
    assert_ok(&s.stop());
    let loops = run_timeout(
        &mut cmd("losetup", ["-j", &img.to_string_lossy()]),
        LAUNCH_LIMIT,
    );
    assert!(loops.stdout_str().trim().is_empty(), "{}", loops.describe());
}
