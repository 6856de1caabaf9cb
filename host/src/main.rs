//! `usocket`: run WebAssembly command components with scoped network access.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use usocket_host::policy::{RuleError, parse_rules};
use usocket_host::policy_file::{self, PolicyFile};
use usocket_host::run::{Guest, Runner};
use usocket_host::{Limits, Policy, Rule, UsocketCtx};
use wasmtime_wasi::WasiCtxBuilder;

/// The demo guest (examples/src/bin/demo.rs), built for wasm32-wasip2 by build.rs.
const DEMO_GUEST: &[u8] = include_bytes!(env!("USOCKET_DEMO_WASM"));

/// The `tracing` target of the policy's audit events.
const AUDIT_TARGET: &str = "usocket::audit";

#[derive(Parser)]
#[command(
    name = "usocket",
    version,
    about = "Run WebAssembly components with MicroPython-style sockets, scoped by a deny-by-default policy."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a wasm32-wasip2 command component; the guest may use the network only as the rules allow.
    #[command(after_help = RULES_HELP)]
    Run(Box<RunArgs>),
    /// Work with policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Run the built-in demo: a loopback server, one granted connection and one refused.
    Demo,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and explain its rules and limits in plain words (exit 2 if it is
    /// not valid, pointing at the line).
    #[command(after_help = FILE_HELP)]
    Check {
        /// The TOML policy file.
        file: PathBuf,
    },
}

const RULES_HELP: &str = "\
RULE grammar (deny by default; a --deny rule beats every --allow rule):
  USES=HOST:PORTS   USES is one or more of these, comma-separated (bind,listen=...):
                      connect   outbound TCP connections and UDP default peers
                      send      UDP datagram destinations
                      bind      explicit binds of a local address
                      autobind  the implicit bind of connect, listen or sendto on an unbound socket
                      listen    listening on a local address
                      accept    inbound TCP peers
                      recv      inbound UDP sources
  resolve=NAME      host names getaddrinfo may look up
  HOST  = 127.0.0.1 | 10.0.0.0/8 | [::1] | [fd00::]/8 | *
        | a class: loopback, private, link-local, metadata, multicast, any
        | a name: api.example.com, *.example.com (pinned to the addresses it resolved to)
  PORTS = 8080 | 8000-8010 (inclusive) | *
  NAME  = example.com | *.example.com | *
Policy files hold the same rules and the limits: see `usocket policy check --help`.
Example: usocket run --allow connect=127.0.0.1:8000 http_get.wasm 127.0.0.1 8000";

