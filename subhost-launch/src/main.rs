//! subhost-launch: start and stop subhosts, sandboxed machines on the host
//! without VMs.

/// musl's allocator gives every freed group of small blocks back to the
/// kernel at once: a warm start made 78 mmap and 66 munmap calls for a few
/// hundred kilobytes, ~10% of its CPU time. dlmalloc keeps what it got
/// until far more is free. Its lock is a plain mutex without fork
/// handlers, which is enough here: the launcher forks with no other
/// thread alive (`diff` joins its threads before it ends, and a start
/// joins the one that makes its netns before it forks anything). Not in
/// the unit tests: they run on threads and fork, and a child forked while
/// another test held that lock would wait for it forever; the C library's
/// allocator, whose locks its fork takes, stays there.
#[cfg(not(test))]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

mod activator;
mod bases;
mod cgroup;
mod clock;
mod clone;
mod cmd;
mod config;
mod console_log;
mod detached;
mod diff;
mod docs;
mod files;
mod forward;
mod holder;
mod join;
mod launch;
mod layout;
mod logging;
mod mounts;
mod names;
mod netns;
mod notify;
mod outcome;
mod privileges;
mod process;
mod procfs;
mod provision;
mod publish;
mod run;
mod sandbox;
mod seccomp;
mod services;
mod shutdown;
mod snapshot;
mod state;
mod stats;
mod status;
mod stream;
mod supervisor;
mod sys;
mod tty;
mod userns;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use nix::sys::signal::{SigHandler, Signal};

const ABOUT: &str = "Start and stop subhosts: sandboxed machines on this host, without VMs.

A subhost NAME is the directory $SUBHOST/NAME (default /opt/subhost/NAME)
holding `config` (plain bash assignments; `create` writes one that documents
every key), `root` (its filesystem, or the overlay's upper layer), and
optionally NAME.img (an image file holding root/ and work/).";

const AFTER: &str = "Exit status: `start` exits with the session's status (128+N when it was
killed by signal N), `start --detach` with 0 once the init runs; 125 when
the subhost could not be started. `enter`
exits with the command's status (128+N likewise), 127 when the command is
not found inside, 126 when it cannot be executed, 1 when the subhost cannot
be entered. Other commands exit 0 on success and 1 on error. A usage error
(unknown option, missing argument) exits 125 with every command, as with
env(1) and timeout(1), so it is never taken for a session's status.";

/// Exit status of a usage error: 2, clap's default, is a common status of
/// sessions (and of `sh` for its own usage errors).
const USAGE_ERROR: u8 = 125;

