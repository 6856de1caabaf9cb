//! The gate: every use a guest makes of the network is decided here, before the syscall,
//! packet or DNS query it guards, and recorded (counters, audit events).
//!
//! The decisions that precede a syscall (`bind`, `listen`, `connect`, datagram `send`) come
//! out as a [`Grant`], and the OS wrappers that make those syscalls take one: an unchecked
//! bind or send does not compile. Inbound uses (`accept`, `recv`) can only be decided once the
//! kernel has the connection or datagram; [`Gate::admits`] decides them before the guest
//! sees anything.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::addr::{Family, normalize_name};
use crate::audit::{AuditEvent, AuditHook, Target, Verdict};
use crate::errno::{Errno, SockResult};
use crate::policy::{AddressPolicy, Decision, Request, Use};
use crate::resolver::{LOOKUP_TIMEOUT, Resolver, SystemResolver};
use crate::stats::Stats;

/// The uses a [`Grant`] can stand for.
pub(crate) mod uses {
    /// An explicit bind of a local address.
    pub(crate) enum Bind {}
    /// Listening on a local address.
    pub(crate) enum Listen {}
    /// An outbound connection (or a UDP default peer).
    pub(crate) enum Connect {}
    /// One datagram's destination.
    pub(crate) enum Send {}
}

/// A use that a grant can carry.
pub(crate) trait GrantedUse {
    /// The policy's name of it.
    const USE: Use;
}

impl GrantedUse for uses::Bind {
    const USE: Use = Use::Bind;
}
impl GrantedUse for uses::Listen {
    const USE: Use = Use::Listen;
}
impl GrantedUse for uses::Connect {
    const USE: Use = Use::Connect;
}
impl GrantedUse for uses::Send {
    const USE: Use = Use::Send;
}

/// Proof that the gate granted use `U` of one address. Only the gate makes them; the OS
/// wrappers take the address from the grant, never separately.
#[derive(Debug)]
pub(crate) struct Grant<U> {
    addr: SocketAddr,
    /// Granted by a `tls` rule only: the names that rule grants the address by (empty for a
    /// rule by address or class).
    tls_names: Option<Vec<String>>,
    _use: PhantomData<fn() -> U>,
}

impl<U> Grant<U> {
    /// The granted address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether only a `tls` rule granted it (no plaintext may cross the connection), and the
    /// names that rule grants the address by.
    pub(crate) fn tls_required(&self) -> Option<&[String]> {
        self.tls_names.as_deref()
    }
}

/// The most addresses one guest keeps pinned; further answers are not pinned (their name
/// grants then do not cover them).
const MAX_PINS: usize = 4096;

/// The most names one address stays pinned to; a new one replaces the pin that expires first.
pub(crate) const MAX_NAMES_PER_ADDR: usize = 64;

/// The most (address, name) pins one guest keeps in all; beyond, once expired pins are gone,
/// new names are not pinned.
const MAX_PINNED_NAMES: usize = 16_384;

/// Identical audit events (same use, target, verdict and decision) passed on one by one per
/// [`AUDIT_WINDOW`]; the rest are held back and counted in [`AuditEvent::repeated`].
pub(crate) const AUDIT_BURST: u32 = 10;

/// The window of [`AUDIT_BURST`].
const AUDIT_WINDOW: Duration = Duration::from_secs(1);

/// The most distinct events the audit limiter tells apart at once; past that (a guest making
/// that many different decisions in one window), events are grouped by use, verdict and
/// decision alone.
const AUDIT_KEYS: usize = 256;

/// The names one address is pinned to, the pin expiring last first: the live pins are always a
/// prefix, so a check borrows them instead of copying.
#[derive(Debug, Default)]
struct PinSet {
    names: Vec<String>,
    /// Each name's expiry, in the same order: never increasing.
    until: Vec<Instant>,
}

