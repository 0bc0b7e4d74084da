//! Shared scaffolding for the system tests: where the binaries are, unique
//! names, temp dirs and host objects that clean up after themselves even when
//! a test fails, and processes that cannot outlive their timeout.
//!
//! Naming contract (checked by `tests/leftovers`): every subhost and bridge a
//! test makes starts with `sht`, every temp dir with `subhost-test`.

pub mod json;

/// The launcher's own mount-free removal, so the tests delete the way it
/// does: never into a mount a failed test left below a temp dir.
#[path = "../../subhost-launch/src/files/tree.rs"]
mod tree;
pub use tree::remove_tree_mount_free;

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Directory holding the binaries under test: `SUBHOST_BIN_DIR` (set by
/// `tests/run`), else the static build that `musl-build` makes once per test
/// process. Static, because subhost roots hold no libraries for them.
pub fn bin_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SUBHOST_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Command::new(top.join("musl-build"))
            .current_dir(&top)
            .stderr(Stdio::inherit())
            .output()
            .expect("run musl-build");
        assert!(out.status.success(), "musl-build failed");
        let text = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(
            text.lines()
                .last()
                .expect("musl-build prints its output dir"),
        )
    })
    .clone()
}

pub fn init_bin() -> PathBuf {
    bin_dir().join("subhost-init")
}

pub fn launch_bin() -> PathBuf {
    bin_dir().join("subhost-launch")
}

/// The probe (`src/bin/probe.rs`), built static once per test process:
/// it runs inside busybox roots, which hold no libraries for it. Built for
/// musl where the toolchain has it, else for glibc with `+crt-static`, as
/// `musl-build` does.
pub fn probe_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let arch = std::env::consts::ARCH;
        let musl = format!("{arch}-unknown-linux-musl");
        let sysroot = Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let target = if Path::new(&sysroot).join("lib/rustlib").join(&musl).is_dir() {
            musl
        } else {
            format!("{arch}-unknown-linux-gnu")
        };
        let rustflags = format!(
            "{} -C target-feature=+crt-static",
            std::env::var("RUSTFLAGS").unwrap_or_default()
        );
        let out = Command::new(cargo)
            .current_dir(&top)
            .env("RUSTFLAGS", rustflags.trim())
            .args([
                "build",
                "--locked",
                "--message-format=json-render-diagnostics",
            ])
            .args(["--target", &target, "-p", "subhost-tests", "--bin", "probe"])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build for the probe");
        assert!(out.status.success(), "building the static probe failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|m| {
                (m["target"]["name"] == "probe")
                    .then(|| m["executable"].as_str().map(PathBuf::from))
                    .flatten()
            })
            .expect("cargo names the probe it built")
    })
    .clone()
}

/// Copies the probe into a subhost's `root` as `/probe`; returns that path
/// as seen inside.
pub fn install_probe(root: &Path) -> &'static str {
    std::fs::copy(probe_bin(), root.join("probe")).expect("copy the probe into the root");
    "/probe"
}

/// The arguments of `probe each` for `(ID, "CHECK ARGS")` pairs.
pub fn probe_each_args<S: AsRef<str>>(checks: &[(&str, S)]) -> Vec<String> {
    let mut args = vec!["each".to_string()];
    args.extend(
        checks
            .iter()
            .map(|(id, check)| format!("{id} {}", check.as_ref())),
    );
    args
}

/// The `ID: VERDICT` lines `probe each` printed, by ID.
pub fn probe_results(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(id, v)| (id.to_string(), v.to_string()))
        .collect()
}

/// True when running as root; the system tests need it and skip loudly
/// (panic) otherwise rather than pass vacuously.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "system tests need root: run them through tests/run as root"
    );
}

