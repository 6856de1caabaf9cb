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
//!
//! [tls]                                # optional; every key optional
//! ca_files = ["ca.pem"]                # PEM files of CAs to trust too
//! system_roots = true                  # trust the system's CAs (default true)
//! cert_file = "server.pem"             # the server identity a guest's TLS server side
//! key_file = "server.key"              #   presents when it passes none: both or neither
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
//!
//! The `[tls]` table says what the guest's TLS ([`crate::tls`], terminated in the host)
//! trusts and presents, as [`TlsFiles`]: `ca_files` are PEM files of CA certificates trusted
//! besides the system's (or instead of them, with `system_roots = false`); `cert_file` and
//! `key_file` are the certificate chain (leaf first) and private key a guest's server side
//! presents when it passes none of its own. Relative paths are read from the policy file's
//! folder ([`load`]; [`parse`] reads them from the current directory, [`parse_in`] from the
//! folder given). The files are read and checked when the policy file is: a missing file,
//! one without a certificate (or key), and a key that is not the certificate's are errors
//! placed on their entry. The private key is kept by the host; it never enters guest memory.
//! Without a `[tls]` table, guests trust the system's CAs and have no server identity
//! ([`crate::TlsConfig::default`]).

use std::fmt;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cap_std::AmbientAuthority;
use serde::Deserialize;
use toml::Spanned;

use crate::limits::{Limit, LimitOverrides, Limits};
use crate::policy::{Policy, Rule, Use, parse_deny_rules, parse_rules};
use crate::tls::{TlsConfig, TlsConfigError};

/// A parsed policy file: the policy and the guest limits it sets (defaults for keys it omits).
#[derive(Debug)]
pub struct PolicyFile {
    /// The allow and deny rules, and the dry-run switch.
    pub policy: Policy,
    /// [`Limits::default`] with the file's `[limits]` keys applied.
    pub limits: Limits,
    /// The `[tls]` table's files, read and checked ([`TlsFiles::default`] without one): make
    /// the guest's [`TlsConfig`] with [`TlsFiles::config`].
    pub tls: TlsFiles,
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
        let PolicyFile {
            policy,
            limits,
            tls,
        } = self;
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
            "\nTLS (run by the host; private keys never enter the guest):"
        );
        out.push_str(&tls.explain());
        let tls_rules = policy
            .allowed()
            .iter()
            .filter(|r| r.use_() == Some(Use::Tls))
            .count();
        if tls_rules > 0 && tls.trusts_nothing() {
            let _ = writeln!(
                out,
                "  warning: no CA is trusted, so every connection the tls rules grant fails its \
                 handshake (unless the guest passes CA data of its own): add ca_files, or \
                 leave system_roots at true"
            );
        }
        let _ = writeln!(
            out,
            "\nA deny rule beats every allow rule; everything no allow rule grants is denied."
        );
        out
    }
}

/// TLS settings made of files: a policy file's `[tls]` table, or `usocket run`'s `--tls-*`
/// flags. Each file is read and checked when it is added, and kept in memory; [`config`]
/// makes the [`TlsConfig`] to give guests ([`crate::UsocketCtx::with_tls`]).
///
/// ```no_run
/// use std::path::Path;
/// use usocket_host::policy_file::TlsFiles;
/// let mut files = TlsFiles::default(); // the system's CAs, no server identity
/// files.add_ca_file(Path::new("ca.pem"))?;
/// files.set_identity_files(Path::new("server.pem"), Path::new("server.key"))?;
/// let config = files.config()?;
/// # Ok::<(), usocket_host::policy_file::TlsFileError>(())
/// ```
///
/// [`config`]: TlsFiles::config
#[derive(Clone, Debug)]
pub struct TlsFiles {
    system_roots: bool,
    cas: Vec<Loaded>,
    identity: Option<(Loaded, Loaded)>,
}

/// A file's path and contents.
#[derive(Clone)]
struct Loaded {
    path: PathBuf,
    data: Vec<u8>,
}

impl fmt::Debug for Loaded {
    /// The path only: the contents may be a private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.path, f)
    }
}

