//! The subhost's network: a named network namespace (`/run/netns/NAME`, as
//! `ip netns` makes it) and its veth cables, over netlink in-process.
//!
//! Netlink goes through `netlink-packet-route` messages on a blocking
//! `netlink-sys` socket: one request, then read until its ACK. No runtime,
//! no helper program.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use netlink::{del_link, get_link, link_message, new_veth, set_up, Netlink};

mod address;
mod netlink;

pub use address::{read as read_addresses, Address, Addressing};
pub(crate) use netlink::ext_ack_message;
#[cfg(test)]
mod tests;

pub const NETNS_RUN_DIR: &str = "/run/netns";
/// Longest interface name the kernel takes (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;
/// How long a failed `create` waits for the kernel to drop the cables it made,
/// so that "nothing is left" holds when it returns.
const ROLLBACK_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(2);
/// How long a start waits for the host ends of a deleted netns's cables to
/// go (the kernel takes milliseconds, tens of them under load) before it
/// names them.
const HOST_END_WAIT: Duration = Duration::from_secs(1);

/// One veth cable as planned: host end `host_if` (on `bridge` if any), inner
/// end `inner_if` inside the namespace, with `mac` on the inner end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub host_if: String,
    pub inner_if: String,
    pub bridge: Option<String>,
    pub mac: Option<[u8; 6]>,
}

/// The `ip link add` command this cable replaces. A `Link` does not know its
/// namespace, so the `netns NAME` clause is left out here; [`plan`] renders
/// the complete sequence.
impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_link_add(f, self, None)
    }
}

fn write_link_add(f: &mut fmt::Formatter<'_>, link: &Link, ns: Option<&str>) -> fmt::Result {
    write!(f, "ip link add {}", link.host_if)?;
    if let Some(br) = &link.bridge {
        write!(f, " master {br}")?;
    }
    write!(f, " up type veth peer name {}", link.inner_if)?;
    if let Some(ns) = ns {
        write!(f, " netns {ns}")?;
    }
    if let Some(mac) = &link.mac {
        write!(f, " address {}", mac_string(mac))?;
    }
    Ok(())
}

/// A cable's `ip link add` with its namespace, as one step of [`Plan`].
struct LinkAddIn<'a>(&'a Link, &'a str);

impl fmt::Display for LinkAddIn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_link_add(f, self.0, Some(self.1))
    }
}

impl Link {
    /// Cable `i` of subhost `name`: `NAMEi` on the host, `ethi` inside, on
    /// `bridge` (or unattached), with `mac` on the inner end when set.
    pub fn cable(name: &str, i: usize, bridge: Option<String>, mac: Option<[u8; 6]>) -> Link {
        Link {
            host_if: format!("{name}{i}"),
            inner_if: format!("eth{i}"),
            bridge,
            mac,
        }
    }
}

/// A MAC address as `ip link` writes it: `02:00:00:00:01:01`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What [`create`] does, as the `ip` commands it replaces, one per line.
pub struct Plan<'a> {
    name: &'a str,
    links: &'a [Link],
    /// `(BASE, COUNT)` of the user namespace that makes the netns.
    owner: Option<(u32, u32)>,
    /// Cables of the existing netns a wake plugs back in.
    plugs: Vec<Plug>,
    addressing: Option<&'a Addressing>,
}

/// The plan of `create(name, links)`, for `--dry-run`.
pub fn plan<'a>(name: &'a str, links: &'a [Link]) -> Plan<'a> {
    Plan {
        name,
        links,
        owner: None,
        plugs: Vec::new(),
        addressing: None,
    }
}

impl<'a> Plan<'a> {
    /// The plan of `create_from` with a netns made inside a user namespace
    /// mapping 0 to host id `base`, `count` ids.
    pub fn owned_by(mut self, base: u32, count: u32) -> Self {
        self.owner = Some((base, count));
        self
    }

    /// With the addresses and routes set once the links are up.
    pub fn addressed(mut self, addressing: &'a Addressing) -> Self {
        self.addressing = Some(addressing);
        self
    }

    /// With the cables of an existing netns that a wake plugs back in.
    pub fn replugging(mut self, plugs: Vec<Plug>) -> Self {
        self.plugs = plugs;
        self
    }
}

impl fmt::Display for Plan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.owner {
            None => writeln!(f, "ip netns add {}", self.name)?,
            // Made by a helper process in the user namespace after its maps
            // are written, so the user namespace owns it, and lives on in
            // it; its bind mount names it.
            Some((base, count)) => {
                writeln!(
                    f,
                    "# the netns is made in the subhost's user namespace \
                     (unshare --user --map-users=0:{base}:{count} --map-groups=0:{base}:{count} --net)"
                )?;
                writeln!(f, "{}", NameOwned(self.name))?
            }
        }
        for link in self.links {
            write_link_add(f, link, Some(self.name))?;
            writeln!(f)?;
        }
        write!(f, "ip -n {} link set lo up", self.name)?;
        for link in self.links {
            write!(f, "\nip -n {} link set {} up", self.name, link.inner_if)?;
        }
        for step in self
            .addressing
            .map(|a| a.steps(self.name))
            .unwrap_or_default()
        {
            write!(f, "\n{step}")?;
        }
        for plug in &self.plugs {
            write!(f, "\n{plug}   # out of its bridge: plugged back in")?;
        }
        Ok(())
    }
}

