//! The device policy: Docker's default nodes (root inside may make any
//! node, and open only the harmless ones), `DEVICES` for more, and what
//! `status` shows of it. A subhost is a busybox root with the probe.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use subhost_tests::*;

fn lab(tag: &str, config: &str) -> Subhost {
    let s = Subhost::busybox(tag, config);
    install_probe(&s.root());
    s
}

/// Runs `probe each` with `checks` in a session of `s`; the verdicts by id.
fn probe(s: &Subhost, checks: &[(&str, String)]) -> std::collections::HashMap<String, String> {
    let mut args = vec!["start", &s.name, "--", "/probe"];
    let each = probe_each_args(checks);
    args.extend(each.iter().map(String::as_str));
    let out = s.run(&args);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let r = probe_results(&out.stdout_str());
    for (id, _) in checks {
        assert!(
            r.contains_key(*id),
            "no result for {id}: {}",
            out.describe()
        );
    }
    r
}

/// A node for `DEVICES` of the host's device `host` (a character device):
/// the host's own without a user namespace; with one, a copy made in
/// `tmp` that everyone may open, as the host's root-only node stays the
/// host's root's through the bind (root inside is not the host's root).
fn node_for_mode(tmp: &TempDir, host: &str) -> PathBuf {
    if !userns_mode() {
        return PathBuf::from(host);
    }
    let rdev = std::fs::metadata(host).unwrap().rdev();
    let copy = tmp.path().join(Path::new(host).file_name().unwrap());
    let out = run_timeout(
        &mut cmd(
            "mknod",
            [
                "-m",
                "666",
                &copy.to_string_lossy(),
                "c",
                &libc::major(rdev).to_string(),
                &libc::minor(rdev).to_string(),
            ],
        ),
        LAUNCH_LIMIT,
    );
    assert!(out.status.success(), "{}", out.describe());
    copy
}

#[test]
fn root_makes_and_uses_a_null_device_outside_dev() {
    let s = lab("dvn", "");
    let out =
        s.sh("mknod /tmp/null c 1 3 && echo written > /tmp/null && cat /tmp/null && echo done");
    if userns_mode() {
        // The kernel allows mknod only to the host's CAP_MKNOD.
        assert_ne!(out.code(), 0, "{}", out.describe());
        assert!(
            out.stderr_str().contains("Operation not permitted"),
            "{}",
            out.describe()
        );
    } else {
        assert_eq!(out.code(), 0, "{}", out.describe());
        assert_eq!(out.stdout_str(), "done\n", "{}", out.describe());
    }
}

#[test]
fn a_declared_tun_makes_a_tun_device_and_an_undeclared_one_does_not_open() {
    let tmp = TempDir::new();
    let node = node_for_mode(&tmp, "/dev/net/tun");
    let s = lab("dvt", "");
    let inside = if userns_mode() {
        "/dev/tun"
    } else {
        "/dev/net/tun"
    };
    let r = probe(
        &s,
        &[
            ("exists", format!("exists {inside}")),
            ("undeclared", "mknod-open /dev/shttun c 10 200".into()),
        ],
    );
    assert_eq!(r["exists"], "no", "{r:?}");
    let want = if userns_mode() {
        "mknod errno EPERM"
    } else {
        "open errno EPERM"
    };
    assert_eq!(r["undeclared"], want, "{r:?}");

    std::fs::write(
        s.dir().join("config"),
        mode_config(&format!("DEVICES=({})\n", node.display())),
    )
    .unwrap();
    let r = probe(
        &s,
        &[
            ("tun", format!("tun {inside} shttun0")),
            ("other", "mknod-open /dev/shtkmsg c 1 11".into()),
        ],
    );
    assert_eq!(r["tun"], "ok", "{r:?}");
    // Only the declared node is let through.
    assert!(r["other"].ends_with("errno EPERM"), "{r:?}");
    // The tun device was the subhost's netns's: none on the host.
    assert!(!Path::new("/sys/class/net/shttun0").exists());
}

