//! `usocket`: run WebAssembly command components with scoped network access.
//!
//! The process never outlives its guest by more than a bounded time. The guest's stdout and
//! stderr are written by tasks of the runtime, so a guest stuck writing to a pipe nobody
//! reads waits in an async call that its time limit (or a signal) stops. SIGTERM and SIGINT
//! stop the guest (its `Store` and with it every socket closes) and exit with 128 + the
//! signal number (143, 130); a SIGINT ignored when usocket started (a background job of a
//! shell) stays ignored. Whatever happens, usocket ends at most [`GRACE`] after the time
//! limit or the signal, and never waits for a thread stuck in a blocking write (it exits
//! without dropping the runtime, after a bounded flush of its own output).

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;
use std::{io, thread};

use clap::{Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use usocket_host::audit::{AuditEvent, AuditHook, Verdict};
use usocket_host::limits::{LimitError, LimitOverrides};
use usocket_host::policy::{RuleError, parse_deny_rules, parse_rules};
use usocket_host::policy_file::{self, PolicyFile, TlsFileError, TlsFiles};
use usocket_host::run::{Guest, Runner, RunnerConfig};
use usocket_host::{Limits, Policy, Rule, TlsConfig, UsocketCtx};
use wasmtime_wasi::cli::{AsyncStdoutStream, StdoutStream};
use wasmtime_wasi::p2::OutputStream;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// The demo guest (examples/src/bin/demo.rs), built for wasm32-wasip2 by build.rs.
const DEMO_GUEST: &[u8] = include_bytes!(env!("USOCKET_DEMO_WASM"));

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
    /// Compile a component ahead of time, so that `usocket run --allow-precompiled` starts it
    /// without compiling (the file is tied to this usocket build and this CPU).
    Compile {
        /// The component (.wasm) to compile.
        component: PathBuf,
        /// Where to write the compiled component [default: COMPONENT with extension .cwasm].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
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
                      tls       (--allow only) connect, with no plaintext: the connection
                                must carry TLS whose certificate is verified for the granted
                                name (tls=*.example.com:443); a connect rule for the same
                                address grants it without TLS
  resolve=NAME      host names getaddrinfo may look up
  HOST  = 127.0.0.1 | 10.0.0.0/8 | [::1] | [fd00::]/8 | *
        | a class: loopback, private, link-local, metadata, multicast, any
        | a name: api.example.com, *.example.com (pinned to the addresses it resolved to)
  PORTS = 8080 | 8000-8010 (inclusive) | *
  NAME  = example.com | *.example.com | *
Rules have no spaces. Classes match in any case; a name spelt like a class (link_local,
metadata.) is refused. IPv6 spellings of IPv4 addresses ([::ffff:127.0.0.1], NAT64) are the
IPv4 address in rules; an --allow rule grants an address only as written, a --deny rule refuses
it in every spelling. --deny rules take addresses and classes, not host names; deny a lookup
with --deny resolve=NAME. tls rules are allow-only: --deny connect=... refuses them too.
TLS (run by the host): guests trust the system's CAs, --tls-ca files and a policy file's
ca_files; --tls-cert/--tls-key (both or neither) are presented by a guest's TLS server side.
Policy files hold the same rules and the limits: see `usocket policy check --help`.
Exit status: the guest's own; 2 for bad input (rules, flags, policy file); 125 when usocket or
the guest failed (invalid component, trap, time limit); 143 on SIGTERM and 130 on SIGINT (the
guest is stopped and its sockets closed). usocket ends at most 3 s after the time limit or the
signal, whatever the guest is doing; a SIGINT ignored when it started stays ignored.
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
  max_buffered_total = 67108864        # bytes the host queues for all sockets together
  max_memory = 268435456               # bytes of guest memory (linear memories and tables)
  [tls]
  ca_files = [\"ca.pem\"]                # PEM files of CAs to trust too (as --tls-ca)
  system_roots = true                  # false: trust only ca_files (as --tls-no-system-roots)
  cert_file = \"server.pem\"             # the server identity a guest's TLS server side
  key_file = \"server.key\"              #   presents if it passes none; both or neither
Limits are whole numbers of at least 1 (the byte totals may be 0); pin_ttl_secs is at most
604800 (7 days); max_memory is at least 65536 (one wasm page). The limit flags of `usocket run` follow the same rules.
The [tls] files are read from the policy file's folder (relative paths) and checked when it is
loaded; --tls-ca adds to ca_files, --tls-cert/--tls-key replace cert_file/key_file.
Use it with `usocket run --policy FILE`; examples are in examples/policies/.";

/// The rules of one `--allow`/`--deny` text (one text may name several uses).
#[derive(Clone, Debug)]
struct Rules(Vec<Rule>);

fn rules(text: &str) -> Result<Rules, RuleError> {
    parse_rules(text).map(Rules)
}

/// A `--deny` text: as [`rules`], but host names are refused (deny by address or class).
fn deny_rules(text: &str) -> Result<Rules, RuleError> {
    parse_deny_rules(text).map(Rules)
}

/// A host directory handed to the guest (`--dir`, `--dir-rw`).
#[derive(Clone, Debug)]
struct Preopen {
    host: PathBuf,
    guest: String,
    writable: bool,
}

fn read_only_dir(text: &str) -> Result<Preopen, String> {
    preopen(text, false)
}

fn read_write_dir(text: &str) -> Result<Preopen, String> {
    preopen(text, true)
}

/// `HOST[::GUEST]`, as wasmtime's `--dir`: HOST must be an existing directory.
fn preopen(text: &str, writable: bool) -> Result<Preopen, String> {
    let (host, guest) = text.split_once("::").unwrap_or((text, text));
    if host.is_empty() || guest.is_empty() {
        return Err("give HOST or HOST::GUEST, e.g. --dir ./scripts::/app".into());
    }
    if guest.contains('\0') || host.contains('\0') {
        return Err("a path cannot contain a NUL character".into());
    }
    let host = PathBuf::from(host);
    match std::fs::metadata(&host) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("`{}` is not a directory", host.display())),
        Err(e) => return Err(format!("cannot open `{}`: {e}", host.display())),
    }
    Ok(Preopen {
        host,
        guest: guest.to_string(),
        writable,
    })
}

/// An environment variable for the guest (`--env`).
#[derive(Clone, Debug)]
struct EnvVar {
    name: String,
    value: String,
}

/// `NAME=VALUE`, or `NAME` for usocket's own value of NAME.
fn env_var(text: &str) -> Result<EnvVar, String> {
    let (name, value) = match text.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (text, None),
    };
    if name.is_empty() || name.contains('\0') {
        return Err("give NAME=VALUE (or NAME to pass on usocket's own value)".into());
    }
    if value.is_some_and(|v| v.contains('\0')) {
        return Err("a value cannot contain a NUL character".into());
    }
    let value = match value {
        Some(value) => value.to_string(),
        None => std::env::var(name).map_err(|_| {
            format!("`{name}` is not set for usocket (or not UTF-8): give --env {name}=VALUE")
        })?,
    };
    Ok(EnvVar {
        name: name.to_string(),
        value,
    })
}

