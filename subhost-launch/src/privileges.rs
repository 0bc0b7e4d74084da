//! What a subhost's root may do: the capability bounding set it keeps.
//!
//! By default a subhost keeps what systemd-nspawn keeps for a container with
//! a private network (so it can configure its own links), minus SYS_BOOT:
//! root inside can mount, chown, bind low ports and manage its interfaces,
//! but cannot load kernel modules, set the clock, reboot the host, or touch
//! raw I/O. `CAPS_KEEP` adds back, `CAPS_DROP` takes away.

use std::collections::HashSet;

use anyhow::{anyhow, Context, Result};
use caps::{CapSet, Capability};

use crate::config::Config;

/// systemd-nspawn's default set plus NET_ADMIN (nspawn adds it with a
/// private network), without SYS_BOOT.
pub const DEFAULT_KEEP: &[Capability] = &[
    Capability::CAP_AUDIT_CONTROL,
    Capability::CAP_AUDIT_WRITE,
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_IPC_OWNER,
    Capability::CAP_KILL,
    Capability::CAP_LEASE,
    Capability::CAP_LINUX_IMMUTABLE,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_NET_BROADCAST,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETUID,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_SYS_NICE,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_SYS_RESOURCE,
    Capability::CAP_SYS_TTY_CONFIG,
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
    let last = last_cap();
    let mut drop: Vec<Capability> = caps::all()
        .into_iter()
        .filter(|c| c.index() <= last && !keep.contains(c))
        .collect();
    drop.sort_by_key(|c| c.index());
    Ok(drop)
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

/// The highest capability this kernel knows. One file read, where probing
/// each capability would take a syscall apiece.
fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(Capability::CAP_CHECKPOINT_RESTORE.index())
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
            Capability::CAP_NET_ADMIN,
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_CHOWN,
        ] {
            assert!(!d.contains(&c), "{c} should be kept");
        }
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
