//! Published ports (`PUBLISH`): connections to a port of the host reach a
//! port of the subhost, by DNAT rules in the host's nftables table
//! `inet subhost`, one chain `sh_NAME` per subhost, reached by a jump rule
//! in the table's prerouting and output chains. The rules are planned as
//! data (what `--dry-run` prints, in `nft` syntax), then made in one batch.
//!
//! Host-loopback destinations are left out of the rules: the kernel does not
//! route 127.0.0.0/8 or ::1 off the loopback, so a host-side forwarder
//! serves those clients.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};

use crate::forward::Forward;
use crate::netns::{Addressing, Link};

pub mod nft;

#[cfg(test)]
mod tests;

use nft::{Change, Expr, Hook, Nft};

/// The table of all subhosts' rules.
pub const TABLE: &str = "subhost";

/// The transport of a published port (and of a forward).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn number(self) -> u8 {
        match self {
            Proto::Tcp => libc::IPPROTO_TCP as u8,
            Proto::Udp => libc::IPPROTO_UDP as u8,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl std::str::FromStr for Proto {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Proto> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => bail!("unknown protocol {s:?}: give tcp or udp"),
        }
    }
}

/// A `PUBLISH` element: `PROTO:[HOSTADDR:]HOSTPORT:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    pub proto: Proto,
    /// `None`: every host address, IPv4 and IPv6; `0.0.0.0` or `::`: every
    /// host address of that family.
    pub host: Option<IpAddr>,
    pub host_port: u16,
    pub port: u16,
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.proto)?;
        match self.host {
            Some(IpAddr::V4(a)) => write!(f, "{a}:")?,
            Some(IpAddr::V6(a)) => write!(f, "[{a}]:")?,
            None => {}
        }
        write!(f, "{}:{}", self.host_port, self.port)
    }
}

const USAGE: &str =
    "write PROTO:[HOSTADDR:]HOSTPORT:PORT, e.g. tcp:8080:80, udp:5353:53 or tcp:127.0.0.1:2222:22";

impl Publish {
    /// The error says what is wrong and how to fix it.
    pub fn parse(s: &str) -> Result<Publish, (String, String)> {
        let bad = |what: String| Err((what, USAGE.to_string()));
        let Some((proto, rest)) = s.split_once(':') else {
            return bad(format!("{s:?} is no published port"));
        };
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return bad(format!("{s:?}: protocol {proto:?} is neither tcp nor udp")),
        };
        // The ports are the last two fields; what is before them is the
        // host address (an IPv6 one in brackets).
        let mut fields = rest.rsplitn(3, ':');
        let port = fields.next().unwrap_or_default();
        let Some(host_port) = fields.next() else {
            return bad(format!(
                "{s:?} has one port; give the host's and the subhost's"
            ));
        };
        let host = match fields.next() {
            None => None,
            Some(h) => {
                let inner = h
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(h);
                match inner.parse::<IpAddr>() {
                    Ok(IpAddr::V6(_)) if inner == h => {
                        return bad(format!(
                            "{s:?}: write the IPv6 address {h} in brackets, [{h}]"
                        ))
                    }
                    Ok(IpAddr::V4(_)) if inner != h => {
                        return bad(format!("{s:?}: an IPv4 address goes without brackets"))
                    }
                    Ok(ip) if ip.is_multicast() => {
                        return bad(format!(
                            "{s:?}: {ip} is a multicast address, not the host's"
                        ))
                    }
                    Ok(ip) => Some(ip),
                    Err(_) => return bad(format!("{s:?}: {h:?} is not an IP address")),
                }
            }
        };
        let port_of = |p: &str| -> Result<u16, (String, String)> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
                _ => Err((
                    format!("{s:?}: port {p:?} is out of range: 1 to 65535"),
                    USAGE.to_string(),
                )),
            }
        };
        Ok(Publish {
            proto,
            host,
            host_port: port_of(host_port)?,
            port: port_of(port)?,
        })
    }

    /// The families whose DNAT rules this publishes through (a host
    /// loopback address only has the forwarder).
    pub fn families(&self) -> Vec<bool> {
        match self.host {
            None => vec![false, true],
            Some(ip) if ip.is_loopback() => Vec::new(),
            Some(ip) => vec![ip.is_ipv6()],
        }
    }

    /// The families whose host loopback this publishes through the
    /// forwarder: every host address includes the loopback's; a given
    /// loopback address is that one alone.
    pub fn loopback_families(&self) -> Vec<bool> {
        match self.host {
            None => vec![false, true],
            Some(ip) if ip.is_unspecified() || ip.is_loopback() => vec![ip.is_ipv6()],
            Some(_) => Vec::new(),
        }
    }

    /// Whether `self` and `other` take the same port of some host address.
    pub fn overlaps(&self, other: &Publish) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && match (self.host, other.host) {
                (None, _) | (_, None) => true,
                (Some(a), Some(b)) => {
                    a == b
                        || (a.is_ipv6() == b.is_ipv6()
                            && (a.is_unspecified() || b.is_unspecified()))
                }
            }
    }
}

