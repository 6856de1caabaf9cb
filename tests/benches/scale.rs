//! `cargo bench -p usocket-tests --bench scale -- [idle N [accept|recv|mix]]... [echo C]...`:
//! many guests in one host, on loopback. Not run by CI (minutes, and the whole machine).
//!
//! - `idle N`: N guests blocked in `accept` (each listening on its own port) or `recv` (each
//!   connected to one native listener), or alternately (`mix`, the default). Reports the
//!   runner's capacity, the resident memory and memory mappings per guest (/proc/self), the
//!   time to start each guest (spawn to its first socket call; they start one after another)
//!   and to instantiate a component (with and without the runner's cached linking work, and
//!   a whole run of a guest that exits at once), before and with the N guests idle, and the
//!   round trip of a native client to the last guests started (it wakes the guest, which then
//!   exits).
//! - `echo C`: C native clients doing 64-byte round trips (a line of 63 bytes and its echo)
//!   for a few seconds against: the `poll_server` example (one guest, every client), the
//!   `echo_server` example (one guest per client, each on its own port), and a native tokio
//!   echo server; the guests under two runtime layouts: one multi-thread runtime (2 workers,
//!   `Runner::run` in its tasks) and `Runner::spawn` (one current-thread runtime per core);
//!   and the peer, a Rust `std::net` guest per client over wasmtime-wasi's `wasi:sockets`
//!   (`bench_wasi serve`, `echo_server`'s loop) in tasks of the multi-thread runtime.
//!   The clients run on a runtime of their own; requests per second are min/median/max of
//!   [`ROUNDS`] rounds (the variants take turns within a round), the ratio is guest/native
//!   (median), and beside it the server's CPU time a request (the process's CPU time less
//!   the clients' thread) and native's over it. `USOCKET_ECHO_ONLY=TEXT` runs native and the
//!   variants whose label contains TEXT; `USOCKET_PERF_MAP=1` names the guests' functions
//!   for `perf`; `USOCKET_SCALE_WORKERS=N` gives the runner N workers (default: one a core).
//!
//! Without arguments: `idle 1000 echo 100`. The documented figures (README) come from
//! `idle 10000` and `echo 100 echo 1000`. The bench raises its soft RLIMIT_NOFILE to the hard
//! limit; every wait is bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use usocket_host::audit::AuditEvent;
use usocket_host::run::{Guest, Runner, RunnerConfig};
use usocket_host::{Limits, Policy, UsocketCtx, UsocketCtxView, UsocketView};
use usocket_tests::{WasiOnly, conformance_policy, guest_path, proc_status};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Rounds of each echo variant.
const ROUNDS: usize = 3;
/// How long each echo round counts round trips (after every client is connected and warm).
const ECHO_WINDOW: Duration = Duration::from_secs(3);
/// Samples of the instantiation and trivial-run timings.
const SAMPLES: usize = 1000;
/// The longest any single wait may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(30);

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mut jobs = Vec::new();
    let mut it = args.iter().map(String::as_str).peekable();
    while let Some(word) = it.next() {
        let count = |n: Option<&str>| -> usize {
            n.and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("`{word}` needs a number"))
        };
        match word {
            "idle" => {
                let n = count(it.next());
                let mode = match it.peek() {
                    Some(&"accept") => "accept",
                    Some(&"recv") => "recv",
                    _ => "mix",
                };
                if it.peek() == Some(&mode) {
                    it.next();
                }
                jobs.push(Job::Idle(n, mode));
            }
            "echo" => jobs.push(Job::Echo(count(it.next()))),
            "single" => jobs.push(Job::Single),
            other => panic!("unknown argument {other:?}: idle N [accept|recv|mix], echo C, single"),
        }
    }
    if jobs.is_empty() {
        jobs = vec![Job::Single, Job::Idle(1000, "mix"), Job::Echo(100)];
    }
    let limit = raise_fd_limit();
    println!(
        "scale: {} cores, RLIMIT_NOFILE {limit}, vm.max_map_count {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .unwrap_or_default()
            .trim()
    );
    // `USOCKET_SCALE_MAX_GUESTS=N`: a runner of N guests, beyond the default if need be.
    let max_guests = env_count("USOCKET_SCALE_MAX_GUESTS");
    // `USOCKET_SCALE_WORKERS=N`: the runner's worker threads (default: one per core).
    let workers = env_count("USOCKET_SCALE_WORKERS");
    let runner = Runner::with_config(RunnerConfig {
        cache: true,
        max_guests,
        workers,
        perf_map: std::env::var_os("USOCKET_PERF_MAP").is_some(),
    })
    .expect("runner");
    let components = Components::load(&runner);
    // The bench's own runtime: native peers, timers, and `Runner::run` where a job wants it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for job in jobs {
        match job {
            Job::Idle(n, mode) => rt.block_on(idle(&runner, &components, n, mode, limit)),
            Job::Echo(c) => echo(&runner, &components, &rt, c),
            Job::Single => single(&runner, &components, &rt),
        }
    }
    // Guests left behind (a failed wait) must not keep the bench alive.
    std::process::exit(0);
}

