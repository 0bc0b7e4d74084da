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
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

const NETNS_RUN_DIR: &str = "/run/netns";
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
        write!(f, " address {}", MacDisplay(mac))?;
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

struct MacDisplay<'a>(&'a [u8; 6]);

impl fmt::Display for MacDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// What [`create`] does, as the `ip` commands it replaces, one per line.
pub struct Plan<'a> {
    name: &'a str,
    links: &'a [Link],
    /// `(BASE, COUNT)` of the user namespace that makes the netns.
    owner: Option<(u32, u32)>,
    /// Cables of the existing netns a wake plugs back in.
    plugs: Vec<Plug>,
}

/// The plan of `create(name, links)`, for `--dry-run`.
pub fn plan<'a>(name: &'a str, links: &'a [Link]) -> Plan<'a> {
    Plan {
        name,
        links,
        owner: None,
        plugs: Vec::new(),
    }
}

impl Plan<'_> {
    /// The plan of `create_from` with a netns made inside a user namespace
    /// mapping 0 to host id `base`, `count` ids.
    pub fn owned_by(mut self, base: u32, count: u32) -> Self {
        self.owner = Some((base, count));
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
    let file = path(name);
    let meta = match file.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Entry::Absent,
        Err(_) => return Entry::Other("an entry that cannot be examined"),
    };
    let dir_dev = Path::new(NETNS_RUN_DIR).metadata().map(|m| m.dev()).ok();
    if dir_dev != Some(meta.dev()) && !meta.file_type().is_symlink() {
        let nsfs = nix::sys::statfs::statfs(&file)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
        return match nsfs {
            true => Entry::Netns,
            false => Entry::Other("a mount of another filesystem"),
        };
    }
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

fn stray_text(name: &str, entry: Entry) -> Option<String> {
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
    create_from(name, links, None)
}

