//! The one error type of the host and its one table from host I/O errors to the errno numbers
//! of SEMANTICS.md ("Errors"). Every guest-visible failure goes through here.

use std::fmt;
use std::io;

/// An errno number as the guest sees it: Linux errno (positive) or an EAI_* code (negative).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident = $n:expr, $what:literal;)*) => {
        impl Errno {
            $(#[doc = $what] pub const $name: Errno = Errno($n);)*

            /// The symbolic name (`"EACCES"`), if this is a number of the contract's table.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($n => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted.";
    ENOENT = 2, "No such entry (poll `modify` of an unregistered socket).";
    EIO = 5, "An I/O error with no better number.";
    EBADF = 9, "The socket is closed.";
    EAGAIN = 11, "Non-blocking and the call would block.";
    ENOMEM = 12, "A per-guest quota is exhausted.";
    EACCES = 13, "The host's policy does not grant this use.";
    EEXIST = 17, "Already exists.";
    EINVAL = 22, "A bad argument, or a call in the wrong state.";
    EPIPE = 32, "Writing after the connection was shut down.";
    ENOPROTOOPT = 92, "Unknown socket option.";
    EOPNOTSUPP = 95, "The operation does not apply to this socket type.";
    EAFNOSUPPORT = 97, "Unknown address family.";
    EADDRINUSE = 98, "Address in use.";
    EADDRNOTAVAIL = 99, "Address not available on this host.";
    ENETUNREACH = 101, "Network unreachable.";
    ECONNABORTED = 103, "Connection aborted.";
    ECONNRESET = 104, "Connection reset by the peer.";
    ENOBUFS = 105, "No buffer space.";
    EISCONN = 106, "Already connected.";
    ENOTCONN = 107, "Not connected.";
    ETIMEDOUT = 110, "The socket's timeout passed.";
    ECONNREFUSED = 111, "Connection refused.";
    EHOSTUNREACH = 113, "Host unreachable.";
    EALREADY = 114, "A non-blocking connect is still in progress.";
    EINPROGRESS = 115, "A non-blocking connect has started.";
    EAI_NONAME = -2, "getaddrinfo: the name does not resolve.";
    EAI_AGAIN = -3, "getaddrinfo: temporary failure.";
    EAI_FAMILY = -6, "getaddrinfo: unsupported family.";
    EAI_ADDRFAMILY = -9, "getaddrinfo: a literal of the other family.";
}

impl Errno {
    /// Maps a host I/O error. Linux numbers are the contract's numbers, so a raw OS error in the
    /// table passes through; anything else is mapped by kind, and what is left becomes EIO.
    pub fn from_io(err: &io::Error) -> Errno {
        if let Some(raw) = err.raw_os_error() {
            let errno = Errno(raw);
            // EWOULDBLOCK == EAGAIN on Linux; EINTR is retried by callers, never reported.
            if errno.name().is_some() && raw > 0 {
                return errno;
            }
        }
        use io::ErrorKind as K;
        match err.kind() {
            K::WouldBlock => Errno::EAGAIN,
            K::TimedOut => Errno::ETIMEDOUT,
            K::ConnectionRefused => Errno::ECONNREFUSED,
            K::ConnectionReset => Errno::ECONNRESET,
            K::ConnectionAborted => Errno::ECONNABORTED,
            K::NotConnected => Errno::ENOTCONN,
            K::AddrInUse => Errno::EADDRINUSE,
            K::AddrNotAvailable => Errno::EADDRNOTAVAIL,
            K::BrokenPipe => Errno::EPIPE,
            K::PermissionDenied => Errno::EACCES,
            K::InvalidInput => Errno::EINVAL,
            K::OutOfMemory => Errno::ENOMEM,
            K::NetworkUnreachable => Errno::ENETUNREACH,
            K::HostUnreachable => Errno::EHOSTUNREACH,
            _ => {
                tracing::debug!(error = %err, "unmapped host I/O error reported as EIO");
                Errno::EIO
            }
        }
    }
}

impl From<io::Error> for Errno {
    fn from(err: io::Error) -> Errno {
        Errno::from_io(&err)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Errno {}

/// The result of a socket operation.
pub type SockResult<T> = Result<T, Errno>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_linux_numbers_pass_through() {
        let err = io::Error::from_raw_os_error(111);
        assert_eq!(Errno::from_io(&err), Errno::ECONNREFUSED);
        let err = io::Error::from_raw_os_error(104);
        assert_eq!(Errno::from_io(&err), Errno::ECONNRESET);
    }

    #[test]
    fn unknown_numbers_become_eio() {
        // ENETDOWN (100) is not in the contract's table.
        assert_eq!(
            Errno::from_io(&io::Error::from_raw_os_error(100)),
            Errno::EIO
        );
        assert_eq!(Errno::from_io(&io::Error::other("x")), Errno::EIO);
    }

    #[test]
    fn kinds_map_without_raw_numbers() {
        let err = io::Error::from(io::ErrorKind::WouldBlock);
        assert_eq!(Errno::from_io(&err), Errno::EAGAIN);
        assert_eq!(format!("{}", Errno::EACCES), "EACCES(13)");
    }
}
