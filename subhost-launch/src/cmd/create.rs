//! `create`: make a new subhost directory (or image) and a commented config
//! that documents every key, so nobody has to write one by hand. The
//! arguments and the config text are here; the making is `provision`'s.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config;
use crate::layout::Layout;

/// What `create` was asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--lower`, each `PATH[:PATH...]`, top first.
    pub lower: Vec<String>,
    /// `--bridge`, each `BRIDGE[=MAC]`.
    pub bridges: Vec<String>,
    /// `--address`, each `[ethN:]ADDR/PREFIX`.
    pub addresses: Vec<String>,
    /// `--gateway`, each an IPv4 (GATEWAY) or IPv6 (GATEWAY6) address.
    pub gateways: Vec<String>,
    /// `--publish`, each `PROTO:[HOSTADDR:]HOSTPORT:PORT`.
    pub publish: Vec<String>,
    /// `--image SIZE`.
    pub image: Option<String>,
    /// `--userns`: `USERNS=pick`, the range picked and recorded now.
    pub userns: bool,
    /// `--base NAME`: LOWER is that base's root.
    pub base: Option<String>,
}

pub fn create(base: &Path, name: &str, req: &Request) -> Result<()> {
    let layout = Layout::new(base, name)?;
    let with_base;
    let req = match &req.base {
        Some(b) => {
            with_base = Request {
                lower: vec![base_lower(base, b)?],
                ..req.clone()
            };
            &with_base
        }
        None => req,
    };
    let image_size = req.image.as_deref().map(parse_size).transpose()?;
    let text = config_text(req);
    // The config is checked by the parser `start` uses, so whatever `create`
    // writes, `start` reads the same way.
    if req.lower.iter().any(|l| l.is_empty()) {
        bail!("--lower is empty (give the absolute path of the read-only base, e.g. /)");
    }
    check_gateways(&req.gateways)?;
    let cfg = config::parse(&layout.config(), &text, name, base).map_err(|e| {
        anyhow::anyhow!(
            "bad --lower, --bridge, --address, --gateway or --publish: {} ({})",
            e.what,
            e.fix
        )
    })?;
    check_lower(&cfg.lower)?;

    let range =
        crate::provision::provision(&layout, &text, image_size, cfg.userns.map(|u| u.setting))?;
    report(&layout, &cfg, image_size, range);
    Ok(())
}

/// LOWER for `--base NAME`: the absolute path of the base's root, so the
/// config means the same from any working directory.
fn base_lower(base: &Path, name: &str) -> Result<String> {
    crate::bases::manifest(base, name)?;
    let root = crate::bases::base_root(base, name);
    let abs = std::fs::canonicalize(&root)
        .with_context(|| format!("base {name}: no tree at {}", root.display()))?;
    abs.into_os_string()
        .into_string()
        .map_err(|p| anyhow::anyhow!("base {name}: its path {p:?} is not UTF-8"))
}

/// `SIZE` as bytes: digits with an optional K, M, G or T suffix (powers of
/// 1024), case-insensitive.
pub fn parse_size(s: &str) -> Result<u64> {
    let usage = "give a size like 512M or 4G; suffixes K, M, G, T are powers of 1024";
    let (digits, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => bail!("--image {s:?}: unknown size suffix {c:?} ({usage})"),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        bail!("--image {s:?} is not a size ({usage})");
    }
    let n: u64 = digits
        .parse()
        .with_context(|| format!("--image {s:?} is too large"))?;
    let bytes = n
        .checked_mul(1 << shift)
        .with_context(|| format!("--image {s:?} is too large"))?;
    if bytes < crate::provision::IMAGE_MIN {
        bail!("--image {s:?} is too small: an ext4 image needs at least 1M ({usage})");
    }
    Ok(bytes)
}

