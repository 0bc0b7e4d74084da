//! The device policy of a subhost: which device nodes its processes may
//! make (mknod) and open, whatever their capabilities. Without it, root
//! inside with CAP_MKNOD makes a node of the host's disk and writes to it.
//!
//! The default is Docker's: any node may be made, and only the harmless
//! ones opened (null, zero, full, random, urandom, tty, console, ptmx and
//! the ptys); `DEVICES` adds nodes of the host. Carried out by a
//! `BPF_CGROUP_DEVICE` program on the cgroup v2 directory (on a hybrid host
//! too: the sandbox is cloned into that directory, where joining a v1
//! cgroup costs a migration), assembled here (no compiler at run time);
//! only without cgroup2 by the v1 `devices` controller (`devices.deny a`,
//! then one `devices.allow` per rule).

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Char,
    Block,
}

/// Access as the v1 files write it: r(ead), w(rite), m(knod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub mknod: bool,
}

impl Access {
    pub const RWM: Access = Access {
        read: true,
        write: true,
        mknod: true,
    };
    pub const M: Access = Access {
        read: false,
        write: false,
        mknod: true,
    };

    /// Letters from `rwm`, each at most once, at least one.
    pub fn parse(s: &str) -> Option<Access> {
        let mut a = Access {
            read: false,
            write: false,
            mknod: false,
        };
        for c in s.chars() {
            let bit = match c {
                'r' => &mut a.read,
                'w' => &mut a.write,
                'm' => &mut a.mknod,
                _ => return None,
            };
            if *bit {
                return None;
            }
            *bit = true;
        }
        (!s.is_empty()).then_some(a)
    }

    /// The kernel's BPF_DEVCG_ACC_* bits.
    fn bpf_bits(self) -> i32 {
        (self.mknod as i32) | (self.read as i32) << 1 | (self.write as i32) << 2
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (on, c) in [(self.read, 'r'), (self.write, 'w'), (self.mknod, 'm')] {
            if on {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// One allowed set of devices; `None` numbers are any (`*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub kind: Kind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: Access,
}

/// As `devices.allow` takes it: `c 1:3 rwm`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Char => 'c',
            Kind::Block => 'b',
        };
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        write!(
            f,
            "{kind} {}:{} {}",
            num(self.major),
            num(self.minor),
            self.access
        )
    }
}

const fn char_dev(major: u32, minor: Option<u32>) -> Rule {
    Rule {
        kind: Kind::Char,
        major: Some(major),
        minor,
        access: Access::RWM,
    }
}

/// Docker's default: make any node; open null, zero, full, random,
/// urandom, tty, console, ptmx and the ptys (what the subhost's own /dev
/// and devpts hold).
pub const DEFAULT: [Rule; 11] = [
    Rule {
        kind: Kind::Char,
        major: None,
        minor: None,
        access: Access::M,
    },
    Rule {
        kind: Kind::Block,
        major: None,
        minor: None,
        access: Access::M,
    },
    char_dev(1, Some(3)),
    char_dev(1, Some(5)),
    char_dev(1, Some(7)),
    char_dev(1, Some(8)),
    char_dev(1, Some(9)),
    char_dev(5, Some(0)),
    char_dev(5, Some(1)),
    char_dev(5, Some(2)),
    char_dev(136, None),
];

/// A host device node a config hands to a subhost (`DEVICES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub path: PathBuf,
    pub rule: Rule,
}

impl Declared {
    /// `PATH` or `PATH:MODE`: an existing device node; a block device only
    /// with an explicit mode. Err: (what is wrong, how to fix it).
    pub fn parse(spec: &str) -> Result<Declared, (String, String)> {
        let usage = "write PATH or PATH:MODE, MODE of the letters r, w, m \
                     (e.g. DEVICES=(/dev/net/tun /dev/kvm:rw)); block devices need a MODE";
        // A path may hold ':' itself (/dev/disk/by-path/pci-0000:00:05.0).
        let (path, mode) = match spec.rsplit_once(':') {
            Some((p, m)) if !Path::new(spec).exists() => (p, Some(m)),
            _ => (spec, None),
        };
        if !path.starts_with('/') {
            return Err((format!("{spec:?} is not an absolute path"), usage.into()));
        }
        let access = match mode {
            None => None,
            Some(m) => Some(Access::parse(m).ok_or_else(|| {
                (
                    format!("{m:?} in {spec:?} is not a mode of the letters r, w, m"),
                    usage.to_string(),
                )
            })?),
        };
        let meta = std::fs::metadata(path).map_err(|e| {
            (
                format!("device {path}: {e}"),
                "name a device node of the host, as `ls -l /dev` shows them".to_string(),
            )
        })?;
        let ft = meta.file_type();
        let kind = if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else {
            return Err((
                format!("{path} is not a device node"),
                "name a character or block device of the host, as `ls -l /dev` shows them"
                    .to_string(),
            ));
        };
        let access = match (kind, access) {
            (_, Some(a)) => a,
            (Kind::Block, None) => {
                return Err((
                    format!("{path} is a block device, given without a mode"),
                    format!(
                        "a block device reaches data of the whole host: say what is meant, \
                         e.g. {path}:r or {path}:rw"
                    ),
                ))
            }
            _ => Access::RWM,
        };
        let rdev = meta.rdev();
        Ok(Declared {
            path: PathBuf::from(path),
            rule: Rule {
                kind,
                major: Some(libc::major(rdev)),
                minor: Some(libc::minor(rdev)),
                access,
            },
        })
    }

