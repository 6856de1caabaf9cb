//! Per-guest state: the guest's policy and the addresses its lookups pinned, its quotas, its
//! resolver, and the audit trail and counters of its decisions.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use wasmtime::component::ResourceTable;

use crate::addr::Family;
use crate::errno::{Errno, SockResult};
use crate::policy::{Decision, Policy, Request, Use};

/// Limits applied to one guest. Exhausted quotas fail with ENOMEM at once, never by waiting;
/// the rate limit delays I/O instead of failing it.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Sockets open at once (counted from creation until closed or dropped).
    pub max_sockets: usize,
    /// Bytes the host buffers for one socket on behalf of `read()` and `readline()` before
    /// failing with ENOBUFS (the bytes stay queued).
    pub max_buffered: usize,
    /// Total bytes the guest may send over its life.
    pub max_bytes_sent: Option<u64>,
    /// Total bytes the guest may receive over its life.
    pub max_bytes_received: Option<u64>,
    /// Bytes per second in each direction (a token bucket with one second of burst).
    pub rate: Option<u64>,
    /// The longest a name grant keeps an address its lookup returned (the system resolver
    /// reports no TTL, so its answers live this long).
    pub pin_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sockets: 64,
            max_buffered: 16 << 20,
            max_bytes_sent: None,
            max_bytes_received: None,
            rate: None,
            pin_ttl: Duration::from_secs(60),
        }
    }
}

/// Looks host names up. [`SystemResolver`] is the default; tests and embedders can inject
/// their own (for example to pin answers, or to count queries).
pub trait Resolver: Send + Sync + 'static {
    /// The addresses of `name` (of `family`, if given), in preference order, each with its
    /// time to live if the resolver knows it.
    fn lookup(&self, name: &str, family: Option<Family>) -> ResolveFuture;
}

/// What [`Resolver::lookup`] returns.
pub type ResolveFuture =
    Pin<Box<dyn Future<Output = SockResult<Vec<(IpAddr, Option<Duration>)>>> + Send>>;

/// The host's resolver (`/etc/hosts`, then DNS) on tokio's blocking pool.
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup(&self, name: &str, family: Option<Family>) -> ResolveFuture {
        Box::pin(crate::resolve::system_lookup(name.to_string(), family))
    }
}

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
}

/// Sockets open across every guest of this process, and the ceiling derived from the fd limit.
static HOST_OPEN: AtomicUsize = AtomicUsize::new(0);

/// Three quarters of the process's descriptor limit (the rest stays for the host itself).
pub fn host_socket_ceiling() -> usize {
    static CEILING: OnceLock<usize> = OnceLock::new();
    *CEILING.get_or_init(|| {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let soft = limit.current.unwrap_or(1 << 20).min(1 << 20) as usize;
        (soft / 4 * 3).max(16)
    })
}

/// How many sockets all guests of this process have open.
pub fn host_open_sockets() -> usize {
    HOST_OPEN.load(Ordering::Relaxed)
}

/// Everything `usocket` keeps for one guest. Put one in each guest's `Store` data.
pub struct UsocketCtx {
    label: Arc<str>,
    policy: Arc<Policy>,
    limits: Limits,
    resolver: Arc<dyn Resolver>,
    open: Arc<AtomicUsize>,
    stats: Arc<Stats>,
    /// Addresses this guest's lookups returned, with the names and the pins' expiry.
    pins: HashMap<IpAddr, Vec<(String, Instant)>>,
    /// Rate limits, one per direction.
    send_bucket: Option<TokenBucket>,
    recv_bucket: Option<TokenBucket>,
}

/// The most addresses one guest keeps pinned; further answers are not pinned (their name
/// grants then do not cover them).
const MAX_PINS: usize = 4096;

impl UsocketCtx {
    /// A context for a guest named `label` (used in audit events) under `policy`.
    pub fn new(label: impl Into<Arc<str>>, policy: Arc<Policy>) -> Self {
        UsocketCtx {
            label: label.into(),
            policy,
            limits: Limits::default(),
            resolver: Arc::new(SystemResolver),
            open: Arc::default(),
            stats: Arc::default(),
            pins: HashMap::new(),
            send_bucket: None,
            recv_bucket: None,
        }
    }