#[derive(clap::Args)]
struct RunArgs {
    /// Take rules, limits and TLS files from this TOML policy file (see `usocket policy check
    /// --help`); --allow and --deny add to its rules, limit flags override its limits, --tls-*
    /// flags add to (--tls-ca) or override its [tls] files.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Grant a use of the network (repeatable).
    #[arg(long = "allow", value_name = "RULE", value_parser = rules)]
    allow: Vec<Rules>,
    /// Refuse a use of the network even if an --allow rule grants it (repeatable).
    #[arg(long = "deny", value_name = "RULE", value_parser = deny_rules)]
    deny: Vec<Rules>,
    /// Evaluate the policy without enforcing it: every use goes ahead, and each one the rules
    /// would refuse is reported on stderr and in the audit log as `would-deny`.
    #[arg(long)]
    dry_run: bool,
    /// Append every policy decision to FILE, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// Stop the guest after this many seconds.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    time_limit: Option<f64>,
    /// Sockets the guest may have open at once, at least 1 [default: 64, or the policy file's].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    max_sockets: Option<usize>,
    /// Bytes the host queues for one socket before read() fails with ENOBUFS, at least 1
    /// [default: 16 MiB].
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    max_buffered: Option<usize>,
    /// Bytes the guest may send in total [default: no limit].
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    max_bytes_sent: Option<u64>,
    /// Bytes the guest may receive in total [default: no limit].
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    max_bytes_received: Option<u64>,
    /// Bandwidth in bytes per second, each direction, at least 1; faster I/O is delayed
    /// [default: no limit].
    #[arg(long, value_name = "BYTES_PER_SEC", allow_negative_numbers = true)]
    rate: Option<u64>,
    /// Longest life of a name -> address pin, whatever the DNS record's TTL: 1 to 604800
    /// (7 days) [default: 60].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pin_ttl: Option<u64>,
    /// Bytes the host queues for all of the guest's sockets together, at least 1
    /// [default: 64 MiB].
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    max_buffered_total: Option<usize>,
    /// Bytes of memory the guest may use (its linear memories and tables together), at least
    /// 65536; a memory.grow past it fails [default: 256 MiB].
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    max_memory: Option<usize>,
    /// Give the guest a host directory, read-only, at GUEST (default: the same path)
    /// (repeatable).
    #[arg(long = "dir", value_name = "HOST[::GUEST]", value_parser = read_only_dir)]
    dirs: Vec<Preopen>,
    /// As --dir, but the guest may also create, change and delete files there.
    #[arg(long = "dir-rw", value_name = "HOST[::GUEST]", value_parser = read_write_dir)]
    dirs_rw: Vec<Preopen>,
    /// Set an environment variable of the guest; NAME alone passes on usocket's own value
    /// (repeatable). The guest sees no other variables.
    #[arg(long = "env", value_name = "NAME[=VALUE]", value_parser = env_var)]
    env: Vec<EnvVar>,
    /// Trust the CA certificates in FILE (PEM) for the guest's TLS, besides the system's and
    /// the policy file's (repeatable).
    #[arg(long = "tls-ca", value_name = "FILE")]
    tls_ca: Vec<PathBuf>,
    /// Do not trust the system's CA certificates for the guest's TLS: only the --tls-ca files
    /// (and the policy file's ca_files).
    #[arg(long)]
    tls_no_system_roots: bool,
    /// The certificate chain (PEM, leaf first) the guest's TLS server side presents when the
    /// guest passes none of its own; needs --tls-key. Overrides the policy file's cert_file.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of the --tls-cert certificate; it never enters guest memory.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Accept a component precompiled by `usocket compile`. Precompiled code runs as native
    /// code unchecked: pass this only for files you compiled yourself.
    #[arg(long)]
    allow_precompiled: bool,
    /// The component (.wasm, or .cwasm from `usocket compile` with --allow-precompiled).
    component: PathBuf,
    /// Arguments passed to the guest.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Why `usocket` itself stopped.
#[derive(Debug)]
enum Failure {
    /// Bad input on the command line or in a policy file: exit 2, like clap's usage errors.
    Usage(String),
    /// Anything else (unreadable or invalid component, the guest trapped): exit 125.
    Host(String),
    /// SIGTERM or SIGINT (the number): the guest was stopped; exit 128 + the number.
    Signal(i32),
}

/// How long usocket may take to end after the guest's time limit or a stop signal, if
/// stopping the guest cleanly does not finish first.
const GRACE: Duration = Duration::from_secs(3);

/// How long the last flush of usocket's own stdout and stderr may take.
const FLUSH_LIMIT: Duration = Duration::from_secs(1);

impl RunArgs {
    /// The limits the flags set, over the policy file's.
    fn limit_overrides(&self) -> LimitOverrides {
        LimitOverrides {
            max_sockets: self.max_sockets,
            max_buffered: self.max_buffered,
            max_bytes_sent: self.max_bytes_sent,
            max_bytes_received: self.max_bytes_received,
            rate: self.rate,
            pin_ttl: self.pin_ttl.map(Duration::from_secs),
            max_buffered_total: self.max_buffered_total,
            max_memory: self.max_memory,
        }
    }
}

/// A limit flag's value that cannot work, as a usage error naming the flag.
fn bad_flag(e: LimitError) -> Failure {
    Failure::Usage(e.explain(e.limit().flag(), " "))
}

fn main() {
    let cli = Cli::parse();
    // Before any other thread starts, so that every thread inherits the signal mask.
    let stop = match StopSignals::block() {
        Ok(signals) => signals.wait_in_thread(),
        Err(e) => end(Err(Failure::Host(format!(
            "cannot set up signal handling: {e}"
        )))),
    };
    init_logging();

    // One thread runs the guest and its sockets' I/O: no cross-thread wake-ups (in `block_on`
    // of a multi-thread runtime, the workers drive the I/O: a guest's 64-byte echo round trip
    // took 1.29x as long; `cargo bench -p usocket-tests --bench scale -- single`). What must
    // not hold up that thread stays off it: the guest's stdout and stderr are written by
    // tokio's blocking pool, name lookups are async, and signals, the time limit's watchdog
    // and the epoch ticker have threads of their own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            end(Err(Failure::Host(format!(
                "cannot start the async runtime: {e}"
            ))));
        }
    };
    let result = runtime.block_on(async {
        let command = async {
            match cli.command {
                Command::Run(args) => run(*args).await,
                Command::Policy {
                    command: PolicyCommand::Check { file },
                } => check(&file),
                Command::Compile { component, output } => compile(&component, output.as_deref()),
                Command::Demo => demo().await.map_err(Failure::Host),
            }
        };
        // A stop signal drops the command's future: the guest's `Store` goes, and with it
        // every socket it had open.
        tokio::select! {
            result = command => result,
            Ok(signal) = stop => Err(Failure::Signal(signal)),
        }
    });
    // Never drop the runtime: that would wait for its blocking threads, and one of them may
    // be stuck writing to a pipe nobody reads.
    end(result)
}