/// A count from the environment variable `name`, if set; a value that is not one stops the
/// bench rather than silently running with the default.
fn env_count(name: &str) -> Option<usize> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| {
        panic!("{name}={value:?}: not a count (a whole number such as 2); unset it for the default")
    }))
}

enum Job {
    Idle(usize, &'static str),
    Echo(usize),
    Single,
}

/// Raises the soft descriptor limit to the hard one; returns it.
fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(1 << 20);
    let raised = Rlimit {
        current: Some(hard),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => hard,
        Err(_) => limit.current.unwrap_or(1024),
    }
}

struct Components {
    probe: Component,
    echo_server: Component,
    poll_server: Component,
    /// `bench_wasi`, the load test's wasi:sockets server.
    wasi_server: Component,
}

impl Components {
    fn load(runner: &Runner) -> Components {
        let load = |name: &str| {
            let path = guest_path(name);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            runner
                .compile(&bytes)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"))
        };
        Components {
            probe: load("probe"),
            echo_server: load("echo_server"),
            poll_server: load("poll_server"),
            wasi_server: load("bench_wasi"),
        }
    }
}

/// Counts a guest's policy decisions (its socket calls that the policy sees), so the bench
/// knows how far it got without reading its output.
#[derive(Default)]
struct Progress {
    decisions: AtomicU32,
    first: Mutex<Option<Instant>>,
    changed: Notify,
}

impl Progress {
    fn hook(self: &Arc<Self>) -> Arc<dyn usocket_host::audit::AuditHook> {
        let me = self.clone();
        Arc::new(move |_: &AuditEvent| {
            me.first.lock().unwrap().get_or_insert_with(Instant::now);
            me.decisions.fetch_add(1, Ordering::Relaxed);
            me.changed.notify_waiters();
        })
    }

    /// Waits (bounded) until the guest made `n` decisions; false if it did not in time or its
    /// task ended first.
    async fn reached(&self, n: u32, task: &JoinHandle<wasmtime::Result<i32>>) -> bool {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.changed.notified();
            if self.decisions.load(Ordering::Relaxed) >= n {
                return true;
            }
            if task.is_finished() || tokio::time::Instant::now() >= deadline {
                return false;
            }
            // Short waits: a guest that ends (refused, trapped) makes no decision to wake us.
            let _ = tokio::time::timeout(Duration::from_millis(5), notified).await;
        }
    }
}

/// A guest's WASI context: `args`, output into memory (never read: bounded buffers).
fn wasi(args: &[String]) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(MemoryOutputPipe::new(1 << 20))
        .stderr(MemoryOutputPipe::new(64 << 10))
        .args(args)
        .build()
}

fn guest(name: &str, args: &[String], policy: &Arc<Policy>, limits: Limits) -> Guest {
    let mut argv = vec![name.to_string()];
    argv.extend_from_slice(args);
    Guest {
        wasi: wasi(&argv),
        usocket: UsocketCtx::new(name, policy.clone()).with_limits(limits),
        time_limit: None,
    }
}

