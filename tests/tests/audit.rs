//! Audit events of a guest that repeats itself (issue 8, item 8): a denied-send loop must not
//! flood the audit trail, and no decision may go uncounted.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use usocket_host::audit::{AuditEvent, Verdict};
use usocket_host::{Stats, UsocketCtx};
use usocket_tests::policy;

/// Counts what reaches an audit hook.
#[derive(Default)]
struct Counting {
    calls: AtomicUsize,
    /// Decisions the events stand for: each is itself plus `repeated` held-back ones.
    decisions: AtomicU64,
    targets: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_loop_makes_few_audit_events_and_exact_counters() {
    const SENDS: usize = 100_000;
    // Nothing is granted: every send is denied (EACCES) before any packet.
    let rules = policy(&["connect=127.0.0.1:1"], &[]);
    let hook = Arc::new(Counting::default());
    let seen = hook.clone();
    let ctx = UsocketCtx::new("probe", rules).with_audit(Arc::new(move |e: &AuditEvent| {
        assert_eq!(e.verdict, Verdict::Deny);
        seen.calls.fetch_add(1, Ordering::SeqCst);
        seen.decisions.fetch_add(1 + e.repeated, Ordering::SeqCst);
        seen.targets.lock().unwrap().push(e.target.to_string());
    }));
    let stats = ctx.stats();
    let count = SENDS.to_string();
    let start = Instant::now();
    let out = usocket_tests::run_with(
        "probe",
        &["sendto-seq", "9", "1", &count],
        ctx,
        Duration::from_secs(120),
    )
    .await
    .expect("probe runs");
    let took = start.elapsed();
    assert_eq!(out.code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let text = out.stdout_text();
    assert_eq!(text.lines().count(), SENDS);
    assert!(
        text.lines().all(|l| l == "errno 13"),
        "every send is denied"
    );

    let calls = hook.calls.load(Ordering::SeqCst);
    println!(
        "{SENDS} denied sends in {took:?}: {calls} audit hook calls, {} events held back",
        stats.audit_held.load(Ordering::SeqCst)
    );
    // The counters are exact.
    assert_eq!(Stats::get(&stats.denied), SENDS);
    assert_eq!(Stats::get(&stats.allowed), 0);
    let reasons = stats.by_reason();
    assert_eq!(reasons.values().sum::<u64>(), SENDS as u64, "{reasons:?}");
    // Every decision is reported, most of them folded into `repeated`.
    assert_eq!(hook.decisions.load(Ordering::SeqCst), SENDS as u64);
    assert_eq!(
        stats.audit_held.load(Ordering::SeqCst) + calls as u64,
        SENDS as u64
    );
    // At most 10 events a second for one repeated decision, plus one report per window that
    // closed with events held back (and one at the end).
    let bound = (took.as_secs() as usize + 2) * 11;
    assert!(
        calls <= bound,
        "{calls} audit events for one decision repeated {SENDS} times in {took:?} (bound {bound})"
    );
    assert!(
        hook.targets
            .lock()
            .unwrap()
            .iter()
            .all(|t| t == "127.0.0.1:9")
    );
}
