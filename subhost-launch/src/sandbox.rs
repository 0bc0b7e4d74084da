//! The subhost's own process: forked into new PID, mount, UTS and IPC
//! namespaces, joined to the subhost's netns, given its filesystems (with
//! the host-wide parts of /proc and /sys read-only or masked), pivoted into
//! `live`, put under the seccomp filter and the capability bounding set, and
//! replaced by `subhost-init` as PID 1, with no descriptor of its caller.
//!
//! With USERNS the child is root of the subhost's user namespace (the one
//! that owns its netns), and every namespace it makes is owned by that:
//! the SHAREs come as idmapped copies the launcher made, `/dev` binds the
//! host's devices, and the bounding set keeps all but CAPS_DROP.
//!
//! Everything the child does is planned first as a list of [`Step`]s: plain
//! data that `--dry-run` prints and tests inspect; `run_step` is the thin
//! layer that turns each into syscalls.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use caps::Capability;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{fork, ForkResult, Pid};

use crate::cgroup::Cgroup;
use crate::config::Config;
use crate::layout::Layout;
use crate::seccomp::Filter;
use crate::userns::Range;
use crate::{privileges, tty};

/// Read-only in the subhost: the OCI runtime defaults. `/proc/sys` holds
/// host-wide knobs (`kernel.core_pattern` runs a program as host root);
/// `/proc/sys/net` is the subhost's own netns and stays writable.
const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "bus", "fs", "irq"];
const PROC_WRITABLE: &[&str] = &["sys/net"];

/// Hidden in the subhost: the OCI defaults plus Docker's additions; what
/// they show is the host's (kernel memory, keys, timers, interrupts,
/// firmware, power capping).
const PROC_MASKED: &[&str] = &[
    "acpi",
    "asound",
    "interrupts",
    "kcore",
    "keys",
    "latency_stats",
    "sched_debug",
    "scsi",
    "timer_list",
    "timer_stats",
];
const SYS_MASKED: &[&str] = &["firmware", "devices/virtual/powercap"];

