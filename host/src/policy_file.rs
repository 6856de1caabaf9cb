//! Policy files: a guest's rules and limits in TOML, equivalent to the `usocket run` flags.
//!
//! ```toml
//! dry_run = false                      # optional: report would-deny decisions, enforce nothing
//! allow = ["connect=*.example.com:443", "resolve=localhost", "connect,send=127.0.0.1:8000-8010"]
//! deny  = ["connect=metadata:*", "connect=private:*"]
//!
//! [limits]                             # optional; every key optional
//! max_sockets = 16                     # sockets open at once
//! max_buffered = 16777216              # bytes the host queues for one socket
//! max_bytes_sent = 10485760            # in total, over the guest's life
//! max_bytes_received = 10485760
//! rate = 1048576                       # bytes per second, each direction
//! pin_ttl_secs = 300                   # longest life of a name -> address pin
//! ```
//!
//! `allow` and `deny` hold rule texts, exactly as `--allow` and `--deny` take them (one text
//! may name several uses: `bind,listen=127.0.0.1:8000`). Keys not listed here are errors, so a
//! misspelt key cannot silently leave a guest with more access than intended. Every error
//! names the file, the line and the column, and says how to fix it.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use cap_std::AmbientAuthority;
use serde::Deserialize;
use toml::Spanned;

use crate::ctx::Limits;
use crate::policy::{Policy, parse_rules};

/// A parsed policy file: the policy and the guest limits it sets (defaults for keys it omits).
#[derive(Debug)]
pub struct PolicyFile {
    /// The allow and deny rules, and the dry-run switch.
    pub policy: Policy,
    /// [`Limits::default`] with the file's `[limits]` keys applied.
    pub limits: Limits,
}

/// Why a policy file was refused: where (file, line, column) and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyFileError {
    origin: String,
    /// 1-based line and column, and the text of that line, when the problem has a place.
    place: Option<Place>,
    message: String,
    fix: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Place {
    line: usize,
    column: usize,
    source_line: String,
    width: usize,
}

impl PolicyFileError {
    /// The file (or other origin) the error is in, as given to [`load`] or [`parse`].
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The 1-based line of the problem, if it has one (an unreadable file has none).
    pub fn line(&self) -> Option<usize> {
        self.place.as_ref().map(|p| p.line)
    }

    /// The 1-based column (in characters) of the problem, if it has one.
    pub fn column(&self) -> Option<usize> {
        self.place.as_ref().map(|p| p.column)
    }

    /// What is wrong, without the place.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn at(origin: &str, text: &str, span: Option<Range<usize>>, message: String) -> Self {
        PolicyFileError {
            origin: origin.to_string(),
            place: span.map(|span| place(text, span)),
            message,
            fix: None,
        }
    }

    fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

impl fmt::Display for PolicyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.place {
            Some(p) => write!(
                f,
                "{}:{}:{}: {}",
                self.origin, p.line, p.column, self.message
            )?,
            None => write!(f, "{}: {}", self.origin, self.message)?,
        }
        if let Some(p) = &self.place {
            let gutter = p.line.to_string().len();
            write!(
                f,
                "\n {:gutter$} |\n {} | {}\n {:gutter$} | {:pad$}{}",
                "",
                p.line,
                p.source_line,
                "",
                "",
                "^".repeat(p.width.max(1)),
                pad = p.column - 1,
            )?;
        }
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyFileError {}

