//! What a subhost's root may do: the capability bounding set it keeps.
//!
//! By default a subhost keeps the set Docker and Podman give a container,
//! plus the few capabilities whose every use stays inside the subhost's own
//! namespaces (its netns, its IPC namespace). Everything that reaches
//! host-wide state goes: SYS_ADMIN (mounts, which reopen /proc/sys, cgroup v1
//! release agents, …), DAC_READ_SEARCH (open_by_handle_at), SYS_MODULE,
//! SYS_RAWIO, SYS_TIME, BPF, PERFMON, SYS_PTRACE, … `CAPS_KEEP` adds back,
//! `CAPS_DROP` takes away. README's "Security model" argues each one.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use caps::{CapSet, Capability};

use crate::config::Config;

/// Docker's and Podman's default set, plus what is confined to the
/// subhost's own namespaces: NET_ADMIN and NET_BROADCAST act on its own
/// netns, IPC_OWNER on its own IPC namespace. MKNOD is safe behind the
/// subhost's device cgroup (`cgroup::devices`), as in Docker: a node of the
/// host's disk can be made but not opened.
pub const DEFAULT_KEEP: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETFCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_NET_RAW,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_AUDIT_WRITE,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_BROADCAST,
    Capability::CAP_IPC_OWNER,
    Capability::CAP_MKNOD,
];

/// Capabilities that let root inside reach the host when it has no user
/// namespace of its own, and why. `status` warns when one is kept.
pub const ESCAPES: &[(Capability, &str)] = &[
    (
        Capability::CAP_SYS_ADMIN,
        "mounts a fresh procfs (core_pattern) or a cgroup v1 release_agent",
    ),
    (
        Capability::CAP_DAC_READ_SEARCH,
        "open_by_handle_at opens any file of a shared filesystem",
    ),
    (Capability::CAP_SYS_MODULE, "loads kernel code"),
    (
        Capability::CAP_SYS_RAWIO,
        "reads and writes raw memory and I/O ports",
    ),
    (
        Capability::CAP_BPF,
        "loads BPF programs into the host kernel",
    ),
    (
        Capability::CAP_PERFMON,
        "observes every process on the host (system-wide perf events)",
    ),
    (
        Capability::CAP_SYS_PTRACE,
        "ptraces a process that `enter` is still setting up with the host's privileges",
    ),
    (
        Capability::CAP_SYS_BOOT,
        "kexec_load replaces the host's kernel",
    ),
    (Capability::CAP_MAC_ADMIN, "changes the host's LSM policy"),
    (
        Capability::CAP_SYSLOG,
        "reads the host's kernel log and addresses",
    ),
];

/// The capabilities a subhost under `cfg` loses from its bounding set:
/// everything the kernel knows that is not kept.
/// Ordered by number, for stable output.
pub fn dropped(cfg: &Config) -> Result<Vec<Capability>> {
    let mut keep: HashSet<Capability> = DEFAULT_KEEP.iter().copied().collect();
    for name in &cfg.caps_keep {
        keep.insert(parse(name)?);
    }
    for name in &cfg.caps_drop {
        keep.remove(&parse(name)?);
    }
    Ok(known().into_iter().filter(|c| !keep.contains(c)).collect())
}

/// The capabilities a subhost with a user namespace (USERNS) loses: only
/// CAPS_DROP. Its root holds the capabilities of its own user namespace,
/// which reach nothing the namespace does not own; the host's resources
/// (clock, modules, raw I/O, other namespaces) check the host's.
pub fn dropped_in_userns(cfg: &Config) -> Result<Vec<Capability>> {
    let mut drop: Vec<Capability> = cfg
        .caps_drop
        .iter()
        .map(|n| parse(n))
        .collect::<Result<_>>()?;
    drop.sort_by_key(|c| c.index());
    drop.dedup();
    Ok(drop)
}

/// The capabilities a subhost under `cfg` keeps in its bounding set,
/// ordered by number: of its user namespace with USERNS.
pub fn kept(cfg: &Config) -> Result<Vec<Capability>> {
    let drop = match cfg.userns {
        Some(_) => dropped_in_userns(cfg)?,
        None => dropped(cfg)?,
    };
    Ok(known().into_iter().filter(|c| !drop.contains(c)).collect())
}

/// Of `kept`, those that let root out without a user namespace, each with
/// a warning that says how.
pub fn warnings(kept: &[Capability]) -> Vec<String> {
    ESCAPES
        .iter()
        .filter(|(c, _)| kept.contains(c))
        .map(|(c, why)| format!("{c} is kept: root inside {why}, i.e. can become root on the host"))
        .collect()
}

/// Of `want`, those missing from `have`, in `want`'s order: what a
/// subhost should keep but does not (or cannot) get.
pub fn lacking(want: &[Capability], have: &HashSet<Capability>) -> Vec<Capability> {
    want.iter().filter(|c| !have.contains(c)).copied().collect()
}

/// The launcher's own capability bounding set, which the sandbox inherits
/// and can only shrink.
pub fn own_bounding_set() -> Result<HashSet<Capability>> {
    // Read once per process (a prctl per capability; a start asks twice):
    // the launcher never shrinks its own, only its sandbox's.
    static OWN: std::sync::OnceLock<HashSet<Capability>> = std::sync::OnceLock::new();
    if let Some(set) = OWN.get() {
        return Ok(set.clone());
    }
    let set =
        caps::read(None, CapSet::Bounding).context("cannot read the launcher's bounding set")?;
    Ok(OWN.get_or_init(|| set).clone())
}

