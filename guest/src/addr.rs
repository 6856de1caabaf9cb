//! Socket addresses: [`SockAddr`] (returned), [`AddrArg`] (accepted), [`AddrInfo`].

use crate::bindings::usocket::net::usocket as wit;

/// A socket address as this crate returns it: MicroPython's `(address, port)` tuple, with
/// `address` a numeric IPv4 (`"127.0.0.1"`) or IPv6 (`"::1"`) literal.
///
/// Returned by [`Socket::accept`](crate::Socket::accept),
/// [`Socket::recvfrom`](crate::Socket::recvfrom), [`getaddrinfo`](crate::getaddrinfo) (in
/// [`AddrInfo::sockaddr`]), [`Socket::getsockname`](crate::Socket::getsockname) and
/// [`Socket::getpeername`](crate::Socket::getpeername); every method taking an address accepts
/// it back, by value or by reference (see [`AddrArg`]).
pub type SockAddr = (String, u16);

/// A socket address as methods accept it: anything shaped like MicroPython's
/// `(address, port)` tuple.
///
/// Built with `From` (methods take `impl Into<AddrArg>`), so all of these work:
///
/// ```no_run
/// # fn main() -> usocket::Result<()> {
/// let sock = usocket::socket(usocket::AF_INET, usocket::SOCK_STREAM, 0)?;
/// sock.connect(("127.0.0.1", 8080))?; // (&str, integer literal)
/// let addr: usocket::SockAddr = usocket::getaddrinfo("127.0.0.1", 8080)?[0].sockaddr.clone();
/// sock.connect(&addr)?; // &(String, u16)
/// sock.connect(addr.clone())?; // (String, u16)
/// sock.connect("127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap())?;
/// assert!(sock.bind(("127.0.0.1", -1)).is_err()); // EINVAL, from the host
/// # Ok(())
/// # }
/// ```
///
/// The address is passed to the host as it is and the host validates it: a host name, a
/// malformed literal or `""` (outside `bind`) give EINVAL. The port may be any integer
/// convertible to `i64`; the host answers EINVAL outside 0-65535 (a port outside the `i32`
/// range is passed as -1 so that it gets the same answer instead of being truncated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrArg {
    address: String,
    port: i32,
}

impl AddrArg {
    /// The address literal (or whatever string was given).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The port as passed to the host (-1 if the given port did not fit in an `i32`).
    pub fn port(&self) -> i32 {
        self.port
    }

    pub(crate) fn to_wit(&self) -> wit::Sockaddr {
        wit::Sockaddr {
            address: self.address.clone(),
            port: self.port,
        }
    }
}

/// A port as the host takes it: an `i32`, or -1 (which the host rejects with EINVAL) when the
/// value does not fit.
pub(crate) fn port_arg(port: i64) -> i32 {
    i32::try_from(port).unwrap_or(-1)
}

impl<S: AsRef<str>, P: Into<i64>> From<(S, P)> for AddrArg {
    fn from((address, port): (S, P)) -> AddrArg {
        AddrArg {
            address: address.as_ref().to_string(),
            port: port_arg(port.into()),
        }
    }
}

impl<S: AsRef<str>, P: Into<i64> + Copy> From<&(S, P)> for AddrArg {
    fn from((address, port): &(S, P)) -> AddrArg {
        AddrArg {
            address: address.as_ref().to_string(),
            port: port_arg((*port).into()),
        }
    }
}

impl From<std::net::SocketAddr> for AddrArg {
    fn from(addr: std::net::SocketAddr) -> AddrArg {
        AddrArg {
            address: addr.ip().to_string(),
            port: i32::from(addr.port()),
        }
    }
}

/// A [`SockAddr`] from the host's record. The host only returns ports 0-65535; anything else
/// would be a host bug and becomes 0.
pub(crate) fn from_wit(addr: wit::Sockaddr) -> SockAddr {
    (addr.address, u16::try_from(addr.port).unwrap_or(0))
}