#[derive(Parser)]
#[command(name = "subhost-launch", version, about = ABOUT, after_help = AFTER)]
struct Cli {
    /// Where subhosts live [env: SUBHOST] [default: /opt/subhost]
    #[arg(long, global = true, value_name = "DIR")]
    subhost_dir: Option<PathBuf>,
    /// Log each plan step as it runs (-v), with its duration (-vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log to syslog instead of stderr
    #[arg(long, global = true)]
    syslog: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set up a subhost (or wake a hibernating one) and run its session.
    ///
    /// Mounts `live` and creates the netns NAME with one veth cable per
    /// BRIDGES element (host side NAME0, NAME1..., inside eth0, eth1...),
    /// unless they exist already. Then runs subhost-init as PID 1 in new PID,
    /// mount, UTS and IPC namespaces inside `live`, with COMMAND as the
    /// session (default: the config's SESSION, /bin/bash -l). On a terminal
    /// the session gets a pty of its own. When the session ends, every
    /// process of the subhost is gone but mounts and netns stay (the
    /// subhost hibernates) until `stop`.
    ///
    /// With --detach there is no session and no terminal: the init runs the
    /// config's BOOT command, then starts each START service in order (an
    /// absolute path as `PATH start`, a name as `/etc/init.d/NAME start`
    /// if that is executable, else `service NAME start`), then stays up,
    /// reaping, until `stop`. stdin is /dev/null; stdout and stderr go to
    /// the console. The launcher exits once the init runs; the subhost
    /// outlives it. A failing BOOT or service is reported in the console
    /// and the subhost stays up. Several NAMEs start one after the other in
    /// the order given, each on its own: one that fails is undone and named,
    /// the others still start, and the exit status is 125.
    ///
    /// A start or stop of the same subhost already in progress is waited
    /// for (up to STOP_TIMEOUT + 2 s).
    Start {
        /// Print what would be done, and do nothing
        #[arg(long)]
        dry_run: bool,
        /// Run BOOT and START with no terminal, and return at once
        #[arg(short, long)]
        detach: bool,
        /// Where a detached subhost's output goes: appended to FILE
        /// (created mode 0640; default $SUBHOST/NAME/console.log), or
        /// `syslog` for lines under the ident subhost/NAME (daemon.info)
        #[arg(long, value_name = "FILE|syslog", requires = "detach")]
        console: Option<String>,
        /// Socket activation (the activator's wake): the subhost's N LISTEN
        /// sockets are on fds 3..
        #[arg(long, hide = true, requires = "detach", value_name = "N")]
        activated: Option<usize>,
        /// The subhost; several with --detach
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
        /// The session to run instead of SESSION
        #[arg(last = true, value_name = "COMMAND", conflicts_with = "detach")]
        command: Vec<String>,
    },
    /// Run a shell or COMMAND inside a running subhost.
    ///
    /// The command joins all of the subhost's namespaces (pid, mount, net,
    /// uts, ipc, cgroup) and its cgroups, runs under its root with its
    /// hostname, gets no capability outside its init's bounding set, and
    /// runs under the init's seccomp filter.
    /// Default command: the config's SESSION (/bin/bash -l), or /bin/sh -l
    /// when SESSION's program does not exist inside. When stdin is a
    /// terminal the command gets a pty of the subhost's own devpts, relayed
    /// in raw mode; when only stdout or stderr is, a pty with echo off (the
    /// caller's terminal never enters the subhost); otherwise the standard
    /// streams pass through. A hibernating or stopped subhost is refused
    /// with a hint to `start` it.
    Enter {
        /// Print what would be done, and do nothing
        #[arg(long)]
        dry_run: bool,
        /// The subhost
        name: String,
        /// The command to run instead of SESSION
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Stop subhosts: end their processes, remove their netns, cables and mounts
    ///
    /// Never deletes `root`, `work` or the image. Stopping a stopped subhost
    /// is not an error; a NAME with no directory is. Several subhosts stop
    /// together: every init is signalled, every netns deleted, and one wait
    /// covers all, so the whole takes about as long as the slowest. Each
    /// gets its own line; the exit status is 1 when any could not be
    /// stopped, and the others are stopped all the same. A start or stop of
    /// the same subhost in progress is waited for (up to STOP_TIMEOUT + 2 s).
    ///
    /// When it runs and its config has START or HALT, first runs inside (as
    /// `enter` would) each START service's `stop` in reverse order, then
    /// HALT, for at most STOP_TIMEOUT seconds, with output to its console
    /// (stderr when it has none). Then SIGTERM to its init, which gives
    /// every process STOP_TIMEOUT seconds before SIGKILL.
    Stop {
        /// Print what would be done, and do nothing
        #[arg(long)]
        dry_run: bool,
        /// Every subhost that `list` shows as not stopped
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// The subhosts
        #[arg(value_name = "NAME", required_unless_present = "all")]
        names: Vec<String>,
    },
    /// Make a new subhost directory with a commented config
    ///
    /// Makes $SUBHOST/NAME with root/, work/ and live/ (or, with --image, a
    /// sparse ext4 NAME.img holding root/ and work/, with mnt/ and live/
    /// beside it) and a commented config that documents every key. Refuses
    /// to touch an existing $SUBHOST/NAME; on failure leaves nothing behind.
    Create {
        /// The subhost: 1-12 characters of a-z, 0-9, _ and -
        name: String,
        /// Read-only base to overlay `root` on (LOWER), absolute and
        /// existing; repeat (or join with `:`) for more layers, top first.
        /// Without it, `root` is the whole filesystem
        #[arg(long, value_name = "PATH")]
        lower: Vec<String>,
        /// A network cable to bridge BR (BRIDGES element); `=MAC` sets the
        /// inner end's address, an empty BR leaves the cable unattached.
        /// Repeat for more cables
        #[arg(long, value_name = "BR[=MAC]")]
        bridge: Vec<String>,
        /// An address of a cable's inner end (ADDRESS element): ADDR/PREFIX
        /// for eth0, ethN:ADDR/PREFIX for cable N. Repeat for more
        #[arg(long, value_name = "[ethN:]ADDR/PREFIX")]
        address: Vec<String>,
        /// The default route's router, IPv4 (GATEWAY) or IPv6 (GATEWAY6);
        /// give it once per family
        #[arg(long, value_name = "ADDR")]
        gateway: Vec<String>,
        /// A published port (PUBLISH element): connections to the host's
        /// HOSTPORT reach the subhost's PORT. Repeat for more
        #[arg(long, value_name = "PROTO:[HOSTADDR:]HOSTPORT:PORT")]
        publish: Vec<String>,
        /// Keep root/ and work/ in a sparse ext4 image file of SIZE bytes
        /// (suffixes K, M, G, T: powers of 1024)
        #[arg(long, value_name = "SIZE")]
        image: Option<String>,
        /// Root inside is an unprivileged host user: sets USERNS=pick and
        /// records the range of 65536 host ids picked for the subhost
        #[arg(long)]
        userns: bool,
        /// Overlay `root` on base NAME (see `base`): LOWER becomes the
        /// absolute path of $SUBHOST/.bases/NAME/root
        #[arg(long, value_name = "NAME", conflicts_with = "lower")]
        base: Option<String>,
    },
    /// Import, list and remove bases: read-only trees subhosts overlay
    ///
    /// A base NAME lives in $SUBHOST/.bases/NAME: root/ (the tree, never
    /// written) and manifest.json (source, kind, digest, date, files,
    /// bytes). `create --base NAME` sets a subhost's LOWER to it.
    #[command(subcommand)]
    Base(BaseCommand),
    /// Show what a subhost changed over its LOWER
    ///
    /// Reads the overlay's upper layer: added, modified (content, or only
    /// metadata: mode, owner, xattrs, time) and deleted entries (overlay
    /// whiteouts and opaque directories), with sizes, one per line as
    /// `A|M|D PATH (WHAT, SIZE)`. A subhost without LOWER has nothing to
    /// compare with: an error. With USERNS, owners are compared as seen
    /// inside.
    Diff {
        /// The subhost
        name: String,
        /// One JSON array of {path, change, what, details, type, size}
        #[arg(long)]
        json: bool,
    },
    /// Make subhost DST from SRC: its config (with DST's own name, MACs and
    /// user namespace range) and a copy of its files.
    ///
    /// SRC must be stopped or hibernating. The copy keeps owners (shifted
    /// to DST's range with USERNS=pick), modes, times, xattrs, ACLs, file
    /// capabilities, hardlinks, holes and whiteouts; it shares extents
    /// where the filesystem can (btrfs, XFS). With --shared nothing is
    /// copied: SRC's root becomes DST's read-only top lower layer (SRC must
    /// be stopped, and cannot start while DST exists).
    Clone {
        /// The subhost to clone
        src: String,
        /// The new subhost
        dst: String,
        /// Use SRC's root as a read-only lower layer instead of a copy
        #[arg(long)]
        shared: bool,
    },
    /// Take a snapshot of a subhost's files (its upper layer, or its image)
    ///
    /// Kept in $SUBHOST/NAME/snapshots/TAG (default TAG: the UTC time,
    /// 20261207T142800Z). A running subhost is frozen (its cgroup) while
    /// its files are copied, and thawed after, whatever happens. With
    /// --remove, removes snapshot TAG instead.
    Snapshot {
        /// The subhost
        name: String,
        /// The snapshot's name: 1-64 characters of A-Z, a-z, 0-9, ., _ and -
        tag: Option<String>,
        /// Remove snapshot TAG
        #[arg(long, requires = "tag")]
        remove: bool,
    },
    /// List a subhost's snapshots: tag, date, size
    Snapshots {
        /// The subhost
        name: String,
        /// A JSON array of {tag, date, bytes}
        #[arg(long)]
        json: bool,
    },
    /// Put a subhost's files back as snapshot TAG had them
    ///
    /// The subhost must be stopped. Its current files are replaced.
    Rollback {
        /// The subhost
        name: String,
        /// The snapshot
        tag: String,
    },
    /// Write a stopped or hibernating subhost to stdout as one stream
    ///
    /// A tar stream: subhost-stream.json (format, name, kind, config,
    /// base, user namespace range), the config, then its files with owners,
    /// modes, times, xattrs, hardlinks, holes and whiteouts, and a last
    /// entry that checks the whole. `send web | ssh host2 subhost-launch
    /// receive web` moves it.
    Send {
        /// The subhost
        name: String,
    },
    /// Make subhost NAME from a stream on stdin (see send)
    ///
    /// Refused when NAME exists, or when the base its LOWER names is
    /// missing here or differs by digest. With USERNS=pick the files are
    /// shifted into a range picked here. Nothing is kept of a stream that
    /// is damaged or cut short.
    Receive {
        /// The new subhost
        name: String,
    },
    /// List every subhost with its state, init PID, uptime, root and cables
    ///
    /// States, read from the kernel: running (its init runs, verified),
    /// hibernating (root mounted, netns and every cable there, no init),
    /// stopped (nothing set up), broken (partly set up: the problems say
    /// what). Problems are listed below the table.
    List {
        /// One JSON object per subhost, in an array: name, dir, state, pid,
        /// uptime_seconds, root, image, cables [{host, bridge, mac,
        /// present}], memory_bytes, pids, userns {base, count}, problems;
        /// null where unknown
        #[arg(long)]
        json: bool,
    },
    /// Show one subhost in detail
    ///
    /// State, init PID, uptime, root kind, cables, memory and pids in use
    /// (with limits on), problems. See `list --help` for the states.
    Status {
        /// The subhost
        name: String,
        /// One JSON object, with the keys of `list --json`
        #[arg(long)]
        json: bool,
    },
    /// Print a detached subhost's console log, each line stamped
    ///
    /// Each line as the console's writer received it, prefixed with the
    /// time in UTC (`2026-12-07T14:30:00.123Z`); the rotated file
    /// (LOG.1, see LOG_MAX) first, then the current one.
    Logs {
        /// The subhost
        name: String,
        /// Keep printing lines as they come, across rotations
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines (of those the other options keep)
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<usize>,
        /// Only the lines of service S (those prefixed `S: `)
        #[arg(long, value_name = "S")]
        service: Option<String>,
        /// Only lines from TIME on: ISO 8601 UTC (2026-12-07T14:30:00Z) or
        /// a time ago (30s, 10m, 2h, 1d)
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
    },
    /// Show what running subhosts use: CPU, memory, pids, IO, network
    ///
    /// Per subhost, over an interval (1 s, or SECS with --watch): CPU as a
    /// percentage of one CPU, memory in use and its peak, processes, bytes
    /// read and written on block devices, bytes received and sent on its
    /// cables. No limit needs to be set; a figure the kernel does not count
    /// for a subhost shows as `-` (null in JSON). Without NAMEs, every
    /// subhost; one that does not run is shown as such.
    Stats {
        /// The subhosts (default: all)
        #[arg(value_name = "NAME")]
        names: Vec<String>,
        /// A JSON array: name, running, cpu_percent, cpu_seconds_total,
        /// memory_bytes, memory_peak_bytes, pids, io_read_bytes,
        /// io_written_bytes, memory_source, memory_peak_source, io_source
        /// ("cgroup", or "processes": summed over its processes), network
        /// [{cable, receive_bytes, transmit_bytes}]
        #[arg(long)]
        json: bool,
        /// Redraw every SECS seconds (default 1) until interrupted
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1")]
        watch: Option<f64>,
        /// Write the figures to FILE in node-exporter textfile format
        /// (replaced atomically; printed nothing else unless --json or --watch)
        #[arg(long, value_name = "FILE")]
        prometheus: Option<PathBuf>,
    },
    /// Print a shell completion script on stdout.
    ///
    /// Install it where the shell looks for completions, e.g.
    /// `subhost-launch completions bash > /etc/bash_completion.d/subhost-launch`,
    /// `subhost-launch completions zsh > /usr/local/share/zsh/site-functions/_subhost-launch`,
    /// `subhost-launch completions fish > /etc/fish/completions/subhost-launch.fish`.
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff, section 8) on stdout.
    ///
    /// One page documents every command. Install it with e.g.
    /// `subhost-launch man > /usr/local/share/man/man8/subhost-launch.8`,
    /// or read it at once with `subhost-launch man | man -l -`.
    Man,
    /// The socket activator: holds sleeping subhosts' LISTEN sockets
    /// (started by `start --detach`, on its control socket).
    #[command(hide = true)]
    Activator,
    /// Put a running subhost back to sleep: its processes end, its mounts
    /// and network stay (as the activator does after IDLE).
    #[command(hide = true)]
    Hibernate { name: String },
    /// The port forwarder of a subhost, by hand: for repairs and tests.
    #[command(hide = true)]
    ForwardDaemon {
        /// The run directory holding NAME.forward
        #[arg(long, value_name = "DIR", default_value = run::RUN_DIR)]
        records: PathBuf,
        #[command(subcommand)]
        action: ForwardAction,
    },
}

