//! subhost-init: a small static PID 1. Runs one session, forwards signals to
//! it, reaps everything, and shuts down with a grace period. See `--help`.
//!
//! The code uses only core, alloc and libc. Built with panic=abort (the
//! release profile, which is what musl-build ships) std is not linked at
//! all: its panic and backtrace machinery weigh about 300 KiB though the
//! init never panics. Builds that unwind (debug builds, unit tests) link
//! std for its panic runtime, and the tests for their harness.

#![cfg_attr(all(panic = "abort", not(test)), no_std)]
#![cfg_attr(not(test), no_main)]
// Unit tests run under the std test harness, without our `main`.
#![cfg_attr(test, allow(dead_code))]

extern crate alloc;

mod cli;
mod descriptors;
mod lines;
mod logger;
mod procs;
mod restart;
mod services;
mod session;
mod signals;
mod supervisor;
mod sys;
mod tty;

use alloc::vec::Vec;
use core::ffi::{c_int, CStr};

#[global_allocator]
static ALLOCATOR: sys::Malloc = sys::Malloc;

#[cfg(all(panic = "abort", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(argc: c_int, argv: *const *const core::ffi::c_char) -> c_int {
    // SAFETY: the C runtime passes argc valid NUL-terminated strings that
    // live as long as the process.
    let args: Vec<&'static CStr> = (1..usize::try_from(argc).unwrap_or(0))
        .map(|i| unsafe { CStr::from_ptr(*argv.add(i)) })
        .collect();
    run(args)
}

fn run(args: Vec<&'static CStr>) -> c_int {
    match cli::parse(args) {
        Ok(cli::Parsed::Run(o)) => {
            logger::init(o.verbosity, o.syslog);
            supervisor::run(o)
        }
        Ok(cli::Parsed::Help) => {
            sys::write_fd(1, cli::HELP.as_bytes());
            0
        }
        Ok(cli::Parsed::Version) => {
            let version = concat!("subhost-init ", env!("CARGO_PKG_VERSION"), "\n");
            sys::write_fd(1, version.as_bytes());
            0
        }
        Err(msg) => {
            logger::say(format_args!("{msg}\nTry 'subhost-init --help'."));
            cli::USAGE_EXIT
        }
    }
}

/// Pieces std would otherwise provide, for the panic=abort build.
#[cfg(all(panic = "abort", not(test)))]
mod no_std_runtime {
    // libc (musl's libc.a with crt-static) is normally linked through std.
    #[link(name = "c")]
    extern "C" {}

    // The precompiled alloc crate was built to unwind and refers to these;
    // with panic=abort nothing ever unwinds, so they are never called.
    #[no_mangle]
    extern "C" fn _Unwind_Resume() -> ! {
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() }
    }

    #[no_mangle]
    extern "C" fn rust_eh_personality() {}

    // A static glibc (musl-build's fallback) has C code built with
    // unwind tables that name GCC's personality routine; only a thread
    // cancellation or an exception would run it, and the init has neither.
    // libgcc_eh would bring it, but also a second _Unwind_Resume.
    #[cfg(all(target_env = "gnu", target_feature = "crt-static"))]
    #[no_mangle]
    extern "C" fn __gcc_personality_v0() -> ! {
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() }
    }
}
