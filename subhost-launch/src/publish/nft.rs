//! The nftables netlink wire, as much of it as publishing needs: batches of
//! NEWTABLE/NEWCHAIN/NEWRULE/DELRULE/DELCHAIN with the meta, payload, cmp,
//! bitwise, fib, ct, immediate, nat and masq expressions, and dumps of the
//! chains and rules of a table. Encoded by hand on a `netlink-sys` socket:
//! the kept nftables crates either exec `nft` or pull in a C library that a
//! static musl build does not have.

use std::fmt;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_GETGEN: u16 = 16;

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

pub const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// nft's comment: a type-length-value record in the rule's userdata, which
/// `nft list` shows as `comment "…"`.
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

const NFT_REG_VERDICT: u32 = 0;
const REG_A: u32 = 1;
const REG_B: u32 = 2;
const NFT_JUMP: i32 = -3;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 2;
const RTN_LOCAL: u32 = 2;
const NFT_CT_STATUS: u32 = 2;
const IPS_DST_NAT: u32 = 0x20;
const NFT_NAT_DNAT: u32 = 1;
const IFNAMSIZ: usize = 16;

/// A netfilter hook a base chain is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Output = 3,
    Postrouting = 4,
}

/// One match or action of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta nfproto ipv4|ipv6`
    Nfproto {
        v6: bool,
    },
    /// `fib daddr type local`
    DaddrLocal,
    /// `ip daddr A` / `ip6 daddr A`, or `!=` when `not`: the first `len`
    /// bytes of the destination address compared.
    Daddr {
        addr: std::net::IpAddr,
        len: u8,
        not: bool,
    },
    /// `meta l4proto P th dport PORT`
    Dport {
        l4proto: u8,
        port: u16,
    },
    Iifname(String),
    Oifname(String),
    /// `ct status dnat`
    CtStatusDnat,
    /// `dnat ip|ip6 to ADDR:PORT`
    Dnat(std::net::SocketAddr),
    Masquerade,
    Jump(String),
}

/// An error answered by the kernel: its errno, and its extended-ACK text.
#[derive(Debug)]
pub struct NftError {
    pub errno: i32,
    pub detail: Option<String>,
}

impl fmt::Display for NftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.errno))?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl From<std::io::Error> for NftError {
    fn from(e: std::io::Error) -> NftError {
        NftError {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            detail: None,
        }
    }
}

/// Attributes appended to a buffer in netlink's length-type-value form.
struct Buf(Vec<u8>);

impl Buf {
    fn attr(&mut self, kind: u16, data: &[u8]) {
        self.0
            .extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.0.len() % 4 != 0 {
            self.0.push(0);
        }
    }

