//! The `config` file: a bash-include file of plain assignments, parsed and
//! never executed.
//!
//! Operators may also `source` the file from their own scripts, so whatever
//! is accepted here means exactly what it means to bash, and whatever would
//! need a shell to evaluate (commands, substitutions, globs, operators) is
//! refused with `FILE:LINE: what is wrong (how to fix)` instead of guessed at.
//!
//! Accepted:
//! - `KEY=value`, `export KEY=value`, several assignments on one line
//!   (`A=1 B=2`, applied left to right), and `export KEY` (no effect);
//! - values made of unquoted text, `'literal'` text, `"double-quoted"` text
//!   and backslash escapes, concatenated as in bash (`a"b c"'d'`);
//! - `$VAR` and `${VAR}` in unquoted and double-quoted text, where VAR is
//!   `SUB` (the subhost's NAME), `SUBHOST` (the base directory) or a key
//!   assigned earlier in the same file; the environment is never consulted,
//!   so a config means the same whoever runs the launcher;
//! - arrays `KEY=(a b "c d")`, across lines and with comments inside;
//!   unquoted expansions in arrays are split at whitespace, as bash does;
//! - `#` comments (whole lines, or after whitespace), blank lines, and
//!   backslash-newline continuations.
//!
//! A key assigned twice takes the later value, as in bash. Every value is
//! still checked where it is assigned, so a mistake is reported even when a
//! later line overrides it. One case is refused although bash accepts it:
//! a plain value assigned to a key that holds an array, because bash then
//! replaces only the first element and keeps the rest.
//!
//! Shapes of the keys:
//! - single values: `LOWER`, `HOSTNAME`, `STOP_TIMEOUT`, `MEMORY_MAX`,
//!   `CPU_MAX`, `PIDS_MAX`, `CGROUP_PARENT`, `SECCOMP`, `USERNS`;
//! - arrays only: `BRIDGES`, `SHARE` (an empty string would be ambiguous
//!   between "no cable" and "one unattached cable", and paths may hold
//!   spaces);
//! - commands, as an array or as a string split at whitespace: `SESSION`,
//!   `BOOT`, `HALT` (a string with quotes or backslashes in it is refused,
//!   since splitting would not honour them; use the array form);
//! - names, as an array or a whitespace-separated string: `START`,
//!   `CAPS_DROP`, `CAPS_KEEP`, `SYSCALLS_ALLOW`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

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
    /// argv that a detached subhost's init runs at boot (`BOOT`).
    pub boot: Option<Vec<String>>,
    /// argv run inside before a detached subhost is stopped (`HALT`).
    pub halt: Option<Vec<String>>,
    /// Services to start at boot (`START`): names as in `/etc/init.d`, or
    /// absolute paths.
    pub start: Vec<String>,
    /// `memory.max` in bytes; `None` is no limit.
    pub memory_max: Option<u64>,
    /// `cpu.max` as the cgroup v2 file takes it, always "QUOTA PERIOD" in
    /// microseconds (`50%` becomes "50000 100000"); `None` is no limit.
    pub cpu_max: Option<String>,
    /// `pids.max`; `None` is no limit.
    pub pids_max: Option<u64>,
    /// Cgroup under which the subhost's cgroup is made, as a path from the
    /// hierarchy's root like `/proc/self/cgroup` shows it (`/subhost`),
    /// without a trailing slash; `None` is the launcher's own cgroup + `/subhost`.
    pub cgroup_parent: Option<String>,
    /// Capabilities to drop from the bounding set on top of the default
    /// ones, as `CAP_…` names.
    pub caps_drop: Vec<String>,
    /// Capabilities to keep although dropped by default, as `CAP_…` names.
    pub caps_keep: Vec<String>,
    /// `USERNS`: a user namespace and the line that asked for it (a range
    /// that overlaps another is only found at start, and reported there).
    pub userns: Option<crate::userns::Requested>,
    /// Whether the seccomp filter is installed (`SECCOMP=on|off`).
    pub seccomp: bool,
    /// Denied system calls the filter lets through (`SYSCALLS_ALLOW`).
    pub syscalls_allow: Vec<String>,
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
            boot: None,
            halt: None,
            start: Vec::new(),
            memory_max: None,
            cpu_max: None,
            pids_max: None,
            cgroup_parent: None,
            caps_drop: Vec::new(),
            caps_keep: Vec::new(),
            userns: None,
            seccomp: true,
            syscalls_allow: Vec::new(),
        }
    }
}

/// Every key a config may assign.
pub const KEYS: [&str; 18] = [
    "LOWER",
    "BRIDGES",
    "HOSTNAME",
    "SHARE",
    "STOP_TIMEOUT",
    "SESSION",
    "BOOT",
    "HALT",
    "START",
    "MEMORY_MAX",
    "CPU_MAX",
    "PIDS_MAX",
    "CGROUP_PARENT",
    "CAPS_DROP",
    "CAPS_KEEP",
    "USERNS",
    "SECCOMP",
    "SYSCALLS_ALLOW",
];

/// Linux capability names, indexed by capability number (0..=40).
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability given by its `CAP_…` name.
pub fn capability_number(name: &str) -> Option<u32> {
    CAPABILITIES
        .iter()
        .position(|c| *c == name)
        .and_then(|i| u32::try_from(i).ok())
}

/// Host ends are named `NAME0`…`NAME99`.
pub const MAX_CABLES: usize = 100;

/// The `cpu.max` period used when a config gives a percentage or a quota
/// alone (the kernel's default period).
pub const CPU_PERIOD: u64 = 100_000;

/// A config that cannot be used, placed at its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    /// What is wrong.
    pub what: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} ({})",
            self.file.display(),
            self.line,
            self.what,
            self.fix
        )
    }
}

impl std::error::Error for ConfigError {}