impl PinSet {
    /// The names whose pin has not expired at `now`.
    fn live(&self, now: Instant) -> &[String] {
        &self.names[..self.until.partition_point(|u| *u > now)]
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    /// Forgets the pins expired at `now`.
    fn prune(&mut self, now: Instant) {
        let live = self.until.partition_point(|u| *u > now);
        self.names.truncate(live);
        self.until.truncate(live);
    }

    /// Pins `name` until `until` (replacing its earlier pin); when the set is full, expired
    /// pins go first, then the one that expires soonest.
    fn pin(&mut self, name: &str, until: Instant, now: Instant) {
        match self.names.iter().position(|n| n == name) {
            Some(i) => {
                self.names.remove(i);
                self.until.remove(i);
            }
            None => {
                self.prune(now);
                if self.names.len() >= MAX_NAMES_PER_ADDR {
                    self.names.pop();
                    self.until.pop();
                }
            }
        }
        let at = self.until.partition_point(|u| *u >= until);
        self.names.insert(at, name.to_string());
        self.until.insert(at, until);
    }
}

/// One guest's policy, the addresses its lookups pinned to names, and its audit trail.
pub(crate) struct Gate {
    label: Arc<str>,
    policy: Arc<dyn AddressPolicy>,
    resolver: Arc<dyn Resolver>,
    audit: Option<Arc<dyn AuditHook>>,
    stats: Arc<Stats>,
    /// The longest a lookup's answer stays pinned to its name.
    pin_ttl: Duration,
    /// Addresses this guest's lookups returned, with the names and the pins' expiry.
    pins: HashMap<IpAddr, PinSet>,
    /// How many names `pins` holds in all.
    pinned_names: usize,
    /// How long a lookup may take ([`LOOKUP_TIMEOUT`]; shorter in tests).
    lookup_timeout: Duration,
    /// Which audit events go out now, which are held back and counted.
    limiter: Mutex<AuditLimiter>,
}

impl Gate {
    pub(crate) fn new(label: Arc<str>, policy: Arc<dyn AddressPolicy>, stats: Arc<Stats>) -> Gate {
        Gate {
            label,
            policy,
            resolver: Arc::new(SystemResolver::new()),
            audit: None,
            stats,
            pin_ttl: crate::limits::Limits::default().pin_ttl,
            pins: HashMap::new(),
            pinned_names: 0,
            lookup_timeout: LOOKUP_TIMEOUT,
            limiter: Mutex::default(),
        }
    }

    pub(crate) fn set_resolver(&mut self, resolver: Arc<dyn Resolver>) {
        self.resolver = resolver;
    }

    pub(crate) fn set_audit(&mut self, hook: Arc<dyn AuditHook>) {
        self.audit = Some(hook);
    }

    pub(crate) fn set_pin_ttl(&mut self, ttl: Duration) {
        self.pin_ttl = ttl;
    }

    /// Grants use `U` of `addr`, and, for a socket that has no local address yet
    /// (`implicit_bind` = its family), the implicit bind it causes (audited in that order).
    pub(crate) fn grant<U: GrantedUse>(
        &self,
        addr: SocketAddr,
        implicit_bind: Option<Family>,
    ) -> SockResult<Grant<U>> {
        let tls_names = self.check_addr(U::USE, addr)?;
        if let Some(family) = implicit_bind {
            self.check_addr(Use::AutoBind, SocketAddr::new(family.unspecified(), 0))?;
        }
        Ok(Grant {
            addr,
            tls_names,
            _use: PhantomData,
        })
    }

    /// The name a TLS client verifies the server's certificate against, and sends as SNI:
    /// the guest's `server_hostname` if this guest is granted that name (EACCES, audited,
    /// if not); else the name it resolved `peer`'s address from; else the address itself.
    /// Under a `tls` rule (`required`, the names it grants) only those names will do.
    pub(crate) fn tls_name(
        &self,
        peer: SocketAddr,
        server_hostname: Option<&str>,
        required: Option<&[String]>,
    ) -> SockResult<String> {
        let required = required.filter(|names| !names.is_empty());
        let Some(asked) = server_hostname else {
            return Ok(match required {
                Some(names) => names[0].clone(),
                None => match self.live_pins(peer.ip()).first() {
                    Some(name) => name.clone(),
                    None => peer.ip().to_string(),
                },
            });
        };
        // Not a host name or address (empty, over 253 bytes, odd characters): EINVAL, before
        // anything is looked up or audited (a guest's megabyte of text stays out of the log).
        if asked.parse::<IpAddr>().is_err() && !crate::addr::is_host_name(asked) {
            return Err(Errno::EINVAL);
        }
        let name = normalize_name(asked);
        let granted = match required {
            Some(names) => names.contains(&name),
            // A literal is granted by the connect itself; a name must be one this guest may
            // look up (a name grant covers that).
            None => {
                name.parse::<IpAddr>().is_ok_and(|ip| ip == peer.ip())
                    || self.policy.check_name(&name).is_allowed()
            }
        };
        if granted {
            return Ok(name);
        }
        let decision = Decision::TlsRefused(format!(
            "server_hostname {name:?} is not a name this guest is granted"
        ));
        // A dry run lets it go ahead (reported as would-deny).
        self.decided(Use::Tls, Target::Name(name.clone()), decision)?;
        Ok(name)
    }

