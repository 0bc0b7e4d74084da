//! subhost-init and job control under a real pty (driven by expect), in
//! both terminal setups, plus the static-binary check. Nothing here touches
//! the terminal of whoever runs the tests: expect makes its own ptys and
//! runs with stdin from /dev/null.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use subhost_tests::{init_bin, require_root, run_timeout, Finished, TempDir};

const LIMIT: Duration = Duration::from_secs(40);

/// Runs an expect script; `fail` exits 90, so any other status is the one
/// the script chose to report.
fn expect(dir: &Path, body: &str) -> Finished {
    require_root();
    let script = dir.join("script.exp");
    let text = format!(
        "set timeout 10\nproc fail {{msg}} {{ puts \"\\nFAIL: $msg\"; exit 90 }}\n{body}\n"
    );
    std::fs::write(&script, text).unwrap();
    run_timeout(
        Command::new("expect")
            .arg("-f")
            .arg(&script)
            .env("INIT", init_bin())
            .env("TERM", "dumb")
            .env("INP", "in> ")
            .env("OUTP", "out> "),
        LIMIT,
    )
}

/// Inside an interactive session bash with prompt `in> `: a ticking job is
/// suspended with Ctrl-Z, resumed with fg and interrupted with Ctrl-C, and
/// the session shell survives all of it. The job is bash, not sh: dash
/// vforks, and a vfork parent cannot stop while its child is stopped before
/// exec, so Ctrl-Z at that moment would leave the job half stopped.
const JOB_CONTROL: &str = r#"
expect timeout {fail "no session prompt"} "in> "
send "bash -c 'i=0; while :; do i=\$((i+1)); echo tick\$i; sleep 0.1; done'\r"
expect timeout {fail "job not running"} -re {tick[0-9]+}
send "\032"
expect timeout {fail "Ctrl-Z did not suspend the job"} "Stopped"
expect timeout {fail "no prompt after Ctrl-Z"} "in> "
send "fg\r"
expect timeout {fail "fg did not resume the job"} -re {tick[0-9]+}
send "\003"
expect timeout {fail "no prompt after Ctrl-C"} "in> "
send "echo alive-\$((2+3))\r"
expect timeout {fail "Ctrl-C killed the session shell"} "alive-5"
"#;

#[test]
fn job_control_when_init_leads_a_fresh_pty() {
    let dir = TempDir::new();
    // setsid -c makes the init (PID 1 of the new namespace) the session
    // leader with the pty as its controlling terminal, as the launcher does.
    let body = format!(
        r#"spawn unshare --pid --fork --mount-proc --kill-child setsid -c $env(INIT) -- env PS1=$env(INP) bash --norc --noprofile -i
{JOB_CONTROL}
send "exit 3\r"
expect timeout {{fail "session did not exit"}} eof
lassign [wait] pid spawnid oserr status
exit $status"#
    );
    let out = expect(dir.path(), &body);
    assert_eq!(out.code(), 3, "{}", out.describe());
}

#[test]
fn job_control_when_init_is_a_shell_job_and_shell_works_after() {
    let dir = TempDir::new();
    let body = format!(
        r#"spawn env PS1=$env(OUTP) bash --norc --noprofile -i
expect timeout {{fail "no outer prompt"}} "out> "
send "unshare --pid --fork --mount-proc --kill-child \$INIT -- env PS1=\"\$INP\" bash --norc --noprofile -i\r"
{JOB_CONTROL}
send "exit 7\r"
expect timeout {{fail "outer shell did not get the terminal back"}} "out> "
send "echo st=\$?\r"
expect timeout {{fail "wrong status"}} "st=7"
send "echo after-\$((40+2))\r"
expect timeout {{fail "outer shell broken"}} "after-42"
send "exit\r"
expect eof
exit 0"#
    );
    let out = expect(dir.path(), &body);
    assert_eq!(out.code(), 0, "{}", out.describe());
}

#[test]
fn ctrl_z_stops_a_non_pid1_init_and_fg_resumes_it() {
    let dir = TempDir::new();
    let body = r#"spawn env PS1=$env(OUTP) bash --norc --noprofile -i
expect timeout {fail "no outer prompt"} "out> "
send "\$INIT -- bash -c 'i=0; while :; do i=\$((i+1)); echo tick\$i; sleep 0.1; done'\r"
expect timeout {fail "job not running"} -re {tick[0-9]+}
send "\032"
expect timeout {fail "the shell did not see its job stop"} "Stopped"
expect timeout {fail "no prompt after Ctrl-Z"} "out> "
send "fg\r"
expect timeout {fail "fg did not resume the session"} -re {tick[0-9]+}
send "\003"
expect timeout {fail "no prompt after Ctrl-C"} "out> "
send "echo st=\$?\r"
expect timeout {fail "wrong status after Ctrl-C"} "st=130"
send "exit\r"
expect eof
exit 0"#;
    let out = expect(dir.path(), body);
    assert_eq!(out.code(), 0, "{}", out.describe());
}

#[test]
fn static_init_needs_nothing_but_itself() {
    require_root();
    // The binary musl-build ships (or SUBHOST_BIN_DIR's): the one every
    // system test runs.
    let init = init_bin();
    let size = std::fs::metadata(&init).expect("the init binary").len();
    assert!(
        size <= 128 * 1024,
        "{} is {size} bytes, over 128 KiB: is std linked again, or is it musl-build's \
         glibc fallback (static glibc alone is ~850 KiB; tests/setup adds the musl target)?",
        init.display()
    );
    let headers = run_timeout(Command::new("readelf").args(["-lW"]).arg(&init), LIMIT);
    assert!(headers.status.success(), "{}", headers.describe());
    assert!(
        headers.stdout_str().contains("LOAD"),
        "not an ELF with segments"
    );
    assert!(
        !headers.stdout_str().contains("INTERP"),
        "has a program interpreter"
    );
    let dynamic = run_timeout(Command::new("readelf").args(["-dW"]).arg(&init), LIMIT);
    assert!(
        !dynamic.stdout_str().contains("(NEEDED)"),
        "needs shared libraries"
    );

    // An empty tmpfs root holding only the init, in a private mount
    // namespace: it runs itself as its session.
    let dir = TempDir::new();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=4m none {r} && cp {i} {r}/init && [ \"$(ls -A {r})\" = init ] && \
         exec unshare --pid --fork --kill-child chroot {r} /init -- /init --version",
        r = root.display(),
        i = init.display()
    );
    let out = run_timeout(
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        out.stdout_str().starts_with("subhost-init "),
        "{}",
        out.describe()
    );
    let missing = run_timeout(
        Command::new("unshare").args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script.replace("/init --version", "/nothing"),
        ]),
        LIMIT,
    );
    assert_eq!(missing.code(), 127, "{}", missing.describe());
}