const FILE_HELP: &str = "\
A policy file (TOML; every key optional, any other key is an error):
  dry_run = false                      # true: report would-deny decisions, enforce none
  allow = [\"connect=*.example.com:443\", \"resolve=localhost\"]   # rules, as --allow
  deny = [\"connect=metadata:*\"]                                # rules, as --deny
  [limits]
  max_sockets = 16                     # sockets open at once
  max_buffered = 16777216              # bytes the host queues for one socket
  max_bytes_sent = 10485760            # over the guest's run
  max_bytes_received = 10485760
  rate = 1048576                       # bytes per second, each direction
  pin_ttl_secs = 300                   # longest life of a name -> address pin
Use it with `usocket run --policy FILE`; examples are in examples/policies/.";

/// The rules of one `--allow`/`--deny` text (one text may name several uses).
#[derive(Clone, Debug)]
struct Rules(Vec<Rule>);

fn rules(text: &str) -> Result<Rules, RuleError> {
    parse_rules(text).map(Rules)
}

fn at_least_one<T: std::str::FromStr + PartialEq + From<u8>>(text: &str) -> Result<T, String> {
    match text.parse::<T>() {
        Ok(n) if n != T::from(0) => Ok(n),
        Ok(_) => Err("0 would stall every use it limits: give at least 1".into()),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// Take rules and limits from this TOML policy file (see `usocket policy check --help`);
    /// --allow and --deny add to its rules, limit flags override its limits.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Grant a use of the network (repeatable).
    #[arg(long = "allow", value_name = "RULE", value_parser = rules)]
    allow: Vec<Rules>,
    /// Refuse a use of the network even if an --allow rule grants it (repeatable).
    #[arg(long = "deny", value_name = "RULE", value_parser = rules)]
    deny: Vec<Rules>,
    /// Evaluate the policy without enforcing it: every use goes ahead, and each one the rules
    /// would refuse is reported on stderr and in the audit log as `would-deny`.
    #[arg(long)]
    dry_run: bool,
    /// Append every policy decision to FILE, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// Stop the guest after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    time_limit: Option<f64>,
    /// Sockets the guest may have open at once [default: 64, or the policy file's].
    #[arg(long, value_name = "N")]
    max_sockets: Option<usize>,
    /// Bytes the host queues for one socket before read() fails with ENOBUFS [default: 16 MiB].
    #[arg(long, value_name = "BYTES", value_parser = at_least_one::<usize>)]
    max_buffered: Option<usize>,
    /// Bytes the guest may send in total [default: no limit].
    #[arg(long, value_name = "BYTES")]
    max_bytes_sent: Option<u64>,
    /// Bytes the guest may receive in total [default: no limit].
    #[arg(long, value_name = "BYTES")]
    max_bytes_received: Option<u64>,
    /// Bandwidth in bytes per second, each direction; faster I/O is delayed [default: no limit].
    #[arg(long, value_name = "BYTES_PER_SEC", value_parser = at_least_one::<u64>)]
    rate: Option<u64>,
    /// Longest life of a name -> address pin, whatever the DNS record's TTL.
    #[arg(long, value_name = "SECONDS", value_parser = at_least_one::<u64>)]
    pin_ttl: Option<u64>,
    /// The component (.wasm) to run.
    component: PathBuf,
    /// Arguments passed to the guest.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Why `usocket` itself stopped.
enum Failure {
    /// Bad input on the command line or in a policy file: exit 2, like clap's usage errors.
    Usage(String),
    /// Anything else (unreadable or invalid component, the guest trapped): exit 125.
    Host(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (is_run, audit) = match &cli.command {
        Command::Run(args) => (true, args.audit.as_deref()),
        _ => (false, None),
    };
    let audit_file = match audit.map(open_audit).transpose() {
        Ok(file) => file,
        Err(message) => return fail(Failure::Host(message)),
    };
    init_logging(audit_file, is_run);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            return fail(Failure::Host(format!(
                "cannot start the async runtime: {e}"
            )));
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Policy {
                command: PolicyCommand::Check { file },
            } => check(&file),
            Command::Demo => demo().await.map_err(Failure::Host),
        }
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(failure) => fail(failure),
    }
}

fn fail(failure: Failure) -> ExitCode {
    let (code, message) = match failure {
        Failure::Usage(message) => (2, message),
        Failure::Host(message) => (125, message),
    };
    eprintln!("usocket: error: {message}");
    ExitCode::from(code)
}

fn open_audit(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open the audit file `{}`: {e}", path.display()))
}

/// Logs to stderr as USOCKET_LOG says (default: warnings); audit events also go to the audit
/// file as JSON lines, and for `run`, each would-deny decision (dry run) is reported on stderr.
fn init_logging(audit: Option<File>, is_run: bool) {
    let audit_only = || Targets::new().with_target(AUDIT_TARGET, tracing::Level::INFO);
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(EnvFilter::try_from_env("USOCKET_LOG").unwrap_or_else(|_| "warn".into()));
    let audit = audit.map(|file| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(Mutex::new(file))
            .with_filter(audit_only())
    });
    // Only a dry run (--dry-run or the policy file's dry_run) has would-deny decisions.
    let report = is_run.then(|| DryRunReport.with_filter(audit_only()));
    tracing_subscriber::registry()
        .with(stderr)
        .with(audit)
        .with(report)
        .init();
}

/// Reports each `would-deny` audit event on stderr, so a dry run shows what it would refuse.
struct DryRunReport;

impl<S: tracing::Subscriber> Layer<S> for DryRunReport {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = AuditFields::default();
        event.record(&mut fields);
        if fields.verdict == "would-deny" {
            eprintln!(
                "usocket: dry run: would deny {} {} ({}); going ahead",
                fields.use_, fields.target, fields.reason
            );
        }
    }
}

#[derive(Default)]
struct AuditFields {
    use_: String,
    target: String,
    verdict: String,
    reason: String,
}

impl AuditFields {
    fn set(&mut self, field: &Field, value: String) {
        match field.name() {
            "use" | "r#use" => self.use_ = value,
            "target" => self.target = value,
            "verdict" => self.verdict = value,
            "reason" => self.reason = value,
            _ => {}
        }
    }
}

impl Visit for AuditFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.set(field, format!("{value:?}"));
    }
}

