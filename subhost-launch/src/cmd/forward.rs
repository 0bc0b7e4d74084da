//! `forward-daemon`, hidden from help and the manual: the port forwarder
//! of a subhost started, stopped or shown by hand, with the records in
//! any directory (for repairs, and for the tests of the forwarder on a
//! network namespace of their own).

use std::path::Path;

use anyhow::Result;

use crate::forward::{self, Forward};

pub fn start(records: &Path, name: &str, netns: &Path, forwards: &[String]) -> Result<()> {
    let forwards = forwards
        .iter()
        .map(|f| f.parse())
        .collect::<Result<Vec<Forward>>>()?;
    forward::start(records, name, netns, &forwards)
}

pub fn stop(records: &Path, name: &str) -> Result<()> {
    forward::stop(records, name)
}

/// `pid PID` (with `(not running)` for a dead one), then one forward a
/// line; nothing without a forwarder.
pub fn status(records: &Path, name: &str) -> Result<()> {
    if let Some(st) = forward::status(records, name) {
        let state = if st.running { "" } else { " (not running)" };
        crate::outcome::say(&format!("pid {}{state}", st.pid));
        for f in &st.forwards {
            crate::outcome::say(&f.to_string());
        }
    }
    Ok(())
}