#[derive(Subcommand)]
enum ForwardAction {
    /// Listen on each LISTEN of the host; connect to TARGET inside NETNS
    Start {
        name: String,
        /// The network namespace to connect inside (e.g. /run/netns/NAME)
        #[arg(long, value_name = "PATH")]
        netns: PathBuf,
        /// PROTO:LISTEN=TARGET, e.g. tcp:127.0.0.1:8080=10.0.0.5:80
        #[arg(required = true, value_name = "FORWARD")]
        forwards: Vec<String>,
    },
    /// End the forwarder and forget its record
    Stop { name: String },
    /// Its pid and forwards, one a line
    Status { name: String },
}

#[derive(Subcommand)]
enum BaseCommand {
    /// Import SOURCE as base NAME
    ///
    /// SOURCE is a directory (copied with owners, modes, times, xattrs,
    /// symlinks and hardlinks, staying on its filesystem), a tarball (plain,
    /// gzip or zstd, told by its content), or an OCI image layout directory
    /// (layers applied in order, each blob checked against its digest,
    /// whiteouts honoured). Refused, with nothing kept: paths with `..` or
    /// absolute ones, symlinks whose `..` climbs above the base's root,
    /// device nodes other than overlay whiteouts, missing or damaged blobs,
    /// a NAME that exists.
    Import {
        /// The base: 1-12 characters of a-z, 0-9, _ and -
        name: String,
        /// A directory, .tar, .tar.gz, .tar.zst, or OCI image layout
        source: PathBuf,
    },
    /// List the bases: kind, files, size, date, digest, and the subhosts
    /// that use them
    List {
        /// One JSON array of {name, source, kind, digest, date, files,
        /// bytes, used_by, problems}
        #[arg(long)]
        json: bool,
    },
    /// Remove base NAME; refused while a subhost's LOWER is in it
    Remove {
        /// The base
        name: String,
    },
}

