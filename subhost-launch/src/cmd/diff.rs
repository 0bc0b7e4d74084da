//! `diff`: what a subhost changed over its lower layers. The reading is
//! `diff`'s (the module); here the subhost's layers are found and the
//! changes printed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::layout::Layout;

pub fn diff(subhost_dir: &Path, name: &str, json: bool) -> Result<()> {
    let layout = Layout::new(subhost_dir, name)?;
    if !layout.dir.is_dir() {
        bail!("no subhost {name} in {}", subhost_dir.display());
    }
    let cfg = crate::config::load(&layout.config(), name, subhost_dir)?;
    let image = layout.image_present();
    if cfg.lower.is_empty() {
        bail!(
            "subhost {name} has no LOWER: its root is a plain tree{}, all of it its own, with \
             nothing under it to compare with",
            if image { " in its image" } else { "" }
        );
    }
    if image {
        let (mnt, dir) = (layout.mnt(), &layout.dir);
        let mounted = std::fs::metadata(&mnt)
            .and_then(|m| std::fs::metadata(dir).map(|d| m.dev() != d.dev()))
            .unwrap_or(false);
        if !mounted {
            bail!(
                "subhost {name} keeps its upper layer in {}, which is not mounted: start it \
                 (a hibernating subhost keeps it mounted), then run diff again",
                layout.image().display()
            );
        }
    }
    let upper = layout.root(image);
    let shift = if cfg.userns.is_some() {
        crate::userns::read_record(&layout)?
    } else {
        None
    };
    let changes = crate::diff::diff(&upper, &cfg.lower, shift).with_context(|| {
        format!(
            "subhost {name}: cannot read its upper layer {}",
            upper.display()
        )
    })?;
    if json {
        println!("{}", serde_json::to_string(&changes)?);
        return Ok(());
    }
    for c in &changes {
        let mark = match c.change {
            "added" => 'A',
            "deleted" => 'D',
            _ => 'M',
        };
        let what = match (c.what, c.details.is_empty()) {
            (Some("metadata"), false) => format!("metadata: {}", c.details.join(", ")),
            (Some(w), _) => w.to_string(),
            (None, _) => c.kind.to_string(),
        };
        let size = if c.kind == "file" {
            format!(", {}", super::list::human_bytes(c.size))
        } else {
            String::new()
        };
        println!("{mark} {} ({what}{size})", c.path);
    }
    Ok(())
}
