//! `std::io::{Read, Write, BufRead}` for [`Socket`].
//!
//! Received bytes are either still queued on the host or in the socket's read-ahead (see
//! `Ahead` in `socket.rs`): bytes the host lent the guest library, the true head of the
//! stream, given back with `unread` before any other receiving call. The MicroPython methods,
//! the `std::io` traits and every handle of a socket can therefore be mixed without losing or
//! reordering anything.
//!
//! Stream sockets:
//!
//! - `BufRead::fill_buf` shows the read-ahead (shared by all handles of the socket, not
//!   copied). Only when it is empty does it make a host call: one `read-ahead` that returns
//!   as soon as at least one byte has arrived, with up to 64 KiB that the host already
//!   received (the host's buffer, handed over whole).
//! - `BufRead::consume(n)` uses `n` of those bytes without a host call (except to tell the
//!   host, with an empty `unread`, once all of them are used).
//! - `read_line`/`read_until` work on the read-ahead directly (see `scan.rs`: one pass finds
//!   a line's end, checks it and copies it) and make no host call and no allocation per
//!   line: one host call per refill of the read-ahead.
//! - `Read::read` takes from the read-ahead if it holds anything, else it is the host's
//!   `recv`.
//!
//! Datagram sockets (the host lends no read-ahead there): `fill_buf` *peeks*
//! (`recv(65536, MSG_PEEK)`) one datagram and keeps a copy, which `consume` discards on the
//! host (one `read`) once all of it is consumed.
//!
//! Every receiving call (`recv`, `read`, `readline`, `readinto`, `recvfrom`, `Read::read`,
//! `consume`, `close`, ... on any handle) marks every handle's view stale (a shared epoch
//! counter): `consume` after a stale `fill_buf` discards nothing.

use std::io::{self, BufRead, Read, Write};
use std::rc::Rc;

use crate::error::OSError;
use crate::socket::{Inner, Peek, Socket, invalid_utf8, size_arg};
use crate::{MSG_PEEK, errno};

/// How much `fill_buf` peeks at once on a datagram socket.
const PEEK_MAX: u32 = 65536;

impl Peek {
    fn clear(&mut self) {
        *self = Peek::default();
    }
}

impl Inner {
    /// `Read::read` from the read-ahead, if it holds anything (stream sockets only).
    fn read_ahead(&self, buf: &mut [u8]) -> Option<usize> {
        let n = {
            let mut ahead = self.ahead.borrow_mut();
            let n = ahead.len().min(buf.len());
            if n == 0 {
                return None;
            }
            buf[..n].copy_from_slice(&ahead.rest()[..n]);
            ahead.advance(n)
        };
        self.used_ahead();
        Some(n)
    }

    /// Refills the empty read-ahead for `fill_buf`. `Ok(false)`: non-blocking, nothing there
    /// (at end of stream it stays empty: `Ok(true)`).
    fn refill_whole(&self) -> io::Result<bool> {
        Ok(self.refill()?.is_some())
    }
}

impl Socket {
    /// This handle's cached datagram, if the cache is valid and not empty.
    fn cached(&self) -> Option<&[u8]> {
        let peek = &self.peek;
        let data = peek.data.as_ref()?;
        (peek.epoch == self.inner.epoch.get() && peek.pos < data.len()).then(|| &data[peek.pos..])
    }

    /// `fill_buf` on a datagram socket: peeks at the head datagram if none is cached.
    fn fill_datagram(&mut self) -> io::Result<&[u8]> {
        if self.cached().is_none() {
            self.peek.clear();
            let data = self
                .inner
                .receiving()?
                .recv(PEEK_MAX, MSG_PEEK)
                .map_err(OSError::new)?;
            self.inner.peeked.set(data.len());
            self.peek = Peek {
                data: Some(Rc::new(data)),
                pos: 0,
                epoch: self.inner.epoch.get(),
            };
        }
        let peek = &self.peek;
        Ok(peek.data.as_ref().map_or(&[][..], |d| &d[peek.pos..]))
    }

    /// `consume` on a datagram socket.
    fn consume_datagram(&mut self, amt: usize) {
        let Some(cached) = self.cached() else {
            self.peek.clear();
            return;
        };
        self.peek.pos += amt.min(cached.len());
        let len = self.peek.data.as_ref().map_or(0, |d| d.len());
        let left = len - self.peek.pos;
        self.inner.peeked.set(left);
        if left == 0 {
            // The whole datagram was consumed: take it off the host's queue.
            let _ = self.inner.sock.read(Some(size_arg(len)));
            self.inner.invalidate();
            self.peek.clear();
        }
    }
}

/// `Read::read` is the host's `recv(buf.len())`: 1..len bytes as they come, `Ok(0)` at end of
/// stream; non-blocking with nothing available is `WouldBlock`, a timeout `TimedOut` (see
/// `From<OSError> for io::Error`). On a stream socket, bytes in the read-ahead (left by
/// `readline` or `BufRead`) are returned from it without a host call.
impl Read for &Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(n) = self.inner.read_ahead(buf) {
            return Ok(n);
        }
        let data = Socket::recv(self, buf.len())?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok(n)
    }
}

