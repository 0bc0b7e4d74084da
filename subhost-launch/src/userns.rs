//! Unprivileged subhosts: the range of host ids a subhost's user namespace
//! maps its ids 0..COUNT onto, and the user namespace itself.
//!
//! `USERNS` in the config: unset or `no` (no user namespace), `pick` (a
//! range of 65536 ids chosen once for NAME and recorded beside it, so that
//! the ownership of what the subhost wrote never changes under it), or an
//! explicit `BASE` / `BASE:COUNT`. A range never reaches below 65536 (the
//! host's own users and groups) and never overlaps another subhost's range
//! or an `/etc/subuid` / `/etc/subgid` entry: two subhosts sharing ids could
//! signal and ptrace each other's processes and read each other's files.
//!
//! Choosing and checking a range is plain data (`choose`); reading the
//! records and subid files, and writing the record, is the thin layer over
//! it (`resolve`, `record`).

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::unistd::ForkResult;

use crate::layout::Layout;
use crate::process::{self, Channel, Message};
use crate::sys;

/// Ids of a picked range, and the default COUNT: what a Linux distribution
/// allocates (uids and gids up to 65535, nobody at 65534).
pub const SIZE: u32 = 65536;
/// Where picked ranges start, and end (exclusive): the container range of
/// systemd's UIDS-GIDS.md, 524288…1879048191, which systemd-nspawn picks
/// from too; `/etc/subuid` entries in it (useradd's from 100000 up reach it
/// after a few users) are skipped.
pub const PICK_LOW: u32 = 0x8_0000;
pub const PICK_HIGH: u32 = 0x7000_0000;
/// Ids below this are the host's own users and groups.
pub const HOST_IDS: u32 = 65536;

/// A range of host ids: inside id `n` is host id `base + n`, for
/// `n < count`. The same range serves uids and gids.
/// Serialized as `{"base": B, "count": C}` (`status --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Range {
    pub base: u32,
    pub count: u32,
}

impl Range {
    /// One past the last host id (u64: `base + count` may be 2^32).
    pub fn end(&self) -> u64 {
        u64::from(self.base) + u64::from(self.count)
    }
    pub fn overlaps(&self, other: &Range) -> bool {
        u64::from(self.base) < other.end() && u64::from(other.base) < self.end()
    }
    /// The line for `/proc/PID/uid_map` and `gid_map`.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.base, self.count)
    }
}

/// As the config and the record write it.
impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.base, self.count)
    }
}

/// The `USERNS` setting, when it asks for a user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Pick,
    Fixed(Range),
}

/// `USERNS` as a config asks for it, with its line: whether the range is
/// free is only known at start, and reported at that line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    pub setting: Setting,
    pub line: usize,
}

/// Parses a `USERNS` value: `None` for unset, empty or `no`. The error is
/// (what is wrong, how to fix it), for the config's FILE:LINE message.
pub fn parse(value: &str) -> Result<Option<Setting>, (String, String)> {
    const FIX: &str = "write USERNS=no, USERNS=pick, USERNS=BASE or USERNS=BASE:COUNT \
                       (e.g. USERNS=pick, or USERNS=1000000:65536)";
    let v = value.trim();
    match v {
        "" | "no" => return Ok(None),
        "pick" => return Ok(Some(Setting::Pick)),
        _ => {}
    }
    let (base, count) = match v.split_once(':') {
        Some((b, c)) => (b, Some(c)),
        None => (v, None),
    };
    let number = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let Some(base) = number(base) else {
        return Err((
            format!("{value:?} is not no, pick, BASE or BASE:COUNT"),
            FIX.into(),
        ));
    };
    let count = match count {
        None => SIZE,
        Some(c) => match number(c) {
            Some(c) if c > 0 => c,
            _ => {
                return Err((
                    format!("{value:?}: COUNT must be a number of ids from 1 up"),
                    "write USERNS=BASE:COUNT, e.g. USERNS=1000000:65536".into(),
                ))
            }
        },
    };
    let range = Range { base, count };
    if base < HOST_IDS {
        return Err((
            format!(
                "{value}: the range {base}..{} overlaps the host's own users and \
                 groups (ids below {HOST_IDS}); root inside would be a user of the host",
                range.end() - 1
            ),
            format!("choose a BASE of at least {HOST_IDS}, or USERNS=pick"),
        ));
    }
    // uid (u32)-1 is the kernel's "no id" and cannot be mapped.
    if range.end() > u64::from(u32::MAX) {
        return Err((
            format!(
                "{value}: the range ends at {}, beyond the largest id {}",
                range.end() - 1,
                u32::MAX - 1
            ),
            "choose a smaller BASE or COUNT".into(),
        ));
    }
    Ok(Some(Setting::Fixed(range)))
}