/// How a netns made in a subhost's user namespace is named, as the plan
/// prints it and -v logs it.
struct NameOwned<'a>(&'a str);

impl fmt::Display for NameOwned<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "touch {0} && mount --bind /proc/HELPER/ns/net {0}",
            path(self.0).display()
        )
    }
}

/// `/run/netns/NAME`
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_RUN_DIR).join(name)
}

/// Whether the named namespace exists (a netns is mounted on its file).
pub fn exists(name: &str) -> bool {
    entry(name) == Entry::Netns
}

/// What `/run/netns/NAME` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Absent,
    /// A network namespace is mounted on it.
    Netns,
    /// An empty regular file with nothing mounted on it: what a start
    /// interrupted between creating the file and mounting the netns on it
    /// leaves. The only thing besides a netns that `delete` removes.
    Empty,
    /// Anything else (the text says what): not made by the launcher, so
    /// not its to remove.
    Other(&'static str),
}

/// What `/run/netns/NAME` is now. A mount point is told by its device,
/// which differs from its directory's; a netns by its filesystem, nsfs.
pub fn entry(name: &str) -> Entry {
    use std::os::unix::fs::MetadataExt;
    entry_in(name, || {
        Path::new(NETNS_RUN_DIR).metadata().map(|m| m.dev()).ok()
    })
    .0
}

/// [`entry`], with the device of the netns directory told by `dir_dev`
/// (read once for many names); also hands back the entry's own metadata,
/// whose device and inode name the netns when one is mounted there.
pub fn entry_in(
    name: &str,
    dir_dev: impl FnOnce() -> Option<u64>,
) -> (Entry, Option<std::fs::Metadata>) {
    use std::os::unix::fs::MetadataExt;
    let file = path(name);
    let meta = match file.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Entry::Absent, None),
        Err(_) => return (Entry::Other("an entry that cannot be examined"), None),
    };
    if dir_dev() != Some(meta.dev()) && !meta.file_type().is_symlink() {
        let nsfs = nix::sys::statfs::statfs(&file)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
        return match nsfs {
            true => (Entry::Netns, Some(meta)),
            false => (Entry::Other("a mount of another filesystem"), Some(meta)),
        };
    }
    (entry_kind(&meta), Some(meta))
}

fn entry_kind(meta: &std::fs::Metadata) -> Entry {
    let kind = meta.file_type();
    if kind.is_file() && meta.len() == 0 {
        Entry::Empty
    } else if kind.is_file() {
        Entry::Other("a non-empty file")
    } else if kind.is_dir() {
        Entry::Other("a directory")
    } else if kind.is_symlink() {
        Entry::Other("a symbolic link")
    } else {
        Entry::Other("a special file")
    }
}

/// What is wrong with `/run/netns/NAME` when it is there but no netns:
/// what `status` reports and `start` refuses.
pub fn stray(name: &str) -> Option<String> {
    stray_text(name, entry(name))
}

/// [`stray`] of an entry looked at already.
pub fn stray_text(name: &str, entry: Entry) -> Option<String> {
    let file = path(name);
    match entry {
        Entry::Absent | Entry::Netns => None,
        Entry::Empty => Some(format!(
            "{} is not a network namespace (an empty file left by an interrupted start); \
             `subhost-launch stop {name}` removes it",
            file.display()
        )),
        Entry::Other(what) => Some(format!(
            "{} is not a network namespace but {what}, which subhost-launch did not make \
             and does not remove: see what it is and move it away",
            file.display()
        )),
    }
}

/// Opens the named namespace for `setns`.
pub fn open(name: &str) -> std::io::Result<OwnedFd> {
    Ok(std::fs::File::open(path(name))?.into())
}

/// Creates namespace `name` with `links`, `lo` and every inner end up. All
/// or nothing: on error, what this call made is removed again.
#[cfg_attr(not(test), allow(dead_code))] // start calls create_from
pub fn create(name: &str, links: &[Link]) -> anyhow::Result<()> {
    create_from(name, links, &Addressing::default(), None)
}

/// `create`, naming the netns `made` (e.g. made inside a subhost's user
/// namespace, which then owns it) instead of a new one of the launcher's.
/// The cables are still made from the host.
pub fn create_from(
    name: &str,
    links: &[Link],
    addressing: &Addressing,
    made: Option<OwnedFd>,
) -> anyhow::Result<()> {
    let origin = made.map_or(Origin::New, Origin::Made);
    let mut ns = make(name, links, origin)?;
    match ns.wire(links, addressing) {
        Ok(()) => Ok(()),
        Err(err) => Err(ns.rollback(err)),
    }
}

/// A netns made and named, its cables not yet: [`Made::wire`] makes them.
/// A start wires it while its sandbox sets itself up inside, which needs
/// the cables only once its init runs.
pub struct Made {
    name: String,
    file: PathBuf,
    inner: Netlink,
    host: Option<Netlink>,
    /// The bridge of each cable, by index.
    masters: Vec<Option<u32>>,
    nsfd: OwnedFd,
    /// Host ends made so far.
    cables: Vec<String>,
}