/// A name unique on the host while this process lives, `sht`, `tag`, pid
/// and a counter, short enough for interface names (`NAME99` ≤ 15 bytes)
/// when `tag` is at most 3 characters.
///
/// The parts run together, so two test processes can spell the same name
/// (pids `1a2` and `1a21`: `sht1a2` + `10` and `sht1a21` + `0`; tags `o` and
/// `oa`), and netns, cables and records are host-wide. So each name is
/// claimed as an abstract socket, which the kernel frees when the process
/// ends however it ends; a name taken goes to the next counter.
pub fn unique_name(tag: &str) -> String {
    use std::os::linux::net::SocketAddrExt;
    static N: AtomicU32 = AtomicU32::new(0);
    static CLAIMS: std::sync::Mutex<Vec<std::os::unix::net::UnixDatagram>> =
        std::sync::Mutex::new(Vec::new());
    loop {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() % 100_000;
        let name = format!("sht{tag}{pid:x}{n}");
        assert!(name.len() <= 12, "test name {name} too long");
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(format!("subhost-test-name/{name}"))
                .expect("abstract socket name");
        match std::os::unix::net::UnixDatagram::bind_addr(&addr) {
            Ok(claim) => {
                CLAIMS.lock().unwrap_or_else(|e| e.into_inner()).push(claim);
                return name;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("cannot claim test name {name}: {e}"),
        }
    }
}

/// A temp directory removed on drop, after unmounting anything still
/// mounted below it (so a failed test cannot leave mounts that pin it).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir();
        let path = base.join(format!(
            "subhost-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        // Searchable by everyone, whatever the umask: root of a subhost
        // with USERNS is an ordinary host user, and reaches its subhost
        // through this directory.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        unmount_below(&self.path);
        if let Err(e) = remove_tree_mount_free(&self.path) {
            eprintln!("leaving the rest of {} in place: {e}", self.path.display());
        }
    }
}

/// Lazily unmounts every mount at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// A bridge on the host, deleted on drop. Never given an uplink or an
/// address: traffic stays between the namespaces the tests make.
pub struct Bridge {
    pub name: String,
}

impl Bridge {
    pub fn new() -> Bridge {
        let name = unique_name("br");
        let out = run_timeout(
            Command::new("ip").args(["link", "add", &name, "type", "bridge"]),
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "ip link add bridge: {}",
            out.stderr_str()
        );
        let out = run_timeout(
            Command::new("ip").args(["link", "set", &name, "up"]),
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "ip link set up: {}", out.stderr_str());
        Bridge { name }
    }
}

impl Default for Bridge {
    fn default() -> Self {
        Bridge::new()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Output of a finished process, with helpers for assertions.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Finished {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// Exit code, or 128+N for death by signal N, as a shell reports it.
    pub fn code(&self) -> i32 {
        match (self.status.code(), self.status.signal()) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            _ => -1,
        }
    }
    pub fn describe(&self) -> String {
        format!(
            "exit {} after {:?}{}\n--- stdout\n{}\n--- stderr\n{}",
            self.code(),
            self.elapsed,
            if self.timed_out {
                " (TIMED OUT, killed)"
            } else {
                ""
            },
            self.stdout_str(),
            self.stderr_str()
        )
    }
}

impl From<Output> for Finished {
    fn from(o: Output) -> Self {
        Finished {
            status: o.status,
            stdout: o.stdout,
            stderr: o.stderr,
            elapsed: Duration::ZERO,
            timed_out: false,
        }
    }
}

/// Runs `cmd` to completion with stdin from /dev/null; kills its whole
/// process group when `limit` passes.
pub fn run_timeout(cmd: &mut Command, limit: Duration) -> Finished {
    let child = spawn_group(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    wait_timeout(child, limit)
}

/// Like `run_timeout`, feeding `input` on stdin from a thread (so a child
/// that writes before it reads cannot deadlock against us).
pub fn run_input(cmd: &mut Command, input: Vec<u8>, limit: Duration) -> Finished {
    let mut child = spawn_group(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    let done = wait_timeout(child, limit);
    let _ = writer.join();
    done
}

/// Spawns `cmd` as the leader of a new session (and so of its own process
/// group): a timeout can kill everything it started, and nothing it runs can
/// reach the terminal of whoever runs the suite.
pub fn spawn_group(cmd: &mut Command) -> Child {
    // SAFETY: setsid is async-signal-safe and the closure touches no memory
    // of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()))
}

/// Waits for `child`, collecting piped stdout/stderr concurrently; on timeout
/// SIGKILLs its process group and reports `timed_out`.
pub fn wait_timeout(mut child: Child, limit: Duration) -> Finished {
    let start = Instant::now();
    let out_reader = child.stdout.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = s.read_to_end(&mut v);
            v
        })
    });
    let err_reader = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = s.read_to_end(&mut v);
            v
        })
    });
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if start.elapsed() >= limit => {
                timed_out = true;
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                break child.wait().expect("wait after kill");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("wait: {e}"),
        }
    };
    // A grandchild may still hold the pipes; do not let it hang the test.
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let elapsed = start.elapsed();
    Finished {
        status,
        stdout: out_reader
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default(),
        stderr: err_reader
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default(),
        elapsed,
        timed_out,
    }
}

