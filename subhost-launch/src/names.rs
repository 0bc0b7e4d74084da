//! The subhost's names: its `/etc/resolv.conf` from `DNS` and `SEARCH`, and
//! a marked block of its `/etc/hosts` from `HOSTS`, written into its own
//! root at a cold start (an overlay's through `live`, so its upper layer
//! gets them, never a LOWER), and only when they differ from what is there: a start
//! after a config change rewrites them, one without a change leaves them as
//! they are. Without the keys the files are left alone.
//!
//! The write happens on the host side, in a root the subhost controls, so
//! no symlink in it may lead the write out of it. `/etc` is opened with
//! `RESOLVE_IN_ROOT` (a symlinked `/etc` resolves as it would inside);
//! each file is written as a new regular file beside it and renamed over
//! it, which replaces a symlink itself (systemd-resolved's
//! `resolv.conf -> /run/systemd/resolve/stub-resolv.conf`) rather than
//! writing where it points: what the config asks for is then what the
//! subhost reads. The current `/etc/hosts` is read through its symlink,
//! resolved inside the root, so its other lines are kept.

use std::ffi::CStr;
use std::fmt;
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::layout::Layout;
use crate::sys;

/// The first line of the block of `/etc/hosts` that `HOSTS` writes.
pub const HOSTS_BEGIN: &str = "# subhost HOSTS: from the config, rewritten at a cold start";
/// Its last line.
pub const HOSTS_END: &str = "# subhost HOSTS end";

/// The files read or written are at most this big.
const MAX: u64 = 1 << 20;

/// What a cold start writes into the root: plain data, printed by
/// `--dry-run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Where the root's tree is on the host: `live`, or the tree it shows.
    pub tree: PathBuf,
    /// The whole of `/etc/resolv.conf`, with `DNS` or `SEARCH`.
    pub resolv: Option<String>,
    /// The marked block of `/etc/hosts`, with `HOSTS`.
    pub hosts: Option<String>,
}

impl Plan {
    /// What `cfg` asks of the root of `layout`.
    pub fn of(cfg: &Config, layout: &Layout) -> Plan {
        // An overlay is written through `live`, so that its upper layer
        // gets the files and never a LOWER; a plain tree or an image's tree
        // in place, as `live` shows it with USERNS through an idmap that
        // host root is outside of (creating a file there is EOVERFLOW).
        let live = match cfg.lower.is_empty() {
            true => layout.root(layout.image_present()),
            false => layout.live(),
        };
        Plan::at(cfg, live)
    }

