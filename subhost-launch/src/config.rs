//! The `config` file: a bash-include file of plain assignments, parsed and
//! never executed.
//!
//! (Interface fixed; the parser body is being written.)

use std::path::{Path, PathBuf};

/// One veth cable: `BRIDGE[=MAC]`; an empty bridge leaves the host end
/// unattached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cable {
    pub bridge: Option<String>,
    /// Set on the inner end (`ethN`).
    pub mac: Option<[u8; 6]>,
}

/// A bind mount from the host into the subhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Absolute host path.
    pub host: PathBuf,
    /// Absolute path inside the subhost.
    pub inner: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Read-only lower layers, top first; empty means `live` is an rbind of
    /// `root`.
    pub lower: Vec<PathBuf>,
    pub bridges: Vec<Cable>,
    /// Defaults to NAME.
    pub hostname: String,
    pub share: Vec<Share>,
    /// Grace seconds between SIGTERM and SIGKILL at stop.
    pub stop_timeout: u32,
    /// argv of the session; defaults to `/bin/bash -l`.
    pub session: Vec<String>,
}

impl Config {
    /// The configuration of a subhost without a config file.
    pub fn defaults(name: &str) -> Config {
        Config {
            lower: Vec::new(),
            bridges: Vec::new(),
            hostname: name.to_string(),
            share: Vec::new(),
            stop_timeout: 5,
            session: vec!["/bin/bash".into(), "-l".into()],
        }
    }
}

/// Reads and parses `path`. `name` and `base` are the values of `SUB` and
/// `SUBHOST` for expansion. A missing file yields the defaults.
pub fn load(path: &Path, name: &str, base: &Path) -> anyhow::Result<Config> {
    let _ = (path, base);
    Ok(Config::defaults(name))
}
