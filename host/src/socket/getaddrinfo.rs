//! `getaddrinfo`: literals converted in place; names looked up through the gate, which asks
//! the policy first, looks the name up as written (fully qualified, no search list) and pins
//! the answers to the name.

use std::net::{IpAddr, SocketAddr};

use super::Kind;
use crate::addr::{Family, is_host_name, normalize_name};
use crate::ctx::UsocketCtx;
use crate::errno::{Errno, SockResult};

/// One result: MicroPython's `(family, type, proto, "", (address, port))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AddrInfo {
    /// AF_INET or AF_INET6.
    pub(crate) family: Family,
    /// The requested type, or SOCK_STREAM.
    pub(crate) kind: Kind,
    /// The address to connect or bind to.
    pub(crate) addr: SocketAddr,
}

/// `getaddrinfo(host, port, af, type, proto, flags)`; `flags` are accepted and ignored, as
/// MicroPython's ports do.
pub(crate) async fn getaddrinfo(
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
    let lower = normalize_name(host);
    if lower == "invalid" || lower.ends_with(".invalid") {
        return Err(Errno::EAI_NONAME);
    }
    // The gate asks the policy first: a name it does not grant is never looked up.
    let ips = ctx.gate_mut().resolve(host, want).await?;
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
