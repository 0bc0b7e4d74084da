//! The config's words: a lexer of the bash subset a config may use
//! (assignments, quoting, `$VAR` expansion, arrays, comments and
//! continuations), which refuses everything else with `FILE:LINE`. It knows
//! the key names but not what they mean: each assignment goes, as it is
//! read, to the caller, which checks the value (`keys`).

use std::collections::HashMap;
use std::path::Path;

use super::ConfigError;

/// Takes each assignment (key, value, line) as it is read; an error stops
/// the reading there.
pub(super) type Assign<'a> = &'a mut dyn FnMut(&str, &Value, usize) -> Result<(), ConfigError>;

/// Every key assigned, with its last value.
pub(super) type Vars = HashMap<String, Var>;

/// Reads the text of a config file (`file` only names it in errors), where
/// `keys` may be assigned; `name` and `base` are the values of `SUB` and
/// `SUBHOST` for expansion. Gives each assignment to `assign` in order.
pub(super) fn read(
    file: &Path,
    text: &str,
    name: &str,
    base: &Path,
    keys: &[&str],
    assign: Assign<'_>,
) -> Result<Vars, ConfigError> {
    Lexer::new(file, text, name, base, keys, assign).run()
}

/// An array element with the line it was written on, so that a bad element
/// of a long array is reported where it is.
#[derive(Debug, Clone)]
pub(super) struct Element {
    pub(super) text: String,
    pub(super) line: usize,
}

#[derive(Debug, Clone)]
pub(super) enum Value {
    Scalar(String),
    Array(Vec<Element>),
}

pub(super) struct Var {
    pub(super) value: Value,
    /// Where it was last assigned.
    pub(super) line: usize,
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
struct Piece {
    text: String,
    split: Option<String>,
}

/// Appends quoted or literal text; also makes the word exist when `s` is
/// empty (`""` is an empty element, not no element).
fn push_literal(pieces: &mut Vec<Piece>, s: &str) {
    match pieces.last_mut() {
        Some(Piece { text, split: None }) => text.push_str(s),
        _ => pieces.push(Piece {
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

struct Lexer<'a> {
    file: &'a Path,
    /// The names that may be assigned.
    keys: &'a [&'a str],
    text: Vec<char>,
    pos: usize,
    line: usize,
    sub: String,
    /// `None` when the base directory is not UTF-8; only an error if used.
    subhost: Option<String>,
    vars: Vars,
    /// Checks and stores each assignment as it is read, so that a bad value
    /// is reported before anything on a later line.
    assign: Assign<'a>,
}

impl<'a> Lexer<'a> {
    fn new(
        file: &'a Path,
        text: &str,
        name: &str,
        base: &Path,
        keys: &'a [&'a str],
        assign: Assign<'a>,
    ) -> Lexer<'a> {
        Lexer {
            file,
            keys,
            text: text.chars().collect(),
            pos: 0,
            line: 1,
            sub: name.to_string(),
            subhost: base.to_str().map(str::to_string),
            vars: HashMap::new(),
            assign,
        }
    }

    fn err(&self, line: usize, what: impl Into<String>, fix: impl Into<String>) -> ConfigError {
        super::at(self.file, line, what, fix)
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
    fn run(mut self) -> Result<Vars, ConfigError> {
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
        Ok(self.vars)
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
            Ok(pieces) => pieces.into_iter().map(|s| s.text).collect::<String>(),
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
                format!("keys are upper-case names: {}", self.keys.join(", ")),
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
        if super::keys::is_known(self.keys, key) {
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
        let fix = if self.keys.contains(&upper.as_str()) {
            format!("did you mean {upper}? keys are upper case")
        } else {
            format!("known keys: {}", self.keys.join(", "))
        };
        Err(self.err(line, format!("unknown key {key}"), fix))
    }

    fn assignment(&mut self, key: String, line: usize) -> Result<(), ConfigError> {
        self.check_key(&key, line)?;
        let value = if self.peek() == Some('(') {
            self.bump();
            Value::Array(self.array(line)?)
        } else {
            let pieces = self.word(Ctx::Scalar)?;
            Value::Scalar(pieces.into_iter().map(|s| s.text).collect())
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
        (self.assign)(&key, &value, line)?;
        self.vars.insert(key, Var { value, line });
        Ok(())
    }

    /// The elements of `KEY=(…)`, after the `(`.
    fn array(&mut self, open: usize) -> Result<Vec<Element>, ConfigError> {
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
                    let pieces = self.word(Ctx::Array)?;
                    self.fields(pieces, line, &mut elems)?;
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
    fn fields(
        &self,
        pieces: Vec<Piece>,
        line: usize,
        out: &mut Vec<Element>,
    ) -> Result<(), ConfigError> {
        let mut cur: Option<String> = None;
        for piece in pieces {
            let Some(var) = piece.split else {
                cur.get_or_insert_with(String::new).push_str(&piece.text);
                continue;
            };
            if let Some(g) = piece.text.chars().find(|c| matches!(c, '*' | '?' | '[')) {
                return Err(self.err(
                    line,
                    format!(
                        "unquoted ${var} in an array: its value {:?} contains `{g}`, which bash would expand as a filename pattern",
                        piece.text
                    ),
                    format!("quote it: \"${var}\""),
                ));
            }
            for c in piece.text.chars() {
                if matches!(c, ' ' | '\t' | '\n') {
                    if let Some(f) = cur.take() {
                        out.push(Element { text: f, line });
                    }
                } else {
                    cur.get_or_insert_with(String::new).push(c);
                }
            }
        }
        if let Some(f) = cur {
            out.push(Element { text: f, line });
        }
        Ok(())
    }

    /// One shell word, up to a blank, newline or operator.
    fn word(&mut self, ctx: Ctx) -> Result<Vec<Piece>, ConfigError> {
        let mut pieces: Vec<Piece> = Vec::new();
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
                    push_literal(&mut pieces, &escaped.to_string());
                }
                '\'' => {
                    let s = self.single_quoted()?;
                    push_literal(&mut pieces, &s);
                }
                '"' => {
                    let s = self.double_quoted()?;
                    push_literal(&mut pieces, &s);
                }
                '$' => {
                    let piece = self.dollar(false, ctx == Ctx::Array)?;
                    if piece.split.is_some() {
                        pieces.push(piece);
                    } else {
                        push_literal(&mut pieces, &piece.text);
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
                '[' if ctx == Ctx::Array && pieces.is_empty() && self.rest_has("]=") => {
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
                    push_literal(&mut pieces, &c.to_string());
                    tilde_next = c == ':' || c == '=';
                }
            }
            tilde_here = tilde_next;
        }
        Ok(pieces)
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
    fn dollar(&mut self, in_quotes: bool, split: bool) -> Result<Piece, ConfigError> {
        let line = self.line;
        self.bump();
        let literal = || Piece {
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
    fn braced(&mut self, line: usize, split: bool) -> Result<Piece, ConfigError> {
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

    fn expand(&self, name: &str, line: usize, split: bool) -> Result<Piece, ConfigError> {
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
            Value::Scalar(text) => Ok(Piece {
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
        if super::keys::is_known(self.keys, name) {
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
}
