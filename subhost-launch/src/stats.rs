//! What a subhost uses, read from the kernel: its cgroup's counters (CPU
//! time, memory, pids, IO), its processes' own where its cgroup has none,
//! and the byte counters of its cables' host ends. One `Sample` is one
//! read; CPU % is the difference of two.
//!
//! Where each figure comes from, in the order tried (cgroup v2 files first,
//! then v1, over every directory of the subhost's recorded cgroup), found
//! once per subhost (`Files`) and then read directly:
//! - CPU time: `cpu.stat` usage_usec (v2; present without the cpu
//!   controller), `cpuacct.usage` (v1, ns).
//! - memory: `memory.current`/`memory.peak` (v2),
//!   `memory.usage_in_bytes`/`memory.max_usage_in_bytes` (v1); without a
//!   memory controller in its cgroup (a hybrid host without MEMORY_MAX, a
//!   v2 host that does not hand memory down), its live processes' resident
//!   sets summed (`VmRSS`), and as peak the larger of their high-water
//!   marks summed (`VmHWM`) and the most this run of `stats` saw:
//!   labelled `processes`, as neither counts page cache, both count a page
//!   shared by two processes twice, and the peak misses processes that
//!   ended before being seen.
//! - pids: `pids.current`, else the processes in `cgroup.procs` (and those
//!   of sub-cgroups).
//! - IO: `io.stat` rbytes/wbytes (v2), `blkio.throttle.io_service_bytes`
//!   Read/Write (v1); else the `read_bytes`/`write_bytes` of its live
//!   processes' `/proc/PID/io` summed, which hold those of the children
//!   each reaped (the init reaps orphans): labelled `processes`.
//! - network: one read of `/proc/net/dev` for all cables' host ends; what
//!   the host end transmits the subhost receives.
//!
//! A v1 cgroup is never joined for these figures: that write costs a start
//! about 14 ms.

use std::collections::HashMap;
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
    pub memory_source: Option<Origin>,
    pub memory_peak_source: Option<Origin>,
    pub io_source: Option<Origin>,
    pub net: Vec<Net>,
}

fn slurp(path: &Path) -> Option<String> {
    crate::procfs::read(path).ok()
}

fn read(dir: &Path, file: &str) -> Option<String> {
    slurp(&dir.join(file))
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

/// The value of `key` (`VmHWM:   1234 kB`) in a `/proc/PID/status`, in
/// bytes.
pub fn status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(number)
        .map(|k| k * 1024)
}

/// `read_bytes` and `write_bytes` of a `/proc/PID/io`: what the process
/// (and the children it reaped) made the block layer read and write.
pub fn proc_io(text: &str) -> (u64, u64) {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(number)
            .unwrap_or(0)
    };
    (field("read_bytes: "), field("write_bytes: "))
}

/// What the live processes `pids` hold and have read and written: the sum
/// of their resident sets, of their high-water marks, of their block IO.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Processes {
    pub resident: u64,
    pub resident_peak: u64,
    pub io_read: u64,
    pub io_written: u64,
}

fn processes(pids: &[i32], want_io: bool) -> Processes {
    let mut p = Processes::default();
    for pid in pids {
        // A process that ended between the listing and now counts nothing.
        if let Some(t) = slurp(Path::new(&format!("/proc/{pid}/status"))) {
            p.resident += status_kib(&t, "VmRSS").unwrap_or(0);
            p.resident_peak += status_kib(&t, "VmHWM").unwrap_or(0);
        }
        if want_io {
            if let Some(t) = slurp(Path::new(&format!("/proc/{pid}/io"))) {
                let (r, w) = proc_io(&t);
                p.io_read += r;
                p.io_written += w;
            }
        }
    }
    p
}

/// The byte counters of every interface of the reader's network namespace,
/// from one read of `/proc/net/dev`: (received, transmitted) by name.
pub type NetCounters = HashMap<String, (u64, u64)>;

