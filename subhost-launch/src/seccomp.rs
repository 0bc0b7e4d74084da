//! The seccomp filter every process of a subhost runs under: a deny list
//! of the system calls that reach host-wide kernel state whatever the
//! namespaces (modules, kexec, swap, keyrings, BPF, perf, the clock, file
//! handles, …), modelled on Docker's default profile and systemd-nspawn's.
//! Each denied call fails with EPERM, so programs fail cleanly; nothing
//! else is filtered.
//!
//! On x86_64 the program is our own (see [`x86_64_program`]): x32 calls
//! share x86_64's audit architecture and differ only in bit 30 of the
//! number, and every one of them fails with EPERM; 32-bit (i386) calls get
//! the same deny list by their i386 numbers (as Docker's profile does), so
//! 32-bit programs run. Each list is searched as a sorted tree, which is
//! also what the kernel runs for every call number when it prepares the
//! filter, at each start. The multiplexers `socketcall` and `ipc` need no
//! care: the list denies no socket or SysV IPC call. Any other ABI kills.
//! Elsewhere `seccompiler` (pure Rust) compiles it, for the native ABI.
//!
//! The filter is installed without no_new_privs, as systemd-nspawn does:
//! setuid programs inside keep working, and the kernel accepts a filter
//! from a process with CAP_SYS_ADMIN instead. So it has to be installed
//! before the capabilities are dropped.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{anyhow, bail, Context, Result};
use seccompiler::{sock_filter, BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

/// What each group of denied calls would reach, and the calls. Names are
/// the kernel's; a name this architecture lacks is simply not filtered.
pub const DENIED: &[(&str, &[&str])] = &[
    (
        "load or replace kernel code",
        &[
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "kexec_file_load",
            "bpf",
        ],
    ),
    (
        "open any file of a filesystem by handle (\"Shocker\")",
        &["open_by_handle_at"],
    ),
    (
        "observe the whole host",
        &["perf_event_open", "lookup_dcookie", "syslog"],
    ),
    ("swap", &["swapon", "swapoff"]),
    ("raw I/O ports", &["iopl", "ioperm"]),
    ("process accounting to a host file", &["acct"]),
    (
        "kernel keyrings, which have no namespace",
        &["add_key", "request_key", "keyctl"],
    ),
    (
        "stall the kernel on a page fault (exploit aid)",
        &["userfaultfd"],
    ),
    ("set the host's clock", &["settimeofday", "clock_settime"]),
    (
        "io_uring, which bypasses this filter for its operations",
        &["io_uring_setup", "io_uring_enter", "io_uring_register"],
    ),
    (
        "obsolete",
        &[
            "_sysctl",
            "uselib",
            "ustat",
            "sysfs",
            "nfsservctl",
            "afs_syscall",
            "getpmsg",
            "putpmsg",
            "security",
            "tuxcall",
            "vserver",
        ],
    ),
];

/// Every name in [`DENIED`].
pub fn denied_names() -> impl Iterator<Item = &'static str> {
    DENIED.iter().flat_map(|(_, names)| names.iter().copied())
}

/// Whether `name` is on the deny list, i.e. something `SYSCALLS_ALLOW`
/// can lift.
pub fn is_denied(name: &str) -> bool {
    denied_names().any(|n| n == name)
}

macro_rules! numbers {
    ($name:expr; $($sys:ident),* $(,)?) => {
        match $name {
            $(n if n == &stringify!($sys)[4..] => Some(libc::$sys as i64),)*
            _ => None,
        }
    };
}

/// This architecture's number for `name`, if it has the call.
#[cfg(target_arch = "x86_64")]
fn number(name: &str) -> Option<i64> {
    numbers!(name;
        SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_bpf, SYS_open_by_handle_at, SYS_perf_event_open, SYS_lookup_dcookie, SYS_syslog,
        SYS_swapon, SYS_swapoff, SYS_iopl, SYS_ioperm, SYS_acct, SYS_add_key,
        SYS_request_key, SYS_keyctl, SYS_userfaultfd, SYS_settimeofday, SYS_clock_settime,
        SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register, SYS__sysctl,
        SYS_uselib, SYS_ustat, SYS_sysfs, SYS_nfsservctl, SYS_afs_syscall, SYS_getpmsg,
        SYS_putpmsg, SYS_security, SYS_tuxcall, SYS_vserver,
    )
}

