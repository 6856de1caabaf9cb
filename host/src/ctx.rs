//! Everything `usocket` keeps for one guest: its gate (policy, pins, audit), its quota
//! (sockets, bytes, rate) and its cancellation switch; and the view a `Store`'s data gives the
//! bindings.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use tokio::sync::Notify;
use wasmtime::component::ResourceTable;

use crate::audit::AuditHook;
use crate::gate::Gate;
use crate::limits::Limits;
use crate::policy::AddressPolicy;
use crate::quota::{Quota, SocketCeiling};
use crate::resolver::Resolver;
use crate::stats::Stats;
use crate::tls::{GuestTls, TlsConfig};

/// Everything `usocket` keeps for one guest. Put one in each guest's `Store` data.
///
/// Dropping it (with the `Store`) closes every socket the guest still has open.
pub struct UsocketCtx {
    gate: Gate,
    quota: Quota,
    stats: Arc<Stats>,
    canceller: Canceller,
    tls: GuestTls,
    /// Whether the embedder chose the ceiling (a [`crate::run::Runner`] then keeps it).
    ceiling_chosen: bool,
}

impl UsocketCtx {
    /// A context for a guest named `label` (used in audit events) under `policy`: a
    /// [`crate::Policy`] of rules, an [`crate::policy::AddrCheck`] closure, or your own
    /// [`AddressPolicy`].
    ///
    /// Until [`UsocketCtx::with_ceiling`] says otherwise, the guest has a socket ceiling of its
    /// own, from the process's descriptor limit ([`SocketCeiling::from_fd_limit`]).
    pub fn new(label: impl Into<Arc<str>>, policy: Arc<dyn AddressPolicy>) -> Self {
        let stats = Arc::new(Stats::default());
        let limits = Limits::default();
        let mut gate = Gate::new(label.into(), policy, stats.clone());
        gate.set_pin_ttl(limits.pin_ttl);
        UsocketCtx {
            gate,
            quota: Quota::new(limits, SocketCeiling::from_fd_limit(), stats.clone()),
            stats,
            canceller: Canceller::default(),
            tls: GuestTls::default(),
            ceiling_chosen: false,
        }
    }

    /// Replaces the default limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.gate.set_pin_ttl(limits.pin_ttl);
        let ceiling = self.quota.ceiling().clone();
        self.quota = Quota::new(limits, ceiling, self.stats.clone());
        self
    }

    /// Counts this guest's sockets against `ceiling` too, which the embedder shares (by
    /// cloning) between the guests it chooses: ENOMEM once all of them together reach it.
    pub fn with_ceiling(mut self, ceiling: SocketCeiling) -> Self {
        self.quota.set_ceiling(ceiling);
        self.ceiling_chosen = true;
        self
    }

    /// Replaces the system resolver.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.gate.set_resolver(resolver);
        self
    }

    /// What this guest's TLS trusts and presents (default: the system's trust roots, no
    /// server identity); see [`TlsConfig`].
    pub fn with_tls(mut self, config: TlsConfig) -> Self {
        self.tls = GuestTls::new(config);
        self
    }

    /// Hands every audit event of this guest to `hook` too (besides `tracing`).
    pub fn with_audit(mut self, hook: Arc<dyn AuditHook>) -> Self {
        self.gate.set_audit(hook);
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        self.quota.limits()
    }

    /// The guest's counters; keep the handle to read them after the context moved into a `Store`.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// How many sockets the guest has open right now.
    pub fn open_sockets(&self) -> usize {
        self.quota.open_sockets()
    }

    /// The ceiling this guest's sockets count against.
    pub fn ceiling(&self) -> &SocketCeiling {
        self.quota.ceiling()
    }

    /// A handle that stops this guest from any thread: its blocked `usocket` call and every
    /// later one trap, so the guest ends even while it waits in the host (where wasmtime's
    /// epoch deadlines cannot reach it). Its sockets close when its `Store` is dropped.
    pub fn canceller(&self) -> Canceller {
        self.canceller.clone()
    }

    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
    }

    pub(crate) fn gate_mut(&mut self) -> &mut Gate {
        &mut self.gate
    }

    pub(crate) fn tls(&self) -> &GuestTls {
        &self.tls
    }

    pub(crate) fn quota(&self) -> &Quota {
        &self.quota
    }

    pub(crate) fn set_default_ceiling(&mut self, ceiling: SocketCeiling) {
        if !self.ceiling_chosen {
            self.quota.set_ceiling(ceiling);
        }
    }
}

/// Stops a guest that may be blocked in a `usocket` call ([`UsocketCtx::canceller`]).
#[derive(Clone, Debug, Default)]
pub struct Canceller(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    notify: Notify,
    /// Whether a call of the guest had to wait since [`Canceller::take_waited`] last looked.
    waited: AtomicBool,
}

impl Canceller {
    /// Makes the guest's current and later `usocket` calls trap.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether [`Canceller::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Whether one of the guest's `usocket` calls had to wait (gave its thread to other
    /// tasks) since the last time this was asked. A runner's epoch callback asks it at each
    /// tick: a guest that waited is not hogging its thread and need not be made to yield.
    pub(crate) fn take_waited(&self) -> bool {
        self.0.waited.swap(false, Ordering::Relaxed)
    }

    /// Runs `call` unless or until the guest is cancelled; then the call is dropped (socket
    /// calls are cancel-safe: nothing received is lost) and the guest traps.
    ///
    /// The call comes pinned where the caller keeps it, so that this future holds only a
    /// reference to it: host futures are boxed and moved whole, and a socket call's is about
    /// a kilobyte.
    pub(crate) async fn guard<F: Future>(
        &self,
        mut call: Pin<&mut F>,
    ) -> wasmtime::Result<F::Output> {
        if self.is_cancelled() {
            return Err(cancelled_error());
        }
        // Most calls finish at their first poll (a send with room, data already here): they
        // need no place in the notifier's list of waiters, which takes its lock twice.
        if let Poll::Ready(out) =
            std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await
        {
            return Ok(out);
        }
        self.0.waited.store(true, Ordering::Relaxed);
        let cancelled = self.0.notify.notified();
        tokio::pin!(cancelled);
        // Registered before the flag is read again, so a cancel in between is not missed.
        cancelled.as_mut().enable();
        if self.is_cancelled() {
            return Err(cancelled_error());
        }
        tokio::select! {
            biased;
            () = &mut cancelled => Err(cancelled_error()),
            out = call => Ok(out),
        }
    }
}

fn cancelled_error() -> wasmtime::Error {
    wasmtime::format_err!("the guest was cancelled by its host (usocket Canceller)")
}

/// What the `usocket` bindings need from a `Store`'s data: the guest's context and the
/// resource table its sockets live in (the table wasmtime-wasi uses is fine: share it).
pub struct UsocketCtxView<'a> {
    /// The guest's `usocket` state.
    pub ctx: &'a mut UsocketCtx,
    /// The component resource table.
    pub table: &'a mut ResourceTable,
}

/// Implement this for your `Store` data to add `usocket` to a linker.
pub trait UsocketView: Send {
    /// Borrows the `usocket` context and resource table.
    fn usocket(&mut self) -> UsocketCtxView<'_>;
}
