//! Published ports (`PUBLISH`), run inside a network namespace of the
//! test's that plays the host: the launcher runs there (`nsenter --net`,
//! which keeps the mount namespace, unlike `ip netns exec`), so the bridge,
//! the cables' host ends and the nftables table `inet subhost` all land
//! there. A "LAN" namespace is routed through it on a link of its own (it
//! sees the host, not the subhost's bridge), and a client namespace sits on
//! the subhost's bridge (hairpin). Traffic flows only between these
//! namespaces; the real host's netns gets no table.

use std::process::{Command, Stdio};
use std::time::Duration;

use subhost_tests::json::{parse_json, J};
use subhost_tests::*;

const LIMIT: Duration = Duration::from_secs(20);

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

/// A network namespace of the test's, deleted (with its links) on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = unique_name(tag);
        assert_ok(&run_timeout(
            Command::new("ip").args(["netns", "add", &name]),
            LIMIT,
        ));
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    /// `program ARGS` in this netns only (the mount namespace stays).
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path())).arg(program);
        c
    }

    fn ip(&self, args: &[&str]) {
        let out = run_timeout(Command::new("ip").arg("-n").arg(&self.0).args(args), LIMIT);
        assert_ok(&out);
    }

    fn sh(&self, script: &str) -> Finished {
        run_timeout(
            self.cmd("sh").args(["-c", script]).stdin(Stdio::null()),
            LIMIT,
        )
    }

    /// `nft list table inet subhost` here: empty when there is no table.
    fn table(&self) -> String {
        let out = self.sh("nft list table inet subhost 2>/dev/null || true");
        out.stdout_str()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// The namespaces: `host` with bridge `br` (`{v4}.1/24`, `{v6}::1/64`)
/// and a LAN link (`{lan4}.1`, `{lan6}::1`) to `lan` (`.2`, `::2`), and
/// `client` on `br` (`{v4}.9`). Forwarding is on in `host`.
/// Made before a test's subhosts, it is dropped after them.
struct World {
    host: Netns,
    lan: Netns,
    client: Netns,
    br: String,
    v4: String,
    v6: String,
    lan4: String,
    lan6: String,
}

impl World {
    fn new(tag: u32) -> World {
        require_root();
        let n = (std::process::id() * 7 + tag) % 250 + 1;
        let w = World {
            host: Netns::new("ph"),
            lan: Netns::new("pl"),
            client: Netns::new("pc"),
            br: unique_name("pb"),
            v4: format!("10.217.{n}"),
            v6: format!("fd17:{n:x}:{tag:x}"),
            lan4: format!("10.218.{n}"),
            lan6: format!("fd18:{n:x}:{tag:x}"),
        };
        let h = &w.host;
        h.ip(&["link", "add", &w.br, "type", "bridge"]);
        h.ip(&["link", "set", &w.br, "up"]);
        h.ip(&["addr", "add", &format!("{}.1/24", w.v4), "dev", &w.br]);
        h.ip(&[
            "addr",
            "add",
            &format!("{}::1/64", w.v6),
            "dev",
            &w.br,
            "nodad",
        ]);
        // The LAN: a routed link, no bridge shared with the subhost.
        h.ip(&[
            "link", "add", "lanh", "type", "veth", "peer", "name", "lan0", "netns", &w.lan.0,
        ]);
        h.ip(&["link", "set", "lanh", "up"]);
        h.ip(&["addr", "add", &format!("{}.1/24", w.lan4), "dev", "lanh"]);
        h.ip(&[
            "addr",
            "add",
            &format!("{}::1/64", w.lan6),
            "dev",
            "lanh",
            "nodad",
        ]);
        let l = &w.lan;
        l.ip(&["link", "set", "lan0", "up"]);
        l.ip(&["addr", "add", &format!("{}.2/24", w.lan4), "dev", "lan0"]);
        l.ip(&[
            "addr",
            "add",
            &format!("{}::2/64", w.lan6),
            "dev",
            "lan0",
            "nodad",
        ]);
        l.ip(&["route", "add", "default", "via", &format!("{}.1", w.lan4)]);
        l.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("{}::1", w.lan6),
        ]);
        // A client on the subhost's own bridge.
        h.ip(&[
            "link",
            "add",
            "clh",
            "master",
            &w.br,
            "up",
            "type",
            "veth",
            "peer",
            "name",
            "cl0",
            "netns",
            &w.client.0,
        ]);
        let c = &w.client;
        c.ip(&["link", "set", "cl0", "up"]);
        c.ip(&["addr", "add", &format!("{}.9/24", w.v4), "dev", "cl0"]);
        c.ip(&["route", "add", "default", "via", &format!("{}.1", w.v4)]);
        assert_ok(
            &h.sh("sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv6.conf.all.forwarding=1"),
        );
        // With br_netfilter calling the IP hooks for bridged packets, the
        // subhost's direct answer to a client on its bridge is un-DNATed on
        // the bridge and the hairpin works without the masquerade: off, as
        // on a host without it, so the test sees the launcher's rule work.
        let _ = h.sh("sysctl -qw net.bridge.bridge-nf-call-iptables=0; \
             sysctl -qw net.bridge.bridge-nf-call-ip6tables=0");
        w
    }

    /// The config of a subhost at `{v4}.{host}` and `{v6}::{host}`.
    fn config(&self, host: u32, publish: &str, boot: &str) -> String {
        format!(
            "BRIDGES=({br})\nADDRESS=({v4}.{host}/24 {v6}::{host}/64)\n\
             GATEWAY={v4}.1\nGATEWAY6={v6}::1\nPUBLISH=({publish})\nBOOT=({boot})\n",
            br = self.br,
            v4 = self.v4,
            v6 = self.v6,
        )
    }

    /// `subhost-launch ARGS` for `s`, run in the host netns.
    fn launch(&self, s: &Subhost, args: &[&str]) -> Finished {
        run_timeout(
            self.host
                .cmd(launch_bin())
                .args(args)
                .env("SUBHOST", s.base())
                .stdin(Stdio::null()),
            LAUNCH_LIMIT,
        )
    }
}

