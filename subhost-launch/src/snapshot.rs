//! Snapshots: copies of a subhost's files (its `root/`, or its image file)
//! in `NAME/snapshots/TAG/`, each with a `snapshot.json` saying when it
//! was taken and how much it holds. A copy, or extents shared where the
//! filesystem can (btrfs, XFS): either way a later change of the subhost
//! leaves the snapshot as it was.
//!
//! A running subhost is frozen (its cgroup) while its files are copied,
//! so the copy is consistent as at one instant; it is thawed on every
//! path. A rollback needs the subhost stopped: a hibernating one has its
//! root mounted, and an overlay's upper layer must not be swapped under
//! it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::clone::{Kind, Source};
use crate::files::copy;
use crate::files::tree::remove_tree_mount_free;
use crate::layout::Layout;
use crate::status::State;

/// How long a running subhost may take to freeze.
const FREEZE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub tag: String,
    /// UTC, RFC 3339.
    pub date: String,
    pub kind: String,
    /// Allocated bytes of the copy.
    pub bytes: u64,
}

fn dir_of(layout: &Layout) -> PathBuf {
    layout.dir.join("snapshots")
}

/// A tag is a file name: 1-64 of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && !tag.starts_with('.')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        bail!(
            "invalid snapshot tag {tag:?}: use 1-64 characters of A-Z, a-z, 0-9, ., _ and -, \
             not starting with ."
        );
    }
    Ok(())
}

/// `t` as UTC: the RFC 3339 date and the compact default tag.
pub fn utc(t: SystemTime) -> (String, String) {
    let u = crate::clock::Utc::of(t);
    (
        u.rfc3339(),
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            u.year, u.month, u.day, u.hour, u.minute, u.second
        ),
    )
}

pub fn take(base: &Path, name: &str, tag: Option<&str>) -> Result<()> {
    // Held while copying: a stop (or a start of a stopped subhost) waits.
    let (s, _lock) = Source::open_locked(base, name, &[])?;
    let now = SystemTime::now();
    let (date, default_tag) = utc(now);
    let tag = tag.unwrap_or(&default_tag).to_string();
    check_tag(&tag)?;
    if s.state == State::Broken {
        s.require_still("a snapshot")?;
    }
    let snaps = dir_of(&s.layout);
    if !snaps.is_dir() {
        fs::create_dir(&snaps).with_context(|| format!("cannot create {}", snaps.display()))?;
    }
    let dir = snaps.join(&tag);
    fs::create_dir(&dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
            "subhost {name} has a snapshot {tag} already (choose another tag, or \
             `subhost-launch snapshot --remove {name} {tag}` first)"
        ),
        _ => anyhow::Error::new(e).context(format!("cannot create {}", dir.display())),
    })?;
    let started = std::time::Instant::now();
    let copied = copy_now(&s, &dir);
    let totals = match copied {
        Ok(t) => t,
        Err(e) => {
            if let Err(r) = remove_tree_mount_free(&dir) {
                return Err(e.context(format!("and the partial snapshot stays: {r}")));
            }
            return Err(e);
        }
    };
    let meta = Meta {
        tag: tag.clone(),
        date,
        kind: s.kind.as_str().into(),
        bytes: totals.bytes,
    };
    let json = serde_json::to_string_pretty(&meta).expect("plain data");
    fs::write(dir.join("snapshot.json"), json + "\n")
        .with_context(|| format!("cannot write {}", dir.join("snapshot.json").display()))?;
    println!(
        "snapshot {tag} of subhost {name}: {} MiB in {} ms{}",
        totals.bytes >> 20,
        started.elapsed().as_millis(),
        if s.state == State::Running {
            " (frozen meanwhile)"
        } else {
            ""
        }
    );
    Ok(())
}

/// The files into `dir`, frozen while the subhost runs.
fn copy_now(s: &Source, dir: &Path) -> Result<copy::Totals> {
    let _frozen = match s.state {
        State::Running => {
            let name = &s.layout.name;
            let cg = crate::state::recorded_cgroup(name)
                .and_then(|d| crate::cgroup::open_dirs(&d))
                .or_else(|| crate::cgroup::open(name, s.cfg.cgroup_parent.as_deref()))
                .with_context(|| format!("subhost {name} runs, but its cgroup is not found"))?;
            Some(cg.freeze(FREEZE_WAIT)?)
        }
        _ => None,
    };
    match s.kind {
        Kind::Image => {
            s.sync_image()?;
            crate::clone::copy_image(&s.layout.image(), &dir.join("image"))
        }
        Kind::Overlay | Kind::Plain => {
            copy::copy_tree(&s.layout.root(false), &dir.join("root"), None)
        }
    }
}

