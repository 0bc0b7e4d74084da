//! The one table of config keys: for each, its shape, its default, the
//! documentation and example `create` writes (and the manual and README
//! show), and how its value is checked and stored in the `Config`. Adding a
//! key is a row here and a field of `Config`.

use super::lexer::{Element, Value};
use super::values::{self, ValueError};
use super::{Config, MAX_CABLES, MAX_NAMESERVERS};

/// A value problem and the line to report it at.
pub(super) type At<T> = Result<T, (usize, ValueError)>;

/// One key a config may assign.
pub struct Key {
    pub name: &'static str,
    pub(super) takes: Takes,
    /// The default, written as a value of the key (empty: unset); assigning
    /// it gives what `Config::defaults` holds.
    pub default: &'static str,
    /// What it sets, as `create` writes it above the key (lines of prose).
    pub doc: &'static str,
    /// An assignment that `create` writes commented out.
    pub example: &'static str,
}

/// The shape of a key's value, and how it is checked and stored.
pub(super) enum Takes {
    /// A single value; `hint` is the assignment shown when an array is
    /// given instead.
    Single {
        hint: &'static str,
        set: fn(&mut Config, &str, usize) -> Result<(), ValueError>,
    },
    /// An array only; `hint` is shown when a single value is given instead.
    Array {
        hint: &'static str,
        set: fn(&mut Config, &[Element], usize) -> At<()>,
    },
    /// A command: an array, or a string split at whitespace; `None` is
    /// empty.
    Command(fn(&mut Config, Option<Vec<String>>) -> Result<(), ValueError>),
    /// Names: an array, or a string split at whitespace.
    Names(fn(&mut Config, &[Element]) -> At<()>),
    /// A family of keys, `PREFIX_<name>` (the row's name): any key that
    /// starts with PREFIX_ and is no other row's is one of it; `set` gets
    /// the part after the prefix. `shape` is what its value is, as above.
    Family {
        shape: &'static str,
        set: fn(&mut Config, &str, &Value, usize) -> At<()>,
    },
}

/// The `PREFIX_` of a family row's name `PREFIX_<name>`.
fn family_prefix(row: &str) -> Option<&str> {
    row.strip_suffix("<name>")
}

/// Whether `key` may be assigned, given the table's names: one of them,
/// or a member of a family.
pub(super) fn is_known(names: &[&str], key: &str) -> bool {
    names.contains(&key)
        || names
            .iter()
            .any(|n| family_prefix(n).is_some_and(|p| key.len() > p.len() && key.starts_with(p)))
}

impl Key {
    /// The shape of its value, as the manual and README name it.
    pub fn shape(&self) -> &'static str {
        match self.takes {
            Takes::Single { .. } => "value",
            Takes::Array { .. } => "array",
            Takes::Command(_) => "command",
            Takes::Names(_) => "names",
            Takes::Family { shape, .. } => shape,
        }
    }

    /// The documentation as one line.
    pub fn doc_line(&self) -> String {
        self.doc.lines().collect::<Vec<_>>().join(" ")
    }
}