/// Ends the process: the guest's exit code, or the failure's (after saying what it was).
fn end(result: Result<i32, Failure>) -> ! {
    let (code, message) = match result {
        Ok(code) => (u8::try_from(code).unwrap_or(1).into(), None),
        Err(Failure::Usage(message)) => (2, Some(format!("usocket: error: {message}"))),
        Err(Failure::Host(message)) => (125, Some(format!("usocket: error: {message}"))),
        Err(Failure::Signal(signal)) => (
            128 + signal,
            Some(format!(
                "usocket: stopped by {}: the guest was stopped and its sockets closed",
                signal_name(signal)
            )),
        ),
    };
    exit_now(code, message)
}

/// Writes `message` (a line) to stderr and flushes stdout, for at most [`FLUSH_LIMIT`]
/// (either may be a pipe nobody reads), then exits with `code` at once, whatever other
/// threads are doing.
fn exit_now(code: i32, message: Option<String>) -> ! {
    let (done, flushed) = mpsc::channel();
    let flusher = thread::Builder::new().spawn(move || {
        if let Some(message) = message {
            let _ = writeln!(io::stderr(), "{message}");
        }
        let _ = io::stdout().flush();
        let _ = done.send(());
    });
    if flusher.is_ok() {
        let _ = flushed.recv_timeout(FLUSH_LIMIT);
    }
    // `exit` flushes stdout again only if no other thread holds it (a stuck writer does).
    std::process::exit(code)
}

