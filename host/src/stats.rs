//! Counters of one guest's decisions and traffic, shared by its gate and its quota.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::audit::Verdict;
use crate::policy::{Decision, Use};

/// Counters of one guest's decisions and traffic, readable while the guest runs and after.
#[derive(Debug, Default)]
pub struct Stats {
    /// Uses the policy granted.
    pub allowed: AtomicUsize,
    /// Uses the policy refused (EACCES).
    pub denied: AtomicUsize,
    /// Uses a dry-run policy would have refused.
    pub would_deny: AtomicUsize,
    /// Names handed to the resolver.
    pub lookups: AtomicUsize,
    /// Bytes sent.
    pub bytes_sent: AtomicU64,
    /// Bytes received.
    pub bytes_received: AtomicU64,
    /// Audit events not passed on one by one because identical ones came too fast, so far
    /// reported in the `repeated` field of an event passed on (the sum of those fields).
    pub audit_held: AtomicU64,
    reasons: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    /// Reads a counter.
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }

    /// How many decisions each reason made, e.g. `"connect: denied by connect=private:*"`.
    pub fn by_reason(&self) -> BTreeMap<String, u64> {
        self.reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts one decision.
    pub(crate) fn decided(&self, use_: Use, verdict: Verdict, decision: &Decision) {
        let counter = match verdict {
            Verdict::Allow => &self.allowed,
            Verdict::Deny => &self.denied,
            Verdict::WouldDeny => &self.would_deny,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        *self
            .reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(format!("{}: {decision}", use_.keyword()))
            .or_default() += 1;
    }
}
