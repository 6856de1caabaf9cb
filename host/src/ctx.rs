//! Per-guest state: the guest's policy, its socket quota, and the audit trail of decisions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::component::ResourceTable;

use crate::errno::{Errno, SockResult};
use crate::policy::{Decision, Policy, Use};

/// Limits applied to one guest.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Sockets open at once (counted from creation until closed or dropped).
    pub max_sockets: usize,
    /// Bytes the host buffers for one socket on behalf of `read()` and `readline()` before
    /// failing with ENOBUFS (the bytes stay queued).
    pub max_buffered: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sockets: 64,
            max_buffered: 16 << 20,
        }
    }
}

/// Counters of one guest's network activity, readable while the guest runs and after.
#[derive(Debug, Default)]
pub struct Stats {
    /// Uses the policy granted.
    pub allowed: AtomicUsize,
    /// Uses the policy refused (EACCES).
    pub denied: AtomicUsize,
    /// Names handed to the system resolver.
    pub lookups: AtomicUsize,
}

impl Stats {
    /// Reads a counter.
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }
}

/// Everything `usocket` keeps for one guest. Put one in each guest's `Store` data.
pub struct UsocketCtx {
    label: Arc<str>,
    policy: Arc<Policy>,
    limits: Limits,
    open: Arc<AtomicUsize>,
    stats: Arc<Stats>,
}

impl UsocketCtx {
    /// A context for a guest named `label` (used in audit events) under `policy`.
    pub fn new(label: impl Into<Arc<str>>, policy: Arc<Policy>) -> Self {
        UsocketCtx {
            label: label.into(),
            policy,
            limits: Limits::default(),
            open: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// Replaces the default limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The guest's counters; keep the handle to read them after the context moved into a `Store`.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// A handle to the guest's count of open sockets.
    pub fn open_counter(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }

    /// How many sockets the guest has open right now.
    pub fn open_sockets(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Checks a socket address use against the policy, records the decision, and turns a
    /// refusal into EACCES.
    pub(crate) fn check_addr(&self, use_: Use, addr: SocketAddr) -> SockResult<()> {
        let decision = self.policy.check_addr(use_, addr);
        self.audit(use_, &addr.to_string(), &decision);
        if decision.is_allowed() {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }

    /// Checks a host name lookup against the policy, as [`UsocketCtx::check_addr`].
    pub(crate) fn check_name(&self, name: &str) -> SockResult<()> {
        let decision = self.policy.check_name(name);
        self.audit(Use::Resolve, name, &decision);
        if decision.is_allowed() {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }

    /// Counts a name given to the system resolver.
    pub(crate) fn count_lookup(&self) {
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
    }

    fn audit(&self, use_: Use, target: &str, decision: &Decision) {
        let counter = if decision.is_allowed() {
            &self.stats.allowed
        } else {
            &self.stats.denied
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let verdict = if decision.is_allowed() {
            "allow"
        } else {
            "deny"
        };
        tracing::info!(
            target: "usocket::audit",
            guest = &*self.label,
            r#use = use_.keyword(),
            target,
            verdict,
            reason = %decision,
        );
    }

    /// Takes one socket slot; ENOMEM at once when the guest is at its limit.
    pub(crate) fn take_slot(&self) -> SockResult<Slot> {
        let max = self.limits.max_sockets;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Errno::ENOMEM)?;
        Ok(Slot {
            open: self.open.clone(),
        })
    }
}

/// One counted socket; gives its slot back when dropped (close, resource drop, Store drop).
#[derive(Debug)]
pub(crate) struct Slot {
    open: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the `usocket` bindings need from a `Store`'s data: the guest's context and the
/// resource table its sockets live in (the same table wasmtime-wasi uses is fine).
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
