//! Tries one escape route from inside a subhost, harmlessly, and prints
//! `ROUTE: ok` when the kernel let it through or `ROUTE: errno NAME` when
//! it refused. Every route writes back what it read, undoes its mounts,
//! and never changes the clock, swap or modules (see tests/escape.rs).

use std::ffi::CString;
use std::io::Error;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(route) = args.first() else {
        eprintln!("usage: escape-probe ROUTE [ARGS]");
        std::process::exit(2);
    };
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let result = match route.as_str() {
        "core-pattern" => write_back(&arg(1)),
        "proc-sys-umounted" => proc_sys_umounted(),
        "fresh-proc" => fresh_proc(&arg(1)),
        "release-agent" => release_agent(&arg(1)),
        "mount" => mount_and_back(&arg(1), &arg(2)),
        "shocker" => shocker(&arg(1)),
        "bpf-map" => bpf_map(),
        "perf-system" => perf_system(),
        "swapoff" => swapoff(&arg(1)),
        "sys-knob" => sys_knob(&arg(1)),
        "mknod-open" => return mknod_open(&arg(1), &arg(2), &arg(3), &arg(4)),
        "chroot-escape" => return chroot_escape(args.get(1).map(String::as_str)),
        "procs" => return procs(&arg(1)),
        "settimeofday" => settimeofday(),
        "finit-module" => finit_module(),
        "keyctl" => keyctl(),
        "userfaultfd" => userfaultfd(),
        "int80-swapoff" => int80_swapoff(&arg(1)),
        "x32-swapoff" => x32_swapoff(&arg(1)),
        other => {
            eprintln!("escape-probe: unknown route {other}");
            std::process::exit(2);
        }
    };
    match result {
        Ok(()) => println!("{route}: ok"),
        Err(e) => println!("{route}: errno {}", errno_name(&e)),
    }
}

type R = Result<(), Error>;