#[cfg(target_arch = "aarch64")]
fn number(name: &str) -> Option<i64> {
    numbers!(name;
        SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_kexec_load,
        SYS_kexec_file_load, SYS_bpf, SYS_open_by_handle_at, SYS_perf_event_open,
        SYS_lookup_dcookie, SYS_syslog, SYS_swapon, SYS_swapoff, SYS_acct, SYS_add_key,
        SYS_request_key, SYS_keyctl, SYS_userfaultfd, SYS_settimeofday, SYS_clock_settime,
        SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register, SYS_nfsservctl,
    )
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn number(_name: &str) -> Option<i64> {
    None
}

/// The i386 numbers of a denied name: the calls of 32-bit programs on
/// x86_64 (`int 0x80`, `sysenter`). The clock has two more there: `stime`
/// and the 64-bit-time `clock_settime64`. Names i386 lacks have none.
fn i386_numbers(name: &str) -> &'static [u32] {
    match name {
        "init_module" => &[128],
        "finit_module" => &[350],
        "delete_module" => &[129],
        "kexec_load" => &[283],
        "bpf" => &[357],
        "open_by_handle_at" => &[342],
        "perf_event_open" => &[336],
        "lookup_dcookie" => &[253],
        "syslog" => &[103],
        "swapon" => &[87],
        "swapoff" => &[115],
        "iopl" => &[110],
        "ioperm" => &[101],
        "acct" => &[51],
        "add_key" => &[286],
        "request_key" => &[287],
        "keyctl" => &[288],
        "userfaultfd" => &[374],
        "settimeofday" => &[79, 25],
        "clock_settime" => &[264, 404],
        "io_uring_setup" => &[425],
        "io_uring_enter" => &[426],
        "io_uring_register" => &[427],
        "_sysctl" => &[149],
        "uselib" => &[86],
        "ustat" => &[62],
        "sysfs" => &[135],
        "nfsservctl" => &[169],
        "afs_syscall" => &[137],
        "getpmsg" => &[188],
        "putpmsg" => &[189],
        "vserver" => &[273],
        _ => &[],
    }
}

const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;

/// x32 system calls: x86_64's audit architecture, number with bit 30 set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

/// The compiled filter of one subhost, and what it denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The denied calls this architecture has, after `SYSCALLS_ALLOW`.
    pub denied: Vec<&'static str>,
    /// The names `SYSCALLS_ALLOW` lifted.
    pub allowed: Vec<String>,
    program: BpfProgram,
}

impl Filter {
    /// The filter a config asks for with `SECCOMP` (`enabled`) and
    /// `SYSCALLS_ALLOW` (`allow`); `None` with `SECCOMP=off`.
    pub fn wanted(enabled: bool, allow: &[String]) -> Result<Option<Filter>> {
        if !enabled {
            return Ok(None);
        }
        let denied: Vec<&'static str> = denied_names()
            .filter(|n| !allow.iter().any(|a| a == n) && number(n).is_some())
            .collect();
        let program = compile(&denied)?;
        Ok(Some(Filter {
            denied,
            allowed: allow.to_vec(),
            program,
        }))
    }

    /// Installs the filter on the calling thread, without no_new_privs:
    /// needs CAP_SYS_ADMIN, so call it before the capabilities are dropped.
    pub fn install(&self) -> Result<()> {
        let prog: Vec<libc::sock_filter> = self
            .program
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let fprog = libc::sock_fprog {
            len: u16::try_from(prog.len()).context("the seccomp program is too long")?,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: fprog points to `prog`, which outlives the call; the
        // kernel copies the program.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error())
                .context("cannot install the seccomp filter");
        }
        Ok(())
    }

    /// Instructions in the program.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.program.len()
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seccomp (no no_new_privs): EPERM for {}",
            self.denied.join(" ")
        )?;
        if cfg!(target_arch = "x86_64") {
            write!(
                f,
                "; EPERM for every x32 call; the same list for 32-bit (i386) calls"
            )?;
        }
        if !self.allowed.is_empty() {
            write!(f, "; allowed by SYSCALLS_ALLOW: {}", self.allowed.join(" "))?;
        }
        Ok(())
    }
}