    /// What `cfg` asks of the root at `live`.
    pub fn at(cfg: &Config, live: PathBuf) -> Plan {
        let resolv = (!cfg.dns.is_empty() || !cfg.search.is_empty()).then(|| {
            let mut text = String::from(
                "# subhost: DNS and SEARCH of the config, rewritten at a cold start\n",
            );
            for ns in &cfg.dns {
                text.push_str(&format!("nameserver {ns}\n"));
            }
            if !cfg.search.is_empty() {
                text.push_str(&format!("search {}\n", cfg.search.join(" ")));
            }
            text
        });
        let hosts = (!cfg.hosts.is_empty()).then(|| {
            let mut text = format!("{HOSTS_BEGIN}\n");
            for (name, addr) in &cfg.hosts {
                text.push_str(&format!("{addr}\t{name}\n"));
            }
            text.push_str(&format!("{HOSTS_END}\n"));
            text
        });
        Plan {
            tree: live,
            resolv,
            hosts,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.resolv.is_none() && self.hosts.is_none()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines = |text: &str| {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let live = self.tree.display();
        let mut first = true;
        if let Some(text) = &self.resolv {
            write!(
                f,
                "write {live}/etc/resolv.conf (a regular file, replacing a symlink; \
                 /etc resolved inside the root), unless it holds this already: {}",
                lines(text)
            )?;
            first = false;
        }
        if let Some(text) = &self.hosts {
            if !first {
                writeln!(f)?;
            }
            write!(
                f,
                "write {live}/etc/hosts with its `# subhost HOSTS` block replaced (its other \
                 lines kept), unless it holds this already: {}",
                lines(text)
            )?;
        }
        Ok(())
    }
}

/// Runs `plan` in the root's tree at `plan.tree`. New files are owned as
/// the root directory is: by root inside (with USERNS, the range's root).
pub fn write(plan: &Plan) -> Result<()> {
    if plan.is_empty() {
        return Ok(());
    }
    let live = &plan.tree;
    let root: OwnedFd = std::fs::File::open(live)
        .with_context(|| format!("cannot open {}", live.display()))?
        .into();
    let owner = std::fs::File::from(root.try_clone()?).metadata()?;
    let owner = (owner.uid(), owner.gid());
    let etc = sys::openat2(
        root.as_fd(),
        c"etc",
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV,
    )
    .with_context(|| {
        format!(
            "cannot open /etc of the subhost's root ({}/etc): DNS, SEARCH and HOSTS write \
             there; make it a directory, or remove those keys",
            live.display()
        )
    })?;
    let at = |name: &str| format!("{}/etc/{name}", live.display());
    if let Some(text) = &plan.resolv {
        // Its own, not where a symlink points: only a regular file counts.
        let now = read(&etc, c"resolv.conf", false).with_context(|| at("resolv.conf"))?;
        if now.as_deref() != Some(text.as_bytes()) {
            replace(&etc, "resolv.conf", text.as_bytes(), owner).with_context(|| {
                format!("cannot write {} (for DNS and SEARCH)", at("resolv.conf"))
            })?;
        }
    }
    if let Some(block) = &plan.hosts {
        let now = read(&root, c"etc/hosts", true).with_context(|| at("hosts"))?;
        let now = now.unwrap_or_default();
        let text = String::from_utf8_lossy(&now);
        let new = with_block(&text, block).map_err(|e| anyhow::anyhow!("{}: {e}", at("hosts")))?;
        if new.as_bytes() != now {
            replace(&etc, "hosts", new.as_bytes(), owner)
                .with_context(|| format!("cannot write {} (for HOSTS)", at("hosts")))?;
        }
    }
    Ok(())
}

/// `text` (an `/etc/hosts`) with its `HOSTS` block replaced by `block`,
/// or `block` added at its end.
pub fn with_block(text: &str, block: &str) -> Result<String, String> {
    let mut kept = String::new();
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if inside {
            inside = bare != HOSTS_END;
        } else if bare == HOSTS_BEGIN {
            inside = true;
        } else {
            kept.push_str(line);
        }
    }
    if inside {
        return Err(format!(
            "the line {HOSTS_BEGIN:?} has no {HOSTS_END:?} after it, so where the block \
             subhost writes ends is unknown: add the end line where it ends, or remove the \
             block"
        ));
    }
    if !kept.is_empty() && !kept.ends_with('\n') {
        kept.push('\n');
    }
    kept.push_str(block);
    Ok(kept)
}

/// The content of `path` under `dir`, or `None` when it is missing (or,
/// unless `follow`, a symlink). `follow` resolves symlinks as inside the
/// root `dir` is. Anything but a regular file is refused, unread.
fn read(dir: &OwnedFd, path: &CStr, follow: bool) -> Result<Option<Vec<u8>>> {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    let (flags, resolve) = match follow {
        true => (
            flags,
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV,
        ),
        false => (
            flags | libc::O_NOFOLLOW,
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_XDEV,
        ),
    };
    let file = match sys::openat2(dir.as_fd(), path, flags, resolve) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) if !follow && e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => bail!("cannot open it: {e}"),
    };
    if !file.metadata()?.file_type().is_file() {
        bail!("it is not a regular file: make it one, or remove DNS, SEARCH and HOSTS");
    }
    Ok(Some(crate::files::read_file_capped(file, MAX).context(
        "cannot read it (at most 1 MiB of a regular file is read)",
    )?))
}

/// Puts `content` at `name` in `dir` as a new regular file owned by
/// `owner`, with the mode of the regular file it replaces (0644 for none).
/// The rename replaces a symlink, never what it points at.
fn replace(dir: &OwnedFd, name: &str, content: &[u8], owner: (u32, u32)) -> Result<()> {
    use nix::fcntl::{openat, renameat, AtFlags, OFlag};
    use nix::sys::stat::{fchmod, fstatat, Mode};
    let mode = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => st.st_mode & 0o7777,
        _ => 0o644,
    };
    let tmp = format!(".{name}.subhost-{}", std::process::id());
    let fd = openat(
        dir,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .with_context(|| format!("cannot make a new file {tmp} beside it"))?;
    let mut file = std::fs::File::from(fd);
    let made = file
        .write_all(content)
        .context("cannot write it")
        .and_then(|()| {
            nix::unistd::fchown(&file, Some(owner.0.into()), Some(owner.1.into()))
                .context("cannot chown it")
        })
        .and_then(|()| fchmod(&file, Mode::from_bits_truncate(mode)).context("cannot chmod it"))
        .and_then(|()| {
            renameat(dir, tmp.as_str(), dir, name).context("cannot rename it into place")
        });
    if made.is_err() {
        let _ = nix::unistd::unlinkat(dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    made
}

#[cfg(test)]
mod tests;
