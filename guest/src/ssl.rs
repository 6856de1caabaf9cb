//! MicroPython's `ssl` (`tls`): TLS on a connected stream socket, run by the host.
//!
//! The host terminates TLS (it holds the TLS library, the trust roots and, if the embedder
//! configured one, the server's private key); the guest keeps reading and writing plaintext
//! with the usual [`Socket`] methods. So a wrapped socket is the same [`Socket`] type: every
//! method keeps working (`recv`, `read`, `readline`, `BufRead`, `write`, `sendall`, `poll`,
//! timeouts, non-blocking mode), with the same blocking, deadline and error rules, and
//! `close` sends the TLS close_notify.
//!
//! ```no_run
//! use usocket::ssl;
//!
//! # fn main() -> usocket::Result<()> {
//! let addr = usocket::getaddrinfo("example.org", 443)?.remove(0).sockaddr;
//! let sock = usocket::socket(usocket::AF_INET, usocket::SOCK_STREAM, 0)?;
//! sock.connect(&addr)?;
//! // MicroPython: ssl.wrap_socket(sock, server_hostname="example.org")
//! let sock = ssl::wrap_socket(
//!     sock,
//!     ssl::WrapOptions {
//!         cert_reqs: ssl::CERT_REQUIRED,
//!         server_hostname: Some("example.org".into()),
//!         ..Default::default()
//!     },
//! )?;
//! sock.write(b"GET / HTTP/1.0\r\nHost: example.org\r\n\r\n")?;
//! print!("{}", String::from_utf8_lossy(&sock.read_all()?.unwrap_or_default()));
//! # Ok(())
//! # }
//! ```
//!
//! # MicroPython to Rust
//!
//! | MicroPython | Rust |
//! |---|---|
//! | `ssl.wrap_socket(sock, server_side=False, key=None, cert=None, cert_reqs=CERT_NONE, cadata=None, server_hostname=None, do_handshake=True)` | [`wrap_socket`]`(sock, `[`WrapOptions`]` { .. })`; `WrapOptions::default()` is MicroPython's defaults |
//! | `ssl.SSLContext(protocol)` | [`SSLContext::new`]`(protocol)` |
//! | `ctx.verify_mode`, `ctx.verify_mode = m` | the field [`SSLContext::verify_mode`] |
//! | `ctx.load_cert_chain(cert, key)` | [`SSLContext::load_cert_chain`]`(cert, key)` (bytes) |
//! | `ctx.load_verify_locations(cadata)` | [`SSLContext::load_verify_locations`]`(cadata)` (bytes) |
//! | `ctx.wrap_socket(sock, server_side=.., server_hostname=..)` | [`SSLContext::wrap_socket`]`(sock, server_side, server_hostname)` |
//! | `ctx.wrap_socket(sock, ..., do_handshake_on_connect=False)` | [`SSLContext::wrap_socket_with`]`(sock, server_side, server_hostname, false)` |
//! | `ssock.getpeercert(True)` | [`Socket::getpeercert`]`(true)` → `Option<Vec<u8>>` (DER) |
//! | `socket.socket(af, SOCK_STREAM, IPPROTO_SEC)` | [`socket`](crate::socket)`(af, SOCK_STREAM, `[`IPPROTO_SEC`](crate::IPPROTO_SEC)`)`: `connect` runs a verifying client handshake |
//! | `ssl.CERT_NONE`, ... | [`CERT_NONE`], [`CERT_OPTIONAL`], [`CERT_REQUIRED`], [`PROTOCOL_TLS_CLIENT`], [`PROTOCOL_TLS_SERVER`] (`i32`, MicroPython's numbers) |
//!
//! Certificates, keys and CA data are bytes: PEM (one or more `-----BEGIN ...` blocks) or DER
//! (one certificate or key), as MicroPython takes them (it reads no files either).
//!
//! # Verification
//!
//! A client checks the server's certificate unless its verify mode is [`CERT_NONE`]
//! ([`CERT_OPTIONAL`] is treated as [`CERT_REQUIRED`]: a server always presents one). It
//! trusts the CAs given with `cadata` ([`SSLContext::load_verify_locations`]), else the
//! host's roots (the system's, or what the embedder configured). The name it verifies against
//! (and sends as SNI) is `server_hostname` if given, which must be a name the host's policy
//! grants this guest (EACCES otherwise); without one, the name the guest resolved the peer's
//! address from with [`getaddrinfo`](crate::getaddrinfo), else the address itself. Unlike
//! MicroPython, `CERT_REQUIRED` therefore does not need `server_hostname`.
//!
//! The host may require verification whatever the guest asks: a connection its policy
//! grants only over TLS (a `tls=` rule) is refused in plaintext (EACCES on every read or
//! write until it is wrapped) and is always verified against the granted name with the
//! host's roots, even with `CERT_NONE`; `cadata` is refused there (EACCES).
//!
//! # Errors
//!
//! MicroPython raises `OSError` with mbedTLS's negative codes, or `ValueError` for a
//! certificate that failed verification; here every failure is an [`OSError`]
//! with the contract's errno:
//!
//! | errno | when |
//! |---|---|
//! | ENOKEY (126) | the certificate does not chain to a trusted CA |
//! | EKEYEXPIRED (127) | it has expired or is not yet valid |
//! | EKEYREJECTED (129) | it is not valid for the name verified against |
//! | EBADMSG (74) | it is malformed, badly signed or unusable otherwise |
//! | EPROTO (71) | the TLS protocol failed (an alert, no common version or cipher suite, a peer that does not speak TLS) |
//! | ECONNRESET (104) | the peer ended the stream without close_notify (once; then end of stream) |
//! | EACCES (13) | `server_hostname` is not granted; on a connection granted only over TLS: plaintext, or `cadata` |
//! | ETIMEDOUT (110) | a timed socket's handshake did not finish in time |
//! | EINVAL (22) | a bad argument: an unknown protocol or verify mode, `server_side` that does not match the context, certificate or key data that is not PEM or DER (checked here) or that the host cannot use, a key without a certificate, a server side without a certificate (none given and none configured by the embedder), a datagram or listening socket, one that is already TLS |
//! | ENOTCONN (107) | a stream socket that is not connected (a non-blocking connect still under way is fine: TLS starts when it completes) |
//! | EOPNOTSUPP (95) | what this host does not do: verifying clients' certificates (a server side with `CERT_REQUIRED`), `getpeercert(false)` (MicroPython's `NotImplementedError`) |
//!
//! A TLS failure is final: every later call on the socket reports the same errno.
//!
//! # Blocking, timeouts, non-blocking
//!
//! With `do_handshake` (the default) the handshake runs in `wrap_socket`: on a blocking
//! socket to its end; on a timed one within the timeout (ETIMEDOUT); on a non-blocking one as
//! far as it goes without waiting, and the rest runs inside later reads and writes, which
//! return EAGAIN (or `None`) until plaintext moves. While a handshake waits for the peer,
//! [`select::poll`](crate::select::poll) reports POLLOUT (and POLLIN) only once the socket is
//! readable, as MicroPython's TLS sockets do, so a loop waiting to write does not spin; POLLIN
//! may come when only handshake records arrived: the read or write that follows moves the
//! handshake on and says EAGAIN (None) if no plaintext could move; poll again. Without
//! `do_handshake`, the first read or write runs the handshake.
//!
//! # Bytes received before `wrap_socket`
//!
//! TLS starts at a point of the byte stream (STARTTLS protocols: a plaintext command, then
//! TLS), and everything after that point is TLS records. Bytes that had already arrived and
//! that the program did not read are therefore the first records, exactly as with a kernel
//! socket under a TLS library:
//!
//! - The read-ahead that `readline` and `BufRead` keep in the guest (see the crate docs) is
//!   given back to the host first, so nothing received is skipped or served twice: a STARTTLS
//!   server that read its `STARTTLS\r\n` line with `readline` while the client's ClientHello
//!   was already in the read-ahead still gets that ClientHello into its handshake.
//! - Plaintext the peer sent before the TLS point must be read before wrapping. Whatever is
//!   left is taken as records: it fails the handshake (EPROTO), and is never handed out as if
//!   it had come through TLS (the STARTTLS "command injection" is refused).