/// The signals that stop usocket: SIGTERM, and SIGINT unless it was ignored when usocket
/// started (shells start background jobs with SIGINT ignored, and expect it to stay so).
/// They are blocked in every thread and taken by one thread with `sigwait`, so no async
/// runtime (or stuck thread) stands between a signal and the exit.
struct StopSignals {
    set: libc::sigset_t,
}

impl StopSignals {
    /// Blocks the signals in this thread (and so in every thread it starts from now on).
    fn block() -> io::Result<StopSignals> {
        // SAFETY: plain libc calls on a local signal set and the calling thread's mask; the
        // query of SIGINT's action changes nothing.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let mut action: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGINT, std::ptr::null(), &mut action) != 0 {
                return Err(io::Error::last_os_error());
            }
            if action.sa_sigaction != libc::SIG_IGN {
                libc::sigaddset(&mut set, libc::SIGINT);
            }
            let e = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if e != 0 {
                return Err(io::Error::from_raw_os_error(e));
            }
            Ok(StopSignals { set })
        }
    }

    /// Starts the thread that waits for the signals. The first one is sent to the returned
    /// receiver and starts a [`GRACE`] period after which the process exits whatever it is
    /// doing; a second one exits at once.
    fn wait_in_thread(self) -> tokio::sync::oneshot::Receiver<i32> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter = move || {
            let mut tx = Some(tx);
            loop {
                let mut signal = 0;
                // SAFETY: waits on a signal set blocked in this thread.
                if unsafe { libc::sigwait(&self.set, &mut signal) } != 0 {
                    continue;
                }
                match tx.take() {
                    Some(tx) => {
                        let _ = tx.send(signal);
                        let _ = thread::Builder::new().spawn(move || {
                            thread::sleep(GRACE);
                            exit_now(
                                128 + signal,
                                Some(format!(
                                    "usocket: stopped by {}: the guest did not stop within {GRACE:?}",
                                    signal_name(signal)
                                )),
                            )
                        });
                    }
                    None => exit_now(128 + signal, None),
                }
            }
        };
        if let Err(e) = thread::Builder::new()
            .name("usocket-signals".into())
            .spawn(waiter)
        {
            end(Err(Failure::Host(format!(
                "cannot start the signal thread: {e}"
            ))));
        }
        rx
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// The guest's stdout or stderr: written by a task of the runtime (through tokio's blocking
/// pool), so a guest blocked on a full pipe waits in an async call that its time limit or a
/// signal can stop, where an inherited stream would block the thread running the guest.
struct GuestOutput {
    stream: AsyncStdoutStream,
    terminal: bool,
}

