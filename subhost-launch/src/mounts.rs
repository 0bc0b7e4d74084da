//! The subhost's root on the host: `live` as an overlay of `root` over the
//! lower layers, or an rbind of `root`, optionally from an image file
//! loop-mounted on `mnt`. These mounts live in the host's mount namespace so
//! that they outlive a session (hibernation).
//!
//! Everything is done in-process (mount(2), loop ioctls): a helper exec costs
//! about as much as all the mounting itself.

mod activate;
mod deactivate;
pub mod idmap;
mod loopdev;
pub mod mountinfo;
mod overlay;
mod staging;
#[cfg(test)]
mod tests;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::layout::Layout;
use crate::userns::Range;

pub use activate::activate;
pub use deactivate::{
    deactivate, deactivate_all, foreign_below, image_devices, is_active, wait_images_released,
};
pub use mountinfo::{mount_points, MountEntry};
pub use staging::{staged_leftover, staging_dir};

/// One host-side mount step, as data: printable for `--dry-run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Attach `image` to a free loop device (LOOP_CONFIGURE, autoclear) and
    /// mount it on `mnt`.
    AttachImage { image: PathBuf, mnt: PathBuf },
    /// `mount -t overlay overlay -o lowerdir=…,upperdir=…,workdir=… live`
    Overlay {
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        live: PathBuf,
        /// With USERNS: each lower layer is an idmapped copy.
        idmap: Option<Idmap>,
    },
    /// `mount --rbind root live`; with USERNS an idmapped copy of root.
    Rbind {
        root: PathBuf,
        live: PathBuf,
        idmap: Option<Range>,
    },
    /// With USERNS and an overlay: the upper layer's top directory belongs
    /// to root inside (host `BASE`), or root inside could not write to `/`
    /// (copied-up directories take their owners from the idmapped lower).
    /// Done when it is owned by an id outside the range; nothing below it
    /// is touched.
    OwnUpper { upper: PathBuf, range: Range },
}

/// How an overlay's lower layers are idmapped: each is cloned with the map
/// of `range` and attached on `staging/N` while the overlay is mounted over
/// them, then detached again (the overlay keeps its own reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idmap {
    pub range: Range,
    pub staging: PathBuf,
}

impl Idmap {
    pub(super) fn layer(&self, i: usize) -> PathBuf {
        self.staging.join(i.to_string())
    }
    /// `mount(8)` of util-linux 2.39 maps both uids and gids with this.
    pub(super) fn option(&self) -> String {
        format!("X-mount.idmap=0:{}:{}", self.range.base, self.range.count)
    }
}

impl fmt::Display for Step {
    /// The shell command the step replaces. `mount -o loop` is what does the
    /// same as AttachImage: a free device, autoclear, the type probed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::AttachImage { image, mnt } => {
                write!(
                    f,
                    "mount -o loop {} {}   # refused while losetup -j shows it attached",
                    quote(image),
                    quote(mnt)
                )
            }
            Step::Overlay {
                lower,
                upper,
                work,
                live,
                idmap,
            } => {
                // One line, as -v logs the step.
                let layers = mapped_layers(lower, idmap.as_ref());
                if let Some(m) = idmap {
                    for (i, l) in lower.iter().enumerate() {
                        write!(
                            f,
                            "mkdir -p {1} && mount --bind -o {0} {2} {1} && ",
                            m.option(),
                            quote(m.layer(i)),
                            quote(l)
                        )?;
                    }
                }
                write!(
                    f,
                    "mount -t overlay overlay -o {} {}",
                    quote(overlay_options(&layers, upper, work)),
                    quote(live)
                )?;
                if let Some(m) = idmap {
                    let staged: Vec<String> = (0..lower.len()).map(|i| quote(m.layer(i))).collect();
                    write!(
                        f,
                        " && umount -l {0} && rmdir {0} {1}",
                        staged.join(" "),
                        quote(&m.staging)
                    )?;
                    // What runs where the kernel allows: nothing attached,
                    // so nothing a killed start could leave mounted.
                    write!(
                        f,
                        "   # in-process: the idmapped copies go to overlayfs as file \
                         descriptors, unattached, where the kernel takes them"
                    )?;
                }
                Ok(())
            }
            Step::Rbind {
                root,
                live,
                idmap: None,
            } => write!(f, "mount --rbind {} {}", quote(root), quote(live)),
            Step::Rbind {
                root,
                live,
                idmap: Some(r),
            } => write!(
                f,
                "mount --rbind -o X-mount.idmap=0:{}:{} {} {}",
                r.base,
                r.count,
                quote(root),
                quote(live)
            ),
            Step::OwnUpper { upper, range } => write!(
                f,
                "chown {0}:{0} {1}  # only when owned outside {2}",
                range.base,
                quote(upper),
                range
            ),
        }
    }
}