fn target_arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        anyhow!(
            "seccomp filters are not supported on {}; set SECCOMP=off in the config",
            std::env::consts::ARCH
        )
    })
}

fn compile(denied: &[&str]) -> Result<BpfProgram> {
    let arch = target_arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in denied {
        if let Some(nr) = number(name) {
            rules.insert(nr, Vec::new());
        }
    }
    if rules.is_empty() {
        bail!("SYSCALLS_ALLOW lifts every denied call; set SECCOMP=off instead");
    }
    if arch == TargetArch::x86_64 {
        let x86_64: Vec<u32> = rules.keys().map(|&n| n as u32).collect();
        let mut i386: Vec<u32> = denied
            .iter()
            .flat_map(|n| i386_numbers(n).iter().copied())
            .collect();
        i386.sort_unstable();
        i386.dedup();
        return x86_64_program(&x86_64, &i386);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| anyhow!("cannot build the seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e| anyhow!("cannot compile the seccomp filter: {e}"))
}

/// Where a jump of [`x86_64_program`] goes, resolved once laid out.
#[derive(Clone, Copy)]
enum To {
    Next,
    At(usize),
    Allow,
    Deny,
    Kill,
    I386,
}

struct Ins {
    code: u16,
    jt: To,
    jf: To,
    k: u32,
}

// BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_{JEQ,JGE}|BPF_K, BPF_RET|BPF_K.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

/// The whole program on x86_64, where the kernel runs it for every call
/// and, at install, for every call number of both ABIs to fill its cache
/// of constant answers: x32 calls (x86_64's audit architecture, bit 30
/// set) fail with EPERM; x86_64 and i386 calls fail with EPERM when their
/// number is in `x86_64` or `i386` (sorted), found by a binary search
/// (about 7 comparisons, where a chain takes one per denied call), and are
/// allowed otherwise; any other ABI kills the process.
fn x86_64_program(x86_64: &[u32], i386: &[u32]) -> Result<BpfProgram> {
    const ARCH_OFFSET: u32 = 4;
    const NR_OFFSET: u32 = 0;
    let ins = |code, jt, jf, k| Ins { code, jt, jf, k };
    let mut p = vec![
        ins(LD_W_ABS, To::Next, To::Next, ARCH_OFFSET),
        ins(JEQ_K, To::Next, To::I386, AUDIT_ARCH_X86_64),
        ins(LD_W_ABS, To::Next, To::Next, NR_OFFSET),
        ins(JGE_K, To::Deny, To::Next, X32_SYSCALL_BIT),
    ];
    search(&mut p, x86_64);
    let i386_at = p.len();
    p.push(ins(JEQ_K, To::Next, To::Kill, AUDIT_ARCH_I386));
    p.push(ins(LD_W_ABS, To::Next, To::Next, NR_OFFSET));
    search(&mut p, i386);
    let allow = p.len();
    p.push(ins(RET_K, To::Next, To::Next, libc::SECCOMP_RET_ALLOW));
    p.push(ins(
        RET_K,
        To::Next,
        To::Next,
        libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
    ));
    p.push(ins(
        RET_K,
        To::Next,
        To::Next,
        libc::SECCOMP_RET_KILL_PROCESS,
    ));
    let at = |i: usize, to: To| -> Result<u8> {
        let target = match to {
            To::Next => i + 1,
            To::At(t) => t,
            To::Allow => allow,
            To::Deny => allow + 1,
            To::Kill => allow + 2,
            To::I386 => i386_at,
        };
        // Classic BPF jumps only forward, by at most 255.
        u8::try_from(target.wrapping_sub(i + 1))
            .map_err(|_| anyhow!("a seccomp jump from {i} to {target} is out of reach"))
    };
    p.iter()
        .enumerate()
        .map(|(i, x)| {
            Ok(sock_filter {
                code: x.code,
                jt: at(i, x.jt)?,
                jf: at(i, x.jf)?,
                k: x.k,
            })
        })
        .collect()
}

/// Jumps to Deny when the loaded number is one of `sorted`, else to Allow.
fn search(p: &mut Vec<Ins>, sorted: &[u32]) {
    match sorted {
        [] => p.push(Ins {
            code: JGE_K,
            jt: To::Allow,
            jf: To::Allow,
            k: 0,
        }),
        _ if sorted.len() <= 2 => {
            for (i, &nr) in sorted.iter().enumerate() {
                let last = i + 1 == sorted.len();
                p.push(Ins {
                    code: JEQ_K,
                    jt: To::Deny,
                    jf: if last { To::Allow } else { To::Next },
                    k: nr,
                });
            }
        }
        _ => {
            let mid = sorted.len() / 2;
            let node = p.len();
            p.push(Ins {
                code: JGE_K,
                jt: To::Next,
                jf: To::Next,
                k: sorted[mid],
            });
            search(p, &sorted[..mid]);
            p[node].jt = To::At(p.len());
            search(p, &sorted[mid..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter of a config that does not set SYSCALLS_ALLOW.
    fn default_filter() -> Filter {
        Filter::wanted(true, &[]).unwrap().unwrap()
    }

    #[test]
    fn every_denied_name_is_known_here() {
        if cfg!(target_arch = "x86_64") {
            for n in denied_names() {
                assert!(number(n).is_some(), "{n} has no number");
            }
        }
    }

    #[test]
    fn default_filter_denies_the_list_and_allow_lifts_names() {
        let f = default_filter();
        for n in [
            "bpf",
            "open_by_handle_at",
            "keyctl",
            "swapoff",
            "finit_module",
        ] {
            assert!(f.denied.contains(&n), "{n}");
        }
        assert!(f.len() > 40 && f.len() < 260, "{}", f.len());
        let g = Filter::wanted(true, &["bpf".into()]).unwrap().unwrap();
        assert!(!g.denied.contains(&"bpf"));
        assert!(g.len() < f.len());
        assert!(g.to_string().contains("SYSCALLS_ALLOW: bpf"), "{g}");
        assert!(Filter::wanted(false, &["bpf".into()]).unwrap().is_none());
    }

    /// Runs `prog` as the kernel would on (arch, nr): the opcodes
    /// `x86_64_program` uses.
    fn interpret(prog: &[sock_filter], arch: u32, nr: u32) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => acc = if i.k == 4 { arch } else { nr },
                JEQ_K | JGE_K => {
                    let hit = if i.code == JEQ_K {
                        acc == i.k
                    } else {
                        acc >= i.k
                    };
                    pc += usize::from(if hit { i.jt } else { i.jf });
                }
                RET_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_search_answers_every_call_number_as_the_lists_say() {
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        for allow in [vec![], vec!["bpf".to_string(), "vserver".to_string()]] {
            let f = Filter::wanted(true, &allow).unwrap().unwrap();
            let x86: Vec<u32> = f
                .denied
                .iter()
                .filter_map(|n| number(n))
                .map(|n| n as u32)
                .collect();
            let i386: Vec<u32> = f
                .denied
                .iter()
                .flat_map(|n| i386_numbers(n).to_vec())
                .collect();
            for nr in 0..1024 {
                let want = |list: &[u32]| {
                    if list.contains(&nr) {
                        eperm
                    } else {
                        libc::SECCOMP_RET_ALLOW
                    }
                };
                assert_eq!(
                    interpret(&f.program, AUDIT_ARCH_X86_64, nr),
                    want(&x86),
                    "x86_64 {nr}"
                );
                assert_eq!(
                    interpret(&f.program, AUDIT_ARCH_I386, nr),
                    want(&i386),
                    "i386 {nr}"
                );
                assert_eq!(
                    interpret(&f.program, AUDIT_ARCH_X86_64, nr | X32_SYSCALL_BIT),
                    eperm
                );
                assert_eq!(
                    interpret(&f.program, 0xC000_00B7, nr),
                    libc::SECCOMP_RET_KILL_PROCESS,
                    "another ABI"
                );
            }
            assert!(!x86.contains(&(libc::SYS_read as u32)));
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(is_denied("bpf"));
        assert!(!is_denied("read"));
        assert!(!is_denied("nosuch"));
    }

    /// Runs `f` in a forked child under the default filter and returns
    /// the child's exit code: `f`'s result, or 128+signal.
    fn in_child(f: fn() -> i32) -> i32 {
        let filter = default_filter();
        // SAFETY: the test child only makes raw system calls and _exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // Without CAP_SYS_ADMIN (tests may run unprivileged), the
                // kernel wants no_new_privs.
                // SAFETY: prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let code = if filter.install().is_ok() { f() } else { 99 };
                // SAFETY: leave the forked test child without unwinding.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                match nix::sys::wait::waitpid(child, None).unwrap() {
                    nix::sys::wait::WaitStatus::Exited(_, c) => c,
                    nix::sys::wait::WaitStatus::Signaled(_, s, _) => 128 + s as i32,
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    fn errno_of(r: libc::c_long) -> i32 {
        if r < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    #[test]
    fn the_filter_denies_with_eperm_and_allows_the_rest() {
        // finit_module(-1): EPERM from the filter, where the kernel would
        // say EBADF or EPERM; getpid still works.
        let code = in_child(|| {
            // SAFETY: raw system calls with integer arguments.
            let denied = errno_of(unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) });
            // SAFETY: getpid has no arguments.
            let pid = unsafe { libc::syscall(libc::SYS_getpid) };
            if denied == libc::EPERM && pid > 0 {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_lowest_and_highest_denied_calls_are_denied() {
        // syslog (103) and io_uring_register (427) bound the range the
        // prefix lets through unseen; both must still reach the body.
        let code = in_child(|| {
            // SAFETY: raw system calls with integer arguments.
            let low = errno_of(unsafe { libc::syscall(libc::SYS_syslog, 3, 0, 0) });
            // SAFETY: as above; fd -1.
            let high = errno_of(unsafe { libc::syscall(libc::SYS_io_uring_register, -1, 0, 0, 0) });
            // SAFETY: getppid (110, inside the range) and getpid (39, below).
            let inside = unsafe { libc::syscall(libc::SYS_getppid) };
            // SAFETY: as above.
            let below = unsafe { libc::syscall(libc::SYS_getpid) };
            if low == libc::EPERM && high == libc::EPERM && inside > 0 && below > 0 {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0);
    }

    /// A 32-bit system call through `int 0x80`: number and first argument.
    #[cfg(target_arch = "x86_64")]
    fn int80(nr: u32, arg: u32) -> i32 {
        let mut ret: i64 = nr as i64;
        // SAFETY: int 0x80 with integer arguments only; the kernel clobbers
        // eax, and r8-r11 are preserved on this entry.
        unsafe {
            std::arch::asm!(
                "xchg rbx, {a}",
                "int 0x80",
                "xchg rbx, {a}",
                a = inout(reg) arg as u64 => _,
                inout("rax") ret,
                options(nostack)
            );
        }
        ret as i32
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn i386_calls_meet_the_same_list() {
        let code = in_child(|| {
            // getpid (20) is allowed; keyctl (288), stime (25) and
            // clock_settime64 (404) are denied; all with harmless arguments.
            let pid = int80(20, 0);
            let keyctl = int80(288, 0);
            let stime = int80(25, 0);
            let clock = int80(404, 0);
            let eperm = -libc::EPERM;
            if pid > 0 && keyctl == eperm && stime == eperm && clock == eperm {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn i386_numbers_are_those_of_denied_names() {
        let table_names = [
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "bpf",
            "open_by_handle_at",
            "perf_event_open",
            "lookup_dcookie",
            "syslog",
            "swapon",
            "swapoff",
            "iopl",
            "ioperm",
            "acct",
            "add_key",
            "request_key",
            "keyctl",
            "userfaultfd",
            "settimeofday",
            "clock_settime",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "_sysctl",
            "uselib",
            "ustat",
            "sysfs",
            "nfsservctl",
            "afs_syscall",
            "getpmsg",
            "putpmsg",
            "vserver",
        ];
        for n in table_names {
            assert!(is_denied(n), "{n}");
            assert!(!i386_numbers(n).is_empty(), "{n}");
        }
        // What i386 lacks.
        for n in ["kexec_file_load", "security", "tuxcall"] {
            assert!(i386_numbers(n).is_empty(), "{n}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_calls_get_eperm() {
        let code = in_child(|| {
            // getpid as an x32 call: allowed by the body, denied by the guard.
            // SAFETY: raw system call without pointer arguments.
            let r = unsafe { libc::syscall(libc::SYS_getpid | X32_SYSCALL_BIT as i64) };
            if errno_of(r) == libc::EPERM {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0);
    }
}