/// At most one `--gateway` of each family, each an address: the config
/// parser would take a later one over an earlier one.
fn check_gateways(gateways: &[String]) -> Result<()> {
    let mut seen = [None::<&str>; 2];
    for g in gateways {
        let ip: std::net::IpAddr = g.parse().map_err(|_| {
            anyhow::anyhow!(
                "--gateway {g:?} is not an IP address (give the router's address, e.g. 10.0.0.1 or fd00::1)"
            )
        })?;
        let slot = &mut seen[usize::from(ip.is_ipv6())];
        if let Some(before) = slot.replace(g) {
            bail!("--gateway {before} and --gateway {g}: one default route per family");
        }
    }
    Ok(())
}

/// Lower layers must exist now: an overlay over a missing directory would
/// only fail at the first `start`, far from the typo.
fn check_lower(lower: &[PathBuf]) -> Result<()> {
    for p in lower {
        if !p.is_dir() {
            bail!(
                "--lower {}: not an existing directory (give the absolute path of the \
                 read-only base, e.g. / or /opt/subhost/base)",
                p.display()
            );
        }
    }
    Ok(())
}

/// Single-quotes `s` for bash (and the config parser, which reads it the same
/// way): nothing inside is expanded.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The config file: every key of the table documented, in its order, the
/// requested ones set, the rest commented out with their example. Example
/// lines are `#KEY=...` (no space), so removing the `#` enables them; prose
/// lines start with `# `.
pub fn config_text(req: &Request) -> String {
    let mut t = String::from(
        "# Subhost configuration: plain bash assignments, read by subhost-launch\n\
         # without running them. $SUB is the subhost's name, $SUBHOST the base\n\
         # directory; earlier keys expand as $KEY. Remove a leading # to use an\n\
         # example.\n",
    );
    for key in config::KEYS {
        t.push('\n');
        for l in key.doc.lines() {
            t.push_str("# ");
            t.push_str(l);
            t.push('\n');
        }
        match requested(req, key.name) {
            Some(line) => t.push_str(&line),
            None => {
                t.push('#');
                t.push_str(key.example);
            }
        }
        t.push('\n');
    }
    t
}

/// The assignment of `key` that the options ask for, if any.
fn requested(req: &Request, key: &str) -> Option<String> {
    match key {
        "LOWER" => {
            (!req.lower.is_empty()).then(|| format!("LOWER={}", sh_quote(&req.lower.join(":"))))
        }
        "BRIDGES" => (!req.bridges.is_empty()).then(|| {
            let items: Vec<String> = req.bridges.iter().map(|b| sh_quote(b)).collect();
            format!("BRIDGES=({})", items.join(" "))
        }),
        "ADDRESS" => (!req.addresses.is_empty()).then(|| {
            let items: Vec<String> = req.addresses.iter().map(|a| sh_quote(a)).collect();
            format!("ADDRESS=({})", items.join(" "))
        }),
        "GATEWAY" | "GATEWAY6" => {
            let v6 = key == "GATEWAY6";
            req.gateways
                .iter()
                .find(|g| {
                    g.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_ipv6() == v6)
                })
                .map(|g| format!("{key}={}", sh_quote(g)))
        }
        "PUBLISH" => (!req.publish.is_empty()).then(|| {
            let items: Vec<String> = req.publish.iter().map(|p| sh_quote(p)).collect();
            format!("PUBLISH=({})", items.join(" "))
        }),
        "USERNS" => req.userns.then(|| "USERNS=pick".to_string()),
        _ => None,
    }
}

