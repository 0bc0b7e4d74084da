use super::*;
use crate::netns::Address;

fn p(s: &str) -> Publish {
    Publish::parse(s).unwrap_or_else(|e| panic!("{s}: {e:?}"))
}

#[test]
fn published_ports_parse_and_print_back() {
    for s in [
        "tcp:8080:80",
        "udp:5353:53",
        "tcp:127.0.0.1:2222:22",
        "tcp:[::]:8443:443",
        "tcp:192.0.2.1:80:80",
        "udp:[fd00::1]:53:53",
    ] {
        assert_eq!(p(s).to_string(), s);
    }
    let x = p("tcp:[::]:8443:443");
    assert_eq!(x.host, Some("::".parse().unwrap()));
    assert_eq!((x.host_port, x.port), (8443, 443));
}

#[test]
fn bad_published_ports_say_what_is_wrong() {
    for (s, needle) in [
        ("tcp:0:80", "out of range"),
        ("tcp:8080:65536", "out of range"),
        ("tcp:8080:+80", "out of range"),
        ("sctp:8080:80", "neither tcp nor udp"),
        ("tcp:8080", "has one port"),
        ("8080:80", "neither tcp nor udp"),
        ("tcp:10.0.0:80:80", "not an IP address"),
        ("tcp:::1:80:80", "in brackets"),
        ("tcp:fd00::1:80:80", "in brackets"),
        ("tcp:[10.0.0.1]:80:80", "without brackets"),
        ("tcp:224.0.0.1:80:80", "multicast"),
    ] {
        match Publish::parse(s) {
            Ok(x) => panic!("{s} was accepted: {x:?}"),
            Err((what, _)) => assert!(what.contains(needle), "{s}: {what}"),
        }
    }
}

#[test]
fn overlapping_host_addresses_are_the_same_port() {
    let all = p("tcp:8080:80");
    assert!(all.overlaps(&p("tcp:127.0.0.1:8080:81")));
    assert!(p("tcp:0.0.0.0:8080:80").overlaps(&p("tcp:192.0.2.1:8080:80")));
    assert!(!p("tcp:[::]:8080:80").overlaps(&p("tcp:192.0.2.1:8080:80")));
    assert!(!all.overlaps(&p("udp:8080:80")));
    assert!(!all.overlaps(&p("tcp:8081:80")));
    assert!(!p("tcp:192.0.2.1:8080:80").overlaps(&p("tcp:192.0.2.2:8080:80")));
}

fn addressing() -> Addressing {
    Addressing {
        addresses: vec![
            ("eth0".into(), Address::parse("10.0.0.5/24").unwrap()),
            ("eth0".into(), Address::parse("fd00::5/64").unwrap()),
            ("eth0".into(), Address::parse("10.0.0.6/24").unwrap()),
        ],
        gateway: None,
        gateway6: None,
    }
}

#[test]
fn the_plan_goes_to_the_first_address_of_each_family_and_skips_loopback() {
    let links = vec![Link::cable("web", 0, Some("sub0".into()), None)];
    let published = [
        p("tcp:8080:80"),
        p("tcp:127.0.0.1:2222:22"),
        p("udp:192.0.2.1:53:5353"),
    ];
    let plan = plan("web", &published, &addressing(), &links);
    let to: Vec<String> = plan.dnat.iter().map(|d| d.to.to_string()).collect();
    assert_eq!(to, ["10.0.0.5:80", "[fd00::5]:80", "10.0.0.5:5353"]);
    assert_eq!(plan.hairpin, ["sub0"]);
    let text = plan.to_string();
    for line in [
        "nft add table inet subhost",
        "nft add chain inet subhost prerouting '{ type nat hook prerouting priority -100; }'",
        "nft add chain inet subhost postrouting '{ type nat hook postrouting priority 100; }'",
        "nft add rule inet subhost sh_web meta nfproto ipv4 fib daddr type local \
         ip daddr != 127.0.0.0/8 tcp dport 8080 dnat ip to 10.0.0.5:80 \
         comment \"publish tcp:8080:80 to 10.0.0.5\"",
        "nft add rule inet subhost sh_web meta nfproto ipv6 fib daddr type local \
         ip6 daddr != ::1 tcp dport 8080 dnat ip6 to [fd00::5]:80",
        "nft add rule inet subhost sh_web meta nfproto ipv4 ip daddr 192.0.2.1 \
         udp dport 53 dnat ip to 10.0.0.5:5353",
        "nft add rule inet subhost prerouting jump sh_web comment \"subhost web\"",
        "nft add rule inet subhost output jump sh_web comment \"subhost web\"",
        "nft add rule inet subhost postrouting iifname \"sub0\" oifname \"sub0\" \
         ct status dnat masquerade comment \"subhost web\"",
    ] {
        assert!(text.contains(line), "{line}\nnot in:\n{text}");
    }
    // Nothing for the loopback-only port.
    assert!(!text.contains("2222"), "{text}");
}