/// What the peer server answers `ns` at `addr` `port` over `proto`,
/// retried for a few seconds while the server comes up.
fn ask(ns: &Netns, proto: &str, addr: &str, port: u16) -> String {
    let to = match addr.contains(':') {
        true => format!("[{addr}]:{port}"),
        false => format!("{addr}:{port}"),
    };
    let mut last = String::new();
    for _ in 0..10 {
        let out = run_timeout(
            ns.cmd(probe_bin())
                .args(["ask", proto, &to])
                .stdin(Stdio::null()),
            LIMIT,
        );
        last = out.stdout_str();
        if let Some(seen) = last.trim().strip_prefix("ask: peer ") {
            return format!("peer {seen}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    format!("no answer: {last:?}")
}

const SERVERS: &str = "sh -c '/probe serve-peer tcp 80 & /probe serve-peer udp 53 &'";

#[test]
fn lan_and_bridge_clients_reach_the_published_ports_and_stop_removes_the_rules() {
    let w = World::new(1);
    let a = Subhost::busybox("pa", &w.config(5, "tcp:8080:80 udp:5353:53", SERVERS));
    install_probe(&a.root());
    let chain = format!("sh_{}", a.name);

    let plan = w.launch(&a, &["start", "--detach", "--dry-run", &a.name]);
    assert_ok(&plan);
    let text = plan.stdout_str();
    for want in [
        format!(
            "nft add rule inet subhost {chain} meta nfproto ipv4 fib daddr type local \
             ip daddr != 127.0.0.0/8 tcp dport 8080 dnat ip to {}.5:80",
            w.v4
        ),
        format!("udp dport 5353 dnat ip6 to [{}::5]:53", w.v6),
        format!("nft add rule inet subhost prerouting jump {chain}"),
        format!(
            "nft add rule inet subhost postrouting iifname \"{0}\" oifname \"{0}\" ct status dnat masquerade",
            w.br
        ),
    ] {
        assert!(text.contains(&want), "no {want:?} in:\n{text}");
    }
    assert_eq!(w.host.table(), "", "dry-run made rules");

    assert_ok(&w.launch(&a, &["start", "--detach", &a.name]));
    // From the LAN the service sees the client's own address, both families.
    assert_eq!(
        ask(&w.lan, "tcp", &format!("{}.1", w.lan4), 8080),
        format!("peer {}.2", w.lan4)
    );
    assert_eq!(
        ask(&w.lan, "tcp", &format!("{}::1", w.lan6), 8080),
        format!("peer {}::2", w.lan6)
    );
    assert_eq!(
        ask(&w.lan, "udp", &format!("{}.1", w.lan4), 5353),
        format!("peer {}.2", w.lan4)
    );
    // The host itself, through its loopback (the forwarder): the
    // connection is made inside the subhost, from its own address.
    assert_eq!(
        ask(&w.host, "tcp", "127.0.0.1", 8080),
        format!("peer {}.5", w.v4)
    );
    assert_eq!(
        ask(&w.host, "tcp", "::1", 8080),
        format!("peer {}::5", w.v6)
    );
    assert_eq!(
        ask(&w.host, "udp", "::1", 5353),
        format!("peer {}::5", w.v6)
    );
    // A client on the subhost's bridge calling the host's address there
    // gets an answer through the host (masqueraded), not over the bridge.
    assert_eq!(
        ask(&w.client, "tcp", &format!("{}.1", w.v4), 8080),
        format!("peer {}.1", w.v4)
    );

    let out = w.launch(&a, &["status", "--json", &a.name]);
    assert_ok(&out);
    let j = parse_json(&out.stdout_str());
    let shown: Vec<String> = j
        .get("published")
        .arr()
        .iter()
        .map(|p| {
            let host = match p.get("host_address") {
                J::Null => "*".to_string(),
                h => h.str().to_string(),
            };
            format!(
                "{} {host} {} {} {}",
                p.get("proto").str(),
                p.get("host_port").num(),
                p.get("port").num(),
                p.get("address").str()
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            format!("tcp * 8080 80 {}.5", w.v4),
            format!("tcp * 8080 80 {}::5", w.v6),
            format!("udp * 5353 53 {}.5", w.v4),
            format!("udp * 5353 53 {}::5", w.v6),
            format!("tcp 127.0.0.1 8080 80 {}.5", w.v4),
            format!("tcp ::1 8080 80 {}::5", w.v6),
            format!("udp 127.0.0.1 5353 53 {}.5", w.v4),
            format!("udp ::1 5353 53 {}::5", w.v6),
        ]
    );

    // Another subhost publishing the port is refused, naming the first,
    // and leaves nothing.
    let b = Subhost::busybox("pb", &w.config(6, "'tcp:[::]:8080:81'", SERVERS));
    let out = w.launch(&b, &["start", "--detach", &b.name]);
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr_str()
            .contains(&format!("subhost {} publishes tcp:8080:80", a.name)),
        "{}",
        out.describe()
    );
    assert!(!w.host.table().contains(&b.name), "{}", w.host.table());
    assert!(!b.live_mounted());

    // A host process with the port bound is named.
    let mut holder = spawn_group(
        w.host
            .cmd("busybox")
            .args(["nc", "-l", "-p", "9191"])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    let pid = holder.id();
    let bound = wait_until(Duration::from_secs(5), || {
        w.host
            .sh("cat /proc/net/tcp /proc/net/tcp6")
            .stdout_str()
            .contains(":23E7 ")
    });
    let c = Subhost::busybox("pd", &w.config(7, "tcp:9191:80", SERVERS));
    let out = w.launch(&c, &["start", "--detach", &c.name]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(bound, "busybox nc did not listen on 9191");
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr_str().contains(&format!(
            "tcp port 9191 is bound on the host by pid {pid} ("
        )),
        "{}",
        out.describe()
    );

    // stop removes the chain and every rule of the subhost.
    assert!(w.host.table().contains(&chain));
    assert_ok(&w.launch(&a, &["stop", &a.name]));
    let table = w.host.table();
    assert!(
        !table.contains(&a.name) && table.contains("chain prerouting"),
        "{table}"
    );
    assert_ok(&w.launch(&a, &["stop", &a.name]));
    // Nothing answers the port any more.
    let to = format!("{}.1:8080", w.lan4);
    let out = run_timeout(w.lan.cmd(probe_bin()).args(["ask", "tcp", &to]), LIMIT);
    assert!(!out.stdout_str().contains("peer"), "{}", out.describe());
    let out = run_timeout(
        w.host
            .cmd(probe_bin())
            .args(["ask", "tcp", "127.0.0.1:8080"]),
        LIMIT,
    );
    assert!(!out.stdout_str().contains("peer"), "{}", out.describe());
    assert!(
        !std::path::Path::new(&format!("/run/subhost/{}.forward", a.name)).exists(),
        "the forwarder's record is left"
    );
    assert_real_host_has_no_table();
}

/// A start that fails after its rules were made (BOOT too long for execve,
/// which the init only finds when it runs it) takes them away again.
#[test]
fn a_failed_start_leaves_no_rule() {
    let w = World::new(2);
    let big = "x".repeat(140_000);
    let s = Subhost::busybox("pf", &w.config(5, "tcp:8080:80", &format!("echo {big}")));
    let out = w.launch(&s, &["start", "--detach", &s.name]);
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr_str().contains("Argument list too long"),
        "{}",
        out.describe()
    );
    let table = w.host.table();
    assert!(
        table.contains("chain prerouting") && !table.contains(&s.name),
        "{table}"
    );
    assert!(!std::path::Path::new(&format!("/run/netns/{}", s.name)).exists());
    assert_real_host_has_no_table();
}

#[test]
fn bad_published_ports_are_refused_at_their_line() {
    let br = Bridge::new();
    let head = format!("BRIDGES=({})\nADDRESS=(10.219.0.5/24)\n", br.name);
    for (publish, needle) in [
        ("tcp:0:80", "port \"0\" is out of range: 1 to 65535"),
        ("tcp:8080:65536", "out of range"),
        ("sctp:8080:80", "neither tcp nor udp"),
        ("tcp:10.0.0.300:80:80", "is not an IP address"),
        (
            "tcp:8080:80 tcp:127.0.0.1:8080:81",
            "takes the host port of tcp:8080:80",
        ),
        ("'tcp:[::]:8443:443'", "PUBLISH needs an ADDRESS"),
    ] {
        let s = Subhost::busybox("pe", &format!("{head}PUBLISH=({publish})\n"));
        let out = s.sh("true");
        assert_eq!(out.code(), 125, "{}", out.describe());
        let err = out.stderr_str();
        assert!(
            err.contains("/config:3: ") && err.contains(needle),
            "{publish}: {}",
            out.describe()
        );
        assert!(!s.live_mounted());
    }
    let s = Subhost::busybox("pe", "PUBLISH=(tcp:8080:80)\n");
    let out = s.sh("true");
    assert!(
        out.stderr_str()
            .contains("/config:1: PUBLISH needs an ADDRESS"),
        "{}",
        out.describe()
    );
}

/// The tests make their rules only in namespaces of their own.
fn assert_real_host_has_no_table() {
    let out = run_timeout(
        Command::new("nft").args(["list", "table", "inet", "subhost"]),
        LIMIT,
    );
    assert!(
        !out.status.success(),
        "the real host has a table inet subhost"
    );
}

/// The lines of README's tutorial, from its heading to the end of its
/// first console block: each command (`# ` lines, continuations joined, a
/// heredoc's lines kept with it) with the output shown after it.
fn tutorial() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme
        .find("#### From a fresh host to a web server reachable from the LAN")
        .expect("the tutorial's heading in README.md");
    let block = readme[start..]
        .split("```console\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the tutorial's console block");
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    let mut lines = block.lines();
    while let Some(line) = lines.next() {
        if let Some(cmd) = line.strip_prefix("# ") {
            let mut cmd = cmd.to_string();
            while cmd.ends_with('\\') {
                cmd.pop();
                cmd.push_str(lines.next().unwrap_or("").trim_start());
            }
            if let Some((_, word)) = cmd.split_once("<<'") {
                let end = word.split('\'').next().unwrap_or("EOF").to_string();
                for body in lines.by_ref() {
                    cmd.push('\n');
                    cmd.push_str(body);
                    if body == end {
                        break;
                    }
                }
            }
            steps.push((cmd, Vec::new()));
        } else if let Some(last) = steps.last_mut() {
            last.1.push(line.to_string());
        }
    }
    steps
}

/// Stops the tutorial's subhost before its directory and namespace go.
struct Stopped<'a>(&'a Netns, std::path::PathBuf);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let _ = run_timeout(
            self.0
                .cmd(launch_bin())
                .args(["stop", "web"])
                .env("SUBHOST", &self.1),
            LAUNCH_LIMIT,
        );
    }
}