/// `Command` for a program with args, for brevity in tests.
pub fn cmd<I, S>(program: impl AsRef<OsStr>, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Makes a minimal busybox root at `dir`: /bin with busybox and its applets,
/// the usual empty mount points, /etc/passwd and /etc/hostname.
pub fn busybox_root(dir: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is needed: run tests/setup");
    for d in [
        "bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "root", "usr/bin",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = dir.join("bin").join(applet);
        if !link.exists() {
            let _ = std::os::unix::fs::symlink("busybox", link);
        }
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
}

/// Waits until `cond` holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the system tests run their subhosts unprivileged: with
/// `SUBHOST_TEST_USERNS=1` (as `tests/run` does in its second pass) every
/// `Subhost` gets `USERNS=pick`, so one test covers both modes.
pub fn userns_mode() -> bool {
    matches!(std::env::var("SUBHOST_TEST_USERNS").as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

/// `config` as a test's subhost gets it: with `USERNS=pick` added in
/// `userns_mode`, unless it sets USERNS itself.
pub fn mode_config(config: &str) -> String {
    let mut config = config.to_string();
    if userns_mode() && !config.contains("USERNS=") {
        if !config.is_empty() && !config.ends_with('\n') {
            config.push('\n');
        }
        config.push_str("USERNS=pick\n");
    }
    config
}

/// Options `create` gets in this mode: `--userns` in `userns_mode`.
pub fn mode_create_args() -> &'static [&'static str] {
    if userns_mode() {
        &["--userns"]
    } else {
        &[]
    }
}

/// How long a launcher command in a test may take.
pub const LAUNCH_LIMIT: Duration = Duration::from_secs(30);

/// One subhost under a fresh `$SUBHOST` (a `TempDir`), with a unique `sht`
/// name. On drop it is stopped, whatever state a failed test left it in,
/// and its background `start`s are reaped.
pub struct Subhost {
    tmp: TempDir,
    pub name: String,
    background: Vec<Child>,
}

impl Subhost {
    /// A subhost with an empty `root` and `config` as its config (plus
    /// `USERNS=pick` in `userns_mode`, unless `config` sets USERNS).
    pub fn new(tag: &str, config: &str) -> Subhost {
        require_root();
        let s = Subhost {
            tmp: TempDir::new(),
            name: unique_name(tag),
            background: Vec::new(),
        };
        std::fs::create_dir_all(s.root()).unwrap();
        std::fs::write(s.dir().join("config"), mode_config(config)).unwrap();
        s
    }

    /// A subhost whose `root` is a busybox tree.
    pub fn busybox(tag: &str, config: &str) -> Subhost {
        let s = Subhost::new(tag, config);
        busybox_root(&s.root());
        s
    }

    pub fn base(&self) -> &Path {
        self.tmp.path()
    }
    pub fn dir(&self) -> PathBuf {
        self.base().join(&self.name)
    }
    pub fn root(&self) -> PathBuf {
        self.dir().join("root")
    }
    pub fn live(&self) -> PathBuf {
        self.dir().join("live")
    }

    /// `subhost-launch` with `SUBHOST` pointing here.
    pub fn launch(&self) -> Command {
        let mut c = Command::new(launch_bin());
        c.env("SUBHOST", self.base());
        c
    }

    pub fn run(&self, args: &[&str]) -> Finished {
        run_timeout(self.launch().args(args), LAUNCH_LIMIT)
    }

    /// `start NAME -- /bin/sh -c SCRIPT`
    pub fn sh(&self, script: &str) -> Finished {
        self.run(&["start", &self.name, "--", "/bin/sh", "-c", script])
    }

    /// `enter NAME -- sh -c SCRIPT`
    pub fn enter_sh(&self, script: &str) -> Finished {
        self.run(&["enter", &self.name, "--", "sh", "-c", script])
    }

    pub fn stop(&self) -> Finished {
        self.run(&["stop", &self.name])
    }

    /// `subhost-launch ARGS` started in the background, stdin from
    /// /dev/null and the output piped, for `wait_timeout`.
    pub fn spawn(&self, args: &[&str]) -> Child {
        spawn_group(
            self.launch()
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
    }

    /// Runs `start NAME -- SESSION...` in the background (through `wrap`,
    /// e.g. setpriv, if given) and waits until its init is recorded;
    /// returns the init's PID.
    pub fn start_background(&mut self, wrap: &[&str], session: &[&str]) -> i32 {
        let launch = launch_bin();
        let mut argv: Vec<&std::ffi::OsStr> = wrap.iter().map(|s| s.as_ref()).collect();
        argv.push(launch.as_os_str());
        argv.extend(["start", self.name.as_str(), "--"].map(std::ffi::OsStr::new));
        argv.extend(session.iter().map(std::ffi::OsStr::new));
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..])
            .env("SUBHOST", self.base())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.background.push(spawn_group(&mut c));
        let record = self.init_record();
        assert!(
            wait_until(Duration::from_secs(10), || record.exists()),
            "the init of {} did not come up",
            self.name
        );
        let text = std::fs::read_to_string(&record).unwrap();
        text.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Where `start` records the subhost's init.
    pub fn init_record(&self) -> PathBuf {
        PathBuf::from(format!("/run/subhost/{}.init", self.name))
    }

    /// Whether `live` is a mount point now.
    pub fn live_mounted(&self) -> bool {
        let live = self.live();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|p| Path::new(&unescape_mountinfo(p)) == live)
    }
}

impl Drop for Subhost {
    fn drop(&mut self) {
        let out = self.stop();
        if !out.status.success() {
            eprintln!("cleanup: stop {} failed: {}", self.name, out.describe());
        }
        for child in self.background.drain(..) {
            let _ = wait_timeout(child, Duration::from_secs(10));
        }
        // For a launcher that failed to clean up: the leftover check at the
        // end of the suite still reports it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        for ext in [
            "lock",
            "dir",
            "init",
            "cgroup",
            "cgroup-policy",
            "console",
            "applied",
        ] {
            let _ = std::fs::remove_file(format!("/run/subhost/{}.{ext}", self.name));
        }
    }
}

/// A base for `LOWER` in place of the host's `/`: a busybox tree under a
/// temp dir of its own, with whatever host programs a test needs copied in
/// (with their libraries), and a canary tree. A launcher bug that deletes
/// or changes its lower layer (as a killed USERNS start once led the next
/// start to empty a host's /etc) then hits this tree, not the host; and the
/// whole tree, canary included, is compared byte for byte, owners, modes
/// and xattrs too, against what it was made as: by `check`, and on drop
/// (declare it before the subhost over it, so it is checked after the
/// subhost is stopped).
pub struct ScratchBase {
    tmp: TempDir,
    made: Vec<(String, String)>,
}

/// One entry of the canary tree: a directory when `content` is `None`.
struct Canary {
    path: &'static str,
    owner: (u32, u32),
    mode: u32,
    content: Option<&'static str>,
    /// The value of its `user.subhost-canary` xattr.
    tag: &'static str,
}

/// Under /etc, where the deleting bug struck, and /home; owners the
/// idmapping has to carry, a root-only secret.
const CANARY: &[Canary] = &[
    Canary {
        path: "etc/canary",
        owner: (0, 0),
        mode: 0o755,
        content: None,
        tag: "etc",
    },
    Canary {
        path: "etc/canary/secret",
        owner: (0, 0),
        mode: 0o600,
        content: Some("the host's secret\n"),
        tag: "secret",
    },
    Canary {
        path: "etc/canary/owned",
        owner: (1234, 5678),
        mode: 0o640,
        content: Some("owned by 1234:5678\n"),
        tag: "owned",
    },
    Canary {
        path: "etc/canary/nested",
        owner: (4321, 4321),
        mode: 0o750,
        content: None,
        tag: "nested",
    },
    Canary {
        path: "etc/canary/nested/deep",
        owner: (4321, 4321),
        mode: 0o644,
        content: Some("deep\nand two lines\n"),
        tag: "deep",
    },
    Canary {
        path: "etc/canary/empty",
        owner: (0, 0),
        mode: 0o700,
        content: None,
        tag: "empty",
    },
    Canary {
        path: "home/canary",
        owner: (1000, 1000),
        mode: 0o755,
        content: None,
        tag: "home",
    },
    Canary {
        path: "home/canary/notes",
        owner: (1000, 1000),
        mode: 0o644,
        content: Some("notes of a user\n"),
        tag: "notes",
    },
];

impl ScratchBase {
    /// A busybox tree with /var/tmp, /mnt and the canary.
    pub fn new() -> ScratchBase {
        ScratchBase::with_programs(&[])
    }

    /// Also with these host programs (absolute paths) at the same paths,
    /// with the libraries `ldd` names for them: for a test that needs the
    /// host's own tools (util-linux, bwrap), not busybox's.
    pub fn with_programs(programs: &[&str]) -> ScratchBase {
        require_root();
        let tmp = TempDir::new();
        let root = tmp.path().join("base");
        busybox_root(&root);
        for dir in ["var/tmp", "mnt"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for program in programs {
            copy_program(&root, Path::new(program));
        }
        for c in CANARY {
            let at = root.join(c.path);
            match c.content {
                Some(text) => std::fs::write(&at, text).unwrap(),
                None => std::fs::create_dir_all(&at).unwrap(),
            }
            std::os::unix::fs::lchown(&at, Some(c.owner.0), Some(c.owner.1)).unwrap();
            std::fs::set_permissions(&at, std::os::unix::fs::PermissionsExt::from_mode(c.mode))
                .unwrap();
            set_xattr(&at, "user.subhost-canary", c.tag.as_bytes());
        }
        std::os::unix::fs::symlink("secret", root.join("etc/canary/link")).unwrap();
        let made = tree_state(&root);
        ScratchBase { tmp, made }
    }

    /// Also with the host's python3 and its standard library (for
    /// Ansible modules run inside a subhost over this base): copies, so
    /// nothing a subhost does can reach the host's own files.
    pub fn with_python() -> ScratchBase {
        let mut base = ScratchBase::with_programs(&["/usr/bin/python3"]);
        let root = base.path();
        let lib = std::fs::read_dir("/usr/lib")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("python3.") && p.join("os.py").exists())
            })
            .expect("no /usr/lib/python3.N with os.py: python3 is needed");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        let out = run_timeout(
            Command::new("cp")
                .arg("-a")
                .arg(&lib)
                .arg(root.join("usr/lib")),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "copy {}: {}",
            lib.display(),
            out.describe()
        );
        // The extension modules' own libraries (libz, libffi, libssl...).
        for e in std::fs::read_dir(lib.join("lib-dynload"))
            .unwrap()
            .flatten()
        {
            copy_program(&root, &e.path());
        }
        base.made = tree_state(&root);
        base
    }

    /// The base, as `LOWER=` takes it.
    pub fn path(&self) -> PathBuf {
        self.tmp.path().join("base")
    }

    /// What differs from the tree as made, one line each.
    pub fn differences(&self) -> Vec<String> {
        let now = tree_state(&self.path());
        let was: std::collections::BTreeMap<_, _> = self.made.iter().cloned().collect();
        let is: std::collections::BTreeMap<_, _> = now.into_iter().collect();
        let mut out = Vec::new();
        for (path, state) in &was {
            match is.get(path) {
                None => out.push(format!("{path}: gone (was {state})")),
                Some(s) if s != state => out.push(format!("{path}: was {state}, is {s}")),
                Some(_) => {}
            }
        }
        for (path, state) in &is {
            if !was.contains_key(path) {
                out.push(format!("{path}: appeared ({state})"));
            }
        }
        out
    }

    /// Panics, naming every difference, when the tree is not as made.
    pub fn check(&self) {
        let diff = self.differences();
        assert!(
            diff.is_empty(),
            "the scratch base {} changed under a subhost (its lower layer):\n{}",
            self.path().display(),
            diff.join("\n")
        );
    }
}

