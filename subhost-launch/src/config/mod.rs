//! The `config` file: a bash-include file of plain assignments, parsed and
//! never executed.
//!
//! Operators may also `source` the file from their own scripts, so whatever
//! is accepted here means exactly what it means to bash, and whatever would
//! need a shell to evaluate (commands, substitutions, globs, operators) is
//! refused with `FILE:LINE: what is wrong (how to fix)` instead of guessed at.
//!
//! Accepted:
//! - `KEY=value`, `export KEY=value`, several assignments on one line
//!   (`A=1 B=2`, applied left to right), and `export KEY` (no effect);
//! - values made of unquoted text, `'literal'` text, `"double-quoted"` text
//!   and backslash escapes, concatenated as in bash (`a"b c"'d'`);
//! - `$VAR` and `${VAR}` in unquoted and double-quoted text, where VAR is
//!   `SUB` (the subhost's NAME), `SUBHOST` (the base directory) or a key
//!   assigned earlier in the same file; the environment is never consulted,
//!   so a config means the same whoever runs the launcher;
//! - arrays `KEY=(a b "c d")`, across lines and with comments inside;
//!   unquoted expansions in arrays are split at whitespace, as bash does;
//! - `#` comments (whole lines, or after whitespace), blank lines, and
//!   backslash-newline continuations.
//!
//! A key assigned twice takes the later value, as in bash. Every value is
//! still checked where it is assigned, so a mistake is reported even when a
//! later line overrides it. One case is refused although bash accepts it:
//! a plain value assigned to a key that holds an array, because bash then
//! replaces only the first element and keeps the rest.
//!
//! Each key takes one of four shapes (`keys::Takes`): a single value, an
//! array only (`BRIDGES`, `SHARE`: an empty string would be ambiguous
//! between "no cable" and "one unattached cable", and paths may hold
//! spaces), a command as an array or a string split at whitespace (a
//! string with quotes or backslashes in it is refused, since splitting
//! would not honour them), or names as an array or a whitespace-separated
//! string.
//!
//! The rooms: `lexer` reads the words of the file, `keys` is the one table
//! of keys (shape, default, documentation, example, and how each applies),
//! `values` checks single values. A new key is a row of `keys::KEYS` and a
//! field of `Config` with its value in `Config::defaults` (a unit test holds
//! the row's default to it); the text `create` writes, the manual and the
//! README table are made from the row. The seccomp and userns modules take plain
//! values from the `Config` and never see it; what they refuse after
//! parsing is placed at its line here (`at`).

use std::fmt;
use std::path::{Path, PathBuf};

mod keys;
mod lexer;
mod values;

pub use keys::{Key, KEYS};

/// One veth cable: `BRIDGE[=MAC]`; an empty bridge leaves the host end
/// unattached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cable {
    pub bridge: Option<String>,
    /// Set on the inner end (`ethN`).
    pub mac: Option<[u8; 6]>,
}

/// An `ADDRESS` element: an address for the inner end of cable `cable`
/// (`ethN`), and the line that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CableAddress {
    pub cable: usize,
    pub address: crate::netns::Address,
    pub line: usize,
}