use core::borrow::Borrow;
use core::fmt;

use crate::bindings::usocket::net::usocket as wit;
use crate::errno;
use crate::error::{OSError, Result};
use crate::socket::Socket;

/// `ssl.CERT_NONE`: do not check the server's certificate (MicroPython's default for
/// [`wrap_socket`] and for a server context).
pub const CERT_NONE: i32 = usocket_abi::CERT_NONE;
/// `ssl.CERT_OPTIONAL`: treated as [`CERT_REQUIRED`] by a client (a server always presents a
/// certificate) and as [`CERT_NONE`] by a server (which requests no client certificate, and
/// "optional" never refuses one that is missing).
pub const CERT_OPTIONAL: i32 = usocket_abi::CERT_OPTIONAL;
/// `ssl.CERT_REQUIRED`: the server's certificate must verify (MicroPython's default for a
/// client context, [`SSLContext::new`]`(`[`PROTOCOL_TLS_CLIENT`]`)`).
pub const CERT_REQUIRED: i32 = usocket_abi::CERT_REQUIRED;
/// `ssl.PROTOCOL_TLS_CLIENT`: a context for the client side.
pub const PROTOCOL_TLS_CLIENT: i32 = 0;
/// `ssl.PROTOCOL_TLS_SERVER`: a context for the server side (of an accepted socket).
pub const PROTOCOL_TLS_SERVER: i32 = 1;

