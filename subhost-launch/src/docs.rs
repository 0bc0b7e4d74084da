//! `completions` and `man`: documentation generated from the CLI definition
//! and the config's key table themselves, so it cannot drift from what the
//! binary accepts. The README's table of config keys is made here too.

use std::io::Write;

use anyhow::{Context, Result};
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

use crate::config;

const BIN: &str = "subhost-launch";
const SECTION: &str = "8";

/// Writes the completion script for `shell` to stdout.
pub fn completions(mut cli: clap::Command, shell: clap_complete::Shell) -> Result<()> {
    // clap_complete panics on a write error; rendering to memory first turns
    // a closed pipe into an ordinary error.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cli, BIN, &mut buf);
    if shell == clap_complete::Shell::Bash {
        buf = fix_bash_states(&buf);
    }
    write_stdout(&buf)
}

/// clap_complete's bash script spells the state of a subcommand one way
/// where it sets it (`subhost__launch__subcmd__start`) and another where it
/// matches it (`subhost__subcmd__launch__subcmd__start`) when the binary's
/// name has a hyphen, so nothing after a subcommand ever completed
/// (clap-rs/clap#6421). Respelling the matches is a no-op once fixed.
fn fix_bash_states(script: &[u8]) -> Vec<u8> {
    let wrong = BIN.replace('-', "__subcmd__");
    let right = BIN.replace('-', "__");
    String::from_utf8_lossy(script)
        .replace(&wrong, &right)
        .into_bytes()
}

/// Writes the manual page (roff, section 8) to stdout.
pub fn man(cli: clap::Command) -> Result<()> {
    let page = render_man(cli).context("cannot render the manual page")?;
    write_stdout(&page)
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// One page for the whole tool: the top-level sections, then one section per
/// command (its own synopsis, description and options), so that a single
/// file installed as subhost-launch.8 documents everything.
fn render_man(mut cli: clap::Command) -> std::io::Result<Vec<u8>> {
    cli.set_bin_name(BIN);
    // Building propagates global options and bin names to the subcommands.
    cli.build();
    let man = Man::new(cli.clone());
    let mut out = title_line(&cli).into_bytes();
    name_section(&cli).to_writer(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    commands_list(&cli).to_writer(&mut out)?;
    for sub in commands(&cli) {
        command_section(sub, &mut out)?;
    }
    if cli.get_after_long_help().is_some() || cli.get_after_help().is_some() {
        let mut extra = Vec::new();
        man.render_extra_section(&mut extra)?;
        out.extend(rename_heading(&extra, "EXTRA", "NOTES"));
    }
    trailer().to_writer(&mut out)?;
    Ok(out)
}

/// The `.TH` line, written by hand: the roff writer drops empty arguments,
/// so an empty date would shift the source and manual into the wrong fields.
fn title_line(cli: &clap::Command) -> String {
    let version = cli.get_version().unwrap_or_default();
    format!(
        ".TH {} {SECTION} \"\" \"{BIN} {version}\" \"System Administration\"\n",
        BIN.to_uppercase()
    )
}

/// NAME must be one line (whatis and apropos index it); the about text may
/// go on for paragraphs, which DESCRIPTION shows in full.
fn name_section(cli: &clap::Command) -> Roff {
    let about = cli.get_about().map(|a| a.to_string()).unwrap_or_default();
    let summary = about
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('.');
    let mut roff = Roff::new();
    roff.control("SH", ["NAME"]);
    roff.text([roman(format!("{BIN} - {summary}"))]);
    roff
}

/// The commands a user can run: visible ones, without clap's own `help`.
fn commands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

fn commands_list(cli: &clap::Command) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    roff.text([roman("Each command is described in its own section below.")]);
    for sub in commands(cli) {
        roff.control("TP", []);
        roff.text([bold(sub.get_name())]);
        if let Some(about) = sub.get_about().or_else(|| sub.get_long_about()) {
            roff.text([roman(about.to_string())]);
        }
    }
    roff
}

/// A `.SH` section for `sub` (and, recursively, one for each command below
/// it), whose parts are `.SS` subsections.
fn command_section(sub: &clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let title = sub.get_bin_name().unwrap_or(sub.get_name()).to_uppercase();
    let mut head = Roff::new();
    head.control("SH", [title.as_str()]);
    head.to_writer(out)?;

    let man = Man::new(without_global_args(sub));
    let mut body = Vec::new();
    man.render_synopsis_section(&mut body)?;
    man.render_description_section(&mut body)?;
    man.render_options_section(&mut body)?;
    if sub.get_after_long_help().is_some() || sub.get_after_help().is_some() {
        man.render_extra_section(&mut body)?;
    }
    out.extend(demote_headings(&body));

    for nested in commands(sub) {
        command_section(nested, out)?;
    }
    Ok(())
}

/// `sub` with the global options hidden: they are documented once, under
/// OPTIONS, rather than repeated in every command's section.
fn without_global_args(sub: &clap::Command) -> clap::Command {
    let globals: Vec<clap::Id> = sub
        .get_arguments()
        .filter(|a| a.is_global_set() || matches!(a.get_id().as_str(), "help" | "version"))
        .map(|a| a.get_id().clone())
        .collect();
    globals
        .into_iter()
        .fold(sub.clone(), |cmd, id| cmd.mut_arg(id, |a| a.hide(true)))
}

/// Turns each `.SH` line into `.SS`. The roff writer escapes a leading dot
/// in text, so only real macro lines can match.
fn demote_headings(roff: &[u8]) -> Vec<u8> {
    map_lines(roff, |line| match line.strip_prefix(b".SH ") {
        Some(rest) => [b".SS ".as_slice(), rest].concat(),
        None => line.to_vec(),
    })
}

fn rename_heading(roff: &[u8], from: &str, to: &str) -> Vec<u8> {
    let from = format!(".SH {from}");
    let to = format!(".SH {to}");
    map_lines(roff, |line| {
        if line == from.as_bytes() {
            to.as_bytes().to_vec()
        } else {
            line.to_vec()
        }
    })
}

fn map_lines(text: &[u8], f: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for line in text.split_inclusive(|&b| b == b'\n') {
        let (body, nl) = match line.strip_suffix(b"\n") {
            Some(body) => (body, b"\n".as_slice()),
            None => (line, b"".as_slice()),
        };
        out.extend(f(body));
        out.extend_from_slice(nl);
    }
    out
}

/// A key's default as the manual and README show it.
fn default_shown(key: &config::Key) -> String {
    match key.default {
        "" => "unset".to_string(),
        d => format!("{}={d}", key.name),
    }
}

/// The config's keys, from the key table.
fn config_section() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["CONFIGURATION"]);
    roff.text([roman(
        "$SUBHOST/NAME/config holds plain bash assignments KEY=value or KEY=(...), \
         parsed and never executed; create writes one that documents every key. The keys:",
    )]);
    for key in config::KEYS {
        roff.control("TP", []);
        roff.text([bold(key.name), roman(format!(" ({})", key.shape()))]);
        roff.text([roman(format!(
            "{} Default: {}. Example: {}",
            key.doc_line(),
            default_shown(key),
            key.example
        ))]);
    }
    roff
}