/// A bind mount from the host into the subhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Absolute host path.
    pub host: PathBuf,
    /// Absolute path inside the subhost.
    pub inner: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Read-only lower layers, top first; empty means `live` is an rbind of
    /// `root`.
    pub lower: Vec<PathBuf>,
    pub bridges: Vec<Cable>,
    /// Addresses of the cables' inner ends (`ADDRESS`).
    pub addresses: Vec<CableAddress>,
    /// Default routes (`GATEWAY`, `GATEWAY6`).
    pub gateway: Option<std::net::Ipv4Addr>,
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// Published ports (`PUBLISH`) and the lines that gave them.
    pub publish: Vec<(crate::publish::Publish, usize)>,
    /// Defaults to NAME.
    pub hostname: String,
    /// Resolvers for `/etc/resolv.conf` (`DNS`).
    pub dns: Vec<std::net::IpAddr>,
    /// Search domains for `/etc/resolv.conf` (`SEARCH`).
    pub search: Vec<String>,
    /// NAME=ADDRESS lines for `/etc/hosts` (`HOSTS`), in the order given.
    pub hosts: Vec<(String, std::net::IpAddr)>,
    pub share: Vec<Share>,
    /// Grace seconds between SIGTERM and SIGKILL at stop.
    pub stop_timeout: u32,
    /// argv of the session; defaults to `/bin/bash -l`.
    pub session: Vec<String>,
    /// argv that a detached subhost's init runs at boot (`BOOT`).
    pub boot: Option<Vec<String>>,
    /// argv run inside before a detached subhost is stopped (`HALT`).
    pub halt: Option<Vec<String>>,
    /// Services to start at boot (`START`): names as in `/etc/init.d`, or
    /// absolute paths.
    pub start: Vec<String>,
    /// `memory.max` in bytes; `None` is no limit.
    pub memory_max: Option<u64>,
    /// `cpu.max` as the cgroup v2 file takes it, always "QUOTA PERIOD" in
    /// microseconds (`50%` becomes "50000 100000"); `None` is no limit.
    pub cpu_max: Option<String>,
    /// `pids.max`; `None` is no limit.
    pub pids_max: Option<u64>,
    /// Bytes at which a detached subhost's console log is rotated.
    pub log_max: u64,
    /// Cgroup under which the subhost's cgroup is made, as a path from the
    /// hierarchy's root like `/proc/self/cgroup` shows it (`/subhost`),
    /// without a trailing slash; `None` is the launcher's own cgroup + `/subhost`.
    pub cgroup_parent: Option<String>,
    /// Capabilities to drop from the bounding set on top of the default
    /// ones, as `CAP_…` names.
    pub caps_drop: Vec<String>,
    /// Capabilities to keep although dropped by default, as `CAP_…` names.
    pub caps_keep: Vec<String>,
    /// `USERNS`: a user namespace and the line that asked for it (a range
    /// that overlaps another is only found at start, and reported there).
    pub userns: Option<crate::userns::Requested>,
    /// Whether the seccomp filter is installed (`SECCOMP=on|off`).
    pub seccomp: bool,
    /// Denied system calls the filter lets through (`SYSCALLS_ALLOW`).
    pub syscalls_allow: Vec<String>,
    /// Supervised services (`SERVICE_<name>`), in the order first declared.
    pub services: Vec<Service>,
    /// The restart policy of services without their own (`RESTART`).
    pub restart: Restart,
    /// `HEALTH_INTERVAL`, `HEALTH_TIMEOUT` (seconds) and `HEALTH_RETRIES`.
    pub health_interval: u32,
    pub health_timeout: u32,
    pub health_retries: u32,
    /// Host device nodes given to the subhost (`DEVICES`).
    pub devices: Vec<crate::cgroup::devices::Declared>,
    /// Sockets bound on the host and handed to a service when the first
    /// connection wakes the subhost (`LISTEN_<name>`), in declared order.
    pub listen: Vec<crate::activator::sockets::Listen>,
    /// Seconds without a connection or activity after which an awakened
    /// subhost with LISTEN sockets is hibernated again (`IDLE`).
    pub idle: Option<u32>,
}

/// When a supervised service that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    No,
    OnFailure,
    Always,
}

impl Restart {
    /// As the config and the init spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::No => "no",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        }
    }
}

/// A supervised service: `SERVICE_<name>`, with `RESTART_<name>` and
/// `HEALTH_<name>`. An empty `argv` is a service only named by the
/// latter two, which the whole-file check refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub argv: Vec<String>,
    pub restart: Option<Restart>,
    pub health: Option<Vec<String>>,
}