fn vm_rss() -> u64 {
    proc_status("VmRSS")
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count())
        .unwrap_or(0)
}

/// `n` loopback ports nobody listens on, below the ephemeral range.
fn free_ports(n: usize) -> Vec<u16> {
    let ports: Vec<u16> = (10_000..32_768)
        .filter(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .take(n)
        .collect();
    assert_eq!(ports.len(), n, "not enough free ports in 10000-32767");
    ports
}

fn median<T: Ord + Copy>(v: &mut [T]) -> T {
    v.sort();
    v[v.len() / 2]
}

fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

// ---- idle guests ---------------------------------------------------------------------------

async fn idle(runner: &Runner, components: &Components, n: usize, mode: &str, fd_limit: u64) {
    // `recv` guests cost two descriptors (theirs and the native peer's), `accept` guests one.
    let recv_share = match mode {
        "accept" => 0,
        "recv" => n,
        _ => n / 2,
    };
    println!(
        "\nidle {n} ({mode}: {} in accept, {recv_share} in recv); runner: at most {} guests, \
         socket ceiling {}",
        n - recv_share,
        runner.max_guests(),
        runner.ceiling().max()
    );
    if (n + recv_share) as u64 + 256 > fd_limit {
        println!("  (the descriptor limit {fd_limit} is too low for this many: expect failures)");
    }
    let policy = conformance_policy();
    let ports = free_ports(n - recv_share);
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_port = peer.local_addr().unwrap().port().to_string();

    timings(runner, components, &policy, "before").await;
    let (rss0, maps0) = (vm_rss(), mappings());

    // Start the guests one after another: each is ready once it made its socket calls (and
    // for `recv`, once the native side accepted its connection).
    let mut handles: Vec<JoinHandle<wasmtime::Result<i32>>> = Vec::with_capacity(n);
    let mut peers: Vec<Option<TcpStream>> = Vec::with_capacity(n);
    let mut starts = Vec::with_capacity(n);
    let mut ports_used = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut failures: HashMap<String, usize> = HashMap::new();
    let mut running = Vec::with_capacity(n);
    let began = Instant::now();
    let mut ports_left = ports.into_iter();
    for i in 0..n {
        let recv = match mode {
            "accept" => false,
            "recv" => true,
            _ => i % 2 == 1,
        };
        let progress = Arc::new(Progress::default());
        let (args, decisions) = if recv {
            (vec!["hold-recv".into(), peer_port.clone()], 1)
        } else {
            let port = ports_left.next().unwrap();
            ports_used.push((i, port));
            (vec!["hold-accept".into(), port.to_string()], 2)
        };
        let mut g = guest("probe", &args, &policy, Limits::default());
        let stderr = MemoryOutputPipe::new(64 << 10);
        g.wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .args(&[&["probe".to_string()], &args[..]].concat())
            .build();
        g.usocket = g.usocket.with_audit(progress.hook());
        let t = Instant::now();
        let handle = runner.spawn(&components.probe, g);
        let ready = progress.reached(decisions, &handle).await;
        if let Some(first) = *progress.first.lock().unwrap() {
            starts.push(first - t);
        }
        let conn = if recv && ready {
            match tokio::time::timeout(PATIENCE, peer.accept()).await {
                Ok(Ok((conn, _))) => Some(conn),
                _ => None,
            }
        } else {
            None
        };
        if !ready || (recv && conn.is_none()) || handle.is_finished() {
            failed += 1;
            *failures.entry(failure(handle, &stderr).await).or_insert(0) += 1;
            handles.push(tokio::spawn(async { Ok(0) }));
            peers.push(None);
            running.push(false);
            continue;
        }
        handles.push(handle);
        peers.push(conn);
        running.push(true);
    }
    let started = began.elapsed();
    // Let the last guest reach its blocking call.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss1, maps1) = (vm_rss(), mappings());
    let live = runner.guests();
    println!(
        "  started {n} guests in {:.2} s ({} failed); {live} running",
        started.as_secs_f64(),
        failed
    );
    for (why, count) in &failures {
        println!("    {count} failed: {why}");
    }
    let per = |total: f64| total / live.max(1) as f64;
    println!(
        "  resident memory: {:.0} MiB before, {:.0} MiB with them: {:.1} KiB a guest \
         (peak {:.0} MiB)",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        per(rss1.saturating_sub(rss0) as f64 / 1024.0),
        proc_status("VmHWM") as f64 / 1048576.0
    );
    println!(
        "  memory mappings: {maps0} before, {maps1} with them: {:.2} a guest",
        per(maps1.saturating_sub(maps0) as f64)
    );
    if !starts.is_empty() {
        let mut s = starts.clone();
        let med = median(&mut s);
        println!(
            "  start (spawn to first socket call): min {} / median {} / max {}; \
             median of the last 100 {}",
            micros(s[0]),
            micros(med),
            micros(s[s.len() - 1]),
            micros(median(
                &mut starts[starts.len().saturating_sub(100)..].to_vec()
            ))
        );
    }
    timings(runner, components, &policy, "with them idle").await;

    // Round trips to the last guests started, newest first: the client's connect (or byte)
    // wakes the guest, which returns from accept (or recv) and exits, closing its sockets.
    let mut trips = Vec::new();
    let accept_ports: HashMap<usize, u16> = ports_used.into_iter().collect();
    for i in (0..n).rev().filter(|&i| running[i]).take(5) {
        let t = Instant::now();
        let done = match (accept_ports.get(&i), peers[i].as_mut()) {
            (Some(port), _) => async {
                let mut c = TcpStream::connect(("127.0.0.1", *port)).await?;
                c.read(&mut [0u8; 1]).await
            }
            .await
            .is_ok(),
            (None, Some(conn)) => async {
                conn.write_all(b"x").await?;
                conn.read(&mut [0u8; 1]).await
            }
            .await
            .is_ok(),
            _ => false,
        };
        let exited = tokio::time::timeout(PATIENCE, &mut handles[i])
            .await
            .is_ok();
        if done && exited {
            trips.push(t.elapsed());
        }
    }
    if !trips.is_empty() {
        let mut t = trips.clone();
        println!(
            "  round trip to guest N (the last started; {} samples, guests N..N-4): \
             min {} / median {} / max {}",
            t.len(),
            micros(*t.iter().min().unwrap()),
            micros(median(&mut t)),
            micros(*trips.iter().max().unwrap())
        );
    }

    // Stop them all; bounded.
    let t = Instant::now();
    for h in &handles {
        h.abort();
    }
    drop(peers);
    let deadline = Instant::now() + PATIENCE;
    while runner.guests() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "  stopped them in {:.2} s ({} left)",
        t.elapsed().as_secs_f64(),
        runner.guests()
    );
}

