//! Boot-time scripts under contrib/ and the generated documentation
//! (`completions`, `man`). The scripts run against a temp autostart list and
//! a fake launcher that logs its arguments, so no subhost is started; the
//! unit files are checked with systemd-analyze when it is installed (systemd
//! need not be running), and parsed here either way.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use subhost_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib")
}

/// Every shell script under contrib/.
fn scripts() -> Vec<PathBuf> {
    [
        "subhost-autostart",
        "systemd/subhost-autostart-generator",
        "sysvinit/subhost",
        "openrc/subhost",
    ]
    .iter()
    .map(|p| contrib().join(p))
    .collect()
}

fn launch(args: &[&str]) -> Finished {
    let out = run_timeout(Command::new(launch_bin()).args(args), LIMIT);
    assert!(
        !out.timed_out,
        "subhost-launch {args:?}: {}",
        out.describe()
    );
    out
}

fn have(program: &str) -> bool {
    run_timeout(
        Command::new("sh").args(["-c", &format!("command -v {program}")]),
        LIMIT,
    )
    .status
    .success()
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The commands `--help` lists (clap's own `help` aside), so that the checks
/// below cover commands added later without being edited.
fn listed_commands() -> Vec<String> {
    let help = launch(&["--help"]);
    assert!(help.status.success(), "{}", help.describe());
    let text = help.stdout_str();
    let section = text
        .split("Commands:\n")
        .nth(1)
        .expect("--help has a Commands section");
    let names: Vec<String> = section
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    for expected in ["start", "stop", "completions", "man"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    names
}

// ---- completions ----------------------------------------------------------

/// Sources the bash completion script and completes `words` (the last one
/// being the word under the cursor), as bash would on TAB.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}' || exit 90
         func=$(complete -p subhost-launch | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p')
         [ -n \"$func\" ] || exit 91
         COMP_WORDS=({words})
         COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
         COMP_LINE=\"${{COMP_WORDS[*]}}\"
         COMP_POINT=${{#COMP_LINE}}
         \"$func\" subhost-launch \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words = quoted.join(" ")
    );
    let out = run_timeout(Command::new("bash").args(["-c", &program]), LIMIT);
    assert!(out.status.success(), "{}", out.describe());
    out.stdout_str().lines().map(str::to_owned).collect()
}

#[test]
fn bash_completion_registers_and_completes() {
    let tmp = TempDir::new();
    let out = launch(&["completions", "bash"]);
    assert!(out.status.success(), "{}", out.describe());
    let text = out.stdout_str();
    for word in ["start", "stop", "--subhost-dir", "complete -F"] {
        assert!(text.contains(word), "{word} missing from:\n{text}");
    }
    let script = tmp.path().join("subhost-launch.bash");
    std::fs::write(&script, &out.stdout).unwrap();

    let reg = run_timeout(
        Command::new("bash").args([
            "-c",
            &format!(
                "source '{}' && complete -p subhost-launch",
                script.display()
            ),
        ]),
        LIMIT,
    );
    assert!(reg.status.success(), "{}", reg.describe());
    assert!(
        reg.stdout_str().contains("-F ") && reg.stdout_str().trim_end().ends_with("subhost-launch"),
        "{}",
        reg.describe()
    );

    let cmds = bash_complete(&script, &["subhost-launch", "st"]);
    assert!(cmds.contains(&"start".to_owned()), "{cmds:?}");
    assert!(cmds.contains(&"stop".to_owned()), "{cmds:?}");
    assert!(!cmds.contains(&"man".to_owned()), "{cmds:?}");
    let opts = bash_complete(&script, &["subhost-launch", "--subh"]);
    assert_eq!(opts, ["--subhost-dir"]);
    // Past a subcommand (broken upstream for hyphenated names).
    let start = bash_complete(&script, &["subhost-launch", "start", "--dr"]);
    assert_eq!(start, ["--dry-run"]);
    let shells = bash_complete(&script, &["subhost-launch", "completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.contains(&shell.to_owned()), "{shells:?}");
    }
}

#[test]
fn zsh_and_fish_completions() {
    let zsh = launch(&["completions", "zsh"]);
    assert!(zsh.status.success(), "{}", zsh.describe());
    assert!(
        zsh.stdout_str().starts_with("#compdef subhost-launch"),
        "{}",
        zsh.describe()
    );
    let fish = launch(&["completions", "fish"]);
    assert!(fish.status.success(), "{}", fish.describe());
    let text = fish.stdout_str();
    assert!(text.contains("complete -c subhost-launch"), "{text}");
    assert!(text.contains("subhost-dir"), "{text}");
    for cmd in listed_commands() {
        assert!(
            zsh.stdout_str().contains(&format!("'{cmd}:")),
            "zsh lacks {cmd}"
        );
        assert!(text.contains(&format!("-a \"{cmd}\"")), "fish lacks {cmd}");
    }
}

#[test]
fn completions_for_an_unknown_shell_fail_clearly() {
    let out = launch(&["completions", "tcsh"]);
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(out.stdout.is_empty(), "{}", out.describe());
    assert!(
        out.stderr_str().contains("possible values"),
        "{}",
        out.describe()
    );
    assert!(out.stderr_str().contains("bash"), "{}", out.describe());
}

// ---- man page -------------------------------------------------------------

fn man_page() -> Vec<u8> {
    let out = launch(&["man"]);
    assert!(out.status.success(), "{}", out.describe());
    assert!(out.stderr.is_empty(), "{}", out.describe());
    out.stdout
}

#[test]
fn man_page_renders_without_warnings() {
    assert!(
        have("groff"),
        "groff is needed (package groff-base): run tests/setup"
    );
    let page = man_page();
    let out = run_input(
        Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]),
        page,
        LIMIT,
    );
    assert!(out.status.success(), "{}", out.describe());
    assert!(out.stderr.is_empty(), "groff warnings:\n{}", out.describe());
}

#[test]
fn man_page_documents_every_command() {
    let page = man_page();
    let roff = String::from_utf8(page.clone()).expect("man page is UTF-8");
    assert!(
        roff.starts_with(".TH SUBHOST-LAUNCH 8 "),
        "{}",
        &roff[..80.min(roff.len())]
    );

    let out = if have("man") {
        run_input(
            Command::new("man")
                .args(["-l", "-"])
                .env("MANWIDTH", "100")
                .env("MANPAGER", "cat")
                .env("PAGER", "cat"),
            page,
            LIMIT,
        )
    } else {
        assert!(have("groff"), "man or groff is needed: run tests/setup");
        run_input(
            Command::new("groff").args(["-man", "-Tutf8", "-P-cbou"]),
            page,
            LIMIT,
        )
    };
    assert!(out.status.success(), "{}", out.describe());
    let text = out.stdout_str();
    for heading in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "FILES",
    ] {
        assert!(
            text.lines().any(|l| l == heading),
            "no {heading} section in:\n{text}"
        );
    }
    let name_line = text
        .lines()
        .skip_while(|l| *l != "NAME")
        .nth(1)
        .unwrap_or_default();
    assert!(
        name_line.trim_start().starts_with("subhost-launch - "),
        "NAME line: {name_line:?}"
    );
    // A synopsis that wraps is justified: words may stand two spaces apart.
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for cmd in listed_commands() {
        let heading = format!("SUBHOST-LAUNCH {}", cmd.to_uppercase());
        assert!(
            text.lines().any(|l| l == heading),
            "no section {heading} in:\n{text}"
        );
        assert!(
            words.contains(&format!("subhost-launch {cmd}")),
            "no synopsis for {cmd}"
        );
    }
    assert!(text.contains("--subhost-dir"), "{text}");
    assert!(text.contains("/etc/subhost/autostart"), "{text}");
}

#[test]
fn generated_docs_on_a_closed_pipe_do_not_panic() {
    for args in ["man", "completions bash"] {
        let out = run_timeout(
            Command::new("sh").args([
                "-c",
                &format!("'{}' {args} | head -c 1 >/dev/null", launch_bin().display()),
            ]),
            LIMIT,
        );
        assert!(out.status.success(), "{}", out.describe());
        assert!(!out.stderr_str().contains("panic"), "{}", out.describe());
    }
}

// ---- shell scripts --------------------------------------------------------

#[test]
fn scripts_parse_as_posix_sh() {
    for script in scripts() {
        let meta = std::fs::metadata(&script).unwrap();
        assert!(
            meta.permissions().mode() & 0o111 != 0,
            "{script:?} not executable"
        );
        let out = run_timeout(Command::new("sh").arg("-n").arg(&script), LIMIT);
        assert!(out.status.success(), "sh -n {script:?}: {}", out.describe());
    }
}

#[test]
fn scripts_pass_shellcheck() {
    assert!(have("shellcheck"), "shellcheck is needed: run tests/setup");
    let out = run_timeout(
        Command::new("shellcheck")
            .args(["--shell=sh", "--severity=style"])
            .args(scripts()),
        LIMIT,
    );
    assert!(out.status.success(), "{}", out.describe());
}

/// A temp autostart list, a fake launcher that logs its arguments (one call
/// a line) and fails for the names in `fail`, and the env pointing the
/// scripts at them.
struct Fake {
    tmp: TempDir,
}

impl Fake {
    fn new(list: &str) -> Fake {
        let fake = Fake {
            tmp: TempDir::new(),
        };
        std::fs::write(fake.list(), list).unwrap();
        write_exec(
            &fake.path("launcher"),
            r#"#!/bin/sh
printf '%s\n' "$*" >>"$FAKE_LOG"
# Like the launcher: one outcome line per subhost, an error line and exit
# status 7 (here) for each that fails, the others still done.
verb=$1
rc=0
for a; do
    case $a in "$verb" | -*) continue ;; esac
    case " ${FAKE_FAIL:-} " in
        *" $a "*)
            echo "fake: $a failed" >&2
            rc=7
            continue
            ;;
    esac
    case $verb in
        start) echo "subhost $a: started (init PID 42), console: /dev/null" ;;
        stop) echo "subhost $a: stopped" ;;
    esac
done
[ $rc = 0 ] || exit $rc
if [ "$1" = status ]; then
    eval "name=\${$#}"
    case " ${FAKE_DOWN:-} " in
        *" $name "*) printf '{"name": "%s", "state": "stopped"}\n' "$name" ;;
        *) printf '{"name": "%s", "state": "running", "pid": 42}\n' "$name" ;;
    esac