fn errno_name(e: &Error) -> String {
    let n = e.raw_os_error().unwrap_or(0);
    let name = match n {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EROFS => "EROFS",
        libc::EINVAL => "EINVAL",
        libc::EBADF => "EBADF",
        libc::ENOSYS => "ENOSYS",
        libc::ENOENT => "ENOENT",
        libc::ENOKEY => "ENOKEY",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::ESTALE => "ESTALE",
        _ => return format!("{n}"),
    };
    name.to_string()
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

fn check(r: libc::c_long) -> R {
    if r < 0 {
        Err(Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes a file's own content back into it: the write is what a route
/// needs, the value never changes.
fn write_back(path: &str) -> R {
    let value = std::fs::read(path)?;
    let value = if value.is_empty() {
        b"\n".to_vec()
    } else {
        value
    };
    std::fs::write(path, value)
}

/// With CAP_SYS_ADMIN, the read-only /proc/sys is just a mount to remove
/// (in the subhost's own mount namespace), and core_pattern is the host's.
fn proc_sys_umounted() -> R {
    // SAFETY: umount2 with a C string that outlives the call.
    check(unsafe { libc::umount2(c("/proc/sys").as_ptr(), libc::MNT_DETACH) } as _)?;
    write_back("/proc/sys/kernel/core_pattern")
}

fn mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> R {
    std::fs::create_dir_all(target)?;
    let data = c(data);
    // SAFETY: mount with C strings that outlive the call.
    check(unsafe {
        libc::mount(
            c(source).as_ptr(),
            c(target).as_ptr(),
            c(fstype).as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    } as _)
}

fn umount(target: &str) {
    // SAFETY: umount2 with a C string that outlives the call.
    unsafe { libc::umount2(c(target).as_ptr(), libc::MNT_DETACH) };
}

fn fresh_proc(dir: &str) -> R {
    mount("proc", dir, "proc", 0, "")?;
    let r = write_back(&format!("{dir}/sys/kernel/core_pattern"));
    umount(dir);
    r
}

/// CVE-2022-0492: mounts each cgroup v1 hierarchy the host has (mounting
/// an existing hierarchy makes none), and writes its `release_agent` back
/// where the mount shows one. Ok when one write went through.
fn release_agent(dir: &str) -> R {
    let table = std::fs::read_to_string("/proc/cgroups")?;
    let mut last = Error::from_raw_os_error(libc::ENOENT);
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[1] == "0" || f[3] != "1" {
            continue;
        }
        if let Err(e) = mount("cgroup", dir, "cgroup", 0, f[0]) {
            last = e;
            continue;
        }
        let agent = format!("{dir}/release_agent");
        let r = if Path::new(&agent).exists() {
            write_back(&agent)
        } else {
            Err(Error::from_raw_os_error(libc::ENOENT))
        };
        umount(dir);
        match r {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn mount_and_back(fstype: &str, dir: &str) -> R {
    mount(fstype, dir, fstype, 0, "")?;
    umount(dir);
    Ok(())
}

/// "Shocker": a file handle for inode 2, the root of an ext4 filesystem,
/// opened through any directory of it (a SHARE).
fn shocker(dir: &str) -> R {
    let f = std::fs::File::open(dir)?;
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        data: [u32; 2],
    }
    let mut h = Handle {
        bytes: 8,
        kind: 1, // FILEID_INO32_GEN
        data: [2, 0],
    };
    use std::os::fd::AsRawFd;
    // SAFETY: the handle struct is the kernel's layout with 8 bytes of data.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            f.as_raw_fd(),
            &mut h as *mut Handle,
            libc::O_RDONLY | libc::O_DIRECTORY,
        )
    };
    check(fd)?;
    // SAFETY: fd was just returned by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat into a zeroed stat struct.
    unsafe { libc::fstat(fd as i32, &mut st) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd as i32) };
    if st.st_ino != 2 {
        return Err(Error::from_raw_os_error(libc::ESTALE));
    }
    Ok(())
}

fn bpf_map() -> R {
    // union bpf_attr, BPF_MAP_CREATE: map_type, key_size, value_size,
    // max_entries, then zeros.
    let mut attr = [0u32; 32];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 1;
    // SAFETY: attr is large enough for the fields the kernel reads.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, // BPF_MAP_CREATE
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    check(fd)?;
    // SAFETY: fd is ours.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// A software CPU-clock event on CPU 0 for every process (pid -1).
fn perf_system() -> R {
    // struct perf_event_attr: type, size, config; zeros otherwise.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    // config 0: PERF_COUNT_SW_CPU_CLOCK; flags: disabled (bit 0)
    attr[40] = 1;
    // SAFETY: attr is a zeroed perf_event_attr of the size it declares.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_mut_ptr(),
            -1i32,
            0i32,
            -1i32,
            0u64,
        )
    };
    check(fd)?;
    // SAFETY: fd is ours.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// swapoff on a file that is no swap: EINVAL once permitted, never a change.
fn swapoff(path: &str) -> R {
    // SAFETY: swapoff with a C string that outlives the call.
    check(unsafe { libc::syscall(libc::SYS_swapoff, c(path).as_ptr()) })
}

/// Remounts the subhost's /sys read-write (the sysfs of its own netns),
/// writes a global knob's value back, and makes /sys read-only again.
fn sys_knob(knob: &str) -> R {
    let rw = libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: mount with C strings that outlive the call.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            c("/sys").as_ptr(),
            std::ptr::null(),
            rw,
            std::ptr::null(),
        )
    } as _)?;
    let r = write_back(knob);
    // SAFETY: as above.
    unsafe {
        libc::mount(
            std::ptr::null(),
            c("/sys").as_ptr(),
            std::ptr::null(),
            rw | libc::MS_RDONLY,
            std::ptr::null(),
        )
    };
    r
}

