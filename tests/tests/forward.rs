//! The port forwarder of published ports, on its own: clients on the host
//! connecting to 127.0.0.1 / [::1] reach a server inside a network
//! namespace (the test's own, lo only, standing in for a subhost's),
//! through `subhost-launch forward-daemon`, with its records in a temp
//! dir. Traffic only on loopbacks: the host's and the namespace's.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use subhost_tests::*;

const LIMIT: Duration = Duration::from_secs(20);
const IO: Duration = Duration::from_secs(10);

/// A network namespace of the test's, with lo up; deleted on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new() -> NetNs {
        let name = unique_name("fw");
        let out = run_timeout(&mut cmd("ip", ["netns", "add", &name]), LIMIT);
        assert!(out.status.success(), "{}", out.describe());
        let ns = NetNs { name };
        let out = run_timeout(
            &mut cmd("ip", ["-n", &ns.name, "link", "set", "lo", "up"]),
            LIMIT,
        );
        assert!(out.status.success(), "{}", out.describe());
        ns
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread inside the namespace: what it makes there
    /// (sockets) stays there; the test's own threads stay on the host.
    fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(self.path()).expect("open netns");
        std::thread::spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread inside the netns")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run_timeout(&mut cmd("ip", ["netns", "del", &self.name]), LIMIT);
    }
}

/// Echo servers inside a namespace, TCP and UDP, on 127.0.0.1 and ::1;
/// stopped and joined on drop.
struct Echo {
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Echo {
    fn new(ns: &NetNs) -> Echo {
        let port = 7000;
        let (tcp, udp) = ns.inside(move || {
            let tcp: Vec<TcpListener> = ["127.0.0.1", "::1"]
                .iter()
                .map(|a| TcpListener::bind((*a, port)).expect("bind echo"))
                .collect();
            let udp: Vec<UdpSocket> = ["127.0.0.1", "::1"]
                .iter()
                .map(|a| UdpSocket::bind((*a, port)).expect("bind echo"))
                .collect();
            (tcp, udp)
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for l in tcp {
            l.set_nonblocking(true).unwrap();
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut conns = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((c, _)) => conns.push(std::thread::spawn(move || echo_tcp(c))),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                for c in conns {
                    let _ = c.join();
                }
            }));
        }
        for u in udp {
            u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = u.recv_from(&mut buf) {
                        let mut reply = b"echo:".to_vec();
                        reply.extend_from_slice(&buf[..n]);
                        let _ = u.send_to(&reply, from);
                    }
                }
            }));
        }
        Echo {
            port,
            stop,
            threads,
        }
    }
}

/// Echoes until EOF, then says `bye` and closes: the reply after the
/// client's half-close shows that the other way still flows.
fn echo_tcp(mut c: TcpStream) {
    c.set_read_timeout(Some(IO)).unwrap();
    let mut buf = [0u8; 16384];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    let _ = c.write_all(b"bye");
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A forwarder's records in a temp dir; stopped on drop, and killed if
/// `stop` fails there.
struct Forwarder {
    records: TempDir,
    name: String,
}

impl Forwarder {
    fn new(name: &str) -> Forwarder {
        Forwarder {
            records: TempDir::new(),
            name: name.to_string(),
        }
    }

    fn run(&self, args: &[&str]) -> Finished {
        let mut c = cmd(launch_bin(), ["forward-daemon", "--records"]);
        c.arg(self.records.path()).args(args);
        run_timeout(&mut c, LIMIT)
    }

    fn start(&self, ns: &NetNs, forwards: &[String]) -> Finished {
        let mut c = cmd(launch_bin(), ["forward-daemon", "--records"]);
        c.arg(self.records.path())
            .args(["start", &self.name, "--netns"])
            .arg(ns.path())
            .args(forwards);
        // An fd the launcher inherits, which the forwarder must not keep.
        let stray = std::fs::File::open("/dev/zero").unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&stray);
        // SAFETY: dup2 is async-signal-safe; `raw` stays open until spawn
        // returns.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut c, move || {
                if libc::dup2(raw, 9) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        run_timeout(&mut c, LIMIT)
    }

    fn stop(&self) -> Finished {
        self.run(&["stop", &self.name])
    }

    fn record(&self) -> PathBuf {
        self.records.path().join(format!("{}.forward", self.name))
    }

    /// The forwarder's pid as recorded.
    fn pid(&self) -> i32 {
        let text = std::fs::read_to_string(self.record()).expect("forward record");
        text.split_whitespace().next().unwrap().parse().unwrap()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.record())
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<i32>().ok());
        if !self.stop().status.success() {
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Whether `pid` has exited (gone, or a zombie nobody reaps).
fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
            state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect_timeout(&addr, IO).unwrap_or_else(|e| panic!("{addr}: {e}"));
    c.set_read_timeout(Some(IO)).unwrap();
    c.set_write_timeout(Some(IO)).unwrap();
    c
}