/// Where the netns that [`make`] names comes from.
pub enum Origin {
    /// Made by `make` itself.
    New,
    /// Made by another process, e.g. inside a subhost's user namespace,
    /// which then owns it.
    Made(OwnedFd),
    /// Being made on a thread of the launcher's.
    Unsharing(Unsharing),
}

/// A new netns being made on a thread of its own: the kernel takes most
/// of a millisecond for it, which a start spends mounting the subhost's
/// root meanwhile. [`make`] takes it; dropped, it is waited for (nothing
/// may fork while the thread runs).
pub struct Unsharing(Option<std::thread::JoinHandle<anyhow::Result<(OwnedFd, Netlink)>>>);

/// Starts making a netns on a thread of its own, with a netlink socket
/// inside.
pub fn unshare_begin() -> Unsharing {
    Unsharing(Some(std::thread::spawn(|| {
        // Only this thread enters it; it ends once the namespace is open.
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        let ns = File::open("/proc/thread-self/ns/net").context("opening the new netns")?;
        let sock = Netlink::open().context("opening a netlink socket in the new netns")?;
        Ok((ns.into(), sock))
    })))
}

impl Unsharing {
    fn join(mut self) -> anyhow::Result<(OwnedFd, Netlink)> {
        let thread = self.0.take().expect("joined once");
        thread
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the thread making the netns panicked")))
    }
}

impl Drop for Unsharing {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

/// The first half of [`create_from`]: checks the cables' names and
/// bridges, names a new netns (made here, or as `origin` says) and opens a
/// netlink socket inside. All or nothing.
pub fn make(name: &str, links: &[Link], origin: Origin) -> anyhow::Result<Made> {
    check_links(links)?;
    // Without cables nothing is asked of the host's netlink: no socket.
    let mut host = match links.is_empty() {
        true => None,
        false => Some(Netlink::open().context("opening a netlink socket in the host namespace")?),
    };
    let masters = links
        .iter()
        .enumerate()
        .map(|(i, link)| match &link.bridge {
            Some(br) => bridge_index(host.as_mut().expect("opened for cables"), br, i).map(Some),
            None => Ok(None),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(host) = host.as_mut() {
        free_host_names(name, links, host)?;
    }
    ensure_run_dir_shared()?;
    let file = path(name);
    create_mount_point(name, &file)?;
    let named = match origin {
        Origin::New => {
            crate::logging::step(format_args!("ip netns add {name}"), || new_netns(&file))
        }
        Origin::Made(ns) => crate::logging::step(NameOwned(name), || name_netns(ns, &file)),
        Origin::Unsharing(u) => crate::logging::step(format_args!("ip netns add {name}"), || {
            let (ns, sock) = u.join()?;
            bind_netns(&ns, &file)?;
            Ok((ns, sock))
        }),
    };
    let (nsfd, inner) = match named {
        Ok(named) => named,
        Err(err) => return Err(rollback(name, &file, Vec::new(), err)),
    };
    Ok(Made {
        name: name.to_string(),
        file,
        inner,
        host,
        masters,
        nsfd,
        cables: Vec::new(),
    })
}

impl Made {
    /// The cables of `links` (those [`make`] checked), `lo` and every inner
    /// end up, and the addresses and routes. On error what was made stays:
    /// [`Made::rollback`], or a `delete` of the netns, which finds
    /// half-made cables, removes it.
    pub fn wire(&mut self, links: &[Link], addressing: &Addressing) -> anyhow::Result<()> {
        let name = self.name.as_str();
        for (i, (link, master)) in links.iter().zip(&self.masters).enumerate() {
            let host = self.host.as_mut().expect("opened for cables");
            crate::logging::step(LinkAddIn(link, name), || {
                host.request(
                    new_veth(link, *master, &self.nsfd),
                    NLM_F_CREATE | NLM_F_EXCL,
                )
            })
            .map_err(|e| {
                anyhow!(
                    "cable {i}: creating veth {} <-> {} in netns {name}: {e}",
                    link.host_if,
                    link.inner_if
                )
            })?;
            self.cables.push(link.host_if.clone());
        }
        // The peer cannot be created up (ENOTCONN), so the inner ends are
        // raised from inside, on a socket bound to the new namespace.
        let inner_names = std::iter::once("lo").chain(links.iter().map(|l| l.inner_if.as_str()));
        for ifname in inner_names {
            crate::logging::step(format_args!("ip -n {name} link set {ifname} up"), || {
                self.inner.request(set_up(ifname), 0)
            })
            .map_err(|e| anyhow!("setting {ifname} up inside netns {name}: {e}"))?;
        }
        addressing.apply(name, &mut self.inner)
    }

    /// Removes the netns and waits for the cables made so far to go. Its
    /// caller first ends whatever else holds the namespace.
    pub fn rollback(self, err: anyhow::Error) -> anyhow::Error {
        let Made {
            name,
            file,
            cables,
            inner,
            nsfd,
            ..
        } = self;
        // Closed first: the fd and the socket inside would pin the netns,
        // and with it the cables.
        drop((inner, nsfd));
        rollback(&name, &file, cables, err)
    }
}

/// A cable of a netns that exists whose host end is not in its bridge (the
/// bridge was deleted, or made again, since), or is down: plugged back in
/// and set up by a start that reuses the netns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plug {
    pub cable: usize,
    pub host_if: String,
    pub bridge: String,
    /// The bridge the host end is in now, if any.
    pub master: Option<String>,
    pub up: bool,
}

/// The `ip` command a [`Plug`] replaces.
impl fmt::Display for Plug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ip link set {} master {} up", self.host_if, self.bridge)
    }
}