impl Config {
    /// Declares service `name` with `argv`: its place is that of its first
    /// SERVICE_<name>, whatever RESTART_<name> or HEALTH_<name> came above.
    fn declare_service(&mut self, name: String, argv: Vec<String>) {
        let i = self.services.iter().position(|s| s.name == name);
        if let Some(i) = i.filter(|&i| self.services[i].argv.is_empty()) {
            let s = self.services.remove(i);
            self.services.push(s);
        }
        self.service_mut(name).argv = argv;
    }

    /// The service `name`, added (undeclared, empty) if not there yet.
    fn service_mut(&mut self, name: String) -> &mut Service {
        let i = match self.services.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.services.push(Service {
                    name,
                    argv: Vec::new(),
                    restart: None,
                    health: None,
                });
                self.services.len() - 1
            }
        };
        &mut self.services[i]
    }
}

impl Config {
    /// The cables of subhost `name`, as the netns makes them.
    pub fn links(&self, name: &str) -> Vec<crate::netns::Link> {
        self.bridges
            .iter()
            .enumerate()
            .map(|(i, c)| crate::netns::Link::cable(name, i, c.bridge.clone(), c.mac))
            .collect()
    }

    /// The addresses and default routes the netns gets on its cables.
    pub fn addressing(&self) -> crate::netns::Addressing {
        crate::netns::Addressing {
            addresses: self
                .addresses
                .iter()
                .map(|a| (format!("eth{}", a.cable), a.address))
                .collect(),
            gateway: self.gateway,
            gateway6: self.gateway6,
        }
    }

    /// The published ports, in config order.
    pub fn published(&self) -> Vec<crate::publish::Publish> {
        self.publish.iter().map(|(p, _)| *p).collect()
    }

    /// The configuration of a subhost without a config file.
    pub fn defaults(name: &str) -> Config {
        Config {
            lower: Vec::new(),
            bridges: Vec::new(),
            addresses: Vec::new(),
            gateway: None,
            gateway6: None,
            publish: Vec::new(),
            hostname: name.to_string(),
            dns: Vec::new(),
            search: Vec::new(),
            hosts: Vec::new(),
            share: Vec::new(),
            stop_timeout: 5,
            session: vec!["/bin/bash".into(), "-l".into()],
            boot: None,
            halt: None,
            start: Vec::new(),
            memory_max: None,
            cpu_max: None,
            pids_max: None,
            log_max: values::LOG_MAX_DEFAULT,
            cgroup_parent: None,
            caps_drop: Vec::new(),
            caps_keep: Vec::new(),
            userns: None,
            seccomp: true,
            syscalls_allow: Vec::new(),
            services: Vec::new(),
            restart: Restart::OnFailure,
            health_interval: 30,
            health_timeout: 10,
            health_retries: 3,
            devices: Vec::new(),
            listen: Vec::new(),
            idle: None,
        }
    }
}

/// Linux capability names, indexed by capability number (0..=40).
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability given by its `CAP_…` name.
pub fn capability_number(name: &str) -> Option<u32> {
    CAPABILITIES
        .iter()
        .position(|c| *c == name)
        .and_then(|i| u32::try_from(i).ok())
}

/// Host ends are named `NAME0`…`NAME99`.
pub const MAX_CABLES: usize = 100;

/// Resolvers `DNS` may name: the resolvers read no more (MAXNS).
pub const MAX_NAMESERVERS: usize = 3;

/// The `cpu.max` period used when a config gives a percentage or a quota
/// alone (the kernel's default period).
pub const CPU_PERIOD: u64 = 100_000;

/// A config that cannot be used, placed at its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    /// What is wrong.
    pub what: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} ({})",
            self.file.display(),
            self.line,
            self.what,
            self.fix
        )
    }
}

impl std::error::Error for ConfigError {}

