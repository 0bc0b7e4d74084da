//! Supervised services (`SERVICE_<name>`) of detached subhosts on the real
//! kernel: processes killed from the host come back within their backoff,
//! a service that fails at once is given up on while the subhost stays up,
//! a hanging health check is killed at its timeout, output reaches the
//! console prefixed, a missing binary is a failed service, and `stop`
//! stops services in reverse before HALT. `status --json` is the witness.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use subhost_tests::*;

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

/// `start --detach`; returns the init's PID.
fn start(s: &Subhost) -> i32 {
    let out = s.run(&["start", "--detach", &s.name]);
    assert_ok(&out);
    let text = out.stdout_str();
    text.split_once("(init PID ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(pid, _)| pid.parse().ok())
        .unwrap_or_else(|| panic!("no init PID in: {}", out.describe()))
}

/// The console log without the relay's time stamps (`2026-12-07T14:30:00.123Z `).
fn console(s: &Subhost) -> String {
    let text = std::fs::read_to_string(s.dir().join("console.log")).unwrap_or_default();
    text.lines()
        .map(|l| match l.as_bytes() {
            [_, _, _, _, b'-', _, _, b'-', _, _, b'T', ..] if l.get(23..25) == Some("Z ") => {
                &l[25..]
            }
            _ => l,
        })
        .fold(String::new(), |mut out, l| {
            out.push_str(l);
            out.push('\n');
            out
        })
}

/// The `services` array of `status --json`.
fn services(s: &Subhost) -> Vec<Value> {
    let out = s.run(&["status", "--json", &s.name]);
    assert_ok(&out);
    let v: Value = serde_json::from_str(&out.stdout_str()).unwrap();
    v["services"].as_array().cloned().unwrap_or_default()
}

fn service(s: &Subhost, name: &str) -> Value {
    services(s)
        .into_iter()
        .find(|v| v["name"] == name)
        .unwrap_or(Value::Null)
}

/// Waits until the service `name` satisfies `cond`; its last state.
fn wait_service(s: &Subhost, name: &str, limit: Duration, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_until(limit, || {
        last = service(s, name);
        cond(&last)
    });
    last
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
}

#[test]
fn a_service_killed_from_the_host_comes_back_within_its_backoff() {
    let s = Subhost::busybox(
        "svk",
        "SERVICE_web=(sh -c 'echo web up; exec sleep 1000')\nRESTART=on-failure\n",
    );
    let init = start(&s);
    let first = wait_service(&s, "web", Duration::from_secs(10), |v| {
        v["state"] == "running" && v["pid"].is_i64()
    });
    assert_eq!(first["state"], "running", "{first}");
    assert_eq!(first["restarts"], 0);
    assert_eq!(first["health"], "none");
    assert!(first["uptime"].is_u64(), "{first}");
    let pid = first["pid"].as_i64().unwrap() as i32;
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap(),
        "sleep\n"
    );

    let killed = Instant::now();
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let back = wait_service(&s, "web", Duration::from_secs(10), |v| {
        v["state"] == "running" && v["pid"].as_i64().is_some_and(|p| p != pid as i64)
    });
    // The first backoff is 1 s; status is read every 10 ms or so.
    let took = killed.elapsed();
    assert_eq!(back["state"], "running", "{back}\n{}", console(&s));
    assert!(took < Duration::from_secs(3), "back after {took:?}");
    assert!(took >= Duration::from_millis(900), "back after {took:?}");
    assert_eq!(back["restarts"], 1, "{back}");
    assert_eq!(back["last_exit"], 137, "{back}");
    assert!(alive(init));
    let text = console(&s);
    assert_eq!(text.matches("web: web up\n").count(), 2, "{text}");

    let human = s.run(&["status", &s.name]);
    assert!(
        human.stdout_str().contains("services: web  running  pid "),
        "{}",
        human.describe()
    );
    let list = s.run(&["list", "--json"]);
    let v: Value = serde_json::from_str(&list.stdout_str()).unwrap();
    assert_eq!(v[0]["services"][0]["name"], "web", "{v}");
    assert_ok(&s.stop());
    assert!(!alive(init));
}