/// README's tutorial, command by command, in a netns playing a fresh host
/// whose LAN is a further netns. What a test must not do on this machine
/// is changed, and only that: the bridge's name, the directories, a
/// scratch base for `--lower /`, busybox's httpd and wget for python3's
/// and curl.
#[test]
fn the_readme_tutorial_serves_the_lan_and_the_host() {
    require_root();
    let steps = tutorial();
    assert!(steps.len() >= 10, "{steps:?}");
    let host = Netns::new("th");
    let lan = Netns::new("tl");
    host.ip(&[
        "link", "add", "lanh", "type", "veth", "peer", "name", "lan0", "netns", &lan.0,
    ]);
    host.ip(&["link", "set", "lanh", "up"]);
    host.ip(&["addr", "add", "192.0.2.10/24", "dev", "lanh"]);
    lan.ip(&["link", "set", "lan0", "up"]);
    lan.ip(&["addr", "add", "192.0.2.20/24", "dev", "lan0"]);

    let tmp = TempDir::new();
    let base = tmp.path().join("base");
    busybox_root(&base);
    std::fs::create_dir_all(base.join("srv")).unwrap();
    std::fs::write(base.join("srv/index.html"), "hello from web\n").unwrap();
    let dir = tmp.path().join("subhost");
    std::fs::create_dir_all(&dir).unwrap();
    let _stop = Stopped(&host, dir.clone());
    let br = unique_name("tb");
    let launch = launch_bin();
    let subs = [
        (
            "/etc/nftables-sub0.nft",
            tmp.path().join("sub0.nft").display().to_string(),
        ),
        ("/opt/subhost", dir.display().to_string()),
        ("sub0", br.clone()),
        ("--lower /", format!("--lower {}", base.display())),
        (
            "python3 -m http.server 80 --directory /srv",
            "busybox httpd -f -p 80 -h /srv".into(),
        ),
        ("curl -s", "busybox wget -qO-".into()),
        ("subhost-launch", launch.display().to_string()),
    ];
    let mut answers = 0;
    for (cmd, shown) in &steps {
        let mut run = cmd.clone();
        for (from, to) in &subs {
            run = run.replace(from, to);
        }
        let ns = match cmd.contains("from another machine") {
            true => &lan,
            false => &host,
        };
        let wget = run.contains("wget");
        let mut out = None;
        // The service takes a moment to listen after the start returns.
        for _ in 0..if wget { 20 } else { 1 } {
            let o = run_timeout(
                ns.cmd("sh")
                    .args(["-c", &run])
                    .env("SUBHOST", &dir)
                    .stdin(Stdio::null()),
                LAUNCH_LIMIT,
            );
            let done = o.code() == 0;
            out = Some(o);
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let out = out.unwrap();
        assert_eq!(
            out.code(),
            0,
            "tutorial step {cmd:?} ({run:?}): {}",
            out.describe()
        );
        if wget {
            assert_eq!(out.stdout_str(), "hello from web\n", "{cmd:?}");
            answers += 1;
        }
        if !shown.is_empty() {
            let want = shown.join("\n").replace("sub0", &br);
            assert_eq!(
                out.stdout_str().trim_end(),
                want,
                "what README shows for {cmd:?}"
            );
        }
    }
    assert_eq!(answers, 2, "the LAN and the host were both asked");
}

/// Stops `s` in the netns playing the host, where its rules are.
struct StopIn<'a>(&'a World, &'a Subhost);

impl Drop for StopIn<'_> {
    fn drop(&mut self) {
        let _ = self.0.launch(self.1, &["stop", &self.1.name]);
    }
}