/// What is published now, as `status` shows it: one DNAT rule's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    pub proto: Proto,
    /// `None`: every host address of the family of `address`.
    pub host_address: Option<IpAddr>,
    pub host_port: u16,
    pub port: u16,
    /// The subhost's address the connections go to.
    pub address: IpAddr,
}

impl fmt::Display for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.host_address {
            Some(IpAddr::V6(a)) => format!("[{a}]"),
            Some(a) => a.to_string(),
            None if self.address.is_ipv6() => "[*]".into(),
            None => "*".into(),
        };
        let to = SocketAddr::new(self.address, self.port);
        write!(f, "{} {host}:{} -> {to}", self.proto, self.host_port)
    }
}

/// One DNAT rule: `publish` for the family of `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnat {
    pub publish: Publish,
    pub to: SocketAddr,
}

impl Dnat {
    fn exprs(&self) -> Vec<Expr> {
        let v6 = self.to.is_ipv6();
        let mut e = vec![Expr::Nfproto { v6 }];
        match self.publish.host {
            Some(ip) if !ip.is_unspecified() => e.push(Expr::Daddr {
                addr: ip,
                len: if v6 { 16 } else { 4 },
                not: false,
            }),
            _ => {
                e.push(Expr::DaddrLocal);
                // Host-loopback clients are the forwarder's.
                e.push(match v6 {
                    false => Expr::Daddr {
                        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                        len: 1,
                        not: true,
                    },
                    true => Expr::Daddr {
                        addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                        len: 16,
                        not: true,
                    },
                });
            }
        }
        e.push(Expr::Dport {
            l4proto: self.publish.proto.number(),
            port: self.publish.host_port,
        });
        e.push(Expr::Dnat(self.to));
        e
    }

    /// The rule's comment, which `status` and another subhost's start read
    /// back: `publish SPEC to ADDR`.
    fn comment(&self) -> String {
        format!("publish {} to {}", self.publish, self.to.ip())
    }

    fn from_comment(c: &str) -> Option<Dnat> {
        let (spec, to) = c.strip_prefix("publish ")?.split_once(" to ")?;
        let publish = Publish::parse(spec).ok()?;
        let ip: IpAddr = to.parse().ok()?;
        Some(Dnat {
            publish,
            to: SocketAddr::new(ip, publish.port),
        })
    }

    fn published(&self) -> Published {
        Published {
            proto: self.publish.proto,
            host_address: self.publish.host.filter(|h| !h.is_unspecified()),
            host_port: self.publish.host_port,
            port: self.publish.port,
            address: self.to.ip(),
        }
    }
}

/// The chain of subhost `name`.
pub fn chain(name: &str) -> String {
    format!("sh_{name}")
}

/// The comment of the rules of subhost `name` outside its chain.
fn owner_comment(name: &str) -> String {
    format!("subhost {name}")
}

const BASE_CHAINS: [(&str, Hook, i32); 3] = [
    ("prerouting", Hook::Prerouting, -100),
    ("output", Hook::Output, -100),
    ("postrouting", Hook::Postrouting, 100),
];

