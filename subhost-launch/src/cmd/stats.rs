//! `stats`: what running subhosts use (see `stats`, which reads it), over
//! an interval, as a table, JSON or node-exporter text; `--watch` redraws
//! the table every interval.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::layout::Layout;
use crate::stats::{self, Sample, Stats};
use crate::{config, state, status};

pub struct Request {
    pub names: Vec<String>,
    pub json: bool,
    /// Seconds between redraws; `None` is one interval of 1 s.
    pub watch: Option<f64>,
    pub prometheus: Option<PathBuf>,
}

/// Where one subhost's counters are.
struct Source {
    name: String,
    /// Its cgroup's files, found once; `None` when it is not running.
    files: Option<stats::Files>,
    cables: Vec<String>,
}

fn sources(base: &Path, names: &[String]) -> Result<Vec<Source>> {
    let names = if names.is_empty() {
        status::subhosts(base)?
    } else {
        for n in names {
            let layout = Layout::new(base, n)?;
            if !status::is_subhost(&layout.dir) {
                bail!(
                    "no subhost {n}: {} is not a directory with a config or root \
                     (`subhost-launch list` shows the subhosts there)",
                    layout.dir.display()
                );
            }
        }
        names.to_vec()
    };
    let mut finder = stats::Finder::default();
    names
        .into_iter()
        .map(|name| {
            let layout = Layout::new(base, &name)?;
            let cfg = config::load(&layout.config(), &name, base)?;
            let cables = cfg.links(&name).into_iter().map(|l| l.host_if).collect();
            let files = state::running_init(&name)
                .and_then(|_| state::recorded_cgroup(&name))
                .map(|dirs| finder.find(&dirs));
            Ok(Source {
                name,
                files,
                cables,
            })
        })
        .collect()
}

/// The first round: CPU times alone, the one figure shown as a difference.
fn sample_cpu(srcs: &[Source]) -> Vec<Option<(Sample, Instant)>> {
    srcs.iter()
        .map(|s| Some((stats::sample_cpu(s.files.as_ref()?), Instant::now())))
        .collect()
}

/// One round: every running subhost sampled, with the host's interface
/// counters read once for all their cables; a peak of processes carried
/// over from the round before.
fn sample_all(
    srcs: &[Source],
    before: Option<&[Option<(Sample, Instant)>]>,
) -> Vec<Option<(Sample, Instant)>> {
    let net = stats::net_counters();
    srcs.iter()
        .enumerate()
        .map(|(i, s)| {
            let files = s.files.as_ref()?;
            let mut sample = stats::sample(files, &s.cables, &net);
            if let Some(Some((earlier, _))) = before.and_then(|b| b.get(i)) {
                sample.keep_peak_of(earlier);
            }
            Some((sample, Instant::now()))
        })
        .collect()
}

fn figures(
    srcs: &[Source],
    a: &[Option<(Sample, Instant)>],
    b: &[Option<(Sample, Instant)>],
) -> Vec<Stats> {
    srcs.iter()
        .zip(a.iter().zip(b))
        .map(|(s, (a, b))| {
            stats::over(
                &s.name,
                a.as_ref().map(|(x, t)| (x, *t)),
                b.as_ref().map(|(x, t)| (x, *t)),
            )
        })
        .collect()
}

pub fn stats(base: &Path, req: &Request) -> Result<()> {
    let srcs = sources(base, &req.names)?;
    let interval = Duration::from_secs_f64(req.watch.unwrap_or(1.0));
    if req.watch.is_some_and(|w| !(0.1..=86_400.0).contains(&w)) {
        bail!("--watch: give an interval from 0.1 to 86400 seconds");
    }
    let mut a = sample_cpu(&srcs);
    loop {
        std::thread::sleep(interval);
        let b = sample_all(&srcs, Some(&a));
        let all = figures(&srcs, &a, &b);
        if let Some(file) = &req.prometheus {
            write_atomically(file, &stats::prometheus(&all))?;
        }
        let mut out = std::io::stdout().lock();
        if req.json {
            let text = serde_json::to_string_pretty(&all).expect("plain data");
            writeln!(out, "{text}")?;
        } else if req.watch.is_some() {
            // Home, clear: the table redrawn in place, as top does.
            write!(out, "\x1b[H\x1b[2J{}", table(&all))?;
        } else if req.prometheus.is_none() {
            write!(out, "{}", table(&all))?;
        }
        out.flush()?;
        if req.watch.is_none() {
            return Ok(());
        }
        a = b;
    }
}

/// Writes `text` to a temporary file beside `file`, then renames it over
/// `file`: a reader (the node exporter) sees the old file or the new one,
/// never a part.
fn write_atomically(file: &Path, text: &str) -> Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let base = file
        .file_name()
        .with_context(|| format!("--prometheus {}: name a file", file.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        base.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", file.display()));
    }
    Ok(())
}

fn size(b: Option<u64>) -> String {
    let Some(b) = b else {
        return "-".into();
    };
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

fn table(all: &[Stats]) -> String {
    let mut rows = vec![[
        "NAME", "CPU%", "MEM", "PEAK", "PIDS", "IO-READ", "IO-WRITE", "NET-RX", "NET-TX",
    ]
    .map(String::from)
    .to_vec()];
    for s in all {
        if !s.running {
            let mut r = vec![s.name.clone(), "(not running)".into()];
            r.resize(9, String::new());
            rows.push(r);
            continue;
        }
        let net = |f: fn(&stats::Net) -> u64| {
            (!s.network.is_empty()).then(|| s.network.iter().map(f).sum::<u64>())
        };
        rows.push(vec![
            s.name.clone(),
            s.cpu_percent.map_or("-".into(), |p| format!("{p:.1}")),
            size(s.memory_bytes),
            size(s.memory_peak_bytes),
            s.pids.map_or("-".into(), |p| p.to_string()),
            size(s.io_read_bytes),
            size(s.io_written_bytes),
            size(net(|n| n.receive_bytes)),
            size(net(|n| n.transmit_bytes)),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
