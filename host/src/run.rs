//! Running `wasi:cli` command components with `usocket`: the engine, linker and store set-up an
//! embedder would otherwise write by hand. Use [`crate::add_to_linker_async`] directly for more
//! control.
//!
//! # Runtimes
//!
//! [`Runner::run`] runs a guest as a future on whatever tokio runtime awaits it, current-thread
//! or multi-thread. A guest blocked in a socket call holds no thread; a guest that runs wasm
//! for a whole epoch tick (10 ms) without waiting in a socket call yields at the tick, so it
//! cannot starve the others (one that waited since the last tick already gave its thread up,
//! and goes on: a forced yield would cost it a fiber switch out and back per request under
//! load; so a guest computes for at most two ticks between yields). It yields with tokio's
//! `yield_now`, which runs it again only after the runtime has polled for I/O, so the guests
//! it kept waiting see their wake-ups first on any tokio runtime, whatever its
//! `event_interval`.
//!
//! For many guests, [`Runner::spawn`] is the default way: it runs each guest on one of the
//! runner's worker threads (one per core unless [`RunnerConfig::workers`] says otherwise),
//! each a current-thread runtime, choosing the worker with the fewest guests. A guest's
//! execution and its sockets' I/O then stay on one thread, with no cross-thread wake-ups.
//! Against one multi-thread runtime running the same guests, this served as many requests per
//! second or more in every echo load measured (100 and 1,000 clients, one guest for all or one
//! per client: `cargo bench -p usocket-tests --bench scale`; `docs/scaling.md` in the
//! repository has the figures).
//!
//! To cancel a guest, drop (or abort the task running) the future of [`Runner::run`] or the
//! [`JoinHandle`] of [`Runner::spawn`] (`abort`), or call the `Canceller` of its context
//! ([`UsocketCtx::canceller`]): its `Store` goes, and with the `Store` every socket it had
//! open. Every guest a runner runs counts its sockets against the runner's [`SocketCeiling`]
//! unless its context has one of its own.
//!
//! # Capacity
//!
//! A runner runs at most [`Runner::max_guests`] guests at once; one more is refused at once
//! with a [`RunnerFull`] error (the running ones go on). Instances come from wasmtime's pooling
//! allocator, sized for that many guests: a guest that finds no room in a pool fails alone
//! with wasmtime's error, never by the process running out of memory mappings. Each guest
//! takes up to 6 of them (its fiber stack and guard page, made with the pool, and its linear
//! memory split around its data's copy-on-write image), and Linux allows a process
//! `vm.max_map_count`, 65,530 by default: the default number of guests is what fits, 10,233
//! with that default ([`RunnerConfig::max_guests`]).
//!
//! Each guest's `Store` has a resource limiter that holds its linear memories and tables to
//! [`Limits::max_memory`](crate::Limits::max_memory) (default 256 MiB): a `memory.grow` past
//! it returns -1 to the guest (a Rust guest's allocation fails, and it usually aborts with a
//! trap), never a host out-of-memory. An embedder that builds its own `Store` applies the same
//! limit with [`Limits::memory_limiter`](crate::Limits::memory_limiter):
//! `store.limiter(|data| &mut data.limiter)` (see [`crate::limits`]).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::Duration;

use tokio::task::JoinHandle;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

use crate::ctx::{UsocketCtx, UsocketCtxView, UsocketView};
use crate::limits::MemoryLimiter;
use crate::quota::SocketCeiling;

/// How often the engine's epoch advances; a running guest yields to others at each tick.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How many components' instantiation work a runner keeps (see [`Runner::run`]).
const PREPARED_CACHE: usize = 8;

/// The `Store` data of a guest run by a [`Runner`]: WASI, the resource table, `usocket`, and
/// the limiter of the guest's memory.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    usocket: UsocketCtx,
    limiter: MemoryLimiter,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl UsocketView for GuestState {
    fn usocket(&mut self) -> UsocketCtxView<'_> {
        UsocketCtxView {
            ctx: &mut self.usocket,
            table: &mut self.table,
        }
    }
}

