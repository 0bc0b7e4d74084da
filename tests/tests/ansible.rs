//! The `subhost.fleet` Ansible collection (`contrib/ansible`), driven by the
//! real `ansible-playbook` against real subhosts: the `subhost` module
//! through all its states, check and diff mode and bad input; the
//! connection plugin running modules inside a subhost, with and without
//! pipelining, moving binary files byte for byte; and the example playbook
//! over ssh, against an sshd this test starts on 127.0.0.1 with throwaway
//! keys. Scenarios are grouped into few playbook runs: each costs seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use subhost_tests::*;

/// How long one playbook run may take.
const PLAYBOOK_LIMIT: Duration = Duration::from_secs(300);

fn collection_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/ansible")
}

/// ansible-playbook with everything of Ansible's under a temp dir: the
/// collection, HOME, local and remote temp, ssh control sockets. Nothing
/// lands in the real ~/.ansible, nor bytecode in the source tree.
struct Ansible {
    tmp: TempDir,
}

impl Ansible {
    /// The collection is the source tree, symlinked as
    /// `ansible_collections/subhost/fleet`.
    fn new() -> Ansible {
        let a = Ansible::empty();
        let ns = a.collections().join("ansible_collections/subhost");
        std::fs::create_dir_all(&ns).unwrap();
        std::os::unix::fs::symlink(collection_dir().canonicalize().unwrap(), ns.join("fleet"))
            .unwrap();
        a
    }

    /// The collection as an operator gets it: `ansible-galaxy collection
    /// build`, then `install` of the tarball.
    fn built() -> Ansible {
        let a = Ansible::empty();
        let out = run_timeout(
            a.command("ansible-galaxy")
                .args(["collection", "build", "--output-path", "build"])
                .arg(collection_dir()),
            Duration::from_secs(120),
        );
        assert!(out.status.success(), "collection build: {}", out.describe());
        let out = run_timeout(
            a.command("ansible-galaxy")
                .args([
                    "collection",
                    "install",
                    "build/subhost-fleet-0.1.0.tar.gz",
                    "-p",
                ])
                .arg(a.collections()),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "collection install: {}",
            out.describe()
        );
        a
    }

    fn empty() -> Ansible {
        require_root();
        let a = Ansible {
            tmp: TempDir::new(),
        };
        for d in ["home", "local", "remote", "cp", "collections"] {
            std::fs::create_dir_all(a.path().join(d)).unwrap();
        }
        let found = run_timeout(
            a.command("ansible-playbook").arg("--version"),
            Duration::from_secs(60),
        );
        assert!(
            found.status.success(),
            "ansible-playbook is needed: run tests/setup\n{}",
            found.describe()
        );
        a
    }

    fn collections(&self) -> PathBuf {
        self.path().join("collections")
    }

    /// The installed collection.
    fn collection(&self) -> PathBuf {
        self.collections().join("ansible_collections/subhost/fleet")
    }