/// What the child does inside its new namespaces, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Forget the caller's audit login session: a subhost started from a
    /// login shell would otherwise carry its loginuid, which only
    /// CAP_AUDIT_CONTROL of the host may change, and `pam_loginuid` (sshd,
    /// cron) fails inside. Done as the host's root, so with USERNS before
    /// the user namespace is joined (see [`reset_loginuid`]).
    ResetLoginuid,
    /// Keep our mounts from propagating back to the host.
    PrivateMounts,
    /// The root (its own mount only, not the SHAREs) gets nodev: device
    /// nodes work only in the subhost's own `/dev`, so one left in a root
    /// or a lower layer cannot open a host disk.
    NoDevRoot(PathBuf),
    Bind {
        source: PathBuf,
        target: PathBuf,
    },
    /// With USERNS: the launcher's idmapped copy (number `tree` of
    /// [`Userns::trees`]) of `source`, attached on `target`.
    AttachTree {
        tree: usize,
        source: PathBuf,
        target: PathBuf,
        range: Range,
    },
    Mount {
        fstype: &'static str,
        target: PathBuf,
        flags: MsFlags,
        data: Option<String>,
    },
    /// Character devices made in the fresh `/dev` tmpfs.
    DevNodes {
        dev: PathBuf,
    },
    /// With USERNS, where no device can be made: the host's, bound.
    DevBinds {
        dev: PathBuf,
    },
    /// `/dev/ptmx`, `/dev/fd`, `/dev/std*`, `/dev/shm`.
    DevLinks {
        dev: PathBuf,
    },
    /// A recursive self bind made read-only (its nosuid, nodev, noexec
    /// kept); skipped when the path does not exist on this kernel.
    ReadOnly(PathBuf),
    /// A plain self bind: a writable island that a later `ReadOnly` of a
    /// parent carries along (`/proc/sys/net`, the subhost's own netns).
    Writable(PathBuf),
    /// Hidden: a file gets `/dev/null` bound over it, a directory an empty
    /// read-only tmpfs; skipped when the path does not exist.
    Mask {
        path: PathBuf,
        dev_null: PathBuf,
    },
    Hostname(String),
    /// `pivot_root` into `live`, then detach the old root so the subhost
    /// keeps no copy of host mounts (e.g. `/run/netns/*` binds, which would
    /// make `ip netns del` fail with EBUSY).
    PivotRoot {
        live: PathBuf,
    },
    /// The seccomp filter, installed while CAP_SYS_ADMIN is still held
    /// (so without no_new_privs).
    Seccomp(Box<Filter>),
    /// Shrink the bounding set, last, so no step before is refused.
    /// `lacking`: what the subhost should keep but cannot get, because
    /// the launcher's own bounding set (which the child inherits) lacks
    /// it; said as a warning.
    DropCaps {
        drop: Vec<Capability>,
        lacking: Vec<Capability>,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::ResetLoginuid => write!(
                f,
                "echo {LOGINUID_UNSET} > /proc/self/loginuid  # the caller's audit loginuid unset, \
                 as the host's root (no file: no audit)"
            ),
            Step::PrivateMounts => write!(f, "mount --make-rprivate /"),
            Step::NoDevRoot(p) => write!(f, "mount -o remount,bind,nodev {}", p.display()),
            Step::Bind { source, target } => {
                write!(f, "mount --rbind {} {}", source.display(), target.display())
            }
            Step::Mount {
                fstype,
                target,
                data,
                flags,
            } => {
                write!(f, "mount -t {fstype}")?;
                let mut opts: Vec<String> = Vec::new();
                for (flag, word) in [
                    (MsFlags::MS_RDONLY, "ro"),
                    (MsFlags::MS_NOSUID, "nosuid"),
                    (MsFlags::MS_NODEV, "nodev"),
                    (MsFlags::MS_NOEXEC, "noexec"),
                ] {
                    if flags.contains(flag) {
                        opts.push(word.into());
                    }
                }
                opts.extend(data.iter().cloned());
                if !opts.is_empty() {
                    write!(f, " -o {}", opts.join(","))?;
                }
                write!(f, " {fstype} {}", target.display())
            }
            Step::AttachTree {
                source,
                target,
                range,
                ..
            } => write!(
                f,
                "mount --rbind -o X-mount.idmap=0:{}:{} {} {}  # idmapped by the launcher",
                range.base,
                range.count,
                source.display(),
                target.display()
            ),
            Step::DevNodes { dev } => write!(
                f,
                "mknod {0}/{{null,zero,full,random,urandom,tty}}",
                dev.display()
            ),
            Step::DevBinds { dev } => write!(
                f,
                "touch {0}/{{{1}}}; mount --bind /dev/X {0}/X  # for X in {1}",
                dev.display(),
                DEVICES.map(|d| d.0).join(",")
            ),
            Step::DevLinks { dev } => write!(
                f,
                "ln -s {0}/{{ptmx,fd,stdin,stdout,stderr}}; mkdir -m 1777 {0}/shm",
                dev.display()
            ),
            Step::ReadOnly(p) => write!(
                f,
                "mount --rbind {0} {0}; mount -o remount,bind,ro {0}",
                p.display()
            ),
            Step::Writable(p) => write!(f, "mount --bind {0} {0}", p.display()),
            Step::Mask { path, dev_null } => write!(
                f,
                "mount --bind {} {} (a directory: an empty read-only tmpfs; absent: skipped)",
                dev_null.display(),
                path.display()
            ),
            Step::Seccomp(filter) => write!(f, "{filter}"),
            Step::Hostname(h) => write!(f, "hostname {h}"),
            Step::PivotRoot { live } => {
                write!(f, "pivot_root {} (old root detached)", live.display())
            }
            Step::DropCaps { drop, lacking } => {
                let names = |caps: &[Capability]| {
                    caps.iter()
                        .map(|c| c.to_string().to_lowercase())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                write!(f, "capsh --drop={}", names(drop))?;
                if !lacking.is_empty() {
                    write!(
                        f,
                        "  # not granted: {} (the launcher's bounding set lacks them)",
                        names(lacking)
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// The character devices of `/dev`: name, major, minor.
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The child's steps for `layout` under `cfg`. Paths are on the host side,
/// under `live`, since the pivot comes last. `userns` is the range of the
/// user namespace the child runs in (USERNS).
pub fn plan(layout: &Layout, cfg: &Config, userns: Option<Range>) -> Result<Vec<Step>> {
    let live = layout.live();
    let under = |p: &Path| live.join(p.strip_prefix("/").unwrap_or(p));
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut steps = vec![Step::ResetLoginuid, Step::PrivateMounts];
    if userns.is_some() {
        // Mounts inherited from the host's namespace are locked in one
        // owned by a user namespace, and pivot_root refuses a locked new
        // root: a bind of it made here is not.
        steps.push(Step::Bind {
            source: live.clone(),
            target: live.clone(),
        });
    }
    steps.push(Step::NoDevRoot(live.clone()));
    for (tree, share) in cfg.share.iter().enumerate() {
        steps.push(match userns {
            None => Step::Bind {
                source: share.host.clone(),
                target: under(&share.inner),
            },
            Some(range) => Step::AttachTree {
                tree,
                source: share.host.clone(),
                target: under(&share.inner),
                range,
            },
        });
    }
    let dev = live.join("dev");
    steps.extend([
        Step::Mount {
            fstype: "proc",
            target: live.join("proc"),
            flags: hardened,
            data: None,
        },
        // sysfs of the subhost's netns; read-only as systemd-nspawn has it.
        Step::Mount {
            fstype: "sysfs",
            target: live.join("sys"),
            flags: hardened | MsFlags::MS_RDONLY,
            data: None,
        },
    ]);
    let proc = live.join("proc");
    let sys = live.join("sys");
    steps.extend(PROC_WRITABLE.iter().map(|p| Step::Writable(proc.join(p))));
    steps.extend(PROC_READ_ONLY.iter().map(|p| Step::ReadOnly(proc.join(p))));
    steps.extend([
        Step::Mount {
            fstype: "tmpfs",
            target: dev.clone(),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: Some("mode=755,size=4m".into()),
        },
        match userns {
            None => Step::DevNodes { dev: dev.clone() },
            Some(_) => Step::DevBinds { dev: dev.clone() },
        },
        Step::Mount {
            fstype: "devpts",
            target: dev.join("pts"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: Some("newinstance,ptmxmode=0666,mode=0620,gid=5".into()),
        },
        Step::DevLinks { dev: dev.clone() },
        Step::Mount {
            fstype: "tmpfs",
            target: live.join("run"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=755".into()),
        },
    ]);
    let dev_null = dev.join("null");
    let masked = PROC_MASKED
        .iter()
        .map(|p| proc.join(p))
        .chain(SYS_MASKED.iter().map(|p| sys.join(p)));
    steps.extend(masked.map(|path| Step::Mask {
        path,
        dev_null: dev_null.clone(),
    }));
    steps.push(Step::Hostname(cfg.hostname.clone()));
    steps.push(Step::PivotRoot { live });
    if let Some(filter) = Filter::wanted(cfg.seccomp, &cfg.syscalls_allow)? {
        steps.push(Step::Seccomp(Box::new(filter)));
    }
    let (drop, lacking) = match userns {
        None => (
            privileges::dropped(cfg)?,
            privileges::lacking(&privileges::kept(cfg)?, &privileges::own_bounding_set()?),
        ),
        // Joining the user namespace gives the child a full bounding set
        // of it, whatever the launcher's.
        Some(_) => (privileges::dropped_in_userns(cfg)?, Vec::new()),
    };
    steps.push(Step::DropCaps { drop, lacking });
    Ok(steps)
}

fn ensure_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("cannot create mount point {}", p.display()))
}

/// A bind target must be of the same kind as its source.
fn ensure_target_like(source: &Path, target: &Path) -> Result<()> {
    let meta = std::fs::metadata(source)
        .with_context(|| format!("SHARE source {} does not exist", source.display()))?;
    if meta.is_dir() {
        return ensure_dir(target);
    }
    if let Some(parent) = target.parent() {
        ensure_dir(parent)?;
    }
    if !target.exists() {
        File::create(target)
            .with_context(|| format!("cannot create mount point {}", target.display()))?;
    }
    Ok(())
}

/// Performs one step in the child; `trees` are the idmapped copies the
/// launcher made for it.
fn run_step(step: &Step, trees: &[OwnedFd]) -> Result<()> {
    match step {
        Step::PrivateMounts => mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .context("cannot make mounts private"),
        Step::Bind { source, target } => {
            ensure_target_like(source, target)?;
            mount(
                Some(source.as_path()),
                target.as_path(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| format!("cannot bind {} on {}", source.display(), target.display()))
        }
        Step::Mount {
            fstype,
            target,
            flags,
            data,
        } => {
            ensure_dir(target)?;
            mount(
                Some(*fstype),
                target.as_path(),
                Some(*fstype),
                *flags,
                data.as_deref(),
            )
            .with_context(|| format!("cannot mount {fstype} on {}", target.display()))
        }
        Step::AttachTree {
            tree,
            source,
            target,
            ..
        } => {
            ensure_target_like(source, target)?;
            let tree = trees
                .get(*tree)
                .context("the launcher passed no idmapped copy for this SHARE")?;
            crate::mounts::idmap::attach(tree, target)
        }
        Step::DevNodes { dev } => make_dev_nodes(dev),
        Step::DevBinds { dev } => bind_dev_nodes(dev),
        Step::DevLinks { dev } => make_dev_links(dev),
        Step::NoDevRoot(path) => {
            let flags =
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NODEV | kept_flags(path)?;
            mount(
                None::<&str>,
                path.as_path(),
                None::<&str>,
                flags,
                None::<&str>,
            )
            .with_context(|| format!("cannot remount {} nodev", path.display()))
        }
        Step::ReadOnly(path) => read_only(path),
        Step::Writable(path) => {
            if !path.exists() {
                return Ok(());
            }
            mount(
                Some(path.as_path()),
                path.as_path(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("cannot bind {} on itself", path.display()))
        }
        Step::Mask { path, dev_null } => mask(path, dev_null),
        Step::Seccomp(filter) => filter.install(),
        Step::Hostname(h) => nix::unistd::sethostname(h).context("cannot set the hostname"),
        Step::PivotRoot { live } => pivot_into(live),
        Step::ResetLoginuid => {
            reset_loginuid();
            Ok(())
        }
        Step::DropCaps { drop, .. } => privileges::apply(drop),
    }
}

/// What `/proc/self/loginuid` holds when no login session is recorded.
const LOGINUID_UNSET: &str = "4294967295";

/// Unsets the audit loginuid this process inherited from its caller, as
/// systemd-nspawn does: a service inside that starts sessions of its own
/// (sshd, cron through `pam_loginuid`) must be free to set it. Changing a
/// set loginuid takes CAP_AUDIT_CONTROL of the host: a root of a user
/// namespace gets EPERM, so this runs before one is joined. A kernel
/// without audit has no such file. Never fatal: a subhost that cannot
/// have it reset still runs, and the warning says what will fail in it.
pub fn reset_loginuid() {
    let path = "/proc/self/loginuid";
    let current = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            log::warn!("cannot read {path}: {e}; the caller's audit loginuid may stay set");
            return;
        }
    };
    if current.trim() == LOGINUID_UNSET {
        return;
    }
    // One write(2) of the whole value: the kernel takes it only so.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(LOGINUID_UNSET.as_bytes()));
    if let Err(e) = written {
        let why = if e.raw_os_error() == Some(libc::EPERM) {
            " (changing a set loginuid takes CAP_AUDIT_CONTROL, which the launcher lacks, \
             or the host made it immutable with `auditctl --loginuid-immutable`)"
        } else {
            ""
        };
        log::warn!(
            "cannot unset the audit loginuid {} inherited from the caller: {e}{why}; \
             pam_loginuid inside (sshd, cron) will fail: start the subhost from outside a \
             login session, e.g. a system service",
            current.trim()
        );
    }
}

/// The flags a read-only remount must repeat so as not to lose them.
fn kept_flags(path: &Path) -> Result<MsFlags> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let st = statvfs(path).with_context(|| format!("cannot statvfs {}", path.display()))?;
    let mut flags = MsFlags::empty();
    for (from, to) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if st.flags().contains(from) {
            flags |= to;
        }
    }
    Ok(flags)
}

fn read_only(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("cannot bind {} on itself", path.display()))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept_flags(path)?;
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .with_context(|| format!("cannot make {} read-only", path.display()))
}

fn mask(path: &Path, dev_null: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    };
    let r = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=0,mode=555"),
        )
    } else {
        // dev_null is the node this plan made in the fresh /dev tmpfs,
        // which nothing inside could have replaced yet.
        mount(
            Some(dev_null),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    r.with_context(|| format!("cannot mask {}", path.display()))
}

fn make_dev_nodes(dev: &Path) -> Result<()> {
    let mode = Mode::from_bits_truncate(0o666);
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        mknod(&path, SFlag::S_IFCHR, mode, makedev(major, minor))
            .with_context(|| format!("cannot create {}", path.display()))?;
        // mknod honours the umask; devices must be usable by everyone.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &path,
            mode,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    }
    Ok(())
}