#[test]
fn a_declared_fuse_node_opens() {
    let tmp = TempDir::new();
    let node = node_for_mode(&tmp, "/dev/fuse");
    let s = lab("dvf", &format!("DEVICES=({}:rw)\n", node.display()));
    let r = probe(&s, &[("fuse", "open-rw /dev/fuse".into())]);
    assert_eq!(r["fuse"], "ok", "{r:?}");
}

#[test]
fn status_shows_the_policy_and_warns_for_host_wide_devices() {
    let s = lab("dvs", "DEVICES=(/dev/net/tun /dev/kmsg:r)\n");
    let out = s.run(&["status", &s.name]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let text = out.stdout_str();
    let line = text
        .lines()
        .find(|l| l.starts_with("devices:"))
        .unwrap_or_else(|| panic!("{text}"));
    for want in [
        "c *:* m",
        "b *:* m",
        "c 1:3 rwm",
        "c 136:* rwm",
        "c 10:200 rwm /dev/net/tun",
        "c 1:11 r /dev/kmsg",
    ] {
        assert!(line.contains(want), "{want}: {line}");
    }
    assert!(
        text.contains("warning:  DEVICES gives /dev/kmsg (/dev/kmsg: the host's kernel log)"),
        "{text}"
    );
    assert!(!text.contains("DEVICES gives /dev/net/tun"), "{text}");
    let out = s.run(&["status", "--json", &s.name]);
    let json = out.stdout_str();
    assert!(
        json.contains("\"devices\": [\n    \"c *:* m\","),
        "{}",
        out.describe()
    );
    assert!(json.contains("\"c 10:200 rwm /dev/net/tun\""), "{json}");
    // The dry run shows the cgroup's policy.
    let out = s.run(&["start", "--dry-run", &s.name]);
    let plan = out.stdout_str();
    assert!(
        plan.contains("devices.deny") && plan.contains("echo c 10:200 rwm > ")
            || plan.contains("type cgroup_device"),
        "{plan}"
    );
    // With USERNS the launcher makes the node for root of the range.
    let node = if userns_mode() {
        "mknod --like /dev/net/tun N; chown "
    } else {
        "mount --bind /dev/net/tun "
    };
    assert!(plan.contains(node), "{plan}");
}

#[test]
fn bad_devices_are_config_errors_at_their_line() {
    let s = lab("dvb", "");
    let disk = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .and_then(|l| {
            l.split(" - ")
                .nth(1)
                .map(|r| r.split(' ').nth(1).unwrap().to_string())
        })
        .filter(|d| d.starts_with("/dev/") && Path::new(d).exists());
    let mut cases = vec![
        (
            "DEVICES=(/dev/null\n/dev/shtnosuch)",
            2,
            "device /dev/shtnosuch",
        ),
        (
            "DEVICES=(/etc/passwd)",
            1,
            "/etc/passwd is not a device node",
        ),
        (
            "DEVICES=(/dev/null:rx)",
            1,
            "\"rx\" in \"/dev/null:rx\" is not a mode",
        ),
    ];
    let block = disk.map(|d| format!("DEVICES=({d})"));
    if let Some(b) = &block {
        cases.push((b.as_str(), 1, "is a block device, given without a mode"));
    }
    let config = s.dir().join("config");
    for (text, line, needle) in cases {
        std::fs::write(&config, mode_config(text)).unwrap();
        let out = s.run(&["start", &s.name, "--", "true"]);
        assert_eq!(out.code(), 125, "{}", out.describe());
        let err = out.stderr_str();
        assert!(
            err.contains(&format!("{}:{line}:", config.display())) && err.contains(needle),
            "{text}: {err}"
        );
        assert!(!s.live_mounted(), "{err}");
    }
}

/// A static i386 program: getpid must work, keyctl (denied) must fail
/// with EPERM; exit 0, else 1 (getpid) or 2 (keyctl's result otherwise).
const M32: &str = "
.globl _start
_start:
    mov $20, %eax
    int $0x80
    test %eax, %eax
    jle bad_getpid
    mov $288, %eax
    xor %ebx, %ebx
    int $0x80
    cmp $-1, %eax
    jne bad_keyctl
    mov $1, %eax
    xor %ebx, %ebx
    int $0x80
bad_getpid:
    mov $1, %eax
    mov $1, %ebx
    int $0x80
bad_keyctl:
    mov $1, %eax
    mov $2, %ebx
    int $0x80
";

/// Assembles M32 into `dest` with binutils (no multilib needed).
fn build_m32(dest: &Path) {
    let tmp = TempDir::new();
    let src = tmp.path().join("m32.s");
    let obj = tmp.path().join("m32.o");
    std::fs::write(&src, M32).unwrap();
    let out = run_timeout(
        &mut cmd(
            "as",
            ["--32", "-o", &obj.to_string_lossy(), &src.to_string_lossy()],
        ),
        LAUNCH_LIMIT,
    );
    assert!(
        out.status.success(),
        "binutils is needed: {}",
        out.describe()
    );
    let out = run_timeout(
        &mut cmd(
            "ld",
            [
                "-m",
                "elf_i386",
                "-static",
                "-o",
                &dest.to_string_lossy(),
                &obj.to_string_lossy(),
            ],
        ),
        LAUNCH_LIMIT,
    );
    assert!(out.status.success(), "{}", out.describe());
}

#[test]
fn a_32_bit_program_runs_and_its_denied_call_is_denied() {
    let s = lab("dv32", "");
    build_m32(&s.root().join("m32"));
    let out = s.sh("/m32; echo rc=$?");
    assert_eq!(out.stdout_str(), "rc=0\n", "{}", out.describe());
    // The filter is what denies it: without, keyctl answers otherwise.
    std::fs::write(s.dir().join("config"), mode_config("SECCOMP=off\n")).unwrap();
    let out = s.sh("/m32; echo rc=$?");
    assert_eq!(out.stdout_str(), "rc=2\n", "{}", out.describe());
}

/// Nested sandboxes as Flatpak, bwrap and rootless podman make them: a
/// user namespace of their own, a PID namespace, and a fresh proc (or, in
/// a netns of their own, sysfs). With USERNS they work, and the subhost's
/// masks still hide what they hide; without, root inside is the host's
/// root, a nested user namespace maps it to the host's uid 0, and a fresh
/// proc there would reopen /proc/sys: the kernel refuses it, and must.
#[test]
fn nested_sandboxes_mount_proc_in_userns_mode_and_the_masks_hold() {
    assert!(
        Path::new("/usr/bin/bwrap").exists(),
        "bubblewrap is needed: run tests/setup"
    );
    // The host's own tools, as the sandboxes use them (busybox's setpriv
    // cannot change uids), in a scratch base rather than the host's `/`.
    let base = ScratchBase::with_programs(&[
        "/usr/bin/unshare",
        "/usr/bin/setpriv",
        "/usr/bin/bwrap",
        "/usr/bin/grep",
    ]);
    let s = Subhost::new("dvu", &format!("LOWER={}\n", base.path().display()));
    // By path: busybox's shell runs its own applets before any in PATH.
    let nobody = "/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups";
    let out = s.sh(&format!(
        "/usr/bin/bwrap --version >/dev/null && {nobody} true && echo tools=0; \
         /usr/bin/unshare -U -r -p -f --mount-proc true; echo unshare=$?; \
         {nobody} /usr/bin/bwrap --ro-bind / / --unshare-pid --proc /proc true; echo bwrap=$?; \
         /usr/bin/unshare -U -r -m -n sh -c 'mount -t sysfs -o ro sysfs /mnt && umount /mnt'; echo sysfs=$?; \
         wc -c < /proc/timer_list; ls /sys/firmware | wc -l; ls -a /dev | /usr/bin/grep -cx 'proc\\|sys' || :"
    ));
    assert_eq!(out.code(), 0, "{}", out.describe());
    let text = out.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    // So that a refusal below is the kernel's, not a missing program's.
    assert_eq!(lines.first(), Some(&"tools=0"), "{}", out.describe());
    let worked = |what: &str| lines.contains(&format!("{what}=0").as_str());
    for what in ["unshare", "bwrap", "sysfs"] {
        assert_eq!(worked(what), userns_mode(), "{what}: {}", out.describe());
    }
    // Masked as before: timer_list empty, /sys/firmware empty; and the
    // instances that make proc visible to the kernel are out of reach.
    assert!(text.ends_with("0\n0\n0\n"), "{}", out.describe());
}

/// A root-only node (0600, the host's root's) that `DEVICES` gives opens
/// for root inside in both modes: with USERNS the launcher makes it anew
/// for root of the range (the host's root is nobody there), and the host's
/// node stays as it was. An undeclared node reached through a SHARE does
/// not open: the device policy, not the mode, refuses it.
#[test]
fn a_declared_root_only_node_opens_for_root_inside_and_an_undeclared_one_does_not() {
    let tmp = TempDir::new();
    let nodes = tmp.path().join("nodes");
    std::fs::create_dir(&nodes).unwrap();
    let declared = nodes.join("shttun");
    let undeclared = nodes.join("shtkmsg");
    for (node, mode, major, minor) in [
        (&declared, "600", "10", "200"),
        (&undeclared, "666", "1", "11"),
    ] {
        let path = node.to_string_lossy();
        let out = run_timeout(
            &mut cmd("mknod", ["-m", mode, &path, "c", major, minor]),
            LAUNCH_LIMIT,
        );
        assert!(out.status.success(), "{}", out.describe());
    }
    let s = lab(
        "dvr",
        &format!(
            "DEVICES=({}:rw)\nSHARE=({}:/mnt/nodes)\n",
            declared.display(),
            nodes.display()
        ),
    );
    let r = probe(
        &s,
        &[
            ("declared", "open-rw /dev/shttun".into()),
            ("undeclared", "open-rw /mnt/nodes/shtkmsg".into()),
        ],
    );
    assert_eq!(r["declared"], "ok", "{r:?}");
    assert_eq!(r["undeclared"], "errno EPERM", "{r:?}");
    let meta = std::fs::metadata(&declared).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 0, 0o600),
        "the host's node changed"
    );
    // The launcher's node is the subhost's root's, with the host's mode.
    let out = s.sh("stat -c '%u:%g %a %t:%T' /dev/shttun");
    assert_eq!(out.stdout_str(), "0:0 600 a:c8\n", "{}", out.describe());
}

