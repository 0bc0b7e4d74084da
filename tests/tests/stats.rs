//! `stats` against known loads on the real kernel: a process holding
//! 64 MiB, a busy loop, a counted set of processes, traffic between two
//! subhosts over a bridge of the test's own; the node-exporter file
//! replaced atomically; bad input refused.

use std::time::Duration;

use subhost_tests::json::{parse_json, J};
use subhost_tests::*;

const LIMIT: Duration = Duration::from_secs(30);
const MIB: f64 = 1048576.0;

fn assert_ok(out: &Finished) {
    assert!(out.status.success(), "{}", out.describe());
}

fn start_detached(s: &Subhost) {
    assert_ok(&s.run(&["start", "--detach", &s.name]));
}

fn stats_json(s: &Subhost, names: &[&str]) -> J {
    let mut args = vec!["stats", "--json"];
    args.extend_from_slice(names);
    let out = s.run(&args);
    assert_ok(&out);
    parse_json(&out.stdout_str())
}

fn of<'a>(j: &'a J, name: &str) -> &'a J {
    j.arr()
        .iter()
        .find(|e| e.get("name").str() == name)
        .unwrap_or_else(|| panic!("no {name} in the stats"))
}

/// The processes on the host in the pid namespace of `init`.
fn processes_like(init: i32) -> usize {
    let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| std::fs::read_link(e.path().join("ns/pid")).ok().as_ref() == Some(&ns))
        .count()
}

/// utime + stime, in clock ticks, of the processes in the pid namespace
/// of `init`.
fn cpu_ticks_like(init: i32) -> u64 {
    let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| std::fs::read_link(e.path().join("ns/pid")).ok().as_ref() == Some(&ns))
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .map(|stat| {
            let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = after.split_whitespace().collect();
            // Fields 14 and 15 of stat(5), counted after the command.
            f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        })
        .sum()
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

