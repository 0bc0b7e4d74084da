//! A subhost's files moving: `send` | `receive` between two `$SUBHOST`
//! directories and over ssh to an sshd this test starts on 127.0.0.1,
//! `clone` (a copy, and `--shared`), `snapshot`, `snapshots`, `rollback`.
//! Every tree is compared file by file: content, owner, mode, times,
//! xattrs (`trusted.overlay.*`, a POSIX ACL, `security.capability`),
//! hardlinks, a sparse file's allocated blocks, whiteouts. Lower layers are
//! scratch directories, never `/`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use subhost_tests::*;

const LIMIT: Duration = Duration::from_secs(120);

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    xattr_map(p).unwrap_or_else(|e| panic!("xattrs of {}: {e}", p.display()))
}

/// A POSIX ACL's named ids as offsets from `base`, like the owners.
fn acl_from(mut x: BTreeMap<String, Vec<u8>>, base: u32) -> BTreeMap<String, Vec<u8>> {
    if let Some(v) = x.get_mut("system.posix_acl_access") {
        let mut i = 4;
        while i + 8 <= v.len() {
            let tag = u16::from_le_bytes([v[i], v[i + 1]]);
            if tag == 2 || tag == 8 {
                let id = u32::from_le_bytes(v[i + 4..i + 8].try_into().unwrap());
                v[i + 4..i + 8].copy_from_slice(&id.wrapping_sub(base).to_le_bytes());
            }
            i += 8;
        }
    }
    x
}

/// Everything compared of one entry.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    blocks: u64,
    nlink: u64,
    mtime: (i64, i64),
    rdev: u64,
    link: Option<PathBuf>,
    data: Option<Vec<u8>>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Index of the first path of the same inode, for hardlinks.
    inode_of: usize,
}

