//! Where a subhost's pieces live on disk, and what names are allowed.
//!
//! A subhost NAME is the directory `$SUBHOST/NAME`. Its name also names the
//! network namespace and prefixes the host ends of its cables (`NAME0`…), so
//! it must fit an interface name with two digits to spare.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where subhosts live unless `SUBHOST` or `--subhost-dir` says otherwise.
pub const DEFAULT_DIR: &str = "/opt/subhost";

/// Longest NAME: IFNAMSIZ is 16 with the NUL, and `NAME99` must fit.
pub const NAME_MAX: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadName {
    pub name: String,
    pub why: &'static str,
}

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid subhost name {:?}: {} (use 1-{} characters of a-z, 0-9, _ and -)",
            self.name, self.why, NAME_MAX
        )
    }
}

impl std::error::Error for BadName {}

/// Checks NAME: 1–12 characters of `[a-z0-9_-]`, not starting with `-` (it
/// would read as an option to every tool that takes it).
pub fn validate_name(name: &str) -> Result<(), BadName> {
    let bad = |why| {
        Err(BadName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > NAME_MAX {
        return bad("it is too long for interface names NAME0..NAME99");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return bad("it has a character outside a-z, 0-9, _ and -");
    }
    if name.starts_with('-') {
        return bad("it starts with '-'");
    }
    Ok(())
}

/// The paths of one subhost. Pure data: nothing here touches the disk except
/// `image_present`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub name: String,
    /// `$SUBHOST`
    pub base: PathBuf,
    /// `$SUBHOST/NAME`
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(base: &Path, name: &str) -> Result<Layout, BadName> {
        validate_name(name)?;
        Ok(Layout {
            name: name.to_string(),
            base: base.to_path_buf(),
            dir: base.join(name),
        })
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }
    pub fn live(&self) -> PathBuf {
        self.dir.join("live")
    }
    pub fn mnt(&self) -> PathBuf {
        self.dir.join("mnt")
    }
    pub fn image(&self) -> PathBuf {
        self.dir.join(format!("{}.img", self.name))
    }
    pub fn image_present(&self) -> bool {
        self.image().is_file()
    }
    /// The root (whole, or the overlay's upper layer): inside the image when
    /// the subhost has one.
    pub fn root(&self, image: bool) -> PathBuf {
        if image {
            self.mnt().join("root")
        } else {
            self.dir.join("root")
        }
    }
    /// The overlay work dir, on the same filesystem as the upper layer.
    pub fn work(&self, image: bool) -> PathBuf {
        if image {
            self.mnt().join("work")
        } else {
            self.dir.join("work")
        }
    }
    /// The user namespace range of a subhost with `USERNS`, `BASE:COUNT`:
    /// recorded once so that a picked range never changes under the files
    /// the subhost owns.
    pub fn userns_record(&self) -> PathBuf {
        self.dir.join("userns")
    }
    /// Host-side interface name of cable `i`.
    pub fn host_if(&self, i: usize) -> String {
        format!("{}{}", self.name, i)
    }
}

/// The `$SUBHOST` in force: the option, else the environment, else the
/// default.
pub fn base_dir(option: Option<&Path>) -> PathBuf {
    if let Some(p) = option {
        return p.to_path_buf();
    }
    match std::env::var_os("SUBHOST") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_DIR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "future", "web-1", "db_2", "abcdefghijkl", "0"] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "abcdefghijklm",
            "Future",
            "a.b",
            "a/b",
            "..",
            "-x",
            "a b",
            "é",
        ] {
            let e = validate_name(bad).unwrap_err();
            assert!(e.to_string().contains("invalid subhost name"), "{bad}");
        }
    }

    #[test]
    fn longest_name_fits_interface_names() {
        let l = Layout::new(Path::new("/x"), "abcdefghijkl").unwrap();
        assert!(l.host_if(99).len() < libc::IFNAMSIZ);
    }

    #[test]
    fn paths() {
        let l = Layout::new(Path::new("/opt/subhost"), "future").unwrap();
        assert_eq!(l.root(false), Path::new("/opt/subhost/future/root"));
        assert_eq!(l.root(true), Path::new("/opt/subhost/future/mnt/root"));
        assert_eq!(l.work(true), Path::new("/opt/subhost/future/mnt/work"));
        assert_eq!(l.image(), Path::new("/opt/subhost/future/future.img"));
        assert_eq!(l.host_if(3), "future3");
    }
}
