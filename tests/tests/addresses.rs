//! Declared addresses and default routes (`ADDRESS`, `GATEWAY`,
//! `GATEWAY6`): set in the subhost's netns when it is made, seen from
//! inside, kept while it hibernates, shown by `status` and `--dry-run`, and
//! bad values refused before anything is set up. Traffic flows only between
//! the test's own namespaces, over a bridge of its own with no uplink.

use std::path::Path;

use subhost_tests::json::parse_json;
use subhost_tests::*;

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

/// A /24 and a /64 of this test process's own, so that tests run side by
/// side do not share a subnet.
fn subnets(tag: u32) -> (String, String) {
    let n = (std::process::id() * 7 + tag) % 250 + 1;
    (format!("10.216.{n}"), format!("fd16:{n:x}:{tag:x}"))
}

fn config(br: &str, v4: &str, v6: &str, host: u32) -> String {
    format!(
        "BRIDGES=({br})\nADDRESS=({v4}.{host}/24 {v6}::{host}/64)\n\
         GATEWAY={v4}.254\nGATEWAY6={v6}::fe\n"
    )
}

/// What `ip addr show eth0`, `ip route` and `ip -6 route` show inside.
fn inside_view(s: &Subhost) -> String {
    let out = s.sh("ip addr show eth0; echo ROUTES; ip route; ip -6 route");
    assert_ok(&out);
    out.stdout_str()
}