/// Every entry below `dir`, by path; ids given as offsets from `base`.
fn tree(dir: &Path, base: u32) -> BTreeMap<PathBuf, Seen> {
    fn walk(
        dir: &Path,
        top: &Path,
        base: u32,
        out: &mut BTreeMap<PathBuf, Seen>,
        inodes: &mut Vec<u64>,
    ) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let idx = inodes
                .iter()
                .position(|&i| i == m.ino())
                .unwrap_or_else(|| {
                    inodes.push(m.ino());
                    inodes.len() - 1
                });
            let ft = m.file_type();
            // A large sparse file's data is compared by its blocks and a digest of sorts.
            let data = ft.is_file().then(|| {
                let d = std::fs::read(&p).unwrap();
                if d.len() > 1 << 20 {
                    let sum: u64 = d
                        .iter()
                        .enumerate()
                        .map(|(i, &b)| (i as u64 + 1) * b as u64)
                        .sum();
                    sum.to_le_bytes().to_vec()
                } else {
                    d
                }
            });
            out.insert(
                p.strip_prefix(top).unwrap().to_path_buf(),
                Seen {
                    mode: m.mode(),
                    uid: m.uid().wrapping_sub(base),
                    gid: m.gid().wrapping_sub(base),
                    size: if ft.is_dir() { 0 } else { m.size() },
                    blocks: if ft.is_dir() { 0 } else { m.blocks() },
                    nlink: m.nlink(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    rdev: m.rdev(),
                    link: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
                    data,
                    xattrs: acl_from(xattrs(&p), base),
                    inode_of: idx,
                },
            );
            if ft.is_dir() {
                walk(&p, top, base, out, inodes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, base, &mut out, &mut Vec::new());
    let m = std::fs::symlink_metadata(dir).unwrap();
    out.insert(
        PathBuf::from("."),
        Seen {
            // The top keeps the owner `create` gave it, outside any range.
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: 0,
            blocks: 0,
            nlink: m.nlink(),
            mtime: (m.mtime(), m.mtime_nsec()),
            rdev: 0,
            link: None,
            data: None,
            xattrs: xattrs(dir),
            inode_of: usize::MAX,
        },
    );
    out
}

fn assert_same(a: &BTreeMap<PathBuf, Seen>, b: &BTreeMap<PathBuf, Seen>) {
    let ka: Vec<_> = a.keys().collect();
    let kb: Vec<_> = b.keys().collect();
    assert_eq!(ka, kb, "not the same paths");
    for (k, v) in a {
        assert_eq!(Some(v), b.get(k), "{} differs", k.display());
    }
}

/// A v2 file capability (`cap_net_bind_service+ep`).
fn cap_v2() -> Vec<u8> {
    let mut v = 0x0200_0001u32.to_le_bytes().to_vec();
    v.extend((1u32 << 10).to_le_bytes());
    v.extend(0u32.to_le_bytes());
    v.extend([0u8; 8]);
    v
}

/// A POSIX ACL: user::rw-, user:ID:r--, group::r--, mask::r--, other::---.
fn acl(id: u32) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, id),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

/// Fills an upper layer with one of everything, owned from `base`.
fn fill(root: &Path, base: u32) {
    let own = |p: &Path, uid: u32, gid: u32| {
        std::os::unix::fs::lchown(p, Some(base + uid), Some(base + gid)).unwrap()
    };
    std::fs::create_dir_all(root.join("etc/deep/er")).unwrap();
    std::fs::create_dir(root.join("opaque")).unwrap();
    set_xattr(&root.join("opaque"), "trusted.overlay.opaque", b"y");
    let f = root.join("etc/secret");
    std::fs::write(&f, b"top secret\n").unwrap();
    own(&f, 1000, 1001);
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4750)).unwrap();
    set_xattr(&f, "user.note", b"kept");
    let ping = root.join("ping");
    std::fs::write(&ping, vec![7u8; 5000]).unwrap();
    own(&ping, 0, 0);
    set_xattr(&ping, "security.capability", &cap_v2());
    let a = root.join("etc/acl");
    std::fs::write(&a, b"acl").unwrap();
    set_xattr(&a, "system.posix_acl_access", &acl(base + 33));
    // An id with a byte 0x0a (a newline) in the xattr's value, as many a
    // USERNS range's ids have.
    let nl = root.join("etc/acl-newline");
    std::fs::write(&nl, b"acl").unwrap();
    set_xattr(&nl, "system.posix_acl_access", &acl(base + 10));
    std::fs::hard_link(&f, root.join("etc/deep/er/hardlink")).unwrap();
    let sparse = root.join("sparse");
    let s = std::fs::File::create(&sparse).unwrap();
    s.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    s.write_all_at(b"middle", 32 << 20).unwrap();
    s.write_all_at(b"end", (64 << 20) - 3).unwrap();
    drop(s);
    let w = CString::new(root.join("etc/whiteout").as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(
        unsafe { libc::mknod(w.as_ptr(), libc::S_IFCHR | 0o644, 0) },
        0
    );
    std::os::unix::fs::symlink("../etc/secret", root.join("etc/deep/link")).unwrap();
    std::os::unix::fs::symlink("/nowhere", root.join("dangling")).unwrap();
    own(&root.join("etc/deep"), 5, 6);
    // Everything else is root's inside: BASE+0 (the top stays as made).
    fn to_range(dir: &Path, base: u32) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.uid() < base {
                std::os::unix::fs::lchown(&p, Some(base), Some(base)).unwrap();
            }
            if m.is_dir() {
                to_range(&p, base);
            }
        }
    }
    to_range(root, base);
    // chown dropped the capability; set it again.
    set_xattr(&ping, "security.capability", &cap_v2());
    for p in ["etc/deep/er", "etc/deep", "etc", "opaque", "."] {
        let c = CString::new(root.join(p).as_os_str().as_bytes()).unwrap();
        let t = [libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123,
        }; 2];
        // SAFETY: a NUL-terminated path and two timespecs.
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), 0) },
            0
        );
    }
}

