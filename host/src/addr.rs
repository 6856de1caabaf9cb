//! Socket addresses as the guest passes them: a numeric literal and a port, validated strictly;
//! the IPv4 addresses IPv6 addresses carry ([`embedded`], [`spellings`], [`embedded_net`]);
//! host-name syntax ([`is_host_name`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{Ipv4Net, Ipv6Net};

use usocket_abi::{AF_INET, AF_INET6};

use crate::errno::{Errno, SockResult};

/// An address family: what `socket(af, ..)` and `getaddrinfo(.., af)` take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// AF_INET.
    V4,
    /// AF_INET6. Such sockets never reach IPv4 (IPV6_V6ONLY is always set).
    V6,
}

impl Family {
    /// The family of a MicroPython `af` number.
    pub fn from_af(af: i32) -> Option<Family> {
        match af {
            AF_INET => Some(Family::V4),
            AF_INET6 => Some(Family::V6),
            _ => None,
        }
    }

    /// The MicroPython `af` number.
    pub fn af(self) -> i32 {
        match self {
            Family::V4 => AF_INET,
            Family::V6 => AF_INET6,
        }
    }

    /// The family an IP address belongs to.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The wildcard address (`0.0.0.0` / `::`).
    pub fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

/// What an address is for; each purpose has its own rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `bind`: `""` is the wildcard, port 0 means any.
    Bind,
    /// `connect`, `sendto`: a concrete destination, port 1-65535.
    Destination,
}

/// Parses a port number: 0-65535, else EINVAL.
pub fn parse_port(port: i32) -> SockResult<u16> {
    u16::try_from(port).map_err(|_| Errno::EINVAL)
}

/// Parses a guest address for a socket of `family`.
///
/// Only numeric literals in their plain form are accepted (`127.0.0.1`, `::1`): host names,
/// shortened or numeric aliases (`127.1`, `2130706433`, `0x7f.0.0.1`) and zone ids give EINVAL,
/// as do `""`, the wildcard and port 0 as destinations. A literal of the other family gives
/// EAFNOSUPPORT.
pub fn parse(family: Family, address: &str, port: i32, purpose: Purpose) -> SockResult<SocketAddr> {
    let port = parse_port(port)?;
    let ip = if address.is_empty() {
        match purpose {
            Purpose::Bind => family.unspecified(),
            Purpose::Destination => return Err(Errno::EINVAL),
        }
    } else {
        // Rust's parsers accept exactly the plain dotted-quad and RFC 4291 text forms.
        address.parse::<IpAddr>().map_err(|_| Errno::EINVAL)?
    };
    if Family::of(ip) != family {
        return Err(Errno::EAFNOSUPPORT);
    }
    // The wildcard is no destination, in any spelling (`::ffff:0.0.0.0`, `64:ff9b::`, ...).
    let unspecified = spellings(ip).iter().any(IpAddr::is_unspecified);
    if purpose == Purpose::Destination && (port == 0 || unspecified) {
        return Err(Errno::EINVAL);
    }
    Ok(SocketAddr::new(ip, port))
}

/// How an IPv6 address carries an IPv4 address (see [`embedded`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Embedding {
    /// IPv4-mapped `::ffff:a.b.c.d` (RFC 4291): the IPv4 address itself.
    Mapped,
    /// IPv4-translated `::ffff:0:a.b.c.d` (RFC 2765).
    Translated,
    /// IPv4-compatible `::a.b.c.d` (deprecated, but routable on some stacks); `::` and `::1`
    /// are not.
    Compatible,
    /// NAT64 with the well-known prefix, `64:ff9b::a.b.c.d` (RFC 6052).
    Nat64,
    /// Local-use NAT64, `64:ff9b:1::/48` (RFC 8215), with the IPv4 address in the low 32 bits.
    LocalNat64,
    /// 6to4, `2002:aabb:ccdd::/48` (RFC 3056): the IPv6 network behind the router a.b.c.d,
    /// not a.b.c.d itself.
    SixToFour,
}

impl Embedding {
    /// Whether an address of this form names the IPv4 host itself (every form but 6to4):
    /// the policy treats such an *alias* as the IPv4 address in allow and deny rules alike.
    pub fn is_alias(self) -> bool {
        self != Embedding::SixToFour
    }

