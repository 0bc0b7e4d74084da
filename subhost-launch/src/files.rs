//! Reading the files a subhost's owner controls (its `config`, its image)
//! and the records under `/run/subhost`: whoever can write there can put a
//! FIFO, a device or a huge file in a regular file's place. A FIFO would
//! block `start`, `stop`, `status` and `list` forever (and one such subhost
//! every `list`); `/dev/zero` would be read until memory runs out. So every
//! such read goes through here: opened without blocking, refused unless it
//! is a regular file once open, and capped in size.

#[cfg(test)]
pub mod tree;

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
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", kind_name(&kind)),
        ));
    }
    Ok(file)
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
    } else {
        "a special file"
    }
}

/// The contents of the regular file `path`, at most `max` bytes: a larger
/// one is an error, not a truncated read.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
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

/// `read_capped` as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read_capped(path, max)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "it is not UTF-8 text"))
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