impl GuestOutput {
    /// Must run inside the runtime (the stream's writer is a task).
    fn stdout() -> GuestOutput {
        GuestOutput {
            stream: AsyncStdoutStream::new(64 << 10, wasmtime_wasi::cli::stdout()),
            terminal: io::stdout().is_terminal(),
        }
    }

    fn stderr() -> GuestOutput {
        GuestOutput {
            stream: AsyncStdoutStream::new(64 << 10, wasmtime_wasi::cli::stderr()),
            terminal: io::stderr().is_terminal(),
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        self.terminal
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        self.stream.p2_stream()
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        self.stream.async_stream()
    }
}

/// Bounds the guest's whole run from outside the runtime: `limit` plus [`GRACE`] after it
/// starts, the process exits (code 125) even if stopping the guest is stuck.
fn watchdog(limit: Duration) {
    let _ = thread::Builder::new()
        .name("usocket-watchdog".into())
        .spawn(move || {
            thread::sleep(limit.saturating_add(GRACE));
            exit_now(
                125,
                Some(format!(
                    "usocket: error: the guest ran longer than its time limit of {limit:?} and \
                     did not stop within {GRACE:?}"
                )),
            )
        });
}

/// Logs to stderr as USOCKET_LOG says (default: warnings); `USOCKET_LOG=usocket::audit=info`
/// shows every policy decision.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(EnvFilter::try_from_env("USOCKET_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
}

/// Where `usocket run` sends each audit event: the `--audit` file, one JSON object a line,
/// and in a dry run a report on stderr of each decision the policy would have refused.
struct AuditSink {
    /// The `--audit` file (opened for appending) and its name for error messages.
    file: Option<(Mutex<File>, PathBuf)>,
    /// Report `would-deny` decisions on stderr.
    dry_run: bool,
    /// Set once a write to the file failed (reported once).
    failed: AtomicBool,
}

impl AuditSink {
    /// Opens the audit file, if any; `None` if there is nothing to do with the events.
    fn new(audit: Option<&Path>, dry_run: bool) -> Result<Option<AuditSink>, Failure> {
        let file = match audit {
            None => None,
            Some(path) => Some((Mutex::new(open_audit(path)?), path.to_path_buf())),
        };
        Ok((file.is_some() || dry_run).then(|| AuditSink {
            file,
            dry_run,
            failed: AtomicBool::new(false),
        }))
    }
}

impl AuditHook for AuditSink {
    fn record(&self, event: &AuditEvent) {
        if self.dry_run && event.verdict == Verdict::WouldDeny {
            let more = match event.repeated {
                0 => String::new(),
                n => format!(" (and {n} more like it)"),
            };
            eprintln!(
                "usocket: dry run: would deny {} {} ({}){more}; going ahead",
                event.use_.keyword(),
                event.target,
                event.reason()
            );
        }
        let Some((file, path)) = &self.file else {
            return;
        };
        // One write per line, so each line lands whole even if the guest is stopped.
        let written = serde_json::to_vec(event)
            .map_err(std::io::Error::from)
            .and_then(|mut line| {
                line.push(b'\n');
                file.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .write_all(&line)
            });
        if let Err(e) = written
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            eprintln!(
                "usocket: error: cannot write to the audit file `{}`: {e}; decisions from now on may be missing from it",
                path.display()
            );
        }
    }
}

fn open_audit(path: &Path) -> Result<File, Failure> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            Failure::Host(format!(
                "cannot open the audit file `{}`: {e}",
                path.display()
            ))
        })
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

    // The flags' limits follow the same rules as a policy file's.
    let flag_limits = args.limit_overrides();
    flag_limits.validate().map_err(bad_flag)?;

    // The file's rules and limits first; the flags add rules and override limits.
    let (file_policy, file_limits, file_tls) = match &args.policy {
        Some(path) => {
            let PolicyFile {
                policy,
                limits,
                tls,
            } = policy_file::load(path, cap_std::ambient_authority())
                .map_err(|e| Failure::Usage(e.to_string()))?;
            (Some(policy), limits, Some(tls))
        }
        None => (None, Limits::default(), None),
    };
    let tls = tls_config(&args, file_tls)?;
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
    let limits = flag_limits.apply(file_limits).map_err(bad_flag)?;
    let audit = AuditSink::new(args.audit.as_deref(), dry_run)?;

    let runner = one_guest_runner(true).map_err(no_wasmtime)?;
    let component = load_component(&runner, &args.component, args.allow_precompiled)?;
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
    let max_memory = limits.max_memory;
    let mut usocket = UsocketCtx::new(name, Arc::new(policy.build()))
        .with_limits(limits)
        .with_tls(tls);
    if let Some(audit) = audit {
        usocket = usocket.with_audit(Arc::new(audit));
    }
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdin()
        .stdout(GuestOutput::stdout())
        .stderr(GuestOutput::stderr())
        .args(&argv);
    for var in &args.env {
        wasi.env(&var.name, &var.value);
    }
    let mut guest_paths = std::collections::HashSet::new();
    for dir in args.dirs.iter().chain(&args.dirs_rw) {
        if !guest_paths.insert(dir.guest.as_str()) {
            return Err(Failure::Usage(format!(
                "two directories are given at the guest path `{}`: give each its own (HOST::GUEST)",
                dir.guest
            )));
        }
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        wasi.preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|e| Failure::Usage(format!("cannot open `{}`: {e:#}", dir.host.display())))?;
    }
    let guest = Guest {
        wasi: wasi.build(),
        usocket,
        time_limit,
    };
    if let Some(limit) = time_limit {
        watchdog(limit);
    }
    runner.run(&component, guest).await.map_err(|e| {
        let mut message = format!("the guest failed: {e:?}");
        if message.contains("exceeds memory limits") {
            message.push_str(&format!(
                "\n  fix: the guest needs more memory than --max-memory (or the policy \
                     file's max_memory) allows: {} bytes",
                max_memory
            ));
        }
        Failure::Host(message)
    })
}