/// The most bytes of certificate, key or CA data one `wrap_socket` may pass per argument (the
/// host refuses more with EINVAL; so does this library, when the data is loaded).
pub const MAX_TLS_DATA: usize = 256 * 1024;

/// The keyword arguments of MicroPython's `ssl.wrap_socket`; [`Default`] gives MicroPython's
/// defaults.
///
/// ```
/// use usocket::ssl::{CERT_NONE, WrapOptions};
///
/// let opts = WrapOptions::default();
/// assert!(!opts.server_side && opts.do_handshake);
/// assert_eq!(opts.cert_reqs, CERT_NONE);
/// let opts = WrapOptions {
///     server_hostname: Some("example.org".into()),
///     ..WrapOptions::default()
/// };
/// # let _ = opts;
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct WrapOptions {
    /// `server_side=False`: wrap an accepted socket as the server side.
    pub server_side: bool,
    /// `key=None`: the private key of `cert` (PEM or DER).
    pub key: Option<Vec<u8>>,
    /// `cert=None`: the certificate chain to present, leaf first (PEM or DER). A server side
    /// without one presents the certificate the embedder configured for this guest.
    pub cert: Option<Vec<u8>>,
    /// `cert_reqs=CERT_NONE`: [`CERT_NONE`], [`CERT_OPTIONAL`] or [`CERT_REQUIRED`].
    pub cert_reqs: i32,
    /// `cadata=None`: CA certificates to trust instead of the host's roots (PEM or DER).
    pub cadata: Option<Vec<u8>>,
    /// `server_hostname=None`: the name to verify the server's certificate against and send
    /// as SNI (see [Verification](self#verification)).
    pub server_hostname: Option<String>,
    /// `do_handshake=True`: run the handshake now, not in the first read or write.
    pub do_handshake: bool,
}

impl Default for WrapOptions {
    fn default() -> Self {
        WrapOptions {
            server_side: false,
            key: None,
            cert: None,
            cert_reqs: CERT_NONE,
            cadata: None,
            server_hostname: None,
            do_handshake: true,
        }
    }
}

impl fmt::Debug for WrapOptions {
    /// Sizes instead of the bytes (a key is a secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrapOptions")
            .field("server_side", &self.server_side)
            .field("key", &self.key.as_ref().map(|k| k.len()))
            .field("cert", &self.cert.as_ref().map(|c| c.len()))
            .field("cert_reqs", &self.cert_reqs)
            .field("cadata", &self.cadata.as_ref().map(|c| c.len()))
            .field("server_hostname", &self.server_hostname)
            .field("do_handshake", &self.do_handshake)
            .finish()
    }
}

