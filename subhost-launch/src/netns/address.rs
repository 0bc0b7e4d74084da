//! The addresses and default routes of a subhost's cables (`ADDRESS`,
//! `GATEWAY`, `GATEWAY6`): set inside its netns over netlink when the netns
//! is made, and read back from it for `status`.

use std::fmt;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;

use anyhow::anyhow;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::sched::{setns, CloneFlags};

use super::netlink::{get_link, Netlink};

/// An interface address with its prefix length: `10.0.0.5/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

impl Address {
    /// `ADDR/PREFIX`; the error says what is wrong and how to fix it.
    pub fn parse(s: &str) -> Result<Address, (String, String)> {
        let usage = "write ADDRESS/PREFIX, e.g. 10.0.0.5/24 or fd00::5/64";
        let Some((ip, prefix)) = s.split_once('/') else {
            return Err((format!("{s:?} has no prefix length"), usage.into()));
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| (format!("{ip:?} is not an IP address"), usage.to_string()))?;
        let max = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix.parse::<u8>() {
            Ok(p) if p <= max && prefix.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => {
                return Err((
                    format!("prefix length {prefix:?} of {s} is out of range: 0 to {max}"),
                    usage.into(),
                ))
            }
        };
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            return Err((
                format!(
                    "{ip} is no address an interface can have (unspecified, multicast or loopback)"
                ),
                usage.into(),
            ));
        }
        Ok(Address { ip, prefix })
    }

    /// Whether `ip` is in this address's subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.ip, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// What a netns gets on its cables besides the links: addresses on the
/// inner ends, and default routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addressing {
    /// Inner interface (`ethN`) and an address for it, in config order.
    pub addresses: Vec<(String, Address)>,
    pub gateway: Option<Ipv4Addr>,
    pub gateway6: Option<Ipv6Addr>,
}

impl Addressing {
    /// The `ip` commands these replace, one per line, in the order they are
    /// made: addresses, then routes.
    pub fn steps(&self, ns: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .addresses
            .iter()
            .map(|(ifname, a)| format!("ip -n {ns} addr add {a} dev {ifname}"))
            .collect();
        if let Some(gw) = self.gateway {
            out.push(format!("ip -n {ns} route add default via {gw}"));
        }
        if let Some(gw) = self.gateway6 {
            out.push(format!("ip -n {ns} -6 route add default via {gw}"));
        }
        out
    }