/// The guest's TLS trust and server identity: the policy file's `[tls]` files (`file`), with
/// the --tls-* flags' CA files added, system roots turned off by --tls-no-system-roots, and
/// the identity replaced by --tls-cert/--tls-key.
fn tls_config(args: &RunArgs, file: Option<TlsFiles>) -> Result<TlsConfig, Failure> {
    let mut tls = file.unwrap_or_default();
    if args.tls_no_system_roots {
        tls.set_system_roots(false);
    }
    let flag_error = |flag: &str, path: &Path, e: TlsFileError| {
        Failure::Usage(format!("{flag} {}: {e}", path.display()))
    };
    for path in &args.tls_ca {
        tls.add_ca_file(path)
            .map_err(|e| flag_error("--tls-ca", path, e))?;
    }
    match (&args.tls_cert, &args.tls_key) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            tls.set_identity_files(cert, key).map_err(|e| {
                let (flag, path) = if e.key_at_fault() {
                    ("--tls-key", key)
                } else {
                    ("--tls-cert", cert)
                };
                flag_error(flag, path, e)
            })?;
        }
        (Some(cert), None) => {
            return Err(Failure::Usage(format!(
                "--tls-cert {} needs --tls-key: the server identity is a certificate and its \
                 private key\n  fix: add --tls-key KEY.pem (the certificate's private key), or \
                 leave out --tls-cert",
                cert.display()
            )));
        }
        (None, Some(key)) => {
            return Err(Failure::Usage(format!(
                "--tls-key {} needs --tls-cert: the server identity is a certificate and its \
                 private key\n  fix: add --tls-cert CERT.pem (the key's certificate chain), or \
                 leave out --tls-key",
                key.display()
            )));
        }
    }
    tls.config()
        .map_err(|e| Failure::Usage(format!("the TLS files cannot be used: {e}")))
}

/// A runner for the one guest `usocket` runs (its instance pools hold one guest), with
/// wasmtime's compilation cache if `cache`. Its compiled code is the same as any runner's:
/// `usocket compile` output loads in every one.
fn one_guest_runner(cache: bool) -> wasmtime::Result<Runner> {
    Runner::with_config(RunnerConfig {
        cache,
        max_guests: Some(1),
        ..RunnerConfig::default()
    })
}

fn no_wasmtime(e: wasmtime::Error) -> Failure {
    Failure::Host(format!("cannot set up wasmtime: {e:#}"))
}

fn read_component(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path)
        .map_err(|e| Failure::Host(format!("cannot read component `{}`: {e}", path.display())))
}

/// Reads and compiles the component at `path`, or loads it precompiled if allowed.
fn load_component(
    runner: &Runner,
    path: &Path,
    allow_precompiled: bool,
) -> Result<wasmtime::component::Component, Failure> {
    let bytes = read_component(path)?;
    if Runner::is_precompiled(&bytes) {
        if !allow_precompiled {
            return Err(Failure::Usage(format!(
                "`{}` is a precompiled component: it runs as native code unchecked, so pass \
                 --allow-precompiled if you compiled it yourself (`usocket compile`)",
                path.display()
            )));
        }
        drop(bytes);
        // SAFETY: the user vouched for the file with --allow-precompiled.
        return unsafe { runner.load_precompiled(path) }.map_err(|e| {
            Failure::Host(format!(
                "cannot load precompiled `{}` ({e:#}); compile it again with this usocket: \
                 `usocket compile COMPONENT.wasm`",
                path.display()
            ))
        });
    }
    if bytes.starts_with(b"\x7fELF") {
        return Err(Failure::Host(format!(
            "`{}` is a native file, not a component this usocket can load; if it came from \
             `usocket compile`, it is damaged or from another version: compile it again",
            path.display()
        )));
    }
    runner.compile(&bytes).map_err(|e| not_a_component(path, e))
}