/// A range taken by someone else, and who, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub range: Range,
    /// e.g. `subhost web` or `/etc/subuid line 3 (alice)`.
    pub by: String,
}

/// Why a setting cannot get a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Overlap { range: Range, with: Taken },
    Full,
}

impl Refusal {
    /// How to fix it.
    pub fn fix(&self) -> &'static str {
        match self {
            Refusal::Overlap { .. } => "choose another BASE, or USERNS=pick",
            Refusal::Full => "remove subhosts or /etc/subuid entries that are no longer used",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Overlap { range, with } => write!(
                f,
                "USERNS={range}: the range overlaps {} ({}); two subhosts or users \
                 sharing ids could reach each other's processes and files",
                with.by, with.range
            ),
            Refusal::Full => write!(
                f,
                "USERNS=pick: no free range of {SIZE} ids is left in {PICK_LOW}..{PICK_HIGH}"
            ),
        }
    }
}

/// The stable hash of NAME that picks its first candidate slot: FNV-1a, so
/// that the same NAME gets the same range on every host and every build.
fn fnv1a(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The range for `setting` of subhost `name`: `recorded` is its own
/// recorded range (kept for `pick`, so it never changes), `taken` every
/// range of other subhosts and of `/etc/subuid` and `/etc/subgid`.
pub fn choose(
    name: &str,
    setting: Setting,
    recorded: Option<Range>,
    taken: &[Taken],
) -> Result<Range, Refusal> {
    let clash = |r: &Range| taken.iter().find(|t| t.range.overlaps(r));
    let fixed = match (setting, recorded) {
        (Setting::Fixed(r), _) => Some(r),
        (Setting::Pick, Some(r)) => Some(r),
        (Setting::Pick, None) => None,
    };
    if let Some(range) = fixed {
        return match clash(&range) {
            Some(t) => Err(Refusal::Overlap {
                range,
                with: t.clone(),
            }),
            None => Ok(range),
        };
    }
    let slots = (PICK_HIGH - PICK_LOW) / SIZE;
    let first = (fnv1a(name) % u64::from(slots)) as u32;
    (0..slots)
        .map(|i| Range {
            base: PICK_LOW + ((first + i) % slots) * SIZE,
            count: SIZE,
        })
        .find(|r| clash(r).is_none())
        .ok_or(Refusal::Full)
}

/// The entries of an `/etc/subuid`-style file (`NAME:START:COUNT` lines);
/// `file` only names them. Malformed lines are skipped, as shadow-utils
/// does.
pub fn parse_subid(file: &str, text: &str) -> Vec<Taken> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split(':');
        let (Some(who), Some(start), Some(count), None) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let (Ok(base), Ok(count)) = (start.parse::<u32>(), count.parse::<u32>()) else {
            continue;
        };
        if count == 0 {
            continue;
        }
        out.push(Taken {
            range: Range { base, count },
            by: format!("{file} line {} ({who})", n + 1),
        });
    }
    out
}