/// As `Read for &Socket`, except that on a datagram socket the bytes of this handle's
/// `BufRead` cache are returned from it (and consumed on the host), as `std::io::BufReader`
/// does.
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

/// Buffered reading over the socket's read-ahead, with no guest buffer to wrap it in: see
/// the module docs. `read_line` and `read_until` make no host call and no allocation per
/// line (the caller's `String` or `Vec` is reused), one host call per 64 KiB at most.
///
/// `fill_buf` returns an empty slice at end of stream (and for an empty datagram); on a
/// non-blocking or timed socket it fails like `recv` (`WouldBlock`, `TimedOut`), having taken
/// nothing. As with `std::io::BufReader`, `read_line` that fails after part of a line was
/// received has appended that part to the caller's buffer.
///
/// If another handle (or an inherent method) receives between `fill_buf` and `consume`, the
/// view is stale and `consume` discards nothing: the bytes `fill_buf` showed may then be
/// returned again.
impl BufRead for Socket {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.inner.datagram {
            return self.fill_datagram();
        }
        if self.inner.ahead.borrow().len() == 0 && !self.inner.refill_whole()? {
            return Err(would_block());
        }
        let ahead = self.inner.ahead.borrow();
        // Share the read-ahead's bytes (one `Rc` clone per refill, not per call).
        if !self
            .peek
            .data
            .as_ref()
            .is_some_and(|d| Rc::ptr_eq(d, &ahead.data))
        {
            self.peek.data = Some(Rc::clone(&ahead.data));
        }
        self.peek.pos = ahead.pos;
        self.peek.epoch = self.inner.epoch.get();
        drop(ahead);
        let peek = &self.peek;
        Ok(peek.data.as_ref().map_or(&[][..], |d| &d[peek.pos..]))
    }

    fn consume(&mut self, amt: usize) {
        if self.inner.datagram {
            return self.consume_datagram(amt);
        }
        if self.peek.epoch != self.inner.epoch.get() || amt == 0 {
            return;
        }
        // The view is current: the read-ahead is what `fill_buf` showed.
        self.inner.ahead.borrow_mut().advance(amt);
        self.inner.used_ahead();
        self.peek.epoch = self.inner.epoch.get();
    }

    /// As std's: bytes up to and including `byte`, or to end of stream. On a stream socket
    /// it works on the read-ahead directly (no `fill_buf`/`consume` per line) and refills it
    /// with one host call when it is used up.
    fn read_until(&mut self, byte: u8, buf: &mut Vec<u8>) -> io::Result<usize> {
        if self.inner.datagram {
            return read_until_generic(self, byte, buf);
        }
        let mut read = 0;
        loop {
            let (found, n) = self.inner.take_until(byte, buf);
            read += n;
            if found {
                return Ok(read);
            }
            // The read-ahead is used up (errors leave what was read in `buf`, as std's do).
            if self.inner.refill()?.ok_or_else(would_block)? == 0 {
                return Ok(read); // end of stream
            }
        }
    }

    /// As std's: the next line appended to `buf`, which the caller can reuse (clear it
    /// between lines), unlike [`Socket::readline`]'s new `Vec` per line. A line the
    /// read-ahead holds is appended straight from it; only a line that spans two refills
    /// goes through a temporary buffer.
    #[inline]
    fn read_line(&mut self, buf: &mut String) -> io::Result<usize> {
        if !self.inner.datagram
            && let Some(result) = self.inner.take_line_str(buf)
        {
            return result;
        }
        read_line_slow(self, buf)
    }
}

/// `read_line` when the read-ahead holds no whole line (or on a datagram socket): through
/// `read_until` and a temporary buffer.
#[inline(never)]
fn read_line_slow(r: &mut Socket, buf: &mut String) -> io::Result<usize> {
    let mut line = Vec::new();
    let result = r.read_until(b'\n', &mut line);
    // As std's: what was read is appended if it is UTF-8, even when an error follows.
    match core::str::from_utf8(&line) {
        Ok(text) => {
            buf.push_str(text);
            result
        }
        Err(_) => result.and_then(|_| Err(invalid_utf8())),
    }
}

/// `WouldBlock` as the crate's other calls give it (an `OSError(EAGAIN)` inside).
fn would_block() -> io::Error {
    OSError::new(errno::EAGAIN).into()
}

/// std's `read_until` over `fill_buf` and `consume` (an overridden trait method cannot call
/// the default one).
fn read_until_generic(r: &mut Socket, byte: u8, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut read = 0;
    loop {
        let (done, used) = {
            let available = r.fill_buf()?;
            match memchr::memchr(byte, available) {
                Some(i) => {
                    buf.extend_from_slice(&available[..=i]);
                    (true, i + 1)
                }
                None => {
                    buf.extend_from_slice(available);
                    (false, available.len())
                }
            }
        };
        r.consume(used);
        read += used;
        if done || used == 0 {
            return Ok(read);
        }
    }
}
