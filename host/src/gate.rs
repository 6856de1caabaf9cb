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
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::addr::{Family, normalize_name};
use crate::audit::{AuditEvent, AuditHook, Target, Verdict};
use crate::errno::{Errno, SockResult};
use crate::policy::{AddressPolicy, Decision, Request, Use};
use crate::resolver::{Resolver, SystemResolver};
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
    _use: PhantomData<fn() -> U>,
}

impl<U> Grant<U> {
    /// The granted address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The most addresses one guest keeps pinned; further answers are not pinned (their name
/// grants then do not cover them).
const MAX_PINS: usize = 4096;

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
    pins: HashMap<IpAddr, Vec<(String, Instant)>>,
}

impl Gate {
    pub(crate) fn new(label: Arc<str>, policy: Arc<dyn AddressPolicy>, stats: Arc<Stats>) -> Gate {
        Gate {
            label,
            policy,
            resolver: Arc::new(SystemResolver),
            audit: None,
            stats,
            pin_ttl: crate::limits::Limits::default().pin_ttl,
            pins: HashMap::new(),
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
        self.check_addr(U::USE, addr)?;
        if let Some(family) = implicit_bind {
            self.check_addr(Use::AutoBind, SocketAddr::new(family.unspecified(), 0))?;
        }
        Ok(Grant {
            addr,
            _use: PhantomData,
        })
    }

    /// Whether an inbound connection (`Use::Accept`) or datagram (`Use::Recv`) from `peer`
    /// may reach the guest.
    pub(crate) fn admits(&self, use_: Use, peer: SocketAddr) -> bool {
        debug_assert!(matches!(use_, Use::Accept | Use::Recv));
        self.check_addr(use_, peer).is_ok()
    }

    /// Decides a use of an address, records it, and turns a refusal into EACCES (unless the
    /// policy is a dry run).
    fn check_addr(&self, use_: Use, addr: SocketAddr) -> SockResult<()> {
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
        self.decided(use_, Target::Addr(addr), decision)
    }

    /// Decides a host name lookup, as [`Gate::check_addr`].
    pub(crate) fn check_name(&self, name: &str) -> SockResult<()> {
        let decision = self.policy.check_name(name);
        self.decided(Use::Resolve, Target::Name(name.to_string()), decision)
    }

    /// Resolves a name [`Gate::check_name`] granted and pins its answers to it.
    pub(crate) async fn resolve(
        &mut self,
        name: &str,
        family: Option<Family>,
    ) -> SockResult<Vec<IpAddr>> {
        self.stats
            .lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answers = self.resolver.lookup(name, family).await?;
        let now = Instant::now();
        if self.pins.len() >= MAX_PINS {
            self.pins.retain(|_, names| {
                names.retain(|(_, until)| *until > now);
                !names.is_empty()
            });
        }
        let name = normalize_name(name);
        for (ip, ttl) in &answers {
            if self.pins.len() >= MAX_PINS && !self.pins.contains_key(ip) {
                break;
            }
            let ttl = ttl.map_or(self.pin_ttl, |t| t.min(self.pin_ttl));
            // A lifetime too long to represent is as good as forever (`Duration::MAX`).
            let until = now.checked_add(ttl).unwrap_or(far_future(now));
            let names = self.pins.entry(*ip).or_default();
            match names.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => entry.1 = until,
                None => names.push((name.clone(), until)),
            }
        }
        Ok(answers.into_iter().map(|(ip, _)| ip).collect())
    }

    fn decided(&self, use_: Use, target: Target, decision: Decision) -> SockResult<()> {
        let (verdict, result) = match (decision.is_allowed(), self.policy.is_dry_run()) {
            (true, _) => (Verdict::Allow, Ok(())),
            (false, true) => (Verdict::WouldDeny, Ok(())),
            (false, false) => (Verdict::Deny, Err(Errno::EACCES)),
        };
        self.stats.decided(use_, verdict, &decision);
        let event = AuditEvent {
            time: std::time::SystemTime::now(),
            guest: self.label.clone(),
            use_,
            target,
            verdict,
            decision,
        };
        event.trace();
        if let Some(hook) = &self.audit {
            hook.record(&event);
        }
        result
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
        let policy = Policy::from_texts(
            &["connect=api.example.com:443"],
            &[] as &[&str],
            cap_std::ambient_authority(),
        )
        .unwrap();
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
        gate.check_name("API.example.com.").unwrap();
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
}