/// Every key, in the order errors list them and `create` writes them.
pub const KEYS: &[Key] = &[
    Key {
        name: "LOWER",
        takes: Takes::Single {
            hint: "LOWER=/a:/b",
            set: |c, v, _| {
                c.lower = values::lower(v)?;
                Ok(())
            },
        },
        default: "",
        doc: "Read-only base filesystem(s), `:`-separated, top first. Set: `live` is an\n\
              overlay of `root` (the writable upper layer) over them. Unset: `live` is\n\
              `root` itself (bind mount).",
        example: "LOWER=/",
    },
    Key {
        name: "BRIDGES",
        takes: Takes::Array {
            hint: "BRIDGES=(br0 br1=02:00:00:00:01:01)",
            set: |c, elems, line| {
                if elems.len() > MAX_CABLES {
                    return Err((
                        line,
                        ValueError::new(
                            format!(
                                "{} cables; at most {MAX_CABLES} fit the host names NAME0…NAME99",
                                elems.len()
                            ),
                            "use fewer cables",
                        ),
                    ));
                }
                c.bridges = each(elems, values::cable)?;
                Ok(())
            },
        },
        default: "()",
        doc: "Network cables, one per element: BRIDGE[=MAC]. The host end is $SUB0,\n\
              $SUB1..., the inner end eth0, eth1... An empty BRIDGE leaves the host end\n\
              unattached; MAC, when given, is set on the inner end.",
        example: "BRIDGES=(br0 br1=02:00:00:00:01:01)",
    },
    Key {
        name: "ADDRESS",
        takes: Takes::Array {
            hint: "ADDRESS=(10.0.0.5/24 fd00::5/64)",
            set: |c, elems, _| {
                c.addresses = elems
                    .iter()
                    .map(|e| {
                        let (cable, address) = values::address(&e.text).map_err(|b| (e.line, b))?;
                        Ok(super::CableAddress {
                            cable,
                            address,
                            line: e.line,
                        })
                    })
                    .collect::<At<_>>()?;
                Ok(())
            },
        },
        default: "()",
        doc: "Addresses of the cables' inner ends, set when the netns is made:\n\
              ADDR/PREFIX for eth0, ethN:ADDR/PREFIX for cable N (its place in BRIDGES).",
        example: "ADDRESS=(10.0.0.5/24 fd00::5/64 eth1:192.0.2.7/24)",
    },
    Key {
        name: "GATEWAY",
        takes: Takes::Single {
            hint: "GATEWAY=10.0.0.1",
            set: |c, v, _| {
                c.gateway = values::gateway(v, false)?.map(|ip| match ip {
                    std::net::IpAddr::V4(a) => a,
                    std::net::IpAddr::V6(_) => unreachable!("checked to be IPv4"),
                });
                Ok(())
            },
        },
        default: "",
        doc: "IPv4 default route: the router, in the subnet of an IPv4 ADDRESS.",
        example: "GATEWAY=10.0.0.1",
    },
    Key {
        name: "GATEWAY6",
        takes: Takes::Single {
            hint: "GATEWAY6=fd00::1",
            set: |c, v, _| {
                c.gateway6 = values::gateway(v, true)?.map(|ip| match ip {
                    std::net::IpAddr::V6(a) => a,
                    std::net::IpAddr::V4(_) => unreachable!("checked to be IPv6"),
                });
                Ok(())
            },
        },
        default: "",
        doc: "IPv6 default route: the router, in the subnet of an IPv6 ADDRESS.",
        example: "GATEWAY6=fd00::1",
    },
    Key {
        name: "PUBLISH",
        takes: Takes::Array {
            hint: "PUBLISH=(tcp:8080:80 udp:5353:53)",
            set: |c, elems, _| {
                c.publish = elems
                    .iter()
                    .map(|e| {
                        let p = crate::publish::Publish::parse(&e.text)
                            .map_err(|(what, fix)| (e.line, ValueError::new(what, fix)))?;
                        Ok((p, e.line))
                    })
                    .collect::<At<_>>()?;
                Ok(())
            },
        },
        default: "()",
        doc: "Host ports whose connections reach the subhost's, at its first ADDRESS of\n\
              each family: PROTO:[HOSTADDR:]HOSTPORT:PORT, tcp or udp; without HOSTADDR\n\
              every host address, IPv4 and IPv6 (an IPv6 HOSTADDR in brackets).",
        example: "PUBLISH=(tcp:8080:80 udp:5353:53 tcp:127.0.0.1:2222:22)",
    },
    Key {
        name: "HOSTNAME",
        takes: Takes::Single {
            hint: "HOSTNAME=web",
            set: |c, v, _| {
                c.hostname = values::hostname(v)?;
                Ok(())
            },
        },
        default: "$SUB",
        doc: "Host name inside (default: the subhost's name).",
        example: "HOSTNAME=$SUB",
    },
    Key {
        name: "DNS",
        takes: Takes::Names(|c, elems| {
            // glibc's and musl's resolvers read the first MAXNS (3).
            if let Some(e) = elems.get(MAX_NAMESERVERS) {
                return Err((
                    e.line,
                    ValueError::new(
                        format!(
                            "{} resolvers; the resolver reads at most {MAX_NAMESERVERS}",
                            elems.len()
                        ),
                        "give at most 3",
                    ),
                ));
            }
            c.dns = each(elems, values::nameserver)?;
            Ok(())
        }),
        default: "",
        doc: "Resolvers written to the subhost's /etc/resolv.conf at a cold start (at\n\
              most 3). With DNS or SEARCH the file is the config's; without both it is\n\
              left alone.",
        example: "DNS=(10.0.0.1 fd00::1)",
    },
    Key {
        name: "SEARCH",
        takes: Takes::Names(|c, elems| {
            c.search = each(elems, values::domain)?;
            Ok(())
        }),
        default: "",
        doc: "Search domains written to the subhost's /etc/resolv.conf with DNS.",
        example: "SEARCH=(example.org)",
    },
    Key {
        name: "HOSTS",
        takes: Takes::Names(|c, elems| {
            c.hosts = each(elems, values::host_entry)?;
            Ok(())
        }),
        default: "",
        doc: "NAME=ADDRESS lines for the subhost's /etc/hosts, kept in a block marked\n\
              `# subhost HOSTS` that a cold start rewrites; its other lines stay.",
        example: "HOSTS=(db=10.0.0.6 cache=10.0.0.7)",
    },
    Key {
        name: "SHARE",
        takes: Takes::Array {
            hint: "SHARE=(/srv/data /host/path:/inner/path)",
            set: |c, elems, _| {
                c.share = each(elems, values::share)?;
                Ok(())
            },
        },
        default: "()",
        doc: "Bind mounts from the host: /path (same path inside) or /host:/inner.",
        example: "SHARE=(/srv/data /home/shared:/mnt/shared)",
    },
    Key {
        name: "STOP_TIMEOUT",
        takes: Takes::Single {
            hint: "STOP_TIMEOUT=5",
            set: |c, v, _| {
                c.stop_timeout = values::seconds(v)?;
                Ok(())
            },
        },
        default: "5",
        doc: "Seconds between SIGTERM and SIGKILL when stopping (default 5).",
        example: "STOP_TIMEOUT=5",
    },
    Key {
        name: "SESSION",
        takes: Takes::Command(|c, argv| {
            c.session = argv.ok_or_else(|| {
                ValueError::new(
                    "the command is empty",
                    "give one, e.g. SESSION=\"/bin/sh -l\", or remove the line for /bin/bash -l",
                )
            })?;
            Ok(())
        }),
        default: "(/bin/bash -l)",
        doc: "The session `start` runs when no command is given (default /bin/bash -l).",
        example: "SESSION=(/bin/bash -l)",
    },
    Key {
        name: "BOOT",
        takes: Takes::Command(|c, argv| {
            c.boot = argv;
            Ok(())
        }),
        default: "",
        doc: "With `start --detach`: the command init runs at boot.",
        example: "BOOT=(/etc/init.d/rc 2)",
    },
    Key {
        name: "HALT",
        takes: Takes::Command(|c, argv| {
            c.halt = argv;
            Ok(())
        }),
        default: "",
        doc: "With `start --detach`: the command run inside before stopping.",
        example: "HALT=(/etc/init.d/rc 0)",
    },
    Key {
        name: "START",
        takes: Takes::Names(|c, elems| {
            c.start = each(elems, values::service)?;
            Ok(())
        }),
        default: "",
        doc: "With `start --detach`: services started at boot (names in /etc/init.d, or\n\
              absolute paths) and stopped in reverse order.",
        example: "START=(ssh cron)",
    },
    Key {
        name: "SERVICE_<name>",
        takes: Takes::Family {
            shape: "command",
            set: |c, name, value, line| {
                let name = values::service_name(name).map_err(|e| (line, e))?;
                let argv = service_command(value, line)?;
                c.declare_service(name, argv);
                Ok(())
            },
        },
        default: "",
        doc: "With `start --detach`: a service the init supervises, one key per service\n\
              (names a-z, 0-9, _), started after BOOT and START in the order declared,\n\
              its output in the console as `<name>: line`, stopped in reverse before HALT.",
        example: "SERVICE_web=(/usr/sbin/nginx -g 'daemon off;')",
    },
    Key {
        name: "LISTEN_<name>",
        takes: Takes::Family {
            shape: "array",
            set: |c, name, value, line| {
                let service = values::service_name(name).map_err(|e| (line, e))?;
                let elems = list(value, line, "LISTEN_web=(tcp:8080 unix:/run/web.sock)")?;
                let sockets = elems
                    .iter()
                    .map(|e| {
                        crate::activator::sockets::Socket::parse(&e.text)
                            .map_err(|(what, fix)| (e.line, ValueError::new(what, fix)))
                    })
                    .collect::<At<Vec<_>>>()?;
                if sockets.is_empty() {
                    return Err((
                        line,
                        ValueError::new("declares no socket", "give at least one, e.g. (tcp:8080)"),
                    ));
                }
                c.listen.retain(|l| l.service != service);
                c.listen.push(crate::activator::sockets::Listen {
                    service,
                    sockets,
                    line,
                });
                Ok(())
            },
        },
        default: "",
        doc: "With `start --detach`: sockets bound on the host for SERVICE_<name>; the\n\
              subhost sleeps until the first connection, then the service gets them\n\
              (sd_listen_fds: fds 3.., LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES):\n\
              tcp:[ADDR:]PORT, udp:[ADDR:]PORT (no ADDR: every IPv4 address), unix:/PATH.",
        example: "LISTEN_web=(tcp:8080 'tcp:[::]:8443' unix:/run/web.sock)",
    },
    Key {
        name: "IDLE",
        takes: Takes::Single {
            hint: "IDLE=300",
            set: |c, v, _| {
                c.idle = match v {
                    "" => None,
                    v => Some(values::positive_seconds(v)?),
                };
                Ok(())
            },
        },
        default: "",
        doc: "With LISTEN_<name>: seconds without a connection or CPU use after which\n\
              the woken subhost is hibernated again, until the next connection.",
        example: "IDLE=300",
    },
    Key {
        name: "RESTART",
        takes: Takes::Single {
            hint: "RESTART=on-failure",
            set: |c, v, _| {
                c.restart = values::restart(v)?;
                Ok(())
            },
        },
        default: "on-failure",
        doc: "When a service that ended is started again: no, on-failure or always\n\
              (backoff 1 s doubling to 30 s; more than 5 restarts in 60 s: failed).",
        example: "RESTART=always",
    },
    Key {
        name: "RESTART_<name>",
        takes: Takes::Family {
            shape: "value",
            set: |c, name, value, line| {
                let name = values::service_name(name).map_err(|e| (line, e))?;
                let v = scalar(value, line, "RESTART_web=always")?;
                let policy = values::restart(v).map_err(|e| (line, e))?;
                c.service_mut(name).restart = Some(policy);
                Ok(())
            },
        },
        default: "",
        doc: "RESTART for one service.",
        example: "RESTART_web=always",
    },
    Key {
        name: "HEALTH_<name>",
        takes: Takes::Family {
            shape: "command",
            set: |c, name, value, line| {
                let name = values::service_name(name).map_err(|e| (line, e))?;
                let argv = service_command(value, line)?;
                c.service_mut(name).health = Some(argv);
                Ok(())
            },
        },
        default: "",
        doc: "A service's health check, run inside every HEALTH_INTERVAL; failing\n\
              HEALTH_RETRIES times in a row (or running past HEALTH_TIMEOUT) restarts it.",
        example: "HEALTH_web=(curl -fsS http://127.0.0.1/)",
    },
    Key {
        name: "HEALTH_INTERVAL",
        takes: Takes::Single {
            hint: "HEALTH_INTERVAL=30",
            set: |c, v, _| {
                c.health_interval = values::positive_seconds(v)?;
                Ok(())
            },
        },
        default: "30",
        doc: "Seconds between health checks (default 30).",
        example: "HEALTH_INTERVAL=10",
    },
    Key {
        name: "HEALTH_TIMEOUT",
        takes: Takes::Single {
            hint: "HEALTH_TIMEOUT=10",
            set: |c, v, _| {
                c.health_timeout = values::positive_seconds(v)?;
                Ok(())
            },
        },
        default: "10",
        doc: "Seconds a health check may run before it is killed and counts as failed.",
        example: "HEALTH_TIMEOUT=5",
    },
    Key {
        name: "HEALTH_RETRIES",
        takes: Takes::Single {
            hint: "HEALTH_RETRIES=3",
            set: |c, v, _| {
                c.health_retries = values::retries(v)?;
                Ok(())
            },
        },
        default: "3",
        doc: "Failed health checks in a row that restart a service (default 3).",
        example: "HEALTH_RETRIES=3",
    },
    Key {
        name: "MEMORY_MAX",
        takes: Takes::Single {
            hint: "MEMORY_MAX=512M",
            set: |c, v, _| {
                c.memory_max = values::memory(v)?;
                Ok(())
            },
        },
        default: "max",
        doc: "Memory limit in bytes, or with a K/M/G/T suffix.",
        example: "MEMORY_MAX=512M",
    },
    Key {
        name: "LOG_MAX",
        takes: Takes::Single {
            hint: "LOG_MAX=10M",
            set: |c, v, _| {
                c.log_max = values::log_max(v)?;
                Ok(())
            },
        },
        default: "10M",
        doc: "With `start --detach`: size at which the console log is rotated (K/M/G\n\
              suffix, at least 64K); one rotated file, LOG.1, is kept.",
        example: "LOG_MAX=10M",
    },
    Key {
        name: "CPU_MAX",
        takes: Takes::Single {
            hint: "CPU_MAX=50%",
            set: |c, v, _| {
                c.cpu_max = values::cpu_max(v)?;
                Ok(())
            },
        },
        default: "max",
        doc: "CPU limit: a percentage of one CPU, or \"QUOTA PERIOD\" in microseconds.",
        example: "CPU_MAX=50%",
    },
    Key {
        name: "PIDS_MAX",
        takes: Takes::Single {
            hint: "PIDS_MAX=1000",
            set: |c, v, _| {
                c.pids_max = values::pids(v)?;
                Ok(())
            },
        },
        default: "max",
        doc: "Most processes (and threads) at once.",
        example: "PIDS_MAX=512",
    },
    Key {
        name: "CGROUP_PARENT",
        takes: Takes::Single {
            hint: "CGROUP_PARENT=/subhost",
            set: |c, v, _| {
                c.cgroup_parent = values::cgroup_parent(v)?;
                Ok(())
            },
        },
        default: "",
        doc: "Cgroup under which the subhost's cgroup is made, from the hierarchy's\n\
              root (default: the launcher's own cgroup + /subhost; never the root itself).",
        example: "CGROUP_PARENT=/subhost",
    },
    Key {
        name: "CAPS_DROP",
        takes: Takes::Names(|c, elems| {
            c.caps_drop = unique(each(elems, values::capability)?);
            Ok(())
        }),
        default: "",
        doc: "Capabilities to drop from the bounding set, besides the default ones.",
        example: "CAPS_DROP=(CAP_NET_RAW)",
    },
    Key {
        name: "CAPS_KEEP",
        takes: Takes::Names(|c, elems| {
            c.caps_keep = unique(each(elems, values::capability)?);
            Ok(())
        }),
        default: "",
        doc: "Capabilities to keep although dropped by default.",
        example: "CAPS_KEEP=(CAP_SYS_TIME)",
    },
    Key {
        name: "USERNS",
        takes: Takes::Single {
            hint: "USERNS=pick",
            set: |c, v, line| {
                c.userns = crate::userns::parse(v)
                    .map_err(|(what, fix)| ValueError::new(what, fix))?
                    .map(|setting| crate::userns::Requested { setting, line });
                Ok(())
            },
        },
        default: "no",
        doc: "User namespace: root inside is an unprivileged host user. `pick`: a range of\n\
              65536 host ids chosen once for this subhost (recorded in its `userns` file);\n\
              BASE or BASE:COUNT: that range (BASE at least 65536); no: none. The base\n\
              (LOWER, an rbind root, SHAREs) is seen through idmapped mounts; what root\n\
              inside writes to root/ is owned by host ids BASE and up.",
        example: "USERNS=pick",
    },
    Key {
        name: "SECCOMP",
        takes: Takes::Single {
            hint: "SECCOMP=off",
            set: |c, v, _| {
                c.seccomp = values::on_off(v)?;
                Ok(())
            },
        },
        default: "on",
        doc: "The seccomp filter (README: Security model): on, or off.",
        example: "SECCOMP=on",
    },
    Key {
        name: "SYSCALLS_ALLOW",
        takes: Takes::Names(|c, elems| {
            c.syscalls_allow = unique(each(elems, values::syscall)?);
            Ok(())
        }),
        default: "",
        doc: "System calls the filter denies that this subhost may make anyway.",
        example: "SYSCALLS_ALLOW=(perf_event_open)",
    },
    Key {
        name: "DEVICES",
        takes: Takes::Names(|c, elems| {
            let mut out: Vec<crate::cgroup::devices::Declared> = Vec::new();
            for d in each(elems, values::device)? {
                if !out.contains(&d) {
                    out.push(d);
                }
            }
            c.devices = out;
            Ok(())
        }),
        default: "",
        doc: "Host device nodes the subhost gets in its /dev, each PATH or PATH:MODE\n\
              (MODE of r, w, m; default rwm, block devices need one): README: Devices.",
        example: "DEVICES=(/dev/net/tun /dev/fuse)",
    },
];

