//! subhost-init as PID 1 of a fresh PID namespace (and as a subreaper when
//! not PID 1): the real binary, every process bounded by a timeout.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use subhost_tests::{
    init_bin, require_root, run_input, run_timeout, spawn_group, wait_timeout, wait_until,
    Finished, TempDir,
};

const LIMIT: Duration = Duration::from_secs(20);

/// unshare + init as PID 1 of a new PID namespace with its own /proc. The
/// init dies with unshare (--kill-child), and the namespace with the init.
fn ns_cmd(args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"]);
    c.arg(init_bin()).args(args);
    c
}

fn run_ns(args: &[&str]) -> Finished {
    require_root();
    run_timeout(&mut ns_cmd(args), LIMIT)
}

/// A running init whose process group is SIGKILLed if the test fails
/// before it finished.
struct Running {
    child: Option<Child>,
    pgid: i32,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        require_root();
        let child = spawn_group(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        Running {
            pgid: child.id() as i32,
            child: Some(child),
        }
    }

    fn ns(args: &[&str]) -> Running {
        Running::start(&mut ns_cmd(args))
    }

    /// `ns`, its log (stderr) going to `log`, to be read while it runs.
    fn ns_logged(args: &[&str], log: &Path) -> Running {
        require_root();
        let file = std::fs::File::create(log).expect("create the init's log");
        let child = spawn_group(
            ns_cmd(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(file),
        );
        Running {
            pgid: child.id() as i32,
            child: Some(child),
        }
    }

    /// Host pid of the init: unshare's only child.
    fn init_pid(&self) -> i32 {
        let mut pid = 0;
        assert!(
            wait_until(Duration::from_secs(5), || {
                pid = children(self.pgid).first().copied().unwrap_or(0);
                pid != 0
            }),
            "unshare did not start the init"
        );
        pid
    }

    fn signal(&self, pid: i32, sig: i32) {
        // SAFETY: kill takes plain integers.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {pid} {sig}");
    }

    fn finish(mut self, limit: Duration) -> Finished {
        let child = self.child.take().expect("not finished yet");
        wait_timeout(child, limit)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill takes plain integers; pgid is our child's group.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// State letter of a process from /proc/PID/stat ('?' if gone).
fn state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, r)| r.trim_start().chars().next())
        .unwrap_or('?')
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn wait_for_line(path: &Path, line: &str) -> bool {
    wait_until(Duration::from_secs(5), || {
        read(path).lines().any(|l| l == line)
    })
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

#[test]
fn exit_code_and_signal_deaths_propagate() {
    for (script, code) in [
        ("exit 42", 42),
        ("exit 0", 0),
        ("kill -TERM $$", 143),
        ("kill -KILL $$", 137),
    ] {
        let out = run_ns(&["sh", "-c", script]);
        assert_eq!(out.code(), code, "{script}: {}", out.describe());
        assert!(
            out.stderr.is_empty(),
            "silent by default: {}",
            out.describe()
        );
    }
}

#[test]
fn runs_bash_without_command_and_passes_stdin() {
    require_root();
    let out = run_input(&mut ns_cmd(&[]), b"echo hi-$((1+1))\n".to_vec(), LIMIT);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.stdout_str(), "hi-2\n");
}

#[test]
fn stdio_is_byte_exact() {
    require_root();
    let mut x: u32 = 0x1234_5678;
    let data: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let out = run_input(&mut ns_cmd(&["cat"]), data.clone(), LIMIT);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        out.stdout == data,
        "stdout differs: {} bytes back",
        out.stdout.len()
    );
}

/// A bash session that traps `signals`, appending `got-NAME` to `out`; it
/// waits on a FIFO with builtins only, so no child of it sees the signals.
fn trapping_session(dir: &Path, signals: &[&str]) -> String {
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let out = dir.join("out");
    let mut script = String::from("ulimit -c 0\n");
    for s in signals {
        script += &format!("trap 'echo got-{s} >> {}' {s}\n", p(&out));
    }
    script += &format!(
        "trap 'echo got-TERM >> {o}; exit 0' TERM\necho ready >> {o}\nexec 9<>{f}\nwhile :; do read -t 0.05 -u 9 x; done\n",
        o = p(&out),
        f = p(&fifo)
    );
    script
}

fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        "ABRT" => libc::SIGABRT,
        "PIPE" => libc::SIGPIPE,
        "URG" => libc::SIGURG,
        "CONT" => libc::SIGCONT,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "XCPU" => libc::SIGXCPU,
        "PWR" => libc::SIGPWR,
        "TERM" => libc::SIGTERM,
        n => n.parse().expect("signal number"),
    }
}