/// Sends `data`, half-closes, reads to EOF: the echo and then `bye`.
fn round_trip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut c = connect(addr);
    let writer = {
        let mut w = c.try_clone().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            w.write_all(&data).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    got
}

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

fn tcp_forwards(port: u16, echo: &Echo) -> Vec<String> {
    vec![
        format!("tcp:127.0.0.1:{port}=127.0.0.1:{}", echo.port),
        format!("tcp:[::1]:{port}=[::1]:{}", echo.port),
    ]
}

#[test]
fn tcp_through_both_loopbacks_reaches_the_namespace_with_half_close() {
    require_root();
    let ns = NetNs::new();
    let echo = Echo::new(&ns);
    let port = free_port();
    let fwd = Forwarder::new(&ns.name);
    assert_ok(&fwd.start(&ns, &tcp_forwards(port, &echo)));
    // Nothing listens on the host's own 7000: only the forwarder connects
    // inside.
    for host in ["127.0.0.1", "[::1]"] {
        let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
        // Larger than every buffer on the way, so the relay must wait for
        // the writer and the reader in turn.
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let got = round_trip(addr, &data);
        assert_eq!(got.len(), data.len() + 3, "{addr}");
        assert!(got[..data.len()] == data[..], "{addr}: echo differs");
        assert_eq!(&got[data.len()..], b"bye", "{addr}");
    }
    let out = fwd.run(&["status", &ns.name]);
    assert_ok(&out);
    let text = out.stdout_str();
    assert!(text.starts_with(&format!("pid {}\n", fwd.pid())), "{text}");
    assert!(
        text.contains(&format!("tcp:[::1]:{port}=[::1]:7000")),
        "{text}"
    );
}