    /// The IPv6 range of this form and where its IPv4 address sits in it (the bit offset of
    /// its first bit).
    fn range(self) -> (Ipv6Net, u8) {
        let net = |segments: [u16; 8], prefix| {
            let [a, b, c, d, e, f, g, h] = segments;
            Ipv6Net::new(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix).expect("a valid prefix")
        };
        match self {
            Embedding::Mapped => (net([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), 96),
            Embedding::Translated => (net([0, 0, 0, 0, 0xffff, 0, 0, 0], 96), 96),
            Embedding::Compatible => (net([0; 8], 96), 96),
            Embedding::Nat64 => (net([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), 96),
            Embedding::LocalNat64 => (net([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), 96),
            Embedding::SixToFour => (net([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), 16),
        }
    }

    const ALL: [Embedding; 6] = [
        Embedding::Mapped,
        Embedding::Translated,
        Embedding::Compatible,
        Embedding::Nat64,
        Embedding::LocalNat64,
        Embedding::SixToFour,
    ];
}

/// The 32 bits of `v6` from bit `offset` on.
fn v4_at(v6: Ipv6Addr, offset: u8) -> Ipv4Addr {
    Ipv4Addr::from((u128::from(v6) >> (96 - u32::from(offset))) as u32)
}

/// The IPv4 address an IPv6 address carries, and how (see [`Embedding`]); `None` for an IPv6
/// address that carries none. NAT64 prefixes an operator chose cannot be recognised: deny
/// those by CIDR.
pub fn embedded(v6: Ipv6Addr) -> Option<(Ipv4Addr, Embedding)> {
    Embedding::ALL.into_iter().find_map(|form| {
        let (range, offset) = form.range();
        let v4 = v4_at(v6, offset);
        let not_compatible = form == Embedding::Compatible && matches!(u32::from(v4), 0 | 1);
        (range.contains(&v6) && !not_compatible).then_some((v4, form))
    })
}

/// The IPv4 addresses an address stands for: itself, and the IPv4 address an IPv6 address
/// carries ([`embedded`]: IPv4-mapped, IPv4-translated ::ffff:0:0/96, IPv4-compatible, NAT64
/// 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16). Deny rules match against all of them.
/// NAT64 prefixes an operator chose cannot be recognised: deny those by CIDR.
pub fn spellings(ip: IpAddr) -> Vec<IpAddr> {
    let mut out = vec![ip];
    if let IpAddr::V6(v6) = ip {
        out.extend(embedded(v6).map(|(v4, _)| IpAddr::V4(v4)));
    }
    out
}

/// The IPv4 network an IPv6 network stands for, when every address in it carries an IPv4
/// address in the same form: the smallest network holding all the IPv4 addresses they carry
/// (`[::ffff:10.0.0.0]/104` is 10.0.0.0/8, `[64:ff9b::]/96` and `[::ffff:0:0]/96` are
/// 0.0.0.0/0, `[2002:a9fe:a9fe::]/48` is 169.254.169.254/32). `None` when some address in
/// it carries none (`[::]/96` holds `::` and `::1`; `[::]/0` holds all of IPv6).
pub fn embedded_net(net: Ipv6Net) -> Option<(Ipv4Net, Embedding)> {
    let net = net.trunc();
    Embedding::ALL.into_iter().find_map(|form| {
        let (range, offset) = form.range();
        if net.prefix_len() < range.prefix_len() || !range.contains(&net.network()) {
            return None;
        }
        if form == Embedding::Compatible && matches!(u32::from(v4_at(net.network(), 96)), 0 | 1) {
            return None;
        }
        // The bits of the prefix that fall inside the IPv4 address.
        let bits = net.prefix_len().saturating_sub(offset).min(32);
        let v4 = Ipv4Net::new(v4_at(net.network(), offset), bits)
            .ok()?
            .trunc();
        Some((v4, form))
    })
}

/// Whether `name` is a syntactically valid DNS host name (one final dot allowed): labels of
/// 1-63 letters, digits, `-` or `_`, not starting or ending with `-`, at most 253 bytes, and a
/// last label that is not numeric, so that aliases such as `127.1` or `0x7f.1` are no names.
///
/// The one name check of the host: `getaddrinfo` and the policy's name rules both use it.
pub fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
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

/// A host name as rules and pins compare it: lower case, without the final dot.
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The text form a guest gets back: the address literal, without brackets or zone.
pub fn literal(addr: &SocketAddr) -> String {
    addr.ip().to_string()
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
            "a-.com",
            "a b",
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }

    #[test]
    fn plain_literals_parse() {
        let a = parse(Family::V4, "127.0.0.1", 80, Purpose::Destination).unwrap();
        assert_eq!(a, "127.0.0.1:80".parse().unwrap());
        let a = parse(Family::V6, "::1", 80, Purpose::Destination).unwrap();
        assert_eq!(a, "[::1]:80".parse().unwrap());
    }

    #[test]
    fn names_and_aliases_are_einval() {
        for bad in [
            "localhost",
            "1.2.3",
            "127.1",
            "2130706433",
            "0x7f.0.0.1",
            "[::1]",
            " 1.2.3.4",
        ] {
            assert_eq!(
                parse(Family::V4, bad, 80, Purpose::Destination),
                Err(Errno::EINVAL),
                "{bad}"
            );
        }
        assert_eq!(
            parse(Family::V6, "fe80::1%eth0", 80, Purpose::Destination),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn ports_are_checked_per_purpose() {
        assert_eq!(
            parse(Family::V4, "127.0.0.1", 0, Purpose::Destination),
            Err(Errno::EINVAL)
        );
        assert!(parse(Family::V4, "127.0.0.1", 0, Purpose::Bind).is_ok());
        assert_eq!(
            parse(Family::V4, "127.0.0.1", 65536, Purpose::Bind),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            parse(Family::V4, "127.0.0.1", -1, Purpose::Bind),
            Err(Errno::EINVAL)
        );
        assert!(parse(Family::V4, "127.0.0.1", 65535, Purpose::Destination).is_ok());
    }

    #[test]
    fn wildcard_only_for_bind() {
        assert_eq!(
            parse(Family::V4, "", 80, Purpose::Destination),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            parse(Family::V4, "0.0.0.0", 80, Purpose::Destination),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            parse(Family::V6, "::", 80, Purpose::Destination),
            Err(Errno::EINVAL)
        );
        for spelled in ["::ffff:0.0.0.0", "64:ff9b::", "2002::1"] {
            assert_eq!(
                parse(Family::V6, spelled, 80, Purpose::Destination),
                Err(Errno::EINVAL),
                "{spelled}"
            );
        }
        assert_eq!(
            parse(Family::V6, "", 0, Purpose::Bind).unwrap(),
            "[::]:0".parse().unwrap()
        );
    }

    #[test]
    fn other_family_is_eafnosupport() {
        assert_eq!(
            parse(Family::V4, "::1", 80, Purpose::Destination),
            Err(Errno::EAFNOSUPPORT)
        );
        assert_eq!(
            parse(Family::V6, "127.0.0.1", 80, Purpose::Bind),
            Err(Errno::EAFNOSUPPORT)
        );
    }
}