pub fn net_dev(text: &str) -> NetCounters {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            // Receive: bytes packets errs drop fifo frame compressed
            // multicast; then transmit: bytes ...
            Some((
                name.trim().to_string(),
                (number(f.first()?)?, number(f.get(8)?)?),
            ))
        })
        .collect()
}

pub fn net_counters() -> NetCounters {
    slurp(Path::new("/proc/net/dev"))
        .map(|t| net_dev(&t))
        .unwrap_or_default()
}

/// Which file gave a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The kernel's accounting of the subhost's cgroup.
    Cgroup,
    /// Summed over the subhost's live processes (see README).
    Processes,
}

/// Where a subhost's figures are, found by its first sample: later ones
/// read only these files, with no lookups of files this host lacks.
#[derive(Debug, Clone, Default)]
pub struct Files {
    cpu: Option<(PathBuf, Cpu)>,
    memory: Option<(PathBuf, Option<PathBuf>)>,
    pids: Option<PathBuf>,
    io: Option<(PathBuf, Io)>,
    procs: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
enum Cpu {
    V2,
    V1,
}

#[derive(Debug, Clone, Copy)]
enum Io {
    V2,
    V1,
}

/// The files a cgroup directory has, looked up once per parent: siblings
/// have the same (v1: every cgroup of a hierarchy but its root; v2: what
/// the parent's `cgroup.subtree_control` hands down), so 200 subhosts
/// under one parent cost one set of lookups, not 200.
#[derive(Default)]
pub struct Finder {
    seen: HashMap<PathBuf, Vec<&'static str>>,
}

const FIGURE_FILES: [&str; 10] = [
    "cpu.stat",
    "cpuacct.usage",
    "memory.current",
    "memory.peak",
    "memory.usage_in_bytes",
    "memory.max_usage_in_bytes",
    "pids.current",
    "io.stat",
    "blkio.throttle.io_service_bytes",
    "cgroup.procs",
];

impl Finder {
    fn has(&mut self, dir: &Path, file: &str) -> bool {
        let Some(parent) = dir.parent() else {
            return dir.join(file).exists();
        };
        let present = self.seen.entry(parent.to_path_buf()).or_insert_with(|| {
            FIGURE_FILES
                .into_iter()
                .filter(|f| dir.join(f).exists())
                .collect()
        });
        present.contains(&file)
    }