#[test]
fn every_catchable_signal_reaches_the_session() {
    let dir = TempDir::new();
    let names = [
        "HUP", "INT", "QUIT", "USR1", "USR2", "WINCH", "ALRM", "ABRT", "PIPE", "URG", "CONT",
        "TSTP", "TTIN", "TTOU", "XCPU", "PWR", "40",
    ];
    let script = trapping_session(dir.path(), &names);
    let init = Running::ns(&["bash", "-c", &script]);
    let pid = init.init_pid();
    let out = dir.path().join("out");
    assert!(wait_for_line(&out, "ready"), "session did not start");
    for name in names {
        init.signal(pid, signal_number(name));
        assert!(
            wait_for_line(&out, &format!("got-{name}")),
            "{name} not forwarded: {}",
            read(&out)
        );
    }
    init.signal(pid, libc::SIGTERM);
    let done = init.finish(LIMIT);
    assert_eq!(done.code(), 0, "{}", done.describe());
    assert!(read(&out).contains("got-TERM"));
}

#[test]
fn rewrite_maps_and_drops_signals() {
    let dir = TempDir::new();
    let script = trapping_session(dir.path(), &["USR1", "USR2", "HUP"]);
    let log = dir.path().join("log");
    let init = Running::ns_logged(
        &[
            "-vv",
            "-r",
            "USR1:USR2",
            "-r",
            "HUP:0",
            "bash",
            "-c",
            &script,
        ],
        &log,
    );
    let pid = init.init_pid();
    let out = dir.path().join("out");
    assert!(wait_for_line(&out, "ready"));
    init.signal(pid, libc::SIGHUP);
    init.signal(pid, libc::SIGUSR1);
    assert!(wait_for_line(&out, "got-USR2"), "{}", read(&out));
    // The init dealt with the HUP itself: dropped, not forwarded late.
    assert!(
        wait_until(Duration::from_secs(5), || read(&log)
            .contains("dropping signal 1 (HUP)")),
        "{}",
        read(&log)
    );
    init.signal(pid, libc::SIGTERM);
    let done = init.finish(LIMIT);
    assert_eq!(done.code(), 0, "{}", done.describe());
    let got = read(&out);
    assert!(
        !got.contains("got-USR1") && !got.contains("got-HUP"),
        "{got}"
    );
    assert!(
        !read(&log).contains("forwarding signal 1 "),
        "{}",
        read(&log)
    );
}

/// A session whose foreground child traps USR1 for about a second.
fn parent_and_child(out: &Path) -> String {
    format!(
        r#"trap 'echo parent-got >> {o}' USR1
sh -c 'trap "echo child-got >> {o}; exit 0" USR1; echo ready >> {o}; i=0; while [ $i -lt 20 ]; do sleep 0.05; i=$((i+1)); done'
true"#,
        o = p(out)
    )
}

#[test]
fn group_forwarding_reaches_the_foreground_child() {
    let dir = TempDir::new();
    let out = dir.path().join("out");
    let init = Running::ns(&["bash", "-c", &parent_and_child(&out)]);
    let pid = init.init_pid();
    assert!(wait_for_line(&out, "ready"));
    init.signal(pid, libc::SIGUSR1);
    assert!(wait_for_line(&out, "child-got"), "{}", read(&out));
    let done = init.finish(LIMIT);
    assert_eq!(done.code(), 0, "{}", done.describe());
    assert!(read(&out).contains("parent-got"));
}

#[test]
fn single_child_forwards_to_the_session_process_only() {
    let dir = TempDir::new();
    let out = dir.path().join("out");
    let init = Running::ns(&["-c", "bash", "-c", &parent_and_child(&out)]);
    let pid = init.init_pid();
    assert!(wait_for_line(&out, "ready"));
    init.signal(pid, libc::SIGUSR1);
    // The parent runs its trap once its foreground child is done.
    assert!(wait_for_line(&out, "parent-got"), "{}", read(&out));
    let done = init.finish(LIMIT);
    assert_eq!(done.code(), 0, "{}", done.describe());
    assert!(!read(&out).contains("child-got"), "{}", read(&out));
}