/// Why a guest did not get ready: the runner's error, or the last line the guest wrote to
/// stderr (a Rust guest's panic message) when it trapped.
async fn failure(handle: JoinHandle<wasmtime::Result<i32>>, stderr: &MemoryOutputPipe) -> String {
    handle.abort();
    let said = String::from_utf8_lossy(&stderr.contents())
        .lines()
        .rfind(|l| !l.trim().is_empty() && !l.starts_with("note:"))
        .unwrap_or("")
        .to_string();
    match tokio::time::timeout(Duration::from_secs(1), handle).await {
        Ok(Ok(Err(e))) if said.is_empty() => {
            let e = format!("{e:#}");
            e.lines().next().unwrap_or("").to_string()
        }
        Ok(Ok(Err(_))) => format!("the guest trapped: {said}"),
        Ok(Ok(Ok(code))) => format!("the guest exited with {code}"),
        _ => "the guest did not get ready in time".to_string(),
    }
}

/// The `Store` data of the bench's own instantiations.
struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
    usocket: UsocketCtx,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl UsocketView for Bare {
    fn usocket(&mut self) -> UsocketCtxView<'_> {
        UsocketCtxView {
            ctx: &mut self.usocket,
            table: &mut self.table,
        }
    }
}

/// Instantiation with the runner's engine (its pools): linking and type checks every time, as
/// `Runner::run` did before it cached them, and from a prepared `CommandPre`, as it does now;
/// then whole runs through the runner of a guest that exits at once (instantiation, the
/// guest's start-up, its exit and the teardown).
async fn timings(runner: &Runner, components: &Components, policy: &Arc<Policy>, when: &str) {
    if runner.guests() >= runner.max_guests() {
        println!("  instantiate ({when}): skipped, the runner is full (and so are its pools)");
        return;
    }
    let engine: &Engine = runner.engine();
    let mut linker = Linker::<Bare>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    usocket_host::add_to_linker_async(&mut linker).unwrap();
    let store = || {
        let mut store = Store::new(
            engine,
            Bare {
                wasi: wasi(&["probe".into()]),
                table: ResourceTable::new(),
                usocket: UsocketCtx::new("probe", policy.clone()),
            },
        );
        store.epoch_deadline_async_yield_and_update(1);
        store
    };
    let component = &components.probe;
    let mut uncached = Vec::with_capacity(SAMPLES);
    let mut cached = Vec::with_capacity(SAMPLES);
    let pre = CommandPre::new(linker.instantiate_pre(component).unwrap()).unwrap();
    for _ in 0..SAMPLES {
        let t = Instant::now();
        let mut s = store();
        let fresh = CommandPre::new(linker.instantiate_pre(component).unwrap()).unwrap();
        fresh.instantiate_async(&mut s).await.unwrap();
        uncached.push(t.elapsed());
        drop(s);
        let t = Instant::now();
        let mut s = store();
        pre.instantiate_async(&mut s).await.unwrap();
        cached.push(t.elapsed());
    }
    let mut runs = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let g = guest("probe", &[], policy, Limits::default());
        let t = Instant::now();
        let code = runner.run(component, g).await.expect("trivial guest");
        runs.push(t.elapsed());
        assert_eq!(code, 0);
    }
    println!(
        "  instantiate ({when}; median of {SAMPLES}): linking each time {}, prepared {}; \
         a whole run of a guest that exits at once {}",
        micros(median(&mut uncached)),
        micros(median(&mut cached)),
        micros(median(&mut runs))
    );
}

