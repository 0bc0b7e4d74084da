//! Socket activation (`LISTEN_<name>`, `IDLE`) on the real kernel: a
//! subhost sleeps with only its sockets held by the host's activator, the
//! first connection wakes it and the service answers on the sockets it
//! was handed (sd_listen_fds, and no other descriptor), a burst of first
//! connections wakes it once, IDLE puts it back to sleep, `stop` leaves
//! nothing listening, a service that dies at once is not woken in a
//! loop, and bad keys are FILE:LINE errors. Loopback only.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use subhost_tests::*;

/// A subhost whose service `echo` is the probe's socket-activated server
/// on 127.0.0.1:PORT; `extra` is more config.
fn activated(tag: &str, port: u16, extra: &str) -> Subhost {
    let config = format!(
        "SERVICE_echo=(/probe serve-activated)\nLISTEN_echo=(tcp:127.0.0.1:{port})\n{extra}"
    );
    let s = Subhost::busybox(tag, &config);
    install_probe(&s.root());
    s
}

fn start_asleep(s: &Subhost) {
    let out = s.run(&["start", "--detach", &s.name]);
    assert!(out.status.success(), "{}", out.describe());
    assert!(out.stdout_str().contains("sleeping"), "{}", out.describe());
}

/// The `activation` object of `status --json` (null when none).
fn activation(s: &Subhost) -> Value {
    let out = s.run(&["status", "--json", &s.name]);
    assert!(out.status.success(), "{}", out.describe());
    let v: Value = serde_json::from_str(&out.stdout_str()).unwrap();
    v["activation"].clone()
}

/// The activation once it is no longer `waking`: the service can answer
/// before the wake's start has returned and the activator has seen it.
fn awake_soon(s: &Subhost) -> Value {
    let mut last = Value::Null;
    wait_until(Duration::from_secs(10), || {
        last = activation(s);
        last["state"] != "waking"
    });
    last
}

/// The activation once its state is `state`, within `limit`; `why` says
/// what it means when it is not.
fn activation_becomes(s: &Subhost, state: &str, limit: Duration, why: &str) -> Value {
    let mut last = Value::Null;
    assert!(
        wait_until(limit, || {
            last = activation(s);
            last["state"] == state
        }),
        "{why}: {last}"
    );
    last
}

/// The line the service answers on 127.0.0.1:PORT, or what went wrong.
fn ask(port: u16, limit: Duration) -> Result<String, String> {
    let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(limit)).unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// Whether anything listens on 127.0.0.1:PORT in the host's netns.
fn listening(port: u16) -> bool {
    let hex = format!(":{port:04X} ");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .any(|l| l.contains(&hex) && l.split_whitespace().nth(3) == Some("0A"))
}

/// No activator runs once no subhost has sockets held by it (other tests
/// of this file may still have theirs).
fn activator_gone_unless_others() -> bool {
    wait_until(Duration::from_secs(5), || {
        let others = std::fs::read_dir("/run/subhost")
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".listen"))
            })
            .unwrap_or(false);
        others || !std::path::Path::new("/run/subhost/activator.sock").exists()
    })
}

#[test]
fn a_connection_wakes_a_sleeping_subhost_and_only_its_sockets_cross() {
    let port = free_port();
    let s = activated("act", port, "");
    start_asleep(&s);
    let a = activation(&s);
    assert_eq!(a["state"], "sleeping", "{a}");
    assert_eq!(a["wakes"], 0, "{a}");
    assert!(!s.init_record().exists(), "asleep, it has no init");
    assert!(s.live_mounted(), "asleep, it is set up (hibernating)");
    assert!(listening(port), "the host holds its socket");

    let answer = ask(port, Duration::from_secs(10)).unwrap();
    // LISTEN_PID is the service's own, one socket named for the service,
    // and nothing but 0-2 and that socket open.
    assert_eq!(
        answer.trim(),
        "pid ok fds 1 names echo open 0 1 2 3",
        "{answer}"
    );
    let a = awake_soon(&s);
    assert_eq!(a["state"], "awake", "{a}");
    assert_eq!(a["wakes"], 1, "{a}");
    assert!(a["last_wake_ms"].as_u64().is_some(), "{a}");

    let out = s.stop();
    assert!(out.status.success(), "{}", out.describe());
    assert!(!listening(port), "nothing listens after stop");
    assert!(ask(port, Duration::from_secs(1)).is_err());
    assert!(activation(&s).is_null());
    assert!(
        activator_gone_unless_others(),
        "the activator holds nothing and ends"
    );
}