/// `ssl.wrap_socket(sock, ...)`: makes the connected stream socket `sock` a TLS one and
/// returns it (another handle to the same socket: `sock` itself, if kept, is the TLS socket
/// too).
///
/// As MicroPython's: a context of the side `opts.server_side` asks for, with `cert`/`key`,
/// `cadata` and `cert_reqs` loaded into it, then [`SSLContext::wrap_socket_with`]. `sock` may
/// be a [`Socket`] or a `&Socket`.
///
/// # Errors
///
/// See the [module docs](self#errors).
pub fn wrap_socket(sock: impl Borrow<Socket>, opts: WrapOptions) -> Result<Socket> {
    let ctx = context_for(&opts)?;
    ctx.wrap_socket_with(
        sock,
        opts.server_side,
        opts.server_hostname.as_deref(),
        opts.do_handshake,
    )
}

/// The context `ssl.wrap_socket` makes for `opts` (MicroPython's `ssl.py`).
fn context_for(opts: &WrapOptions) -> Result<SSLContext> {
    let protocol = if opts.server_side {
        PROTOCOL_TLS_SERVER
    } else {
        PROTOCOL_TLS_CLIENT
    };
    let mut ctx = SSLContext::new(protocol)?;
    match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => ctx.load_cert_chain(cert, key)?,
        // One PEM holding both (the host looks for the key in it).
        (Some(cert), None) => {
            check_tls_data(cert)?;
            ctx.cert = Some(cert.clone());
        }
        (None, Some(_)) => return Err(OSError::new(errno::EINVAL)),
        (None, None) => {}
    }
    if let Some(cadata) = &opts.cadata {
        ctx.load_verify_locations(cadata)?;
    }
    ctx.verify_mode = opts.cert_reqs;
    Ok(ctx)
}

/// MicroPython's `ssl.SSLContext`: what a TLS socket trusts and presents, for one side.
///
/// ```no_run
/// use usocket::ssl::{self, SSLContext};
///
/// # fn main() -> usocket::Result<()> {
/// # let (sock, ca_pem) = (usocket::socket(2, 1, 0)?, b"".to_vec());
/// let mut ctx = SSLContext::new(ssl::PROTOCOL_TLS_CLIENT)?;
/// assert_eq!(ctx.verify_mode, ssl::CERT_REQUIRED);
/// ctx.load_verify_locations(&ca_pem)?;
/// let sock = ctx.wrap_socket(sock, false, Some("server.test"))?;
/// # let _ = sock;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SSLContext {
    protocol: i32,
    /// `ctx.verify_mode`: [`CERT_NONE`], [`CERT_OPTIONAL`] or [`CERT_REQUIRED`]; starts as
    /// MicroPython's: [`CERT_REQUIRED`] for a client context, [`CERT_NONE`] for a server one.
    /// Checked when a socket is wrapped (EINVAL for any other number).
    pub verify_mode: i32,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    /// Every CA loaded so far, as PEM (DER ones are converted, so that several add up).
    cadata: Option<Vec<u8>>,
}

impl fmt::Debug for SSLContext {
    /// Sizes instead of the bytes (a key is a secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SSLContext")
            .field("protocol", &self.protocol)
            .field("verify_mode", &self.verify_mode)
            .field("cert", &self.cert.as_ref().map(|c| c.len()))
            .field("key", &self.key.as_ref().map(|k| k.len()))
            .field("cadata", &self.cadata.as_ref().map(|c| c.len()))
            .finish()
    }
}

impl SSLContext {
    /// `SSLContext(protocol)`: [`PROTOCOL_TLS_CLIENT`] or [`PROTOCOL_TLS_SERVER`].
    ///
    /// # Errors
    ///
    /// EINVAL (any other protocol: MicroPython's DTLS ones are not supported).
    pub fn new(protocol: i32) -> Result<SSLContext> {
        let verify_mode = match protocol {
            PROTOCOL_TLS_CLIENT => CERT_REQUIRED,
            PROTOCOL_TLS_SERVER => CERT_NONE,
            _ => return Err(OSError::new(errno::EINVAL)),
        };
        Ok(SSLContext {
            protocol,
            verify_mode,
            cert: None,
            key: None,
            cadata: None,
        })
    }

    /// The protocol the context was made with.
    pub fn protocol(&self) -> i32 {
        self.protocol
    }

