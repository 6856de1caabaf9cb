//! Stream (TCP) sockets: their states, and MicroPython's stream calls over them.
//!
//! ```text
//!            bind                listen
//!   Fresh ─────────> Bound ─────────────> Listening
//!     │  listen (implicit bind)              ^
//!     ├──────────────────────────────────────┘
//!     │ connect                 handshake done
//!     ├──────────> Connecting ─────────────────> Connected
//!     │  (from Bound too)  │ failed: back to Bound   ^
//!     └────────────────────┼─────────────────────────┘ connect done at once
//!   any state ── close ──> Closed (no descriptor: every call but close is EBADF)
//! ```
//!
//! Connected sockets keep a host-side [`RxQueue`], so `read(n)`, `readline()`, `read()` and
//! `write()` are one host call each and a timed-out read loses nothing.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Waker};

use rustix::net::RecvFlags;
use usocket_abi::{POLL_CLOSED, POLLERR, POLLIN, POLLOUT};

use super::os::{Deadline, Kind, Look, OptValue, Os, Timeout};
use super::rx_queue::RxQueue;
use super::tls::{Tls, TlsParams};
use super::{MAX_RECV, Phase, READ_CHUNK};
use crate::addr::{self, Family, Purpose};
use crate::ctx::UsocketCtx;
use crate::errno::{Errno, SockResult};
use crate::gate::uses;
use crate::policy::Use;
use crate::quota::{Buffered, Direction, Quota};

/// Where a stream socket is in its life, with what it holds there.
enum State {
    /// Just created.
    Fresh(Os),
    /// Has a local address (explicit `bind`).
    Bound(Os),
    /// Accepting connections; stays here until closed. Holds the connections `poll` (or a
    /// non-blocking `accept`) already took from the kernel and the policy admitted.
    Listening(Os, Admitted),
    /// A non-blocking (or timed-out) connect is under way.
    Connecting(Os),
    /// Has a peer, and received bytes in the host.
    Connected(Os, Rx),
    /// After `close()`.
    Closed,
}

impl State {
    fn phase(&self) -> Phase {
        match self {
            State::Fresh(_) => Phase::Fresh,
            State::Bound(_) => Phase::Bound,
            State::Listening(..) => Phase::Listening,
            State::Connecting(_) => Phase::Connecting,
            State::Connected(..) => Phase::Connected,
            State::Closed => Phase::Closed,
        }
    }

    fn os(&self) -> SockResult<&Os> {
        match self {
            State::Fresh(os)
            | State::Bound(os)
            | State::Listening(os, _)
            | State::Connecting(os)
            | State::Connected(os, _) => Ok(os),
            State::Closed => Err(Errno::EBADF),
        }
    }
}

/// How much [`Stream::fill_probing`] asks the kernel for beyond what its caller wants.
#[derive(Clone, Copy)]
enum Probe {
    /// One byte more, where it fits: a read that gets all it asked for cannot tell whether
    /// the kernel has more, and the next one would make a syscall bound to fail; one that
    /// comes back short tells (see `Os::wait`). The extra byte waits in the queue like any
    /// other.
    OneMore,
    /// Just what was wanted: for a caller that hands out all it reads (the read-ahead), where
    /// a byte more would be left behind, to be split off its buffer and fetched by a host
    /// call of its own.
    Exact,
}

/// A connection's received bytes in the host: its receive queue, the read-ahead that
/// `readline-ahead` lent the guest library, and their share of the guest's host-buffered
/// total. Every change of the queue or the loan goes through here and updates the share.
///
/// The loan: bytes handed to the guest library count as unread (for `max_buffered`,
/// `max_buffered_total` and reset on close) until the library's next call on the socket that
/// receives, gives back (`unread`) or closes. By the WIT's protocol the library has by then
/// given back what it did not use, so the rest was used. A socket dropped with a loan
/// outstanding (the guest trapped, exited or ran out of time) resets its connection.
pub(crate) struct Rx {
    queue: RxQueue,
    lent: usize,
    share: Buffered,
    /// The connection's TLS session, once `start-tls` (or an `IPPROTO_SEC` connect) made it
    /// a TLS one: the queue then holds plaintext.
    tls: Option<Box<Tls>>,
}

impl Rx {
    fn new(quota: &Quota) -> Rx {
        Rx {
            queue: RxQueue::default(),
            lent: 0,
            share: quota.buffered(),
            tls: None,
        }
    }

    fn sync(&mut self) {
        self.share.set(self.queue.len() + self.lent);
    }

    /// Bytes held for this connection: queued, plus lent.
    fn held(&self) -> usize {
        self.share.held()
    }

    /// Whether a close now would leave received data unread.
    fn has_unread(&self) -> bool {
        self.queue.len() > 0 || self.lent > 0
    }

    /// The guest library's next call: what it did not give back of its loan, it used.
    fn settle(&mut self) {
        self.lent = 0;
        self.sync();
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let out = self.queue.take(n);
        self.sync();
        out
    }

    fn take_all(&mut self) -> Vec<u8> {
        let out = self.queue.take_all();
        self.sync();
        out
    }

    /// Takes `n` bytes as a loan to the guest library.
    fn lend(&mut self, n: usize) -> Vec<u8> {
        self.take_lending(0, n)
    }

    /// Takes the first `n` bytes, and up to `ahead` more after them as a loan to the guest
    /// library, in one buffer (without a copy when that is everything queued).
    fn take_lending(&mut self, n: usize, ahead: usize) -> Vec<u8> {
        let out = self.queue.take(n.saturating_add(ahead));
        self.lent += out.len().saturating_sub(n);
        self.sync();
        out
    }

    fn append(&mut self, data: Vec<u8>) {
        self.queue.append(data);
        self.sync();
    }

    /// See [`RxQueue::adopt`].
    fn adopt(&mut self, joined: Vec<u8>) {
        self.queue.adopt(joined);
        self.sync();
    }

    /// Puts `data` back in front, ending the loan.
    fn unread(&mut self, data: &[u8]) {
        self.lent = 0;
        self.queue.unread(data);
        self.sync();
    }
}