/// The `addresses` of each cable in `status --json`.
fn json_addresses(s: &Subhost) -> Vec<Vec<String>> {
    let out = s.run(&["status", "--json", &s.name]);
    assert_ok(&out);
    let j = parse_json(&out.stdout_str());
    j.get("cables")
        .arr()
        .iter()
        .map(|c| {
            c.get("addresses")
                .arr()
                .iter()
                .map(|a| a.str().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn two_subhosts_on_a_bridge_get_their_addresses_and_routes_and_reach_each_other() {
    let br = Bridge::new();
    let (v4, v6) = subnets(1);
    let a = Subhost::busybox("aa", &config(&br.name, &v4, &v6, 1));
    let b = Subhost::busybox("ab", &config(&br.name, &v4, &v6, 2));

    for (s, host) in [(&a, 1), (&b, 2)] {
        let seen = inside_view(s);
        for want in [
            format!("inet {v4}.{host}/24"),
            format!("inet6 {v6}::{host}/64"),
            format!("default via {v4}.254 dev eth0"),
            format!("default via {v6}::fe dev eth0"),
        ] {
            assert!(seen.contains(&want), "{}: no {want:?} in:\n{seen}", s.name);
        }
    }

    // Both hibernate with their netns: the kernel answers for a.
    let out = b.sh(&format!("ping -c 1 -W 3 {v4}.1"));
    assert_ok(&out);
    assert!(
        out.stdout_str().contains("1 packets received"),
        "{}",
        out.describe()
    );
    let out = a.sh(&format!("ping -c 1 -W 3 {v4}.2"));
    assert_ok(&out);

    // status and list --json show what eth0 has now.
    let cables = json_addresses(&a);
    assert_eq!(cables.len(), 1);
    for want in [format!("{v4}.1/24"), format!("{v6}::1/64")] {
        assert!(cables[0].contains(&want), "{want} not in {cables:?}");
    }
    let out = a.run(&["status", &a.name]);
    assert_ok(&out);
    assert!(
        out.stdout_str().contains(&format!("addresses {v4}.1/24")),
        "{}",
        out.describe()
    );
    let out = a.run(&["list", "--json"]);
    assert_ok(&out);
    let list = parse_json(&out.stdout_str());
    let me = list
        .arr()
        .iter()
        .find(|s| s.get("name").str() == a.name)
        .expect("a in list --json");
    let addrs: Vec<&str> = me.get("cables").arr()[0]
        .get("addresses")
        .arr()
        .iter()
        .map(|x| x.str())
        .collect();
    assert!(addrs.contains(&format!("{v4}.1/24").as_str()), "{addrs:?}");

    // A wake reuses the netns: the addresses are still there, once each.
    let seen = inside_view(&a);
    assert_eq!(
        seen.matches(&format!("inet {v4}.1/24")).count(),
        1,
        "{seen}"
    );
    assert!(seen.contains(&format!("default via {v4}.254")), "{seen}");

    // Stopped: no netns, nothing to show.
    assert_ok(&a.stop());
    assert_eq!(json_addresses(&a), vec![Vec::<String>::new()]);
    assert!(!Path::new("/run/netns").join(&a.name).exists());
}

#[test]
fn an_address_on_a_second_cable_goes_to_that_cable() {
    let (br0, br1) = (Bridge::new(), Bridge::new());
    let (v4, _) = subnets(2);
    let s = Subhost::busybox(
        "a2",
        &format!(
            "BRIDGES=({} {})\nADDRESS=(eth1:{v4}.7/24)\nGATEWAY={v4}.1\n",
            br0.name, br1.name
        ),
    );
    let out = s.sh("ip -o addr show eth0; echo ETH1; ip -o addr show eth1; ip route");
    assert_ok(&out);
    let text = out.stdout_str();
    let (eth0, eth1) = text.split_once("ETH1").unwrap();
    assert!(!eth0.contains(&v4), "{text}");
    assert!(eth1.contains(&format!("inet {v4}.7/24")), "{text}");
    assert!(
        text.contains(&format!("default via {v4}.1 dev eth1")),
        "{text}"
    );
    assert_eq!(
        json_addresses(&s)
            .iter()
            .map(|c| c.iter().any(|a| a.starts_with(&v4)))
            .collect::<Vec<_>>(),
        [false, true]
    );
}

#[test]
fn bad_addresses_are_refused_at_their_line_before_anything_is_set_up() {
    let br = Bridge::new();
    let bridges = format!("BRIDGES=({})\n", br.name);
    let cases = [
        (
            "ADDRESS=(10.0.0.5/24 not-an-address/24)\n",
            2,
            "is not an IP address",
        ),
        ("ADDRESS=(10.0.0.5)\n", 2, "has no prefix length"),
        ("ADDRESS=(10.0.0.5/33)\n", 2, "out of range: 0 to 32"),
        ("ADDRESS=(fd00::5/129)\n", 2, "out of range: 0 to 128"),
        (
            "ADDRESS=(10.0.0.5/24)\nGATEWAY=10.1.0.1\n",
            3,
            "outside every cable's IPv4 subnet",
        ),
        (
            "ADDRESS=(10.0.0.5/24)\nGATEWAY6=fd00::1\n",
            3,
            "outside every cable's IPv6 subnet",
        ),
        (
            "ADDRESS=(\n  10.0.0.5/24\n  eth3:10.0.1.5/24\n)\n",
            4,
            "is for eth3, but BRIDGES has one cable",
        ),
    ];
    for (i, (text, line, needle)) in cases.into_iter().enumerate() {
        let s = Subhost::busybox(&format!("b{i}"), &format!("{bridges}{text}"));
        let out = s.sh("true");
        assert_eq!(out.code(), 125, "{text}: {}", out.describe());
        let at = format!("{}:{line}: ", s.dir().join("config").display());
        let err = out.stderr_str();
        assert!(err.contains(&at), "{text}: want {at:?} in {err}");
        assert!(err.contains(needle), "{text}: want {needle:?} in {err}");
        assert!(!Path::new("/run/netns").join(&s.name).exists(), "{text}");
        assert!(!s.live_mounted(), "{text}");
        assert!(
            !Path::new("/sys/class/net")
                .join(format!("{}0", s.name))
                .exists(),
            "{text}"
        );
    }
}

#[test]
fn dry_run_and_create_show_the_address_and_route_steps() {
    let br = Bridge::new();
    let (v4, v6) = subnets(3);
    let tmp = TempDir::new();
    let name = unique_name("ad");
    let (addr, addr6) = (format!("{v4}.5/24"), format!("{v6}::5/64"));
    let (gw, gw6) = (format!("{v4}.1"), format!("{v6}::1"));
    let mut create = cmd(
        launch_bin(),
        [
            "create",
            &name,
            "--bridge",
            &br.name,
            "--address",
            &addr,
            "--address",
            &addr6,
            "--gateway",
            &gw6,
            "--gateway",
            &gw,
        ],
    );
    create.args(mode_create_args()).env("SUBHOST", tmp.path());
    let out = run_timeout(&mut create, LAUNCH_LIMIT);
    assert_ok(&out);
    let config = std::fs::read_to_string(tmp.path().join(&name).join("config")).unwrap();
    assert!(
        config.contains(&format!("\nADDRESS=('{addr}' '{addr6}')\n")),
        "{config}"
    );
    assert!(config.contains(&format!("\nGATEWAY='{gw}'\n")), "{config}");
    assert!(
        config.contains(&format!("\nGATEWAY6='{gw6}'\n")),
        "{config}"
    );

    let out = run_timeout(
        cmd(launch_bin(), ["start", "--dry-run", &name]).env("SUBHOST", tmp.path()),
        LAUNCH_LIMIT,
    );
    assert_ok(&out);
    let plan = out.stdout_str();
    let steps = [
        format!("ip -n {name} link set eth0 up"),
        format!("ip -n {name} addr add {addr} dev eth0"),
        format!("ip -n {name} addr add {addr6} dev eth0"),
        format!("ip -n {name} route add default via {gw}"),
        format!("ip -n {name} -6 route add default via {gw6}"),
    ];
    let at: Vec<usize> = steps
        .iter()
        .map(|s| {
            plan.find(s.as_str())
                .unwrap_or_else(|| panic!("{s:?} not in:\n{plan}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "out of order:\n{plan}");
    assert!(!Path::new("/run/netns").join(&name).exists());

    // A --gateway outside every --address subnet: refused, nothing made.
    let other = unique_name("ad");
    let out = run_timeout(
        cmd(
            launch_bin(),
            [
                "create",
                &other,
                "--bridge",
                &br.name,
                "--address",
                &addr,
                "--gateway",
                "192.0.2.1",
            ],
        )
        .env("SUBHOST", tmp.path()),
        LAUNCH_LIMIT,
    );
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr_str()
            .contains("outside every cable's IPv4 subnet"),
        "{}",
        out.describe()
    );
    assert!(!tmp.path().join(&other).exists());
}