    /// Audits a failed TLS handshake with `peer`: its errno and reason.
    pub(crate) fn tls_failed(&self, peer: Option<SocketAddr>, errno: Errno, reason: &str) {
        let target = match peer {
            Some(addr) => Target::Addr(addr),
            None => Target::Name("(peer address unknown)".into()),
        };
        let name = errno.name().unwrap_or("?");
        let decision = Decision::TlsRefused(format!("{reason} ({name})"));
        // Not a policy decision a dry run waves through: the handshake did fail.
        self.record(Use::Tls, target, Verdict::Deny, decision);
    }

    /// Audits a refusal of TLS parameters a policy does not allow (EACCES, even in a dry run:
    /// a guest must not choose its own trust where a `tls` rule applies).
    pub(crate) fn tls_refused(&self, peer: SocketAddr, reason: &str) {
        let decision = Decision::TlsRefused(reason.to_string());
        self.record(Use::Tls, Target::Addr(peer), Verdict::Deny, decision);
    }

    /// The live names `ip` is pinned to.
    fn live_pins(&self, ip: IpAddr) -> &[String] {
        self.pins
            .get(&ip)
            .map_or(&[][..], |names| names.live(Instant::now()))
    }

    /// Whether an inbound connection (`Use::Accept`) or datagram (`Use::Recv`) from `peer`
    /// may reach the guest.
    pub(crate) fn admits(&self, use_: Use, peer: SocketAddr) -> bool {
        debug_assert!(matches!(use_, Use::Accept | Use::Recv));
        self.check_addr(use_, peer).is_ok()
    }

    /// Decides a use of an address, records it, and turns a refusal into EACCES (unless the
    /// policy is a dry run).
    /// When a `tls` rule alone granted it: the names that rule grants the address by.
    fn check_addr(&self, use_: Use, addr: SocketAddr) -> SockResult<Option<Vec<String>>> {
        let pinned = self.live_pins(addr.ip());
        let decision = self.policy.check(&Request {
            use_,
            addr,
            pinned_names: pinned,
        });
        let tls_names = match decision.rule() {
            Some(rule) if decision.is_allowed() && rule.use_() == Some(Use::Tls) => {
                Some(rule.granted_names(pinned))
            }
            _ => None,
        };
        self.decided(use_, Target::Addr(addr), decision)?;
        Ok(tls_names)
    }

    /// Decides a host name lookup, as [`Gate::check_addr`].
    fn check_name(&self, name: &str) -> SockResult<()> {
        let decision = self.policy.check_name(name);
        self.decided(Use::Resolve, Target::Name(name.to_string()), decision)
    }

    /// Resolves `name` if the policy grants its lookup (EACCES, with no query, if not), and
    /// pins its answers to it. The resolver is asked for that name only, and given
    /// [`LOOKUP_TIMEOUT`] (then EAI_AGAIN).
    pub(crate) async fn resolve(
        &mut self,
        name: &str,
        family: Option<Family>,
    ) -> SockResult<Vec<IpAddr>> {
        self.check_name(name)?;
        self.stats
            .lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let lookup = self.resolver.lookup(name, family);
        let answers = tokio::time::timeout(self.lookup_timeout, lookup)
            .await
            .map_err(|_| Errno::EAI_AGAIN)??;
        let now = Instant::now();
        if self.pins.len() >= MAX_PINS || self.pinned_names + answers.len() > MAX_PINNED_NAMES {
            self.sweep_pins(now);
        }
        let name = normalize_name(name);
        for (ip, ttl) in &answers {
            if self.pins.len() >= MAX_PINS && !self.pins.contains_key(ip) {
                continue;
            }
            let set = self.pins.entry(*ip).or_default();
            let before = set.len();
            if self.pinned_names >= MAX_PINNED_NAMES && !set.names.contains(&name) {
                continue;
            }
            let ttl = ttl.map_or(self.pin_ttl, |t| t.min(self.pin_ttl));
            // A lifetime too long to represent is as good as forever (`Duration::MAX`).
            let until = now.checked_add(ttl).unwrap_or(far_future(now));
            set.pin(&name, until, now);
            self.pinned_names = self.pinned_names.saturating_sub(before) + set.len();
        }
        Ok(answers.into_iter().map(|(ip, _)| ip).collect())
    }

