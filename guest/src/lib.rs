//! MicroPython's `usocket` (and `uselect`) for Rust programs compiled to `wasm32-wasip2`.
//!
//! This is the guest library of the `usocket` project: a thin layer over the host's
//! `usocket:net/usocket` WIT interface (`wit/usocket.wit`) with MicroPython's names and
//! shapes, so that MicroPython socket code ports statement by statement. The behaviour
//! contract is `docs/contract.md` of this repository; the host does all of the work (validation, policy, buffering,
//! blocking, deadlines), and every method here makes one host call, with one exception that
//! makes it cheaper: `readline` (and `std::io::BufRead`, below) keeps the bytes the host had
//! already received after the line (a read-ahead) and serves the next lines from them
//! without any host call; it gives them back (`unread`) before any other receiving call and
//! before `close`, so mixing methods, `poll` and reset-on-close behave exactly as if the host
//! held them.
//!
//! ```no_run
//! use usocket::{AF_INET, SOCK_STREAM};
//!
//! fn main() -> usocket::Result<()> {
//!     let addr = usocket::getaddrinfo("127.0.0.1", 8080)?[0].sockaddr.clone();
//!     let sock = usocket::socket(AF_INET, SOCK_STREAM, 0)?;
//!     sock.settimeout(Some(5.0))?;
//!     sock.connect(&addr)?;
//!     sock.sendall(b"GET / HTTP/1.0\r\n\r\n")?;
//!     while let Some(line) = sock.readline()? {
//!         if line.is_empty() {
//!             break; // end of stream
//!         }
//!         print!("{}", String::from_utf8_lossy(&line));
//!     }
//!     sock.close();
//!     Ok(())
//! }
//! ```
//!
//! # Building and running a guest
//!
//! A guest program is an ordinary Rust binary that depends on this crate:
//!
//! ```text
//! cargo build --target wasm32-wasip2
//! usocket run --allow connect=127.0.0.1:8080 target/wasm32-wasip2/debug/x.wasm
//! ```
//!
//! `cargo build` emits a `wasi:cli` command component directly; the `usocket` host runs it
//! and grants only what its policy (`--allow ...`) names: anything else fails with EACCES.
//! The crate also compiles for native targets (for `cargo check` and unit tests), but
//! there every host call is unreachable and panics.
//!
//! For speed, build release guests with link-time optimization, in the guest's workspace
//! `Cargo.toml` (or with `CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1`):
//!
//! ```toml
//! [profile.release]
//! lto = "fat"
//! codegen-units = 1
//! ```
//!
//! Calls between wasm functions cost more than native ones, and without LTO every allocation
//! and free takes four of them (Rust's allocator shims, then wasi-libc's `malloc`); with it,
//! two. `readline()`, which returns a new buffer a line, runs about a fifth faster. This
//! repository builds its own guests so (`build-guests`).
//!
//! The line reads' scans use wasm SIMD (a few functions enable `simd128` themselves, whatever
//! the build's target features), so the engine must support it: wasmtime does unless its
//! `Config::wasm_simd(false)` turns it off, as do other current engines.
//!
//! # MicroPython to Rust
//!
//! Errors are `Err(OSError)` ([`OSError::errno`] is `e.errno`); MicroPython's `None` results
//! are `Option`. A "scenario" is a program of the shared conformance suite
//! (`conformance/NN_name.py`, 01-32 and m1-m4) that makes the call, directly or through its
//! preamble helpers (`A`, `server`, `pair`, `E`, `wait`).
//!
//! | MicroPython | Rust | scenarios |
//! |---|---|---|
//! | `socket.socket()`, `socket(af, type, proto)` | [`socket`]`(AF_INET, SOCK_STREAM, 0)`, `socket(af, socktype, proto)`: every argument explicit | 01-23, 27-32, m1-m4 |
//! | `getaddrinfo(host, port)` | [`getaddrinfo`]`(host, port)` → `Vec<`[`AddrInfo`]`>` | 01-09, 11-16, 18-25, 27-32, m1-m4 |
//! | `getaddrinfo(host, port, af, type, proto, flags)` | [`getaddrinfo_with`]`(host, port, af, socktype, proto, flags)` (give all six) | 24 |
//! | `getaddrinfo(h, p)[0][-1]` | `getaddrinfo(h, p)?[0].sockaddr` (a [`SockAddr`]) | every user of the preamble's `A` |
//! | `(address, port)` argument | anything `Into<`[`AddrArg`]`>`: `("127.0.0.1", 80)`, `&addr`, `addr` (a [`SockAddr`]), a `std::net::SocketAddr` | as the methods taking it |
//! | `OSError`, `e.errno`, `e.args[0]` | [`OSError`], [`OSError::errno`] | 09-16, 23, 25, 29, 30, 32, m2, m3 |
//! | `errno.EAGAIN`, ... | [`errno::EAGAIN`], ...; `errno.errorcode[n]` is [`errno::errorcode`]`(n)` | 11, 26, 30, m3 |
//! | `socket.AF_INET`, ... | [`AF_INET`], ... (crate root, `i32`) | 09, 13, 22-24, 26, 31, 32, m4; `SOL_SOCKET`, `SO_REUSEADDR` in every user of `server`/`pair` |
//! | `s.accept()` | [`Socket::accept`] → `(Socket, SockAddr)` | 01-09, 12-16, 18-21, 27-30, m1-m3 |
//! | `s.bind(addr)` | [`Socket::bind`]`(addr)` | 01-09, 12-16, 18-23, 27-32, m1-m4 |
//! | `s.listen()`, `s.listen(n)` | [`Socket::listen`]`(None)`, `listen(Some(n))` | `listen()`: 01-09, 12-16, 18-21, 28-30, m1-m3; `listen(n)`: 13, 27 |
//! | `s.connect(addr)` | [`Socket::connect`]`(addr)` | 01-09, 11-16, 18-21, 27-30, 32, m1-m3 |
//! | `s.send(buf)` | [`Socket::send`]`(&buf)` → count | 01-03, 08-10, 13-16, 19, 29, m2 |
//! | `s.sendall(buf)` | [`Socket::sendall`]`(&buf)` → `()` | 08-10 |
//! | `s.sendto(buf, addr)` | [`Socket::sendto`]`(&buf, addr)` → count | 09, 22, 31, m4 |
//! | `s.write(buf)` | [`Socket::write`]`(&buf)` → `Option<usize>` (`None`: non-blocking, nothing written) | 04-10, 27, 28, 30, m1, m3 |
//! | `s.recv(n)`, `s.recv(n, flags)` | [`Socket::recv`]`(n)`, [`Socket::recv_flags`]`(n, flags)` | `recv(n)`: 01-03, 09, 10, 12-16, 19, 22, 23, 29, m2; with flags: 23 |
//! | `s.recvfrom(n)`, `s.recvfrom(n, flags)` | [`Socket::recvfrom`]`(n)`, [`Socket::recvfrom_flags`]`(n, flags)` → `(Vec<u8>, SockAddr)` | `recvfrom(n)`: 09, 15, 22, 23, 31, m4; with flags: 23 |
//! | `s.read(n)` | [`Socket::read`]`(n)` → `Option<Vec<u8>>` | 03, 05, 09, 10, 14, 15, 23, 30, m3 |
//! | `s.read()` | [`Socket::read_all`]`()` → `Option<Vec<u8>>` | 03, 04, 08, 14, 27 |
//! | `s.readinto(buf)`, `s.readinto(buf, nbytes)` | [`Socket::readinto`]`(&mut buf)`, `readinto(&mut buf[..nbytes])` → `Option<usize>` | `readinto(buf)`: 03, 06, 09, 10, 14, 15; with nbytes: 06 |
//! | `s.readline()`, `s.readline(limit)` | [`Socket::readline`]`()`, [`Socket::readline_limit`]`(limit)` → `Option<Vec<u8>>` (or `BufRead::read_line` into a reused `String`: see [Reading lines](#reading-lines)) | `readline()`: 03, 07, 09, 10, 14, 15, 27, 28, 30, m1, m3; with limit: none |
//! | `s.close()` | [`Socket::close`]`()` | 01-23, 27-32, m1-m4 |
//! | `s.settimeout(None)`, `s.settimeout(t)` | [`Socket::settimeout`]`(None)`, `settimeout(Some(t))` | 09, 10, 15, 16, 23, 29, 31, 32, m2, m4 |
//! | `s.setblocking(flag)` | [`Socket::setblocking`]`(flag)` | 09, 11, 12, 14, 16, 23, 29, 30, m2, m3 |
//! | `s.setsockopt(level, opt, value)` | [`Socket::setsockopt`]`(level, opt, value)`: `value` an `i32`, `bool` or bytes ([`SockOptValue`]) | 01-09, 12-16, 18-21, 27-30, 32, m1-m3 |
//! | `s.makefile(mode, buffering=0)` | [`Socket::makefile`]`(mode)` → another [`Socket`] handle (unbuffered) | 09, 27 |
//! | file `f.read`, `f.readinto`, `f.readline`, `f.write`, `f.close` | the same [`Socket`] methods | 27 |
//! | `select.poll()` | [`select::poll`]`()` → [`select::Poll`] | 11, 14, 17-21, 28, 30, m3 |
//! | `p.register(s, mask)`, `p.register(s)` | [`select::Poll::register`]`(&s, mask)`, [`select::Poll::register_default`]`(&s)` | with mask: 11, 14, 18-21, 28, 30, m3; default: 17 |
//! | `p.modify(s, mask)` | [`select::Poll::modify`]`(&s, mask)` | 30, m3 |
//! | `p.unregister(s)` | [`select::Poll::unregister`]`(&s)` | 20 |
//! | `p.poll(ms)`, `p.poll()` | [`select::Poll::poll`]`(ms)`, `poll(-1)` → `Vec<(Socket, u32)>` | 11, 14, 17-21, 28, 30, m3 |
//! | `p.ipoll(ms, flags)` | [`select::Poll::ipoll`]`(ms, flags)` → a `Vec` instead of an iterator | 30, m3 |
//! | `select.POLLIN`, ... | [`select::POLLIN`], ... (`u32`) | 11, 18-21, 26, 30, m3 |
//! | `ssl.wrap_socket(sock, server_side=.., key=.., cert=.., cert_reqs=.., cadata=.., server_hostname=.., do_handshake=..)` | [`ssl::wrap_socket`]`(sock, `[`ssl::WrapOptions`]` { .. })` → the same [`Socket`] type, now TLS (see [`ssl`]) | none (TLS tests: `tests/tests/tls.rs`) |
//! | `ssl.SSLContext(protocol)`, `ctx.verify_mode`, `ctx.load_cert_chain(cert, key)`, `ctx.load_verify_locations(cadata)`, `ctx.wrap_socket(sock, ...)` | [`ssl::SSLContext::new`]`(protocol)`, the field `verify_mode`, `load_cert_chain`, `load_verify_locations`, [`ssl::SSLContext::wrap_socket`] / `wrap_socket_with` (with `do_handshake_on_connect`) | none |
//! | `ssock.getpeercert(True)` | [`Socket::getpeercert`]`(true)` → `Option<Vec<u8>>` (DER) | none |
//! | `ssl.CERT_NONE`, `CERT_OPTIONAL`, `CERT_REQUIRED`, `PROTOCOL_TLS_CLIENT`, `PROTOCOL_TLS_SERVER`; `socket.IPPROTO_SEC` | [`ssl::CERT_NONE`], ... (`i32`); [`IPPROTO_SEC`] (a socket whose `connect` runs a verifying TLS client handshake) | none |
//!
//! # Reading lines
//!
//! MicroPython's `readline()` returns a new bytes object per line, and so does
//! [`Socket::readline`] (a new `Vec`). [`Socket`] also implements [`std::io::BufRead`] over
//! the same read-ahead, so that [`read_line`](std::io::BufRead::read_line) and
//! [`read_until`](std::io::BufRead::read_until) append to a buffer the caller reuses: no host
//! call and no allocation per line, one host call per refill of up to 64 KiB. No
//! `std::io::BufReader` is needed. Both ways can be mixed on one socket, with each other and
//! with every other method.
//!
//! ```no_run
//! use std::io::BufRead;
//!
//! # fn main() -> std::io::Result<()> {
//! let mut sock = usocket::socket(usocket::AF_INET, usocket::SOCK_STREAM, 0)?;
//! sock.connect(("127.0.0.1", 8080))?;
//! let mut line = String::new();
//! loop {
//!     line.clear();
//!     if sock.read_line(&mut line)? == 0 {
//!         break; // end of stream
//!     }
//!     print!("{line}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `read_line` fails as std's does: `InvalidData` for a line that is not UTF-8 (the line is
//! used up), and on a non-blocking or timed socket `WouldBlock` or `TimedOut` after
//! appending the part of the line received so far (nothing is lost: it is in the buffer).
//!
//! Not in MicroPython's `usocket` but provided: [`Socket::getsockname`],
//! [`Socket::getpeername`], [`Socket::family`], [`Socket::socktype`], and the [`std::io`]
//! traits: `Read`, `Write` and `BufRead` for [`Socket`] (see there: the inherent `read` and
//! `write` shadow the trait methods in method-call syntax; generic code such as
//! `std::io::BufReader`, `std::io::copy` or `read_to_end` uses the traits).
//!
//! MicroPython's `utime` has no counterpart here: use `std::time` and `std::thread::sleep`.