    /// PROGRAM with Ansible's environment pointed into the temp dir.
    fn command(&self, program: &str) -> Command {
        let p = self.path();
        let mut c = Command::new(program);
        c.env("HOME", p.join("home"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("ANSIBLE_HOME", p.join("home/.ansible"))
            .env("ANSIBLE_COLLECTIONS_PATH", p.join("collections"))
            .env("ANSIBLE_COLLECTIONS_PATHS", p.join("collections"))
            .env("ANSIBLE_LOCAL_TEMP", p.join("local"))
            .env("ANSIBLE_REMOTE_TEMP", p.join("remote"))
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", p.join("cp"))
            .env("ANSIBLE_NOCOWS", "1")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_PYTHON_INTERPRETER", "/usr/bin/python3")
            .env("PATH", path_with_launcher())
            .current_dir(p);
        c
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.path().join(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs PLAYBOOK against INVENTORY with EXTRA as `-e` JSON; panics with
    /// the whole output unless it succeeds with no failed host.
    fn play(&self, inventory: &Path, playbook: &Path, extra: &str) -> Finished {
        let mut c = self.command("ansible-playbook");
        c.arg("-i")
            .arg(inventory)
            .arg("-e")
            .arg(extra)
            .arg(playbook);
        let out = run_timeout(&mut c, PLAYBOOK_LIMIT);
        assert!(
            out.status.success() && !out.timed_out,
            "ansible-playbook {} failed: {}",
            playbook.display(),
            out.describe()
        );
        out
    }
}

/// PATH with the launcher under test first, so `subhost-launch` as a bare
/// name (the modules' default) is the one being tested.
fn path_with_launcher() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
    )
}

/// The PLAY RECAP line of HOST: `ok=N changed=N ...`.
fn recap(out: &Finished, host: &str) -> String {
    let text = out.stdout_str();
    let line = text
        .lines()
        .rev()
        .find(|l| l.split_whitespace().next() == Some(host))
        .unwrap_or_else(|| panic!("no recap for {host}: {}", out.describe()));
    line.to_string()
}

fn recap_count(out: &Finished, host: &str, what: &str) -> u32 {
    let line = recap(out, host);
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{what}=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {what}= in {line:?}"))
}

/// Subhosts the module makes under BASE; stopped on drop whatever a failed
/// test left, before the temp dir (and its mounts) goes.
struct Made {
    base: PathBuf,
    names: Vec<String>,
}

impl Drop for Made {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = run_timeout(
                Command::new(launch_bin())
                    .arg("--subhost-dir")
                    .arg(&self.base)
                    .args(["stop", name]),
                LAUNCH_LIMIT,
            );
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// The collection's Python unit tests: the config text the module writes
/// means exactly the given values to bash itself, and the name rule.
#[test]
fn module_unit_tests() {
    let ansible = Ansible::new();
    let out = run_timeout(
        ansible
            .command("/usr/bin/python3")
            .arg(
                ansible
                    .collection()
                    .join("tests/unit/plugins/modules/test_subhost.py"),
            )
            .arg("-v")
            .env("PYTHONPATH", ansible.collections()),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        out.stderr_str().contains("Ran 8 tests"),
        "{}",
        out.describe()
    );
}

const MODULE_PLAYBOOK: &str = r#"
- hosts: infra
  gather_facts: false
  module_defaults:
    subhost.fleet.subhost: {subhost_dir: "{{ base }}"}
    subhost.fleet.subhost_info: {subhost_dir: "{{ base }}"}
  vars:
    good: &good
      LOWER: "{{ lower }}"
      BRIDGES: ["{{ bridge }}"]
      STOP_TIMEOUT: 2
      # A list element with a quote, spaces and a $: quoted literally.
      BOOT: [/bin/echo, "it's up,", "$SUB", "(untouched)"]
    # Not in name order: the services start in the order given.
    services:
      SERVICE_tick: [/bin/sh, -c, "echo tick up; exec sleep 1000"]
      HEALTH_tick: [/bin/true]
      RESTART_tick: always
      SERVICE_alpha: [/bin/sh, -c, "echo alpha up; exec sleep 1000"]
      RESTART: "no"
      HEALTH_INTERVAL: 1
    services_swapped:
      SERVICE_alpha: [/bin/sh, -c, "echo alpha up; exec sleep 1000"]
      SERVICE_tick: [/bin/sh, -c, "echo tick up; exec sleep 1000"]
      HEALTH_tick: [/bin/true]
      RESTART_tick: always
      RESTART: "no"
      HEALTH_INTERVAL: 1
    net: &net
      LOWER: "{{ lower }}"
      BRIDGES: ["{{ bridge }}"]
      ADDRESS: [10.0.0.5/24, fd00::5/64]
      GATEWAY: 10.0.0.1
      GATEWAY6: fd00::1
      PUBLISH: [tcp:8080:80, "tcp:[::]:8443:443"]
  tasks:
    # Bad input: refused before anything changes on the host.
    - name: unknown key
      subhost.fleet.subhost: {name: "{{ name }}", config: {LOWER: "{{ lower }}", NO_SUCH_KEY: x}}
      register: bad_key
      ignore_errors: true
    - name: a list for a single-value key
      subhost.fleet.subhost: {name: "{{ name }}", config: {LOWER: ["{{ lower }}", /usr]}}
      register: bad_list
      ignore_errors: true
    - name: an invalid name
      subhost.fleet.subhost: {name: "../{{ name }}", state: started}
      register: bad_name
      ignore_errors: true
    - name: a missing bridge (only the real start finds it)
      subhost.fleet.subhost:
        name: "{{ name }}"
        state: started
        config: {LOWER: "{{ lower }}", BRIDGES: ["{{ missing_bridge }}"]}
      register: bad_bridge
      ignore_errors: true
    - stat: {path: "{{ base }}/{{ name }}"}
      register: after_bad
    - assert:
        that:
          - bad_key is failed and 'unknown key NO_SUCH_KEY' in bad_key.msg
          - (base ~ '/' ~ name ~ '/config:') in bad_key.msg
          - bad_list is failed and 'LOWER: takes a single value, not an array' in bad_list.msg
          - bad_name is failed and 'invalid subhost name' in bad_name.msg
          - bad_bridge is failed and ('bridge ' ~ missing_bridge ~ ' does not exist') in bad_bridge.msg
          - not after_bad.stat.exists

    - name: present, with a config
      subhost.fleet.subhost: {name: "{{ name }}", config: *good}
      register: present1
    - name: present again
      subhost.fleet.subhost: {name: "{{ name }}", config: *good}
      register: present2
    - name: started, in check mode
      subhost.fleet.subhost: {name: "{{ name }}", state: started, config: *good}
      check_mode: true
      register: started_check
    - subhost.fleet.subhost_info: {name: "{{ name }}"}
      register: info_check
    - name: started
      subhost.fleet.subhost: {name: "{{ name }}", state: started, config: *good}
      register: started1
    - name: started again
      subhost.fleet.subhost: {name: "{{ name }}", state: started, config: *good}
      register: started2
    - assert:
        that:
          - present1 is changed and present1.subhost.state == 'stopped'
          - present1.actions == ['create', 'write config']
          - present2 is not changed
          - started_check is changed and started_check.actions == ['start --detach']
          - info_check.subhosts | length == 1 and info_check.subhosts[0].state == 'stopped'
          - started1 is changed and started1.subhost.state == 'running'
          - started1.subhost.cables[0].bridge == bridge and started1.subhost.cables[0].present
          - started2 is not changed and started2.subhost.pid == started1.subhost.pid
    - name: BOOT ran with its words intact
      command: cat {{ base }}/{{ name }}/console.log
      register: console
      until: "'untouched' in console.stdout"
      retries: 50
      delay: 0.1
      changed_when: false
    - assert:
        that: ["\"it's up, $SUB (untouched)\" in console.stdout"]

    - name: a config change, in check and diff mode
      subhost.fleet.subhost:
        name: "{{ name }}"
        state: started
        config: "{{ good | combine({'HOSTNAME': 'changed-1'}) }}"
      check_mode: true
      diff: true
      register: change_check
    - slurp: {src: "{{ base }}/{{ name }}/config"}
      register: config_after_check
    - subhost.fleet.subhost_info: {name: "{{ name }}"}
      register: info_after_check
    - assert:
        that:
          - change_check is changed and change_check.config_changed
          - "'HOSTNAME' not in change_check.diff.before and \"HOSTNAME='changed-1'\" in change_check.diff.after"
          - (config_after_check.content | b64decode) == change_check.diff.before
          - info_after_check.subhosts[0].pid == started1.subhost.pid

    - name: a config change restarts it
      subhost.fleet.subhost:
        name: "{{ name }}"
        state: started
        config: "{{ good | combine({'HOSTNAME': 'changed-1'}) }}"
      register: change
    - name: inside, the new hostname
      command: "{{ launcher }} --subhost-dir {{ base }} enter {{ name }} -- hostname"
      register: hostname
      changed_when: false
    - name: with restart=false a change is only written and reported
      subhost.fleet.subhost:
        name: "{{ name }}"
        state: present
        restart: false
        config: "{{ good | combine({'HOSTNAME': 'changed-2'}) }}"
      register: no_restart
    - slurp: {src: "{{ base }}/{{ name }}/config"}
      register: config_before_bad_change
    - name: a change whose start fails is undone
      subhost.fleet.subhost:
        name: "{{ name }}"
        state: started
        config: "{{ good | combine({'BRIDGES': [missing_bridge]}) }}"
      register: bad_change
      ignore_errors: true
    - slurp: {src: "{{ base }}/{{ name }}/config"}
      register: config_after_bad_change
    - subhost.fleet.subhost_info: {name: "{{ name }}"}
      register: info_after_bad_change
    - assert:
        that:
          - bad_change is failed and ('bridge ' ~ missing_bridge ~ ' does not exist') in bad_change.msg
          - "'previous config was put back' in bad_change.msg"
          - config_after_bad_change.content == config_before_bad_change.content
          - info_after_bad_change.subhosts[0].state == 'running'
          - info_after_bad_change.subhosts[0].cables[0].bridge == bridge
    - assert:
        that:
          - change is changed and change.actions == ['stop', 'write config', 'start --detach']
          - change.subhost.state == 'running' and change.subhost.pid != started1.subhost.pid
          - hostname.stdout == 'changed-1'
          - no_restart is changed and no_restart.restart_needed
          - no_restart.subhost.pid == change.subhost.pid

    - subhost.fleet.subhost_info:
      register: all_info
    - name: stopped
      subhost.fleet.subhost: {name: "{{ name }}", state: stopped}
      register: stopped1
    - name: stopped again
      subhost.fleet.subhost: {name: "{{ name }}", state: stopped}
      register: stopped2
    - name: a foreground session leaves it hibernating
      command: "{{ launcher }} --subhost-dir {{ base }} start {{ name }} -- /bin/true"
    - subhost.fleet.subhost_info: {name: "{{ name }}"}
      register: info_hibernating
    - name: started wakes a hibernating subhost detached
      subhost.fleet.subhost: {name: "{{ name }}", state: started}
      register: woken
    - name: supervised services, in check and diff mode
      subhost.fleet.subhost: &services
        name: "{{ name }}"
        state: started
        config: "{{ good | combine(services) }}"
      check_mode: true
      diff: true
      register: services_check
    - name: supervised services
      subhost.fleet.subhost: *services
      register: services1
    - name: supervised services again
      subhost.fleet.subhost: *services
      register: services2
    - name: the services run and tick passes its check
      subhost.fleet.subhost_info: {name: "{{ name }}"}
      register: services_info
      until: >-
        services_info.subhosts[0].services | selectattr('name', 'equalto', 'tick')
        | map(attribute='health') | list == ['ok']
        and services_info.subhosts[0].services | map(attribute='state') | list == ['running', 'running']
      retries: 50
      delay: 0.2
    - name: the same services in another order, in check and diff mode
      subhost.fleet.subhost:
        name: "{{ name }}"
        state: started
        config: "{{ good | combine(services_swapped) }}"
      check_mode: true
      diff: true
      register: services_swapped_check
    - name: a bad restart policy is refused at its line
      subhost.fleet.subhost:
        name: "{{ name }}"
        state: started
        config: "{{ good | combine({'SERVICE_tick': ['/bin/true'], 'RESTART_tick': 'sometimes'}) }}"
      register: services_bad
      ignore_errors: true
    - assert:
        that:
          - services_check is changed and "SERVICE_tick=('/bin/sh' '-c' 'echo tick up; exec sleep 1000')" in services_check.diff.after
          - services_check.subhost.services == []
          - services1 is changed and services1.actions == ['stop', 'write config', 'start --detach']
          - services2 is not changed
          - services_info.subhosts[0].services | map(attribute='name') | list == ['tick', 'alpha']
          # Started in that order: tick forked first, so its pid is lower.
          - services_info.subhosts[0].services[0].pid < services_info.subhosts[0].services[1].pid
          - services_info.subhosts[0].services[0].restarts == 0
          - services_swapped_check is changed and services_swapped_check.actions == ['stop', 'write config', 'start --detach']
          - services_swapped_check.diff.after.index('SERVICE_alpha=') < services_swapped_check.diff.after.index('SERVICE_tick=')
          - services_swapped_check.diff.before.index('SERVICE_tick=') < services_swapped_check.diff.before.index('SERVICE_alpha=')
          - services_bad is failed and '"sometimes" is not a restart policy' in services_bad.msg
    - name: absent, in check mode
      subhost.fleet.subhost: {name: "{{ name }}", state: absent}
      check_mode: true
      register: absent_check
    - stat: {path: "{{ base }}/{{ name }}/config"}
      register: still_there
    - name: absent
      subhost.fleet.subhost: {name: "{{ name }}", state: absent}
      register: absent1
    - name: absent again
      subhost.fleet.subhost: {name: "{{ name }}", state: absent}
      register: absent2
    - stat: {path: "{{ base }}/{{ name }}"}
      register: gone
    - assert:
        that:
          - all_info.subhosts | map(attribute='name') | list == [name]
          - stopped1 is changed and stopped1.subhost.state == 'stopped'
          - stopped2 is not changed
          - absent_check is changed and still_there.stat.exists
          - info_hibernating.subhosts[0].state == 'hibernating'
          - woken is changed and woken.actions == ['start --detach'] and woken.subhost.state == 'running'
          - absent1 is changed and absent1.subhost == {} and absent1.actions[0] == 'stop'
          - absent2 is not changed
          - not gone.stat.exists

    # The network keys are keys as any other: written once, then left
    # alone; check and diff mode change nothing. Never started here: its
    # rules would land in the real host's nftables.
    - name: addresses and published ports, in check and diff mode
      subhost.fleet.subhost: {name: "{{ name }}", config: *net}
      check_mode: true
      diff: true
      register: net_check
    - stat: {path: "{{ base }}/{{ name }}"}
      register: net_check_stat
    - name: addresses and published ports
      subhost.fleet.subhost: {name: "{{ name }}", config: *net}
      register: net1
    - name: addresses and published ports again
      subhost.fleet.subhost: {name: "{{ name }}", config: *net}
      diff: true
      register: net2
    - name: absent, with its network keys
      subhost.fleet.subhost: {name: "{{ name }}", state: absent}
    - assert:
        that:
          - net_check is changed and not net_check_stat.stat.exists
          - "\"PUBLISH=('tcp:8080:80' 'tcp:[::]:8443:443')\" in net_check.diff.after"
          - "\"GATEWAY6='fd00::1'\" in net_check.diff.after"
          - net1 is changed
          - net2 is not changed
"#;

/// The subhost module through every state, with check and diff mode,
/// idempotency, restarts on config change, and bad input refused before
/// anything changes.
#[test]
fn module_manages_a_subhost_through_its_states() {
    let ansible = Ansible::new();
    let bridge = Bridge::new();
    let lower = ScratchBase::new();
    let base = ansible.path().join("subhosts");
    let name = unique_name("anm");
    let _made = Made {
        base: base.clone(),
        names: vec![name.clone()],
    };
    let inventory = ansible.write(
        "inventory.yml",
        "infra:\n  hosts:\n    localhost:\n      ansible_connection: local\n",
    );
    let playbook = ansible.write("module.yml", MODULE_PLAYBOOK);
    let extra = format!(
        r#"{{"base": "{}", "name": "{name}", "bridge": "{}", "missing_bridge": "{}", "launcher": "{}", "lower": "{}"}}"#,
        base.display(),
        bridge.name,
        unique_name("nob"),
        launch_bin().display(),
        lower.path().display(),
    );
    let out = ansible.play(&inventory, &playbook, &extra);
    assert_eq!(
        recap_count(&out, "localhost", "failed"),
        0,
        "{}",
        out.describe()
    );
    // The kernel agrees: nothing of the subhost is left.
    assert!(!base.join(&name).exists());
    assert!(!netns_exists(&name), "netns {name} left behind");
    assert!(
        !Path::new("/sys/class/net")
            .join(format!("{name}0"))
            .exists(),
        "cable {name}0 left behind"
    );
}

const CONNECTION_PLAYBOOK: &str = r#"
- hosts: subhosts
  gather_facts: false
  tasks:
    - command: hostname
      register: hostname
    - name: a binary file in, twice
      copy: {src: "{{ blob }}", dest: "/root/{{ inventory_hostname }}.bin", mode: "0600"}
      register: copy1
    - copy: {src: "{{ blob }}", dest: "/root/{{ inventory_hostname }}.bin", mode: "0600"}
      register: copy2
    - name: a name a shell would split
      copy: {content: "odd\n", dest: "/root/a b'c.txt"}
    - name: inside, the same bytes
      command: sha256sum "/root/{{ inventory_hostname }}.bin" "/root/a b'c.txt"
      register: sums
    - slurp: {src: "/root/a b'c.txt"}
      register: slurped
    - name: the binary file out
      fetch: {src: "/root/{{ inventory_hostname }}.bin", dest: "{{ fetched }}/{{ inventory_hostname }}.bin", flat: true}
    - ping:
    - name: a failing command
      command: sh -c 'echo out; echo err >&2; exit 3'
      register: failing
      ignore_errors: true
    - name: a raw command's status
      raw: exit 5
      register: raw
      ignore_errors: true
    - assert:
        that:
          - hostname.stdout == subhost
          - copy1 is changed and copy2 is not changed
          - sums.stdout_lines[0].split()[0] == blob_sha256
          - (slurped.content | b64decode) == "odd\n"
          - failing is failed and failing.rc == 3
          - failing.stdout == 'out' and failing.stderr == 'err'
          - raw is failed and raw.rc == 5

- hosts: gone
  gather_facts: false
  tasks:
    - command: "true"
      ignore_unreachable: true
      register: unreachable
    - assert:
        that:
          - unreachable is unreachable
          - "'is not running' in unreachable.msg or 'no subhost' in unreachable.msg"
"#;

fn sha256(path: &Path) -> String {
    let out = run_timeout(&mut cmd("sha256sum", [path]), Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.describe());
    out.stdout_str()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The connection plugin: modules inside a running subhost with and
/// without pipelining, files in and out byte for byte, exit statuses, and
/// an unreachable subhost reported as such.
#[test]
fn connection_plugin_runs_modules_inside() {
    let ansible = Ansible::new();
    // A scratch base with python3 and its standard library, for the
    // modules run inside; never the host's `/`.
    let lower = ScratchBase::with_python();
    let subhost = Subhost::new("anc", &format!("LOWER={}\n", lower.path().display()));
    let started = subhost.run(&["start", "--detach", &subhost.name]);
    assert!(started.status.success(), "{}", started.describe());

    // 5 MiB and a bit of every byte value, so no encoding or buffer
    // boundary can hide.
    let blob = ansible.path().join("blob.bin");
    let mut data: Vec<u8> = (0..=255u8).cycle().take(256 * 1024).collect();
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    let mut rnd = vec![0u8; 5 * 1024 * 1024 + 123];
    std::io::Read::read_exact(&mut f, &mut rnd).unwrap();
    data.extend_from_slice(&rnd);
    std::fs::write(&blob, &data).unwrap();
    let fetched = ansible.path().join("fetched");
    std::fs::create_dir_all(&fetched).unwrap();

    let gone = unique_name("ang");
    let inventory = ansible.write(
        "inventory.yml",
        &format!(
            "all:
  vars:
    ansible_connection: subhost.fleet.subhost
    subhost_dir: {base}
    subhost_launcher: {launcher}
  children:
    subhosts:
      hosts:
        piped: {{ansible_host: {name}, ansible_pipelining: true}}
        unpiped: {{ansible_host: {name}, ansible_pipelining: false}}
    gone:
      hosts:
        {gone}:
",
            base = subhost.base().display(),
            launcher = launch_bin().display(),
            name = subhost.name,
            gone = gone,
        ),
    );
    let playbook = ansible.write("connection.yml", CONNECTION_PLAYBOOK);
    let extra = format!(
        r#"{{"blob": "{}", "blob_sha256": "{}", "fetched": "{}", "subhost": "{}"}}"#,
        blob.display(),
        sha256(&blob),
        fetched.display(),
        subhost.name
    );
    let out = ansible.play(&inventory, &playbook, &extra);
    for host in ["piped", "unpiped"] {
        assert_eq!(recap_count(&out, host, "failed"), 0, "{}", out.describe());
        let back = std::fs::read(fetched.join(format!("{host}.bin"))).unwrap();
        assert!(
            back == data,
            "{host}: fetched file differs from the one copied in"
        );
    }
    // The unreachable subhost's own assertions ran.
    assert_eq!(recap_count(&out, &gone, "ok"), 2, "{}", out.describe());
}

/// The example of contrib/ansible, from the built and installed collection (two infrastructure hosts, subhosts
/// cabled to a bridge and started detached, then configured inside with
/// file, copy, template, service and command) as written, with one
/// infrastructure host this machine through the local connection and the
/// other this machine over ssh: the module runs over ssh, and the
/// connection plugin reaches the subhosts there through `subhost_host`.
/// A second run changes nothing.
#[test]
fn example_playbook_over_ssh_and_locally() {
    let ansible = Ansible::built();
    let sshd = Sshd::start(&ansible.path().join("ssh"));
    let bridge = Bridge::new();
    let (base1, base2) = (ansible.path().join("infra1"), ansible.path().join("infra2"));
    let (web1, web2) = (unique_name("ane"), unique_name("ane"));
    let _made = (
        Made {
            base: base1.clone(),
            names: vec![web1.clone()],
        },
        Made {
            base: base2.clone(),
            names: vec![web2.clone()],
        },
    );
    let cp = ansible.path().join("cp");
    // Declared after the subhosts: dropped first, so shared connections
    // close before the subhosts stop.
    struct Masters(PathBuf);
    impl Drop for Masters {
        fn drop(&mut self) {
            Sshd::close_masters(&self.0);
        }
    }
    let _masters = Masters(cp.clone());

    let inventory = ansible.write(
        "inventory.yml",
        &format!(
            "all:
  vars: {{fleet_bridge: {bridge}, fleet_base_build: {build}}}
  children:
    infra:
      vars: {{ansible_python_interpreter: /usr/bin/python3}}
      hosts:
        infra1: {{ansible_connection: local}}
        infra2:
          ansible_host: 127.0.0.1
          ansible_user: root
          ansible_port: {port}
          ansible_ssh_private_key_file: {ssh}/client
          ansible_ssh_common_args: -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no
    subhosts:
      vars:
        ansible_connection: subhost.fleet.subhost
        ansible_python_interpreter: /usr/bin/python3
        subhost_launcher: {launcher}
      children:
        on_infra1:
          vars: {{infra: infra1, subhost_dir: {base1}}}
          hosts: {{{web1}: }}
        on_infra2:
          vars:
            infra: infra2
            subhost_dir: {base2}
            subhost_host: root@127.0.0.1
            subhost_ssh_args: {ssh_args}
            subhost_ssh_control_path_dir: {cp}
          hosts: {{{web2}: }}
",
            bridge = bridge.name,
            build = ansible.path().join("fleet-base").display(),
            port = sshd.port,
            ssh = sshd.dir.display(),
            launcher = launch_bin().display(),
            base1 = base1.display(),
            base2 = base2.display(),
            ssh_args = sshd.ssh_args(),
            cp = cp.display(),
        ),
    );
    let site = ansible.collection().join("examples/site.yml");
    let first = ansible.play(&inventory, &site, "{}");
    for host in [&web1, &web2] {
        assert_eq!(
            recap_count(&first, host, "failed"),
            0,
            "{}",
            first.describe()
        );
        assert!(
            recap_count(&first, host, "changed") >= 6,
            "{}",
            first.describe()
        );
    }
    let log = sshd.log();
    assert!(
        log.contains("Accepted publickey for root"),
        "nothing came over ssh: {log}"
    );
    // Each subhost is where its inventory says, running, cabled.
    for (base, name) in [(&base1, &web1), (&base2, &web2)] {
        let out = run_timeout(
            Command::new(launch_bin())
                .arg("--subhost-dir")
                .arg(base)
                .args(["status", name]),
            LAUNCH_LIMIT,
        );
        assert!(
            out.stdout_str().contains("running") && out.stdout_str().contains(&bridge.name),
            "{}",
            out.describe()
        );
        // Over the base the play imported, not the host's root: no host
        // secrets inside.
        let config = std::fs::read_to_string(base.join(name).join("config")).unwrap();
        let lower = base.join(".bases/fleet/root");
        assert!(
            config.contains(&format!("LOWER='{}'", lower.display())),
            "{config}"
        );
        let out = run_timeout(
            Command::new(launch_bin())
                .arg("--subhost-dir")
                .arg(base)
                .args(["enter", name, "--", "/bin/sh", "-c"])
                .arg("test ! -e /etc/shadow && test -x /usr/bin/python3"),
            LAUNCH_LIMIT,
        );
        assert!(out.status.success(), "{}", out.describe());
    }
    let second = ansible.play(&inventory, &site, "{}");
    for host in [&web1, &web2] {
        assert_eq!(
            recap_count(&second, host, "changed"),
            0,
            "{}",
            second.describe()
        );
    }
}

const MOVE_PLAYBOOK: &str = r#"
- hosts: a
  gather_facts: false
  environment: {SUBHOST: "{{ subhost_dir }}"}
  module_defaults:
    subhost.fleet.subhost_move:
      dest: "{{ hostvars.b.ansible_user }}@{{ hostvars.b.ansible_host }}"
      ssh_args: "{{ ssh_args }}"
      launcher: "{{ launcher }}"
      dest_launcher: "{{ launcher }}"
      dest_subhost_dir: "{{ hostvars.b.subhost_dir }}"
  tasks:
    # Bad input: refused, nothing made on b.
    - name: its base is missing on the destination
      subhost.fleet.subhost_move: {name: "{{ on_base }}"}
      register: no_base
      ignore_errors: true
    - name: the destination has the name with other contents
      subhost.fleet.subhost_move: {name: "{{ taken }}"}
      register: name_taken
      ignore_errors: true
    - name: a running subhost is not moved
      subhost.fleet.subhost_move: {name: "{{ running }}"}
      register: is_running
      ignore_errors: true
    - name: in check mode
      subhost.fleet.subhost_move: {name: "{{ name }}"}
      check_mode: true
      register: check
    - stat: {path: "{{ hostvars.b.subhost_dir }}/{{ name }}"}
      delegate_to: b
      register: after_check
    - name: moved
      subhost.fleet.subhost_move: {name: "{{ name }}"}
      register: moved
    - name: moved again
      subhost.fleet.subhost_move: {name: "{{ name }}"}
      register: again
    - name: on b it is a stopped subhost
      command: "{{ launcher }} status --json {{ name }}"
      environment: {SUBHOST: "{{ hostvars.b.subhost_dir }}"}
      delegate_to: b
      register: on_b
      changed_when: false
    - assert:
        that:
          - no_base is failed and ('base ' ~ base_name) in no_base.msg and 'nothing was made there' in no_base.msg
          - name_taken is failed and 'already has a subhost' in name_taken.msg
          - is_running is failed and 'is running on the source: stop it or let it hibernate first' in is_running.msg
          - check is changed and not check.moved and not after_check.stat.exists
          - moved is changed and moved.moved and moved.source.state == 'stopped'
          - again is not changed and not again.moved and again.digest | length == 64
          - (on_b.stdout | from_json).state == 'stopped'
"#;

/// `subhost_move` between two infrastructure hosts that are this machine
/// reached over ssh to the test's own sshd, each with its own `$SUBHOST`:
/// refusals (a base missing there, a name taken there, a running source)
/// leave nothing; check mode moves nothing; the move brings every file with
/// its owner; a second run changes nothing.
#[test]
fn move_module_moves_a_subhost_between_two_hosts() {
    let ansible = Ansible::new();
    let sshd = Sshd::start(&ansible.path().join("ssh"));
    let cp = ansible.path().join("cp");
    struct Masters(PathBuf);
    impl Drop for Masters {
        fn drop(&mut self) {
            Sshd::close_masters(&self.0);
        }
    }
    let (a, b) = (ansible.path().join("a"), ansible.path().join("b"));
    let lower = ScratchBase::new();
    let [name, on_base, taken, running, blocker] =
        ["anv", "anb", "ant", "anr", "ank"].map(unique_name);
    let base_name = unique_name("bas");
    let _made = (
        Made {
            base: a.clone(),
            names: vec![
                name.clone(),
                on_base.clone(),
                taken.clone(),
                running.clone(),
            ],
        },
        Made {
            base: b.clone(),
            names: vec![
                name.clone(),
                on_base.clone(),
                taken.clone(),
                blocker.clone(),
            ],
        },
    );
    let _masters = Masters(cp.clone());
    let launch = |dir: &Path, args: &[&str]| {
        let out = run_timeout(
            Command::new(launch_bin())
                .arg("--subhost-dir")
                .arg(dir)
                .args(args),
            LAUNCH_LIMIT,
        );
        assert!(out.status.success(), "{args:?}: {}", out.describe());
        out
    };
    let lower_s = lower.path().to_str().unwrap().to_string();
    let create = |dir: &Path, name: &str, extra: &[&str]| {
        let mut args = vec!["create", name];
        args.extend(extra);
        args.extend(mode_create_args());
        launch(dir, &args);
    };
    create(&a, &name, &["--lower", &lower_s]);
    create(&a, &taken, &["--lower", &lower_s]);
    create(&b, &taken, &["--lower", &lower_s]);
    std::fs::write(b.join(&taken).join("root/mine"), "b's own\n").unwrap();
    let base_src = ansible.path().join("base-src");
    std::fs::create_dir_all(base_src.join("etc")).unwrap();
    std::fs::write(base_src.join("etc/hostname"), "based\n").unwrap();
    launch(
        &a,
        &["base", "import", &base_name, base_src.to_str().unwrap()],
    );
    create(&a, &on_base, &["--base", &base_name]);
    // A running subhost: a busybox root, started detached.
    create(&a, &running, &["--lower", &lower_s]);
    launch(&a, &["start", "--detach", &running]);

    // Files with owners the move has to carry (shifted into b's range for
    // a USERNS subhost).
    let range = |dir: &Path, name: &str| -> u32 {
        std::fs::read_to_string(dir.join(name).join("userns"))
            .map(|t| t.trim().split(':').next().unwrap().parse().unwrap())
            .unwrap_or(0)
    };
    let ra = range(&a, &name);
    if userns_mode() {
        // b's subhost BLOCKER holds a's range, so the move has to shift
        // every owner into another one (and the digest to see past that).
        create(&b, &blocker, &["--lower", &lower_s]);
        std::fs::copy(
            a.join(&name).join("userns"),
            b.join(&blocker).join("userns"),
        )
        .unwrap();
    }
    let root = a.join(&name).join("root");
    std::fs::create_dir_all(root.join("srv/www")).unwrap();
    std::fs::write(root.join("srv/www/index.html"), "<h1>moved</h1>\n").unwrap();
    std::fs::write(root.join("etc-secret"), "s3cret\n").unwrap();
    std::os::unix::fs::chown(root.join("srv"), Some(ra), Some(ra)).unwrap();
    std::os::unix::fs::chown(root.join("srv/www"), Some(ra + 33), Some(ra + 33)).unwrap();
    std::os::unix::fs::chown(
        root.join("srv/www/index.html"),
        Some(ra + 1234),
        Some(ra + 5678),
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("etc-secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::chown(root.join("etc-secret"), Some(ra), Some(ra)).unwrap();

    let host = |name: &str, dir: &Path| {
        format!(
            "    {name}:
      ansible_host: 127.0.0.1
      ansible_user: root
      ansible_port: {port}
      ansible_ssh_private_key_file: {ssh}/client
      ansible_ssh_common_args: -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no
      ansible_python_interpreter: /usr/bin/python3
      subhost_dir: {dir}
",
            port = sshd.port,
            ssh = sshd.dir.display(),
            dir = dir.display(),
        )
    };
    let inventory = ansible.write(
        "inventory.yml",
        &format!("all:\n  hosts:\n{}{}", host("a", &a), host("b", &b)),
    );
    let playbook = ansible.write("move.yml", MOVE_PLAYBOOK);
    let extra = format!(
        r#"{{"name": "{name}", "on_base": "{on_base}", "taken": "{taken}", "running": "{running}", "base_name": "{base_name}", "launcher": "{}", "ssh_args": "{}"}}"#,
        launch_bin().display(),
        sshd.ssh_args(),
    );
    let out = ansible.play(&inventory, &playbook, &extra);
    assert_eq!(recap_count(&out, "a", "failed"), 0, "{}", out.describe());
    assert!(
        sshd.log().contains("Accepted publickey for root"),
        "nothing came over ssh: {}",
        sshd.log()
    );

    // On b: the files, by content and owner, in b's range.
    let rb = range(&b, &name);
    assert_eq!(userns_mode(), rb != ra, "ranges: a {ra}, b {rb}");
    let moved = b.join(&name).join("root");
    let owner = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (
            std::os::unix::fs::MetadataExt::uid(&m),
            std::os::unix::fs::MetadataExt::gid(&m),
            std::os::unix::fs::MetadataExt::mode(&m) & 0o7777,
        )
    };
    assert_eq!(
        std::fs::read_to_string(moved.join("srv/www/index.html")).unwrap(),
        "<h1>moved</h1>\n"
    );
    assert_eq!(
        owner(&moved.join("srv/www/index.html")).0,
        rb + 1234,
        "owner"
    );
    assert_eq!(owner(&moved.join("srv/www/index.html")).1, rb + 5678);
    assert_eq!(owner(&moved.join("srv/www")).0, rb + 33);
    assert_eq!(owner(&moved.join("etc-secret")), (rb, rb, 0o600));
    assert_eq!(
        std::fs::read_to_string(moved.join("etc-secret")).unwrap(),
        "s3cret\n"
    );
    assert_eq!(
        std::fs::read_to_string(a.join(&name).join("config")).unwrap(),
        std::fs::read_to_string(b.join(&name).join("config")).unwrap()
    );
    // The refused ones left nothing on b, and b's own subhost is untouched.
    let on_b: Vec<String> = std::fs::read_dir(&b)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !on_b
            .iter()
            .any(|n| n.contains(&on_base) || n.contains(&running)),
        "left on b: {on_b:?}"
    );
    assert_eq!(
        std::fs::read_to_string(b.join(&taken).join("root/mine")).unwrap(),
        "b's own\n"
    );
}
