//! Root inside a default subhost (overlay over a scratch base, one SHARE:
//! the routes need no host program, and a bug that deletes the lower
//! layer hits a canary, not the host) tries the
//! well-known ways out to the host, each a route of the probe (a helper of
//! this crate, run inside). Every route must fail by default; and so that
//! these tests can fail, each is shown to work once the protection that
//! stops it is lifted (`CAPS_KEEP`, `SYSCALLS_ALLOW`, `SECCOMP=off`,
//! `DEVICES`), or,
//! for what no config lifts, the same probe is shown to work on the host.
//!
//! The probes are harmless: they write back the values they read, undo
//! their mounts, make no cgroup, and call swapoff, settimeofday and
//! finit_module only in forms that change nothing (a file that is no swap,
//! NULL time, fd -1).

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use subhost_tests::*;

/// Capabilities that, kept, open the routes a filter also guards: so the
/// filter is seen to hold on its own.
const WIDE_CAPS: &str =
    "CAPS_KEEP=(SYS_ADMIN DAC_READ_SEARCH BPF PERFMON SYS_MODULE SYS_TIME MKNOD SYSLOG)";

/// Every call the syscall routes make.
const ALLOW_ALL: &str = "SYSCALLS_ALLOW=(open_by_handle_at bpf perf_event_open swapoff \
     settimeofday finit_module keyctl userfaultfd)";

/// A subhost over a scratch base with one SHARE and the probe in its root.
struct Lab {
    s: Subhost,
    share: TempDir,
    /// A host process the subhost must not see; its `$0` is the marker.
    marker: String,
    sleeper: std::process::Child,
    /// Dropped, and so checked, after the subhost is stopped.
    base: ScratchBase,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let s = Subhost::new(tag, "");
        let share = TempDir::new();
        install_probe(&s.root());
        let marker = unique_name("m");
        // `; :` keeps the shell (whose $0 is the marker) from exec'ing sleep.
        let sleeper = spawn_group(&mut cmd("sh", ["-c", "sleep 60; :", &marker]));
        let lab = Lab {
            s,
            share,
            marker,
            sleeper,
            base: ScratchBase::new(),
        };
        lab.config("");
        lab
    }

    fn config(&self, extra: &str) {
        let text = format!(
            "LOWER={}\nSHARE=({}:/share)\n{extra}\n",
            self.base.path().display(),
            self.share.path().display()
        );
        std::fs::write(self.s.dir().join("config"), text).unwrap();
    }

    /// The routes, by id: the probe's arguments.
    fn routes(&self) -> Vec<(&'static str, String)> {
        let (maj, min) = host_disk();
        let rev: String = self.marker.chars().rev().collect();
        vec![
            (
                "core_pattern",
                "core-pattern /proc/sys/kernel/core_pattern".into(),
            ),
            ("core_pattern_umount", "proc-sys-umounted".into()),
            ("fresh_proc", "fresh-proc /tmp/escape-proc".into()),
            ("release_agent", "release-agent /tmp/escape-cgroup".into()),
            ("tracefs", "mount tracefs /tmp/escape-tracefs".into()),
            ("debugfs", "mount debugfs /tmp/escape-debugfs".into()),
            ("shocker", "shocker /share".into()),
            ("bpf", "bpf-map".into()),
            ("perf", "perf-system".into()),
            ("swapoff", "swapoff /etc/passwd".into()),
            ("sys_knob", format!("sys-knob {}", sys_knob())),
            ("kmsg", "mknod-open /dev/shtkmsg c 1 11".into()),
            ("disk", format!("mknod-open /dev/shtdisk b {maj} {min}")),
            // A node in the root, not in /dev: the device cgroup holds there too.
            ("root_node", "mknod-open /root/kmsg c 1 11".into()),
            // A VPN's tun device: only when declared.
            ("tun", "mknod-open /dev/shttun c 10 200".into()),
            ("chroot", "chroot-escape".into()),
            ("procs", format!("procs {rev}")),
            ("clock", "settimeofday".into()),
            ("module", "finit-module".into()),
            ("keyctl", "keyctl".into()),
            ("userfaultfd", "userfaultfd".into()),
            ("x32", "x32-swapoff /etc/passwd".into()),
            ("int80", "int80-swapoff /etc/passwd".into()),
        ]
    }

    /// Runs every route inside, in one session; returns each id's result:
    /// the probe's verdict (`ok`, `errno NAME`, `root DEV INO`, …) or
    /// `killed N` when a signal ended it.
    fn probe(&self) -> HashMap<String, String> {
        self.checks("start", &self.routes())
    }

    /// Runs `checks` (id, probe arguments) with `probe each` in a session
    /// of its own (`verb` start) or entered into the running one (`enter`).
    fn checks<S: AsRef<str>>(&self, verb: &str, checks: &[(&str, S)]) -> HashMap<String, String> {
        let mut args = vec![verb, &self.s.name, "--", "/probe"];
        let each = probe_each_args(checks);
        args.extend(each.iter().map(String::as_str));
        let out = self.s.run(&args);
        assert_eq!(out.code(), 0, "{}", out.describe());
        let results = probe_results(&out.stdout_str());
        for (id, _) in checks {
            assert!(
                results.contains_key(*id),
                "no result for {id}: {}",
                out.describe()
            );
        }
        results
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Its own session: the group is the shell and its sleep.
        // SAFETY: kill with a negative pid signals that process group.
        unsafe { libc::kill(-(self.sleeper.id() as i32), libc::SIGKILL) };
        let _ = self.sleeper.wait();
    }
}