/// A `$SUBHOST` with a scratch lower layer.
struct Site {
    tmp: TempDir,
}

impl Site {
    fn new() -> Site {
        require_root();
        let s = Site {
            tmp: TempDir::new(),
        };
        std::fs::create_dir_all(s.lower().join("etc")).unwrap();
        std::fs::write(s.lower().join("etc/hostname"), "base\n").unwrap();
        s
    }
    fn base(&self) -> PathBuf {
        self.tmp.path().join("subhosts")
    }
    fn lower(&self) -> PathBuf {
        self.tmp.path().join("lower")
    }
    fn launch(&self) -> Command {
        let mut c = Command::new(launch_bin());
        c.env("SUBHOST", self.base());
        c
    }
    fn run(&self, args: &[&str]) -> Finished {
        run_timeout(self.launch().args(args), LIMIT)
    }
    fn ok(&self, args: &[&str]) -> Finished {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", out.describe());
        out
    }
    fn root(&self, name: &str) -> PathBuf {
        self.base().join(name).join("root")
    }
    fn range(&self, name: &str) -> u32 {
        match std::fs::read_to_string(self.base().join(name).join("userns")) {
            Ok(t) => t.trim().split(':').next().unwrap().parse().unwrap(),
            Err(_) => 0,
        }
    }
    /// A new overlay subhost over the scratch lower, filled.
    fn filled(&self, name: &str, lower: Option<&Path>) -> u32 {
        let lower = lower.map(Path::to_path_buf).unwrap_or(self.lower());
        let mut args = vec![
            "create",
            name,
            "--lower",
            lower.to_str().unwrap(),
            "--bridge",
            "=02:00:00:00:00:42",
        ];
        args.extend(mode_create_args());
        self.ok(&args);
        let base = self.range(name);
        fill(&self.root(name), base);
        base
    }
    fn send(&self, name: &str) -> Vec<u8> {
        let out = self.ok(&["send", name]);
        out.stdout
    }
    fn receive(&self, name: &str, stream: Vec<u8>) -> Finished {
        run_input(self.launch().args(["receive", name]), stream, LIMIT)
    }
    /// Nothing of `name` under `$SUBHOST`, not even a half-made one.
    fn nothing_of(&self, name: &str) {
        let left: Vec<_> = std::fs::read_dir(self.base())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            !left.iter().any(|n| n.contains(name)),
            "left behind: {left:?}"
        );
    }
}

#[test]
fn send_and_receive_between_two_subhost_dirs_keep_every_file() {
    let a = Site::new();
    let b = Site::new();
    let name = unique_name("mv");
    let ra = a.filled(&name, None);
    let stream = a.send(&name);
    // The receiving host has the same lower layer path: LOWER is absolute.
    // LOWER names a's scratch dir, which this receiving side has too.
    let out = b.receive(&name, stream);
    assert!(out.status.success(), "{}", out.describe());
    let rb = b.range(&name);
    assert_same(&tree(&a.root(&name), ra), &tree(&b.root(&name), rb));
    assert_eq!(
        std::fs::read_to_string(a.base().join(&name).join("config")).unwrap(),
        std::fs::read_to_string(b.base().join(&name).join("config")).unwrap()
    );
    // Still sparse: 64 MiB with two small extents.
    let m = std::fs::metadata(b.root(&name).join("sparse")).unwrap();
    assert!(m.blocks() * 512 < 1 << 20, "{} blocks", m.blocks());
    let st = b.ok(&["status", &name, "--json"]).stdout_str();
    assert!(st.contains("\"state\": \"stopped\""), "{st}");
}

