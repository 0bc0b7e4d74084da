use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::status::State;

fn report() -> Report {
    Report {
        name: "web".into(),
        dir: PathBuf::from("/opt/subhost/web"),
        state: State::Running,
        pid: Some(26249),
        uptime: Some(Duration::from_millis(61_900)),
        root: Some("overlay"),
        image: false,
        base: None,
        cables: vec![
            Cable {
                host: "web0".into(),
                bridge: Some("br0".into()),
                mac: None,
                present: true,
                addresses: vec!["10.0.0.5/24".into(), "fd00::5/64".into()],
            },
            Cable {
                host: "web1".into(),
                bridge: None,
                mac: Some("02:00:00:00:01:01".into()),
                present: false,
                addresses: vec![],
            },
        ],
        published: vec![crate::publish::Published {
            proto: crate::publish::Proto::Tcp,
            host_address: None,
            host_port: 8080,
            port: 80,
            address: "10.0.0.5".parse().unwrap(),
        }],
        memory: None,
        pids: Some(3),
        activation: None,
        services: vec![crate::services::Service {
            name: "web".into(),
            state: "running".into(),
            pid: Some(43),
            uptime: Some(125),
            restarts: 2,
            last_exit: Some(137),
            health: "ok".into(),
        }],
        caps: vec!["CAP_CHOWN".into(), "CAP_SYS_ADMIN".into()],
        seccomp: Some(true),
        syscalls_allow: vec!["bpf".into()],
        devices: vec!["c 1:3 rwm".into(), "c 10:200 rwm /dev/net/tun".into()],
        warnings: vec!["CAP_SYS_ADMIN is kept: …".into()],
        userns: Some(crate::userns::Range {
            base: 524288,
            count: 65536,
        }),
        problems: vec![],
    }
}

/// The schema README documents, byte for byte: scripts parse it.
#[test]
fn json_keeps_the_documented_schema() {
    let want = r#"{
  "name": "web",
  "dir": "/opt/subhost/web",
  "state": "running",
  "pid": 26249,
  "uptime_seconds": 61,
  "root": "overlay",
  "image": false,
  "base": null,
  "cables": [
    {
      "host": "web0",
      "bridge": "br0",
      "mac": "auto",
      "present": true,
      "addresses": [
        "10.0.0.5/24",
        "fd00::5/64"
      ]
    },
    {
      "host": "web1",
      "bridge": null,
      "mac": "02:00:00:00:01:01",
      "present": false,
      "addresses": []
    }
  ],
  "published": [
    {
      "proto": "tcp",
      "host_address": null,
      "host_port": 8080,
      "port": 80,
      "address": "10.0.0.5"
    }
  ],
  "memory_bytes": null,
  "pids": 3,
  "services": [
    {
      "name": "web",
      "state": "running",
      "pid": 43,
      "uptime": 125,
      "restarts": 2,
      "last_exit": 137,
      "health": "ok"
    }
  ],
  "capabilities": [
    "CAP_CHOWN",
    "CAP_SYS_ADMIN"
  ],
  "seccomp": true,
  "syscalls_allow": [
    "bpf"
  ],
  "devices": [
    "c 1:3 rwm",
    "c 10:200 rwm /dev/net/tun"
  ],
  "warnings": [
    "CAP_SYS_ADMIN is kept: …"
  ],
  "userns": {
    "base": 524288,
    "count": 65536
  },
  "problems": []
}"#;
    assert_eq!(to_json(&report()), want);
    let stopped = Report {
        state: State::Stopped,
        pid: None,
        uptime: None,
        root: None,
        cables: vec![],
        userns: None,
        ..report()
    };
    let got = to_json(&vec![stopped]);
    assert!(got.starts_with("[\n  {\n    \"name\": \"web\","), "{got}");
    assert!(got.contains("\"state\": \"stopped\""), "{got}");
    assert!(got.contains("\"cables\": [],"), "{got}");
    assert!(got.contains("\"pid\": null,"), "{got}");
    assert!(got.contains("\"userns\": null,"), "{got}");
    assert_eq!(to_json(&Vec::<Report>::new()), "[]");
}

#[test]
fn json_escapes_what_it_must_and_keeps_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let r = Report {
        dir: PathBuf::from(std::ffi::OsStr::from_bytes(b"/srv/\xff\"q\"")),
        problems: vec!["a\\b\n\t\u{0}\u{1f}\u{7f} héllo 🦀".into()],
        ..report()
    };
    let got = to_json(&r);
    assert!(
        got.contains("\"dir\": \"/srv/\u{fffd}\\\"q\\\"\","),
        "{got}"
    );
    assert!(
        got.contains("\"a\\\\b\\n\\t\\u0000\\u001f\u{7f} héllo 🦀\""),
        "{got}"
    );
}

#[test]
fn durations_and_sizes_read_well() {
    assert_eq!(human_duration(Duration::from_secs(7)), "7s");
    assert_eq!(human_duration(Duration::from_secs(307)), "5m07s");
    assert_eq!(human_duration(Duration::from_secs(3 * 3600 + 240)), "3h04m");
    assert_eq!(human_duration(Duration::from_secs(90000)), "1d01h");
    assert_eq!(human_bytes(512), "512 B");
    assert_eq!(human_bytes(3 << 20), "3.0 MiB");
}

#[test]
fn status_shows_one_line_per_service() {
    let text = block(&report());
    assert!(
        text.contains(
            "services: web  running  pid 43  up 2m05s  restarts 2  last exit 137  health ok\n"
        ),
        "{text}"
    );
    let none = block(&Report {
        services: vec![],
        ..report()
    });
    assert!(!none.contains("services:"), "{none}");
}