/// Major and minor of the block device holding the host's root.
fn host_disk() -> (u64, u64) {
    let dev = std::fs::metadata("/").unwrap().dev();
    (libc::major(dev) as u64, libc::minor(dev) as u64)
}

/// Whether the host has a cgroup v1 hierarchy with a controller (the
/// probe mounts only those).
fn host_has_v1_hierarchy() -> bool {
    std::fs::read_to_string("/proc/cgroups")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 4 && f[1] != "0" && f[3] == "1"
        })
}

/// A global sysfs knob whose value can be written back as read.
fn sys_knob() -> &'static str {
    [
        "/sys/kernel/mm/ksm/run",
        "/sys/module/printk/parameters/time",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("no writable global sysfs knob on this host")
}

fn expect(results: &HashMap<String, String>, want: &[(&str, &str)]) {
    let wrong: Vec<String> = want
        .iter()
        .filter(|(id, v)| results.get(*id).map(String::as_str) != Some(v))
        .map(|(id, v)| format!("{id}: want {v:?}, got {:?}", results.get(*id)))
        .collect();
    assert!(wrong.is_empty(), "{}\nall: {results:#?}", wrong.join("\n"));
}

/// The host's view of `/`: device and inode, as the chroot probe prints.
fn host_root() -> String {
    let m = std::fs::metadata("/").unwrap();
    format!("root {} {}", m.dev(), m.ino())
}

#[test]
fn a_default_subhost_refuses_every_route() {
    let lab = Lab::new("esc");
    let r = lab.probe();
    expect(
        &r,
        &[
            ("core_pattern", "errno EROFS"),
            ("core_pattern_umount", "errno EPERM"),
            ("fresh_proc", "errno EPERM"),
            ("release_agent", "errno EPERM"),
            ("tracefs", "errno EPERM"),
            ("debugfs", "errno EPERM"),
            ("shocker", "errno EPERM"),
            ("bpf", "errno EPERM"),
            ("perf", "errno EPERM"),
            ("swapoff", "errno EPERM"),
            ("sys_knob", "errno EPERM"),
            // Any node may be made (MKNOD, as in Docker); the device
            // cgroup lets none but the harmless ones open.
            ("kmsg", "open errno EPERM"),
            ("disk", "open errno EPERM"),
            ("root_node", "open errno EPERM"),
            ("tun", "open errno EPERM"),
            ("procs", "none"),
            ("clock", "errno EPERM"),
            ("module", "errno EPERM"),
            ("keyctl", "errno EPERM"),
            ("userfaultfd", "errno EPERM"),
            ("x32", "errno EPERM"),
            // A 32-bit call meets the same list, by its i386 number.
            ("int80", "errno EPERM"),
        ],
    );
    assert!(r["chroot"].starts_with("root "), "{r:#?}");
    assert_ne!(
        r["chroot"],
        host_root(),
        "the chroot escape reached the host's /"
    );

    // What no config lifts is shown to work on the host with the same
    // probe...
    // ...the chroot escape works from a plain chroot...
    let jail = TempDir::new();
    let out = run_timeout(
        &mut cmd(
            probe_bin(),
            ["chroot-escape", &jail.path().to_string_lossy()],
        ),
        LAUNCH_LIMIT,
    );
    assert_eq!(
        out.stdout_str().trim(),
        format!("chroot-escape: {}", host_root()),
        "{}",
        out.describe()
    );
    let _ = std::fs::remove_dir(jail.path().join(".probe-chroot"));
    // ...and the marker process is there to be seen.
    let rev: String = lab.marker.chars().rev().collect();
    let out = run_timeout(&mut cmd(probe_bin(), ["procs", &rev]), LAUNCH_LIMIT);
    assert_eq!(
        out.stdout_str().trim(),
        "procs: found",
        "{}",
        out.describe()
    );
}

