//! [`OSError`]: MicroPython's `OSError(errno)`, the only error of this crate.

use core::fmt;
use std::io;

use crate::errno;

/// MicroPython's `OSError`: a failed call, identified by its error number.
///
/// `errno()` is MicroPython's `e.errno` (and `e.args[0]`): a positive Linux errno (see
/// [`errno`](crate::errno)) or, from [`getaddrinfo`](crate::getaddrinfo) only, a negative
/// `EAI_*` code. There is no `socket.timeout`, `socket.error` or `socket.gaierror`: a timeout
/// is `OSError(ETIMEDOUT)`.
///
/// It displays as MicroPython prints it: `[Errno 110] ETIMEDOUT`.
///
/// ```
/// use usocket::{OSError, errno};
///
/// let e = OSError::new(errno::ETIMEDOUT);
/// assert_eq!(e.errno(), 110);
/// assert_eq!(e.to_string(), "[Errno 110] ETIMEDOUT");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OSError {
    errno: i32,
}

impl OSError {
    /// `OSError(errno)`.
    pub const fn new(errno: i32) -> Self {
        OSError { errno }
    }

    /// `e.errno`: the error number.
    pub const fn errno(&self) -> i32 {
        self.errno
    }

    /// The `OSError` inside an [`io::Error`] made from one by `From<OSError>` (as the
    /// [`std::io`] impls of [`Socket`](crate::Socket) return them); `None` for any other
    /// `io::Error`.
    pub fn from_io_error(err: &io::Error) -> Option<OSError> {
        err.get_ref()?.downcast_ref::<OSError>().copied()
    }

    /// The [`io::ErrorKind`] closest to this error number.
    fn kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self.errno {
            errno::EPERM | errno::EACCES => K::PermissionDenied,
            errno::ENOENT => K::NotFound,
            errno::EAGAIN => K::WouldBlock,
            errno::ENOMEM => K::OutOfMemory,
            errno::EEXIST => K::AlreadyExists,
            errno::EINVAL => K::InvalidInput,
            errno::EPIPE => K::BrokenPipe,
            errno::EOPNOTSUPP | errno::EAFNOSUPPORT | errno::ENOPROTOOPT => K::Unsupported,
            errno::EADDRINUSE => K::AddrInUse,
            errno::EADDRNOTAVAIL => K::AddrNotAvailable,
            errno::ENETUNREACH => K::NetworkUnreachable,
            errno::ECONNABORTED => K::ConnectionAborted,
            errno::ECONNRESET => K::ConnectionReset,
            errno::ENOTCONN => K::NotConnected,
            errno::ETIMEDOUT => K::TimedOut,
            errno::ECONNREFUSED => K::ConnectionRefused,
            errno::EHOSTUNREACH => K::HostUnreachable,
            _ => K::Other,
        }
    }
}

impl fmt::Debug for OSError {
    /// `OSError(110)`, or `OSError(110, "ETIMEDOUT")` with `{:#?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match errno::errorcode(self.errno) {
            Some(name) if f.alternate() => write!(f, "OSError({}, {name:?})", self.errno),
            _ => write!(f, "OSError({})", self.errno),
        }
    }
}

impl fmt::Display for OSError {
    /// `[Errno 110] ETIMEDOUT`; `[Errno 1234]` for a number without a name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match errno::errorcode(self.errno) {
            Some(name) => write!(f, "[Errno {}] {name}", self.errno),
            None => write!(f, "[Errno {}]", self.errno),
        }
    }
}

impl std::error::Error for OSError {}

impl From<OSError> for io::Error {
    /// An `io::Error` of the matching [`io::ErrorKind`] (`EAGAIN` is `WouldBlock`, `ETIMEDOUT`
    /// is `TimedOut`, ...; negative `getaddrinfo` codes and unmapped numbers are `Other`) that
    /// wraps the `OSError`: [`OSError::from_io_error`] gets it back.
    ///
    /// Not `io::Error::from_raw_os_error`: on `wasm32-wasip2` raw OS errors are WASI's errno
    /// numbers (EACCES is 2 there), not the Linux numbers MicroPython uses.
    fn from(err: OSError) -> io::Error {
        io::Error::new(err.kind(), err)
    }
}

/// `Result<T, OSError>`.
pub type Result<T> = core::result::Result<T, OSError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_like_micropython() {
        assert_eq!(OSError::new(13).to_string(), "[Errno 13] EACCES");
        assert_eq!(OSError::new(110).to_string(), "[Errno 110] ETIMEDOUT");
        assert_eq!(OSError::new(-2).to_string(), "[Errno -2] EAI_NONAME");
        assert_eq!(OSError::new(1234).to_string(), "[Errno 1234]");
    }

    #[test]
    fn debug() {
        assert_eq!(format!("{:?}", OSError::new(9)), "OSError(9)");
        assert_eq!(format!("{:#?}", OSError::new(9)), "OSError(9, \"EBADF\")");
        assert_eq!(format!("{:#?}", OSError::new(1234)), "OSError(1234)");
    }

    #[test]
    fn errno_and_equality() {
        let e = OSError::new(errno::EAGAIN);
        assert_eq!(e.errno(), 11);
        assert_eq!(e, OSError::new(11));
        assert_ne!(e, OSError::new(12));
    }

    #[test]
    fn into_io_error() {
        let cases = [
            (errno::EAGAIN, io::ErrorKind::WouldBlock),
            (errno::ETIMEDOUT, io::ErrorKind::TimedOut),
            (errno::ECONNRESET, io::ErrorKind::ConnectionReset),
            (errno::ECONNREFUSED, io::ErrorKind::ConnectionRefused),
            (errno::ENOTCONN, io::ErrorKind::NotConnected),
            (errno::EPIPE, io::ErrorKind::BrokenPipe),
            (errno::EACCES, io::ErrorKind::PermissionDenied),
            (errno::EINVAL, io::ErrorKind::InvalidInput),
            (errno::EBADF, io::ErrorKind::Other),
            (errno::EAI_NONAME, io::ErrorKind::Other),
        ];
        for (n, kind) in cases {
            let err: io::Error = OSError::new(n).into();
            assert_eq!(err.kind(), kind, "{n}");
            assert_eq!(OSError::from_io_error(&err), Some(OSError::new(n)));
            assert_eq!(err.to_string(), OSError::new(n).to_string());
        }
        let other = io::Error::from(io::ErrorKind::WouldBlock);
        assert_eq!(OSError::from_io_error(&other), None);
    }

    #[test]
    fn usable_with_question_mark_in_io_code() {
        fn f() -> io::Result<()> {
            Err(OSError::new(errno::EPIPE))?;
            Ok(())
        }
        assert_eq!(f().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