/// Every key's name, in table order.
pub(super) fn names() -> Vec<&'static str> {
    KEYS.iter().map(|k| k.name).collect()
}

/// The key called `name`, and for a family's member the part after its
/// prefix. A row of its own wins over a family (HEALTH_INTERVAL is not
/// service INTERVAL's health check).
fn find(name: &str) -> Option<(&'static Key, &str)> {
    KEYS.iter()
        .find(|k| k.name == name)
        .map(|k| (k, ""))
        .or_else(|| {
            KEYS.iter().find_map(|k| {
                let p = family_prefix(k.name)?;
                name.strip_prefix(p)
                    .filter(|rest| !rest.is_empty())
                    .map(|rest| (k, rest))
            })
        })
}

/// Checks `value` for `key` and stores it, typed, in `cfg`.
pub(super) fn apply(cfg: &mut Config, key: &str, value: &Value, line: usize) -> At<()> {
    let here = |e: ValueError| (line, e);
    let Some((spec, member)) = find(key) else {
        return Err(here(ValueError::new(
            "unknown key",
            format!("known keys: {}", names().join(", ")),
        )));
    };
    match spec.takes {
        Takes::Single { hint, set } => set(cfg, scalar(value, line, hint)?, line).map_err(here),
        Takes::Array { hint, set } => set(cfg, list(value, line, hint)?, line),
        Takes::Command(set) => set(cfg, command(value, line)?).map_err(here),
        Takes::Names(set) => set(cfg, &words(value, line)),
        Takes::Family { set, .. } => set(cfg, member, value, line),
    }
}