impl std::ops::Deref for Rx {
    type Target = RxQueue;
    fn deref(&self) -> &RxQueue {
        &self.queue
    }
}

impl std::ops::DerefMut for Rx {
    fn deref_mut(&mut self) -> &mut RxQueue {
        &mut self.queue
    }
}

/// How long closing a TLS connection may wait for the records the host holds to reach the
/// kernel (a non-blocking write can leave some).
const TLS_CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// The most bytes a look of `poll` takes into the host for a readable connection (see
/// [`Stream::prefetch`]): a request or a line, as a rule; a larger message's rest comes with
/// the guest's read.
const PREFETCH: usize = 16 * 1024;

/// The most connections a listener keeps admitted ahead of `accept`: one is enough to say
/// "readable", and each holds a descriptor outside the socket quota until accepted.
const MAX_ADMITTED: usize = 1;
/// The most pending connections one look at a listener takes from the kernel (a flood of
/// refused peers is worked through over several looks, never in one unbounded loop).
const MAX_LOOK: usize = 64;

/// A listener's connections taken from the kernel and admitted by the policy, waiting for
/// `accept`. Dropped with the listener, they are reset, as a kernel listener's pending
/// connections are when it closes.
#[derive(Default)]
pub(crate) struct Admitted(Mutex<VecDeque<(socket2::Socket, SocketAddr)>>);

impl Admitted {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(socket2::Socket, SocketAddr)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first admitted connection, with the slot `slot` gives it; `None` when there is
    /// none, and `slot`'s error (the connection staying) when it has no slot to give.
    fn pop_with<S>(
        &self,
        slot: impl FnOnce() -> SockResult<S>,
    ) -> SockResult<Option<(socket2::Socket, SocketAddr, S)>> {
        let mut waiting = self.lock();
        if waiting.is_empty() {
            return Ok(None);
        }
        let slot = slot()?;
        Ok(waiting.pop_front().map(|(conn, peer)| (conn, peer, slot)))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        for (conn, _) in self.lock().drain(..) {
            Os::refuse(conn);
        }
    }
}

pub(crate) struct Stream {
    pub(super) family: Family,
    pub(super) timeout: Timeout,
    state: State,
    /// TLS to start once the connection is up (`IPPROTO_SEC`, or `start-tls` while a
    /// non-blocking connect is pending).
    tls_on_connect: Option<TlsParams>,
    /// The connection was granted by a `tls` rule only: no plaintext may cross it (EACCES
    /// until TLS is on). The names that rule granted, for verification.
    tls_required: Option<Vec<String>>,
    /// TLS asked for before the connection was up could not start (its parameters were
    /// refused): every later call on the connection fails with this, none goes in plaintext.
    tls_refused: Option<Errno>,
}

impl Stream {
    pub(super) fn new(family: Family, os: Os) -> Stream {
        Stream {
            family,
            timeout: Timeout::Blocking,
            state: State::Fresh(os),
            tls_on_connect: None,
            tls_required: None,
            tls_refused: None,
        }
    }

    /// Makes this socket start TLS with `params` once connected (`IPPROTO_SEC`).
    pub(super) fn tls_on_connect(&mut self, params: TlsParams) {
        self.tls_on_connect = Some(params);
    }

    pub(super) fn phase(&self) -> Phase {
        self.state.phase()
    }

    pub(super) fn os(&self) -> SockResult<&Os> {
        self.state.os()
    }

    /// The one place the state changes: `next` gets the descriptor (a closed socket stays
    /// closed). Each transition is logged at debug level.
    fn enter(&mut self, next: impl FnOnce(Os) -> State) {
        let from = self.state.phase();
        self.state = match std::mem::replace(&mut self.state, State::Closed) {
            State::Fresh(os)
            | State::Bound(os)
            | State::Listening(os, _)
            | State::Connecting(os)
            | State::Connected(os, _) => next(os),
            State::Closed => State::Closed,
        };
        tracing::debug!(target: "usocket::socket", kind = "stream", ?from, to = ?self.state.phase(), "transition");
    }

    /// The connection's descriptor and receive queue; ENOTCONN without one.
    fn connection(&mut self) -> SockResult<(&Os, &mut Rx)> {
        if let Some(errno) = self.tls_refused {
            return Err(errno);
        }
        match &mut self.state {
            State::Connected(_, rx) if rx.tls.is_none() && self.tls_required.is_some() => {
                Err(Errno::EACCES)
            }
            State::Connected(os, rx) => Ok((os, rx)),
            State::Closed => Err(Errno::EBADF),
            _ => Err(Errno::ENOTCONN),
        }
    }

    pub(super) fn bind(&mut self, ctx: &UsocketCtx, address: &str, port: i32) -> SockResult<()> {
        self.os()?;
        let addr = addr::parse(self.family, address, port, Purpose::Bind)?;
        let State::Fresh(os) = &self.state else {
            return Err(Errno::EINVAL);
        };
        let grant = ctx.gate().grant::<uses::Bind>(addr, None)?;
        os.bind(&grant)?;
        self.enter(State::Bound);
        Ok(())
    }

    pub(super) fn listen(&mut self, ctx: &UsocketCtx, backlog: i32) -> SockResult<()> {
        let (local, implicit_bind) = match &self.state {
            // The kernel binds the wildcard on an ephemeral port first.
            State::Fresh(_) => (
                SocketAddr::new(self.family.unspecified(), 0),
                Some(self.family),
            ),
            State::Bound(os) | State::Listening(os, _) => (os.local_addr()?, None),
            State::Connecting(_) | State::Connected(..) => return Err(Errno::EINVAL),
            State::Closed => return Err(Errno::EBADF),
        };
        let grant = ctx.gate().grant::<uses::Listen>(local, implicit_bind)?;
        self.os()?.listen(&grant, backlog)?;
        if self.phase() != Phase::Listening {
            self.enter(|os| State::Listening(os, Admitted::default()));
        }
        Ok(())
    }

