//! Real mounts on the real kernel: these need root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::activate::*;
use super::deactivate::*;
use super::staging::*;
use super::*;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use nix::mount::{MntFlags, MsFlags};

/// A temp dir that, even when the test fails, lazily unmounts everything
/// below it and then removes it; it refuses to remove anything while a
/// mount is still there (that could reach outside through a bind).
struct TestDir(PathBuf);

impl TestDir {
    fn new(tag: &str) -> TestDir {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the mount tests need root"
        );
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "subhost-test-mounts-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p).unwrap();
        TestDir(p.canonicalize().unwrap())
    }

    /// A subhost `sub` in this dir, with `root` created.
    fn subhost(&self) -> Layout {
        let l = Layout::new(&self.0, "sub").unwrap();
        fs::create_dir_all(l.root(false)).unwrap();
        l
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        for _ in 0..4 {
            let mut below: Vec<PathBuf> = mount_points()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.is_at_or_below(&self.0))
                .map(|e| e.mount_point)
                .collect();
            if below.is_empty() {
                let _ = crate::files::tree::remove_tree_mount_free(&self.0);
                return;
            }
            below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for p in below {
                let _ = nix::mount::umount2(&p, MntFlags::MNT_DETACH);
            }
        }
        eprintln!("leaving {} in place: still mounted below", self.0.display());
    }
}

fn cfg(lower: &[&Path]) -> Config {
    let mut c = Config::defaults("sub");
    c.lower = lower.iter().map(|p| p.to_path_buf()).collect();
    c
}

fn mounts_at(p: &Path) -> usize {
    mount_points()
        .unwrap()
        .iter()
        .filter(|e| e.mount_point == p)
        .count()
}

fn mounts_below(p: &Path) -> Vec<PathBuf> {
    mount_points()
        .unwrap()
        .into_iter()
        .filter(|e| e.is_at_or_below(p))
        .map(|e| e.mount_point)
        .collect()
}

/// Runs a scaffolding command, killing it after `secs`.
fn run_timeout(cmd: &mut Command, secs: u64) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "{cmd:?}: {st}");
            return;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} timed out after {secs}s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A 64 MiB sparse ext4 image holding `dirs` (and `root/hello`), made
/// without mounting it: mkfs.ext4 -d copies a directory tree in.
fn make_image(t: &TestDir, image: &Path, dirs: &[&str]) {
    let src = t.0.join(format!("image-src-{}", dirs.join("-")));
    fs::create_dir_all(&src).unwrap();
    for d in dirs {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    if dirs.contains(&"root") {
        fs::write(src.join("root/hello"), "from the image").unwrap();
    }
    fs::File::create(image).unwrap().set_len(64 << 20).unwrap();
    run_timeout(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&src)
            .arg(image),
        30,
    );
    crate::files::tree::remove_tree_mount_free(&src).unwrap();
}

/// Loop devices whose backing file is `image` (per sysfs, like losetup -a).
fn loops_of(image: &Path) -> Vec<String> {
    let want = image.canonicalize().unwrap();
    let mut found = Vec::new();
    for e in fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(b) = fs::read_to_string(e.path().join("loop/backing_file")) {
            if Path::new(b.trim_end()) == want {
                found.push(name);
            }
        }
    }
    found
}