    /// The first directory of `dirs` (cgroup v2 files first, then v1)
    /// that has each figure's file.
    pub fn find(&mut self, dirs: &[PathBuf]) -> Files {
        let mut f = Files::default();
        let mut has = |d: &Path, file: &str| self.has(d, file);
        for d in dirs {
            if f.cpu.is_none() {
                // v1's cpu controller has a cpu.stat too, without usage.
                if has(d, "cpu.stat")
                    && read(d, "cpu.stat").is_some_and(|t| cpu_stat_usec(&t).is_some())
                {
                    f.cpu = Some((d.join("cpu.stat"), Cpu::V2));
                } else if has(d, "cpuacct.usage") {
                    f.cpu = Some((d.join("cpuacct.usage"), Cpu::V1));
                }
            }
            if f.memory.is_none() {
                for (cur, peak) in [
                    ("memory.current", "memory.peak"),
                    ("memory.usage_in_bytes", "memory.max_usage_in_bytes"),
                ] {
                    if has(d, cur) {
                        let peak = has(d, peak).then(|| d.join(peak));
                        f.memory = Some((d.join(cur), peak));
                        break;
                    }
                }
            }
            if f.pids.is_none() && has(d, "pids.current") {
                f.pids = Some(d.join("pids.current"));
            }
            if f.io.is_none() {
                if has(d, "io.stat") {
                    f.io = Some((d.join("io.stat"), Io::V2));
                } else if has(d, "blkio.throttle.io_service_bytes") {
                    f.io = Some((d.join("blkio.throttle.io_service_bytes"), Io::V1));
                }
            }
            if f.procs.is_none() && has(d, "cgroup.procs") {
                f.procs = Some(d.clone());
            }
        }
        f
    }
}

fn read_path(p: &Path) -> Option<String> {
    slurp(p)
}

/// The CPU time alone: all a first sample needs, as only the CPU figure is
/// a difference of two.
pub fn sample_cpu(files: &Files) -> Sample {
    Sample {
        cpu_usec: files.cpu.as_ref().and_then(|(p, kind)| {
            let t = read_path(p)?;
            match kind {
                Cpu::V2 => cpu_stat_usec(&t),
                Cpu::V1 => number(&t).map(|ns| ns / 1000),
            }
        }),
        ..Sample::default()
    }
}

/// The counters of the subhost whose cgroup files are `files` and whose
/// cables' host ends are `cables`, with `net` the host's interface
/// counters of this round.
pub fn sample(files: &Files, cables: &[String], net: &NetCounters) -> Sample {
    let mut s = sample_cpu(files);
    if let Some((cur, peak)) = &files.memory {
        s.memory = read_path(cur).and_then(|t| number(&t));
        s.memory_peak = peak.as_deref().and_then(read_path).and_then(|t| number(&t));
        s.memory_source = s.memory.map(|_| Origin::Cgroup);
        s.memory_peak_source = s.memory_peak.map(|_| Origin::Cgroup);
    }
    s.pids = files
        .pids
        .as_deref()
        .and_then(read_path)
        .and_then(|t| number(&t));
    if let Some((p, kind)) = &files.io {
        if let Some(t) = read_path(p) {
            let (r, w) = match kind {
                Io::V2 => io_stat(&t),
                Io::V1 => blkio_service_bytes(&t),
            };
            (s.io_read, s.io_written) = (Some(r), Some(w));
            s.io_source = Some(Origin::Cgroup);
        }
    }
    if s.pids.is_none() || s.memory.is_none() || s.io_read.is_none() {
        let mut procs = Vec::new();
        if let Some(d) = &files.procs {
            procs_below(d, &mut procs);
        }
        if s.pids.is_none() && files.procs.is_some() {
            s.pids = Some(procs.len() as u64);
        }
        if !procs.is_empty() && (s.memory.is_none() || s.io_read.is_none()) {
            let p = processes(&procs, s.io_read.is_none());
            if s.memory.is_none() {
                s.memory = Some(p.resident);
                s.memory_peak = Some(p.resident_peak.max(p.resident));
                s.memory_source = Some(Origin::Processes);
                s.memory_peak_source = Some(Origin::Processes);
            }
            if s.io_read.is_none() {
                (s.io_read, s.io_written) = (Some(p.io_read), Some(p.io_written));
                s.io_source = Some(Origin::Processes);
            }
        }
    }
    for c in cables {
        let Some(&(rx, tx)) = net.get(c) else {
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

impl Sample {
    /// Carries the peak the processes' sums reached in `earlier` samples
    /// of this run into this one: a process that ended took its
    /// high-water mark with it, but the run saw it.
    pub fn keep_peak_of(&mut self, earlier: &Sample) {
        if self.memory_peak_source == Some(Origin::Processes) {
            self.memory_peak = self.memory_peak.max(earlier.memory_peak);
        }
    }
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
    /// Where `memory_bytes`, `memory_peak_bytes` and the IO bytes come
    /// from: the cgroup's counters, or sums over its live processes.
    pub memory_source: Option<Origin>,
    pub memory_peak_source: Option<Origin>,
    pub io_source: Option<Origin>,
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
            memory_source: None,
            memory_peak_source: None,
            io_source: None,
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
        memory_source: b.memory_source,
        memory_peak_source: b.memory_peak_source,
        io_source: b.io_source,
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
        let net = net_dev("  web0: 5 1 0 0 0 0 0 0 9 2 0 0 0 0 0 0\n");
        let files = Finder::default().find(std::slice::from_ref(&d));
        let s = sample(&files, &["sht-no-such-link0".into(), "web0".into()], &net);
        assert_eq!(
            s,
            Sample {
                cpu_usec: Some(2_500_000),
                memory: Some(67_108_864),
                memory_peak: Some(70_000_000),
                pids: Some(3),
                io_read: Some(10),
                io_written: Some(20),
                memory_source: Some(Origin::Cgroup),
                memory_peak_source: Some(Origin::Cgroup),
                io_source: Some(Origin::Cgroup),
                net: vec![Net {
                    cable: "web0".into(),
                    receive_bytes: 9,
                    transmit_bytes: 5,
                }],
            }
        );
        fs::write(d.join("memory.current"), "1\n").unwrap();
        assert_eq!(sample(&files, &[], &net).memory, Some(1));
        fs::write(d.join("pids.current"), "7\n").unwrap();
        let files = Finder::default().find(std::slice::from_ref(&d));
        assert_eq!(sample(&files, &[], &net).pids, Some(7));
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
    fn proc_files_parse() {
        let status = "Name:\tsh\nVmPeak:\t  9000 kB\nVmHWM:\t  65600 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(65600 * 1024));
        assert_eq!(status_kib(status, "VmRSS"), Some(1024 * 1024));
        assert_eq!(status_kib(status, "VmSwap"), None);
        let io = "rchar: 100\nwchar: 200\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\n\
                  write_bytes: 10485760\ncancelled_write_bytes: 0\n";
        assert_eq!(proc_io(io), (4096, 10_485_760));
        let dev = "Inter-|   Receive                            |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes ...\n    \
                   lo:  100 1 0 0 0 0 0 0  200 2 0 0 0 0 0 0\n\
                   shtab0: 7 1 0 0 0 0 0 0 8 1 0 0 0 0 0 0\n";
        let n = net_dev(dev);
        assert_eq!(n.get("lo"), Some(&(100, 200)));
        assert_eq!(n.get("shtab0"), Some(&(7, 8)));
        assert_eq!(n.len(), 2);
    }

    #[test]
    fn a_peak_from_processes_is_kept_across_samples() {
        let earlier = Sample {
            memory: Some(90),
            memory_peak: Some(100),
            memory_source: Some(Origin::Processes),
            memory_peak_source: Some(Origin::Processes),
            ..Sample::default()
        };
        let mut now = Sample {
            memory: Some(10),
            memory_peak: Some(20),
            ..earlier.clone()
        };
        now.keep_peak_of(&earlier);
        assert_eq!(now.memory_peak, Some(100));
        // The kernel's own peak is never raised by what stats saw.
        let mut cg = Sample {
            memory_peak: Some(20),
            memory_peak_source: Some(Origin::Cgroup),
            ..Sample::default()
        };
        cg.keep_peak_of(&earlier);
        assert_eq!(cg.memory_peak, Some(20));
    }

    /// Without a memory controller, the figures of the live processes
    /// listed in `cgroup.procs`: this test's own.
    #[test]
    fn without_memory_or_io_files_the_processes_count() {
        let d = std::env::temp_dir().join(format!("subhost-test-statsp-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("cpu.stat"), "usage_usec 1\n").unwrap();
        fs::write(d.join("cgroup.procs"), format!("{}\n", std::process::id())).unwrap();
        fs::write(d.join("cgroup.stat"), "nr_descendants 0\n").unwrap();
        let s = sample(
            &Finder::default().find(std::slice::from_ref(&d)),
            &[],
            &NetCounters::new(),
        );
        for f in ["cpu.stat", "cgroup.procs", "cgroup.stat"] {
            let _ = fs::remove_file(d.join(f));
        }
        let _ = fs::remove_dir(&d);
        assert_eq!(s.pids, Some(1));
        assert_eq!(s.memory_source, Some(Origin::Processes));
        assert_eq!(s.io_source, Some(Origin::Processes));
        assert!(s.memory.unwrap() > 0, "{s:?}");
        assert!(s.memory_peak >= s.memory, "{s:?}");
        assert!(s.io_read.is_some() && s.io_written.is_some(), "{s:?}");
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
            memory_source: Some(Origin::Cgroup),
            memory_peak_source: None,
            io_source: None,
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
