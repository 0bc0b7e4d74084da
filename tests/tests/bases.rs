//! Bases: `base import` from a directory, tarballs (plain, gzip, zstd) and
//! an OCI layout, checked file by file; digests; bad inputs refused with
//! nothing kept; a subhost on a base, its `diff` after BOOT changed files;
//! `base remove` refused while a subhost uses the base.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use subhost_tests::*;

/// `subhost-launch` with `SUBHOST` at `base`, run with a timeout.
fn launch(base: &Path, args: &[&str]) -> Finished {
    let mut c = Command::new(launch_bin());
    c.env("SUBHOST", base).args(args);
    run_timeout(&mut c, LAUNCH_LIMIT)
}

fn sh(script: &str) {
    let out = run_timeout(
        Command::new("sh").args(["-c", script]),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{script}: {}", out.describe());
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    xattr_map(path).ok()?.remove(name)
}

/// Every entry below `root`, as one line each: type, mode, owner, size,
/// content or target, the test's xattr, and the mtime of files.
fn describe(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = std::fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let sub = rel.join(&n);
            let full = root.join(&sub);
            let md = std::fs::symlink_metadata(&full).unwrap();
            let ft = md.file_type();
            let what = if ft.is_dir() {
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("symlink {}", std::fs::read_link(&full).unwrap().display())
            } else if ft.is_file() {
                format!(
                    "file {:?} mtime {}",
                    String::from_utf8_lossy(&std::fs::read(&full).unwrap()),
                    md.mtime()
                )
            } else {
                format!("other {:o} rdev {}", md.mode() & 0o170000, md.rdev())
            };
            let mode = if ft.is_symlink() {
                0
            } else {
                md.mode() & 0o7777
            };
            let x = get_xattr(&full, "user.subhost-test")
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            out.insert(
                sub.display().to_string(),
                format!(
                    "{what} mode {mode:o} owner {}:{} xattr {x:?}",
                    md.uid(),
                    md.gid()
                ),
            );
            if ft.is_dir() {
                walk(root, &sub, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

/// A source tree with what a base must keep: owners, modes with set-id
/// bits, an xattr, relative and absolute symlinks, a hardlink, a FIFO.
fn source_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("etc/sub")).unwrap();
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::fs::write(dir.join("etc/hostname"), "base\n").unwrap();
    std::fs::write(dir.join("usr/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    std::os::unix::fs::chown(dir.join("usr/bin/tool"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(
        dir.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o4751),
    )
    .unwrap();
    std::os::unix::fs::chown(dir.join("etc/sub"), Some(7), Some(8)).unwrap();
    std::fs::set_permissions(dir.join("etc/sub"), std::fs::Permissions::from_mode(0o1770)).unwrap();
    set_xattr(&dir.join("etc/hostname"), "user.subhost-test", b"kept");
    std::fs::hard_link(dir.join("usr/bin/tool"), dir.join("usr/bin/tool2")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/tool", dir.join("etc/abs")).unwrap();
    std::os::unix::fs::symlink("../usr/bin/tool", dir.join("etc/rel")).unwrap();
    std::os::unix::fs::symlink("../../usr", dir.join("etc/sub/up")).unwrap();
    sh(&format!("mkfifo {}/etc/fifo", dir.display()));
}

/// The digest `base import` reported for `name`.
fn digest_of(base: &Path, name: &str) -> String {
    let text =
        std::fs::read_to_string(base.join(".bases").join(name).join("manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    m["digest"].as_str().unwrap().to_string()
}

fn assert_same_tree(src: &Path, imported: &Path) {
    let (want, got) = (describe(src), describe(imported));
    assert_eq!(want, got, "the imported tree differs from its source");
    let ino = |p: &str| std::fs::metadata(imported.join(p)).unwrap().ino();
    assert_eq!(
        ino("usr/bin/tool"),
        ino("usr/bin/tool2"),
        "a hardlink became a copy"
    );
}

#[test]
fn import_from_a_directory_and_tarballs_keeps_every_file_as_it_is() {
    require_root();
    let tmp = TempDir::new();
    let (base, src) = (tmp.path().join("s"), tmp.path().join("src"));
    std::fs::create_dir(&base).unwrap();
    source_tree(&src);
    let t = tmp.path().display().to_string();
    sh(&format!(
        "tar -C {t}/src --xattrs --xattrs-include='user.*' -cf {t}/b.tar . && \
         gzip -c {t}/b.tar > {t}/b.tgz.data && zstd -q -c {t}/b.tar > {t}/b.zst.data"
    ));
    // The names say nothing: the content tells the compression.
    let sources = [
        ("fromdir", src.clone()),
        ("fromtar", tmp.path().join("b.tar")),
        ("fromgz", tmp.path().join("b.tgz.data")),
        ("fromzst", tmp.path().join("b.zst.data")),
    ];
    for (name, source) in &sources {
        let out = launch(&base, &["base", "import", name, source.to_str().unwrap()]);
        assert!(out.status.success(), "import {name}: {}", out.describe());
        assert_same_tree(&src, &base.join(".bases").join(name).join("root"));
    }
    let digests: Vec<String> = sources.iter().map(|(n, _)| digest_of(&base, n)).collect();
    assert!(digests[0].starts_with("sha256:") && digests[0].len() == 71);
    assert!(
        digests.iter().all(|d| d == &digests[0]),
        "digests differ: {digests:?}"
    );

    let list = launch(&base, &["base", "list", "--json"]);
    assert!(list.status.success(), "{}", list.describe());
    let v: serde_json::Value = serde_json::from_str(&list.stdout_str()).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fromdir", "fromgz", "fromtar", "fromzst"]);
    assert_eq!(v[0]["kind"], "dir");
    assert_eq!(v[2]["kind"], "tar");
    assert_eq!(v[0]["files"], 11, "{v}");
}

#[test]
fn the_same_tarball_gives_the_same_digest_and_a_changed_file_another() {
    require_root();
    let tmp = TempDir::new();
    let (base, src) = (tmp.path().join("s"), tmp.path().join("src"));
    std::fs::create_dir(&base).unwrap();
    source_tree(&src);
    let t = tmp.path().display().to_string();
    sh(&format!("tar -C {t}/src -czf {t}/one.tar.gz ."));
    for name in ["one", "two"] {
        let out = launch(&base, &["base", "import", name, &format!("{t}/one.tar.gz")]);
        assert!(out.status.success(), "{}", out.describe());
    }
    assert_eq!(digest_of(&base, "one"), digest_of(&base, "two"));
    std::fs::write(src.join("etc/hostname"), "bASE\n").unwrap();
    sh(&format!("tar -C {t}/src -czf {t}/changed.tar.gz ."));
    let out = launch(
        &base,
        &["base", "import", "three", &format!("{t}/changed.tar.gz")],
    );
    assert!(out.status.success(), "{}", out.describe());
    assert_ne!(digest_of(&base, "one"), digest_of(&base, "three"));
    // A mode alone changes it too.
    std::fs::write(src.join("etc/hostname"), "base\n").unwrap();
    std::fs::set_permissions(
        src.join("etc/hostname"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    sh(&format!("tar -C {t}/src -czf {t}/mode.tar.gz ."));
    let out = launch(
        &base,
        &["base", "import", "four", &format!("{t}/mode.tar.gz")],
    );
    assert!(out.status.success(), "{}", out.describe());
    assert_ne!(digest_of(&base, "one"), digest_of(&base, "four"));
}

/// One ustar entry, written by hand so that a test can put in it what tar
/// tools refuse to write (`..`, absolute names).
fn tar_entry(name: &str, kind: u8, link: &str, data: &[u8], mode: u32, dev: (u32, u32)) -> Vec<u8> {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, v: &[u8]| h[at..at + v.len()].copy_from_slice(v);
    let octal = |v: u64, width: usize| format!("{v:0w$o}\0", w = width - 1).into_bytes();
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, &octal(u64::from(mode), 8));
    put(&mut h, 108, &octal(0, 8));
    put(&mut h, 116, &octal(0, 8));
    put(&mut h, 124, &octal(data.len() as u64, 12));
    put(&mut h, 136, &octal(1_700_000_000, 12));
    h[156] = kind;
    put(&mut h, 157, link.as_bytes());
    put(&mut h, 257, b"ustar\x0000");
    put(&mut h, 329, &octal(u64::from(dev.0), 8));
    put(&mut h, 337, &octal(u64::from(dev.1), 8));
    put(&mut h, 148, b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn tarball(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn file(name: &str, data: &str) -> Vec<u8> {
    tar_entry(name, b'0', "", data.as_bytes(), 0o644, (0, 0))
}
fn dir(name: &str) -> Vec<u8> {
    tar_entry(name, b'5', "", b"", 0o755, (0, 0))
}
fn symlink(name: &str, target: &str) -> Vec<u8> {
    tar_entry(name, b'2', target, b"", 0o777, (0, 0))
}

fn sha256_hex(path: &Path) -> String {
    let out = run_timeout(Command::new("sha256sum").arg(path), Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.describe());
    out.stdout_str()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Adds `data` as a blob of the layout at `oci`; its descriptor's digest
/// and size.
fn blob(oci: &Path, data: &[u8]) -> (String, usize) {
    let tmp = oci.join("blob.tmp");
    std::fs::write(&tmp, data).unwrap();
    let hex = sha256_hex(&tmp);
    std::fs::rename(&tmp, oci.join("blobs/sha256").join(&hex)).unwrap();
    (format!("sha256:{hex}"), data.len())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let out = run_input(
        Command::new("gzip").arg("-c"),
        data.to_vec(),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", out.describe());
    out.stdout
}

/// An OCI layout of two gzip layers: the second deletes `a/x` with a
/// whiteout and empties `o/` with an opaque marker before adding `o/new`.
/// Returns the layout and the second layer's blob path.
fn oci_layout(at: &Path) -> (PathBuf, PathBuf) {
    let oci = at.to_path_buf();
    std::fs::create_dir_all(oci.join("blobs/sha256")).unwrap();
    std::fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let l1 = gzip(&tarball(&[
        dir("a/"),
        file("a/x", "x from layer 1"),
        file("a/y", "y from layer 1"),
        dir("o/"),
        file("o/p", "p"),
        dir("o/q/"),
        file("o/q/deep", "deep"),
        file("keep", "kept"),
        symlink("bin", "/usr/bin"),
    ]));
    let l2 = gzip(&tarball(&[
        file("a/.wh.x", ""),
        file("o/new", "new in layer 2"),
        file("o/.wh..wh..opq", ""),
        file("keep", "kept, changed by layer 2"),
    ]));
    let (d1, s1) = blob(&oci, &l1);
    let (d2, s2) = blob(&oci, &l2);
    let (dc, sc) = blob(
        &oci,
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{dc}","size":{sc}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d1}","size":{s1}}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d2}","size":{s2}}}]}}"#
    );
    let (dm, sm) = blob(&oci, manifest.as_bytes());
    std::fs::write(
        oci.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{dm}","size":{sm}}}]}}"#
        ),
    )
    .unwrap();
    let layer2 = oci
        .join("blobs/sha256")
        .join(d2.trim_start_matches("sha256:"));
    (oci, layer2)
}

#[test]
fn an_oci_layout_is_applied_layer_by_layer_with_whiteouts() {
    require_root();
    let tmp = TempDir::new();
    let base = tmp.path().join("s");
    std::fs::create_dir(&base).unwrap();
    let (oci, _) = oci_layout(&tmp.path().join("oci"));
    let out = launch(&base, &["base", "import", "img", oci.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out.describe());
    let root = base.join(".bases/img/root");
    let got: Vec<String> = describe(&root).into_keys().collect();
    assert_eq!(
        got,
        ["a", "a/y", "bin", "keep", "o", "o/new"],
        "{:?}",
        describe(&root)
    );
    assert_eq!(
        std::fs::read_to_string(root.join("keep")).unwrap(),
        "kept, changed by layer 2"
    );
    assert_eq!(
        std::fs::read_link(root.join("bin")).unwrap(),
        Path::new("/usr/bin")
    );
    let m = std::fs::read_to_string(base.join(".bases/img/manifest.json")).unwrap();
    assert!(m.contains(r#""kind": "oci""#), "{m}");
}

/// What is in `$SUBHOST/.bases` besides `keep`.
fn left_in_bases(base: &Path, keep: &[&str]) -> Vec<String> {
    match std::fs::read_dir(base.join(".bases")) {
        Err(_) => Vec::new(),
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !keep.contains(&n.as_str()))
            .collect(),
    }
}

#[test]
fn bad_input_is_refused_with_nothing_kept() {
    require_root();
    let tmp = TempDir::new();
    let base = tmp.path().join("s");
    std::fs::create_dir(&base).unwrap();
    let t = tmp.path();
    let ok = t.join("ok.tar");
    std::fs::write(&ok, tarball(&[dir("etc/"), file("etc/a", "a")])).unwrap();
    let out = launch(&base, &["base", "import", "taken", ok.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out.describe());

    let outside = t.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            tarball(&[file("etc/a", "a"), file("etc/../../outside/x", "x")]),
            "`..`",
        ),
        (
            "absolute",
            tarball(&[
                file("etc/a", "a"),
                file(&format!("{}/x", outside.display()), "x"),
            ]),
            "absolute",
        ),
        (
            "escape",
            tarball(&[dir("etc/"), symlink("etc/l", "../../../outside")]),
            "points out of the base",
        ),
        (
            "rootup",
            tarball(&[symlink("l", "/../outside")]),
            "points out of the base",
        ),
        (
            "through",
            tarball(&[dir("etc/"), symlink("etc/l", "/etc"), file("etc/l/x", "x")]),
            "through the symlink",
        ),
        (
            "chardev",
            tarball(&[
                dir("dev/"),
                tar_entry("dev/null", b'3', "", b"", 0o666, (1, 3)),
            ]),
            "device node",
        ),
        (
            "blockdev",
            tarball(&[tar_entry("sda", b'4', "", b"", 0o660, (8, 0))]),
            "device node",
        ),
        (
            "badlink",
            tarball(&[tar_entry("h", b'1', "missing", b"", 0o644, (0, 0))]),
            "no such entry",
        ),
        (
            "garbage",
            b"this is no tarball at all, not even compressed".repeat(20),
            "tar",
        ),
    ];
    for (name, data, why) in &cases {
        let src = t.join(format!("{name}.tar"));
        std::fs::write(&src, data).unwrap();
        let out = launch(&base, &["base", "import", name, src.to_str().unwrap()]);
        assert!(
            !out.status.success(),
            "{name} was imported: {}",
            out.describe()
        );
        let err = out.stderr_str();
        assert!(
            err.contains(why) && err.contains("nothing kept"),
            "{name}: {err}"
        );
        assert_eq!(
            left_in_bases(&base, &["taken"]),
            Vec::<String>::new(),
            "{name}"
        );
    }
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "something was written outside"
    );

    // A name that exists, a bad name, a missing source.
    let out = launch(&base, &["base", "import", "taken", ok.to_str().unwrap()]);
    assert!(
        !out.status.success() && out.stderr_str().contains("exists already"),
        "{}",
        out.describe()
    );
    for bad in ["Up", "../x", ".bases", "waytoolongname"] {
        let out = launch(&base, &["base", "import", bad, ok.to_str().unwrap()]);
        assert!(
            !out.status.success() && out.stderr_str().contains("invalid base name"),
            "{bad}: {}",
            out.describe()
        );
    }
    let out = launch(
        &base,
        &[
            "base",
            "import",
            "nosrc",
            t.join("nothing").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "{}", out.describe());

    // A directory with a device node.
    let devdir = t.join("devdir");
    std::fs::create_dir(&devdir).unwrap();
    sh(&format!("mknod {}/null c 1 3", devdir.display()));
    let out = launch(
        &base,
        &["base", "import", "devdir", devdir.to_str().unwrap()],
    );
    assert!(
        !out.status.success() && out.stderr_str().contains("device node"),
        "{}",
        out.describe()
    );

    // OCI: a damaged blob, then a missing one.
    let (oci, layer2) = oci_layout(&t.join("oci"));
    let mut data = std::fs::read(&layer2).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&layer2, &data).unwrap();
    let out = launch(&base, &["base", "import", "damaged", oci.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", out.describe());
    let err = out.stderr_str();
    assert!(
        err.contains("does not match") || err.contains("gzip") || err.contains("corrupt"),
        "{err}"
    );
    std::fs::remove_file(&layer2).unwrap();
    let out = launch(&base, &["base", "import", "missing", oci.to_str().unwrap()]);
    assert!(
        !out.status.success() && out.stderr_str().contains("is missing"),
        "{}",
        out.describe()
    );
    assert_eq!(left_in_bases(&base, &["taken"]), Vec::<String>::new());
}

/// A busybox base with a few files BOOT changes.
fn busybox_base(base: &Path, src: &Path) -> PathBuf {
    busybox_root(src);
    install_probe(src);
    std::fs::create_dir_all(src.join("etc/dir")).unwrap();
    for f in [
        "etc/keep",
        "etc/mod",
        "etc/meta",
        "etc/owned",
        "etc/gone",
        "etc/dir/a",
        "etc/dir/b",
    ] {
        std::fs::write(src.join(f), format!("{f}\n")).unwrap();
    }
    let out = launch(base, &["base", "import", "bb", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out.describe());
    std::fs::canonicalize(base.join(".bases/bb/root")).unwrap()
}

#[test]
fn a_subhost_on_a_base_boots_and_diff_shows_what_it_changed() {
    let s = Subhost::new("bd", "");
    let src = s.base().join("src");
    let root = busybox_base(s.base(), &src);
    let boot = "BOOT=(sh -c 'echo new > /etc/new; echo changed > /etc/mod; chmod 600 /etc/meta; \
                chown 5:5 /etc/owned; rm /etc/gone; rm -r /etc/dir; mkdir /etc/dir; \
                echo c > /etc/dir/c; touch /booted')\n";
    std::fs::write(
        s.dir().join("config"),
        mode_config(&format!("LOWER={}\n{boot}", root.display())),
    )
    .unwrap();
    let name = s.name.clone();
    let out = s.run(&["start", "--detach", &name]);
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        wait_until(Duration::from_secs(10), || s.root().join("booted").exists()),
        "BOOT did not run: {:?}",
        std::fs::read_to_string(s.dir().join("console.log"))
    );
    let status = s.run(&["status", "--json", &name]);
    let v: serde_json::Value = serde_json::from_str(&status.stdout_str()).unwrap();
    assert_eq!(v["base"], "bb", "{v}");
    let out = s.stop();
    assert!(out.status.success(), "{}", out.describe());

    let out = s.run(&["diff", "--json", &name]);
    assert!(out.status.success(), "{}", out.describe());
    let v: serde_json::Value = serde_json::from_str(&out.stdout_str()).unwrap();
    let got: BTreeMap<String, String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let details: Vec<&str> = c["details"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap())
                .collect();
            (
                c["path"].as_str().unwrap().to_string(),
                format!(
                    "{} {} {} {} {}",
                    c["change"].as_str().unwrap(),
                    c["what"],
                    details.join(","),
                    c["type"].as_str().unwrap(),
                    c["size"]
                ),
            )
        })
        .collect();
    let want = [
        ("/booted", "added null  file 0"),
        ("/etc/new", "added null  file 4"),
        ("/etc/mod", "modified \"content\"  file 8"),
        ("/etc/meta", "modified \"metadata\" mode file 9"),
        ("/etc/owned", "modified \"metadata\" owner file 10"),
        ("/etc/gone", "deleted null  file 9"),
        ("/etc/dir/a", "deleted null  file 10"),
        ("/etc/dir/b", "deleted null  file 10"),
        ("/etc/dir/c", "added null  file 2"),
    ];
    for (path, what) in want {
        assert_eq!(
            got.get(path).map(String::as_str),
            Some(what),
            "{path} in {got:#?}"
        );
    }
    for unchanged in ["/etc/keep", "/etc", "/etc/dir", "/bin/busybox"] {
        assert!(!got.contains_key(unchanged), "{unchanged} in {got:#?}");
    }
    let text = s.run(&["diff", &name]);
    assert!(
        text.stdout_str()
            .contains("M /etc/meta (metadata: mode, 9 B)"),
        "{}",
        text.describe()
    );
    assert!(
        text.stdout_str().contains("D /etc/gone (file, 9 B)"),
        "{}",
        text.describe()
    );

    // The base is in use: not removed.
    let out = s.run(&["base", "remove", "bb"]);
    assert!(
        !out.status.success() && out.stderr_str().contains(&name),
        "{}",
        out.describe()
    );
    assert!(root.join("etc/keep").exists());
    let list = s.run(&["base", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&list.stdout_str()).unwrap();
    assert_eq!(v[0]["used_by"][0], name.as_str(), "{v}");
}

#[test]
fn create_base_sets_lower_and_remove_waits_for_the_last_user() {
    require_root();
    let tmp = TempDir::new();
    let base = tmp.path().join("s");
    std::fs::create_dir(&base).unwrap();
    let root = busybox_base(&base, &tmp.path().join("src"));
    let name = unique_name("bc");
    let mut args = vec!["create", name.as_str(), "--base", "bb"];
    args.extend_from_slice(mode_create_args());
    let out = launch(&base, &args);
    assert!(out.status.success(), "{}", out.describe());
    let config = std::fs::read_to_string(base.join(&name).join("config")).unwrap();
    assert!(
        config.contains(&format!("LOWER='{}'", root.display())),
        "{config}"
    );
    let out = launch(&base, &["status", &name]);
    assert!(
        out.stdout_str().contains("base:     bb"),
        "{}",
        out.describe()
    );
    let out = launch(&base, &["create", "other", "--base", "nosuch"]);
    assert!(
        !out.status.success() && out.stderr_str().contains("no base nosuch"),
        "{}",
        out.describe()
    );
    assert!(!base.join("other").exists());

    let out = launch(&base, &["base", "remove", "bb"]);
    assert!(
        !out.status.success() && out.stderr_str().contains(&name),
        "{}",
        out.describe()
    );
    // Once the subhost is on another LOWER, the base goes, whole.
    std::fs::write(base.join(&name).join("config"), "LOWER=/nonexistent\n").unwrap();
    let out = launch(&base, &["base", "remove", "bb"]);
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(left_in_bases(&base, &[]), Vec::<String>::new());
    let out = launch(&base, &["diff", &name]);
    assert!(
        out.status.success(),
        "a missing lower is nothing in it: {}",
        out.describe()
    );
}

#[test]
fn diff_of_a_subhost_without_lower_says_there_is_nothing_to_compare() {
    let s = Subhost::busybox("bn", "");
    let out = s.run(&["diff", &s.name]);
    assert!(
        !out.status.success() && out.stderr_str().contains("no LOWER"),
        "{}",
        out.describe()
    );
}