#[test]
fn stop_signals_stop_the_session_and_cont_resumes_it() {
    let dir = TempDir::new();
    let out = dir.path().join("out");
    let script = format!("echo ready >> {}; while :; do sleep 0.05; done", p(&out));
    let init = Running::ns(&["sh", "-c", &script]);
    let pid = init.init_pid();
    assert!(wait_for_line(&out, "ready"));
    let session = children(pid)[0];
    for sig in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        init.signal(pid, sig);
        assert!(
            wait_until(Duration::from_secs(3), || state(session) == 'T'),
            "signal {sig} did not stop it"
        );
        init.signal(pid, libc::SIGCONT);
        assert!(
            wait_until(Duration::from_secs(3), || state(session) != 'T'),
            "SIGCONT did not resume it"
        );
    }
    init.signal(pid, libc::SIGTERM);
    let done = init.finish(LIMIT);
    assert_eq!(done.code(), 143, "{}", done.describe());
}

#[test]
fn reaps_500_double_forked_orphans() {
    // The grandchild outlives its parent, so each one really is orphaned.
    let script = r#"for i in $(seq 500); do (sleep 0.3 &); done
sleep 0.3
for t in $(seq 250); do
  z=$(cat /proc/[0-9]*/stat 2>/dev/null | grep -c ') Z ')
  [ "$z" = 0 ] && break; sleep 0.02
done
echo zombies=$z"#;
    let out = run_ns(&["-vvv", "bash", "-c", script]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.stdout_str(), "zombies=0\n", "{}", out.describe());
    let reaped = out
        .stderr_str()
        .lines()
        .filter(|l| l.contains("reaped"))
        .count();
    assert!(
        reaped >= 500,
        "init reaped {reaped} orphans\n{}",
        out.describe()
    );
}

fn epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[test]
fn leftovers_get_the_grace_period_then_sigkill() {
    let dir = TempDir::new();
    let d = p(dir.path());
    // A background job with a slow cleanup handler, a setsid daemon, one
    // that ignores SIGTERM, and one stopped: all must be dealt with within
    // grace + 1 s of the session's exit.
    let script = format!(
        r#"bash -c 'trap "sleep 0.3; echo done > {d}/bg; exit 0" TERM; touch {d}/r1; while :; do sleep 0.05; done' &
setsid bash -c 'trap "echo done > {d}/daemon; exit 0" TERM; touch {d}/r2; while :; do sleep 0.05; done' &
bash -c 'trap "" TERM; touch {d}/r3; while :; do sleep 0.05; done' &
bash -c 'trap "echo done > {d}/stopped; exit 0" TERM; touch {d}/r4; kill -STOP $$; while :; do sleep 0.05; done' &
stopped=$!
while [ ! -e {d}/r1 ] || [ ! -e {d}/r2 ] || [ ! -e {d}/r3 ] || [ ! -e {d}/r4 ]; do sleep 0.02; done
until grep -q '^State:.T' /proc/$stopped/status; do sleep 0.02; done
date +%s.%N > {d}/exited
exit 3"#
    );
    let out = run_ns(&["--grace", "2", "bash", "-c", &script]);
    let end = epoch_secs();
    assert_eq!(out.code(), 3, "{}", out.describe());
    for f in ["bg", "daemon", "stopped"] {
        assert_eq!(read(&dir.path().join(f)), "done\n", "{f} did not clean up");
    }
    let exited: f64 = read(&dir.path().join("exited"))
        .trim()
        .parse()
        .expect("exit time");
    let after = end - exited;
    assert!(
        (1.9..3.0).contains(&after),
        "init exited {after:.2}s after the session (grace 2)"
    );
}

#[test]
fn exits_as_soon_as_leftovers_are_gone() {
    let dir = TempDir::new();
    let d = p(dir.path());
    let script = format!(
        r#"setsid sh -c 'trap "exit 0" TERM; touch {d}/r; while :; do sleep 0.05; done' &
while [ ! -e {d}/r ]; do sleep 0.02; done"#
    );
    let start = Instant::now();
    let out = run_ns(&["--grace", "10", "bash", "-c", &script]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?} with grace 10",
        start.elapsed()
    );
}