/// One guest to run: its WASI context (args, stdio, env), its `usocket` context (policy and
/// limits), and an optional bound on its run time.
pub struct Guest {
    /// WASI for the guest. Do not grant wasi:sockets here (`inherit_network`,
    /// `socket_addr_check`): `usocket` is meant to be the guest's only way out.
    ///
    /// Prefer async output streams (`wasmtime_wasi::cli::AsyncStdoutStream` over
    /// `tokio::io::stdout()`, or a `MemoryOutputPipe`) to `inherit_stdout`/`inherit_stdio`:
    /// an inherited stream writes synchronously, so a guest writing to a pipe nobody reads
    /// blocks the thread that runs it, where neither [`Guest::time_limit`] nor dropping the
    /// future can stop it. (The `usocket` CLI uses async streams.)
    pub wasi: WasiCtx,
    /// The guest's policy and quotas.
    pub usocket: UsocketCtx,
    /// Stop the guest with an error once it has run this long (at its next await point: a
    /// host call that waits, or an epoch tick of running wasm code).
    pub time_limit: Option<Duration>,
}

/// How a [`Runner`] sets up wasmtime and how many guests it takes. Build it with struct update
/// syntax over [`RunnerConfig::default`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunnerConfig {
    /// Use wasmtime's on-disk compilation cache.
    pub cache: bool,
    /// The most guests the runner runs at once (at least 1); one more is refused with
    /// [`RunnerFull`]. `None`: as many as the process's budget of memory mappings allows
    /// (`vm.max_map_count` less what the process uses already and a reserve for the host, at
    /// 6 mappings per guest: 10,233 with Linux's default 65,530), at most [`MAX_GUESTS`]. The
    /// instance pools are sized for this many guests.
    ///
    /// A larger number risks the process running out of memory mappings: a guest's
    /// instantiation then fails alone, but so may any allocation of the host, which aborts.
    pub max_guests: Option<usize>,
    /// Worker threads of [`Runner::spawn`], each a current-thread runtime. `None`: one per
    /// core (`std::thread::available_parallelism`).
    pub workers: Option<usize>,
    /// Write `/tmp/perf-PID.map` naming the guests' compiled functions, so that `perf`
    /// profiles show them by name (for profiling; costs a little at each compilation).
    pub perf_map: bool,
}

/// The most guests a runner takes by default, whatever the budget of memory mappings: their
/// memory slots reserve 48 TiB of the 128 TiB of address space of a 64-bit Linux process.
pub const MAX_GUESTS: usize = 12_288;

/// The error of a guest a [`Runner`] refused because it already runs
/// [`Runner::max_guests`] guests. Find it with `error.downcast_ref::<RunnerFull>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunnerFull {
    /// The runner's limit.
    pub max_guests: usize,
}

impl fmt::Display for RunnerFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the runner already runs its limit of {} guests at once (RunnerConfig::max_guests); \
             this guest was not started, the others go on",
            self.max_guests
        )
    }
}

impl std::error::Error for RunnerFull {}

/// An engine and linker set up for async `usocket` guests, with an epoch ticker. Cloning is
/// cheap: clones share the engine, the guests' capacity and the workers.
#[derive(Clone)]
pub struct Runner {
    shared: Arc<Shared>,
}

struct Shared {
    engine: Engine,
    linker: Linker<GuestState>,
    ticker: Arc<AtomicBool>,
    ceiling: SocketCeiling,
    max_guests: usize,
    /// Guests admitted and not yet finished.
    guests: AtomicUsize,
    /// The instantiation work of the last components run, most recent last: the address of
    /// the component's code identifies it (the entry keeps the component, so its code stays
    /// where it is).
    prepared: Mutex<Vec<(usize, CommandPre<GuestState>)>>,
    worker_count: usize,
    workers: OnceLock<Workers>,
}

impl Runner {
    /// A runner with the default configuration, and wasmtime's on-disk compilation cache
    /// enabled when `cache` is true.
    pub fn new(cache: bool) -> wasmtime::Result<Runner> {
        Runner::with_config(RunnerConfig {
            cache,
            ..RunnerConfig::default()
        })
    }

