//! The checks of single values: each turns the text of a value into what
//! the `Config` holds, or says what is wrong with it and how to fix it. They
//! know nothing of keys or lines; `keys` says which check a key's value
//! goes through and where an error is placed.

use std::path::{Component, Path, PathBuf};

use super::{capability_number, Cable, Share, CAPABILITIES, CPU_PERIOD};

/// A problem with a value, before it is placed at a line.
#[derive(Debug)]
pub(super) struct ValueError {
    pub(super) what: String,
    pub(super) fix: String,
}

impl ValueError {
    pub(super) fn new(what: impl Into<String>, fix: impl Into<String>) -> ValueError {
        ValueError {
            what: what.into(),
            fix: fix.into(),
        }
    }
}

pub(super) fn invalid<T>(what: impl Into<String>, fix: impl Into<String>) -> Result<T, ValueError> {
    Err(ValueError::new(what, fix))
}

pub(super) fn lower(s: &str) -> Result<Vec<PathBuf>, ValueError> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(':')
        .map(|p| {
            if p.is_empty() {
                return invalid(
                    format!("{s:?} has an empty path (a leading, trailing or doubled `:`)"),
                    "separate absolute paths with single colons, e.g. /a:/b",
                );
            }
            if !p.starts_with('/') {
                return invalid(format!("{p:?} is not an absolute path"), "start it with /");
            }
            if p.contains(',') {
                return invalid(
                    format!("{p:?} contains a comma, which would split the overlay mount options"),
                    "use a path without commas",
                );
            }
            Ok(PathBuf::from(p))
        })
        .collect()
}

pub(super) fn cable(s: &str) -> Result<Cable, ValueError> {
    let (bridge, mac) = match s.split_once('=') {
        Some((b, m)) => (b, Some(m)),
        None => (s, None),
    };
    let bridge = if bridge.is_empty() {
        None
    } else {
        Some(ifname(bridge)?)
    };
    let mac = match mac {
        None | Some("") => None,
        Some(m) => Some(mac_address(m)?),
    };
    Ok(Cable { bridge, mac })
}

/// An `ADDRESS` element: `[ethN:]ADDR/PREFIX`, cable 0 without `ethN:`.
pub(super) fn address(s: &str) -> Result<(usize, crate::netns::Address), ValueError> {
    let (cable, addr) = match s.strip_prefix("eth").and_then(|r| r.split_once(':')) {
        Some((n, addr)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            match n.parse::<usize>() {
                Ok(i) if i.to_string() == n => (i, addr),
                _ => {
                    return invalid(
                        format!("{s:?}: eth{n} is no cable name"),
                        "name the cable as eth0, eth1... (its place in BRIDGES)",
                    )
                }
            }
        }
        _ => (0, s),
    };
    let address =
        crate::netns::Address::parse(addr).map_err(|(what, fix)| ValueError::new(what, fix))?;
    Ok((cable, address))
}

/// A `GATEWAY` (`v6` false) or `GATEWAY6` address; empty is none.
pub(super) fn gateway(s: &str, v6: bool) -> Result<Option<std::net::IpAddr>, ValueError> {
    if s.is_empty() {
        return Ok(None);
    }
    let example = if v6 {
        "GATEWAY6=fd00::1"
    } else {
        "GATEWAY=10.0.0.1"
    };
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_ipv6() == v6 && !ip.is_unspecified() && !ip.is_multicast() => Ok(Some(ip)),
        Ok(ip) if ip.is_ipv6() != v6 => invalid(
            format!("{s} is an IPv{} address", if ip.is_ipv6() { 6 } else { 4 }),
            format!("GATEWAY takes IPv4 and GATEWAY6 IPv6, e.g. {example}"),
        ),
        Ok(_) => invalid(
            format!("{s} cannot be a gateway"),
            format!("e.g. {example}"),
        ),
        Err(_) => invalid(
            format!("{s:?} is not an IP address"),
            format!("give the router's address, without a prefix, e.g. {example}"),
        ),
    }
}

