//! `subhost-launch start --detach` and the stop of a detached subhost on
//! the real kernel: BOOT and START run under a keep-alive init with no
//! terminal, a daemonizing busybox httpd is served inside and over a test
//! bridge, and `stop` runs START's stops in reverse, then HALT, then the
//! TERM sequence, leaving nothing behind.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use subhost_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

/// A busybox subhost under `base`, stopped on drop; anything a failed stop
/// leaves (netns, run files, a live init) is removed too.
struct Subhost {
    base: PathBuf,
    name: String,
}

impl Subhost {
    fn new(base: &Path, tag: &str, config: &str) -> Subhost {
        require_root();
        let s = Subhost {
            base: base.to_path_buf(),
            name: unique_name(tag),
        };
        busybox_root(&s.root());
        std::fs::write(s.dir().join("config"), mode_config(config)).unwrap();
        s
    }

    fn dir(&self) -> PathBuf {
        self.base.join(&self.name)
    }
    fn root(&self) -> PathBuf {
        self.dir().join("root")
    }
    fn console(&self) -> PathBuf {
        self.dir().join("console.log")
    }

    /// An executable script in the root.
    fn script(&self, path: &str, body: &str) {
        let p = self.root().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn launch(&self) -> Command {
        let mut c = Command::new(launch_bin());
        c.env("SUBHOST", &self.base);
        c
    }

    fn run(&self, args: &[&str]) -> Finished {
        run_timeout(self.launch().args(args), LIMIT)
    }

    fn enter_sh(&self, script: &str) -> Finished {
        self.run(&["enter", &self.name, "--", "sh", "-c", script])
    }

    /// The PID in `/run/subhost/NAME.init`, if there is one.
    fn recorded_init(&self) -> Option<i32> {
        let text = std::fs::read_to_string(format!("/run/subhost/{}.init", self.name)).ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    fn console_text(&self) -> String {
        std::fs::read_to_string(self.console()).unwrap_or_default()
    }
}

impl Drop for Subhost {
    fn drop(&mut self) {
        let init = self.recorded_init();
        let out = self.run(&["stop", &self.name]);
        if !out.status.success() {
            eprintln!("cleanup: stop {} failed: {}", self.name, out.describe());
        }
        if let Some(pid) = init.filter(|&p| proc_state(p).is_some_and(|s| s != 'Z')) {
            eprintln!(
                "cleanup: init {pid} of {} still there: killing it",
                self.name
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        for ext in ["lock", "init", "console"] {
            let _ = std::fs::remove_file(format!("/run/subhost/{}.{ext}", self.name));
        }
    }
}

/// The state letter of `/proc/PID/stat` (R, S, Z...), None when gone.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// argv of a process.
fn cmdline(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Last field of `NSpid:`: the PID a process has in its own namespace.
fn inner_pid(pid: i32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()
        .map(String::from)
}

/// Host PIDs of the live (not zombie) processes in PID namespace `ns`
/// (a `pid:[N]` link text).
fn processes_in_pid_ns(ns: &Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l == ns)
                && proc_state(pid) != Some('Z')
        })
        .collect()
}

/// Mount points at or below `dir`, as the host sees them.
fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .map(String::from)
        .collect()
}

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

/// `start --detach NAME` must come back at once with the init's PID.
fn start_detached(s: &Subhost, extra: &[&str]) -> i32 {
    let mut args = vec!["start", "--detach"];
    args.extend_from_slice(extra);
    args.push(&s.name);
    let out = s.run(&args);
    assert_ok(&out);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "start --detach took {:?}",
        out.elapsed
    );
    let text = out.stdout_str();
    let pid: i32 = text
        .split_once("(init PID ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(pid, _)| pid.parse().ok())
        .unwrap_or_else(|| panic!("no init PID in: {}", out.describe()));
    assert!(
        text.starts_with(&format!(
            "subhost {}: started (init PID {pid}), console: ",
            s.name
        )),
        "{text}"
    );
    pid
}

const SVCA: &str = r#"case $1 in
start)
    (trap 'echo term svca >> /order; exit 0' TERM; while :; do sleep 0.1; done) &
    echo $! > /run/svca.pid ;;
