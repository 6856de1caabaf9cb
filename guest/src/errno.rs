//! Error numbers: MicroPython's `uerrno` (Linux numbering) and the `getaddrinfo` codes.
//!
//! Every failure of this crate is an [`OSError`](crate::OSError) carrying one of these numbers
//! (see the contract, `docs/contract.md#errors`). The positive ones are Linux errno values, as MicroPython's
//! `errno` module uses on every port; the negative `EAI_*` ones come only from
//! [`getaddrinfo`](crate::getaddrinfo). The numbers and their descriptions are defined once, in
//! the `usocket-abi` crate, for this library and the host alike.
//!
//! ```
//! use usocket::errno;
//!
//! assert_eq!(errno::errorcode(errno::ETIMEDOUT), Some("ETIMEDOUT"));
//! assert!(errno::EAI_NONAME < 0 && errno::ETIMEDOUT > 0);
//! ```

/// `pub use usocket_abi::errno::{EPERM, ...}`: every errno of the contract, and nothing else.
macro_rules! reexport {
    ($($name:ident = $n:literal, $what:literal;)*) => {
        pub use usocket_abi::errno::{$($name),*};
    };
}

usocket_abi::for_each_errno!(reexport);

/// The name of an error number, as MicroPython's `errno.errorcode[n]`; `None` if it has none.
pub fn errorcode(errno: i32) -> Option<&'static str> {
    usocket_abi::errno::name(errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errorcode_finds_every_name() {
        for &(n, name, _) in usocket_abi::errno::TABLE {
            assert_eq!(errorcode(n), Some(name));
        }
        assert_eq!(errorcode(0), None);
        assert_eq!(errorcode(1234), None);
        assert_eq!(errorcode(-1), None);
    }

    /// The re-exported constants are the contract's (scenario 26 prints them).
    #[test]
    fn constants_are_the_table() {
        assert_eq!(errorcode(EPERM), Some("EPERM"));
        assert_eq!(errorcode(EAGAIN), Some("EAGAIN"));
        assert_eq!(errorcode(EINPROGRESS), Some("EINPROGRESS"));
        assert_eq!(errorcode(EAI_ADDRFAMILY), Some("EAI_ADDRFAMILY"));
    }
}