    /// A runner set up as `config` says.
    pub fn with_config(config: RunnerConfig) -> wasmtime::Result<Runner> {
        let mut max_guests = match config.max_guests {
            Some(n) => {
                if let Some(budget) = mapping_budget(MAPPINGS_PER_GUEST).filter(|&b| n > b) {
                    tracing::warn!(
                        "a runner of {n} guests may run out of memory mappings \
                         (vm.max_map_count) after about {budget}: then allocations anywhere in \
                         the process fail, and it aborts"
                    );
                }
                n.max(1)
            }
            None => default_max_guests(MAPPINGS_PER_GUEST),
        };
        let mut wasm = Config::new();
        wasm.epoch_interruption(true);
        if config.perf_map {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if config.cache {
            wasm.cache(Some(wasmtime::Cache::from_file(None)?));
        }
        // wasmtime's default on 64-bit hosts, set here because the pool's slots depend on it.
        wasm.memory_reservation(MEMORY_RESERVATION as u64);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(max_guests)));
        let engine = match Engine::new(&wasm) {
            Ok(engine) => engine,
            Err(e) => {
                // The pools reserve their address space up front, which a limit on it
                // (RLIMIT_AS, strict overcommit) can refuse: allocate on demand instead. The
                // compiled code is the same either way.
                tracing::warn!(
                    "cannot reserve wasmtime's instance pools for {max_guests} guests ({e:#}); \
                     allocating instances on demand"
                );
                wasm.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                if config.max_guests.is_none() {
                    max_guests = default_max_guests(MAPPINGS_PER_GUEST_ON_DEMAND);
                }
                Engine::new(&wasm)?
            }
        };
        let mut linker = Linker::new(&engine);
        // wasi:cli 0.2.12's `exit-with-code` (linked by default) carries a guest's exit(n).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::add_to_linker_async(&mut linker)?;

        let ticker = Arc::new(AtomicBool::new(true));
        let (running, weak) = (ticker.clone(), engine.weak());
        thread::Builder::new()
            .name("usocket-epoch".into())
            .spawn(move || {
                while running.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        let worker_count = config
            .workers
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        Ok(Runner {
            shared: Arc::new(Shared {
                engine,
                linker,
                ticker,
                ceiling: SocketCeiling::from_fd_limit(),
                max_guests,
                guests: AtomicUsize::new(0),
                prepared: Mutex::new(Vec::new()),
                worker_count,
                workers: OnceLock::new(),
            }),
        })
    }

    /// The engine, to compile components with.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// The socket ceiling shared by the guests this runner runs (those whose context has no
    /// ceiling of its own): three quarters of the process's descriptor limit.
    pub fn ceiling(&self) -> &SocketCeiling {
        &self.shared.ceiling
    }

    /// The most guests this runner runs at once.
    pub fn max_guests(&self) -> usize {
        self.shared.max_guests
    }

    /// How many guests this runner runs now (admitted and not yet finished).
    pub fn guests(&self) -> usize {
        self.shared.guests.load(Ordering::Relaxed)
    }

    /// Compiles a component from its bytes.
    pub fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        Component::new(&self.shared.engine, bytes)
    }

    /// Compiles a component ahead of time: the bytes [`Runner::load_precompiled`] loads
    /// without compiling (for this wasmtime version, configuration and CPU).
    pub fn precompile(&self, bytes: &[u8]) -> wasmtime::Result<Vec<u8>> {
        self.shared.engine.precompile_component(bytes)
    }

    /// Whether `bytes` start like a precompiled component (see [`Runner::precompile`]).
    pub fn is_precompiled(bytes: &[u8]) -> bool {
        matches!(
            Engine::detect_precompiled(bytes),
            Some(wasmtime::Precompiled::Component)
        )
    }