#[test]
fn send_piped_through_ssh_to_receive() {
    let a = Site::new();
    let b = Site::new();
    let sshd = Sshd::start(&a.tmp.path().join("ssh"));
    let name = unique_name("ms");
    let ra = a.filled(&name, None);
    let script = format!(
        "{launch} send {name} | ssh -p {port} -i {dir}/client -o UserKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=no -o LogLevel=ERROR -o BatchMode=yes root@127.0.0.1 \
         SUBHOST={bdir} {launch} receive {name}",
        launch = launch_bin().display(),
        port = sshd.port,
        dir = sshd.dir.display(),
        bdir = b.base().display(),
    );
    let out = run_timeout(
        Command::new("sh")
            .args(["-c", &script])
            .env("SUBHOST", a.base()),
        LIMIT,
    );
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        out.stdout_str()
            .contains(&format!("received subhost {name} as {name}")),
        "{}",
        out.describe()
    );
    assert_same(
        &tree(&a.root(&name), ra),
        &tree(&b.root(&name), b.range(&name)),
    );
}

#[test]
fn a_userns_subhost_received_into_another_range_is_shifted() {
    let a = Site::new();
    let name = unique_name("mu");
    a.ok(&[
        "create",
        &name,
        "--lower",
        a.lower().to_str().unwrap(),
        "--userns",
    ]);
    let ra = a.range(&name);
    assert!(ra > 0);
    fill(&a.root(&name), ra);
    // A v3 capability whose root is the range's root.
    let mut cap = 0x0300_0000u32.to_le_bytes().to_vec();
    cap.extend((1u32 << 10).to_le_bytes());
    cap.extend([0u8; 12]);
    cap.extend(ra.to_le_bytes());
    set_xattr(&a.root(&name).join("ping"), "security.capability", &cap);
    let stream = a.send(&name);
    // Into the same $SUBHOST under another name: the first range is taken.
    let other = unique_name("mu");
    let out = a.receive(&other, stream);
    assert!(out.status.success(), "{}", out.describe());
    let rb = a.range(&other);
    assert!(rb > 0 && rb != ra, "{ra} {rb}");
    assert!(
        out.stdout_str().contains("moved from host ids"),
        "{}",
        out.describe()
    );
    let b = a.root(&other);
    let m = std::fs::metadata(b.join("etc/secret")).unwrap();
    assert_eq!((m.uid(), m.gid()), (rb + 1000, rb + 1001));
    assert_eq!(m.mode() & 0o7777, 0o4750);
    let x = xattrs(&b.join("ping"));
    assert_eq!(x["security.capability"][20..24], rb.to_le_bytes());
    let acl = &xattrs(&b.join("etc/acl"))["system.posix_acl_access"];
    assert_eq!(acl[4 + 8 + 4..4 + 8 + 8], (rb + 33).to_le_bytes());
    // Everything else as it was, ids counted from each range.
    let mut ta = tree(&a.root(&name), ra);
    let mut tb = tree(&b, rb);
    for t in [&mut ta, &mut tb] {
        for (p, s) in t.iter_mut() {
            if p == Path::new("ping") || p == Path::new("etc/acl") {
                s.xattrs.clear();
            }
        }
    }
    assert_same(&ta, &tb);

    // An id outside the sender's range is refused, and nothing is kept.
    std::os::unix::fs::lchown(a.root(&name).join("etc/acl"), Some(7), None).unwrap();
    let stream = a.send(&name);
    let third = unique_name("mu");
    let out = a.receive(&third, stream);
    assert!(!out.status.success());
    assert!(
        out.stderr_str()
            .contains("id 7 is outside the user namespace range"),
        "{}",
        out.describe()
    );
    a.nothing_of(&third);
}

