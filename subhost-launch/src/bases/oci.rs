//! OCI image layouts (`oci-layout`, `index.json`, `blobs/ALG/HEX`): the
//! image's manifest is found through the index (one manifest, or the one
//! for this machine's architecture; nested indexes are followed), and its
//! layers are applied in order, each blob checked against the digest and
//! size its descriptor gives. Layers may be plain, gzip or zstd tar;
//! whiteouts are honoured, never kept.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::archive::{self, Whiteouts};
use super::build::Tree;
use super::digest::hex;

/// Largest index or manifest read: they are a few KiB.
const JSON_MAX: u64 = 4 << 20;

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// Whether `dir` looks like an OCI image layout.
pub fn is_layout(dir: &Path) -> bool {
    dir.join("oci-layout").is_file() && dir.join("index.json").is_file()
}

/// This machine's architecture as OCI names it.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn blob_path(layout: &Path, d: &Descriptor) -> Result<PathBuf> {
    let (alg, hexd) = d
        .digest
        .split_once(':')
        .ok_or_else(|| anyhow!("descriptor digest {:?} is not ALG:HEX", d.digest))?;
    if alg != "sha256" || hexd.len() != 64 || !hexd.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "descriptor digest {:?}: only sha256 digests are supported",
            d.digest
        );
    }
    let p = layout.join("blobs").join(alg).join(hexd);
    if !p.is_file() {
        bail!(
            "blob {} is missing ({}): the image layout is incomplete",
            d.digest,
            p.display()
        );
    }
    Ok(p)
}

/// A reader of a blob that hashes what passes and checks, at its end, the
/// digest and size of its descriptor.
struct Checked {
    file: File,
    hash: Sha256,
    seen: u64,
    want: String,
    size: u64,
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hash.update(&buf[..n]);
        self.seen += n as u64;
        if self.seen > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {} is larger than its descriptor's {} bytes",
                    self.want, self.size
                ),
            ));
        }
        if n == 0 && !buf.is_empty() {
            self.verify()?;
        }
        Ok(n)
    }
}

impl Checked {
    fn open(layout: &Path, d: &Descriptor) -> Result<Checked> {
        let p = blob_path(layout, d)?;
        Ok(Checked {
            file: crate::files::open_regular(&p)
                .with_context(|| format!("cannot open {}", p.display()))?,
            hash: Sha256::new(),
            seen: 0,
            want: d.digest.clone(),
            size: d.size,
        })
    }

    fn verify(&self) -> io::Result<()> {
        let got = format!("sha256:{}", hex(&self.hash.clone().finalize()));
        if got != self.want || self.seen != self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {} does not match its descriptor: its content is {got}, {} bytes \
                     (descriptor: {} bytes); the image layout is damaged",
                    self.want, self.seen, self.size
                ),
            ));
        }
        Ok(())
    }

    /// Reads the rest (a tar's zero padding the decoder left) and checks.
    fn drain(mut self) -> Result<()> {
        io::copy(&mut self, &mut io::sink())?;
        self.verify()?;
        Ok(())
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(layout: &Path, d: &Descriptor) -> Result<T> {
    let mut c = Checked::open(layout, d)?;
    let mut text = Vec::new();
    (&mut c).take(JSON_MAX).read_to_end(&mut text)?;
    c.drain()?;
    serde_json::from_slice(&text).with_context(|| format!("blob {} is not valid JSON", d.digest))
}

/// The manifest to import among an index's.
fn choose(ms: Vec<Descriptor>, what: &str) -> Result<Descriptor> {
    let n = ms.len();
    if n == 1 {
        return Ok(ms.into_iter().next().expect("one"));
    }
    let mut mine: Vec<Descriptor> = ms
        .into_iter()
        .filter(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.architecture == arch() && (p.os.is_empty() || p.os == "linux"))
        })
        .collect();
    match mine.len() {
        1 => Ok(mine.remove(0)),
        0 => bail!("{what} has {n} manifests and none for linux/{}", arch()),
        k => bail!(
            "{what} has {k} manifests for linux/{}: keep one in the layout",
            arch()
        ),
    }
}

/// Applies the image at `layout` to `tree`.
pub fn import(layout: &Path, tree: &mut Tree) -> Result<()> {
    let index_path = layout.join("index.json");
    let text = crate::files::read_capped(&index_path, JSON_MAX)
        .with_context(|| format!("cannot read {}", index_path.display()))?;
    let index: Index = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not an OCI index", index_path.display()))?;
    let mut desc = choose(index.manifests, "index.json")?;
    for _ in 0..8 {
        if !desc.media_type.contains("index") && !desc.media_type.contains("manifest.list") {
            break;
        }
        let inner: Index = read_json(layout, &desc)?;
        desc = choose(inner.manifests, &desc.digest)?;
    }
    let manifest: Manifest = read_json(layout, &desc)?;
    if manifest.layers.is_empty() {
        bail!("manifest {} has no layers", desc.digest);
    }
    for layer in &manifest.layers {
        // Every blob is checked before anything of the image is applied: a
        // missing one is named at once.
        blob_path(layout, layer)?;
    }
    for (i, layer) in manifest.layers.iter().enumerate() {
        tree.new_layer();
        let mut checked = Checked::open(layout, layer)?;
        {
            let reader = archive::decompressed(&mut checked)?;
            archive::apply(reader, tree, Whiteouts::Apply)
                .with_context(|| format!("layer {} ({})", i + 1, layer.digest))?;
        }
        checked
            .drain()
            .with_context(|| format!("layer {} ({})", i + 1, layer.digest))?;
    }
    Ok(())
}
