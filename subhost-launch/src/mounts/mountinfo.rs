//! `/proc/self/mountinfo`, parsed: the kernel's own view of what is mounted
//! where, which (unlike `/proc/mounts` or `mtab`) also says which part of a
//! filesystem a bind mount shows.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of mountinfo (see proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    /// `major:minor` of the filesystem.
    pub dev: (u32, u32),
    /// The directory of the filesystem shown at `mount_point` (`/` unless a
    /// bind mount shows a subtree).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,…`).
    pub options: String,
    pub fs_type: String,
    /// The device or the name given to mount(2), e.g. `/dev/loop3`,
    /// `overlay`.
    pub source: String,
    /// Per-superblock options, e.g. overlayfs's `lowerdir=…,upperdir=…`.
    pub super_options: String,
}

impl MountEntry {
    /// Whether this mount sits at `dir` or anywhere below it.
    pub fn is_at_or_below(&self, dir: &Path) -> bool {
        self.mount_point.starts_with(dir)
    }
}

/// The mounts of this process's mount namespace, in mountinfo order.
pub fn mount_points() -> io::Result<Vec<MountEntry>> {
    let text = crate::procfs::read_bytes(Path::new("/proc/self/mountinfo"))?;
    parse(&text)
}

/// Parses the text of a mountinfo file.
pub fn parse(text: &[u8]) -> io::Result<Vec<MountEntry>> {
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            parse_line(l).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "unexpected line in /proc/self/mountinfo: {:?}",
                        String::from_utf8_lossy(l)
                    ),
                )
            })
        })
        .collect()
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    // The optional fields (shared:N, master:N, …) end at a lone "-".
    let dash = fields.iter().skip(6).position(|f| *f == b"-")? + 6;
    if fields.len() < dash + 4 {
        return None;
    }
    let num = |f: &[u8]| std::str::from_utf8(f).ok()?.parse::<u32>().ok();
    let text = |f: &[u8]| String::from_utf8_lossy(&unescape(f)).into_owned();
    let path = |f: &[u8]| PathBuf::from(OsString::from_vec(unescape(f)));
    Some(MountEntry {
        id: num(fields[0])?,
        parent: num(fields[1])?,
        dev: parse_dev(std::str::from_utf8(fields[2]).ok()?)?,
        root: path(fields[3]),
        mount_point: path(fields[4]),
        options: text(fields[5]),
        fs_type: text(fields[dash + 1]),
        source: text(fields[dash + 2]),
        super_options: text(fields[dash + 3]),
    })
}

/// A device number as mountinfo and sysfs's `dev` files write it,
/// `major:minor`.
pub fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Undoes the kernel's octal escapes (`\040` for space, `\134` for `\`, …),
/// which it applies to whitespace and backslashes in every field.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() && is_octal(&field[i + 1..i + 4]) {
            let v = field[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            // Three octal digits can exceed a byte (\777); such a sequence
            // is not an escape the kernel makes, so keep it literally.
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn is_octal(digits: &[u8]) -> bool {
    digits.len() == 3 && digits.iter().all(|d| (b'0'..=b'7').contains(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escapes_and_optional_fields() {
        let text = b"27 1 254:0 / / rw,relatime shared:1 master:2 - ext4 /dev/vda rw,discard\n\
45 27 0:39 /sub /tmp/a\\040b\\134c rw - overlay overlay rw,lowerdir=/x\\134\\054y,upperdir=/u\n";
        let m = parse(text).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, Path::new("/"));
        assert_eq!(m[0].fs_type, "ext4");
        assert_eq!(m[0].source, "/dev/vda");
        assert_eq!(m[0].dev, (254, 0));
        assert_eq!(m[1].id, 45);
        assert_eq!(m[1].parent, 27);
        assert_eq!(m[1].root, Path::new("/sub"));
        assert_eq!(m[1].mount_point, Path::new("/tmp/a b\\c"));
        assert_eq!(m[1].super_options, "rw,lowerdir=/x\\,y,upperdir=/u");
        assert!(m[1].is_at_or_below(Path::new("/tmp")));
        assert!(!m[1].is_at_or_below(Path::new("/tm")));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"1 2 3\n").is_err());
        assert!(parse(b"1 1 8:1 / / rw - ext4\n").is_err());
    }

    #[test]
    fn keeps_non_escapes() {
        assert_eq!(unescape(b"a\\9b\\"), b"a\\9b\\");
        assert_eq!(unescape(b"\\777"), b"\\777");
        assert_eq!(unescape(b"x\\011"), b"x\t");
    }

    #[test]
    fn reads_this_process() {
        let m = mount_points().unwrap();
        assert!(m.iter().any(|e| e.mount_point == Path::new("/")));
    }
}