/// For a command that only prints: a closed stdout ends it quietly, by the
/// default SIGPIPE, as it ends `ls` (Rust ignores SIGPIPE, and its print
/// macros would panic on EPIPE instead). Commands that change the host keep
/// SIGPIPE ignored and drop what they cannot print (see `outcome`), so that
/// a closed pipe never leaves a subhost half started or half stopped.
fn quiet_on_closed_pipe(only_prints: bool) {
    if only_prints {
        // SAFETY: restoring the default disposition installs no handler.
        let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    }
}

/// `start NAME` and `start NAME -- COMMAND…`, the calls on a subhost's
/// hot path, read without clap: its first touch of its own code and data
/// took ~0.45 ms of a ~9 ms start. Any other shape (an option, several
/// names, a non-UTF-8 argument) is left to clap, whose parse of these two
/// shapes a unit test holds this one to.
fn quick_start(args: &[std::ffi::OsString]) -> Option<Cli> {
    let args: Vec<&str> = args.iter().map(|a| a.to_str()).collect::<Option<_>>()?;
    let (name, command) = match args.as_slice() {
        [_, "start", name] => (name, &[][..]),
        [_, "start", name, "--", command @ ..] if !command.is_empty() => (name, command),
        _ => return None,
    };
    if name.starts_with('-') || name.is_empty() {
        return None;
    }
    Some(Cli {
        subhost_dir: None,
        verbose: 0,
        syslog: false,
        command: Command::Start {
            dry_run: false,
            detach: false,
            console: None,
            activated: None,
            names: vec![name.to_string()],
            command: command.iter().map(|c| c.to_string()).collect(),
        },
    })
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match quick_start(&args).map_or_else(|| Cli::try_parse_from(&args), Ok) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version print to stdout and are no error.
            return if e.use_stderr() {
                ExitCode::from(USAGE_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    logging::init(cli.verbose, cli.syslog);
    let base = layout::base_dir(cli.subhost_dir.as_deref());
    let (result, fail_code) = match cli.command {
        Command::Start {
            dry_run,
            detach,
            console,
            activated,
            names,
            command,
        } => {
            if let Some(n) = activated {
                let code = cmd::start::start_activated(&base, &names, console, n);
                return ExitCode::from(code);
            }
            if names.len() > 1 && !detach {
                let _ = Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        "several subhosts start only with --detach (a session needs the terminal)",
                    )
                    .print();
                return ExitCode::from(USAGE_ERROR);
            }
            quiet_on_closed_pipe(dry_run);
            if detach {
                let code = cmd::start::start_detached(&base, &names, console, dry_run);
                (Ok(code), 125)
            } else {
                let mode = launch::Mode::Foreground { command };
                (cmd::start::start(&base, &names[0], mode, dry_run), 125)
            }
        }
        Command::Enter {
            dry_run,
            name,
            command,
        } => {
            quiet_on_closed_pipe(dry_run);
            (cmd::enter::enter(&base, &name, command, dry_run), 1)
        }
        Command::Stop {
            dry_run,
            all,
            names,
        } => {
            quiet_on_closed_pipe(dry_run);
            let which = if all {
                cmd::stop::Which::All
            } else {
                cmd::stop::Which::Names(names)
            };
            (cmd::stop::stop(&base, which, dry_run), 1)
        }
        Command::Create {
            name,
            lower,
            bridge,
            address,
            gateway,
            publish,
            image,
            userns,
            base: base_name,
        } => {
            let req = cmd::create::Request {
                base: base_name,
                lower,
                bridges: bridge,
                addresses: address,
                gateways: gateway,
                publish,
                image,
                userns,
            };
            (cmd::create::create(&base, &name, &req).map(|()| 0), 1)
        }
        Command::Base(BaseCommand::Import { name, source }) => {
            (cmd::base::import(&base, &name, &source).map(|()| 0), 1)
        }
        Command::Base(BaseCommand::List { json }) => {
            quiet_on_closed_pipe(true);
            (cmd::base::list(&base, json).map(|()| 0), 1)
        }
        Command::Base(BaseCommand::Remove { name }) => {
            (cmd::base::remove(&base, &name).map(|()| 0), 1)
        }
        Command::Diff { name, json } => {
            quiet_on_closed_pipe(true);
            (cmd::diff::diff(&base, &name, json).map(|()| 0), 1)
        }
        Command::Clone { src, dst, shared } => {
            (clone::clone(&base, &src, &dst, shared).map(|()| 0), 1)
        }
        Command::Snapshot { name, tag, remove } => {
            let r = if remove {
                snapshot::remove(&base, &name, tag.as_deref().unwrap_or_default())
            } else {
                snapshot::take(&base, &name, tag.as_deref())
            };
            (r.map(|()| 0), 1)
        }
        Command::Snapshots { name, json } => {
            quiet_on_closed_pipe(true);
            (snapshot::list(&base, &name, json).map(|()| 0), 1)
        }
        Command::Rollback { name, tag } => (snapshot::rollback(&base, &name, &tag).map(|()| 0), 1),
        Command::Send { name } => (stream::send(&base, &name).map(|()| 0), 1),
        Command::Receive { name } => (stream::receive(&base, &name).map(|()| 0), 1),
        Command::List { json } => {
            quiet_on_closed_pipe(true);
            (cmd::list::list(&base, json).map(|()| 0), 1)
        }
        Command::Status { name, json } => {
            quiet_on_closed_pipe(true);
            (cmd::list::status(&base, &name, json).map(|()| 0), 1)
        }
        Command::Logs {
            name,
            follow,
            lines,
            service,
            since,
        } => {
            quiet_on_closed_pipe(true);
            let req = cmd::logs::Request {
                follow,
                lines,
                service,
                since,
            };
            (cmd::logs::logs(&base, &name, &req).map(|()| 0), 1)
        }
        Command::Stats {
            names,
            json,
            watch,
            prometheus,
        } => {
            quiet_on_closed_pipe(true);
            let req = cmd::stats::Request {
                names,
                json,
                watch,
                prometheus,
            };
            (cmd::stats::stats(&base, &req).map(|()| 0), 1)
        }
        Command::Completions { shell } => {
            quiet_on_closed_pipe(true);
            (docs::completions(Cli::command(), shell).map(|()| 0), 1)
        }
        Command::Activator => (Ok(activator::daemon::run()), 1),
        Command::Hibernate { name } => (
            shutdown::hibernate(&base, &name).map(|()| {
                outcome::say(&format!("subhost {name}: hibernating"));
                0
            }),
            1,
        ),
        Command::ForwardDaemon { records, action } => {
            let result = match action {
                ForwardAction::Start {
                    name,
                    netns,
                    forwards,
                } => cmd::forward::start(&records, &name, &netns, &forwards),
                ForwardAction::Stop { name } => cmd::forward::stop(&records, &name),
                ForwardAction::Status { name } => cmd::forward::status(&records, &name),
            };
            (result.map(|()| 0), 1)
        }
        Command::Man => {
            quiet_on_closed_pipe(true);
            (docs::man(Cli::command()).map(|()| 0), 1)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            outcome::fail(&e);
            ExitCode::from(fail_code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a parse of `start` gave, to compare the two parsers.
    fn start_of(cli: &Cli) -> String {
        let Command::Start {
            dry_run,
            detach,
            console,
            activated,
            names,
            command,
        } = &cli.command
        else {
            return "not start".to_string();
        };
        format!(
            "{:?} {} {} {dry_run} {detach} {console:?} {activated:?} {names:?} {command:?}",
            cli.subhost_dir, cli.verbose, cli.syslog
        )
    }

    #[test]
    fn the_quick_start_parse_is_claps() {
        let quick = [
            &["start", "web"][..],
            &["start", "web", "--", "/bin/true"],
            &["start", "web", "--", "sh", "-c", "echo -- -v"],
            &["start", "help", "--", "--help"],
            &["start", "web", "--", "--"],
        ];
        for argv in quick {
            let args: Vec<std::ffi::OsString> = std::iter::once("subhost-launch")
                .chain(argv.iter().copied())
                .map(Into::into)
                .collect();
            let ours = quick_start(&args).unwrap_or_else(|| panic!("{argv:?} not quick"));
            let claps = Cli::try_parse_from(&args).expect("clap parses it");
            assert_eq!(start_of(&ours), start_of(&claps), "{argv:?}");
        }
        // Left to clap: options, several names, no command after `--`,
        // other commands.
        for argv in [
            &["start", "-v", "web"][..],
            &["start", "--dry-run", "web"],
            &["start", "web", "-v"],
            &["start", "-d", "web"],
            &["start", "web", "db"],
            &["start", "web", "--"],
            &["start", "--", "web"],
            &["start"],
            &["-v", "start", "web"],
            &["stop", "web"],
            &["start", "web", "--subhost-dir", "/x"],
        ] {
            let args: Vec<std::ffi::OsString> = std::iter::once("subhost-launch")
                .chain(argv.iter().copied())
                .map(Into::into)
                .collect();
            assert!(quick_start(&args).is_none(), "{argv:?} taken quickly");
        }
    }
}
