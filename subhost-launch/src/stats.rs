//! What a subhost uses, read from the kernel: its cgroup's counters (CPU
//! time, memory, pids, IO) and the byte counters of its cables' host ends.
//! One `Sample` is one read; CPU % is the difference of two.
//!
//! Where each figure comes from, in the order tried (cgroup v2 files first,
//! then v1, over every directory of the subhost's recorded cgroup):
//! - CPU time: `cpu.stat` usage_usec (v2; present without the cpu
//!   controller), `cpuacct.usage` (v1, ns).
//! - memory: `memory.current`/`memory.peak` (v2),
//!   `memory.usage_in_bytes`/`memory.max_usage_in_bytes` (v1); without a
//!   memory controller in its cgroup (a hybrid host without MEMORY_MAX, a
//!   v2 host that does not hand memory down), the sum of its processes'
//!   resident sets, and no peak.
//! - pids: `pids.current`, else the processes in `cgroup.procs` (and those
//!   of sub-cgroups).
//! - IO: `io.stat` rbytes/wbytes (v2), `blkio.throttle.io_service_bytes`
//!   Read/Write (v1); unknown without either.
//! - network: `/sys/class/net/HOST/statistics/{rx,tx}_bytes` of each
//!   cable's host end; what the host end transmits the subhost receives.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

/// One cable's counters, from the subhost's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Net {
    /// The host end's name (NAME0, NAME1, …).
    pub cable: String,
    pub receive_bytes: u64,
    pub transmit_bytes: u64,
}

/// One read of a subhost's counters; `None` where the kernel does not
/// count it for this subhost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub cpu_usec: Option<u64>,
    pub memory: Option<u64>,
    pub memory_peak: Option<u64>,
    pub pids: Option<u64>,
    pub io_read: Option<u64>,
    pub io_written: Option<u64>,
    pub net: Vec<Net>,
}

fn read(dir: &Path, file: &str) -> Option<String> {
    fs::read_to_string(dir.join(file)).ok()
}

fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `usage_usec` of a v2 `cpu.stat`.
pub fn cpu_stat_usec(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(number)
}

/// Bytes read and written, summed over devices, of a v2 `io.stat`
/// (`8:0 rbytes=1 wbytes=2 rios=…`).
pub fn io_stat(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for field in text.split_whitespace() {
        if let Some(n) = field.strip_prefix("rbytes=") {
            r += number(n).unwrap_or(0);
        } else if let Some(n) = field.strip_prefix("wbytes=") {
            w += number(n).unwrap_or(0);
        }
    }
    (r, w)
}

/// Bytes read and written, summed over devices, of a v1
/// `blkio.throttle.io_service_bytes` (`8:0 Read 1`, `8:0 Write 2`, …,
/// `Total 3`).
pub fn blkio_service_bytes(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            [_, "Read", n] => r += number(n).unwrap_or(0),
            [_, "Write", n] => w += number(n).unwrap_or(0),
            _ => {}
        }
    }
    (r, w)
}

/// The PIDs in `dir`'s `cgroup.procs` and in those of its sub-cgroups.
fn procs_below(dir: &Path, into: &mut Vec<i32>) {
    if let Some(t) = read(dir, "cgroup.procs") {
        into.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    // cgroup v2 counts the sub-cgroups: a listing of the directory (its
    // many files) only where there are any.
    let none_below = read(dir, "cgroup.stat").is_some_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().eq(["nr_descendants", "0"]))
    });
    if none_below {
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                procs_below(&e.path(), into);
            }
        }
    }
}

/// Resident bytes of `pid` (`/proc/PID/statm`, in pages).
fn resident(pid: i32, page: u64) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|t| t.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .map_or(0, |pages: u64| pages * page)
}

/// The counters of the subhost whose cgroup directories are `dirs` and
/// whose cables' host ends are `cables`.
pub fn sample(dirs: &[PathBuf], cables: &[String]) -> Sample {
    let mut s = Sample::default();
    let mut procs_dir = None;
    for d in dirs {
        if s.cpu_usec.is_none() {
            s.cpu_usec = read(d, "cpu.stat")
                .and_then(|t| cpu_stat_usec(&t))
                .or_else(|| {
                    read(d, "cpuacct.usage")
                        .and_then(|t| number(&t))
                        .map(|ns| ns / 1000)
                });
        }
        if s.memory.is_none() {
            if let Some(m) = read(d, "memory.current").and_then(|t| number(&t)) {
                s.memory = Some(m);
                s.memory_peak = read(d, "memory.peak").and_then(|t| number(&t));
            } else if let Some(m) = read(d, "memory.usage_in_bytes").and_then(|t| number(&t)) {
                s.memory = Some(m);
                s.memory_peak = read(d, "memory.max_usage_in_bytes").and_then(|t| number(&t));
            }
        }
        if s.pids.is_none() {
            s.pids = read(d, "pids.current").and_then(|t| number(&t));
        }
        if s.io_read.is_none() {
            let io = read(d, "io.stat").map(|t| io_stat(&t)).or_else(|| {
                read(d, "blkio.throttle.io_service_bytes").map(|t| blkio_service_bytes(&t))
            });
            if let Some((r, w)) = io {
                (s.io_read, s.io_written) = (Some(r), Some(w));
            }
        }
        if procs_dir.is_none() && d.join("cgroup.procs").exists() {
            procs_dir = Some(d);
        }
    }
    if s.pids.is_none() || s.memory.is_none() {
        let mut procs = Vec::new();
        if let Some(d) = procs_dir {
            procs_below(d, &mut procs);
        }
        if s.pids.is_none() && procs_dir.is_some() {
            s.pids = Some(procs.len() as u64);
        }
        if s.memory.is_none() && !procs.is_empty() {
            let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
                .ok()
                .flatten()
                .map_or(4096, |p| p as u64);
            s.memory = Some(procs.iter().map(|&p| resident(p, page)).sum());
        }
    }
    for c in cables {
        let stat = Path::new("/sys/class/net").join(c).join("statistics");
        let (Some(rx), Some(tx)) = (
            read(&stat, "rx_bytes").and_then(|t| number(&t)),
            read(&stat, "tx_bytes").and_then(|t| number(&t)),
        ) else {
            continue;
        };
        // The host end receives what the subhost sends.
        s.net.push(Net {
            cable: c.clone(),
            receive_bytes: tx,
            transmit_bytes: rx,
        });
    }
    s
}

