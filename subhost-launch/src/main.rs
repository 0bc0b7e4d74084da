//! subhost-launch: start and stop subhosts.
#![allow(dead_code)] // skeleton: modules are being filled in

mod config;
mod layout;
mod mounts;
mod netns;
mod supervisor;
mod tty;

fn main() {
    eprintln!("subhost-launch: not yet implemented");
    std::process::exit(2);
}