/// The line, column and underline width of a byte span of `text`.
fn place(text: &str, span: Range<usize>) -> Place {
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let source_line = text[line_start..line_end].trim_end_matches('\r');
    let end = floor_char_boundary(text, span.end.clamp(start, line_end));
    Place {
        line: text[..start].matches('\n').count() + 1,
        column: text[line_start..start].chars().count() + 1,
        source_line: source_line.replace('\t', " "),
        width: text[start..end].chars().count(),
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The file as TOML sees it; the rules and limits are checked afterwards, with their spans.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_sockets: Option<usize>,
    max_buffered: Option<Spanned<usize>>,
    max_bytes_sent: Option<u64>,
    max_bytes_received: Option<u64>,
    rate: Option<Spanned<u64>>,
    pin_ttl_secs: Option<Spanned<u64>>,
}

const KNOWN_KEYS: &str = "at the top level dry_run, allow, deny and the [limits] table; in \
     [limits] max_sockets, max_buffered, max_bytes_sent, max_bytes_received, rate, pin_ttl_secs";

/// Reads and parses the policy file at `path` (see [`parse`]).
///
/// # Ambient Authority
///
/// The file's allow rules grant the guest access to the host's network from the ambient
/// authority of the host process, hence the [`AmbientAuthority`] token.
pub fn load(path: &Path, ambient: AmbientAuthority) -> Result<PolicyFile, PolicyFileError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| PolicyFileError {
        origin: origin.clone(),
        place: None,
        message: format!("cannot read the policy file: {e}"),
        fix: Some("give the path of a readable UTF-8 TOML file".into()),
    })?;
    parse(&text, &origin, ambient)
}

/// Parses a policy file's text; `origin` names it in errors (usually its path).
///
/// # Ambient Authority
///
/// As [`load`]: the allow rules widen the guest's access from the host's ambient authority.
pub fn parse(
    text: &str,
    origin: &str,
    ambient: AmbientAuthority,
) -> Result<PolicyFile, PolicyFileError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| toml_error(text, origin, &e))?;

    let mut policy = Policy::builder().dry_run(raw.dry_run);
    for (list, is_allow) in [(&raw.allow, true), (&raw.deny, false)] {
        for entry in list {
            let rules = parse_rules(entry.get_ref()).map_err(|e| {
                let key = if is_allow { "allow" } else { "deny" };
                PolicyFileError::at(origin, text, Some(entry.span()), e.to_string()).with_fix(
                    format!(
                        "correct this `{key}` entry (rule grammar: `usocket run --help`; \
                         checked examples: examples/policies/)"
                    ),
                )
            })?;
            for rule in rules {
                policy = if is_allow {
                    policy.allow(rule, ambient)
                } else {
                    policy.deny(rule)
                };
            }
        }
    }

    let raw_limits = raw.limits;
    let mut limits = Limits::default();
    let at_least_one = |span: Range<usize>, key: &str, why: &str| {
        PolicyFileError::at(origin, text, Some(span), format!("`{key} = 0` {why}")).with_fix(
            format!("give {key} a value of at least 1, or leave the key out for the default"),
        )
    };
    if let Some(n) = raw_limits.max_sockets {
        limits.max_sockets = n;
    }
    if let Some(n) = raw_limits.max_buffered {
        if *n.get_ref() == 0 {
            return Err(at_least_one(
                n.span(),
                "max_buffered",
                "would fail every read with ENOBUFS",
            ));
        }
        limits.max_buffered = n.into_inner();
    }
    if let Some(n) = raw_limits.max_bytes_sent {
        limits.max_bytes_sent = Some(n);
    }
    if let Some(n) = raw_limits.max_bytes_received {
        limits.max_bytes_received = Some(n);
    }
    if let Some(n) = raw_limits.rate {
        if *n.get_ref() == 0 {
            return Err(at_least_one(
                n.span(),
                "rate",
                "would stall all traffic forever (rate is bytes per second)",
            ));
        }
        limits.rate = Some(n.into_inner());
    }
    if let Some(n) = raw_limits.pin_ttl_secs {
        if *n.get_ref() == 0 {
            return Err(at_least_one(
                n.span(),
                "pin_ttl_secs",
                "would expire every name pin at once, so no granted name could be connected to",
            ));
        }
        limits.pin_ttl = Duration::from_secs(n.into_inner());
    }

    Ok(PolicyFile {
        policy: policy.build(),
        limits,
    })
}