#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

#[allow(
    unsafe_code,
    missing_docs,
    unreachable_pub,
    clippy::all,
    reason = "generated by wit-bindgen"
)]
mod bindings;

mod addr;
pub mod errno;
mod error;
pub mod process;
mod scan;
pub mod select;
mod socket;
pub mod ssl;
mod stream;

pub use addr::{AddrArg, AddrInfo, SockAddr};
pub use error::{OSError, Result};
#[doc(hidden)]
pub use scan::self_check as __scan_self_check;
pub use socket::{SockOptValue, Socket, socket};

use bindings::usocket::net::usocket as wit;

// MicroPython's `usocket` constants (`i32`), defined once in `usocket-abi` for this library and
// the host alike.
pub use usocket_abi::{
    AF_INET, AF_INET6, IPPROTO_IP, IPPROTO_IPV6, IPPROTO_SEC, IPPROTO_TCP, IPPROTO_UDP,
    MSG_DONTWAIT, MSG_PEEK, SO_BROADCAST, SO_KEEPALIVE, SO_LINGER, SO_RCVBUF, SO_REUSEADDR,
    SO_SNDBUF, SOCK_DGRAM, SOCK_STREAM, SOL_SOCKET, TCP_NODELAY,
};

/// `getaddrinfo(host, port)`: [`getaddrinfo_with`] with af, type, proto and flags 0.
///
/// `getaddrinfo(host, port)?[0].sockaddr` (MicroPython's `getaddrinfo(host, port)[0][-1]`) is
/// the portable way to get an address for `connect` or `bind`.
pub fn getaddrinfo(host: &str, port: i64) -> Result<Vec<AddrInfo>> {
    getaddrinfo_with(host, port, 0, 0, 0, 0)
}

/// `getaddrinfo(host, port, af, type, proto, flags)`: a non-empty list of results, one per
/// address, in resolver order.
///
/// Numeric literals are converted without a lookup; names go to the host's resolver only if
/// its policy grants them. May block while resolving (no socket timeout applies).
///
/// # Errors
///
/// -2 (EAI_NONAME: the name does not resolve, or `""`), -3 (EAI_AGAIN), -6 (EAI_FAMILY: `af`
/// not 0, `AF_INET` or `AF_INET6`), -9 (EAI_ADDRFAMILY: a literal of the other family),
/// EINVAL (port outside 0-65535, unknown type), EACCES (resolving the name is not granted).
pub fn getaddrinfo_with(
    host: &str,
    port: i64,
    af: i32,
    socktype: i32,
    proto: i32,
    flags: i32,
) -> Result<Vec<AddrInfo>> {
    let infos = wit::getaddrinfo(host, addr::port_arg(port), af, socktype, proto, flags)
        .map_err(OSError::new)?;
    Ok(infos.into_iter().map(AddrInfo::from).collect())
}