/// Each device of the host bound on an empty file of the same name.
fn bind_dev_nodes(dev: &Path) -> Result<()> {
    for (name, _, _) in DEVICES {
        let (host, path) = (Path::new("/dev").join(name), dev.join(name));
        File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        mount(
            Some(host.as_path()),
            path.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("cannot bind {} on {}", host.display(), path.display()))?;
    }
    Ok(())
}

fn make_dev_links(dev: &Path) -> Result<()> {
    for (name, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(name);
        std::os::unix::fs::symlink(to, &path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).with_context(|| format!("cannot create {}", shm.display()))?;
    std::fs::set_permissions(&shm, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .with_context(|| format!("cannot chmod {}", shm.display()))?;
    Ok(())
}

/// `pivot_root(".", ".")` stacks the old root on top of the new one; the
/// lazy unmount then drops it without needing a directory for it.
fn pivot_into(live: &Path) -> Result<()> {
    nix::unistd::chdir(live).with_context(|| format!("cannot enter {}", live.display()))?;
    nix::unistd::pivot_root(".", ".")
        .with_context(|| format!("cannot pivot_root into {}", live.display()))?;
    umount2(".", MntFlags::MNT_DETACH).context("cannot detach the old root")?;
    nix::unistd::chdir("/").context("cannot chdir to the new root")?;
    Ok(())
}

/// What the launcher hands the child.
pub struct Spawn<'a> {
    pub steps: &'a [Step],
    /// The subhost's netns, joined first so that sysfs shows its links.
    pub netns: OwnedFd,
    /// `subhost-init`, opened on the host: nothing needs to be installed
    /// inside the subhost.
    pub init: OwnedFd,
    /// Full argv for the init, argv[0] included.
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// Give the session its own pty: some standard stream of the caller is
    /// a terminal, which must not enter the subhost.
    pub pty: bool,
    /// The pty echoes input: off when the caller's input is not a terminal,
    /// so piped input is not shown back as output.
    pub echo: bool,
    /// Live dir: where the new devpts instance is found before the pivot.
    pub live: PathBuf,
    /// Set for a subhost that runs without its launcher; `None` for one
    /// that lives and dies with it.
    pub detached: Option<Detached>,
    /// Joined first, so that init and everything below it are in it.
    pub cgroup: Option<&'a Cgroup>,
    /// With USERNS: the user namespace the sandbox runs in.
    pub userns: Option<Userns>,
}

/// What a sandbox in a user namespace gets from the launcher.
pub struct Userns {
    /// The subhost's user namespace: the one that owns its netns.
    pub user: OwnedFd,
    /// Idmapped copies of the SHAREs, in order, made by the launcher (only
    /// the host's root may idmap a mount).
    pub trees: Vec<OwnedFd>,
}

/// The std streams of a detached init. It also gets a session of its own
/// and no parent-death signal: it must outlive the launcher, and no signal
/// meant for the launcher's terminal or process group may reach it.
pub struct Detached {
    pub stdin: OwnedFd,
    /// Both stdout and stderr: the console.
    pub console: OwnedFd,
}

/// The running sandbox, seen from the launcher.
pub struct Child {
    pub pid: Pid,
    /// Master side of the session's pty, when it has one.
    pub master: Option<OwnedFd>,
}

/// A sandbox forked and setting itself up: its parent may do other work
/// (set up the next subhost) before [`Pending::finish`] waits for it.
pub struct Pending {
    pid: Pid,
    /// Reaches EOF when the init is exec'd; carries the child's error if
    /// setting up failed.
    err: OwnedFd,
    /// Where the session's pty master comes from, when it has one.
    pty_sock: Option<OwnedFd>,
}

impl Pending {
    /// Waits until the init is exec'd (or setting up failed: then the child
    /// is reaped and the child's own error returned).
    pub fn finish(self) -> Result<Child> {
        let mut msg = String::new();
        let _ = File::from(self.err).read_to_string(&mut msg);
        if !msg.is_empty() {
            let _ = nix::sys::wait::waitpid(self.pid, None);
            bail!("{msg}");
        }
        let master = match self.pty_sock {
            Some(parent) => {
                Some(tty::recv_fd(parent.as_fd()).context("cannot receive the session's pty")?)
            }
            None => None,
        };
        Ok(Child {
            pid: self.pid,
            master,
        })
    }
}

/// Forks the sandbox and returns at once; [`Pending::finish`] waits for
/// its init to run. The caller must have blocked the signals it will
/// supervise.
pub fn spawn_begin(s: Spawn<'_>) -> Result<Pending> {
    // Said here, by the launcher: a detached sandbox's stderr is its
    // console.
    for step in s.steps {
        if let Step::DropCaps { lacking, .. } = step {
            if !lacking.is_empty() {
                let name = s.live.parent().and_then(Path::file_name);
                let name = name.unwrap_or_default().to_string_lossy();
                log::warn!("{}", privileges::not_granted_at_start(&name, lacking));
            }
        }
    }
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let fd_pair = if s.pty {
        Some(
            nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .context("cannot create a socket pair")?,
        )
    } else {
        None
    };
    // Cloned straight into the cgroup v2 dir when there is one: joining
    // it by a write after the fact costs far more than the whole rest of
    // the start.
    let v2 = s.cgroup.and_then(|cg| cg.v2_dir());
    let v2_fd = match v2 {
        Some(dir) => {
            Some(File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?)
        }
        None => None,
    };
    // For the child to see whether the launcher died before its
    // parent-death signal was set: its parent is outside its PID namespace,
    // so getppid() says 0 either way.
    let launcher = match s.detached {
        Some(_) => None,
        None => Some(
            crate::state::PidFd::open(std::process::id() as i32)
                .context("cannot open a pidfd for the launcher")?,
        ),
    };
    let cgroup_fd = v2_fd.as_ref().map(|f| f.as_fd());
    // `joined`: the cgroups the child is in already, all of them when None.
    let (forked, joined) = match &s.userns {
        None => {
            let (forked, joined) = fork_into_pid_ns(cgroup_fd)?;
            (forked, Some(if joined { v2 } else { None }))
        }
        Some(u) => {
            let v2 = cgroup_fd.zip(v2);
            let reset = s.steps.contains(&Step::ResetLoginuid);
            (fork_into_userns(s.cgroup, v2, u.user.as_fd(), reset)?, None)
        }
    };

    match forked {
        ForkResult::Child => {
            drop(err_r);
            let sock = fd_pair.map(|(_, child)| child);
            let err = child_main(&s, sock, joined, launcher.as_ref()).unwrap_err();
            let mut w = File::from(err_w);
            let _ = write!(w, "{err:#}");
            // SAFETY: _exit skips atexit handlers and destructors that
            // belong to the parent's copy of the state.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            Ok(Pending {
                pid: child,
                err: err_r,
                pty_sock: fd_pair.map(|(parent, _child)| parent),
            })
        }
    }
}