impl Plug {
    /// What is off, and how to fix it, as `status` of subhost `name`
    /// reports it.
    pub fn problem(&self, name: &str) -> String {
        let (host, br) = (&self.host_if, &self.bridge);
        let fix = format!("`{self}` (a `subhost-launch start {name}` that wakes it does too)");
        if !Path::new("/sys/class/net").join(br).exists() {
            return format!(
                "cable {host}: bridge {br} does not exist, so the cable is unplugged; make it \
                 (`ip link add {br} type bridge && ip link set {br} up`), then plug the cable \
                 back in: {fix}"
            );
        }
        if !is_bridge(br) {
            return format!(
                "cable {host}: {br} is not a bridge; name a bridge for this cable in the config"
            );
        }
        if self.master.as_deref() == Some(br.as_str()) {
            return format!("cable {host}: the host end is down; set it up: {fix}");
        }
        let now = match &self.master {
            Some(m) => format!("in {m}"),
            None => "in no bridge".to_string(),
        };
        format!("cable {host}: not in its bridge {br} ({now}); plug it back in: {fix}")
    }
}

fn is_bridge(ifname: &str) -> bool {
    Path::new("/sys/class/net")
        .join(ifname)
        .join("bridge")
        .is_dir()
}

/// The cables among `links` whose host end exists but is not up in its
/// configured bridge, as sysfs shows them now. Host ends that are missing
/// are not here: a wake cannot make them.
pub fn unplugged(links: &[Link]) -> Vec<Plug> {
    unplugged_with(links, |host_if| {
        let dir = Path::new("/sys/class/net").join(host_if);
        let flags = std::fs::read_to_string(dir.join("flags")).ok()?;
        Some((flags, master_of(host_if)))
    })
}

/// The bridge the host link `ifname` is enslaved to now, as sysfs shows.
pub fn master_of(ifname: &str) -> Option<String> {
    std::fs::read_link(Path::new("/sys/class/net").join(ifname).join("master"))
        .ok()
        .and_then(|p| p.file_name()?.to_str().map(str::to_string))
}

/// [`unplugged`], with each host end's sysfs `flags` text and master told
/// by `look` (`None`: the link is not there), for a caller that read them
/// already.
pub fn unplugged_with(
    links: &[Link],
    look: impl Fn(&str) -> Option<(String, Option<String>)>,
) -> Vec<Plug> {
    links
        .iter()
        .enumerate()
        .filter_map(|(cable, link)| {
            let bridge = link.bridge.as_ref()?;
            let (flags, master) = look(&link.host_if)?;
            let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
            let up = flags & libc::IFF_UP as u32 != 0;
            if up && master.as_ref() == Some(bridge) {
                return None;
            }
            Some(Plug {
                cable,
                host_if: link.host_if.clone(),
                bridge: bridge.clone(),
                master,
                up,
            })
        })
        .collect()
}

/// Plugs each cable of `plugs` back into its bridge and sets it up. A
/// bridge that does not exist is an error naming it, as it is when a
/// subhost is set up.
pub fn replug(name: &str, plugs: &[Plug]) -> anyhow::Result<()> {
    if plugs.is_empty() {
        return Ok(());
    }
    let mut host = Netlink::open().context("opening a netlink socket in the host namespace")?;
    for plug in plugs {
        let context = || {
            format!(
                "cannot plug cable {} of subhost {name} back into bridge {}",
                plug.host_if, plug.bridge
            )
        };
        let index = bridge_index(&mut host, &plug.bridge, plug.cable).with_context(context)?;
        crate::logging::step(plug, || {
            let mut msg = link_message(&plug.host_if);
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
            msg.attributes.push(LinkAttribute::Controller(index));
            host.request(RouteNetlinkMessage::SetLink(msg), 0)
        })
        .map_err(|e| anyhow!("{e}"))
        .with_context(context)?;
    }
    Ok(())
}

/// Removes the namespace; the kernel then destroys the cables in it, which
/// is waited for so that a failed create leaves nothing behind.
fn rollback(name: &str, file: &Path, made: Vec<String>, err: anyhow::Error) -> anyhow::Error {
    if let Err(e) = remove_mount_point(file) {
        return err.context(format!("and undoing it failed too: {e:#}"));
    }
    let left = wait_gone(made, ROLLBACK_WAIT);
    if !left.is_empty() {
        return err.context(format!(
            "netns {name} was removed after the failure, but host links {} are still there",
            left.join(", ")
        ));
    }
    err
}