    /// Loads a component precompiled by [`Runner::precompile`], memory-mapping the file.
    ///
    /// # Safety
    ///
    /// A precompiled component is native code that runs unchecked: wasmtime verifies only that
    /// it was made for this engine's version and settings, not that it came from valid
    /// WebAssembly. Load only files you compiled yourself (or trust as much as this process's
    /// own binary), and that nobody can change while they are mapped.
    #[allow(
        unsafe_code,
        reason = "deserializing is unsafe; the caller vouches for the file"
    )]
    pub unsafe fn load_precompiled(&self, path: &std::path::Path) -> wasmtime::Result<Component> {
        // SAFETY: the caller vouches for the file (see above).
        unsafe { Component::deserialize_file(&self.shared.engine, path) }
    }

    /// Runs `component`'s `wasi:cli/run` to completion on the runtime that awaits it and
    /// returns its exit code (0 for a normal return, 1 for `Err` from `main`, or the code
    /// passed to `exit`).
    ///
    /// Traps and time-outs are errors; so is a runner at [`Runner::max_guests`]
    /// ([`RunnerFull`]). Cancel-safe: dropping the future stops the guest and closes its
    /// sockets.
    ///
    /// The runner keeps the instantiation work (linking, type checks) of the last 8 components
    /// it ran, and so keeps them loaded: running a component again costs only its
    /// instantiation.
    pub async fn run(&self, component: &Component, guest: Guest) -> wasmtime::Result<i32> {
        self.admit()?.start(component, guest)?.finish().await
    }

    /// Runs `component` like [`Runner::run`] as a task on one of the runner's worker threads
    /// (the one with the fewest guests; see the [module docs](self#runtimes)), and returns at
    /// once. Callable from any thread, in a runtime or not.
    ///
    /// A runner at [`Runner::max_guests`] refuses the guest here, before it starts: the handle
    /// then yields [`RunnerFull`]. Aborting the handle stops the guest and closes its sockets.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use usocket_host::run::{Guest, Runner};
    /// # use usocket_host::{Policy, UsocketCtx};
    /// # fn main() -> wasmtime::Result<()> {
    /// let runner = Runner::new(true)?;
    /// let component = runner.compile(&std::fs::read("guest.wasm")?)?;
    /// let guest = Guest {
    ///     wasi: wasmtime_wasi::WasiCtx::builder().args(&["guest"]).build(),
    ///     usocket: UsocketCtx::new("guest", Arc::new(Policy::deny_all())),
    ///     time_limit: None,
    /// };
    /// let handle = runner.spawn(&component, guest);
    /// // From any runtime: `handle.await??` is its exit code; `handle.abort()` stops it.
    /// # drop(handle);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// If the process cannot start a single worker thread (out of threads or descriptors)
    /// and the caller is not in a tokio runtime either, which could run a task that reports
    /// it. (Workers that could not start are left out; in a runtime, the handle yields the
    /// error.)
    pub fn spawn(&self, component: &Component, guest: Guest) -> JoinHandle<wasmtime::Result<i32>> {
        let Some(worker) = self.shared.workers().least_busy() else {
            let error = wasmtime::Error::msg(
                "the runner could not start a worker thread (the process is out of threads \
                 or file descriptors; see the log)",
            );
            match tokio::runtime::Handle::try_current() {
                Ok(here) => return here.spawn(async move { Err(error) }),
                Err(_) => panic!("usocket Runner::spawn: {error}"),
            }
        };
        // Set up here, so that the task holds only the guest's `Store` while it runs.
        let started = self
            .admit()
            .and_then(|admitted| admitted.start(component, guest));
        let live = worker.live.clone();
        live.fetch_add(1, Ordering::Relaxed);
        worker.handle.spawn(async move {
            let result = match started {
                Ok(started) => started.finish().await,
                Err(e) => Err(e),
            };
            live.fetch_sub(1, Ordering::Relaxed);
            result
        })
    }

    /// Takes one of the runner's places for a guest, or refuses with [`RunnerFull`].
    fn admit(&self) -> wasmtime::Result<Admitted> {
        let max = self.shared.max_guests;
        let taken = self
            .shared
            .guests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Admitted(self.clone())),
            Err(_) => Err(wasmtime::Error::new(RunnerFull { max_guests: max })),
        }
    }

    /// The component's instantiation work (linking and type checks), done once per component
    /// while it stays among the last [`PREPARED_CACHE`] run.
    fn prepare(&self, component: &Component) -> wasmtime::Result<CommandPre<GuestState>> {
        let key = component.image_range().start as usize;
        let lock = || {
            self.shared
                .prepared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        {
            let mut cache = lock();
            if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
                let entry = cache.remove(i);
                let pre = entry.1.clone();
                cache.push(entry);
                return Ok(pre);
            }
        }
        let pre = CommandPre::new(self.shared.linker.instantiate_pre(component)?)?;
        let mut cache = lock();
        if !cache.iter().any(|(k, _)| *k == key) {
            if cache.len() == PREPARED_CACHE {
                cache.remove(0);
            }
            cache.push((key, pre.clone()));
        }
        Ok(pre)
    }
}

