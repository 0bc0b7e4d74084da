//! `base import`, `base list`, `base remove`: the bases subhosts overlay.
//! The work is `bases`'.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::bases::{self, Manifest};

pub fn import(subhost_dir: &Path, name: &str, source: &Path) -> Result<()> {
    let m = bases::import(subhost_dir, name, source)?;
    println!(
        "base {}: imported from {} ({}): {} files, {}, {}",
        m.name,
        m.source,
        m.kind,
        m.files,
        super::list::human_bytes(m.bytes),
        m.digest
    );
    println!(
        "next: subhost-launch create NAME --base {} (its LOWER is {})",
        m.name,
        bases::base_root(subhost_dir, &m.name).display()
    );
    Ok(())
}

/// One base as `base list --json` shows it.
#[derive(Serialize)]
struct Listed {
    #[serde(flatten)]
    manifest: Manifest,
    /// Subhosts whose LOWER is in it.
    used_by: Vec<String>,
    problems: Vec<String>,
}

pub fn list(subhost_dir: &Path, json: bool) -> Result<()> {
    let mut all = Vec::new();
    for name in bases::names(subhost_dir)? {
        let mut problems = Vec::new();
        let manifest = bases::manifest(subhost_dir, &name).unwrap_or_else(|e| {
            problems.push(format!("{e:#}"));
            Manifest {
                name: name.clone(),
                source: String::new(),
                kind: String::new(),
                digest: String::new(),
                date: String::new(),
                files: 0,
                bytes: 0,
            }
        });
        let used_by = bases::users(subhost_dir, &name).unwrap_or_else(|e| {
            problems.push(format!("{e:#}"));
            Vec::new()
        });
        all.push(Listed {
            manifest,
            used_by,
            problems,
        });
    }
    let leftovers = bases::leftovers(subhost_dir);
    if json {
        println!("{}", serde_json::to_string(&all)?);
    } else {
        let rows: Vec<[String; 7]> = all
            .iter()
            .map(|b| {
                let m = &b.manifest;
                [
                    m.name.clone(),
                    m.kind.clone(),
                    m.files.to_string(),
                    super::list::human_bytes(m.bytes),
                    m.date.clone(),
                    m.digest.chars().take(19).collect(),
                    if b.used_by.is_empty() {
                        "-".into()
                    } else {
                        b.used_by.join(",")
                    },
                ]
            })
            .collect();
        let head = ["NAME", "KIND", "FILES", "SIZE", "DATE", "DIGEST", "USED BY"];
        let mut widths = head.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:w$}  "));
                }
            }
            println!("{s}");
        };
        if !rows.is_empty() {
            line(head.to_vec());
        }
        for r in &rows {
            line(r.iter().map(String::as_str).collect());
        }
        for b in &all {
            for p in &b.problems {
                println!("base {}: {p}", b.manifest.name);
            }
        }
    }
    for l in leftovers {
        eprintln!(
            "{}: left by an import or removal that was killed; remove it with rm -r --one-file-system",
            l.display()
        );
    }
    Ok(())
}

pub fn remove(subhost_dir: &Path, name: &str) -> Result<()> {
    bases::remove(subhost_dir, name)?;
    println!("base {name}: removed");
    Ok(())
}