fn read_all(layout: &Layout) -> Result<Vec<Meta>> {
    let snaps = dir_of(layout);
    let entries = match fs::read_dir(&snaps) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", snaps.display())),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path().join("snapshot.json");
        // A snapshot still being taken (or cut short) has no snapshot.json.
        let Ok(text) = crate::files::read_text(&path, crate::files::RECORD_MAX) else {
            continue;
        };
        let meta: Meta = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a snapshot record; restore or remove it",
                path.display()
            )
        })?;
        out.push(meta);
    }
    out.sort_by(|a, b| (&a.date, &a.tag).cmp(&(&b.date, &b.tag)));
    Ok(out)
}

pub fn list(base: &Path, name: &str, json: bool) -> Result<()> {
    let layout = Layout::new(base, name)?;
    if !crate::status::is_subhost(&layout.dir) {
        bail!("no subhost {name} in {}", base.display());
    }
    let all = read_all(&layout)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&all).expect("plain data")
        );
        return Ok(());
    }
    println!("{:<24} {:<22} {:>10}", "TAG", "DATE", "SIZE");
    for m in &all {
        println!(
            "{:<24} {:<22} {:>8}Mi",
            m.tag,
            m.date,
            m.bytes.div_ceil(1 << 20)
        );
    }
    Ok(())
}

fn existing(layout: &Layout, tag: &str) -> Result<PathBuf> {
    check_tag(tag)?;
    let dir = dir_of(layout).join(tag);
    if !dir.join("snapshot.json").is_file() {
        bail!(
            "subhost {} has no snapshot {tag} (see `subhost-launch snapshots {}`)",
            layout.name,
            layout.name
        );
    }
    Ok(dir)
}

pub fn remove(base: &Path, name: &str, tag: &str) -> Result<()> {
    let layout = Layout::new(base, name)?;
    let dir = existing(&layout, tag)?;
    remove_tree_mount_free(&dir).with_context(|| format!("cannot remove snapshot {tag}"))?;
    println!("removed snapshot {tag} of subhost {name}");
    Ok(())
}

pub fn rollback(base: &Path, name: &str, tag: &str) -> Result<()> {
    // A start waits until the root is back in place.
    let (s, _lock) = Source::open_locked(base, name, &[])?;
    let dir = existing(&s.layout, tag)?;
    match s.state {
        State::Stopped => {}
        other => bail!(
            "subhost {name} is {}: rollback needs it stopped, since its root is mounted \
             until then (`subhost-launch stop {name}`)",
            other.as_str()
        ),
    }
    let d = &s.layout.dir;
    match s.kind {
        Kind::Image => {
            let src = dir.join("image");
            if !src.is_file() {
                bail!("snapshot {tag} holds no image, and subhost {name} has one");
            }
            let tmp = d.join(format!(".{name}.img.rollback"));
            let _ = fs::remove_file(&tmp);
            crate::clone::copy_image(&src, &tmp)?;
            fs::rename(&tmp, s.layout.image())
                .with_context(|| format!("cannot rename {} into place", tmp.display()))?;
        }
        Kind::Overlay | Kind::Plain => {
            let src = dir.join("root");
            if !src.is_dir() {
                bail!("snapshot {tag} holds no root/, and subhost {name} keeps one");
            }
            let new = d.join(".root.rollback");
            let old = d.join(".root.old");
            for p in [&new, &old] {
                if p.symlink_metadata().is_ok() {
                    bail!(
                        "{} exists: an earlier rollback was interrupted (look inside, and \
                         remove it)",
                        p.display()
                    );
                }
            }
            if let Err(e) = copy::copy_tree(&src, &new, None) {
                let _ = remove_tree_mount_free(&new);
                return Err(e);
            }
            let root = s.layout.root(false);
            fs::rename(&root, &old).with_context(|| format!("cannot rename {}", root.display()))?;
            fs::rename(&new, &root).with_context(|| format!("cannot rename {}", new.display()))?;
            remove_tree_mount_free(&old)
                .with_context(|| format!("rolled back, but cannot remove {}", old.display()))?;
        }
    }
    println!("subhost {name} rolled back to snapshot {tag}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn dates_and_tags() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_653_680);
        assert_eq!(
            utc(t),
            ("2026-12-07T14:28:00Z".into(), "20261207T142800Z".into())
        );
        assert_eq!(utc(UNIX_EPOCH).0, "1970-01-01T00:00:00Z");
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(951_782_400)).0,
            "2000-02-29T00:00:00Z"
        );
        for ok in ["a", "before-upgrade", "20261207T142800Z", "v1.2_x"] {
            check_tag(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", ".hidden", "a b", &"x".repeat(65)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }
}