#[test]
fn damaged_or_cut_streams_and_existing_names_are_refused_with_nothing_left() {
    let a = Site::new();
    let b = Site::new();
    let name = unique_name("md");
    a.filled(&name, None);
    let stream = a.send(&name);
    // The last entry's header and data, then two zero blocks.
    let end_data = stream.len() - 1024 - 512;
    for cut in [
        0,
        100,
        512,
        4000,
        stream.len() / 2,
        end_data - 400,
        end_data + 10,
    ] {
        let out = b.receive(&name, stream[..cut].to_vec());
        assert!(!out.status.success(), "cut at {cut}: {}", out.describe());
        b.nothing_of(&name);
    }
    // One byte changed: in the data of a file, in an xattr, in a header.
    let at = |needle: &[u8]| {
        stream
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    for (i, what) in [
        (at(b"top secret"), "data"),
        (at(b"user.note=kept") + 11, "xattr"),
        (at(b"root/etc/secret"), "header"),
    ] {
        let mut bad = stream.clone();
        bad[i] ^= 0x20;
        let out = b.receive(&name, bad);
        assert!(!out.status.success(), "{what}: {}", out.describe());
        let err = out.stderr_str();
        assert!(
            err.contains("damaged") || err.contains("refused"),
            "{what}: {err}"
        );
        b.nothing_of(&name);
    }
    // Received whole, then again into the same name.
    assert!(b.receive(&name, stream.clone()).status.success());
    let out = b.receive(&name, stream);
    assert!(!out.status.success());
    assert!(
        out.stderr_str().contains("exists already"),
        "{}",
        out.describe()
    );
}

#[test]
fn a_missing_or_different_base_is_refused_naming_it() {
    let a = Site::new();
    let fake_base = |site: &Site, digest: &str| {
        let d = site.base().join(".bases/deb");
        std::fs::create_dir_all(d.join("root/etc")).unwrap();
        std::fs::write(
            d.join("manifest.json"),
            format!(r#"{{"name":"deb","source":"test","kind":"dir","digest":"{digest}","date":"x","files":1,"bytes":1}}"#),
        )
        .unwrap();
    };
    std::fs::create_dir_all(a.base()).unwrap();
    fake_base(&a, "sha256:aaaa");
    let name = unique_name("mb");
    let lower = a.base().join(".bases/deb/root");
    a.filled(&name, Some(&lower));
    let stream = a.send(&name);
    let b = Site::new();
    let out = b.receive(&name, stream.clone());
    assert!(!out.status.success());
    assert!(
        out.stderr_str()
            .contains("needs base deb (sha256:aaaa), which is not on this host"),
        "{}",
        out.describe()
    );
    b.nothing_of(&name);
    fake_base(&b, "sha256:bbbb");
    let out = b.receive(&name, stream.clone());
    assert!(!out.status.success());
    let err = out.stderr_str();
    assert!(
        err.contains("sha256:aaaa") && err.contains("sha256:bbbb"),
        "{err}"
    );
    b.nothing_of(&name);
    let c = Site::new();
    std::fs::create_dir_all(c.base()).unwrap();
    fake_base(&c, "sha256:aaaa");
    let out = c.receive(&name, stream);
    assert!(out.status.success(), "{}", out.describe());
    // The subhost overlays this host's copy of its base, not the sender's.
    let cfg = std::fs::read_to_string(c.base().join(&name).join("config")).unwrap();
    let here = c.base().join(".bases/deb/root");
    assert!(
        cfg.trim_end()
            .ends_with(&format!("LOWER={}", here.display())),
        "{cfg}"
    );
}

#[test]
fn a_clone_is_a_copy_with_its_own_macs_and_independent_of_its_source() {
    let a = Site::new();
    let src = unique_name("mc");
    let rs = a.filled(&src, None);
    let dst = unique_name("mc");
    let out = a.ok(&["clone", &src, &dst]);
    let rd = a.range(&dst);
    if userns_mode() {
        assert!(rd > 0 && rd != rs, "{}", out.describe());
    }
    assert_same(&tree(&a.root(&src), rs), &tree(&a.root(&dst), rd));
    let cfg = std::fs::read_to_string(a.base().join(&dst).join("config")).unwrap();
    assert!(cfg.contains("BRIDGES=('=02:"), "{cfg}");
    let js = a.ok(&["status", &dst, "--json"]).stdout_str();
    assert!(!js.contains("02:00:00:00:00:42"), "{js}");
    // Changing the source afterwards leaves the clone as it was.
    let before = tree(&a.root(&dst), rd);
    std::fs::write(a.root(&src).join("etc/secret"), b"changed").unwrap();
    std::fs::remove_file(a.root(&src).join("ping")).unwrap();
    assert_same(&before, &tree(&a.root(&dst), rd));
    // Into an existing name: refused.
    let out = a.run(&["clone", &src, &dst]);
    assert!(
        !out.status.success() && out.stderr_str().contains("exists already"),
        "{}",
        out.describe()
    );
}

/// Stops a second subhost of a `Subhost`'s `$SUBHOST` on drop.
struct Stops<'a>(&'a Subhost, String);

impl Drop for Stops<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["stop", &self.1]);
    }
}