    /// Why this device reaches host-wide state, if it does: `status` warns.
    pub fn host_wide(&self) -> Option<&'static str> {
        if self.rule.kind == Kind::Block {
            return Some("a block device: the data of every user of the disk");
        }
        match (self.rule.major, self.rule.minor) {
            (Some(1), Some(1)) => Some("/dev/mem: the host's physical memory"),
            (Some(1), Some(2)) => Some("/dev/kmem: the host kernel's memory"),
            (Some(1), Some(4)) => Some("/dev/port: the host's I/O ports"),
            (Some(1), Some(11)) => Some("/dev/kmsg: the host's kernel log"),
            _ => None,
        }
    }
}

impl fmt::Display for Declared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.rule)
    }
}

/// The rules of a subhost: the default and what `DEVICES` declares.
pub fn rules(declared: &[Declared]) -> Vec<Rule> {
    let mut out = DEFAULT.to_vec();
    for d in declared {
        if !out.contains(&d.rule) {
            out.push(d.rule);
        }
    }
    out
}

/// The policy as `status` shows it: each rule as `devices.allow` takes it,
/// a declared node's with its path.
pub fn describe(declared: &[Declared]) -> Vec<String> {
    rules(declared)
        .iter()
        .map(|r| match declared.iter().find(|d| d.rule == *r) {
            Some(d) => format!("{r} {}", d.path.display()),
            None => r.to_string(),
        })
        .collect()
}

/// `status`'s warnings for declared nodes that reach host-wide state.
pub fn warnings(declared: &[Declared]) -> Vec<String> {
    declared
        .iter()
        .filter_map(|d| {
            d.host_wide().map(|why| {
                format!(
                    "DEVICES gives {} ({why}): root inside reaches the host through it",
                    d.path.display()
                )
            })
        })
        .collect()
}

/// A `BPF_CGROUP_DEVICE` program to attach to a cgroup v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub dir: PathBuf,
    pub rules: Vec<Rule>,
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules: Vec<String> = self.rules.iter().map(Rule::to_string).collect();
        write!(
            f,
            "bpf prog load type cgroup/dev ({} instructions) && bpf prog attach to {} \
             type cgroup_device  # allows: {}",
            assemble(&self.rules).len(),
            self.dir.display(),
            rules.join(", ")
        )
    }
}

/// One eBPF instruction, as `struct bpf_insn` lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes: class | operation | source.
const LDX_MEM_W: u8 = 0x61;
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_X: u8 = 0xbc;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const JMP_JNE_X: u8 = 0x5d;
const JMP_JEQ_K: u8 = 0x15;
const JMP_JGE_K: u8 = 0x35;
const ALU32_MOV_K: u8 = 0xb4;
const ALU32_RSH_X: u8 = 0x7c;
const JMP_EXIT: u8 = 0x95;

const fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// The program: r2 the device type, r3 the access asked, r4 major, r5
/// minor (from `struct bpf_cgroup_dev_ctx`); 1 (allow) when a rule
/// matches, else 0.
///
/// The kernel verifies and compiles the program at every start, at ~7 µs
/// an instruction, so the rules are grouped rather than checked one by
/// one: the type and the access once per group of rules that share them,
/// the major once per major, and the minors below 32 of one major by one
/// bit test (the default's nine nodes are three majors). 40 instructions
/// for the default, where a block per rule took 64.
pub fn assemble(rules: &[Rule]) -> Vec<Insn> {
    let mut a = Asm::default();
    a.p.extend([
        ins(LDX_MEM_W, 2, 1, 0, 0),
        ins(ALU32_AND_K, 2, 0, 0, 0xffff),
        ins(LDX_MEM_W, 3, 1, 0, 0),
        ins(ALU32_RSH_K, 3, 0, 0, 16),
        ins(LDX_MEM_W, 4, 1, 4, 0),
        ins(LDX_MEM_W, 5, 1, 8, 0),
    ]);
    for (kind, access, majors) in groups(rules) {
        let next_group = a.label();
        let kind_code = match kind {
            Kind::Char => 2,
            Kind::Block => 1,
        };
        a.jump(JMP_JNE_K, 2, 0, kind_code, next_group);
        if access != Access::RWM {
            // Allowed when the access asked is within the rule's: r1 = r3 & rule; r1 == r3.
            a.p.push(ins(ALU32_MOV_X, 1, 3, 0, 0));
            a.p.push(ins(ALU32_AND_K, 1, 0, 0, access.bpf_bits()));
            a.jump(JMP_JNE_X, 1, 3, 0, next_group);
        }
        for (major, minors) in majors {
            let next_major = a.label();
            if let Some(m) = major {
                a.jump(JMP_JNE_K, 4, 0, m as i32, next_major);
            }
            if minors.contains(&None) {
                a.allow();
                a.place(next_major);
                if major.is_none() {
                    // Every device of the group: nothing after is reached.
                    break;
                }
                continue;
            }
            let bits = minors
                .iter()
                .flatten()
                .filter(|m| **m < 32)
                .fold(0u32, |b, m| b | 1 << m);
            if bits != 0 {
                let past = a.label();
                a.jump(JMP_JGE_K, 5, 0, 32, past);
                a.p.push(ins(ALU32_MOV_K, 1, 0, 0, bits as i32));
                a.p.push(ins(ALU32_RSH_X, 1, 5, 0, 0));
                a.p.push(ins(ALU32_AND_K, 1, 0, 0, 1));
                a.jump(JMP_JEQ_K, 1, 0, 0, past);
                a.allow();
                a.place(past);
            }
            for m in minors.iter().flatten().filter(|m| **m >= 32) {
                let past = a.label();
                a.jump(JMP_JNE_K, 5, 0, *m as i32, past);
                a.allow();
                a.place(past);
            }
            a.place(next_major);
        }
        a.place(next_group);
    }
    a.p.push(ins(ALU64_MOV_K, 0, 0, 0, 0));
    a.p.push(ins(JMP_EXIT, 0, 0, 0, 0));
    a.finish()
}

/// The rules by type and access, then by major (`None`: any), each with
/// its minors (`None`: any), in the order the rules first name them.
#[allow(clippy::type_complexity)]
fn groups(rules: &[Rule]) -> Vec<(Kind, Access, Vec<(Option<u32>, Vec<Option<u32>>)>)> {
    let mut out: Vec<(Kind, Access, Vec<(Option<u32>, Vec<Option<u32>>)>)> = Vec::new();
    for r in rules {
        let i = match out.iter().position(|g| g.0 == r.kind && g.1 == r.access) {
            Some(i) => i,
            None => {
                out.push((r.kind, r.access, Vec::new()));
                out.len() - 1
            }
        };
        let majors = &mut out[i].2;
        let j = match majors.iter().position(|m| m.0 == r.major) {
            Some(j) => j,
            None => {
                majors.push((r.major, Vec::new()));
                majors.len() - 1
            }
        };
        if !majors[j].1.contains(&r.minor) {
            majors[j].1.push(r.minor);
        }
    }
    // A group's any-major entry last: it ends the group, and the kernel
    // refuses a program with instructions no path reaches.
    for g in &mut out {
        g.2.sort_by_key(|m| m.0.is_none());
    }
    out
}

/// Forward jumps to labels, resolved once the program is whole.
#[derive(Default)]
struct Asm {
    p: Vec<Insn>,
    /// Where each label is, once placed.
    labels: Vec<Option<usize>>,
    /// (jump instruction, label) pairs to resolve.
    fixups: Vec<(usize, usize)>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn place(&mut self, label: usize) {
        self.labels[label] = Some(self.p.len());
    }

    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, label: usize) {
        self.fixups.push((self.p.len(), label));
        self.p.push(ins(code, dst, src, 0, imm));
    }

    fn allow(&mut self) {
        self.p.push(ins(ALU64_MOV_K, 0, 0, 0, 1));
        self.p.push(ins(JMP_EXIT, 0, 0, 0, 0));
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.fixups {
            let to = self.labels[label].expect("every label is placed");
            // Relative to the next instruction.
            self.p[at].off = (to - at - 1) as i16;
        }
        self.p
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_QUERY_EFFECTIVE: u32 = 1;

/// The part of `union bpf_attr` BPF_PROG_LOAD reads.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// The part of `union bpf_attr` BPF_PROG_ATTACH reads.
#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// The part of `union bpf_attr` BPF_PROG_QUERY reads and writes.
#[repr(C)]
#[derive(Default)]
struct ProgQuery {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a live, fully initialised bpf_attr prefix of the size
    // passed; the kernel reads (and for logs writes) only within it and the
    // buffers it points to, which outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads the program into the kernel.
pub fn load(rules: &[Rule]) -> Result<OwnedFd> {
    let insns = assemble(rules);
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..7].copy_from_slice(b"subhost");
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..ProgLoad::default()
    };
    // Without the verifier's log, which costs every start; asked for again
    // only to say why a load failed.
    let e = match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor we own.
        Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => e,
    };
    if e.raw_os_error() == Some(libc::EPERM) {
        bail!(
            "cannot load the device policy (a BPF_CGROUP_DEVICE program): {e}; it takes \
             CAP_SYS_ADMIN or CAP_BPF of the host, and a container manager may refuse bpf() \
             altogether: run the launcher as the host's root"
        );
    }
    let mut log = vec![0u8; 1 << 16];
    attr.log_level = 1;
    attr.log_size = log.len() as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor we own.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    bail!(
        "cannot load the device policy (a BPF_CGROUP_DEVICE program): {e}; the kernel \
         needs CONFIG_CGROUP_BPF{}{}",
        if text.is_empty() { "" } else { "; verifier: " },
        text.trim()
    )
}

