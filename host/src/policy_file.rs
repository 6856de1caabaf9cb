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
//! max_buffered_total = 67108864        # bytes the host queues for all sockets together
//! max_memory = 268435456               # bytes of guest memory (linear memories and tables)
//! ```
//!
//! `allow` and `deny` hold rule texts, exactly as `--allow` and `--deny` take them (one text
//! may name several uses: `bind,listen=127.0.0.1:8000`), except that a `deny` rule may not name
//! hosts by name ([`crate::policy::parse_deny_rules`] says why and what to write instead).
//! Limits are whole numbers (no quotes, sign, decimal point or exponent). Keys not listed
//! here are errors, so a misspelt key cannot silently leave a guest with more access than
//! intended. The limits
//! follow the rules of [`Limits::validate`] (the `usocket run` flags follow the same ones,
//! through [`LimitOverrides`]). Every error names the file, the line and the column, and says
//! how to fix it. [`PolicyFile::explain`] puts a valid file in plain words.

use std::fmt;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use cap_std::AmbientAuthority;
use serde::Deserialize;
use toml::Spanned;

use crate::limits::{Limit, LimitOverrides, Limits};
use crate::policy::{Policy, Rule, parse_deny_rules, parse_rules};

/// A parsed policy file: the policy and the guest limits it sets (defaults for keys it omits).
#[derive(Debug)]
pub struct PolicyFile {
    /// The allow and deny rules, and the dry-run switch.
    pub policy: Policy,
    /// [`Limits::default`] with the file's `[limits]` keys applied.
    pub limits: Limits,
}

impl PolicyFile {
    /// The policy in plain words, as `usocket policy check` prints it: that `origin` (the
    /// file's name) is valid, whether it is a dry run, each allow and deny rule with its
    /// description, every limit (defaults included), and how rules combine.
    ///
    /// ```
    /// let file = usocket_host::policy_file::parse(
    ///     "allow = [\"connect=127.0.0.1:8000\"]",
    ///     "p.toml",
    ///     cap_std::ambient_authority(),
    /// )?;
    /// let text = file.explain("p.toml");
    /// assert!(text.starts_with("p.toml: a valid policy.\n"));
    /// assert!(text.contains("\nAllowed:\n  connect=127.0.0.1:8000  "));
    /// # Ok::<(), usocket_host::policy_file::PolicyFileError>(())
    /// ```
    pub fn explain(&self, origin: &str) -> String {
        let PolicyFile { policy, limits } = self;
        let mut out = String::new();
        let _ = writeln!(out, "{origin}: a valid policy.");
        if policy.is_dry_run() {
            let _ = writeln!(
                out,
                "Dry run: every use goes ahead; the ones these rules would refuse are reported \
                 as would-deny."
            );
        }
        let width = policy
            .allowed()
            .iter()
            .chain(policy.denied())
            .map(|r| r.to_string().len())
            .max()
            .unwrap_or(0);
        let list = |out: &mut String, rules: &[Rule], none: &str| {
            if rules.is_empty() {
                let _ = writeln!(out, "  {none}");
            }
            for rule in rules {
                let _ = writeln!(out, "  {:width$}  {}", rule.to_string(), rule.describe());
            }
        };
        let _ = writeln!(out, "\nAllowed:");
        list(
            &mut out,
            policy.allowed(),
            "nothing: this policy grants no use of the network",
        );
        let _ = writeln!(out, "\nDenied, whatever the allow rules say:");
        list(&mut out, policy.denied(), "nothing beyond the default");

        let bytes = |n: Option<u64>| match n {
            None => "no limit".to_string(),
            Some(n) => format!("{n}{}", human(n)),
        };
        let _ = writeln!(out, "\nLimits:");
        let _ = writeln!(out, "  sockets open at once: {}", limits.max_sockets);
        let _ = writeln!(
            out,
            "  bytes the host queues for one socket: {}",
            bytes(Some(limits.max_buffered as u64))
        );
        let _ = writeln!(
            out,
            "  bytes sent, in total: {}",
            bytes(limits.max_bytes_sent)
        );
        let _ = writeln!(
            out,
            "  bytes received, in total: {}",
            bytes(limits.max_bytes_received)
        );
        let _ = writeln!(
            out,
            "  bandwidth, bytes per second each way: {}",
            bytes(limits.rate)
        );
        let _ = writeln!(
            out,
            "  longest life of a name -> address pin: {} s",
            limits.pin_ttl.as_secs()
        );
        let _ = writeln!(
            out,
            "  bytes the host queues for all sockets together: {}",
            bytes(Some(limits.max_buffered_total as u64))
        );
        let _ = writeln!(
            out,
            "  guest memory (linear memories and tables): {}",
            bytes(Some(limits.max_memory as u64))
        );
        let _ = writeln!(
            out,
            "\nA deny rule beats every allow rule; everything no allow rule grants is denied."
        );
        out
    }
}

