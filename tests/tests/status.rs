//! `subhost-launch create`, `list` and `status` on the real kernel: what
//! `create` makes and refuses, and the state `list` reads back from mounts,
//! netns, links and the verified init through a subhost's life. Every test
//! has its own `$SUBHOST` and names; guards stop and remove what it made.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use subhost_tests::json::{parse_json, J};
use subhost_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

/// One subhost NAME under a fresh `$SUBHOST`; stopped and removed on drop
/// whether or not `create` made it.
struct Sub {
    tmp: TempDir,
    name: String,
}

impl Sub {
    fn new() -> Sub {
        require_root();
        Sub {
            tmp: TempDir::new(),
            name: unique_name("st"),
        }
    }

    fn base(&self) -> &Path {
        self.tmp.path()
    }
    fn dir(&self) -> PathBuf {
        self.base().join(&self.name)
    }

    fn launch(&self) -> Command {
        let mut c = Command::new(launch_bin());
        c.env("SUBHOST", self.base());
        c
    }

    fn run(&self, args: &[&str]) -> Finished {
        run_timeout(self.launch().args(args), LIMIT)
    }

    fn create(&self, extra: &[&str]) -> Finished {
        let mut args = vec!["create", self.name.as_str()];
        args.extend_from_slice(mode_create_args());
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `status NAME --json`, parsed.
    fn status(&self) -> J {
        let out = self.run(&["status", &self.name, "--json"]);
        assert_ok(&out);
        parse_json(&out.stdout_str())
    }

    /// This subhost's object in `list --json`.
    fn listed(&self) -> J {
        let out = self.run(&["list", "--json"]);
        assert_ok(&out);
        let all = parse_json(&out.stdout_str());
        let J::Arr(items) = all else {
            panic!("list --json is not an array: {}", out.stdout_str())
        };
        items
            .into_iter()
            .find(|o| o.get("name").str() == self.name)
            .unwrap_or_else(|| panic!("{} not listed: {}", self.name, out.stdout_str()))
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        if self.dir().exists() {
            let out = self.run(&["stop", &self.name]);
            if !out.status.success() {
                eprintln!("cleanup: stop {} failed: {}", self.name, out.describe());
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(format!("/run/subhost/{}.lock", self.name));
        let _ = std::fs::remove_file(format!("/run/subhost/{}.init", self.name));
    }
}

/// A `start` left running in the background; killed and reaped on drop.
struct Background {
    child: Option<std::process::Child>,
}

impl Background {
    /// SIGTERM (which `start` forwards to init), then its result.
    fn terminate(mut self) -> Finished {
        let child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        wait_timeout(child, LIMIT)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            // wait_timeout kills the whole group when the limit passes.
            let _ = wait_timeout(child, Duration::ZERO);
        }
    }
}

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

fn assert_refused(out: &Finished, what: &str) {
    assert_eq!(out.code(), 1, "{what}: {}", out.describe());
    assert!(
        out.stderr_str().contains("error:"),
        "{what}: no error message: {}",
        out.describe()
    );
}

/// Writes NAME's init record naming this test's own process (PID and
/// start time): a live process that is not the subhost's init.
fn record_self_as_init(name: &str) {
    let me = std::process::id();
    let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
    let start = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    std::fs::write(
        format!("/run/subhost/{name}.init"),
        format!("{me} {start}\n"),
    )
    .unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(d) => d
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn create_makes_a_dir_subhost_that_lists_as_stopped() {
    let s = Sub::new();
    let br = Bridge::new();
    let out = s.create(&[
        "--lower",
        "/",
        "--bridge",
        &br.name,
        "--bridge",
        "=02:5a:00:00:00:09",
    ]);
    assert_ok(&out);
    for d in ["root", "work", "live"] {
        assert!(s.dir().join(d).is_dir(), "{d} missing");
    }
    let config = std::fs::read_to_string(s.dir().join("config")).unwrap();
    assert!(config.contains("\nLOWER='/'\n"), "{config}");
    assert!(config.contains("#MEMORY_MAX="), "{config}");
    let text = out.stdout_str();
    assert!(
        text.contains(&format!("subhost-launch start {}", s.name)),
        "{text}"
    );

    let o = s.listed();
    assert_eq!(o.get("state").str(), "stopped", "{o:?}");
    assert_eq!(o.get("pid"), &J::Null);
    assert_eq!(o.get("uptime_seconds"), &J::Null);
    assert_eq!(o.get("root").str(), "overlay");
    assert_eq!(o.get("image"), &J::Bool(false));
    assert_eq!(o.get("problems"), &J::Arr(vec![]));
    let cables = o.get("cables").arr();
    assert_eq!(cables.len(), 2, "{o:?}");
    assert_eq!(cables[0].get("host").str(), format!("{}0", s.name));
    assert_eq!(cables[0].get("bridge").str(), br.name);
    assert_eq!(cables[0].get("mac").str(), "auto");
    assert_eq!(cables[0].get("present"), &J::Bool(false));
    assert_eq!(cables[1].get("bridge"), &J::Null);
    assert_eq!(cables[1].get("mac").str(), "02:5a:00:00:00:09");

    // The same subhost through `status`, and in the table.
    assert_eq!(s.status().get("state").str(), "stopped");
    let table = s.run(&["list"]);
    assert_ok(&table);
    let t = table.stdout_str();
    assert!(t.starts_with("NAME "), "{t}");
    let row = t
        .lines()
        .find(|l| l.starts_with(&s.name))
        .unwrap_or_else(|| panic!("no row: {t}"));
    assert!(row.contains("stopped") && row.contains("overlay"), "{row}");
}

#[test]
fn create_with_an_image_makes_a_sparse_ext4_with_root_and_work() {
    let s = Sub::new();
    assert_ok(&s.create(&["--image", "32M"]));
    let img = s.dir().join(format!("{}.img", s.name));
    let meta = std::fs::metadata(&img).unwrap();
    assert_eq!(meta.len(), 32 << 20);
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < meta.len() / 2,
        "image not sparse: {} blocks",
        meta.blocks()
    );
    for d in ["mnt", "live"] {
        assert!(s.dir().join(d).is_dir(), "{d} missing");
    }
    assert!(!s.dir().join("root").exists(), "root/ belongs in the image");
    let ls = run_timeout(
        Command::new("debugfs").args(["-R", "ls -l /"]).arg(&img),
        LIMIT,
    );
    assert_ok(&ls);
    let listing = ls.stdout_str();
    assert!(
        listing.contains(" root") && listing.contains(" work"),
        "{listing}"
    );
    // config, the image, mnt, live; and the range record with --userns.
    let made = if userns_mode() { 5 } else { 4 };
    assert_eq!(
        entries(s.dir().as_path()).len(),
        made,
        "staging left behind"
    );

    let o = s.status();
    assert_eq!(o.get("state").str(), "stopped");
    assert_eq!(o.get("root").str(), "rbind");
    assert_eq!(o.get("image"), &J::Bool(true));
}

#[test]
fn create_refuses_to_overwrite_an_existing_subhost() {
    let s = Sub::new();
    assert_ok(&s.create(&[]));
    let config = s.dir().join("config");
    std::fs::write(&config, "HOSTNAME=mine\n").unwrap();
    std::fs::write(s.dir().join("root/keep"), "data").unwrap();
    let again = s.create(&["--lower", "/"]);
    assert_refused(&again, "second create");
    assert!(
        again.stderr_str().contains("exists already"),
        "{}",
        again.describe()
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "HOSTNAME=mine\n");
    assert!(s.dir().join("root/keep").exists());
}

#[test]
fn create_refuses_bad_input_and_leaves_nothing() {
    let s = Sub::new();
    let missing = s.base().join("no-such-base");
    let cases: [(&[&str], &str); 8] = [
        (&["--lower", "relative/path"], "is not an absolute path"),
        (
            &["--lower", missing.to_str().unwrap()],
            "not an existing directory",
        ),
        (&["--lower", ""], "--lower is empty"),
        (&["--bridge", "a b"], "bridge name"),
        (&["--bridge", "br0=zz:00"], "is not a MAC address"),
        (&["--bridge", "br0=01:00:00:00:00:01"], "multicast"),
        (&["--image", "12X"], "suffix"),
        (&["--image", "64K"], "too small"),
    ];
    for (args, why) in cases {
        let out = s.create(args);
        assert_refused(&out, why);
        assert!(out.stderr_str().contains(why), "{why}: {}", out.describe());
        assert_eq!(
            entries(s.base()),
            Vec::<String>::new(),
            "{args:?} left files"
        );
    }
    for bad in ["Bad", "waytoolongname", "a/b", "a.b"] {
        let out = s.run(&["create", bad]);
        assert_refused(&out, bad);
        assert!(
            out.stderr_str().contains("invalid subhost name"),
            "{}",
            out.describe()
        );
        assert_eq!(entries(s.base()), Vec::<String>::new(), "{bad} left files");
    }
}

#[test]
fn create_that_fails_halfway_removes_what_it_made() {
    // mkfs.ext4 not found: the directory, and the $SUBHOST this call made,
    // must go again.
    let s = Sub::new();
    let base = s.base().join("fresh");
    let empty = TempDir::new();
    let out = run_timeout(
        Command::new(launch_bin())
            .env("SUBHOST", &base)
            .env("PATH", empty.path())
            .args(["create", &s.name, "--image", "8M"]),
        LIMIT,
    );
    assert_refused(&out, "create without mkfs.ext4");
    assert!(out.stderr_str().contains("mkfs.ext4"), "{}", out.describe());
    assert!(!base.exists(), "left {:?}", entries(&base));
}

#[test]
fn list_skips_strangers_and_survives_a_broken_config() {
    let s = Sub::new();
    assert_ok(&s.create(&[]));
    std::fs::write(s.dir().join("config"), "LOWER=$(rm -rf /)\n").unwrap();
    // Not subhosts: a bad name, a dir with neither config nor root, a file.
    std::fs::create_dir_all(s.base().join("Base.Layer/root")).unwrap();
    std::fs::create_dir_all(s.base().join("shtempty")).unwrap();
    std::fs::write(s.base().join("notes"), "x").unwrap();

    let out = s.run(&["list", "--json"]);
    assert_ok(&out);
    let J::Arr(items) = parse_json(&out.stdout_str()) else {
        panic!("not an array")
    };
    let names: Vec<&str> = items.iter().map(|o| o.get("name").str()).collect();
    assert_eq!(names, vec![s.name.as_str()], "{}", out.stdout_str());
    let o = &items[0];
    assert_eq!(o.get("state").str(), "stopped");
    assert_eq!(o.get("root"), &J::Null);
    let problems = o.get("problems").arr();
    assert!(
        problems.iter().any(|p| p.str().contains("config:1")),
        "{problems:?}"
    );
    assert_ok(&s.run(&["list"]));
}

#[test]
fn status_of_a_missing_subhost_is_an_error() {
    let s = Sub::new();
    let out = s.run(&["status", &s.name]);
    assert_refused(&out, "status of nothing");
    assert!(
        out.stderr_str().contains("no subhost"),
        "{}",
        out.describe()
    );
    let out = s.run(&["status", "Nope"]);
    assert_refused(&out, "status of a bad name");
}

#[test]
fn a_stale_init_record_is_reported_not_believed() {
    let s = Sub::new();
    assert_ok(&s.create(&[]));
    busybox_root(&s.dir().join("root"));
    assert_ok(&s.run(&["start", &s.name, "--", "true"]));
    assert_eq!(s.status().get("state").str(), "hibernating");
    // A live process that is not this subhost's init: this test itself.
    record_self_as_init(&s.name);
    let o = s.status();
    assert_eq!(o.get("state").str(), "broken", "{o:?}");
    assert_eq!(o.get("pid"), &J::Null);
    assert!(
        o.get("problems")
            .arr()
            .iter()
            .any(|p| p.str().contains("stale init record")),
        "{o:?}"
    );
}

#[test]
fn list_follows_a_subhost_from_stopped_to_hibernating_to_stopped() {
    let s = Sub::new();
    let br = Bridge::new();
    assert_ok(&s.create(&["--bridge", &br.name]));
    busybox_root(&s.dir().join("root"));
    assert_eq!(s.listed().get("state").str(), "stopped");

    assert_ok(&s.run(&["start", &s.name, "--", "true"]));
    let o = s.listed();
    assert_eq!(o.get("state").str(), "hibernating", "{o:?}");
    assert_eq!(o.get("root").str(), "rbind");
    let cable = &o.get("cables").arr()[0];
    assert_eq!(cable.get("host").str(), format!("{}0", s.name));
    assert_eq!(cable.get("bridge").str(), br.name, "from sysfs master");
    assert_eq!(cable.get("present"), &J::Bool(true));
    assert_eq!(o.get("problems"), &J::Arr(vec![]));

    // A cable removed by hand: partial.
    let del = run_timeout(
        &mut cmd("ip", ["link", "del", &format!("{}0", s.name)]),
        LIMIT,
    );
    assert_ok(&del);
    assert!(wait_until(Duration::from_secs(5), || {
        !Path::new("/sys/class/net")
            .join(format!("{}0", s.name))
            .exists()
    }));
    let o = s.listed();
    assert_eq!(o.get("state").str(), "broken", "{o:?}");
    assert!(
        o.get("problems")
            .arr()
            .iter()
            .any(|p| p.str().contains(&format!("{}0", s.name))),
        "{o:?}"
    );

    assert_ok(&s.run(&["stop", &s.name]));
    let o = s.listed();
    assert_eq!(o.get("state").str(), "stopped", "{o:?}");
    assert_eq!(o.get("problems"), &J::Arr(vec![]));
}

#[test]
fn a_running_subhost_shows_its_verified_init_and_breaks_without_its_netns() {
    let s = Sub::new();
    let br = Bridge::new();
    assert_ok(&s.create(&["--bridge", &br.name]));
    busybox_root(&s.dir().join("root"));
    let bg = Background {
        child: Some(spawn_group(
            s.launch()
                .args(["start", &s.name, "--", "sleep", "30"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )),
    };
    let mut last = J::Null;
    let up = wait_until(Duration::from_secs(10), || {
        last = s.listed();
        last.get("state").str() == "running"
    });
    assert!(up, "never running: {last:?}");
    let pid = last.get("pid").num() as u32;
    let record = std::fs::read_to_string(format!("/run/subhost/{}.init", s.name)).unwrap();
    assert_eq!(
        record.split_whitespace().next(),
        Some(pid.to_string().as_str())
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .expect("NSpid line");
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "{nspid}");
    assert!(last.get("uptime_seconds").num() < 30.0, "{last:?}");
    assert_eq!(last.get("cables").arr()[0].get("present"), &J::Bool(true));

    // Without its record the init is still found, from the kernel alone.
    let record_path = format!("/run/subhost/{}.init", s.name);
    std::fs::remove_file(&record_path).unwrap();
    let o = s.status();
    std::fs::write(&record_path, &record).unwrap();
    assert_eq!(o.get("state").str(), "running", "{o:?}");
    assert_eq!(o.get("pid").num() as u32, pid);
    assert!(
        o.get("problems")
            .arr()
            .iter()
            .any(|p| p.str().contains("does not name it")),
        "{o:?}"
    );

    assert_ok(&run_timeout(
        &mut cmd("ip", ["netns", "del", &s.name]),
        LIMIT,
    ));
    let o = s.status();
    assert_eq!(o.get("state").str(), "broken", "{o:?}");
    assert!(
        o.get("problems")
            .arr()
            .iter()
            .any(|p| p.str().contains("netns")),
        "{o:?}"
    );

    // `stop` cannot find an init outside its netns; end the session through
    // its launcher first.
    let done = bg.terminate();
    assert!(!done.timed_out, "{}", done.describe());
    assert_ok(&s.run(&["stop", &s.name]));
    assert!(wait_until(Duration::from_secs(5), || {
        s.listed().get("state").str() == "stopped"
    }));
}

/// A start records its init only after forking it, so for a moment the
/// init runs in its netns without a record. `status` must not answer
/// `running` with "the record does not name it" then (a caller reading the
/// record next finds none): it waits while a start holds the lock. The
/// start in progress is played by the test holding the lock with the
/// record removed; `-v` says when `status` waits.
#[test]
fn status_waits_for_a_start_in_progress_to_record_its_init() {
    use std::io::BufRead;
    let s = Sub::new();
    assert_ok(&s.create(&[]));
    busybox_root(&s.dir().join("root"));
    let bg = Background {
        child: Some(spawn_group(
            s.launch()
                .args(["start", &s.name, "--", "sleep", "30"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )),
    };
    assert!(wait_until(Duration::from_secs(10), || {
        s.listed().get("state").str() == "running"
    }));
    let record_path = format!("/run/subhost/{}.init", s.name);
    let record = std::fs::read_to_string(&record_path).unwrap();
    let lock_file = std::fs::File::open(format!("/run/subhost/{}.lock", s.name)).unwrap();
    let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    std::fs::remove_file(&record_path).unwrap();

    let mut status = spawn_group(
        s.launch()
            .args(["-v", "status", &s.name, "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = status.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let waiting = loop {
        match rx.recv_timeout(LIMIT) {
            Ok(l) if l.contains("in progress; waiting") => break true,
            Ok(l) => seen.push(l),
            Err(_) => break false,
        }
    };
    // The start "finishes": record written, lock released.
    std::fs::write(&record_path, &record).unwrap();
    drop(lock);
    let out = wait_timeout(status, LIMIT);
    assert!(waiting, "status did not wait: {seen:?} {}", out.describe());
    assert_ok(&out);
    let o = parse_json(&out.stdout_str());
    assert_eq!(o.get("state").str(), "running", "{o:?}");
    assert_eq!(o.get("problems"), &J::Arr(vec![]), "{o:?}");

    let done = bg.terminate();
    assert!(!done.timed_out, "{}", done.describe());
}

/// Several subhosts under one `$SUBHOST`, stopped and their records
/// removed on drop whatever state a failed test left them in.
struct Fleet {
    tmp: TempDir,
    names: Vec<String>,
}

impl Fleet {
    fn launch(&self) -> Command {
        let mut c = Command::new(launch_bin());
        c.env("SUBHOST", self.tmp.path());
        c
    }

    fn run(&self, args: &[&str]) -> Finished {
        run_timeout(self.launch().args(args), LIMIT)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for name in &self.names {
            let out = self.run(&["stop", name]);
            if !out.status.success() {
                eprintln!("cleanup: stop {name} failed: {}", out.describe());
            }
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
            for ext in ["lock", "init", "dir"] {
                let _ = std::fs::remove_file(format!("/run/subhost/{name}.{ext}"));
            }
        }
    }
}

/// `list` reads what all subhosts share once per call: what it shows of
/// each must still be that subhost's own state, whatever the others are
/// in. Two running, one hibernating, one reached through a symlinked
/// directory, one whose init record is stale, one whose netns was
/// deleted under its init, one stopped: the table says exactly that, row
/// by row, with each one's problems, and `list --json` says of each what
/// `status --json` of it says.
#[test]
fn list_of_many_shows_each_ones_own_state() {
    require_root();
    let br = Bridge::new();
    let elsewhere = TempDir::new();
    let tags = ["run1", "run2", "hib", "lnk", "stale", "nons", "stop"];
    let mut fleet = Fleet {
        tmp: TempDir::new(),
        names: Vec::new(),
    };
    let names: Vec<String> = tags.iter().map(|t| unique_name(&t[..2])).collect();
    let name = |tag: &str| names[tags.iter().position(|t| *t == tag).unwrap()].clone();
    for n in &names {
        fleet.names.push(n.clone());
        let mut args = vec!["create", n.as_str(), "--bridge", &br.name];
        args.extend_from_slice(mode_create_args());
        assert_ok(&fleet.run(&args));
        busybox_root(&fleet.tmp.path().join(n).join("root"));
    }
    // `lnk` lives elsewhere, reached through a symlink.
    let lnk = name("lnk");
    let moved = elsewhere.path().join(&lnk);
    std::fs::rename(fleet.tmp.path().join(&lnk), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, fleet.tmp.path().join(&lnk)).unwrap();

    for tag in ["run1", "run2", "nons"] {
        assert_ok(&fleet.run(&["start", "--detach", &name(tag)]));
    }
    for tag in ["hib", "lnk", "stale"] {
        assert_ok(&fleet.run(&["start", &name(tag), "--", "true"]));
    }
    // A live process that is not `stale`'s init: this test itself.
    let stale = name("stale");
    record_self_as_init(&stale);
    let me = std::process::id();
    let nons = name("nons");
    let record = |n: &str| {
        std::fs::read_to_string(format!("/run/subhost/{n}.init"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let nons_pid = record(&nons);
    // Its init still holds the netns, and with it the cable.
    assert_ok(&run_timeout(&mut cmd("ip", ["netns", "del", &nons]), LIMIT));

    let out = fleet.run(&["list"]);
    assert_ok(&out);
    let text = out.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATE", "PID", "UPTIME", "ROOT", "CABLES"],
        "{text}"
    );
    let json = fleet.run(&["list", "--json"]);
    assert_ok(&json);
    let J::Arr(objects) = parse_json(&json.stdout_str()) else {
        panic!("list --json is not an array: {}", json.stdout_str())
    };
    for (i, n) in sorted.iter().enumerate() {
        let tag = tags[names.iter().position(|m| m == n).unwrap()];
        let row: Vec<&str> = lines[i + 1].split_whitespace().collect();
        let (state, pid) = match tag {
            "run1" | "run2" => ("running", record(n)),
            "nons" => ("broken", "-".into()),
            "hib" | "lnk" => ("hibernating", "-".into()),
            "stale" => ("broken", "-".into()),
            _ => ("stopped", "-".into()),
        };
        assert_eq!(row[0], n.as_str(), "{text}");
        assert_eq!(row[1], state, "{tag}: {text}");
        assert_eq!(row[2], pid, "{tag}: {text}");
        // The bridge each is in, or is to be put in.
        assert_eq!(row[5], format!("{n}0:{}", br.name), "{tag}: {text}");
        let o = &objects[i];
        assert_eq!(o.get("name").str(), n.as_str());
        assert_eq!(row[4], o.get("root").str(), "{tag}: {text}");
        // The same subhost on its own, but for the clock moving on.
        let out = fleet.run(&["status", n, "--json"]);
        assert_ok(&out);
        let mut alone = parse_json(&out.stdout_str());
        let mut listed = o.clone();
        for j in [&mut alone, &mut listed] {
            if let J::Obj(fields) = j {
                fields.retain(|(k, _)| k != "uptime_seconds");
            }
        }
        assert_eq!(listed, alone, "{tag}");
    }
    let problems: Vec<&str> = lines[names.len() + 1..].to_vec();
    let want = [
        format!(
            "{nons}: init PID {nons_pid} runs but is not in netns {nons}: the netns was \
             deleted under it"
        ),
        format!("{nons}: live is mounted but there is no netns {nons}"),
        format!(
            "{nons}: cable {nons}0: host end exists without netns {nons} (a process may \
             still hold the namespace)"
        ),
        format!(
            "{stale}: stale init record /run/subhost/{stale}.init: PID {me} is not this \
             subhost's init (`subhost-launch stop {stale}` clears it)"
        ),
    ];
    let mut want: Vec<(usize, &String)> = want
        .iter()
        .map(|w| {
            (
                sorted
                    .iter()
                    .position(|n| w.starts_with(n.as_str()))
                    .unwrap(),
                w,
            )
        })
        .collect();
    // By subhost, in list order; each one's own in the order it has them.
    want.sort_by_key(|(i, _)| *i);
    let want: Vec<&str> = want.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(problems, want, "{text}");
}