/// What holds the name of a cable's host end before the cable is made.
enum Holder {
    /// A veth whose other end is in a namespace without a name in
    /// `/run/netns`: the host end of a deleted netns's cable, which the
    /// kernel removes milliseconds after the netns.
    Deleted,
    /// Anything else (the text says what): not provably a cable of ours.
    Other(String),
}

/// Waits (up to [`HOST_END_WAIT`]) for host ends of a deleted netns of
/// `name` that still hold its cables' names, as after a `stop` killed right
/// after deleting the netns. Any other link holding a name is named, with
/// how to remove it, and left alone.
fn free_host_names(name: &str, links: &[Link], host: &mut Netlink) -> anyhow::Result<()> {
    let taken: Vec<(usize, &Link)> = links
        .iter()
        .enumerate()
        .filter(|(_, l)| Path::new("/sys/class/net").join(&l.host_if).exists())
        .collect();
    let mut deleted = Vec::new();
    for (i, link) in taken {
        let ifname = &link.host_if;
        match holder(host, ifname)? {
            None => {}
            Some(Holder::Deleted) => deleted.push(ifname.clone()),
            Some(Holder::Other(what)) => bail!(
                "cable {i}: the name {ifname} is taken by host link {ifname} ({what}), which is \
                 not a cable of subhost {name}; if nothing uses it, remove it with \
                 `ip link del {ifname}`"
            ),
        }
    }
    if deleted.is_empty() {
        return Ok(());
    }
    let what = format!(
        "# wait until gone: {} (host ends of a deleted netns)",
        deleted.join(" ")
    );
    let left = crate::logging::step(what, || wait_gone(deleted, HOST_END_WAIT));
    if !left.is_empty() {
        let del: Vec<String> = left.iter().map(|l| format!("`ip link del {l}`")).collect();
        bail!(
            "the names {} are still taken {HOST_END_WAIT:?} later by veths whose other end is in a network \
             namespace without a name (a deleted netns {name} leaves them until the kernel \
             removes them): a process still holds that namespace (`lsns -t net` finds it); \
             when nothing uses them, remove them with {}",
            left.join(", "),
            del.join(", ")
        );
    }
    Ok(())
}

/// What holds `ifname` on the host now, if anything.
fn holder(host: &mut Netlink, ifname: &str) -> anyhow::Result<Option<Holder>> {
    let msg = match host.request(get_link(ifname), 0) {
        Ok(Some(RouteNetlinkMessage::NewLink(msg))) => msg,
        Ok(_) => return Ok(None),
        Err(e) if e.errno == libc::ENODEV => return Ok(None),
        Err(e) => bail!("looking up host link {ifname}: {e}"),
    };
    match link_kind(&msg) {
        Some(InfoKind::Veth) => {}
        Some(kind) => {
            let kind = format!("{kind:?}").to_lowercase();
            return Ok(Some(Holder::Other(format!("a {kind} link"))));
        }
        None => return Ok(Some(Holder::Other("a plain device".into()))),
    }
    let Some(id) = peer_nsid(&msg) else {
        let peer = peer_index(&msg)
            .and_then(|i| link_name(host, i))
            .map_or_else(String::new, |n| format!(" {n}"));
        return Ok(Some(Holder::Other(format!(
            "a veth whose other end{peer} is in the host's network namespace"
        ))));
    };
    // The id of a namespace being destroyed may still be the one it had,
    // or already none (-1): a live named one shows its own.
    if id >= 0 {
        let named = std::fs::read_dir(NETNS_RUN_DIR)
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if let Some(ns) = named.into_iter().find(|m| nsid(host, m) == Some(id)) {
            return Ok(Some(Holder::Other(format!(
                "a veth whose other end is in netns {ns}"
            ))));
        }
    }
    Ok(Some(Holder::Deleted))
}

/// The index of a link's peer (`IFLA_LINK`).
fn peer_index(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(i) => Some(*i),
        _ => None,
    })
}

/// The name of the host link with index `index`.
fn link_name(host: &mut Netlink, index: u32) -> Option<String> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    match host.request(RouteNetlinkMessage::GetLink(msg), 0) {
        Ok(Some(RouteNetlinkMessage::NewLink(reply))) => {
            reply.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
        }
        _ => None,
    }
}

fn check_links(links: &[Link]) -> anyhow::Result<()> {
    for (i, link) in links.iter().enumerate() {
        for ifname in [&link.host_if, &link.inner_if] {
            let bad = ifname.is_empty()
                || ifname.len() > IFNAME_MAX
                || ifname.bytes().any(|b| b == b'/' || b == b':' || b <= b' ');
            if bad {
                bail!(
                    "cable {i}: {ifname:?} is not a valid interface name \
                     (1-{IFNAME_MAX} bytes, no '/', ':' or whitespace)"
                );
            }
        }
        if link.inner_if == "lo" {
            bail!("cable {i}: the inner end cannot be named lo");
        }
    }
    Ok(())
}