/// ` (10 MiB)` for sizes that read better in binary units, else nothing.
fn human(n: u64) -> String {
    let units = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    match units.iter().find(|(size, _)| n >= *size) {
        Some((size, unit)) if n.is_multiple_of(*size) => format!(" ({} {unit})", n / size),
        Some((size, unit)) => format!(" ({:.1} {unit})", n as f64 / *size as f64),
        None => String::new(),
    }
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
    max_sockets: Option<Spanned<usize>>,
    max_buffered: Option<Spanned<usize>>,
    max_bytes_sent: Option<Spanned<u64>>,
    max_bytes_received: Option<Spanned<u64>>,
    rate: Option<Spanned<u64>>,
    pin_ttl_secs: Option<Spanned<u64>>,
    max_buffered_total: Option<Spanned<usize>>,
    max_memory: Option<Spanned<usize>>,
}

impl RawLimits {
    /// The keys set, as overrides of the defaults (checked by [`LimitOverrides::apply`]).
    fn overrides(&self) -> LimitOverrides {
        let value = |n: &Option<Spanned<u64>>| n.as_ref().map(|n| *n.get_ref());
        LimitOverrides {
            max_sockets: self.max_sockets.as_ref().map(|n| *n.get_ref()),
            max_buffered: self.max_buffered.as_ref().map(|n| *n.get_ref()),
            max_bytes_sent: value(&self.max_bytes_sent),
            max_bytes_received: value(&self.max_bytes_received),
            rate: value(&self.rate),
            pin_ttl: value(&self.pin_ttl_secs).map(Duration::from_secs),
            max_buffered_total: self.max_buffered_total.as_ref().map(|n| *n.get_ref()),
            max_memory: self.max_memory.as_ref().map(|n| *n.get_ref()),
        }
    }

    /// Where the file sets `limit`.
    fn span(&self, limit: Limit) -> Option<Range<usize>> {
        let span = |n: &Option<Spanned<u64>>| n.as_ref().map(Spanned::span);
        match limit {
            Limit::MaxSockets => self.max_sockets.as_ref().map(Spanned::span),
            Limit::MaxBuffered => self.max_buffered.as_ref().map(Spanned::span),
            Limit::MaxBytesSent => span(&self.max_bytes_sent),
            Limit::MaxBytesReceived => span(&self.max_bytes_received),
            Limit::Rate => span(&self.rate),
            Limit::PinTtl => span(&self.pin_ttl_secs),
            Limit::MaxBufferedTotal => self.max_buffered_total.as_ref().map(Spanned::span),
            Limit::MaxMemory => self.max_memory.as_ref().map(Spanned::span),
        }
    }
}