#[test]
fn a_service_that_fails_at_once_is_failed_after_the_limit_and_the_subhost_stays_up() {
    let s = Subhost::busybox(
        "svf",
        "SERVICE_bad=(sh -c 'echo failing; exit 3')\nSERVICE_no=(sh -c 'exit 4')\n\
         RESTART_no=no\nSERVICE_ok=(sleep 1000)\n",
    );
    let init = start(&s);
    // RESTART=no: exited once, never restarted.
    let no = wait_service(&s, "no", Duration::from_secs(10), |v| {
        v["state"] == "exited"
    });
    assert_eq!(no["state"], "exited", "{no}");
    assert_eq!(
        (no["last_exit"].as_i64(), no["restarts"].as_i64()),
        (Some(4), Some(0))
    );
    // 1 + 2 + 4 + 8 + 16 s of backoff, then the sixth failure gives up.
    let bad = wait_service(&s, "bad", Duration::from_secs(45), |v| {
        v["state"] == "failed"
    });
    assert_eq!(bad["state"], "failed", "{bad}\n{}", console(&s));
    assert_eq!(bad["restarts"], 5, "{bad}");
    assert_eq!(bad["last_exit"], 3, "{bad}");
    assert!(bad["pid"].is_null(), "{bad}");
    let text = console(&s);
    assert_eq!(text.matches("bad: failing\n").count(), 6, "{text}");
    assert!(text.contains("service bad: failed"), "{text}");
    assert!(alive(init), "the init is gone");
    let ok = service(&s, "ok");
    assert_eq!(ok["state"], "running", "{ok}");
    let no = service(&s, "no");
    assert_eq!(
        (no["state"].as_str(), no["restarts"].as_i64()),
        (Some("exited"), Some(0))
    );
    let status = s.run(&["status", "--json", &s.name]);
    assert!(
        status.stdout_str().contains("\"state\": \"running\""),
        "{}",
        status.describe()
    );
    assert_ok(&s.stop());
}

#[test]
fn a_hanging_health_check_is_killed_at_its_timeout_and_restarts_the_service() {
    let s = Subhost::busybox(
        "svh",
        "SERVICE_web=(sleep 1000)\nHEALTH_web=(sh -c 'echo checking >&2; exec sleep 1000')\n\
         HEALTH_INTERVAL=1\nHEALTH_TIMEOUT=1\nHEALTH_RETRIES=2\n",
    );
    start(&s);
    let first = wait_service(&s, "web", Duration::from_secs(10), |v| v["pid"].is_i64());
    let pid = first["pid"].as_i64().unwrap();
    assert_eq!(first["health"], "starting", "{first}");
    // Check at 1 s killed at 2 s, again at 3 s killed at 4 s: unhealthy
    // twice, so the service is stopped and started again after 1 s.
    let started = Instant::now();
    let back = wait_service(&s, "web", Duration::from_secs(15), |v| {
        v["restarts"] == 1 && v["pid"].is_i64()
    });
    assert_eq!(back["restarts"], 1, "{back}\n{}", console(&s));
    assert_ne!(back["pid"].as_i64(), Some(pid));
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let text = console(&s);
    assert_eq!(
        text.matches("service web: health check timed out").count(),
        2,
        "{text}"
    );
    assert!(text.contains("web: checking\n"), "{text}");
    assert!(text.contains("unhealthy 2 times in a row"), "{text}");
    // No check is left running: each was killed with its process group
    // (the service and at most the check now due remain).
    let out = s.enter_sh(
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c '^sleep 1000 $'",
    );
    let n: u32 = out.stdout_str().trim().parse().unwrap_or(99);
    assert!((1..=2).contains(&n), "{n} sleeps: {}", out.describe());
    assert_ok(&s.stop());
}