/// Reads and parses `path`. `name` and `base` are the values of `SUB` and
/// `SUBHOST` for expansion. A missing file yields the defaults.
///
/// Errors quote the config's lines, so only a file that is the config is
/// read: a regular file (a symlink is not followed: one to `/etc/shadow`
/// would have its first line quoted) owned by the owner of the subhost's
/// directory.
pub fn load(path: &Path, name: &str, base: &Path) -> anyhow::Result<Config> {
    use anyhow::Context as _;
    use std::os::unix::fs::MetadataExt;
    let refuse = |what: String| {
        anyhow::anyhow!(
            "config {} is {what}: replace it with a regular file (or remove it to use the defaults)",
            path.display()
        )
    };
    let file = match crate::files::open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::defaults(name)),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            return Err(refuse(crate::files::describe(path)))
        }
        Err(e) => anyhow::bail!(
            "{}: cannot read the config file: {e} (make it a readable regular file of at most 1 MiB, or remove it to use the defaults)",
            path.display()
        ),
    };
    let owner = file.metadata()?.uid();
    let dir = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    let dir_owner = std::fs::metadata(dir)
        .with_context(|| format!("cannot stat {}", dir.display()))?
        .uid();
    if owner != dir_owner {
        return Err(refuse(format!(
            "owned by uid {owner}, not by the owner of {} (uid {dir_owner})",
            dir.display()
        )));
    }
    let bytes = crate::files::read_file_capped(file, crate::files::CONFIG_MAX).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot read the config file: {e} (make it a readable regular file of at most 1 MiB, or remove it to use the defaults)",
            path.display()
        )
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = 1 + valid.iter().filter(|b| **b == b'\n').count();
            return Err(ConfigError {
                file: path.to_path_buf(),
                line,
                what: "the file is not valid UTF-8".into(),
                fix: "save it as UTF-8 text".into(),
            }
            .into());
        }
    };
    Ok(parse(path, &text, name, base)?)
}

/// Parses the text of a config file; `file` only names it in errors. `name`
/// and `base` are the values of `SUB` and `SUBHOST` for expansion.
pub fn parse(file: &Path, text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
    Parser::new(file, text, name, base).run()?.finish()
}

/// A problem with a value, before it is placed at a line.
#[derive(Debug)]
struct Bad {
    what: String,
    fix: String,
}

impl Bad {
    fn new(what: impl Into<String>, fix: impl Into<String>) -> Bad {
        Bad {
            what: what.into(),
            fix: fix.into(),
        }
    }
}

fn bad<T>(what: impl Into<String>, fix: impl Into<String>) -> Result<T, Bad> {
    Err(Bad::new(what, fix))
}

/// An array element with the line it was written on, so that a bad element
/// of a long array is reported where it is.
#[derive(Debug, Clone)]
struct Elem {
    text: String,
    line: usize,
}

#[derive(Debug, Clone)]
enum Value {
    Scalar(String),
    Array(Vec<Elem>),
}

struct Var {
    value: Value,
    line: usize,
}

/// Whether a word is the value of a plain assignment or an array element:
/// bash splits, globs and brace-expands only the latter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Scalar,
    Array,
}

/// A piece of a word. `split` names the variable of an unquoted expansion,
/// whose value bash splits at whitespace inside arrays.
struct Seg {
    text: String,
    split: Option<String>,
}

/// Appends quoted or literal text; also makes the word exist when `s` is
/// empty (`""` is an empty element, not no element).
fn lit(segs: &mut Vec<Seg>, s: &str) {
    match segs.last_mut() {
        Some(Seg { text, split: None }) => text.push_str(s),
        _ => segs.push(Seg {
            text: s.to_string(),
            split: None,
        }),
    }
}

fn is_operator(c: char) -> bool {
    matches!(c, ';' | '&' | '|' | '<' | '>' | '(' | ')')
}

fn is_word_end(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n') || is_operator(c)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

const KEYWORDS: [&str; 22] = [
    "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
    "select", "time", "coproc", "in", "[[", "]]", "{", "}", "!", "function",
];

const EXPANSION_FIX: &str =
    "only $NAME and ${NAME} of SUB, SUBHOST and keys assigned above are expanded; write the value out";

struct Parser<'a> {
    file: &'a Path,
    text: Vec<char>,
    pos: usize,
    line: usize,
    sub: String,
    /// `None` when the base directory is not UTF-8; only an error if used.
    subhost: Option<String>,
    vars: HashMap<String, Var>,
    cfg: Config,
}