#[test]
fn a_burst_of_first_connections_wakes_it_once_and_each_is_answered() {
    let port = free_port();
    let s = activated("acb", port, "");
    start_asleep(&s);
    let clients: Vec<_> = (0..50)
        .map(|_| std::thread::spawn(move || ask(port, Duration::from_secs(20))))
        .collect();
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let good = answers
        .iter()
        .filter(|a| a.as_ref().is_ok_and(|t| t.starts_with("pid ok fds 1")))
        .count();
    assert_eq!(good, 50, "{answers:?}");
    assert_eq!(activation(&s)["wakes"], 1);
}

#[test]
fn idle_puts_it_back_to_sleep_and_the_next_connection_wakes_it_again() {
    let port = free_port();
    let s = activated("aci", port, "IDLE=2\n");
    start_asleep(&s);
    assert!(ask(port, Duration::from_secs(10)).is_ok());
    assert_eq!(awake_soon(&s)["state"], "awake");
    activation_becomes(&s, "sleeping", Duration::from_secs(20), "not back to sleep");
    assert!(!s.init_record().exists(), "hibernating: no init");
    assert!(s.live_mounted(), "hibernating: still set up");
    let again = ask(port, Duration::from_secs(10)).unwrap();
    assert!(again.starts_with("pid ok"), "{again}");
    assert_eq!(activation(&s)["wakes"], 2);
}

/// Runs `f` on a thread inside the subhost's netns (what it makes there,
/// sockets, stays there; the test's other threads stay on the host).
fn in_netns<T: Send + 'static>(
    s: &Subhost,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = std::fs::File::open(format!("/run/netns/{}", s.name)).expect("its netns");
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// A connection to a port the subhost serves in its own netns (as its
/// published ports' connections arrive) is activity: held open, it keeps
/// the subhost awake past IDLE; closed, the subhost goes back to sleep.
#[test]
fn a_connection_to_a_port_it_serves_keeps_it_awake_past_idle() {
    let port = free_port();
    let s = activated(
        "aco",
        port,
        // httpd waits for a request on each connection it takes.
        "SERVICE_peer=(httpd -f -p 9000 -h /)\nIDLE=2\n",
    );
    start_asleep(&s);
    assert!(ask(port, Duration::from_secs(10)).is_ok());
    let (connected, is_connected) = mpsc::channel::<bool>();
    let (close, closing) = mpsc::channel::<()>();
    let client = in_netns(&s, move || {
        let mut c = None;
        wait_until(Duration::from_secs(10), || {
            c = TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)).ok();
            c.is_some()
        });
        let _ = connected.send(c.is_some());
        let _ = closing.recv_timeout(Duration::from_secs(60));
        drop(c);
    });
    assert!(
        is_connected.recv_timeout(Duration::from_secs(15)).unwrap(),
        "nothing serves port 9000 in the subhost"
    );
    // Three IDLE periods with the connection open and nothing else.
    std::thread::sleep(Duration::from_secs(6));
    let a = activation(&s);
    close.send(()).unwrap();
    client.join().unwrap();
    assert_eq!(a["state"], "awake", "asleep with a connection open: {a}");
    let last = activation_becomes(
        &s,
        "sleeping",
        Duration::from_secs(20),
        "not back to sleep once the connection closed",
    );
    assert_eq!(last["wakes"], 1, "{last}");
}