    fn str(&mut self, kind: u16, s: &str) {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data);
    }

    fn be32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }

    fn nest(&mut self, kind: u16, fill: impl FnOnce(&mut Buf)) {
        let start = self.0.len();
        self.0.extend_from_slice(&[0, 0]);
        self.0
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        fill(self);
        let len = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn value(&mut self, kind: u16, data: &[u8]) {
        self.nest(kind, |b| b.attr(NFTA_DATA_VALUE, data));
    }

    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Buf)) {
        self.nest(NFTA_LIST_ELEM, |b| {
            b.str(NFTA_EXPR_NAME, name);
            b.nest(NFTA_EXPR_DATA, data);
        });
    }

    fn cmp(&mut self, reg: u32, op: u32, data: &[u8]) {
        self.expr("cmp", |b| {
            b.be32(1, reg); // NFTA_CMP_SREG
            b.be32(2, op); // NFTA_CMP_OP
            b.value(3, data); // NFTA_CMP_DATA
        });
    }

    fn meta(&mut self, key: u32, reg: u32) {
        self.expr("meta", |b| {
            b.be32(2, key); // NFTA_META_KEY
            b.be32(1, reg); // NFTA_META_DREG
        });
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32, reg: u32) {
        self.expr("payload", |b| {
            b.be32(1, reg); // NFTA_PAYLOAD_DREG
            b.be32(2, base); // NFTA_PAYLOAD_BASE
            b.be32(3, offset); // NFTA_PAYLOAD_OFFSET
            b.be32(4, len); // NFTA_PAYLOAD_LEN
        });
    }

    fn immediate(&mut self, reg: u32, data: &[u8]) {
        self.expr("immediate", |b| {
            b.be32(1, reg); // NFTA_IMMEDIATE_DREG
            b.value(2, data); // NFTA_IMMEDIATE_DATA
        });
    }

    fn encode(&mut self, e: &Expr) {
        match e {
            Expr::Nfproto { v6 } => {
                self.meta(NFT_META_NFPROTO, REG_A);
                let p = if *v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 };
                self.cmp(REG_A, NFT_CMP_EQ, &[p]);
            }
            Expr::DaddrLocal => {
                self.expr("fib", |b| {
                    b.be32(1, REG_A); // NFTA_FIB_DREG
                    b.be32(2, NFT_FIB_RESULT_ADDRTYPE); // NFTA_FIB_RESULT
                    b.be32(3, NFTA_FIB_F_DADDR); // NFTA_FIB_FLAGS
                });
                self.cmp(REG_A, NFT_CMP_EQ, &RTN_LOCAL.to_ne_bytes());
            }
            Expr::Daddr { addr, len, not } => {
                let (offset, bytes) = match addr {
                    std::net::IpAddr::V4(a) => (16, a.octets().to_vec()),
                    std::net::IpAddr::V6(a) => (24, a.octets().to_vec()),
                };
                let len = usize::from(*len).min(bytes.len());
                self.payload(NFT_PAYLOAD_NETWORK_HEADER, offset, len as u32, REG_A);
                let op = if *not { NFT_CMP_NEQ } else { NFT_CMP_EQ };
                self.cmp(REG_A, op, &bytes[..len]);
            }
            Expr::Dport { l4proto, port } => {
                self.meta(NFT_META_L4PROTO, REG_A);
                self.cmp(REG_A, NFT_CMP_EQ, &[*l4proto]);
                self.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, REG_A);
                self.cmp(REG_A, NFT_CMP_EQ, &port.to_be_bytes());
            }
            Expr::Iifname(n) | Expr::Oifname(n) => {
                let key = match e {
                    Expr::Iifname(_) => NFT_META_IIFNAME,
                    _ => NFT_META_OIFNAME,
                };
                self.meta(key, REG_A);
                let mut name = [0u8; IFNAMSIZ];
                let n = n.as_bytes();
                name[..n.len().min(IFNAMSIZ - 1)].copy_from_slice(&n[..n.len().min(IFNAMSIZ - 1)]);
                self.cmp(REG_A, NFT_CMP_EQ, &name);
            }
            Expr::CtStatusDnat => {
                self.expr("ct", |b| {
                    b.be32(2, NFT_CT_STATUS); // NFTA_CT_KEY
                    b.be32(1, REG_A); // NFTA_CT_DREG
                });
                self.expr("bitwise", |b| {
                    b.be32(1, REG_A); // NFTA_BITWISE_SREG
                    b.be32(2, REG_A); // NFTA_BITWISE_DREG
                    b.be32(3, 4); // NFTA_BITWISE_LEN
                    b.value(4, &IPS_DST_NAT.to_ne_bytes()); // NFTA_BITWISE_MASK
                    b.value(5, &0u32.to_ne_bytes()); // NFTA_BITWISE_XOR
                });
                self.cmp(REG_A, NFT_CMP_NEQ, &0u32.to_ne_bytes());
            }
            Expr::Dnat(to) => {
                let (family, addr) = match to.ip() {
                    std::net::IpAddr::V4(a) => (NFPROTO_IPV4, a.octets().to_vec()),
                    std::net::IpAddr::V6(a) => (NFPROTO_IPV6, a.octets().to_vec()),
                };
                self.immediate(REG_A, &addr);
                self.immediate(REG_B, &to.port().to_be_bytes());
                self.expr("nat", |b| {
                    b.be32(1, NFT_NAT_DNAT); // NFTA_NAT_TYPE
                    b.be32(2, family.into()); // NFTA_NAT_FAMILY
                    b.be32(3, REG_A); // NFTA_NAT_REG_ADDR_MIN
                    b.be32(5, REG_B); // NFTA_NAT_REG_PROTO_MIN
                });
            }
            Expr::Masquerade => self.expr("masq", |_| {}),
            Expr::Jump(chain) => self.expr("immediate", |b| {
                b.be32(1, NFT_REG_VERDICT);
                b.nest(2, |b| {
                    b.nest(NFTA_DATA_VERDICT, |b| {
                        b.be32(NFTA_VERDICT_CODE, NFT_JUMP as u32);
                        b.str(NFTA_VERDICT_CHAIN, chain);
                    })
                });
            }),
        }
    }
}