impl Loaded {
    fn read(path: &Path, what: &str, fix: &str) -> Result<Loaded, TlsFileError> {
        let data = std::fs::read(path).map_err(|e| TlsFileError {
            path: path.to_path_buf(),
            key_at_fault: what == "key file",
            message: format!("cannot read the {what} `{}`: {e}", path.display()),
            fix: fix.to_string(),
        })?;
        Ok(Loaded {
            path: path.to_path_buf(),
            data,
        })
    }

    fn name(&self) -> String {
        format!("`{}`", self.path.display())
    }

    fn is_pem(&self) -> bool {
        self.data.windows(11).any(|w| w == b"-----BEGIN ")
    }
}

/// A TLS file that cannot be used: what is wrong, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFileError {
    path: PathBuf,
    /// The key file of a server identity is at fault (not its certificate file).
    key_at_fault: bool,
    message: String,
    fix: String,
}

impl TlsFileError {
    /// The file at fault (for a key that is not the certificate's: the key file).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the key file of a server identity is at fault (a key missing, unreadable, or
    /// not the certificate's), rather than its certificate file.
    pub fn key_at_fault(&self) -> bool {
        self.key_at_fault
    }

    /// What is wrong (names the file).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How to fix it.
    pub fn fix(&self) -> &str {
        &self.fix
    }
}

impl fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n  fix: {}", self.message, self.fix)
    }
}

impl std::error::Error for TlsFileError {}

const CA_FIX: &str = "give a PEM file of CA certificates (-----BEGIN CERTIFICATE-----), such as \
     the ca.pem that signed the servers' certificates";
const CERT_FIX: &str = "give the server's certificate chain as PEM (-----BEGIN CERTIFICATE-----, \
     the server's own certificate first)";
const KEY_FIX: &str = "give the certificate's private key as PEM (-----BEGIN PRIVATE KEY-----, \
     RSA PRIVATE KEY or EC PRIVATE KEY), not encrypted";

impl Default for TlsFiles {
    /// The system's CAs, no more; no server identity (as [`TlsConfig::default`]).
    fn default() -> Self {
        TlsFiles {
            system_roots: true,
            cas: Vec::new(),
            identity: None,
        }
    }
}

impl TlsFiles {
    /// Whether the system's CAs are trusted.
    pub fn system_roots(&self) -> bool {
        self.system_roots
    }

    /// Trusts the system's CAs (`true`, the default) or only the CA files.
    pub fn set_system_roots(&mut self, on: bool) {
        self.system_roots = on;
    }

    /// The CA files, in the order added.
    pub fn ca_files(&self) -> impl Iterator<Item = &Path> {
        self.cas.iter().map(|ca| ca.path.as_path())
    }

    /// The server identity's certificate and key files, if set.
    pub fn identity_files(&self) -> Option<(&Path, &Path)> {
        self.identity
            .as_ref()
            .map(|(cert, key)| (cert.path.as_path(), key.path.as_path()))
    }

    /// Reads the PEM file of CA certificates at `path` and trusts them too.
    pub fn add_ca_file(&mut self, path: &Path) -> Result<(), TlsFileError> {
        let ca = Loaded::read(path, "CA file", CA_FIX)?;
        if let Err(e) = TlsConfig::empty().add_roots(&ca.data, &ca.name()) {
            return Err(ca_error(&ca, e));
        }
        self.cas.push(ca);
        Ok(())
    }

    /// Reads the certificate chain (PEM, leaf first) and private key (PEM) a guest's server
    /// side presents when it passes none, and checks that the key is the certificate's.
    /// Replaces an identity set before.
    pub fn set_identity_files(&mut self, cert: &Path, key: &Path) -> Result<(), TlsFileError> {
        let cert = Loaded::read(cert, "certificate file", CERT_FIX)?;
        let key = Loaded::read(key, "key file", KEY_FIX)?;
        if let Err(e) = TlsConfig::empty().with_server_identity(&cert.data, &key.data, "") {
            return Err(identity_error(&cert, &key, e));
        }
        self.identity = Some((cert, key));
        Ok(())
    }

    /// The configuration to give guests.
    pub fn config(&self) -> Result<TlsConfig, TlsFileError> {
        let mut config = if self.system_roots {
            TlsConfig::default()
        } else {
            TlsConfig::empty()
        };
        for ca in &self.cas {
            config = config
                .add_roots(&ca.data, &ca.name())
                .map_err(|e| ca_error(ca, e))?;
        }
        if let Some((cert, key)) = &self.identity {
            config = config
                .with_server_identity(&cert.data, &key.data, "")
                .map_err(|e| identity_error(cert, key, e))?;
        }
        Ok(config)
    }

