//! The numbers of the `usocket` contract, each defined once.
//!
//! The WIT interface (`wit/usocket.wit`) passes MicroPython's integers: address families,
//! socket types, protocols, option levels and names, `recv` flags, `poll` bits (the constants
//! at this crate's root) and errno numbers ([`errno`]). The host (`usocket-host`) and the guest
//! library (`usocket`) both take them from here, so no number is written twice; the tests of
//! this crate check them against the contract's values (docs/contract.md#constants) and against the one table of
//! `wit/usocket.wit`.
//!
//! The numbers are Linux's, as MicroPython's `usocket`, `uselect` and `errno` modules use them
//! on every port. This crate is `no_std` and has no dependencies.
//!
//! ```
//! use usocket_abi::{AF_INET, SOCK_STREAM, errno};
//!
//! assert_ne!(AF_INET, SOCK_STREAM);
//! assert_eq!(errno::name(errno::ETIMEDOUT), Some("ETIMEDOUT"));
//! assert_eq!(errno::describe(errno::EACCES), Some("Permission denied: the host's policy does not grant this use."));
//! assert_eq!(errno::name(0), None);
//! ```

#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

#[cfg(test)]
extern crate std;

/// Address family: IPv4.
pub const AF_INET: i32 = 2;
/// Address family: IPv6.
pub const AF_INET6: i32 = 10;

/// Socket type: stream (TCP).
pub const SOCK_STREAM: i32 = 1;
/// Socket type: datagram (UDP).
pub const SOCK_DGRAM: i32 = 2;

/// Protocol / option level: IP.
pub const IPPROTO_IP: i32 = 0;
/// Protocol / option level: TCP.
pub const IPPROTO_TCP: i32 = 6;
/// Protocol: UDP.
pub const IPPROTO_UDP: i32 = 17;
/// Option level: IPv6.
pub const IPPROTO_IPV6: i32 = 41;
/// TLS (`ssl`/`tls`): do not check the server's certificate.
pub const CERT_NONE: i32 = 0;
/// TLS: check the server's certificate if it sends one (always, on this host).
pub const CERT_OPTIONAL: i32 = 1;
/// TLS: check the server's certificate.
pub const CERT_REQUIRED: i32 = 2;
/// Protocol (MicroPython's `IPPROTO_SEC`, SimpleLink's `SL_SEC_SOCKET`): a TLS stream socket,
/// whose `connect` performs a TLS client handshake.
pub const IPPROTO_SEC: i32 = 100;
/// Option level: the socket itself.
pub const SOL_SOCKET: i32 = 1;

/// Option ([`SOL_SOCKET`]): allow binding an address that is still in use (TIME_WAIT).
pub const SO_REUSEADDR: i32 = 2;
/// Option ([`SOL_SOCKET`]): allow sending datagrams to a broadcast address.
pub const SO_BROADCAST: i32 = 6;
/// Option ([`SOL_SOCKET`]): send TCP keep-alive probes.
pub const SO_KEEPALIVE: i32 = 9;
/// Option ([`SOL_SOCKET`]): the kernel's send buffer size, an int (the host may clamp it).
pub const SO_SNDBUF: i32 = 7;
/// Option ([`SOL_SOCKET`]): the kernel's receive buffer size, an int (the host may clamp it).
pub const SO_RCVBUF: i32 = 8;
/// Option ([`SOL_SOCKET`]): linger on close; its value is a native `struct linger`
/// `{int onoff, int seconds}` (8 bytes). On with 0 seconds makes `close` reset the connection.
pub const SO_LINGER: i32 = 13;
/// Option ([`IPPROTO_TCP`]): disable Nagle's algorithm.
pub const TCP_NODELAY: i32 = 1;

/// `recv` flag: leave the data queued.
pub const MSG_PEEK: i32 = 2;
/// `recv` flag: this call does not block.
pub const MSG_DONTWAIT: i32 = 64;