/// Forks a child that is root of the user namespace `user` and PID 1 of a
/// new PID namespace owned by it (so that it may mount its /proc): a first
/// child, cloned into the cgroup like `fork_into_pid_ns` does, joins the
/// user namespace, unshares the PID namespace and clones the init as the
/// launcher's own child (CLONE_PARENT), reports its PID and exits. A new
/// user namespace of the clone would not do: the subhost's one must be the
/// one that owns its netns, which outlives every process (hibernation).
fn fork_into_userns(
    cgroup: Option<&Cgroup>,
    v2: Option<(BorrowedFd<'_>, &Path)>,
    user: BorrowedFd<'_>,
    reset_loginuid_first: bool,
) -> Result<ForkResult> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let (forked, joined) = clone_into_cgroup(0, v2.map(|(fd, _)| fd))?;
    let ForkResult::Parent { child: first } = forked else {
        drop(r);
        // Every cgroup is joined while still root of the host: v1
        // hierarchies (limits on hybrid hosts) are not delegated.
        let joined = if joined { v2.map(|(_, p)| p) } else { None };
        if let Some(cg) = cgroup {
            if let Err(e) = cg.join_self_except(joined) {
                let v = -e.raw_os_error().unwrap_or(libc::EIO);
                // SAFETY: writes 4 bytes from a local to our pipe, then
                // leaves without running the launcher's destructors.
                unsafe {
                    libc::write(w.as_raw_fd(), (&v as *const i32).cast(), 4);
                    libc::_exit(0)
                }
            }
        }
        let report = |v: i32| {
            // SAFETY: writes 4 bytes from a local to our pipe.
            unsafe { libc::write(w.as_raw_fd(), (&v as *const i32).cast(), 4) };
        };
        if reset_loginuid_first {
            crate::logging::step(&Step::ResetLoginuid, reset_loginuid);
        }
        let init = crate::userns::become_root_of(user)
            .and_then(|()| {
                // SAFETY: unshare with a flag.
                match unsafe { libc::unshare(libc::CLONE_NEWPID) } {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            })
            .and_then(|()| {
                // SAFETY: a fork-like clone: no CLONE_VM, no stack; the
                // child returns 0 and goes on as the init.
                match unsafe {
                    libc::syscall(
                        libc::SYS_clone,
                        (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
                        0usize,
                        0usize,
                        0usize,
                        0usize,
                    )
                } {
                    -1 => Err(std::io::Error::last_os_error()),
                    pid => Ok(pid as i32),
                }
            });
        match init {
            Ok(0) => return Ok(ForkResult::Child),
            Ok(pid) => report(pid),
            Err(e) => report(-e.raw_os_error().unwrap_or(libc::EIO)),
        }
        // SAFETY: the first child's work is done; no destructors of the
        // launcher's state may run here.
        unsafe { libc::_exit(0) }
    };
    drop(w);
    let mut buf = [0u8; 4];
    let n = nix::unistd::read(&r, &mut buf).unwrap_or(0);
    let _ = nix::sys::wait::waitpid(first, None);
    let v = i32::from_ne_bytes(buf);
    if n != 4 || v == 0 {
        bail!("the sandbox's first process died before it cloned the init");
    }
    if v < 0 {
        return Err(std::io::Error::from_raw_os_error(-v)).context(
            "cannot join the subhost's user namespace as its root and make a PID namespace",
        );
    }
    Ok(ForkResult::Parent {
        child: Pid::from_raw(v),
    })
}

/// Forks a child that is PID 1 of a new PID namespace, in the cgroup v2
/// directory `cgroup` when given and the kernel can (clone3 with
/// CLONE_INTO_CGROUP, Linux 5.7); returns whether it went there. Older
/// kernels get unshare + fork, and the child joins by itself.
fn fork_into_pid_ns(cgroup: Option<BorrowedFd<'_>>) -> Result<(ForkResult, bool)> {
    clone_into_cgroup(libc::CLONE_NEWPID as u64, cgroup)
}

/// A fork-like clone3 with `flags`, into the cgroup v2 directory `cgroup`
/// when given and the kernel can; returns whether it went there.
fn clone_into_cgroup(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> Result<(ForkResult, bool)> {
    /// `struct clone_args` of Linux 5.7 (CLONE_ARGS_SIZE_VER2).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork:
    // the child gets a copy of this single-threaded process and returns 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        0 => Ok((ForkResult::Child, cgroup.is_some())),
        pid if pid > 0 => Ok((
            ForkResult::Parent {
                child: Pid::from_raw(pid as i32),
            },
            cgroup.is_some(),
        )),
        _ => {
            let err = std::io::Error::last_os_error();
            if !matches!(
                err.raw_os_error(),
                Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
            ) {
                return Err(err).context("cannot clone the sandbox");
            }
            // The next child forked becomes PID 1 of a new PID namespace;
            // the launcher itself stays where it is.
            if flags & libc::CLONE_NEWPID as u64 != 0 {
                unshare(CloneFlags::CLONE_NEWPID).context("cannot create a PID namespace")?;
            }
            // SAFETY: the launcher is single-threaded, so the child may
            // allocate and use any library code before it execs.
            Ok((unsafe { fork() }.context("cannot fork")?, false))
        }
    }
}

/// Only returns on failure.
/// `joined`: `Some(dir)` when in the cgroup v2 dir `dir` already (cloned
/// into it), `Some(None)` when in none, `None` when in all of them.
fn child_main(
    s: &Spawn<'_>,
    sock: Option<OwnedFd>,
    joined: Option<Option<&Path>>,
    launcher: Option<&crate::state::PidFd>,
) -> Result<std::convert::Infallible> {
    // First, while stderr is still the caller's (a detached init's is its
    // console), so a warning reaches whoever started it. With USERNS the
    // sandbox's first process did it, as the host's root.
    if s.userns.is_none() && s.steps.contains(&Step::ResetLoginuid) {
        crate::logging::step(&Step::ResetLoginuid, reset_loginuid);
    }
    match &s.detached {
        Some(d) => detach(d)?,
        None => {
            // Die with the launcher: a foreground subhost must not outlive it.
            // SAFETY: prctl with an integer argument.
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .context("cannot set the parent-death signal");
            }
            // A launcher killed between the clone and the prctl sent no
            // signal: then no session may start behind the caller's back.
            if launcher.is_some_and(|l| l.wait_exit(std::time::Duration::ZERO)) {
                bail!("the launcher is gone");
            }
        }
    }
    close_inherited_fds()?;
    if let (Some(cg), Some(joined)) = (s.cgroup, joined) {
        cg.join_self_except(joined)
            .context("cannot join the subhost's cgroup")?;
    }
    setns(&s.netns, CloneFlags::CLONE_NEWNET).context("cannot join the subhost's netns")?;
    // The cgroup namespace is made after joining, so that inside, the
    // subhost's cgroup is the root.
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .context("cannot create mount, UTS, IPC and cgroup namespaces")?;
    for step in s.steps {
        // The pty comes from the subhost's own devpts, so it has to be made
        // after devpts is mounted and before the pivot hides nothing of it.
        if matches!(step, Step::PivotRoot { .. }) {
            if let Some(sock) = &sock {
                let pty = tty::open_pty(&s.live.join("dev/pts/ptmx"))
                    .context("cannot open a pty for the session")?;
                tty::send_fd(sock.as_fd(), pty.master.as_fd())
                    .context("cannot pass the pty to the launcher")?;
                drop(pty.master);
                if !s.echo {
                    tty::echo_off(pty.slave.as_fd()).context("cannot turn off the pty's echo")?;
                }
                tty::make_controlling(pty.slave)
                    .context("cannot make the pty the session's terminal")?;
            }
        }
        // Done first, above.
        if matches!(step, Step::ResetLoginuid) {
            continue;
        }
        let trees = s.userns.as_ref().map_or(&[][..], |u| &u.trees[..]);
        crate::logging::step(step, || run_step(step, trees)).with_context(|| format!("{step}"))?;
    }
    drop(sock);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .context("cannot reset the signal mask")?;
    // Rust ignores SIGPIPE, and an ignored disposition survives exec.
    // SAFETY: restoring the default disposition installs no handler.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    }
    .context("cannot reset SIGPIPE")?;
    exec_fd(&s.init, &s.argv, &s.env)
}

/// A session of its own and the console on the std streams.
fn detach(d: &Detached) -> Result<()> {
    nix::unistd::setsid().context("cannot start a session for the init")?;
    install_stdio([
        d.stdin.as_raw_fd(),
        d.console.as_raw_fd(),
        d.console.as_raw_fd(),
    ])
}

/// Nothing but the std streams (and the pty, which becomes them) may reach
/// the init: any other fd the caller left open, e.g. a directory of the
/// host (`8</`), would be a way out of the new root, as runc's
/// CVE-2024-21626 was. Close-on-exec rather than closed: the netns, init
/// and error-pipe fds are still needed until the exec.
fn close_inherited_fds() -> Result<()> {
    // SAFETY: close_range with plain integers; it only sets flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot mark the launcher's fds close-on-exec");
    }
    Ok(())
}