    /// The next connection whose peer the policy admits (others are reset unseen), in this
    /// socket's timeout mode: first those already admitted, then the kernel's.
    ///
    /// The socket quota: a call that starts with it full gets ENOMEM at once (a non-blocking
    /// one looks first, and says EAGAIN when no admitted connection is waiting). Otherwise a
    /// slot is taken only for a connection in hand, so a call waiting in `accept` holds none;
    /// if the quota filled meanwhile (a ceiling shared with other guests), ENOMEM, and the
    /// connection stays waiting for a later accept.
    pub(super) async fn accept(&mut self, ctx: &UsocketCtx) -> SockResult<(Stream, SocketAddr)> {
        let (os, admitted) = match &self.state {
            State::Listening(os, admitted) => (os, admitted),
            State::Closed => return Err(Errno::EBADF),
            _ => return Err(Errno::EINVAL),
        };
        let deadline = self.timeout.deadline();
        let quota = ctx.quota();
        if !quota.slot_free() {
            return Err(
                if deadline.is_now() && !self.admit_pending(ctx, Look::Kernel) {
                    Errno::EAGAIN
                } else {
                    Errno::ENOMEM
                },
            );
        }
        let connected = |conn, peer, slot| {
            let conn = Stream {
                family: self.family,
                timeout: self.timeout,
                state: State::Connected(Os::accepted(conn, slot), Rx::new(quota)),
                tls_on_connect: None,
                tls_required: None,
                tls_refused: None,
            };
            Ok((conn, peer))
        };
        if let Some((conn, peer, slot)) = admitted.pop_with(|| quota.take_slot())? {
            return connected(conn, peer, slot);
        }
        loop {
            let (conn, peer, slot) = os.accept(deadline, || quota.take_slot()).await?;
            if ctx.gate().admits(Use::Accept, peer) {
                return connected(conn, peer, slot);
            }
            Os::refuse(conn);
        }
    }

    /// For a listener: takes the connections pending in the kernel (without waiting), resets
    /// those the policy refuses and keeps the admitted ones for `accept`, up to
    /// [`MAX_ADMITTED`]; so `poll` reports a listener readable only for a connection the guest
    /// may accept. Whether one is waiting. `look`: whether the reactor may say "none pending"
    /// without a syscall.
    pub(super) fn admit_pending(&self, ctx: &UsocketCtx, look: Look) -> bool {
        let State::Listening(os, admitted) = &self.state else {
            return false;
        };
        let mut waiting = admitted.lock();
        for _ in 0..MAX_LOOK {
            if waiting.len() >= MAX_ADMITTED {
                break;
            }
            let Some((conn, peer)) = os.accept_now(look) else {
                break;
            };
            if ctx.gate().admits(Use::Accept, peer) {
                waiting.push_back((conn, peer));
            } else {
                Os::refuse(conn);
            }
        }
        !waiting.is_empty()
    }

    pub(super) async fn connect(
        &mut self,
        ctx: &UsocketCtx,
        address: &str,
        port: i32,
    ) -> SockResult<()> {
        self.os()?;
        let addr = addr::parse(self.family, address, port, Purpose::Destination)?;
        let implicit_bind = match self.state {
            State::Connected(..) => return Err(Errno::EISCONN),
            State::Listening(..) => return Err(Errno::EINVAL),
            State::Connecting(_) => {
                return self.finish_connect(ctx, self.timeout.deadline()).await;
            }
            State::Fresh(_) => Some(self.family),
            State::Bound(_) | State::Closed => None,
        };
        let grant = ctx.gate().grant::<uses::Connect>(addr, implicit_bind)?;
        self.tls_required = grant.tls_required().map(<[String]>::to_vec);
        if self.os()?.connect(&grant)? {
            self.enter(|os| State::Connected(os, Rx::new(ctx.quota())));
            return self.connected(ctx, self.timeout.deadline()).await;
        }
        self.enter(State::Connecting);
        match self.timeout {
            Timeout::NonBlocking => Err(Errno::EINPROGRESS),
            _ => self.finish_connect(ctx, self.timeout.deadline()).await,
        }
    }

    /// The TCP connection is up: starts the TLS that was asked for before it was, running
    /// the handshake within `deadline` (not at all for a non-blocking socket: its first read
    /// or write does).
    async fn connected(&mut self, ctx: &UsocketCtx, deadline: Deadline) -> SockResult<()> {
        let Some(params) = self.tls_on_connect.take() else {
            return Ok(());
        };
        if let Err(errno) = self.install_tls(ctx, params) {
            // Asked for TLS, so never plaintext: the connection stays unusable.
            self.tls_refused = Some(errno);
            return Err(errno);
        }
        if deadline.is_now() {
            return Ok(());
        }
        self.handshake(ctx, deadline).await
    }

    /// Waits (per `deadline`) for a pending connect to resolve.
    ///
    /// Non-blocking: EALREADY while pending, EISCONN once connected (the lwIP choice of the
    /// contract), or the connect's error once.
    async fn finish_connect(&mut self, ctx: &UsocketCtx, deadline: Deadline) -> SockResult<()> {
        let State::Connecting(os) = &self.state else {
            return Err(Errno::EINVAL);
        };
        let pending = |_: &socket2::Socket| {
            os.connect_outcome()
                .ok_or_else(|| std::io::ErrorKind::WouldBlock.into())
        };
        let outcome = os
            .wait(tokio::io::Interest::WRITABLE, deadline, pending, |_| false)
            .await;
        match outcome {
            Ok(Ok(())) => {
                self.enter(|os| State::Connected(os, Rx::new(ctx.quota())));
                self.connected(ctx, deadline).await?;
                if deadline.is_now() {
                    Err(Errno::EISCONN)
                } else {
                    Ok(())
                }
            }
            Ok(Err(e)) => {
                // The failure left a final HUP readiness; a later connect needs a fresh one.
                // The socket keeps the port its connect took (Linux keeps it); one without a
                // port is fresh again, so its next connect is an implicit bind for the policy.
                self.enter(|mut os| {
                    os.unregister();
                    if os.bound_addr().is_some() {
                        State::Bound(os)
                    } else {
                        State::Fresh(os)
                    }
                });
                Err(e.into())
            }
            Err(Errno::EAGAIN) => Err(Errno::EALREADY),
            Err(e) => Err(e),
        }
    }

