use super::*;

fn fwd(s: &str) -> Forward {
    s.parse().unwrap()
}

#[test]
fn forwards_read_as_they_print() {
    for s in [
        "tcp:127.0.0.1:8080=10.0.0.5:80",
        "udp:[::1]:5353=[fd00::5]:53",
        "tcp:[::1]:2222=10.0.0.5:22",
    ] {
        assert_eq!(fwd(s).to_string(), s);
    }
    let f = fwd("udp:[::1]:5353=[fd00::5]:53");
    assert_eq!(f.proto, Proto::Udp);
    assert_eq!(f.listen, "[::1]:5353".parse().unwrap());
}

#[test]
fn bad_forwards_say_what_is_wrong() {
    for (s, why) in [
        ("sctp:127.0.0.1:1=10.0.0.5:1", "unknown protocol"),
        ("tcp:127.0.0.1:8080", "give PROTO"),
        ("tcp:127.0.0.1=10.0.0.5:80", "no address with a port"),
        ("tcp:::1:80=10.0.0.5:80", "no address with a port"),
        ("tcp:127.0.0.1:70000=10.0.0.5:80", "no address with a port"),
        ("tcp:127.0.0.1:0=10.0.0.5:80", "port 0"),
        ("tcp", "give PROTO"),
    ] {
        let e = format!("{:#}", s.parse::<Forward>().unwrap_err());
        assert!(e.contains(why), "{s}: {e}");
    }
}

#[test]
fn the_record_holds_identity_and_forwards() {
    let id = ProcId {
        pid: 42,
        start: 123456,
    };
    let fs = [
        fwd("tcp:127.0.0.1:8080=10.0.0.5:80"),
        fwd("udp:[::1]:53=[fd00::5]:53"),
    ];
    let text = format_record(id, &fs);
    assert_eq!(
        text,
        "42 123456\ntcp 127.0.0.1:8080 10.0.0.5:80\nudp [::1]:53 [fd00::5]:53\n"
    );
    assert_eq!(parse_record(&text), Some((id, fs.to_vec())));
    for bad in [
        "",
        "42\n",
        "0 1\n",
        "x 1\n",
        "42 1 9\n",
        "42 1\ntcp 127.0.0.1:1\n",
        "42 1\nsctp 127.0.0.1:1 10.0.0.5:1\n",
        "42 1\ntcp 127.0.0.1:1 10.0.0.5:1 more\n",
    ] {
        assert_eq!(parse_record(bad), None, "{bad:?}");
    }
}

#[test]
fn a_damaged_record_is_an_error_naming_it_and_no_record_is_none() {
    let dir = std::env::temp_dir().join(format!("subhost-test-fwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(status(&dir, "web"), None);
    stop(&dir, "web").unwrap();
    let path = record_path(&dir, "web");
    assert_eq!(path, dir.join("web.forward"));
    std::fs::write(&path, "garbage\n").unwrap();
    let e = format!("{:#}", stop(&dir, "web").unwrap_err());
    assert!(e.contains("web.forward") && e.contains("damaged"), "{e}");
    assert!(path.exists(), "a damaged record is left for the operator");
    // A record of a process that is gone: stop forgets it.
    std::fs::write(&path, "2147483646 1\ntcp 127.0.0.1:1 10.0.0.5:1\n").unwrap();
    let st = status(&dir, "web").unwrap();
    assert!(!st.running);
    assert_eq!(st.pid, 2147483646);
    stop(&dir, "web").unwrap();
    assert!(!path.exists());
    std::fs::remove_dir(&dir).unwrap();
}