/// A warm start enforces the device policy of the config as it is then:
/// a node given by `DEVICES` opens, and once `DEVICES` is dropped the
/// program the kept cgroup holds is replaced, and it no longer opens.
#[test]
fn a_warm_start_replaces_the_device_program_when_devices_change() {
    let tmp = TempDir::new();
    let nodes = tmp.path().join("nodes");
    std::fs::create_dir(&nodes).unwrap();
    let node = nodes.join("shttun");
    let out = run_timeout(
        &mut cmd(
            "mknod",
            ["-m", "666", &node.to_string_lossy(), "c", "10", "200"],
        ),
        LAUNCH_LIMIT,
    );
    assert!(out.status.success(), "{}", out.describe());
    let share = format!("SHARE=({}:/mnt/nodes)\n", nodes.display());
    let with = format!("DEVICES=({}:rw)\n{share}", node.display());
    let s = lab("dvw", &with);
    let check = [("shared", "open-rw /mnt/nodes/shttun".to_string())];
    assert_eq!(probe(&s, &check)["shared"], "ok");
    // The kept cgroup v2 directory, by inode: one made again has another.
    let v2_ino = || {
        let record = std::fs::read_to_string(format!("/run/subhost/{}.cgroup", s.name)).unwrap();
        record
            .lines()
            .map(Path::new)
            .find(|d| d.join("cgroup.kill").exists())
            .map(|d| std::fs::metadata(d).unwrap().ino())
            .expect("a kept cgroup v2 directory")
    };
    let cgroup = v2_ino();

    std::fs::write(s.dir().join("config"), mode_config(&share)).unwrap();
    assert_eq!(probe(&s, &check)["shared"], "errno EPERM");
    // The same cgroup, kept: its program was swapped, not the cgroup made anew.
    assert_eq!(v2_ino(), cgroup);

    std::fs::write(s.dir().join("config"), mode_config(&with)).unwrap();
    assert_eq!(probe(&s, &check)["shared"], "ok");
    let out = s.stop();
    assert_eq!(out.code(), 0, "{}", out.describe());
}