impl<'a> Parser<'a> {
    fn new(file: &'a Path, text: &str, name: &str, base: &Path) -> Parser<'a> {
        Parser {
            file,
            text: text.chars().collect(),
            pos: 0,
            line: 1,
            sub: name.to_string(),
            subhost: base.to_str().map(str::to_string),
            vars: HashMap::new(),
            cfg: Config::defaults(name),
        }
    }

    fn err(&self, line: usize, what: impl Into<String>, fix: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// Characters that bash would take silently but that are never meant:
    /// a CR from DOS line endings ends up inside every value.
    fn check_characters(&self) -> Result<(), ConfigError> {
        let mut line = 1;
        for (i, c) in self.text.iter().enumerate() {
            match c {
                '\n' => line += 1,
                '\r' if self.text.get(i + 1) == Some(&'\n') => {
                    return Err(self.err(
                        line,
                        "the line ends with a carriage return (DOS line endings), which bash would keep in the value",
                        "convert the file to Unix line endings, e.g. with dos2unix",
                    ))
                }
                '\r' => {
                    return Err(self.err(
                        line,
                        "a carriage return character",
                        "remove it",
                    ))
                }
                '\0' => return Err(self.err(line, "a NUL byte", "remove it; the config is text")),
                _ => {}
            }
        }
        Ok(())
    }

    fn at(&self, n: usize) -> Option<char> {
        self.text.get(self.pos + n).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.at(0)?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// The next character, after dropping backslash-newline pairs, which
    /// bash removes everywhere except inside single quotes and comments.
    fn peek(&mut self) -> Option<char> {
        while self.at(0) == Some('\\') && self.at(1) == Some('\n') {
            self.pos += 2;
            self.line += 1;
        }
        self.at(0)
    }

    fn at_word_end(&mut self) -> bool {
        self.peek().is_none_or(is_word_end)
    }

    /// At the end of the line's assignments: nothing, or a comment or
    /// operator follows.
    fn at_statement_end(&mut self) -> bool {
        self.peek()
            .is_none_or(|c| c == '\n' || c == '#' || is_operator(c))
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
    }

    fn skip_comment(&mut self) {
        while !matches!(self.at(0), None | Some('\n')) {
            self.pos += 1;
        }
    }

    fn read_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            let ok = if name.is_empty() {
                is_name_start(c)
            } else {
                is_name_char(c)
            };
            if !ok {
                break;
            }
            name.push(c);
            self.bump();
        }
        name
    }

    /// Reads the whole file, assigning as it goes.
    fn run(mut self) -> Result<Self, ConfigError> {
        self.check_characters()?;
        loop {
            self.skip_blanks();
            match self.peek() {
                None => break,
                Some('\n') => {
                    self.bump();
                }
                Some('#') => self.skip_comment(),
                Some(_) => self.statement()?,
            }
        }
        Ok(self)
    }

    /// One line's worth of assignments (or the error for what is there
    /// instead).
    fn statement(&mut self) -> Result<(), ConfigError> {
        let line = self.line;
        if let Some(c) = self.peek().filter(|c| is_operator(*c)) {
            return Err(self.operator_error(c));
        }
        let name = self.read_name();
        if !name.is_empty() && self.peek() == Some('=') {
            self.bump();
            self.assignment(name, line)?;
            return self.rest_of_statement(false);
        }
        if name == "export" && self.at_word_end() {
            self.skip_blanks();
            if self.at_statement_end() {
                return Err(self.err(
                    line,
                    "`export` without an assignment",
                    "write export KEY=value, or remove the line",
                ));
            }
            return self.rest_of_statement(true);
        }
        Err(self.not_an_assignment(name, line, None))
    }

    /// After an assignment: more assignments, a comment, or the end of the
    /// line. `export` also allows `export KEY`.
    fn rest_of_statement(&mut self, export: bool) -> Result<(), ConfigError> {
        loop {
            self.skip_blanks();
            let c = match self.peek() {
                None | Some('\n') => return Ok(()),
                Some(c) => c,
            };
            if c == '#' {
                self.skip_comment();
                return Ok(());
            }
            if is_operator(c) {
                return Err(self.operator_error(c));
            }
            let line = self.line;
            if export && c == '-' {
                return Err(self.err(
                    line,
                    "options to `export` are not supported",
                    "write export KEY=value",
                ));
            }
            let name = self.read_name();
            if !name.is_empty() && self.peek() == Some('=') {
                self.bump();
                self.assignment(name, line)?;
            } else if export && !name.is_empty() && self.at_word_end() {
                // `export KEY` only marks KEY for the environment, which
                // means nothing here.
                self.check_key(&name, line)?;
            } else {
                let context = if export {
                    "in `export`"
                } else {
                    "after an assignment"
                };
                return Err(self.not_an_assignment(name, line, Some(context)));
            }
        }
    }

    /// The error for a word where an assignment belongs; `name` is the part
    /// already read. `after` says what it follows, if anything.
    fn not_an_assignment(&mut self, name: String, line: usize, after: Option<&str>) -> ConfigError {
        if !name.is_empty() {
            if self.peek() == Some('+') && self.at(1) == Some('=') {
                return self.err(
                    line,
                    format!("`{name}+=`: appending is not supported"),
                    format!("assign the whole value in one place: {name}=…"),
                );
            }
            if self.peek() == Some('[') {
                return self.err(
                    line,
                    format!("`{name}[…]`: assigning single array elements is not supported"),
                    format!("assign the whole array: {name}=(a b)"),
                );
            }
        }
        // The rest of the word, read with bash's rules, so that `$(…)`,
        // backticks and open quotes are named as such.
        let rest = match self.word(Ctx::Scalar) {
            Ok(segs) => segs.into_iter().map(|s| s.text).collect::<String>(),
            Err(e) => return e,
        };
        let word = format!("{name}{rest}");
        if !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) {
            if let Some(c) = self.peek().filter(|c| matches!(c, '<' | '>')) {
                return self.operator_error(c);
            }
        }
        if word == name && !name.is_empty() {
            self.skip_blanks();
            match self.peek() {
                Some('=') => {
                    return self.err(
                        line,
                        format!("`{name} =`: bash would run {name} as a command"),
                        format!("write {name}=value with no spaces around `=`"),
                    )
                }
                Some('(') if after.is_none() => {
                    return self.err(
                        line,
                        format!("`{name}()`: functions are not supported"),
                        "remove it; the config holds only assignments",
                    )
                }
                _ => {}
            }
        }
        if word == "function" {
            return self.err(
                line,
                "`function`: functions are not supported",
                "remove it; the config holds only assignments",
            );
        }
        if KEYWORDS.contains(&word.as_str()) {
            return self.err(
                line,
                format!("`{word}`: shell control structures are not supported"),
                "remove it; the config holds only assignments and is never executed",
            );
        }
        if word == "source" || word == "." {
            return self.err(
                line,
                format!("`{word}`: including other files is not supported"),
                "copy the assignments into this file",
            );
        }
        if matches!(
            word.as_str(),
            "declare" | "typeset" | "local" | "readonly" | "let"
        ) {
            return self.err(
                line,
                format!("`{word}` is not supported"),
                "write a plain KEY=value",
            );
        }
        if let Some((left, _)) = word.split_once('=') {
            return self.err(
                line,
                format!("`{word}` is not an assignment: `{left}` is not a valid key name"),
                format!("keys are upper-case names: {}", KEYS.join(", ")),
            );
        }
        let what = match after {
            Some(after) => format!("`{word}` {after}: bash would run it as a command"),
            None => format!("`{word}` is a command, and the config is never executed"),
        };
        self.err(
            line,
            what,
            "the config holds only assignments KEY=value, KEY=(…) and export KEY=…",
        )
    }

    fn operator_error(&mut self, c: char) -> ConfigError {
        let line = self.line;
        self.bump();
        let next = self.peek();
        let never = "remove it; the config is never executed";
        let (what, fix) = match (c, next) {
            (';', _) => (
                "`;`: separating commands is not supported".to_string(),
                "put each assignment on its own line",
            ),
            ('&', Some('&')) => (
                "`&&`: command lists are not supported".to_string(),
                "put each assignment on its own line; nothing is run",
            ),
            ('&', _) => ("`&`: background jobs are not supported".to_string(), never),
            ('|', Some('|')) => (
                "`||`: command lists are not supported".to_string(),
                "put each assignment on its own line; nothing is run",
            ),
            ('|', _) => ("`|`: pipes are not supported".to_string(), never),
            ('<' | '>', Some('(')) => (
                format!("`{c}(`: process substitution is not supported"),
                "write the value out",
            ),
            ('<' | '>', _) => (format!("`{c}`: redirections are not supported"), never),
            ('(', _) => (
                "unquoted `(`: subshells are not supported, and a `(` in a value must be quoted"
                    .to_string(),
                "for an array write KEY=(a b) with no space after `=`; otherwise quote the `(`",
            ),
            _ => (
                format!("unmatched `{c}`"),
                "remove it, or quote it if it belongs to a value",
            ),
        };
        self.err(line, what, fix)
    }