#[test]
fn sigterm_to_init_stops_session_first_then_the_rest() {
    let dir = TempDir::new();
    let log = dir.path().join("log");
    let l = p(&log);
    let script = format!(
        r#"trap 'echo session >> {l}; exit 7' TERM
setsid sh -c 'trap "echo daemon >> {l}; exit 0" TERM; echo ready >> {l}; while :; do sleep 0.05; done' &
while :; do sleep 0.05; done"#
    );
    let init = Running::ns(&["--grace", "3", "bash", "-c", &script]);
    let pid = init.init_pid();
    assert!(wait_for_line(&log, "ready"));
    let start = Instant::now();
    init.signal(pid, libc::SIGTERM);
    let done = init.finish(LIMIT);
    assert_eq!(done.code(), 7, "{}", done.describe());
    assert_eq!(read(&log), "ready\nsession\ndaemon\n");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn sigterm_reaches_a_session_that_ignores_it_with_sigkill_after_grace() {
    let dir = TempDir::new();
    let out = dir.path().join("out");
    let script = format!(
        "trap '' TERM; echo ready >> {}; while :; do sleep 0.05; done",
        p(&out)
    );
    let init = Running::ns(&["--grace", "1", "sh", "-c", &script]);
    let pid = init.init_pid();
    assert!(wait_for_line(&out, "ready"), "the trap was not set");
    let start = Instant::now();
    init.signal(pid, libc::SIGTERM);
    let done = init.finish(LIMIT);
    assert_eq!(done.code(), 137, "{}", done.describe());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(2),
        "took {took:?}"
    );
}

#[test]
fn subreaper_mode_reaps_and_shuts_down_its_subtree() {
    let dir = TempDir::new();
    let out = dir.path().join("out");
    let o = p(&out);
    let script = format!(
        r#"export INIT=$PPID
(setsid sh -c 'trap "echo cleaned >> {o}; exit 0" TERM; i=0; while [ "$(cut -d" " -f4 /proc/$$/stat)" != "$INIT" ] && [ $i -lt 250 ]; do sleep 0.02; i=$((i+1)); done; echo ppid=$(cut -d" " -f4 /proc/$$/stat) >> {o}; i=0; while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done' &)
for i in $(seq 20); do (true &); done
while ! grep -q ppid {o} 2>/dev/null; do sleep 0.02; done
exit 5"#
    );
    let init = Running::start(Command::new(init_bin()).args(["--grace", "2", "sh", "-c", &script]));
    let init_pid = init.pgid;
    let done = init.finish(LIMIT);
    assert_eq!(done.code(), 5, "{}", done.describe());
    assert_eq!(
        read(&out),
        format!("ppid={init_pid}\ncleaned\n"),
        "{}",
        done.describe()
    );
}

#[test]
fn session_gets_a_clean_slate_and_the_working_directory() {
    let dir = TempDir::new();
    let mut cmd = ns_cmd(&["sh", "-c", "pwd; grep -E '^Sig(Blk|Ign)' /proc/self/status"]);
    cmd.current_dir(dir.path());
    // SAFETY: only async-signal-safe calls on the child's own signal state.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    require_root();
    let out = run_timeout(&mut cmd, LIMIT);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(
        out.stdout_str(),
        format!(
            "{}\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
            p(dir.path())
        )
    );
}

#[test]
fn map_exit_turns_statuses_into_zero() {
    assert_eq!(run_ns(&["-e", "3", "sh", "-c", "exit 3"]).code(), 0);
    assert_eq!(run_ns(&["-e", "3", "sh", "-c", "exit 4"]).code(), 4);
    assert_eq!(
        run_ns(&["-e3", "--map-exit", "143", "sh", "-c", "kill $$"]).code(),
        0
    );
}

#[test]
fn pdeathsig_fires_when_the_parent_dies() {
    require_root();
    let dir = TempDir::new();
    let out = dir.path().join("out");
    let o = p(&out);
    let script = format!(
        "trap 'echo got-TERM >> {o}; exit 0' TERM; echo ready >> {o}; i=0; while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done"
    );
    // No --kill-child: the parent-death signal under test must be ours.
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(init_bin());
    cmd.args(["-p", "TERM", "bash", "-c", &script]);
    let init = Running::start(&mut cmd);
    let pid = init.init_pid();
    assert!(wait_for_line(&out, "ready"));
    init.signal(init.pgid, libc::SIGKILL);
    assert!(wait_for_line(&out, "got-TERM"), "{}", read(&out));
    assert!(wait_until(Duration::from_secs(5), || state(pid) == '?'
        || state(pid) == 'Z'));
}