#[test]
fn proc_and_sys_are_read_only_and_masked_but_the_netns_sysctls_work() {
    let lab = Lab::new("esp");
    let r = lab.checks(
        "start",
        &[
            (
                "fwd_write",
                "write /proc/sys/net/ipv4/ip_forward 1".to_string(),
            ),
            ("fwd", "read /proc/sys/net/ipv4/ip_forward".into()),
            ("timer_list", "bytes /proc/timer_list".into()),
            ("firmware", "ls /sys/firmware".into()),
            ("kernel", "write-back /proc/sys/kernel/hostname".into()),
            ("sys", format!("write-back {}", sys_knob())),
        ],
    );
    expect(
        &r,
        &[
            ("fwd_write", "ok"),
            ("fwd", "1"),
            ("timer_list", "0"),
            ("firmware", ""),
            ("kernel", "errno EROFS"),
            ("sys", "errno EROFS"),
        ],
    );
    // The host's own are not masked: the masks are the subhost's.
    assert!(!std::fs::read_to_string("/proc/timer_list")
        .unwrap()
        .is_empty());
    assert!(std::fs::read_dir("/sys/firmware").unwrap().count() > 0);
}

#[test]
fn sys_admin_kept_reopens_the_mount_routes_and_the_filter_still_holds() {
    let lab = Lab::new("esa");
    lab.config(WIDE_CAPS);
    let r = lab.probe();
    expect(
        &r,
        &[
            // The read-only /proc/sys is only a mount: root with SYS_ADMIN
            // removes it, or mounts a procfs of its own.
            ("core_pattern_umount", "ok"),
            ("fresh_proc", "ok"),
            ("tracefs", "ok"),
            ("debugfs", "ok"),
            ("sys_knob", "ok"),
            // Whatever the capabilities, the device cgroup holds.
            ("kmsg", "open errno EPERM"),
            ("root_node", "open errno EPERM"),
            ("disk", "open errno EPERM"),
            // The filter alone keeps these shut, whatever the capabilities.
            ("shocker", "errno EPERM"),
            ("bpf", "errno EPERM"),
            ("perf", "errno EPERM"),
            ("swapoff", "errno EPERM"),
            ("clock", "errno EPERM"),
            ("module", "errno EPERM"),
            ("keyctl", "errno EPERM"),
            ("userfaultfd", "errno EPERM"),
            ("x32", "errno EPERM"),
            ("int80", "errno EPERM"),
        ],
    );
    // A cgroup namespace may mount only hierarchies that exist: on a host
    // with none of cgroup v1 the route is shut even with SYS_ADMIN.
    if host_has_v1_hierarchy() {
        assert_eq!(r["release_agent"], "ok", "{r:#?}");
    } else {
        eprintln!("no cgroup v1 hierarchy on this host: release_agent stays shut");
        assert_ne!(r["release_agent"], "ok", "{r:#?}");
    }
    // The node in the root is a real device: the host opens it.
    let kmsg = lab.s.root().join("root/kmsg");
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&kmsg)
        .unwrap_or_else(|e| panic!("the host cannot open {}: {e}", kmsg.display()));
    // status says so.
    let out = lab.s.run(&["status", &lab.s.name]);
    let text = out.stdout_str();
    assert!(
        text.contains("warning:  CAP_SYS_ADMIN is kept")
            && text.contains("warning:  CAP_BPF is kept"),
        "{}",
        out.describe()
    );
    let out = lab.s.run(&["list", "--json"]);
    let text = out.stdout_str();
    assert!(text.contains("\"CAP_SYS_ADMIN\""), "{text}");
    assert!(text.contains("CAP_DAC_READ_SEARCH is kept"), "{text}");
}