/// One change of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The table, made if missing (never flushed).
    AddTable,
    /// A base chain of type nat, made if missing.
    AddBaseChain {
        name: &'static str,
        hook: Hook,
        priority: i32,
    },
    /// A regular chain, made if missing.
    AddChain(String),
    /// Every rule of a chain deleted.
    FlushChain(String),
    DelChain(String),
    /// A rule appended to a chain, with a comment.
    AddRule {
        chain: String,
        exprs: Vec<Expr>,
        comment: String,
    },
    /// A rule deleted by its handle.
    DelRule {
        chain: String,
        handle: u64,
    },
}

/// An open NETLINK_NETFILTER socket in the caller's network namespace.
pub struct Nft {
    sock: Socket,
    seq: u32,
    table: String,
}

/// A rule as a dump shows it: where it is, its handle and its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

impl std::os::fd::AsRawFd for Nft {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

impl Nft {
    pub fn open(table: &str) -> std::io::Result<Nft> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.set_ext_ack(true)?;
        sock.set_cap_ack(true)?;
        Ok(Nft {
            sock,
            seq: 0,
            table: table.to_string(),
        })
    }

    fn message(&mut self, out: &mut Vec<u8>, kind: u16, flags: u16, family: u8, attrs: &Buf) {
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + 4 + attrs.0.len();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        out.extend_from_slice(&self.seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version 0, resource id (the subsystem, for a
        // batch's begin and end).
        let res_id: u16 = match kind {
            NFNL_MSG_BATCH_BEGIN | NFNL_MSG_BATCH_END => NFNL_SUBSYS_NFTABLES,
            _ => 0,
        };
        out.push(family);
        out.push(0);
        out.extend_from_slice(&res_id.to_be_bytes());
        out.extend_from_slice(&attrs.0);
    }

    fn nft_type(msg: u16) -> u16 {
        (NFNL_SUBSYS_NFTABLES << 8) | msg
    }

    /// Applies `changes` in one batch: all of them, or (on an error, which
    /// names the change that failed) none.
    pub fn commit(&mut self, changes: &[Change]) -> Result<(), (usize, NftError)> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        self.message(&mut out, NFNL_MSG_BATCH_BEGIN, 0, 0, &Buf(Vec::new()));
        let first = self.seq.wrapping_add(1);
        for c in changes {
            let (kind, flags, attrs) = self.encode(c);
            self.message(
                &mut out,
                Self::nft_type(kind),
                flags | NLM_F_ACK,
                NFPROTO_INET,
                &attrs,
            );
        }
        self.message(&mut out, NFNL_MSG_BATCH_END, 0, 0, &Buf(Vec::new()));
        self.sock.send(&out, 0).map_err(|e| (0, e.into()))?;
        // The answer to a request sent after the batch comes after every
        // answer to the batch: read up to it, keeping the first error.
        let mut fence = Vec::new();
        self.message(
            &mut fence,
            Self::nft_type(NFT_MSG_GETGEN),
            NLM_F_ACK,
            0,
            &Buf(Vec::new()),
        );
        let fence_seq = self.seq;
        self.sock.send(&fence, 0).map_err(|e| (0, e.into()))?;
        let mut failed = None;
        self.read(
            fence_seq,
            |seq, _, _| seq == fence_seq,
            |seq, err| {
                if seq != fence_seq && failed.is_none() {
                    let i = seq.wrapping_sub(first) as usize;
                    failed = Some((i.min(changes.len() - 1), err));
                }
            },
        )
        .map_err(|e| (0, e))?;
        match failed {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    fn encode(&self, c: &Change) -> (u16, u16, Buf) {
        let mut b = Buf(Vec::new());
        let table = self.table.as_str();
        match c {
            Change::AddTable => {
                b.str(NFTA_TABLE_NAME, table);
                (NFT_MSG_NEWTABLE, NLM_F_CREATE, b)
            }
            Change::AddBaseChain {
                name,
                hook,
                priority,
            } => {
                b.str(NFTA_CHAIN_TABLE, table);
                b.str(NFTA_CHAIN_NAME, name);
                b.nest(NFTA_CHAIN_HOOK, |b| {
                    b.be32(NFTA_HOOK_HOOKNUM, *hook as u32);
                    b.be32(NFTA_HOOK_PRIORITY, *priority as u32);
                });
                b.str(NFTA_CHAIN_TYPE, "nat");
                (NFT_MSG_NEWCHAIN, NLM_F_CREATE, b)
            }
            Change::AddChain(name) => {
                b.str(NFTA_CHAIN_TABLE, table);
                b.str(NFTA_CHAIN_NAME, name);
                (NFT_MSG_NEWCHAIN, NLM_F_CREATE, b)
            }
            Change::DelChain(name) => {
                b.str(NFTA_CHAIN_TABLE, table);
                b.str(NFTA_CHAIN_NAME, name);
                (NFT_MSG_DELCHAIN, 0, b)
            }
            Change::FlushChain(name) => {
                b.str(NFTA_RULE_TABLE, table);
                b.str(NFTA_RULE_CHAIN, name);
                (NFT_MSG_DELRULE, 0, b)
            }
            Change::DelRule { chain, handle } => {
                b.str(NFTA_RULE_TABLE, table);
                b.str(NFTA_RULE_CHAIN, chain);
                b.attr(NFTA_RULE_HANDLE, &handle.to_be_bytes());
                (NFT_MSG_DELRULE, 0, b)
            }
            Change::AddRule {
                chain,
                exprs,
                comment,
            } => {
                b.str(NFTA_RULE_TABLE, table);
                b.str(NFTA_RULE_CHAIN, chain);
                b.nest(NFTA_RULE_EXPRESSIONS, |b| {
                    for e in exprs {
                        b.encode(e);
                    }
                });
                let text = comment.as_bytes();
                // nft's limit for a comment, NUL included.
                let text = &text[..text.len().min(127)];
                let mut udata = vec![NFTNL_UDATA_RULE_COMMENT, (text.len() + 1) as u8];
                udata.extend_from_slice(text);
                udata.push(0);
                b.attr(NFTA_RULE_USERDATA, &udata);
                (NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, b)
            }
        }
    }

    /// Reads answers: `each` gets every message (seq, type, attributes)
    /// and says when the last one came; `error` gets every error (NLMSG_ERROR
    /// with a code). Stops after a DONE or an ACK of a message `each`
    /// accepts as the last.
    fn read(
        &mut self,
        last_seq: u32,
        mut each: impl FnMut(u32, u16, &[u8]) -> bool,
        mut error: impl FnMut(u32, NftError),
    ) -> Result<(), NftError> {
        let mut buf = Vec::with_capacity(1 << 16);
        loop {
            buf.clear();
            self.sock.recv(&mut buf, 0)?;
            let mut off = 0;
            while off + 16 <= buf.len() {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                if len < 16 || off + len > buf.len() {
                    break;
                }
                let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
                let body = &buf[off + 16..off + len];
                off += (len + 3) & !3;
                match kind {
                    NLMSG_DONE if seq == last_seq => return Ok(()),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
                            .unwrap_or(0);
                        if code != 0 {
                            error(
                                seq,
                                NftError {
                                    errno: -code,
                                    detail: crate::netns::ext_ack_message(
                                        body.get(4..).unwrap_or(&[]),
                                    ),
                                },
                            );
                        }
                        if seq == last_seq && (code != 0 || each(seq, kind, &[])) {
                            return Ok(());
                        }
                    }
                    // A GETGEN answers with a message, then its ACK.
                    _ if seq == last_seq && body.len() >= 4 => {
                        each(seq, kind, &body[4..]);
                    }
                    _ => {}
                }
            }
        }
    }

    /// The chains of the table (none when it does not exist).
    pub fn chains(&mut self) -> Result<Vec<String>, NftError> {
        let mut out = Vec::new();
        let table = self.table.clone();
        self.dump(
            (NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN),
            NFTA_CHAIN_TABLE,
            |attrs| {
                if attr_str(attrs, NFTA_CHAIN_TABLE).as_deref() == Some(table.as_str()) {
                    if let Some(name) = attr_str(attrs, NFTA_CHAIN_NAME) {
                        out.push(name);
                    }
                }
            },
        )?;
        Ok(out)
    }

    /// The rules of the table, every chain (none when it does not exist).
    pub fn rules(&mut self) -> Result<Vec<Rule>, NftError> {
        let mut out = Vec::new();
        let table = self.table.clone();
        self.dump(
            (NFT_MSG_GETRULE, NFT_MSG_NEWRULE),
            NFTA_RULE_TABLE,
            |attrs| {
                if attr_str(attrs, NFTA_RULE_TABLE).as_deref() != Some(table.as_str()) {
                    return;
                }
                let (Some(chain), Some(handle)) = (
                    attr_str(attrs, NFTA_RULE_CHAIN),
                    attr(attrs, NFTA_RULE_HANDLE)
                        .and_then(|h| Some(u64::from_be_bytes(h.try_into().ok()?))),
                ) else {
                    return;
                };
                let comment = attr(attrs, NFTA_RULE_USERDATA).and_then(comment);
                out.push(Rule {
                    chain,
                    handle,
                    comment,
                });
            },
        )?;
        Ok(out)
    }

    /// Dumps with request `msg.0`, whose answers are of type `msg.1`.
    fn dump(
        &mut self,
        msg: (u16, u16),
        table_attr: u16,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), NftError> {
        let mut out = Vec::new();
        let mut b = Buf(Vec::new());
        b.str(table_attr, &self.table.clone());
        self.message(
            &mut out,
            Self::nft_type(msg.0),
            NLM_F_DUMP,
            NFPROTO_INET,
            &b,
        );
        let seq = self.seq;
        self.sock.send(&out, 0)?;
        let mut failed = None;
        self.read(
            seq,
            |_, kind, attrs| {
                if kind == Self::nft_type(msg.1) {
                    each(attrs);
                }
                false
            },
            |_, e| failed = Some(e),
        )?;
        match failed {
            // No table, nothing in it.
            Some(e) if e.errno == libc::ENOENT => Ok(()),
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn attr(attrs: &[u8], kind: u16) -> Option<&[u8]> {
    let mut rest = attrs;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let k = u16::from_ne_bytes([rest[2], rest[3]]) & !NLA_F_NESTED;
        if len < 4 || len > rest.len() {
            return None;
        }
        if k == kind {
            return Some(&rest[4..len]);
        }
        rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
    }
    None
}

fn attr_str(attrs: &[u8], kind: u16) -> Option<String> {
    let v = attr(attrs, kind)?;
    let v = v.split(|&b| b == 0).next().unwrap_or(v);
    Some(String::from_utf8_lossy(v).into_owned())
}

/// The comment record of a rule's userdata.
fn comment(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if kind == NFTNL_UDATA_RULE_COMMENT {
            let v = value.split(|&b| b == 0).next().unwrap_or(value);
            return Some(String::from_utf8_lossy(v).into_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}

/// The expressions of a rule as `nft` writes them.
pub fn render(exprs: &[Expr]) -> String {
    let mut words = Vec::new();
    for e in exprs {
        words.push(match e {
            Expr::Nfproto { v6 } => format!("meta nfproto {}", if *v6 { "ipv6" } else { "ipv4" }),
            Expr::DaddrLocal => "fib daddr type local".into(),
            Expr::Daddr { addr, len, not } => {
                let (fam, full) = match addr {
                    std::net::IpAddr::V4(_) => ("ip", 4),
                    std::net::IpAddr::V6(_) => ("ip6", 16),
                };
                let op = if *not { "!= " } else { "" };
                match *len == full {
                    true => format!("{fam} daddr {op}{addr}"),
                    false => format!("{fam} daddr {op}{addr}/{}", u32::from(*len) * 8),
                }
            }
            Expr::Dport { l4proto, port } => {
                let p = if *l4proto == libc::IPPROTO_TCP as u8 {
                    "tcp"
                } else {
                    "udp"
                };
                format!("{p} dport {port}")
            }
            Expr::Iifname(n) => format!("iifname \"{n}\""),
            Expr::Oifname(n) => format!("oifname \"{n}\""),
            Expr::CtStatusDnat => "ct status dnat".into(),
            Expr::Dnat(to) => match to {
                std::net::SocketAddr::V4(_) => format!("dnat ip to {to}"),
                std::net::SocketAddr::V6(_) => format!("dnat ip6 to {to}"),
            },
            Expr::Masquerade => "masquerade".into(),
            Expr::Jump(c) => format!("jump {c}"),
        });
    }
    words.join(" ")
}
