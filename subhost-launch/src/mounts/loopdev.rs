//! Loop devices without losetup: `LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE` with
//! autoclear, so the device detaches itself when its last user (the mount)
//! goes away. The existing crates for this need bindgen and libclang at build
//! time and only use the older two-ioctl setup, so the few kernel constants
//! and structs are defined here.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};

use super::mountinfo;

// <linux/loop.h>: these are plain numbers, not _IOC-encoded.
const LOOP_SET_FD: u32 = 0x4C00;
const LOOP_CLR_FD: u32 = 0x4C01;
const LOOP_SET_STATUS64: u32 = 0x4C04;
const LOOP_GET_STATUS64: u32 = 0x4C05;
const LOOP_CONFIGURE: u32 = 0x4C0A;
const LOOP_CTL_GET_FREE: u32 = 0x4C82;

const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` (Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

impl LoopInfo64 {
    fn zeroed() -> LoopInfo64 {
        // SAFETY: an all-zero loop_info64 is valid (plain integers and byte
        // arrays) and is what the kernel expects for unused fields.
        unsafe { std::mem::zeroed() }
    }

    /// Autoclear, with the image path as the cosmetic name `losetup -l`
    /// shows for old kernels (truncated, NUL-terminated).
    fn autoclear(image: &Path) -> LoopInfo64 {
        let mut info = LoopInfo64::zeroed();
        info.lo_flags = LO_FLAGS_AUTOCLEAR;
        let name = image.as_os_str().as_encoded_bytes();
        let n = name.len().min(LO_NAME_SIZE - 1);
        info.lo_file_name[..n].copy_from_slice(&name[..n]);
        info
    }
}

/// A loop device bound to an image with autoclear. Dropping it closes this
/// handle; the kernel detaches the device once nothing else (a mount) holds
/// it open.
pub struct Attached {
    pub device: PathBuf,
    _handle: File,
}

/// How many times a free device may be taken by someone else between
/// `LOOP_CTL_GET_FREE` and binding it before giving up.
const RACE_RETRIES: usize = 32;

/// Binds `image` (opened read-write) to a free loop device with autoclear.
pub fn attach(image: &Path) -> anyhow::Result<Attached> {
    // Not blocking on a FIFO swapped in for the image, and checked once
    // open: the path was only stat'ed before.
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(image)
        .with_context(|| format!("cannot open image {} read-write", image.display()))?;
    if !backing.metadata()?.file_type().is_file() {
        bail!("image {} is not a regular file", image.display());
    }
    nix::fcntl::fcntl(
        &backing,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .with_context(|| format!("cannot clear O_NONBLOCK on image {}", image.display()))?;
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")
        .context("cannot open /dev/loop-control (is the loop module loaded?)")?;
    for _ in 0..RACE_RETRIES {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and only returns a
        // number; ctl is an open fd for the duration of the call.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(io::Error::last_os_error()).context("no free loop device");
        }
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&device)
        {
            Ok(f) => f,
            // Someone removed the device we were just given.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", device.display())),
        };
        match bind(&dev, &backing, image) {
            Ok(()) => {
                return Ok(Attached {
                    device,
                    _handle: dev,
                })
            }
            // Another process bound the device between GET_FREE and now.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot attach {} to {}", image.display(), device.display())
                })
            }
        }
    }
    Err(anyhow!(
        "cannot attach {}: free loop devices were taken by others {RACE_RETRIES} times in a row",
        image.display()
    ))
}

/// One LOOP_CONFIGURE, or the two-step setup on kernels without it.
fn bind(dev: &File, backing: &File, image: &Path) -> io::Result<()> {
    let cfg = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64::autoclear(image),
        reserved: [0; 8],
    };
    // SAFETY: cfg is a fully initialised struct loop_config that outlives the
    // call; the kernel only reads it.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg) };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOTTY) => bind_legacy(dev, backing, &cfg.info),
        _ => Err(err),
    }
}

fn bind_legacy(dev: &File, backing: &File, info: &LoopInfo64) -> io::Result<()> {
    // SAFETY: LOOP_SET_FD takes the backing fd by value; both fds are open.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: info is a fully initialised loop_info64 the kernel only reads.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64 as _, info) };
    if r != 0 {
        let err = io::Error::last_os_error();
        // Without autoclear the device would stay bound forever.
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _) };
        return Err(err);
    }
    Ok(())
}

/// The (st_dev, st_ino) of the file behind loop device `device`, or None
/// when it is not bound.
pub fn backing_id(device: &Path) -> io::Result<Option<(u64, u64)>> {
    let dev = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(device)?;
    let mut info = LoopInfo64::zeroed();
    // SAFETY: info is a writable loop_info64 that outlives the call.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_GET_STATUS64 as _, &mut info) };
    if r != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some((info.lo_device, info.lo_inode)))
}

/// Where the kernel lists block devices, each loop device with its backing
/// file in `loop/backing_file`.
const SYS_BLOCK: &str = "/sys/block";

/// The loop devices (`loop3`, …) bound to `image` now. Read from sysfs
/// alone: opening a device to ask would itself hold an autoclear device
/// a moment longer, for another `stop` waiting on it.
pub fn bound_to(image: &Path) -> Vec<String> {
    let Ok(image) = image.canonicalize() else {
        return Vec::new();
    };
    bound_in(Path::new(SYS_BLOCK), &image)
}

/// [`bound_to`] over the sysfs tree at `sys_block`, for `image` resolved.
fn bound_in(sys_block: &Path, image: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut found: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("loop"))
        .filter(|n| {
            std::fs::read(sys_block.join(n).join("loop/backing_file"))
                .is_ok_and(|b| b.strip_suffix(b"\n").unwrap_or(&b) == image.as_os_str().as_bytes())
        })
        .collect();
    found.sort();
    found
}

/// Who keeps loop device `dev` (`loop3`) bound, as far as /proc tells: the
/// processes that have it open, and one process of each mount namespace
/// that still has its filesystem mounted (a namespace copied from the host
/// while the image was mounted keeps its own copy of that mount).
pub fn holders(dev: &str) -> Vec<String> {
    let Ok(majmin) = std::fs::read_to_string(Path::new(SYS_BLOCK).join(dev).join("dev")) else {
        return Vec::new();
    };
    let number = mountinfo::parse_dev(majmin.trim_end());
    let node = Path::new("/dev").join(dev);
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut seen_ns = std::collections::HashSet::new();
    let mut out = Vec::new();
    for pid in procs.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let proc = Path::new("/proc").join(&pid);
        let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
        let who = format!("PID {pid} ({})", comm.trim_end());
        let open = std::fs::read_dir(proc.join("fd")).is_ok_and(|fds| {
            fds.filter_map(|e| e.ok())
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == node))
        });
        if open {
            out.push(format!("open by {who}"));
        }
        let Ok(ns) = std::fs::metadata(proc.join("ns/mnt")) else {
            continue;
        };
        if !seen_ns.insert((ns.dev(), ns.ino())) {
            continue;
        }
        let mounted = number.is_some_and(|n| {
            std::fs::read(proc.join("mountinfo")).is_ok_and(|m| mountinfo_has_device(&m, n))
        });
        if mounted {
            out.push(format!("mounted in the mount namespace of {who}"));
        }
    }
    out
}

/// Whether a mountinfo text has a mount of device `dev` (`7:3`, its third
/// field). A text that does not parse (a process gone while it was read)
/// has none.
fn mountinfo_has_device(text: &[u8], dev: (u32, u32)) -> bool {
    mountinfo::parse(text).is_ok_and(|table| table.iter().any(|m| m.dev == dev))
}

/// The (st_dev, st_ino) of a file, comparable with `backing_id`.
pub fn file_id(path: &Path) -> io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// The filesystem type in `image`, read from its superblock, as mount(2)
/// wants it.
pub fn probe_fs(image: &Path) -> anyhow::Result<&'static str> {
    let f = crate::files::open_regular(image)
        .with_context(|| format!("cannot read image {}", image.display()))?;
    probe(&f).ok_or_else(|| {
        anyhow!(
            "image {} holds no ext2/3/4, xfs or btrfs filesystem: format it \
             (e.g. mkfs.ext4 {}) or remove it to use the directory's root",
            image.display(),
            image.display()
        )
    })
}

fn probe(f: &impl FileExt) -> Option<&'static str> {
    let at = |offset: u64, magic: &[u8]| {
        let mut buf = vec![0; magic.len()];
        f.read_exact_at(&mut buf, offset).is_ok() && buf == magic
    };
    // ext2 and ext3 share the magic; the ext4 driver mounts all three.
    if at(1080, &[0x53, 0xEF]) {
        Some("ext4")
    } else if at(0, b"XFSB") {
        Some("xfs")
    } else if at(65600, b"_BHRfS_M") {
        Some("btrfs")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bytes(Vec<u8>);

    impl FileExt for Bytes {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let start = (offset as usize).min(self.0.len());
            let n = buf.len().min(self.0.len() - start);
            buf[..n].copy_from_slice(&self.0[start..start + n]);
            Ok(n)
        }
        fn write_at(&self, _: &[u8], _: u64) -> io::Result<usize> {
            unreachable!()
        }
    }

    fn with(offset: usize, magic: &[u8]) -> Bytes {
        let mut v = vec![0; 70_000];
        v[offset..offset + magic.len()].copy_from_slice(magic);
        Bytes(v)
    }

    #[test]
    fn probes_magics() {
        assert_eq!(probe(&with(1080, &[0x53, 0xEF])), Some("ext4"));
        assert_eq!(probe(&with(0, b"XFSB")), Some("xfs"));
        assert_eq!(probe(&with(65600, b"_BHRfS_M")), Some("btrfs"));
        assert_eq!(probe(&with(0, b"nope")), None);
        assert_eq!(probe(&Bytes(vec![0; 100])), None);
    }

    /// A backing file removed on drop.
    struct TempFile(PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Unbinds the device if the test fails before autoclear could.
    struct Unbind(PathBuf, (u64, u64));

    impl Drop for Unbind {
        fn drop(&mut self) {
            if backing_id(&self.0).ok().flatten() == Some(self.1) {
                if let Ok(f) = File::open(&self.0) {
                    // SAFETY: LOOP_CLR_FD takes no argument.
                    unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD as _) };
                }
            }
        }
    }

    fn sysfs(device: &Path, attr: &str) -> String {
        let name = device.file_name().unwrap().to_str().unwrap();
        std::fs::read_to_string(format!("/sys/block/{name}/loop/{attr}"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default()
    }

    /// The two-ioctl path this kernel never needs, exercised directly: it
    /// must set autoclear too, or devices would stay bound forever.
    #[test]
    fn legacy_setup_autoclears() {
        assert!(nix::unistd::geteuid().is_root(), "needs root");
        let img = TempFile(
            std::env::temp_dir().join(format!("subhost-test-legacy-{}.img", std::process::id())),
        );
        File::create(&img.0).unwrap().set_len(1 << 20).unwrap();
        let backing = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img.0)
            .unwrap();
        let ctl = File::open("/dev/loop-control").unwrap();
        let (device, dev) = loop {
            // SAFETY: as in attach.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
            assert!(n >= 0, "{}", io::Error::last_os_error());
            let device = PathBuf::from(format!("/dev/loop{n}"));
            let dev = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&device)
                .unwrap();
            match bind_legacy(&dev, &backing, &LoopInfo64::autoclear(&img.0)) {
                Ok(()) => break (device, dev),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
                Err(e) => panic!("{e}"),
            }
        };
        let _unbind = Unbind(device.clone(), file_id(&img.0).unwrap());
        assert_eq!(sysfs(&device, "autoclear"), "1");
        assert_eq!(backing_id(&device).unwrap(), Some(file_id(&img.0).unwrap()));
        drop(dev);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while sysfs(&device, "backing_file") == img.0.to_str().unwrap() {
            assert!(std::time::Instant::now() < end, "still bound");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn bound_devices_are_found_by_backing_file() {
        let sys =
            std::env::temp_dir().join(format!("subhost-test-sysblock-{}", std::process::id()));
        let dev = |n: &str, backing: Option<&str>| {
            std::fs::create_dir_all(sys.join(n).join("loop")).unwrap();
            if let Some(b) = backing {
                std::fs::write(sys.join(n).join("loop/backing_file"), format!("{b}\n")).unwrap();
            }
        };
        dev("loop0", Some("/srv/a/a.img"));
        dev("loop1", None); // unbound: no backing_file
        dev("loop2", Some("/srv/a/a.img.old"));
        dev("loop10", Some("/srv/a/a.img"));
        dev("sda", None);
        let found = bound_in(&sys, Path::new("/srv/a/a.img"));
        let none = bound_in(&sys, Path::new("/srv/a/a.im"));
        crate::files::tree::remove_tree_mount_free(&sys).unwrap();
        assert_eq!(found, ["loop0", "loop10"]);
        assert!(none.is_empty());
    }

    #[test]
    fn mountinfo_is_matched_on_the_device_field() {
        let m = b"36 35 98:0 / /mnt1 rw - ext4 /dev/loop7 rw\n\
                 37 35 7:30 / /mnt2 rw - ext4 /dev/loop30 rw\n";
        assert!(mountinfo_has_device(m, (98, 0)));
        assert!(mountinfo_has_device(m, (7, 30)));
        assert!(!mountinfo_has_device(m, (7, 3)));
        assert!(!mountinfo_has_device(m, (36, 35)));
    }

    #[test]
    fn name_is_truncated_and_terminated() {
        let long = PathBuf::from(format!("/{}", "x".repeat(100)));
        let info = LoopInfo64::autoclear(&long);
        assert_eq!(info.lo_file_name[LO_NAME_SIZE - 1], 0);
        assert_eq!(info.lo_flags, LO_FLAGS_AUTOCLEAR);
    }
}