/// Which `socket(2)` calls `subhost-launch ARGS` makes for `s`, as strace
/// sees them in the netns playing the host.
fn sockets_opened(w: &World, s: &Subhost, args: &[&str]) -> String {
    let log = s.dir().join("strace.log");
    let out = run_timeout(
        w.host
            .cmd("strace")
            .args(["-f", "-e", "trace=socket", "-o"])
            .arg(&log)
            .arg(launch_bin())
            .args(args)
            .env("SUBHOST", s.base())
            .stdin(Stdio::null()),
        LAUNCH_LIMIT,
    );
    assert_ok(&out);
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    text
}

/// The record of what a start published decides what `stop` and `status`
/// do with the table: nothing for a subhost without it (no netfilter
/// socket at all), and the rules' removal for one whose config has lost
/// `PUBLISH` since it started.
#[test]
fn the_record_of_published_ports_decides_what_stop_and_status_read() {
    let w = World::new(3);
    if run_timeout(Command::new("strace").arg("-V"), LIMIT).code() != 0 {
        panic!("strace is not installed: tests/setup installs it");
    }
    let plain = Subhost::busybox("pn", &format!("BRIDGES=({})\n", w.br));
    let _stop_plain = StopIn(&w, &plain);
    assert_ok(&w.launch(&plain, &["start", "--detach", &plain.name]));
    for args in [&["status", &plain.name][..], &["stop", &plain.name][..]] {
        let seen = sockets_opened(&w, &plain, args);
        assert!(
            !seen.contains("NETLINK_NETFILTER"),
            "{args:?} opened a netfilter socket:\n{seen}"
        );
    }

    let s = Subhost::busybox("pr", &w.config(6, "tcp:8080:80", ""));
    let _stop = StopIn(&w, &s);
    assert_ok(&w.launch(&s, &["start", "--detach", &s.name]));
    let record = std::path::PathBuf::from(format!("/run/subhost/{}.published", s.name));
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "tcp:8080:80\n");
    assert!(w.host.table().contains(&format!("sh_{}", s.name)));
    // Its config loses PUBLISH while it runs: stop still removes the rules.
    let config = s.dir().join("config");
    let text = std::fs::read_to_string(&config).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("PUBLISH="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, kept).unwrap();
    let status = w.launch(&s, &["status", &s.name]);
    assert!(
        status.stdout_str().contains("tcp *:8080 ->"),
        "{}",
        status.describe()
    );
    assert_ok(&w.launch(&s, &["stop", &s.name]));
    let table = w.host.table();
    assert!(!table.contains(&s.name), "{table}");
    assert!(!record.exists());
    assert_real_host_has_no_table();
}
