//! The subhost's network: a named network namespace (`/run/netns/NAME`, as
//! `ip netns` makes it) and its veth cables, over netlink in-process.
//!
//! (Interface fixed; bodies are being written.)

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

/// One veth cable as planned: host end `host_if` (on `bridge` if any), inner
/// end `inner_if` inside the namespace, with `mac` on the inner end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub host_if: String,
    pub inner_if: String,
    pub bridge: Option<String>,
    pub mac: Option<[u8; 6]>,
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "veth {} <-> {}", self.host_if, self.inner_if)
    }
}

/// `/run/netns/NAME`
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Whether the named namespace exists (its bind mount is in place).
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Opens the named namespace for `setns`.
pub fn open(name: &str) -> std::io::Result<OwnedFd> {
    Ok(std::fs::File::open(path(name))?.into())
}

/// Creates namespace `name` with `links`, `lo` and every inner end up. All
/// or nothing: on error, what this call made is removed again.
pub fn create(name: &str, links: &[Link]) -> anyhow::Result<()> {
    let _ = (name, links);
    anyhow::bail!("netns::create: not yet implemented")
}

/// Deletes namespace `name` (the kernel removes its cables with it) and waits
/// up to `timeout` until no host-side link `NAME<digits>` is left. Returns
/// whether there was anything to delete. Idempotent.
pub fn delete(name: &str, timeout: Duration) -> anyhow::Result<bool> {
    let _ = (name, timeout);
    anyhow::bail!("netns::delete: not yet implemented")
}

/// Host-side links named `NAME<digits>` that exist now.
pub fn host_links(name: &str) -> Vec<String> {
    let _ = name;
    Vec::new()
}