/// The rules of one subhost, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    name: String,
    pub dnat: Vec<Dnat>,
    /// Bridges of the cables the DNAT targets are on: clients there get a
    /// masqueraded connection (hairpin), or the subhost would answer them
    /// over the bridge from an address they did not call.
    pub hairpin: Vec<String>,
    /// What the host's own loopback reaches through the forwarder: the
    /// kernel never routes ::1 off the loopback, and 127.0.0.0/8 only with
    /// route_localnet, a host setting subhost leaves alone.
    pub loopback: Vec<Forward>,
}

/// The rules for `published` of subhost `name`: each goes to the first
/// address of its family on a cable (`addressing`, in config order); a
/// family without one has no rule (the config check refuses what would
/// have none at all).
pub fn plan(name: &str, published: &[Publish], addressing: &Addressing, links: &[Link]) -> Plan {
    let mut dnat = Vec::new();
    let mut hairpin: Vec<String> = Vec::new();
    let mut loopback = Vec::new();
    for p in published {
        for v6 in p.loopback_families() {
            let first = addressing
                .addresses
                .iter()
                .find(|(_, a)| a.ip.is_ipv6() == v6);
            if let Some((_, a)) = first {
                let lo = match v6 {
                    false => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    true => IpAddr::V6(Ipv6Addr::LOCALHOST),
                };
                loopback.push(Forward {
                    proto: p.proto,
                    listen: SocketAddr::new(p.host.unwrap_or(lo), p.host_port),
                    target: SocketAddr::new(a.ip, p.port),
                });
            }
        }
        for v6 in p.families() {
            let Some((ifname, a)) = addressing
                .addresses
                .iter()
                .find(|(_, a)| a.ip.is_ipv6() == v6)
            else {
                continue;
            };
            dnat.push(Dnat {
                publish: *p,
                to: SocketAddr::new(a.ip, p.port),
            });
            let bridge = links
                .iter()
                .find(|l| &l.inner_if == ifname)
                .and_then(|l| l.bridge.clone());
            if let Some(br) = bridge {
                if !hairpin.contains(&br) {
                    hairpin.push(br);
                }
            }
        }
    }
    Plan {
        name: name.to_string(),
        dnat,
        hairpin,
        loopback,
    }
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.dnat.is_empty()
    }

    /// The rules outside the subhost's chain: the jumps to it, and the
    /// hairpin masquerades.
    fn outer_rules(&self) -> Vec<(&'static str, Vec<Expr>)> {
        let sh = chain(&self.name);
        let mut out = vec![
            ("prerouting", vec![Expr::Jump(sh.clone())]),
            ("output", vec![Expr::Jump(sh)]),
        ];
        for br in &self.hairpin {
            out.push((
                "postrouting",
                vec![
                    Expr::Iifname(br.clone()),
                    Expr::Oifname(br.clone()),
                    Expr::CtStatusDnat,
                    Expr::Masquerade,
                ],
            ));
        }
        out
    }

    /// The batch that makes these rules, replacing `stale` ones of the
    /// subhost left by a start that did not clean up.
    fn changes(&self, stale: Vec<Change>) -> Vec<Change> {
        let sh = chain(&self.name);
        let mut c = stale;
        c.push(Change::AddTable);
        for (name, hook, priority) in BASE_CHAINS {
            c.push(Change::AddBaseChain {
                name,
                hook,
                priority,
            });
        }
        c.push(Change::AddChain(sh.clone()));
        c.push(Change::FlushChain(sh.clone()));
        for d in &self.dnat {
            c.push(Change::AddRule {
                chain: sh.clone(),
                exprs: d.exprs(),
                comment: d.comment(),
            });
        }
        for (chain, exprs) in self.outer_rules() {
            c.push(Change::AddRule {
                chain: chain.into(),
                exprs,
                comment: owner_comment(&self.name),
            });
        }
        c
    }
}