/// The kernel's rules for interface names (`dev_valid_name`).
fn ifname(n: &str) -> Result<String, ValueError> {
    if n.len() >= libc::IFNAMSIZ {
        return invalid(
            format!(
                "bridge name {n:?} has {} bytes; interface names have at most {}",
                n.len(),
                libc::IFNAMSIZ - 1
            ),
            "use the bridge's name as `ip link` shows it",
        );
    }
    if n == "." || n == ".." {
        return invalid(
            format!("{n:?} is not an interface name"),
            "use the bridge's name as `ip link` shows it",
        );
    }
    if let Some(c) = n
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace())
    {
        return invalid(
            format!("bridge name {n:?} contains {c:?}, which interface names cannot"),
            "use the bridge's name as `ip link` shows it",
        );
    }
    Ok(n.to_string())
}

fn mac_address(m: &str) -> Result<[u8; 6], ValueError> {
    let usage = "write six hex pairs separated by colons, e.g. 02:00:00:00:01:01";
    let parts: Vec<&str> = m.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != mac.len() {
        return invalid(format!("{m:?} is not a MAC address"), usage);
    }
    for (byte, part) in mac.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return invalid(format!("{m:?} is not a MAC address"), usage);
        }
        *byte = match u8::from_str_radix(part, 16) {
            Ok(b) => b,
            Err(_) => return invalid(format!("{m:?} is not a MAC address"), usage),
        };
    }
    if mac[0] & 1 != 0 {
        let mut fixed = mac;
        fixed[0] = (fixed[0] & !1) | 2;
        return invalid(
            format!("{m} is a multicast address (the low bit of the first octet is set), which an interface cannot have"),
            format!("use a unicast address, e.g. {} (locally administered)", crate::netns::mac_string(&fixed)),
        );
    }
    if mac == [0; 6] {
        return invalid(
            format!("{m} is not a valid interface address"),
            "use e.g. 02:00:00:00:01:01",
        );
    }
    Ok(mac)
}

pub(super) fn hostname(s: &str) -> Result<String, ValueError> {
    let usage = "use dot-separated labels of letters, digits, '-' and '_', e.g. web-1.example";
    if s.is_empty() {
        return invalid(
            "is empty",
            "give a name, or remove the line to use the subhost's NAME",
        );
    }
    // The kernel's limit (__NEW_UTS_LEN).
    if s.len() > 64 {
        return invalid(
            format!("{s:?} has {} bytes; at most 64 are allowed", s.len()),
            "shorten it",
        );
    }
    host_labels(s, usage)?;
    Ok(s.to_string())
}

pub(super) fn share(s: &str) -> Result<Share, ValueError> {
    let usage = "write /host/path or /host/path:/inner/path";
    let (host, inner) = s.split_once(':').unwrap_or((s, s));
    for (what, p) in [("host path", host), ("inner path", inner)] {
        if p.is_empty() {
            return invalid(format!("{s:?} has an empty {what}"), usage);
        }
        if !p.starts_with('/') {
            return invalid(format!("the {what} {p:?} is not absolute"), usage);
        }
    }
    let inner = Path::new(inner);
    if inner.components().any(|c| c == Component::ParentDir) {
        return invalid(
            format!("the inner path {inner:?} contains `..`, which could lead outside the subhost"),
            "write the path inside the subhost without `..`",
        );
    }
    if inner
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::CurDir))
    {
        return invalid(
            format!("the inner path {inner:?} is the subhost's root"),
            "mount the share on a directory inside it, e.g. /mnt/data",
        );
    }
    Ok(Share {
        host: PathBuf::from(host),
        inner: inner.to_path_buf(),
    })
}