    /// Forgets every expired pin.
    fn sweep_pins(&mut self, now: Instant) {
        self.pins.retain(|_, names| {
            names.prune(now);
            names.len() > 0
        });
        self.pinned_names = self.pins.values().map(PinSet::len).sum();
    }

    fn decided(&self, use_: Use, target: Target, decision: Decision) -> SockResult<()> {
        let verdict = match (decision.is_allowed(), self.policy.is_dry_run()) {
            (true, _) => Verdict::Allow,
            (false, true) => Verdict::WouldDeny,
            (false, false) => Verdict::Deny,
        };
        self.record(use_, target, verdict, decision);
        match verdict {
            Verdict::Deny => Err(Errno::EACCES),
            _ => Ok(()),
        }
    }

    /// Counts and audits a decision with its verdict.
    fn record(&self, use_: Use, target: Target, verdict: Verdict, decision: Decision) {
        let event = AuditEvent {
            time: std::time::SystemTime::now(),
            guest: self.label.clone(),
            use_,
            target,
            verdict,
            decision,
            repeated: 0,
        };
        let out = {
            let mut limiter = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
            let out = limiter.admit(event, Instant::now());
            self.stats.decided_for(verdict, limiter.last_reason());
            out
        };
        for event in &out {
            self.emit(event);
        }
    }

    fn emit(&self, event: &AuditEvent) {
        self.stats
            .audit_held
            .fetch_add(event.repeated, std::sync::atomic::Ordering::Relaxed);
        event.trace();
        if let Some(hook) = &self.audit {
            hook.record(event);
        }
    }
}

impl Drop for Gate {
    /// Reports the audit events still held back.
    fn drop(&mut self) {
        let held = self
            .limiter
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .flush(None);
        for event in &held {
            self.emit(event);
        }
    }
}

/// Passes on the first [`AUDIT_BURST`] identical audit events of each [`AUDIT_WINDOW`] and
/// holds back the rest: the next one passed on (a later identical event, or the last held one
/// once its window is over or the guest ends) carries their number in
/// [`AuditEvent::repeated`]. Each event passed on stands for itself and `repeated` others, so
/// no decision goes unreported, and the counters in [`Stats`] count every decision.
#[derive(Debug, Default)]
struct AuditLimiter {
    keys: HashMap<String, Repeats>,
    /// When windows were last looked through for held events to report.
    swept: Option<Instant>,
    /// The texts of the last few distinct events, the newest last: a stream of identical
    /// decisions (every datagram of a UDP exchange, sends and receives in turn) formats them
    /// once, not per decision.
    recent: Vec<Texts>,
}

/// How many distinct recent events' texts [`AuditLimiter`] keeps.
const RECENT_TEXTS: usize = 4;

/// What an event is, and the texts it is counted and grouped by.
#[derive(Debug)]
struct Texts {
    use_: Use,
    verdict: Verdict,
    target: Target,
    decision: Decision,
    /// [`crate::stats::reason`].
    reason: String,
    /// The limiter's key: use, verdict, decision and target.
    key: String,
}

impl Texts {
    fn of(event: &AuditEvent) -> Texts {
        Texts {
            use_: event.use_,
            verdict: event.verdict,
            target: event.target.clone(),
            decision: event.decision.clone(),
            reason: crate::stats::reason(event.use_, &event.decision),
            key: format!(
                "{} {} {} {}",
                event.use_.keyword(),
                event.verdict,
                event.decision,
                event.target
            ),
        }
    }