#[test]
fn keep_alive_stays_up_reaping_until_sigterm() {
    let dir = TempDir::new();
    let d = p(dir.path());
    let script = format!(
        "(setsid sleep 30 &); for i in $(seq 20); do (true &); done; touch {d}/done; exit 4"
    );
    let log = dir.path().join("log");
    let init = Running::ns_logged(
        &["-vvv", "--keep-alive", "--grace", "2", "sh", "-c", &script],
        &log,
    );
    let pid = init.init_pid();
    assert!(wait_until(Duration::from_secs(5), || dir
        .path()
        .join("done")
        .exists()));
    // Only the daemon is left, and no zombie.
    assert!(
        wait_until(Duration::from_secs(3), || {
            let kids = children(pid);
            kids.len() == 1 && state(kids[0]) == 'S'
        }),
        "children of the init: {:?}",
        children(pid)
            .iter()
            .map(|&c| (c, state(c)))
            .collect::<Vec<_>>()
    );
    // A signal after the session's exit: once the init has logged it, it
    // has passed the point where it would have ended the rest.
    assert!(
        read(&log).contains("session exited: status 4"),
        "{}",
        read(&log)
    );
    init.signal(pid, libc::SIGWINCH);
    assert!(
        wait_until(Duration::from_secs(5), || read(&log)
            .contains("got signal 28 (WINCH)")),
        "{}",
        read(&log)
    );
    assert_ne!(state(pid), '?', "init exited despite --keep-alive");
    assert!(
        !read(&log).contains("SIGTERM to every process left"),
        "{}",
        read(&log)
    );
    assert_eq!(children(pid).len(), 1, "the daemon was ended");
    let start = Instant::now();
    init.signal(pid, libc::SIGTERM);
    let done = init.finish(LIMIT);
    assert_eq!(done.code(), 4, "{}", done.describe());
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn no_session_waits_for_sigterm() {
    let dir = TempDir::new();
    let log = dir.path().join("log");
    let init = Running::ns_logged(&["-vvv", "--no-session"], &log);
    let pid = init.init_pid();
    // Once it has handled a signal, it is in its loop, not on its way out.
    // Sent again until then: before its exec, WINCH is ignored.
    assert!(
        wait_until(Duration::from_secs(5), || {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid, libc::SIGWINCH) };
            read(&log).contains("got signal 28 (WINCH)")
        }),
        "{}",
        read(&log)
    );
    assert_ne!(state(pid), '?');
    assert!(children(pid).is_empty());
    init.signal(pid, libc::SIGTERM);
    let done = init.finish(LIMIT);
    assert_eq!(done.code(), 0, "{}", done.describe());
}

#[test]
fn verbose_logs_to_stderr() {
    let out = run_ns(&["-v", "true"]);
    assert_eq!(out.code(), 0);
    let err = out.stderr_str();
    assert!(
        err.contains("subhost-init: session started") && err.contains("session exited: status 0"),
        "{err}"
    );
    let out = run_ns(&["-vvv", "sh", "-c", "(true &); sleep 0.2"]);
    assert!(out.stderr_str().contains("reaped"), "{}", out.describe());
}