    /// Sets the addresses and routes over `inner`, a socket of the netns
    /// `ns` whose links are up: two writes, one for the interfaces'
    /// indices and one for every address and route, each answered at once.
    /// What fails is reported as its step; after a failure the caller
    /// removes the netns, so the requests the kernel went on with are gone.
    pub(super) fn apply(&self, ns: &str, inner: &mut Netlink) -> anyhow::Result<()> {
        if self.addresses.is_empty() && self.gateway.is_none() && self.gateway6.is_none() {
            return Ok(());
        }
        let steps = self.steps(ns);
        let mut ifnames: Vec<&str> = Vec::new();
        for (ifname, _) in &self.addresses {
            if !ifnames.contains(&ifname.as_str()) {
                ifnames.push(ifname);
            }
        }
        let lookups = ifnames.iter().map(|i| (get_link(i), 0)).collect();
        let found = match ifnames.is_empty() {
            true => Vec::new(),
            false => inner
                .batch(lookups)
                .map_err(|e| anyhow!("{}: inside netns {ns}: {e}", steps[0]))?,
        };
        let mut indices = Vec::new();
        for (ifname, answer) in ifnames.iter().zip(found) {
            let index = match answer {
                Ok(Some(RouteNetlinkMessage::NewLink(msg))) => Ok(msg.header.index),
                Ok(_) => Err(super::netlink::NlError {
                    errno: libc::ENODEV,
                    detail: None,
                }),
                Err(e) => Err(e),
            };
            indices.push(index.map_err(|e| {
                let what = self
                    .addresses
                    .iter()
                    .position(|(i, _)| i == ifname)
                    .map_or("", |at| steps[at].as_str());
                anyhow!("{what}: looking up {ifname} inside netns {ns}: {e}")
            })?);
        }
        let mut requests = Vec::new();
        for (ifname, addr) in &self.addresses {
            let at = ifnames.iter().position(|i| i == ifname).expect("looked up");
            requests.push((new_address(indices[at], addr), NLM_F_CREATE | NLM_F_EXCL));
        }
        let gateways: Vec<IpAddr> = [self.gateway.map(IpAddr::V4), self.gateway6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
            .collect();
        for gw in &gateways {
            requests.push((default_route(*gw), NLM_F_CREATE | NLM_F_EXCL));
        }
        // Logged as the steps they are; timed as the one write they make.
        for what in &steps {
            log::info!("{what}");
        }
        let t = std::time::Instant::now();
        let answers = inner
            .batch(requests)
            .map_err(|e| anyhow!("{}: {e}", steps[0]))?;
        log::debug!(
            "{:.3} ms: the {} steps above, in one netlink write",
            t.elapsed().as_secs_f64() * 1000.0,
            steps.len()
        );
        for (i, (what, answer)) in steps.iter().zip(answers).enumerate() {
            if let Err(e) = answer {
                return Err(match i < self.addresses.len() {
                    true => anyhow!("{what}: {e}"),
                    false => anyhow!("{what}: {e} (is the gateway in the subnet of an ADDRESS?)"),
                });
            }
        }
        Ok(())
    }
}

fn index_of(sock: &mut Netlink, ifname: &str) -> Result<u32, super::netlink::NlError> {
    match sock.request(get_link(ifname), 0)? {
        Some(RouteNetlinkMessage::NewLink(msg)) => Ok(msg.header.index),
        _ => Err(super::netlink::NlError {
            errno: libc::ENODEV,
            detail: None,
        }),
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// `ip addr add A/P dev IF`: IFA_LOCAL and IFA_ADDRESS both the address, and
/// for IPv4 the subnet's broadcast, as `ip` sends it.
fn new_address(index: u32, addr: &Address) -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family(addr.ip);
    msg.header.prefix_len = addr.prefix;
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(addr.ip));
    msg.attributes.push(AddressAttribute::Address(addr.ip));
    if let IpAddr::V4(v4) = addr.ip {
        if addr.prefix < 31 {
            let host = u32::MAX >> addr.prefix;
            let bcast = Ipv4Addr::from(u32::from(v4) | host);
            msg.attributes.push(AddressAttribute::Broadcast(bcast));
        }
    }
    RouteNetlinkMessage::NewAddress(msg)
}

/// `ip route add default via GW` in the main table.
fn default_route(gw: IpAddr) -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(gw);
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes.push(RouteAttribute::Gateway(match gw {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }));
    RouteNetlinkMessage::NewRoute(msg)
}

/// The addresses each of `ifnames` has now in netns `ns` (global scope and
/// link-local alike, as `ip addr` lists them), in the order of `ifnames`;
/// `None` when the netns cannot be read (absent, or not the caller's to
/// enter).
pub fn read(ns: &str, ifnames: &[String]) -> Option<Vec<Vec<Address>>> {
    let nsfd = super::open(ns).ok()?;
    let home = File::open("/proc/thread-self/ns/net").ok()?;
    setns(nsfd.as_fd(), CloneFlags::CLONE_NEWNET).ok()?;
    // A netlink socket stays in the netns it was opened in.
    let sock = Netlink::open();
    // Reading on from the subhost's netns would report its links as the
    // host's: a thread that cannot return must not go on.
    setns(home.as_fd(), CloneFlags::CLONE_NEWNET)
        .expect("returning to the original network namespace (setns) failed");
    let mut sock = sock.ok()?;
    let indices: Vec<Option<u32>> = ifnames
        .iter()
        .map(|i| index_of(&mut sock, i).ok())
        .collect();
    let all = sock
        .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
        .ok()?;
    let mut out = vec![Vec::new(); ifnames.len()];
    for msg in all {
        let RouteNetlinkMessage::NewAddress(msg) = msg else {
            continue;
        };
        let Some(slot) = indices.iter().position(|i| *i == Some(msg.header.index)) else {
            continue;
        };
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's
        // on point-to-point links, and the only one IPv6 sends.
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let ip = local.or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        });
        if let Some(ip) = ip {
            out[slot].push(Address {
                ip,
                prefix: msg.header.prefix_len,
            });
        }
    }
    Some(out)
}