fn not_a_component(path: &Path, e: wasmtime::Error) -> Failure {
    Failure::Host(format!(
        "`{}` is not a wasm32-wasip2 command component ({e:#}); build guests with `cargo build --target wasm32-wasip2`",
        path.display()
    ))
}

/// `usocket compile COMPONENT [-o OUTPUT]`: the component compiled for `run --allow-precompiled`.
fn compile(component: &Path, output: Option<&Path>) -> Result<i32, Failure> {
    let bytes = read_component(component)?;
    if Runner::is_precompiled(&bytes) {
        return Err(Failure::Usage(format!(
            "`{}` is already precompiled: give the .wasm component",
            component.display()
        )));
    }
    // Checked before compiling: a spelling such as ./x.wasm of the same file counts too.
    let output = output.map_or_else(|| component.with_extension("cwasm"), Path::to_path_buf);
    if std::fs::canonicalize(&output).ok() == std::fs::canonicalize(component).ok() {
        return Err(Failure::Usage(format!(
            "the output would overwrite the component `{}`: give another -o FILE",
            component.display()
        )));
    }
    let runner = one_guest_runner(false).map_err(no_wasmtime)?;
    let compiled = runner
        .precompile(&bytes)
        .map_err(|e| not_a_component(component, e))?;
    std::fs::write(&output, compiled)
        .map_err(|e| Failure::Host(format!("cannot write `{}`: {e}", output.display())))?;
    Ok(0)
}