    /// `load_cert_chain(cert, key)`: the certificate chain (leaf first) and its private key
    /// this side presents, PEM or DER; replaces any loaded before. A server side presents
    /// it; a client side, as a client certificate.
    ///
    /// # Errors
    ///
    /// EINVAL: data that is neither PEM nor a DER structure, empty, or larger than
    /// [`MAX_TLS_DATA`]. Whether the certificate and key are usable (and belong together) is
    /// checked by the host when a socket is wrapped (EINVAL there).
    pub fn load_cert_chain(&mut self, cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<()> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        check_tls_data(cert)?;
        check_tls_data(key)?;
        self.cert = Some(cert.to_vec());
        self.key = Some(key.to_vec());
        Ok(())
    }

    /// `load_verify_locations(cadata)`: adds CA certificates (PEM, one or more, or one DER) to
    /// those this context trusts. Once any are loaded, they replace the host's roots for
    /// sockets this context wraps.
    ///
    /// # Errors
    ///
    /// EINVAL: data that is neither PEM nor a DER structure, empty, or more than
    /// [`MAX_TLS_DATA`] in all.
    pub fn load_verify_locations(&mut self, cadata: impl AsRef<[u8]>) -> Result<()> {
        let cadata = cadata.as_ref();
        check_tls_data(cadata)?;
        let mut all = self.cadata.clone().unwrap_or_default();
        append_pem(&mut all, cadata);
        if all.len() > MAX_TLS_DATA {
            return Err(OSError::new(errno::EINVAL));
        }
        self.cadata = Some(all);
        Ok(())
    }

    /// `wrap_socket(sock, server_side=.., server_hostname=..)`, with the handshake run now
    /// (`do_handshake_on_connect=True`): see [`wrap_socket_with`](SSLContext::wrap_socket_with).
    pub fn wrap_socket(
        &self,
        sock: impl Borrow<Socket>,
        server_side: bool,
        server_hostname: Option<&str>,
    ) -> Result<Socket> {
        self.wrap_socket_with(sock, server_side, server_hostname, true)
    }

    /// `wrap_socket(sock, server_side=.., server_hostname=.., do_handshake_on_connect=..)`:
    /// makes the connected stream socket `sock` a TLS one with this context and returns it
    /// (another handle to the same socket). `sock` may be a [`Socket`] or a `&Socket`.
    ///
    /// `server_side` must match the context's protocol (as CPython requires). With
    /// `do_handshake_on_connect` the handshake runs now, as the socket's timeout mode allows
    /// (see the [module docs](self#blocking-timeouts-non-blocking)); without it, in the first
    /// read or write. Read-ahead kept by `readline` goes back to the host first (see [Bytes
    /// received before `wrap_socket`](self#bytes-received-before-wrap_socket)).
    ///
    /// # Errors
    ///
    /// See the [module docs](self#errors).
    pub fn wrap_socket_with(
        &self,
        sock: impl Borrow<Socket>,
        server_side: bool,
        server_hostname: Option<&str>,
        do_handshake_on_connect: bool,
    ) -> Result<Socket> {
        let params = self.params(server_side, server_hostname)?;
        let sock = sock.borrow();
        sock.inner
            .receiving()?
            .start_tls(&params, do_handshake_on_connect)
            .map_err(OSError::new)?;
        Ok(sock.clone())
    }

    /// The host's parameters for wrapping one socket, after the checks this library makes.
    fn params(&self, server_side: bool, server_hostname: Option<&str>) -> Result<wit::TlsParams> {
        if server_side != (self.protocol == PROTOCOL_TLS_SERVER) {
            return Err(OSError::new(errno::EINVAL));
        }
        let cert_reqs = match self.verify_mode {
            mode @ (CERT_NONE | CERT_OPTIONAL | CERT_REQUIRED) => mode,
            _ => return Err(OSError::new(errno::EINVAL)),
        };
        if server_side && self.verify_mode == CERT_REQUIRED {
            // The host asks clients for no certificate: refusing beats not checking.
            return Err(OSError::new(errno::EOPNOTSUPP));
        }
        Ok(wit::TlsParams {
            server_side,
            server_hostname: server_hostname.map(str::to_string),
            cert_reqs,
            cadata: self.cadata.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        })
    }
}

