//! `list` and `status`: print what state each subhost is in (see
//! `status`, which reads it from the kernel), as a table, a block or JSON.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::layout::Layout;
use crate::status::{self, Cable, Report};

/// Pretty JSON, two spaces per level, keys in declaration order.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("reports hold only strings, numbers and bools")
}

pub fn list(base: &Path, json: bool) -> Result<()> {
    let reports = status::observe_all(base, json)?;
    if json {
        println!("{}", to_json(&reports));
    } else if reports.is_empty() {
        println!("no subhosts in {}", base.display());
    } else {
        print!("{}", table(&reports));
    }
    Ok(())
}

pub fn status(base: &Path, name: &str, json: bool) -> Result<()> {
    let layout = Layout::new(base, name)?;
    if !status::is_subhost(&layout.dir) {
        bail!(
            "no subhost {name}: {} is not a directory with a config or root \
             (`subhost-launch list` shows the subhosts there; `subhost-launch create {name}` makes one)",
            layout.dir.display()
        );
    }
    let report = status::observe_one(&layout)?;
    if json {
        println!("{}", to_json(&report));
    } else {
        print!("{}", block(&report));
    }
    Ok(())
}

fn root_kind(r: &Report) -> String {
    let kind = r.root.unwrap_or("?");
    if r.image {
        format!("{kind}+image")
    } else {
        kind.to_string()
    }
}

fn cable_summary(c: &Cable) -> String {
    format!("{}:{}", c.host, c.bridge.as_deref().unwrap_or("-"))
}

fn table(reports: &[Report]) -> String {
    let header = ["NAME", "STATE", "PID", "UPTIME", "ROOT", "CABLES"].map(String::from);
    let rows: Vec<[String; 6]> = reports
        .iter()
        .map(|r| {
            let cables: Vec<String> = r.cables.iter().map(cable_summary).collect();
            [
                r.name.clone(),
                r.state.as_str().to_string(),
                r.pid.map_or("-".into(), |p| p.to_string()),
                r.uptime.map_or("-".into(), human_duration),
                root_kind(r),
                if cables.is_empty() {
                    "-".into()
                } else {
                    cables.join(",")
                },
            ]
        })
        .collect();
    let mut width = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(width).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for r in reports {
        for w in &r.warnings {
            let _ = writeln!(out, "{}: warning: {w}", r.name);
        }
        for p in &r.problems {
            let _ = writeln!(out, "{}: {p}", r.name);
        }
    }
    out
}

fn block(r: &Report) -> String {
    let mut out = String::new();
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "name:     {}", r.name);
    let _ = writeln!(out, "dir:      {}", r.dir.display());
    let _ = writeln!(out, "state:    {}", r.state.as_str());
    let _ = writeln!(out, "pid:      {}", dash(r.pid.map(|p| p.to_string())));
    let _ = writeln!(out, "uptime:   {}", dash(r.uptime.map(human_duration)));
    let _ = writeln!(out, "root:     {}", root_kind(r));
    if let Some(b) = &r.base {
        let _ = writeln!(out, "base:     {b}");
    }
    if r.cables.is_empty() {
        let _ = writeln!(out, "cables:   none");
    }
    for (i, c) in r.cables.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}{}  bridge {}  mac {}  host end {}{}",
            if i == 0 { "cables:   " } else { "          " },
            c.host,
            c.bridge.as_deref().unwrap_or("-"),
            c.mac.as_deref().unwrap_or("auto"),
            if c.present { "up" } else { "absent" },
            if c.addresses.is_empty() {
                String::new()
            } else {
                format!("  addresses {}", c.addresses.join(" "))
            }
        );
    }
    for (i, p) in r.published.iter().enumerate() {
        let head = if i == 0 { "publish:  " } else { "          " };
        let _ = writeln!(out, "{head}{p}");
    }
    if let Some(u) = r.userns {
        let _ = writeln!(
            out,
            "userns:   host ids {}..{} (root inside is host uid {})",
            u.base,
            u.end() - 1,
            u.base
        );
    }
    if r.memory.is_some() || r.pids.is_some() {
        let _ = writeln!(out, "memory:   {}", dash(r.memory.map(human_bytes)));
        let _ = writeln!(out, "pids:     {}", dash(r.pids.map(|p| p.to_string())));
    }
    for (i, s) in r.services.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}{}  {}  pid {}  up {}  restarts {}  last exit {}  health {}",
            if i == 0 { "services: " } else { "          " },
            s.name,
            s.state,
            dash(s.pid.map(|p| p.to_string())),
            dash(s.uptime.map(|u| human_duration(Duration::from_secs(u)))),
            s.restarts,
            dash(s.last_exit.map(|c| c.to_string())),
            s.health
        );
    }
    if let Some(a) = &r.activation {
        let last = a.last_wake_ms.map(|ms| {
            crate::clock::Utc::of(std::time::UNIX_EPOCH + Duration::from_millis(ms)).rfc3339()
        });
        let _ = writeln!(
            out,
            "activation: {}  wakes {}  last wake {}",
            a.state,
            a.wakes,
            dash(last)
        );
    }
    let short: Vec<&str> = r
        .caps
        .iter()
        .map(|c| c.strip_prefix("CAP_").unwrap_or(c))
        .collect();
    let _ = writeln!(out, "caps:     {}", short.join(" "));
    let seccomp = match (r.seccomp, r.syscalls_allow.is_empty()) {
        (Some(true), true) => "on".to_string(),
        (Some(true), false) => format!("on, allowing {}", r.syscalls_allow.join(" ")),
        (Some(false), _) => "off".to_string(),
        (None, _) => "-".to_string(),
    };
    let _ = writeln!(out, "seccomp:  {seccomp}");
    if !r.devices.is_empty() {
        let _ = writeln!(out, "devices:  {}", r.devices.join(", "));
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning:  {w}");
    }
    if r.problems.is_empty() {
        let _ = writeln!(out, "problems: none");
    }
    for (i, p) in r.problems.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}{p}",
            if i == 0 { "problems: " } else { "          " }
        );
    }
    out
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests;