// ---- one guest's round trips ----------------------------------------------------------------

/// Round trips of the one guest in [`single`].
const SINGLE_ECHOES: u32 = 20_000;

/// One guest (the probe's `echo`) doing 64-byte round trips with a native echo peer (a thread
/// of its own, blocking std I/O), run by `Runner::run` on a current-thread runtime (as the CLI
/// does), on a multi-thread runtime of 2 workers (in `block_on`, as the CLI did, and in a task
/// of the runtime), and by `Runner::spawn`.
fn single(runner: &Runner, components: &Components, multi: &tokio::runtime::Runtime) {
    println!(
        "\none guest, {SINGLE_ECHOES} 64-byte round trips with a native echo peer, {ROUNDS} rounds"
    );
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let policy = usocket_tests::policy(&["connect=127.0.0.1:*"], &[]);
    for label in [
        "current-thread, block_on (CLI)",
        "multi-thread (2), block_on",
        "multi-thread (2), in a task",
        "Runner::spawn",
    ] {
        let mut times = Vec::new();
        for _ in 0..ROUNDS {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let peer = std::thread::spawn(move || {
                use std::io::{Read, Write};
                let (mut c, _) = listener.accept().unwrap();
                c.set_nodelay(true).unwrap();
                let mut buf = [0u8; 64];
                while c.read_exact(&mut buf).is_ok() && c.write_all(&buf).is_ok() {}
            });
            let args = vec!["echo".into(), port.to_string(), SINGLE_ECHOES.to_string()];
            let g = guest("probe", &args, &policy, Limits::default());
            let (runner2, component) = (runner.clone(), components.probe.clone());
            let t = Instant::now();
            let code = match label {
                "Runner::spawn" => multi.block_on(runner.spawn(&component, g)).unwrap(),
                "multi-thread (2), block_on" => multi.block_on(runner.run(&component, g)),
                "multi-thread (2), in a task" => multi
                    .block_on(multi.spawn(async move { runner2.run(&component, g).await }))
                    .unwrap(),
                _ => current.block_on(runner.run(&component, g)),
            }
            .expect("echo guest");
            times.push(t.elapsed());
            assert_eq!(code, 0);
            peer.join().unwrap();
        }
        times.sort();
        let per = |d: Duration| micros(d / SINGLE_ECHOES);
        println!(
            "  {label:<30} min {} / median {} / max {} a round trip",
            per(times[0]),
            per(times[times.len() / 2]),
            per(times[times.len() - 1])
        );
    }
}