/// A subhost whose service exits 3 at once, woken by a connection that
/// is never answered; its activation once `failed`, which `status` also
/// says of the service.
fn woken_to_fail(tag: &str, extra: &str) -> (Subhost, u16, Value) {
    let port = free_port();
    let config =
        format!("SERVICE_echo=(sh -c 'exit 3')\nLISTEN_echo=(tcp:127.0.0.1:{port})\n{extra}");
    let s = Subhost::busybox(tag, &config);
    start_asleep(&s);
    // Never answered: the service never accepts.
    assert!(ask(port, Duration::from_secs(1)).is_err());
    let last = activation_becomes(&s, "failed", Duration::from_secs(60), "not failed");
    let out = s.run(&["status", "--json", &s.name]);
    let v: Value = serde_json::from_str(&out.stdout_str()).unwrap();
    assert_eq!(v["services"][0]["state"], "failed", "{v}");
    (s, port, last)
}

#[test]
fn a_service_that_dies_at_once_is_failed_and_not_woken_again() {
    let (s, port, _) = woken_to_fail("acc", "IDLE=2\n");
    let _ = ask(port, Duration::from_secs(1));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(activation(&s)["wakes"], 1, "no wake loop");
}

/// Without IDLE the activator never looks at the services: `status`
/// still says failed (from the services' own state), and it was woken once.
#[test]
fn without_idle_a_service_that_dies_at_once_is_reported_failed() {
    let (_s, _, last) = woken_to_fail("acf", "");
    assert_eq!(last["wakes"], 1, "{last}");
}

/// `--dry-run` says the sockets would be bound and the subhost left
/// asleep, and does neither.
#[test]
fn dry_run_says_it_would_bind_the_sockets_and_sleep() {
    let port = free_port();
    let s = activated("acd", port, "IDLE=30\n");
    let out = s.run(&["start", "--detach", "--dry-run", &s.name]);
    assert!(out.status.success(), "{}", out.describe());
    let text = out.stdout_str();
    for want in [
        format!("bind tcp:127.0.0.1:{port} backlog 4096 (for service echo)"),
        format!("hibernate {} (set up, no init)", s.name),
        "hand the sockets to the activator".to_string(),
        "idle 30 s".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} in {}", out.describe());
    }
    assert!(!listening(port), "a dry run binds nothing");
    assert!(!s.live_mounted(), "a dry run sets nothing up");
    assert!(activation(&s).is_null());
}

/// The answer to a datagram sent to 127.0.0.1:PORT.
fn ask_udp(port: u16, limit: Duration) -> Result<String, String> {
    let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(limit)).unwrap();
    c.send_to(b"hello\n", (Ipv4Addr::LOCALHOST, port))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = c.recv(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Whether a UDP socket is bound to 127.0.0.1:PORT in the host's netns.
fn udp_bound(port: u16) -> bool {
    let hex = format!(":{port:04X} ");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap()
        .lines()
        .any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(hex.trim_end()))
        })
}

#[test]
fn a_datagram_wakes_it_and_the_service_answers_on_its_udp_socket() {
    let port = {
        let u = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        u.local_addr().unwrap().port()
    };
    let config =
        format!("SERVICE_echo=(/probe serve-activated)\nLISTEN_echo=(udp:127.0.0.1:{port})\n");
    let s = Subhost::busybox("acg", &config);
    install_probe(&s.root());
    start_asleep(&s);
    assert_eq!(activation(&s)["state"], "sleeping");
    assert!(udp_bound(port), "the host holds its socket");
    let answer = ask_udp(port, Duration::from_secs(10)).unwrap();
    assert_eq!(
        answer.trim(),
        "pid ok fds 1 names echo open 0 1 2 3",
        "{answer}"
    );
    let a = awake_soon(&s);
    assert_eq!(
        (&a["state"], &a["wakes"]),
        (&"awake".into(), &1.into()),
        "{a}"
    );
    let out = s.stop();
    assert!(out.status.success(), "{}", out.describe());
    assert!(!udp_bound(port), "nothing bound after stop");
}

#[test]
fn a_unix_connection_wakes_it_and_stop_removes_the_socket_file() {
    let dir = TempDir::new();
    let path = dir.path().join("echo.sock");
    let config = format!(
        "SERVICE_echo=(/probe serve-activated)\nLISTEN_echo=(unix:{})\n",
        path.display()
    );
    let s = Subhost::busybox("acx", &config);
    install_probe(&s.root());
    start_asleep(&s);
    assert_eq!(activation(&s)["state"], "sleeping");
    let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert_eq!(
        answer.trim(),
        "pid ok fds 1 names echo open 0 1 2 3",
        "{answer}"
    );
    assert_eq!(activation(&s)["wakes"], 1);
    let out = s.stop();
    assert!(out.status.success(), "{}", out.describe());
    assert!(!path.exists(), "the socket file goes with stop");
}

