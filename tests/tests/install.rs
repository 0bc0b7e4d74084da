//! README's first block, as written: `./install` into a temp PREFIX, then
//! the one line that creates a subhost over the host's `/` and starts a
//! shell in it (fed its commands on stdin, not a terminal).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use subhost_tests::*;

const LIMIT: Duration = Duration::from_secs(120);

fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The commands of README's first ```sh block, comments stripped.
fn first_block() -> Vec<String> {
    let readme = std::fs::read_to_string(top().join("README.md")).unwrap();
    let start = readme.find("```sh\n").expect("README has a sh block") + "```sh\n".len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end]
        .lines()
        .map(|l| match l.find("  #") {
            Some(i) => l[..i].trim().to_string(),
            None => l.trim().to_string(),
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// Stops the subhost through the installed launcher on drop.
struct Stopper {
    launch: PathBuf,
    base: PathBuf,
    name: String,
}

impl Drop for Stopper {
    fn drop(&mut self) {
        let _ = run_timeout(
            Command::new(&self.launch)
                .env("SUBHOST", &self.base)
                .args(["stop", &self.name]),
            LIMIT,
        );
        for ext in ["lock", "init", "cgroup", "console"] {
            let _ = std::fs::remove_file(format!("/run/subhost/{}.{ext}", self.name));
        }
    }
}

#[test]
fn readme_first_block_installs_and_opens_a_shell_in_a_subhost_over_slash() {
    require_root();
    let block = first_block();
    assert_eq!(block.len(), 2, "two commands: {block:?}");
    assert_eq!(block[0], "./install", "{block:?}");

    let prefix = TempDir::new();
    let out = run_timeout(
        Command::new(top().join("install"))
            .arg(prefix.path())
            .env("SUBHOST_BIN_DIR", bin_dir()),
        LIMIT,
    );
    assert!(out.status.success(), "{}", out.describe());
    let p = prefix.path();
    for f in [
        "sbin/subhost-launch",
        "sbin/subhost-init",
        "share/man/man8/subhost-launch.8",
        "share/bash-completion/completions/subhost-launch",
        "share/zsh/site-functions/_subhost-launch",
        "share/fish/vendor_completions.d/subhost-launch.fish",
    ] {
        let meta = std::fs::metadata(p.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.len() > 0, "{f} is empty");
    }
    let man = std::fs::read_to_string(p.join("share/man/man8/subhost-launch.8")).unwrap();
    assert!(man.contains(".TH"), "not a man page");

    // The second line, for a subhost of this test's own.
    let base = TempDir::new();
    let name = unique_name("rd");
    let line = block[1].replace("future", &name);
    assert_ne!(line, block[1], "the block names its subhost `future`");
    let sbin = p.join("sbin");
    let path = format!("{}:{}", sbin.display(), std::env::var("PATH").unwrap());
    let _stop = Stopper {
        launch: sbin.join("subhost-launch"),
        base: base.path().to_path_buf(),
        name: name.clone(),
    };
    let out = run_input(
        Command::new("sh")
            .args(["-c", &line])
            .env("PATH", &path)
            .env("SUBHOST", base.path()),
        b"echo \"inside $(hostname) $(test -d /usr/bin && echo with-host-files)\"; echo note > /root/readme-note; exit\n"
            .to_vec(),
        LIMIT,
    );
    assert!(out.status.success(), "{line}: {}", out.describe());
    assert!(
        out.stdout_str()
            .contains(&format!("inside {name} with-host-files")),
        "{}",
        out.describe()
    );
    // What the shell wrote stayed in the subhost's root, not the host's.
    assert!(base
        .path()
        .join(&name)
        .join("root/root/readme-note")
        .exists());
    assert!(!Path::new("/root/readme-note").exists());

    // start of a missing subhost names the create command to run.
    let other = unique_name("rd");
    let out = run_timeout(
        Command::new(sbin.join("subhost-launch"))
            .env("SUBHOST", base.path())
            .args(["start", &other]),
        LIMIT,
    );
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr_str()
            .contains(&format!("`subhost-launch create {other} --lower /`")),
        "{}",
        out.describe()
    );
}