stop)
    echo stop svca >> /order
    p=$(cat /run/svca.pid); kill $p
    while kill -0 $p 2>/dev/null; do sleep 0.05; done ;;
esac"#;

/// Its stop leaves the daemon running: the init's SIGTERM ends it.
const SVCB: &str = r#"case $1 in
start) (trap 'echo term svcb >> /order; exit 0' TERM; while :; do sleep 0.1; done) & ;;
stop) echo stop svcb >> /order ;;
esac"#;

#[test]
fn detached_services_serve_over_the_cable_and_stop_in_order() {
    let tmp = TempDir::new();
    let br = Bridge::new();
    let a = Subhost::new(
        tmp.path(),
        "da",
        &format!(
            "BRIDGES=({br})\nSTOP_TIMEOUT=3\nSTART=(svca /srv/svcb)\n\
             HALT=(sh -c 'echo halt >> /order; echo halted > /halt-marker')\n\
             BOOT=(sh -c 'ip addr add 10.213.9.1/24 dev eth0 && httpd -p 8080 -h /www && \
             {{ setsid sh -c \"sleep 1000\" & echo $! > /escaped.pid; }} && echo boot-output-marker')\n",
            br = br.name
        ),
    );
    install_probe(&a.root());
    std::fs::create_dir_all(a.root().join("www")).unwrap();
    std::fs::write(
        a.root().join("www/index.html"),
        format!("page of {}\n", a.name),
    )
    .unwrap();
    a.script("/etc/init.d/svca", SVCA);
    a.script("/srv/svcb", SVCB);
    let b = Subhost::new(tmp.path(), "db", &format!("BRIDGES=({})\n", br.name));

    let init = start_detached(&a, &[]);
    // The launcher is gone; its process group was killed by run_timeout.
    assert_eq!(a.recorded_init(), Some(init));
    assert!(
        matches!(proc_state(init), Some('R' | 'S')),
        "init {init} is not running: {:?}",
        proc_state(init)
    );
    assert_eq!(
        inner_pid(init).as_deref(),
        Some("1"),
        "init is not PID 1 inside"
    );
    let argv = cmdline(init);
    assert_eq!(
        argv[..7],
        [
            "subhost-init",
            "--keep-alive",
            "--grace",
            "3",
            "--",
            "/bin/sh",
            "-c"
        ],
        "{argv:?}"
    );
    let pid_ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();

    let booted = wait_until(Duration::from_secs(10), || {
        a.console_text().contains("subhost: starting /srv/svcb")
    });
    assert!(booted, "BOOT/START did not run:\n{}", a.console_text());
    let console = a.console_text();
    assert!(
        console
            .lines()
            .next()
            .unwrap()
            .ends_with(&format!("subhost {}: starting", a.name)),
        "{console}"
    );
    assert!(console.contains("boot-output-marker\n"), "{console}");
    let mode = std::fs::metadata(a.console()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);

    // httpd daemonized: only the keep-alive init holds the subhost up.
    let mut page = None;
    wait_until(Duration::from_secs(10), || {
        let out = a.run(&[
            "enter",
            &a.name,
            "--",
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1:8080/",
        ]);
        page = Some(out);
        page.as_ref().unwrap().status.success()
    });
    let page = page.unwrap();
    assert_ok(&page);
    assert_eq!(page.stdout_str(), format!("page of {}\n", a.name));

    // The escaped process really left the boot's session.
    let out = a.enter_sh("/probe session-leader $(cat /escaped.pid)");
    assert_eq!(
        out.stdout_str(),
        "session-leader: yes\n",
        "sleep is not a session leader: {}",
        out.describe()
    );

    // A subhost with neither BOOT nor START: an init with no session, and
    // addresses set from outside through enter.
    let b_init = start_detached(&b, &[]);
    assert_eq!(
        cmdline(b_init),
        ["subhost-init", "--no-session", "--grace", "5"]
    );
    let again = b.run(&["start", "--detach", &b.name]);
    assert_eq!(again.code(), 125, "{}", again.describe());
    assert!(
        again.stderr_str().contains("is running"),
        "{}",
        again.describe()
    );
    assert_ok(&b.enter_sh("ip addr add 10.213.9.2/24 dev eth0"));
    let mut remote = None;
    wait_until(Duration::from_secs(15), || {
        let out = b.enter_sh("timeout 5 wget -q -O - http://10.213.9.1:8080/");
        remote = Some(out);
        remote.as_ref().unwrap().status.success()
    });
    let remote = remote.unwrap();
    assert_ok(&remote);
    assert_eq!(remote.stdout_str(), format!("page of {}\n", a.name));

    let dry = a.run(&["stop", "--dry-run", &a.name]);
    assert_ok(&dry);
    let text = dry.stdout_str();
    assert!(text.contains("then HALT"), "{text}");
    assert!(
        text.contains("subhost-halt 2 /srv/svcb svca sh -c"),
        "{text}"
    );
    assert!(!a.root().join("order").exists(), "dry run ran something");

    let out = a.run(&["stop", &a.name]);
    assert_ok(&out);
    let order = std::fs::read_to_string(a.root().join("order")).unwrap();
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(
        order,
        ["stop svcb", "stop svca", "term svca", "halt", "term svcb"],
        "console:\n{}",
        a.console_text()
    );
    assert_eq!(
        std::fs::read_to_string(a.root().join("halt-marker")).unwrap(),
        "halted\n"
    );
    let console = a.console_text();
    assert!(console.contains("subhost: stopping svca\n"), "{console}");
    assert!(
        console.ends_with(&format!(" subhost {}: stopped\n", a.name)),
        "{console}"
    );

    // Nothing left: no process of its PID namespace (the escaped sleep
    // included), an init that is at most a zombie (this machine's PID 1
    // may not reap it) and no longer taken for running, no netns, no
    // mounts, no run files.
    assert_eq!(processes_in_pid_ns(&pid_ns), Vec::<i32>::new());
    assert!(
        matches!(proc_state(init), None | Some('Z')),
        "init {init} still {:?}",
        proc_state(init)
    );
    assert!(!Path::new(&format!("/run/netns/{}", a.name)).exists());
    assert_eq!(mounts_below(&a.dir()), Vec::<String>::new());
    for ext in ["init", "console", "lock"] {
        let p = format!("/run/subhost/{}.{ext}", a.name);
        assert!(!Path::new(&p).exists(), "{p} left");
    }
    let enter = a.enter_sh("true");
    assert!(
        enter.stderr_str().contains("is stopped"),
        "{}",
        enter.describe()
    );

    // B had no HALT: stop goes straight to SIGTERM, quickly.
    let out = b.run(&["stop", &b.name]);
    assert_ok(&out);
    assert!(out.elapsed < Duration::from_secs(5), "{}", out.describe());
    assert!(matches!(proc_state(b_init), None | Some('Z')));
}