// ---- echo load -----------------------------------------------------------------------------

/// The 64 bytes of one request: a line, so the line-echo examples answer it whole.
const REQUEST: [u8; 64] = {
    let mut line = [b'x'; 64];
    line[63] = b'\n';
    line
};

/// What one round of the load generator measured.
struct Load {
    /// Round trips per second, counted over [`ECHO_WINDOW`].
    rate: f64,
    /// CPU time the process spent per round trip over the window, the load generator's own
    /// thread left out: the server's cost of a request (steadier than the rate on a machine
    /// whose speed drifts).
    server_cpu: Duration,
    /// Clients that failed (connect, timeout, short echo).
    failed: usize,
}

/// `clients` native clients, each connected to `ports[i % ports.len()]`, doing round trips
/// until the window closes; on a runtime (one thread) of their own.
fn load(ports: &[u16], clients: usize) -> Load {
    let ports = ports.to_vec();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let count = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks = Vec::new();
            for i in 0..clients {
                let (count, stop, port) = (count.clone(), stop.clone(), ports[i % ports.len()]);
                tasks.push(tokio::spawn(async move {
                    let mut back = [0u8; 64];
                    let client = async {
                        let mut c = TcpStream::connect(("127.0.0.1", port)).await?;
                        c.set_nodelay(true)?;
                        while !stop.load(Ordering::Relaxed) {
                            c.write_all(&REQUEST).await?;
                            c.read_exact(&mut back).await?;
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok::<_, std::io::Error>(())
                    };
                    // A client stuck longer than the whole round has failed.
                    matches!(
                        tokio::time::timeout(ECHO_WINDOW + PATIENCE, client).await,
                        Ok(Ok(()))
                    ) && back == REQUEST
                }));
            }
            // Warm up: every client connected and going.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (c0, t0) = (count.load(Ordering::Relaxed), Instant::now());
            let (p0, g0) = (
                cpu_time("/proc/self/stat"),
                cpu_time("/proc/thread-self/stat"),
            );
            tokio::time::sleep(ECHO_WINDOW).await;
            let (c1, t1) = (count.load(Ordering::Relaxed), Instant::now());
            let (p1, g1) = (
                cpu_time("/proc/self/stat"),
                cpu_time("/proc/thread-self/stat"),
            );
            stop.store(true, Ordering::Relaxed);
            let mut failed = 0;
            for t in tasks {
                if !t.await.unwrap_or(false) {
                    failed += 1;
                }
            }
            let server = (p1 - p0).saturating_sub(g1 - g0);
            Load {
                rate: (c1 - c0) as f64 / (t1 - t0).as_secs_f64(),
                server_cpu: server / u32::try_from(c1 - c0).unwrap_or(u32::MAX).max(1),
                failed,
            }
        })
    })
    .join()
    .unwrap()
}

/// User and system CPU time of the process or thread whose `stat` file is `path`.
fn cpu_time(path: &str) -> Duration {
    let text = std::fs::read_to_string(path).expect("a /proc stat file");
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = text[text.rfind(')').expect("stat") + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports these in USER_HZ, 100 a second on every architecture it runs on.
    Duration::from_millis(ticks * 10)
}

/// How the guests of a round run.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// `Runner::run` in tasks of one multi-thread runtime (2 workers).
    Multi,
    /// `Runner::spawn`: one current-thread runtime per core.
    PerCore,
}

