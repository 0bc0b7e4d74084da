//! The probe: named checks run inside a subhost (and on the host, to show
//! what a protection holds back), so that the system tests ask the kernel
//! through one program instead of parsing what inline shell prints.
//!
//! `probe CHECK [ARGS]` prints one line, `CHECK: VERDICT`, and exits 0 when
//! the verdict is the positive one (the call went through, the thing is
//! there), 1 when it is not (`errno NAME`, `no`), 2 on a usage error.
//! `probe each 'ID CHECK ARGS' ...` runs each check in a process of its own
//! (a route may be killed by the filter) and prints `ID: VERDICT` for each,
//! `ID: killed N` for one a signal ended.
//!
//! Escape routes are harmless: every route writes back what it read, undoes
//! its mounts, and never changes the clock, swap, modules or the reboot
//! state (see tests/escape.rs).

use std::ffi::CString;
use std::io::Error;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A check's verdict and whether it is the positive one.
struct Verdict {
    text: String,
    pass: bool,
}

impl Verdict {
    fn saw(text: impl Into<String>) -> Verdict {
        Verdict {
            text: text.into(),
            pass: true,
        }
    }
    fn yes_no(yes: bool) -> Verdict {
        Verdict {
            text: if yes { "yes" } else { "no" }.into(),
            pass: yes,
        }
    }
    fn refused(e: &Error) -> Verdict {
        Verdict {
            text: format!("errno {}", errno_name(e)),
            pass: false,
        }
    }
}

impl From<R> for Verdict {
    fn from(r: R) -> Verdict {
        match r {
            Ok(()) => Verdict::saw("ok"),
            Err(e) => Verdict::refused(&e),
        }
    }
}