impl Socket {
    /// `getpeercert(binary_form=True)`: the peer's certificate (DER) once a TLS handshake has
    /// finished; `None` before then, on a plain socket, or when the peer sent none (a client
    /// of a server side).
    ///
    /// # Errors
    ///
    /// EOPNOTSUPP with `binary_form` false: MicroPython supports only the binary form (and
    /// raises `NotImplementedError`); parse the DER instead. EBADF (closed).
    pub fn getpeercert(&self, binary_form: bool) -> Result<Option<Vec<u8>>> {
        if !binary_form {
            return Err(OSError::new(errno::EOPNOTSUPP));
        }
        self.inner.sock.peer_certificate().map_err(OSError::new)
    }
}

/// Whether `data` looks like PEM (a `-----BEGIN ` line anywhere, as mbedTLS and the host
/// decide).
fn is_pem(data: &[u8]) -> bool {
    memchr::memmem::find(data, b"-----BEGIN ").is_some()
}

/// Whether `data` is one DER structure: a SEQUENCE (as every certificate and key is) whose
/// definite length covers exactly all of `data`.
fn is_der_sequence(data: &[u8]) -> bool {
    let [0x30, first, rest @ ..] = data else {
        return false;
    };
    let (len, body) = match *first {
        n @ 0..=0x7f => (usize::from(n), rest),
        // Long form: 1 to 4 length bytes, big-endian.
        n @ 0x81..=0x84 => {
            let count = usize::from(n & 0x7f);
            let Some((bytes, body)) = rest.split_at_checked(count) else {
                return false;
            };
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, body)
        }
        // 0x80 is BER's indefinite length, never DER; longer lengths than 4 bytes are absurd.
        _ => return false,
    };
    body.len() == len
}

/// EINVAL unless `data` is usable certificate, key or CA data as far as this library can
/// tell: PEM or one DER structure, not empty, at most [`MAX_TLS_DATA`] bytes.
fn check_tls_data(data: &[u8]) -> Result<()> {
    if data.is_empty() || data.len() > MAX_TLS_DATA || !(is_pem(data) || is_der_sequence(data)) {
        return Err(OSError::new(errno::EINVAL));
    }
    Ok(())
}

/// Appends `data` (checked PEM or DER) to the PEM text `all`: PEM as it is, on a line of its
/// own; one DER certificate as a `CERTIFICATE` block.
fn append_pem(all: &mut Vec<u8>, data: &[u8]) {
    if !all.is_empty() && !all.ends_with(b"\n") {
        all.push(b'\n');
    }
    if is_pem(data) {
        all.extend_from_slice(data);
        if !data.ends_with(b"\n") {
            all.push(b'\n');
        }
        return;
    }
    all.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
    for line in data.chunks(48) {
        base64(line, all);
        all.push(b'\n');
    }
    all.extend_from_slice(b"-----END CERTIFICATE-----\n");
}