/// Checks between keys, once the whole file is read; `line` gives where a
/// key was last assigned.
pub(super) fn check_together(cfg: &Config, line: impl Fn(&str) -> Option<usize>) -> At<()> {
    check_addresses(cfg, &line)?;
    check_services(cfg, &line)?;
    check_listen(cfg, &line)?;
    check_published(cfg)?;
    if let (Some(drop), Some(keep)) = (line("CAPS_DROP"), line("CAPS_KEEP")) {
        if let Some(cap) = cfg.caps_drop.iter().find(|c| cfg.caps_keep.contains(c)) {
            return Err((
                drop.max(keep),
                ValueError::new(
                    format!("{cap} is in both CAPS_DROP (line {drop}) and CAPS_KEEP (line {keep})"),
                    "remove it from one of them",
                ),
            ));
        }
    }
    Ok(())
}

/// RESTART_<name> and HEALTH_<name> are for a declared SERVICE_<name>.
fn check_services(cfg: &Config, line: &impl Fn(&str) -> Option<usize>) -> At<()> {
    if let Some(s) = cfg.services.iter().find(|s| s.argv.is_empty()) {
        let key = match s.restart {
            Some(_) => format!("RESTART_{}", s.name),
            None => format!("HEALTH_{}", s.name),
        };
        return Err((
            line(&key).unwrap_or(1),
            ValueError::new(
                format!("{key}: there is no SERVICE_{}", s.name),
                format!("declare SERVICE_{}=(command …), or fix the name", s.name),
            ),
        ));
    }
    Ok(())
}