#[test]
fn comments_read_back_as_what_is_published() {
    let d = Dnat {
        publish: p("tcp:[::]:8443:443"),
        to: "[fd00::5]:443".parse().unwrap(),
    };
    assert_eq!(Dnat::from_comment(&d.comment()), Some(d.clone()));
    let shown = d.published();
    assert_eq!(shown.host_address, None);
    assert_eq!(shown.to_string(), "tcp [*]:8443 -> [fd00::5]:443");
}

/// Runs `f` on a thread of its own in a new network namespace, so the
/// kernel's nftables are exercised without touching the host's.
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    })
    .join()
    .expect("thread")
}

#[test]
fn rules_are_made_read_back_and_removed_in_the_kernel() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let recs = records_dir("made");
    let dir = recs.clone();
    in_new_netns(move || {
        let links = vec![Link::cable("web", 0, Some("sub0".into()), None)];
        let published = [p("tcp:8080:80"), p("udp:192.0.2.1:53:5353")];
        let web = plan("web", &published, &addressing(), &links);
        apply(&recs, &web).expect("apply");
        assert_eq!(
            std::fs::read_to_string(recs.join("web.published")).unwrap(),
            "tcp:8080:80\nudp:192.0.2.1:53:5353\n"
        );
        // Again, as a start after a crash finds them: replaced, not doubled.
        apply(&recs, &web).expect("apply again");
        let shown = read(&recs, "web").expect("read");
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert_eq!(shown[0].to_string(), "tcp *:8080 -> 10.0.0.5:80");
        let mut nft = Nft::open(TABLE).unwrap();
        let outer: Vec<_> = nft
            .rules()
            .unwrap()
            .into_iter()
            .filter(|r| r.comment.as_deref() == Some("subhost web"))
            .collect();
        assert_eq!(outer.len(), 3, "{outer:?}");

        // Another subhost on the same port is refused, naming web.
        let db = plan("db", &[p("tcp:0.0.0.0:8080:80")], &addressing(), &links);
        let err = check_free("db", &[p("tcp:0.0.0.0:8080:80")], &db).unwrap_err();
        assert!(
            err.to_string()
                .contains("subhost web publishes tcp:8080:80"),
            "{err}"
        );
        // Another family, or port, is free.
        let other = [p("tcp:[::]:9090:80")];
        check_free("db", &other, &plan("db", &other, &addressing(), &links)).unwrap();
        apply(&recs, &plan("db", &other, &addressing(), &links)).unwrap();

        assert!(remove(&recs, "web").unwrap());
        assert!(!remove(&recs, "web").unwrap(), "idempotent");
        assert_eq!(read(&recs, "web"), Some(Vec::new()));
        let left: Vec<_> = nft.rules().unwrap();
        assert!(
            left.iter()
                .all(|r| r.chain == "sh_db" || r.comment.as_deref() == Some("subhost db")),
            "{left:?}"
        );
        assert!(!nft.chains().unwrap().contains(&"sh_web".to_string()));
        assert!(!recs.join("web.published").exists());
        assert!(remove(&recs, "db").unwrap());
    });
    std::fs::remove_dir(&dir).unwrap();
}

