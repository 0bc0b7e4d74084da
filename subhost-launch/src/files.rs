//! Reading the files a subhost's owner controls (its `config`, its image)
//! and the records under `/run/subhost`: whoever can write there can put a
//! FIFO, a device or a huge file in a regular file's place. A FIFO would
//! block `start`, `stop`, `status` and `list` forever (and one such subhost
//! every `list`); `/dev/zero` would be read until memory runs out. So every
//! such read goes through here: opened without blocking, refused unless it
//! is a regular file once open, and capped in size.

pub mod copy;
pub mod tree;
pub mod xattr;

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Largest config accepted: a hand-written config is a few KiB.
pub const CONFIG_MAX: u64 = 1 << 20;

/// Largest record under `/run/subhost`: a few lines of paths.
pub const RECORD_MAX: u64 = 64 << 10;

/// Opens `path` for reading (symlinks followed) and checks, on the open
/// file, that it is a regular file. `O_NONBLOCK` makes the open of a FIFO
/// return at once; `O_NOCTTY` keeps a terminal from becoming ours.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    regular(file)
}

/// `file` if it is a regular file once open; else `InvalidInput`, saying
/// what it is.
fn regular(file: File) -> io::Result<File> {
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", kind_name(&kind)),
        ));
    }
    Ok(file)
}

/// Opens `path` for reading without following a symlink in its last
/// component, and checks on the open file that it is a regular file: what
/// a symlink points at (`/etc/shadow`, a FIFO) is never opened. A missing
/// file is `NotFound`; anything else not a regular file is `InvalidInput`,
/// saying what it is.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("it is {}", describe(path)),
            ))
        }
        Err(e) => return Err(e),
    };
    regular(file)
}

/// What is at `path`, itself (a symlink is described, with where it
/// points and what is there, but never opened): "a FIFO", "a symbolic
/// link to /etc/shadow, not a regular file", … For messages.
pub fn describe(path: &Path) -> String {
    let Ok(meta) = path.symlink_metadata() else {
        return "missing".to_string();
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        let to = std::fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".into());
        // stat only: nothing of the target is read.
        return match path.metadata() {
            Ok(m) if m.file_type().is_file() => {
                format!("a symbolic link to {to}, not a regular file")
            }
            Ok(m) => format!(
                "a symbolic link to {to}, {}, not a regular file",
                kind_name(&m.file_type())
            ),
            Err(_) => format!("a symbolic link to {to} (dangling), not a regular file"),
        };
    }
    if kind.is_file() {
        return "a regular file".to_string();
    }
    format!("{}, not a regular file", kind_name(&kind))
}

/// The command that removes what is at `path`: `rmdir` for a directory,
/// `rm` for anything else (a symlink itself, not its target).
pub fn removal(path: &Path) -> String {
    let dir = path
        .symlink_metadata()
        .map(|m| m.file_type().is_dir())
        .unwrap_or(false);
    format!("`{} {}`", if dir { "rmdir" } else { "rm" }, path.display())
}

fn kind_name(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// The contents of `file`, at most `max` bytes: a larger one is an error,
/// not a truncated read.
pub fn read_file_capped(file: File, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is larger than {}", human(max)),
        ));
    }
    Ok(bytes)
}

/// The contents of the regular file `path` (not a symlink), at most `max`
/// bytes.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    read_file_capped(open_nofollow(path)?, max)
}

/// A record under `/run/subhost` as UTF-8 text, through `read_capped`. A
/// missing record is `NotFound`; every other error names the path and,
/// for what is not a regular file, how to remove it.
pub fn read_text(path: &Path, max: u64) -> io::Result<String> {
    let bytes = match read_capped(path, max) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{} is {}: remove it ({}) and try again",
                    path.display(),
                    describe(path),
                    removal(path)
                ),
            ))
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: it is not UTF-8 text", path.display()),
        )
    })
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("subhost-files-{tag}-{}", std::process::id()));
        let _ = tree::remove_tree_mount_free(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_a_regular_file() {
        let d = tmp("reg");
        let f = d.join("f");
        std::fs::write(&f, "a\nb\n").unwrap();
        assert_eq!(read_text(&f, 4).unwrap(), "a\nb\n");
        // One byte over the cap is refused, not cut.
        let e = read_text(&f, 3).unwrap_err();
        assert!(e.to_string().contains("larger than 3 bytes"), "{e}");
        assert!(e.to_string().starts_with(&f.display().to_string()), "{e}");
        tree::remove_tree_mount_free(&d).unwrap();
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let d = tmp("fifo");
        let f = d.join("f");
        nix::unistd::mkfifo(&f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let t = Instant::now();
        let e = read_capped(&f, CONFIG_MAX).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(e.to_string().contains("a FIFO, not a regular file"), "{e}");
        let e = read_text(&f, RECORD_MAX).unwrap_err().to_string();
        assert!(
            e.contains(&format!("remove it (`rm {}`)", f.display())),
            "{e}"
        );
        tree::remove_tree_mount_free(&d).unwrap();
    }

    #[test]
    fn a_symlink_is_never_followed() {
        let d = tmp("link");
        let secret = d.join("secret");
        std::fs::write(&secret, "root:s3cret\n").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let e = read_text(&link, RECORD_MAX).unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(
            e.contains(&format!("a symbolic link to {}", secret.display())),
            "{e}"
        );
        assert!(e.contains(&format!("(`rm {}`)", link.display())), "{e}");
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink(&fifo, link.with_extension("f")).unwrap();
        assert_eq!(
            describe(&link.with_extension("f")),
            format!(
                "a symbolic link to {}, a FIFO, not a regular file",
                fifo.display()
            )
        );
        let sub = d.join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert_eq!(removal(&sub), format!("`rmdir {}`", sub.display()));
        tree::remove_tree_mount_free(&d).unwrap();
    }

    #[test]
    fn devices_and_directories_are_refused() {
        // /dev/zero would otherwise be read until memory runs out.
        let e = read_capped(Path::new("/dev/zero"), CONFIG_MAX).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        let e = read_capped(Path::new("/"), CONFIG_MAX).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        assert_eq!(human(CONFIG_MAX), "1 MiB");
        assert_eq!(human(RECORD_MAX), "64 KiB");
    }
}