/// The `nft` commands the batch replaces, one per line.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = format!("inet {TABLE}");
        writeln!(f, "nft add table {t}")?;
        for (name, hook, prio) in BASE_CHAINS {
            let hook = format!("{hook:?}").to_lowercase();
            writeln!(
                f,
                "nft add chain {t} {name} '{{ type nat hook {hook} priority {prio}; }}'"
            )?;
        }
        let sh = chain(&self.name);
        writeln!(f, "nft add chain {t} {sh}")?;
        write!(f, "nft flush chain {t} {sh}")?;
        for d in &self.dnat {
            let rule = nft::render(&d.exprs());
            write!(
                f,
                "\nnft add rule {t} {sh} {rule} comment \"{}\"",
                d.comment()
            )?;
        }
        for (chain, exprs) in self.outer_rules() {
            let rule = nft::render(&exprs);
            let c = owner_comment(&self.name);
            write!(f, "\nnft add rule {t} {chain} {rule} comment \"{c}\"")?;
        }
        Ok(())
    }
}

fn open() -> anyhow::Result<Nft> {
    if let Some(nft) = OPENED.with(|o| o.borrow_mut().take()) {
        return Ok(nft);
    }
    Nft::open(TABLE).context("opening a netfilter netlink socket in the host namespace")
}

thread_local! {
    /// The socket `check_free` read the table on, kept for the `apply` of
    /// the same start: one socket opened (and closed) per start, not one
    /// per step. Opened in the host namespace, as both are called there.
    static OPENED: std::cell::RefCell<Option<Nft>> = const { std::cell::RefCell::new(None) };
}

/// Keeps `nft` for the next [`open`] of this thread.
fn keep(nft: Nft) {
    OPENED.with(|o| *o.borrow_mut() = Some(nft));
}

/// The stale rules of subhost `name` and its chain's removal, from a dump.
fn removal(name: &str, nft: &mut Nft) -> anyhow::Result<Vec<Change>> {
    let sh = chain(name);
    let owner = owner_comment(name);
    let what = || format!("reading nftables table inet {TABLE}");
    let rules = nft.rules().map_err(|e| anyhow!("{}: {e}", what()))?;
    let chains = nft.chains().map_err(|e| anyhow!("{}: {e}", what()))?;
    let mut c: Vec<Change> = rules
        .into_iter()
        .filter(|r| r.chain != sh && r.comment.as_deref() == Some(owner.as_str()))
        .map(|r| Change::DelRule {
            chain: r.chain,
            handle: r.handle,
        })
        .collect();
    if chains.contains(&sh) {
        c.push(Change::FlushChain(sh.clone()));
        c.push(Change::DelChain(sh));
    }
    Ok(c)
}

fn commit(nft: &mut Nft, changes: &[Change], what: &str) -> anyhow::Result<()> {
    nft.commit(changes).map_err(|(i, e)| {
        anyhow!(
            "{what} (nftables table inet {TABLE}): {e}, at {:?}; nothing was changed",
            changes[i]
        )
    })
}

/// The record of subhost `name`'s rules under the run directory
/// `records`: written before they are made, removed after they are gone,
/// so that a subhost without it has none and its `stop` and `status`
/// leave the table alone.
fn record_path(records: &Path, name: &str) -> PathBuf {
    let own = crate::run::of(name).published();
    records.join(own.file_name().expect("a record has a file name"))
}

/// Whether subhost `name` may have rules in the table (its start
/// recorded them), whatever its config says now.
pub fn recorded(records: &Path, name: &str) -> bool {
    record_path(records, name).symlink_metadata().is_ok()
}

/// The socket a batch was committed on, or nothing once it is handed
/// off: closing the last copy of it waits until the kernel has freed the
/// batch's old state (nf_tables flushes the netns's destroy work, an RCU
/// grace period: 1 to 10 ms traced here). A start hands it to a short-lived
/// process of its own that closes it off the critical path; kept here (to
/// be dropped once the init runs) only if that process cannot be made.
pub struct Committed {
    #[allow(dead_code)]
    kept: Option<Nft>,
    /// Reaped on drop, by then long gone.
    #[allow(dead_code)]
    middle: Option<crate::process::Middle>,
}