pub(super) fn seconds(s: &str) -> Result<u32, ValueError> {
    if s.is_empty() {
        return invalid(
            "is empty",
            "give whole seconds, e.g. 5, or remove the line for the default of 5",
        );
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return invalid(
            format!("{s:?} is not a whole number of seconds"),
            "write e.g. 5 (no sign, unit or fraction)",
        );
    }
    s.parse().or_else(|_| {
        invalid(
            format!("{s} seconds is too long"),
            format!("use at most {}", u32::MAX),
        )
    })
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) fn memory(s: &str) -> Result<Option<u64>, ValueError> {
    let usage =
        "write bytes with an optional binary suffix K, M, G or T, e.g. 512M, or max for no limit";
    if s.is_empty() || s == "max" {
        return Ok(None);
    }
    let (digits, shift) = match s.as_bytes()[s.len() - 1] {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        b'T' | b't' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return invalid(format!("{s:?} is not a size"), usage);
    }
    let bytes = number(digits)
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| ValueError::new(format!("{s} is too large"), usage))?;
    if bytes == 0 {
        return invalid(
            "0 would leave no memory at all for the subhost's init",
            usage,
        );
    }
    if bytes < MEMORY_FLOOR {
        return invalid(
            format!(
                "{s} is below the floor of 4M: the subhost's processes would be killed \
                 by the memory limit almost at once (a dynamically linked shell alone \
                 maps about 3 MiB)"
            ),
            "give at least 4M, e.g. 64M, or max for no limit",
        );
    }
    Ok(Some(bytes))
}

/// LOG_MAX when unset: 10 MiB.
pub const LOG_MAX_DEFAULT: u64 = 10 << 20;
/// Smallest LOG_MAX: a rotation every few lines would be all the log does.
pub const LOG_MAX_FLOOR: u64 = 64 << 10;

pub(super) fn log_max(s: &str) -> Result<u64, ValueError> {
    let usage = "write bytes with a suffix K, M or G, at least 64K, e.g. LOG_MAX=10M";
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let bytes = number(digits)
        .ok_or_else(|| ValueError::new(format!("{s:?} is not a size"), usage))?
        .checked_mul(1u64 << shift)
        .ok_or_else(|| ValueError::new(format!("{s} is too large"), usage))?;
    if bytes < LOG_MAX_FLOOR {
        return invalid(
            format!("{s} is below the minimum of 64K: the log would rotate every few lines"),
            usage,
        );
    }
    Ok(bytes)
}

/// Smallest MEMORY_MAX accepted. A busybox shell and the init run in about
/// 0.5 MiB, but bash with the C library maps about 3 MiB, and any service
/// more: a limit below this only produces sessions killed at start.
pub const MEMORY_FLOOR: u64 = 4 << 20;

/// Most CPUs a CPU_MAX may allow: more than any host has, so a larger value
/// is a typo (a missing `%`, extra digits), not a limit.
pub const CPU_MAX_CPUS: u64 = 1024;

pub(super) fn pids(s: &str) -> Result<Option<u64>, ValueError> {
    if s.is_empty() || s == "max" {
        return Ok(None);
    }
    match number(s) {
        Some(n @ 0..=1) => invalid(
            format!("{n} would not allow the subhost's init and its session, one process each"),
            "give a limit of at least 2 (a shell and a few commands want 10 or more), or max",
        ),
        Some(n) => Ok(Some(n)),
        None => invalid(
            format!("{s:?} is not a number of processes"),
            "write e.g. 1000, or max for no limit",
        ),
    }
}