/// Puts `fds` on 0, 1 and 2. Copies go above 2 first so that a source that
/// is itself 0, 1 or 2 is neither overwritten before use nor left with
/// close-on-exec set (dup2 onto itself changes nothing).
fn install_stdio(fds: [std::os::fd::RawFd; 3]) -> Result<()> {
    let mut high = Vec::with_capacity(3);
    for fd in fds {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an fd we own; returns a new fd.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if copy < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot copy a console fd");
        }
        high.push(copy);
    }
    for (target, fd) in high.into_iter().enumerate() {
        // SAFETY: dup2 onto 0..=2, which the init is meant to own; the copy
        // is close-on-exec and not used again.
        if unsafe { libc::dup2(fd, target as i32) } < 0 {
            return Err(std::io::Error::last_os_error())
                .context("cannot put the console on the init's std streams");
        }
    }
    Ok(())
}

fn exec_fd(fd: &OwnedFd, argv: &[CString], env: &[CString]) -> Result<std::convert::Infallible> {
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());
    // The raw syscall: musl's libc binding has no execveat.
    // SAFETY: argv and env are NULL-terminated arrays of pointers into
    // CStrings that outlive the call; the path is the empty C string.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv_p.as_ptr(),
            env_p.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    let err = std::io::Error::last_os_error();
    let hint = if err.raw_os_error() == Some(libc::ENOENT) {
        " (a dynamically linked subhost-init cannot run in a root without its \
         libraries: install the static build from musl-build)"
    } else {
        ""
    };
    Err(err).with_context(|| format!("cannot execute subhost-init{hint}"))
}

