//! The one error type of the host and its one table from host I/O errors to the errno numbers
//! of the contract (docs/contract.md#errors). Every guest-visible failure goes through here.

use std::fmt;
use std::io;

/// An errno number as the guest sees it: Linux errno (positive) or an EAI_* code (negative).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

/// `impl Errno { pub const EACCES: Errno = ...; ... }` from the one list of `usocket-abi`: every
/// number and its description come from there.
macro_rules! errno_consts {
    ($($name:ident = $n:literal, $what:literal;)*) => {
        impl Errno {
            $(
                #[doc = $what]
                pub const $name: Errno = Errno(usocket_abi::errno::$name);
            )*
        }
    };
}

usocket_abi::for_each_errno!(errno_consts);

/// The host's own descriptor limits (`EMFILE`: this process, `ENFILE`: the system). Both are
/// reported to the guest as ENOMEM: a guest must never see EIO for descriptor exhaustion.
const DESCRIPTORS_EXHAUSTED: [i32; 2] = [
    rustix::io::Errno::MFILE.raw_os_error(),
    rustix::io::Errno::NFILE.raw_os_error(),
];

impl Errno {
    /// The symbolic name (`"EACCES"`), if this is a number of the contract's table.
    pub fn name(self) -> Option<&'static str> {
        usocket_abi::errno::name(self.0)
    }

    /// A one-line description, if this is a number of the contract's table.
    pub fn describe(self) -> Option<&'static str> {
        usocket_abi::errno::describe(self.0)
    }

    /// Maps a host I/O error. Linux numbers are the contract's numbers, so a raw OS error in the
    /// table passes through; the host running out of descriptors (EMFILE, ENFILE) becomes
    /// ENOMEM; anything else is mapped by kind, and what is left becomes EIO.
    pub fn from_io(err: &io::Error) -> Errno {
        if let Some(raw) = err.raw_os_error() {
            if DESCRIPTORS_EXHAUSTED.contains(&raw) {
                return Errno::ENOMEM;
            }
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

    fn os_error(errno: rustix::io::Errno) -> io::Error {
        io::Error::from_raw_os_error(errno.raw_os_error())
    }

    #[test]
    fn raw_linux_numbers_pass_through() {
        use rustix::io::Errno as Os;
        assert_eq!(
            Errno::from_io(&os_error(Os::CONNREFUSED)),
            Errno::ECONNREFUSED
        );
        assert_eq!(Errno::from_io(&os_error(Os::CONNRESET)), Errno::ECONNRESET);
        assert_eq!(Errno::from_io(&os_error(Os::NOBUFS)), Errno::ENOBUFS);
    }

    #[test]
    fn unknown_numbers_become_eio() {
        // ENETDOWN is not in the contract's table.
        assert_eq!(
            Errno::from_io(&os_error(rustix::io::Errno::NETDOWN)),
            Errno::EIO
        );
        assert_eq!(Errno::from_io(&io::Error::other("x")), Errno::EIO);
    }

    #[test]
    fn descriptor_exhaustion_is_enomem() {
        for errno in [rustix::io::Errno::MFILE, rustix::io::Errno::NFILE] {
            assert_eq!(Errno::from_io(&os_error(errno)), Errno::ENOMEM);
        }
        // As std reports a failed `socket()` / `accept()` at the limit.
        let err: io::Error = rustix::io::Errno::MFILE.into();
        assert_eq!(Errno::from(err), Errno::ENOMEM);
    }

    #[test]
    fn consts_names_and_descriptions_come_from_the_abi() {
        assert_eq!(Errno::EACCES.0, usocket_abi::errno::EACCES);
        assert_eq!(Errno::EAI_NONAME.0, usocket_abi::errno::EAI_NONAME);
        for &(n, name, what) in usocket_abi::errno::TABLE {
            assert_eq!(Errno(n).name(), Some(name));
            assert_eq!(Errno(n).describe(), Some(what));
        }
        assert_eq!(Errno(0).name(), None);
        assert_eq!(format!("{:?}", Errno(0)), "Errno(0)");
    }

    #[test]
    fn kinds_map_without_raw_numbers() {
        let err = io::Error::from(io::ErrorKind::WouldBlock);
        assert_eq!(Errno::from_io(&err), Errno::EAGAIN);
        assert_eq!(
            format!("{}", Errno::EACCES),
            format!("EACCES({})", usocket_abi::errno::EACCES)
        );
    }
}
