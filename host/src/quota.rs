//! What a guest may consume: socket slots (its own and a share of a ceiling the embedder
//! owns), byte budgets and bandwidth. Knows nothing of the policy.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::errno::{Errno, SockResult};
use crate::limits::Limits;
use crate::stats::Stats;

/// A ceiling on the sockets that a group of guests may have open at once: a value the
/// embedder creates and shares (by cloning) between the guests it chooses, e.g. all guests of
/// one host process. A guest at the ceiling gets ENOMEM from `socket()` and `accept()`.
#[derive(Clone, Debug)]
pub struct SocketCeiling(Arc<CeilingInner>);

#[derive(Debug)]
struct CeilingInner {
    max: usize,
    open: AtomicUsize,
}

impl SocketCeiling {
    /// A ceiling of `max` open sockets (at least 1).
    pub fn new(max: usize) -> SocketCeiling {
        SocketCeiling(Arc::new(CeilingInner {
            max: max.max(1),
            open: AtomicUsize::new(0),
        }))
    }

    /// Three quarters of this process's descriptor limit (`RLIMIT_NOFILE`, soft), leaving the
    /// rest to the host itself; at least 16.
    pub fn from_fd_limit() -> SocketCeiling {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let soft = limit.current.unwrap_or(1 << 20).min(1 << 20);
        SocketCeiling::new(usize::try_from(soft / 4 * 3).unwrap_or(usize::MAX).max(16))
    }

    /// The most sockets this ceiling lets be open at once.
    pub fn max(&self) -> usize {
        self.0.max
    }

    /// How many sockets the guests sharing this ceiling have open now.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Relaxed)
    }
}

