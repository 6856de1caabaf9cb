//! `getaddrinfo`: literals converted in place, names looked up by the system resolver on a
//! blocking thread (never on the async executor), and only when the policy grants the name.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dns_lookup::{AddrInfoHints, LookupErrorKind};

use crate::addr::Family;
use crate::ctx::UsocketCtx;
use crate::errno::{Errno, SockResult};
use crate::socket::Kind;

/// One result: MicroPython's `(family, type, proto, "", (address, port))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrInfo {
    /// AF_INET or AF_INET6.
    pub family: Family,
    /// The requested type, or SOCK_STREAM.
    pub kind: Kind,
    /// The address to connect or bind to.
    pub addr: SocketAddr,
}

/// How long a name lookup may take before it counts as a temporary failure (EAI_AGAIN).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// `getaddrinfo(host, port, af, type, proto, flags)`; `flags` are accepted and ignored, as
/// MicroPython's ports do.
pub async fn getaddrinfo(
    ctx: &mut UsocketCtx,
    host: &str,
    port: i32,
    af: i32,
    socktype: i32,
    proto: i32,
) -> SockResult<Vec<AddrInfo>> {
    let port = u16::try_from(port).map_err(|_| Errno::EINVAL)?;
    let want = match af {
        0 => None,
        _ => Some(Family::from_af(af).ok_or(Errno::EAI_FAMILY)?),
    };
    let kind = match socktype {
        0 => Kind::Stream,
        n => Kind::from_number(n).ok_or(Errno::EINVAL)?,
    };
    if proto != 0 && proto != kind.proto() {
        return Err(Errno::EINVAL);
    }
    let info = |ip: IpAddr| AddrInfo {
        family: Family::of(ip),
        kind,
        addr: SocketAddr::new(ip, port),
    };

    // Numeric literals: no lookup, no policy question.
    if let Ok(ip) = host.parse::<IpAddr>() {
        if want.is_some_and(|f| f != Family::of(ip)) {
            return Err(Errno::EAI_ADDRFAMILY);
        }
        return Ok(vec![info(ip)]);
    }
    if !is_host_name(host) {
        return Err(Errno::EAI_NONAME);
    }
    // RFC 6761 6.4: `.invalid` never resolves; answer without asking anyone.
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    if lower == "invalid" || lower.ends_with(".invalid") {
        return Err(Errno::EAI_NONAME);
    }
    ctx.check_name(host)?;
    let ips = ctx.resolve(host, want).await?;
    let found: Vec<AddrInfo> = ips
        .into_iter()
        .filter(|ip| want.is_none_or(|f| f == Family::of(*ip)))
        .map(info)
        .collect();
    if found.is_empty() {
        return Err(Errno::EAI_NONAME);
    }
    Ok(found)
}

/// Whether `host` is a syntactically valid DNS name that is not a numeric alias such as
/// `127.1` or `0x7f.1` (a name's last label is never numeric).
fn is_host_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let last = name.rsplit('.').next().unwrap_or(name);
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .or_else(|| last.strip_prefix("0X"))
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    name.split('.').all(label_ok) && !numeric
}

/// The system resolver (`/etc/hosts`, then DNS), on tokio's blocking pool. It reports no
/// TTLs.
pub(crate) async fn system_lookup(
    host: String,
    family: Option<Family>,
) -> SockResult<Vec<(IpAddr, Option<Duration>)>> {
    let hints = AddrInfoHints {
        // One entry per address: ask for stream sockets only.
        socktype: 1,
        address: family.map_or(0, |f| f.af()),
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
        Ok(Err(_join)) => Err(Errno::EAI_AGAIN),
        Err(_elapsed) => Err(Errno::EAI_AGAIN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_syntax() {
        for good in [
            "localhost",
            "a.example.com",
            "x-1.test.",
            "_srv.example.org",
        ] {
            assert!(is_host_name(good), "{good}");
        }
        for bad in [
            "",
            "hey.!!$$",
            "127.1",
            "2130706433",
            "0x7f.1",
            "a..b",
            "-a.com",
            "a b",
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }
}
