//! `std::io::{Read, Write, BufRead}` for [`Socket`].
//!
//! The host stays the owner of received bytes (`readline`'s read-ahead is given back before
//! any of these calls, see `socket.rs`), so that the MicroPython methods, the
//! `std::io` traits and every handle of a socket can be mixed without losing or reordering
//! anything:
//!
//! - `BufRead::fill_buf` *peeks* (`recv(65536, MSG_PEEK)`) only when the handle's cache is
//!   empty or stale, and keeps a copy: the bytes stay queued on the host.
//! - `BufRead::consume(n)` discards exactly those `n` bytes on the host with one `read(n)`
//!   (they are queued, so it never waits). On a datagram socket the cache holds one datagram,
//!   which is discarded on the host once all of it is consumed.
//! - Every other receiving call (`recv`, `read`, `readline`, `readinto`, `recvfrom`,
//!   `Read::read`, `close`, ... on any handle) first marks every cache of the socket stale
//!   (a shared epoch counter): a cache is only a mirror of the head of the host's queue, so
//!   dropping it loses nothing.

use std::io::{self, BufRead, Read, Write};

use crate::MSG_PEEK;
use crate::error::OSError;
use crate::socket::{Peek, Socket, size_arg};

/// How much `fill_buf` peeks at once.
const PEEK_MAX: u32 = 65536;

impl Peek {
    fn clear(&mut self) {
        self.data = Vec::new();
        self.pos = 0;
    }
}

impl Socket {
    /// This handle's cached bytes, if the cache is valid and not empty.
    fn cached(&self) -> Option<&[u8]> {
        let peek = &self.peek;
        (peek.epoch == self.inner.epoch.get() && peek.pos < peek.data.len())
            .then(|| &peek.data[peek.pos..])
    }
}

/// `Read::read` is the host's `recv(buf.len())`: 1..len bytes as they come, `Ok(0)` at end of
/// stream; non-blocking with nothing available is `WouldBlock`, a timeout `TimedOut` (see
/// `From<OSError> for io::Error`).
impl Read for &Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let data = Socket::recv(self, buf.len())?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok(n)
    }
}

/// As `Read for &Socket`, except that bytes already in this handle's `BufRead` cache are
/// returned from it (and consumed on the host), as `std::io::BufReader` does.
impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(cached) = self.cached() else {
            return Read::read(&mut &*self, buf);
        };
        let n = cached.len().min(buf.len());
        buf[..n].copy_from_slice(&cached[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// `Write::write` is the host's `send`: it writes what fits now and returns the count, and
/// fails only if nothing was written (`WouldBlock` when non-blocking, `TimedOut` when timed),
/// as `io::Write` requires. (MicroPython's `write`, the inherent method, may fail after a
/// prefix was sent on a timed socket.) `flush` does nothing: the host buffers nothing.
impl Write for &Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = Socket::send(self, buf)?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// As `Write for &Socket`.
impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(&mut &*self, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Buffered reading without a guest-side buffer: see the module docs. `fill_buf` returns an
/// empty slice at end of stream (and for an empty datagram); on a non-blocking or timed
/// socket it fails like `recv` (`WouldBlock`, `TimedOut`).
///
/// If another handle (or an inherent method) receives between `fill_buf` and `consume`, the
/// cache is stale and `consume` discards nothing: the bytes `fill_buf` showed may then be
/// returned again.
impl BufRead for Socket {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.cached().is_none() {
            self.peek.clear();
            self.inner.give_back()?;
            let data = self
                .inner
                .sock
                .recv(PEEK_MAX, MSG_PEEK)
                .map_err(OSError::new)?;
            self.inner.peeked.set(data.len());
            self.peek = Peek {
                data,
                pos: 0,
                epoch: self.inner.epoch.get(),
            };
        }
        Ok(&self.peek.data[self.peek.pos..])
    }

    fn consume(&mut self, amt: usize) {
        let Some(cached) = self.cached() else {
            self.peek.clear();
            return;
        };
        let amt = amt.min(cached.len());
        if amt == 0 {
            return;
        }
        if self.inner.datagram {
            self.peek.pos += amt;
            let left = self.peek.data.len() - self.peek.pos;
            self.inner.peeked.set(left);
            if left == 0 {
                // The whole datagram was consumed: take it off the host's queue.
                let len = size_arg(self.peek.data.len());
                let _ = self.inner.sock.read(Some(len));
                self.inner.invalidate();
                self.peek.clear();
            }
            return;
        }
        let result = self.inner.sock.read(Some(size_arg(amt)));
        self.inner.invalidate();
        match result {
            // The expected case: exactly the cached bytes left the host's queue, and the rest
            // of the cache still mirrors its head.
            Ok(Some(data)) if data.len() == amt => {
                self.peek.pos += amt;
                self.peek.epoch = self.inner.epoch.get();
                self.inner.peeked.set(self.peek.data.len() - self.peek.pos);
            }
            _ => self.peek.clear(),
        }
    }
}