/// Index of bridge `br`, with a fix in the message when it is missing or is
/// not a bridge.
fn bridge_index(host: &mut Netlink, br: &str, cable: usize) -> anyhow::Result<u32> {
    let reply = match host.request(get_link(br), 0) {
        Ok(reply) => reply,
        Err(e) if e.errno == libc::ENODEV => bail!(
            "cable {cable}: bridge {br} does not exist; create it with \
             `ip link add {br} type bridge && ip link set {br} up`"
        ),
        Err(e) => bail!("cable {cable}: looking up bridge {br}: {e}"),
    };
    let Some(RouteNetlinkMessage::NewLink(msg)) = reply else {
        bail!("cable {cable}: no reply looking up bridge {br}");
    };
    match link_kind(&msg) {
        Some(InfoKind::Bridge) => Ok(msg.header.index),
        kind => {
            let what = kind.map_or("a plain device".to_string(), |k| format!("a {k:?} link"));
            bail!("cable {cable}: {br} is {what}, not a bridge; name a bridge for this cable")
        }
    }
}

fn link_kind(msg: &LinkMessage) -> Option<&InfoKind> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

/// Makes `/run/netns` exist and be a shared mount, so a namespace mounted
/// there is seen by mount namespaces cloned later (iproute2 does the same).
fn ensure_run_dir_shared() -> anyhow::Result<()> {
    match std::fs::create_dir(NETNS_RUN_DIR) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).context(format!("creating {NETNS_RUN_DIR}")),
    }
    let shared = || {
        mount(
            None::<&str>,
            NETNS_RUN_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => return Ok(()),
        // EINVAL: not a mount point yet.
        Err(Errno::EINVAL) => {}
        Err(e) => return Err(e).context(format!("making {NETNS_RUN_DIR} a shared mount")),
    }
    mount(
        Some(NETNS_RUN_DIR),
        NETNS_RUN_DIR,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {NETNS_RUN_DIR} onto itself"))?;
    shared().with_context(|| format!("making {NETNS_RUN_DIR} a shared mount"))
}

fn create_mount_point(name: &str, file: &Path) -> anyhow::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match stray(name) {
            Some(what) => bail!("{what}"),
            None => bail!(
                "network namespace {name} already exists ({}); remove it with \
                 `subhost-launch stop {name}` or `ip netns del {name}`",
                file.display()
            ),
        },
        Err(e) => Err(e).context(format!("creating {}", file.display())),
    }
}

/// Unshares a new network namespace on this thread, bind-mounts it on
/// `file`, opens a netlink socket in it, and returns to the original
/// namespace, also on error.
fn new_netns(file: &Path) -> anyhow::Result<(OwnedFd, Netlink)> {
    let home = File::open("/proc/thread-self/ns/net").context("opening the current netns")?;
    unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    let inside = inside_new_netns(file);
    setns(home.as_fd(), CloneFlags::CLONE_NEWNET).context(
        "returning to the original network namespace (setns) failed; \
         this thread is left in the new one",
    )?;
    inside
}

/// Bind-mounts the netns `ns` on `file` and opens a netlink socket in it,
/// returning to the original namespace, also on error. The launcher may
/// enter a netns owned by a subhost's user namespace: it has every
/// capability over its descendants.
fn name_netns(ns: OwnedFd, file: &Path) -> anyhow::Result<(OwnedFd, Netlink)> {
    bind_netns(&ns, file)?;
    let home = File::open("/proc/thread-self/ns/net").context("opening the current netns")?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).context("entering the new netns")?;
    let sock = Netlink::open().context("opening a netlink socket in the new netns");
    setns(home.as_fd(), CloneFlags::CLONE_NEWNET).context(
        "returning to the original network namespace (setns) failed; \
         this thread is left in the new one",
    )?;
    Ok((ns, sock?))
}

/// Names the netns `ns` by a bind mount on `file`.
fn bind_netns(ns: &OwnedFd, file: &Path) -> anyhow::Result<()> {
    let src = format!("/proc/self/fd/{}", ns.as_raw_fd());
    mount(
        Some(src.as_str()),
        file,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting the new netns on {}", file.display()))
}

/// The user namespace that owns the netns `name`: for a subhost with
/// USERNS, its own, pinned by the netns while it hibernates.
pub fn owner(name: &str) -> anyhow::Result<OwnedFd> {
    let ns = open(name).with_context(|| format!("cannot open netns {name}"))?;
    // Checked on what was opened: the ioctl on a plain file says only
    // "Not a tty".
    let nsfs = nix::sys::statfs::fstatfs(&ns)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
    if !nsfs {
        let what = stray(name)
            .unwrap_or_else(|| format!("{} is not a network namespace", path(name).display()));
        bail!("cannot find the user namespace that owns netns {name}: {what}");
    }
    /// `NS_GET_USERNS`: `_IO(0xb7, 0x1)`.
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    // SAFETY: the ioctl takes no argument and returns a new fd or -1.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS as _) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot find the user namespace that owns netns {name}"));
    }
    // SAFETY: the kernel just returned this fd to us, and nothing else owns it.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

fn inside_new_netns(file: &Path) -> anyhow::Result<(OwnedFd, Netlink)> {
    let src = "/proc/thread-self/ns/net";
    mount(
        Some(src),
        file,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {src} on {}", file.display()))?;
    let nsfd = File::open(src).context("opening the new netns")?;
    let sock = Netlink::open().context("opening a netlink socket in the new netns")?;
    Ok((nsfd.into(), sock))
}

/// Unmounts (lazily) and unlinks a netns file. A file that is not a mount
/// point (left by a crashed create) is just unlinked.
fn remove_mount_point(file: &Path) -> anyhow::Result<()> {
    const TRIES: u32 = 5;
    for attempt in 1..=TRIES {
        match umount2(file, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e).context(format!("unmounting {}", file.display())),
        }
        match std::fs::remove_file(file) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < TRIES => {
                std::thread::sleep(POLL);
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => bail!(
                "removing {}: still busy after {TRIES} tries: a copy of its bind mount \
                 leaked into another mount namespace (find it in /proc/*/mountinfo)",
                file.display()
            ),
            Err(e) => return Err(e).context(format!("removing {}", file.display())),
        }
    }
    unreachable!("the last attempt returns")
}

/// How the removal of a leftover empty netns file reads in a plan and in
/// `-v`.
pub struct RemoveEmpty<'a>(pub &'a str);