/// The host's device node of the disk holding `/` (mountinfo's source).
fn host_disk_node() -> Option<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .and_then(|l| l.split(" - ").nth(1))
        .and_then(|r| r.split(' ').nth(1))
        .filter(|d| d.starts_with("/dev/") && Path::new(d).exists())
        .map(str::to_string)
}

#[test]
fn declaring_a_device_lifts_the_device_cgroup_for_it_alone() {
    let lab = Lab::new("esd");
    let disk = host_disk_node().expect("the host's / is on a device node");
    lab.config(&format!("DEVICES=({disk}:rw /dev/net/tun)"));
    let r = lab.probe();
    // The disk's node opens where the host itself may open its disk (some
    // VMs' own device filters forbid even that).
    let (maj, min) = host_disk();
    let own = lab.share.path().join("disk");
    let _ = run_timeout(
        &mut cmd(
            "mknod",
            [
                &own.to_string_lossy(),
                "b",
                &maj.to_string(),
                &min.to_string(),
            ],
        ),
        LAUNCH_LIMIT,
    );
    let host_can = std::fs::File::open(&own).is_ok();
    let want = if host_can { "ok" } else { "open errno EPERM" };
    assert_eq!(r["disk"], want, "host opens its disk: {host_can}");
    assert_eq!(r["tun"], "ok", "{r:#?}");
    // The rest stays shut.
    expect(
        &r,
        &[
            ("kmsg", "open errno EPERM"),
            ("root_node", "open errno EPERM"),
        ],
    );
    // status warns for the disk, not for tun.
    let out = lab.s.run(&["status", &lab.s.name]);
    let text = out.stdout_str();
    assert!(
        text.contains(&format!("warning:  DEVICES gives {disk} (a block device")),
        "{}",
        out.describe()
    );
    assert!(!text.contains("DEVICES gives /dev/net/tun"), "{text}");
}

#[test]
fn lifting_the_filter_reopens_the_syscall_routes() {
    let lab = Lab::new("esf");
    // Names lifted, default capabilities: the capability checks still hold
    // where there are any.
    lab.config(ALLOW_ALL);
    let r = lab.probe();
    expect(
        &r,
        &[
            ("shocker", "errno EPERM"),
            ("bpf", "errno EPERM"),
            // perf_event_paranoid without CAP_PERFMON.
            ("perf", "errno EACCES"),
            ("swapoff", "errno EPERM"),
            ("clock", "errno EPERM"),
            // No capability guards these: the filter was all there was.
            ("keyctl", "ok"),
            ("userfaultfd", "ok"),
        ],
    );
    // EPERM for want of CAP_SYS_MODULE; ENOSYS from a kernel without
    // module support.
    assert!(
        ["errno EPERM", "errno ENOSYS"].contains(&r["module"].as_str()),
        "{r:#?}"
    );
    // Names lifted and capabilities kept: every route goes through.
    lab.config(&format!("{WIDE_CAPS}\n{ALLOW_ALL}"));
    let r = lab.probe();
    expect(
        &r,
        &[
            ("shocker", "ok"),
            ("bpf", "ok"),
            ("perf", "ok"),
            ("swapoff", "errno EINVAL"),
            ("clock", "ok"),
            ("keyctl", "ok"),
            ("userfaultfd", "ok"),
            // A name is lifted for 32-bit calls too; x32 stays shut.
            ("x32", "errno EPERM"),
            ("int80", "errno EINVAL"),
        ],
    );
    // A kernel without module support says ENOSYS; either way the call
    // got past the permission checks.
    assert!(
        ["errno EBADF", "errno ENOSYS"].contains(&r["module"].as_str()),
        "{r:#?}"
    );
    // The filter off: the other ABIs reach the kernel.
    lab.config(&format!("{WIDE_CAPS}\nSECCOMP=off"));
    let r = lab.probe();
    expect(
        &r,
        &[("swapoff", "errno EINVAL"), ("int80", "errno EINVAL")],
    );
    // x32 reaches the kernel: EINVAL where it has the x32 ABI, else ENOSYS.
    assert!(
        ["errno EINVAL", "errno ENOSYS"].contains(&r["x32"].as_str()),
        "{r:#?}"
    );
}