    /// Whether no CA is trusted (no system roots, no CA files).
    fn trusts_nothing(&self) -> bool {
        !self.system_roots && self.cas.is_empty()
    }

    /// The settings in plain words, two indented lines.
    fn explain(&self) -> String {
        let mut trusted = Vec::new();
        if self.system_roots {
            let n = TlsConfig::default().root_count();
            trusted.push(format!("the system's CAs ({n} certificates)"));
        }
        for ca in &self.cas {
            let n = TlsConfig::empty()
                .add_roots(&ca.data, "")
                .map_or(0, |c| c.root_count());
            let s = if n == 1 { "" } else { "s" };
            trusted.push(format!("{n} certificate{s} from {}", ca.path.display()));
        }
        let trusted = if trusted.is_empty() {
            "none: every verified TLS connection fails unless the guest passes CA data of its own"
                .to_string()
        } else {
            trusted.join(", ")
        };
        let identity = match &self.identity {
            Some((cert, key)) => format!(
                "{} with the key {} (presented by a guest's server side that passes none)",
                cert.path.display(),
                key.path.display()
            ),
            None => "none: a guest's TLS server side must pass its own certificate and key".into(),
        };
        format!("  trusted CAs: {trusted}\n  server identity: {identity}\n")
    }
}

fn ca_error(ca: &Loaded, e: TlsConfigError) -> TlsFileError {
    let message = match e {
        _ if !ca.is_pem() => format!(
            "{} is not PEM: it holds no -----BEGIN CERTIFICATE----- block (nor one DER certificate)",
            ca.name()
        ),
        TlsConfigError::NoCertificate { .. } => format!(
            "{} holds no certificate (no -----BEGIN CERTIFICATE----- block; a private key or \
             certificate request is no CA certificate)",
            ca.name()
        ),
        e => e.to_string(),
    };
    TlsFileError {
        path: ca.path.clone(),
        key_at_fault: false,
        message,
        fix: CA_FIX.into(),
    }
}

fn identity_error(cert: &Loaded, key: &Loaded, e: TlsConfigError) -> TlsFileError {
    let (at_fault, message, fix) = match e {
        TlsConfigError::NoCertificate { .. } if !cert.is_pem() => (
            Which::Cert,
            format!(
                "the certificate file {} is not PEM: it holds no -----BEGIN CERTIFICATE----- block",
                cert.name()
            ),
            CERT_FIX.to_string(),
        ),
        TlsConfigError::NoCertificate { .. } => (
            Which::Cert,
            format!(
                "the certificate file {} holds no certificate (no -----BEGIN CERTIFICATE----- \
                 block)",
                cert.name()
            ),
            CERT_FIX.to_string(),
        ),
        TlsConfigError::NoKey { .. } if !key.is_pem() => (
            Which::Key,
            format!(
                "the key file {} is not PEM: it holds no -----BEGIN PRIVATE KEY----- block",
                key.name()
            ),
            KEY_FIX.to_string(),
        ),
        TlsConfigError::NoKey { .. } => (
            Which::Key,
            format!(
                "the key file {} holds no private key (no -----BEGIN PRIVATE KEY-----, RSA \
                 PRIVATE KEY or EC PRIVATE KEY block)",
                key.name()
            ),
            KEY_FIX.to_string(),
        ),
        TlsConfigError::KeyMismatch { .. } => (
            Which::Key,
            format!(
                "the key in {} does not match the certificate in {}: it is another \
                 certificate's key",
                key.name(),
                cert.name()
            ),
            "give the private key made with this certificate (`openssl x509 -noout -pubkey -in \
             CERT` and `openssl pkey -pubout -in KEY` print the same public key for a pair)"
                .to_string(),
        ),
        TlsConfigError::Refused { reason, .. } if !cert.is_pem() => (
            Which::Cert,
            format!("the certificate file {} is not PEM ({reason})", cert.name()),
            CERT_FIX.to_string(),
        ),
        TlsConfigError::Refused { reason, .. } if reason.contains("private key") => (
            Which::Key,
            format!("the key file {} cannot be used: {reason}", key.name()),
            KEY_FIX.to_string(),
        ),
        TlsConfigError::Refused { reason, .. } => (
            Which::Cert,
            format!(
                "the certificate {} with the key {} cannot be used: {reason}",
                cert.name(),
                key.name()
            ),
            format!("{CERT_FIX}, and {KEY_FIX}"),
        ),
    };
    let (path, key_at_fault) = match at_fault {
        Which::Cert => (cert.path.clone(), false),
        Which::Key => (key.path.clone(), true),
    };
    TlsFileError {
        path,
        key_at_fault,
        message,
        fix,
    }
}