const KNOWN_KEYS: &str = "at the top level dry_run, allow, deny and the [limits] table; in \
     [limits] max_sockets, max_buffered, max_bytes_sent, max_bytes_received, rate, pin_ttl_secs, \
     max_buffered_total, max_memory";

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
            let parse = if is_allow {
                parse_rules
            } else {
                parse_deny_rules
            };
            let rules = parse(entry.get_ref()).map_err(|e| {
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

    let limits = raw
        .limits
        .overrides()
        .apply(Limits::default())
        .map_err(|e| {
            let key = e.limit().file_key();
            PolicyFileError::at(
                origin,
                text,
                raw.limits.span(e.limit()),
                format!("`{key} = {}` {}", e.value(), e.reason()),
            )
            .with_fix(format!(
                "{}, or leave the key out for the default",
                e.fix(key)
            ))
        })?;

    Ok(PolicyFile {
        policy: policy.build(),
        limits,
    })
}

/// The limit whose `key = value` line holds byte `at` of `text`, if it is one.
fn key_at(text: &str, at: usize) -> Option<Limit> {
    let at = floor_char_boundary(text, at.min(text.len()));
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let (key, _) = text[line_start..at].split_once('=')?;
    let key = key.trim();
    Limit::ALL.into_iter().find(|l| l.file_key() == key)
}

/// A TOML syntax or type error, placed by toml's span, with a fix for the common cases.
fn toml_error(text: &str, origin: &str, e: &toml::de::Error) -> PolicyFileError {
    let message = e.message().trim_end().to_string();
    let fix = if message.contains("unknown field") {
        format!("remove or correct the key; the known keys are {KNOWN_KEYS}")
    } else if message.contains("duplicate key") {
        "give each key once: remove one of the two".to_string()
    } else if message.contains("invalid type") || message.contains("invalid value") {
        match e.span().and_then(|span| key_at(text, span.start)) {
            Some(limit) => {
                let min = u64::from(limit.check(0).is_err());
                let max = match limit {
                    Limit::PinTtl => crate::limits::MAX_PIN_TTL.as_secs(),
                    _ => u64::MAX,
                };
                format!(
                    "`{}` takes a whole number from {min} to {max}, written without quotes, \
                     sign, decimal point or exponent (e.g. {} = {}), or leave the key out for \
                     the default",
                    limit.file_key(),
                    limit.file_key(),
                    min.max(300).min(max),
                )
            }
            None => "allow and deny are lists of rule strings (allow = \
                     [\"connect=127.0.0.1:8080\"]), dry_run is true or false, and limits are \
                     whole numbers of at least 0"
                .to_string(),
        }
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
        for key in ["max_sockets", "rate", "pin_ttl_secs", "max_buffered"] {
            let e = parse_err(&format!("[limits]\nmax_bytes_sent = 1\n{key} = 0\n"));
            assert_eq!(
                (e.line(), e.column()),
                (Some(3), Some(key.len() + 4)),
                "{e}"
            );
            assert!(e.message().contains(&format!("`{key} = 0`")), "{e}");
            assert!(
                e.to_string()
                    .contains(&format!("fix: give {key} a value of at least 1")),
                "{e}"
            );
            assert!(
                e.to_string()
                    .contains("or leave the key out for the default"),
                "{e}"
            );
        }
        let e = parse_err("[limits]\nmax_sockets = 0\n");
        assert!(e.message().contains("ENOMEM"), "{e}");
        assert!(e.to_string().contains("grant it nothing"), "{e}");
        // Zero bytes in total are a (strict) policy, not a mistake: a guest that may only
        // receive, or only send.
        let file = parse_ok("[limits]\nmax_bytes_sent = 0\nmax_bytes_received = 0\n");
        assert_eq!(file.limits.max_bytes_sent, Some(0));
        assert_eq!(file.limits.max_bytes_received, Some(0));
    }

    #[test]
    fn absurd_pin_ttls_are_errors() {
        let e = parse_err("[limits]\npin_ttl_secs = 9223372036854775807\n");
        assert_eq!((e.line(), e.column()), (Some(2), Some(16)), "{e}");
        assert!(
            e.message()
                .starts_with("`pin_ttl_secs = 9223372036854775807` is longer than"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("fix: give pin_ttl_secs a value of at most 604800"),
            "{e}"
        );
        let file = parse_ok("[limits]\npin_ttl_secs = 604800\n");
        assert_eq!(file.limits.pin_ttl, crate::limits::MAX_PIN_TTL);
    }

    #[test]
    fn every_number_that_is_no_whole_number_in_range_is_placed_with_a_fix() {
        let keys = Limit::ALL.map(Limit::file_key);
        for key in keys {
            for value in [
                "-1",
                "-9223372036854775808",
                "1.5",
                "1e3",
                "inf",
                "nan",
                "\"16\"",
                "18446744073709551616",
                "99999999999999999999",
                "true",
                "[1]",
            ] {
                let text = format!("dry_run = false\n[limits]\n{key} = {value}\n");
                let e = parse_err(&text);
                assert_eq!(
                    (e.line(), e.column()),
                    (Some(3), Some(key.len() + 4)),
                    "{key} = {value}: {e}"
                );
                let shown = e.to_string();
                assert!(
                    shown.contains(&format!("fix: `{key}` takes a whole number from ")),
                    "{key} = {value}: {shown}"
                );
                assert!(
                    shown.contains("without quotes, sign, decimal point"),
                    "{shown}"
                );
            }
        }
        // The largest number TOML holds is refused where it cannot work, as `run` would.
        let e = parse_err("[limits]\npin_ttl_secs = 9223372036854775807\n");
        assert_eq!(e.line(), Some(2), "{e}");
        let e = parse_err("[limits]\npin_ttl_secs = 1.5\n");
        assert!(e.to_string().contains("from 1 to 604800"), "{e}");
        let e = parse_err("[limits]\nmax_bytes_sent = -1\n");
        assert!(e.to_string().contains("from 0 to"), "{e}");
    }

    #[test]
    fn deny_lists_refuse_host_names_and_rules_are_strict() {
        let e = parse_err("deny = [\"connect=localhost:*\"]\n");
        assert_eq!((e.line(), e.column()), (Some(1), Some(9)), "{e}");
        assert!(e.message().contains("cannot name hosts by name"), "{e}");
        assert!(e.message().contains("resolve=localhost"), "{e}");
        assert!(e.to_string().contains("correct this `deny` entry"), "{e}");
        let e = parse_err("allow = [\"connect=*:*\"]\ndeny = [\"connect=link_local:*\"]\n");
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(e.message().contains("did you mean `link-local`?"), "{e}");
        let e = parse_err("deny = [\"connect= loopback:*\"]\n");
        assert!(e.message().contains("a space at character 9"), "{e}");
        let file = parse_ok(
            "allow = [\"connect=localhost:80\"]\ndeny = [\"connect=Loopback:*\", \
             \"connect=[::ffff:169.254.169.254]:*\"]\n",
        );
        assert_eq!(texts(file.policy.allowed()), ["connect=localhost:80"]);
        assert_eq!(
            texts(file.policy.denied()),
            ["connect=loopback:*", "connect=169.254.169.254:*"]
        );
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human(1000), "");
        assert_eq!(human(1024), " (1 KiB)");
        assert_eq!(human(1536), " (1.5 KiB)");
        assert_eq!(human(10 << 20), " (10 MiB)");
        assert_eq!(human(3 << 30), " (3 GiB)");
    }

    #[test]
    fn an_empty_policy_is_explained_as_denying_everything() {
        let text = parse_ok("").explain("empty.toml");
        assert!(text.starts_with("empty.toml: a valid policy.\n"), "{text}");
        assert!(
            text.contains("nothing: this policy grants no use of the network"),
            "{text}"
        );
        assert!(text.contains("  sockets open at once: 64\n"), "{text}");
        assert!(
            text.contains("  bytes sent, in total: no limit\n"),
            "{text}"
        );
        assert!(!text.contains("Dry run"), "{text}");
        assert!(
            parse_ok("dry_run = true")
                .explain("dry.toml")
                .contains("Dry run:")
        );
    }

    #[test]
    fn a_policy_is_explained_rule_by_rule_with_its_limits() {
        let text = parse_ok(
            "allow = [\"connect=127.0.0.1:8000\", \"resolve=localhost\"]\n\
             deny = [\"connect=metadata:*\"]\n\
             [limits]\nmax_sockets = 8\nmax_bytes_sent = 1048576\nrate = 1536\npin_ttl_secs = 300\n",
        )
        .explain("p.toml");
        let allowed = text.split("\nAllowed:\n").nth(1).unwrap();
        let allowed = allowed.split("\n\n").next().unwrap();
        assert_eq!(allowed.lines().count(), 2, "{text}");
        // Rule texts are padded to one column (the longest rule), descriptions follow it.
        let column = 2 + "connect=127.0.0.1:8000".len() + 2;
        for line in allowed.lines() {
            assert!(line.starts_with("  "), "{line}");
            assert!(line[..column].ends_with("  "), "{line:?}");
            assert!(!line[column..].starts_with(' '), "{line:?}");
            assert!(
                line[column..].split_whitespace().count() >= 3,
                "not explained: {line:?}"
            );
        }
        assert!(
            text.contains("\nDenied, whatever the allow rules say:\n  connect=metadata:*"),
            "{text}"
        );
        for part in [
            "  sockets open at once: 8\n",
            "  bytes the host queues for one socket: 16777216 (16 MiB)\n",
            "  bytes sent, in total: 1048576 (1 MiB)\n",
            "  bytes received, in total: no limit\n",
            "  bandwidth, bytes per second each way: 1536 (1.5 KiB)\n",
            "  longest life of a name -> address pin: 300 s\n",
            "\nA deny rule beats every allow rule; everything no allow rule grants is denied.\n",
        ] {
            assert!(text.contains(part), "no {part:?} in\n{text}");
        }
        assert!(text.find("\nAllowed:").unwrap() < text.find("\nDenied").unwrap());
        assert!(text.find("\nDenied").unwrap() < text.find("\nLimits:").unwrap());
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
