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
    /// Bytes the host buffers for all of the guest's sockets (see [`Buffered`]).
    buffered: Arc<AtomicUsize>,
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
            buffered: Arc::default(),
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

    /// Whether [`Quota::take_slot`] would succeed now, without taking one (so that a call can
    /// refuse at once what it would refuse later, yet hold no slot while it waits).
    pub(crate) fn slot_free(&self) -> bool {
        self.open.load(Ordering::Acquire) < self.limits.max_sockets
            && self.ceiling.0.open.load(Ordering::Acquire) < self.ceiling.0.max
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

    /// Counts bytes that went out. (Their rate tokens were taken before, with
    /// [`Quota::allowance`].)
    pub(crate) fn sent(&self, n: usize) {
        self.stats.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts bytes that came in from the kernel. Each received byte is counted once, when
    /// the host takes it in (into a receive queue, or straight into a guest's `recv`), never
    /// again when the guest takes it from a queue.
    pub(crate) fn received(&self, n: usize) {
        self.stats
            .bytes_received
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    fn bucket(&self, direction: Direction) -> Option<&TokenBucket> {
        match direction {
            Direction::Send => self.send_bucket.as_ref(),
            Direction::Recv => self.recv_bucket.as_ref(),
        }
    }

    /// How many of `want` bytes the rate limit lets move now, taking their tokens *before*
    /// they move. Waits for a piece worth a syscall (a tenth of a second's worth, or all of
    /// `want` if less) until `until` (`None`: no limit; an instant already past: no wait); at
    /// `until` it takes whatever whole tokens there are, possibly none. 0 means "the deadline
    /// passed with nothing allowed" (the caller's EAGAIN or ETIMEDOUT). `whole` (a datagram):
    /// all of `want` or nothing, waiting for at most a full bucket and going into debt beyond
    /// it. Without a rate limit: all of `want`, at once.
    pub(crate) async fn allowance(
        &self,
        direction: Direction,
        want: usize,
        whole: bool,
        until: Option<Instant>,
    ) -> usize {
        let Some(bucket) = self.bucket(direction) else {
            return want;
        };
        if want == 0 {
            return 0;
        }
        let need = if whole {
            want.min(bucket.capacity)
        } else {
            want.min(bucket.piece)
        };
        loop {
            let wait = match bucket.take(want, need, whole) {
                Ok(n) => return n,
                Err(wait) => wait,
            };
            let wake = Instant::now() + wait;
            match until {
                Some(limit) if limit <= wake => {
                    if limit > Instant::now() {
                        tokio::time::sleep_until(limit).await;
                    }
                    let last = if whole { need } else { 1 };
                    return bucket.take(want, last, whole).unwrap_or(0);
                }
                _ => tokio::time::sleep_until(wake).await,
            }
        }
    }

    /// Gives back tokens [`Quota::allowance`] took for bytes that did not move after all.
    pub(crate) fn refund(&self, direction: Direction, n: usize) {
        if let Some(bucket) = self.bucket(direction)
            && n > 0
        {
            bucket.refund(n);
        }
    }

    /// Takes `n` tokens whatever the bucket holds (debt allowed): for bytes whose count is
    /// known only once they came in (a datagram).
    pub(crate) fn charge(&self, direction: Direction, n: usize) {
        if let Some(bucket) = self.bucket(direction)
            && n > 0
        {
            bucket.charge(n);
        }
    }

    /// A share of the guest's host-buffered bytes, for one socket's receive queue and the
    /// read-ahead handed out from it (empty to begin with).
    pub(crate) fn buffered(&self) -> Buffered {
        Buffered {
            total: self.buffered.clone(),
            held: 0,
        }
    }

    /// How many more bytes the host may buffer for a socket whose share holds `held`: within
    /// both `max_buffered` (per socket) and `max_buffered_total` (the guest's sockets
    /// together).
    pub(crate) fn buffer_room(&self, held: usize) -> usize {
        let total = self.buffered.load(Ordering::Acquire);
        self.limits
            .max_buffered
            .saturating_sub(held)
            .min(self.limits.max_buffered_total.saturating_sub(total))
    }
}

/// Which way bytes move, for the rate limit (one bucket each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Send,
    Recv,
}

/// One socket's share of its guest's host-buffered bytes ([`Limits::max_buffered_total`]):
/// set to what the socket holds after each change; dropping it gives the share back.
#[derive(Debug)]
pub(crate) struct Buffered {
    total: Arc<AtomicUsize>,
    held: usize,
}

impl Buffered {
    /// What this share holds.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Sets what this share holds.
    pub(crate) fn set(&mut self, held: usize) {
        if held > self.held {
            self.total.fetch_add(held - self.held, Ordering::AcqRel);
        } else {
            self.total.fetch_sub(self.held - held, Ordering::AcqRel);
        }
        self.held = held;
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        self.set(0);
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

/// A token bucket: `rate` bytes per second, at most one second's worth saved up. Tokens are
/// taken before bytes move ([`Quota::allowance`]); only a datagram's may run into debt.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    /// The most tokens saved up (one second's worth).
    capacity: usize,
    /// What a blocking call waits for at least: a tenth of a second's worth (1 to 64 KiB).
    piece: usize,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    fn new(rate: u64) -> TokenBucket {
        let rate = rate.max(1);
        let capacity = usize::try_from(rate).unwrap_or(usize::MAX);
        TokenBucket {
            rate: rate as f64,
            capacity,
            piece: (capacity / 10).clamp(1, 64 * 1024),
            state: Mutex::new((rate as f64, Instant::now())),
        }
    }

    /// Runs `f` on the tokens there are now.
    fn with_tokens<R>(&self, f: impl FnOnce(&mut f64) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let mut tokens =
            (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        let out = f(&mut tokens);
        *state = (tokens, now);
        out
    }

    /// If at least `need` tokens are there: takes all of `want` (`whole`) or as much of it as
    /// there are whole tokens, and returns the count. Otherwise: how long until `need` are.
    fn take(&self, want: usize, need: usize, whole: bool) -> Result<usize, Duration> {
        self.with_tokens(|tokens| {
            if *tokens >= need as f64 {
                let n = if whole {
                    want
                } else {
                    want.min(tokens.floor() as usize)
                };
                *tokens -= n as f64;
                Ok(n)
            } else {
                Err(Duration::from_secs_f64((need as f64 - *tokens) / self.rate))
            }
        })
    }

    fn refund(&self, n: usize) {
        self.with_tokens(|tokens| *tokens = (*tokens + n as f64).min(self.rate));
    }

    fn charge(&self, n: usize) {
        self.with_tokens(|tokens| *tokens -= n as f64);
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
    fn token_bucket_allows_a_burst_then_makes_takers_wait_first() {
        let bucket = TokenBucket::new(1000);
        assert_eq!(
            bucket.take(4000, 100, false),
            Ok(1000),
            "one second of burst"
        );
        let wait = bucket.take(500, 500, false).expect_err("nothing left");
        assert!(
            wait >= Duration::from_millis(450) && wait <= Duration::from_millis(550),
            "{wait:?}"
        );
        bucket.refund(300);
        assert_eq!(bucket.take(500, 1, false), Ok(300), "what was given back");
        bucket.charge(2000);
        let wait = bucket.take(1, 1, true).expect_err("in debt");
        assert!(wait >= Duration::from_millis(1900), "{wait:?}");
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
