//! The route netlink wire: the messages the launcher sends and a blocking
//! socket that sends one request and reads until its ACK.

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use super::Link;

pub(super) fn link_message(ifname: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(ifname.into()));
    msg
}

pub(super) fn get_link(ifname: &str) -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(link_message(ifname))
}

pub(super) fn del_link(ifname: &str) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelLink(link_message(ifname))
}

pub(super) fn set_up(ifname: &str) -> RouteNetlinkMessage {
    let mut msg = link_message(ifname);
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(msg)
}

/// One request for the whole cable: veth, host end up on its bridge, peer
/// with its MAC moved into the namespace.
pub(super) fn new_veth(link: &Link, master: Option<u32>, nsfd: &OwnedFd) -> RouteNetlinkMessage {
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
pub(super) struct NlError {
    pub(super) errno: i32,
    pub(super) detail: Option<String>,
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
pub(super) struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub(super) fn open() -> std::io::Result<Netlink> {
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
    pub(super) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Option<RouteNetlinkMessage>, NlError> {
        Ok(self.exchange(msg, NLM_F_ACK | flags)?.pop())
    }

    /// Sends every request of `msgs` (each with an ACK request and its
    /// flags) in one write, and reads the answers of all of them: the
    /// kernel handles the requests of a write in order, and goes on after
    /// one that fails. Per request, what [`Netlink::request`] returns.
    pub(super) fn batch(
        &mut self,
        msgs: Vec<(RouteNetlinkMessage, u16)>,
    ) -> Result<Vec<Result<Option<RouteNetlinkMessage>, NlError>>, NlError> {
        let count = msgs.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        let first = self.seq.wrapping_add(1);
        let mut out = Vec::new();
        for (msg, flags) in msgs {
            self.append(&mut out, msg, NLM_F_ACK | flags);
        }
        let mut answers: Vec<Option<Result<Option<RouteNetlinkMessage>, NlError>>> =
            (0..count).map(|_| None).collect();
        let mut got: Vec<Option<RouteNetlinkMessage>> = (0..count).map(|_| None).collect();
        self.sock.send(&out, 0)?;
        let mut left = count;
        self.receive(|reply| {
            let i = reply.header.sequence_number.wrapping_sub(first) as usize;
            if i >= count || answers[i].is_some() {
                return Ok(false);
            }
            let done = match reply.payload {
                NetlinkPayload::Error(err) => Some(match err.code {
                    None => Ok(got[i].take()),
                    Some(code) => Err(NlError {
                        errno: -code.get(),
                        detail: ext_ack_message(&err.header),
                    }),
                }),
                NetlinkPayload::Done(_) => Some(Ok(got[i].take())),
                NetlinkPayload::InnerMessage(inner) => {
                    got[i] = Some(inner);
                    None
                }
                _ => None,
            };
            if done.is_some() {
                answers[i] = done;
                left -= 1;
            }
            Ok(left == 0)
        })?;
        Ok(answers
            .into_iter()
            .map(|a| a.expect("every request answered"))
            .collect())
    }

    /// Sends the dump request `msg` and collects every message answered
    /// until the kernel's DONE.
    pub(super) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.exchange(msg, NLM_F_DUMP)
    }

    /// Sends `msg` with `flags` and collects the messages answered to it
    /// until the kernel's ACK (an error of code 0) or DONE; an error is
    /// returned with the kernel's text.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        let mut out = Vec::new();
        self.append(&mut out, msg, flags);
        self.sock.send(&out, 0)?;
        let seq = self.seq;
        let mut answers = Vec::new();
        let mut failed = None;
        self.receive(|reply| {
            if reply.header.sequence_number != seq {
                return Ok(false);
            }
            Ok(match reply.payload {
                NetlinkPayload::Done(_) => true,
                NetlinkPayload::Error(err) => {
                    if let Some(code) = err.code {
                        failed = Some(NlError {
                            errno: -code.get(),
                            detail: ext_ack_message(&err.header),
                        });
                    }
                    true
                }
                NetlinkPayload::InnerMessage(inner) => {
                    answers.push(inner);
                    false
                }
                _ => false,
            })
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(answers),
        }
    }

    /// Appends `msg` as a request with the next sequence number and
    /// `flags`, 4-aligned as the kernel reads a batch.
    fn append(&mut self, out: &mut Vec<u8>, msg: RouteNetlinkMessage, flags: u16) {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let at = out.len();
        out.resize(at + packet.buffer_len(), 0);
        packet.serialize(&mut out[at..]);
        out.resize((out.len() + 3) & !3, 0);
    }

    /// Reads the kernel's answers, one datagram at a time, and hands each
    /// message in them to `take` until it returns true (the last awaited).
    fn receive(
        &mut self,
        mut take: impl FnMut(NetlinkMessage<RouteNetlinkMessage>) -> Result<bool, NlError>,
    ) -> Result<(), NlError> {
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
                if take(reply)? {
                    return Ok(());
                }
            }
        }
    }
}

/// The NLMSGERR_ATTR_MSG text of an error whose request was capped to its
/// 16-byte header (NETLINK_CAP_ACK).
pub(crate) fn ext_ack_message(payload: &[u8]) -> Option<String> {
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