/// Normalises to "QUOTA PERIOD" (µs), the form `cpu.max` takes on cgroup v2
/// and that a v1 hierarchy's `cfs_quota_us`/`cfs_period_us` can be written
/// from.
pub(super) fn cpu_max(s: &str) -> Result<Option<String>, ValueError> {
    let usage = "write a percentage of one CPU like 50% (200% for two CPUs), QUOTA PERIOD in microseconds like \"50000 100000\", or max";
    let quota = |q: &str| match number(q) {
        Some(n) if n >= 1000 => Ok(n),
        Some(_) => invalid(
            format!("quota {q} is below the kernel's minimum of 1000 µs"),
            usage,
        ),
        None => invalid(format!("{s:?} is not a CPU limit"), usage),
    };
    let period = |p: &str| match number(p) {
        Some(n) if (1000..=1_000_000).contains(&n) => Ok(n),
        Some(_) => invalid(
            format!("period {p} is outside the kernel's 1000..1000000 µs"),
            usage,
        ),
        None => invalid(format!("{s:?} is not a CPU limit"), usage),
    };
    let words: Vec<&str> = s.split_whitespace().collect();
    let (q, p) = match words.as_slice() {
        [] | ["max"] => return Ok(None),
        ["max", p] => return period(p).map(|_| None),
        [pct] if pct.ends_with('%') => {
            let n = number(&pct[..pct.len() - 1]).ok_or_else(|| {
                ValueError::new(format!("{s:?} is not a whole percentage"), usage)
            })?;
            if n == 0 {
                return invalid("0% would stop the subhost entirely", usage);
            }
            let q = n
                .checked_mul(CPU_PERIOD / 100)
                .ok_or_else(|| ValueError::new(format!("{s} is too large"), usage))?;
            (q, CPU_PERIOD)
        }
        [q] => (quota(q)?, CPU_PERIOD),
        [q, p] => (quota(q)?, period(p)?),
        _ => return invalid(format!("{s:?} is not a CPU limit"), usage),
    };
    if q / p > CPU_MAX_CPUS {
        return invalid(
            format!(
                "{s} allows {} CPUs, more than any host has: it limits nothing",
                q / p
            ),
            "write a percentage like 50% (100% is one CPU), or max for no limit",
        );
    }
    Ok(Some(format!("{q} {p}")))
}

pub(super) fn cgroup_parent(s: &str) -> Result<Option<String>, ValueError> {
    if s.is_empty() {
        return Ok(None);
    }
    if !s.starts_with('/') {
        return invalid(
            format!("{s:?} is not a path from the cgroup root"),
            "start it with / as /proc/self/cgroup shows paths, e.g. /subhost",
        );
    }
    let path = s.trim_end_matches('/');
    if path.is_empty() {
        return invalid(
            "/ is the root of the cgroup hierarchy, where no subhost is placed",
            "name a cgroup below it, e.g. /subhost, or remove the line to use the launcher's own cgroup + /subhost",
        );
    }
    for part in path[1..].split('/') {
        if part.is_empty() || part == "." || part == ".." || part.chars().any(char::is_control) {
            return invalid(
                format!("{s:?} has an empty, `.`, `..` or control-character component"),
                "write a plain path like /subhost/web",
            );
        }
    }
    Ok(Some(path.to_string()))
}

pub(super) fn service(s: &str) -> Result<String, ValueError> {
    let usage = "give a service name as in /etc/init.d, or an absolute path";
    if s.starts_with('/') {
        return Ok(s.to_string());
    }
    if s.is_empty() {
        return invalid("an element is empty", "remove it");
    }
    if s.contains('/') {
        return invalid(format!("{s:?} is a relative path"), usage);
    }
    if s.starts_with('-')
        || s == "."
        || s == ".."
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return invalid(format!("{s:?} is not a service name"), usage);
    }
    Ok(s.to_string())
}

pub(super) fn on_off(s: &str) -> Result<bool, ValueError> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => invalid(
            format!("{s:?} is neither on nor off"),
            "write SECCOMP=on (the default) or SECCOMP=off",
        ),
    }
}

/// A system call on the filter's deny list: something `SYSCALLS_ALLOW` can
/// lift.
pub(super) fn syscall(s: &str) -> Result<String, ValueError> {
    if !crate::seccomp::is_denied(s) {
        let names: Vec<&str> = crate::seccomp::denied_names().collect();
        return invalid(
            format!("{s:?} is not a system call the filter denies"),
            format!("lift one of: {}", names.join(" ")),
        );
    }
    Ok(s.to_string())
}

/// A host device node of `DEVICES`: PATH or PATH:MODE.
pub(super) fn device(s: &str) -> Result<crate::cgroup::devices::Declared, ValueError> {
    crate::cgroup::devices::Declared::parse(s).or_else(|(what, fix)| invalid(what, fix))
}

/// A capability, with or without `CAP_` and in any case, as its `CAP_…`
/// name.
pub(super) fn capability(s: &str) -> Result<String, ValueError> {
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if capability_number(&name).is_none() {
        let known: Vec<&str> = CAPABILITIES.iter().map(|c| &c[4..]).collect();
        return invalid(
            format!("{s:?} is not a Linux capability"),
            format!(
                "use names from capabilities(7), with or without CAP_: {}",
                known.join(", ")
            ),
        );
    }
    Ok(name)
}