/// Quotes for a POSIX shell when needed, so a dry-run line can be pasted.
pub(super) fn quote(s: impl AsRef<OsStr>) -> String {
    crate::config::quote(s)
}

/// The lower layers as the overlay is given them: the staged idmapped
/// copies, or the layers themselves.
pub(super) fn mapped_layers(lower: &[PathBuf], idmap: Option<&Idmap>) -> Vec<PathBuf> {
    match idmap {
        Some(m) => (0..lower.len()).map(|i| m.layer(i)).collect(),
        None => lower.to_vec(),
    }
}

/// The steps that activate the root of `layout` under `cfg`, in order.
/// With a user namespace `range` (USERNS) the root is shown through its
/// map: an rbind root or image root idmapped, or an overlay over idmapped
/// lower layers whose upper stays as is, so that what root inside writes
/// lands there as host `BASE + n`.
pub fn plan(layout: &Layout, cfg: &Config, range: Option<Range>) -> Vec<Step> {
    let image = layout.image_present();
    let mut steps = Vec::new();
    if image {
        steps.push(Step::AttachImage {
            image: layout.image(),
            mnt: layout.mnt(),
        });
    }
    let (root, work, live) = (layout.root(image), layout.work(image), layout.live());
    if cfg.lower.is_empty() {
        steps.push(Step::Rbind {
            root,
            live,
            idmap: range,
        });
    } else {
        if let Some(range) = range {
            steps.push(Step::OwnUpper {
                upper: root.clone(),
                range,
            });
        }
        steps.push(Step::Overlay {
            lower: cfg.lower.clone(),
            upper: root,
            work,
            live,
            idmap: range.map(|range| Idmap {
                range,
                staging: staging_dir(&layout.name),
            }),
        });
    }
    steps
}

/// Splits at `sep` not preceded by a backslash escape (overlayfs's syntax).
pub(super) fn split_escaped(s: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < s.len() {
        if s[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i] == sep {
            parts.push(&s[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    parts.push(&s[start.min(s.len())..]);
    parts
}

pub(super) fn unescape_backslash(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.iter();
    while let Some(&b) = it.next() {
        if b == b'\\' {
            if let Some(&n) = it.next() {
                out.push(n);
                continue;
            }
        }
        out.push(b);
    }
    out
}

/// overlayfs splits its options at `,`, lowerdir at `:`, and takes `\` as
/// the escape for both.
pub(super) fn escape_overlay(p: &Path) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.as_os_str().len());
    for &b in p.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b',' | b':') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

pub(super) fn overlay_options(lower: &[PathBuf], upper: &Path, work: &Path) -> OsString {
    let mut o = b"lowerdir=".to_vec();
    for (i, l) in lower.iter().enumerate() {
        if i > 0 {
            o.push(b':');
        }
        o.extend(escape_overlay(l));
    }
    o.extend(b",upperdir=");
    o.extend(escape_overlay(upper));
    o.extend(b",workdir=");
    o.extend(escape_overlay(work));
    OsString::from_vec(o)
}