/// What clap does not know: the config, environment, files, related pages.
fn trailer() -> Roff {
    let mut roff = config_section();
    roff.control("SH", ["ENVIRONMENT"]);
    roff.control("TP", []);
    roff.text([bold("SUBHOST")]);
    roff.text([roman(
        "Where subhosts live, when --subhost-dir is not given (default /opt/subhost).",
    )]);

    roff.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "$SUBHOST/NAME/config",
            "The subhost's settings: plain bash assignments, parsed and never executed.",
        ),
        (
            "$SUBHOST/NAME/root",
            "Its filesystem, or the upper layer of its overlay.",
        ),
        (
            "$SUBHOST/NAME/live",
            "Where its root is mounted while it is active.",
        ),
        (
            "$SUBHOST/NAME/NAME.img",
            "Optional image file holding root/ and work/.",
        ),
        (
            "/etc/subhost/autostart",
            "Subhosts the boot scripts start, one NAME per line (# starts a comment).",
        ),
    ] {
        roff.control("TP", []);
        roff.text([italic(path)]);
        roff.text([roman(what)]);
    }

    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "ip-netns(8), namespaces(7), cgroups(7), systemd.service(5)",
    )]);
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of config keys (section `### config`), as the
    /// key table makes it.
    fn markdown_table() -> String {
        let mut t = String::from(
            "| Key | Takes | Default | What it sets | Example |\n\
             |-----|-------|---------|--------------|---------|\n",
        );
        for key in config::KEYS {
            let default = match key.default {
                "" => "unset".to_string(),
                _ => format!("`{}`", default_shown(key)),
            };
            t.push_str(&format!(
                "| `{}` | {} | {default} | {} | `{}` |\n",
                key.name,
                key.shape(),
                key.doc_line(),
                key.example
            ));
        }
        t
    }

    #[test]
    fn readme_lists_the_config_keys_of_the_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let table = markdown_table();
        assert!(
            readme.contains(&format!("\n\n{table}\n")),
            "the table of config keys in README.md (section `### config`) differs from \
             the key table; replace it with:\n\n{table}"
        );
        for key in config::KEYS {
            assert!(table.contains(&format!("| `{}` |", key.name)), "{table}");
        }
    }

    #[test]
    fn the_manual_documents_every_config_key() {
        let mut out = Vec::new();
        trailer().to_writer(&mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(page.contains(".SH CONFIGURATION"), "{page}");
        for key in config::KEYS {
            assert!(page.contains(&format!("\\fB{}\\fR", key.name)), "{page}");
        }
    }

    #[test]
    fn bash_states_are_spelled_alike() {
        let mut cli = clap::Command::new(BIN).subcommand(clap::Command::new("start"));
        let mut buf = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut cli, BIN, &mut buf);
        let fixed = String::from_utf8(fix_bash_states(&buf)).unwrap();
        assert!(
            fixed.contains("cmd=\"subhost__launch__subcmd__start\""),
            "{fixed}"
        );
        assert!(
            fixed.contains("\n        subhost__launch__subcmd__start)"),
            "{fixed}"
        );
        assert!(!fixed.contains("subhost__subcmd__launch"), "{fixed}");
    }

    #[test]
    fn demotes_only_section_macros() {
        let got = demote_headings(b".SH SYNOPSIS\ntext .SH\n\\&.SH not a macro\n.SH OPTIONS");
        assert_eq!(
            String::from_utf8(got).unwrap(),
            ".SS SYNOPSIS\ntext .SH\n\\&.SH not a macro\n.SS OPTIONS"
        );
    }

    #[test]
    fn renames_exact_heading_only() {
        let got = rename_heading(b".SH EXTRA\n.SH EXTRAS\nEXTRA\n", "EXTRA", "NOTES");
        assert_eq!(
            String::from_utf8(got).unwrap(),
            ".SH NOTES\n.SH EXTRAS\nEXTRA\n"
        );
    }
}
