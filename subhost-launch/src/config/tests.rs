use std::collections::HashMap;

use super::lexer::Value;
use super::*;

const FILE: &str = "/s/web/config";

fn p(text: &str) -> Result<Config, ConfigError> {
    parse(Path::new(FILE), text, "web", Path::new("/s"))
}

#[track_caller]
fn ok(text: &str) -> Config {
    p(text).unwrap_or_else(|e| panic!("{text:?} was refused: {e}"))
}

/// Asserts that `text` is refused at `line` with `needle` in the message,
/// in the `FILE:LINE: what (fix)` form.
#[track_caller]
fn refused(text: &str, line: usize, needle: &str) -> ConfigError {
    let e = match p(text) {
        Ok(c) => panic!("{text:?} was accepted: {c:?}"),
        Err(e) => e,
    };
    let shown = e.to_string();
    assert_eq!(e.line, line, "{text:?}: {shown}");
    assert!(shown.starts_with(&format!("{FILE}:{line}: ")), "{shown}");
    assert!(
        shown.contains(needle),
        "{text:?}: {shown:?} lacks {needle:?}"
    );
    assert!(!e.what.is_empty() && !e.fix.is_empty(), "{shown}");
    e
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn paths(v: &[&str]) -> Vec<PathBuf> {
    v.iter().map(PathBuf::from).collect()
}

// ---- defaults and accepted syntax ----

#[test]
fn defaults() {
    let d = Config::defaults("web");
    assert_eq!(d.hostname, "web");
    assert_eq!(d.stop_timeout, 5);
    assert_eq!(d.session, strs(&["/bin/bash", "-l"]));
    assert!(d.lower.is_empty() && d.bridges.is_empty() && d.share.is_empty());
    assert_eq!((d.boot, d.halt), (None, None));
    assert!(d.start.is_empty() && d.caps_drop.is_empty() && d.caps_keep.is_empty());
    assert_eq!((d.memory_max, d.pids_max), (None, None));
    assert_eq!((d.cpu_max, d.cgroup_parent), (None, None));
}

#[test]
fn each_documented_default_is_the_default() {
    // A family (`SERVICE_<name>`) has no default: it is unset.
    for key in KEYS.iter().filter(|k| !k.name.ends_with("<name>")) {
        let text = format!("{}={}\n", key.name, key.default);
        assert_eq!(ok(&text), Config::defaults("web"), "{text}");
    }
}

#[test]
fn every_example_parses_alone() {
    // Addresses need the cables, gateways an address: those examples parse
    // after the ones above them, as `create` writes them.
    let needs_above = [
        "ADDRESS",
        "GATEWAY",
        "GATEWAY6",
        "RESTART_<name>",
        "HEALTH_<name>",
        "PUBLISH",
        "LISTEN_<name>",
        "IDLE",
    ];
    for (i, key) in KEYS.iter().enumerate() {
        if needs_above.contains(&key.name) {
            p(key.example).expect_err("refused alone");
            let above: Vec<&str> = KEYS[..=i].iter().map(|k| k.example).collect();
            ok(&above.join("\n"));
        } else {
            ok(key.example);
        }
    }
}

#[test]
fn empty_and_comment_only_files_give_defaults() {
    assert_eq!(ok(""), Config::defaults("web"));
    assert_eq!(ok("\n\n"), Config::defaults("web"));
    assert_eq!(
        ok("# a comment\n   \n\t# indented\n  # LOWER=/\n"),
        Config::defaults("web")
    );
}

#[test]
fn plain_values() {
    let c = ok("LOWER=/\nHOSTNAME=box\nSTOP_TIMEOUT=10\n");
    assert_eq!(c.lower, paths(&["/"]));
    assert_eq!(c.hostname, "box");
    assert_eq!(c.stop_timeout, 10);
    // No newline at the end of the file.
    assert_eq!(ok("HOSTNAME=box").hostname, "box");
}

#[test]
fn quoted_values() {
    assert_eq!(ok(r#"LOWER="/a b":'/c d'"#).lower, paths(&["/a b", "/c d"]));
    assert_eq!(ok(r#"HOSTNAME=a"b-c"'d'"#).hostname, "ab-cd");
    assert_eq!(
        ok(r#"SESSION=/bin/sh" -c"' x'"#).session,
        strs(&["/bin/sh", "-c", "x"])
    );
    assert_eq!(ok("HOSTNAME=''box\"\"").hostname, "box");
}

#[test]
fn single_quotes_are_literal() {
    assert_eq!(ok(r"LOWER='/$SUB\x'").lower, paths(&[r"/$SUB\x"]));
    assert_eq!(
        ok("BOOT=('a\"b' '`x`' '$(y)')").boot,
        Some(strs(&["a\"b", "`x`", "$(y)"]))
    );
}

#[test]
fn backslash_escapes() {
    // Inside double quotes only $ ` " \ lose the backslash.
    assert_eq!(
        ok(r#"LOWER="/a\"b\\c\$d\e\`f""#).lower,
        paths(&["/a\"b\\c$d\\e`f"])
    );
    // Unquoted, every character is taken literally.
    assert_eq!(ok(r"LOWER=/a\ b\$c\\d\'e").lower, paths(&["/a b$c\\d'e"]));
    assert_eq!(ok(r"BOOT=(a\ b \*)").boot, Some(strs(&["a b", "*"])));
    // A backslash at the very end stays.
    assert_eq!(ok(r"LOWER=/a\").lower, paths(&["/a\\"]));
}

#[test]
fn expansion_of_sub_and_subhost() {
    let c = ok("LOWER=$SUBHOST/base:${SUBHOST}/$SUB\nHOSTNAME=$SUB-1\n");
    assert_eq!(c.lower, paths(&["/s/base", "/s/web"]));
    assert_eq!(c.hostname, "web-1");
    assert_eq!(ok("HOSTNAME=${SUB}x").hostname, "webx");
    // The longest name wins, as in bash: $SUBHOST is not $SUB + "HOST".
    assert_eq!(ok("LOWER=/$SUB/$SUBHOST").lower, paths(&["/web//s"]));
    let c = ok(r#"SHARE=("$SUBHOST/data:/data" /"${SUB}"x:/$SUB)"#);
    assert_eq!(
        c.share,
        vec![
            Share {
                host: "/s/data".into(),
                inner: "/data".into()
            },
            Share {
                host: "/webx".into(),
                inner: "/web".into()
            },
        ]
    );
}

#[test]
fn expansion_of_earlier_keys() {
    let c = ok("HOSTNAME=box\nSESSION=\"/bin/echo $HOSTNAME\"\nLOWER=/b\nLOWER=$LOWER:/c\n");
    assert_eq!(c.session, strs(&["/bin/echo", "box"]));
    assert_eq!(c.lower, paths(&["/b", "/c"]));
    // Left to right on one line.
    assert_eq!(
        ok("HOSTNAME=h BOOT=\"/x $HOSTNAME\"").boot,
        Some(strs(&["/x", "h"]))
    );
}

#[test]
fn lone_dollar_is_literal() {
    assert_eq!(ok("LOWER=/a$").lower, paths(&["/a$"]));
    assert_eq!(ok("LOWER=\"/a$\"").lower, paths(&["/a$"]));
    assert_eq!(ok("LOWER=/a$/b").lower, paths(&["/a$/b"]));
    assert_eq!(ok("LOWER=\"/a$ b\"").lower, paths(&["/a$ b"]));
    assert_eq!(ok("BOOT=(\"$'x'\")").boot, Some(strs(&["$'x'"])));
}

#[test]
fn export() {
    let c =
        ok("export LOWER=/\nexport HOSTNAME=h STOP_TIMEOUT=3\nexport LOWER\nexport   SHARE=(/a)\n");
    assert_eq!(c.lower, paths(&["/"]));
    assert_eq!((c.hostname.as_str(), c.stop_timeout), ("h", 3));
    assert_eq!(c.share.len(), 1);
    // `export` is only special as a whole word.
    refused("exported=1", 1, "unknown key exported");
}

#[test]
fn several_assignments_on_a_line() {
    let c = ok("HOSTNAME=h STOP_TIMEOUT=7\t# both\n");
    assert_eq!((c.hostname.as_str(), c.stop_timeout), ("h", 7));
}

#[test]
fn comments() {
    let c = ok("HOSTNAME=h # trailing\nLOWER=/a#b\nSHARE=(/x) # after the array\n");
    assert_eq!(c.hostname, "h");
    assert_eq!(c.lower, paths(&["/a#b"]));
    assert_eq!(c.share.len(), 1);
    assert_eq!(ok("LOWER=\"/a #b\"").lower, paths(&["/a #b"]));
    // Right after `=` a `#` is part of the value, as in bash.
    assert_eq!(ok("BOOT=#x").boot, Some(strs(&["#x"])));
}

#[test]
fn continuations() {
    assert_eq!(ok("LOWER=/a:\\\n/b\n").lower, paths(&["/a", "/b"]));
    let c = ok("HOSTNAME=h \\\n  STOP_TIMEOUT=2\n");
    assert_eq!((c.hostname.as_str(), c.stop_timeout), ("h", 2));
    assert_eq!(ok("LOW\\\nER=/x").lower, paths(&["/x"]));
    assert_eq!(ok("LOWER=\"/a\\\nb\"").lower, paths(&["/ab"]));
    // Single quotes keep both characters.
    assert_eq!(ok("BOOT=('a\\\nb')").boot, Some(strs(&["a\\\nb"])));
    // A comment ends at the newline even after a backslash.
    assert_eq!(ok("# note \\\nHOSTNAME=h\n").hostname, "h");
    // Lines after a continuation keep their numbers.
    refused("LOWER=/a:\\\n/b\nFOO=1\n", 3, "unknown key FOO");
}

#[test]
fn arrays_across_lines() {
    let c = ok("BRIDGES=(\n  br0            # first\n  br1=02:00:00:00:01:01\n\n  =\n  \"\"\n)\n");
    assert_eq!(
        c.bridges,
        vec![
            Cable {
                bridge: Some("br0".into()),
                mac: None
            },
            Cable {
                bridge: Some("br1".into()),
                mac: Some([2, 0, 0, 0, 1, 1])
            },
            Cable {
                bridge: None,
                mac: None
            },
            Cable {
                bridge: None,
                mac: None
            },
        ]
    );
    assert_eq!(
        ok(r#"SESSION=(/bin/sh -c "echo hi there")"#).session,
        strs(&["/bin/sh", "-c", "echo hi there"])
    );
    assert!(ok("BRIDGES=()").bridges.is_empty());
    assert!(ok("SHARE=( \n )").share.is_empty());
    // `#` starts a comment only at the start of a word.
    assert_eq!(ok("BOOT=(a#b #c\n)").boot, Some(strs(&["a#b"])));
}

#[test]
fn unquoted_expansions_split_in_arrays() {
    let c = ok("HALT=\"/sbin/stop  now\"\nBOOT=($HALT extra \"$HALT\" x$HALT)\n");
    assert_eq!(
        c.boot,
        Some(strs(&[
            "/sbin/stop",
            "now",
            "extra",
            "/sbin/stop  now",
            "x/sbin/stop",
            "now"
        ]))
    );
    let c = ok("HALT=\nBOOT=(/x $HALT)\n");
    assert_eq!(c.halt, None);
    assert_eq!(c.boot, Some(strs(&["/x"])));
    assert_eq!(
        ok("HALT=\nBOOT=(/x \"$HALT\")").boot,
        Some(strs(&["/x", ""]))
    );
    assert_eq!(ok("HALT=\nBOOT=(/x ''$HALT)").boot, Some(strs(&["/x", ""])));
    // Not split outside arrays.
    assert_eq!(ok("HOSTNAME=a\nBOOT=$SUB").boot, Some(strs(&["web"])));
}

#[test]
fn glob_characters_are_literal_in_plain_values() {
    assert_eq!(ok("LOWER=/a*").lower, paths(&["/a*"]));
    assert_eq!(ok("LOWER=/a?[b]{c}").lower, paths(&["/a?[b]{c}"]));
    assert_eq!(
        ok("BOOT=(ls \"*\" '?' \\[)").boot,
        Some(strs(&["ls", "*", "?", "["]))
    );
    assert_eq!(ok("LOWER=/a~b").lower, paths(&["/a~b"]));
    assert_eq!(ok("SESSION=(\"~\")").session, strs(&["~"]));
}

#[test]
fn later_assignment_wins() {
    assert_eq!(ok("HOSTNAME=a\nHOSTNAME=b\n").hostname, "b");
    assert_eq!(ok("BRIDGES=(a b)\nBRIDGES=(c)\n").bridges.len(), 1);
    assert_eq!(
        ok("SESSION=/bin/sh\nSESSION=(/bin/zsh -i)").session,
        strs(&["/bin/zsh", "-i"])
    );
    // An overridden bad value is still a mistake worth reporting.
    refused("STOP_TIMEOUT=x\nSTOP_TIMEOUT=1\n", 1, "STOP_TIMEOUT");
}

#[test]
fn error_display_format() {
    let e = p("HOSTNAME=a\nFOO=1\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{FILE}:2: unknown key FOO (known keys: {})",
            keys::names().join(", ")
        )
    );
}

// ---- refused constructs ----

#[test]
fn command_substitution() {
    refused("LOWER=$(pwd)", 1, "command substitution");
    refused("\nLOWER=\"/a$(pwd)\"", 2, "command substitution");
    refused("LOWER=`pwd`", 1, "command substitution");
    refused("LOWER=\"`pwd`\"", 1, "command substitution");
    refused("BOOT=(a $(b))", 1, "command substitution");
    refused("HOSTNAME=$((1+2))", 1, "arithmetic expansion");
    refused("$(reboot)", 1, "command substitution");
    refused("HOSTNAME=h\necho $(date)\n", 2, "`echo` is a command");
}

#[test]
fn separators_and_operators() {
    refused("HOSTNAME=a; STOP_TIMEOUT=1", 1, "`;`");
    refused("\n;\n", 2, "`;`");
    refused("HOSTNAME=a && STOP_TIMEOUT=1", 1, "`&&`");
    refused("HOSTNAME=a || STOP_TIMEOUT=1", 1, "`||`");
    refused("HOSTNAME=a | cat", 1, "`|`: pipes");
    refused("HOSTNAME=a &", 1, "`&`: background");
    refused("HOSTNAME=a >/tmp/x", 1, "`>`: redirections");
    refused("HOSTNAME=a>/tmp/x", 1, "`>`: redirections");
    refused("HOSTNAME=a >>/tmp/x", 1, "redirections");
    refused("HOSTNAME=a </tmp/x", 1, "`<`: redirections");
    refused("HOSTNAME=a 2>/dev/null", 1, "`>`: redirections");
    refused("2>/dev/null", 1, "`>`: redirections");
    refused("BOOT=<(true)", 1, "process substitution");
    refused("LOWER= (x)", 1, "unquoted `(`");
    refused("(HOSTNAME=a)", 1, "unquoted `(`");
    refused(")", 1, "unmatched `)`");
    refused("HOSTNAME=a)", 1, "unmatched `)`");
}

#[test]
fn functions_and_control_structures() {
    refused("f() { :; }", 1, "functions are not supported");
    refused("f () {\n:\n}", 1, "functions are not supported");
    refused("function f {\n}", 1, "functions are not supported");
    refused("if true; then HOSTNAME=a; fi", 1, "control structures");
    refused("for x in a; do :; done", 1, "control structures");
    refused("{ HOSTNAME=a; }", 1, "control structures");
    refused("[[ -e /x ]]", 1, "control structures");
}

#[test]
fn commands() {
    refused("echo hi", 1, "`echo` is a command");
    refused("HOSTNAME=a echo hi", 1, "`echo` after an assignment");
    refused("source other", 1, "including other files");
    refused(". ./other", 1, "including other files");
    refused("declare -a SHARE=(/a)", 1, "`declare` is not supported");
    refused("readonly LOWER=/", 1, "`readonly` is not supported");
    refused("1A=x", 1, "`1A` is not a valid key name");
    refused("\"LOWER\"=/", 1, "not a valid key name");
    refused("export", 1, "`export` without an assignment");
    refused("export # nothing", 1, "`export` without an assignment");
    refused("export -n LOWER", 1, "options to `export`");
    refused("export FOO", 1, "unknown key FOO");
    // `export ls` would export a variable `ls`.
    refused("export LOWER=/ ls -l", 1, "unknown key ls");
    refused("export LOWER=/ $(ls)", 1, "command substitution");
    refused("~/bin/setup", 1, "home directory");
}

#[test]
fn assignment_forms() {
    refused("SHARE+=(/x)", 1, "appending");
    refused("SHARE[0]=/x", 1, "single array elements");
    refused("HOSTNAME = web", 1, "no spaces around `=`");
    refused("HOSTNAME =web", 1, "no spaces around `=`");
    refused("SESSION=(/bin/sh)\nSESSION=/bin/zsh\n", 2, "first element");
    refused("SHARE=(/a)x", 1, "right after the `)`");
    refused("SHARE=(/a)# c", 1, "`#` right after the `)`");
}

#[test]
fn globs_in_arrays() {
    refused("SHARE=(/srv/*)", 1, "`*` in an array element");
    refused("BOOT=(a?)", 1, "`?` in an array element");
    refused("BOOT=(\n x\n [ab]\n)", 3, "`[` in an array element");
    refused("BOOT=([0]=x)", 1, "array indices");
    refused("BOOT=(a{b,c})", 1, "brace expansion");
    refused("HALT=\"/x/*\"\nBOOT=(a $HALT)", 2, "filename pattern");
    refused("BOOT=(a (b))", 1, "unquoted `(` inside an array");
    refused("BOOT=(a;b)", 1, "unquoted `;` inside an array");
}

#[test]
fn tilde() {
    refused("LOWER=~/x", 1, "home directory");
    refused("LOWER=/a:~/b", 1, "home directory");
    refused("SHARE=(~/x)", 1, "home directory");
    refused("SHARE=(x=~)", 1, "home directory");
}

#[test]
fn expansion_operators() {
    refused(
        "LOWER=${X:-/x}",
        1,
        "`${X:-/x}`: a parameter expansion operator",
    );
    refused("LOWER=${SUB%b}", 1, "parameter expansion operator");
    refused("LOWER=\"${SUB/w/x}\"", 1, "parameter expansion operator");
    refused("HOSTNAME=${#SUB}", 1, "length operator");
    refused("HOSTNAME=${!SUB}", 1, "indirect expansion");
    refused("SHARE=(/a)\nLOWER=${SHARE[0]}", 2, "array subscripting");
    refused("HOSTNAME=${}", 1, "empty expansion");
    refused("HOSTNAME=${1}", 1, "special parameter");
    refused("HOSTNAME=$1", 1, "special parameters");
    refused("HOSTNAME=\"$@\"", 1, "special parameters");
    refused("HOSTNAME=$$", 1, "special parameters");
    refused("HOSTNAME=$?", 1, "special parameters");
    refused("HOSTNAME=$'web'", 1, "ANSI-C quoting");
    refused("HOSTNAME=$\"web\"", 1, "locale translation");
}

#[test]
fn unknown_variables() {
    let e = refused("LOWER=$HOME/base", 1, "$HOME: unknown variable");
    assert!(e.fix.contains("environment is not used"), "{e}");
    let e = refused("LOWER=/$SUB_x", 1, "$SUB_x: unknown variable");
    assert!(e.fix.contains("${SUB}_x"), "{e}");
    let e = refused("LOWER=/$SUBHOSTx", 1, "unknown variable");
    assert!(e.fix.contains("${SUBHOST}x"), "{e}");
    refused(
        "SESSION=\"/bin/echo $HOSTNAME\"",
        1,
        "HOSTNAME is not assigned above",
    );
    refused("\nSHARE=(/a)\nLOWER=$SHARE", 3, "$SHARE is an array");
}

#[test]
fn unterminated() {
    refused("HOSTNAME=h\nLOWER='/a\n\n", 2, "unterminated single quote");
    refused("LOWER=\"/a\nHOSTNAME=b\n", 1, "unterminated double quote");
    refused("LOWER=${SUB", 1, "unterminated `${`");
    refused("SHARE=(/a\n/b\n", 1, "unterminated array");
    refused("BOOT=(a \"b)\n", 1, "unterminated double quote");
}

#[test]
fn keys() {
    let e = refused("FOO=1", 1, "unknown key FOO");
    for k in keys::names() {
        assert!(e.fix.contains(k), "{e}");
    }
    refused("lower=/", 1, "did you mean LOWER");
    refused("SUB=x", 1, "SUB is set by subhost-launch");
    refused("SUBHOST=/x", 1, "SUBHOST is set by subhost-launch");
    refused("PATH=/bin", 1, "unknown key PATH");
}

#[test]
fn stray_characters() {
    refused("HOSTNAME=a\r\n", 1, "DOS line endings");
    refused("HOSTNAME=a\nLOWER=/\rx\n", 2, "carriage return");
    refused("\nHOSTNAME=a\0", 2, "NUL");
}

// ---- values of each key ----

#[test]
fn lower() {
    assert!(ok("LOWER=").lower.is_empty());
    assert!(ok("LOWER=''").lower.is_empty());
    assert_eq!(
        ok("LOWER=/opt/subhost/base:/").lower,
        paths(&["/opt/subhost/base", "/"])
    );
    refused("LOWER=base", 1, "\"base\" is not an absolute path");
    refused("LOWER=/a::/b", 1, "empty path");
    refused("LOWER=/a:", 1, "empty path");
    refused("LOWER=/a,b", 1, "comma");
    refused("LOWER=(/a /b)", 1, "LOWER: takes a single value");
}

#[test]
fn bridges() {
    let c = ok("BRIDGES=(br0=02:AB:cd:EF:01:ff br-lan.10 abcdefghijklmno=)");
    assert_eq!(c.bridges[0].mac, Some([2, 0xab, 0xcd, 0xef, 1, 0xff]));
    assert_eq!(c.bridges[1].bridge.as_deref(), Some("br-lan.10"));
    assert_eq!(
        c.bridges[2],
        Cable {
            bridge: Some("abcdefghijklmno".into()),
            mac: None
        }
    );
    assert_eq!(
        ok("BRIDGES=(=02:00:00:00:00:01)").bridges[0],
        Cable {
            bridge: None,
            mac: Some([2, 0, 0, 0, 0, 1])
        }
    );
    refused("BRIDGES=br0", 1, "BRIDGES: takes an array");
    refused("BRIDGES=", 1, "BRIDGES: takes an array");
    refused("BRIDGES=(abcdefghijklmnop)", 1, "at most 15");
    refused("BRIDGES=(a/b)", 1, "contains '/'");
    refused("BRIDGES=(a:b)", 1, "contains ':'");
    refused("BRIDGES=('a b')", 1, "contains ' '");
    refused("BRIDGES=(..)", 1, "not an interface name");
    for mac in [
        "02:00:00:00:01",
        "02:00:00:00:01:0g",
        "0200.0000.0101",
        "2:0:0:0:1:1",
        "02:00:00:00:01:01:03",
        "02-00-00-00-01-01",
    ] {
        refused(&format!("BRIDGES=(br0={mac})"), 1, "is not a MAC address");
    }
    let e = refused("BRIDGES=(br0=01:00:5e:00:00:01)", 1, "multicast");
    assert!(e.fix.contains("02:00:5e:00:00:01"), "{e}");
    refused("BRIDGES=(br0=03:00:00:00:00:01)", 1, "multicast");
    refused("BRIDGES=(br0=ff:ff:ff:ff:ff:ff)", 1, "multicast");
    refused(
        "BRIDGES=(br0=00:00:00:00:00:00)",
        1,
        "not a valid interface address",
    );
    // The element's own line is reported.
    refused(
        "BRIDGES=(\n br0\n br1=zz\n)",
        3,
        "BRIDGES: \"zz\" is not a MAC address",
    );
}

#[test]
fn bridge_count() {
    let hundred = vec!["="; MAX_CABLES].join(" ");
    assert_eq!(
        ok(&format!("BRIDGES=({hundred})")).bridges.len(),
        MAX_CABLES
    );
    refused(&format!("BRIDGES=({hundred} =)"), 1, "101 cables");
}

#[test]
fn hostname() {
    assert_eq!(ok("HOSTNAME=web-1.example_x").hostname, "web-1.example_x");
    let longest = format!("{}.{}", "a".repeat(63), "");
    refused(&format!("HOSTNAME={longest}"), 1, "empty label");
    let max = format!("{}.{}", "a".repeat(40), "b".repeat(23));
    assert_eq!(ok(&format!("HOSTNAME={max}")).hostname.len(), 64);
    refused(&format!("HOSTNAME={max}c"), 1, "at most 64");
    refused(&format!("HOSTNAME={}", "a".repeat(64)), 1, "more than 63");
    refused("HOSTNAME=", 1, "HOSTNAME: is empty");
    refused("HOSTNAME=a..b", 1, "empty label");
    refused("HOSTNAME=.a", 1, "empty label");
    refused("HOSTNAME=-a", 1, "starts with '-'");
    refused("HOSTNAME='a b'", 1, "contains ' '");
    refused("HOSTNAME=a/b", 1, "contains '/'");
    refused("HOSTNAME=(a)", 1, "takes a single value");
}

#[test]
fn share() {
    let c = ok("SHARE=(/srv/data /host/path:/inner/path '/with space:/in side')");
    assert_eq!(
        c.share,
        vec![
            Share {
                host: "/srv/data".into(),
                inner: "/srv/data".into()
            },
            Share {
                host: "/host/path".into(),
                inner: "/inner/path".into()
            },
            Share {
                host: "/with space".into(),
                inner: "/in side".into()
            },
        ]
    );
    refused("SHARE=(data)", 1, "host path \"data\" is not absolute");
    refused(
        "SHARE=(/data:data)",
        1,
        "inner path \"data\" is not absolute",
    );
    refused("SHARE=(/data:)", 1, "empty inner path");
    refused("SHARE=(:/data)", 1, "empty host path");
    refused("SHARE=(/data:/../etc)", 1, "`..`");
    refused("SHARE=(/data:/)", 1, "subhost's root");
    refused("SHARE=(/data:/.)", 1, "subhost's root");
    refused("SHARE=/data", 1, "SHARE: takes an array");
}

#[test]
fn stop_timeout() {
    assert_eq!(ok("STOP_TIMEOUT=0").stop_timeout, 0);
    assert_eq!(ok("STOP_TIMEOUT=4294967295").stop_timeout, u32::MAX);
    assert_eq!(ok("STOP_TIMEOUT=007").stop_timeout, 7);
    for bad in ["-1", "1.5", "5s", "+5", "' 5'"] {
        refused(&format!("STOP_TIMEOUT={bad}"), 1, "not a whole number");
    }
    refused("STOP_TIMEOUT=", 1, "STOP_TIMEOUT: is empty");
    refused("STOP_TIMEOUT=4294967296", 1, "too long");
    refused("STOP_TIMEOUT=(5)", 1, "takes a single value");
}

#[test]
fn session() {
    assert_eq!(ok("SESSION=/bin/sh").session, strs(&["/bin/sh"]));
    assert_eq!(
        ok("SESSION='  /bin/sh   -i '").session,
        strs(&["/bin/sh", "-i"])
    );
    assert_eq!(
        ok("SESSION=(/bin/sh -c 'a  b' '')").session,
        strs(&["/bin/sh", "-c", "a  b", ""])
    );
    refused("SESSION=", 1, "SESSION: the command is empty");
    refused("SESSION=()", 1, "the command is empty");
    refused("SESSION=('' x)", 1, "command name (first element) is empty");
    let e = refused("SESSION=\"sh -c 'echo hi'\"", 1, "contains `'`");
    assert!(e.fix.contains("array"), "{e}");
    refused("SESSION='a\\ b'", 1, "contains `\\`");
    refused("SESSION='a \"b\"'", 1, "contains `\"`");
}

#[test]
fn boot_and_halt() {
    let c = ok("BOOT=\"/etc/init.d/rc 2\"\nHALT=(/etc/init.d/rc 0)");
    assert_eq!(c.boot, Some(strs(&["/etc/init.d/rc", "2"])));
    assert_eq!(c.halt, Some(strs(&["/etc/init.d/rc", "0"])));
    let c = ok("BOOT=\nHALT=()");
    assert_eq!((c.boot, c.halt), (None, None));
    refused("BOOT=\"sh -c 'x'\"", 1, "BOOT: ");
    refused("HALT=(\"\")", 1, "HALT: the command name");
}

#[test]
fn start() {
    assert_eq!(
        ok("START=(ssh cron /usr/sbin/httpd)").start,
        strs(&["ssh", "cron", "/usr/sbin/httpd"])
    );
    assert_eq!(ok("START=\"ssh  cron\"").start, strs(&["ssh", "cron"]));
    assert!(ok("START=").start.is_empty());
    refused("START=(ssh init.d/cron)", 1, "relative path");
    refused("START=(-x)", 1, "not a service name");
    refused("START=(..)", 1, "not a service name");
    refused("START=('a b')", 1, "not a service name");
    refused("START=(ssh '')", 1, "empty");
    refused("START=(\nssh\n\n../x\n)", 4, "relative path");
}

#[test]
fn memory_max() {
    let m = |v: &str| ok(&format!("MEMORY_MAX={v}")).memory_max;
    assert_eq!(m("512M"), Some(512 << 20));
    assert_eq!(m("1g"), Some(1 << 30));
    assert_eq!(m("2T"), Some(2 << 40));
    assert_eq!(m("8192k"), Some(8192 << 10));
    assert_eq!(m("5000000"), Some(5_000_000));
    assert_eq!(m("max"), None);
    assert_eq!(m(""), None);
    refused("MEMORY_MAX=0", 1, "no memory");
    // Accepted once and killed at start with no word: now refused.
    refused("MEMORY_MAX=1", 1, "below the floor of 4M");
    refused("MEMORY_MAX=1M", 1, "below the floor of 4M");
    refused("MEMORY_MAX=4095K", 1, "below the floor of 4M");
    assert_eq!(m("4M"), Some(4 << 20));
    refused("MEMORY_MAX=0G", 1, "no memory");
    for bad in ["12X", "M", "-1", "1.5G", "1 G", "MAX", "1GB"] {
        refused(&format!("MEMORY_MAX='{bad}'"), 1, "is not a size");
    }
    refused("MEMORY_MAX=99999999999T", 1, "too large");
    refused("MEMORY_MAX=99999999999999999999", 1, "too large");
    refused("MEMORY_MAX=(1G)", 1, "takes a single value");
}

#[test]
fn cpu_max() {
    let c = |v: &str| ok(&format!("CPU_MAX='{v}'")).cpu_max;
    assert_eq!(c("50%"), Some("50000 100000".into()));
    assert_eq!(c("200%"), Some("200000 100000".into()));
    assert_eq!(c("1%"), Some("1000 100000".into()));
    assert_eq!(c("20000"), Some("20000 100000".into()));
    assert_eq!(c("20000 50000"), Some("20000 50000".into()));
    assert_eq!(c(" 020000  50000 "), Some("20000 50000".into()));
    assert_eq!(c("max"), None);
    assert_eq!(c("max 100000"), None);
    assert_eq!(c(""), None);
    refused("CPU_MAX=0%", 1, "0% would stop");
    refused("CPU_MAX='500 100000'", 1, "minimum of 1000");
    refused("CPU_MAX='1000 10'", 1, "outside the kernel's");
    refused("CPU_MAX='max 10'", 1, "outside the kernel's");
    refused("CPU_MAX='1000 2000000'", 1, "outside the kernel's");
    refused("CPU_MAX=50.5%", 1, "not a whole percentage");
    refused("CPU_MAX=x%", 1, "not a whole percentage");
    refused("CPU_MAX='1 2 3'", 1, "not a CPU limit");
    refused("CPU_MAX=half", 1, "not a CPU limit");
    refused("CPU_MAX=99999999999999999999%", 1, "not a whole percentage");
    refused("CPU_MAX=999999999999999999%", 1, "too large");
    // Absurd but representable: a typo, refused rather than applied.
    refused("CPU_MAX=200000%", 1, "allows 2000 CPUs");
    refused("CPU_MAX=2000000000", 1, "allows 20000 CPUs");
    refused("CPU_MAX='1025000000 1000000'", 1, "allows 1025 CPUs");
    assert_eq!(c("102400%"), Some("102400000 100000".into()));
}

#[test]
fn pids_max() {
    assert_eq!(ok("PIDS_MAX=100").pids_max, Some(100));
    assert_eq!(ok("PIDS_MAX=max").pids_max, None);
    assert_eq!(ok("PIDS_MAX=").pids_max, None);
    refused("PIDS_MAX=0", 1, "at least 2");
    refused("PIDS_MAX=1", 1, "init and its session");
    assert_eq!(ok("PIDS_MAX=2").pids_max, Some(2));
    refused("PIDS_MAX=lots", 1, "not a number of processes");
    refused("PIDS_MAX=-5", 1, "not a number of processes");
}

#[test]
fn cgroup_parent() {
    let g = |v: &str| ok(&format!("CGROUP_PARENT='{v}'")).cgroup_parent;
    assert_eq!(g("/subhost"), Some("/subhost".into()));
    assert_eq!(g("/a/b.slice/"), Some("/a/b.slice".into()));
    assert_eq!(g(""), None);
    refused("CGROUP_PARENT=/", 1, "root of the cgroup hierarchy");
    refused("CGROUP_PARENT=//", 1, "root of the cgroup hierarchy");
    refused(
        "CGROUP_PARENT=subhost",
        1,
        "not a path from the cgroup root",
    );
    refused("CGROUP_PARENT=/a/../b", 1, "`..`");
    refused("CGROUP_PARENT=/a//b", 1, "empty");
    refused("CGROUP_PARENT=/a/./b", 1, "`.`");
}

#[test]
fn seccomp_keys() {
    let c = ok("SECCOMP=off\nSYSCALLS_ALLOW=(bpf perf_event_open bpf)");
    assert!(!c.seccomp);
    assert_eq!(c.syscalls_allow, strs(&["bpf", "perf_event_open"]));
    assert!(ok("").seccomp);
    refused("SECCOMP=maybe", 1, "neither on nor off");
    refused("SECCOMP=(on)", 1, "single value");
    let e = refused(
        "SYSCALLS_ALLOW=(\nbpf\nnosuch\n)",
        3,
        "\"nosuch\" is not a system call the filter denies",
    );
    assert!(e.fix.contains("open_by_handle_at"), "{e}");
    refused(
        "SYSCALLS_ALLOW=read",
        1,
        "not a system call the filter denies",
    );
}

#[test]
fn capabilities() {
    let c = ok(
        "CAPS_DROP=(sys_time CAP_SYS_MODULE Cap_Net_Raw sys_time)\nCAPS_KEEP=\"SYS_ADMIN  bpf\"",
    );
    assert_eq!(
        c.caps_drop,
        strs(&["CAP_SYS_TIME", "CAP_SYS_MODULE", "CAP_NET_RAW"])
    );
    assert_eq!(c.caps_keep, strs(&["CAP_SYS_ADMIN", "CAP_BPF"]));
    let e = refused(
        "CAPS_DROP=(\nSYS_TIME\nSYS_FOO\n)",
        3,
        "\"SYS_FOO\" is not a Linux capability",
    );
    assert!(e.fix.contains("CHECKPOINT_RESTORE"), "{e}");
    refused("CAPS_KEEP=CAP_", 1, "not a Linux capability");
    refused(
        "CAPS_DROP=(SYS_TIME)\nHOSTNAME=h\nCAPS_KEEP=(cap_sys_time)\n",
        3,
        "CAP_SYS_TIME is in both CAPS_DROP (line 1) and CAPS_KEEP (line 3)",
    );
    // The later of two assignments decides, so an overridden overlap is fine.
    ok("CAPS_DROP=(SYS_TIME)\nCAPS_KEEP=(SYS_TIME)\nCAPS_KEEP=()\n");
}

#[test]
fn userns() {
    use crate::userns::{Range, Requested, Setting};
    assert_eq!(ok("USERNS=no").userns, None);
    assert_eq!(ok("USERNS=").userns, None);
    assert_eq!(
        ok("HOSTNAME=h\nUSERNS=pick").userns,
        Some(Requested {
            setting: Setting::Pick,
            line: 2
        })
    );
    let fixed = |base, count| {
        Some(Requested {
            setting: Setting::Fixed(Range { base, count }),
            line: 1,
        })
    };
    assert_eq!(ok("USERNS=1000000").userns, fixed(1_000_000, 65536));
    assert_eq!(ok("USERNS='200000:1000'").userns, fixed(200_000, 1000));
    let e = refused(
        "\nUSERNS=\"yes please\"",
        2,
        "is not no, pick, BASE or BASE:COUNT",
    );
    assert!(e.fix.contains("USERNS=pick"), "{e}");
    refused("USERNS=yes please", 1, "\"yes\" is not no, pick");
    refused("USERNS=(pick)", 1, "takes a single value");
    let e = refused("USERNS=1000", 1, "overlaps the host's own users");
    assert!(e.fix.contains("at least 65536"), "{e}");
    refused("USERNS=100000:0", 1, "COUNT");
}

#[test]
fn capability_table() {
    assert_eq!(capability_number("CAP_CHOWN"), Some(0));
    assert_eq!(capability_number("CAP_SYS_ADMIN"), Some(21));
    assert_eq!(capability_number("CAP_SYS_TIME"), Some(25));
    assert_eq!(capability_number("CAP_CHECKPOINT_RESTORE"), Some(40));
    assert_eq!(capability_number("SYS_TIME"), None);
    let mut seen = std::collections::HashSet::new();
    for c in CAPABILITIES {
        assert!(c.starts_with("CAP_") && c == c.to_ascii_uppercase(), "{c}");
        assert!(seen.insert(c), "duplicate {c}");
    }
}

#[test]
fn non_utf8_base_only_matters_when_expanded() {
    use std::os::unix::ffi::OsStrExt;
    let base = Path::new(std::ffi::OsStr::from_bytes(b"/s\xff"));
    assert!(parse(Path::new(FILE), "HOSTNAME=$SUB", "web", base).is_ok());
    let e = parse(Path::new(FILE), "LOWER=$SUBHOST/x", "web", base).unwrap_err();
    assert!(e.to_string().contains("not valid UTF-8"), "{e}");
}

// ---- load ----

/// A temp dir removed on drop, even when the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("subhost-test-config-{tag}-{}", std::process::id()));
        let _ = crate::files::tree::remove_tree_mount_free(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = crate::files::tree::remove_tree_mount_free(&self.0);
    }
}

#[test]
fn load_missing_file_gives_defaults() {
    let t = TempDir::new("missing");
    let c = load(&t.0.join("config"), "web", &t.0).unwrap();
    assert_eq!(c, Config::defaults("web"));
}

#[test]
fn load_reads_and_expands() {
    let t = TempDir::new("read");
    let file = t.0.join("config");
    std::fs::write(&file, "LOWER=$SUBHOST/base\nHOSTNAME=$SUB-x\n").unwrap();
    let c = load(&file, "web", &t.0).unwrap();
    assert_eq!(c.lower, vec![t.0.join("base")]);
    assert_eq!(c.hostname, "web-x");
    std::fs::write(&file, "HOSTNAME=a\nBOOT=$(x)\n").unwrap();
    let e = load(&file, "web", &t.0).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:2: ", file.display())), "{e}");
}

#[test]
fn load_unreadable_file_names_it() {
    let t = TempDir::new("unreadable");
    // Root reads any mode, so a directory stands in for an unreadable file.
    let file = t.0.join("config");
    std::fs::create_dir(&file).unwrap();
    let e = load(&file, "web", &t.0).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "config {} is a directory, not a regular file: replace it",
            file.display()
        )),
        "{e}"
    );
    // A dangling symlink is a broken config, not a missing one.
    let link = t.0.join("link");
    std::os::unix::fs::symlink(t.0.join("nowhere"), &link).unwrap();
    let e = load(&link, "web", &t.0).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("config {} is a symbolic link", link.display())),
        "{e}"
    );
}

#[test]
fn load_never_quotes_a_file_that_is_not_the_config() {
    let t = TempDir::new("notours");
    let secret = t.0.join("secret");
    std::fs::write(&secret, "s3cret:line one\n").unwrap();
    let link = t.0.join("config");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let e = format!("{:#}", load(&link, "web", &t.0).unwrap_err());
    assert!(!e.contains("s3cret"), "{e}");
    assert!(
        e.contains(&format!("is a symbolic link to {}", secret.display())),
        "{e}"
    );
    // A regular file of another owner than the directory's.
    std::fs::remove_file(&link).unwrap();
    std::fs::write(&link, "s3cret:line one\n").unwrap();
    std::os::unix::fs::chown(&link, Some(12345), None).unwrap();
    let e = format!("{:#}", load(&link, "web", &t.0).unwrap_err());
    assert!(!e.contains("s3cret"), "{e}");
    assert!(e.contains("owned by uid 12345, not by the owner of"), "{e}");
}

#[test]
fn load_non_utf8_names_the_line() {
    let t = TempDir::new("utf8");
    let file = t.0.join("config");
    std::fs::write(&file, b"HOSTNAME=a\n# caf\xe9\n").unwrap();
    let e = load(&file, "web", &t.0).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:2: ", file.display())), "{e}");
    assert!(e.contains("UTF-8"), "{e}");
}

// ---- agreement with bash ----

/// What bash makes of `text` when sourced: each key's elements (a plain
/// value is one element).
fn bash_values(text: &str, keys: &[&str]) -> HashMap<String, Vec<String>> {
    let t = TempDir::new(&format!("bash{}", text.len()));
    let file = t.0.join("config");
    std::fs::write(&file, text).unwrap();
    let script = r#"SUB=web; SUBHOST=/s; source "$1" || exit 9
        for k in "${@:2}"; do r="$k[@]"; printf '%s\037' "$k" "${!r}"; printf '\036'; done"#;
    let out = std::process::Command::new("timeout")
        .args(["10", "bash", "--noprofile", "--norc", "-c", script, "bash"])
        .arg(&file)
        .args(keys)
        .env_clear()
        .output()
        .expect("run bash");
    assert!(out.status.success(), "bash failed on {text:?}: {:?}", out);
    assert!(
        out.stderr.is_empty(),
        "bash complained about {text:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .split('\u{1e}')
        .filter(|r| !r.is_empty())
        .map(|r| {
            let mut parts: Vec<String> = r.split('\u{1f}').map(str::to_string).collect();
            parts.pop(); // after the last separator
            let key = parts.remove(0);
            (key, parts)
        })
        .collect()
}

#[test]
fn accepted_constructs_mean_what_they_mean_to_bash() {
    let corpus = [
        "LOWER=\"/a b\":'/c d'\nHOSTNAME=a\"b-c\"'d'\nSESSION=/bin/sh\" -c\"' x'\n",
        "LOWER=\"/a\\\"b\\\\c\\$d\\e\\`f\"\nBOOT=(a\\ b \\* \\'q)\nSHARE=(/a\\ b\\$c\\\\d)\n",
        "LOWER=$SUBHOST/base:${SUBHOST}/$SUB\nHOSTNAME=$SUB-1\nSESSION=\"/bin/echo $HOSTNAME\"\nHALT=/$SUB/$SUBHOST\n",
        "LOWER=/a$\nHALT=\"/a$ b\"\nBOOT=(\"$'x'\" a$/b '$SUB')\n",
        "export LOWER=/\nexport HOSTNAME=h STOP_TIMEOUT=3\nexport LOWER\n",
        "HOSTNAME=h # trailing\nLOWER=/a#b\nSHARE=(/x) # after\nBOOT=#x\nHALT=(a#b #c\n)\n",
        "LOWER=/a:\\\n/b\nHOSTNAME=h \\\n  STOP_TIMEOUT=2\nLOW\\\nER=/x\nSESSION=\"/a\\\nb\"\nBOOT=('a\\\nb')\n# note \\\nHALT=h\n",
        "BRIDGES=(\n  br0 # first\n  br1=02:00:00:00:01:01\n\n  =\n  \"\"\n)\nSESSION=(/bin/sh -c \"echo hi there\")\nSHARE=( \n )\n",
        "HALT=\"/sbin/stop  now\"\nBOOT=($HALT extra \"$HALT\" x$HALT)\n",
        "HALT=\nBOOT=(/x $HALT \"$HALT\" ''$HALT)\n",
        "LOWER=/a*:/a?[b]{c}\nBOOT=(ls \"*\" '?' \\[)\nHALT=/a~b\n",
        "HOSTNAME=a\nHOSTNAME=b\nBRIDGES=(a b)\nBRIDGES=(c)\nSESSION=/bin/sh\nSESSION=(/bin/zsh -i)\n",
        "CPU_MAX='50%'\nMEMORY_MAX=512M\nCAPS_DROP=(sys_time)\nCGROUP_PARENT=/a/b/\nSTART=\"ssh cron\"\n",
        "HOSTNAME=''box\"\"\nLOWER=/a\\\n",
        "export SHARE=(/a /b:/c)\nHOSTNAME=h BOOT=\"/x $HOSTNAME\" HALT=$BOOT\n",
        "SESSION=(\"$SUB\"'$SUB'$SUB\\$SUB)\nLOWER=/${SUB}_x:/$SUB-x\n",
        "HALT=/a{b,c}\nBOOT=(if then \\#x a=b a$ \"${SUB}\"$SUB)\nSESSION=\"a\nb\"\n",
        "BOOT=(a # )\n b)\nSHARE=(\\\n/a \\\n/b)\nLOWER=/x\\",
        "\tHOSTNAME=h\tSTOP_TIMEOUT=1\t#\nLOWER=/caf\u{e9}:/\u{65e5}\n",
    ];
    for text in corpus {
        let (_, vars) = read(Path::new(FILE), text, "web", Path::new("/s"))
            .unwrap_or_else(|e| panic!("{text:?} was refused: {e}"));
        let ours: HashMap<String, Vec<String>> = vars
            .iter()
            .map(|(k, v)| {
                let elems = match &v.value {
                    Value::Scalar(s) => vec![s.clone()],
                    Value::Array(e) => e.iter().map(|e| e.text.clone()).collect(),
                };
                (k.clone(), elems)
            })
            .collect();
        let keys: Vec<&str> = ours.keys().map(String::as_str).collect();
        assert_eq!(ours, bash_values(text, &keys), "{text:?}");
    }
}

#[test]
fn addresses_and_gateways() {
    let c = ok("BRIDGES=(br0 br1)\nADDRESS=(10.0.0.5/24 fd00::5/64\n eth1:192.0.2.7/24)\nGATEWAY=10.0.0.1\nGATEWAY6=fd00::1\n");
    let got: Vec<(usize, String, usize)> = c
        .addresses
        .iter()
        .map(|a| (a.cable, a.address.to_string(), a.line))
        .collect();
    assert_eq!(
        got,
        [
            (0, "10.0.0.5/24".into(), 2),
            (0, "fd00::5/64".into(), 2),
            (1, "192.0.2.7/24".into(), 3)
        ]
    );
    let a = c.addressing();
    assert_eq!(a.addresses[2].0, "eth1");
    assert_eq!(
        a.steps("web"),
        [
            "ip -n web addr add 10.0.0.5/24 dev eth0",
            "ip -n web addr add fd00::5/64 dev eth0",
            "ip -n web addr add 192.0.2.7/24 dev eth1",
            "ip -n web route add default via 10.0.0.1",
            "ip -n web -6 route add default via fd00::1",
        ]
    );
    // BRIDGES may come after ADDRESS, as any later assignment.
    ok("ADDRESS=(10.0.0.5/24)\nBRIDGES=(br0)\n");
    // /32 and /128 are fine; a gateway then cannot be routed.
    ok("BRIDGES=(br0)\nADDRESS=(10.0.0.5/32 fd00::5/128)\n");
}

#[test]
fn bad_addresses_and_gateways_are_placed_at_their_line() {
    let b = "BRIDGES=(br0)\n";
    refused(&format!("{b}ADDRESS=(10.0.0.5)"), 2, "has no prefix length");
    refused(
        &format!("{b}ADDRESS=(10.0.0/24)"),
        2,
        "is not an IP address",
    );
    refused(&format!("{b}ADDRESS=(web/24)"), 2, "is not an IP address");
    refused(
        &format!("{b}ADDRESS=(10.0.0.5/33)"),
        2,
        "out of range: 0 to 32",
    );
    refused(
        &format!("{b}ADDRESS=(fd00::5/129)"),
        2,
        "out of range: 0 to 128",
    );
    refused(&format!("{b}ADDRESS=(10.0.0.5/-1)"), 2, "out of range");
    refused(&format!("{b}ADDRESS=(10.0.0.5/+8)"), 2, "out of range");
    refused(
        &format!("{b}ADDRESS=(224.0.0.1/4)"),
        2,
        "no address an interface can have",
    );
    refused(
        &format!("{b}ADDRESS=(eth01:10.0.0.5/24)"),
        2,
        "no cable name",
    );
    refused(
        &format!("{b}ADDRESS=(\n10.0.0.5/24\neth3:10.0.1.5/24)"),
        4,
        "is for eth3, but BRIDGES has one cable",
    );
    refused("ADDRESS=(10.0.0.5/24)", 1, "BRIDGES has no cable");
    refused(
        &format!("{b}ADDRESS=(10.0.0.5/24 10.0.0.5/16)"),
        2,
        "given twice",
    );
    refused(&format!("{b}ADDRESS=10.0.0.5/24"), 2, "takes an array");
    refused(
        &format!("{b}ADDRESS=(10.0.0.5/24)\nGATEWAY=10.0.1.1"),
        3,
        "outside every cable's IPv4 subnet",
    );
    refused(
        &format!("{b}ADDRESS=(10.0.0.5/24)\nGATEWAY6=fd00::1"),
        3,
        "outside every cable's IPv6 subnet",
    );
    refused(
        &format!("{b}GATEWAY=10.0.0.1"),
        2,
        "outside every cable's IPv4 subnet",
    );
    refused(
        &format!("{b}ADDRESS=(10.0.0.5/24)\nGATEWAY=10.0.0.5"),
        3,
        "own ADDRESS",
    );
    refused(&format!("{b}GATEWAY=fd00::1"), 2, "is an IPv6 address");
    refused(&format!("{b}GATEWAY6=10.0.0.1"), 2, "is an IPv4 address");
    refused(
        &format!("{b}GATEWAY=10.0.0.1/24"),
        2,
        "is not an IP address",
    );
}

// ---- DNS, SEARCH, HOSTS ----

#[test]
fn names_keys() {
    let c = ok("DNS=(10.0.0.1 fd00::1)\nSEARCH=\"example.org lan.\"\nHOSTS=(db=10.0.0.6)\n");
    assert_eq!(
        c.dns,
        vec![
            "10.0.0.1".parse::<std::net::IpAddr>().unwrap(),
            "fd00::1".parse().unwrap()
        ]
    );
    assert_eq!(c.search, ["example.org", "lan."]);
    assert_eq!(
        c.hosts,
        vec![("db".to_string(), "10.0.0.6".parse().unwrap())]
    );
}

#[test]
fn names_keys_refuse_bad_values_at_their_line() {
    for (text, line, what) in [
        ("DNS=(10.0.0.1 dns.example)\n", 1, "not an IP address"),
        (
            "HOSTNAME=a\nDNS=(\n 10.0.0.1\n 10.0.0.300\n)\n",
            4,
            "not an IP address",
        ),
        ("DNS=(1.1.1.1 1.0.0.1 8.8.8.8 9.9.9.9)\n", 1, "at most 3"),
        ("SEARCH=(exa_mple.org 'a b')\n", 1, "contains ' '"),
        ("SEARCH=(.org)\n", 1, "empty label"),
        ("HOSTS=(db)\n", 1, "not NAME=ADDRESS"),
        ("HOSTS=(db=10.0.0)\n", 1, "not an IP address"),
        ("HOSTS=(=10.0.0.1)\n", 1, "name is empty"),
        ("HOSTS=('d b=10.0.0.1')\n", 1, "contains ' '"),
    ] {
        refused(text, line, what);
    }
}

#[test]
fn log_max() {
    let m = |v: &str| ok(&format!("LOG_MAX={v}")).log_max;
    assert_eq!(Config::defaults("x").log_max, 10 << 20);
    assert_eq!(m("10M"), 10 << 20);
    assert_eq!(m("64K"), 64 << 10);
    assert_eq!(m("1g"), 1 << 30);
    assert_eq!(m("65536"), 65536);
    refused("LOG_MAX=63K", 1, "below the minimum of 64K");
    refused("LOG_MAX=0", 1, "below the minimum of 64K");
    refused("\nLOG_MAX=1000", 2, "below the minimum of 64K");
    for bad in ["", "M", "1.5M", "10MB", "-1", "1T"] {
        refused(&format!("LOG_MAX='{bad}'"), 1, "is not a size");
    }
    refused("LOG_MAX=99999999999999G", 1, "too large");
}

#[test]
fn services_in_declaration_order_with_their_keys() {
    let c = ok(
        "HEALTH_zz=(true)\nSERVICE_web=(/usr/sbin/nginx -g 'daemon off;')\n\
                RESTART_db=no\nSERVICE_zz=(x)\n\
                SERVICE_db='postgres -D /data'\n\
                HEALTH_web=(curl -fsS http://127.0.0.1/)\n\
                RESTART=always\nHEALTH_INTERVAL=5\nHEALTH_TIMEOUT=2\nHEALTH_RETRIES=4\n",
    );
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    // Each in the place of its SERVICE_ key, whatever named it above.
    assert_eq!(names, ["web", "zz", "db"]);
    assert_eq!(
        c.services[0].argv,
        strs(&["/usr/sbin/nginx", "-g", "daemon off;"])
    );
    assert_eq!(c.services[0].restart, None);
    assert_eq!(
        c.services[0].health,
        Some(strs(&["curl", "-fsS", "http://127.0.0.1/"]))
    );
    assert_eq!(c.services[2].argv, strs(&["postgres", "-D", "/data"]));
    assert_eq!(c.services[2].restart, Some(super::Restart::No));
    assert_eq!(c.services[1].health, Some(strs(&["true"])));
    assert_eq!(c.restart, super::Restart::Always);
    assert_eq!(
        (c.health_interval, c.health_timeout, c.health_retries),
        (5, 2, 4)
    );
}

#[test]
fn bad_services_are_refused_at_their_line() {
    refused(
        "HOSTNAME=a\nSERVICE_Web=(x)\n",
        2,
        "\"Web\" is not a service name",
    );
    refused("SERVICE_a-b=(x)\n", 1, "");
    refused(
        &format!("SERVICE_{}=(x)\n", "a".repeat(33)),
        1,
        "is not a service name",
    );
    refused("SERVICE_web=()\n", 1, "the command is empty");
    refused("SERVICE_web=\n", 1, "the command is empty");
    refused(
        "HEALTH_web=''\nSERVICE_web=(x)\n",
        1,
        "the command is empty",
    );
    refused(
        "RESTART=sometimes\n",
        1,
        "\"sometimes\" is not a restart policy",
    );
    refused(
        "SERVICE_web=(x)\nRESTART_web=never\n",
        2,
        "not a restart policy",
    );
    refused("HEALTH_INTERVAL=0\n", 1, "0 seconds");
    refused("HEALTH_TIMEOUT=0\n", 1, "0 seconds");
    refused("HEALTH_RETRIES=0\n", 1, "not a count above 0");
    refused(
        "SERVICE_web=(x)\n\nRESTART_wbe=always\n",
        3,
        "RESTART_wbe: there is no SERVICE_wbe",
    );
    refused("HEALTH_db=(true)\n", 1, "HEALTH_db: there is no SERVICE_db");
    // A prefix alone, or what merely looks like one, is no family member.
    refused("SERVICE_=(x)\n", 1, "unknown key SERVICE_");
    refused("SERVICES=(x)\n", 1, "unknown key SERVICES");
}

#[test]
fn published_ports_are_read_with_their_lines() {
    let c = ok("BRIDGES=(br0)\nADDRESS=(10.0.0.5/24 fd00::5/64)\nPUBLISH=(tcp:8080:80\n udp:5353:53 tcp:127.0.0.1:2222:22 'tcp:[::]:8443:443')\n");
    let got: Vec<(String, usize)> = c.publish.iter().map(|(p, l)| (p.to_string(), *l)).collect();
    assert_eq!(
        got,
        [
            ("tcp:8080:80".to_string(), 3),
            ("udp:5353:53".into(), 4),
            ("tcp:127.0.0.1:2222:22".into(), 4),
            ("tcp:[::]:8443:443".into(), 4),
        ]
    );
}

#[test]
fn bad_published_ports_are_placed_at_their_line() {
    let b = "BRIDGES=(br0)\nADDRESS=(10.0.0.5/24)\n";
    refused(
        &format!("{b}PUBLISH=(tcp:0:80)"),
        3,
        "out of range: 1 to 65535",
    );
    refused(&format!("{b}PUBLISH=(tcp:8080:\n70000)"), 3, "out of range");
    refused(
        &format!("{b}PUBLISH=(tcp:80:80\n sctp:81:81)"),
        4,
        "neither tcp nor udp",
    );
    refused(
        &format!("{b}PUBLISH=(tcp:10.0.0.300:80:80)"),
        3,
        "is not an IP address",
    );
    refused(
        &format!("{b}PUBLISH=(tcp:8080:80\n tcp:8080:81)"),
        4,
        "takes the host port of tcp:8080:80 (line 3) again",
    );
    // A wildcard and a specific address overlap.
    refused(
        &format!("{b}PUBLISH=(tcp:192.0.2.1:80:80\n tcp:0.0.0.0:80:81)"),
        4,
        "again",
    );
    ok(&format!(
        "{b}PUBLISH=(tcp:8080:80 udp:8080:80 'tcp:[::1]:8081:80')"
    ));
    refused("PUBLISH=(tcp:8080:80)", 1, "PUBLISH needs an ADDRESS");
    refused(
        &format!("{b}PUBLISH=('tcp:[::]:80:80')"),
        3,
        "PUBLISH needs an ADDRESS",
    );
    refused("PUBLISH=tcp:8080:80", 1, "takes an array");
}

#[test]
fn listen_sockets_are_read_in_order_for_their_service() {
    use crate::activator::sockets::Socket;
    let c = ok("SERVICE_web=(x)\nLISTEN_web=(tcp:8080 'tcp:[::]:8443'\n udp:127.0.0.1:5353 unix:/run/web.sock)\nIDLE=300\n");
    assert_eq!(c.listen.len(), 1);
    assert_eq!(c.listen[0].service, "web");
    assert_eq!(c.listen[0].line, 2);
    assert_eq!(
        c.listen[0].sockets,
        vec![
            Socket::Tcp("0.0.0.0:8080".parse().unwrap()),
            Socket::Tcp("[::]:8443".parse().unwrap()),
            Socket::Udp("127.0.0.1:5353".parse().unwrap()),
            Socket::Unix("/run/web.sock".into()),
        ]
    );
    assert_eq!(c.idle, Some(300));
}

#[test]
fn listen_and_idle_mistakes_name_their_line() {
    refused(
        "SERVICE_web=(x)\nLISTEN_db=(tcp:5432)\n",
        2,
        "LISTEN_db: there is no SERVICE_db",
    );
    refused(
        "SERVICE_web=(x)\nLISTEN_web=(sctp:80)\n",
        2,
        "unknown protocol",
    );
    refused("SERVICE_web=(x)\nLISTEN_web=(tcp:0)\n", 2, "port 0");
    refused(
        "SERVICE_web=(x)\nLISTEN_web=(unix:web.sock)\n",
        2,
        "not absolute",
    );
    refused("SERVICE_web=(x)\nLISTEN_web=tcp:80\n", 2, "takes an array");
    refused("SERVICE_web=(x)\nLISTEN_web=()\n", 2, "declares no socket");
    refused(
        "SERVICE_web=(x)\nLISTEN_web=(tcp:80 tcp:80)\n",
        2,
        "declared twice",
    );
    refused(
        "SERVICE_web=(x)\nLISTEN_web=(tcp:80)\nIDLE=0\n",
        3,
        "0 seconds",
    );
    refused(
        "SERVICE_web=(x)\nLISTEN_web=(tcp:80)\nIDLE=-5\n",
        3,
        "not a whole number",
    );
    refused("IDLE=300\n", 1, "IDLE without a LISTEN_<name>");
}