impl Default for ScratchBase {
    fn default() -> Self {
        ScratchBase::new()
    }
}

impl Drop for ScratchBase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A second panic would abort the test binary: say it instead.
            for d in self.differences() {
                eprintln!("scratch base changed: {d}");
            }
        } else {
            self.check();
        }
    }
}

/// Copies `program` and the libraries `ldd` lists for it to the same paths
/// under `root`.
fn copy_program(root: &Path, program: &Path) {
    let out = run_timeout(Command::new("ldd").arg(program), Duration::from_secs(10));
    let text = out.stdout_str();
    let mut files = vec![program.to_path_buf()];
    // A static program has no libraries; ldd says so and fails.
    if out.status.success() {
        files.extend(text.lines().filter_map(|l| {
            let path = match l.split_once("=>") {
                Some((_, to)) => to.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        }));
    }
    for file in files {
        let to = root.join(file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, &to)
            .unwrap_or_else(|e| panic!("copy {} into the scratch base: {e}", file.display()));
    }
}

/// Sets xattr `name` of `path` (not following a symlink); the test fails
/// when the filesystem refuses it.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and live across the call;
    // value is a valid buffer of its length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setting {name} on {}: {} (the filesystem must take user xattrs)",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Every xattr of `path` (not following a symlink), by name.
pub fn xattr_map(path: &Path) -> std::io::Result<std::collections::BTreeMap<String, Vec<u8>>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: p is NUL-terminated; names is a writable buffer of its length.
    let len = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        return Err(std::io::Error::last_os_error());
    }
    names.truncate(len as usize);
    let mut out = std::collections::BTreeMap::new();
    for n in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::CString::new(n).unwrap();
        let mut value = vec![0u8; 65536];
        // SAFETY: both strings are NUL-terminated; value is a writable
        // buffer of its length.
        let got = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if got < 0 {
            return Err(std::io::Error::last_os_error());
        }
        value.truncate(got as usize);
        out.insert(String::from_utf8_lossy(n).into_owned(), value);
    }
    Ok(out)
}