/// Takes one from `count` if it is below `max`.
fn take_one(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// One guest's consumption.
pub(crate) struct Quota {
    limits: Limits,
    open: Arc<AtomicUsize>,
    ceiling: SocketCeiling,
    stats: Arc<Stats>,
    send_bucket: Option<TokenBucket>,
    recv_bucket: Option<TokenBucket>,
}

impl Quota {
    pub(crate) fn new(limits: Limits, ceiling: SocketCeiling, stats: Arc<Stats>) -> Quota {
        Quota {
            send_bucket: limits.rate.map(TokenBucket::new),
            recv_bucket: limits.rate.map(TokenBucket::new),
            limits,
            open: Arc::default(),
            ceiling,
            stats,
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn set_ceiling(&mut self, ceiling: SocketCeiling) {
        self.ceiling = ceiling;
    }

    pub(crate) fn ceiling(&self) -> &SocketCeiling {
        &self.ceiling
    }

    pub(crate) fn open_sockets(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes one socket slot; ENOMEM at once when the guest, or its ceiling, is at its limit.
    pub(crate) fn take_slot(&self) -> SockResult<Slot> {
        if !take_one(&self.open, self.limits.max_sockets) {
            return Err(Errno::ENOMEM);
        }
        if !take_one(&self.ceiling.0.open, self.ceiling.0.max) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Errno::ENOMEM);
        }
        Ok(Slot {
            open: self.open.clone(),
            ceiling: self.ceiling.clone(),
        })
    }

    /// How many of `want` bytes the send quota lets go out now: ENOMEM when it is used up.
    pub(crate) fn send_budget(&self, want: usize) -> SockResult<usize> {
        budget(want, self.limits.max_bytes_sent, &self.stats.bytes_sent)
    }

    /// How many of `want` bytes the receive quota lets in now: ENOMEM when it is used up.
    pub(crate) fn recv_budget(&self, want: usize) -> SockResult<usize> {
        budget(
            want,
            self.limits.max_bytes_received,
            &self.stats.bytes_received,
        )
    }

    /// Whether a receive quota is set (reads then take exactly the budget from the kernel).
    pub(crate) fn recv_is_limited(&self) -> bool {
        self.limits.max_bytes_received.is_some()
    }

    /// Counts bytes that went out, waiting as long as the send rate limit asks.
    pub(crate) async fn sent(&self, n: usize) {
        self.stats.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
        pace(self.send_bucket.as_ref(), n).await;
    }

    /// Counts bytes that came in, waiting as long as the receive rate limit asks.
    pub(crate) async fn received(&self, n: usize) {
        self.stats
            .bytes_received
            .fetch_add(n as u64, Ordering::Relaxed);
        pace(self.recv_bucket.as_ref(), n).await;
    }
}

async fn pace(bucket: Option<&TokenBucket>, n: usize) {
    if let Some(wait) = bucket.and_then(|b| b.take(n)) {
        tokio::time::sleep(wait).await;
    }
}

fn budget(want: usize, max: Option<u64>, used: &AtomicU64) -> SockResult<usize> {
    let Some(max) = max else { return Ok(want) };
    let left = max.saturating_sub(used.load(Ordering::Relaxed));
    if left == 0 && want > 0 {
        return Err(Errno::ENOMEM);
    }
    Ok(want.min(usize::try_from(left).unwrap_or(usize::MAX)))
}

/// A token bucket: `rate` bytes per second, at most one second's worth saved up. Taking more
/// than is there makes the taker wait for the difference (the guest's own task only).
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    fn new(rate: u64) -> TokenBucket {
        let rate = rate.max(1) as f64;
        TokenBucket {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes `n` tokens; returns how long to wait if the bucket went into debt.
    fn take(&self, n: usize) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        let left = refilled - n as f64;
        *state = (left, now);
        (left < 0.0).then(|| Duration::from_secs_f64(-left / self.rate))
    }
}

/// One counted socket; gives its slots back when dropped (close, resource drop, Store drop).
#[derive(Debug)]
pub(crate) struct Slot {
    open: Arc<AtomicUsize>,
    ceiling: SocketCeiling,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.ceiling.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(max_sockets: usize, ceiling: &SocketCeiling) -> Quota {
        let limits = Limits {
            max_sockets,
            ..Limits::default()
        };
        Quota::new(limits, ceiling.clone(), Arc::default())
    }

    #[test]
    fn token_bucket_allows_a_burst_then_paces() {
        let bucket = TokenBucket::new(1000);
        assert_eq!(bucket.take(1000), None, "one second of burst");
        let wait = bucket.take(500).expect("in debt");
        assert!(
            wait >= Duration::from_millis(450) && wait <= Duration::from_millis(550),
            "{wait:?}"
        );
    }

    #[test]
    fn byte_budgets_shorten_then_refuse() {
        let used = AtomicU64::new(90);
        assert_eq!(budget(50, Some(100), &used), Ok(10));
        used.store(100, Ordering::Relaxed);
        assert_eq!(budget(50, Some(100), &used), Err(Errno::ENOMEM));
        assert_eq!(budget(0, Some(100), &used), Ok(0));
        assert_eq!(budget(50, None, &used), Ok(50));
    }

    #[test]
    fn a_shared_ceiling_bounds_guests_together_and_slots_come_back() {
        let ceiling = SocketCeiling::new(3);
        let (a, b) = (quota(2, &ceiling), quota(2, &ceiling));
        let a1 = a.take_slot().unwrap();
        let _a2 = a.take_slot().unwrap();
        assert_eq!(a.take_slot().err(), Some(Errno::ENOMEM), "a's own limit");
        let _b1 = b.take_slot().unwrap();
        assert_eq!(
            b.take_slot().err(),
            Some(Errno::ENOMEM),
            "the shared ceiling"
        );
        assert_eq!(b.open_sockets(), 1, "a refused slot is not counted");
        assert_eq!(ceiling.open(), 3);
        drop(a1);
        assert_eq!((a.open_sockets(), ceiling.open()), (1, 2));
        let _b2 = b.take_slot().unwrap();
    }

    #[test]
    fn the_fd_limit_ceiling_follows_rlimit_nofile() {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .expect("a finite soft limit");
        let expected = (soft.min(1 << 20) / 4 * 3).max(16);
        assert_eq!(SocketCeiling::from_fd_limit().max() as u64, expected);
    }
}
