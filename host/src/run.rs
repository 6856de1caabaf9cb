//! Running `wasi:cli` command components with `usocket`: the engine, linker and store set-up an
//! embedder would otherwise write by hand. Use [`crate::add_to_linker_async`] directly for more
//! control.
//!
//! Guests run as tokio tasks on the caller's runtime. A guest blocked in a socket call holds no
//! thread; a guest spinning in a loop yields every epoch tick (10 ms), so it cannot starve the
//! others. (A spinning guest is a task that is always ready again; tokio polls for I/O only
//! every `event_interval` task polls, 61 by default, so hosts that expect CPU-bound guests
//! should build their runtime with a small `event_interval` to keep the other guests'
//! wake-ups prompt.) To cancel a guest, drop (or abort the task running) the future of
//! [`Runner::run`], or call the `Canceller` of its context ([`UsocketCtx::canceller`]): its
//! `Store` goes, and with the `Store` every socket it had open. Every guest a runner runs
//! counts its sockets against the runner's [`SocketCeiling`] unless its context has one of its
//! own.
//!
//! Each guest's `Store` has a resource limiter that holds its linear memories and tables to
//! [`Limits::max_memory`](crate::Limits::max_memory) (default 256 MiB): a `memory.grow` past
//! it returns -1 to the guest (a Rust guest's allocation fails, and it usually aborts with a
//! trap), never a host out-of-memory. An embedder that builds its own `Store` applies the same
//! limit with [`Limits::memory_limiter`](crate::Limits::memory_limiter):
//! `store.limiter(|data| &mut data.limiter)` (see [`crate::limits`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

use crate::ctx::{UsocketCtx, UsocketCtxView, UsocketView};
use crate::limits::MemoryLimiter;
use crate::quota::SocketCeiling;

/// How often the engine's epoch advances; a running guest yields to others at each tick.
const EPOCH_TICK: Duration = Duration::from_millis(10);

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

/// An engine and linker set up for async `usocket` guests, with an epoch ticker.
pub struct Runner {
    engine: Engine,
    linker: Linker<GuestState>,
    ticker: Arc<AtomicBool>,
    ceiling: SocketCeiling,
}

impl Runner {
    /// A runner with wasmtime's on-disk compilation cache enabled when `cache` is true.
    pub fn new(cache: bool) -> wasmtime::Result<Runner> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        if cache {
            config.cache(Some(wasmtime::Cache::from_file(None)?));
        }
        let engine = Engine::new(&config)?;
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
        Ok(Runner {
            engine,
            linker,
            ticker,
            ceiling: SocketCeiling::from_fd_limit(),
        })
    }

    /// The engine, to compile components with.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The socket ceiling shared by the guests this runner runs (those whose context has no
    /// ceiling of its own): three quarters of the process's descriptor limit.
    pub fn ceiling(&self) -> &SocketCeiling {
        &self.ceiling
    }

    /// Compiles a component from its bytes.
    pub fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        Component::new(&self.engine, bytes)
    }

    /// Compiles a component ahead of time: the bytes [`Runner::load_precompiled`] loads
    /// without compiling (for this wasmtime version, configuration and CPU).
    pub fn precompile(&self, bytes: &[u8]) -> wasmtime::Result<Vec<u8>> {
        self.engine.precompile_component(bytes)
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
        unsafe { Component::deserialize_file(&self.engine, path) }
    }

    /// Runs `component`'s `wasi:cli/run` to completion and returns its exit code (0 for a
    /// normal return, 1 for `Err` from `main`, or the code passed to `exit`).
    ///
    /// Traps and time-outs are errors. Cancel-safe: dropping the future stops the guest and
    /// closes its sockets.
    pub async fn run(&self, component: &Component, mut guest: Guest) -> wasmtime::Result<i32> {
        guest.usocket.set_default_ceiling(self.ceiling.clone());
        let state = GuestState {
            wasi: guest.wasi,
            table: ResourceTable::new(),
            limiter: guest.usocket.limits().memory_limiter(),
            usocket: guest.usocket,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_async_yield_and_update(1);
        let pre = CommandPre::new(self.linker.instantiate_pre(component)?)?;
        let run = async {
            let command = pre.instantiate_async(&mut store).await?;
            command.wasi_cli_run().call_run(&mut store).await
        };
        let result = match guest.time_limit {
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

impl Drop for Runner {
    fn drop(&mut self) {
        self.ticker.store(false, Ordering::Relaxed);
    }
}