/// Reads a recorded range (`BASE:COUNT`), `None` when there is none.
pub fn read_record(layout: &Layout) -> Result<Option<Range>> {
    let path = layout.userns_record();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    match parse(&text) {
        Ok(Some(Setting::Fixed(r))) => Ok(Some(r)),
        _ => bail!(
            "{}: not a recorded range BASE:COUNT ({:?}); restore it, or remove it to \
             pick again (files in root/ keep their owners from the old range)",
            path.display(),
            text.trim()
        ),
    }
}

/// Every range in use on this host except `name`'s own: the other
/// subhosts' records and `/etc/subuid`, `/etc/subgid`.
pub fn taken(base: &Path, name: &str) -> Result<Vec<Taken>> {
    let mut out = subid_taken()?;
    let entries = match std::fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", base.display())),
    };
    for entry in entries.flatten() {
        let other = entry.file_name();
        let Some(other) = other.to_str() else {
            continue;
        };
        if other == name {
            continue;
        }
        let Ok(layout) = Layout::new(base, other) else {
            continue;
        };
        // A broken record of another subhost does not block this one; that
        // subhost's own start says what is wrong with it.
        if let Ok(Some(range)) = read_record(&layout) {
            out.push(Taken {
                range,
                by: format!("subhost {other}"),
            });
        }
    }
    Ok(out)
}