/// Hands `nft` to a daemon that closes the last copy of it once this
/// process has closed its own (the end of a pipe it holds tells it), and
/// then exits: nothing of the launcher waits for the kernel's flush.
fn close_off_path(nft: Nft) -> Committed {
    use std::os::fd::{AsRawFd, OwnedFd};
    // The write end above the socket: a process that exits closes its
    // files in order, its copy of the socket before its copy of this end.
    let pipe = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(std::io::Error::from)
        .and_then(|(r, w)| {
            let above = crate::sys::dup_above(w.as_raw_fd(), nft.as_raw_fd() + 1)?;
            // SAFETY: dup_above just made this fd; nothing else owns it.
            Ok((r, unsafe {
                <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(above)
            }))
        });
    let Ok((read_end, write_end)) = pipe else {
        return Committed {
            kept: Some(nft),
            middle: None,
        };
    };
    let (sock, wait) = (nft.as_raw_fd(), read_end.as_raw_fd());
    let closer = move || {
        let _ = crate::sys::close_all_but(&[sock, wait]);
        let mut byte = [0u8; 1];
        // EOF: every other copy of the write end, and so of the socket, is
        // closed.
        loop {
            // SAFETY: read(2) into a live local buffer of the length given.
            let n = unsafe { libc::read(wait, byte.as_mut_ptr().cast(), 1) };
            if n >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        // SAFETY: the socket's fd, which this process owns alone now.
        unsafe { libc::close(sock) };
        0
    };
    // SAFETY: the launcher is single-threaded here; the closer leaves
    // through exit_now, having done raw syscalls alone.
    match unsafe { crate::process::daemon_begin(closer) } {
        Ok(middle) => {
            drop(nft);
            drop(write_end);
            drop(read_end);
            Committed {
                kept: None,
                middle: Some(middle),
            }
        }
        Err(_) => Committed {
            kept: Some(nft),
            middle: None,
        },
    }
}

/// Makes the rules of `plan` in one batch, replacing any a start of the
/// subhost that did not clean up left (only such a start leaves a record).
pub fn apply(records: &Path, plan: &Plan) -> anyhow::Result<Committed> {
    let stale = recorded(records, &plan.name);
    let mut specs: Vec<String> = Vec::new();
    for d in &plan.dnat {
        let spec = d.publish.to_string();
        if !specs.contains(&spec) {
            specs.push(spec);
        }
    }
    let text: String = specs.iter().map(|s| format!("{s}\n")).collect();
    crate::state::write_record(&record_path(records, &plan.name), &text)?;
    let mut nft = open()?;
    let mut stale = match stale {
        true => removal(&plan.name, &mut nft)?,
        false => Vec::new(),
    };
    // Its own chain is flushed and kept, not deleted and made again.
    stale.retain(|c| !matches!(c, Change::DelChain(_) | Change::FlushChain(_)));
    let changes = plan.changes(stale);
    let what = format!("publishing the ports of {}", plan.name);
    crate::logging::step(&what, || commit(&mut nft, &changes, &what))?;
    Ok(close_off_path(nft))
}

/// Removes the rules of subhost `name`, in one batch, and then their
/// record; true if there were any. Without a record there are none and
/// the table is not read. The table and its base chains stay: another
/// subhost's start may be adding to them under its own lock.
pub fn remove(records: &Path, name: &str) -> anyhow::Result<bool> {
    if !recorded(records, name) {
        return Ok(false);
    }
    let record = record_path(records, name);
    let mut nft = match Nft::open(TABLE) {
        Ok(n) => Some(n),
        // No nftables in this kernel: nothing was published.
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => None,
        Err(e) => return Err(e).context("opening a netfilter netlink socket"),
    };
    let mut removed = false;
    if let Some(nft) = &mut nft {
        let changes = removal(name, nft)?;
        let what = format!("removing the published ports of {name}");
        commit(nft, &changes, &what)?;
        removed = !changes.is_empty();
    }
    match std::fs::remove_file(&record) {
        Ok(()) => Ok(removed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(removed),
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot remove the record {} ({})",
                record.display(),
                crate::files::removal(&record)
            )
        }),
    }
}

