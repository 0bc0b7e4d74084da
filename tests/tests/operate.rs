//! The operator's path end to end, as one story: `create` two subhosts on a
//! test bridge, boot one with a web service detached, reach it from inside
//! and over the cable, see both in `list --json`, and stop them (HALT before
//! SIGTERM) until `list` says stopped.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use subhost_tests::json::parse_json;
use subhost_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

struct Host<'a> {
    base: &'a Path,
    name: String,
}

impl Host<'_> {
    fn launch(&self, args: &[&str]) -> Finished {
        let mut c = Command::new(launch_bin());
        c.env("SUBHOST", self.base).args(args);
        run_timeout(&mut c, LIMIT)
    }
    fn root(&self) -> std::path::PathBuf {
        self.base.join(&self.name).join("root")
    }
}

impl Drop for Host<'_> {
    fn drop(&mut self) {
        let out = self.launch(&["stop", &self.name]);
        if !out.status.success() {
            eprintln!("cleanup: {}", out.describe());
        }
    }
}

fn ok(out: Finished) -> String {
    assert!(out.status.success(), "{}", out.describe());
    out.stdout_str()
}

/// `state` and `host:bridge` of each cable of subhost `name` in `list --json`.
fn listed(base: &Path, name: &str) -> String {
    let mut c = Command::new(launch_bin());
    c.env("SUBHOST", base).args(["list", "--json"]);
    let all = parse_json(&ok(run_timeout(&mut c, LIMIT)));
    let me = all
        .arr()
        .iter()
        .find(|s| s.get("name").str() == name)
        .unwrap_or_else(|| panic!("{name} not listed: {all:?}"));
    let cables: Vec<String> = me
        .get("cables")
        .arr()
        .iter()
        .map(|c| format!("{}:{}", c.get("host").str(), c.get("bridge").str()))
        .collect();
    format!("{} {}", me.get("state").str(), cables.join(" "))
}

#[test]
fn create_boot_serve_list_and_stop() {
    require_root();
    let tmp = TempDir::new();
    let br = Bridge::new();
    let a = Host {
        base: tmp.path(),
        name: unique_name("oa"),
    };
    let b = Host {
        base: tmp.path(),
        name: unique_name("ob"),
    };
    for h in [&a, &b] {
        let mut args = vec!["create", &h.name, "--bridge", &br.name];
        args.extend_from_slice(mode_create_args());
        ok(h.launch(&args));
        busybox_root(&h.root());
        assert_eq!(
            listed(tmp.path(), &h.name),
            format!("stopped {}0:{}", h.name, br.name)
        );
    }
    std::fs::create_dir_all(a.root().join("www")).unwrap();
    std::fs::write(a.root().join("www/index.html"), "served from a\n").unwrap();
    let config = a.base.join(&a.name).join("config");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "BOOT=(sh -c 'ip addr add 10.213.11.1/24 dev eth0; httpd -p 8080 -h /www; \
         (trap \"echo term >> /order; exit 0\" TERM; while :; do sleep 0.1; done) &')\n\
         HALT=(sh -c 'echo halt >> /order')\n",
    );
    std::fs::write(&config, text).unwrap();
    let config = b.base.join(&b.name).join("config");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("BOOT=(ip addr add 10.213.11.2/24 dev eth0)\n");
    std::fs::write(&config, text).unwrap();

    ok(a.launch(&["start", "--detach", &a.name]));
    ok(b.launch(&["start", "--detach", &b.name]));

    let page = |h: &Host, url: &str| -> String {
        let url = url.to_string();
        let mut last = String::new();
        // BOOT runs after start returns: give the service a moment.
        wait_until(Duration::from_secs(10), || {
            let out = h.launch(&[
                "enter", &h.name, "--", "timeout", "5", "wget", "-q", "-O", "-", &url,
            ]);
            last = out.stdout_str();
            out.status.success()
        });
        last
    };
    assert_eq!(page(&a, "http://127.0.0.1:8080/"), "served from a\n");
    assert_eq!(page(&b, "http://10.213.11.1:8080/"), "served from a\n");

    for h in [&a, &b] {
        assert_eq!(
            listed(tmp.path(), &h.name),
            format!("running {}0:{}", h.name, br.name)
        );
    }

    ok(a.launch(&["stop", &a.name]));
    let order = std::fs::read_to_string(a.root().join("order")).unwrap();
    assert_eq!(
        order, "halt\nterm\n",
        "HALT must run before the services get SIGTERM"
    );
    assert_eq!(
        listed(tmp.path(), &a.name),
        format!("stopped {}0:{}", a.name, br.name)
    );
    ok(b.launch(&["stop", &b.name]));
    assert_eq!(
        listed(tmp.path(), &b.name),
        format!("stopped {}0:{}", b.name, br.name)
    );
}

/// Root inside a privileged subhost is the host's root: a setuid copy of
/// `id` it leaves in its root runs as host root for any host user who can
/// reach the file. `create` makes the subhost's directory 0700 (with
/// `--userns`, 0710 and the group of the namespace's root, which must get
/// through) so that none can; opened up, the same file is shown to give a
/// host user the file owner's euid: host root, or with USERNS the range's
/// root.
#[test]
fn a_setuid_file_made_inside_runs_for_no_host_user() {
    use std::os::unix::fs::MetadataExt;
    require_root();
    // The host's id, which the host then runs: busybox's would not answer
    // to the name the copy gets.
    let base = ScratchBase::with_programs(&["/usr/bin/id"]);
    let lower = base.path().to_string_lossy().into_owned();
    let tmp = TempDir::new();
    let h = Host {
        base: tmp.path(),
        name: unique_name("suid"),
    };
    let mut args = vec!["create", &h.name, "--lower", &lower];
    args.extend(mode_create_args());
    ok(h.launch(&args));
    let dir = tmp.path().join(&h.name);
    let meta = std::fs::metadata(&dir).unwrap();
    // The owner the file gets on the host, and the directory it sits in.
    let owner = if userns_mode() {
        let record = std::fs::read_to_string(dir.join("userns")).unwrap();
        let base: u32 = record.trim().split(':').next().unwrap().parse().unwrap();
        assert_eq!(
            (meta.mode() & 0o777, meta.uid(), meta.gid()),
            (0o710, 0, base)
        );
        base
    } else {
        assert_eq!((meta.mode() & 0o777, meta.uid(), meta.gid()), (0o700, 0, 0));
        0
    };
    ok(h.launch(&[
        "start",
        &h.name,
        "--",
        "sh",
        "-c",
        "cp /usr/bin/id /tmp/suid-id && chmod 4755 /tmp/suid-id",
    ]));
    let file = h.root().join("tmp/suid-id");
    let as_nobody = || {
        let mut c = Command::new("setpriv");
        // Through a shell: setpriv itself finds its program as root.
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["sh", "-c", "exec \"$0\" -u"])
            .arg(&file);
        run_timeout(&mut c, LIMIT)
    };
    let out = as_nobody();
    assert!(
        !out.status.success() && out.stderr_str().contains("Permission denied"),
        "{}",
        out.describe()
    );
    // The directory opened up: the same file gives a host user its owner.
    let mode = meta.permissions().mode();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = as_nobody();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    assert_eq!(
        out.stdout_str().trim(),
        owner.to_string(),
        "{}",
        out.describe()
    );
}