/// Poll bit: readable: data (or end of stream) to receive, or a pending connection on a
/// listener.
pub const POLLIN: u32 = 1;
/// Poll bit: writable (also: a non-blocking connect has completed).
pub const POLLOUT: u32 = 4;
/// Poll bit: an error (for example a failed non-blocking connect, or a reset); reported even if
/// not asked for.
pub const POLLERR: u32 = 8;
/// Poll bit: hang-up; reported even if not asked for.
pub const POLLHUP: u32 = 16;
/// Poll bit: the socket was closed locally; reported even if not asked for. MicroPython has no
/// name for it (Linux would report `POLLNVAL` for a closed descriptor).
pub const POLL_CLOSED: u32 = 32;

/// The one list of the contract's errno numbers, handed to a macro of the caller.
///
/// Expands to `$callback! { NAME = number, "description"; ... }` with one entry per errno, in
/// numeric order (the negative `EAI_*` codes first). Each entry matches
/// `$name:ident = $n:literal, $what:literal;`. This is how [`errno`] defines its constants and
/// table, and how a crate that needs its own items per errno (the host's `Errno::EACCES`, ...)
/// generates them without writing a number:
///
/// ```
/// macro_rules! count {
///     ($($name:ident = $n:literal, $what:literal;)*) => { [$(stringify!($name)),*].len() };
/// }
/// assert_eq!(usocket_abi::for_each_errno!(count), usocket_abi::errno::TABLE.len());
/// ```
#[macro_export]
macro_rules! for_each_errno {
    ($($callback:ident)::+) => {
        $($callback)::+! {
            EAI_ADDRFAMILY = -9, "getaddrinfo: a numeric literal of the other address family.";
            EAI_FAMILY = -6, "getaddrinfo: the address family is not 0, AF_INET or AF_INET6.";
            EAI_AGAIN = -3, "getaddrinfo: temporary failure in name resolution.";
            EAI_NONAME = -2, "getaddrinfo: the name does not resolve (or is empty).";
            EPERM = 1, "Operation not permitted.";
            ENOENT = 2, "No such entry: poll modify of a socket that is not registered.";
            EIO = 5, "I/O error: a host failure with no better number.";
            EBADF = 9, "Bad file descriptor: the socket is closed.";
            EAGAIN = 11, "Try again: a non-blocking operation would block.";
            ENOMEM = 12, "Out of memory: a per-guest quota (such as the number of sockets) or the host's descriptors are exhausted.";
            EACCES = 13, "Permission denied: the host's policy does not grant this use.";
            EEXIST = 17, "File exists.";
            EINVAL = 22, "Invalid argument, or a call in the wrong state.";
            EPIPE = 32, "Broken pipe: writing after the connection was shut down.";
            EPROTO = 71, "TLS protocol error: an alert from the peer, no common version or cipher suite, or a peer that does not speak TLS.";
            EBADMSG = 74, "TLS: the certificate is malformed, badly signed or otherwise unusable.";
            ENOPROTOOPT = 92, "Protocol not available: an unsupported socket option.";
            EOPNOTSUPP = 95, "Operation not supported on this kind of socket.";
            EAFNOSUPPORT = 97, "Address family not supported.";
            EADDRINUSE = 98, "Address already in use.";
            EADDRNOTAVAIL = 99, "Cannot assign the requested address: not available on this host.";
            ENETUNREACH = 101, "Network is unreachable.";
            ECONNABORTED = 103, "Software caused connection abort.";
            ECONNRESET = 104, "Connection reset by peer.";
            ENOBUFS = 105, "No buffer space available.";
            EISCONN = 106, "The socket is already connected.";
            ENOTCONN = 107, "The socket is not connected.";
            ETIMEDOUT = 110, "Timed out: the socket's timeout passed.";
            ECONNREFUSED = 111, "Connection refused.";
            EHOSTUNREACH = 113, "No route to host.";
            EALREADY = 114, "A non-blocking connect is already in progress.";
            EINPROGRESS = 115, "A non-blocking connect has started; its outcome is seen through poll.";
            ENOKEY = 126, "TLS: the certificate does not chain to a trusted CA (unknown issuer).";
            EKEYEXPIRED = 127, "TLS: the certificate has expired or is not yet valid.";
            EKEYREJECTED = 129, "TLS: the certificate is not valid for the name it was verified against.";
        }
    };
}