/// A guest's place in its runner, given back when the guest ends (or is dropped).
struct Admitted(Runner);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.shared.guests.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admitted {
    /// The guest's `Store`, ready to instantiate `component` in.
    fn start(self, component: &Component, mut guest: Guest) -> wasmtime::Result<Started> {
        let runner = &self.0;
        let pre = runner.prepare(component)?;
        guest
            .usocket
            .set_default_ceiling(runner.shared.ceiling.clone());
        let state = GuestState {
            wasi: guest.wasi,
            table: ResourceTable::new(),
            limiter: guest.usocket.limits().memory_limiter(),
            usocket: guest.usocket,
        };
        let mut store = Store::new(&runner.shared.engine, state);
        store.limiter(|state| &mut state.limiter);
        // At each epoch tick a guest that ran wasm the whole tick yields its thread to the
        // other guests, with tokio's `yield_now`, which reschedules it only after the runtime
        // has polled for I/O (the guests it kept waiting see their wake-ups first, whatever
        // the runtime's `event_interval`). One that waited in a socket call since the last
        // tick already gave the thread up: making it yield again would cost a switch out of
        // its fiber and back per request.
        store.epoch_deadline_callback(|cx| {
            Ok(if cx.data().usocket.canceller().take_waited() {
                UpdateDeadline::Continue(1)
            } else {
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            })
        });
        Ok(Started {
            pre,
            store,
            time_limit: guest.time_limit,
            _admitted: self,
        })
    }
}

/// A guest set up to run: all a running guest's future holds.
struct Started {
    pre: CommandPre<GuestState>,
    store: Store<GuestState>,
    time_limit: Option<Duration>,
    /// Last: the place is given back only once the `Store` (and its instance) is gone.
    _admitted: Admitted,
}

impl Started {
    async fn finish(mut self) -> wasmtime::Result<i32> {
        let Started {
            pre,
            store,
            time_limit,
            ..
        } = &mut self;
        let run = async {
            // Boxed: instantiation needs much more state than the run after it, and only
            // briefly.
            let command = Box::pin(pre.instantiate_async(&mut *store)).await?;
            command.wasi_cli_run().call_run(&mut *store).await
        };
        let result = match *time_limit {
            None => run.await,
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(result) => result,
                Err(_) => wasmtime::bail!("the guest ran longer than its time limit of {limit:?}"),
            },
        };
        match result {
            Ok(Ok(())) => Ok(0),
            Ok(Err(())) => Ok(1),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => Ok(exit.0),
                None => Err(e),
            },
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.ticker.store(false, Ordering::Relaxed);
    }
}

/// The worker threads of [`Runner::spawn`]: each runs a current-thread runtime until the
/// runner and every guest it spawned are gone.
struct Workers {
    workers: Vec<Worker>,
    /// Dropping it (with the runner) ends the workers' threads.
    _stop: tokio::sync::watch::Sender<()>,
}

struct Worker {
    handle: tokio::runtime::Handle,
    /// Guests spawned on this worker and not yet finished.
    live: Arc<AtomicUsize>,
}

impl Shared {
    fn workers(&self) -> &Workers {
        self.workers
            .get_or_init(|| Workers::start(self.worker_count))
    }
}

impl Workers {
    /// Starts up to `count` workers; one that cannot start (no runtime: out of descriptors;
    /// no thread) is left out, with an error in the log.
    fn start(count: usize) -> Workers {
        let (stop, stopped) = tokio::sync::watch::channel(());
        let workers = (0..count)
            .filter_map(|i| match Worker::start(i, stopped.clone()) {
                Ok(worker) => Some(worker),
                Err(e) => {
                    tracing::error!("usocket worker {i} could not start: {e}");
                    None
                }
            })
            .collect();
        Workers {
            workers,
            _stop: stop,
        }
    }

    /// The worker with the fewest guests; `None` if none could start.
    fn least_busy(&self) -> Option<&Worker> {
        self.workers
            .iter()
            .min_by_key(|w| w.live.load(Ordering::Relaxed))
    }
}

impl Worker {
    /// Worker `i`: a thread driving a current-thread runtime until `stopped` changes or
    /// closes.
    fn start(i: usize, mut stopped: tokio::sync::watch::Receiver<()>) -> std::io::Result<Worker> {
        // tokio's default `event_interval` (61): under load a worker polls for I/O once per
        // batch of guests it ran, not after each (an `epoll_wait` per request); a spinning
        // guest's yields let the driver run first (see its epoch callback).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        thread::Builder::new()
            .name(format!("usocket-worker-{i}"))
            .spawn(move || {
                // Drives this worker's guests until the runner is dropped; dropping the
                // runtime then drops the guests left (and their sockets).
                runtime.block_on(async { while stopped.changed().await.is_ok() {} });
            })?;
        Ok(Worker {
            handle,
            live: Arc::new(AtomicUsize::new(0)),
        })
    }
}