    fn describe(&self, event: &AuditEvent) -> bool {
        self.use_ == event.use_
            && self.verdict == event.verdict
            && self.target == event.target
            && self.decision == event.decision
    }
}

#[derive(Debug)]
struct Repeats {
    window_start: Instant,
    /// Events passed on in this window.
    passed: u32,
    /// Events held back since the last one passed on.
    held: u64,
    /// The last event held back (reported for all of them if no identical one follows).
    last: Option<AuditEvent>,
}

impl AuditLimiter {
    /// The events to pass on now, given a new `event`: none, it, and/or reports of events
    /// held back in windows that are over.
    fn admit(&mut self, event: AuditEvent, now: Instant) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        if self
            .swept
            .is_none_or(|t| now.saturating_duration_since(t) >= AUDIT_WINDOW)
        {
            out = self.flush(Some(now));
            self.swept = Some(now);
        }
        match self.recent.iter().position(|t| t.describe(&event)) {
            Some(i) => {
                let texts = self.recent.remove(i);
                self.recent.push(texts);
            }
            None => {
                if self.recent.len() >= RECENT_TEXTS {
                    self.recent.remove(0);
                }
                self.recent.push(Texts::of(&event));
            }
        }
        let key = self.recent.last().map_or("", |t| t.key.as_str());
        let repeats = match self.keys.get_mut(key) {
            Some(repeats) => repeats,
            None => {
                let key = if self.keys.len() >= AUDIT_KEYS {
                    // Too many different events at once: group this one by all but its
                    // target.
                    format!(
                        "{} {} {} *",
                        event.use_.keyword(),
                        event.verdict,
                        event.decision
                    )
                } else {
                    key.to_string()
                };
                self.keys.entry(key).or_insert(Repeats {
                    window_start: now,
                    passed: 0,
                    held: 0,
                    last: None,
                })
            }
        };
        if now.saturating_duration_since(repeats.window_start) >= AUDIT_WINDOW {
            repeats.window_start = now;
            repeats.passed = 0;
        }
        if repeats.passed < AUDIT_BURST {
            repeats.passed += 1;
            out.push(AuditEvent {
                repeated: std::mem::take(&mut repeats.held),
                ..event
            });
            repeats.last = None;
        } else {
            repeats.held += 1;
            repeats.last = Some(event);
        }
        out
    }

    /// The stats reason of the last event admitted.
    fn last_reason(&self) -> &str {
        self.recent.last().map_or("", |t| t.reason.as_str())
    }

    /// Reports the events held back in windows over at `now` (all, for `None`) and forgets
    /// those windows.
    fn flush(&mut self, now: Option<Instant>) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        self.keys.retain(|_, r| {
            let over =
                now.is_none_or(|now| now.saturating_duration_since(r.window_start) >= AUDIT_WINDOW);
            if over && let Some(last) = r.last.take() {
                out.push(AuditEvent {
                    repeated: r.held.saturating_sub(1),
                    ..last
                });
            }
            !over
        });
        out.sort_by_key(|e| e.time);
        out
    }
}