/// `usocket policy check FILE`: the file's rules in plain words, its limits, and the defaults.
fn check(path: &Path) -> Result<i32, Failure> {
    let file = policy_file::load(path, cap_std::ambient_authority())
        .map_err(|e| Failure::Usage(e.to_string()))?;
    print!("{}", file.explain(&path.display().to_string()));
    Ok(0)
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
    let runner = one_guest_runner(false).map_err(|e| format!("cannot set up wasmtime: {e:#}"))?;
    let component = runner
        .compile(DEMO_GUEST)
        .map_err(|e| format!("demo guest: {e:#}"))?;
    let argv = [
        "demo".to_string(),
        granted_port.to_string(),
        denied_port.to_string(),
    ];
    let guest = Guest {
        // Async streams, as for `usocket run`: an inherited one would block the runtime's one
        // thread while the guest writes to a pipe nobody reads.
        wasi: WasiCtxBuilder::new()
            .stdout(GuestOutput::stdout())
            .stderr(GuestOutput::stderr())
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
    use usocket_host::Use;
    use usocket_host::audit::Target;
    use usocket_host::policy::Decision;

    fn run_args(args: &[&str]) -> RunArgs {
        let argv = ["usocket", "run"].iter().chain(args);
        match Cli::parse_from(argv).command {
            Command::Run(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn limit_flags_follow_the_librarys_rules() {
        let args = run_args(&["--rate", "0", "--max-sockets", "3", "x.wasm"]);
        let e = args.limit_overrides().validate().unwrap_err();
        let Failure::Usage(message) = bad_flag(e) else {
            panic!("not a usage error")
        };
        assert_eq!(
            message,
            "`--rate 0` would stall all traffic forever (rate is bytes per second): give --rate \
             a value of at least 1"
        );
        for (flag, value) in [("--max-sockets", "0"), ("--pin-ttl", "604801")] {
            let args = run_args(&[flag, value, "x.wasm"]);
            let Err(Failure::Usage(message)) = args.limit_overrides().validate().map_err(bad_flag)
            else {
                panic!("{flag} {value} accepted")
            };
            assert!(
                message.starts_with(&format!("`{flag} {value}` ")),
                "{message}"
            );
        }
        for (flag, value) in [
            ("--max-memory", "0"),
            ("--max-memory", "65535"),
            ("--max-buffered-total", "0"),
        ] {
            let args = run_args(&[flag, value, "x.wasm"]);
            let Err(Failure::Usage(message)) = args.limit_overrides().validate().map_err(bad_flag)
            else {
                panic!("{flag} {value} accepted")
            };
            assert!(
                message.starts_with(&format!("`{flag} {value}` ")),
                "{message}"
            );
        }
        let args = run_args(&[
            "--pin-ttl",
            "300",
            "--max-memory",
            "33554432",
            "--max-buffered-total",
            "1048576",
            "x.wasm",
        ]);
        let limits = args.limit_overrides().apply(Limits::default()).unwrap();
        assert_eq!(limits.pin_ttl, Duration::from_secs(300));
        assert_eq!(
            (limits.max_memory, limits.max_buffered_total),
            (32 << 20, 1 << 20)
        );
    }

    #[test]
    fn tls_flags_add_to_the_policy_files_cas_and_replace_its_identity() {
        let dir = std::env::temp_dir().join(format!("usocket-cli-unit-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = |name: &str| rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
        let (a, b, server) = (cert("a.test"), cert("b.test"), cert("localhost"));
        let path = |name: &str| dir.join(name);
        std::fs::write(path("a.pem"), a.cert.pem() + &b.cert.pem()).unwrap();
        std::fs::write(path("c.pem"), cert("c.test").cert.pem()).unwrap();
        std::fs::write(path("server.pem"), server.cert.pem()).unwrap();
        std::fs::write(path("server.key"), server.signing_key.serialize_pem()).unwrap();
        let text = |p: PathBuf| p.display().to_string();

        // The file: its two CAs only, and an identity.
        let mut file = TlsFiles::default();
        file.set_system_roots(false);
        file.add_ca_file(&path("a.pem")).unwrap();
        file.set_identity_files(&path("server.pem"), &path("server.key"))
            .unwrap();
        let args = run_args(&["x.wasm"]);
        let config = tls_config(&args, Some(file.clone())).unwrap();
        assert_eq!(config.root_count(), 2);
        assert!(config.has_server_identity());
        // --tls-ca adds to them.
        let args = run_args(&["--tls-ca", &text(path("c.pem")), "x.wasm"]);
        assert_eq!(
            tls_config(&args, Some(file.clone())).unwrap().root_count(),
            3
        );
        // Without a file: the system's CAs and the flags', unless the system's are turned off.
        let system = TlsConfig::default().root_count();
        assert_eq!(tls_config(&args, None).unwrap().root_count(), system + 1);
        let args = run_args(&[
            "--tls-no-system-roots",
            "--tls-ca",
            &text(path("c.pem")),
            "x.wasm",
        ]);
        let config = tls_config(&args, None).unwrap();
        assert_eq!(config.root_count(), 1);
        assert!(!config.has_server_identity());
        // A file that trusts the system's CAs stops trusting them with the flag.
        let mut with_system = TlsFiles::default();
        with_system.add_ca_file(&path("a.pem")).unwrap();
        assert_eq!(
            tls_config(&args, Some(with_system)).unwrap().root_count(),
            3
        );
        // The flags' identity replaces the file's; a bad one is the flag's error.
        let args = run_args(&[
            "--tls-cert",
            &text(path("server.pem")),
            "--tls-key",
            &text(path("a.pem")),
            "x.wasm",
        ]);
        let Err(Failure::Usage(message)) = tls_config(&args, Some(file)) else {
            panic!("a key file without a key was taken")
        };
        assert!(
            message.starts_with(&format!("--tls-key {}: ", text(path("a.pem")))),
            "{message}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_audit_sink_writes_one_json_object_a_line() {
        let path =
            std::env::temp_dir().join(format!("usocket-cli-unit-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sink = AuditSink::new(Some(&path), false).unwrap().unwrap();
        let rule: Rule = "connect=127.0.0.1:80".parse().unwrap();
        for (verdict, decision) in [
            (Verdict::Allow, Decision::Allowed(rule)),
            (Verdict::Deny, Decision::NotGranted),
        ] {
            sink.record(&AuditEvent {
                time: std::time::SystemTime::now(),
                guest: "g.wasm".into(),
                use_: Use::Connect,
                target: Target::Addr("127.0.0.1:80".parse().unwrap()),
                verdict,
                decision,
                repeated: 0,
            });
        }
        let log = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert_eq!(lines[0]["verdict"], "allow");
        assert_eq!(lines[0]["rule"], "connect=127.0.0.1:80");
        assert_eq!(lines[1]["verdict"], "deny");
        assert_eq!(lines[1]["target"], "127.0.0.1:80");
        assert_eq!(lines[1]["guest"], "g.wasm");
        assert_eq!(lines[1]["use"], "connect");

        // Without a file and outside a dry run there is nothing to hook.
        assert!(AuditSink::new(None, false).unwrap().is_none());
    }
}
