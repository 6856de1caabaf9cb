//! Name lookups: the [`Resolver`] seam and the system resolver behind it by default.
//!
//! The gate hands a resolver only names the policy granted, and the resolver must ask for
//! exactly those: [`SystemResolver`] looks every name up as a fully-qualified name, with no
//! search list or domain from resolv.conf (whatever its `search`, `domain` or `ndots` say), so
//! no query for a name nobody granted leaves the host. It answers `localhost` and the names in
//! `/etc/hosts` without a query, reports the records' TTLs (the gate pins answers no longer
//! than that), and is async: dropping a lookup (a guest's time limit, its `Canceller`) stops it
//! at once, with no thread left waiting on the network.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_resolver::config::{ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::{Hosts, Name, ResolveError, TokioResolver};

use crate::addr::Family;
use crate::errno::{Errno, SockResult};

/// Looks host names up. [`SystemResolver`] is the default; tests and embedders can inject
/// their own (for example to pin answers, or to count queries).
pub trait Resolver: Send + Sync + 'static {
    /// The addresses of `name` (of `family`, if given), in preference order, each with its
    /// time to live if the resolver knows it.
    ///
    /// `name` is a host name the policy granted, with or without a final dot: a resolver must
    /// treat it as fully qualified and ask for that name only (never with a search list or
    /// domain appended). Fail with [`Errno::EAI_NONAME`] for a name that does not exist and
    /// [`Errno::EAI_AGAIN`] for a temporary failure. The gate gives up on a lookup after
    /// [`LOOKUP_TIMEOUT`] (EAI_AGAIN) and may drop the future at any point.
    fn lookup(&self, name: &str, family: Option<Family>) -> ResolveFuture;
}

/// What [`Resolver::lookup`] returns.
pub type ResolveFuture = Pin<Box<dyn Future<Output = SockResult<Answers>> + Send>>;

/// A lookup's addresses, each with its time to live if known.
pub type Answers = Vec<(IpAddr, Option<Duration>)>;

/// How long a name lookup may take before it counts as a temporary failure (EAI_AGAIN),
/// whichever resolver makes it.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest one query to one name server may take (resolv.conf's `timeout`, capped).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most times one query is sent (resolv.conf's `attempts`, capped).
const MAX_ATTEMPTS: usize = 2;

/// The host's resolver: the name servers of `/etc/resolv.conf` (nothing else from it),
/// `/etc/hosts` first, `localhost` without a query; names always looked up fully qualified.
///
/// A name `/etc/hosts` lists is answered from it alone (no query, even for a family it has no
/// address of), as the C library does for a lookup of any family.
///
/// It is made at the first lookup, on the runtime that makes it; give each guest its own
/// (as [`crate::UsocketCtx`] does). Without a usable resolv.conf only `localhost` and
/// `/etc/hosts` resolve (other names fail with EAI_AGAIN, and a warning says why once).
#[derive(Default)]
pub struct SystemResolver {
    inner: OnceLock<(TokioResolver, Arc<Hosts>)>,
}

impl std::fmt::Debug for SystemResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemResolver")
            .field("ready", &self.inner.get().is_some())
            .finish()
    }
}

impl SystemResolver {
    /// A resolver that reads the system's configuration at its first lookup.
    pub fn new() -> SystemResolver {
        SystemResolver::default()
    }

    fn resolver(&self) -> (TokioResolver, Arc<Hosts>) {
        self.inner
            .get_or_init(|| {
                let hosts = Hosts::from_system().unwrap_or_default();
                let resolver = system_resolver(std::path::Path::new("/etc/resolv.conf"));
                (resolver, Arc::new(hosts))
            })
            .clone()
    }
}