/// `create`, naming the netns `made` (e.g. made inside a subhost's user
/// namespace, which then owns it) instead of a new one of the launcher's.
/// The cables are still made from the host.
pub fn create_from(name: &str, links: &[Link], made: Option<OwnedFd>) -> anyhow::Result<()> {
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
    let mut cables = Vec::new();
    if let Err(err) = populate(
        name,
        &file,
        made,
        host.as_mut(),
        links,
        &masters,
        &mut cables,
    ) {
        return Err(rollback(name, &file, cables, err));
    }
    Ok(())
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
    let net = Path::new("/sys/class/net");
    links
        .iter()
        .enumerate()
        .filter_map(|(cable, link)| {
            let bridge = link.bridge.as_ref()?;
            let dir = net.join(&link.host_if);
            let flags = std::fs::read_to_string(dir.join("flags")).ok()?;
            let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
            let up = flags & libc::IFF_UP as u32 != 0;
            let master = std::fs::read_link(dir.join("master"))
                .ok()
                .and_then(|p| p.file_name()?.to_str().map(str::to_string));
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

/// caller, who also gets the host ends made so far in `made`. The namespace
/// fd and the inner socket are dropped on return, so after a failure nothing
/// of ours keeps the namespace alive.
fn populate(
    name: &str,
    file: &Path,
    ns: Option<OwnedFd>,
    mut host: Option<&mut Netlink>,
    links: &[Link],
    masters: &[Option<u32>],
    made: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (nsfd, mut inner) = match ns {
        None => crate::logging::step(format_args!("ip netns add {name}"), || new_netns(file))?,
        Some(ns) => crate::logging::step(NameOwned(name), || name_netns(ns, file))?,
    };
    for (i, (link, master)) in links.iter().zip(masters).enumerate() {
        let host = host.as_deref_mut().expect("opened for cables");
        crate::logging::step(LinkAddIn(link, name), || {
            host.request(new_veth(link, *master, &nsfd), NLM_F_CREATE | NLM_F_EXCL)
        })
        .map_err(|e| {
            anyhow!(
                "cable {i}: creating veth {} <-> {} in netns {name}: {e}",
                link.host_if,
                link.inner_if
            )
        })?;
        made.push(link.host_if.clone());
    }
    // The peer cannot be created up (ENOTCONN), so the inner ends are raised
    // from inside, on a socket bound to the new namespace.
    let inner_names = std::iter::once("lo").chain(links.iter().map(|l| l.inner_if.as_str()));
    for ifname in inner_names {
        crate::logging::step(format_args!("ip -n {name} link set {ifname} up"), || {
            inner.request(set_up(ifname), 0)
        })
        .map_err(|e| anyhow!("setting {ifname} up inside netns {name}: {e}"))?;
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
    let src = format!("/proc/self/fd/{}", ns.as_raw_fd());
    mount(
        Some(src.as_str()),
        file,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting the new netns on {}", file.display()))?;
    let home = File::open("/proc/thread-self/ns/net").context("opening the current netns")?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).context("entering the new netns")?;
    let sock = Netlink::open().context("opening a netlink socket in the new netns");
    setns(home.as_fd(), CloneFlags::CLONE_NEWNET).context(
        "returning to the original network namespace (setns) failed; \
         this thread is left in the new one",
    )?;
    Ok((ns, sock?))
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

// ---- messages ----

fn link_message(ifname: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(ifname.into()));
    msg
}

fn get_link(ifname: &str) -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(link_message(ifname))
}

fn del_link(ifname: &str) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelLink(link_message(ifname))
}

fn set_up(ifname: &str) -> RouteNetlinkMessage {
    let mut msg = link_message(ifname);
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(msg)
}

/// One request for the whole cable: veth, host end up on its bridge, peer
/// with its MAC moved into the namespace.
fn new_veth(link: &Link, master: Option<u32>, nsfd: &OwnedFd) -> RouteNetlinkMessage {
    let mut peer = link_message(&link.inner_if);
    peer.attributes
        .push(LinkAttribute::NetNsFd(nsfd.as_raw_fd()));
    if let Some(mac) = link.mac {
        peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    let mut msg = link_message(&link.host_if);
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    if let Some(index) = master {
        msg.attributes.push(LinkAttribute::Controller(index));
    }
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    RouteNetlinkMessage::NewLink(msg)
}

// ---- socket ----

/// A netlink error: the errno the kernel answered, with its extended-ACK
/// message when it gave one.
#[derive(Debug)]
struct NlError {
    errno: i32,
    detail: Option<String>,
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.errno))?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl From<std::io::Error> for NlError {
    fn from(e: std::io::Error) -> NlError {
        NlError {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            detail: None,
        }
    }
}

/// A rtnetlink socket, bound to the network namespace it was opened in.
struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    fn open() -> std::io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        // Ask for the kernel's error text and no echo of our request in it.
        sock.set_ext_ack(true)?;
        sock.set_cap_ack(true)?;
        Ok(Netlink {
            sock,
            seq: 0,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends `msg` with an ACK request and reads until the ACK; returns the
    /// message answered before it, if any (for the GET requests).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Option<RouteNetlinkMessage>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.sock.send(&out, 0)?;

        let mut answer = None;
        loop {
            self.buf.clear();
            self.sock.recv(&mut self.buf, 0)?;
            let mut off = 0;
            while off < self.buf.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..])
                    .map_err(|e| NlError {
                        errno: libc::EBADMSG,
                        detail: Some(format!("unparsable netlink reply: {e}")),
                    })?;
                let len = reply.header.length as usize;
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(answer),
                            Some(code) => Err(NlError {
                                errno: -code.get(),
                                detail: ext_ack_message(&err.header),
                            }),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => answer = Some(inner),
                    _ => {}
                }
            }
        }
    }
}

