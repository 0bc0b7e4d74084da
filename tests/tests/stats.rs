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

/// Nanoseconds on a CPU (the first field of `/proc/PID/schedstat`, the
/// scheduler's own accounting, finer than stat's ticks) of the processes
/// in the pid namespace of `init`.
fn cpu_ns_like(init: i32) -> u64 {
    let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| std::fs::read_link(e.path().join("ns/pid")).ok().as_ref() == Some(&ns))
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|t| t.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A hybrid host: cgroup v2 beside v1 controllers, where a subhost without
/// MEMORY_MAX has no memory cgroup of its own.
fn hybrid() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" - cgroup "))
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
    // Each under its own $SUBHOST: one `stats` each. The peak too, with
    // or without a memory cgroup.
    let held = |s: &Subhost| {
        let j = stats_json(s, &[&s.name]);
        let e = of(&j, &s.name);
        ["memory_bytes", "memory_peak_bytes"]
            .iter()
            .all(|k| matches!(e.get(k), J::Num(m) if *m >= 64.0 * MIB))
    };
    assert!(
        wait_until(LIMIT, || held(&a) && held(&b)),
        "64 MiB not seen: {:?} {:?}",
        stats_json(&a, &[&a.name]),
        stats_json(&b, &[&b.name])
    );

    // The busy loop against its own accounting over the same interval,
    // not against 100 %: on a loaded machine it gets less than a CPU. Once
    // its processes have run for at least a tenth of the interval, a
    // figure of 0 or of double theirs is outside the tolerance.
    let init = init_pid(&a);
    let mut tries = 0;
    let (cpu, own, sa) = loop {
        let (t0, c0) = (std::time::Instant::now(), cpu_ns_like(init));
        let ja = stats_json(&a, &[&a.name]);
        let (t1, c1) = (std::time::Instant::now(), cpu_ns_like(init));
        let own = (c1 - c0) as f64 / 1e9 * 100.0 / (t1 - t0).as_secs_f64();
        let sa = of(&ja, &a.name).clone();
        tries += 1;
        if own >= 10.0 || tries == 10 {
            break (sa.get("cpu_percent").num(), own, sa);
        }
    };
    assert!(
        own >= 10.0,
        "the busy loop never got 10 % of a CPU: {own:.1}%"
    );
    // The stats interval is a second inside the measured one, which adds
    // the stats process's own start and exit.
    assert!(
        (cpu - own).abs() <= 3.0 + own * 0.2,
        "stats says {cpu}%, the busy loop's own accounting {own:.1}%: {sa:?}"
    );
    // The counter too: its growth over a longer stretch is the processes'
    // CPU time. stats reads it at the end of its interval: the processes'
    // own time is taken just after each call returns.
    let total = |j: &J| of(j, &a.name).get("cpu_seconds_total").num();
    let s0 = total(&stats_json(&a, &[&a.name]));
    let c0 = cpu_ns_like(init);
    assert!(wait_until(LIMIT, || cpu_ns_like(init) - c0 >= 1_000_000_000));
    let s1 = total(&stats_json(&a, &[&a.name]));
    let c1 = cpu_ns_like(init);
    let (counted, own_s) = (s1 - s0, (c1 - c0) as f64 / 1e9);
    assert!(
        (counted - own_s).abs() <= 0.1 + own_s * 0.15,
        "cpu_seconds_total grew by {counted:.3}s, the processes ran {own_s:.3}s"
    );
    assert!(sa.get("cpu_seconds_total").num() > 0.5, "{sa:?}");
    let jb = stats_json(&b, &[&b.name]);
    let sb = of(&jb, &b.name);
    assert!(
        sb.get("cpu_percent").num() < 30.0,
        "an idle subhost at {sb:?}"
    );
    assert!(sb.get("memory_peak_bytes").num() >= 64.0 * MIB, "{sb:?}");
    // Where the figures come from, said: on a hybrid host the memory of a
    // subhost without MEMORY_MAX, and the IO of both, are its processes'.
    assert_eq!(sb.get("memory_source").str(), "cgroup", "{sb:?}");
    if hybrid() {
        let sa = of(&stats_json(&a, &[&a.name]), &a.name).clone();
        assert_eq!(sa.get("memory_source").str(), "processes", "{sa:?}");
        assert_eq!(sa.get("memory_peak_source").str(), "processes", "{sa:?}");
        for e in [&sa, sb] {
            assert_eq!(e.get("io_source").str(), "processes", "{e:?}");
        }
    }

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

/// 10 MiB written and flushed by a process of the subhost (whose root is a
/// plain tree on the test's temp dir, a block device's file system): its
/// written bytes, from the cgroup or its processes, are at least that; an
/// idle one's are not.
#[test]
fn io_bytes_of_a_known_write() {
    let boot = "BOOT=(sh -c 'while [ ! -e /go ]; do sleep 0.1; done; \
                dd if=/dev/zero of=/written bs=1M count=10 conv=fsync; sleep 300')\n";
    let plain = Subhost::busybox("io", boot);
    let limited = Subhost::busybox("il", &format!("{boot}MEMORY_MAX=256M\n"));
    let written = |s: &Subhost| {
        of(&stats_json(s, &[&s.name]), &s.name)
            .get("io_written_bytes")
            .num()
    };
    for s in [&plain, &limited] {
        start_detached(s);
        let before = written(s);
        std::fs::write(s.root().join("go"), "").unwrap();
        let mut last = 0.0;
        let grew = wait_until(LIMIT, || {
            last = written(s);
            last - before >= 10.0 * MIB
        });
        assert!(
            grew,
            "{}: {} bytes written, before {before}",
            s.name,
            last - before
        );
    }
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