#[test]
fn a_shared_clone_stacks_on_its_source_which_then_cannot_start() {
    let mut s = Subhost::busybox("mh", "");
    std::fs::write(s.root().join("marker"), "from the source\n").unwrap();
    let dst = unique_name("mh");
    let out = s.run(&["clone", &s.name, &dst, "--shared"]);
    if userns_mode() {
        assert!(!out.status.success());
        assert!(
            out.stderr_str().contains("has USERNS"),
            "{}",
            out.describe()
        );
        return;
    }
    assert!(out.status.success(), "{}", out.describe());
    // "(N ms)": the clone itself, whatever the size of the source.
    let ms: u64 = out
        .stdout_str()
        .split(" ms)")
        .next()
        .unwrap()
        .rsplit('(')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ms <= 50, "{}", out.describe());
    let cfg = std::fs::read_to_string(s.base().join(&dst).join("config")).unwrap();
    assert!(
        cfg.contains(&format!("LOWER='{}'", s.root().display())),
        "{cfg}"
    );
    let stops = Stops(&s, dst.clone());
    let out = s.run(&[
        "start",
        &dst,
        "--",
        "/bin/sh",
        "-c",
        "cat /marker; echo new > /mine",
    ]);
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(out.stdout_str(), "from the source\n");
    assert!(s.run(&["stop", &dst]).status.success());
    assert!(!s.root().join("mine").exists());
    assert_eq!(
        std::fs::read_to_string(s.base().join(&dst).join("root/mine")).unwrap(),
        "new\n"
    );
    // The source cannot start under its clone.
    let out = s.sh("true");
    assert!(!out.status.success());
    assert!(
        out.stderr_str()
            .contains(&format!("read-only lower layer of {dst}")),
        "{}",
        out.describe()
    );
    // A running source cannot be cloned at all.
    drop(stops);
    std::fs::remove_file(s.base().join(&dst).join("config")).unwrap();
    let _ = s.start_background(&[], &["/bin/sleep", "30"]);
    let out = s.run(&["clone", &s.name, &unique_name("mh")]);
    assert!(
        !out.status.success() && out.stderr_str().contains("is running"),
        "{}",
        out.describe()
    );
}