/// The NLMSGERR_ATTR_MSG text of an error whose request was capped to its
/// 16-byte header (NETLINK_CAP_ACK).
fn ext_ack_message(payload: &[u8]) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    let mut rest = payload.get(16..)?;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]);
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &rest[4..len];
            let text = text.split(|&b| b == 0).next().unwrap_or(text);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    const WAIT: Duration = Duration::from_secs(2);

    /// `sht` + tag + pid + counter, at most 12 bytes so `NAME99` fits IFNAMSIZ.
    fn unique(tag: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("sht{tag}{:x}{n}", std::process::id() % 0x10000);
        assert!(name.len() <= 12, "test name {name} too long");
        name
    }

    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "netns tests need root (they create namespaces, veths and bridges)"
        );
    }

    /// Runs a command under `timeout`, returning (success, stdout + stderr).
    fn run(args: &[&str]) -> (bool, String) {
        let out = Command::new("timeout")
            .arg("10")
            .args(args)
            .output()
            .expect("running timeout(1)");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn run_ok(args: &[&str]) -> String {
        let (ok, text) = run(args);
        assert!(ok, "{args:?} failed: {text}");
        text
    }

    /// A test bridge, up, deleted on drop.
    struct Bridge(String);

    impl Bridge {
        fn new() -> Bridge {
            let name = unique("b");
            run_ok(&["ip", "link", "add", &name, "type", "bridge"]);
            let br = Bridge(name);
            run_ok(&["ip", "link", "set", &br.0, "up"]);
            br
        }
    }

    impl Drop for Bridge {
        fn drop(&mut self) {
            run(&["ip", "link", "del", &self.0]);
        }
    }

    /// Deletes the namespace (and so its cables) on drop, even when the test
    /// failed before its own `delete`.
    struct NsGuard(String);

    impl Drop for NsGuard {
        fn drop(&mut self) {
            if delete(&self.0, WAIT).is_err() {
                run(&["ip", "netns", "del", &self.0]);
            }
        }
    }

    fn cable(host_if: String, inner_if: &str, bridge: Option<&str>, mac: Option<[u8; 6]>) -> Link {
        Link {
            host_if,
            inner_if: inner_if.into(),
            bridge: bridge.map(Into::into),
            mac,
        }
    }

    /// Flags of `ip -o link show DEV` output, e.g. `BROADCAST,UP,LOWER_UP`.
    fn flags(line: &str) -> Vec<&str> {
        let start = line.find('<').expect("flags in ip output") + 1;
        let end = line[start..].find('>').unwrap() + start;
        line[start..end].split(',').collect()
    }

    fn netns_listed(name: &str) -> bool {
        run_ok(&["ip", "netns", "list"])
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
    }

    #[test]
    fn create_two_cables_then_delete_and_recreate() {
        require_root();
        let br = Bridge::new();
        let name = unique("c");
        let _guard = NsGuard(name.clone());
        let mac = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
        let links = [
            cable(format!("{name}0"), "eth0", Some(&br.0), Some(mac)),
            cable(format!("{name}1"), "eth1", None, None),
        ];
        create(&name, &links).expect("create");
        assert!(exists(&name));
        assert!(netns_listed(&name));

        let h0 = run_ok(&["ip", "-o", "link", "show", &format!("{name}0")]);
        assert!(flags(&h0).contains(&"UP"), "host end 0 not up: {h0}");
        assert!(
            h0.contains(&format!("master {} ", br.0)),
            "not on bridge: {h0}"
        );
        let h1 = run_ok(&["ip", "-o", "link", "show", &format!("{name}1")]);
        assert!(flags(&h1).contains(&"UP"), "host end 1 not up: {h1}");
        assert!(
            !h1.contains("master"),
            "unattached cable has a master: {h1}"
        );
        assert_eq!(
            host_links(&name),
            vec![format!("{name}0"), format!("{name}1")]
        );

        let e0 = run_ok(&["ip", "-n", &name, "-o", "link", "show", "eth0"]);
        assert!(flags(&e0).contains(&"UP"), "eth0 not up: {e0}");
        assert!(
            e0.contains("link/ether 02:00:5e:10:20:30 "),
            "eth0 MAC: {e0}"
        );
        let e1 = run_ok(&["ip", "-n", &name, "-o", "link", "show", "eth1"]);
        assert!(flags(&e1).contains(&"UP"), "eth1 not up: {e1}");
        let lo = run_ok(&["ip", "-n", &name, "-o", "link", "show", "lo"]);
        assert!(flags(&lo).contains(&"UP"), "lo not up: {lo}");

        assert!(delete(&name, WAIT).expect("delete"));
        assert_eq!(host_links(&name), Vec::<String>::new());
        assert!(!exists(&name));
        assert!(!netns_listed(&name));
        // Straight away: the host-side names must be free again.
        create(&name, &links).expect("create right after delete");
        assert!(delete(&name, WAIT).expect("second delete"));
    }

    #[test]
    fn existing_netns_is_refused() {
        require_root();
        let name = unique("e");
        let _guard = NsGuard(name.clone());
        create(&name, &[]).expect("create");
        let err = format!("{:#}", create(&name, &[]).unwrap_err());
        assert!(
            err.contains("already exists") && err.contains(&name),
            "{err}"
        );
        assert!(
            exists(&name),
            "the refused create removed the existing netns"
        );
    }

    #[test]
    fn missing_bridge_leaves_nothing() {
        require_root();
        let name = unique("m");
        let _guard = NsGuard(name.clone());
        let missing = unique("x");
        let links = [
            cable(format!("{name}0"), "eth0", None, None),
            cable(format!("{name}1"), "eth1", Some(&missing), None),
        ];
        let err = format!("{:#}", create(&name, &links).unwrap_err());
        assert!(
            err.contains(&missing),
            "error does not name the bridge: {err}"
        );
        assert!(
            err.contains("cable 1"),
            "error does not name the cable: {err}"
        );
        assert!(
            err.contains(&format!("ip link add {missing} type bridge")),
            "{err}"
        );
        assert!(!exists(&name));
        assert!(host_links(&name).is_empty());
    }

    /// Writes `value` to the sysctl file `knob` as root of the user
    /// namespace `user`, inside the netns `net`, in a child; returns errno
    /// (0 on success).
    fn sysctl_as_root_inside(user: &OwnedFd, net: &OwnedFd, knob: &str, value: &str) -> i32 {
        let knob = std::ffi::CString::new(knob).unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child makes only raw syscalls on data prepared above,
        // then _exits.
        match unsafe { libc::fork() } {
            0 => unsafe {
                let fail = |code: i32| {
                    let e = *libc::__errno_location();
                    let v = if e == 0 { code } else { e };
                    libc::write(w.as_raw_fd(), (&v as *const i32).cast(), 4);
                    libc::_exit(1)
                };
                if libc::setns(user.as_raw_fd(), libc::CLONE_NEWUSER) != 0 {
                    fail(1000);
                }
                if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                    fail(1001);
                }
                if libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    fail(1002);
                }
                let fd = libc::open(knob.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    fail(1003);
                }
                if libc::write(fd, value.as_ptr().cast(), value.len()) < 0 {
                    fail(1004);
                }
                let ok = 0i32;
                libc::write(w.as_raw_fd(), (&ok as *const i32).cast(), 4);
                libc::_exit(0)
            },
            pid => {
                assert!(pid > 0);
                drop(w);
                let mut buf = [0u8; 4];
                let n = nix::unistd::read(&r, &mut buf).unwrap();
                nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
                assert_eq!(n, 4);
                i32::from_ne_bytes(buf)
            }
        }
    }

    #[test]
    fn a_netns_owned_by_a_user_namespace_is_configured_by_its_root() {
        require_root();
        let name = unique("u");
        let _guard = NsGuard(name.clone());
        let range = crate::userns::Range {
            base: 3_145_728,
            count: 65536,
        };
        let ns = crate::userns::acquire(range, true).unwrap();
        let links = [cable(format!("{name}0"), "eth0", None, None)];
        create_from(&name, &links, ns.net).expect("create_from");
        // The named netns gives its owner back: what a wake uses.
        let owner = owner(&name).unwrap();
        assert!(crate::userns::same_ns(&owner, &ns.user));
        // The cable was made from the host, and `ip netns exec` still works.
        assert!(host_links(&name).contains(&format!("{name}0")));
        let out = run_ok(&[
            "ip", "netns", "exec", &name, "ip", "-o", "link", "show", "eth0",
        ]);
        assert!(out.contains("eth0"), "{out}");
        // Root of the user namespace configures its netns...
        let net = open(&name).unwrap();
        let knob = "/proc/sys/net/ipv4/conf/eth0/forwarding";
        assert_eq!(sysctl_as_root_inside(&owner, &net, knob, "1"), 0);
        assert_eq!(
            run_ok(&["ip", "netns", "exec", &name, "cat", knob]).trim(),
            "1"
        );
        // ...and not one the host made, which is what the ownership is for.
        let host_made = unique("h");
        let _g2 = NsGuard(host_made.clone());
        create(&host_made, &[]).unwrap();
        let other = open(&host_made).unwrap();
        let knob = "/proc/sys/net/ipv4/conf/lo/forwarding";
        assert_eq!(
            sysctl_as_root_inside(&owner, &other, knob, "1"),
            libc::EPERM
        );
        drop((net, other));
        assert!(delete(&name, WAIT).unwrap());
        assert!(host_links(&name).is_empty());
    }

    #[test]
    fn only_an_empty_file_in_place_of_a_netns_is_removed() {
        require_root();
        let name = unique("f");
        let _guard = NsGuard(name.clone());
        assert_eq!(entry(&name), Entry::Absent);
        create(&name, &[]).unwrap();
        assert_eq!(entry(&name), Entry::Netns);
        assert!(exists(&name) && stray(&name).is_none());
        assert!(delete(&name, WAIT).unwrap());

        std::fs::write(path(&name), "").unwrap();
        assert_eq!(entry(&name), Entry::Empty);
        assert!(!exists(&name));
        let why = stray(&name).unwrap();
        assert!(
            why.contains("an empty file left by an interrupted start"),
            "{why}"
        );
        let err = format!("{:#}", owner(&name).unwrap_err());
        assert!(
            err.contains("an empty file left by an interrupted start"),
            "{err}"
        );
        assert!(!err.contains("tty"), "{err}");
        assert!(delete(&name, WAIT).unwrap());
        assert_eq!(entry(&name), Entry::Absent);

        std::fs::write(path(&name), "data").unwrap();
        assert_eq!(entry(&name), Entry::Other("a non-empty file"));
        let err = format!("{:#}", delete(&name, WAIT).unwrap_err());
        assert!(
            err.contains("is not a network namespace but a non-empty file"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(path(&name)).unwrap(), "data");
        std::fs::remove_file(path(&name)).unwrap();
    }

    #[test]
    fn a_cable_out_of_its_bridge_is_found_and_plugged_back_in() {
        require_root();
        let br = Bridge::new();
        let name = unique("g");
        let _guard = NsGuard(name.clone());
        let links = [
            cable(format!("{name}0"), "eth0", Some(&br.0), None),
            cable(format!("{name}1"), "eth1", None, None),
        ];
        create(&name, &links).unwrap();
        assert_eq!(unplugged(&links), vec![]);
        run_ok(&["ip", "link", "del", &br.0]);
        let out = unplugged(&links);
        assert_eq!(
            out,
            vec![Plug {
                cable: 0,
                host_if: format!("{name}0"),
                bridge: br.0.clone(),
                master: None,
                up: true,
            }]
        );
        assert_eq!(
            out[0].to_string(),
            format!("ip link set {name}0 master {} up", br.0)
        );
        assert!(out[0].problem(&name).contains("does not exist"));
        let err = format!("{:#}", replug(&name, &out).unwrap_err());
        assert!(
            err.contains(&format!("ip link add {} type bridge", br.0)),
            "{err}"
        );
        run_ok(&["ip", "link", "add", &br.0, "type", "bridge"]);
        let out = unplugged(&links);
        assert!(
            out[0]
                .problem(&name)
                .contains(&format!("not in its bridge {} (in no bridge)", br.0)),
            "{out:?}"
        );
        run_ok(&["ip", "link", "set", &format!("{name}0"), "down"]);
        replug(&name, &unplugged(&links)).unwrap();
        assert_eq!(unplugged(&links), vec![]);
        let h0 = run_ok(&["ip", "-o", "link", "show", &format!("{name}0")]);
        assert!(h0.contains(&format!("master {} ", br.0)), "{h0}");
        assert!(flags(&h0).contains(&"UP"), "{h0}");
        assert!(delete(&name, WAIT).unwrap());
    }

    #[test]
    fn not_a_bridge_is_refused() {
        require_root();
        let name = unique("n");
        let _guard = NsGuard(name.clone());
        let links = [cable(format!("{name}0"), "eth0", Some("lo"), None)];
        let err = format!("{:#}", create(&name, &links).unwrap_err());
        assert!(err.contains("lo is a plain device, not a bridge"), "{err}");
        assert!(!exists(&name));
    }

    #[test]
    fn failure_after_first_cable_rolls_back() {
        require_root();
        let br = Bridge::new();
        let name = unique("r");
        let _guard = NsGuard(name.clone());
        // The second host end collides with the first one's name: EEXIST
        // after the namespace and the first cable exist.
        let links = [
            cable(format!("{name}0"), "eth0", Some(&br.0), None),
            cable(format!("{name}0"), "eth1", None, None),
        ];
        let err = format!("{:#}", create(&name, &links).unwrap_err());
        assert!(
            err.contains("cable 1") && err.contains("File exists"),
            "{err}"
        );
        assert!(!exists(&name), "netns left behind");
        assert!(host_links(&name).is_empty(), "cable left behind");
        assert!(!Path::new("/sys/class/net")
            .join(format!("{name}0"))
            .exists());
    }

    #[test]
    fn delete_is_idempotent_and_handles_half_made_states() {
        require_root();
        let name = unique("i");
        let _guard = NsGuard(name.clone());
        assert!(!delete(&name, WAIT).expect("delete of nothing"));

        create(&name, &[]).expect("create");
        assert!(delete(&name, WAIT).expect("delete"));
        assert!(!delete(&name, WAIT).expect("delete again"));

        // A crashed create: the file exists but nothing is mounted on it.
        ensure_run_dir_shared().unwrap();
        File::create(path(&name)).unwrap();
        assert!(delete(&name, WAIT).expect("delete of a bare file"));
        assert!(!path(&name).exists());

        // A cable whose peer never left the host: the kernel will not
        // remove it, so delete must.
        let peer = format!("{name}p");
        run_ok(&[
            "ip",
            "link",
            "add",
            &format!("{name}0"),
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        assert!(delete(&name, WAIT).expect("delete of a half-made cable"));
        assert!(host_links(&name).is_empty());
        assert!(!Path::new("/sys/class/net").join(&peer).exists());
    }

    #[test]
    fn delete_leaves_cables_of_a_longer_name_alone() {
        require_root();
        let short = unique("o");
        let long = format!("{short}1");
        assert!(long.len() <= 12);
        let _gs = NsGuard(short.clone());
        let _gl = NsGuard(long.clone());
        create(&short, &[cable(format!("{short}0"), "eth0", None, None)]).expect("create");
        // `{long}0` also reads as cable 10 of `short`.
        create(&long, &[cable(format!("{long}0"), "eth0", None, None)]).expect("create");
        // `{long}0` reads as a cable of `short`, but its peer is in `long`.
        assert_eq!(cables_of(&short), vec![format!("{short}0")]);
        assert_eq!(cables_of(&long), vec![format!("{long}0")]);
        assert!(delete(&short, WAIT).expect("delete of the shorter name"));
        assert_eq!(host_links(&short), vec![format!("{long}0")]);
        assert!(exists(&long));
        assert!(delete(&long, WAIT).expect("delete of the longer name"));
        assert!(host_links(&short).is_empty());
    }

    #[test]
    fn two_namespaces_on_one_bridge_ping() {
        require_root();
        let br = Bridge::new();
        let (a, b) = (unique("p"), unique("p"));
        let _ga = NsGuard(a.clone());
        let _gb = NsGuard(b.clone());
        let net = std::process::id() % 250 + 1;
        for (ns, host) in [(&a, 1), (&b, 2)] {
            let mac = [0x02, 0, 0, 0, 0, host as u8];
            create(
                ns,
                &[cable(format!("{ns}0"), "eth0", Some(&br.0), Some(mac))],
            )
            .expect("create");
            let addr = format!("10.213.{net}.{host}/24");
            run_ok(&["ip", "-n", ns, "addr", "add", &addr, "dev", "eth0"]);
        }
        let target = format!("10.213.{net}.2");
        let out = run_ok(&[
            "ip", "netns", "exec", &a, "ping", "-c", "1", "-W", "3", &target,
        ]);
        assert!(out.contains("1 received"), "{out}");
        assert!(delete(&a, WAIT).unwrap() && delete(&b, WAIT).unwrap());
    }

    #[test]
    fn plan_reads_like_ip() {
        let links = [
            cable(
                "web0".into(),
                "eth0",
                Some("br0"),
                Some([2, 0, 0, 0, 1, 0xab]),
            ),
            cable("web1".into(), "eth1", None, None),
        ];
        assert_eq!(
            links[0].to_string(),
            "ip link add web0 master br0 up type veth peer name eth0 address 02:00:00:00:01:ab"
        );
        assert_eq!(
            plan("web", &links).to_string(),
            "ip netns add web\n\
             ip link add web0 master br0 up type veth peer name eth0 netns web address 02:00:00:00:01:ab\n\
             ip link add web1 up type veth peer name eth1 netns web\n\
             ip -n web link set lo up\n\
             ip -n web link set eth0 up\n\
             ip -n web link set eth1 up"
        );
    }

    #[test]
    fn cable_names() {
        assert!(is_cable_of("web", "web0"));
        assert!(is_cable_of("web", "web12"));
        assert!(!is_cable_of("web", "web"));
        assert!(!is_cable_of("web", "webx0"));
        assert!(!is_cable_of("web", "web1a"));
        assert!(!is_cable_of("we", "web0"));
        assert!(is_cable_of("web", "web99"));
        // Not indices host_if writes: another subhost's, or no cable.
        assert!(!is_cable_of("web", "web00"));
        assert!(!is_cable_of("web", "web01"));
        assert!(!is_cable_of("web", "web100"));
        assert!(!is_cable_of("web", "web+1"));
        assert!(!is_cable_of("ab", "ab100"), "cable 0 of ab10");
        assert!(is_cable_of("ab10", "ab100"));
        assert_eq!(CABLE_INDICES, crate::config::MAX_CABLES);
    }

    #[test]
    fn bad_interface_names_are_refused() {
        let long = cable("a".repeat(16), "eth0", None, None);
        assert!(format!("{:#}", create("shtq", &[long]).unwrap_err()).contains("cable 0"));
        let lo = cable("shtq0".into(), "lo", None, None);
        assert!(format!("{:#}", create("shtq", &[lo]).unwrap_err()).contains("lo"));
    }
}