fi
"#,
        );
        fake
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
    fn list(&self) -> PathBuf {
        self.path("autostart")
    }
    fn started(&self) -> PathBuf {
        self.path("run/autostart.started")
    }

    fn env(&self) -> HashMap<&'static str, PathBuf> {
        HashMap::from([
            ("AUTOSTART", self.list()),
            ("SUBHOST_LAUNCH", self.path("launcher")),
            ("STARTED", self.started()),
            ("FAKE_LOG", self.path("log")),
            ("SUBHOST", self.path("subhosts")),
        ])
    }

    /// Runs `program args` with the fake's env (`extra` on top) and returns
    /// its result and the launcher calls it made, clearing the log.
    fn run(
        &self,
        program: &Path,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> (Finished, Vec<String>) {
        let mut cmd = Command::new(program);
        cmd.args(args).envs(self.env());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = run_timeout(&mut cmd, LIMIT);
        assert!(!out.timed_out, "{}", out.describe());
        let log = std::fs::read_to_string(self.path("log")).unwrap_or_default();
        let _ = std::fs::remove_file(self.path("log"));
        (out, log.lines().map(str::to_owned).collect())
    }

    fn autostart(&self, args: &[&str], extra: &[(&str, &str)]) -> (Finished, Vec<String>) {
        self.run(&contrib().join("subhost-autostart"), args, extra)
    }
}