/// `stop` while a wake is under way (the wake's start waits for the
/// subhost's lock, held here): whichever gets the lock first, nothing is
/// left: no listener, no record, no init, nothing set up, no wake.
#[test]
fn stop_during_a_wake_leaves_nothing() {
    let port = free_port();
    let s = activated("acs", port, "");
    start_asleep(&s);
    let lock = std::fs::File::open(format!("/run/subhost/{}.lock", s.name)).unwrap();
    // SAFETY: flock on a descriptor of ours.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let client = std::thread::spawn(move || ask(port, Duration::from_secs(30)));
    let mut last = Value::Null;
    let waking = wait_until(Duration::from_secs(10), || {
        last = activation(&s);
        last["state"] == "waking"
    });
    let stopping = s.spawn(&["stop", &s.name]);
    std::thread::sleep(Duration::from_millis(500));
    drop(lock);
    let out = wait_timeout(stopping, Duration::from_secs(60));
    assert!(waking, "no wake under way: {last}");
    assert!(out.status.success(), "{}", out.describe());
    let _ = client.join();
    assert!(!listening(port), "nothing listens after stop");
    assert!(activation(&s).is_null());
    assert!(!s.init_record().exists(), "no init");
    assert!(!s.live_mounted(), "nothing set up");
    assert!(!std::path::Path::new(&format!("/run/netns/{}", s.name)).exists());
    let wakes_left = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("--activated") && c.contains(&s.name))
        .count();
    assert_eq!(wakes_left, 0, "a wake's start is left");
    assert!(activator_gone_unless_others());
}

/// `start --detach` refused with a message containing each of `want`, and
/// nothing of the subhost left set up or listening.
fn refused(s: &Subhost, want: &[&str]) {
    let out = s.run(&["start", "--detach", &s.name]);
    assert_eq!(out.code(), 125, "{}", out.describe());
    for w in want {
        assert!(out.stderr_str().contains(w), "{w:?} in {}", out.describe());
    }
    assert!(!s.live_mounted(), "nothing set up");
    assert!(!std::path::Path::new(&format!("/run/netns/{}", s.name)).exists());
    assert!(activation(s).is_null());
}

#[test]
fn bad_listen_and_idle_keys_are_file_line_errors() {
    let port = free_port();
    for (config, want) in [
        (
            format!("LISTEN_web=(tcp:127.0.0.1:{port})\n"),
            "config:1: LISTEN_web: there is no SERVICE_web",
        ),
        (
            "SERVICE_web=(true)\nLISTEN_web=(sctp:80)\n".to_string(),
            "config:2",
        ),
        (
            "SERVICE_web=(true)\nLISTEN_web=(tcp:0)\n".to_string(),
            "config:2",
        ),
        (
            format!("SERVICE_web=(true)\nLISTEN_web=(tcp:127.0.0.1:{port})\nIDLE=0\n"),
            "config:3",
        ),
        (
            format!("SERVICE_web=(true)\nLISTEN_web=(tcp:127.0.0.1:{port})\nIDLE=-5\n"),
            "config:3",
        ),
    ] {
        let s = Subhost::busybox("ack", &config);
        refused(&s, &[want]);
    }
}

#[test]
fn a_port_taken_on_the_host_is_refused_naming_its_holder() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let s = activated("acp", port, "");
    refused(
        &s,
        &[
            "config:2: LISTEN_echo",
            "is taken by",
            &format!("pid {}", std::process::id()),
        ],
    );
}

#[test]
fn a_unix_socket_outside_a_directory_the_operator_owns_is_refused() {
    let s = Subhost::busybox(
        "acu",
        "SERVICE_web=(true)\nLISTEN_web=(unix:/tmp/subhost-test-web.sock)\n",
    );
    refused(&s, &["config:2: LISTEN_web", "/tmp"]);
    assert!(!std::path::Path::new("/tmp/subhost-test-web.sock").exists());
}