/// A test's own syslog: a datagram socket in its temp dir.
struct Syslog {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Syslog {
    fn new(dir: &Path) -> Syslog {
        let path = dir.join("log.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Syslog { sock, path }
    }

    /// Messages until one contains `needle` (returned last), or `limit`.
    fn until(&self, needle: &str, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = msg.contains(needle);
                got.push(msg);
                if found {
                    break;
                }
            }
        }
        got
    }
}

#[test]
fn console_syslog_relays_each_line_and_the_relay_ends_with_the_subhost() {
    let tmp = TempDir::new();
    let log = Syslog::new(tmp.path());
    let s = Subhost::new(
        tmp.path(),
        "ds",
        "BOOT=(sh -c 'echo boot-line-one; echo boot-line-two >&2')\nHALT=(echo halt-line)\n",
    );
    let mut start = s.launch();
    start
        .args(["start", "--detach", "--console", "syslog", &s.name])
        .env("SUBHOST_SYSLOG_SOCKET", &log.path);
    let out = run_timeout(&mut start, LIMIT);
    assert_ok(&out);
    assert!(
        out.stdout_str().ends_with("console: syslog\n"),
        "{}",
        out.describe()
    );
    assert!(
        !s.console().exists(),
        "console.log made with --console syslog"
    );

    let ident = format!("subhost/{}[", s.name);
    let got = log.until("boot-line-two", Duration::from_secs(10));
    let text = got.join("\n");
    for line in [
        &format!("subhost {}: starting", s.name),
        "boot-line-one",
        "boot-line-two",
    ] {
        let msg = got
            .iter()
            .find(|m| m.ends_with(&format!("]: {line}")))
            .unwrap_or_else(|| panic!("no {line:?} in:\n{text}"));
        assert!(msg.starts_with("<30>"), "not daemon.info: {msg}");
        assert!(msg.contains(&ident), "not under {ident}: {msg}");
    }
    let relay: i32 = got[0]
        .split_once(&ident)
        .and_then(|(_, r)| r.split_once(']'))
        .and_then(|(p, _)| p.parse().ok())
        .unwrap_or_else(|| panic!("no relay PID in {}", got[0]));
    assert!(matches!(proc_state(relay), Some('S' | 'R')));

    let out = s.run(&["stop", &s.name]);
    assert_ok(&out);
    let got = log.until("halt-line", Duration::from_secs(10));
    assert!(
        got.iter().any(|m| m.ends_with("]: halt-line")),
        "HALT's output did not reach syslog: {got:?}"
    );
    // Every writer is gone with the subhost and the stop: EOF ends it.
    let gone = wait_until(Duration::from_secs(10), || {
        matches!(proc_state(relay), None | Some('Z'))
    });
    assert!(gone, "relay {relay} still {:?}", proc_state(relay));
}