pub mod errno {
    //! Error numbers: MicroPython's `errno` (Linux numbering) and the `getaddrinfo` codes.
    //!
    //! Every failure of the contract is one of these numbers (docs/contract.md#errors). The
    //! positive ones are Linux errno values, as MicroPython's `errno` module uses on every port;
    //! the negative `EAI_*` ones come only from `getaddrinfo`.

    macro_rules! define {
        ($($name:ident = $n:literal, $what:literal;)*) => {
            $(
                #[doc = $what]
                pub const $name: i32 = $n;
            )*

            /// Every errno of the contract as `(number, name, one-line description)`, in
            /// numeric order (the negative `EAI_*` codes first).
            pub const TABLE: &[(i32, &str, &str)] = &[$(($name, stringify!($name), $what)),*];

            /// The symbolic name of an errno number (`"EACCES"`), as MicroPython's
            /// `errno.errorcode[n]`; `None` if the contract has no such number.
            pub const fn name(n: i32) -> Option<&'static str> {
                match n {
                    $($name => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// A one-line description of an errno number; `None` if the contract has no such
            /// number.
            pub const fn describe(n: i32) -> Option<&'static str> {
                match n {
                    $($name => Some($what),)*
                    _ => None,
                }
            }
        };
    }

    crate::for_each_errno!(define);
}

#[cfg(test)]
mod tests {
    use super::errno::{self, *};
    use super::*;
    use std::collections::BTreeMap;
    use std::string::String;
    use std::vec::Vec;