#[test]
fn many_concurrent_connections_each_get_their_own_echo() {
    require_root();
    let ns = NetNs::new();
    let echo = Echo::new(&ns);
    let port = free_port();
    let fwd = Forwarder::new(&ns.name);
    assert_ok(&fwd.start(&ns, &tcp_forwards(port, &echo)));
    // All open at once before any sends.
    let conns: Vec<(usize, TcpStream)> = (0..100)
        .map(|i| {
            let host = if i % 2 == 0 { "127.0.0.1" } else { "[::1]" };
            (i, connect(format!("{host}:{port}").parse().unwrap()))
        })
        .collect();
    let threads: Vec<_> = conns
        .into_iter()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                let msg = format!("connection {i} ").repeat(500);
                c.write_all(msg.as_bytes()).unwrap();
                c.shutdown(Shutdown::Write).unwrap();
                let mut got = String::new();
                c.read_to_string(&mut got).unwrap();
                // Compared whole, reported short: the texts are long.
                let want = format!("{msg}bye");
                assert!(
                    got == want,
                    "connection {i}: {} bytes back, {} wanted, ending {:?}",
                    got.len(),
                    want.len(),
                    &got[got.len().saturating_sub(20)..]
                );
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn udp_through_both_loopbacks_reaches_the_namespace_and_replies_come_back() {
    require_root();
    let ns = NetNs::new();
    let echo = Echo::new(&ns);
    let port = free_port();
    let fwd = Forwarder::new(&ns.name);
    let forwards = [
        format!("udp:127.0.0.1:{port}=127.0.0.1:{}", echo.port),
        format!("udp:[::1]:{port}=[::1]:{}", echo.port),
    ];
    assert_ok(&fwd.start(&ns, &forwards));
    for host in ["127.0.0.1", "::1"] {
        // Two clients: each gets its own replies.
        let clients: Vec<UdpSocket> = (0..2)
            .map(|_| {
                let s = UdpSocket::bind((host, 0)).unwrap();
                s.connect((host, port)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                s
            })
            .collect();
        for (i, c) in clients.iter().enumerate() {
            let msg = format!("{host} client {i}");
            // A datagram may be lost; a few tries.
            let mut buf = [0u8; 256];
            let got = (0..10).find_map(|_| {
                c.send(msg.as_bytes()).unwrap();
                c.recv(&mut buf).ok()
            });
            let n = got.unwrap_or_else(|| panic!("{msg}: no reply"));
            assert_eq!(&buf[..n], format!("echo:{msg}").as_bytes());
        }
    }
}

#[test]
fn a_taken_port_is_refused_naming_its_holder_and_nothing_listens() {
    require_root();
    let ns = NetNs::new();
    let echo = Echo::new(&ns);
    let port = free_port();
    let _holder = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let fwd = Forwarder::new(&ns.name);
    // The free one first: it must not stay bound when the next fails.
    let forwards = [
        format!("tcp:[::1]:{port}=[::1]:{}", echo.port),
        format!("tcp:127.0.0.1:{port}=127.0.0.1:{}", echo.port),
    ];
    let out = fwd.start(&ns, &forwards);
    assert!(!out.status.success(), "{}", out.describe());
    let err = out.stderr_str();
    let me = std::process::id();
    assert!(
        err.contains(&format!("tcp 127.0.0.1:{port} is taken by pid {me} (")),
        "{err}"
    );
    assert!(
        TcpListener::bind(("::1", port)).is_ok(),
        "[::1]:{port} still listens"
    );
    assert!(!fwd.record().exists());
}

#[test]
fn a_second_forwarder_on_the_same_port_names_the_first_subhost() {
    require_root();
    let ns = NetNs::new();
    let echo = Echo::new(&ns);
    let port = free_port();
    let a = Forwarder::new(&ns.name);
    assert_ok(&a.start(&ns, &tcp_forwards(port, &echo)));
    let b = Forwarder {
        records: TempDir::new(),
        name: unique_name("fw"),
    };
    // b's records are elsewhere: the holder is named by its process.
    let out = b.start(&ns, &tcp_forwards(port, &echo)[..1]);
    assert!(!out.status.success(), "{}", out.describe());
    let err = out.stderr_str();
    assert!(
        err.contains(&format!("is taken by pid {} (subhost-forward)", a.pid())),
        "{err}"
    );
    // With the same records, by its subhost.
    let out = a.run(&[
        "start",
        &b.name,
        "--netns",
        ns.path().to_str().unwrap(),
        &tcp_forwards(port, &echo)[0],
    ]);
    let _ = a.run(&["stop", &b.name]);
    assert!(!out.status.success(), "{}", out.describe());
    let err = out.stderr_str();
    assert!(
        err.contains(&format!("(the port forwarder of subhost {})", ns.name)),
        "{err}"
    );
}

#[test]
fn stop_leaves_no_process_and_nothing_listening() {
    require_root();
    let ns = NetNs::new();
    let echo = Echo::new(&ns);
    let port = free_port();
    let fwd = Forwarder::new(&ns.name);
    assert_ok(&fwd.start(&ns, &tcp_forwards(port, &echo)));
    let pid = fwd.pid();
    // A connection open across the stop goes with it.
    let mut open = connect(format!("127.0.0.1:{port}").parse().unwrap());
    open.write_all(b"x").unwrap();
    assert_ok(&fwd.stop());
    assert!(exited(pid), "forwarder {pid} still runs");
    assert!(!fwd.record().exists());
    for host in ["127.0.0.1", "::1"] {
        assert!(
            TcpStream::connect((host, port)).is_err(),
            "{host}:{port} still accepts"
        );
        assert!(TcpListener::bind((host, port)).is_ok(), "{host}:{port}");
    }
    let mut rest = Vec::new();
    let _ = open.read_to_end(&mut rest);
    // Stopping again is no error.
    assert_ok(&fwd.stop());
}

#[test]
fn a_killed_forwarder_is_shown_dead_and_stop_clears_its_record() {
    require_root();
    let ns = NetNs::new();
    let echo = Echo::new(&ns);
    let port = free_port();
    let fwd = Forwarder::new(&ns.name);
    assert_ok(&fwd.start(&ns, &tcp_forwards(port, &echo)));
    let pid = fwd.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(LIMIT, || exited(pid)));
    let out = fwd.run(&["status", &ns.name]);
    assert_ok(&out);
    assert!(
        out.stdout_str()
            .starts_with(&format!("pid {pid} (not running)\n")),
        "{}",
        out.describe()
    );
    assert_ok(&fwd.stop());
    assert!(!fwd.record().exists());
    // And it can start afresh.
    assert_ok(&fwd.start(&ns, &tcp_forwards(port, &echo)));
    assert_ne!(fwd.pid(), pid);
}

#[test]
fn the_forwarder_holds_no_fd_but_its_sockets_and_namespaces() {
    require_root();
    let ns = NetNs::new();
    let echo = Echo::new(&ns);
    let port = free_port();
    let fwd = Forwarder::new(&ns.name);
    let mut forwards = tcp_forwards(port, &echo);
    forwards.push(format!("udp:127.0.0.1:{port}=127.0.0.1:{}", echo.port));
    assert_ok(&fwd.start(&ns, &forwards));
    let pid = fwd.pid();
    let mut sockets = 0;
    let mut netns = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let e = e.unwrap();
        let n: i32 = e.file_name().to_str().unwrap().parse().unwrap();
        let target = std::fs::read_link(e.path()).unwrap();
        let t = target.to_string_lossy();
        if n <= 2 {
            assert_eq!(t, "/dev/null", "fd {n}");
        } else if t.starts_with("socket:[") {
            sockets += 1;
        } else if t.starts_with("net:[") || t == ns.path().to_string_lossy() {
            netns += 1;
        } else {
            assert_eq!(t, "anon_inode:[eventpoll]", "fd {n} of the forwarder");
        }
    }
    assert_eq!(sockets, 3, "one socket per forward");
    assert_eq!(netns, 2, "the subhost's netns and the host's");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(field("NoNewPrivs:"), "1");
    // CAP_SYS_ADMIN (21) alone, for setns into the subhost's netns.
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(field(set), "0000000000200000", "{set}");
    }
    // A session of its own (the launcher's is gone with it), and the
    // host's netns, not the subhost's.
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid))).unwrap();
    assert_ne!(sid, nix::unistd::getsid(None).unwrap());
    let own = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(own, std::fs::read_link("/proc/self/ns/net").unwrap());
}

#[test]
fn a_netns_that_is_no_netns_is_refused_and_nothing_listens() {
    require_root();
    let ns = NetNs::new();
    let echo = Echo::new(&ns);
    let port = free_port();
    let fwd = Forwarder::new(&ns.name);
    let not_netns = fwd.records.path().join("not-a-netns");
    std::fs::write(&not_netns, "").unwrap();
    let mut c = cmd(launch_bin(), ["forward-daemon", "--records"]);
    c.arg(fwd.records.path())
        .args(["start", &ns.name, "--netns"])
        .arg(&not_netns)
        .args(tcp_forwards(port, &echo));
    let out = run_timeout(&mut c, LIMIT);
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr_str()
            .contains("cannot enter the subhost's network namespace"),
        "{}",
        out.describe()
    );
    assert!(!fwd.record().exists());
    for host in ["127.0.0.1", "::1"] {
        assert!(TcpListener::bind((host, port)).is_ok(), "{host}:{port}");
    }
    std::fs::remove_file(&not_netns).unwrap();
}