    fn check_key(&self, key: &str, line: usize) -> Result<(), ConfigError> {
        if KEYS.contains(&key) {
            return Ok(());
        }
        if key == "SUB" || key == "SUBHOST" {
            return Err(self.err(
                line,
                format!("{key} is set by subhost-launch and cannot be assigned"),
                format!("remove this line; use ${key} to refer to it"),
            ));
        }
        let upper = key.to_ascii_uppercase();
        let fix = if KEYS.contains(&upper.as_str()) {
            format!("did you mean {upper}? keys are upper case")
        } else {
            format!("known keys: {}", KEYS.join(", "))
        };
        Err(self.err(line, format!("unknown key {key}"), fix))
    }

    fn assignment(&mut self, key: String, line: usize) -> Result<(), ConfigError> {
        self.check_key(&key, line)?;
        let value = if self.peek() == Some('(') {
            self.bump();
            Value::Array(self.array(line)?)
        } else {
            let segs = self.word(Ctx::Scalar)?;
            Value::Scalar(segs.into_iter().map(|s| s.text).collect())
        };
        if let (Some(old), Value::Scalar(_)) = (self.vars.get(&key), &value) {
            if let Value::Array(_) = old.value {
                return Err(self.err(
                    line,
                    format!(
                        "{key} holds an array since line {}; bash would replace only its first element with this value",
                        old.line
                    ),
                    format!("assign the whole array: {key}=(…)"),
                ));
            }
        }
        apply(&mut self.cfg, &key, &value, line)
            .map_err(|(l, b)| self.err(l, format!("{key}: {}", b.what), b.fix))?;
        self.vars.insert(key, Var { value, line });
        Ok(())
    }

    /// The elements of `KEY=(…)`, after the `(`.
    fn array(&mut self, open: usize) -> Result<Vec<Elem>, ConfigError> {
        let mut elems = Vec::new();
        loop {
            while matches!(self.peek(), Some(' ' | '\t' | '\n')) {
                self.bump();
            }
            match self.peek() {
                None => {
                    return Err(self.err(
                        open,
                        "unterminated array: this `(` has no matching `)`",
                        "close the array with `)`",
                    ))
                }
                Some('#') => self.skip_comment(),
                Some(')') => {
                    self.bump();
                    break;
                }
                Some(c) if is_operator(c) => {
                    let line = self.line;
                    return Err(self.err(
                        line,
                        format!("unquoted `{c}` inside an array"),
                        "quote the element that contains it",
                    ));
                }
                Some(_) => {
                    let line = self.line;
                    let segs = self.word(Ctx::Array)?;
                    self.fields(segs, line, &mut elems)?;
                }
            }
        }
        match self.peek() {
            // Even `#` counts: bash then takes the whole `(…)#…` as one
            // plain string.
            Some(c) if !is_word_end(c) => {
                let line = self.line;
                Err(self.err(
                    line,
                    format!("`{c}` right after the `)` that closes the array"),
                    "end the line after `)`, or quote the text inside the array",
                ))
            }
            _ => Ok(elems),
        }
    }

    /// Splits an array word into elements as bash does: quoted text and
    /// literals stay together, unquoted expansions break at whitespace.
    fn fields(&self, segs: Vec<Seg>, line: usize, out: &mut Vec<Elem>) -> Result<(), ConfigError> {
        let mut cur: Option<String> = None;
        for seg in segs {
            let Some(var) = seg.split else {
                cur.get_or_insert_with(String::new).push_str(&seg.text);
                continue;
            };
            if let Some(g) = seg.text.chars().find(|c| matches!(c, '*' | '?' | '[')) {
                return Err(self.err(
                    line,
                    format!(
                        "unquoted ${var} in an array: its value {:?} contains `{g}`, which bash would expand as a filename pattern",
                        seg.text
                    ),
                    format!("quote it: \"${var}\""),
                ));
            }
            for c in seg.text.chars() {
                if matches!(c, ' ' | '\t' | '\n') {
                    if let Some(f) = cur.take() {
                        out.push(Elem { text: f, line });
                    }
                } else {
                    cur.get_or_insert_with(String::new).push(c);
                }
            }
        }
        if let Some(f) = cur {
            out.push(Elem { text: f, line });
        }
        Ok(())
    }

    /// One shell word, up to a blank, newline or operator.
    fn word(&mut self, ctx: Ctx) -> Result<Vec<Seg>, ConfigError> {
        let mut segs: Vec<Seg> = Vec::new();
        // Bash expands `~` at the start of a word and after `:` or `=`.
        let mut tilde_here = true;
        while let Some(c) = self.peek() {
            if is_word_end(c) {
                break;
            }
            let line = self.line;
            let mut tilde_next = false;
            match c {
                '\\' => {
                    self.bump();
                    let escaped = self.bump().unwrap_or('\\');
                    lit(&mut segs, &escaped.to_string());
                }
                '\'' => {
                    let s = self.single_quoted()?;
                    lit(&mut segs, &s);
                }
                '"' => {
                    let s = self.double_quoted()?;
                    lit(&mut segs, &s);
                }
                '$' => {
                    let seg = self.dollar(false, ctx == Ctx::Array)?;
                    if seg.split.is_some() {
                        segs.push(seg);
                    } else {
                        lit(&mut segs, &seg.text);
                    }
                }
                '`' => return Err(self.backtick(line)),
                '~' if tilde_here => {
                    return Err(self.err(
                        line,
                        "unquoted `~`: bash would replace it with a home directory",
                        "write the path out, or quote the `~` if it is meant literally",
                    ))
                }
                '[' if ctx == Ctx::Array && segs.is_empty() && self.rest_has("]=") => {
                    return Err(self.err(
                        line,
                        "`[N]=value` array indices are not supported",
                        "list the elements in order",
                    ))
                }
                '*' | '?' | '[' if ctx == Ctx::Array => {
                    return Err(self.err(
                        line,
                        format!("unquoted `{c}` in an array element: bash would expand it as a filename pattern"),
                        "quote the element, e.g. '…'",
                    ))
                }
                '{' if ctx == Ctx::Array => {
                    return Err(self.err(
                        line,
                        "unquoted `{` in an array element: bash may treat it as brace expansion",
                        "quote the element, e.g. '…'",
                    ))
                }
                _ => {
                    self.bump();
                    lit(&mut segs, &c.to_string());
                    tilde_next = c == ':' || c == '=';
                }
            }
            tilde_here = tilde_next;
        }
        Ok(segs)
    }