impl From<Result<String, Error>> for Verdict {
    fn from(r: Result<String, Error>) -> Verdict {
        match r {
            Ok(v) => Verdict::saw(v),
            Err(e) => Verdict::refused(&e),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(check) = args.first() else {
        eprintln!("usage: probe CHECK [ARGS] | probe each 'ID CHECK ARGS'...");
        std::process::exit(2);
    };
    if check == "each" {
        each(&args[1..]);
        return;
    }
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let pid = || {
        args.get(1)
            .map(String::as_str)
            .unwrap_or("self")
            .to_string()
    };
    let v: Verdict = match check.as_str() {
        // Escape routes: `ok` when the kernel let it through.
        "core-pattern" | "write-back" => write_back(&arg(1)).into(),
        "proc-sys-umounted" => proc_sys_umounted().into(),
        "fresh-proc" => fresh_proc(&arg(1)).into(),
        "release-agent" => release_agent(&arg(1)).into(),
        "mount" => mount_and_back(&arg(1), &arg(2)).into(),
        "shocker" => shocker(&arg(1)).into(),
        "bpf-map" => bpf_map().into(),
        "perf-system" => perf_system().into(),
        "swapoff" => swapoff(&arg(1)).into(),
        "sys-knob" => sys_knob(&arg(1)).into(),
        "mknod-open" => mknod_open(&arg(1), &arg(2), &arg(3), &arg(4)),
        // Devices: `ok` when the node opens read-write, or a tun device is made.
        "open-rw" => std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(arg(1))
            .map(|_| ())
            .into(),
        "tun" => tun(&arg(1), &arg(2)).into(),
        "chroot-escape" => chroot_escape(args.get(1).map(String::as_str)).into(),
        "procs" => procs(&arg(1)),
        "settimeofday" => settimeofday().into(),
        "finit-module" => finit_module().into(),
        "keyctl" => keyctl().into(),
        "userfaultfd" => userfaultfd().into(),
        "int80-swapoff" => int80_swapoff(&arg(1)).into(),
        "x32-swapoff" => x32_swapoff(&arg(1)).into(),
        "reboot" => reboot().into(),
        // What a process sees: its namespaces, root, files and profile.
        "hostname" => hostname().into(),
        "serve-peer" => serve_peer(&arg(1), &arg(2)).into(),
        "serve-activated" => serve_activated().into(),
        "ask" => ask(&arg(1), &arg(2)).into(),
        "cmdline" => cmdline(&pid()).into(),
        "ns" => ns(&arg(1), args.get(2).map(String::as_str).unwrap_or("self")).into(),
        "ls" => ls(&arg(1)).into(),
        "readlink" => std::fs::read_link(arg(1))
            .map(|p| p.to_string_lossy().into_owned())
            .into(),
        "exists" => Verdict::yes_no(Path::new(&arg(1)).symlink_metadata().is_ok()),
        "read" => std::fs::read_to_string(arg(1))
            .map(|t| t.trim_end().replace('\n', " "))
            .into(),
        "bytes" => read_bytes(&arg(1)).into(),
        "write" => std::fs::write(arg(1), format!("{}\n", arg(2))).into(),
        "pid-count" => pid_count().into(),
        "hold-memory" => hold_memory(&arg(1), &arg(2)).into(),
        "fds" => fds().into(),
        "cgroup" => std::fs::read_to_string(format!("/proc/{}/cgroup", pid()))
            .map(|t| t.trim_end().replace('\n', " "))
            .into(),
        "profile" => profile(&pid()).into(),
        "caps" => caps().into(),
        "session-leader" => session_leader(&arg(1)),
        "hog" => hog(&arg(1)),
        "cap-bound" => cap_bound(&arg(1)),
        other => {
            eprintln!("probe: unknown check {other}");
            std::process::exit(2);
        }
    };
    println!("{check}: {}", v.text);
    std::process::exit(if v.pass { 0 } else { 1 });
}

/// Runs each `ID CHECK ARGS` spec as `probe CHECK ARGS` in a child, and
/// prints `ID: VERDICT`: the child's verdict, `killed N` when signal N
/// ended it, `status N` when it said nothing.
fn each(specs: &[String]) {
    use std::os::unix::process::ExitStatusExt;
    let me = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    for spec in specs {
        let mut words = spec.split_whitespace();
        let (Some(id), Some(check)) = (words.next(), words.next()) else {
            eprintln!("probe each: {spec:?} is not 'ID CHECK [ARGS]'");
            std::process::exit(2);
        };
        let out = std::process::Command::new(&me)
            .arg(check)
            .args(words)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output();
        let verdict = match out {
            Err(e) => format!("cannot run: {e}"),
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout);
                match (
                    text.lines()
                        .next()
                        .and_then(|l| l.strip_prefix(&format!("{check}: "))),
                    o.status.signal(),
                ) {
                    (_, Some(sig)) => format!("killed {sig}"),
                    (Some(v), None) => v.to_string(),
                    (None, None) => format!("status {}", o.status.code().unwrap_or(-1)),
                }
            }
        };
        println!("{id}: {verdict}");
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
/// Opens PATH (a /dev/net/tun node) and makes a tun device NAME in the
/// caller's netns; it goes with the descriptor.
fn tun(path: &str, name: &str) -> R {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    // struct ifreq: the name, then the flags (a short) in the union.
    let mut req = [0u8; 40];
    let n = name.len().min(15);
    req[..n].copy_from_slice(&name.as_bytes()[..n]);
    let flags: libc::c_short = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    req[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `req` is
    // large enough to hold.
    check(unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, req.as_mut_ptr()) } as _)?;
    Ok(())
}

fn mknod_open(path: &str, kind: &str, major: &str, minor: &str) -> Verdict {
    let dev = libc::makedev(major.parse().unwrap_or(0), minor.parse().unwrap_or(0));
    let kind = if kind == "b" {
        libc::S_IFBLK
    } else {
        libc::S_IFCHR
    };
    let _ = std::fs::remove_file(path);
    // SAFETY: mknod with a C string that outlives the call.
    if let Err(e) = check(unsafe { libc::mknod(c(path).as_ptr(), kind | 0o600, dev) } as _) {
        return Verdict {
            text: format!("mknod errno {}", errno_name(&e)),
            pass: false,
        };
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblock()
        .open(path)
    {
        Ok(_) => Verdict::saw("ok"),
        Err(e) => Verdict {
            text: format!("open errno {}", errno_name(&e)),
            pass: false,
        },
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
/// the cwd, climb, chroot("."). Says `root DEV INO` of the root reached;
/// `jail` first chroots into it, as a naive sandbox would.
fn chroot_escape(jail: Option<&str>) -> Result<String, Error> {
    if let Some(j) = jail {
        std::env::set_current_dir(j)?;
        // SAFETY: chroot with a C string that outlives the call.
        check(unsafe { libc::chroot(c(".").as_ptr()) } as _)?;
    }
    let dir = "/.probe-chroot";
    let _ = std::fs::create_dir(dir);
    // SAFETY: chroot with a C string that outlives the call.
    check(unsafe { libc::chroot(c(dir).as_ptr()) } as _)?;
    for _ in 0..64 {
        let _ = std::env::set_current_dir("..");
    }
    // SAFETY: as above.
    check(unsafe { libc::chroot(c(".").as_ptr()) } as _)?;
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/")?;
    Ok(format!("root {} {}", m.dev(), m.ino()))
}

/// Whether any visible process has MARKER in its command line: `found`
/// (pass) or `none`. The marker is given reversed, so that the probe's
/// own command line (and its parents') does not hold it.
fn procs(reversed: &str) -> Verdict {
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
    Verdict {
        text: if found { "found" } else { "none" }.into(),
        pass: found,
    }
}

/// reboot(2) with a command no kernel knows: EPERM without CAP_SYS_BOOT,
/// EINVAL past the permission check, and nothing rebooted, halted or
/// changed in either case.
fn reboot() -> R {
    // SAFETY: integer arguments.
    check(unsafe {
        libc::syscall(
            libc::SYS_reboot,
            libc::LINUX_REBOOT_MAGIC1,
            libc::LINUX_REBOOT_MAGIC2,
            0x5348_5400u32, // no LINUX_REBOOT_CMD_*
            std::ptr::null::<libc::c_void>(),
        )
    })
}

/// Serves forever on `[::]:PORT` (IPv4 too) over `tcp` or `udp`: answers
/// each connection or datagram with `peer ADDR`, the client address it saw
/// (IPv4 clients unmapped), so a test tells a client's real address from a
/// NAT's.
fn serve_peer(proto: &str, port: &str) -> R {
    use std::io::Write;
    let port: u16 = port
        .parse()
        .map_err(|_| Error::from_raw_os_error(libc::EINVAL))?;
    let show = |a: std::net::SocketAddr| match a.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_else(|| v6.to_string()),
        v4 => v4.to_string(),
    };
    match proto {
        "tcp" => {
            let l = std::net::TcpListener::bind(("::", port))?;
            loop {
                if let Ok((mut c, peer)) = l.accept() {
                    let _ = writeln!(c, "peer {}", show(peer));
                }
            }
        }
        "udp" => {
            let s = std::net::UdpSocket::bind(("::", port))?;
            let mut buf = [0u8; 512];
            loop {
                if let Ok((_, peer)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(format!("peer {}\n", show(peer)).as_bytes(), peer);
                }
            }
        }
        _ => Err(Error::from_raw_os_error(libc::EINVAL)),
    }
}

/// A socket-activated service (sd_listen_fds): answers every connection
/// on its sockets (fds 3..), and every datagram on a UDP one, with one
/// line saying what it was given:
/// `pid ok|bad fds N names NAMES open FD,FD,...` (`pid ok` when
/// LISTEN_PID is its own; `open` its descriptors at start).
fn serve_activated() -> R {
    use std::io::Write;
    use std::os::fd::{AsFd, AsRawFd, FromRawFd};
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let pid_ok = env("LISTEN_PID") == std::process::id().to_string();
    let n: i32 = env("LISTEN_FDS").parse().unwrap_or(0);
    let open = fds()?;
    let line = format!(
        "pid {} fds {n} names {} open {}\n",
        if pid_ok { "ok" } else { "bad" },
        env("LISTEN_FDNAMES"),
        open
    );
    let listeners: Vec<std::net::TcpListener> = (3..3 + n)
        // SAFETY: the sd_listen_fds protocol hands these fds to us.
        .map(|fd| unsafe { std::net::TcpListener::from_raw_fd(fd) })
        .collect();
    if listeners.is_empty() {
        return Err(Error::from_raw_os_error(libc::EBADF));
    }
    loop {
        let mut fds: Vec<nix::poll::PollFd> = listeners
            .iter()
            .map(|l| nix::poll::PollFd::new(l.as_fd(), nix::poll::PollFlags::POLLIN))
            .collect();
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE)?;
        let ready: Vec<usize> = fds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(i, _)| i)
            .collect();
        for i in ready {
            let fd = listeners[i].as_fd().as_raw_fd();
            if datagram(fd) {
                // A datagram is answered to its sender.
                let mut buf = [0u8; 512];
                // SAFETY: an all-zero sockaddr_storage is a valid value.
                let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of_val(&peer) as libc::socklen_t;
                // SAFETY: a buffer and an address of ours, with their sizes.
                let n = unsafe {
                    libc::recvfrom(
                        fd,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut peer as *mut libc::sockaddr_storage).cast(),
                        &mut len,
                    )
                };
                if n >= 0 {
                    // SAFETY: the line, and the address recvfrom filled in.
                    unsafe {
                        libc::sendto(
                            fd,
                            line.as_ptr().cast(),
                            line.len(),
                            0,
                            (&peer as *const libc::sockaddr_storage).cast(),
                            len,
                        )
                    };
                }
                continue;
            }
            // A unix socket's accept works through the same call.
            // SAFETY: accept4 on a listening socket of ours.
            let c = unsafe {
                libc::accept4(
                    fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if c >= 0 {
                // SAFETY: accept4 returned a new descriptor we own.
                let mut f = unsafe { std::fs::File::from_raw_fd(c) };
                let _ = f.write_all(line.as_bytes());
            }
        }
    }
}

/// Whether `fd` is a datagram socket.
fn datagram(fd: i32) -> bool {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of_val(&ty) as libc::socklen_t;
    // SAFETY: getsockopt into an int of ours, with its size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0 && ty == libc::SOCK_DGRAM
}

/// The first line `serve-peer` answers at ADDR:PORT (`[v6]:port` for
/// IPv6) over `tcp` or `udp`, waiting at most 2 s.
fn ask(proto: &str, addr: &str) -> Result<String, Error> {
    use std::io::Read;
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| Error::from_raw_os_error(libc::EINVAL))?;
    let timeout = std::time::Duration::from_secs(2);
    let wait = Some(timeout);
    let mut buf = [0u8; 512];
    let n = match proto {
        "tcp" => {
            let mut c = std::net::TcpStream::connect_timeout(&addr, timeout)?;
            c.set_read_timeout(wait)?;
            c.read(&mut buf)?
        }
        "udp" => {
            let any: std::net::SocketAddr = match addr {
                std::net::SocketAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
                std::net::SocketAddr::V6(_) => "[::]:0".parse().unwrap(),
            };
            let s = std::net::UdpSocket::bind(any)?;
            s.set_read_timeout(wait)?;
            s.send_to(b"hello", addr)?;
            s.recv(&mut buf)?
        }
        _ => return Err(Error::from_raw_os_error(libc::EINVAL)),
    };
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

fn hostname() -> Result<String, Error> {
    // SAFETY: uname fills a zeroed struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    check(unsafe { libc::uname(&mut u) } as _)?;
    // SAFETY: the kernel NUL-terminates nodename.
    let name = unsafe { std::ffi::CStr::from_ptr(u.nodename.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// The command line of PID, its arguments joined by spaces.
fn cmdline(pid: &str) -> Result<String, Error> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" "))
}

/// The namespace of type `kind` PID is in, as `/proc/PID/ns/KIND` names it.
fn ns(kind: &str, pid: &str) -> Result<String, Error> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).map(|p| p.to_string_lossy().into_owned())
}