/// Opens the init binary that `start` will run: `SUBHOST_INIT`, else
/// `subhost-init` next to this launcher.
pub fn open_init() -> Result<(PathBuf, OwnedFd)> {
    let path = match std::env::var_os("SUBHOST_INIT") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => std::env::current_exe()
            .context("cannot find the launcher's own path")?
            .with_file_name("subhost-init"),
    };
    let file = File::open(&path).with_context(|| {
        format!(
            "cannot open {} (install subhost-init next to subhost-launch, or set SUBHOST_INIT)",
            path.display()
        )
    })?;
    Ok((path, file.into()))
}

/// The environment a session starts with: fixed and small, as a login on a
/// fresh machine would have, plus the caller's TERM so the terminal works.
pub fn session_env() -> Vec<CString> {
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "HOME=/root".to_string(),
        "USER=root".to_string(),
        "LOGNAME=root".to_string(),
        "container=subhost".to_string(),
    ];
    for key in ["TERM", "LANG"] {
        if let Some(v) = std::env::var_os(key) {
            env.push(format!("{key}={}", v.to_string_lossy()));
        }
    }
    env.into_iter()
        .filter_map(|e| CString::new(e).ok())
        .collect()
}

/// argv for `subhost-init` running `session`.
pub fn init_argv(grace: u32, session: &[String]) -> Result<Vec<CString>> {
    let mut argv = vec![
        "subhost-init".to_string(),
        "--grace".to_string(),
        grace.to_string(),
        "--".to_string(),
    ];
    argv.extend(session.iter().cloned());
    argv.into_iter()
        .map(|a| CString::new(a.as_bytes()).context("an argument contains a NUL byte"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Share;

    #[test]
    fn plan_order_and_shares() {
        let layout = Layout::new(Path::new("/opt/subhost"), "future").unwrap();
        let mut cfg = Config::defaults("future");
        cfg.share.push(Share {
            host: "/srv/data".into(),
            inner: "/data".into(),
        });
        let steps = plan(&layout, &cfg, None).unwrap();
        assert_eq!(steps.first(), Some(&Step::ResetLoginuid));
        assert_eq!(steps[1], Step::PrivateMounts);
        assert_eq!(steps[2], Step::NoDevRoot("/opt/subhost/future/live".into()));
        assert_eq!(
            steps[3],
            Step::Bind {
                source: "/srv/data".into(),
                target: "/opt/subhost/future/live/data".into()
            }
        );
        let n = steps.len();
        assert!(matches!(steps[n - 3], Step::PivotRoot { .. }));
        assert!(matches!(steps[n - 2], Step::Seccomp(_)));
        assert!(matches!(steps.last(), Some(Step::DropCaps { .. })));
        let text: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        assert!(text.contains(&"hostname future".to_string()), "{text:?}");
        assert!(
            text[0].starts_with("echo 4294967295 > /proc/self/loginuid"),
            "{text:?}"
        );
        assert!(text
            .iter()
            .any(|t| t.starts_with("mount -t devpts -o nosuid,noexec,newinstance")));
        // The pty's devpts must be mounted before the pivot (n - 3, asserted
        // above).
        let pts = text.iter().position(|t| t.contains("devpts")).unwrap();
        assert!(pts < n - 3);
        let pos = |want: &Step| steps.iter().position(|s| s == want).unwrap();
        let live = Path::new("/opt/subhost/future/live");
        let proc_mount = text
            .iter()
            .position(|t| t.starts_with("mount -t proc"))
            .unwrap();
        let net = pos(&Step::Writable(live.join("proc/sys/net")));
        let sys = pos(&Step::ReadOnly(live.join("proc/sys")));
        // The writable island must exist before its parent's rbind copies it.
        assert!(proc_mount < net && net < sys, "{text:#?}");
        let null = text.iter().position(|t| t.starts_with("mknod")).unwrap();
        let kcore = pos(&Step::Mask {
            path: live.join("proc/kcore"),
            dev_null: live.join("dev/null"),
        });
        assert!(null < kcore && kcore < n - 3, "{text:#?}");
        assert!(steps.contains(&Step::Mask {
            path: live.join("sys/firmware"),
            dev_null: live.join("dev/null"),
        }));
    }

    #[test]
    fn seccomp_off_leaves_the_filter_out_of_the_plan() {
        let layout = Layout::new(Path::new("/opt/subhost"), "future").unwrap();
        let mut cfg = Config::defaults("future");
        cfg.seccomp = false;
        let steps = plan(&layout, &cfg, None).unwrap();
        assert!(!steps.iter().any(|s| matches!(s, Step::Seccomp(_))));
        assert!(matches!(steps[steps.len() - 2], Step::PivotRoot { .. }));
    }

    #[test]
    fn plan_in_a_user_namespace() {
        let layout = Layout::new(Path::new("/opt/subhost"), "future").unwrap();
        let mut cfg = Config::defaults("future");
        cfg.share.push(Share {
            host: "/srv/data".into(),
            inner: "/data".into(),
        });
        cfg.caps_drop.push("CAP_NET_RAW".into());
        let range = Range {
            base: 524288,
            count: 65536,
        };
        let steps = plan(&layout, &cfg, Some(range)).unwrap();
        let live = PathBuf::from("/opt/subhost/future/live");
        // The loginuid goes first: the first process does it as the
        // host's root, before it joins the user namespace.
        assert_eq!(steps[0], Step::ResetLoginuid);
        // live bound on itself first: pivot_root refuses a locked mount.
        assert_eq!(
            steps[2],
            Step::Bind {
                source: live.clone(),
                target: live.clone()
            }
        );
        assert_eq!(steps[3], Step::NoDevRoot(live.clone()));
        assert_eq!(
            steps[4],
            Step::AttachTree {
                tree: 0,
                source: "/srv/data".into(),
                target: live.join("data"),
                range
            }
        );
        assert!(steps.contains(&Step::DevBinds {
            dev: live.join("dev")
        }));
        assert!(!steps.iter().any(|s| matches!(s, Step::DevNodes { .. })));
        assert_eq!(
            steps.last(),
            Some(&Step::DropCaps {
                drop: vec![Capability::CAP_NET_RAW],
                lacking: Vec::new()
            })
        );
        let text: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        assert!(
            text[4].contains("X-mount.idmap=0:524288:65536 /srv/data"),
            "{text:?}"
        );
        // The filter still applies.
        assert!(steps.iter().any(|s| matches!(s, Step::Seccomp(_))));
    }

    #[test]
    fn caps_the_launcher_lacks_show_in_the_plan() {
        let step = Step::DropCaps {
            drop: vec![Capability::CAP_SYS_MODULE],
            lacking: vec![Capability::CAP_SYS_RESOURCE],
        };
        assert_eq!(
            step.to_string(),
            "capsh --drop=cap_sys_module  # not granted: cap_sys_resource \
             (the launcher's bounding set lacks them)"
        );
    }

    #[test]
    fn reset_loginuid_unsets_it_and_tolerates_an_unset_one() {
        let _one = crate::tty::test_support::serial();
        let path = Path::new("/proc/self/loginuid");
        if !path.exists() {
            return; // a kernel without audit: nothing to reset
        }
        let mut child = crate::tty::test_support::fork_with(|| {
            // This forked test process only, never the test runner.
            if std::fs::write("/proc/self/loginuid", "1000").is_err() {
                return 2;
            }
            reset_loginuid();
            let once = std::fs::read_to_string("/proc/self/loginuid").unwrap_or_default();
            reset_loginuid();
            let twice = std::fs::read_to_string("/proc/self/loginuid").unwrap_or_default();
            if once == LOGINUID_UNSET && twice == LOGINUID_UNSET {
                0
            } else {
                3
            }
        });
        assert_eq!(child.code(crate::tty::test_support::LIMIT), 0);
    }

    #[test]
    fn init_argv_puts_session_after_double_dash() {
        let argv = init_argv(7, &["/bin/sh".into(), "-c".into(), "--x".into()]).unwrap();
        let argv: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            argv,
            ["subhost-init", "--grace", "7", "--", "/bin/sh", "-c", "--x"]
        );
    }
}
