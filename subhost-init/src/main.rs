//! subhost-init: a small static PID 1. Runs one session, forwards signals to
//! it, reaps everything, and shuts down with a grace period. See `--help`.

mod cli;
mod logger;
mod procs;
mod session;
mod signals;
mod supervisor;
mod sys;
mod tty;

fn main() {
    let code = match cli::parse(std::env::args_os().skip(1)) {
        Ok(cli::Parsed::Run(o)) => {
            logger::init(o.verbosity, o.syslog);
            supervisor::run(o)
        }
        Ok(cli::Parsed::Help) => {
            sys::write_fd(1, cli::HELP.as_bytes());
            0
        }
        Ok(cli::Parsed::Version) => {
            sys::write_fd(
                1,
                concat!("subhost-init ", env!("CARGO_PKG_VERSION"), "\n").as_bytes(),
            );
            0
        }
        Err(msg) => {
            logger::say(format_args!("{msg}\nTry 'subhost-init --help'."));
            cli::USAGE_EXIT
        }
    };
    std::process::exit(code)
}