/// A TOML syntax or type error, placed by toml's span, with a fix for the common cases.
fn toml_error(text: &str, origin: &str, e: &toml::de::Error) -> PolicyFileError {
    let message = e.message().trim_end().to_string();
    let fix = if message.contains("unknown field") {
        format!("remove or correct the key; the known keys are {KNOWN_KEYS}")
    } else if message.contains("duplicate key") {
        "give each key once: remove one of the two".to_string()
    } else if message.contains("invalid type") || message.contains("invalid value") {
        "allow and deny are lists of rule strings (allow = [\"connect=127.0.0.1:8080\"]), \
         dry_run is true or false, and limits are whole numbers of at least 0"
            .to_string()
    } else {
        "fix the TOML syntax here (strings in double quotes, lists in [ ], one key = value a line)"
            .to_string()
    };
    PolicyFileError::at(origin, text, e.span(), message).with_fix(fix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    fn parse_ok(text: &str) -> PolicyFile {
        parse(text, "test.toml", ambient_authority()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err(text: &str) -> PolicyFileError {
        match parse(text, "test.toml", ambient_authority()) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    fn texts(rules: &[crate::policy::Rule]) -> Vec<String> {
        rules.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_full_file_sets_rules_dry_run_and_limits() {
        let file = parse_ok(
            r#"
# comment
dry_run = true
allow = [
    "connect=127.0.0.1:8000-8010",
    "resolve=localhost",
]
deny = ["connect=127.0.0.1:8005"]

[limits]
max_sockets = 16
max_buffered = 65536
max_bytes_sent = 10485760
max_bytes_received = 2048
rate = 1048576
pin_ttl_secs = 300
"#,
        );
        assert!(file.policy.is_dry_run());
        assert_eq!(
            texts(file.policy.allowed()),
            ["connect=127.0.0.1:8000-8010", "resolve=localhost"]
        );
        assert_eq!(texts(file.policy.denied()), ["connect=127.0.0.1:8005"]);
        let l = &file.limits;
        assert_eq!(l.max_sockets, 16);
        assert_eq!(l.max_buffered, 65536);
        assert_eq!(l.max_bytes_sent, Some(10_485_760));
        assert_eq!(l.max_bytes_received, Some(2048));
        assert_eq!(l.rate, Some(1_048_576));
        assert_eq!(l.pin_ttl, Duration::from_secs(300));
    }

    #[test]
    fn an_empty_file_denies_everything_with_default_limits() {
        let file = parse_ok("");
        assert!(file.policy.allowed().is_empty() && file.policy.denied().is_empty());
        assert!(!file.policy.is_dry_run());
        let (l, d) = (&file.limits, Limits::default());
        assert_eq!(
            (l.max_sockets, l.max_buffered, l.max_bytes_sent, l.rate),
            (d.max_sockets, d.max_buffered, d.max_bytes_sent, d.rate)
        );
        assert_eq!(l.pin_ttl, d.pin_ttl);
    }

    #[test]
    fn one_text_may_name_several_uses() {
        let file = parse_ok(r#"allow = ["bind,listen=127.0.0.1:8000"]"#);
        assert_eq!(file.policy.allowed().len(), 2);
    }

    #[test]
    fn the_examples_parse() {
        for (name, text) in [
            (
                "web-client.toml",
                include_str!("../../examples/policies/web-client.toml"),
            ),
            (
                "local-server.toml",
                include_str!("../../examples/policies/local-server.toml"),
            ),
        ] {
            let file = parse(text, name, ambient_authority()).unwrap_or_else(|e| panic!("{e}"));
            assert!(!file.policy.allowed().is_empty(), "{name}");
            assert!(!file.policy.is_dry_run(), "{name}");
        }
    }

    #[test]
    fn a_bad_rule_is_placed_on_its_own_line() {
        let text = "allow = [\n  \"resolve=localhost\",\n  \"connect=::1:80\",\n]\n";
        let e = parse_err(text);
        assert_eq!((e.line(), e.column()), (Some(3), Some(3)));
        assert_eq!(e.origin(), "test.toml");
        assert!(e.message().contains("bad rule `connect=::1:80`"), "{e}");
        assert!(e.message().contains("brackets"), "{e}");
        let shown = e.to_string();
        assert!(shown.starts_with("test.toml:3:3: bad rule"), "{shown}");
        assert!(shown.contains(" 3 |   \"connect=::1:80\","), "{shown}");
        assert!(shown.contains("^^^^^^^^^^^^^^^^"), "{shown}");
        assert!(shown.contains("fix: correct this `allow` entry"), "{shown}");

        // The same in a deny list on one line: the column picks the entry.
        let e = parse_err("deny = [\"connect=127.0.0.1:*\", \"open=1.2.3.4:80\"]\n");
        assert_eq!((e.line(), e.column()), (Some(1), Some(32)));
        assert!(e.to_string().contains("correct this `deny` entry"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = parse_err("dry_run = false\nalow = [\"connect=127.0.0.1:80\"]\n");
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(e.message().contains("unknown field `alow`"), "{e}");
        assert!(e.to_string().contains("the known keys are"), "{e}");

        let e = parse_err("[limits]\nmax_sockets = 4\nmax_socket = 5\n");
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(e.message().contains("unknown field `max_socket`"), "{e}");

        let e = parse_err("[limit]\nmax_sockets = 4\n");
        assert_eq!(e.line(), Some(1), "{e}");
    }

    #[test]
    fn wrong_types_are_errors() {
        for (text, line) in [
            ("allow = \"connect=127.0.0.1:80\"\n", 1),
            ("\nallow = [80]\n", 2),
            ("dry_run = \"yes\"\n", 1),
            ("[limits]\nmax_sockets = \"16\"\n", 2),
            ("[limits]\n\nmax_bytes_sent = -1\n", 3),
            ("[limits]\nrate = 1.5\n", 2),
        ] {
            let e = parse_err(text);
            assert_eq!(e.line(), Some(line), "{text}: {e}");
            assert!(e.to_string().contains("fix:"), "{e}");
        }
    }

    #[test]
    fn toml_syntax_errors_are_placed() {
        for (text, line) in [
            ("allow = [\"connect=127.0.0.1:80\"\n\n", 2),
            ("allow = ['x'\ndeny = ]\n", 2),
            ("dry_run = false\ndry_run = true\n", 2),
            ("allow = [\"connect=127.0.0.1:80]\n", 1),
        ] {
            let e = parse_err(text);
            assert!(
                e.line().is_some_and(|l| l >= 1 && l <= line),
                "{text:?}: {e}"
            );
            assert!(e.to_string().contains("fix:"), "{e}");
        }
        let e = parse_err("dry_run = false\ndry_run = true\n");
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(e.to_string().contains("give each key once"), "{e}");
    }

    #[test]
    fn zero_limits_that_would_stall_a_guest_are_errors() {
        for key in ["rate", "pin_ttl_secs", "max_buffered"] {
            let e = parse_err(&format!("[limits]\nmax_sockets = 1\n{key} = 0\n"));
            assert_eq!(
                (e.line(), e.column()),
                (Some(3), Some(key.len() + 4)),
                "{e}"
            );
            assert!(e.message().contains(&format!("`{key} = 0`")), "{e}");
            assert!(e.to_string().contains("at least 1"), "{e}");
        }
        // Zero sockets or bytes are a (strict) policy, not a mistake.
        let file = parse_ok("[limits]\nmax_sockets = 0\nmax_bytes_sent = 0\n");
        assert_eq!(file.limits.max_sockets, 0);
        assert_eq!(file.limits.max_bytes_sent, Some(0));
    }

    #[test]
    fn places_count_lines_and_characters() {
        let text = "a\nbé = [\"x\"]\r\nlast";
        let p = place(text, 8..11);
        assert_eq!((p.line, p.column, p.width), (2, 6, 3));
        assert_eq!(p.source_line, "bé = [\"x\"]");
        let p = place(text, text.len()..text.len());
        assert_eq!((p.line, p.column), (3, 5));
    }

    #[test]
    fn unreadable_files_are_named() {
        let e = load(Path::new("/nonexistent/policy.toml"), ambient_authority()).unwrap_err();
        assert_eq!(e.line(), None);
        assert!(
            e.to_string()
                .starts_with("/nonexistent/policy.toml: cannot read the policy file"),
            "{e}"
        );
    }
}