fn report(
    layout: &Layout,
    cfg: &config::Config,
    image_size: Option<u64>,
    range: Option<crate::userns::Range>,
) {
    let d = layout.dir.display();
    println!("created subhost {} in {d}:", layout.name);
    match image_size {
        Some(size) => {
            println!(
                "  {} ({} MiB, sparse ext4 with root/ and work/ inside)",
                layout.image().display(),
                size >> 20
            );
            println!("  {}/mnt/   where the image is mounted", d);
        }
        None => {
            println!("  {d}/root/  the subhost's files (the overlay's upper layer with --lower)");
            println!("  {d}/work/  overlay work directory");
        }
    }
    println!("  {d}/live/  where its root is mounted while it is up");
    println!("  {d}/config");
    if let Some(r) = range {
        println!(
            "  {d}/userns  its user namespace: host ids {}..{} (root inside is host uid {})",
            r.base,
            r.end() - 1,
            r.base
        );
    }
    for c in &cfg.bridges {
        if let Some(br) = &c.bridge {
            if !Path::new("/sys/class/net").join(br).exists() {
                println!("note: bridge {br} does not exist yet; `start` needs it");
            }
        }
    }
    let name = &layout.name;
    match (cfg.lower.is_empty(), image_size.is_some()) {
        (true, false) => println!(
            "next: put a root filesystem in {d}/root (no --lower was given), then run: \
             subhost-launch start {name}"
        ),
        (true, true) => println!(
            "next: put a root filesystem in the image's root/ (no --lower was given): \
             mount -o loop {0} {d}/mnt, fill {d}/mnt/root, umount {d}/mnt; \
             then run: subhost-launch start {name}",
            layout.image().display()
        ),
        (false, _) => println!("next: subhost-launch start {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<config::Config, config::ConfigError> {
        config::parse(Path::new("config"), text, "demo", Path::new("/opt/subhost"))
    }

    #[test]
    fn published_ports_become_a_key() {
        let req = Request {
            bridges: vec!["br0".into()],
            addresses: vec!["10.0.0.5/24".into(), "fd00::5/64".into()],
            publish: vec!["tcp:8080:80".into(), "tcp:[::]:8443:443".into()],
            ..Request::default()
        };
        let text = config_text(&req);
        assert!(
            text.contains("\nPUBLISH=('tcp:8080:80' 'tcp:[::]:8443:443')\n"),
            "{text}"
        );
        let cfg = parse(&text).unwrap();
        assert_eq!(cfg.publish.len(), 2);
        let alone = Request {
            publish: vec!["tcp:8080:80".into()],
            ..Request::default()
        };
        let err = parse(&config_text(&alone)).unwrap_err();
        assert!(
            err.what.contains("PUBLISH needs an ADDRESS"),
            "{}",
            err.what
        );
    }

    #[test]
    fn addresses_and_gateways_become_keys() {
        let req = Request {
            bridges: vec!["br0".into(), "br1".into()],
            addresses: vec!["10.0.0.5/24".into(), "eth1:fd00::5/64".into()],
            gateways: vec!["fd00::1".into(), "10.0.0.1".into()],
            ..Request::default()
        };
        let text = config_text(&req);
        assert!(
            text.contains("\nADDRESS=('10.0.0.5/24' 'eth1:fd00::5/64')\n"),
            "{text}"
        );
        let cfg = parse(&text).unwrap();
        assert_eq!(cfg.gateway, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(cfg.gateway6, Some("fd00::1".parse().unwrap()));
        assert_eq!(cfg.addresses[1].cable, 1);
        assert!(check_gateways(&req.gateways).is_ok());
        let two = ["10.0.0.1".to_string(), "10.0.0.2".to_string()];
        let err = check_gateways(&two).unwrap_err().to_string();
        assert!(err.contains("one default route per family"), "{err}");
        let err = check_gateways(&["10.0.0.1/24".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not an IP address"), "{err}");
        // A gateway outside every subnet is the parser's refusal.
        let req = Request {
            bridges: vec!["br0".into()],
            addresses: vec!["10.0.0.5/24".into()],
            gateways: vec!["10.9.0.1".into()],
            ..Request::default()
        };
        assert!(parse(&config_text(&req)).is_err());
    }

    #[test]
    fn generated_config_parses_and_documents_every_key() {
        let text = config_text(&Request::default());
        let cfg = parse(&text).unwrap();
        assert_eq!(cfg, config::Config::defaults("demo"));
        for key in config::KEYS {
            // A family (SERVICE_<name>) is shown by its example's key.
            let name = key.example.split('=').next().unwrap_or(key.name);
            assert!(
                text.contains(&format!("\n#{name}=")),
                "{name} not documented"
            );
        }
        // The default parent as cgroup.rs places it, not the bare own cgroup.
        assert!(
            text.contains("(default: the launcher's own cgroup + /subhost;"),
            "{text}"
        );
    }

    #[test]
    fn given_values_are_set() {
        let req = Request {
            lower: vec!["/".into(), "/opt/base dir".into()],
            bridges: vec!["br0".into(), "br1=02:00:00:00:01:01".into(), "=".into()],
            image: None,
            userns: false,
            ..Request::default()
        };
        let cfg = parse(&config_text(&req)).unwrap();
        assert_eq!(cfg.userns, None);
        assert_eq!(
            cfg.lower,
            vec![PathBuf::from("/"), PathBuf::from("/opt/base dir")]
        );
        assert_eq!(cfg.bridges.len(), 3);
        assert_eq!(cfg.bridges[0].bridge.as_deref(), Some("br0"));
        assert_eq!(cfg.bridges[1].mac, Some([2, 0, 0, 0, 1, 1]));
        assert_eq!(cfg.bridges[2].bridge, None);
    }

    #[test]
    fn keys_come_in_table_order_and_options_set_table_keys() {
        let req = Request {
            lower: vec!["/".into()],
            bridges: vec!["br0".into()],
            image: None,
            userns: true,
            ..Request::default()
        };
        let text = config_text(&req);
        let at = |name: &str| {
            text.find(&format!("\n{name}="))
                .or_else(|| text.find(&format!("\n#{name}=")))
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
        };
        let places: Vec<usize> = config::KEYS
            .iter()
            .map(|k| at(k.example.split('=').next().unwrap_or(k.name)))
            .collect();
        assert!(places.windows(2).all(|w| w[0] < w[1]), "{text}");
        // Each option (--lower, --bridge, --userns) sets a key of the table.
        let set: Vec<&str> = config::KEYS
            .iter()
            .map(|k| k.name)
            .filter(|name| requested(&req, name).is_some())
            .collect();
        assert_eq!(set, ["LOWER", "BRIDGES", "USERNS"]);
        for name in set {
            assert!(
                text.contains(&format!("\n{name}=")),
                "{name} not set:\n{text}"
            );
            assert!(!text.contains(&format!("\n#{name}=")), "{name}:\n{text}");
        }
    }

    #[test]
    fn userns_writes_pick() {
        let req = Request {
            userns: true,
            ..Request::default()
        };
        let text = config_text(&req);
        assert!(text.contains("\nUSERNS=pick\n"), "{text}");
        let cfg = parse(&text).unwrap();
        assert_eq!(
            cfg.userns.map(|u| u.setting),
            Some(crate::userns::Setting::Pick)
        );
    }

    #[test]
    fn quotes_and_dollars_stay_literal() {
        let req = Request {
            lower: vec!["/opt/it's $HOME".into()],
            ..Request::default()
        };
        let cfg = parse(&config_text(&req)).unwrap();
        assert_eq!(cfg.lower, vec![PathBuf::from("/opt/it's $HOME")]);
    }

    #[test]
    fn every_example_parses_when_enabled() {
        let text = config_text(&Request::default());
        let enabled: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if !rest.starts_with(' ') && !rest.is_empty() => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let cfg = parse(&enabled).unwrap_or_else(|e| panic!("{e}\n{enabled}"));
        assert_eq!(cfg.lower, vec![PathBuf::from("/")]);
        assert_eq!(cfg.memory_max, Some(512 << 20));
        assert_eq!(cfg.pids_max, Some(512));
        assert_eq!(cfg.start, vec!["ssh", "cron"]);
    }

    #[test]
    fn bad_bridges_are_refused_by_the_config_parser() {
        for b in [
            "br0=zz",
            "br0=01:00:00:00:00:01",
            "a/b",
            "waytoolongbridgename0",
        ] {
            let req = Request {
                bridges: vec![b.into()],
                ..Request::default()
            };
            assert!(parse(&config_text(&req)).is_err(), "{b}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("4g").unwrap(), 4 << 30);
        assert_eq!(parse_size("2048K").unwrap(), 2 << 20);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        for bad in ["", "M", "12X", "1.5G", "-1M", "64K", "99999999999T", " 1M"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