    /// Replaces the default limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.send_bucket = limits.rate.map(TokenBucket::new);
        self.recv_bucket = limits.rate.map(TokenBucket::new);
        self.limits = limits;
        self
    }

    /// Replaces the system resolver.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = resolver;
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

    /// How many sockets the guest has open right now.
    pub fn open_sockets(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Decides a use of an address, records it, and turns a refusal into EACCES (unless the
    /// policy is a dry run).
    pub(crate) fn check_addr(&self, use_: Use, addr: SocketAddr) -> SockResult<()> {
        let now = Instant::now();
        let pinned: Vec<String> = self
            .pins
            .get(&addr.ip())
            .map(|names| {
                names
                    .iter()
                    .filter(|(_, until)| *until > now)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        let decision = self.policy.check(&Request {
            use_,
            addr,
            pinned_names: &pinned,
        });
        self.decided(use_, &addr.to_string(), &decision)
    }

    /// Decides a host name lookup, as [`UsocketCtx::check_addr`].
    pub(crate) fn check_name(&self, name: &str) -> SockResult<()> {
        let decision = self.policy.check_name(name);
        self.decided(Use::Resolve, name, &decision)
    }

    /// Resolves a granted name and pins its answers to it (see the policy's name grants).
    pub(crate) async fn resolve(
        &mut self,
        name: &str,
        family: Option<Family>,
    ) -> SockResult<Vec<IpAddr>> {
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        let answers = self.resolver.lookup(name, family).await?;
        let now = Instant::now();
        if self.pins.len() >= MAX_PINS {
            self.pins.retain(|_, names| {
                names.retain(|(_, until)| *until > now);
                !names.is_empty()
            });
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        for (ip, ttl) in &answers {
            if self.pins.len() >= MAX_PINS && !self.pins.contains_key(ip) {
                break;
            }
            let until = now + ttl.map_or(self.limits.pin_ttl, |t| t.min(self.limits.pin_ttl));
            let names = self.pins.entry(*ip).or_default();
            match names.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => entry.1 = until,
                None => names.push((name.clone(), until)),
            }
        }
        Ok(answers.into_iter().map(|(ip, _)| ip).collect())
    }

    fn decided(&self, use_: Use, target: &str, decision: &Decision) -> SockResult<()> {
        let (verdict, counter, result) = match (decision.is_allowed(), self.policy.is_dry_run()) {
            (true, _) => ("allow", &self.stats.allowed, Ok(())),
            (false, true) => ("would-deny", &self.stats.would_deny, Ok(())),
            (false, false) => ("deny", &self.stats.denied, Err(Errno::EACCES)),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let reason = decision.to_string();
        *self
            .stats
            .reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(format!("{}: {reason}", use_.keyword()))
            .or_default() += 1;
        let rule = decision
            .rule()
            .map_or_else(|| "none".to_string(), |r| r.to_string());
        tracing::info!(
            target: "usocket::audit",
            guest = &*self.label,
            r#use = use_.keyword(),
            target,
            verdict,
            rule,
            reason,
        );
        result
    }

    /// Takes one socket slot; ENOMEM at once when the guest, or the host as a whole, is at
    /// its limit.
    pub(crate) fn take_slot(&self) -> SockResult<Slot> {
        let max = self.limits.max_sockets;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Errno::ENOMEM)?;
        let ceiling = host_socket_ceiling();
        if HOST_OPEN
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < ceiling).then_some(n + 1)
            })
            .is_err()
        {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Errno::ENOMEM);
        }
        Ok(Slot {
            open: self.open.clone(),
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
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        HOST_OPEN.fetch_sub(1, Ordering::AcqRel);
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn host_ceiling_comes_from_the_fd_limit() {
        assert!(host_socket_ceiling() >= 16);
    }
}