/// LISTEN_<name> is for a declared SERVICE_<name>, each socket declared
/// once; IDLE is for a subhost with LISTEN sockets.
fn check_listen(cfg: &Config, line: &impl Fn(&str) -> Option<usize>) -> At<()> {
    let mut seen = Vec::new();
    for l in &cfg.listen {
        if !cfg.services.iter().any(|s| s.name == l.service) {
            return Err((
                l.line,
                ValueError::new(
                    format!(
                        "LISTEN_{0}: there is no SERVICE_{0} to hand its sockets to",
                        l.service
                    ),
                    format!(
                        "declare SERVICE_{}=(command …) that takes its sockets from fd 3 on \
                         (sd_listen_fds), or fix the name",
                        l.service
                    ),
                ),
            ));
        }
        for s in &l.sockets {
            if seen.contains(&s) {
                return Err((
                    l.line,
                    ValueError::new(format!("{s} is declared twice"), "declare it once"),
                ));
            }
            seen.push(s);
        }
    }
    if cfg.idle.is_some() && cfg.listen.is_empty() {
        return Err((
            line("IDLE").unwrap_or(1),
            ValueError::new(
                "IDLE without a LISTEN_<name>: nothing would wake the subhost again",
                "declare LISTEN_<name> sockets, or remove IDLE",
            ),
        ));
    }
    Ok(())
}

