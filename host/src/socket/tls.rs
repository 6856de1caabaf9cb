//! A stream's TLS layer: rustls between the kernel socket and the host's receive queue.
//!
//! ```text
//!   guest ── plaintext ──> writer ─ rustls ─ outgoing ciphertext ──> kernel
//!   guest <── rx queue <── plaintext ─ rustls ─ incoming ciphertext <── kernel
//! ```
//!
//! Every call works within the socket's deadline like its plain counterpart: it moves
//! ciphertext only as far as its answer needs (a read drives the handshake and reads records
//! until plaintext comes; a write sends what it encrypted). What the host holds per TLS socket
//! is bounded: one kernel read of incoming ciphertext ([`CIPHER_CHUNK`]), rustls's own record
//! buffers, and at most [`BUFFER_LIMIT`] of outgoing records. Plaintext goes straight to the
//! socket's receive queue, where the buffer limits count it as for a plain socket.
//!
//! Failures are sticky: after a TLS error every later call reports the same errno (a broken
//! TLS stream cannot be resumed).

use std::io::{self, BufRead, Write};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rustls::Connection;

use super::os::{Deadline, Os};
use crate::errno::{Errno, SockResult};
use crate::tls::errno_of;

/// Incoming ciphertext read from the kernel at once.
const CIPHER_CHUNK: usize = 64 * 1024;
/// Outgoing plaintext and records rustls may hold (it accepts no more plaintext beyond it).
const BUFFER_LIMIT: usize = 64 * 1024;
/// The most kernel reads a close makes to take in records the guest never asked for.
const DRAIN_READS: usize = 16;

/// What `start-tls` asks for (the WIT's `tls-params`, as the host keeps it).
#[derive(Clone, Debug)]
pub(crate) struct TlsParams {
    pub(crate) server_side: bool,
    pub(crate) server_hostname: Option<String>,
    /// Verify the server's certificate (CERT_REQUIRED / CERT_OPTIONAL).
    pub(crate) verify: bool,
    pub(crate) cadata: Option<Vec<u8>>,
    pub(crate) cert: Option<Vec<u8>>,
    pub(crate) key: Option<Vec<u8>>,
}

impl Default for TlsParams {
    /// A verifying client with the host's roots: what an `IPPROTO_SEC` socket's connect does.
    fn default() -> Self {
        TlsParams {
            server_side: false,
            server_hostname: None,
            verify: true,
            cadata: None,
            cert: None,
            key: None,
        }
    }
}

/// One connection's TLS session. See the [module docs](self).
pub(crate) struct Tls {
    conn: Connection,
    /// Ciphertext from the kernel that rustls has not taken yet (`incoming[taken..]`).
    incoming: Vec<u8>,
    taken: usize,
    /// Records rustls made that the kernel has not taken yet (`outgoing[sent..]`).
    outgoing: Vec<u8>,
    sent: usize,
    /// Plaintext rustls holds for the receive queue.
    plaintext: usize,
    /// The kernel's stream ended (rustls has been told).
    eof: bool,
    /// The first TLS failure, with rustls's reason; every later call reports it.
    failed: Option<(Errno, String)>,
    /// Whether the failure was audited.
    audited: bool,
    /// close_notify was sent.
    closed: bool,
}

impl Tls {
    /// A session over `conn`; `received`: bytes of the stream that came before it started.
    pub(crate) fn new(mut conn: Connection, received: Vec<u8>) -> Tls {
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Tls {
            conn,
            incoming: received,
            taken: 0,
            outgoing: Vec::new(),
            sent: 0,
            plaintext: 0,
            eof: false,
            failed: None,
            audited: false,
            closed: false,
        }
    }

    /// The failure, the first time it is asked for after the session failed: its errno and
    /// reason in words (for the audit).
    pub(crate) fn unaudited_failure(&mut self) -> Option<(Errno, String)> {
        if self.audited {
            return None;
        }
        let failure = self.failed.clone()?;
        self.audited = true;
        Some(failure)
    }

    fn check(&self) -> SockResult<()> {
        match &self.failed {
            Some((errno, _)) => Err(*errno),
            None => Ok(()),
        }
    }

    fn fail(&mut self, errno: Errno, reason: String) -> Errno {
        self.failed.get_or_insert((errno, reason)).0
    }

    /// The peer's end-entity certificate (DER), once the handshake has finished.
    pub(crate) fn peer_certificate(&self) -> Option<Vec<u8>> {
        if self.conn.is_handshaking() {
            return None;
        }
        let certs = self.conn.peer_certificates()?;
        certs.first().map(|c| c.to_vec())
    }

    /// Whether a read would find something now without the kernel: plaintext, the end of
    /// the stream, a failure, or records rustls has not taken yet (bytes received before
    /// `start-tls`: the kernel has already said all it will about them) (what makes `poll`
    /// report POLLIN).
    pub(crate) fn has_news(&self) -> bool {
        self.plaintext > 0 || self.eof || self.failed.is_some() || self.taken < self.incoming.len()
    }