/// One subhost's figures over an interval, as `stats` shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub name: String,
    pub running: bool,
    /// Percent of one CPU over the interval (200 = two CPUs).
    pub cpu_percent: Option<f64>,
    pub cpu_seconds_total: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_written_bytes: Option<u64>,
    pub network: Vec<Net>,
}

/// The figures of `name` from two samples taken `a` then `b`.
pub fn over(name: &str, a: Option<(&Sample, Instant)>, b: Option<(&Sample, Instant)>) -> Stats {
    let Some((b, tb)) = b else {
        return Stats {
            name: name.to_string(),
            running: false,
            cpu_percent: None,
            cpu_seconds_total: None,
            memory_bytes: None,
            memory_peak_bytes: None,
            pids: None,
            io_read_bytes: None,
            io_written_bytes: None,
            network: Vec::new(),
        };
    };
    let cpu_percent = match (a, b.cpu_usec) {
        (Some((a, ta)), Some(ub)) => a.cpu_usec.and_then(|ua| {
            let wall = tb.duration_since(ta).as_micros() as f64;
            (wall > 0.0).then(|| ub.saturating_sub(ua) as f64 * 100.0 / wall)
        }),
        _ => None,
    };
    Stats {
        name: name.to_string(),
        running: true,
        cpu_percent: cpu_percent.map(|p| (p * 10.0).round() / 10.0),
        cpu_seconds_total: b.cpu_usec.map(|u| u as f64 / 1e6),
        memory_bytes: b.memory,
        memory_peak_bytes: b.memory_peak,
        pids: b.pids,
        io_read_bytes: b.io_read,
        io_written_bytes: b.io_written,
        network: b.net.clone(),
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// node-exporter's textfile-collector format: each metric's HELP and TYPE
/// once, then a line per subhost that has the figure.
pub fn prometheus(all: &[Stats]) -> String {
    let mut out = String::new();
    let mut metric =
        |name: &str, kind: &str, help: &str, value: &dyn Fn(&Stats) -> Vec<(String, String)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for s in all {
                for (labels, v) in value(s) {
                    out.push_str(&format!("{name}{{{labels}}} {v}\n"));
                }
            }
        };
    let label = |s: &Stats| format!("name=\"{}\"", escape_label(&s.name));
    metric(
        "subhost_cpu_seconds_total",
        "counter",
        "CPU time used by the subhost's processes.",
        &|s| {
            s.cpu_seconds_total
                .map(|v| (label(s), format!("{v}")))
                .into_iter()
                .collect()
        },
    );
    metric(
        "subhost_memory_bytes",
        "gauge",
        "Memory in use by the subhost.",
        &|s| {
            s.memory_bytes
                .map(|v| (label(s), v.to_string()))
                .into_iter()
                .collect()
        },
    );
    metric(
        "subhost_memory_peak_bytes",
        "gauge",
        "Most memory the subhost has used.",
        &|s| {
            s.memory_peak_bytes
                .map(|v| (label(s), v.to_string()))
                .into_iter()
                .collect()
        },
    );
    metric("subhost_pids", "gauge", "Processes of the subhost.", &|s| {
        s.pids
            .map(|v| (label(s), v.to_string()))
            .into_iter()
            .collect()
    });
    metric(
        "subhost_io_read_bytes_total",
        "counter",
        "Bytes the subhost read from block devices.",
        &|s| {
            s.io_read_bytes
                .map(|v| (label(s), v.to_string()))
                .into_iter()
                .collect()
        },
    );
    metric(
        "subhost_io_written_bytes_total",
        "counter",
        "Bytes the subhost wrote to block devices.",
        &|s| {
            s.io_written_bytes
                .map(|v| (label(s), v.to_string()))
                .into_iter()
                .collect()
        },
    );
    let cable = |s: &Stats, n: &Net| format!("{},cable=\"{}\"", label(s), escape_label(&n.cable));
    metric(
        "subhost_network_receive_bytes_total",
        "counter",
        "Bytes the subhost received on a cable.",
        &|s| {
            s.network
                .iter()
                .map(|n| (cable(s, n), n.receive_bytes.to_string()))
                .collect()
        },
    );
    metric(
        "subhost_network_transmit_bytes_total",
        "counter",
        "Bytes the subhost sent on a cable.",
        &|s| {
            s.network
                .iter()
                .map(|n| (cable(s, n), n.transmit_bytes.to_string()))
                .collect()
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_files_parse() {
        let cpu = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n\
                   core_sched.force_idle_usec 0\nnr_periods 0\n";
        assert_eq!(cpu_stat_usec(cpu), Some(1_234_567));
        assert_eq!(cpu_stat_usec("user_usec 1\n"), None);
        let io = "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                  259:0 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(io_stat(io), (4097, 8194));
        assert_eq!(io_stat(""), (0, 0));
    }

    #[test]
    fn v1_blkio_parses() {
        let t = "8:0 Read 100\n8:0 Write 200\n8:0 Sync 300\n8:0 Async 0\n8:0 Total 300\n\
                 8:16 Read 1\n8:16 Write 2\nTotal 303\n";
        assert_eq!(blkio_service_bytes(t), (101, 202));
    }

    /// A pure cgroup v2 subhost directory, as fixture files.
    #[test]
    fn a_v2_directory_is_sampled_from_its_files() {
        let d = std::env::temp_dir().join(format!("subhost-test-stats-{}", std::process::id()));
        let sub = d.join("inner");
        fs::create_dir_all(&sub).unwrap();
        fs::write(
            d.join("cpu.stat"),
            "usage_usec 2500000\nuser_usec 2000000\n",
        )
        .unwrap();
        fs::write(d.join("memory.current"), "67108864\n").unwrap();
        fs::write(d.join("memory.peak"), "70000000\n").unwrap();
        fs::write(d.join("io.stat"), "8:0 rbytes=10 wbytes=20 rios=1 wios=1\n").unwrap();
        fs::write(d.join("cgroup.procs"), "1\n2\n").unwrap();
        fs::write(sub.join("cgroup.procs"), "3\n").unwrap();
        let s = sample(std::slice::from_ref(&d), &["sht-no-such-link0".into()]);
        assert_eq!(
            s,
            Sample {
                cpu_usec: Some(2_500_000),
                memory: Some(67_108_864),
                memory_peak: Some(70_000_000),
                pids: Some(3),
                io_read: Some(10),
                io_written: Some(20),
                net: Vec::new(),
            }
        );
        fs::write(d.join("pids.current"), "7\n").unwrap();
        assert_eq!(sample(std::slice::from_ref(&d), &[]).pids, Some(7));
        for f in [
            "cpu.stat",
            "memory.current",
            "memory.peak",
            "io.stat",
            "cgroup.procs",
            "pids.current",
        ] {
            let _ = fs::remove_file(d.join(f));
        }
        let _ = fs::remove_file(sub.join("cgroup.procs"));
        let _ = fs::remove_dir(&sub);
        let _ = fs::remove_dir(&d);
    }

    #[test]
    fn cpu_percent_is_over_the_interval() {
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(2);
        let a = Sample {
            cpu_usec: Some(1_000_000),
            ..Sample::default()
        };
        let b = Sample {
            cpu_usec: Some(3_000_000),
            memory: Some(5),
            ..Sample::default()
        };
        let s = over("x", Some((&a, t0)), Some((&b, t1)));
        assert_eq!(s.cpu_percent, Some(100.0));
        assert_eq!(s.cpu_seconds_total, Some(3.0));
        assert!(!over("x", None, None).running);
    }

    #[test]
    fn prometheus_text_has_help_type_and_labels() {
        let s = Stats {
            name: "web".into(),
            running: true,
            cpu_percent: Some(1.0),
            cpu_seconds_total: Some(1.5),
            memory_bytes: Some(100),
            memory_peak_bytes: None,
            pids: Some(3),
            io_read_bytes: None,
            io_written_bytes: None,
            network: vec![Net {
                cable: "web0".into(),
                receive_bytes: 7,
                transmit_bytes: 9,
            }],
        };
        let t = prometheus(&[s]);
        assert!(t.contains(
            "# HELP subhost_cpu_seconds_total CPU time used by the subhost's processes.\n\
             # TYPE subhost_cpu_seconds_total counter\n\
             subhost_cpu_seconds_total{name=\"web\"} 1.5\n"
        ));
        assert!(t.contains("subhost_memory_bytes{name=\"web\"} 100\n"));
        assert!(!t.contains("subhost_memory_peak_bytes{"));
        assert!(t.contains("# TYPE subhost_memory_peak_bytes gauge\n"));
        assert!(t.contains("subhost_network_receive_bytes_total{name=\"web\",cable=\"web0\"} 7\n"));
        assert!(t.contains("subhost_network_transmit_bytes_total{name=\"web\",cable=\"web0\"} 9\n"));
        assert_eq!(escape_label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