    /// Whether the current word contains `pat` before it ends.
    fn rest_has(&self, pat: &str) -> bool {
        let rest: String = self.text[self.pos..]
            .iter()
            .take_while(|c| !is_word_end(**c))
            .collect();
        rest.contains(pat)
    }

    fn backtick(&self, line: usize) -> ConfigError {
        self.err(
            line,
            "`…`: command substitution is not supported",
            "write the value out; the config is never executed",
        )
    }

    fn single_quoted(&mut self) -> Result<String, ConfigError> {
        let line = self.line;
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(self.err(
                        line,
                        "unterminated single quote: this `'` has no closing `'`",
                        "close the quote",
                    ))
                }
                Some('\'') => return Ok(s),
                Some(c) => s.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, ConfigError> {
        let line = self.line;
        self.bump();
        let mut s = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(self.err(
                        line,
                        "unterminated double quote: this `\"` has no closing `\"`",
                        "close the quote",
                    ))
                }
                Some('"') => {
                    self.bump();
                    return Ok(s);
                }
                Some('\\') => {
                    self.bump();
                    // Inside double quotes bash drops the backslash only
                    // before these; elsewhere it stays.
                    match self.at(0) {
                        Some(c @ ('$' | '`' | '"' | '\\')) => {
                            self.bump();
                            s.push(c);
                        }
                        _ => s.push('\\'),
                    }
                }
                Some('$') => s.push_str(&self.dollar(true, false)?.text),
                Some('`') => {
                    let l = self.line;
                    return Err(self.backtick(l));
                }
                Some(c) => {
                    self.bump();
                    s.push(c);
                }
            }
        }
    }

    /// An expansion at `$`. `split` marks an unquoted one in an array.
    fn dollar(&mut self, in_quotes: bool, split: bool) -> Result<Seg, ConfigError> {
        let line = self.line;
        self.bump();
        let literal = || Seg {
            text: "$".into(),
            split: None,
        };
        match self.peek() {
            Some('(') => {
                self.bump();
                let what = if self.peek() == Some('(') {
                    "`$((…))`: arithmetic expansion is not supported"
                } else {
                    "`$(…)`: command substitution is not supported"
                };
                Err(self.err(
                    line,
                    what,
                    "write the value out; the config is never executed",
                ))
            }
            Some('{') => {
                self.bump();
                self.braced(line, split)
            }
            Some(c) if is_name_start(c) => {
                let name = self.read_name();
                self.expand(&name, line, split)
            }
            Some(c) if c.is_ascii_digit() || "@*#?$!-".contains(c) => Err(self.err(
                line,
                format!("`${c}`: special parameters are not supported"),
                EXPANSION_FIX,
            )),
            Some('\'') if !in_quotes => Err(self.err(
                line,
                "`$'…'`: ANSI-C quoting is not supported",
                "use '…' or \"…\" quoting",
            )),
            Some('"') if !in_quotes => Err(self.err(
                line,
                "`$\"…\"`: locale translation is not supported",
                "drop the `$` before the quote",
            )),
            // A `$` that starts no expansion is literal to bash as well.
            _ => Ok(literal()),
        }
    }

    /// `${…}` after the `{`.
    fn braced(&mut self, line: usize, split: bool) -> Result<Seg, ConfigError> {
        let name = self.read_name();
        if !name.is_empty() && self.peek() == Some('}') {
            self.bump();
            return self.expand(&name, line, split);
        }
        let mut rest = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(self.err(
                        line,
                        "unterminated `${`: no closing `}`",
                        "close it with `}`",
                    ))
                }
                Some('}') => break,
                Some(c) => rest.push(c),
            }
        }
        let shown = format!("${{{name}{rest}}}");
        let kind = match (name.is_empty(), rest.chars().next()) {
            (true, Some('#')) => "the length operator",
            (true, Some('!')) => "indirect expansion",
            (true, None) => "an empty expansion",
            (true, Some(c)) if c.is_ascii_digit() || "@*?$-".contains(c) => "a special parameter",
            (true, _) => "this expansion",
            (false, Some('[')) => "array subscripting",
            (false, _) => "a parameter expansion operator",
        };
        Err(self.err(
            line,
            format!("`{shown}`: {kind} is not supported"),
            EXPANSION_FIX,
        ))
    }

    fn expand(&self, name: &str, line: usize, split: bool) -> Result<Seg, ConfigError> {
        let value = match name {
            "SUB" => Value::Scalar(self.sub.clone()),
            "SUBHOST" => match &self.subhost {
                Some(s) => Value::Scalar(s.clone()),
                None => {
                    return Err(self.err(
                        line,
                        "$SUBHOST is not valid UTF-8 and cannot be expanded",
                        "write the path out, or use a base directory with a UTF-8 name",
                    ))
                }
            },
            _ => match self.vars.get(name) {
                Some(var) => var.value.clone(),
                None => return Err(self.unknown_var(name, line)),
            },
        };
        match value {
            Value::Scalar(text) => Ok(Seg {
                text,
                split: split.then(|| name.to_string()),
            }),
            Value::Array(_) => Err(self.err(
                line,
                format!("${name} is an array; bash would expand only its first element"),
                "write the elements you need out",
            )),
        }
    }

    fn unknown_var(&self, name: &str, line: usize) -> ConfigError {
        if KEYS.contains(&name) {
            return self.err(
                line,
                format!("${name}: {name} is not assigned above this line"),
                format!("assign {name} earlier in the file, or write the value out"),
            );
        }
        // `$SUB_data` is the variable SUB_data to bash; the fix is braces.
        let mut known: Vec<&str> = vec!["SUB", "SUBHOST"];
        known.extend(self.vars.keys().map(String::as_str));
        let prefix = known
            .into_iter()
            .filter(|k| name.starts_with(k))
            .max_by_key(|k| k.len());
        let fix = match prefix {
            Some(k) => format!("write ${{{k}}}{} to expand {k}", &name[k.len()..]),
            None => "only SUB, SUBHOST and keys assigned above can be expanded; the environment is not used".to_string(),
        };
        self.err(line, format!("${name}: unknown variable"), fix)
    }

    fn finish(self) -> Result<Config, ConfigError> {
        let cfg = &self.cfg;
        if let (Some(drop), Some(keep)) = (self.vars.get("CAPS_DROP"), self.vars.get("CAPS_KEEP")) {
            if let Some(cap) = cfg.caps_drop.iter().find(|c| cfg.caps_keep.contains(c)) {
                return Err(self.err(
                    drop.line.max(keep.line),
                    format!(
                        "{cap} is in both CAPS_DROP (line {}) and CAPS_KEEP (line {})",
                        drop.line, keep.line
                    ),
                    "remove it from one of them",
                ));
            }
        }
        Ok(self.cfg)
    }
}