/// Which file of a server identity is at fault.
enum Which {
    Cert,
    Key,
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
    #[serde(default)]
    tls: RawTls,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    ca_files: Vec<Spanned<String>>,
    system_roots: Option<bool>,
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
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

const KNOWN_KEYS: &str = "at the top level dry_run, allow, deny and the [limits] and [tls] \
     tables; in [limits] max_sockets, max_buffered, max_bytes_sent, max_bytes_received, rate, \
     pin_ttl_secs, max_buffered_total, max_memory; in [tls] ca_files, system_roots, cert_file, \
     key_file";

/// Reads and parses the policy file at `path` (see [`parse`]); the `[tls]` table's relative
/// paths are read from the file's folder.
///
/// # Ambient Authority
///
/// The file's allow rules grant the guest access to the host's network from the ambient
/// authority of the host process, hence the [`AmbientAuthority`] token; the `[tls]` files
/// are read with it too.
pub fn load(path: &Path, ambient: AmbientAuthority) -> Result<PolicyFile, PolicyFileError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| PolicyFileError {
        origin: origin.clone(),
        place: None,
        message: format!("cannot read the policy file: {e}"),
        fix: Some("give the path of a readable UTF-8 TOML file".into()),
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    parse_in(&text, &origin, dir, ambient)
}

/// Parses a policy file's text; `origin` names it in errors (usually its path). The `[tls]`
/// table's relative paths are read from the current directory ([`parse_in`] takes another).
///
/// # Ambient Authority
///
/// As [`load`]: the allow rules widen the guest's access from the host's ambient authority.
pub fn parse(
    text: &str,
    origin: &str,
    ambient: AmbientAuthority,
) -> Result<PolicyFile, PolicyFileError> {
    parse_in(text, origin, Path::new(""), ambient)
}

/// As [`parse`], with the `[tls]` table's relative paths read from `dir` (the policy file's
/// folder).
///
/// # Ambient Authority
///
/// As [`load`].
pub fn parse_in(
    text: &str,
    origin: &str,
    dir: &Path,
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

    let tls = tls_files(&raw.tls, text, origin, dir)?;

    Ok(PolicyFile {
        policy: policy.build(),
        limits,
        tls,
    })
}

/// The `[tls]` table's files, read from `dir` and checked; errors are placed on their entry.
fn tls_files(
    raw: &RawTls,
    text: &str,
    origin: &str,
    dir: &Path,
) -> Result<TlsFiles, PolicyFileError> {
    let at = |entry: &Spanned<String>, message: String| {
        PolicyFileError::at(origin, text, Some(entry.span()), message)
    };
    let path = |entry: &Spanned<String>, key: &str| {
        let name = entry.get_ref();
        if name.is_empty() {
            return Err(at(entry, format!("`{key}` is an empty path"))
                .with_fix("give the file's path, relative to the policy file's folder"));
        }
        Ok(dir.join(name))
    };
    let failed = |entry: &Spanned<String>, e: TlsFileError| {
        let fix = if e.message().starts_with("cannot read") {
            format!(
                "{}; relative paths are read from the policy file's folder",
                e.fix()
            )
        } else {
            e.fix().to_string()
        };
        at(entry, e.message().to_string()).with_fix(fix)
    };
    let mut files = TlsFiles::default();
    files.set_system_roots(raw.system_roots.unwrap_or(true));
    for entry in &raw.ca_files {
        files
            .add_ca_file(&path(entry, "ca_files")?)
            .map_err(|e| failed(entry, e))?;
    }
    match (&raw.cert_file, &raw.key_file) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            let (cert_path, key_path) = (path(cert, "cert_file")?, path(key, "key_file")?);
            files
                .set_identity_files(&cert_path, &key_path)
                .map_err(|e| {
                    // Placed on the file that is wrong; a pair that does not match, on the key.
                    let entry = if e.key_at_fault { key } else { cert };
                    failed(entry, e)
                })?;
        }
        (Some(cert), None) => {
            return Err(at(
                cert,
                "`cert_file` without `key_file`: the server identity is a certificate and its \
                 private key"
                    .into(),
            )
            .with_fix(
                "add key_file = \"KEY.pem\" (the certificate's private key) to [tls], or remove \
                 cert_file",
            ));
        }
        (None, Some(key)) => {
            return Err(at(
                key,
                "`key_file` without `cert_file`: the server identity is a certificate and its \
                 private key"
                    .into(),
            )
            .with_fix(
                "add cert_file = \"CERT.pem\" (the key's certificate chain) to [tls], or remove \
                 key_file",
            ));
        }
    }
    Ok(files)
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
                     [\"connect=127.0.0.1:8080\"]), dry_run is true or false, limits are \
                     whole numbers of at least 0; in [tls], ca_files is a list of file names \
                     (ca_files = [\"ca.pem\"]), system_roots is true or false, cert_file and \
                     key_file are file names"
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

    /// A folder of TLS files made at test time (removed when dropped): `ca.pem` with two CA
    /// certificates, `other-ca.pem` with one, `server.pem` and `server.key` (a pair),
    /// `stray.key` (another key), `note.txt` (not PEM).
    struct TlsDir(std::path::PathBuf);

    impl TlsDir {
        fn new() -> TlsDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "usocket-policy-file-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let cert = |name: &str| rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
            let (ca1, ca2, ca3) = (cert("ca1.test"), cert("ca2.test"), cert("ca3.test"));
            let server = cert("localhost");
            let stray = cert("stray.test");
            for (name, text) in [
                ("ca.pem", ca1.cert.pem() + &ca2.cert.pem()),
                ("other-ca.pem", ca3.cert.pem()),
                ("server.pem", server.cert.pem()),
                ("server.key", server.signing_key.serialize_pem()),
                ("stray.key", stray.signing_key.serialize_pem()),
                ("note.txt", "not a certificate\n".to_string()),
            ] {
                std::fs::write(dir.join(name), text).unwrap();
            }
            TlsDir(dir)
        }

        fn parse(&self, text: &str) -> Result<PolicyFile, PolicyFileError> {
            parse_in(text, "test.toml", &self.0, ambient_authority())
        }

        fn parse_ok(&self, text: &str) -> PolicyFile {
            self.parse(text).unwrap_or_else(|e| panic!("{e}"))
        }

        fn parse_err(&self, text: &str) -> PolicyFileError {
            match self.parse(text) {
                Ok(_) => panic!("accepted:\n{text}"),
                Err(e) => e,
            }
        }
    }

    impl Drop for TlsDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn without_a_tls_table_guests_trust_the_system_and_present_nothing() {
        let file = parse_ok("allow = [\"tls=*.example.com:443\"]");
        assert!(file.tls.system_roots());
        assert_eq!(file.tls.ca_files().count(), 0);
        assert!(file.tls.identity_files().is_none());
        let config = file.tls.config().unwrap();
        assert!(!config.has_server_identity());
        assert_eq!(
            config.root_count(),
            crate::TlsConfig::default().root_count()
        );
    }

    #[test]
    fn a_tls_table_reads_its_files_from_the_policy_files_folder() {
        let dir = TlsDir::new();
        let text = "allow = [\"tls=127.0.0.1:8443\"]\n[tls]\nca_files = [\"ca.pem\", \
                    \"other-ca.pem\"]\nsystem_roots = false\ncert_file = \"server.pem\"\n\
                    key_file = \"server.key\"\n";
        let file = dir.parse_ok(text);
        assert!(!file.tls.system_roots());
        assert_eq!(
            file.tls.ca_files().collect::<Vec<_>>(),
            [dir.0.join("ca.pem"), dir.0.join("other-ca.pem")]
        );
        assert_eq!(
            file.tls.identity_files(),
            Some((
                dir.0.join("server.pem").as_path(),
                dir.0.join("server.key").as_path()
            ))
        );
        let config = file.tls.config().unwrap();
        assert_eq!(config.root_count(), 3);
        assert!(config.has_server_identity());

        // `load` reads them from the policy file's folder, whatever the current directory.
        let path = dir.0.join("policy.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = load(&path, ambient_authority()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.tls.config().unwrap().root_count(), 3);
        // An absolute path is taken as it is.
        let absolute = format!(
            "[tls]\nca_files = [{:?}]\n",
            dir.0.join("other-ca.pem").display().to_string()
        );
        let file = parse_in(
            &absolute,
            "t.toml",
            Path::new("/nonexistent"),
            ambient_authority(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            file.tls.config().unwrap().root_count(),
            crate::TlsConfig::default().root_count() + 1,
            "system roots stay on by default"
        );
    }

    #[test]
    fn a_tls_table_is_explained() {
        let dir = TlsDir::new();
        let text = dir
            .parse_ok(
                "allow = [\"tls=127.0.0.1:8443\"]\n[tls]\nca_files = [\"ca.pem\", \
                 \"other-ca.pem\"]\nsystem_roots = false\ncert_file = \"server.pem\"\n\
                 key_file = \"server.key\"\n",
            )
            .explain("p.toml");
        let ca = dir.0.join("ca.pem").display().to_string();
        let other = dir.0.join("other-ca.pem").display().to_string();
        let server = dir.0.join("server.pem").display().to_string();
        let key = dir.0.join("server.key").display().to_string();
        assert!(
            text.contains(&format!(
                "\nTLS (run by the host; private keys never enter the guest):\n  trusted CAs: 2 \
                 certificates from {ca}, 1 certificate from {other}\n  server identity: {server} \
                 with the key {key} (presented by a guest's server side that passes none)\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(
                "  tls=127.0.0.1:8443  connecting to 127.0.0.1 on port 8443, only over TLS"
            ),
            "{text}"
        );
        assert!(!text.contains("warning"), "{text}");
        assert!(text.find("\nLimits:").unwrap() < text.find("\nTLS").unwrap());

        let text = parse_ok("").explain("p.toml");
        assert!(text.contains("  trusted CAs: the system's CAs ("), "{text}");
        assert!(
            text.contains("  server identity: none: a guest's TLS server side must pass its own"),
            "{text}"
        );
        // tls rules with nothing trusted cannot work: said so.
        let text =
            parse_ok("allow = [\"tls=*:443\"]\n[tls]\nsystem_roots = false\n").explain("p.toml");
        assert!(
            text.contains("  trusted CAs: none: every verified TLS connection fails"),
            "{text}"
        );
        assert!(
            text.contains("  warning: no CA is trusted, so every connection the tls rules grant"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_tls_file_is_placed_on_its_entry() {
        let dir = TlsDir::new();
        let e = dir.parse_err("[tls]\nca_files = [\"ca.pem\", \"missing.pem\"]\n");
        assert_eq!((e.line(), e.column()), (Some(2), Some(23)), "{e}");
        let missing = dir.0.join("missing.pem").display().to_string();
        assert!(
            e.message()
                .starts_with(&format!("cannot read the CA file `{missing}`: ")),
            "{e}"
        );
        let shown = e.to_string();
        assert!(
            shown.contains("fix: give a PEM file of CA certificates"),
            "{shown}"
        );
        assert!(
            shown.contains("relative paths are read from the policy file's folder"),
            "{shown}"
        );
        for (key, line) in [("cert_file", 2), ("key_file", 3)] {
            let text = "[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n"
                .replace(&format!("{key} = \"server."), &format!("{key} = \"gone."));
            let e = dir.parse_err(&text);
            assert_eq!(e.line(), Some(line), "{e}");
            assert!(e.message().starts_with("cannot read the "), "{e}");
            assert!(e.message().contains("gone."), "{e}");
        }
        let e = dir.parse_err("[tls]\nca_files = [\"\"]\n");
        assert!(e.message().contains("`ca_files` is an empty path"), "{e}");
    }

    #[test]
    fn a_ca_file_that_is_not_pem_or_holds_no_certificate_is_explained() {
        let dir = TlsDir::new();
        let e = dir.parse_err("[tls]\nca_files = [\"note.txt\"]\n");
        assert_eq!((e.line(), e.column()), (Some(2), Some(13)), "{e}");
        assert!(e.message().contains("note.txt` is not PEM"), "{e}");
        assert!(
            e.to_string()
                .contains("fix: give a PEM file of CA certificates"),
            "{e}"
        );
        let e = dir.parse_err("[tls]\nca_files = [\"server.key\"]\n");
        assert!(
            e.message().contains("server.key` holds no certificate"),
            "{e}"
        );
        assert!(e.message().contains("a private key"), "{e}");
    }

    #[test]
    fn a_server_identity_needs_both_files_and_a_matching_pair() {
        let dir = TlsDir::new();
        let e = dir.parse_err("[tls]\nsystem_roots = true\ncert_file = \"server.pem\"\n");
        assert_eq!((e.line(), e.column()), (Some(3), Some(13)), "{e}");
        assert!(
            e.message().starts_with("`cert_file` without `key_file`"),
            "{e}"
        );
        assert!(e.to_string().contains("fix: add key_file = "), "{e}");
        let e = dir.parse_err("[tls]\nkey_file = \"server.key\"\n");
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(
            e.message().starts_with("`key_file` without `cert_file`"),
            "{e}"
        );
        assert!(e.to_string().contains("fix: add cert_file = "), "{e}");

        // Another certificate's key: placed on the key.
        let e = dir.parse_err("[tls]\ncert_file = \"server.pem\"\nkey_file = \"stray.key\"\n");
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(
            e.message()
                .contains("stray.key` does not match the certificate in"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("fix: give the private key made with this"),
            "{e}"
        );
        // A key file with no key, a certificate file with no certificate.
        let e = dir.parse_err("[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.pem\"\n");
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(e.message().contains("holds no private key"), "{e}");
        let e = dir.parse_err("[tls]\ncert_file = \"note.txt\"\nkey_file = \"server.key\"\n");
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(e.message().contains("note.txt` is not PEM"), "{e}");
        let e = dir.parse_err("[tls]\ncert_file = \"server.key\"\nkey_file = \"server.key\"\n");
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(e.message().contains("holds no certificate"), "{e}");
        let e = dir.parse_err("[tls]\ncert_file = \"server.pem\"\nkey_file = \"note.txt\"\n");
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(e.message().contains("note.txt` is not PEM"), "{e}");
    }

    #[test]
    fn unknown_keys_and_wrong_types_in_the_tls_table_are_errors() {
        let e = parse_err("[tls]\nsystem_roots = true\nca_file = [\"ca.pem\"]\n");
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(e.message().contains("unknown field `ca_file`"), "{e}");
        assert!(
            e.to_string()
                .contains("in [tls] ca_files, system_roots, cert_file, key_file"),
            "{e}"
        );
        for (text, line) in [
            ("[tls]\nca_files = \"ca.pem\"\n", 2),
            ("[tls]\n\nsystem_roots = \"no\"\n", 3),
            ("[tls]\ncert_file = [\"a.pem\"]\nkey_file = \"k.pem\"\n", 2),
            ("tls = true\n", 1),
        ] {
            let e = parse_err(text);
            assert_eq!(e.line(), Some(line), "{text}: {e}");
            assert!(e.to_string().contains("fix:"), "{e}");
        }
        let e = parse_err("[tls]\nca_files = \"ca.pem\"\n");
        assert!(
            e.to_string().contains("ca_files is a list of file names"),
            "{e}"
        );
    }

    #[test]
    fn tls_files_added_one_by_one_say_which_file_is_wrong() {
        let dir = TlsDir::new();
        let mut files = TlsFiles::default();
        files.add_ca_file(&dir.0.join("ca.pem")).unwrap();
        let e = files.add_ca_file(&dir.0.join("note.txt")).unwrap_err();
        assert_eq!(e.path(), dir.0.join("note.txt"));
        assert!(e.to_string().contains("\n  fix: "), "{e}");
        files.set_system_roots(false);
        assert_eq!(
            files.config().unwrap().root_count(),
            2,
            "a failed add adds nothing"
        );
        let e = files
            .set_identity_files(&dir.0.join("server.pem"), &dir.0.join("stray.key"))
            .unwrap_err();
        assert_eq!(e.path(), dir.0.join("stray.key"));
        assert!(files.identity_files().is_none());
        files
            .set_identity_files(&dir.0.join("server.pem"), &dir.0.join("server.key"))
            .unwrap();
        assert!(files.config().unwrap().has_server_identity());
        // The contents (a private key) stay out of Debug.
        assert!(!format!("{files:?}").contains("PRIVATE"), "{files:?}");
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
