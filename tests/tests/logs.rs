//! The console log of a detached subhost on the real kernel: each line
//! stamped by the relay that writes it, `logs` with -n, --since, --service
//! and -f, rotation at LOG_MAX and by an operator (rename, copytruncate)
//! while the subhost writes numbered lines, none lost or repeated.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use subhost_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

fn console(s: &Subhost) -> PathBuf {
    s.dir().join("console.log")
}

fn rotated(s: &Subhost) -> PathBuf {
    s.dir().join("console.log.1")
}

fn text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn start_detached(s: &Subhost) {
    let out = s.run(&["start", "--detach", &s.name]);
    assert!(out.status.success(), "{}", out.describe());
}

fn wait_for(s: &Subhost, needle: &str) {
    let found = wait_until(LIMIT, || {
        text(&console(s)).contains(needle) || text(&rotated(s)).contains(needle)
    });
    assert!(
        found,
        "no {needle:?} in the console:\n{}{}",
        text(&rotated(s)),
        text(&console(s))
    );
}

fn stamped(line: &str) -> bool {
    let b = line.as_bytes();
    line.len() > 25
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && b[24] == b' '
        && line[..4].bytes().all(|c| c.is_ascii_digit())
}

/// The numbers of the `n N` lines of `text`, in order.
fn numbered(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.get(25..))
        .filter_map(|t| t.strip_prefix("n "))
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn assert_consecutive(got: &[u32], from: u32, to: u32, what: &str) {
    let want: Vec<u32> = (from..to).collect();
    if got != want.as_slice() {
        let missing: Vec<&u32> = want.iter().filter(|n| !got.contains(n)).take(10).collect();
        let mut seen = std::collections::HashSet::new();
        let twice: Vec<&u32> = got.iter().filter(|n| !seen.insert(**n)).take(10).collect();
        panic!(
            "{what}: {} lines, want {from}..{to}; first missing {missing:?}, first repeated {twice:?}",
            got.len()
        );
    }
}

#[test]
fn logs_are_stamped_tailed_and_filtered_by_service_and_time() {
    let s = Subhost::busybox(
        "lg",
        "BOOT=(sh -c 'echo web: one; echo db: two; echo web: three; echo webby: four; echo boot-done')\n",
    );
    start_detached(&s);
    wait_for(&s, "boot-done");

    let out = s.run(&["logs", &s.name]);
    assert!(out.status.success(), "{}", out.describe());
    let all = out.stdout_str();
    let lines: Vec<&str> = all.lines().collect();
    for l in &lines {
        assert!(stamped(l), "not stamped: {l:?}\n{all}");
    }
    let texts: Vec<&str> = lines.iter().map(|l| &l[25..]).collect();
    let starting = format!("subhost {}: starting", s.name);
    assert_eq!(
        texts,
        [
            starting.as_str(),
            "web: one",
            "db: two",
            "web: three",
            "webby: four",
            "boot-done"
        ],
        "{all}"
    );

    let out = s.run(&["logs", "-n", "2", &s.name]);
    assert_eq!(out.stdout_str(), lines[4..].join("\n") + "\n");

    let out = s.run(&["logs", "--service", "web", &s.name]);
    let web: Vec<String> = out.stdout_str().lines().map(|l| l[25..].into()).collect();
    assert_eq!(web, ["web: one", "web: three"], "{}", out.describe());
    let out = s.run(&["logs", "--service", "web", "-n", "1", &s.name]);
    assert!(
        out.stdout_str().ends_with(" web: three\n"),
        "{}",
        out.describe()
    );

    let out = s.run(&["logs", "--since", "2h", &s.name]);
    assert_eq!(out.stdout_str(), all);
    let out = s.run(&["logs", "--since", "2999-01-01T00:00:00Z", &s.name]);
    assert!(
        out.status.success() && out.stdout_str().is_empty(),
        "{}",
        out.describe()
    );
    // The stamp of a line in the middle: from it on, the rest.
    let out = s.run(&["logs", "--since", &lines[5][..24], &s.name]);
    assert!(
        out.stdout_str().ends_with(" boot-done\n"),
        "{}",
        out.describe()
    );

    let out = s.run(&["logs", "--since", "yesterday", &s.name]);
    assert_eq!(out.code(), 1, "{}", out.describe());
    assert!(out.stderr_str().contains("ISO 8601"), "{}", out.describe());
    let out = s.run(&["logs", "sht-no-such"]);
    assert_eq!(out.code(), 1, "{}", out.describe());
    assert!(
        out.stderr_str().contains("no subhost sht-no-such"),
        "{}",
        out.describe()
    );
}

