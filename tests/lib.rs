//! The test harness: runs guest programs (compiled once per test binary) in one shared
//! [`Runner`], with their stdout captured, against servers the tests start on loopback.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use usocket_host::run::{Guest, Runner, RunnerConfig};
use usocket_host::{Limits, Policy, TlsConfig, UsocketCtx};
use wasmtime::component::{Component, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Where the build script put the guest programs (`<name>.wasm`).
pub fn guest_path(name: &str) -> PathBuf {
    PathBuf::from(env!("USOCKET_GUESTS")).join(format!("{name}.wasm"))
}

/// The runner all tests of a binary share.
pub fn runner() -> &'static Runner {
    static RUNNER: OnceLock<Runner> = OnceLock::new();
    RUNNER.get_or_init(|| {
        Runner::with_config(RunnerConfig {
            cache: true,
            // `USOCKET_PERF_MAP=1 perf record ...` names the guests' functions in a profile.
            perf_map: std::env::var_os("USOCKET_PERF_MAP").is_some(),
            ..RunnerConfig::default()
        })
        .expect("wasmtime engine")
    })
}

/// The compiled guest program `name`, compiled at most once per test binary.
pub fn component(name: &str) -> Component {
    static CACHE: OnceLock<Mutex<HashMap<String, Component>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap().get(name) {
        return c.clone();
    }
    let path = guest_path(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let compiled = runner()
        .compile(&bytes)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    cache
        .lock()
        .unwrap()
        .insert(name.to_string(), compiled.clone());
    compiled
}

/// Parses rules (each may name several uses) into a policy; panics on a bad rule.
pub fn policy(allow: &[&str], deny: &[&str]) -> Arc<Policy> {
    let policy = Policy::from_texts(allow, deny, cap_std::ambient_authority());
    Arc::new(policy.unwrap_or_else(|e| panic!("{e}")))
}

/// What the conformance README asks a host to grant: TCP and UDP on 127.0.0.1 (every use),
/// lookups.
pub fn conformance_policy() -> Arc<Policy> {
    policy(
        &[
            "connect,send,bind,listen,accept,recv=127.0.0.1:*",
            "resolve=*",
        ],
        &[],
    )
}

/// How a guest run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The guest's exit code.
    pub code: i32,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl Outcome {
    /// stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A guest run's settings beyond its name and arguments.
#[derive(Clone)]
pub struct Options {
    /// Its policy.
    pub policy: Arc<Policy>,
    /// Its limits.
    pub limits: Limits,
    /// Its time limit (tests always bound guests).
    pub time_limit: Duration,
    /// What its TLS trusts and presents (`None`: the host's default, the system's roots).
    pub tls: Option<TlsConfig>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policy: conformance_policy(),
            limits: Limits::default(),
            time_limit: Duration::from_secs(60),
            tls: None,
        }
    }
}

/// Runs guest program `name` with `args`, capturing its output.
pub async fn run(name: &str, args: &[&str], opts: Options) -> wasmtime::Result<Outcome> {
    let mut ctx = UsocketCtx::new(name, opts.policy).with_limits(opts.limits);
    if let Some(tls) = opts.tls {
        ctx = ctx.with_tls(tls);
    }
    run_with(name, args, ctx, opts.time_limit).await
}

/// Runs guest program `name` under `policy` and returns its stdout; fails the test if the
/// guest fails or exits non-zero.
pub async fn stdout_of(name: &str, args: &[&str], policy: Arc<Policy>) -> String {
    let out = run(
        name,
        args,
        Options {
            policy,
            ..Options::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{name} {args:?}: {e:?}"));
    assert_eq!(
        out.code,
        0,
        "{name} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout_text()
}

/// Runs guest program `name` with a `usocket` context the test built (for a custom resolver,
/// or to keep its `stats()` handle), capturing its output.
pub async fn run_with(
    name: &str,
    args: &[&str],
    ctx: UsocketCtx,
    time_limit: Duration,
) -> wasmtime::Result<Outcome> {
    let component = component(name);
    let stdout = MemoryOutputPipe::new(16 << 20);
    let stderr = MemoryOutputPipe::new(1 << 20);
    let mut argv = vec![name.to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let guest = Guest {
        wasi: WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&argv)
            .build(),
        usocket: ctx,
        time_limit: Some(time_limit),
    };
    let code = runner().run(&component, guest).await?;
    Ok(Outcome {
        code,
        stdout: stdout.contents().to_vec(),
        stderr: stderr.contents().to_vec(),
    })
}

/// A loopback TCP listener on `addr` (e.g. `127.0.0.1:0`) that counts the connections it
/// accepts: how tests see that a refused use sent nothing.
pub async fn counting_listener(addr: &str) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, count)
}

/// Counts the file descriptors this process has open (Linux).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A field of this process's /proc/self/status that is given in kB (`VmHWM`, `VmRSS`,
/// `VmPeak`, ...), in bytes.
pub fn proc_status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line
        .trim()
        .strip_suffix("kB")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field}: {line:?}"));
    kib * 1024
}

pub mod multitest;

/// The `Store` data of a guest of plain wasmtime-wasi (the benches' `wasi:sockets` peer):
/// WASI alone, no usocket.
pub struct WasiOnly {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiOnly {
    pub fn new(wasi: WasiCtx) -> WasiOnly {
        WasiOnly {
            wasi,
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for WasiOnly {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