    #[test]
    fn errno_table_is_sorted_and_names_unique() {
        assert!(errno::TABLE.windows(2).all(|w| w[0].0 < w[1].0));
        let mut names: Vec<&str> = errno::TABLE.iter().map(|e| e.1).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), errno::TABLE.len());
    }

    #[test]
    fn name_and_describe_find_every_entry() {
        for &(n, name, what) in errno::TABLE {
            assert_eq!(errno::name(n), Some(name));
            assert_eq!(errno::describe(n), Some(what));
            assert!(name.starts_with('E'));
            assert!(
                what.ends_with('.') && !what.contains('\n'),
                "{name}: {what}"
            );
        }
        for n in [0, -1, 3, 100, 1234, i32::MIN, i32::MAX] {
            assert_eq!(errno::name(n), None);
            assert_eq!(errno::describe(n), None);
        }
    }

    /// The numbers of the contract's errno table (docs/contract.md#errors) (scenario 26 prints them). The only place
    /// besides `for_each_errno!` where they are written: this is the check.
    #[test]
    fn errno_numbers_match_the_contract() {
        assert_eq!(
            [EPERM, ENOENT, EIO, EBADF, EAGAIN, ENOMEM, EACCES, EEXIST],
            [1, 2, 5, 9, 11, 12, 13, 17]
        );
        assert_eq!(
            [
                EINVAL,
                EPIPE,
                ENOPROTOOPT,
                EOPNOTSUPP,
                EAFNOSUPPORT,
                EADDRINUSE
            ],
            [22, 32, 92, 95, 97, 98]
        );
        assert_eq!(
            [
                EADDRNOTAVAIL,
                ENETUNREACH,
                ECONNABORTED,
                ECONNRESET,
                ENOBUFS,
                EISCONN
            ],
            [99, 101, 103, 104, 105, 106]
        );
        assert_eq!(
            [
                ENOTCONN,
                ETIMEDOUT,
                ECONNREFUSED,
                EHOSTUNREACH,
                EALREADY,
                EINPROGRESS
            ],
            [107, 110, 111, 113, 114, 115]
        );
        assert_eq!(
            [EAI_NONAME, EAI_AGAIN, EAI_FAMILY, EAI_ADDRFAMILY],
            [-2, -3, -6, -9]
        );
        assert_eq!(
            [EPROTO, EBADMSG, ENOKEY, EKEYEXPIRED, EKEYREJECTED],
            [71, 74, 126, 127, 129]
        );
        assert_eq!(errno::TABLE.len(), 35);
    }

    /// The constants of the contract (docs/contract.md#constants; scenario 26 prints them).
    #[test]
    fn constants_match_the_contract() {
        assert_eq!([AF_INET, AF_INET6, SOCK_STREAM, SOCK_DGRAM], [2, 10, 1, 2]);
        assert_eq!(
            [
                IPPROTO_IP,
                IPPROTO_TCP,
                IPPROTO_UDP,
                IPPROTO_IPV6,
                IPPROTO_SEC
            ],
            [0, 6, 17, 41, 100]
        );
        assert_eq!([CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED], [0, 1, 2]);
        assert_eq!(
            [
                SOL_SOCKET,
                SO_REUSEADDR,
                SO_BROADCAST,
                SO_KEEPALIVE,
                SO_SNDBUF,
                SO_RCVBUF,
                SO_LINGER,
                TCP_NODELAY
            ],
            [1, 2, 6, 9, 7, 8, 13, 1]
        );
        assert_eq!([MSG_PEEK, MSG_DONTWAIT], [2, 64]);
        assert_eq!(
            [POLLIN, POLLOUT, POLLERR, POLLHUP, POLL_CLOSED],
            [1, 4, 8, 16, 32]
        );
    }

    #[test]
    fn poll_bits_are_distinct_single_bits() {
        let bits = [POLLIN, POLLOUT, POLLERR, POLLHUP, POLL_CLOSED];
        assert!(bits.iter().all(|b| b.count_ones() == 1));
        assert_eq!(bits.iter().fold(0, |acc, b| acc | b).count_ones(), 5);
    }

    /// Every name the WIT file states a number for, with the number this crate defines.
    fn named_numbers() -> BTreeMap<&'static str, i64> {
        let mut map: BTreeMap<&'static str, i64> = [
            ("AF_INET", AF_INET),
            ("AF_INET6", AF_INET6),
            ("SOCK_STREAM", SOCK_STREAM),
            ("SOCK_DGRAM", SOCK_DGRAM),
            ("IPPROTO_IP", IPPROTO_IP),
            ("IPPROTO_TCP", IPPROTO_TCP),
            ("IPPROTO_UDP", IPPROTO_UDP),
            ("IPPROTO_IPV6", IPPROTO_IPV6),
            ("SOL_SOCKET", SOL_SOCKET),
            ("SO_REUSEADDR", SO_REUSEADDR),
            ("SO_BROADCAST", SO_BROADCAST),
            ("SO_KEEPALIVE", SO_KEEPALIVE),
            ("SO_SNDBUF", SO_SNDBUF),
            ("SO_RCVBUF", SO_RCVBUF),
            ("SO_LINGER", SO_LINGER),
            ("TCP_NODELAY", TCP_NODELAY),
            ("MSG_PEEK", MSG_PEEK),
            ("MSG_DONTWAIT", MSG_DONTWAIT),
        ]
        .into_iter()
        .map(|(name, n)| (name, i64::from(n)))
        .collect();
        for (name, n) in [
            ("POLLIN", POLLIN),
            ("POLLOUT", POLLOUT),
            ("POLLERR", POLLERR),
            ("POLLHUP", POLLHUP),
            ("POLL_CLOSED", POLL_CLOSED),
        ] {
            map.insert(name, i64::from(n));
        }
        for &(n, name, _) in errno::TABLE {
            map.insert(name, i64::from(n));
        }
        map
    }

    /// `wit/usocket.wit` states each number once, as `NAME number`, and it is this crate's.
    #[test]
    fn wit_states_each_number_once_and_the_same() {
        let candidates = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/usocket.wit"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../host/wit/usocket.wit"),
        ];
        let Some(wit) = candidates
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok())
        else {
            // Only a packaged crate lacks the workspace around it.
            return;
        };
        let words: Vec<&str> = wit
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .filter(|w| !w.is_empty())
            .collect();
        let expected = named_numbers();
        let mut found: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for pair in words.windows(2) {
            if let (Some(_), Ok(n)) = (expected.get(pair[0]), pair[1].parse::<i64>()) {
                found.entry(pair[0]).or_default().push(n);
            }
        }
        let mut problems = String::new();
        for (name, n) in &expected {
            match found.get(name).map(Vec::as_slice) {
                Some([m]) if m == n => {}
                other => problems.push_str(&std::format!(
                    "{name}: defined {n}, stated in the WIT as {other:?}\n"
                )),
            }
        }
        assert!(problems.is_empty(), "{problems}");
    }
}