/// Reads and parses `path`. `name` and `base` are the values of `SUB` and
/// `SUBHOST` for expansion. A missing file yields the defaults.
///
/// Errors quote the config's lines, so only a file that is the config is
/// read: a regular file (a symlink is not followed: one to `/etc/shadow`
/// would have its first line quoted) owned by the owner of the subhost's
/// directory.
pub fn load(path: &Path, name: &str, base: &Path) -> anyhow::Result<Config> {
    use anyhow::Context as _;
    use std::os::unix::fs::MetadataExt;
    let refuse = |what: String| {
        anyhow::anyhow!(
            "config {} is {what}: replace it with a regular file (or remove it to use the defaults)",
            path.display()
        )
    };
    let file = match crate::files::open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::defaults(name)),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            return Err(refuse(crate::files::describe(path)))
        }
        Err(e) => anyhow::bail!(
            "{}: cannot read the config file: {e} (make it a readable regular file of at most 1 MiB, or remove it to use the defaults)",
            path.display()
        ),
    };
    let owner = file.metadata()?.uid();
    let dir = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    let dir_owner = std::fs::metadata(dir)
        .with_context(|| format!("cannot stat {}", dir.display()))?
        .uid();
    if owner != dir_owner {
        return Err(refuse(format!(
            "owned by uid {owner}, not by the owner of {} (uid {dir_owner})",
            dir.display()
        )));
    }
    let bytes = crate::files::read_file_capped(file, crate::files::CONFIG_MAX).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot read the config file: {e} (make it a readable regular file of at most 1 MiB, or remove it to use the defaults)",
            path.display()
        )
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = 1 + valid.iter().filter(|b| **b == b'\n').count();
            return Err(at(
                path,
                line,
                "the file is not valid UTF-8",
                "save it as UTF-8 text",
            )
            .into());
        }
    };
    Ok(parse(path, &text, name, base)?)
}

/// Parses the text of a config file; `file` only names it in errors. `name`
/// and `base` are the values of `SUB` and `SUBHOST` for expansion.
pub fn parse(file: &Path, text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
    read(file, text, name, base).map(|(cfg, _)| cfg)
}

/// The config, and every key assigned with its last raw value and line.
fn read(
    file: &Path,
    text: &str,
    name: &str,
    base: &Path,
) -> Result<(Config, lexer::Vars), ConfigError> {
    let mut cfg = Config::defaults(name);
    let names = keys::names();
    let vars = lexer::read(file, text, name, base, &names, &mut |key, value, line| {
        keys::apply(&mut cfg, key, value, line)
            .map_err(|(l, e)| at(file, l, format!("{key}: {}", e.what), e.fix))
    })?;
    keys::check_together(&cfg, |key| vars.get(key).map(|v| v.line))
        .map_err(|(l, e)| at(file, l, e.what, e.fix))?;
    Ok((cfg, vars))
}

/// A refusal placed at `line` of the config `file`: every `FILE:LINE`
/// error, from reading the file or from what it asked for, is made here.
pub fn at(
    file: &Path,
    line: usize,
    what: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line,
        what: what.into(),
        fix: fix.into(),
    }
}

/// The id range of a subhost whose config asks for a user namespace, or the
/// refusal at its `USERNS` line: whether a range is free is only known at
/// start. Recorded unless `dry_run`.
pub fn userns_range(
    layout: &crate::layout::Layout,
    req: crate::userns::Requested,
    dry_run: bool,
) -> anyhow::Result<crate::userns::Range> {
    crate::userns::range_for(layout, req.setting, dry_run)?.map_err(|refusal| {
        at(
            &layout.config(),
            req.line,
            refusal.to_string(),
            refusal.fix(),
        )
        .into()
    })
}

#[cfg(test)]
mod tests;

/// `s` as bash (and this config's parser, which reads values the same way)
/// needs it typed: as it is when plain, else single-quoted, so nothing in
/// it is expanded. For `--dry-run` lines and for values the launcher writes.
pub fn quote(s: impl AsRef<std::ffi::OsStr>) -> String {
    let s = s.as_ref().to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-,:=+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
