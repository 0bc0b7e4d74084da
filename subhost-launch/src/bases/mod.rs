//! Bases: read-only trees that subhosts overlay (their `LOWER`), imported
//! once from a directory, a tarball or an OCI image layout and shared by
//! many subhosts.
//!
//! A base NAME lives in `$SUBHOST/.bases/NAME/`: `root/` (the tree, owned
//! and moded as imported; nothing of subhost ever writes it, and overlays
//! never write their lower layers) and `manifest.json` (what was imported,
//! from where, its digest, see `digest`). An import is built in
//! `$SUBHOST/.bases/.NAME.partial-PID` and renamed into place only once
//! whole; a failed one is removed (a tree walk that never leaves its
//! mount), so nothing half-written is ever a base.

pub mod archive;
pub mod build;
pub mod copy;
pub mod digest;
pub mod oci;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

// What other commands compare bases by (a received subhost's base must
// match the sender's).
#[allow(unused_imports)]
pub use digest::digest;

use crate::files::tree::remove_tree_mount_free;
use crate::layout;

/// Where bases live in `$SUBHOST`; a name no subhost can have.
pub const DIR: &str = ".bases";

/// Largest manifest read: a few hundred bytes.
const MANIFEST_MAX: u64 = 1 << 20;

/// `$SUBHOST/.bases/manifest.json`, as written at import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// What was imported, as given.
    pub source: String,
    /// `dir`, `tar` or `oci`.
    pub kind: String,
    /// `sha256:…` of the tree's canonical listing (see `digest`).
    pub digest: String,
    /// When it was imported, RFC 3339 UTC.
    pub date: String,
    /// Entries below the root.
    pub files: u64,
    /// Sizes of the regular files.
    pub bytes: u64,
}

pub fn bases_dir(subhost_dir: &Path) -> PathBuf {
    subhost_dir.join(DIR)
}

/// `$SUBHOST/.bases/NAME`.
pub fn base_dir(subhost_dir: &Path, name: &str) -> PathBuf {
    bases_dir(subhost_dir).join(name)
}

/// `$SUBHOST/.bases/NAME/root`: what a subhost's LOWER is set to.
pub fn base_root(subhost_dir: &Path, name: &str) -> PathBuf {
    base_dir(subhost_dir, name).join("root")
}

/// A base's name follows the rules of subhost names.
pub fn validate_name(name: &str) -> Result<()> {
    layout::validate_name(name).map_err(|e| {
        anyhow!(
            "invalid base name {:?}: {} (use 1-{} characters of a-z, 0-9, _ and -)",
            e.name,
            e.why,
            layout::NAME_MAX
        )
    })
}

/// The manifest of base NAME.
pub fn manifest(subhost_dir: &Path, name: &str) -> Result<Manifest> {
    validate_name(name)?;
    let dir = base_dir(subhost_dir, name);
    if !dir.is_dir() {
        bail!(
            "no base {name} in {} (`subhost-launch base list` shows the bases; `base import {name} SOURCE` makes it)",
            bases_dir(subhost_dir).display()
        );
    }
    let path = dir.join("manifest.json");
    let text = crate::files::read_capped(&path, MANIFEST_MAX)
        .with_context(|| format!("base {name}: cannot read {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| {
        format!(
            "base {name}: {} is damaged (remove the base and import it again)",
            path.display()
        )
    })
}

/// The bases in `$SUBHOST`, sorted by name.
pub fn names(subhost_dir: &Path) -> Result<Vec<String>> {
    let dir = bases_dir(subhost_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| layout::validate_name(n).is_ok() && dir.join(n).is_dir())
        .collect();
    out.sort();
    Ok(out)
}

/// Leftovers of imports or removals that were killed: named by `list`,
/// with how to remove them.
pub fn leftovers(subhost_dir: &Path) -> Vec<PathBuf> {
    let dir = bases_dir(subhost_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.as_bytes();
            n.starts_with(b".")
                && (n.windows(9).any(|w| w == b".partial-")
                    || n.windows(10).any(|w| w == b".removing-"))
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// The base NAME if `lower` is in it (`$SUBHOST/.bases/NAME/…`).
pub fn base_of(subhost_dir: &Path, lower: &Path) -> Option<String> {
    let bases = bases_dir(subhost_dir);
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (bases, lower) = (canon(&bases), canon(lower));
    let rest = lower.strip_prefix(&bases).ok()?;
    let name = rest.components().next()?.as_os_str().to_str()?;
    layout::validate_name(name).ok()?;
    Some(name.to_string())
}

/// The subhosts whose LOWER is in base NAME. A config that cannot be read
/// is an error: then nobody can tell whether it uses the base.
pub fn users(subhost_dir: &Path, name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for sub in crate::status::subhosts(subhost_dir)? {
        let l = layout::Layout::new(subhost_dir, &sub)?;
        let cfg = crate::config::load(&l.config(), &sub, subhost_dir)
            .with_context(|| format!("cannot tell whether subhost {sub} uses base {name}"))?;
        if cfg
            .lower
            .iter()
            .any(|p| base_of(subhost_dir, p).as_deref() == Some(name))
        {
            out.push(sub);
        }
    }
    Ok(out)
}

/// What an import reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Dir,
    Tar,
    Oci,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Dir => "dir",
            SourceKind::Tar => "tar",
            SourceKind::Oci => "oci",
        }
    }

    /// What `source` is: a directory (an OCI layout when it has
    /// `oci-layout` and `index.json`), else a file read as a tarball.
    pub fn of(source: &Path) -> Result<SourceKind> {
        let md = std::fs::metadata(source)
            .with_context(|| format!("cannot read the source {}", source.display()))?;
        if md.is_dir() {
            Ok(if oci::is_layout(source) {
                SourceKind::Oci
            } else {
                SourceKind::Dir
            })
        } else if md.is_file() {
            Ok(SourceKind::Tar)
        } else {
            bail!(
                "the source {} is neither a directory nor a file (give a directory, a .tar, \
                 .tar.gz or .tar.zst, or an OCI image layout)",
                source.display()
            )
        }
    }
}