/// Every xattr of `path` (not following a symlink), sorted, as `name=value`.
fn xattrs(path: &Path) -> Vec<String> {
    match xattr_map(path) {
        Ok(map) => map
            .iter()
            .map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(v)))
            .collect(),
        Err(e) => vec![format!("listxattr: {e}")],
    }
}

/// Every entry below `root` (relative path, and its type, owner, mode,
/// xattrs and content: a file's bytes by hash and length, a link's target).
fn tree_state(root: &Path) -> Vec<(String, String)> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                out.push((rel, format!("unreadable: {e}")));
                continue;
            }
        };
        let kind = meta.file_type();
        let what = if kind.is_dir() {
            if let Ok(dir) = std::fs::read_dir(&path) {
                todo.extend(dir.filter_map(|e| Some(e.ok()?.path())));
            }
            "dir".to_string()
        } else if kind.is_symlink() {
            format!(
                "link to {}",
                std::fs::read_link(&path).unwrap_or_default().display()
            )
        } else if kind.is_file() {
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    bytes.hash(&mut h);
                    format!("file of {} bytes, hash {:016x}", bytes.len(), h.finish())
                }
                Err(e) => format!("file, unreadable: {e}"),
            }
        } else {
            format!("special {:o} rdev {}", meta.mode() & 0o170000, meta.rdev())
        };
        out.push((
            rel,
            format!(
                "{what}, {}:{} mode {:o}, xattrs {:?}",
                meta.uid(),
                meta.gid(),
                meta.mode() & 0o7777,
                xattrs(&path)
            ),
        ));
    }
    out
}