/// A service's command: never empty.
fn service_command(value: &Value, line: usize) -> At<Vec<String>> {
    command(value, line)?.ok_or((
        line,
        ValueError::new(
            "the command is empty",
            "give the command, e.g. (/usr/sbin/nginx -g 'daemon off;')",
        ),
    ))
}

/// Each address names a cable that BRIDGES has, once; each gateway is in
/// the subnet of an address of its family, or no route to it could be made.
fn check_addresses(cfg: &Config, line: &impl Fn(&str) -> Option<usize>) -> At<()> {
    let cables = cfg.bridges.len();
    for (i, a) in cfg.addresses.iter().enumerate() {
        if a.cable >= cables {
            let have = match cables {
                0 => "BRIDGES has no cable".to_string(),
                1 => "BRIDGES has one cable, eth0".to_string(),
                n => format!("BRIDGES has {n} cables, eth0 to eth{}", n - 1),
            };
            return Err((
                a.line,
                ValueError::new(
                    format!("ADDRESS: {} is for eth{}, but {have}", a.address, a.cable),
                    format!(
                        "add a BRIDGES element for cable {}, or address an existing one",
                        a.cable
                    ),
                ),
            ));
        }
        if let Some(b) = cfg.addresses[..i]
            .iter()
            .find(|b| b.address.ip == a.address.ip)
        {
            return Err((
                a.line,
                ValueError::new(
                    format!(
                        "ADDRESS: {} is given twice (also on line {}, eth{})",
                        a.address.ip, b.line, b.cable
                    ),
                    "give each address once",
                ),
            ));
        }
    }
    let gateways = [
        ("GATEWAY", cfg.gateway.map(std::net::IpAddr::V4), 4),
        ("GATEWAY6", cfg.gateway6.map(std::net::IpAddr::V6), 6),
    ];
    for (key, gw, v) in gateways {
        let Some(gw) = gw else { continue };
        let at = line(key).unwrap_or(1);
        if cfg.addresses.iter().any(|a| a.address.ip == gw) {
            return Err((
                at,
                ValueError::new(
                    format!("{key}: {gw} is the subhost's own ADDRESS"),
                    "give the router's address",
                ),
            ));
        }
        if !cfg.addresses.iter().any(|a| a.address.contains(gw)) {
            return Err((
                at,
                ValueError::new(
                    format!("{key}: {gw} is outside every cable's IPv{v} subnet in ADDRESS"),
                    format!("give a router in the subnet of an IPv{v} ADDRESS, or add an address in its subnet"),
                ),
            ));
        }
    }
    Ok(())
}

