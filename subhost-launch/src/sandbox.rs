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
//! Everything the child does is planned first as a list of [`Setup`]s: plain
//! data that `--dry-run` prints and tests inspect; `run_step` is the thin
//! layer that turns each into syscalls.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use caps::Capability;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use crate::config::Config;
use crate::layout::Layout;
use crate::privileges;
use crate::seccomp::Filter;
use crate::userns::Range;

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
pub enum Setup {
    /// Forget the caller's audit login session: a subhost started from a
    /// login shell would otherwise carry its loginuid, which only
    /// CAP_AUDIT_CONTROL of the host may change, and `pam_loginuid` (sshd,
    /// cron) fails inside. Done as the host's root, so with USERNS before
    /// the user namespace is joined (see [`reset_loginuid`]).
    ResetLoginuid,
    /// Keep our mounts from propagating back to the host.
    PrivateMounts,
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
    /// The host's nodes that `DEVICES` gives, each bound on an empty file
    /// at its place (host path, subhost path). The device policy allows
    /// them.
    DevDeclared {
        nodes: Vec<(PathBuf, PathBuf)>,
    },
    /// With USERNS: the `DEVICES` nodes as the launcher made them for root
    /// of the range (`devnodes`), numbers `first..` of [`Userns::trees`],
    /// each attached on an empty file at its place (host path, subhost
    /// path).
    DevMade {
        first: usize,
        nodes: Vec<(PathBuf, PathBuf)>,
        range: Range,
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

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setup::ResetLoginuid => write!(
                f,
                "echo {LOGINUID_UNSET} > /proc/self/loginuid  # the caller's audit loginuid unset, \
                 as the host's root (no file: no audit)"
            ),
            Setup::PrivateMounts => write!(f, "mount --make-rprivate /"),
            Setup::Bind { source, target } => {
                write!(f, "mount --rbind {} {}", source.display(), target.display())
            }
            Setup::Mount {
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
            Setup::AttachTree {
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
            Setup::DevNodes { dev } => write!(
                f,
                "mknod {0}/{{null,zero,full,random,urandom,tty}}",
                dev.display()
            ),
            Setup::DevBinds { dev } => write!(
                f,
                "touch {0}/{{{1}}}; mount --bind /dev/X {0}/X  # for X in {1}",
                dev.display(),
                DEVICES.map(|d| d.0).join(",")
            ),
            Setup::DevDeclared { nodes } => {
                let binds: Vec<String> = nodes
                    .iter()
                    .map(|(h, t)| format!("mount --bind {} {}", h.display(), t.display()))
                    .collect();
                write!(f, "{}  # DEVICES, on empty files", binds.join("; "))
            }
            Setup::DevMade { nodes, range, .. } => {
                let made: Vec<String> = nodes
                    .iter()
                    .map(|(h, t)| {
                        format!(
                            "mknod --like {0} N; chown {1}:{1} N; mount --bind N {2}",
                            h.display(),
                            range.base,
                            t.display()
                        )
                    })
                    .collect();
                write!(
                    f,
                    "{}  # DEVICES: N on the launcher's own tmpfs, on empty files",
                    made.join("; ")
                )
            }
            Setup::DevLinks { dev } => write!(
                f,
                "ln -s {0}/{{ptmx,fd,stdin,stdout,stderr}}; mkdir -m 1777 {0}/shm",
                dev.display()
            ),
            Setup::ReadOnly(p) => write!(
                f,
                "mount --rbind {0} {0}; mount -o remount,bind,ro {0}",
                p.display()
            ),
            Setup::Writable(p) => write!(f, "mount --bind {0} {0}", p.display()),
            Setup::Mask { path, dev_null } => write!(
                f,
                "mount --bind {} {} (a directory: an empty read-only tmpfs; absent: skipped)",
                dev_null.display(),
                path.display()
            ),
            Setup::Seccomp(filter) => write!(f, "{filter}"),
            Setup::Hostname(h) => write!(f, "hostname {h}"),
            Setup::PivotRoot { live } => {
                write!(f, "pivot_root {} (old root detached)", live.display())
            }
            Setup::DropCaps { drop, lacking } => {
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
pub fn plan(layout: &Layout, cfg: &Config, userns: Option<Range>) -> Result<Vec<Setup>> {
    let live = layout.live();
    let under = |p: &Path| live.join(p.strip_prefix("/").unwrap_or(p));
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut steps = vec![Setup::ResetLoginuid, Setup::PrivateMounts];
    if userns.is_some() {
        // Mounts inherited from the host's namespace are locked in one
        // owned by a user namespace, and pivot_root refuses a locked new
        // root: a bind of it made here is not.
        steps.push(Setup::Bind {
            source: live.clone(),
            target: live.clone(),
        });
    }
    // No nodev on the root: the device cgroup decides which nodes open,
    // wherever they are, so `mknod /tmp/null c 1 3` works as in Docker.
    for (tree, share) in cfg.share.iter().enumerate() {
        steps.push(match userns {
            None => Setup::Bind {
                source: share.host.clone(),
                target: under(&share.inner),
            },
            Some(range) => Setup::AttachTree {
                tree,
                source: share.host.clone(),
                target: under(&share.inner),
                range,
            },
        });
    }
    let dev = live.join("dev");
    steps.extend([
        Setup::Mount {
            fstype: "proc",
            target: live.join("proc"),
            flags: hardened,
            data: None,
        },
        // sysfs of the subhost's netns; read-only as systemd-nspawn has it.
        Setup::Mount {
            fstype: "sysfs",
            target: live.join("sys"),
            flags: hardened | MsFlags::MS_RDONLY,
            data: None,
        },
    ]);
    let proc = live.join("proc");
    let sys = live.join("sys");
    steps.extend(PROC_WRITABLE.iter().map(|p| Setup::Writable(proc.join(p))));
    steps.extend(PROC_READ_ONLY.iter().map(|p| Setup::ReadOnly(proc.join(p))));
    if userns.is_some() {
        steps.extend(visible_instances(&dev, hardened));
    }
    steps.extend([
        Setup::Mount {
            fstype: "tmpfs",
            target: dev.clone(),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: Some("mode=755,size=4m".into()),
        },
        match userns {
            None => Setup::DevNodes { dev: dev.clone() },
            Some(_) => Setup::DevBinds { dev: dev.clone() },
        },
    ]);
    if !cfg.devices.is_empty() {
        let nodes = cfg
            .devices
            .iter()
            .map(|d| (d.path.clone(), dev.join(inside_dev(&d.path))))
            .collect();
        steps.push(match userns {
            None => Setup::DevDeclared { nodes },
            // After the SHAREs' copies in `Userns::trees`.
            Some(range) => Setup::DevMade {
                first: cfg.share.len(),
                nodes,
                range,
            },
        });
    }
    steps.extend([
        Setup::Mount {
            fstype: "devpts",
            target: dev.join("pts"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: Some("newinstance,ptmxmode=0666,mode=0620,gid=5".into()),
        },
        Setup::DevLinks { dev: dev.clone() },
        Setup::Mount {
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
    steps.extend(masked.map(|path| Setup::Mask {
        path,
        dev_null: dev_null.clone(),
    }));
    steps.push(Setup::Hostname(cfg.hostname.clone()));
    steps.push(Setup::PivotRoot { live });
    if let Some(filter) = Filter::wanted(cfg.seccomp, &cfg.syscalls_allow)? {
        steps.push(Setup::Seccomp(Box::new(filter)));
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
    steps.push(Setup::DropCaps { drop, lacking });
    Ok(steps)
}

/// With USERNS, a nested sandbox (bwrap, `unshare -U -r --mount-proc`,
/// rootless podman) makes a user namespace of its own, where the kernel
/// locks every mount it inherits, and then mounts proc or sysfs. The kernel
/// allows that only where an instance of the filesystem is already "fully
/// visible" in the mount namespace (fs/namespace.c, `mnt_already_visible`):
/// mounted at its root with no locked mount over anything but a
/// permanently empty directory. The masks and read-only islands make the
/// subhost's own /proc and /sys fail that. So a proc and a (read-only)
/// sysfs without masks are mounted in a vault, a tmpfs on `/dev` that the
/// real `/dev` then covers: nothing inside reaches them by a path, a nested
/// namespace cannot uncover them (its mounts are locked), and the kernel
/// counts them as visible. Root of the subhost's own user namespace could
/// uncover them, as it can unmount the masks themselves: in USERNS mode the
/// masks hide host information from the subhost's processes; they were
/// never a wall against its root, whose namespace owns those mounts.
fn visible_instances(dev: &Path, hardened: MsFlags) -> [Setup; 3] {
    [
        Setup::Mount {
            fstype: "tmpfs",
            target: dev.to_path_buf(),
            flags: hardened,
            data: Some("mode=700,size=16k".into()),
        },
        Setup::Mount {
            fstype: "proc",
            target: dev.join("proc"),
            flags: hardened,
            data: None,
        },
        Setup::Mount {
            fstype: "sysfs",
            target: dev.join("sys"),
            flags: hardened | MsFlags::MS_RDONLY,
            data: None,
        },
    ]
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
fn run_step(step: &Setup, trees: &[OwnedFd]) -> Result<()> {
    match step {
        Setup::PrivateMounts => mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .context("cannot make mounts private"),
        Setup::Bind { source, target } => {
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
        Setup::Mount {
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
        Setup::AttachTree {
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
        Setup::DevNodes { dev } => make_dev_nodes(dev),
        Setup::DevBinds { dev } => bind_dev_nodes(dev),
        Setup::DevLinks { dev } => make_dev_links(dev),
        Setup::DevDeclared { nodes } => nodes.iter().try_for_each(|(h, t)| bind_node(h, t)),
        Setup::DevMade { first, nodes, .. } => {
            for (i, (host, target)) in nodes.iter().enumerate() {
                let node = trees
                    .get(first + i)
                    .with_context(|| format!("the launcher made no node of {}", host.display()))?;
                empty_file(target)?;
                crate::mounts::idmap::attach(node, target)?;
            }
            Ok(())
        }
        Setup::ReadOnly(path) => read_only(path),
        Setup::Writable(path) => {
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
        Setup::Mask { path, dev_null } => mask(path, dev_null),
        Setup::Seccomp(filter) => filter.install(),
        Setup::Hostname(h) => nix::unistd::sethostname(h).context("cannot set the hostname"),
        Setup::PivotRoot { live } => pivot_into(live),
        Setup::ResetLoginuid => {
            reset_loginuid();
            Ok(())
        }
        Setup::DropCaps { drop, .. } => privileges::apply(drop),
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

/// Where a `DEVICES` node goes below the subhost's `/dev`: its place
/// there when it is the host's `/dev`, else its file name.
pub fn inside_dev(host: &Path) -> PathBuf {
    match host.strip_prefix("/dev") {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
        _ => host.file_name().map(PathBuf::from).unwrap_or_default(),
    }
}

/// An empty file to mount a node on, and its directories.
fn empty_file(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(())
}

/// A host node bound on an empty file made for it.
fn bind_node(host: &Path, path: &Path) -> Result<()> {
    empty_file(path)?;
    mount(
        Some(host),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("cannot bind {} on {}", host.display(), path.display()))
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

pub mod devnodes;
mod spawn;
pub use spawn::*;

#[cfg(test)]
mod tests;