fn names(caps: &[Capability]) -> String {
    caps.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The warning of a start whose subhost `name` cannot get `lacking`.
pub fn not_granted_at_start(name: &str, lacking: &[Capability]) -> String {
    format!(
        "subhost {name} runs without {}: the launcher's own capability bounding set lacks \
         them (it runs under `capsh --drop`, `setpriv --bounding-set` or a service's \
         CapabilityBoundingSet=), and a process can only shrink the set it inherits; \
         run subhost-launch with them to grant them",
        names(lacking)
    )
}

/// The warning of `status` for a running init that lacks `lacking`, which
/// its config keeps.
pub fn not_granted_to_init(lacking: &[Capability]) -> String {
    format!(
        "{} kept by the config but not granted: the init does not have them (the \
         launcher's bounding set lacked them at start, or the config changed since: \
         stop and start it to apply)",
        names(lacking)
    )
}

/// The capabilities both this kernel and this build know, ordered by
/// number: all a bounding set can hold that the launcher can name.
pub fn known() -> Vec<Capability> {
    let last = last_cap();
    let mut all: Vec<Capability> = caps::all()
        .into_iter()
        .filter(|c| c.index() <= last)
        .collect();
    all.sort_by_key(|c| c.index());
    all
}

/// The highest capability this kernel knows. One file read per process,
/// where probing each capability would take a syscall apiece (a start asks
/// five times).
fn last_cap() -> u8 {
    static LAST: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        crate::procfs::read(Path::new("/proc/sys/kernel/cap_last_cap"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(Capability::CAP_CHECKPOINT_RESTORE.index())
    })
}

fn parse(name: &str) -> Result<Capability> {
    name.parse()
        .map_err(|_| anyhow!("unknown capability {name}"))
}

/// Drops `caps` from the bounding set, and clears the inheritable and
/// ambient sets, so that nothing executed from here on can regain them.
/// Needs CAP_SETPCAP, which the launcher has as root.
pub fn apply(drop: &[Capability]) -> Result<()> {
    caps::clear(None, CapSet::Ambient).context("cannot clear the ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("cannot clear the inheritable capabilities")?;
    for cap in drop {
        caps::drop(None, CapSet::Bounding, *cap)
            .with_context(|| format!("cannot drop {cap} from the bounding set"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_drop_the_dangerous_ones_and_keep_the_useful_ones() {
        let cfg = Config::defaults("x");
        let d = dropped(&cfg).unwrap();
        for c in [
            Capability::CAP_SYS_MODULE,
            Capability::CAP_SYS_TIME,
            Capability::CAP_SYS_BOOT,
            Capability::CAP_SYS_RAWIO,
            Capability::CAP_MAC_ADMIN,
            Capability::CAP_BPF,
        ] {
            assert!(d.contains(&c), "{c} should be dropped");
        }
        for c in [
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_DAC_READ_SEARCH,
            Capability::CAP_SYS_PTRACE,
            Capability::CAP_PERFMON,
        ] {
            assert!(d.contains(&c), "{c} should be dropped");
        }
        for c in [
            Capability::CAP_NET_ADMIN,
            Capability::CAP_CHOWN,
            Capability::CAP_SETUID,
            Capability::CAP_SYS_CHROOT,
        ] {
            assert!(!d.contains(&c), "{c} should be kept");
        }
        for (c, _) in ESCAPES {
            assert!(!DEFAULT_KEEP.contains(c), "{c} lets root out");
        }
    }

    #[test]
    fn what_the_launcher_lacks_is_not_granted_and_named() {
        let mut cfg = Config::defaults("x");
        cfg.caps_keep = vec!["CAP_SYS_RESOURCE".into()];
        let want = kept(&cfg).unwrap();
        let mut have: HashSet<Capability> = caps::all();
        have.remove(&Capability::CAP_SYS_RESOURCE);
        have.remove(&Capability::CAP_SYS_MODULE);
        // SYS_MODULE is dropped anyway: only what the subhost keeps counts.
        assert_eq!(lacking(&want, &have), [Capability::CAP_SYS_RESOURCE]);
        assert!(lacking(&want, &caps::all()).is_empty());
        let text = not_granted_at_start("web", &[Capability::CAP_SYS_RESOURCE]);
        assert!(
            text.starts_with("subhost web runs without CAP_SYS_RESOURCE"),
            "{text}"
        );
        assert!(text.contains("bounding set lacks"), "{text}");
        let text = not_granted_to_init(&[Capability::CAP_SYS_RESOURCE]);
        assert!(text.starts_with("CAP_SYS_RESOURCE kept by the config but not granted"));
    }

    #[test]
    fn keep_and_drop_adjust_the_defaults() {
        let mut cfg = Config::defaults("x");
        cfg.caps_keep = vec!["CAP_SYS_TIME".into()];
        cfg.caps_drop = vec!["CAP_NET_RAW".into()];
        let d = dropped(&cfg).unwrap();
        assert!(!d.contains(&Capability::CAP_SYS_TIME));
        assert!(d.contains(&Capability::CAP_NET_RAW));
    }
}