/// Autoclear runs when the last opener goes; give it a moment.
fn assert_no_loop(image: &Path) {
    let end = Instant::now() + Duration::from_secs(5);
    while !loops_of(image).is_empty() {
        assert!(
            Instant::now() < end,
            "loop device still attached to {}: {:?}",
            image.display(),
            loops_of(image)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn display_is_the_shell_command() {
    let l = Layout::new(Path::new("/opt/subhost"), "x").unwrap();
    let steps = plan(&l, &cfg(&[Path::new("/")]), None);
    assert_eq!(
        steps[0].to_string(),
        "mount -t overlay overlay -o lowerdir=/,upperdir=/opt/subhost/x/root,\
         workdir=/opt/subhost/x/work /opt/subhost/x/live"
    );
    let steps = plan(&l, &cfg(&[]), None);
    assert_eq!(
        steps[0].to_string(),
        "mount --rbind /opt/subhost/x/root /opt/subhost/x/live"
    );
    let s = Step::AttachImage {
        image: "/a b/x.img".into(),
        mnt: "/a b/mnt".into(),
    };
    assert_eq!(
        s.to_string(),
        "mount -o loop '/a b/x.img' '/a b/mnt'   # refused while losetup -j shows it attached"
    );
    let s = Step::Overlay {
        lower: vec!["/l,1".into(), "/l:2".into()],
        upper: "/u\\p".into(),
        work: "/w'k".into(),
        live: "/live".into(),
        idmap: None,
    };
    assert_eq!(
        s.to_string(),
        r"mount -t overlay overlay -o 'lowerdir=/l\,1:/l\:2,upperdir=/u\\p,workdir=/w'\''k' /live"
    );
}

#[test]
fn escaped_option_parsing() {
    assert_eq!(
        split_escaped(br"a\,b,c", b','),
        vec![&br"a\,b"[..], &b"c"[..]]
    );
    assert_eq!(unescape_backslash(br"a\,b\\c\:"), b"a,b\\c:");
    assert_eq!(escape_overlay(Path::new("/a,b:c\\d")), br"/a\,b\:c\\d");
}

#[test]
fn plan_with_image() {
    let t = TestDir::new("plan");
    let l = t.subhost();
    fs::write(l.image(), "").unwrap();
    let steps = plan(&l, &cfg(&[Path::new("/")]), None);
    assert_eq!(
        steps,
        vec![
            Step::AttachImage {
                image: l.image(),
                mnt: l.mnt()
            },
            Step::Overlay {
                lower: vec!["/".into()],
                upper: l.mnt().join("root"),
                work: l.mnt().join("work"),
                live: l.live(),
                idmap: None,
            }
        ]
    );
}

#[test]
fn overlay_over_a_lower_dir() {
    let t = TestDir::new("ovl");
    let l = t.subhost();
    let lower = t.0.join("base");
    fs::create_dir_all(&lower).unwrap();
    fs::write(lower.join("a"), "lower").unwrap();

    activate(&plan(&l, &cfg(&[&lower]), None), None).unwrap();
    assert!(is_active(&l));
    assert_eq!(fs::read_to_string(l.live().join("a")).unwrap(), "lower");
    fs::write(l.live().join("b"), "upper").unwrap();
    fs::write(l.live().join("a"), "changed").unwrap();
    assert_eq!(
        fs::read_to_string(l.root(false).join("b")).unwrap(),
        "upper"
    );
    assert_eq!(
        fs::read_to_string(l.root(false).join("a")).unwrap(),
        "changed"
    );
    assert_eq!(fs::read_to_string(lower.join("a")).unwrap(), "lower");
    assert!(!lower.join("b").exists());

    assert!(deactivate(&l).unwrap());
    assert!(!is_active(&l));
    assert!(!deactivate(&l).unwrap(), "second deactivate finds nothing");
    assert_eq!(
        fs::read_to_string(l.root(false).join("b")).unwrap(),
        "upper"
    );
}

#[test]
fn overlay_over_slash() {
    let t = TestDir::new("slash");
    let l = t.subhost();
    activate(&plan(&l, &cfg(&[Path::new("/")]), None), None).unwrap();
    let live = l.live();
    // A host file on the root filesystem shows through.
    let root_dev = loopdev::file_id(Path::new("/")).unwrap().0;
    let host = ["/etc/os-release", "/usr/bin/env", "/bin/sh"]
        .into_iter()
        .map(Path::new)
        .find(|p| {
            loopdev::file_id(p)
                .map(|id| id.0 == root_dev)
                .unwrap_or(false)
        })
        .expect("a file on the root filesystem");
    assert_eq!(
        fs::read(live.join(host.strip_prefix("/").unwrap())).unwrap(),
        fs::read(host).unwrap()
    );
    // Host sub-mounts are not part of the lower layer (overlayfs by design).
    assert!(Path::new("/proc/self").exists());
    assert!(!live.join("proc/self").exists());
    let marker = format!("subhost-test-marker-{}", std::process::id());
    fs::write(live.join(&marker), "x").unwrap();
    assert!(l.root(false).join(&marker).exists());
    assert!(!Path::new("/").join(&marker).exists());
    assert!(deactivate(&l).unwrap());
}

#[test]
fn paths_with_overlay_separators() {
    let t = TestDir::new(r"odd, na:me \x");
    let l = t.subhost();
    let lower = t.0.join("l,o:w");
    fs::create_dir_all(&lower).unwrap();
    fs::write(lower.join("f"), "ok").unwrap();
    let lower2 = t.0.join(r"sec\ond");
    fs::create_dir_all(&lower2).unwrap();
    fs::write(lower2.join("g"), "ok2").unwrap();
    let steps = plan(&l, &cfg(&[&lower, &lower2]), None);
    activate(&steps, None).unwrap();
    assert_eq!(fs::read_to_string(l.live().join("f")).unwrap(), "ok");
    assert_eq!(fs::read_to_string(l.live().join("g")).unwrap(), "ok2");
    // Recognised as already mounted although every path needs escaping.
    activate(&steps, None).unwrap();
    assert_eq!(mounts_at(&l.live()), 1);
    assert!(deactivate(&l).unwrap());
    assert!(!is_active(&l));
}

#[test]
fn rbind_includes_submounts() {
    let t = TestDir::new("rbind");
    let l = t.subhost();
    let root = l.root(false);
    fs::write(root.join("file"), "root").unwrap();
    let sub = root.join("sub");
    fs::create_dir(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    fs::write(sub.join("x"), "submount").unwrap();

    let steps = plan(&l, &cfg(&[]), None);
    activate(&steps, None).unwrap();
    assert_eq!(fs::read_to_string(l.live().join("file")).unwrap(), "root");
    assert_eq!(
        fs::read_to_string(l.live().join("sub/x")).unwrap(),
        "submount"
    );
    activate(&steps, None).unwrap();
    assert_eq!(mounts_at(&l.live()), 1, "second activate is a no-op");

    assert!(deactivate(&l).unwrap());
    assert!(mounts_below(&l.live()).is_empty());
    assert_eq!(mounts_at(&sub), 1, "root's own mounts are left alone");
    assert!(!deactivate(&l).unwrap());
}

#[test]
fn image_as_overlay_upper() {
    let t = TestDir::new("imgovl");
    let l = t.subhost();
    make_image(&t, &l.image(), &["root", "work"]);
    let lower = t.0.join("base");
    fs::create_dir_all(&lower).unwrap();
    fs::write(lower.join("a"), "lower").unwrap();
    let steps = plan(&l, &cfg(&[&lower]), None);
    assert_eq!(steps.len(), 2);

    activate(&steps, None).unwrap();
    assert_eq!(loops_of(&l.image()).len(), 1);
    assert_eq!(fs::read_to_string(l.live().join("a")).unwrap(), "lower");
    assert_eq!(
        fs::read_to_string(l.live().join("hello")).unwrap(),
        "from the image"
    );
    fs::write(l.live().join("new"), "kept").unwrap();
    assert!(l.mnt().join("root/new").exists());
    assert!(!l.root(false).join("new").exists());

    activate(&steps, None).unwrap();
    assert_eq!(mounts_at(&l.live()), 1);
    assert_eq!(mounts_at(&l.mnt()), 1);
    assert_eq!(
        loops_of(&l.image()).len(),
        1,
        "activate twice reuses the device"
    );

    assert!(deactivate(&l).unwrap());
    assert!(mounts_below(&l.dir).is_empty());
    assert_no_loop(&l.image());
    assert!(!deactivate(&l).unwrap());

    // The write is in the image: it is there on the next activation.
    activate(&steps, None).unwrap();
    assert_eq!(fs::read_to_string(l.live().join("new")).unwrap(), "kept");
    assert!(deactivate(&l).unwrap());
    assert_no_loop(&l.image());
}

#[test]
fn image_as_rbind_root() {
    let t = TestDir::new("imgbind");
    let l = t.subhost();
    make_image(&t, &l.image(), &["root"]);
    let steps = plan(&l, &cfg(&[]), None);
    activate(&steps, None).unwrap();
    assert_eq!(
        fs::read_to_string(l.live().join("hello")).unwrap(),
        "from the image"
    );
    assert!(deactivate(&l).unwrap());
    assert!(mounts_below(&l.dir).is_empty());
    assert_no_loop(&l.image());
}

#[test]
fn missing_root_is_refused_cleanly() {
    let t = TestDir::new("noroot");
    let l = Layout::new(&t.0, "sub").unwrap();
    fs::create_dir_all(&l.dir).unwrap();
    let err = activate(&plan(&l, &cfg(&[Path::new("/")]), None), None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("root does not exist"), "{msg}");
    assert!(msg.contains("mkdir -p"), "{msg}");
    assert!(mounts_below(&t.0).is_empty());
}

#[test]
fn missing_lower_is_refused() {
    let t = TestDir::new("nolower");
    let l = t.subhost();
    let err = activate(&plan(&l, &cfg(&[&t.0.join("nope")]), None), None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("lower layer") && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(mounts_below(&t.0).is_empty());
}

#[test]
fn image_without_root_leaves_nothing() {
    let t = TestDir::new("imgnoroot");
    let l = t.subhost();
    make_image(&t, &l.image(), &["other"]);
    let err = activate(&plan(&l, &cfg(&[]), None), None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("no root/ directory"), "{msg}");
    assert!(mounts_below(&t.0).is_empty());
    assert_no_loop(&l.image());
}

#[test]
fn unformatted_image_is_refused() {
    let t = TestDir::new("imgraw");
    let l = t.subhost();
    fs::File::create(l.image())
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let err = activate(&plan(&l, &cfg(&[]), None), None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("no ext2/3/4, xfs or btrfs"), "{msg}");
    assert!(msg.contains(&l.image().display().to_string()), "{msg}");
    assert_no_loop(&l.image());
}

#[test]
fn failing_second_step_undoes_the_first() {
    let t = TestDir::new("undo");
    let l = t.subhost();
    make_image(&t, &l.image(), &["root", "work"]);
    // A lower layer inside the image can only be checked once it is mounted.
    let missing = l.mnt().join("base");
    let err = activate(&plan(&l, &cfg(&[&missing]), None), None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("lower layer") && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(mounts_below(&t.0).is_empty());
    assert_no_loop(&l.image());

    // The kernel refuses an overlay whose lower layer is its upper layer.
    let err = activate(&plan(&l, &cfg(&[&l.mnt().join("root")]), None), None).unwrap_err();
    assert!(format!("{err:#}").contains("overlay"), "{err:#}");
    assert!(mounts_below(&t.0).is_empty());
    assert_no_loop(&l.image());
}

#[test]
fn hibernating_image_is_reused_and_kept_on_failure() {
    let t = TestDir::new("partial");
    let l = t.subhost();
    make_image(&t, &l.image(), &["root", "work"]);
    let steps = plan(&l, &cfg(&[]), None);
    // Half set up: only the image is mounted.
    activate(&steps[..1], None).unwrap();
    assert_eq!(mounts_at(&l.mnt()), 1);

    // A failing step does not undo what an earlier call set up.
    let bad = plan(&l, &cfg(&[&t.0.join("nope")]), None);
    assert!(activate(&bad, None).is_err());
    assert_eq!(mounts_at(&l.mnt()), 1);

    activate(&steps, None).unwrap();
    assert_eq!(mounts_at(&l.mnt()), 1);
    assert_eq!(loops_of(&l.image()).len(), 1);
    assert!(l.live().join("hello").exists());
    assert!(deactivate(&l).unwrap());

    // Only mnt mounted: deactivate still cleans up.
    activate(&steps[..1], None).unwrap();
    assert!(deactivate(&l).unwrap());
    assert!(mounts_below(&t.0).is_empty());
    assert_no_loop(&l.image());
}

#[test]
fn something_else_on_live_is_refused() {
    let t = TestDir::new("busy");
    let l = t.subhost();
    fs::create_dir_all(l.live()).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &l.live(),
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let err = activate(&plan(&l, &cfg(&[]), None), None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("already a mount point (tmpfs"), "{msg}");
    assert_eq!(
        mounts_at(&l.live()),
        1,
        "someone else's mount is left alone"
    );
}

#[test]
fn upper_and_work_on_different_mounts_is_refused() {
    let t = TestDir::new("xdev");
    let l = t.subhost();
    fs::create_dir_all(l.work(false)).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &l.work(false),
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let err = activate(&plan(&l, &cfg(&[Path::new("/")]), None), None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("different mounts"), "{msg}");
    assert!(!is_active(&l));
}

#[test]
fn symlinked_live_is_refused() {
    let t = TestDir::new("symlink");
    let l = t.subhost();
    std::os::unix::fs::symlink(t.0.join("elsewhere"), l.live()).unwrap();
    fs::create_dir(t.0.join("elsewhere")).unwrap();
    let err = activate(&plan(&l, &cfg(&[]), None), None).unwrap_err();
    assert!(format!("{err:#}").contains("not a directory"), "{err:#}");
    assert!(!deactivate(&l).unwrap());
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Image activation (attach + mount + root check) and deactivation.
/// Run with: cargo test -p subhost-launch -- --ignored --nocapture
#[test]
#[ignore]
fn bench_image_activation() {
    let t = TestDir::new("bench");
    let l = t.subhost();
    make_image(&t, &l.image(), &["root", "work"]);
    let steps = plan(&l, &cfg(&[]), None);
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let s = Instant::now();
        activate(&steps[..1], None).unwrap();
        up.push(s.elapsed());
        let s = Instant::now();
        assert!(deactivate(&l).unwrap());
        down.push(s.elapsed());
        assert_no_loop(&l.image());
    }
    eprintln!(
        "image activation median {:?} (min {:?}), deactivation median {:?} (min {:?}), n=20",
        median(up.clone()),
        up.iter().min().unwrap(),
        median(down.clone()),
        down.iter().min().unwrap()
    );
}

#[test]
fn busy_mounts_are_detached_lazily() {
    let t = TestDir::new("lazy");
    let l = t.subhost();
    make_image(&t, &l.image(), &["root", "work"]);
    activate(&plan(&l, &cfg(&[]), None), None).unwrap();
    // An open file keeps live (and through it the image) busy.
    let held = fs::File::open(l.live().join("hello")).unwrap();
    assert!(deactivate(&l).unwrap());
    assert!(mounts_below(&t.0).is_empty(), "detached from the tree");
    assert_eq!(
        loops_of(&l.image()).len(),
        1,
        "still in use by the open file"
    );
    drop(held);
    assert_no_loop(&l.image());
}

#[test]
fn deactivate_of_a_subhost_never_set_up() {
    let t = TestDir::new("never");
    let l = Layout::new(&t.0, "absent").unwrap();
    assert!(!deactivate(&l).unwrap());
    assert!(!is_active(&l));
    let l = t.subhost();
    assert!(!deactivate(&l).unwrap());
}

/// A subhost with a host-unique name: the staging dir of idmapped layers is
/// host-wide, like the netns.
fn unique_subhost(t: &TestDir, tag: char) -> Layout {
    let name = format!("shti{}{tag}", std::process::id() % 10_000_000);
    let l = Layout::new(&t.0, &name).unwrap();
    fs::create_dir_all(l.root(false)).unwrap();
    l
}

/// What a process of the user namespace sees and does, run in a child
/// that joins it as root inside: the owner of `look` (as inside sees it),
/// after creating `create`. Exit status: 0, or which step failed.
fn as_root_inside(userns: &std::os::fd::OwnedFd, look: &Path, create: &[PathBuf]) -> (u32, u32) {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    let look = CString::new(look.as_os_str().as_bytes()).unwrap();
    let create: Vec<CString> = create
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()).unwrap())
        .collect();
    let (r, w) = nix::unistd::pipe().unwrap();
    // SAFETY: the child makes only raw syscalls on data prepared above, then
    // _exits; the test harness's other threads are not touched.
    match unsafe { libc::fork() } {
        0 => unsafe {
            if libc::setns(userns.as_raw_fd(), libc::CLONE_NEWUSER) != 0 {
                libc::_exit(10);
            }
            if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                libc::_exit(11);
            }
            for c in &create {
                let fd = libc::open(c.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
                if fd < 0 {
                    libc::_exit(12);
                }
                libc::close(fd);
            }
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(look.as_ptr(), &mut st) != 0 {
                libc::_exit(13);
            }
            let ids = [st.st_uid, st.st_gid];
            libc::write(w.as_raw_fd(), ids.as_ptr().cast(), 8);
            libc::_exit(0);
        },
        pid => {
            assert!(pid > 0);
            drop(w);
            let mut buf = [0u8; 8];
            let n = nix::unistd::read(&r, &mut buf).unwrap();
            let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
            assert_eq!(
                status,
                nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0)
            );
            assert_eq!(n, 8);
            (
                u32::from_ne_bytes(buf[..4].try_into().unwrap()),
                u32::from_ne_bytes(buf[4..].try_into().unwrap()),
            )
        }
    }
}

#[test]
fn idmapped_overlay_shows_the_host_base_as_root_inside() {
    let t = TestDir::new("idmap");
    let l = unique_subhost(&t, 'o');
    let lower = t.0.join("base");
    fs::create_dir_all(lower.join("etc")).unwrap();
    fs::write(lower.join("etc/hostname"), "base").unwrap();
    let range = Range {
        base: 3_014_656,
        count: 65536,
    };
    let ns = crate::userns::acquire(range, false).unwrap();
    let steps = plan(&l, &cfg(&[&lower]), Some(range));
    assert!(steps
        .iter()
        .any(|s| s.to_string().contains("X-mount.idmap=0:3014656:65536")));
    activate(&steps, Some(ns.user.as_fd())).unwrap();
    let live = l.live();
    // From the host, the base's root shows as the range's root...
    assert_eq!(
        fs::metadata(live.join("etc/hostname")).unwrap().uid(),
        range.base
    );
    // ...and inside as root; what root inside makes lands in the upper as
    // host ids of the range, a copied-up directory too.
    let made = [live.join("new"), live.join("etc/inner")];
    assert_eq!(
        as_root_inside(&ns.user, &live.join("etc/hostname"), &made),
        (0, 0)
    );
    let upper = l.root(false);
    for p in ["", "new", "etc", "etc/inner"] {
        let m = fs::metadata(upper.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (range.base, range.base), "root/{p}");
    }
    // The base is untouched.
    assert!(!lower.join("new").exists() && !lower.join("etc/inner").exists());
    let m = fs::metadata(lower.join("etc")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0));
    // Nothing stays staged, and the mounted overlay is recognised on reuse.
    assert!(!staging_dir(&l.name).exists());
    assert!(mounts_below(&staging_dir(&l.name)).is_empty());
    activate(&steps, Some(ns.user.as_fd())).unwrap();
    assert_eq!(mounts_at(&live), 1);
    assert!(deactivate(&l).unwrap());
    // Without the user namespace an idmapped step is refused.
    let e = activate(&steps, None).unwrap_err();
    assert!(
        format!("{e:#}").contains("needs the subhost's user namespace"),
        "{e:#}"
    );
    assert!(!is_active(&l));
}

/// The way kernels without unattached overlay layers go: each copy is
/// attached on its staging level for the mount, then detached, and the
/// levels are removed with rmdir; the overlay is recognised on reuse, and
/// it is the one the fd way makes.
#[test]
fn staged_idmapped_layers_leave_nothing_staged() {
    let t = TestDir::new("staged");
    let l = unique_subhost(&t, 's');
    let lower = t.0.join("base");
    fs::create_dir_all(lower.join("etc")).unwrap();
    let range = Range {
        base: 3_080_192,
        count: 65536,
    };
    let ns = crate::userns::acquire(range, false).unwrap();
    let steps = plan(&l, &cfg(&[&lower]), Some(range));
    let Some(Step::Overlay {
        lower: layers,
        upper,
        work,
        live,
        idmap: Some(m),
    }) = steps.iter().find(|s| matches!(s, Step::Overlay { .. }))
    else {
        panic!("no idmapped overlay step: {steps:?}");
    };
    fs::create_dir_all(work).unwrap();
    fs::create_dir_all(live).unwrap();
    let trees: Vec<_> = layers
        .iter()
        .map(|p| idmap::clone_mapped(p, ns.user.as_fd(), false).unwrap())
        .collect();
    mount_staged_overlay(&trees, layers, upper, work, live, m).unwrap();
    assert_eq!(mounts_at(live), 1);
    assert!(!m.staging.exists(), "the staging levels stay");
    assert!(mounts_below(&m.staging).is_empty());
    assert_eq!(
        fs::metadata(live.join("etc")).unwrap().uid(),
        range.base,
        "not idmapped"
    );
    // Recognised as this subhost's own on reuse: nothing mounted twice.
    activate(&steps, Some(ns.user.as_fd())).unwrap();
    assert_eq!(mounts_at(live), 1);
    assert!(foreign(&l, &mount_points().unwrap()).is_empty());
    assert!(deactivate(&l).unwrap());
    assert!(!is_active(&l));
}

/// A leftover staging directory with an unexpected entry is reported and
/// kept; the layers' own levels go.
#[test]
fn clearing_staging_keeps_what_a_start_does_not_leave() {
    let t = TestDir::new("clear");
    let staging = t.0.join("x.lower");
    fs::create_dir_all(staging.join("0")).unwrap();
    fs::create_dir_all(staging.join("1")).unwrap();
    assert!(clear_staging(&staging).unwrap());
    assert!(!staging.exists());
    assert!(!clear_staging(&staging).unwrap());
    fs::create_dir_all(staging.join("0")).unwrap();
    fs::write(staging.join("notes"), "mine").unwrap();
    let e = clear_staging(&staging).unwrap_err();
    assert!(format!("{e:#}").contains("notes"), "{e:#}");
    assert_eq!(fs::read_to_string(staging.join("notes")).unwrap(), "mine");
    assert!(!staging.join("0").exists());
    fs::remove_file(staging.join("notes")).unwrap();
    // A symlink in its place is never followed.
    fs::remove_dir(&staging).unwrap();
    std::os::unix::fs::symlink(&t.0, &staging).unwrap();
    let e = clear_staging(&staging).unwrap_err();
    assert!(format!("{e:#}").contains("is not a directory"), "{e:#}");
    assert!(t.0.exists());
    fs::remove_file(&staging).unwrap();
}

#[test]
fn idmapped_rbind_root_maps_both_ways() {
    let t = TestDir::new("idmap-rbind");
    let l = unique_subhost(&t, 'r');
    let root = l.root(false);
    fs::create_dir_all(root.join("etc")).unwrap();
    let range = Range {
        base: 3_080_192,
        count: 65536,
    };
    let ns = crate::userns::acquire(range, false).unwrap();
    let steps = plan(&l, &cfg(&[]), Some(range));
    activate(&steps, Some(ns.user.as_fd())).unwrap();
    assert_eq!(
        fs::metadata(l.live().join("etc")).unwrap().uid(),
        range.base
    );
    let made = [l.live().join("etc/made")];
    assert_eq!(
        as_root_inside(&ns.user, &l.live().join("etc"), &made),
        (0, 0)
    );
    // Through the map, root inside writes host ids 0.. on disk: the tree
    // keeps the owners it had without a user namespace.
    let m = fs::metadata(root.join("etc/made")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0));
    assert!(deactivate(&l).unwrap());
}