/// The ranges of `/etc/subuid` and `/etc/subgid`.
fn subid_taken() -> Result<Vec<Taken>> {
    let mut out = Vec::new();
    for file in ["/etc/subuid", "/etc/subgid"] {
        match std::fs::read_to_string(file) {
            Ok(text) => out.extend(parse_subid(file, &text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {file}")),
        }
    }
    Ok(out)
}

/// Chooses the range of `layout` for `setting` and records it beside the
/// subhost, holding a lock on `$SUBHOST` so two picks cannot take one
/// range. The refusal is returned apart, for a FILE:LINE message.
///
/// A range recorded already was checked against the other subhosts' when
/// it was (under the lock, which every record is written under): a start
/// that keeps it checks `/etc/subuid` and `/etc/subgid` only, and does not
/// read every other subhost's record.
pub fn resolve(layout: &Layout, setting: Setting) -> Result<Result<Range, Refusal>> {
    let kept = match (setting, read_record(layout)?) {
        (Setting::Pick, Some(r)) => Some(r),
        (Setting::Fixed(want), Some(r)) if want == r => Some(r),
        _ => None,
    };
    if let Some(r) = kept {
        return Ok(choose(&layout.name, setting, Some(r), &subid_taken()?));
    }
    let _lock = lock_base(&layout.base)?;
    let recorded = read_record(layout)?;
    let taken = taken(&layout.base, &layout.name)?;
    let range = match choose(&layout.name, setting, recorded, &taken) {
        Ok(r) => r,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if recorded != Some(range) {
        if let Some(old) = recorded {
            log::warn!(
                "subhost {}: USERNS changes its range from {old} to {range}: files in its \
                 root keep their owners from the old range",
                layout.name
            );
        }
        record(layout, range)?;
    }
    Ok(Ok(range))
}

/// The range `resolve` would give, without recording it (`--dry-run`).
pub fn preview(layout: &Layout, setting: Setting) -> Result<Result<Range, Refusal>> {
    let recorded = read_record(layout)?;
    let taken = taken(&layout.base, &layout.name)?;
    Ok(choose(&layout.name, setting, recorded, &taken))
}

/// The range of a subhost whose config asks for a user namespace with
/// `setting`, recorded unless `dry_run`. The refusal is returned apart, for
/// the config to place at its `USERNS` line.
pub fn range_for(
    layout: &Layout,
    setting: Setting,
    dry_run: bool,
) -> Result<Result<Range, Refusal>> {
    if dry_run {
        preview(layout, setting)
    } else {
        resolve(layout, setting)
    }
}

/// Root of the user namespace sets the sandbox up through `live` before it
/// pivots into it, as an ordinary host user: every directory above must
/// let others through. Said here, rather than as a bare EACCES later.
pub fn check_reachable(live: &Path, range: Range) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let inside = |id: u32| id >= range.base && u64::from(id) < range.end();
    let live = live.canonicalize().unwrap_or_else(|_| live.to_path_buf());
    for dir in live.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(dir) else {
            continue;
        };
        let through = m.mode() & 0o001 != 0
            || (inside(m.uid()) && m.mode() & 0o100 != 0)
            || (inside(m.gid()) && m.mode() & 0o010 != 0);
        if !through {
            bail!(
                "{} (mode {:o}) does not let others through, and root of the subhost's user \
                 namespace is host uid {}: chmod o+x {}, or, for the subhost's own directory, \
                 chgrp {} {} && chmod 710 {} (as `create --userns` makes it: a setuid file made \
                 inside stays out of host users' reach)",
                dir.display(),
                m.mode() & 0o7777,
                range.base,
                dir.display(),
                range.base,
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Writes the record atomically (a rename), so it is whole or absent.
pub fn record(layout: &Layout, range: Range) -> Result<()> {
    let path = layout.userns_record();
    let tmp = path.with_extension("new");
    let mut f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    writeln!(f, "{range}").with_context(|| format!("cannot write {}", tmp.display()))?;
    f.sync_all().ok();
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

fn lock_base(base: &Path) -> Result<nix::fcntl::Flock<File>> {
    let dir = File::open(base).with_context(|| format!("cannot open {}", base.display()))?;
    nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock {}", base.display()))
}

/// A user namespace that maps `range`, held by an fd, with no process in
/// it; optionally a network namespace owned by it, made after the maps are
/// written (so that its `/proc/net` files belong to root inside).
pub struct Namespaces {
    pub user: OwnedFd,
    pub net: Option<OwnedFd>,
}

/// Makes the user namespace of `range` (and with `net`, a netns owned by
/// it): a helper forked into a new user namespace waits while the launcher
/// writes its maps, unshares the netns if asked, and is killed once its
/// namespaces are open. About a fork's cost.
pub fn acquire(range: Range, net: bool) -> Result<Namespaces> {
    let (ours, theirs) = process::channel()?;
    let launcher = sys::getpid();
    // SAFETY: the helper only makes async-signal-safe calls (the channel's
    // send and recv allocate nothing; prctl, unshare, close_range, pause),
    // so this is sound even from a multi-threaded process (tests).
    let forked = unsafe { process::fork_into_new_userns() }
        .context("cannot create a user namespace (clone CLONE_NEWUSER)")?;
    let pid = match forked {
        ForkResult::Child => {
            drop(ours);
            // Dies with the launcher, should it be killed before it kills
            // this helper: nothing may be left holding the launcher's fds
            // (its lock among them) or the namespaces.
            if sys::die_with_parent().is_err() || sys::getppid() != launcher {
                sys::exit_now(4);
            }
            if !matches!(theirs.recv(), Ok(Some(Message::Go))) {
                sys::exit_now(1);
            }
            if net && sys::unshare(libc::CLONE_NEWNET).is_err() {
                sys::exit_now(2);
            }
            if theirs.send(&Message::Go).is_err() {
                sys::exit_now(3);
            }
            // Its namespaces are all it is kept for.
            let _ = sys::close_range(0, u32::MAX, false);
            sys::pause_forever()
        }
        ForkResult::Parent { child } => child.as_raw(),
    };
    drop(theirs);
    let result = finish_acquire(pid, range, net, ours);
    sys::kill_and_reap(pid);
    result
}

fn finish_acquire(
    pid: libc::pid_t,
    range: Range,
    net: bool,
    helper: Channel,
) -> Result<Namespaces> {
    let proc = format!("/proc/{pid}");
    for map in ["uid_map", "gid_map"] {
        let path = format!("{proc}/{map}");
        std::fs::write(&path, range.map_line())
            .with_context(|| format!("cannot write {path} ({})", range.map_line().trim()))?;
    }
    helper
        .send(&Message::Go)
        .context("cannot wake the user namespace's helper")?;
    if !matches!(helper.recv(), Ok(Some(Message::Go))) {
        bail!("the user namespace's helper failed (could not unshare its network namespace)");
    }
    let open = |what: &str| -> Result<OwnedFd> {
        let path = format!("{proc}/ns/{what}");
        Ok(File::open(&path)
            .with_context(|| format!("cannot open {path}"))?
            .into())
    };
    Ok(Namespaces {
        user: open("user")?,
        net: if net { Some(open("net")?) } else { None },
    })
}

/// Joins the user namespace `user` and becomes its root (uid and gid 0
/// inside, no supplementary groups): what every process of a subhost with
/// USERNS is. Raw syscalls only, for a freshly forked child; the caller
/// must be single-threaded (the kernel refuses setns of a user namespace
/// otherwise).
pub fn become_root_of(user: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    sys::setns(user, libc::CLONE_NEWUSER)?;
    sys::become_uid_gid_0()
}

/// Whether two nsfs fds are the same namespace.
pub fn same_ns(a: &OwnedFd, b: &OwnedFd) -> bool {
    let meta = |fd: &OwnedFd| nix::sys::stat::fstat(fd).ok().map(|s| (s.st_dev, s.st_ino));
    matches!((meta(a), meta(b)), (Some(x), Some(y)) if x == y)
}

/// Runs `body` in a child as root of the user namespace `user` (joined,
/// then uid and gid 0 inside) and returns its exit status: what a process
/// of a subhost with USERNS can do. For tests of the pieces that set one up.
#[cfg(test)]
pub fn as_root_inside(user: &OwnedFd, body: impl FnOnce() -> i32) -> i32 {
    use std::os::fd::AsFd;
    // SAFETY: the child joins with raw syscalls, runs `body` and leaves
    // through exit_now; it returns to none of the test harness's code.
    let pid = unsafe {
        process::worker(|| match become_root_of(user.as_fd()) {
            Ok(()) => body(),
            Err(_) => 120,
        })
    }
    .expect("fork");
    match nix::sys::wait::waitpid(pid, None).unwrap() {
        nix::sys::wait::WaitStatus::Exited(_, code) => code,
        other => panic!("child: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(base: u32, count: u32) -> Option<Setting> {
        Some(Setting::Fixed(Range { base, count }))
    }

    #[test]
    fn values() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("no"), Ok(None));
        assert_eq!(parse("pick"), Ok(Some(Setting::Pick)));
        assert_eq!(parse("100000"), Ok(fixed(100000, 65536)));
        assert_eq!(parse("1000000:1000"), Ok(fixed(1000000, 1000)));
        assert_eq!(parse("65536:1"), Ok(fixed(65536, 1)));
    }

    #[test]
    fn bad_values_say_what_and_how() {
        for v in [
            "yes please",
            "yes",
            "-1",
            "12ab",
            "1e6",
            ":5",
            "100000:",
            "pick:3",
        ] {
            let (what, fix) = parse(v).unwrap_err();
            assert!(what.contains(v) || what.contains("COUNT"), "{v}: {what}");
            assert!(fix.contains("USERNS="), "{v}: {fix}");
        }
        let (what, fix) = parse("100000:0").unwrap_err();
        assert!(what.contains("COUNT"), "{what}");
        assert!(fix.contains("BASE:COUNT"));
        // The host's own users: root, system users and ordinary users.
        for v in ["0", "1000", "65535", "0:65536", "60000:65536"] {
            let (what, fix) = parse(v).unwrap_err();
            assert!(what.contains("host's own users"), "{v}: {what}");
            assert!(fix.contains("65536"), "{v}: {fix}");
        }
        let (what, _) = parse("4294901760:65536").unwrap_err();
        assert!(what.contains("beyond the largest id"), "{what}");
        assert_eq!(parse("4294901760:65535"), Ok(fixed(4294901760, 65535)));
    }

    #[test]
    fn overlaps() {
        let r = |base, count| Range { base, count };
        assert!(r(100, 10).overlaps(&r(109, 1)));
        assert!(!r(100, 10).overlaps(&r(110, 1)));
        assert!(!r(110, 1).overlaps(&r(100, 10)));
        assert!(r(100, 10).overlaps(&r(50, 51)));
        assert!(!r(100, 10).overlaps(&r(50, 50)));
        assert_eq!(r(100000, 65536).map_line(), "0 100000 65536\n");
        assert_eq!(r(100000, 65536).to_string(), "100000:65536");
    }

    #[test]
    fn pick_is_stable_aligned_and_in_bounds() {
        for name in ["a", "web", "db-1", "abcdefghijkl"] {
            let a = choose(name, Setting::Pick, None, &[]).unwrap();
            let b = choose(name, Setting::Pick, None, &[]).unwrap();
            assert_eq!(a, b, "{name}");
            assert_eq!(a.count, SIZE);
            assert_eq!((a.base - PICK_LOW) % SIZE, 0, "{name}");
            assert!(
                a.base >= PICK_LOW && a.end() <= u64::from(PICK_HIGH),
                "{name}: {a}"
            );
        }
        // A pinned value: the hash must not change between builds, or a
        // subhost without its record would get new owners for its files.
        assert_eq!(
            choose("web", Setting::Pick, None, &[]).unwrap().base,
            PICK_LOW + (fnv1a("web") % u64::from((PICK_HIGH - PICK_LOW) / SIZE)) as u32 * SIZE
        );
        assert_ne!(
            choose("web", Setting::Pick, None, &[]),
            choose("db", Setting::Pick, None, &[])
        );
    }

    #[test]
    fn pick_skips_taken_ranges_and_wraps() {
        let first = choose("web", Setting::Pick, None, &[]).unwrap();
        let taken = vec![
            Taken {
                range: first,
                by: "subhost other".into(),
            },
            // Overlapping the next slot by one id is enough to skip it.
            Taken {
                range: Range {
                    base: first.base + SIZE + SIZE - 1,
                    count: 1,
                },
                by: "/etc/subuid line 1 (alice)".into(),
            },
        ];
        let next = choose("web", Setting::Pick, None, &taken).unwrap();
        assert_eq!(next.base, first.base + 2 * SIZE);
        // Every slot taken.
        let all = vec![Taken {
            range: Range {
                base: PICK_LOW,
                count: PICK_HIGH - PICK_LOW,
            },
            by: "/etc/subuid line 1 (everyone)".into(),
        }];
        assert_eq!(choose("web", Setting::Pick, None, &all), Err(Refusal::Full));
        // The last slot wraps to the first.
        let mut nearly = all.clone();
        nearly[0].range.base += SIZE;
        nearly[0].range.count -= SIZE;
        assert_eq!(
            choose("web", Setting::Pick, None, &nearly).unwrap().base,
            PICK_LOW
        );
    }

    #[test]
    fn a_recorded_pick_is_kept_and_checked() {
        let rec = Range {
            base: 7 * SIZE,
            count: SIZE,
        };
        assert_eq!(choose("web", Setting::Pick, Some(rec), &[]), Ok(rec));
        let other = Taken {
            range: Range {
                base: 7 * SIZE + 5,
                count: 10,
            },
            by: "subhost db".into(),
        };
        let e = choose(
            "web",
            Setting::Pick,
            Some(rec),
            std::slice::from_ref(&other),
        )
        .unwrap_err();
        assert_eq!(
            e,
            Refusal::Overlap {
                range: rec,
                with: other
            }
        );
        assert!(
            e.to_string().contains("overlaps subhost db (458757:10)"),
            "{e}"
        );
    }

    #[test]
    fn a_fixed_range_wins_over_the_record_but_not_over_others() {
        let want = Range {
            base: 1_000_000,
            count: SIZE,
        };
        let rec = Range {
            base: 2_000_000,
            count: SIZE,
        };
        assert_eq!(
            choose("web", Setting::Fixed(want), Some(rec), &[]),
            Ok(want)
        );
        let sub = parse_subid("/etc/subuid", "alice:1000000:65536\n");
        let e = choose("web", Setting::Fixed(want), None, &sub).unwrap_err();
        assert!(e.to_string().contains("/etc/subuid line 1 (alice)"), "{e}");
    }

    #[test]
    fn subid_files() {
        let text = "# comment\nalice:100000:65536\n\n1001:165536:65536\nbroken\nbob:x:1\nzed:5:0\n";
        let t = parse_subid("/etc/subgid", text);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0],
            Taken {
                range: Range {
                    base: 100000,
                    count: 65536
                },
                by: "/etc/subgid line 2 (alice)".into()
            }
        );
        assert_eq!(t[1].by, "/etc/subgid line 4 (1001)");
    }

    #[test]
    fn a_closed_directory_above_live_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let base = temp_base("reach");
        let live = base.join("web/live");
        std::fs::create_dir_all(&live).unwrap();
        let r = Range {
            base: 7 * SIZE,
            count: SIZE,
        };
        let set = |mode| {
            std::fs::set_permissions(base.join("web"), std::fs::Permissions::from_mode(mode))
                .unwrap()
        };
        set(0o755);
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o711)).unwrap();
        check_reachable(&live, r).unwrap();
        set(0o750);
        let e = check_reachable(&live, r).unwrap_err().to_string();
        assert!(
            e.contains("web (mode 750)") && e.contains("chmod o+x"),
            "{e}"
        );
        // Owned by the range's root, its owner bits count.
        std::os::unix::fs::chown(base.join("web"), Some(r.base), None).unwrap();
        check_reachable(&live, r).unwrap();
        crate::files::tree::remove_tree_mount_free(&base).unwrap();
    }

    fn temp_base(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sht-userns-{tag}-{}", std::process::id()));
        let _ = crate::files::tree::remove_tree_mount_free(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn resolve_records_a_pick_and_skips_other_subhosts() {
        let base = temp_base("resolve");
        let web = Layout::new(&base, "web").unwrap();
        std::fs::create_dir(&web.dir).unwrap();
        let picked = resolve(&web, Setting::Pick).unwrap().unwrap();
        assert_eq!(read_record(&web).unwrap(), Some(picked));
        assert_eq!(
            std::fs::read_to_string(web.userns_record()).unwrap(),
            format!("{picked}\n")
        );
        // Another subhost asking for web's range explicitly is refused; one
        // picking gets another range.
        let db = Layout::new(&base, "db").unwrap();
        std::fs::create_dir(&db.dir).unwrap();
        let e = resolve(&db, Setting::Fixed(picked)).unwrap().unwrap_err();
        assert!(e.to_string().contains("subhost web"), "{e}");
        assert_eq!(read_record(&db).unwrap(), None);
        let other = resolve(&db, Setting::Pick).unwrap().unwrap();
        assert!(!other.overlaps(&picked));
        // web's record stays, whatever the hash says now.
        assert_eq!(resolve(&web, Setting::Pick).unwrap().unwrap(), picked);
        std::fs::write(web.userns_record(), "garbage\n").unwrap();
        let e = resolve(&web, Setting::Pick).unwrap_err();
        assert!(format!("{e:#}").contains("not a recorded range"), "{e:#}");
        crate::files::tree::remove_tree_mount_free(&base).unwrap();
    }
}