/// Imports `source` as base NAME, whole or not at all.
pub fn import(subhost_dir: &Path, name: &str, source: &Path) -> Result<Manifest> {
    validate_name(name)?;
    let kind = SourceKind::of(source)?;
    let bases = bases_dir(subhost_dir);
    let final_dir = base_dir(subhost_dir, name);
    if std::fs::symlink_metadata(&final_dir).is_ok() {
        bail!(
            "base {name} exists already ({}): remove it first with `subhost-launch base remove {name}`, \
             or import under another name",
            final_dir.display()
        );
    }
    if !subhost_dir.is_dir() {
        bail!(
            "{} does not exist (make it, or give --subhost-dir)",
            subhost_dir.display()
        );
    }
    match std::fs::create_dir(&bases) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot make {}", bases.display())),
    }
    let partial = bases.join(format!(".{name}.partial-{}", std::process::id()));
    std::fs::create_dir(&partial).with_context(|| format!("cannot make {}", partial.display()))?;
    let result = build_into(subhost_dir, name, source, kind, &partial)
        .and_then(|m| rename_noreplace(&partial, &final_dir).map(|()| m));
    if result.is_err() {
        if let Err(e) = remove_tree_mount_free(&partial) {
            log::warn!(
                "could not remove the partial import {}: {e}",
                partial.display()
            );
        }
    }
    result.with_context(|| {
        format!(
            "base {name}: import of {} failed, nothing kept",
            source.display()
        )
    })
}

fn build_into(
    subhost_dir: &Path,
    name: &str,
    source: &Path,
    kind: SourceKind,
    partial: &Path,
) -> Result<Manifest> {
    let root = partial.join("root");
    std::fs::create_dir(&root).with_context(|| format!("cannot make {}", root.display()))?;
    let mut tree = build::Tree::new(&root);
    match kind {
        SourceKind::Dir => {
            let skip = std::fs::metadata(bases_dir(subhost_dir))
                .ok()
                .map(|m| (m.dev(), m.ino()));
            copy::import(source, &mut tree, skip)?;
        }
        SourceKind::Tar => {
            let file = crate::files::open_regular(source)
                .with_context(|| format!("cannot open {}", source.display()))?;
            let reader = archive::decompressed(file)?;
            archive::apply(reader, &mut tree, archive::Whiteouts::Keep)?;
        }
        SourceKind::Oci => oci::import(source, &mut tree)?,
    }
    tree.finish()?;
    let summary = digest::summarize(&root)?;
    let m = Manifest {
        name: name.to_string(),
        source: source.to_string_lossy().into_owned(),
        kind: kind.as_str().to_string(),
        digest: summary.digest,
        date: rfc3339_now(),
        files: summary.files,
        bytes: summary.bytes,
    };
    let mut text = serde_json::to_string_pretty(&m)?;
    text.push('\n');
    std::fs::write(partial.join("manifest.json"), text).context("cannot write manifest.json")?;
    Ok(m)
}

fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    match crate::sys::rename_noreplace(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => bail!(
            "{} appeared meanwhile (another import of the same name?)",
            to.display()
        ),
        Err(e) => {
            Err(e).with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))
        }
    }
}

/// Removes base NAME, refused while a subhost's LOWER is in it.
pub fn remove(subhost_dir: &Path, name: &str) -> Result<()> {
    validate_name(name)?;
    if !base_dir(subhost_dir, name).is_dir() {
        bail!("no base {name} in {}", bases_dir(subhost_dir).display());
    }
    let users = users(subhost_dir, name)?;
    if !users.is_empty() {
        bail!(
            "base {name} is used by subhost{} {}: change their LOWER (or remove them) first",
            if users.len() > 1 { "s" } else { "" },
            users.join(", ")
        );
    }
    let dir = base_dir(subhost_dir, name);
    // Renamed first: from then on no `create --base` finds it half gone.
    let doomed = bases_dir(subhost_dir).join(format!(".{name}.removing-{}", std::process::id()));
    rename_noreplace(&dir, &doomed)?;
    remove_tree_mount_free(&doomed).with_context(|| {
        format!(
            "base {name}: renamed to {} but not removed whole (remove what is left by hand)",
            doomed.display()
        )
    })
}

/// Now as RFC 3339 UTC, to the second.
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339(secs)
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: i64) -> String {
    crate::clock::Utc::of_secs(secs).rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_641_712), "2026-12-07T11:08:32Z");
    }

    #[test]
    fn bases_of_lowers() {
        let b = Path::new("/nonexistent-subhost");
        assert_eq!(
            base_of(b, Path::new("/nonexistent-subhost/.bases/deb/root")).as_deref(),
            Some("deb")
        );
        assert_eq!(base_of(b, Path::new("/")), None);
        assert_eq!(
            base_of(
                b,
                Path::new("/nonexistent-subhost/.bases/.x.partial-1/root")
            ),
            None
        );
    }
}