/// The checks of an entered process: its profile, its init's, and a call
/// the filter denies.
const PROFILES: [(&str, &str); 3] = [
    ("entered", "profile self"),
    ("init", "profile 1"),
    ("keyctl", "keyctl"),
];

#[test]
fn enter_gets_exactly_the_inits_profile() {
    let mut lab = Lab::new("ese");
    lab.config(WIDE_CAPS);
    lab.s.start_background(&[], &["sleep", "60"]);
    let r = lab.checks("enter", &PROFILES);
    assert_eq!(r["entered"], r["init"], "entered vs init: {r:#?}");
    assert!(r["entered"].contains("Seccomp=2"), "{r:#?}");
    assert!(r["entered"].contains("NoNewPrivs=0"), "{r:#?}");
    // The wide set, not the host's full one.
    assert!(r["entered"].contains("CapBnd="), "{r:#?}");
    assert!(!r["entered"].contains("CapBnd=000001ffffffffff"), "{r:#?}");
    assert_eq!(r["keyctl"], "errno EPERM", "{r:#?}");
    let out = lab.s.run(&["status", "--json", &lab.s.name]);
    assert!(
        out.stdout_str().contains("\"seccomp\": true"),
        "{}",
        out.describe()
    );
    let out = lab.s.run(&["enter", "--dry-run", &lab.s.name]);
    assert!(
        out.stdout_str()
            .contains("installs the init's filter: seccomp"),
        "{}",
        out.describe()
    );
}

#[test]
fn enter_of_a_subhost_without_filter_gets_none() {
    let mut lab = Lab::new("esn");
    lab.config("SECCOMP=off");
    lab.s.start_background(&[], &["sleep", "60"]);
    let r = lab.checks("enter", &PROFILES);
    assert!(r["entered"].contains("Seccomp=0"), "{r:#?}");
    assert!(r["init"].contains("Seccomp=0"), "{r:#?}");
    assert_eq!(r["keyctl"], "ok", "{r:#?}");
    let out = lab.s.run(&["status", "--json", &lab.s.name]);
    assert!(
        out.stdout_str().contains("\"seccomp\": false"),
        "{}",
        out.describe()
    );
}

#[test]
fn a_foreground_start_hands_no_descriptor_to_the_subhost() {
    let lab = Lab::new("esd");
    let secret = TempDir::new();
    std::fs::write(secret.path().join("secret"), "host-secret\n").unwrap();
    // The shell opens the directory on fd 8 and shows it is open in the
    // very process that then becomes the launcher.
    let script = format!(
        "exec 8<'{}'; cat /proc/$$/fd/8/secret; exec '{}' start {} -- sh -c \
         'ls /proc/self/fd | tr \"\\n\" \" \"; echo; cat /proc/self/fd/8/secret'",
        secret.path().display(),
        launch_bin().display(),
        lab.s.name
    );
    let out = run_timeout(
        cmd("sh", ["-c", &script]).env("SUBHOST", lab.s.base()),
        LAUNCH_LIMIT,
    );
    let text = out.stdout_str();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("host-secret"),
        "fd 8 was not open: {}",
        out.describe()
    );
    let fds = lines.next().unwrap_or_default();
    // ls's own directory fd is 3.
    assert_eq!(fds.trim(), "0 1 2 3", "{}", out.describe());
    assert_eq!(lines.next(), None, "{}", out.describe());
    assert_ne!(out.code(), 0, "{}", out.describe());
}