fn init_pid(s: &Subhost) -> i32 {
    let text = std::fs::read_to_string(s.init_record()).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// BOOT of a subhost holding 64 MiB (and spinning, with `spin`).
fn load(spin: bool) -> String {
    let tail = if spin {
        "while :; do :; done"
    } else {
        "sleep 120"
    };
    format!("BOOT=(sh -c '/probe hold-memory 64 120 & {tail}')\n")
}

#[test]
fn memory_cpu_and_pids_of_known_loads() {
    // One without limits (no memory cgroup of its own on a hybrid host),
    // one with (the kernel's memory accounting, and a peak).
    let a = Subhost::busybox("sa", &load(true));
    let b = Subhost::busybox(
        "sb",
        &format!("{}MEMORY_MAX=512M\nPIDS_MAX=100\n", load(false)),
    );
    for s in [&a, &b] {
        install_probe(&s.root());
        start_detached(s);
    }
    // Each under its own $SUBHOST: one `stats` each.
    let held = |s: &Subhost| {
        matches!(of(&stats_json(s, &[&s.name]), &s.name).get("memory_bytes"),
            J::Num(m) if *m >= 64.0 * MIB)
    };
    assert!(
        wait_until(LIMIT, || held(&a) && held(&b)),
        "64 MiB not seen: {:?} {:?}",
        stats_json(&a, &[&a.name]),
        stats_json(&b, &[&b.name])
    );

    // The busy loop's own share, measured around the same second from its
    // processes' CPU ticks: on a loaded machine it gets less than a CPU.
    let init = init_pid(&a);
    let (t0, c0) = (std::time::Instant::now(), cpu_ticks_like(init));
    let ja = stats_json(&a, &[&a.name]);
    let (t1, c1) = (std::time::Instant::now(), cpu_ticks_like(init));
    let own = (c1 - c0) as f64 / ticks_per_second() * 100.0 / (t1 - t0).as_secs_f64();
    let sa = of(&ja, &a.name);
    let cpu = sa.get("cpu_percent").num();
    assert!(
        (cpu - own).abs() <= 15.0 + own * 0.15,
        "stats says {cpu}%, its processes' ticks {own:.1}%: {sa:?}"
    );
    if own >= 80.0 {
        assert!(
            (70.0..=130.0).contains(&cpu),
            "a busy loop at {cpu}%: {sa:?}"
        );
    } else {
        eprintln!("the machine is loaded: the busy loop got {own:.1}% of a CPU, stats {cpu}%");
    }
    assert!(sa.get("cpu_seconds_total").num() > 0.5, "{sa:?}");
    let jb = stats_json(&b, &[&b.name]);
    let sb = of(&jb, &b.name);
    assert!(
        sb.get("cpu_percent").num() < 30.0,
        "an idle subhost at {sb:?}"
    );
    assert!(sb.get("memory_peak_bytes").num() >= 64.0 * MIB, "{sb:?}");

    for s in [&a, &b] {
        let want = processes_like(init_pid(s));
        let j = stats_json(s, &[&s.name]);
        let got = of(&j, &s.name).get("pids").num() as usize;
        assert_eq!(got, want, "pids of {}", s.name);
    }

    // The table of every subhost there: a header, a row.
    let out = a.run(&["stats"]);
    assert_ok(&out);
    let text = out.stdout_str();
    assert!(text.starts_with("NAME"), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with(&a.name), "{text}");
}

#[test]
fn network_bytes_grow_with_traffic_and_the_prometheus_file_is_replaced_whole() {
    let br = Bridge::new();
    let n = (std::process::id() * 11) % 250 + 1;
    let net = format!("10.217.{n}");
    let a = Subhost::busybox(
        "na",
        &format!(
            "BRIDGES=({})\nADDRESS=({net}.1/24)\nBOOT=(sleep 300)\n",
            br.name
        ),
    );
    let b = Subhost::busybox(
        "nb",
        &format!(
            "BRIDGES=({})\nADDRESS=({net}.2/24)\nBOOT=(sleep 300)\n",
            br.name
        ),
    );
    start_detached(&a);
    start_detached(&b);
    let cable = |j: &J, dir: &str| {
        let c = &of(j, &a.name).get("network").arr()[0];
        assert_eq!(c.get("cable").str(), format!("{}0", a.name));
        c.get(dir).num()
    };
    let before = stats_json(&a, &[&a.name]);
    let out = a.enter_sh(&format!("ping -c 20 -i 0.05 -s 1000 -W 3 {net}.2"));
    assert_ok(&out);
    let after = stats_json(&a, &[&a.name]);
    for dir in ["transmit_bytes", "receive_bytes"] {
        let grew = cable(&after, dir) - cable(&before, dir);
        assert!(
            grew >= 20000.0,
            "{dir} grew by {grew} after 20 pings of 1000 bytes"
        );
    }

    let tmp = TempDir::new();
    let file = tmp.path().join("subhost.prom");
    let out = a.run(&["stats", "--prometheus", file.to_str().unwrap(), &a.name]);
    assert_ok(&out);
    assert!(out.stdout_str().is_empty(), "{}", out.describe());
    let first = std::fs::metadata(&file).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    check_exposition(&text, &[&a.name]);
    assert!(
        text.contains(&format!(
            "subhost_network_transmit_bytes_total{{name=\"{}\",cable=\"{}0\"}} ",
            a.name, a.name
        )),
        "{text}"
    );
    // Replaced by a rename: a new inode, and no temporary file left.
    let out = a.run(&["stats", "--prometheus", file.to_str().unwrap(), &a.name]);
    assert_ok(&out);
    use std::os::unix::fs::MetadataExt;
    assert_ne!(std::fs::metadata(&file).unwrap().ino(), first.ino());
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["subhost.prom"]);
}

/// Every line a HELP, a TYPE or a sample of a metric declared before it,
/// with a number; each subhost has its cpu and pids samples.
fn check_exposition(text: &str, names: &[&str]) {
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (m, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            typed.push(m.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let metric = series.split('{').next().unwrap();
        assert!(typed.iter().any(|t| t == metric), "no TYPE before {line}");
        assert!(
            series.ends_with('}') && series.contains("name=\""),
            "{line}"
        );
    }
    for n in names {
        for m in [
            "subhost_cpu_seconds_total",
            "subhost_pids",
            "subhost_memory_bytes",
        ] {
            assert!(
                text.contains(&format!("{m}{{name=\"{n}\"}} ")),
                "no {m} of {n}:\n{text}"
            );
        }
    }
}

#[test]
fn stats_of_an_unknown_name_or_a_bad_watch_is_refused() {
    let s = Subhost::busybox("su", "");
    let out = s.run(&["stats", "sht-no-such"]);
    assert_eq!(out.code(), 1, "{}", out.describe());
    assert!(
        out.stderr_str().contains("no subhost sht-no-such"),
        "{}",
        out.describe()
    );
    let out = s.run(&["stats", "--watch", "0", &s.name]);
    assert_eq!(out.code(), 1, "{}", out.describe());
    assert!(out.stderr_str().contains("--watch"), "{}", out.describe());
    // Not running: shown as such, no figures.
    let j = stats_json(&s, &[&s.name]);
    let e = of(&j, &s.name);
    assert!(matches!(e.get("running"), J::Bool(false)), "{e:?}");
    assert!(matches!(e.get("memory_bytes"), J::Null), "{e:?}");
}