const LIST: &str = "# subhosts started at boot\n\nweb\n  db   # the database\n\t\ncache";

#[test]
fn autostart_starts_in_order_and_stops_in_reverse() {
    let fake = Fake::new(LIST);
    let (out, calls) = fake.autostart(&["start"], &[]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(calls, ["start --detach web db cache"]);
    assert_eq!(
        std::fs::read_to_string(fake.started()).unwrap(),
        "web\ndb\ncache\n"
    );

    let (out, calls) = fake.autostart(&["stop"], &[]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(calls, ["stop cache db web"]);
    assert!(!fake.started().exists(), "record left after a clean stop");

    let (out, calls) = fake.autostart(&["list"], &[]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.stdout_str(), "web\ndb\ncache\n");
    assert!(calls.is_empty(), "{calls:?}");
}

#[test]
fn autostart_failed_start_is_reported_and_others_still_start() {
    let fake = Fake::new(LIST);
    let (out, calls) = fake.autostart(&["start"], &[("FAKE_FAIL", "db")]);
    assert_eq!(out.code(), 1, "{}", out.describe());
    assert!(
        out.stderr_str().contains("db did not start (exit 7)"),
        "{}",
        out.describe()
    );
    assert_eq!(calls, ["start --detach web db cache"]);
    // Only what started is stopped.
    let (out, calls) = fake.autostart(&["stop"], &[]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(calls, ["stop cache web"]);
}

#[test]
fn autostart_failed_stop_is_reported_and_retried_alone() {
    let fake = Fake::new(LIST);
    let (out, _) = fake.autostart(&["start"], &[]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let (out, calls) = fake.autostart(&["stop"], &[("FAKE_FAIL", "db")]);
    assert_eq!(out.code(), 1, "{}", out.describe());
    assert!(
        out.stderr_str().contains("db did not stop"),
        "{}",
        out.describe()
    );
    assert_eq!(calls, ["stop cache db web"]);
    let (out, calls) = fake.autostart(&["stop"], &[]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(calls, ["stop db"]);
}

#[test]
fn autostart_stops_what_it_started_even_after_the_list_changed() {
    let fake = Fake::new("one\ntwo\n");
    let (out, _) = fake.autostart(&["start"], &[]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    std::fs::write(fake.list(), "two\nthree\n").unwrap();
    let (out, calls) = fake.autostart(&["stop"], &[]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(calls, ["stop two one"]);
    // Without a record (e.g. after a reboot), the list is used.
    let (out, calls) = fake.autostart(&["stop"], &[]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(calls, ["stop three two"]);
}

#[test]
fn autostart_bad_lines_are_named_and_skipped() {
    let fake = Fake::new("web\ntwo words\nBad!\n-x\nweb\ndb\n");
    let (out, calls) = fake.autostart(&["start"], &[]);
    assert_eq!(out.code(), 1, "{}", out.describe());
    assert_eq!(calls, ["start --detach web db"]);
    let err = out.stderr_str();
    let list = fake.list().display().to_string();
    assert!(
        err.contains(&format!("{list}:2: \"two words\" is 2 words")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{list}:3: \"Bad!\" is not a subhost name")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{list}:4: \"-x\" is not a subhost name")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{list}:5: web is listed again")),
        "{err}"
    );
}

#[test]
fn autostart_without_a_list_does_nothing() {
    let fake = Fake::new("");
    std::fs::remove_file(fake.list()).unwrap();
    for action in ["start", "stop"] {
        let (out, calls) = fake.autostart(&[action], &[]);
        assert_eq!(out.code(), 0, "{action}: {}", out.describe());
        assert!(calls.is_empty(), "{action}: {calls:?}");
    }
}

#[test]
fn autostart_usage_errors() {
    let fake = Fake::new(LIST);
    for args in [&[][..], &["begin"], &["generate"]] {
        let (out, calls) = fake.autostart(args, &[]);
        assert_eq!(out.code(), 2, "{args:?}: {}", out.describe());
        assert!(out.stderr_str().contains("usage:"), "{}", out.describe());
        assert!(calls.is_empty(), "{calls:?}");
    }
}

#[test]
fn autostart_status_follows_lsb() {
    let fake = Fake::new(LIST);
    let (out, calls) = fake.autostart(&["status"], &[]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(
        out.stdout_str(),
        "web: running\ndb: running\ncache: running\n"
    );
    assert_eq!(
        calls,
        [
            "status --json web",
            "status --json db",
            "status --json cache"
        ]
    );
    let (out, _) = fake.autostart(&["status"], &[("FAKE_DOWN", "db")]);
    assert_eq!(out.code(), 3, "{}", out.describe());
    assert!(
        out.stdout_str().contains("db: not running"),
        "{}",
        out.describe()
    );
    let (out, _) = fake.autostart(&["status"], &[("FAKE_FAIL", "cache")]);
    assert_eq!(out.code(), 4, "{}", out.describe());
    assert!(
        out.stdout_str().contains("cache: unknown"),
        "{}",
        out.describe()
    );
}

#[test]
fn sysvinit_script_reads_defaults_and_delegates() {
    let fake = Fake::new(LIST);
    // The defaults file wins over the environment, as at boot.
    std::fs::write(
        fake.path("default"),
        format!(
            "SUBHOST_AUTOSTART='{}'\nAUTOSTART='{}'\n",
            contrib().join("subhost-autostart").display(),
            fake.list().display()
        ),
    )
    .unwrap();
    let defaults = fake.path("default").display().to_string();
    let env = [
        ("DEFAULTS", defaults.as_str()),
        ("AUTOSTART", "/nonexistent/list"),
    ];
    let script = contrib().join("sysvinit/subhost");

    let (out, calls) = fake.run(&script, &["start"], &env);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(calls, ["start --detach web db cache"]);
    let (out, calls) = fake.run(&script, &["restart"], &env);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(calls, ["stop cache db web", "start --detach web db cache"]);
    let (out, _) = fake.run(
        &script,
        &["status"],
        &[env[0], env[1], ("FAKE_DOWN", "web")],
    );
    assert_eq!(out.code(), 3, "{}", out.describe());
    let (out, calls) = fake.run(
        &script,
        &["force-reload"],
        &[env[0], env[1], ("FAKE_FAIL", "db")],
    );
    assert_eq!(out.code(), 1, "{}", out.describe());
    assert_eq!(calls.len(), 2, "{calls:?}");
    // db failed to stop, so it stays recorded ahead of those started after.
    let (out, calls) = fake.run(&script, &["stop"], &env);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(calls, ["stop cache web db"]);
    let (out, calls) = fake.run(&script, &["reload"], &env);
    assert_eq!(out.code(), 2, "{}", out.describe());
    assert!(out.stderr_str().contains("usage:"), "{}", out.describe());
    assert!(calls.is_empty());
}

#[test]
fn sysvinit_script_without_the_helper_says_so() {
    let fake = Fake::new(LIST);
    std::fs::write(
        fake.path("default"),
        "SUBHOST_AUTOSTART=/nonexistent/helper\n",
    )
    .unwrap();
    let defaults = fake.path("default").display().to_string();
    let script = contrib().join("sysvinit/subhost");
    let (out, _) = fake.run(&script, &["start"], &[("DEFAULTS", &defaults)]);
    assert_eq!(out.code(), 5, "{}", out.describe());
    assert!(
        out.stderr_str().contains("/nonexistent/helper is missing"),
        "{}",
        out.describe()
    );
    let (out, _) = fake.run(&script, &["stop"], &[("DEFAULTS", &defaults)]);
    assert_eq!(out.code(), 0, "{}", out.describe());
}

#[test]
fn openrc_script_delegates_and_keeps_partial_starts_stoppable() {
    let fake = Fake::new(LIST);
    // openrc-run's helpers, stubbed: the script is sourced and its
    // functions called as openrc-run would.
    let program = format!(
        "ebegin() {{ echo \"ebegin $*\"; }}
         eend() {{ echo \"eend $1\"; return \"$1\"; }}
         ewarn() {{ echo \"ewarn $*\"; }}
         SUBHOST_AUTOSTART='{}'
         . '{}'
         depend() {{ :; }}
         \"$@\"",
        contrib().join("subhost-autostart").display(),
        contrib().join("openrc/subhost").display()
    );
    let sh = Path::new("/bin/sh");
    let (out, calls) = fake.run(sh, &["-c", &program, "sh", "start"], &[("FAKE_FAIL", "db")]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        out.stdout_str()
            .contains("ewarn some subhosts did not start"),
        "{}",
        out.describe()
    );
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (out, calls) = fake.run(sh, &["-c", &program, "sh", "stop"], &[]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(calls, ["stop cache web"]);
    assert!(out.stdout_str().contains("eend 0"), "{}", out.describe());
}

// ---- systemd ----------------------------------------------------------------

/// `Key=Value` lines by section, in order; panics on anything else that is
/// not blank or a comment.
fn parse_unit(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not Key=Value: {line}", n + 1));
        assert!(!section.is_empty(), "line {}: outside a section", n + 1);
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric()),
            "line {}: bad key {key:?}",
            n + 1
        );
        entries.push((section.clone(), key.to_owned(), value.to_owned()));
    }
    entries
}

fn unit_value<'a>(
    entries: &'a [(String, String, String)],
    section: &str,
    key: &str,
) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

#[test]
fn template_unit_runs_detached_start_and_stop() {
    let text = std::fs::read_to_string(contrib().join("systemd/subhost@.service")).unwrap();
    let unit = parse_unit(&text);
    let one = |section: &str, key: &str| {
        let v = unit_value(&unit, section, key);
        assert_eq!(v.len(), 1, "[{section}] {key}: {v:?}");
        v[0].to_owned()
    };
    // The init is the main process: its death fails the unit, which is
    // then restarted.
    assert_eq!(one("Service", "Type"), "notify");
    assert_eq!(one("Service", "NotifyAccess"), "main");
    assert_eq!(one("Service", "Restart"), "on-failure");
    assert_eq!(one("Service", "SuccessExitStatus"), "143");
    assert!(unit_value(&unit, "Service", "RemainAfterExit").is_empty());
    assert_eq!(
        one("Service", "ExecStart"),
        "subhost-launch start --detach %i"
    );
    assert_eq!(one("Service", "ExecStop"), "subhost-launch stop %i");
    assert_eq!(one("Service", "Environment"), "SUBHOST=/opt/subhost");
    assert_eq!(one("Service", "EnvironmentFile"), "-/etc/default/subhost");
    assert_eq!(one("Service", "Delegate"), "yes");
    assert_ne!(one("Service", "KillMode"), "control-group");
    let stop_secs: u32 = one("Service", "TimeoutStopSec").parse().unwrap();
    assert!(stop_secs >= 5 + 2 + 30, "TimeoutStopSec={stop_secs}");
    assert!(one("Unit", "After")
        .split_whitespace()
        .any(|u| u == "network.target"));
    assert_eq!(one("Install", "WantedBy"), "multi-user.target");
}

#[test]
fn autostart_unit_starts_and_stops_the_list_in_one_call_each() {
    let path = contrib().join("systemd/subhost-autostart.service");
    let text = std::fs::read_to_string(&path).unwrap();
    let unit = parse_unit(&text);
    let one = |section: &str, key: &str| {
        let v = unit_value(&unit, section, key);
        assert_eq!(v.len(), 1, "[{section}] {key}: {v:?}");
        v[0].to_owned()
    };
    assert_eq!(one("Service", "Type"), "oneshot");
    assert_eq!(one("Service", "RemainAfterExit"), "yes");
    assert_eq!(
        one("Service", "ExecStart"),
        "/usr/local/sbin/subhost-autostart start"
    );
    assert_eq!(
        one("Service", "ExecStop"),
        "/usr/local/sbin/subhost-autostart stop"
    );
    assert_eq!(one("Service", "Delegate"), "yes");
    assert_ne!(one("Service", "KillMode"), "control-group");
    assert_eq!(one("Install", "WantedBy"), "multi-user.target");
    if !have("systemd-analyze") {
        eprintln!("systemd-analyze not installed: covered by the parse check only");
        return;
    }
    // verify insists on finding the programs: point them at the real script.
    let tmp = TempDir::new();
    let script = contrib().join("subhost-autostart");
    let text = text.replace(
        "/usr/local/sbin/subhost-autostart",
        &script.display().to_string(),
    );
    std::fs::write(tmp.path().join("subhost-autostart.service"), text).unwrap();
    systemd_verify(tmp.path(), &["subhost-autostart.service"]);
}

/// `systemd-analyze verify` on `units` (paths in `dir`), with the launcher
/// named by absolute path as verify insists on finding it; empty stderr
/// required, since unknown keys and bad values are only warnings.
fn systemd_verify(dir: &Path, units: &[&str]) {
    let out = run_timeout(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(units.iter().map(|u| dir.join(u))),
        LIMIT,
    );
    assert!(out.status.success(), "{}", out.describe());
    assert!(out.stderr.is_empty(), "{}", out.describe());
}

fn install_template(dir: &Path) {
    let text = std::fs::read_to_string(contrib().join("systemd/subhost@.service")).unwrap();
    let launcher = launch_bin().display().to_string();
    let text = text.replace("=subhost-launch ", &format!("={launcher} "));
    std::fs::write(dir.join("subhost@.service"), text).unwrap();
}

#[test]
fn template_unit_passes_systemd_analyze() {
    assert!(
        have("systemd-analyze"),
        "systemd-analyze is needed: run tests/setup"
    );
    let tmp = TempDir::new();
    install_template(tmp.path());
    systemd_verify(tmp.path(), &["subhost@sht1.service"]);

    // The check itself catches a mistake.
    let broken = std::fs::read_to_string(tmp.path().join("subhost@.service"))
        .unwrap()
        .replace("Type=notify", "Type=notifyy");
    std::fs::write(tmp.path().join("subhost@.service"), broken).unwrap();
    let out = run_timeout(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(tmp.path().join("subhost@sht1.service")),
        LIMIT,
    );
    assert!(out.stderr_str().contains("notifyy"), "{}", out.describe());
}

#[test]
fn generator_enables_listed_subhosts_in_order() {
    let fake = Fake::new(LIST);
    let out_dir = fake.path("generated");
    let template = fake.path("units/subhost@.service");
    let (out, calls) = fake.run(
        &contrib().join("systemd/subhost-autostart-generator"),
        &[
            out_dir.to_str().unwrap(),
            fake.path("early").to_str().unwrap(),
            fake.path("late").to_str().unwrap(),
        ],
        &[
            (
                "SUBHOST_AUTOSTART",
                contrib().join("subhost-autostart").to_str().unwrap(),
            ),
            ("UNIT_TEMPLATE", template.to_str().unwrap()),
        ],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(
        calls.is_empty(),
        "a generator must not start anything: {calls:?}"
    );

    let wants = out_dir.join("multi-user.target.wants");
    let mut linked: Vec<String> = std::fs::read_dir(&wants)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    linked.sort();
    assert_eq!(
        linked,
        [
            "subhost@cache.service",
            "subhost@db.service",
            "subhost@web.service"
        ]
    );
    assert_eq!(
        std::fs::read_link(wants.join("subhost@web.service")).unwrap(),
        template
    );
    let order = |unit: &str| {
        std::fs::read_to_string(out_dir.join(format!("{unit}.d/autostart-order.conf"))).ok()
    };
    assert_eq!(order("subhost@web.service"), None);
    assert_eq!(
        order("subhost@db.service").as_deref(),
        Some("[Unit]\nAfter=subhost@web.service\n")
    );
    assert_eq!(
        order("subhost@cache.service").as_deref(),
        Some("[Unit]\nAfter=subhost@db.service\n")
    );

    assert!(
        have("systemd-analyze"),
        "systemd-analyze is needed: run tests/setup"
    );
    // The drop-ins load next to the template, as in a unit directory.
    install_template(&out_dir);
    systemd_verify(&out_dir, &["subhost@db.service", "subhost@cache.service"]);
}

/// The boot-time path for real: the autostart script with the real launcher
/// boots two subhosts detached, in order, and stops them again.
#[test]
fn autostart_boots_real_subhosts_and_stops_them() {
    let a = Subhost::busybox("aa", "");
    let b = Subhost::busybox("ab", "");
    // Both under one $SUBHOST: b lives in a's base dir.
    let b_dir = a.base().join(&b.name);
    std::fs::rename(b.dir(), &b_dir).unwrap();
    let state = TempDir::new();
    let list = state.path().join("autostart");
    std::fs::write(&list, format!("# boot order\n{}\n{}\n", a.name, b.name)).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/subhost-autostart");
    let run = |action: &str| {
        let mut c = cmd(&script, [action]);
        c.env("AUTOSTART", &list)
            .env("SUBHOST", a.base())
            .env("SUBHOST_LAUNCH", launch_bin())
            .env("STARTED", state.path().join("started"));
        run_timeout(&mut c, Duration::from_secs(60))
    };
    // Both subhosts are in `want` state, as `status` reads it from the kernel.
    let assert_state = |want: &str| {
        for name in [&a.name, &b.name] {
            let status = a.run(&["status", name.as_str()]);
            let line = format!("state:    {want}");
            assert!(status.stdout_str().contains(&line), "{}", status.describe());
        }
    };
    let out = run("start");
    assert!(out.status.success(), "{}", out.describe());
    assert_state("running");
    let out = run("status");
    assert_eq!(out.code(), 0, "{}", out.describe());
    let out = run("stop");
    assert!(out.status.success(), "{}", out.describe());
    assert_state("stopped");
    // b's own guard looks for it in its original base, where its directory
    // no longer is: stop it here too, in case the script did not.
    let out = a.run(&["stop", b.name.as_str()]);
    assert!(out.status.success(), "{}", out.describe());
}

/// A systemd booted by systemd-nspawn from the host's own /usr (volatile
/// root, a private network), with the template unit, the launcher and a
/// busybox subhost bound in; powered off on drop, killed if it hangs.
struct Booted {
    nspawn: Option<std::process::Child>,
    tmp: TempDir,
    name: String,
    /// The device cgroup the container runs in.
    devices: PathBuf,
}

impl Booted {
    fn new(name: &str) -> Booted {
        let tmp = TempDir::new();
        let base = tmp.path().join("subhost");
        let dir = base.join(name);
        busybox_root(&dir.join("root"));
        std::fs::write(dir.join("config"), "BOOT=(sleep 100000)\n").unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for b in [launch_bin(), init_bin()] {
            std::fs::copy(&b, bin.join(b.file_name().unwrap())).unwrap();
        }
        let text = std::fs::read_to_string(contrib().join("systemd/subhost@.service")).unwrap();
        let unit = tmp.path().join("subhost@.service");
        std::fs::write(
            &unit,
            text.replace("=subhost-launch ", "=/opt/shtbin/subhost-launch "),
        )
        .unwrap();
        let default = tmp.path().join("default");
        std::fs::write(&default, "SUBHOST=/opt/subhost\n").unwrap();
        let log = std::fs::File::create(tmp.path().join("boot.log")).unwrap();
        let bind = |flag: &str, from: &Path, to: &str| format!("{flag}={}:{to}", from.display());
        // The container runs in a device cgroup of the test's, restricted
        // as a container manager would: the devices hierarchy is read-only
        // inside, and the subhost stays under it (see `devices::inherited`).
        let devices = Path::new("/sys/fs/cgroup/devices").join(name);
        let mut enter = String::new();
        if devices.parent().is_some_and(Path::is_dir) {
            std::fs::create_dir(&devices).unwrap();
            let rules = [
                "c *:* m",
                "b *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
            ];
            std::fs::write(devices.join("devices.deny"), "a").unwrap();
            for r in rules {
                std::fs::write(devices.join("devices.allow"), r).unwrap();
            }
            enter = format!("echo $$ > {}/cgroup.procs && ", devices.display());
        }
        let child = spawn_group(
            Command::new("sh")
                .args(["-c", &format!("{enter}exec \"$@\""), "sh"])
                .args(["timeout", "300"])
                .args([
                    "systemd-nspawn",
                    "-D",
                    "/",
                    "--volatile=yes",
                    "--private-network",
                ])
                .args(["--register=no", "--keep-unit", "-M", name])
                .arg(bind("--bind", &base, "/opt/subhost"))
                .arg(bind("--bind-ro", &bin, "/opt/shtbin"))
                .arg(bind(
                    "--bind-ro",
                    &unit,
                    "/etc/systemd/system/subhost@.service",
                ))
                .arg(bind("--bind-ro", &default, "/etc/default/subhost"))
                .args(["-b", "systemd.firstboot=off"])
                .arg(format!("systemd.wants=subhost@{name}.service"))
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        Booted {
            nspawn: Some(child),
            tmp,
            name: name.to_string(),
            devices,
        }
    }

    fn boot_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("boot.log")).unwrap_or_default()
    }

    /// The container's PID 1 (systemd), the child of nspawn, which is the
    /// child of `timeout`.
    fn pid1(&self) -> Option<i32> {
        let timeout = self.nspawn.as_ref()?.id() as i32;
        let nspawn = children(timeout).into_iter().next()?;
        children(nspawn).into_iter().next()
    }

    /// `COMMAND` run in every namespace of the container.
    fn inside(&self, command: &[&str]) -> Finished {
        let pid = self.pid1().expect("the container runs").to_string();
        run_timeout(
            Command::new("nsenter")
                .args(["-t", &pid, "-a", "--"])
                .args(command),
            LIMIT,
        )
    }

    /// systemctl show -p PROP UNIT, the value.
    fn prop(&self, unit: &str, prop: &str) -> String {
        let out = self.inside(&["systemctl", "show", "-p", prop, "--value", unit]);
        out.stdout_str().trim().to_string()
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        let Some(child) = self.nspawn.take() else {
            return;
        };
        let pid1 = self.pid1();
        if pid1.is_some() {
            let _ = self.inside(&["systemctl", "poweroff"]);
        }
        // wait_timeout kills the group (timeout, nspawn) if it hangs.
        let out = wait_timeout(child, Duration::from_secs(60));
        if !out.status.success() {
            eprintln!("nspawn: {}\n{}", out.describe(), self.boot_log());
        }
        // A killed nspawn leaves its container running, re-parented: its
        // PID 1 (found by the unit it was booted for) killed takes every
        // process of its PID namespace along.
        let wants = format!("systemd.wants=subhost@{}.service", self.name);
        let left = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
                .filter(|p| {
                    let zombie = std::fs::read_to_string(format!("/proc/{p}/status"))
                        .map_or(true, |s| s.lines().any(|l| l.starts_with("State:\tZ")));
                    let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    !zombie && String::from_utf8_lossy(&cmd).contains(&wants)
                })
                .collect::<Vec<i32>>()
        };
        for p in left() {
            let _ = Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .status();
        }
        wait_until(Duration::from_secs(10), || left().is_empty());
        // nspawn (--keep-unit, from the root cgroup) makes `payload` in
        // each hierarchy and leaves it: its cgroups, and the test's device
        // cgroup, go bottom-up once their last process is gone (rmdir never
        // removes a populated one).
        let removed = || {
            let mut gone = true;
            for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
                let top = h.path().join("payload");
                if top.is_dir() {
                    let _ = Command::new("find")
                        .arg(&top)
                        .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                        .stderr(std::process::Stdio::null())
                        .status();
                    gone &= !top.exists();
                }
            }
            let _ = std::fs::remove_dir(&self.devices);
            gone && !self.devices.exists()
        };
        wait_until(Duration::from_secs(10), removed);
    }
}

/// The PIDs whose parent is `ppid`.
fn children(ppid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_string))
                })
                .and_then(|pp| pp.parse::<i32>().ok())
                == Some(ppid)
        })
        .collect()
}

#[test]
fn template_unit_under_systemd_restarts_a_killed_init_and_stops() {
    require_root();
    assert!(
        have("systemd-nspawn"),
        "systemd-nspawn is needed (package systemd-container): run tests/setup"
    );
    let name = unique_name("ns");
    let unit = format!("subhost@{name}.service");
    let booted = Booted::new(&name);
    let main_pid = |b: &Booted| b.prop(&unit, "MainPID").parse::<i32>().unwrap_or(0);
    let active = wait_until(Duration::from_secs(120), || {
        booted.pid1().is_some() && booted.prop(&unit, "ActiveState") == "active"
    });
    if !active {
        let journal = booted
            .inside(&["journalctl", "--no-pager", "-n", "60", "-u", &unit])
            .stdout_str();
        panic!(
            "{unit} did not become active:\n{}\n--- its journal:\n{journal}",
            booted.boot_log()
        );
    }
    // The unit's main process is the subhost's init, not the launcher.
    let first = main_pid(&booted);
    let comm = booted.inside(&["cat", &format!("/proc/{first}/comm")]);
    assert_eq!(
        comm.stdout_str().trim(),
        "subhost-init",
        "{}",
        comm.describe()
    );
    assert_eq!(booted.prop(&unit, "SubState"), "running");

    let out = booted.inside(&["kill", "-KILL", &first.to_string()]);
    assert!(out.status.success(), "{}", out.describe());
    let again = wait_until(Duration::from_secs(60), || {
        let pid = main_pid(&booted);
        pid != 0 && pid != first && booted.prop(&unit, "ActiveState") == "active"
    });
    let journal = || {
        booted
            .inside(&["journalctl", "-u", &unit, "--no-pager"])
            .stdout_str()
    };
    assert!(
        again,
        "not restarted after its init was killed:\n{}",
        journal()
    );
    assert_eq!(booted.prop(&unit, "NRestarts"), "1");
    let second = main_pid(&booted);
    let comm = booted.inside(&["cat", &format!("/proc/{second}/comm")]);
    assert_eq!(comm.stdout_str().trim(), "subhost-init");

    let out = booted.inside(&["timeout", "60", "systemctl", "stop", &unit]);
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(
        booted.prop(&unit, "ActiveState"),
        "inactive",
        "{}",
        journal()
    );
    // A stop by the launcher itself is a clean exit too: not restarted.
    let out = booted.inside(&["timeout", "60", "systemctl", "start", &unit]);
    assert!(out.status.success(), "{}", out.describe());
    let restarts = booted.prop(&unit, "NRestarts");
    let out = booted.inside(&[
        "env",
        "SUBHOST=/opt/subhost",
        "timeout",
        "60",
        "/opt/shtbin/subhost-launch",
        "stop",
        &name,
    ]);
    assert!(out.status.success(), "{}", out.describe());
    let settled = wait_until(Duration::from_secs(10), || {
        booted.prop(&unit, "ActiveState") == "inactive"
    });
    assert!(settled, "{}", journal());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        booted.prop(&unit, "ActiveState"),
        "inactive",
        "{}",
        journal()
    );
    assert_eq!(booted.prop(&unit, "NRestarts"), restarts, "{}", journal());
    let left = booted.inside(&[
        "sh",
        "-c",
        &format!(
            "ls /run/subhost; ip netns list; grep -c /opt/subhost/{name}/live /proc/self/mountinfo"
        ),
    ]);
    let text = left.stdout_str();
    assert!(!text.contains(&name), "left inside after stop:\n{text}");
    assert!(
        text.trim_end().ends_with('0'),
        "live still mounted:\n{text}"
    );
}