/// Each published port once (overlapping host addresses count as the
/// same), with an ADDRESS of a family it reaches the subhost by.
fn check_published(cfg: &Config) -> At<()> {
    for (i, (p, line)) in cfg.publish.iter().enumerate() {
        if let Some((q, l)) = cfg.publish[..i].iter().find(|(q, _)| q.overlaps(p)) {
            return Err((
                *line,
                ValueError::new(
                    format!("PUBLISH: {p} takes the host port of {q} (line {l}) again"),
                    "publish each host port once, or on host addresses that do not overlap",
                ),
            ));
        }
        let families = p.families();
        let has = |v6: bool| cfg.addresses.iter().any(|a| a.address.ip.is_ipv6() == v6);
        let reached = match p.host {
            // A host loopback address is served by the forwarder, which
            // takes either family.
            Some(ip) if ip.is_loopback() => has(false) || has(true),
            _ => families.iter().any(|v6| has(*v6)),
        };
        if !reached {
            let what = match p.host {
                Some(ip) if !ip.is_loopback() => {
                    format!(" IPv{} address", if ip.is_ipv6() { 6 } else { 4 })
                }
                _ => "n address".to_string(),
            };
            return Err((
                *line,
                ValueError::new(
                    format!("PUBLISH needs an ADDRESS: {p} has no subhost a{what} to go to"),
                    "give the subhost an ADDRESS of that family on a cable",
                ),
            ));
        }
    }
    Ok(())
}

