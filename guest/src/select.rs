//! MicroPython's `uselect` (`select`): [`poll`] objects.
//!
//! ```no_run
//! use usocket::select::{self, POLLIN};
//!
//! # fn main() -> usocket::Result<()> {
//! let sock = usocket::socket(usocket::AF_INET, usocket::SOCK_STREAM, 0)?;
//! sock.connect(("127.0.0.1", 8080))?;
//! let mut p = select::poll();
//! p.register(&sock, POLLIN);
//! for (s, revents) in p.poll(1000)? {
//!     if revents & POLLIN != 0 {
//!         println!("{:?}", s.recv(100)?);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;

use crate::bindings::usocket::net::usocket as wit;
use crate::error::{OSError, Result};
use crate::socket::Socket;

// MicroPython's `uselect` poll bits (`u32`), defined once in `usocket-abi`. `POLL_CLOSED` (a
// locally closed socket) has no MicroPython name; it is here so that code need not write its
// number.
pub use usocket_abi::{POLL_CLOSED, POLLERR, POLLHUP, POLLIN, POLLOUT};

/// `select.poll()`: a new, empty poller.
pub fn poll() -> Poll {
    Poll::default()
}

/// MicroPython's poll object: a list of registered sockets, each with an event mask.
///
/// A socket is identified by its host socket, so any handle of it (a clone, the result of
/// [`makefile`](Socket::makefile)) names the same entry. The poller keeps a handle of every
/// registered socket, and [`poll`](Poll::poll) returns those handles.
#[derive(Debug, Default)]
pub struct Poll {
    /// In registration order, the order `poll` reports in.
    entries: Vec<(Socket, u32)>,
    /// Where each registered socket is in `entries`: a server that registers a client again
    /// after serving it finds it at once among thousands.
    index: HashMap<Socket, usize>,
}

impl Poll {
    fn position(&self, sock: &Socket) -> Option<usize> {
        self.index.get(sock).copied()
    }

    /// `register(sock, mask)`: adds `sock`, or replaces its mask if it is already registered.
    /// `mask` is made of [`POLLIN`] and [`POLLOUT`].
    pub fn register(&mut self, sock: &Socket, mask: u32) {
        match self.position(sock) {
            Some(i) => self.entries[i].1 = mask,
            None => {
                self.index.insert(sock.clone(), self.entries.len());
                self.entries.push((sock.clone(), mask));
            }
        }
    }

    /// `register(sock)`: [`register`](Poll::register) with MicroPython's default mask,
    /// `POLLIN | POLLOUT`.
    pub fn register_default(&mut self, sock: &Socket) {
        self.register(sock, POLLIN | POLLOUT);
    }

    /// `modify(sock, mask)`: changes the mask of a registered socket.
    ///
    /// # Errors
    ///
    /// ENOENT if `sock` is not registered.
    pub fn modify(&mut self, sock: &Socket, mask: u32) -> Result<()> {
        let i = self
            .position(sock)
            .ok_or(OSError::new(crate::errno::ENOENT))?;
        self.entries[i].1 = mask;
        Ok(())
    }

    /// `unregister(sock)`: removes `sock`; does nothing if it is not registered.
    pub fn unregister(&mut self, sock: &Socket) {
        if let Some(i) = self.index.remove(sock) {
            self.entries.remove(i);
            // The ones after it moved up by one.
            for (s, _) in &self.entries[i..] {
                if let Some(at) = self.index.get_mut(s) {
                    *at -= 1;
                }
            }
        }
    }

    /// `poll(timeout_ms)`: waits until a registered socket is ready or `timeout_ms`
    /// milliseconds pass (negative: forever, MicroPython's `poll()` / `poll(None)`; 0: do not
    /// wait), and returns `(socket, revents)` for each ready socket in registration order, or
    /// an empty list on timeout.
    ///
    /// `revents` may hold [`POLLERR`], [`POLLHUP`] and [`POLL_CLOSED`] even when the mask
    /// did not ask for them. Bytes held in a `BufRead` cache or `readline`'s read-ahead count as
    /// [`POLLIN`].
    ///
    /// # Errors
    ///
    /// EINVAL (more sockets than the host accepts).
    pub fn poll(&mut self, timeout_ms: i32) -> Result<Vec<(Socket, u32)>> {
        let cached: Vec<bool> = self
            .entries
            .iter()
            .map(|(s, mask)| {
                mask & POLLIN != 0 && (s.inner.peeked.get() > 0 || s.inner.ahead.borrow().len() > 0)
            })
            .collect();
        // Readable already: only ask the host for what else is ready now.
        let timeout_ms = if cached.contains(&true) {
            0
        } else {
            timeout_ms
        };
        let list: Vec<(&wit::Socket, u32)> = self
            .entries
            .iter()
            .map(|(s, mask)| (&s.inner.sock, *mask))
            .collect();
        let revents = wit::poll(&list, timeout_ms).map_err(OSError::new)?;
        Ok(self
            .entries
            .iter()
            .zip(revents)
            .zip(cached)
            .filter_map(|((entry, revents), cached)| {
                let revents = if cached { revents | POLLIN } else { revents };
                (revents != 0).then(|| (entry.0.clone(), revents))
            })
            .collect())
    }

    /// `ipoll(timeout_ms, flags)`: as [`poll`](Poll::poll). With `flags & 1` (one-shot),
    /// each reported socket's mask becomes 0 until [`modify`](Poll::modify) sets it again
    /// (POLLERR, POLLHUP and POLL_CLOSED are still reported for it).
    pub fn ipoll(&mut self, timeout_ms: i32, flags: u32) -> Result<Vec<(Socket, u32)>> {
        let ready = self.poll(timeout_ms)?;
        if flags & 1 != 0 {
            for (sock, _) in &ready {
                if let Some(i) = self.position(sock) {
                    self.entries[i].1 = 0;
                }
            }
        }
        Ok(ready)
    }
}