async fn run(args: RunArgs) -> Result<i32, Failure> {
    let time_limit = match args.time_limit {
        None => None,
        Some(s) => Some(
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Failure::Usage(format!(
                        "--time-limit {s}: give a positive number of seconds"
                    ))
                })?,
        ),
    };

    // The file's rules and limits first; the flags add rules and override limits.
    let (file_policy, mut limits) = match &args.policy {
        Some(path) => {
            let PolicyFile { policy, limits } =
                policy_file::load(path, cap_std::ambient_authority())
                    .map_err(|e| Failure::Usage(e.to_string()))?;
            (Some(policy), limits)
        }
        None => (None, Limits::default()),
    };
    let dry_run = args.dry_run || file_policy.as_ref().is_some_and(Policy::is_dry_run);
    let mut policy = Policy::builder().dry_run(dry_run);
    let (file_allow, file_deny) = match &file_policy {
        Some(p) => (p.allowed(), p.denied()),
        None => (&[][..], &[][..]),
    };
    for rule in file_allow
        .iter()
        .cloned()
        .chain(args.allow.into_iter().flat_map(|r| r.0))
    {
        policy = policy.allow(rule, cap_std::ambient_authority());
    }
    for rule in file_deny
        .iter()
        .cloned()
        .chain(args.deny.into_iter().flat_map(|r| r.0))
    {
        policy = policy.deny(rule);
    }
    if let Some(n) = args.max_sockets {
        limits.max_sockets = n;
    }
    if let Some(n) = args.max_buffered {
        limits.max_buffered = n;
    }
    if let Some(n) = args.max_bytes_sent {
        limits.max_bytes_sent = Some(n);
    }
    if let Some(n) = args.max_bytes_received {
        limits.max_bytes_received = Some(n);
    }
    if let Some(n) = args.rate {
        limits.rate = Some(n);
    }
    if let Some(n) = args.pin_ttl {
        limits.pin_ttl = Duration::from_secs(n);
    }

    let bytes = std::fs::read(&args.component).map_err(|e| {
        Failure::Host(format!(
            "cannot read component `{}`: {e}",
            args.component.display()
        ))
    })?;
    let runner =
        Runner::new(true).map_err(|e| Failure::Host(format!("cannot set up wasmtime: {e:#}")))?;
    let component = runner.compile(&bytes).map_err(|e| {
        Failure::Host(format!(
            "`{}` is not a wasm32-wasip2 command component ({e:#}); build guests with `cargo build --target wasm32-wasip2`",
            args.component.display()
        ))
    })?;
    let name = args
        .component
        .file_name()
        .map_or("guest".into(), |n| n.to_string_lossy().into_owned());
    let mut argv = vec![name.clone()];
    argv.extend(args.args);
    if dry_run {
        eprintln!(
            "usocket: dry run: the policy is evaluated but not enforced; uses it would refuse are reported as `would deny`"
        );
    }
    let guest = Guest {
        wasi: WasiCtxBuilder::new().inherit_stdio().args(&argv).build(),
        usocket: UsocketCtx::new(name, Arc::new(policy.build())).with_limits(limits),
        time_limit,
    };
    runner
        .run(&component, guest)
        .await
        .map_err(|e| Failure::Host(format!("the guest failed: {e:?}")))
}