fn scalar<'v>(value: &'v Value, line: usize, example: &str) -> At<&'v str> {
    match value {
        Value::Scalar(s) => Ok(s),
        Value::Array(_) => Err((
            line,
            ValueError::new(
                "takes a single value, not an array",
                format!("write {example}"),
            ),
        )),
    }
}

fn list<'v>(value: &'v Value, line: usize, example: &str) -> At<&'v [Element]> {
    match value {
        Value::Array(elems) => Ok(elems),
        Value::Scalar(_) => Err((
            line,
            ValueError::new(
                "takes an array, not a single value",
                format!("write {example}"),
            ),
        )),
    }
}

/// An array as is, or a string split at whitespace.
fn words(value: &Value, line: usize) -> Vec<Element> {
    match value {
        Value::Array(elems) => elems.clone(),
        Value::Scalar(s) => s
            .split_whitespace()
            .map(|w| Element {
                text: w.to_string(),
                line,
            })
            .collect(),
    }
}

fn each<T>(elems: &[Element], check: fn(&str) -> Result<T, ValueError>) -> At<Vec<T>> {
    elems
        .iter()
        .map(|e| check(&e.text).map_err(|b| (e.line, b)))
        .collect()
}

/// A command line; empty is `None`.
fn command(value: &Value, line: usize) -> At<Option<Vec<String>>> {
    if let Value::Scalar(s) = value {
        if let Some(c) = s.chars().find(|c| matches!(c, '\'' | '"' | '\\')) {
            return Err((
                line,
                ValueError::new(
                    format!("{s:?} contains `{c}`, but a command given as a string is only split at whitespace"),
                    "use an array for arguments with spaces, e.g. (sh -c 'echo hi')",
                ),
            ));
        }
    }
    let argv = words(value, line);
    match argv.first() {
        None => Ok(None),
        Some(first) if first.text.is_empty() => Err((
            first.line,
            ValueError::new(
                "the command name (first element) is empty",
                "put the program first",
            ),
        )),
        Some(_) => Ok(Some(argv.into_iter().map(|e| e.text).collect())),
    }
}

/// `names` without repeats, in the order first given.
fn unique(names: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}