#[test]
fn the_plan_shows_every_protection() {
    let lab = Lab::new("esp");
    let out = lab.s.run(&["start", "--dry-run", &lab.s.name]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let text = out.stdout_str();
    let live = lab.s.live();
    for want in [
        // The device policy, as v1 writes or a BPF program's rules.
        "c 1:3 rwm".to_string(),
        format!(
            "mount --bind {0}/proc/sys/net {0}/proc/sys/net",
            live.display()
        ),
        format!("mount -o remount,bind,ro {}/proc/sys", live.display()),
        format!("{}/proc/keys", live.display()),
        "seccomp (no no_new_privs): EPERM for init_module".to_string(),
        "EPERM for every x32 call".to_string(),
    ] {
        assert!(text.contains(&want), "{want}:\n{text}");
    }
    let drop = text
        .lines()
        .find(|l| l.starts_with("capsh --drop="))
        .unwrap_or("");
    for cap in ["cap_sys_admin", "cap_dac_read_search", "cap_sys_ptrace"] {
        assert!(drop.contains(cap), "{cap}: {drop}");
    }
    // MKNOD is kept, as in Docker: the device cgroup decides what opens.
    assert!(
        !drop.contains("cap_net_admin") && !drop.contains("cap_mknod"),
        "{drop}"
    );
    lab.config("SECCOMP=off");
    let out = lab.s.run(&["start", "--dry-run", &lab.s.name]);
    assert!(!out.stdout_str().contains("seccomp"), "{}", out.describe());
}

#[test]
fn bad_seccomp_settings_are_config_errors_before_anything_is_set_up() {
    let lab = Lab::new("esc");
    for (extra, line, needle) in [
        ("SECCOMP=maybe", 3, "neither on nor off"),
        (
            "SYSCALLS_ALLOW=(bpf nosuch)",
            3,
            "\"nosuch\" is not a system call the filter denies",
        ),
    ] {
        lab.config(extra);
        let out = lab.s.run(&["start", &lab.s.name, "--", "true"]);
        assert_eq!(out.code(), 125, "{}", out.describe());
        let err = out.stderr_str();
        let config = lab.s.dir().join("config");
        assert!(
            err.contains(&format!("{}:{line}:", config.display())) && err.contains(needle),
            "{err}"
        );
        assert!(!lab.s.live_mounted(), "{err}");
        assert!(!Path::new("/run/netns").join(&lab.s.name).exists(), "{err}");
    }
}

#[test]
fn a_userns_subhost_with_sys_admin_and_no_filter_refuses_every_route() {
    let lab = Lab::new("esu");
    // Without a user namespace, SYS_ADMIN and no filter open the mount
    // routes: what the user namespace alone has to hold.
    let lifted = "CAPS_KEEP=(SYS_ADMIN)\nSECCOMP=off";
    lab.config(lifted);
    let r = lab.probe();
    expect(
        &r,
        &[
            ("core_pattern_umount", "ok"),
            ("fresh_proc", "ok"),
            ("tracefs", "ok"),
            ("debugfs", "ok"),
            ("sys_knob", "ok"),
        ],
    );
    if host_has_v1_hierarchy() {
        assert_eq!(r["release_agent"], "ok", "{r:#?}");
    }
    assert_ok(&lab.s.stop());
    // Root inside holds every capability of its own user namespace, and
    // only the kernel's ownership checks stand in the way.
    lab.config(&format!("USERNS=pick\n{lifted}"));
    let r = lab.probe();
    let me = lab.checks("start", &[("me", "profile self")]);
    assert!(me["me"].contains("CapEff=000001ffffffffff"), "{me:#?}");
    // What any ordinary user of the host may do is no way out: these two
    // are judged against the same probe run on the host as nobody.
    let probe = TempDir::new();
    let copy = probe.path().join("probe");
    std::fs::copy(probe_bin(), &copy).unwrap();
    let as_nobody = |args: &[&str]| {
        let mut argv = vec!["--reuid=65534", "--regid=65534", "--clear-groups"];
        let copy = copy.to_string_lossy();
        argv.push(&copy);
        argv.extend_from_slice(args);
        let out = run_timeout(&mut cmd("setpriv", argv), LAUNCH_LIMIT);
        let text = out.stdout_str();
        text.trim()
            .split_once(": ")
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| panic!("{}", out.describe()))
    };
    let mut out_of_reach = Vec::new();
    for (id, args) in lab.routes() {
        let got = &r[id];
        let refused = match id {
            "procs" => got == "none",
            "chroot" => got.starts_with("root ") && *got != host_root(),
            "keyctl" | "userfaultfd" => {
                let args: Vec<&str> = args.split(' ').collect();
                *got == as_nobody(&args)
            }
            _ => !got.contains("ok") && (got.contains("errno") || got.starts_with("killed")),
        };
        if !refused {
            out_of_reach.push(format!("{id}: {got}"));
        }
    }
    assert!(
        out_of_reach.is_empty(),
        "routes that worked: {out_of_reach:?}\nall: {r:#?}"
    );
    assert_eq!(r.len(), 23, "{r:#?}");
}

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}