/// A supervised service's lines reach syslog under the subhost's ident,
/// with the service's name before each.
#[test]
fn console_syslog_names_the_subhost_and_the_service() {
    let tmp = TempDir::new();
    let log = Syslog::new(tmp.path());
    let s = Subhost::new(
        tmp.path(),
        "dn",
        "SERVICE_web=(sh -c 'echo web-says-hello; exec sleep 300')\n",
    );
    let mut start = s.launch();
    start
        .args(["start", "--detach", "--console", "syslog", &s.name])
        .env("SUBHOST_SYSLOG_SOCKET", &log.path);
    assert_ok(&run_timeout(&mut start, LIMIT));
    let got = log.until("web-says-hello", Duration::from_secs(20));
    let ident = format!("subhost/{}[", s.name);
    assert!(
        got.iter()
            .any(|m| m.contains(&ident) && m.ends_with("]: web: web-says-hello")),
        "no `web: web-says-hello` under {ident} in:\n{}",
        got.join("\n")
    );
}

#[test]
fn dry_run_and_refusals() {
    let tmp = TempDir::new();
    let s = Subhost::new(
        tmp.path(),
        "dd",
        "BOOT=(/bin/echo 'hello world')\nSTART=(svc)\n",
    );
    let out = s.run(&["start", "--detach", "--dry-run", &s.name]);
    assert_ok(&out);
    let text = out.stdout_str();
    assert!(
        text.contains("exec subhost-init --keep-alive --grace 5 -- /bin/sh -c 'run_service()"),
        "{text}"
    );
    assert!(
        text.contains("subhost-boot 1 svc /bin/echo 'hello world'\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("console: {}", s.console().display())),
        "{text}"
    );
    assert!(!s.console().exists(), "dry run opened the console");
    assert!(!Path::new(&format!("/run/netns/{}", s.name)).exists());

    let out = s.run(&["start", "--console", "syslog", &s.name]);
    assert_eq!(out.code(), 125, "{}", out.describe());
    let out = s.run(&["start", "--detach", &s.name, "--", "/bin/true"]);
    assert_eq!(out.code(), 125, "{}", out.describe());

    // BOOT needs the subhost's /bin/sh: refused, with nothing left behind.
    std::fs::remove_file(s.root().join("bin/sh")).unwrap();
    let out = s.run(&["start", "--detach", &s.name]);
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(out.stderr_str().contains("/bin/sh"), "{}", out.describe());
    assert!(!Path::new(&format!("/run/netns/{}", s.name)).exists());
    assert_eq!(mounts_below(&s.dir()), Vec::<String>::new());
    assert_eq!(s.recorded_init(), None);
}