    /// Before a data call: a pending connect becomes connected (or reports its failure, or
    /// EAGAIN while it is still pending and `deadline` allows no wait); a socket without a
    /// peer is ENOTCONN.
    async fn ensure_peer(&mut self, ctx: &UsocketCtx, deadline: Deadline) -> SockResult<()> {
        match self.state {
            State::Connected(..) => Ok(()),
            State::Connecting(_) => match self.finish_connect(ctx, deadline).await {
                Ok(()) | Err(Errno::EISCONN) => Ok(()),
                Err(Errno::EALREADY) => Err(Errno::EAGAIN),
                Err(e) => Err(e),
            },
            State::Closed => Err(Errno::EBADF),
            _ => Err(Errno::ENOTCONN),
        }
    }

    /// [`Stream::ensure_peer`] for the calls that answer "nothing done" while a non-blocking
    /// connect is pending (`write`, and the reads through [`Stream::start_read`]):
    /// `Ok(false)` then.
    async fn has_peer(&mut self, ctx: &UsocketCtx, deadline: Deadline) -> SockResult<bool> {
        match self.ensure_peer(ctx, deadline).await {
            Ok(()) => Ok(true),
            Err(Errno::EAGAIN) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The start of `read`, `readline` and `read_ahead`: their deadline, the connection there
    /// and its receive queue settled; `None` while a non-blocking connect is pending (they
    /// answer "nothing available").
    async fn start_read(&mut self, ctx: &UsocketCtx) -> SockResult<Option<Deadline>> {
        let deadline = self.timeout.deadline();
        if !self.has_peer(ctx, deadline).await? {
            return Ok(None);
        }
        self.connection()?.1.settle();
        Ok(Some(deadline))
    }

    /// `recv`: up to `max` bytes as they come (`b""` at end of stream). Bytes from the
    /// kernel are counted against the receive quota and rate (a peek's are not: they stay
    /// queued); bytes already queued in the host were counted when they came in.
    pub(super) async fn recv(
        &mut self,
        ctx: &UsocketCtx,
        max: usize,
        deadline: Deadline,
        flags: RecvFlags,
    ) -> SockResult<Vec<u8>> {
        self.ensure_peer(ctx, deadline).await?;
        if self.connection()?.1.tls.is_some() {
            return self.recv_tls(ctx, max, deadline, flags).await;
        }
        let quota = ctx.quota();
        let peek = flags.contains(RecvFlags::PEEK);
        let (os, rx) = self.connection()?;
        rx.settle();
        if rx.len() > 0 {
            let n = max.min(rx.len());
            return Ok(if peek { rx.peek(n) } else { rx.take(n) });
        }
        if let Some(err) = rx.take_error() {
            return Err(err);
        }
        if rx.is_eof() || max == 0 {
            return Ok(Vec::new());
        }
        let max = quota.recv_budget(max.min(MAX_RECV))?;
        let allowed = if peek {
            max
        } else {
            quota
                .allowance(Direction::Recv, max, false, deadline.until())
                .await
        };
        if allowed == 0 {
            return Err(deadline.missed());
        }
        let mut data = Vec::with_capacity(allowed);
        let result = os.recv_into(&mut data, deadline, flags).await;
        if !peek {
            quota.refund(Direction::Recv, allowed - data.len());
            quota.received(data.len());
        }
        match result {
            Ok(0) if !peek => rx.set_eof(),
            Ok(_) => {}
            Err(Errno::ECONNRESET) => {
                // Reported once; afterwards the stream reads as ended.
                rx.set_eof();
                return Err(Errno::ECONNRESET);
            }
            Err(e) => return Err(e),
        }
        Ok(data)
    }

    /// `recv` on a TLS connection: plaintext goes through the queue (a record holds more than
    /// one call may want).
    async fn recv_tls(
        &mut self,
        ctx: &UsocketCtx,
        max: usize,
        deadline: Deadline,
        flags: RecvFlags,
    ) -> SockResult<Vec<u8>> {
        self.connection()?.1.settle();
        loop {
            let (_, rx) = self.connection()?;
            if rx.len() > 0 {
                let n = max.min(rx.len());
                return Ok(if flags.contains(RecvFlags::PEEK) {
                    rx.peek(n)
                } else {
                    rx.take(n)
                });
            }
            if let Some(err) = rx.take_error() {
                return Err(err);
            }
            if rx.is_eof() || max == 0 {
                return Ok(Vec::new());
            }
            if !self.fill(ctx, max.min(MAX_RECV), deadline).await? {
                return Err(Errno::EAGAIN);
            }
        }
    }

    /// Reads from the kernel into the queue: at least one byte, end of stream, or an error.
    /// `Ok(false)` when nothing was available (non-blocking); ETIMEDOUT when the deadline
    /// passed. Both leave the queue as it was. Takes no more than the receive quota, the
    /// rate limit and the buffer limits allow: ENOBUFS when the socket's share
    /// (`max_buffered`) or the guest's total (`max_buffered_total`) is full, the bytes then
    /// staying in the kernel.
    async fn fill(
        &mut self,
        ctx: &UsocketCtx,
        want: usize,
        deadline: Deadline,
    ) -> SockResult<bool> {
        self.fill_probing(ctx, want, Probe::OneMore, deadline).await
    }

    /// [`Stream::fill`], reading `want` bytes and the `probe`.
    async fn fill_probing(
        &mut self,
        ctx: &UsocketCtx,
        want: usize,
        probe: Probe,
        deadline: Deadline,
    ) -> SockResult<bool> {
        let quota = ctx.quota();
        let (os, rx) = self.connection()?;
        let room = quota.buffer_room(rx.held());
        if room == 0 {
            return Err(Errno::ENOBUFS);
        }
        let want = match probe {
            Probe::OneMore => want.saturating_add(1),
            Probe::Exact => want,
        };
        let want = quota.recv_budget(want.min(room))?;
        let allowed = quota
            .allowance(Direction::Recv, want, false, deadline.until())
            .await;
        if allowed == 0 {
            return match deadline {
                Deadline::Now => Ok(false),
                _ => Err(Errno::ETIMEDOUT),
            };
        }
        let mut chunk = Vec::new();
        // Bytes still queued (a line's first part, the rest of a read) that are fewer than a
        // read may bring: the new bytes join them in one buffer that starts with a copy of
        // them, rather than being copied onto the end of the queue. The queue stays as it is
        // until the read is in, so a call cancelled meanwhile loses nothing.
        let mut joined = 0;
        let result = match rx.tls.as_mut() {
            Some(tls) => {
                chunk.reserve_exact(allowed);
                let result = tls.recv(os, &mut chunk, allowed, deadline).await;
                audit_tls_failure(ctx, os, tls);
                result
            }
            None => {
                let prefix = if (1..allowed).contains(&rx.len()) {
                    rx.as_slices()
                } else {
                    [&[][..], &[][..]]
                };
                joined = prefix[0].len() + prefix[1].len();
                os.recv_chunk_after(prefix, allowed, deadline)
                    .await
                    .map(|got| {
                        chunk = got;
                        chunk.len().saturating_sub(joined)
                    })
            }
        };
        let got = chunk.len().saturating_sub(joined);
        quota.refund(Direction::Recv, allowed - got);
        quota.received(got);
        if joined == 0 {
            rx.append(chunk);
        } else if got > 0 {
            rx.adopt(chunk);
        }
        Self::filled(rx, result, deadline)
    }

    /// How a fill's read ended, for [`Stream::fill`]: the end of the stream and a reset are
    /// queued after the bytes.
    fn filled(rx: &mut Rx, result: SockResult<usize>, deadline: Deadline) -> SockResult<bool> {
        match result {
            Ok(0) => rx.set_eof(),
            Ok(_) => {}
            Err(Errno::EAGAIN) if deadline.is_now() => return Ok(false),
            Err(Errno::ECONNRESET) => rx.set_error(Errno::ECONNRESET),
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// What is queued, for a non-blocking read that could not wait for more (`None`: nothing).
    fn whatever_is_queued(&mut self) -> SockResult<Option<Vec<u8>>> {
        let (_, rx) = self.connection()?;
        Ok((rx.len() > 0).then(|| rx.take_all()))
    }

    /// `read(n)` with `Some(n)`, `read()` with `None`. `Ok(None)`: non-blocking and nothing
    /// available.
    pub(super) async fn read(
        &mut self,
        ctx: &UsocketCtx,
        n: Option<usize>,
    ) -> SockResult<Option<Vec<u8>>> {
        let Some(deadline) = self.start_read(ctx).await? else {
            return Ok(None);
        };
        loop {
            let (_, rx) = self.connection()?;
            let queued = rx.len();
            match n {
                Some(n) if queued >= n => return Ok(Some(rx.take(n))),
                _ if rx.is_finished() => {
                    return match rx.take_error() {
                        Some(err) => Err(err),
                        None => Ok(Some(rx.take_all())),
                    };
                }
                // Over the buffer limits, fill fails with ENOBUFS: the bytes stay queued, and a
                // smaller read can still take them.
                _ => {}
            }
            let want = match n {
                Some(n) => (n - queued).min(MAX_RECV),
                None => READ_CHUNK,
            };
            if !self.fill(ctx, want, deadline).await? {
                return self.whatever_is_queued();
            }
        }
    }

    /// `readline(limit)`: one line with its `\n`, the last partial line at EOF, then `b""`.
    pub(super) async fn readline(
        &mut self,
        ctx: &UsocketCtx,
        limit: Option<usize>,
    ) -> SockResult<Option<Vec<u8>>> {
        let Some(n) = self.line_queued(ctx, limit).await? else {
            return Ok(None);
        };
        Ok(Some(self.connection()?.1.take(n)))
    }

    /// `readline` plus up to `ahead` bytes already queued after the line (never waiting for
    /// more), which the guest library then owns until it gives them back with `unread`: in
    /// one buffer, the line first, and the line's length.
    pub(super) async fn readline_ahead(
        &mut self,
        ctx: &UsocketCtx,
        limit: Option<usize>,
        ahead: usize,
    ) -> SockResult<Option<(Vec<u8>, usize)>> {
        let Some(n) = self.line_queued(ctx, limit).await? else {
            return Ok(None);
        };
        let (_, rx) = self.connection()?;
        // Queued bytes become lent ones: the socket's share stays the same, so read-ahead
        // never holds more than the buffer limits allow, and giving it back fits.
        Ok(Some((rx.take_lending(n, ahead), n)))
    }

    /// Receives (waiting as `read` does) until the queue holds `readline(limit)`'s answer,
    /// and says how many of the queued bytes it is: a line with its `\n`, `limit` bytes, the
    /// last partial line at EOF, nothing (0) after it; for a non-blocking socket without a
    /// whole line, whatever is queued (`None`: nothing).
    async fn line_queued(
        &mut self,
        ctx: &UsocketCtx,
        limit: Option<usize>,
    ) -> SockResult<Option<usize>> {
        let Some(deadline) = self.start_read(ctx).await? else {
            return Ok(None);
        };
        let limit = limit.unwrap_or(usize::MAX);
        // Bytes already searched for a newline, so each byte is scanned once per call.
        let mut scanned = 0;
        loop {
            let (_, rx) = self.connection()?;
            let window = rx.len().min(limit);
            if let Some(i) = rx.find(b'\n', scanned, window) {
                return Ok(Some(i + 1));
            }
            if window == limit {
                return Ok(Some(limit));
            }
            scanned = window;
            if rx.is_finished() {
                return match rx.take_error() {
                    Some(err) => Err(err),
                    None => Ok(Some(scanned)),
                };
            }
            // A line longer than the buffer limits allow: fill fails with ENOBUFS.
            if !self.fill(ctx, READ_CHUNK, deadline).await? {
                let (_, rx) = self.connection()?;
                return Ok((rx.len() > 0).then(|| rx.len()));
            }
        }
    }

    /// `read-ahead(max)`: at least one received byte (waiting as `read` does) or the end of
    /// the stream, then up to `max` of what is queued, lent to the guest library as
    /// `readline_ahead` lends (taken whole when the queue holds no more: no copy).
    pub(super) async fn read_ahead(
        &mut self,
        ctx: &UsocketCtx,
        max: usize,
    ) -> SockResult<Option<Vec<u8>>> {
        let Some(deadline) = self.start_read(ctx).await? else {
            return Ok(None);
        };
        loop {
            let (_, rx) = self.connection()?;
            if rx.len() > 0 {
                return Ok(Some(rx.lend(max.max(1))));
            }
            if rx.is_finished() {
                return match rx.take_error() {
                    Some(err) => Err(err),
                    None => Ok(Some(Vec::new())),
                };
            }
            // All that is read is lent: a probe byte would stay behind.
            let want = READ_CHUNK.min(max.max(1));
            if !self.fill_probing(ctx, want, Probe::Exact, deadline).await? {
                return Ok(None);
            }
        }
    }

    /// Puts read-ahead bytes back at the head of the queue, ending the loan. Up to what was
    /// lent it cannot fail (the loan's room is still reserved); beyond that the extra bytes
    /// must fit the buffer limits (ENOBUFS).
    pub(super) fn unread(&mut self, ctx: &UsocketCtx, data: &[u8]) -> SockResult<()> {
        let (_, rx) = self.connection()?;
        if let Some(extra) = data.len().checked_sub(rx.lent).filter(|&n| n > 0)
            && ctx.quota().buffer_room(rx.held()) < extra
        {
            return Err(Errno::ENOBUFS);
        }
        rx.unread(data);
        Ok(())
    }

    /// `send(data)`: what fits, at least one byte unless non-blocking or timed out. Rate
    /// tokens are taken before the bytes leave: a blocking send waits for them, a timed or
    /// non-blocking one only until its deadline.
    pub(super) async fn send(&mut self, ctx: &UsocketCtx, data: &[u8]) -> SockResult<usize> {
        let deadline = self.timeout.deadline();
        self.ensure_peer(ctx, deadline).await?;
        if data.is_empty() {
            return Ok(0);
        }
        let quota = ctx.quota();
        let want = quota.send_budget(data.len())?;
        let allowed = quota
            .allowance(Direction::Send, want, false, deadline.until())
            .await;
        if allowed == 0 {
            return Err(deadline.missed());
        }
        let (os, rx) = self.connection()?;
        let result = match rx.tls.as_mut() {
            Some(tls) => {
                let result = tls.send(os, &data[..allowed], deadline).await;
                audit_tls_failure(ctx, os, tls);
                result
            }
            None => os.send(&data[..allowed], deadline).await,
        };
        let n = *result.as_ref().unwrap_or(&0);
        quota.refund(Direction::Send, allowed - n);
        quota.sent(n);
        result
    }

    /// `write(data)` / `sendall(data)`: all of it (blocking), all or ETIMEDOUT (timed), or
    /// what fits now (non-blocking, possibly 0, also while the connect is pending). Goes out
    /// in the pieces the rate limit allows, each paid before it leaves, within the deadline:
    /// timed, ETIMEDOUT after sending what the deadline allowed; non-blocking, what the
    /// bucket holds now.
    pub(super) async fn write(&mut self, ctx: &UsocketCtx, data: &[u8]) -> SockResult<usize> {
        let deadline = self.timeout.deadline();
        if !self.has_peer(ctx, deadline).await? {
            return Ok(0);
        }
        let quota = ctx.quota();
        let (os, rx) = self.connection()?;
        let mut sent = 0;
        while sent < data.len() {
            let want = quota.send_budget(data.len() - sent)?;
            let allowed = quota
                .allowance(Direction::Send, want, false, deadline.until())
                .await;
            if allowed == 0 {
                match deadline {
                    Deadline::Now => break,
                    _ => return Err(Errno::ETIMEDOUT),
                }
            }
            let piece = &data[sent..sent + allowed];
            let result = match rx.tls.as_mut() {
                Some(tls) => {
                    let result = tls.send(os, piece, deadline).await;
                    audit_tls_failure(ctx, os, tls);
                    result
                }
                None => os.send(piece, deadline).await,
            };
            let n = *result.as_ref().unwrap_or(&0);
            quota.refund(Direction::Send, allowed - n);
            quota.sent(n);
            sent += n;
            match result {
                Ok(_) => {}
                Err(Errno::EAGAIN) if deadline.is_now() => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// `close()`: unread received data turns it into a reset, as a kernel socket's close does.
    /// By the WIT's protocol the guest library gave back its read-ahead before closing, so a
    /// loan still outstanding was used (see [`Rx`]).
    pub(super) fn close(&mut self) {
        if let State::Connected(_, rx) = &mut self.state {
            rx.settle();
        }
        self.shut(true);
    }

    /// The guest dropped the socket: as `close`, except that read-ahead still lent counts as
    /// unread (a library gives it back before dropping).
    pub(super) fn dropped_by_guest(&mut self) {
        self.shut(true);
    }

    /// Closes: a reset if received data is unread, in the host's queue or lent to the guest
    /// library; a FIN otherwise, after close_notify on a TLS connection if the guest closed it
    /// (`deliberate`). A TLS connection that ends because its guest did (exited, trapped, ran
    /// out of time) sends no close_notify, so its peer can tell the stream may be cut short.
    fn shut(&mut self, deliberate: bool) {
        if let State::Closed = self.state {
            return;
        }
        if let State::Connected(os, rx) = &mut self.state {
            if deliberate && let Some(tls) = rx.tls.as_mut() {
                tls.drain_now(os);
            }
            let tls_unread = rx.tls.as_ref().is_some_and(|t| t.has_unread());
            if rx.has_unread() || tls_unread {
                os.reset_on_close();
            } else if let Some(tls) = rx.tls.as_mut().filter(|_| deliberate) {
                tls.close(os);
            }
        }
        self.enter(|_| State::Closed);
    }

    /// Before a deliberate close of a TLS connection: takes in what the kernel already
    /// received, and unless that leaves data unread (the close will reset), sends the records
    /// the host still holds and close_notify, waiting up to [`TLS_CLOSE_LINGER`], as a kernel
    /// keeps sending its buffer after `close`.
    pub(super) async fn finish_tls(&mut self) {
        let State::Connected(os, rx) = &mut self.state else {
            return;
        };
        let Some(tls) = rx.tls.as_mut() else {
            return;
        };
        tls.drain_now(os);
        if rx.queue.len() > 0 || tls.has_unread() {
            return;
        }
        let until = tokio::time::Instant::now() + TLS_CLOSE_LINGER;
        tls.finish(os, Deadline::At(until)).await;
    }

    /// `start-tls`: the connection becomes a TLS one (see [`super::tls`]). While a
    /// non-blocking connect is pending, TLS starts when it completes.
    pub(super) async fn start_tls(
        &mut self,
        ctx: &UsocketCtx,
        params: TlsParams,
        handshake: bool,
    ) -> SockResult<()> {
        if [&params.cadata, &params.cert, &params.key].iter().any(|d| {
            d.as_ref()
                .is_some_and(|d| d.len() > crate::tls::MAX_GUEST_PEM)
        }) {
            return Err(Errno::EINVAL);
        }
        if let Some(errno) = self.tls_refused {
            return Err(errno);
        }
        match &self.state {
            State::Connected(_, rx) if rx.tls.is_some() => return Err(Errno::EINVAL),
            State::Connected(..) => {}
            State::Connecting(_) if self.tls_on_connect.is_none() && !params.server_side => {
                self.tls_on_connect = Some(params);
                return Ok(());
            }
            State::Connecting(_) | State::Listening(..) => return Err(Errno::EINVAL),
            State::Closed => return Err(Errno::EBADF),
            State::Fresh(_) | State::Bound(_) => return Err(Errno::ENOTCONN),
        }
        self.install_tls(ctx, params)?;
        if !handshake {
            return Ok(());
        }
        match self.handshake(ctx, self.timeout.deadline()).await {
            // Non-blocking: the rest of the handshake happens in later calls.
            Err(Errno::EAGAIN) if self.timeout.deadline().is_now() => Ok(()),
            other => other,
        }
    }

    /// Makes the TLS session for `params` on this connection: the server side with the
    /// guest's or the embedder's certificate; the client side verifying against the name
    /// the policy granted (see [`crate::gate::Gate::tls_name`]).
    fn install_tls(&mut self, ctx: &UsocketCtx, params: TlsParams) -> SockResult<()> {
        let State::Connected(os, rx) = &mut self.state else {
            return Err(Errno::ENOTCONN);
        };
        let identity = match (&params.cert, &params.key) {
            (Some(cert), Some(key)) => Some((cert.as_slice(), key.as_slice())),
            (Some(cert), None) => Some((cert.as_slice(), cert.as_slice())),
            (None, Some(_)) => return Err(Errno::EINVAL),
            (None, None) => None,
        };
        let conn: rustls::Connection = if params.server_side {
            let config = ctx.tls().server(identity)?;
            rustls::ServerConnection::new(config)
                .map_err(|_| Errno::EIO)?
                .into()
        } else {
            let peer = os.peer_addr()?;
            let required = self.tls_required.as_deref();
            // Under a `tls` rule the host's roots decide what is trusted, not the guest.
            if required.is_some() && params.cadata.is_some() {
                ctx.gate().tls_refused(
                    peer,
                    "cadata under a tls rule: the host's trust roots decide there",
                );
                return Err(Errno::EACCES);
            }
            let name = ctx
                .gate()
                .tls_name(peer, params.server_hostname.as_deref(), required)?;
            // A `tls` rule verifies whatever the guest asks.
            let verify = params.verify || required.is_some();
            let config = ctx
                .tls()
                .client(verify, params.cadata.as_deref(), identity)?;
            let name = rustls::pki_types::ServerName::try_from(name).map_err(|_| Errno::EINVAL)?;
            rustls::ClientConnection::new(config, name)
                .map_err(|_| Errno::EIO)?
                .into()
        };
        // Bytes received before TLS started are the start of the TLS stream (a client's
        // hello that arrived with a protocol's plaintext command, or bytes a guest peeked).
        rx.settle();
        let received = rx.take_all();
        rx.tls = Some(Box::new(Tls::new(conn, received)));
        Ok(())
    }

    /// Runs the TLS handshake within `deadline`; a failure is audited with its reason.
    async fn handshake(&mut self, ctx: &UsocketCtx, deadline: Deadline) -> SockResult<()> {
        let State::Connected(os, rx) = &mut self.state else {
            return Err(Errno::ENOTCONN);
        };
        let Some(tls) = rx.tls.as_mut() else {
            return Ok(());
        };
        let result = tls.handshake(os, deadline).await;
        audit_tls_failure(ctx, os, tls);
        result
    }

    /// The peer's certificate once a TLS handshake has finished.
    pub(super) fn peer_certificate(&self) -> Option<Vec<u8>> {
        match &self.state {
            State::Connected(_, rx) => rx.tls.as_ref()?.peer_certificate(),
            _ => None,
        }
    }

    pub(super) fn local_address(&self) -> SockResult<SocketAddr> {
        match &self.state {
            State::Fresh(_) => Err(Errno::EINVAL),
            // Never ("::", 0): without a port the socket is not bound.
            state => state.os()?.bound_addr().ok_or(Errno::EINVAL),
        }
    }

    pub(super) fn peer_address(&self) -> SockResult<SocketAddr> {
        match &self.state {
            State::Connected(os, _) => os.peer_addr(),
            State::Closed => Err(Errno::EBADF),
            _ => Err(Errno::ENOTCONN),
        }
    }

    pub(super) fn set_option(
        &self,
        level: i32,
        option: i32,
        value: OptValue<'_>,
    ) -> SockResult<()> {
        self.os()?.set_option(Kind::Stream, level, option, value)
    }

    /// Before [`Stream::revents`] in `poll`, for a plain connection asked for POLLIN with
    /// nothing queued in the host: when the reactor saw it become readable, reads up to
    /// [`PREFETCH`] bytes of what the kernel holds into the queue (non-blocking, as any read:
    /// quota, rate and buffer limits hold). That syscall replaces the one that would only
    /// confirm the reactor's word, and the guest's read that follows takes the bytes without
    /// another; a read that finds nothing clears the stale readiness (the next look answers
    /// without a syscall). TLS connections, a loan outstanding, or an end or error already
    /// queued: nothing to do. Nor when the buffer limits leave less than twice [`PREFETCH`]:
    /// what `poll` takes never leaves the guest's own reads without room (ENOBUFS). (On a
    /// multi-thread runtime the reactor may take in the event just after this look: the
    /// revents that follow then confirm it with the kernel, as without a prefetch.)
    pub(super) fn prefetch(&mut self, ctx: &UsocketCtx, mask: u32) {
        if mask & POLLIN == 0 {
            return;
        }
        let Ok((os, rx)) = self.connection() else {
            return;
        };
        if rx.tls.is_some()
            || rx.has_unread()
            || rx.is_finished()
            || ctx.quota().buffer_room(rx.held()) < 2 * PREFETCH
            || !os.seen_readable()
        {
            return;
        }
        // A non-blocking fill finishes at its first poll (it never waits for readiness,
        // time or tokens); if it ever did not, dropping it here moves no bytes.
        let fill = pin!(self.fill(ctx, PREFETCH, Deadline::Now));
        let _ = fill.poll(&mut Context::from_waker(Waker::noop()));
    }

    /// The kernel's revents, plus POLLIN for what the queue holds. A listener's POLLIN is
    /// for admitted connections only (see [`Stream::admit_pending`]), never the kernel's.
    pub(super) fn revents(&self, mask: u32) -> u32 {
        if let State::Connected(os, _) | State::Listening(os, _) = &self.state {
            // Safe to register (no HUP left over from an unconnected state): later looks can
            // answer from the reactor.
            os.watch();
        }
        match &self.state {
            State::Closed => POLL_CLOSED,
            // A handshake waiting for the peer: a write can move only once the socket is
            // readable (MicroPython's TLS sockets poll the same way), so that is what POLLOUT
            // waits for; reporting the kernel's POLLOUT would make event loops spin.
            State::Connected(os, rx) if rx.tls.as_ref().is_some_and(|t| t.waits_to_read()) => {
                let kernel = os.revents(handshake_mask(mask));
                let mut revents = kernel & !(POLLIN | POLLOUT);
                // Records already in the host (received before TLS started) move it too.
                let held = rx.tls.as_ref().is_some_and(|t| t.has_news());
                if kernel & POLLIN != 0 || held {
                    revents |= mask & (POLLIN | POLLOUT);
                }
                if mask & POLLIN != 0 && rx.has_news() {
                    revents |= POLLIN;
                }
                revents
            }
            State::Connected(os, rx)
                if mask & POLLIN != 0
                    && (rx.has_news() || rx.tls.as_ref().is_some_and(|t| t.has_news())) =>
            {
                // An error the host took from the kernel (say, a reset after the last bytes)
                // is POLLERR until a read reports it, as the kernel's own would be.
                let held_error = if rx.has_error() { POLLERR } else { 0 };
                os.revents(mask & !POLLIN) | POLLIN | held_error
            }
            State::Listening(os, admitted) => {
                let kernel = os.revents(mask & !POLLIN);
                if mask & POLLIN != 0 && !admitted.lock().is_empty() {
                    kernel | POLLIN
                } else {
                    kernel
                }
            }
            state => state.os().map_or(POLL_CLOSED, |os| os.revents(mask)),
        }
    }

    /// Waits until [`Stream::revents`] may have changed for `mask`; a listener wakes for the
    /// kernel's pending connections too, which `poll` then admits or refuses.
    pub(super) async fn readiness(&self, mask: u32) {
        match &self.state {
            State::Listening(os, _) => os.readiness(mask, || os.revents(mask) != 0).await,
            State::Connected(os, rx) if rx.tls.as_ref().is_some_and(|t| t.waits_to_read()) => {
                os.readiness(handshake_mask(mask), || self.revents(mask) != 0)
                    .await;
            }
            // Any event is news for `poll`'s next look, which reads (see `prefetch`) or asks
            // the kernel and so clears a stale readiness: no syscall here to confirm it first.
            // (A closed side's lasting readiness is POLLIN to this mask: the end of stream.)
            State::Connected(os, rx) if rx.tls.is_none() && mask & POLLIN != 0 => {
                os.readiness(mask, || true).await;
            }
            state => {
                if let Ok(os) = state.os() {
                    os.readiness(mask, || self.revents(mask) != 0).await;
                }
            }
        }
    }
}

/// The kernel events a guest's `mask` waits for while a TLS handshake waits for the peer:
/// POLLOUT becomes POLLIN.
fn handshake_mask(mask: u32) -> u32 {
    if mask & POLLOUT != 0 {
        (mask & !POLLOUT) | POLLIN
    } else {
        mask
    }
}

/// Audits a TLS session's failure once, whichever call met it (a handshake also runs inside
/// the first read or write).
fn audit_tls_failure(ctx: &UsocketCtx, os: &Os, tls: &mut Tls) {
    if let Some((errno, reason)) = tls.unaudited_failure() {
        ctx.gate().tls_failed(os.peer_addr().ok(), errno, &reason);
    }
}

impl Drop for Stream {
    /// A socket dropped without `close` (the guest dropped it, trapped, exited or ran out of
    /// time): unread data, including read-ahead the guest library never gave back, resets the
    /// connection.
    fn drop(&mut self) {
        self.shut(false);
    }
}
