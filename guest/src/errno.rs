//! Error numbers: MicroPython's `uerrno` (Linux numbering) and the `getaddrinfo` codes.
//!
//! Every failure of this crate is an [`OSError`](crate::OSError) carrying one of these numbers
//! (see SEMANTICS.md, "Errors"). The positive ones are Linux errno values, as MicroPython's
//! `errno` module uses on every port; the negative `EAI_*` ones come only from
//! [`getaddrinfo`](crate::getaddrinfo).
//!
//! ```
//! assert_eq!(usocket::errno::ETIMEDOUT, 110);
//! assert_eq!(usocket::errno::errorcode(110), Some("ETIMEDOUT"));
//! ```

/// Operation not permitted.
pub const EPERM: i32 = 1;
/// No such file or directory (`poll.modify` of a socket that is not registered).
pub const ENOENT: i32 = 2;
/// I/O error.
pub const EIO: i32 = 5;
/// Bad file descriptor: the socket is closed.
pub const EBADF: i32 = 9;
/// Try again: a non-blocking operation would block.
pub const EAGAIN: i32 = 11;
/// Out of memory: a per-guest quota (such as the number of sockets) is exhausted.
pub const ENOMEM: i32 = 12;
/// Permission denied: the host's policy does not grant this use.
pub const EACCES: i32 = 13;
/// File exists.
pub const EEXIST: i32 = 17;
/// Invalid argument.
pub const EINVAL: i32 = 22;
/// Broken pipe: writing after the peer closed the connection.
pub const EPIPE: i32 = 32;
/// Protocol not available: an unsupported socket option.
pub const ENOPROTOOPT: i32 = 92;
/// Operation not supported on this kind of socket.
pub const EOPNOTSUPP: i32 = 95;
/// Address family not supported.
pub const EAFNOSUPPORT: i32 = 97;
/// Address already in use.
pub const EADDRINUSE: i32 = 98;
/// Cannot assign the requested address.
pub const EADDRNOTAVAIL: i32 = 99;
/// Network is unreachable.
pub const ENETUNREACH: i32 = 101;
/// Software caused connection abort.
pub const ECONNABORTED: i32 = 103;
/// Connection reset by peer.
pub const ECONNRESET: i32 = 104;
/// No buffer space available.
pub const ENOBUFS: i32 = 105;
/// The socket is already connected.
pub const EISCONN: i32 = 106;
/// The socket is not connected.
pub const ENOTCONN: i32 = 107;
/// Timed out: the socket's timeout passed.
pub const ETIMEDOUT: i32 = 110;
/// Connection refused.
pub const ECONNREFUSED: i32 = 111;
/// No route to host.
pub const EHOSTUNREACH: i32 = 113;
/// A non-blocking connect is already in progress.
pub const EALREADY: i32 = 114;
/// A non-blocking connect has started; its outcome is seen through `poll`.
pub const EINPROGRESS: i32 = 115;

/// `getaddrinfo`: the name does not resolve (or is `""`).
pub const EAI_NONAME: i32 = -2;
/// `getaddrinfo`: temporary failure in name resolution.
pub const EAI_AGAIN: i32 = -3;
/// `getaddrinfo`: the address family is not 0, `AF_INET` or `AF_INET6`.
pub const EAI_FAMILY: i32 = -6;
/// `getaddrinfo`: a numeric literal of the other address family.
pub const EAI_ADDRFAMILY: i32 = -9;

/// Every named error number, in numeric order (negative `EAI_*` codes first).
const NAMES: &[(i32, &str)] = &[
    (EAI_ADDRFAMILY, "EAI_ADDRFAMILY"),
    (EAI_FAMILY, "EAI_FAMILY"),
    (EAI_AGAIN, "EAI_AGAIN"),
    (EAI_NONAME, "EAI_NONAME"),
    (EPERM, "EPERM"),
    (ENOENT, "ENOENT"),
    (EIO, "EIO"),
    (EBADF, "EBADF"),
    (EAGAIN, "EAGAIN"),
    (ENOMEM, "ENOMEM"),
    (EACCES, "EACCES"),
    (EEXIST, "EEXIST"),
    (EINVAL, "EINVAL"),
    (EPIPE, "EPIPE"),
    (ENOPROTOOPT, "ENOPROTOOPT"),
    (EOPNOTSUPP, "EOPNOTSUPP"),
    (EAFNOSUPPORT, "EAFNOSUPPORT"),
    (EADDRINUSE, "EADDRINUSE"),
    (EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (ENETUNREACH, "ENETUNREACH"),
    (ECONNABORTED, "ECONNABORTED"),
    (ECONNRESET, "ECONNRESET"),
    (ENOBUFS, "ENOBUFS"),
    (EISCONN, "EISCONN"),
    (ENOTCONN, "ENOTCONN"),
    (ETIMEDOUT, "ETIMEDOUT"),
    (ECONNREFUSED, "ECONNREFUSED"),
    (EHOSTUNREACH, "EHOSTUNREACH"),
    (EALREADY, "EALREADY"),
    (EINPROGRESS, "EINPROGRESS"),
];

/// The name of an error number, as MicroPython's `errno.errorcode[n]`; `None` if it has none.
pub fn errorcode(errno: i32) -> Option<&'static str> {
    NAMES
        .binary_search_by_key(&errno, |&(n, _)| n)
        .ok()
        .map(|i| NAMES[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_and_unique() {
        assert!(NAMES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn errorcode_finds_every_name() {
        for &(n, name) in NAMES {
            assert_eq!(errorcode(n), Some(name));
        }
        assert_eq!(errorcode(0), None);
        assert_eq!(errorcode(1234), None);
        assert_eq!(errorcode(-1), None);
    }

    /// The numbers of SEMANTICS.md's errno table (scenario 26 prints them).
    #[test]
    fn numbers_match_the_spec() {
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
    }
}