/// The names in a directory, sorted, space-separated.
fn ls(dir: &str) -> Result<String, Error> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names.join(" "))
}

/// How many bytes a file gives on reading (a masked one gives none).
fn read_bytes(path: &str) -> Result<String, Error> {
    Ok(std::fs::read(path)?.len().to_string())
}

/// How many processes `/proc` shows.
fn pid_count() -> Result<String, Error> {
    let n = std::fs::read_dir("/proc")?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count();
    Ok(n.to_string())
}

/// The descriptors this process was started with, sorted: what a program
/// started where the probe runs inherits.
fn fds() -> Result<String, Error> {
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    // The listing's own descriptor is closed by now.
    // SAFETY: F_GETFD only asks about a descriptor.
    let mut open: Vec<i32> = listed
        .into_iter()
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
        .collect();
    open.sort();
    Ok(open
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(" "))
}

/// The lines of `/proc/PID/status` that make up a profile, as
/// `CapBnd=… CapEff=… NoNewPrivs=… Seccomp=…`.
fn profile(pid: &str) -> Result<String, Error> {
    status_fields(pid, &["CapBnd", "CapEff", "NoNewPrivs", "Seccomp"])
}

/// `KEY=VALUE` for each of `keys` in `/proc/PID/status`, in that order.
fn status_fields(pid: &str, keys: &[&str]) -> Result<String, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let fields: Vec<String> = keys
        .iter()
        .map(|k| {
            let v = status
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
                .unwrap_or("")
                .trim();
            format!("{k}={v}")
        })
        .collect();
    Ok(fields.join(" "))
}