/// `usocket policy check FILE`: the file's rules in plain words, its limits, and the defaults.
fn check(path: &Path) -> Result<i32, Failure> {
    let file = policy_file::load(path, cap_std::ambient_authority())
        .map_err(|e| Failure::Usage(e.to_string()))?;
    print!("{}", explain(&path.display().to_string(), &file));
    Ok(0)
}

fn explain(origin: &str, file: &PolicyFile) -> String {
    let PolicyFile { policy, limits } = file;
    let mut out = String::new();
    let _ = writeln!(out, "{origin}: a valid policy.");
    if policy.is_dry_run() {
        let _ = writeln!(
            out,
            "Dry run: every use goes ahead; the ones these rules would refuse are reported as would-deny."
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
        "\nA deny rule beats every allow rule; everything no allow rule grants is denied."
    );
    out
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

async fn demo() -> Result<i32, String> {
    let io = |e: std::io::Error| format!("demo server: {e}");
    let granted = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
    let denied = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
    let (granted_port, denied_port) = (
        granted.local_addr().map_err(io)?.port(),
        denied.local_addr().map_err(io)?.port(),
    );

    // The granted server greets each client after reading its line.
    tokio::spawn(async move {
        while let Ok((conn, _)) = granted.accept().await {
            tokio::spawn(async move {
                let (rd, mut wr) = conn.into_split();
                let mut line = String::new();
                if BufReader::new(rd).read_line(&mut line).await.is_ok() {
                    println!("host: server got {:?}", line.trim_end());
                    let _ = wr.write_all(b"hello from the host's server\n").await;
                }
            });
        }
    });
    // The other server only counts: a refused use must not even reach it.
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    tokio::spawn(async move {
        while denied.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    let rule: Rule = format!("connect=127.0.0.1:{granted_port}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    println!(
        "host: servers on 127.0.0.1:{granted_port} and 127.0.0.1:{denied_port}; policy: allow {rule}"
    );
    let policy = Policy::builder()
        .allow(rule, cap_std::ambient_authority())
        .build();
    let runner = Runner::new(false).map_err(|e| format!("cannot set up wasmtime: {e:#}"))?;
    let component = runner
        .compile(DEMO_GUEST)
        .map_err(|e| format!("demo guest: {e:#}"))?;
    let argv = [
        "demo".to_string(),
        granted_port.to_string(),
        denied_port.to_string(),
    ];
    let guest = Guest {
        wasi: WasiCtxBuilder::new()
            .inherit_stdout()
            .inherit_stderr()
            .args(&argv)
            .build(),
        usocket: UsocketCtx::new("demo", Arc::new(policy)),
        time_limit: Some(Duration::from_secs(30)),
    };
    let code = runner
        .run(&component, guest)
        .await
        .map_err(|e| format!("the demo guest failed: {e:?}"))?;
    // Give a stray connection attempt time to show up before reporting none did.
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!(
        "host: the server on port {denied_port} saw {} connection attempts",
        attempts.load(Ordering::Relaxed)
    );
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human(1000), "");
        assert_eq!(human(1024), " (1 KiB)");
        assert_eq!(human(1536), " (1.5 KiB)");
        assert_eq!(human(10 << 20), " (10 MiB)");
        assert_eq!(human(3 << 30), " (3 GiB)");
    }

    #[test]
    fn limit_flags_take_positive_whole_numbers() {
        assert_eq!(at_least_one::<u64>("5"), Ok(5));
        assert!(at_least_one::<u64>("0").unwrap_err().contains("at least 1"));
        assert!(
            at_least_one::<usize>("x")
                .unwrap_err()
                .contains("not a whole number")
        );
    }

    #[test]
    fn an_empty_policy_is_explained_as_denying_everything() {
        let file = usocket_host::policy_file::parse("", "empty.toml", cap_std::ambient_authority())
            .unwrap();
        let text = explain("empty.toml", &file);
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
        let file = usocket_host::policy_file::parse(
            "dry_run = true",
            "dry.toml",
            cap_std::ambient_authority(),
        )
        .unwrap();
        assert!(explain("dry.toml", &file).contains("Dry run:"));
    }
}