/// 3000 numbered lines of about 31 bytes: one rotation at 64K.
const WRITER: &str = "BOOT=(sh -c 'i=0; while [ $i -lt 3000 ]; do echo \"n $i\"; i=$((i+1)); done; echo writer-done')\n";

#[test]
fn log_max_rotates_keeping_one_file_and_follow_crosses_the_rotation() {
    let s = Subhost::busybox("lr", &format!("LOG_MAX=64K\n{WRITER}"));
    let out_path = s.base().join("followed");
    let out_file = std::fs::File::create(&out_path).unwrap();
    // Following before the log even exists.
    let follower = spawn_group(
        s.launch()
            .args(["logs", "-f", &s.name])
            .stdin(Stdio::null())
            .stdout(out_file)
            .stderr(Stdio::piped()),
    );
    start_detached(&s);
    wait_for(&s, "writer-done");
    let followed = wait_until(LIMIT, || text(&out_path).contains("writer-done"));
    let pid = nix::unistd::Pid::from_raw(follower.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = wait_timeout(follower, LIMIT);
    assert!(
        followed,
        "logs -f did not get to the end:\n{}",
        text(&out_path)
    );

    let (old, cur) = (text(&rotated(&s)), text(&console(&s)));
    assert!(!old.is_empty(), "no rotation at 64K: {} bytes", cur.len());
    for (f, t) in [("console.log.1", &old), ("console.log", &cur)] {
        assert!(t.len() <= 64 << 10, "{f} has {} bytes", t.len());
    }
    let kept = numbered(&format!("{old}{cur}"));
    assert_consecutive(&kept, 0, 3000, "console.log.1 + console.log");
    assert_consecutive(&numbered(&text(&out_path)), 0, 3000, "logs -f");
    let leftover = std::fs::read_dir(s.dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("console"))
        .count();
    assert_eq!(leftover, 2, "one rotated file kept");
}

/// A paced writer: numbered lines for about 4 s.
const PACED: &str = "BOOT=(sh -c 'i=0; while [ $i -lt 4000 ]; do echo \"n $i\"; i=$((i+1)); [ $((i % 100)) = 0 ] && usleep 10000; done; echo writer-done')\n";

#[test]
fn a_rename_while_the_subhost_writes_loses_and_repeats_no_line() {
    let s = Subhost::busybox("lm", PACED);
    start_detached(&s);
    wait_for(&s, "n 1000");
    // logrotate's `create`: rename, and no signal.
    std::fs::rename(console(&s), rotated(&s)).unwrap();
    wait_for(&s, "writer-done");
    let (old, cur) = (text(&rotated(&s)), text(&console(&s)));
    assert!(
        numbered(&cur).len() > 100,
        "no new file after the rename:\n{cur}"
    );
    assert_consecutive(
        &numbered(&format!("{old}{cur}")),
        0,
        4000,
        "console.log.1 + console.log",
    );
}

#[test]
fn copytruncate_while_the_subhost_writes_keeps_appending_at_the_start() {
    let s = Subhost::busybox("lt", PACED);
    start_detached(&s);
    wait_for(&s, "n 1000");
    // logrotate's `copytruncate`: copy, then truncate in place. A line
    // written between the two is logrotate's to lose; the writer's part is
    // to go on at the new end (O_APPEND), not at its old offset.
    std::fs::copy(console(&s), rotated(&s)).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(console(&s))
        .unwrap();
    f.set_len(0).unwrap();
    drop(f);
    wait_for(&s, "writer-done");
    let cur = std::fs::read(console(&s)).unwrap();
    assert!(
        !cur.starts_with(&[0]),
        "a hole at the start: written at the old offset"
    );
    let cur = String::from_utf8(cur).unwrap();
    let after = numbered(&cur);
    let first = after[0];
    assert!(first > 1000, "{first}");
    assert_consecutive(&after, first, 4000, "console.log after the truncation");
    let old = numbered(&text(&rotated(&s)));
    assert_consecutive(&old, 0, old.len() as u32, "the copy");
}

#[test]
fn log_max_below_64k_is_refused_with_its_line() {
    let s = Subhost::busybox("lb", "BOOT=(true)\nLOG_MAX=1000\n");
    let out = s.run(&["start", "--detach", &s.name]);
    assert_eq!(out.code(), 125, "{}", out.describe());
    let err = out.stderr_str();
    assert!(err.contains("config:2:"), "{err}");
    assert!(err.contains("below the minimum of 64K"), "{err}");
    assert!(!console(&s).exists(), "a refused start wrote a console");
}