/// What subhost `name` publishes now, read from its chain (nothing, and
/// the table unread, without its record); `None` when the table cannot be
/// read.
pub fn read(records: &Path, name: &str) -> Option<Vec<Published>> {
    if !recorded(records, name) {
        return Some(Vec::new());
    }
    let mut nft = Nft::open(TABLE).ok()?;
    let sh = chain(name);
    let rules = nft.rules().ok()?;
    Some(
        rules
            .iter()
            .filter(|r| r.chain == sh)
            .filter_map(|r| Dnat::from_comment(r.comment.as_deref()?))
            .map(|d| d.published())
            .collect(),
    )
}

/// Refuses `plan` of subhost `name` when another subhost's chain publishes
/// an overlapping port of the same family, or a host process has one of
/// `published` bound, naming the holder.
pub fn check_free(name: &str, published: &[Publish], plan: &Plan) -> anyhow::Result<()> {
    if published.is_empty() {
        return Ok(());
    }
    if !plan.is_empty() {
        let mut nft = open()?;
        let rules = nft
            .rules()
            .map_err(|e| anyhow!("reading nftables table inet {TABLE}: {e}"))?;
        let own = chain(name);
        for r in &rules {
            let Some(other) = r.chain.strip_prefix("sh_") else {
                continue;
            };
            if r.chain == own {
                continue;
            }
            let Some(theirs) = r.comment.as_deref().and_then(Dnat::from_comment) else {
                continue;
            };
            if let Some(mine) = plan.dnat.iter().find(|d| {
                d.to.is_ipv6() == theirs.to.is_ipv6() && d.publish.overlaps(&theirs.publish)
            }) {
                bail!(
                    "cannot publish {} of subhost {name}: subhost {other} publishes {} \
                     (nftables chain inet {TABLE} {}); use another host port, or stop {other} \
                     first (`subhost-launch stop {other}` also removes a chain its failed \
                     start left)",
                    mine.publish,
                    theirs.publish,
                    r.chain
                );
            }
        }
        keep(nft);
    }
    for p in published {
        let wildcards = match p.host {
            Some(ip) => vec![ip],
            None => vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
        };
        let holder = wildcards
            .into_iter()
            .find_map(|ip| crate::holder::of_taken(p.proto, SocketAddr::new(ip, p.host_port)));
        if let Some(holder) = holder {
            bail!(
                "cannot publish {p} of subhost {name}: {} port {} is bound on the host by {holder}; \
                 stop it, or publish another host port",
                p.proto,
                p.host_port
            );
        }
    }
    Ok(())
}

/// Whether the host forwards the families `plan` publishes: DNATed packets
/// from the LAN are forwarded to the subhost's bridge. A text per family
/// that is off.
pub fn forwarding_off(dnat: &[Dnat]) -> Vec<String> {
    let mut out = Vec::new();
    let knobs = [
        (
            false,
            "/proc/sys/net/ipv4/ip_forward",
            "net.ipv4.ip_forward",
        ),
        (
            true,
            "/proc/sys/net/ipv6/conf/all/forwarding",
            "net.ipv6.conf.all.forwarding",
        ),
    ];
    for (v6, file, key) in knobs {
        if !dnat.iter().any(|d| d.to.is_ipv6() == v6) {
            continue;
        }
        let on = std::fs::read_to_string(file).is_ok_and(|s| s.trim() != "0");
        if !on {
            out.push(format!(
                "{key} is 0 on the host, so published IPv{} ports are not reachable from other \
                 machines; set it with `sysctl -w {key}=1` (and in /etc/sysctl.d to keep it)",
                if v6 { 6 } else { 4 }
            ));
        }
    }
    out
}

/// [`forwarding_off`] of what is published now.
pub fn forwarding_off_for(published: &[Published]) -> Vec<String> {
    let dnat: Vec<Dnat> = published
        .iter()
        .map(|p| Dnat {
            publish: Publish {
                proto: p.proto,
                host: p.host_address,
                host_port: p.host_port,
                port: p.port,
            },
            to: SocketAddr::new(p.address, p.port),
        })
        .collect();
    forwarding_off(&dnat)
}
