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
    ///
    /// At most 256 reasons are kept one by one; decisions for reasons beyond them are counted
    /// under `"other reasons"`. (Rule reasons are as many as the rules, but a TLS
    /// refusal's reason holds text a guest or a peer chooses: a `server_hostname`, a
    /// certificate's names.)
    pub fn by_reason(&self) -> BTreeMap<String, u64> {
        self.reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts one decision.
    #[cfg(test)]
    pub(crate) fn decided(&self, use_: Use, verdict: Verdict, decision: &Decision) {
        self.decided_for(verdict, &reason(use_, decision));
    }

    /// Counts one decision whose [`reason`] the caller has at hand (the gate keeps the last
    /// one, so a stream of identical decisions formats none).
    pub(crate) fn decided_for(&self, verdict: Verdict, reason: &str) {
        let counter = match verdict {
            Verdict::Allow => &self.allowed,
            Verdict::Deny => &self.denied,
            Verdict::WouldDeny => &self.would_deny,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = reasons.get_mut(reason) {
            *count += 1;
            return;
        }
        let key = if reasons.len() < MAX_REASONS {
            reason
        } else {
            OTHER_REASONS
        };
        *reasons.entry(key.to_string()).or_default() += 1;
    }
}

/// How [`Stats::by_reason`] names a decision: `"connect: allowed by connect=..."`.
pub(crate) fn reason(use_: Use, decision: &Decision) -> String {
    format!("{}: {decision}", use_.keyword())
}

/// How many reasons [`Stats::by_reason`] keeps one by one.
pub(crate) const MAX_REASONS: usize = 256;

/// The reason [`Stats::by_reason`] counts decisions under once it keeps [`MAX_REASONS`].
pub(crate) const OTHER_REASONS: &str = "other reasons";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_chosen_by_a_guest_or_a_peer_cannot_grow_the_counters_without_bound() {
        let stats = Stats::default();
        for i in 0..MAX_REASONS + 100 {
            let decision = Decision::TlsRefused(format!(
                "server_hostname \"h{i}.test\" is not a name this guest is granted"
            ));
            stats.decided(Use::Tls, Verdict::Deny, &decision);
        }
        stats.decided(Use::Connect, Verdict::Deny, &Decision::NotGranted);
        stats.decided(
            Use::Tls,
            Verdict::Deny,
            &Decision::TlsRefused(
                "server_hostname \"h0.test\" is not a name this guest is granted".into(),
            ),
        );
        let reasons = stats.by_reason();
        assert_eq!(reasons.len(), MAX_REASONS + 1, "{reasons:?}");
        assert_eq!(reasons[OTHER_REASONS], 101);
        assert_eq!(
            reasons["tls: TLS handshake failed: server_hostname \"h0.test\" is not a name this \
                     guest is granted"],
            2,
            "a reason kept goes on counting"
        );
        assert_eq!(Stats::get(&stats.denied), MAX_REASONS + 102);
    }
}