#[test]
fn syslog_goes_to_dev_log() {
    require_root();
    let dir = TempDir::new();
    let sock_path = dir.path().join("log");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind log socket");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A private mount namespace where /dev/log is our socket.
    let script = format!(
        "mount -t tmpfs none /dev && touch /dev/log && mount --bind {} /dev/log && exec {} --syslog true",
        p(&sock_path),
        init_bin().display()
    );
    let out = run_timeout(
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(out.stderr.is_empty(), "{}", out.describe());
    let mut buf = [0u8; 1024];
    let mut msgs = Vec::new();
    for _ in 0..2 {
        let n = sock.recv(&mut buf).expect("a syslog message");
        msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // <30> = daemon.info. The second line comes after the init closed
    // every descriptor above 2, its syslog socket among them.
    for (msg, what) in msgs.iter().zip(["session started", "session exited"]) {
        assert!(
            msg.starts_with("<30>") && msg.contains("subhost-init[") && msg.contains(what),
            "{msgs:?}"
        );
    }
}

#[test]
fn help_and_version() {
    let out = run_timeout(Command::new(init_bin()).arg("--help"), LIMIT);
    assert_eq!(out.code(), 0);
    assert!(out
        .stdout_str()
        .starts_with("Usage: subhost-init [OPTIONS] [--] [COMMAND [ARGS...]]"));
    let out = run_timeout(Command::new(init_bin()).arg("-V"), LIMIT);
    assert_eq!(out.code(), 0);
    assert!(out.stdout_str().starts_with("subhost-init "));
}

#[test]
fn bad_usage_is_a_clear_error() {
    for (args, needle) in [
        (&["--bogus"][..], "unknown option '--bogus'"),
        (&["--grace"], "option '--grace' needs a value"),
        (
            &["--grace", "soon", "true"],
            "--grace: 'soon' is not a number of seconds",
        ),
        (&["-e", "300", "true"], "-e: '300' is not an exit status"),
        (&["-r", "TERM", "true"], "-r: 'TERM' is not S:R"),
        (&["-p", "NOPE", "true"], "-p: 'NOPE' is not a signal"),
        (&["--no-session", "true"], "--no-session takes no COMMAND"),
    ] {
        let out = run_timeout(Command::new(init_bin()).args(args), LIMIT);
        assert_eq!(out.code(), 2, "{args:?}: {}", out.describe());
        let err = out.stderr_str();
        assert!(
            err.contains(needle) && err.contains("--help"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn missing_or_non_executable_command() {
    let dir = TempDir::new();
    let out = run_ns(&["/nonexistent/cmd"]);
    assert_eq!(out.code(), 127, "{}", out.describe());
    assert_eq!(
        out.stderr_str(),
        "subhost-init: cannot run '/nonexistent/cmd': No such file or directory\n"
    );
    let out = run_ns(&["no-such-command-anywhere"]);
    assert_eq!(out.code(), 127, "{}", out.describe());
    let file = dir.path().join("notexec");
    std::fs::write(&file, "#!/bin/sh\n").unwrap();
    let out = run_ns(&[p(&file)]);
    assert_eq!(out.code(), 126, "{}", out.describe());
    assert_eq!(out.stderr_str().lines().count(), 1, "{}", out.describe());
    assert!(out.stderr_str().contains("Permission denied"));
}

/// Starts the init as PID 1 with the write end of a pipe (a FIFO in `dir`)
/// on its fd 3; the receiver gets what came through once the pipe reaches
/// EOF, that is once every copy of the write end is closed. The shell that
/// becomes the init opens it, so that unshare, which waits outside, holds
/// no copy.
fn start_with_pipe_on_fd3(dir: &Path, args: &[&str]) -> (Running, mpsc::Receiver<Vec<u8>>) {
    let fifo = dir.join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let (tx, rx) = mpsc::channel();
    let reader = fifo.clone();
    // Opening blocks until the writer opens its end.
    std::thread::spawn(move || {
        let mut got = Vec::new();
        if let Ok(mut f) = std::fs::File::open(reader) {
            let _ = f.read_to_end(&mut got);
        }
        let _ = tx.send(got);
    });
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
        .args(["sh", "-c", r#"exec 3>"$0" && exec "$@""#])
        .arg(&fifo)
        .arg(init_bin())
        .args(args);
    (Running::start(&mut cmd), rx)
}

/// The descriptor numbers open in a process.
fn fds(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn inherited_descriptors_go_to_the_session_and_leave_the_init() {
    // The session writes through fd 3 and exits; its orphan (without fd 3)
    // keeps the init up, as --keep-alive does anyway.
    let dir = TempDir::new();
    let (init, through) = start_with_pipe_on_fd3(
        dir.path(),
        &[
            "--keep-alive",
            "sh",
            "-c",
            "sleep 30 3>&- & echo through >&3; exit 0",
        ],
    );
    let pid = init.init_pid();
    let got = through
        .recv_timeout(Duration::from_secs(5))
        .expect("no EOF on a pipe the session closed: the init still holds it");
    assert_eq!(String::from_utf8_lossy(&got), "through\n");
    assert_ne!(state(pid), '?', "the init exited");
    // The session may still be a zombie for a moment.
    assert!(
        wait_until(Duration::from_secs(5), || children(pid).len() == 1),
        "not just the orphan left: {:?}",
        children(pid)
    );
    assert_eq!(fds(pid), [0, 1, 2], "the init keeps descriptors");
    init.signal(pid, libc::SIGTERM);
    let done = init.finish(LIMIT);
    assert_eq!(done.code(), 0, "{}", done.describe());
}

#[test]
fn without_a_session_inherited_descriptors_are_closed() {
    let dir = TempDir::new();
    let (init, through) = start_with_pipe_on_fd3(dir.path(), &["--no-session"]);
    let pid = init.init_pid();
    let got = through
        .recv_timeout(Duration::from_secs(5))
        .expect("no EOF: the init holds the pipe");
    assert!(got.is_empty());
    assert_ne!(state(pid), '?', "the init exited");
    assert_eq!(fds(pid), [0, 1, 2]);
    init.signal(pid, libc::SIGTERM);
    let done = init.finish(LIMIT);
    assert_eq!(done.code(), 0, "{}", done.describe());
}