/// Touches MIB mebibytes of fresh memory, a page at a time: `ok` when
/// that much was had; a memory limit below it ends the probe (SIGKILL).
fn hog(mib: &str) -> Verdict {
    let Ok(mib) = mib.parse::<usize>() else {
        eprintln!("probe: hog takes a size in MiB");
        std::process::exit(2);
    };
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mib {
        let mut chunk = vec![0u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        held.push(std::hint::black_box(chunk));
    }
    Verdict::saw("ok")
}

/// Whether PID leads its own session: `yes`, or `no, session S`.
fn session_leader(pid: &str) -> Verdict {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) => return Verdict::refused(&e),
    };
    // After the command's `)`: state, ppid, pgrp, session.
    let sid = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(3))
        .unwrap_or("");
    if sid == pid {
        Verdict::yes_no(true)
    } else {
        Verdict {
            text: format!("no, session {sid}"),
            pass: false,
        }
    }
}

/// Every capability set of this process, `CapInh=… CapPrm=… CapEff=…
/// CapBnd=… CapAmb=…` in hex, as `/proc/self/status` gives them.
fn caps() -> Result<String, Error> {
    status_fields("self", &["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"])
}

/// Capability numbers by name, for the ones the tests ask about.
const CAPS: &[(&str, u32)] = &[
    ("NET_RAW", 13),
    ("SYS_MODULE", 16),
    ("SYS_ADMIN", 21),
    ("SYS_BOOT", 22),
    ("SYS_TIME", 25),
];