impl fmt::Display for RemoveEmpty<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rm {}   # empty, no netns: left by an interrupted start",
            path(self.0).display()
        )
    }
}

/// Unlinks `file` if it is still an empty regular file. Something mounted
/// on it meanwhile makes the unlink fail (EBUSY), so a netns made since is
/// never removed this way.
fn remove_empty(file: &Path) -> anyhow::Result<()> {
    match file.symlink_metadata() {
        Ok(m) if m.file_type().is_file() && m.len() == 0 => {}
        Ok(_) => bail!("{} changed while it was being removed", file.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context(format!("examining {}", file.display())),
    }
    match std::fs::remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(format!("removing {}", file.display())),
    }
}

/// Deletes namespace `name` (the kernel removes its cables with it) and waits
/// up to `timeout` until no host-side link `NAME<digits>` is left. Returns
/// whether there was anything to delete. Idempotent.
pub fn delete(name: &str, timeout: Duration) -> anyhow::Result<bool> {
    let deleting = begin_delete(name)?;
    finish_deletes(vec![deleting], timeout)
        .pop()
        .expect("one result per deletion")
}

/// A namespace whose deletion was issued: the host ends of its cables are
/// still to go, which the kernel does asynchronously, for many namespaces
/// in one batch (so deleting them all before waiting for any costs about
/// what one costs).
#[derive(Debug)]
pub struct Deleting {
    name: String,
    had_file: bool,
    links: Vec<String>,
}

/// The first half of [`delete`]: removes `/run/netns/NAME` (and half-made
/// cables) without waiting for the kernel's cleanup.
pub fn begin_delete(name: &str) -> anyhow::Result<Deleting> {
    let file = path(name);
    let entry = entry(name);
    if let Entry::Other(_) = entry {
        bail!(
            "deleting netns {name}: {}",
            stray_text(name, entry).expect("an Other entry is a stray")
        );
    }
    let had_file = entry != Entry::Absent;
    let candidates = host_links(name);
    let links = if candidates.is_empty() {
        candidates
    } else {
        sort_out(name, candidates).with_context(|| format!("deleting netns {name}"))?
    };
    match entry {
        Entry::Netns => crate::logging::step(format_args!("ip netns del {name}"), || {
            remove_mount_point(&file)
        })
        .with_context(|| format!("deleting netns {name}"))?,
        Entry::Empty => crate::logging::step(RemoveEmpty(name), || remove_empty(&file))
            .with_context(|| format!("deleting netns {name}"))?,
        Entry::Absent | Entry::Other(_) => {}
    }
    Ok(Deleting {
        name: name.to_string(),
        had_file,
        links,
    })
}

/// The second half of [`delete`], for many at once: waits up to `timeout`
/// in all until every cable of every namespace is gone. One result per
/// deletion, in order: whether there was anything to delete, or which
/// host ends outlived the wait.
pub fn finish_deletes(deletions: Vec<Deleting>, timeout: Duration) -> Vec<anyhow::Result<bool>> {
    let all: Vec<String> = deletions.iter().flat_map(|d| d.links.clone()).collect();
    let left = if all.is_empty() {
        all
    } else {
        let what = format!("# wait until gone: {}", all.join(" "));
        crate::logging::step(what, || wait_gone(all, timeout))
    };
    deletions
        .into_iter()
        .map(|d| {
            let mine: Vec<&str> = left
                .iter()
                .filter(|l| d.links.contains(l))
                .map(String::as_str)
                .collect();
            if !mine.is_empty() {
                bail!(
                    "host links {} of netns {} still exist {timeout:?} after deleting it: \
                     a process still holds the namespace (see `lsns -t net`)",
                    mine.join(", "),
                    d.name
                );
            }
            Ok(d.had_file || !d.links.is_empty())
        })
        .collect()
}