impl Resolver for SystemResolver {
    fn lookup(&self, name: &str, family: Option<Family>) -> ResolveFuture {
        let name = match fully_qualified(name) {
            Ok(name) => name,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let (resolver, hosts) = self.resolver();
        if let Some(found) = from_hosts(&hosts, &name, family) {
            return Box::pin(async move { found });
        }
        Box::pin(async move { lookup(&resolver, name, family).await })
    }
}

/// `name` as a fully-qualified DNS name (a final dot added if missing).
fn fully_qualified(name: &str) -> SockResult<Name> {
    let mut name = Name::from_ascii(name).map_err(|_| Errno::EAI_NONAME)?;
    name.set_fqdn(true);
    Ok(name)
}

/// The answer of the hosts file, if it lists `name` (of any family).
fn from_hosts(hosts: &Hosts, name: &Name, family: Option<Family>) -> Option<SockResult<Answers>> {
    let lookup = |rtype| hosts.lookup_static_host(&Query::query(name.clone(), rtype));
    let (v4, v6) = (lookup(RecordType::A), lookup(RecordType::AAAA));
    if v4.is_none() && v6.is_none() {
        return None;
    }
    let wanted = match family {
        Some(Family::V4) => vec![v4],
        Some(Family::V6) => vec![v6],
        None => vec![v4, v6],
    };
    let mut found = Vec::new();
    for lookup in wanted.into_iter().flatten() {
        let ttl = ttl(lookup.valid_until());
        found.extend(lookup.iter().filter_map(|r| Some((r.ip_addr()?, ttl))));
    }
    Some(if found.is_empty() {
        Err(Errno::EAI_NONAME)
    } else {
        Ok(found)
    })
}

/// Builds the resolver from the name servers of `resolv_conf` and the system's hosts file.
fn system_resolver(resolv_conf: &std::path::Path) -> TokioResolver {
    let parsed = std::fs::read(resolv_conf)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            hickory_resolver::system_conf::parse_resolv_conf(text).map_err(|e| e.to_string())
        });
    let (servers, mut opts) = match parsed {
        Ok((config, opts)) => (config.name_servers().to_vec(), opts),
        Err(e) => {
            static WARNED: OnceLock<()> = OnceLock::new();
            WARNED.get_or_init(|| {
                tracing::warn!(
                    "usocket: no name server from {} ({e}): only localhost and the names in \
                     /etc/hosts resolve, other lookups fail with EAI_AGAIN; add a \
                     `nameserver` line to fix this",
                    resolv_conf.display()
                )
            });
            (Vec::new(), ResolverOpts::default())
        }
    };
    // The name servers and nothing else: no domain, no search list, so `ndots` cannot matter
    // either (and names are fully qualified anyway).
    let config = ResolverConfig::from_parts(None, Vec::new(), servers);
    opts.ndots = 0;
    opts.use_hosts_file = ResolveHosts::Always;
    opts.timeout = opts.timeout.clamp(Duration::from_secs(1), QUERY_TIMEOUT);
    opts.attempts = opts.attempts.clamp(1, MAX_ATTEMPTS);
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build()
}

/// Looks `name` up: A records, AAAA records, or both (IPv4 first, as most hosts prefer).
async fn lookup(
    resolver: &TokioResolver,
    name: Name,
    family: Option<Family>,
) -> SockResult<Answers> {
    let v4 = async {
        let found = resolver.ipv4_lookup(name.clone()).await.map_err(errno)?;
        let ttl = ttl(found.valid_until());
        Ok(found.iter().map(|a| (IpAddr::V4(a.0), ttl)).collect())
    };
    let v6 = async {
        let found = resolver.ipv6_lookup(name.clone()).await.map_err(errno)?;
        let ttl = ttl(found.valid_until());
        Ok(found.iter().map(|a| (IpAddr::V6(a.0), ttl)).collect())
    };
    let found: Vec<_> = match family {
        Some(Family::V4) => v4.await?,
        Some(Family::V6) => v6.await?,
        None => match tokio::join!(v4, v6) {
            (Ok(mut a), Ok(b)) => {
                a.extend(b);
                a
            }
            (Ok(a), Err(e)) | (Err(e), Ok(a)) => {
                if a.is_empty() {
                    return Err(e);
                }
                a
            }
            // A temporary failure of either may hide an answer: say so, not "no such name".
            (Err(a), Err(b)) if a == Errno::EAI_AGAIN || b == Errno::EAI_AGAIN => {
                return Err(Errno::EAI_AGAIN);
            }
            (Err(e), Err(_)) => return Err(e),
        },
    };
    if found.is_empty() {
        return Err(Errno::EAI_NONAME);
    }
    Ok(found)
}