/// Starts one guest of `component` with `args` under `layout`; returns its handle and its
/// progress.
fn start(
    runner: &Runner,
    rt: &tokio::runtime::Runtime,
    layout: Layout,
    component: &Component,
    name: &str,
    args: Vec<String>,
    limits: Limits,
) -> (JoinHandle<wasmtime::Result<i32>>, Arc<Progress>) {
    let progress = Arc::new(Progress::default());
    let policy = usocket_tests::policy(&["bind,listen,accept=127.0.0.1:*"], &[]);
    let mut g = guest(name, &args, &policy, limits);
    g.usocket = g.usocket.with_audit(progress.hook());
    let handle = match layout {
        Layout::PerCore => runner.spawn(component, g),
        Layout::Multi => {
            let (runner, component) = (runner.clone(), component.clone());
            rt.spawn(async move { runner.run(&component, g).await })
        }
    };
    (handle, progress)
}

/// One round against guests: starts them, waits until each listens, runs the load, stops them.
fn guest_round(
    runner: &Runner,
    rt: &tokio::runtime::Runtime,
    layout: Layout,
    components: &Components,
    poll: bool,
    clients: usize,
) -> Load {
    let ports = free_ports(if poll { 1 } else { clients });
    let mut guests = Vec::new();
    for &port in &ports {
        let (component, name, args, limits) = if poll {
            let limits = Limits {
                max_sockets: clients + 16,
                ..Limits::default()
            };
            (
                &components.poll_server,
                "poll_server",
                vec![port.to_string()],
                limits,
            )
        } else {
            let args = vec![port.to_string(), "1".into(), "30".into()];
            (
                &components.echo_server,
                "echo_server",
                args,
                Limits::default(),
            )
        };
        guests.push(start(runner, rt, layout, component, name, args, limits));
    }
    // Listening: bind and listen decided.
    for (i, (handle, progress)) in guests.iter().enumerate() {
        assert!(
            rt.block_on(progress.reached(2, handle)),
            "guest {i} of {} did not start listening",
            guests.len()
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    let result = load(&ports, clients);
    for (handle, _) in &guests {
        handle.abort();
    }
    let deadline = Instant::now() + PATIENCE;
    while runner.guests() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    result
}

/// A server of the echo load test.
#[derive(Clone, Copy, PartialEq)]
enum Server {
    /// A tokio echo server in the bench's process, a task per connection.
    Native,
    /// usocket guests: `poll_server` (true: one guest for all) or `echo_server` (one a client).
    Usocket(bool, Layout),
    /// The peer: `bench_wasi serve`, a Rust `std::net` guest per client over wasmtime-wasi's
    /// `wasi:sockets`, as tasks of the multi-thread runtime (same engine and pools).
    Wasi,
}

/// One round against wasi:sockets guests, one a client (`bench_wasi serve PORT`), as a user
/// of plain wasmtime-wasi would run them: tasks of a multi-thread runtime, the linking done
/// once for all the round's guests.
fn wasi_round(
    runner: &Runner,
    rt: &tokio::runtime::Runtime,
    components: &Components,
    clients: usize,
) -> Load {
    let engine = runner.engine();
    let mut linker = Linker::<WasiOnly>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    let pre = CommandPre::new(linker.instantiate_pre(&components.wasi_server).unwrap()).unwrap();
    let ports = free_ports(clients);
    let mut guests = Vec::new();
    for &port in &ports {
        let stdout = MemoryOutputPipe::new(1 << 10);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(MemoryOutputPipe::new(64 << 10))
            .args(&["bench_wasi", "serve", &port.to_string()])
            .allow_tcp(true)
            .socket_addr_check(|addr, _| Box::pin(async move { addr.ip().is_loopback() }))
            .build();
        let mut store = Store::new(engine, WasiOnly::new(wasi));
        store.epoch_deadline_async_yield_and_update(1);
        let pre = pre.clone();
        let task = rt.spawn(async move {
            let command = pre.instantiate_async(&mut store).await?;
            command.wasi_cli_run().call_run(&mut store).await
        });
        guests.push((task, stdout));
    }
    // Listening: the guest printed so after `listen`.
    let deadline = Instant::now() + PATIENCE;
    for (i, (task, stdout)) in guests.iter().enumerate() {
        while stdout.contents().is_empty() {
            assert!(
                !task.is_finished() && Instant::now() < deadline,
                "wasi:sockets guest {i} of {clients} did not start listening"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let result = load(&ports, clients);
    for (task, _) in &guests {
        task.abort();
    }
    let deadline = Instant::now() + PATIENCE;
    while guests.iter().any(|(task, _)| !task.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    result
}

/// One round against a native tokio echo server (a task per connection) on `rt`.
fn native_round(rt: &tokio::runtime::Runtime, clients: usize) -> Load {
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = rt.spawn(async move {
        let mut conns = Vec::new();
        while let Ok((mut c, _)) = listener.accept().await {
            conns.push(tokio::spawn(async move {
                let _ = c.set_nodelay(true);
                let mut buf = [0u8; 4096];
                loop {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }));
        }
    });
    let result = load(&[port], clients);
    server.abort();
    result
}

fn echo(runner: &Runner, components: &Components, rt: &tokio::runtime::Runtime, clients: usize) {
    println!("\necho {clients} clients, 64-byte round trips, {ROUNDS} rounds of {ECHO_WINDOW:?}");
    println!(
        "  {:<36} {:>34}  {:>6}  {:>15}",
        "server", "requests/s min / median / max", "ratio", "CPU/request, ratio"
    );
    let variants: [(&str, Server); 6] = [
        ("native tokio (multi-thread, 2)", Server::Native),
        (
            "poll_server, 1 guest, multi-thread",
            Server::Usocket(true, Layout::Multi),
        ),
        (
            "poll_server, 1 guest, Runner::spawn",
            Server::Usocket(true, Layout::PerCore),
        ),
        (
            "echo_server, guest/client, multi-thr.",
            Server::Usocket(false, Layout::Multi),
        ),
        (
            "echo_server, guest/client, spawn",
            Server::Usocket(false, Layout::PerCore),
        ),
        ("wasi:sockets, guest/client, multi-thr.", Server::Wasi),
    ];
    // `USOCKET_ECHO_ONLY=spawn` runs the variants whose label contains it (and native).
    let only = std::env::var("USOCKET_ECHO_ONLY").ok();
    let variants: Vec<_> = variants
        .into_iter()
        .filter(|(label, variant)| {
            *variant == Server::Native || only.as_ref().is_none_or(|o| label.contains(o.as_str()))
        })
        .collect();
    // Rounds alternate between the variants, so that a machine whose speed drifts (shared
    // cores) weighs on all of them alike.
    let mut rates = vec![Vec::new(); variants.len()];
    let mut cpus = vec![Vec::new(); variants.len()];
    let mut failed = vec![0; variants.len()];
    for _ in 0..ROUNDS {
        for (i, (_, variant)) in variants.iter().enumerate() {
            let load = match *variant {
                Server::Native => native_round(rt, clients),
                Server::Usocket(poll, layout) => {
                    guest_round(runner, rt, layout, components, poll, clients)
                }
                Server::Wasi => wasi_round(runner, rt, components, clients),
            };
            rates[i].push(load.rate as u64);
            cpus[i].push(load.server_cpu);
            failed[i] += load.failed;
        }
    }
    let native = median(&mut rates[0]) as f64;
    let native_cpu = median(&mut cpus[0]);
    for (i, (label, _)) in variants.iter().enumerate() {
        let rates = &mut rates[i];
        let med = median(rates) as f64;
        let cpu = median(&mut cpus[i]);
        println!(
            "  {label:<36} {:>10} / {:>9} / {:>9}  {:>6.2}  {:>6.1} us {:>5.2}{}",
            rates[0],
            med as u64,
            rates[rates.len() - 1],
            med / native,
            cpu.as_secs_f64() * 1e6,
            native_cpu.as_secs_f64() / cpu.as_secs_f64(),
            if failed[i] > 0 {
                format!("  ({} clients failed)", failed[i])
            } else {
                String::new()
            }
        );
    }
}