/// Whether `dir` holds exactly one device program attached as `attach`
/// attaches it (flags 0): the one a kept cgroup's policy record names,
/// unless someone detached or added one since.
pub fn attached_alone(dir: &Path) -> Result<bool> {
    let (ids, flags) = programs(dir, false)?;
    Ok(ids.len() == 1 && flags == 0)
}

/// The ids of the device programs attached to `dir` (or, `effective`,
/// run for its processes: its own and its parents'), and the flags they
/// were attached with, by BPF_PROG_QUERY.
pub fn programs(dir: &Path, effective: bool) -> Result<(Vec<u32>, u32)> {
    let d = std::fs::File::open(dir)
        .with_context(|| format!("cannot open cgroup {}", dir.display()))?;
    // More than a cgroup can hold (64, with BPF_F_ALLOW_MULTI).
    let mut ids = [0u32; 64];
    let mut attr = ProgQuery {
        target_fd: d.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        query_flags: if effective { BPF_F_QUERY_EFFECTIVE } else { 0 },
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..ProgQuery::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr).with_context(|| {
        format!(
            "cannot query the device programs of cgroup {}",
            dir.display()
        )
    })?;
    let count = (attr.prog_cnt as usize).min(ids.len());
    Ok((ids[..count].to_vec(), attr.attach_flags))
}

/// Loads the program and attaches it to its directory; nothing below may
/// replace it (no BPF_F_ALLOW_OVERRIDE). It stays until the cgroup goes.
/// On a directory that holds one already (a kept cgroup whose policy
/// changed) the kernel swaps the new one in, in one step: without
/// BPF_F_ALLOW_MULTI a cgroup holds one program of a type.
pub fn attach(program: &Program) -> Result<()> {
    let prog = load(&program.rules)?;
    let dir = std::fs::File::open(&program.dir)
        .with_context(|| format!("cannot open cgroup {}", program.dir.display()))?;
    let mut attr = ProgAttach {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
    };
    match bpf(BPF_PROG_ATTACH, &mut attr) {
        Ok(_) => Ok(()),
        // The kernel refuses below a cgroup whose program allows no other
        // (attached without BPF_F_ALLOW_OVERRIDE or _MULTI): another
        // manager's device policy, or this subhost's own.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => bail!(
            "cannot attach the device policy to cgroup {}: {e}; a cgroup above holds a \
             device program that allows none below it (see `bpftool cgroup tree`): set \
             CGROUP_PARENT to a cgroup outside it",
            program.dir.display()
        ),
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot attach the device policy to cgroup {}",
                program.dir.display()
            )
        }),
    }
}

/// Where a v1 rule goes: `devices.deny` with `a`, then `devices.allow`.
pub fn v1_files(dir: &Path, rules: &[Rule]) -> Vec<(PathBuf, String)> {
    let mut out = vec![(dir.join("devices.deny"), "a".to_string())];
    out.extend(
        rules
            .iter()
            .map(|r| (dir.join("devices.allow"), r.to_string())),
    );
    out
}

/// The launcher's own device cgroup `own` when the subhost may stay under
/// it: its `devices.list` must not allow every device (a container
/// manager's policy, e.g. systemd-nspawn's, is at least as narrow as the
/// default here). An error says why not.
pub fn inherited(own: &Path) -> anyhow::Result<PathBuf> {
    let list = own.join("devices.list");
    let text = std::fs::read_to_string(&list)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", list.display()))?;
    if text.trim().is_empty() || text.lines().any(|l| l.trim() == "a *:* rwm") {
        anyhow::bail!(
            "cannot give the subhost a device policy: the cgroup v1 devices hierarchy is \
             mounted read-only and the launcher's own device cgroup ({}) allows every device; \
             run the launcher where it can make device cgroups, or under a container manager \
             that restricts devices",
            own.display()
        );
    }
    Ok(own.to_path_buf())
}