#[test]
fn output_is_prefixed_and_a_missing_binary_is_a_failed_service() {
    let long = "x".repeat(3000);
    let s = Subhost::busybox(
        "svo",
        &format!(
            "SERVICE_talk=(sh -c 'echo one; echo two >&2; echo {long}; printf partial; exec sleep 1000')\n\
             SERVICE_gone=(/no/such/binary --flag)\n"
        ),
    );
    let init = start(&s);
    let gone = wait_service(&s, "gone", Duration::from_secs(10), |v| {
        v["state"] == "failed"
    });
    assert_eq!(gone["state"], "failed", "{gone}");
    assert_eq!(gone["last_exit"], 127, "{gone}");
    assert!(wait_until(Duration::from_secs(10), || console(&s)
        .contains("talk: two\n")));
    let text = console(&s);
    assert!(
        text.contains(
            "service gone: failed: cannot run '/no/such/binary': No such file or directory"
        ),
        "{text}"
    );
    assert!(text.contains("talk: one\n"), "{text}");
    // Split at the init's 1024-byte buffer, nothing lost.
    let pieces: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("talk: "))
        .filter(|l| l.starts_with('x'))
        .collect();
    assert_eq!(pieces.concat(), long, "{text}");
    assert!(pieces.len() >= 3, "{pieces:?}");
    assert!(alive(init));
    // The unfinished last line is flushed when the service ends.
    let talk = service(&s, "talk");
    assert_ok(&s.stop());
    assert!(
        console(&s).contains("talk: partial\n"),
        "{}\n{talk}",
        console(&s)
    );
}

#[test]
fn stop_stops_services_in_reverse_order_before_halt() {
    let trap = |n: &str| {
        format!(
            "SERVICE_{n}=(sh -c 'trap \"echo stop {n} >> /order; exit 0\" TERM; \
             while :; do sleep 0.1; done')\n"
        )
    };
    let s = Subhost::busybox(
        "svs",
        &format!(
            "STOP_TIMEOUT=3\n{}{}{}HALT=(sh -c 'echo halt >> /order')\n",
            trap("a"),
            trap("b"),
            trap("c")
        ),
    );
    start(&s);
    let up = wait_until(Duration::from_secs(10), || {
        let v = services(&s);
        v.len() == 3 && v.iter().all(|v| v["state"] == "running")
    });
    assert!(up, "{:?}", services(&s));
    let stop = s.stop();
    assert_ok(&stop);
    // The init SIGTERMs the others at the end too: a service stopped only
    // then would have written after halt.
    let order = std::fs::read_to_string(s.root().join("order")).unwrap();
    assert_eq!(order, "stop c\nstop b\nstop a\nhalt\n", "{}", console(&s));
}

#[test]
fn bad_service_keys_are_refused_at_their_line() {
    for (config, line, needle) in [
        (
            "HOSTNAME=x\nSERVICE_Web=(x)\n",
            2,
            "\"Web\" is not a service name",
        ),
        ("SERVICE_web=()\n", 1, "the command is empty"),
        (
            "SERVICE_web=(x)\nRESTART=sometimes\n",
            2,
            "not a restart policy",
        ),
        ("SERVICE_web=(x)\nHEALTH_INTERVAL=0\n", 2, "0 seconds"),
        (
            "SERVICE_web=(x)\n\nRESTART_db=always\n",
            3,
            "there is no SERVICE_db",
        ),
    ] {
        let s = Subhost::busybox("svb", config);
        let out = s.run(&["start", "--detach", &s.name]);
        assert_eq!(out.code(), 125, "{config}: {}", out.describe());
        let want = format!("{}:{line}: ", s.dir().join("config").display());
        let err = out.stderr_str();
        assert!(
            err.contains(&want) && err.contains(needle),
            "{config}: {err}"
        );
        assert!(!s.init_record().exists());
    }
}