/// Whether capability NAME (or number) is in this process's bounding set.
fn cap_bound(name: &str) -> Verdict {
    let Some(n) = name
        .parse::<u32>()
        .ok()
        .or_else(|| CAPS.iter().find(|(c, _)| *c == name).map(|(_, n)| *n))
    else {
        eprintln!("probe: unknown capability {name}");
        std::process::exit(2);
    };
    // SAFETY: PR_CAPBSET_READ takes plain integers.
    match unsafe { libc::prctl(libc::PR_CAPBSET_READ, n as libc::c_ulong, 0, 0, 0) } {
        r if r < 0 => Verdict::refused(&Error::last_os_error()),
        r => Verdict::yes_no(r == 1),
    }
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

/// Allocates MiB mebibytes, writes every page, and keeps them SECS seconds:
/// a known load for `stats`.
fn hold_memory(mib: &str, secs: &str) -> std::io::Result<String> {
    let bad = |_| std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let mib: usize = mib.parse().map_err(bad)?;
    let secs: u64 = secs.parse().map_err(bad)?;
    let mut v = vec![0u8; mib << 20];
    for (i, b) in v.iter_mut().enumerate().step_by(4096) {
        *b = i as u8 | 1;
    }
    std::thread::sleep(std::time::Duration::from_secs(secs));
    Ok(format!("held {}", std::hint::black_box(&v).len()))
}