#[test]
fn snapshots_are_independent_copies_and_rollback_restores_one() {
    let a = Site::new();
    let name = unique_name("mp");
    let base = a.filled(&name, None);
    let at_first = tree(&a.root(&name), base);
    let out = a.ok(&["snapshot", &name, "first"]);
    assert!(
        out.stdout_str().contains("snapshot first of subhost"),
        "{}",
        out.describe()
    );
    // Default tag: the UTC time.
    a.ok(&["snapshot", &name]);
    let snap = a.base().join(&name).join("snapshots/first/root");
    assert_same(&at_first, &tree(&snap, base));
    // The source changes; the snapshot does not.
    std::fs::write(a.root(&name).join("etc/secret"), b"changed").unwrap();
    std::fs::write(a.root(&name).join("new"), b"new").unwrap();
    std::fs::remove_file(a.root(&name).join("etc/whiteout")).unwrap();
    assert_same(&at_first, &tree(&snap, base));
    let js: serde_json::Value =
        serde_json::from_str(&a.ok(&["snapshots", &name, "--json"]).stdout_str()).unwrap();
    let tags: Vec<&str> = js
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tag"].as_str().unwrap())
        .collect();
    assert!(tags.contains(&"first") && tags.len() == 2, "{js}");
    assert!(
        js[0]["bytes"].as_u64().unwrap() > 0 && js[0]["date"].as_str().unwrap().ends_with('Z'),
        "{js}"
    );
    let out = a.run(&["snapshot", &name, "first"]);
    assert!(
        !out.status.success() && out.stderr_str().contains("has a snapshot first already"),
        "{}",
        out.describe()
    );
    let out = a.run(&["snapshot", &name, "../x"]);
    assert!(
        !out.status.success() && out.stderr_str().contains("invalid snapshot tag"),
        "{}",
        out.describe()
    );
    a.ok(&["rollback", &name, "first"]);
    assert_same(&at_first, &tree(&a.root(&name), base));
    // The snapshot is still there, and still the same after a rollback
    // whose files are then changed.
    std::fs::write(a.root(&name).join("etc/secret"), b"again").unwrap();
    assert_same(&at_first, &tree(&snap, base));
    a.ok(&["snapshot", "--remove", &name, "first"]);
    assert!(!a.base().join(&name).join("snapshots/first").exists());
    let out = a.run(&["rollback", &name, "first"]);
    assert!(
        !out.status.success() && out.stderr_str().contains("has no snapshot first"),
        "{}",
        out.describe()
    );
}

#[test]
fn a_running_subhost_is_frozen_for_its_snapshot_and_refused_elsewhere() {
    let mut s = Subhost::busybox("mr", "");
    let pid = s.start_background(
        &[],
        &[
            "/bin/sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /count; done",
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || s
        .root()
        .join("count")
        .exists()));
    let out = s.run(&["snapshot", &s.name, "live"]);
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        out.stdout_str().contains("(frozen meanwhile)"),
        "{}",
        out.describe()
    );
    let snap = s.dir().join("snapshots/live/root");
    assert!(snap.join("bin/busybox").exists());
    // Thawed: the loop goes on counting.
    let count = || std::fs::read_to_string(s.root().join("count")).unwrap_or_default();
    let first = count();
    assert!(
        wait_until(Duration::from_secs(10), || count() != first),
        "still frozen"
    );
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    for args in [
        vec!["rollback", &s.name, "live"],
        vec!["send", &s.name],
        vec!["clone", &s.name, "shtnever"],
    ] {
        let out = run_timeout(s.launch().args(&args).stdout(Stdio::piped()), LIMIT);
        assert!(!out.status.success(), "{args:?}: {}", out.describe());
        assert!(
            out.stderr_str().contains("is running"),
            "{args:?}: {}",
            out.describe()
        );
    }
    assert!(s.stop().status.success());
    // Stopped, the rollback puts the frozen copy back.
    let out = s.run(&["rollback", &s.name, "live"]);
    assert!(out.status.success(), "{}", out.describe());
}