/// The memory mappings one guest takes at most: its fiber stack and the stack's guard page
/// (both made with the pool), and its linear memory, split around the copy-on-write image of
/// its data (memory before the image, the image, memory after it, the rest of the slot).
const MAPPINGS_PER_GUEST: usize = 6;

/// The same without the pools: the memory's reservation has a guard region before it too.
const MAPPINGS_PER_GUEST_ON_DEMAND: usize = 7;

/// Memory mappings left to the rest of the process: threads and their stacks (tokio's blocking
/// pool has up to 512), malloc's arenas, loaded components, large buffers.
const MAPPINGS_RESERVE: usize = 4096;

/// The guests that fit, at `per_guest` mappings each, in what is left of the process's budget
/// of memory mappings (`vm.max_map_count`); `None` without /proc (not Linux).
fn mapping_budget(per_guest: usize) -> Option<usize> {
    let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?;
    let limit: usize = limit.trim().parse().ok()?;
    let used = std::fs::read_to_string("/proc/self/maps")
        .ok()?
        .lines()
        .count();
    Some(limit.saturating_sub(used + MAPPINGS_RESERVE) / per_guest)
}

/// The default [`RunnerConfig::max_guests`]: the [`mapping_budget`], at most [`MAX_GUESTS`]
/// (or wasmtime's own default pool size, 1000, where there is no budget to read).
fn default_max_guests(per_guest: usize) -> usize {
    mapping_budget(per_guest).map_or(1000, |n| n.clamp(1, MAX_GUESTS))
}

/// Linear memories of the pool beyond one per guest, so that a runner of few guests (the CLI
/// runs one) can run a component with several memories.
const SPARE_MEMORIES: u32 = 16;

/// The wasmtime configuration of a runner of `max_guests` guests: instances come from pools
/// sized for them, so a guest that finds no room fails alone with a clear error, and every
/// mapping the pools make is made (or bounded) up front.
fn pooling(max_guests: usize) -> PoolingAllocationConfig {
    let guests = u32::try_from(max_guests).unwrap_or(u32::MAX);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(guests)
        // A guest runs on one fiber at a time (instantiation, then `run`).
        .total_stacks(guests)
        // Each slot reserves 4 GiB of address space (the engine's memory reservation, which
        // lets compiled code skip bounds checks), so one a guest: most components have one.
        .total_memories(guests.saturating_add(SPARE_MEMORIES))
        // As large as the slot anyway: each guest's `Limits::max_memory` is enforced by its
        // `Store`'s limiter, with an error that names it.
        .max_memory_size(MEMORY_RESERVATION)
        // Core instances and their tables cost only what they use; componentize-py's Python
        // components hold 14 core modules.
        .total_core_instances(guests.saturating_mul(32))
        .total_tables(guests.saturating_mul(4).saturating_add(64))
        .max_tables_per_module(8)
        .max_memories_per_module(4)
        .table_elements(100_000);
    pool
}

/// wasmtime's default memory reservation on 64-bit hosts, which the pool's slots use.
const MEMORY_RESERVATION: usize = 4 << 30;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    /// An empty component: the binary format's header alone.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[tokio::test]
    async fn a_runner_whose_workers_could_not_start_fails_the_guest_not_the_process() {
        let runner = Runner::with_config(RunnerConfig {
            max_guests: Some(4),
            ..RunnerConfig::default()
        })
        .unwrap();
        // As if the process could not start a single worker thread.
        assert!(runner.shared.workers.set(Workers::start(0)).is_ok());
        let component = runner.compile(EMPTY_COMPONENT).unwrap();
        let guest = Guest {
            wasi: wasmtime_wasi::WasiCtx::builder().build(),
            usocket: UsocketCtx::new("guest", Arc::new(Policy::deny_all())),
            time_limit: None,
        };
        let err = runner.spawn(&component, guest).await.unwrap().unwrap_err();
        assert!(
            err.to_string().contains("could not start a worker thread"),
            "{err}"
        );
    }
}