/// A value problem and the line to report it at.
type At<T> = Result<T, (usize, Bad)>;

/// Checks `value` for `key` and stores it, typed, in `cfg`.
fn apply(cfg: &mut Config, key: &str, value: &Value, line: usize) -> At<()> {
    let here = |b: Bad| (line, b);
    match key {
        "LOWER" => cfg.lower = lower(scalar(value, line, "LOWER=/a:/b")?).map_err(here)?,
        "BRIDGES" => {
            let elems = list(value, line, "BRIDGES=(br0 br1=02:00:00:00:01:01)")?;
            if elems.len() > MAX_CABLES {
                return Err(here(Bad::new(
                    format!(
                        "{} cables; at most {MAX_CABLES} fit the host names NAME0…NAME99",
                        elems.len()
                    ),
                    "use fewer cables",
                )));
            }
            cfg.bridges = each(elems, cable)?;
        }
        "HOSTNAME" => {
            cfg.hostname = hostname(scalar(value, line, "HOSTNAME=web")?).map_err(here)?
        }
        "SHARE" => {
            cfg.share = each(
                list(value, line, "SHARE=(/srv/data /host/path:/inner/path)")?,
                share,
            )?
        }
        "STOP_TIMEOUT" => {
            cfg.stop_timeout = seconds(scalar(value, line, "STOP_TIMEOUT=5")?).map_err(here)?
        }
        "SESSION" => {
            cfg.session = command(value, line)?.ok_or_else(|| {
                here(Bad::new(
                    "the command is empty",
                    "give one, e.g. SESSION=\"/bin/sh -l\", or remove the line for /bin/bash -l",
                ))
            })?
        }
        "BOOT" => cfg.boot = command(value, line)?,
        "HALT" => cfg.halt = command(value, line)?,
        "START" => cfg.start = each(&words(value, line), service)?,
        "MEMORY_MAX" => {
            cfg.memory_max = memory(scalar(value, line, "MEMORY_MAX=512M")?).map_err(here)?
        }
        "CPU_MAX" => cfg.cpu_max = cpu_max(scalar(value, line, "CPU_MAX=50%")?).map_err(here)?,
        "PIDS_MAX" => cfg.pids_max = pids(scalar(value, line, "PIDS_MAX=1000")?).map_err(here)?,
        "CGROUP_PARENT" => {
            cfg.cgroup_parent =
                cgroup_parent(scalar(value, line, "CGROUP_PARENT=/subhost")?).map_err(here)?
        }
        "CAPS_DROP" => cfg.caps_drop = caps(&words(value, line))?,
        "CAPS_KEEP" => cfg.caps_keep = caps(&words(value, line))?,
        "USERNS" => {
            cfg.userns = crate::userns::parse(scalar(value, line, "USERNS=pick")?)
                .map_err(|(what, fix)| here(Bad::new(what, fix)))?
                .map(|setting| crate::userns::Requested { setting, line })
        }
        "SECCOMP" => cfg.seccomp = on_off(scalar(value, line, "SECCOMP=off")?).map_err(here)?,
        "SYSCALLS_ALLOW" => cfg.syscalls_allow = syscalls(&words(value, line))?,
        _ => {
            return Err(here(Bad::new(
                "unknown key",
                format!("known keys: {}", KEYS.join(", ")),
            )))
        }
    }
    Ok(())
}

fn scalar<'v>(value: &'v Value, line: usize, example: &str) -> At<&'v str> {
    match value {
        Value::Scalar(s) => Ok(s),
        Value::Array(_) => Err((
            line,
            Bad::new(
                "takes a single value, not an array",
                format!("write {example}"),
            ),
        )),
    }
}

fn list<'v>(value: &'v Value, line: usize, example: &str) -> At<&'v [Elem]> {
    match value {
        Value::Array(elems) => Ok(elems),
        Value::Scalar(_) => Err((
            line,
            Bad::new(
                "takes an array, not a single value",
                format!("write {example}"),
            ),
        )),
    }
}

/// An array as is, or a string split at whitespace.
fn words(value: &Value, line: usize) -> Vec<Elem> {
    match value {
        Value::Array(elems) => elems.clone(),
        Value::Scalar(s) => s
            .split_whitespace()
            .map(|w| Elem {
                text: w.to_string(),
                line,
            })
            .collect(),
    }
}

fn each<T>(elems: &[Elem], check: fn(&str) -> Result<T, Bad>) -> At<Vec<T>> {
    elems
        .iter()
        .map(|e| check(&e.text).map_err(|b| (e.line, b)))
        .collect()
}

/// A command line; empty is `None`.
fn command(value: &Value, line: usize) -> At<Option<Vec<String>>> {
    if let Value::Scalar(s) = value {
        if let Some(c) = s.chars().find(|c| matches!(c, '\'' | '"' | '\\')) {
            return Err((
                line,
                Bad::new(
                    format!("{s:?} contains `{c}`, but a command given as a string is only split at whitespace"),
                    "use an array for arguments with spaces, e.g. (sh -c 'echo hi')",
                ),
            ));
        }
    }
    let argv = words(value, line);
    match argv.first() {
        None => Ok(None),
        Some(first) if first.text.is_empty() => Err((
            first.line,
            Bad::new(
                "the command name (first element) is empty",
                "put the program first",
            ),
        )),
        Some(_) => Ok(Some(argv.into_iter().map(|e| e.text).collect())),
    }
}