/// One [`getaddrinfo`](crate::getaddrinfo) result: MicroPython's 5-tuple
/// `(family, type, proto, canonname, sockaddr)`.
///
/// `getaddrinfo(host, port)[0][-1]`, the portable idiom, is
/// `getaddrinfo(host, port)?[0].sockaddr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrInfo {
    /// `AF_INET` or `AF_INET6`.
    pub family: i32,
    /// The requested socket type, or `SOCK_STREAM` if none was requested.
    pub socktype: i32,
    /// `IPPROTO_TCP` (stream) or `IPPROTO_UDP` (datagram).
    pub proto: i32,
    /// Always `""`.
    pub canonname: String,
    /// The address, ready for [`Socket::connect`](crate::Socket::connect) or
    /// [`Socket::bind`](crate::Socket::bind).
    pub sockaddr: SockAddr,
}

impl From<wit::Addrinfo> for AddrInfo {
    fn from(info: wit::Addrinfo) -> AddrInfo {
        AddrInfo {
            family: info.family,
            socktype: info.socktype,
            proto: info.proto,
            canonname: info.canonname,
            sockaddr: from_wit(info.sockaddr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(a: impl Into<AddrArg>) -> AddrArg {
        a.into()
    }

    #[test]
    fn untyped_literals() {
        let a = arg(("127.0.0.1", 9832));
        assert_eq!((a.address(), a.port()), ("127.0.0.1", 9832));
        assert_eq!(arg(("127.0.0.1", -1)).port(), -1);
        assert_eq!(arg(("127.0.0.1", 65536)).port(), 65536);
        assert_eq!(arg(("", 0)).address(), "");
    }

    #[test]
    fn sockaddr_by_value_and_by_reference() {
        let addr: SockAddr = ("::1".to_string(), 8080);
        assert_eq!(arg(&addr), arg(addr.clone()));
        assert_eq!(arg(&addr).address(), "::1");
        assert_eq!(arg(addr).port(), 8080);
    }

    #[test]
    fn other_integer_and_string_types() {
        assert_eq!(arg(("a", 1u8)).port(), 1);
        assert_eq!(arg(("a", 70000u32)).port(), 70000);
        assert_eq!(arg((String::from("a"), 5i16)).port(), 5);
        assert_eq!(arg((&String::from("a"), 5i64)).port(), 5);
        let pair = ("a", 7u16);
        assert_eq!(AddrArg::from(&pair).port(), 7);
    }

    #[test]
    fn ports_outside_i32_become_minus_one() {
        assert_eq!(arg(("a", i64::from(i32::MAX) + 1)).port(), -1);
        assert_eq!(arg(("a", i64::MIN)).port(), -1);
        assert_eq!(arg(("a", u32::MAX)).port(), -1);
        assert_eq!(arg(("a", i32::MIN)).port(), i32::MIN);
        assert_eq!(port_arg(65535), 65535);
    }

    #[test]
    fn std_socket_addr() {
        let a = arg("[::1]:80".parse::<std::net::SocketAddr>().unwrap());
        assert_eq!((a.address(), a.port()), ("::1", 80));
        let a = arg("10.0.0.1:65535".parse::<std::net::SocketAddr>().unwrap());
        assert_eq!((a.address(), a.port()), ("10.0.0.1", 65535));
    }

    #[test]
    fn from_the_host() {
        let addr = wit::Sockaddr {
            address: "127.0.0.1".into(),
            port: 9801,
        };
        assert_eq!(from_wit(addr), ("127.0.0.1".to_string(), 9801));
        let bad = wit::Sockaddr {
            address: "x".into(),
            port: 70000,
        };
        assert_eq!(from_wit(bad).1, 0);
        let info = AddrInfo::from(wit::Addrinfo {
            family: 2,
            socktype: 1,
            proto: 6,
            canonname: String::new(),
            sockaddr: wit::Sockaddr {
                address: "127.0.0.1".into(),
                port: 80,
            },
        });
        assert_eq!(info.sockaddr, ("127.0.0.1".to_string(), 80));
        assert_eq!((info.family, info.socktype, info.proto), (2, 1, 6));
    }
}