/// Makes a device node and opens it read-only (and non-blocking), and
/// says which of the two was refused: `mknod errno E`, `open errno E`, `ok`.
fn mknod_open(path: &str, kind: &str, major: &str, minor: &str) {
    let dev = libc::makedev(major.parse().unwrap_or(0), minor.parse().unwrap_or(0));
    let kind = if kind == "b" {
        libc::S_IFBLK
    } else {
        libc::S_IFCHR
    };
    let _ = std::fs::remove_file(path);
    // SAFETY: mknod with a C string that outlives the call.
    if let Err(e) = check(unsafe { libc::mknod(c(path).as_ptr(), kind | 0o600, dev) } as _) {
        println!("mknod-open: mknod errno {}", errno_name(&e));
        return;
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblock()
        .open(path)
    {
        Ok(_) => println!("mknod-open: ok"),
        Err(e) => println!("mknod-open: open errno {}", errno_name(&e)),
    }
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

/// The classic chroot escape: chroot into a subdirectory without moving
/// the cwd, climb, chroot("."). Prints the device and inode of the root
/// reached; `jail` first chroots into it, as a naive sandbox would.
fn chroot_escape(jail: Option<&str>) {
    let go = || -> R {
        if let Some(j) = jail {
            std::env::set_current_dir(j)?;
            // SAFETY: chroot with a C string that outlives the call.
            check(unsafe { libc::chroot(c(".").as_ptr()) } as _)?;
        }
        let dir = "/.escape-probe-chroot";
        let _ = std::fs::create_dir(dir);
        // SAFETY: chroot with a C string that outlives the call.
        check(unsafe { libc::chroot(c(dir).as_ptr()) } as _)?;
        for _ in 0..64 {
            let _ = std::env::set_current_dir("..");
        }
        // SAFETY: as above.
        check(unsafe { libc::chroot(c(".").as_ptr()) } as _)
    };
    match go() {
        Ok(()) => {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata("/").expect("stat /");
            println!("chroot-escape: root {} {}", m.dev(), m.ino());
        }
        Err(e) => println!("chroot-escape: errno {}", errno_name(&e)),
    }
}

/// Whether any visible process has MARKER in its command line. The
/// marker is given reversed, so that the probe's own command line (and
/// its shell's) does not hold it.
fn procs(reversed: &str) {
    let marker: String = reversed.chars().rev().collect();
    let marker = marker.as_str();
    let mut found = false;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let cmdline = Path::new("/proc").join(e.file_name()).join("cmdline");
            if let Ok(text) = std::fs::read(cmdline) {
                if text
                    .windows(marker.len().max(1))
                    .any(|w| w == marker.as_bytes())
                {
                    found = true;
                }
            }
        }
    }
    println!("procs: {}", if found { "found" } else { "none" });
}

/// settimeofday(NULL, NULL) checks the permission and sets nothing.
fn settimeofday() -> R {
    // SAFETY: both pointers are NULL, which the call accepts.
    check(unsafe {
        libc::syscall(
            libc::SYS_settimeofday,
            std::ptr::null::<libc::timeval>(),
            std::ptr::null::<libc::c_void>(),
        )
    })
}

/// finit_module on fd -1: EBADF once permitted.
fn finit_module() -> R {
    // SAFETY: integer arguments and an empty C string.
    check(unsafe { libc::syscall(libc::SYS_finit_module, -1i32, c"".as_ptr(), 0) })
}

/// KEYCTL_GET_KEYRING_ID of the session keyring, without creating it.
fn keyctl() -> R {
    // SAFETY: integer arguments.
    check(unsafe { libc::syscall(libc::SYS_keyctl, 0, -3i32, 0) }).or_else(|e| {
        if e.raw_os_error() == Some(libc::ENOKEY) {
            Ok(())
        } else {
            Err(e)
        }
    })
}

fn userfaultfd() -> R {
    // UFFD_USER_MODE_ONLY (1): allowed without privileges when not filtered.
    // SAFETY: integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | 1) };
    check(fd)?;
    // SAFETY: fd is ours.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// The path in memory below 4 GiB, where a 32-bit call can point.
fn low_path(path: &str) -> Result<*mut u8, Error> {
    // SAFETY: an anonymous private mapping; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::last_os_error());
    }
    let bytes = Path::new(path).as_os_str().as_bytes();
    let n = bytes.len().min(4000);
    // SAFETY: p is a fresh 4 KiB mapping; n + 1 bytes fit.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.cast::<u8>(), n);
        *p.cast::<u8>().add(n) = 0;
    }
    Ok(p.cast())
}

/// i386 swapoff (115) through `int 0x80`: a deny list keyed on x86_64
/// numbers alone would not see it.
#[cfg(target_arch = "x86_64")]
fn int80_swapoff(path: &str) -> R {
    let p = low_path(path)?;
    let mut ret: i64 = 115;
    // SAFETY: int 0x80 with eax = swapoff and ebx = a pointer below 4 GiB;
    // the kernel clobbers only eax (and r8-r11 are preserved on this entry).
    unsafe {
        std::arch::asm!(
            "xchg rbx, {p}",
            "int 0x80",
            "xchg rbx, {p}",
            p = inout(reg) p as u64 => _,
            inout("rax") ret,
            options(nostack)
        );
    }
    let ret = ret as i32;
    if ret < 0 {
        Err(Error::from_raw_os_error(-ret))
    } else {
        Ok(())
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn int80_swapoff(_path: &str) -> R {
    Err(Error::from_raw_os_error(libc::ENOSYS))
}

/// x32 swapoff: x86_64's number with bit 30 set.
fn x32_swapoff(path: &str) -> R {
    let p = low_path(path)?;
    // SAFETY: a raw system call with a pointer to a C string.
    check(unsafe { libc::syscall(libc::SYS_swapoff | 0x4000_0000, p) })
}