/// An instant later than any pin needs: about a century from `now`.
fn far_future(now: Instant) -> Instant {
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(century).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::resolver::ResolveFuture;

    /// Answers every name with 127.0.0.1, with no TTL.
    struct Loopback;

    impl Resolver for Loopback {
        fn lookup(&self, _name: &str, _family: Option<Family>) -> ResolveFuture {
            Box::pin(async { Ok(vec![("127.0.0.1".parse().unwrap(), None)]) })
        }
    }

    fn gate(pin_ttl: Duration) -> Gate {
        gate_with("connect=api.example.com:443", pin_ttl)
    }

    fn gate_with(rule: &str, pin_ttl: Duration) -> Gate {
        let policy =
            Policy::from_texts(&[rule], &[] as &[&str], cap_std::ambient_authority()).unwrap();
        let mut gate = Gate::new("t".into(), Arc::new(policy), Arc::default());
        gate.set_resolver(Arc::new(Loopback));
        gate.set_pin_ttl(pin_ttl);
        gate
    }

    #[tokio::test]
    async fn a_name_grant_covers_the_pinned_address_only() {
        let mut gate = gate(Duration::from_secs(60));
        let addr: SocketAddr = "127.0.0.1:443".parse().unwrap();
        assert_eq!(
            gate.grant::<uses::Connect>(addr, None).err(),
            Some(Errno::EACCES)
        );
        gate.resolve("API.example.com.", None).await.unwrap();
        assert_eq!(
            gate.grant::<uses::Connect>(addr, None).unwrap().addr(),
            addr
        );
        let other_port: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(gate.grant::<uses::Connect>(other_port, None).is_err());
    }

    #[tokio::test]
    async fn a_pin_lifetime_of_duration_max_means_forever_not_a_panic() {
        let mut gate = gate(Duration::MAX);
        gate.resolve("api.example.com", None).await.unwrap();
        let addr: SocketAddr = "127.0.0.1:443".parse().unwrap();
        assert!(gate.grant::<uses::Connect>(addr, None).is_ok());
    }

    /// Never answers.
    struct Silent;

    impl Resolver for Silent {
        fn lookup(&self, _name: &str, _family: Option<Family>) -> ResolveFuture {
            Box::pin(std::future::pending())
        }
    }

    /// Counts the names it is asked for, and answers 127.0.0.1.
    #[derive(Default)]
    struct Counting(std::sync::Mutex<Vec<String>>);

    impl Resolver for Counting {
        fn lookup(&self, name: &str, _family: Option<Family>) -> ResolveFuture {
            self.0.lock().unwrap().push(name.to_string());
            Box::pin(async { Ok(vec![("127.0.0.1".parse().unwrap(), None)]) })
        }
    }

    #[tokio::test]
    async fn a_name_the_policy_does_not_grant_is_never_looked_up() {
        let mut gate = gate(Duration::from_secs(60));
        let resolver = Arc::new(Counting::default());
        gate.set_resolver(resolver.clone());
        assert_eq!(
            gate.resolve("api.example.com.corp.test", None).await,
            Err(Errno::EACCES)
        );
        assert_eq!(gate.resolve("other.test", None).await, Err(Errno::EACCES));
        gate.resolve("api.example.com", None).await.unwrap();
        assert_eq!(*resolver.0.lock().unwrap(), ["api.example.com"]);
    }

    #[tokio::test]
    async fn a_lookup_that_never_ends_fails_with_eai_again_after_the_timeout() {
        let mut gate = gate(Duration::from_secs(60));
        gate.set_resolver(Arc::new(Silent));
        gate.lookup_timeout = Duration::from_millis(50);
        let started = Instant::now();
        assert_eq!(
            gate.resolve("api.example.com", None).await,
            Err(Errno::EAI_AGAIN)
        );
        assert!(started.elapsed() >= gate.lookup_timeout);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn pins_per_address_stay_bounded_and_checks_stay_cheap() {
        const NAMES: usize = 20_000;
        let mut gate = gate_with("connect=*.example.com:443", Duration::from_secs(60));
        for i in 0..NAMES {
            gate.resolve(&format!("n{i}.example.com"), None)
                .await
                .unwrap();
        }
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let pinned = &gate.pins[&ip];
        assert_eq!(pinned.len(), MAX_NAMES_PER_ADDR);
        assert_eq!(gate.pinned_names, MAX_NAMES_PER_ADDR);
        // The latest names stay, the oldest went first.
        let last = format!("n{}.example.com", NAMES - 1);
        assert!(pinned.live(Instant::now()).contains(&last));
        assert!(!pinned.names.contains(&"n0.example.com".to_string()));
        let addr: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let mut times = Vec::new();
        for _ in 0..100 {
            let t = std::time::Instant::now();
            gate.grant::<uses::Connect>(addr, None).unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        println!("{NAMES} names to one address: median check {:?}", times[50]);
        assert!(times[50] < Duration::from_millis(1), "{times:?}");
    }

    #[test]
    fn a_pin_set_keeps_its_live_names_first() {
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let mut set = PinSet::default();
        set.pin("a", now + s, now);
        set.pin("b", now + 3 * s, now);
        set.pin("c", now + 2 * s, now);
        assert_eq!(set.live(now), ["b", "c", "a"]);
        assert_eq!(set.live(now + s), ["b", "c"]);
        assert_eq!(set.live(now + 3 * s), [] as [&str; 0]);
        // A new lookup of a name moves its pin.
        set.pin("a", now + 4 * s, now);
        assert_eq!(set.live(now + 3 * s), ["a"]);
        // Full: expired pins go first, then the one that expires soonest.
        for i in 0..MAX_NAMES_PER_ADDR * 2 {
            set.pin(&format!("n{i}"), now + 10 * s + i as u32 * s, now + 5 * s);
        }
        assert_eq!(set.len(), MAX_NAMES_PER_ADDR);
        assert!(!set.names.contains(&"a".to_string()));
        assert_eq!(set.names[0], format!("n{}", MAX_NAMES_PER_ADDR * 2 - 1));
        assert_eq!(
            set.names[MAX_NAMES_PER_ADDR - 1],
            format!("n{MAX_NAMES_PER_ADDR}")
        );
    }

    fn denied_event(port: u16) -> AuditEvent {
        AuditEvent {
            time: std::time::SystemTime::now(),
            guest: "t".into(),
            use_: Use::Connect,
            target: Target::Addr(SocketAddr::from(([127, 0, 0, 1], port))),
            verdict: Verdict::Deny,
            decision: Decision::NotGranted,
            repeated: 0,
        }
    }

    /// The decisions a list of events stands for.
    fn decisions(events: &[AuditEvent]) -> u64 {
        events.iter().map(|e| 1 + e.repeated).sum()
    }

    #[test]
    fn identical_audit_events_are_held_back_and_counted() {
        let mut limiter = AuditLimiter::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut out = Vec::new();
        for i in 0..1000u32 {
            out.extend(limiter.admit(denied_event(80), t0 + i * ms));
        }
        // A different target is a different event.
        out.extend(limiter.admit(denied_event(81), t0 + 999 * ms));
        assert_eq!(out.len(), AUDIT_BURST as usize + 1);
        assert!(out.iter().all(|e| e.repeated == 0));
        // The next window: the 990 held back are reported (by the last of them), and the new
        // event passes.
        let next = limiter.admit(denied_event(80), t0 + 1000 * ms);
        assert_eq!(next.len(), 2, "{next:?}");
        assert_eq!(next[0].repeated, 989);
        assert_eq!(next[1].repeated, 0);
        out.extend(next);
        for i in 1..500u32 {
            out.extend(limiter.admit(denied_event(80), t0 + (1000 + i) * ms));
        }
        // Two windows later nothing identical came: the sweep reports the last held event.
        let later = limiter.admit(denied_event(82), t0 + 2600 * ms);
        assert_eq!(later.len(), 2, "{later:?}");
        assert_eq!(later[0].repeated, 500 - AUDIT_BURST as u64 - 1);
        out.extend(later);
        out.extend(limiter.flush(None));
        assert_eq!(decisions(&out), 1000 + 1 + 500 + 1);
    }

    #[test]
    fn many_different_audit_events_are_grouped_past_the_key_limit() {
        let mut limiter = AuditLimiter::default();
        let now = Instant::now();
        let mut out = Vec::new();
        for port in 0..10_000u16 {
            out.extend(limiter.admit(denied_event(port), now));
        }
        assert!(limiter.keys.len() <= AUDIT_KEYS + 1);
        assert_eq!(out.len(), AUDIT_KEYS + AUDIT_BURST as usize);
        out.extend(limiter.flush(None));
        assert_eq!(decisions(&out), 10_000);
    }

    #[test]
    fn held_audit_events_are_reported_when_the_guest_ends() {
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = events.clone();
        let stats = Arc::new(Stats::default());
        let mut gate = gate(Duration::from_secs(60));
        gate.stats = stats.clone();
        gate.set_audit(Arc::new(move |e: &AuditEvent| {
            seen.lock().unwrap().push(e.clone())
        }));
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for _ in 0..1000 {
            assert!(gate.grant::<uses::Connect>(addr, None).is_err());
        }
        assert_eq!(Stats::get(&stats.denied), 1000);
        assert_eq!(events.lock().unwrap().len(), AUDIT_BURST as usize);
        drop(gate);
        let events = events.lock().unwrap();
        assert_eq!(decisions(&events), 1000);
        assert_eq!(
            stats.audit_held.load(std::sync::atomic::Ordering::Relaxed),
            1000 - events.len() as u64
        );
    }
}
