//! subhost-launch: start and stop subhosts, sandboxed machines on the host
//! without VMs.

mod cgroup;
mod clone;
mod cmd;
mod config;
mod detached;
mod docs;
mod files;
mod join;
mod launch;
mod layout;
mod logging;
mod mounts;
mod names;
mod netns;
mod outcome;
mod privileges;
mod process;
mod procfs;
mod provision;
mod run;
mod sandbox;
mod seccomp;
mod shutdown;
mod snapshot;
mod state;
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
        /// Keep root/ and work/ in a sparse ext4 image file of SIZE bytes
        /// (suffixes K, M, G, T: powers of 1024)
        #[arg(long, value_name = "SIZE")]
        image: Option<String>,
        /// Root inside is an unprivileged host user: sets USERNS=pick and
        /// records the range of 65536 host ids picked for the subhost
        #[arg(long)]
        userns: bool,
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
            names,
            command,
        } => {
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
            image,
            userns,
        } => {
            let req = cmd::create::Request {
                lower,
                bridges: bridge,
                addresses: address,
                gateways: gateway,
                image,
                userns,
            };
            (cmd::create::create(&base, &name, &req).map(|()| 0), 1)
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
        Command::Completions { shell } => {
            quiet_on_closed_pipe(true);
            (docs::completions(Cli::command(), shell).map(|()| 0), 1)
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