/// Of the host links named `NAME<digits>`, returns those to wait for: it
/// deletes veths whose peer never left the host (half-made cables the
/// kernel would keep forever), and drops cables of another namespace whose
/// name extends this one (`web10`'s cable `web100` also reads as `web1`
/// cable 00).
fn sort_out(name: &str, candidates: Vec<String>) -> anyhow::Result<Vec<String>> {
    let rivals = rivals(name, &candidates);
    let mut host = Netlink::open().context("opening a netlink socket in the host namespace")?;
    let mut ours = Vec::new();
    for ifname in candidates {
        let msg = match host.request(get_link(&ifname), 0) {
            Ok(Some(RouteNetlinkMessage::NewLink(msg))) => msg,
            // Gone meanwhile.
            Ok(_) => continue,
            Err(e) if e.errno == libc::ENODEV => continue,
            Err(e) => bail!("looking up host link {ifname}: {e}"),
        };
        match peer_nsid(&msg) {
            None if matches!(link_kind(&msg), Some(InfoKind::Veth)) => {
                match host.request(del_link(&ifname), 0) {
                    Ok(_) => {}
                    Err(e) if e.errno == libc::ENODEV => {}
                    Err(e) => bail!("deleting half-made host link {ifname}: {e}"),
                }
            }
            Some(id) if id >= 0 && owned_by_rival(&mut host, &rivals, &ifname, id) => continue,
            _ => {}
        }
        ours.push(ifname);
    }
    Ok(ours)
}

/// Whether the peer namespace `peer_nsid` of `ifname` is one of `rivals`
/// that `ifname` is also a cable name of.
fn owned_by_rival(host: &mut Netlink, rivals: &[String], ifname: &str, peer_nsid: i32) -> bool {
    rivals
        .iter()
        .filter(|m| is_cable_of(m, ifname))
        .any(|m| nsid(host, m) == Some(peer_nsid))
}

/// The id the host gives namespace `name`, if it has one.
fn nsid(host: &mut Netlink, name: &str) -> Option<i32> {
    let fd = open(name).ok()?;
    let mut msg = NsidMessage::default();
    msg.attributes
        .push(NsidAttribute::Fd(fd.as_raw_fd() as u32));
    match host.request(RouteNetlinkMessage::GetNsId(msg), 0) {
        Ok(Some(RouteNetlinkMessage::NewNsId(reply))) => {
            reply.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                _ => None,
            })
        }
        _ => None,
    }
}

/// Polls until none of `links` exists any more, or `timeout` passes; returns
/// those still there.
fn wait_gone(mut links: Vec<String>, timeout: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        links.retain(|l| Path::new("/sys/class/net").join(l).exists());
        if links.is_empty() || start.elapsed() >= timeout {
            return links;
        }
        std::thread::sleep(POLL);
    }
}

/// Host-side links named `NAME<digits>` that exist now.
pub fn host_links(name: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut links: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|l| is_cable_of(name, l))
        .collect();
    links.sort();
    links
}

/// Cable indices are below this, the config's MAX_CABLES (a test checks;
/// this file is also built alone, in a benchmark).
const CABLE_INDICES: usize = 100;

/// Whether `ifname` is a cable name of subhost `name`: `NAME` and an index
/// as `host_if` writes it, 0 to 99. `ab100` is no cable of `ab` (cable
/// "00"), only of `ab10`; `ab10` still reads as cable 10 of `ab` or cable
/// 0 of `ab1`, which only the peer's namespace tells apart ([`cables_of`]).
fn is_cable_of(name: &str, ifname: &str) -> bool {
    ifname.strip_prefix(name).is_some_and(|rest| {
        rest.parse::<usize>()
            .is_ok_and(|i| i < CABLE_INDICES && i.to_string() == rest)
    })
}

/// [`host_links`] of `name`, less the cables of another namespace whose
/// name extends it (`ab1`'s `ab10`, with `ab1` up), told apart by the
/// namespace their peer end is in: what is `name`'s own to report or
/// clean up.
pub fn cables_of(name: &str) -> Vec<String> {
    let links = host_links(name);
    let rivals = rivals(name, &links);
    if rivals.is_empty() {
        return links;
    }
    let Ok(mut host) = Netlink::open() else {
        return links;
    };
    links
        .into_iter()
        .filter(|ifname| {
            let peer = match host.request(get_link(ifname), 0) {
                Ok(Some(RouteNetlinkMessage::NewLink(msg))) => peer_nsid(&msg),
                _ => None,
            };
            !peer.is_some_and(|id| id >= 0 && owned_by_rival(&mut host, &rivals, ifname, id))
        })
        .collect()
}

/// Namespaces other than `name` whose name extends it and that some of
/// `links` are a cable name of.
fn rivals(name: &str, links: &[String]) -> Vec<String> {
    std::fs::read_dir(NETNS_RUN_DIR)
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|m| m != name && m.starts_with(name))
                .filter(|m| links.iter().any(|l| is_cable_of(m, l)))
                .collect()
        })
        .unwrap_or_default()
}

/// The id the host gives the namespace of a link's peer end.
fn peer_nsid(msg: &LinkMessage) -> Option<i32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkNetNsId(id) => Some(*id),
        _ => None,
    })
}
