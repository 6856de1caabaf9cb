//! `usocket`: run WebAssembly command components with scoped network access.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use usocket_host::run::{Guest, Runner};
use usocket_host::{Limits, Policy, Rule, UsocketCtx};
use wasmtime_wasi::WasiCtxBuilder;

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
    Run(RunArgs),
    /// Run the built-in demo: a loopback server, one granted connection and one refused.
    Demo,
}

const RULES_HELP: &str = "\
RULE grammar (deny by default; --deny beats --allow):
  connect=HOST:PORTS   outbound TCP connections and UDP destinations
  bind=HOST:PORTS      local addresses to bind or listen on
  resolve=NAME         host names getaddrinfo may look up
  HOST  = 127.0.0.1 | 10.0.0.0/8 | [::1] | [fd00::]/8 | *
  PORTS = 8080 | 8000-8010 (inclusive) | *
  NAME  = example.com | *.example.com | *
Example: usocket run --allow connect=127.0.0.1:8000 http_get.wasm 127.0.0.1 8000";

#[derive(clap::Args)]
struct RunArgs {
    /// Grant a use of the network (repeatable).
    #[arg(long = "allow", value_name = "RULE")]
    allow: Vec<Rule>,
    /// Refuse a use of the network even if an --allow rule grants it (repeatable).
    #[arg(long = "deny", value_name = "RULE")]
    deny: Vec<Rule>,
    /// Stop the guest after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    time_limit: Option<f64>,
    /// Sockets the guest may have open at once.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_sockets)]
    max_sockets: usize,
    /// The component (.wasm) to run.
    component: PathBuf,
    /// Arguments passed to the guest.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("USOCKET_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Demo => demo().await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(message) => fail(message),
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("usocket: error: {message}");
    ExitCode::from(125)
}

async fn run(args: RunArgs) -> Result<i32, String> {
    let time_limit = match args.time_limit {
        None => None,
        Some(s) => Some(
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("--time-limit {s}: give a positive number of seconds"))?,
        ),
    };
    let mut policy = Policy::builder();
    for rule in args.allow {
        policy = policy.allow(rule, cap_std::ambient_authority());
    }
    for rule in args.deny {
        policy = policy.deny(rule);
    }
    let bytes = std::fs::read(&args.component)
        .map_err(|e| format!("cannot read component `{}`: {e}", args.component.display()))?;
    let runner = Runner::new(true).map_err(|e| format!("cannot set up wasmtime: {e:#}"))?;
    let component = runner.compile(&bytes).map_err(|e| {
        format!(
            "`{}` is not a wasm32-wasip2 command component ({e:#}); build guests with `cargo build --target wasm32-wasip2`",
            args.component.display()
        )
    })?;
    let name = args
        .component
        .file_name()
        .map_or("guest".into(), |n| n.to_string_lossy().into_owned());
    let mut argv = vec![name.clone()];
    argv.extend(args.args);
    let guest = Guest {
        wasi: WasiCtxBuilder::new().inherit_stdio().args(&argv).build(),
        usocket: UsocketCtx::new(name, Arc::new(policy.build())).with_limits(Limits {
            max_sockets: args.max_sockets,
            ..Limits::default()
        }),
        time_limit,
    };
    runner
        .run(&component, guest)
        .await
        .map_err(|e| format!("the guest failed: {e:?}"))
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