/// Standard base64 (with padding) of `data`, appended to `out`.
fn base64(data: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal DER SEQUENCE of `len` content bytes.
    fn der(len: usize) -> Vec<u8> {
        let mut out = vec![0x30];
        match len {
            0..=0x7f => out.push(len as u8),
            0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
            _ => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        }
        out.resize(out.len() + len, 0x05);
        out
    }

    #[test]
    fn micropythons_numbers() {
        assert_eq!((CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED), (0, 1, 2));
        assert_eq!((PROTOCOL_TLS_CLIENT, PROTOCOL_TLS_SERVER), (0, 1));
        assert_eq!(crate::IPPROTO_SEC, 100);
    }

    #[test]
    fn wrap_options_default_is_micropythons() {
        let o = WrapOptions::default();
        assert!(!o.server_side);
        assert_eq!((o.key, o.cert, o.cadata), (None, None, None));
        assert_eq!(o.cert_reqs, CERT_NONE);
        assert_eq!(o.server_hostname, None);
        assert!(o.do_handshake);
    }

    #[test]
    fn context_defaults_follow_micropython() {
        let client = SSLContext::new(PROTOCOL_TLS_CLIENT).unwrap();
        assert_eq!(client.verify_mode, CERT_REQUIRED);
        assert_eq!(client.protocol(), PROTOCOL_TLS_CLIENT);
        let server = SSLContext::new(PROTOCOL_TLS_SERVER).unwrap();
        assert_eq!(server.verify_mode, CERT_NONE);
        for bad in [-1, 2, 3, 100] {
            assert_eq!(SSLContext::new(bad).unwrap_err().errno(), errno::EINVAL);
        }
    }

    #[test]
    fn params_check_side_and_verify_mode() {
        let mut client = SSLContext::new(PROTOCOL_TLS_CLIENT).unwrap();
        let p = client.params(false, Some("a.test")).unwrap();
        assert!(!p.server_side);
        assert_eq!(p.cert_reqs, CERT_REQUIRED);
        assert_eq!(p.server_hostname.as_deref(), Some("a.test"));
        assert_eq!(p.cadata, None);
        // A side that does not match the context.
        assert_eq!(
            client.params(true, None).unwrap_err().errno(),
            errno::EINVAL
        );
        client.verify_mode = CERT_NONE;
        assert_eq!(client.params(false, None).unwrap().cert_reqs, CERT_NONE);
        client.verify_mode = CERT_OPTIONAL;
        assert_eq!(client.params(false, None).unwrap().cert_reqs, CERT_OPTIONAL);
        for bad in [-1, 3, 42] {
            client.verify_mode = bad;
            assert_eq!(
                client.params(false, None).unwrap_err().errno(),
                errno::EINVAL
            );
        }

        let mut server = SSLContext::new(PROTOCOL_TLS_SERVER).unwrap();
        assert!(server.params(true, None).unwrap().server_side);
        assert_eq!(
            server.params(false, None).unwrap_err().errno(),
            errno::EINVAL
        );
        server.verify_mode = CERT_OPTIONAL;
        assert!(server.params(true, None).is_ok());
        server.verify_mode = CERT_REQUIRED;
        assert_eq!(
            server.params(true, None).unwrap_err().errno(),
            errno::EOPNOTSUPP
        );
    }

    #[test]
    fn der_structures_are_recognised_by_their_length() {
        for len in [0, 1, 0x7f, 0x80, 0xff, 0x100, 3000] {
            assert!(is_der_sequence(&der(len)), "{len}");
        }
        let mut long = der(300);
        long.push(0);
        assert!(!is_der_sequence(&long), "trailing byte");
        long.truncate(long.len() - 2);
        assert!(!is_der_sequence(&long), "short");
        assert!(!is_der_sequence(b""));
        assert!(!is_der_sequence(&[0x30]));
        assert!(!is_der_sequence(&[0x31, 0]), "a SET, not a SEQUENCE");
        assert!(!is_der_sequence(&[0x30, 0x80, 0, 0]), "indefinite length");
        assert!(!is_der_sequence(&[0x30, 0x82, 0x01]), "length cut short");
        assert!(!is_der_sequence(b"not a certificate"));
    }

    #[test]
    fn tls_data_must_be_pem_or_der() {
        assert!(
            check_tls_data(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .is_ok()
        );
        assert!(check_tls_data(&der(500)).is_ok());
        for bad in [&b""[..], b"nonsense", b"-----BEGIN"] {
            assert_eq!(
                check_tls_data(bad).unwrap_err().errno(),
                errno::EINVAL,
                "{bad:?}"
            );
        }
        let mut huge = b"-----BEGIN CERTIFICATE-----\n".to_vec();
        huge.resize(MAX_TLS_DATA + 1, b'A');
        assert_eq!(check_tls_data(&huge).unwrap_err().errno(), errno::EINVAL);
    }

    #[test]
    fn base64_as_rfc4648() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"\xff\xfe\x00", "//4A"),
        ];
        for (data, want) in cases {
            let mut out = Vec::new();
            base64(data, &mut out);
            assert_eq!(out, want.as_bytes(), "{data:?}");
        }
    }

    #[test]
    fn cas_add_up_as_pem() {
        let mut ctx = SSLContext::new(PROTOCOL_TLS_CLIENT).unwrap();
        let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
        ctx.load_verify_locations(pem).unwrap();
        ctx.load_verify_locations(der(2)).unwrap();
        let all = String::from_utf8(ctx.cadata.clone().unwrap()).unwrap();
        assert_eq!(
            all,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\nMAIFBQ==\n-----END CERTIFICATE-----\n"
        );
        // A bad one adds nothing.
        assert!(ctx.load_verify_locations(b"junk").is_err());
        assert_eq!(ctx.cadata.as_deref(), Some(all.as_bytes()));
        // DER lines are 64 characters, as PEM wants.
        let mut ctx = SSLContext::new(PROTOCOL_TLS_CLIENT).unwrap();
        ctx.load_verify_locations(der(100)).unwrap();
        let text = String::from_utf8(ctx.cadata.unwrap()).unwrap();
        assert!(text.lines().all(|l| l.len() <= 64), "{text}");
        assert_eq!(text.lines().count(), 2 + 102usize.div_ceil(48));
    }

    #[test]
    fn cert_chain_is_checked_and_replaced() {
        let mut ctx = SSLContext::new(PROTOCOL_TLS_SERVER).unwrap();
        assert_eq!(
            ctx.load_cert_chain(b"junk", der(3)).unwrap_err().errno(),
            errno::EINVAL
        );
        assert_eq!(
            ctx.load_cert_chain(der(3), b"").unwrap_err().errno(),
            errno::EINVAL
        );
        assert_eq!(ctx.cert, None);
        ctx.load_cert_chain(der(3), der(4)).unwrap();
        ctx.load_cert_chain(der(5), der(6)).unwrap();
        assert_eq!(ctx.cert, Some(der(5)));
        assert_eq!(ctx.key, Some(der(6)));
        let p = ctx.params(true, None).unwrap();
        assert_eq!((p.cert, p.key), (Some(der(5)), Some(der(6))));
        // The key never shows in debug output.
        assert!(!format!("{ctx:?}").contains("[48"), "{ctx:?}");
    }

    #[test]
    fn wrap_socket_builds_micropythons_context() {
        // `wrap_socket` checks everything through this context before its first host call.
        let check = |opts: WrapOptions| {
            let server_side = opts.server_side;
            context_for(&opts)
                .and_then(|ctx| ctx.params(server_side, None))
                .map_err(|e| e.errno())
        };
        let p = check(WrapOptions::default()).unwrap();
        assert_eq!(p.cert_reqs, CERT_NONE, "CERT_NONE by default");
        let p = check(WrapOptions {
            server_side: true,
            cert: Some(der(10)),
            key: Some(der(11)),
            ..WrapOptions::default()
        })
        .unwrap();
        assert!(p.server_side);
        assert_eq!((p.cert, p.key), (Some(der(10)), Some(der(11))));
        // A certificate alone: one PEM with the key in it.
        let p = check(WrapOptions {
            cert: Some(der(10)),
            ..WrapOptions::default()
        })
        .unwrap();
        assert_eq!((p.cert, p.key), (Some(der(10)), None));
        let p = check(WrapOptions {
            cadata: Some(der(1)),
            cert_reqs: CERT_REQUIRED,
            ..WrapOptions::default()
        })
        .unwrap();
        assert!(
            p.cadata
                .unwrap()
                .starts_with(b"-----BEGIN CERTIFICATE-----\n")
        );
        let einval = [
            WrapOptions {
                key: Some(der(11)),
                ..WrapOptions::default()
            },
            WrapOptions {
                cert: Some(b"junk".to_vec()),
                ..WrapOptions::default()
            },
            WrapOptions {
                cadata: Some(Vec::new()),
                ..WrapOptions::default()
            },
            WrapOptions {
                cert_reqs: 7,
                ..WrapOptions::default()
            },
        ];
        for opts in einval {
            assert_eq!(check(opts.clone()).err(), Some(errno::EINVAL), "{opts:?}");
        }
        let server_required = WrapOptions {
            server_side: true,
            cert_reqs: CERT_REQUIRED,
            ..WrapOptions::default()
        };
        assert_eq!(check(server_required).err(), Some(errno::EOPNOTSUPP));
    }
}