    /// Whether the handshake waits for the peer: its next step needs records from the kernel
    /// (so a guest waiting to write must wait for the socket to be readable).
    pub(crate) fn waits_to_read(&self) -> bool {
        self.failed.is_none()
            && self.conn.is_handshaking()
            && !self.conn.wants_write()
            && self.sent == self.outgoing.len()
    }

    /// Whether rustls holds plaintext nobody read, or records not yet looked at.
    pub(crate) fn has_unread(&self) -> bool {
        self.plaintext > 0 || self.taken < self.incoming.len()
    }

    /// Takes into rustls what the kernel already received, without waiting (a bounded number
    /// of reads): so that a close sees records the guest never asked for (a server's session
    /// tickets), which would otherwise make the kernel reset the connection.
    pub(crate) fn drain_now(&mut self, os: &Os) {
        for _ in 0..DRAIN_READS {
            if self.eof || self.failed.is_some() || self.plaintext > 0 {
                return;
            }
            if !matches!(now(self.read_records(os, Deadline::Now)), Some(Ok(()))) {
                return;
            }
        }
    }

    /// A deliberate close: records the host still holds go out, then close_notify, within
    /// `deadline` (what does not fit by then is dropped).
    pub(crate) async fn finish(&mut self, os: &Os, deadline: Deadline) {
        if self.failed.is_some() || self.closed {
            return;
        }
        self.closed = true;
        if self.flush(os, deadline).await.is_err() {
            return;
        }
        self.conn.send_close_notify();
        let _ = self.flush(os, deadline).await;
    }

    /// Runs the handshake to its end within `deadline` (non-blocking: as far as it goes
    /// without waiting, then EAGAIN).
    pub(crate) async fn handshake(&mut self, os: &Os, deadline: Deadline) -> SockResult<()> {
        self.check()?;
        while self.conn.is_handshaking() {
            match self.flush(os, deadline).await {
                Ok(()) => {}
                Err(Errno::EPIPE | Errno::ECONNRESET) => {
                    return Err(self.fail(
                        Errno::ECONNRESET,
                        "the peer closed the connection during the handshake".into(),
                    ));
                }
                Err(e) => return Err(e),
            }
            if !self.conn.is_handshaking() {
                break;
            }
            if self.eof {
                return Err(self.fail(
                    Errno::ECONNRESET,
                    "the peer closed the connection during the handshake".into(),
                ));
            }
            self.read_records(os, deadline).await?;
        }
        // The last flight (a client's Finished) goes out before the handshake counts as done.
        self.flush(os, deadline).await
    }

    /// Moves up to `max` bytes of plaintext to `out` (after its length): at least one byte,
    /// or 0 at a clean end of stream (the peer's close_notify). A stream that ends without
    /// close_notify is ECONNRESET (it may have been cut short). Waits as `deadline` allows.
    pub(crate) async fn recv(
        &mut self,
        os: &Os,
        out: &mut Vec<u8>,
        max: usize,
        deadline: Deadline,
    ) -> SockResult<usize> {
        self.check()?;
        loop {
            if let Some(n) = self.take_plaintext(out, max)? {
                return Ok(self.take_more(out, n, max));
            }
            // Handshake messages or alerts rustls wants to send go out before waiting for
            // the answer to them. A full send buffer does not stop a read, nor does a peer
            // that reset the connection (EPIPE): the read then finds what it sent before and
            // the end of the stream.
            match self.flush(os, deadline).await {
                Ok(()) | Err(Errno::EAGAIN | Errno::EPIPE | Errno::ECONNRESET) => {}
                Err(e) => return Err(e),
            }
            self.read_records(os, deadline).await?;
        }
    }