fn lower(s: &str) -> Result<Vec<PathBuf>, Bad> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(':')
        .map(|p| {
            if p.is_empty() {
                return bad(
                    format!("{s:?} has an empty path (a leading, trailing or doubled `:`)"),
                    "separate absolute paths with single colons, e.g. /a:/b",
                );
            }
            if !p.starts_with('/') {
                return bad(format!("{p:?} is not an absolute path"), "start it with /");
            }
            if p.contains(',') {
                return bad(
                    format!("{p:?} contains a comma, which would split the overlay mount options"),
                    "use a path without commas",
                );
            }
            Ok(PathBuf::from(p))
        })
        .collect()
}

fn cable(s: &str) -> Result<Cable, Bad> {
    let (bridge, mac) = match s.split_once('=') {
        Some((b, m)) => (b, Some(m)),
        None => (s, None),
    };
    let bridge = if bridge.is_empty() {
        None
    } else {
        Some(ifname(bridge)?)
    };
    let mac = match mac {
        None | Some("") => None,
        Some(m) => Some(mac_address(m)?),
    };
    Ok(Cable { bridge, mac })
}

/// The kernel's rules for interface names (`dev_valid_name`).
fn ifname(n: &str) -> Result<String, Bad> {
    if n.len() >= libc::IFNAMSIZ {
        return bad(
            format!(
                "bridge name {n:?} has {} bytes; interface names have at most {}",
                n.len(),
                libc::IFNAMSIZ - 1
            ),
            "use the bridge's name as `ip link` shows it",
        );
    }
    if n == "." || n == ".." {
        return bad(
            format!("{n:?} is not an interface name"),
            "use the bridge's name as `ip link` shows it",
        );
    }
    if let Some(c) = n
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace())
    {
        return bad(
            format!("bridge name {n:?} contains {c:?}, which interface names cannot"),
            "use the bridge's name as `ip link` shows it",
        );
    }
    Ok(n.to_string())
}

fn mac_address(m: &str) -> Result<[u8; 6], Bad> {
    let usage = "write six hex pairs separated by colons, e.g. 02:00:00:00:01:01";
    let parts: Vec<&str> = m.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != mac.len() {
        return bad(format!("{m:?} is not a MAC address"), usage);
    }
    for (byte, part) in mac.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return bad(format!("{m:?} is not a MAC address"), usage);
        }
        *byte = match u8::from_str_radix(part, 16) {
            Ok(b) => b,
            Err(_) => return bad(format!("{m:?} is not a MAC address"), usage),
        };
    }
    if mac[0] & 1 != 0 {
        let mut fixed = mac;
        fixed[0] = (fixed[0] & !1) | 2;
        return bad(
            format!("{m} is a multicast address (the low bit of the first octet is set), which an interface cannot have"),
            format!("use a unicast address, e.g. {} (locally administered)", mac_string(&fixed)),
        );
    }
    if mac == [0; 6] {
        return bad(
            format!("{m} is not a valid interface address"),
            "use e.g. 02:00:00:00:01:01",
        );
    }
    Ok(mac)
}

fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn hostname(s: &str) -> Result<String, Bad> {
    let usage = "use dot-separated labels of letters, digits, '-' and '_', e.g. web-1.example";
    if s.is_empty() {
        return bad(
            "is empty",
            "give a name, or remove the line to use the subhost's NAME",
        );
    }
    // The kernel's limit (__NEW_UTS_LEN).
    if s.len() > 64 {
        return bad(
            format!("{s:?} has {} bytes; at most 64 are allowed", s.len()),
            "shorten it",
        );
    }
    for label in s.split('.') {
        if label.is_empty() {
            return bad(
                format!("{s:?} has an empty label (a leading, trailing or doubled dot)"),
                usage,
            );
        }
        if label.len() > 63 {
            return bad(format!("label {label:?} has more than 63 bytes"), usage);
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return bad(format!("{s:?} contains {c:?}"), usage);
        }
        if label.starts_with('-') {
            return bad(format!("label {label:?} starts with '-'"), usage);
        }
    }
    Ok(s.to_string())
}

fn share(s: &str) -> Result<Share, Bad> {
    let usage = "write /host/path or /host/path:/inner/path";
    let (host, inner) = s.split_once(':').unwrap_or((s, s));
    for (what, p) in [("host path", host), ("inner path", inner)] {
        if p.is_empty() {
            return bad(format!("{s:?} has an empty {what}"), usage);
        }
        if !p.starts_with('/') {
            return bad(format!("the {what} {p:?} is not absolute"), usage);
        }
    }
    let inner = Path::new(inner);
    if inner.components().any(|c| c == Component::ParentDir) {
        return bad(
            format!("the inner path {inner:?} contains `..`, which could lead outside the subhost"),
            "write the path inside the subhost without `..`",
        );
    }
    if inner
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::CurDir))
    {
        return bad(
            format!("the inner path {inner:?} is the subhost's root"),
            "mount the share on a directory inside it, e.g. /mnt/data",
        );
    }
    Ok(Share {
        host: PathBuf::from(host),
        inner: inner.to_path_buf(),
    })
}

fn seconds(s: &str) -> Result<u32, Bad> {
    if s.is_empty() {
        return bad(
            "is empty",
            "give whole seconds, e.g. 5, or remove the line for the default of 5",
        );
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return bad(
            format!("{s:?} is not a whole number of seconds"),
            "write e.g. 5 (no sign, unit or fraction)",
        );
    }
    s.parse().or_else(|_| {
        bad(
            format!("{s} seconds is too long"),
            format!("use at most {}", u32::MAX),
        )
    })
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn memory(s: &str) -> Result<Option<u64>, Bad> {
    let usage =
        "write bytes with an optional binary suffix K, M, G or T, e.g. 512M, or max for no limit";
    if s.is_empty() || s == "max" {
        return Ok(None);
    }
    let (digits, shift) = match s.as_bytes()[s.len() - 1] {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        b'T' | b't' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return bad(format!("{s:?} is not a size"), usage);
    }
    let bytes = number(digits)
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| Bad::new(format!("{s} is too large"), usage))?;
    if bytes == 0 {
        return bad(
            "0 would leave no memory at all for the subhost's init",
            usage,
        );
    }
    if bytes < MEMORY_FLOOR {
        return bad(
            format!(
                "{s} is below the floor of 4M: the subhost's processes would be killed \
                 by the memory limit almost at once (a dynamically linked shell alone \
                 maps about 3 MiB)"
            ),
            "give at least 4M, e.g. 64M, or max for no limit",
        );
    }
    Ok(Some(bytes))
}