/// A run directory of records for one test.
fn records_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "subhost-test-published-{what}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn without_its_record_a_subhost_has_no_rules_and_the_table_is_not_read() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let recs = records_dir("record");
    let dir = recs.clone();
    in_new_netns(move || {
        let links = vec![Link::cable("web", 0, Some("sub0".into()), None)];
        let web = plan("web", &[p("tcp:8080:80")], &addressing(), &links);
        apply(&recs, &web).expect("apply");
        // Its config lost PUBLISH: the record still says there are rules.
        assert!(recorded(&recs, "web"));
        assert_eq!(read(&recs, "web").unwrap().len(), 2);
        // A record without rules (a start killed before its batch) is
        // cleared; rules without a record are none of this subhost's.
        let mut nft = Nft::open(TABLE).unwrap();
        std::fs::remove_file(recs.join("web.published")).unwrap();
        assert_eq!(read(&recs, "web"), Some(Vec::new()));
        assert!(!remove(&recs, "web").unwrap());
        assert!(nft.chains().unwrap().contains(&"sh_web".to_string()));
        std::fs::write(recs.join("web.published"), "tcp:8080:80\n").unwrap();
        assert!(remove(&recs, "web").unwrap());
        assert!(!nft.chains().unwrap().contains(&"sh_web".to_string()));
        std::fs::write(recs.join("web.published"), "tcp:8080:80\n").unwrap();
        assert!(!remove(&recs, "web").unwrap());
        assert!(!recorded(&recs, "web"));
    });
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn a_bound_host_port_is_refused_naming_its_process() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    in_new_netns(|| {
        // lo is down in a new netns: the wildcard is enough to bind.
        let l = std::net::TcpListener::bind("0.0.0.0:8081").expect("bind");
        let published = [p("tcp:8081:80")];
        let plan = plan("web", &published, &addressing(), &[]);
        let err = check_free("web", &published, &plan)
            .unwrap_err()
            .to_string();
        let me = std::process::id();
        assert!(
            err.contains(&format!("bound on the host by pid {me} (")),
            "{err}"
        );
        drop(l);
        // A process another test forks meanwhile has a copy of the
        // listener until it exits: the port frees within moments.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while check_free("web", &published, &plan).is_err() && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        check_free("web", &published, &plan).unwrap();
        let u = std::net::UdpSocket::bind("[::]:5353").expect("bind");
        let published = [p("udp:5353:53")];
        let err = check_free("web", &published, &plan)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("udp port 5353 is bound on the host by pid"),
            "{err}"
        );
        drop(u);
    });
}

/// The netfilter netlink sockets of processes (not the kernel's own) in
/// the calling thread's network namespace.
fn netfilter_sockets() -> usize {
    let table = std::fs::read_to_string("/proc/thread-self/net/netlink").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"12") && f.get(2).is_some_and(|pid| *pid != "0")
        })
        .count()
}

#[test]
fn the_batch_socket_is_closed_by_another_process_while_the_start_goes_on() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let recs = records_dir("handoff");
    let dir = recs.clone();
    in_new_netns(move || {
        let links = vec![Link::cable("web", 0, Some("sub0".into()), None)];
        let published = [p("tcp:8080:80")];
        let web = plan("web", &published, &addressing(), &links);
        check_free("web", &published, &web).expect("free");
        let committed = apply(&recs, &web).expect("apply");
        // Still held by the start (until its init runs), yet the socket is
        // gone: its last close, which waits for the kernel, was another's.
        let t = std::time::Instant::now();
        while netfilter_sockets() > 0 && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(netfilter_sockets(), 0, "the batch's socket is still open");
        drop(committed);
        assert_eq!(read(&recs, "web").expect("read").len(), 2);
        assert!(remove(&recs, "web").unwrap());
    });
    std::fs::remove_dir(&dir).unwrap();
}