    /// Encrypts up to [`BUFFER_LIMIT`] bytes of `data` and sends the records: the plaintext
    /// count taken (at least one byte unless `data` is empty). Blocking: the records are in
    /// the kernel on return. Non-blocking or timed out: records the kernel did not take yet
    /// wait in the host and go out first on the next call.
    pub(crate) async fn send(
        &mut self,
        os: &Os,
        data: &[u8],
        deadline: Deadline,
    ) -> SockResult<usize> {
        self.check()?;
        if self.conn.is_handshaking() {
            self.handshake(os, deadline).await?;
        }
        self.flush(os, deadline).await?;
        let n = self
            .conn
            .writer()
            .write(&data[..data.len().min(BUFFER_LIMIT)])
            .map_err(|_| Errno::EIO)?;
        match self.flush(os, deadline).await {
            Ok(()) => Ok(n),
            // Taken: the records go out with the next call.
            Err(Errno::EAGAIN | Errno::ETIMEDOUT) if n > 0 => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// Sends close_notify (unless [`Tls::finish`] did), as far as the kernel takes it now.
    pub(crate) fn close(&mut self, os: &Os) {
        if self.failed.is_none() && !self.closed {
            self.closed = true;
            self.conn.send_close_notify();
        }
        let _ = now(self.flush(os, Deadline::Now));
    }

    /// After `n` bytes were taken: more from records already read from the kernel, up to
    /// `max` in all (a kernel read holds several records; no syscall here).
    fn take_more(&mut self, out: &mut Vec<u8>, mut n: usize, max: usize) -> usize {
        while n > 0 && n < max && self.taken < self.incoming.len() {
            // A failure is kept for the next call: what was taken is returned first.
            if self.process().is_err() {
                break;
            }
            match self.take_plaintext(out, max - n) {
                Ok(Some(more)) if more > 0 => n += more,
                _ => break,
            }
        }
        n
    }

    /// Plaintext rustls holds, up to `max`, appended to `out`: `None` if there is none yet.
    fn take_plaintext(&mut self, out: &mut Vec<u8>, max: usize) -> SockResult<Option<usize>> {
        let mut reader = self.conn.reader();
        let mut n = 0;
        // Straight from rustls's buffers (`fill_buf`: no zeroed buffer to read into).
        let ended = loop {
            match reader.fill_buf() {
                Ok([]) => break n == 0, // the end (close_notify), if nothing came before it
                Ok(chunk) => {
                    let take = chunk.len().min(max - n);
                    out.extend_from_slice(&chunk[..take]);
                    reader.consume(take);
                    n += take;
                    if n == max {
                        break false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(_) if n > 0 => break false, // the cut is reported by the next call
                Err(_) => {
                    return Err(self.fail(
                        Errno::ECONNRESET,
                        "the peer ended the stream without close_notify".into(),
                    ));
                }
            }
        };
        self.plaintext = self.plaintext.saturating_sub(n);
        if n == 0 && !ended {
            self.plaintext = 0;
            return Ok(None);
        }
        Ok(Some(n))
    }

    /// Reads ciphertext from the kernel (at least one byte, or the end of the stream) and
    /// hands it to rustls.
    async fn read_records(&mut self, os: &Os, deadline: Deadline) -> SockResult<()> {
        if self.taken == self.incoming.len() {
            self.taken = 0;
            self.incoming = match os.recv_chunk(CIPHER_CHUNK, deadline).await {
                Ok(data) if !data.is_empty() => data,
                Ok(_) | Err(Errno::ECONNRESET) => {
                    self.eof = true;
                    // Tells rustls the stream ended: a read then says whether it ended cleanly.
                    let _ = self.conn.read_tls(&mut &[][..]);
                    Vec::new()
                }
                Err(e) => {
                    self.incoming = Vec::new();
                    return Err(e);
                }
            };
        }
        let result = self.process();
        if self.taken == self.incoming.len() {
            // All taken: an idle connection holds no buffer of its own.
            self.incoming = Vec::new();
            self.taken = 0;
        }
        result
    }

    /// Feeds incoming ciphertext to rustls while it has no plaintext waiting (it takes no
    /// more then), processing each piece.
    fn process(&mut self) -> SockResult<()> {
        loop {
            match self.conn.process_new_packets() {
                Ok(state) => self.plaintext = state.plaintext_bytes_to_read(),
                Err(e) => {
                    let errno = errno_of(&e);
                    return Err(self.fail(errno, e.to_string()));
                }
            }
            if self.plaintext > 0 || self.taken == self.incoming.len() {
                return Ok(());
            }
            match self.conn.read_tls(&mut &self.incoming[self.taken..]) {
                Ok(n) if n > 0 => self.taken += n,
                // rustls takes no more with no plaintext to read first: it would never move.
                _ => {
                    return Err(self.fail(Errno::EPROTO, "TLS records rustls cannot take".into()));
                }
            }
        }
    }

    /// Sends the records rustls has made, within `deadline` (non-blocking: what the kernel
    /// takes now, then EAGAIN if some are left).
    async fn flush(&mut self, os: &Os, deadline: Deadline) -> SockResult<()> {
        loop {
            if self.sent == self.outgoing.len() {
                self.outgoing.clear();
                self.sent = 0;
                while self.conn.wants_write() {
                    if self.conn.write_tls(&mut self.outgoing).is_err() {
                        break;
                    }
                }
                if self.outgoing.is_empty() {
                    // Everything sent: an idle connection holds no buffer of its own.
                    self.outgoing = Vec::new();
                    return Ok(());
                }
            }
            let n = os.send(&self.outgoing[self.sent..], deadline).await?;
            self.sent += n;
        }
    }
}

/// Runs a future that does not wait (a non-blocking socket call) to its end, if it gets
/// there in one poll.
fn now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}