/// A resolver of `DNS`: an IPv4 or IPv6 address, as resolv.conf takes it.
pub(super) fn nameserver(s: &str) -> Result<std::net::IpAddr, ValueError> {
    s.parse().or_else(|_| {
        invalid(
            format!("{s:?} is not an IP address"),
            "write an IPv4 or IPv6 address, e.g. DNS=(10.0.0.1 fd00::1)",
        )
    })
}

/// A domain of `SEARCH`: dot-separated labels, as resolv.conf's `search`
/// takes them (a trailing dot, the root, is allowed).
pub(super) fn domain(s: &str) -> Result<String, ValueError> {
    let usage = "write a domain name, e.g. SEARCH=(example.org)";
    let name = s.strip_suffix('.').unwrap_or(s);
    // RFC 1035: 255 bytes on the wire are 253 as text.
    if name.len() > 253 {
        return invalid(format!("{s:?} is longer than 253 bytes"), usage);
    }
    host_labels(name, usage)?;
    Ok(s.to_string())
}

/// A line of `HOSTS`: NAME=ADDRESS.
pub(super) fn host_entry(s: &str) -> Result<(String, std::net::IpAddr), ValueError> {
    let usage = "write NAME=ADDRESS, e.g. HOSTS=(db=10.0.0.6 cache=fd00::7)";
    let Some((name, addr)) = s.split_once('=') else {
        return invalid(format!("{s:?} is not NAME=ADDRESS"), usage);
    };
    if name.is_empty() || name.len() > 253 {
        return invalid(
            format!("{s:?}: the name is empty or longer than 253 bytes"),
            usage,
        );
    }
    host_labels(name, usage).map_err(|e| ValueError::new(format!("{s:?}: {}", e.what), e.fix))?;
    let addr = addr.parse().or_else(|_| {
        invalid(
            format!("{s:?}: {addr:?} is not an IP address"),
            usage.to_string(),
        )
    })?;
    Ok((name.to_string(), addr))
}

/// Labels of letters, digits, '-' and '_', none empty or starting with
/// '-': what resolv.conf and /etc/hosts can hold as one word.
fn host_labels(s: &str, usage: &str) -> Result<(), ValueError> {
    for label in s.split('.') {
        if label.is_empty() {
            return invalid(
                format!("{s:?} has an empty label (a leading, trailing or doubled dot)"),
                usage,
            );
        }
        if label.len() > 63 {
            return invalid(format!("label {label:?} has more than 63 bytes"), usage);
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return invalid(format!("{s:?} contains {c:?}"), usage);
        }
        if label.starts_with('-') {
            return invalid(format!("label {label:?} starts with '-'"), usage);
        }
    }
    Ok(())
}

/// The `<name>` of `SERVICE_<name>`, `RESTART_<name>`, `HEALTH_<name>`.
pub(super) fn service_name(s: &str) -> Result<String, ValueError> {
    let valid = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return invalid(
            format!("{s:?} is not a service name"),
            "name services with a-z, 0-9 and _ (up to 32), e.g. SERVICE_web",
        );
    }
    Ok(s.to_string())
}

pub(super) fn restart(s: &str) -> Result<super::Restart, ValueError> {
    match s {
        "no" => Ok(super::Restart::No),
        "on-failure" => Ok(super::Restart::OnFailure),
        "always" => Ok(super::Restart::Always),
        _ => invalid(
            format!("{s:?} is not a restart policy"),
            "write no, on-failure or always",
        ),
    }
}

/// Whole seconds above 0 (an interval or timeout of 0 would spin).
pub(super) fn positive_seconds(s: &str) -> Result<u32, ValueError> {
    match seconds(s)? {
        0 => invalid("0 seconds", "give at least 1 second"),
        n => Ok(n),
    }
}

pub(super) fn retries(s: &str) -> Result<u32, ValueError> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => invalid(
            format!("{s:?} is not a count above 0"),
            "write e.g. 3: that many failed checks in a row restart the service",
        ),
    }
}
