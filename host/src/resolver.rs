//! Name lookups: the [`Resolver`] seam and the system resolver behind it by default.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use dns_lookup::{AddrInfoHints, LookupErrorKind};

use crate::addr::Family;
use crate::errno::{Errno, SockResult};

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

/// How long a name lookup may take before it counts as a temporary failure (EAI_AGAIN).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The host's resolver (`/etc/hosts`, then DNS) on tokio's blocking pool. It reports no TTLs.
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup(&self, name: &str, family: Option<Family>) -> ResolveFuture {
        Box::pin(system_lookup(name.to_string(), family))
    }
}

async fn system_lookup(
    host: String,
    family: Option<Family>,
) -> SockResult<Vec<(IpAddr, Option<Duration>)>> {
    let hints = AddrInfoHints {
        // One entry per address: ask for stream sockets only.
        socktype: usocket_abi::SOCK_STREAM,
        address: family.map_or(0, Family::af),
        ..AddrInfoHints::default()
    };
    let task =
        tokio::task::spawn_blocking(move || -> SockResult<Vec<(IpAddr, Option<Duration>)>> {
            let results = dns_lookup::getaddrinfo(Some(&host), None, Some(hints)).map_err(|e| {
                match e.kind() {
                    LookupErrorKind::Again => Errno::EAI_AGAIN,
                    LookupErrorKind::Family => Errno::EAI_FAMILY,
                    _ => Errno::EAI_NONAME,
                }
            })?;
            let mut ips = Vec::new();
            for ip in results.filter_map(Result::ok).map(|r| r.sockaddr.ip()) {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
            Ok(ips.into_iter().map(|ip| (ip, None)).collect())
        });
    match tokio::time::timeout(LOOKUP_TIMEOUT, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) | Err(_) => Err(Errno::EAI_AGAIN),
    }
}