/// `contrib/ansible/examples/move.yml` between two `$SUBHOST` dirs of
/// this machine, as two inventory hosts with the local connection.
#[test]
fn the_ansible_example_moves_a_subhost() {
    let a = Site::new();
    let b = Site::new();
    let name = unique_name("ma");
    let ra = a.filled(&name, None);
    let play = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/ansible/examples/move.yml");
    let t = a.tmp.path();
    for d in ["home", "local", "remote", "streams", "controller"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    let inventory = t.join("inventory.yml");
    std::fs::write(
        &inventory,
        format!(
            "all:\n  vars:\n    ansible_connection: local\n    ansible_python_interpreter: /usr/bin/python3\n    \
             subhost_launcher: {launch}\n    stream_dir: {streams}\n    move_dir: {controller}\n  hosts:\n    \
             host1:\n      subhost_dir: {a}\n    host2:\n      subhost_dir: {b}\n",
            launch = launch_bin().display(),
            streams = t.join("streams").display(),
            controller = t.join("controller").display(),
            a = a.base().display(),
            b = b.base().display(),
        ),
    )
    .unwrap();
    let mut c = Command::new("ansible-playbook");
    c.env("HOME", t.join("home"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("ANSIBLE_HOME", t.join("home/.ansible"))
        .env("ANSIBLE_LOCAL_TEMP", t.join("local"))
        .env("ANSIBLE_REMOTE_TEMP", t.join("remote"))
        .env("ANSIBLE_NOCOWS", "1")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .arg("-i")
        .arg(&inventory)
        .args(["-e", &format!("subhost={name} from=host1 to=host2")])
        .arg(&play)
        .current_dir(t);
    let out = run_timeout(&mut c, Duration::from_secs(300));
    assert!(out.status.success(), "{}", out.describe());
    assert_same(
        &tree(&a.root(&name), ra),
        &tree(&b.root(&name), b.range(&name)),
    );
    // The hosts' copies of the stream are removed; the controller's stays.
    assert_eq!(std::fs::read_dir(t.join("streams")).unwrap().count(), 0);
    assert!(t
        .join("controller")
        .join(format!("{name}.subhost"))
        .is_file());
}

/// Many small files in `dir`, so that copying them takes a while.
fn many_files(dir: &Path, n: usize) {
    for d in 0..n / 1000 {
        let sub = dir.join(format!("many{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..1000 {
            std::fs::write(sub.join(format!("f{f}")), format!("{d} {f}\n")).unwrap();
        }
    }
}

#[test]
fn a_start_of_the_source_waits_for_its_clone_to_finish() {
    let s = Subhost::busybox("mk", "");
    many_files(&s.root(), 5_000);
    let dst = unique_name("mk");
    let clone = s.spawn(&["clone", &s.name, &dst]);
    let aside = s.base().join(format!(".{dst}.new"));
    let began = wait_until(Duration::from_secs(20), || aside.exists());
    // Under way: a start of the source waits for the clone's lock, so the
    // clone is in place by the time the start has run, or the start is
    // refused as busy when the clone takes longer than a start waits.
    let start = s.run(&["start", "--detach", &s.name]);
    let in_place = s.base().join(&dst).join("config").exists();
    let still_copying = aside.exists();
    let cloned = wait_timeout(clone, LIMIT);
    assert!(began, "the clone did not begin: {}", cloned.describe());
    assert!(cloned.status.success(), "{}", cloned.describe());
    if start.status.success() {
        assert!(
            in_place && !still_copying,
            "the start ran while the clone copied its source: {}",
            start.describe()
        );
    } else {
        assert!(
            start.stderr_str().contains("is busy"),
            "{}",
            start.describe()
        );
    }
    // The clone's own lock went with it.
    assert!(!Path::new(&format!("/run/subhost/{dst}.lock")).exists());
}

/// An flock on a NAME's lock file, as another command holding it; the
/// file is removed on drop.
struct Held {
    path: PathBuf,
    lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl Held {
    fn new(name: &str) -> Held {
        std::fs::create_dir_all("/run/subhost").unwrap();
        let path = PathBuf::from(format!("/run/subhost/{name}.lock"));
        let f = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .unwrap();
        Held {
            path,
            lock: Some(lock),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.lock.take();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn a_receive_waits_while_its_name_is_locked() {
    let a = Site::new();
    let b = Site::new();
    let name = unique_name("ml");
    a.filled(&name, None);
    let stream = a.send(&name);
    let mut held = Held::new(&name);
    let hold = Duration::from_millis(1500);
    let began = std::time::Instant::now();
    let out = std::thread::scope(|t| {
        t.spawn(|| {
            std::thread::sleep(hold);
            held.lock.take();
        });
        b.receive(&name, stream)
    });
    let took = began.elapsed();
    drop(held);
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        took >= hold,
        "the receive did not wait for the lock of {name} ({took:?}): {}",
        out.describe()
    );
}
