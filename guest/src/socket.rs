//! [`Socket`]: MicroPython's `socket` object, one host call per method (`readline`: at most
//! one, see [`Ahead`]).

use core::cell::{Cell, RefCell};
use core::fmt;
use std::io;
use std::rc::Rc;

use crate::addr::{self, AddrArg, SockAddr};
use crate::bindings::usocket::net::usocket as wit;
use crate::error::{OSError, Result};
use crate::scan::{append_line, copy_through, find_byte, to_vec};
use crate::{SOCK_DGRAM, errno};

/// MicroPython's default `listen()` backlog.
const DEFAULT_BACKLOG: i32 = 128;

/// A size as the host takes it: a `u32`, clamped.
pub(crate) fn size_arg(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `socket(af, type, proto)`: a new socket.
///
/// `af`: [`AF_INET`](crate::AF_INET) or [`AF_INET6`](crate::AF_INET6); `socktype`:
/// [`SOCK_STREAM`](crate::SOCK_STREAM) or [`SOCK_DGRAM`](crate::SOCK_DGRAM); `proto`: 0 (the
/// type's own protocol), [`IPPROTO_TCP`](crate::IPPROTO_TCP) with `SOCK_STREAM` or
/// [`IPPROTO_UDP`](crate::IPPROTO_UDP) with `SOCK_DGRAM`, or
/// [`IPPROTO_SEC`](crate::IPPROTO_SEC) with `SOCK_STREAM` (a TLS socket: `connect` runs a
/// verifying client handshake, see [`ssl`](crate::ssl)). MicroPython's `socket()` with no
/// arguments is `socket(AF_INET, SOCK_STREAM, 0)`.
///
/// # Errors
///
/// EAFNOSUPPORT (unknown family), EINVAL (unknown type, or a proto that does not fit it),
/// ENOMEM (the host's socket quota is exhausted), EACCES (not granted). Never blocks.
pub fn socket(af: i32, socktype: i32, proto: i32) -> Result<Socket> {
    let sock = wit::Socket::create(af, socktype, proto).map_err(OSError::new)?;
    Ok(Socket::wrap(sock, socktype == SOCK_DGRAM))
}

/// The value of [`Socket::setsockopt`]: MicroPython's int or bytes.
///
/// Bytes are a native-endian C int of 1 to 4 bytes (`b"\x01\x00\x00\x00"` is 1); the host
/// validates them (EINVAL otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SockOptValue {
    /// An integer value (`1`, `0`; a `bool` converts to these).
    Int(i32),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl SockOptValue {
    fn to_wit(&self) -> wit::SockoptValue {
        match self {
            SockOptValue::Int(n) => wit::SockoptValue::Int(*n),
            SockOptValue::Bytes(b) => wit::SockoptValue::Bytes(b.clone()),
        }
    }
}

impl From<i32> for SockOptValue {
    fn from(n: i32) -> SockOptValue {
        SockOptValue::Int(n)
    }
}

impl From<bool> for SockOptValue {
    fn from(flag: bool) -> SockOptValue {
        SockOptValue::Int(i32::from(flag))
    }
}

impl From<&[u8]> for SockOptValue {
    fn from(bytes: &[u8]) -> SockOptValue {
        SockOptValue::Bytes(bytes.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for SockOptValue {
    fn from(bytes: &[u8; N]) -> SockOptValue {
        SockOptValue::Bytes(bytes.to_vec())
    }
}

impl From<Vec<u8>> for SockOptValue {
    fn from(bytes: Vec<u8>) -> SockOptValue {
        SockOptValue::Bytes(bytes)
    }
}

/// What all handles of one host socket share.
pub(crate) struct Inner {
    /// The host socket. Dropping it (with the last handle) closes the socket.
    pub(crate) sock: wit::Socket,
    /// A datagram socket (fixed at creation): `BufRead` keeps a datagram until it is consumed.
    pub(crate) datagram: bool,
    /// Changes whenever bytes may have left the host's receive queue; a `BufRead` cache
    /// filled under another value is stale.
    pub(crate) epoch: Cell<u64>,
    /// How many bytes a datagram socket's `BufRead` cache of the current epoch knows to be
    /// queued at the head of the host's receive queue (0 if none): `select` counts them as
    /// POLLIN. (A stream socket's are in `ahead`.)
    pub(crate) peeked: Cell<usize>,
    /// Bytes `readline` or `BufRead` took from the host ahead of what they returned: the
    /// true head of the stream, before anything still queued on the host.
    pub(crate) ahead: RefCell<Ahead>,
}

/// `readline`'s read-ahead: whole lines are served from here without a host call, and
/// `BufRead` (see `stream.rs`) reads through it.
///
/// Only `readline`, `BufRead` and `Read` take from it. Before any other receiving call (and
/// before `close`), the bytes go back to the host with `unread`, so the host's queue is again
/// the whole stream: every other method, `poll`'s view and a close that resets on unread data
/// stay exact.
///
/// The host counts lent bytes as unread until the library's next call on the socket (see
/// the WIT's `readline-ahead`): a guest that ends without giving them back (trap, exit)
/// resets its connection. So once a non-empty read-ahead is used up, the library says so at
/// once with an empty `unread`, and a guest that read everything and then exits ends its
/// connections cleanly.
///
/// The bytes are behind an `Rc` so that a `BufRead` handle can lend a slice of them from
/// `fill_buf` (a `RefCell` borrow cannot outlive the call) without copying them.
#[derive(Default)]
pub(crate) struct Ahead {
    pub(crate) data: Rc<Vec<u8>>,
    pub(crate) pos: usize,
}

/// How much `readline` asks the host to hand over beyond the line, per host call.
pub(crate) const READ_AHEAD: u32 = 64 * 1024;

impl Ahead {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.data.len() - self.pos
    }

    /// The unused bytes.
    #[inline]
    pub(crate) fn rest(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    /// Uses up to `n` bytes; returns how many.
    pub(crate) fn advance(&mut self, n: usize) -> usize {
        let n = n.min(self.len());
        self.pos += n;
        n
    }

    /// Moves bytes to `buf` up to and including `byte`; returns whether `byte` was found and
    /// how many bytes moved (all of them if it was not).
    fn take_until(&mut self, byte: u8, buf: &mut Vec<u8>) -> (bool, usize) {
        let rest = self.rest();
        let (found, n) = match find_byte(byte, rest) {
            Some(i) => (true, i + 1),
            None => (false, rest.len()),
        };
        buf.extend_from_slice(&rest[..n]);
        self.pos += n;
        (found, n)
    }

    /// Appends the next line (with its `\n`) to `buf` if the read-ahead holds all of it, and
    /// returns its length; `None` if it does not (nothing taken). A line that is not UTF-8 is
    /// used up and not appended (`InvalidData`), as std's `read_line` does.
    #[inline]
    fn take_line_str(&mut self, buf: &mut String) -> Option<io::Result<usize>> {
        let rest = self.rest();
        let (n, appended) = append_line(rest, buf)?;
        let result = if appended {
            Ok(n)
        } else {
            match core::str::from_utf8(&rest[..n]) {
                Ok(line) => {
                    buf.push_str(line);
                    Ok(n)
                }
                Err(_) => Err(invalid_utf8()),
            }
        };
        self.pos += n;
        Some(result)
    }

    /// The next line (with its `\n`), or `limit` bytes, if the read-ahead holds it.
    #[inline]
    fn take_line(&mut self, limit: Option<usize>) -> Option<Vec<u8>> {
        let rest = self.rest();
        let window = &rest[..rest.len().min(limit.unwrap_or(usize::MAX))];
        let line = match copy_through::<b'\n'>(window) {
            Some(line) => line,
            None if Some(window.len()) == limit => to_vec(window),
            None => return None,
        };
        self.pos += line.len();
        Some(line)
    }
}

impl Inner {
    /// Marks every `BufRead` cache of this socket stale: called before any host call that may
    /// take bytes from the receive queue (and by `close`).
    #[inline]
    pub(crate) fn invalidate(&self) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
        self.peeked.set(0);
    }

    /// Gives the read-ahead back to the host (see [`Ahead`]): what is left of it, possibly
    /// nothing (which tells the host that all of it was used). On failure the bytes stay
    /// here: nothing is lost.
    pub(crate) fn give_back(&self) -> Result<()> {
        let mut ahead = self.ahead.borrow_mut();
        if ahead.data.is_empty() {
            // Nothing was lent (or it was already given back).
            return Ok(());
        }
        self.sock.unread(ahead.rest()).map_err(OSError::new)?;
        *ahead = Ahead::default();
        Ok(())
    }

    /// The host socket, after giving the read-ahead back and marking every `BufRead` cache
    /// stale: before a host call that may take received bytes (a cache is only a mirror of
    /// the head of the host's queue, so dropping it loses nothing).
    pub(crate) fn receiving(&self) -> Result<&wit::Socket> {
        self.give_back()?;
        self.invalidate();
        Ok(&self.sock)
    }

    /// After bytes were taken from the read-ahead: other handles' `BufRead` views are stale,
    /// and a used-up read-ahead is reported to the host at once (see [`Ahead`]). On failure
    /// the (empty) read-ahead stays, and the next receiving call reports it.
    #[inline]
    pub(crate) fn used_ahead(&self) {
        let used_up = self.ahead.borrow().len() == 0;
        self.took_ahead(used_up);
    }

    /// [`Inner::used_ahead`] for a caller that already knows whether the read-ahead is used up.
    #[inline]
    pub(crate) fn took_ahead(&self, used_up: bool) {
        self.invalidate();
        if used_up {
            let _ = self.give_back();
        }
    }

    /// Refills an empty read-ahead with one host call: what has arrived, at least one byte
    /// (waiting, timing out or failing with EAGAIN as `recv` does), up to [`READ_AHEAD`]
    /// bytes. Returns how many: `Some(0)` at end of stream, `None` if non-blocking and nothing
    /// has arrived.
    pub(crate) fn refill(&self) -> Result<Option<usize>> {
        let host = self.receiving()?;
        let Some(data) = host.read_ahead(READ_AHEAD).map_err(OSError::new)? else {
            return Ok(None);
        };
        let n = data.len();
        *self.ahead.borrow_mut() = Ahead {
            data: Rc::new(data),
            pos: 0,
        };
        Ok(Some(n))
    }

    /// Moves bytes from the read-ahead to `buf` up to and including `byte`; returns whether
    /// `byte` was found and how many bytes moved (all of them if it was not).
    pub(crate) fn take_until(&self, byte: u8, buf: &mut Vec<u8>) -> (bool, usize) {
        let (found, n) = self.ahead.borrow_mut().take_until(byte, buf);
        if n > 0 {
            self.used_ahead();
        }
        (found, n)
    }

    /// Appends the next line to `buf` if the read-ahead holds all of it (see
    /// `BufRead::read_line`): `None` if it does not (nothing taken).
    #[inline]
    pub(crate) fn take_line_str(&self, buf: &mut String) -> Option<io::Result<usize>> {
        let result = self.ahead.borrow_mut().take_line_str(buf)?;
        self.used_ahead();
        Some(result)
    }
}

/// The error of `BufRead::read_line` for a line that is not UTF-8, as std words it.
pub(crate) fn invalid_utf8() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "stream did not contain valid UTF-8",
    )
}

impl Drop for Inner {
    /// A socket dropped with read-ahead still unread must reset like any socket closed with
    /// unread data: give the bytes back before the host socket is dropped.
    fn drop(&mut self) {
        let _ = self.give_back();
    }
}

/// One handle's `BufRead` view, valid while `epoch` equals the shared one (see `stream.rs`):
/// on a stream socket the read-ahead's bytes (shared, not copied; `pos` is the read-ahead's),
/// on a datagram socket a copy of the datagram at the head of the host's queue.
#[derive(Default)]
pub(crate) struct Peek {
    pub(crate) data: Option<Rc<Vec<u8>>>,
    pub(crate) pos: usize,
    pub(crate) epoch: u64,
}

/// MicroPython's socket object (and the file object `makefile` returns).
///
/// Every method is one call to the host, which does all buffering, blocking and deadlines;
/// errors are [`OSError`]s with the host's errno. Method names, arguments and results follow
/// MicroPython; where Rust needs another shape the crate docs list the mapping.
///
/// **Handles.** `Clone` makes another handle to the *same* host socket (as
/// [`makefile`](Socket::makefile) does): reads and writes on any handle are one stream, and
/// `close` on any handle closes the socket for all. `==` is true for handles of the same
/// socket. The socket is closed when its last handle is dropped (or by
/// [`close`](Socket::close)).
///
/// **std::io.** `Socket` implements [`std::io::Read`], [`std::io::Write`] and
/// [`std::io::BufRead`] (and `&Socket` implements `Read` and `Write`). The inherent
/// [`read`](Socket::read) and [`write`](Socket::write) (MicroPython's) shadow the trait
/// methods of the same name in method-call syntax: call `std::io::Read::read(&mut sock, buf)`
/// to get the trait's, as generic code (`BufReader`, `io::copy`, `read_to_end`, `lines`)
/// does. See `Read`/`Write`/`BufRead` below for what each trait method calls.
///
/// **Lines.** [`readline`](Socket::readline) is MicroPython's: a new `Vec` per line.
/// [`BufRead::read_line`](std::io::BufRead::read_line) (and `read_until`) append to the
/// caller's `String` (`Vec`), which can be cleared and reused for every line: both read
/// through the same read-ahead, with no host call per line, and `read_line` makes no
/// allocation per line either. No `BufReader` is needed (it would add a second buffer).
pub struct Socket {
    pub(crate) inner: Rc<Inner>,
    /// This handle's `BufRead` view.
    pub(crate) peek: Peek,
}

impl Socket {
    fn wrap(sock: wit::Socket, datagram: bool) -> Socket {
        Socket {
            inner: Rc::new(Inner {
                sock,
                datagram,
                epoch: Cell::new(0),
                peeked: Cell::new(0),
                ahead: RefCell::default(),
            }),
            peek: Peek::default(),
        }
    }

    fn host(&self) -> &wit::Socket {
        &self.inner.sock
    }

    /// Before a host call that may take received bytes: see [`Inner::receiving`].
    fn receiving(&self) -> Result<&wit::Socket> {
        self.inner.receiving()
    }

    /// `accept()`: the next inbound connection, as `(socket, (address, port))`.
    ///
    /// The new socket starts in this socket's timeout mode. Blocks until a connection
    /// arrives; timed: ETIMEDOUT; non-blocking: EAGAIN.
    ///
    /// # Errors
    ///
    /// EINVAL (not listening), EOPNOTSUPP (datagram socket), ENOMEM (quota), EBADF.
    pub fn accept(&self) -> Result<(Socket, SockAddr)> {
        let (sock, addr) = self.host().accept().map_err(OSError::new)?;
        Ok((Socket::wrap(sock, false), addr::from_wit(addr)))
    }

    /// `bind(addr)`: `("", port)` is the family's wildcard address; port 0 means any port.
    ///
    /// # Errors
    ///
    /// EACCES (not granted), EINVAL (a name or malformed literal, a bad port, already bound),
    /// EADDRINUSE, EADDRNOTAVAIL, EBADF. Never blocks.
    pub fn bind(&self, addr: impl Into<AddrArg>) -> Result<()> {
        let addr = addr.into().to_wit();
        self.host().bind(&addr).map_err(OSError::new)
    }

    /// `listen([backlog])`: `None` is MicroPython's `listen()` (backlog 128); a negative
    /// backlog counts as 0. An unbound socket is bound to an ephemeral port first.
    ///
    /// # Errors
    ///
    /// EOPNOTSUPP (datagram socket), EACCES, EINVAL (connected), EBADF.
    pub fn listen(&self, backlog: Option<i32>) -> Result<()> {
        self.host()
            .listen(backlog.unwrap_or(DEFAULT_BACKLOG))
            .map_err(OSError::new)
    }

    /// `connect(addr)`.
    ///
    /// Stream socket, blocking: waits for the handshake; timed: ETIMEDOUT; non-blocking:
    /// EINPROGRESS, then EALREADY while pending and EISCONN once connected (the outcome shows
    /// in [`select`](crate::select) as POLLOUT, or POLLERR if it failed). Datagram socket:
    /// sets the default peer and filters incoming datagrams to it (never blocks).
    ///
    /// # Errors
    ///
    /// EACCES, EINVAL (a name, a malformed literal, `""`, port 0, a wildcard), ECONNREFUSED,
    /// EISCONN, ENETUNREACH, EHOSTUNREACH, EBADF.
    pub fn connect(&self, addr: impl Into<AddrArg>) -> Result<()> {
        let addr = addr.into().to_wit();
        self.host().connect(&addr).map_err(OSError::new)
    }

    /// `send(data)`: writes what fits now and returns the count (1..len; 0 for empty data).
    ///
    /// Blocks until at least one byte is sent; timed: ETIMEDOUT if nothing was sent;
    /// non-blocking: EAGAIN if nothing fits. Datagram socket: one datagram to the connected
    /// peer.
    ///
    /// # Errors
    ///
    /// ENOTCONN, EPIPE, ECONNRESET, EBADF.
    pub fn send(&self, data: &[u8]) -> Result<usize> {
        let n = self.host().send(data).map_err(OSError::new)?;
        Ok(n as usize)
    }

    /// `sendall(data)`: writes all of `data` (MicroPython returns None).
    ///
    /// Blocking: all of it; timed: ETIMEDOUT (a prefix may have been sent); non-blocking:
    /// EAGAIN if not all of it fit at once, and a prefix may have been sent (MicroPython calls
    /// this undefined: use [`write`](Socket::write), which returns the count).
    ///
    /// # Errors
    ///
    /// ENOTCONN, EPIPE, ECONNRESET, EBADF.
    pub fn sendall(&self, data: &[u8]) -> Result<()> {
        let n = self.host().write(data).map_err(OSError::new)?;
        if (n as usize) < data.len() {
            return Err(OSError::new(errno::EAGAIN));
        }
        Ok(())
    }

    /// `sendto(data, addr)`: one datagram to `addr`; returns its length. An unbound socket is
    /// bound to an ephemeral port first.
    ///
    /// # Errors
    ///
    /// EACCES, EINVAL, EAGAIN (non-blocking, buffer full), EBADF; on a stream socket EISCONN
    /// (connected) or ENOTCONN.
    pub fn sendto(&self, data: &[u8], addr: impl Into<AddrArg>) -> Result<usize> {
        let addr = addr.into().to_wit();
        let n = self.host().send_to(data, &addr).map_err(OSError::new)?;
        Ok(n as usize)
    }

    /// `write(data)`: writes all of `data` and returns `Some(len)`.
    ///
    /// Blocking: all of it; timed: ETIMEDOUT (a prefix may have been sent); non-blocking:
    /// what fits now, `Some(count)`, or `None` if nothing fit (MicroPython's None). Datagram
    /// socket: one datagram to the connected peer.
    ///
    /// # Errors
    ///
    /// ENOTCONN, EPIPE, ECONNRESET, EBADF.
    pub fn write(&self, data: &[u8]) -> Result<Option<usize>> {
        let n = self.host().write(data).map_err(OSError::new)? as usize;
        Ok(if n == 0 && !data.is_empty() {
            None
        } else {
            Some(n)
        })
    }

    /// `recv(n)`: 1..n bytes as they come (stream), or one datagram truncated to `n` (the
    /// rest is discarded). Empty: end of stream (every time after it), or an empty datagram.
    ///
    /// Blocks until data or end of stream; timed: ETIMEDOUT; non-blocking: EAGAIN. A peer
    /// reset gives ECONNRESET once, after any queued data, then end of stream.
    ///
    /// # Errors
    ///
    /// ENOTCONN (unconnected or listening), ECONNRESET, EBADF.
    pub fn recv(&self, n: usize) -> Result<Vec<u8>> {
        self.recv_flags(n, 0)
    }

    /// `recv(n, flags)`: as [`recv`](Socket::recv), with [`MSG_PEEK`](crate::MSG_PEEK) (leave
    /// the data queued) and/or [`MSG_DONTWAIT`](crate::MSG_DONTWAIT) (this call does not
    /// block); other flags: EINVAL.
    pub fn recv_flags(&self, n: usize, flags: i32) -> Result<Vec<u8>> {
        self.receiving()?
            .recv(size_arg(n), flags)
            .map_err(OSError::new)
    }

    /// `recvfrom(n)`: as [`recv`](Socket::recv), also returning the sender's address.
    pub fn recvfrom(&self, n: usize) -> Result<(Vec<u8>, SockAddr)> {
        self.recvfrom_flags(n, 0)
    }

    /// `recvfrom(n, flags)`: as [`recv_flags`](Socket::recv_flags), also returning the
    /// sender's address.
    pub fn recvfrom_flags(&self, n: usize, flags: i32) -> Result<(Vec<u8>, SockAddr)> {
        let (data, addr) = self
            .receiving()?
            .recv_from(size_arg(n), flags)
            .map_err(OSError::new)?;
        Ok((data, addr::from_wit(addr)))
    }

    /// `read(n)`: exactly `n` bytes, fewer only at end of stream; `read(0)` is empty. On a
    /// datagram socket: one datagram, as `recv`.
    ///
    /// Blocking: waits for all of it; timed: ETIMEDOUT (the bytes received so far stay queued
    /// and the next read returns them first); non-blocking: what is available now, `None` if
    /// nothing is.
    ///
    /// # Errors
    ///
    /// ENOTCONN, ECONNRESET (once, after data), EBADF.
    pub fn read(&self, n: usize) -> Result<Option<Vec<u8>>> {
        self.receiving()?
            .read(Some(size_arg(n)))
            .map_err(OSError::new)
    }

    /// `read()` without a size: everything until end of stream. Blocking, timed and
    /// non-blocking as [`read`](Socket::read).
    pub fn read_all(&self) -> Result<Option<Vec<u8>>> {
        self.receiving()?.read(None).map_err(OSError::new)
    }

    /// `readinto(buf)`: reads `buf.len()` bytes into `buf` as [`read`](Socket::read) does and
    /// returns the count (`Some(0)` at end of stream, `None` if non-blocking and nothing is
    /// available). MicroPython's `readinto(buf, nbytes)` is `readinto(&mut buf[..nbytes])`.
    pub fn readinto(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        let data = self
            .receiving()?
            .read(Some(size_arg(buf.len())))
            .map_err(OSError::new)?;
        Ok(data.map(|data| {
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            n
        }))
    }

    /// `readline()`: one line including its `\n` (`\r\n` as received); at end of stream the
    /// last partial line, then empty. Blocking, timed and non-blocking as
    /// [`read`](Socket::read): nothing received is lost.
    ///
    /// At most one host call (two when a partial line must first be given back): the host
    /// hands over bytes it already received after the line, and the following whole lines
    /// are served from them. To read lines into one reused buffer instead of a new `Vec`
    /// each, use [`BufRead::read_line`](std::io::BufRead::read_line) (see [`Socket`]).
    #[inline]
    pub fn readline(&self) -> Result<Option<Vec<u8>>> {
        self.readline_up_to(None)
    }

    /// `readline(limit)`: as [`readline`](Socket::readline), at most `limit` bytes.
    pub fn readline_limit(&self, limit: usize) -> Result<Option<Vec<u8>>> {
        self.readline_up_to(Some(limit))
    }

    #[inline]
    fn readline_up_to(&self, limit: Option<usize>) -> Result<Option<Vec<u8>>> {
        let served = {
            let mut ahead = self.inner.ahead.borrow_mut();
            ahead.take_line(limit).map(|line| (line, ahead.len() == 0))
        };
        let Some((line, used_up)) = served else {
            return self.readline_from_host(limit);
        };
        self.inner.took_ahead(used_up);
        Ok(Some(line))
    }

    /// `readline` when the read-ahead holds no whole line: the partial rest goes back, and
    /// the host (which keeps the deadline for the whole call) assembles the line.
    #[inline(never)]
    fn readline_from_host(&self, limit: Option<usize>) -> Result<Option<Vec<u8>>> {
        let host = self.receiving()?;
        let Some(got) = host
            .readline_ahead(limit.map(size_arg), READ_AHEAD)
            .map_err(OSError::new)?
        else {
            return Ok(None);
        };
        let n = usize::try_from(got.line_len).map_or(got.bytes.len(), |n| n.min(got.bytes.len()));
        if n == got.bytes.len() {
            // Nothing lent (a request-response peer's usual answer): the buffer is the line,
            // and the read-ahead stays empty (`receiving` gave it back).
            return Ok(Some(got.bytes));
        }
        // The bytes after the line become the read-ahead, the line a buffer of its own.
        let line = to_vec(&got.bytes[..n]);
        *self.inner.ahead.borrow_mut() = Ahead {
            data: Rc::new(got.bytes),
            pos: n,
        };
        Ok(Some(line))
    }

    /// `close()`: idempotent; every later call on any handle of this socket fails with
    /// EBADF. A stream socket that still holds unread received data is reset (the peer sees
    /// ECONNRESET).
    pub fn close(&self) {
        // Read-ahead goes back first, so that closing with it unread resets the connection.
        let _ = self.inner.give_back();
        self.inner.invalidate();
        self.host().close();
    }

    /// `settimeout(t)`: `None` blocks (the default), `Some(0.0)` is non-blocking, `Some(t)`
    /// with t > 0 is a deadline in seconds for each later call (covering the whole call).
    ///
    /// # Errors
    ///
    /// EINVAL (negative or NaN), EBADF.
    pub fn settimeout(&self, timeout: Option<f64>) -> Result<()> {
        self.host().set_timeout(timeout).map_err(OSError::new)
    }

    /// `setblocking(flag)`: exactly `settimeout(None)` (true) or `settimeout(Some(0.0))`
    /// (false).
    pub fn setblocking(&self, flag: bool) -> Result<()> {
        self.settimeout(if flag { None } else { Some(0.0) })
    }

    /// `setsockopt(level, opt, value)`: `value` an int (`1`, `true`) or bytes
    /// (`b"\x01\x00\x00\x00"`, see [`SockOptValue`]). Supported: `SOL_SOCKET` with
    /// `SO_REUSEADDR`, `SO_BROADCAST`, `SO_KEEPALIVE`, `SO_SNDBUF`, `SO_RCVBUF` (ints; the host
    /// clamps them) and `SO_LINGER` (8 bytes: `{int onoff, int seconds}` in native byte
    /// order, as MicroPython's `struct.pack("ii", 1, 0)`); `IPPROTO_TCP` with `TCP_NODELAY`.
    ///
    /// # Errors
    ///
    /// ENOPROTOOPT (any other level or option), EINVAL (bad value), EBADF.
    pub fn setsockopt(&self, level: i32, opt: i32, value: impl Into<SockOptValue>) -> Result<()> {
        let value = value.into().to_wit();
        self.host()
            .set_sockopt(level, opt, &value)
            .map_err(OSError::new)
    }

    /// `makefile(mode)`: a file object over the same socket, that is another handle to it
    /// (reads and writes on either are one stream; closing either closes the socket).
    ///
    /// `mode` is `"rb"`, `"wb"` or `"rwb"` and does not restrict operations; MicroPython's
    /// `buffering` argument has no Rust form (the file is unbuffered, as `buffering=0`).
    ///
    /// # Errors
    ///
    /// EINVAL (any other mode; checked first), EBADF (the socket is closed).
    pub fn makefile(&self, mode: &str) -> Result<Socket> {
        if !matches!(mode, "rb" | "wb" | "rwb") {
            return Err(OSError::new(errno::EINVAL));
        }
        self.host().kind().map_err(OSError::new)?;
        Ok(self.clone())
    }

    /// The socket's address family, [`AF_INET`](crate::AF_INET) or
    /// [`AF_INET6`](crate::AF_INET6) (CPython's `sock.family`). Errors: EBADF (closed).
    pub fn family(&self) -> Result<i32> {
        let (family, _) = self.host().kind().map_err(OSError::new)?;
        Ok(family)
    }

    /// The socket's type, [`SOCK_STREAM`](crate::SOCK_STREAM) or
    /// [`SOCK_DGRAM`](crate::SOCK_DGRAM) (CPython's `sock.type`). Errors: EBADF (closed).
    pub fn socktype(&self) -> Result<i32> {
        let (_, socktype) = self.host().kind().map_err(OSError::new)?;
        Ok(socktype)
    }

    /// `getsockname()`: the local address, once bound.
    ///
    /// # Errors
    ///
    /// EINVAL (not bound), EBADF.
    pub fn getsockname(&self) -> Result<SockAddr> {
        let addr = self.host().local_address().map_err(OSError::new)?;
        Ok(addr::from_wit(addr))
    }

    /// `getpeername()`: the peer's address, once connected.
    ///
    /// # Errors
    ///
    /// ENOTCONN, EBADF.
    pub fn getpeername(&self) -> Result<SockAddr> {
        let addr = self.host().peer_address().map_err(OSError::new)?;
        Ok(addr::from_wit(addr))
    }
}

impl Clone for Socket {
    /// Another handle to the same host socket (with an empty `BufRead` cache of its own).
    fn clone(&self) -> Socket {
        Socket {
            inner: Rc::clone(&self.inner),
            peek: Peek::default(),
        }
    }
}

impl PartialEq for Socket {
    /// True for handles of the same host socket.
    fn eq(&self, other: &Socket) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Socket {}

/// Hashes the host socket's identity, as [`PartialEq`] compares it: a `Socket` can key a
/// `HashMap` (for example of a server's clients, looked up by the sockets `poll` returns).
impl core::hash::Hash for Socket {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        Rc::as_ptr(&self.inner).hash(state);
    }
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("handle", &self.inner.sock.handle())
            .field("datagram", &self.inner.datagram)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(v: impl Into<SockOptValue>) -> SockOptValue {
        v.into()
    }

    #[test]
    fn sockopt_values() {
        assert_eq!(opt(1), SockOptValue::Int(1));
        assert_eq!(opt(-5), SockOptValue::Int(-5));
        assert_eq!(opt(true), SockOptValue::Int(1));
        assert_eq!(opt(false), SockOptValue::Int(0));
        assert_eq!(
            opt(b"\x01\x00\x00\x00"),
            SockOptValue::Bytes(vec![1, 0, 0, 0])
        );
        assert_eq!(opt(&[1u8][..]), SockOptValue::Bytes(vec![1]));
        assert_eq!(opt(vec![0u8, 1]), SockOptValue::Bytes(vec![0, 1]));
    }

    #[test]
    fn sockopt_to_wit() {
        assert!(matches!(
            SockOptValue::Int(3).to_wit(),
            wit::SockoptValue::Int(3)
        ));
        match SockOptValue::Bytes(vec![1, 2]).to_wit() {
            wit::SockoptValue::Bytes(b) => assert_eq!(b, [1, 2]),
            wit::SockoptValue::Int(_) => panic!("bytes became an int"),
        }
    }

    fn ahead(bytes: &[u8]) -> Ahead {
        Ahead {
            data: Rc::new(bytes.to_vec()),
            pos: 0,
        }
    }

    #[test]
    fn ahead_serves_whole_lines_only() {
        let mut a = ahead(b"ab\ncd\nef");
        assert_eq!(a.take_line(None).as_deref(), Some(&b"ab\n"[..]));
        assert_eq!(a.take_line(None).as_deref(), Some(&b"cd\n"[..]));
        // A partial line stays: the host assembles it.
        assert_eq!(a.take_line(None), None);
        assert_eq!(a.rest(), b"ef");
        assert_eq!(a.take_line(Some(1)).as_deref(), Some(&b"e"[..]));
        assert_eq!(a.take_line(Some(5)), None);
        assert_eq!(a.len(), 1);
        assert_eq!(a.advance(10), 1);
        assert_eq!((a.len(), a.rest()), (0, &b""[..]));
    }

    #[test]
    fn ahead_take_until_appends_to_the_callers_buffer() {
        let mut a = ahead(b"ab\ncd");
        let mut buf = b"x".to_vec();
        assert_eq!(a.take_until(b'\n', &mut buf), (true, 3));
        assert_eq!(buf, b"xab\n");
        assert_eq!(a.take_until(b'\n', &mut buf), (false, 2));
        assert_eq!(buf, b"xab\ncd");
        assert_eq!(a.take_until(b'\n', &mut buf), (false, 0));
    }

    #[test]
    fn ahead_take_line_str_as_std_read_line() {
        let mut a = ahead(b"one\n\xff\xfe\ntw\xc3\xa9\nrest");
        let mut s = String::from(">");
        assert_eq!(a.take_line_str(&mut s).unwrap().unwrap(), 4);
        assert_eq!(s, ">one\n");
        // Not UTF-8: used up, nothing appended.
        let err = a.take_line_str(&mut s).unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(s, ">one\n");
        assert_eq!(a.take_line_str(&mut s).unwrap().unwrap(), 5);
        assert_eq!(s, ">one\ntw\u{e9}\n");
        // No whole line: nothing taken.
        assert!(a.take_line_str(&mut s).is_none());
        assert_eq!(a.rest(), b"rest");
    }

    #[test]
    fn sizes_are_clamped() {
        assert_eq!(size_arg(0), 0);
        assert_eq!(size_arg(65536), 65536);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(size_arg(usize::MAX), u32::MAX);
    }
}