/// Smallest MEMORY_MAX accepted. A busybox shell and the init run in about
/// 0.5 MiB, but bash with the C library maps about 3 MiB, and any service
/// more: a limit below this only produces sessions killed at start.
pub const MEMORY_FLOOR: u64 = 4 << 20;

/// Most CPUs a CPU_MAX may allow: more than any host has, so a larger value
/// is a typo (a missing `%`, extra digits), not a limit.
pub const CPU_MAX_CPUS: u64 = 1024;

fn pids(s: &str) -> Result<Option<u64>, Bad> {
    if s.is_empty() || s == "max" {
        return Ok(None);
    }
    match number(s) {
        Some(n @ 0..=1) => bad(
            format!("{n} would not allow the subhost's init and its session, one process each"),
            "give a limit of at least 2 (a shell and a few commands want 10 or more), or max",
        ),
        Some(n) => Ok(Some(n)),
        None => bad(
            format!("{s:?} is not a number of processes"),
            "write e.g. 1000, or max for no limit",
        ),
    }
}

/// Normalises to "QUOTA PERIOD" (µs), the form `cpu.max` takes on cgroup v2
/// and that a v1 hierarchy's `cfs_quota_us`/`cfs_period_us` can be written
/// from.
fn cpu_max(s: &str) -> Result<Option<String>, Bad> {
    let usage = "write a percentage of one CPU like 50% (200% for two CPUs), QUOTA PERIOD in microseconds like \"50000 100000\", or max";
    let quota = |q: &str| match number(q) {
        Some(n) if n >= 1000 => Ok(n),
        Some(_) => bad(
            format!("quota {q} is below the kernel's minimum of 1000 µs"),
            usage,
        ),
        None => bad(format!("{s:?} is not a CPU limit"), usage),
    };
    let period = |p: &str| match number(p) {
        Some(n) if (1000..=1_000_000).contains(&n) => Ok(n),
        Some(_) => bad(
            format!("period {p} is outside the kernel's 1000..1000000 µs"),
            usage,
        ),
        None => bad(format!("{s:?} is not a CPU limit"), usage),
    };
    let words: Vec<&str> = s.split_whitespace().collect();
    let (q, p) = match words.as_slice() {
        [] | ["max"] => return Ok(None),
        ["max", p] => return period(p).map(|_| None),
        [pct] if pct.ends_with('%') => {
            let n = number(&pct[..pct.len() - 1])
                .ok_or_else(|| Bad::new(format!("{s:?} is not a whole percentage"), usage))?;
            if n == 0 {
                return bad("0% would stop the subhost entirely", usage);
            }
            let q = n
                .checked_mul(CPU_PERIOD / 100)
                .ok_or_else(|| Bad::new(format!("{s} is too large"), usage))?;
            (q, CPU_PERIOD)
        }
        [q] => (quota(q)?, CPU_PERIOD),
        [q, p] => (quota(q)?, period(p)?),
        _ => return bad(format!("{s:?} is not a CPU limit"), usage),
    };
    if q / p > CPU_MAX_CPUS {
        return bad(
            format!(
                "{s} allows {} CPUs, more than any host has: it limits nothing",
                q / p
            ),
            "write a percentage like 50% (100% is one CPU), or max for no limit",
        );
    }
    Ok(Some(format!("{q} {p}")))
}

fn cgroup_parent(s: &str) -> Result<Option<String>, Bad> {
    if s.is_empty() {
        return Ok(None);
    }
    if !s.starts_with('/') {
        return bad(
            format!("{s:?} is not a path from the cgroup root"),
            "start it with / as /proc/self/cgroup shows paths, e.g. /subhost",
        );
    }
    let path = s.trim_end_matches('/');
    if path.is_empty() {
        return bad(
            "/ is the root of the cgroup hierarchy, where no subhost is placed",
            "name a cgroup below it, e.g. /subhost, or remove the line to use the launcher's own cgroup + /subhost",
        );
    }
    for part in path[1..].split('/') {
        if part.is_empty() || part == "." || part == ".." || part.chars().any(char::is_control) {
            return bad(
                format!("{s:?} has an empty, `.`, `..` or control-character component"),
                "write a plain path like /subhost/web",
            );
        }
    }
    Ok(Some(path.to_string()))
}

fn service(s: &str) -> Result<String, Bad> {
    let usage = "give a service name as in /etc/init.d, or an absolute path";
    if s.starts_with('/') {
        return Ok(s.to_string());
    }
    if s.is_empty() {
        return bad("an element is empty", "remove it");
    }
    if s.contains('/') {
        return bad(format!("{s:?} is a relative path"), usage);
    }
    if s.starts_with('-')
        || s == "."
        || s == ".."
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return bad(format!("{s:?} is not a service name"), usage);
    }
    Ok(s.to_string())
}

fn on_off(s: &str) -> Result<bool, Bad> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => bad(
            format!("{s:?} is neither on nor off"),
            "write SECCOMP=on (the default) or SECCOMP=off",
        ),
    }
}

fn syscalls(elems: &[Elem]) -> At<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for e in elems {
        if !crate::seccomp::is_denied(&e.text) {
            let names: Vec<&str> = crate::seccomp::denied_names().collect();
            return Err((
                e.line,
                Bad::new(
                    format!("{:?} is not a system call the filter denies", e.text),
                    format!("lift one of: {}", names.join(" ")),
                ),
            ));
        }
        if !out.contains(&e.text) {
            out.push(e.text.clone());
        }
    }
    Ok(out)
}

fn caps(elems: &[Elem]) -> At<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for e in elems {
        let upper = e.text.to_ascii_uppercase();
        let name = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        if capability_number(&name).is_none() {
            let known: Vec<&str> = CAPABILITIES.iter().map(|c| &c[4..]).collect();
            return Err((
                e.line,
                Bad::new(
                    format!("{:?} is not a Linux capability", e.text),
                    format!(
                        "use names from capabilities(7), with or without CAP_: {}",
                        known.join(", ")
                    ),
                ),
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