/// What is left of a record's life.
fn ttl(valid_until: std::time::Instant) -> Option<Duration> {
    Some(valid_until.saturating_duration_since(std::time::Instant::now()))
}

/// EAI_NONAME for an answer that the name (or its records of that type) does not exist,
/// EAI_AGAIN for everything else (no server reachable, time-outs, SERVFAIL, ...).
fn errno(e: ResolveError) -> Errno {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. })
            if matches!(
                *response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            ) =>
        {
            Errno::EAI_NONAME
        }
        _ => Errno::EAI_AGAIN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_fully_qualified() {
        for name in ["example.com", "example.com.", "localhost", "a_b.example"] {
            let n = fully_qualified(name).unwrap();
            assert!(n.is_fqdn(), "{name}");
            assert_eq!(n.to_ascii(), format!("{}.", name.trim_end_matches('.')));
        }
    }

    #[tokio::test]
    async fn localhost_and_hosts_resolve_without_a_resolv_conf() {
        let resolver = system_resolver(std::path::Path::new("/nonexistent/resolv.conf"));
        let name = fully_qualified("localhost").unwrap();
        let found = lookup(&resolver, name, Some(Family::V4)).await.unwrap();
        assert!(
            found.iter().any(|(ip, _)| ip.is_loopback()),
            "localhost: {found:?}"
        );
        assert!(found.iter().all(|(_, ttl)| ttl.is_some()));
    }

    #[tokio::test]
    async fn without_name_servers_other_names_fail_as_temporary() {
        let resolver = system_resolver(std::path::Path::new("/nonexistent/resolv.conf"));
        let name = fully_qualified("no-such-host.example.com").unwrap();
        let started = std::time::Instant::now();
        let err = lookup(&resolver, name, None).await.unwrap_err();
        assert_eq!(err, Errno::EAI_AGAIN);
        assert!(started.elapsed() < LOOKUP_TIMEOUT);
    }

    #[test]
    fn a_resolv_conf_search_list_and_ndots_are_ignored() {
        let dir = std::env::temp_dir().join(format!("usocket-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            "nameserver 192.0.2.53\ndomain corp.test\nsearch corp.test other.test\noptions ndots:5 timeout:30 attempts:9\n",
        )
        .unwrap();
        let resolver = system_resolver(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        let config = resolver.config();
        assert!(config.search().is_empty());
        assert!(config.domain().is_none());
        assert!(
            config
                .name_servers()
                .iter()
                .all(|s| s.socket_addr.ip().to_string() == "192.0.2.53")
        );
        let opts = resolver.options();
        assert_eq!(opts.ndots, 0);
        assert_eq!(opts.timeout, QUERY_TIMEOUT);
        assert_eq!(opts.attempts, MAX_ATTEMPTS);
    }

    #[test]
    fn a_name_in_the_hosts_file_is_answered_from_it_alone() {
        let mut hosts = Hosts::default();
        hosts
            .read_hosts_conf("127.0.0.5 internal.example.com\n::1 six.example.com\n".as_bytes())
            .unwrap();
        let name = |n| fully_qualified(n).unwrap();
        let v4: IpAddr = "127.0.0.5".parse().unwrap();
        let found = from_hosts(&hosts, &name("internal.example.com"), None).unwrap();
        assert_eq!(found.unwrap().iter().map(|f| f.0).collect::<Vec<_>>(), [v4]);
        let found = from_hosts(&hosts, &name("INTERNAL.example.com."), Some(Family::V4));
        assert!(found.unwrap().unwrap()[0].1.is_some(), "a TTL");
        assert_eq!(
            from_hosts(&hosts, &name("internal.example.com"), Some(Family::V6)),
            Some(Err(Errno::EAI_NONAME))
        );
        assert_eq!(
            from_hosts(&hosts, &name("six.example.com"), Some(Family::V4)),
            Some(Err(Errno::EAI_NONAME))
        );
        assert!(from_hosts(&hosts, &name("other.example.com"), None).is_none());
    }
}