/// sshd's privilege separation directory: compiled into OpenSSH
/// (`_PATH_PRIVSEP_CHROOT_DIR`), not a config option, so every sshd on the
/// machine shares it, and it refuses to start without it. Only the
/// distribution's boot setup makes it (systemd's `RuntimeDirectory`), so a
/// test machine may lack it. It is made once, if missing, and left: an empty
/// root-owned directory that is openssh-server's own. Removing it after a
/// test would pull it from under any other sshd still running (another
/// test's, or the host's), whose next connection then fails.
const SSHD_PRIVSEP: &str = "/run/sshd";

/// An sshd of the test's own on 127.0.0.1: its own port, host key and
/// client key (throwaway, in DIR), in the foreground under `timeout`,
/// killed on drop.
pub struct Sshd {
    child: Option<Child>,
    pub port: u16,
    /// Holds `client` (the key to log in as root with), `host`,
    /// `sshd_config` and `sshd.log`.
    pub dir: PathBuf,
}

impl Sshd {
    /// Panics when there is no sshd: `tests/setup` installs openssh-server.
    pub fn start(dir: &Path) -> Sshd {
        use std::io::Write;
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sshd is needed: run tests/setup (openssh-server)");
        std::fs::create_dir_all(dir).unwrap();
        for key in ["host", "client"] {
            let out = run_timeout(
                cmd("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f"]).arg(dir.join(key)),
                Duration::from_secs(30),
            );
            assert!(out.status.success(), "ssh-keygen: {}", out.describe());
        }
        std::fs::copy(dir.join("client.pub"), dir.join("authorized_keys")).unwrap();
        match std::fs::create_dir(SSHD_PRIVSEP) {
            Ok(()) => std::fs::set_permissions(
                SSHD_PRIVSEP,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("cannot make {SSHD_PRIVSEP} for sshd: {e}"),
        }
        let port = free_port();
        let config = dir.join("sshd_config");
        let mut f = std::fs::File::create(&config).unwrap();
        write!(
            f,
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {dir}/host\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPidFile none\nUsePAM no\n\
             StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n",
            dir = dir.display()
        )
        .unwrap();
        drop(f);
        let child = spawn_group(
            Command::new("timeout")
                .args(["600", sshd, "-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap()),
        );
        let s = Sshd {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        };
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "sshd did not come up: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        s
    }

    /// ssh's options to reach it as root with the client key.
    pub fn ssh_args(&self) -> String {
        format!(
            "-p {} -i {}/client -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR",
            self.port,
            self.dir.display()
        )
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// Closes every shared ssh connection whose socket is in DIR, so the
    /// sshd processes serving them end too.
    pub fn close_masters(dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let _ = run_timeout(
                Command::new("ssh")
                    .arg("-o")
                    .arg(format!("ControlPath={}", e.path().display()))
                    .args(["-O", "exit", "x"]),
                Duration::from_secs(10),
            );
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

/// A port free on both loopbacks for TCP and UDP, for a test to bind later.
///
/// Not one the kernel hands out for `bind(:0)` or an outgoing connection:
/// such a port can be given to another test's client between the check and
/// the bind (a published-port test once failed that way). The ports come
/// from below the ephemeral range, each process starting at its own offset
/// and each call taking the next, so parallel tests never get the same one.
pub fn free_port() -> u16 {
    use std::net::{TcpListener, UdpSocket};
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // 10000 ports just below the ephemeral range (or above 1024 if the
    // range starts low).
    let base = low.saturating_sub(10_000).max(1025);
    let span = low.saturating_sub(base).max(1);
    let start = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = base + (start.wrapping_add(n) % span);
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("::1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("::1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no port below {low} is free on the loopbacks");
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_unique_name_is_claimed_host_wide_until_exit() {
        use std::os::linux::net::SocketAddrExt;
        let name = super::unique_name("u");
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(format!("subhost-test-name/{name}"))
                .unwrap();
        let again = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);
        assert_ne!(super::unique_name("u"), name);
    }

    #[test]
    fn the_scratch_base_check_sees_a_deleted_changed_or_added_entry() {
        let base = super::ScratchBase::new();
        assert_eq!(base.differences(), Vec::<String>::new());
        let root = base.path();
        std::fs::remove_file(root.join("etc/canary/secret")).unwrap();
        std::os::unix::fs::lchown(root.join("home/canary/notes"), Some(0), None).unwrap();
        std::fs::write(root.join("etc/new"), "").unwrap();
        let diff = base.differences();
        assert_eq!(diff.len(), 3, "{diff:#?}");
        assert!(diff[0].starts_with("etc/canary/secret: gone"), "{diff:#?}");
        assert!(diff[1].starts_with("home/canary/notes: was"), "{diff:#?}");
        assert!(diff[2].starts_with("etc/new: appeared"), "{diff:#?}");
        let caught = std::panic::catch_unwind(|| base.check());
        assert!(caught.is_err(), "check passed over a changed tree");
        // Put back, so the drop's own check passes.
        std::fs::remove_file(root.join("etc/new")).unwrap();
        std::fs::write(root.join("etc/canary/secret"), "the host's secret\n").unwrap();
        std::fs::set_permissions(
            root.join("etc/canary/secret"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        super::set_xattr(
            &root.join("etc/canary/secret"),
            "user.subhost-canary",
            b"secret",
        );
        std::os::unix::fs::lchown(root.join("home/canary/notes"), Some(1000), None).unwrap();
        base.check();
    }
}
