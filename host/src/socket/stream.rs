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

use std::net::SocketAddr;

use rustix::net::RecvFlags;
use usocket_abi::{POLL_CLOSED, POLLIN};

use super::os::{Deadline, Kind, OptValue, Os, Timeout};
use super::rx_queue::RxQueue;
use super::{MAX_RECV, Phase, READ_CHUNK};
use crate::addr::{self, Family, Purpose};
use crate::ctx::UsocketCtx;
use crate::errno::{Errno, SockResult};
use crate::gate::uses;
use crate::policy::Use;

/// Where a stream socket is in its life, with what it holds there.
enum State {
    /// Just created.
    Fresh(Os),
    /// Has a local address (explicit `bind`).
    Bound(Os),
    /// Accepting connections; stays here until closed.
    Listening(Os),
    /// A non-blocking (or timed-out) connect is under way.
    Connecting(Os),
    /// Has a peer, and a receive queue.
    Connected(Os, RxQueue),
    /// After `close()`.
    Closed,
}

impl State {
    fn phase(&self) -> Phase {
        match self {
            State::Fresh(_) => Phase::Fresh,
            State::Bound(_) => Phase::Bound,
            State::Listening(_) => Phase::Listening,
            State::Connecting(_) => Phase::Connecting,
            State::Connected(..) => Phase::Connected,
            State::Closed => Phase::Closed,
        }
    }

    fn os(&self) -> SockResult<&Os> {
        match self {
            State::Fresh(os)
            | State::Bound(os)
            | State::Listening(os)
            | State::Connecting(os)
            | State::Connected(os, _) => Ok(os),
            State::Closed => Err(Errno::EBADF),
        }
    }
}

pub(crate) struct Stream {
    pub(super) family: Family,
    pub(super) timeout: Timeout,
    state: State,
}

impl Stream {
    pub(super) fn new(family: Family, os: Os) -> Stream {
        Stream {
            family,
            timeout: Timeout::Blocking,
            state: State::Fresh(os),
        }
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
            | State::Listening(os)
            | State::Connecting(os)
            | State::Connected(os, _) => next(os),
            State::Closed => State::Closed,
        };
        tracing::debug!(target: "usocket::socket", kind = "stream", ?from, to = ?self.state.phase(), "transition");
    }

    /// The connection's descriptor and receive queue; ENOTCONN without one.
    fn connection(&mut self) -> SockResult<(&Os, &mut RxQueue)> {
        match &mut self.state {
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
            State::Bound(os) | State::Listening(os) => (os.local_addr()?, None),
            State::Connecting(_) | State::Connected(..) => return Err(Errno::EINVAL),
            State::Closed => return Err(Errno::EBADF),
        };
        let grant = ctx.gate().grant::<uses::Listen>(local, implicit_bind)?;
        self.os()?.listen(&grant, backlog)?;
        if self.phase() != Phase::Listening {
            self.enter(State::Listening);
        }
        Ok(())
    }

    /// The next connection whose peer the policy admits (others are reset unseen), in this
    /// socket's timeout mode.
    pub(super) async fn accept(&mut self, ctx: &UsocketCtx) -> SockResult<(Stream, SocketAddr)> {
        let os = match &self.state {
            State::Listening(os) => os,
            State::Closed => return Err(Errno::EBADF),
            _ => return Err(Errno::EINVAL),
        };
        // Quota first: an exhausted guest gets ENOMEM at once, not after waiting.
        let slot = ctx.quota().take_slot()?;
        let deadline = self.timeout.deadline();
        loop {
            let (conn, peer) = os.accept(deadline).await?;
            if ctx.gate().admits(Use::Accept, peer) {
                let conn = Stream {
                    family: self.family,
                    timeout: self.timeout,
                    state: State::Connected(Os::accepted(conn, slot), RxQueue::default()),
                };
                return Ok((conn, peer));
            }
            Os::refuse(conn);
        }
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
            State::Listening(_) => return Err(Errno::EINVAL),
            State::Connecting(_) => return self.finish_connect(self.timeout.deadline()).await,
            State::Fresh(_) => Some(self.family),
            State::Bound(_) | State::Closed => None,
        };
        let grant = ctx.gate().grant::<uses::Connect>(addr, implicit_bind)?;
        if self.os()?.connect(&grant)? {
            self.enter(|os| State::Connected(os, RxQueue::default()));
            return Ok(());
        }
        self.enter(State::Connecting);
        match self.timeout {
            Timeout::NonBlocking => Err(Errno::EINPROGRESS),
            _ => self.finish_connect(self.timeout.deadline()).await,
        }
    }

    /// Waits (per `deadline`) for a pending connect to resolve.
    ///
    /// Non-blocking: EALREADY while pending, EISCONN once connected (the lwIP choice of the
    /// contract), or the connect's error once.
    async fn finish_connect(&mut self, deadline: Deadline) -> SockResult<()> {
        let State::Connecting(os) = &self.state else {
            return Err(Errno::EINVAL);
        };
        let outcome = os
            .wait(tokio::io::Interest::WRITABLE, deadline, |_| {
                os.connect_outcome()
                    .ok_or_else(|| std::io::ErrorKind::WouldBlock.into())
            })
            .await;
        match outcome {
            Ok(Ok(())) => {
                self.enter(|os| State::Connected(os, RxQueue::default()));
                if deadline.is_now() {
                    Err(Errno::EISCONN)
                } else {
                    Ok(())
                }
            }
            Ok(Err(e)) => {
                // The failure left a final HUP readiness; a later connect needs a fresh one.
                self.enter(|mut os| {
                    os.unregister();
                    State::Bound(os)
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
    async fn ensure_peer(&mut self, deadline: Deadline) -> SockResult<()> {
        match self.state {
            State::Connected(..) => Ok(()),
            State::Connecting(_) => match self.finish_connect(deadline).await {
                Ok(()) | Err(Errno::EISCONN) => Ok(()),
                Err(Errno::EALREADY) => Err(Errno::EAGAIN),
                Err(e) => Err(e),
            },
            State::Closed => Err(Errno::EBADF),
            _ => Err(Errno::ENOTCONN),
        }
    }

    /// [`Stream::ensure_peer`] for the reads that answer "nothing available" with `None`
    /// (`read`, `readline`): `Ok(false)` while a non-blocking connect is pending.
    async fn has_peer(&mut self, deadline: Deadline) -> SockResult<bool> {
        match self.ensure_peer(deadline).await {
            Ok(()) => Ok(true),
            Err(Errno::EAGAIN) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `recv`: up to `max` bytes as they come (`b""` at end of stream).
    pub(super) async fn recv(
        &mut self,
        max: usize,
        deadline: Deadline,
        flags: RecvFlags,
    ) -> SockResult<Vec<u8>> {
        self.ensure_peer(deadline).await?;
        let (os, rx) = self.connection()?;
        if rx.len() > 0 {
            let n = max.min(rx.len());
            return Ok(if flags.contains(RecvFlags::PEEK) {
                rx.queued()[..n].to_vec()
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
        let mut data = Vec::with_capacity(max.min(MAX_RECV));
        match os.recv_into(&mut data, deadline, flags).await {
            Ok(0) if !flags.contains(RecvFlags::PEEK) => rx.set_eof(),
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

    /// Reads from the kernel into the queue: at least one byte, end of stream, or an error.
    /// `Ok(false)` when nothing was available (non-blocking); ETIMEDOUT when the deadline
    /// passed. Both leave the queue as it was.
    async fn fill(
        &mut self,
        ctx: &UsocketCtx,
        want: usize,
        deadline: Deadline,
    ) -> SockResult<bool> {
        let quota = ctx.quota();
        let want = quota.recv_budget(want)?;
        let (os, rx) = self.connection()?;
        let result = if quota.recv_is_limited() {
            // Take exactly the budget from the kernel: a read into all of the queue's spare
            // room could overshoot it.
            let mut chunk = Vec::with_capacity(want.max(1));
            let result = os.recv_into(&mut chunk, deadline, RecvFlags::empty()).await;
            rx.append(&chunk);
            result
        } else {
            os.recv_into(rx.room(want), deadline, RecvFlags::empty())
                .await
        };
        let got = match result {
            Ok(0) => {
                rx.set_eof();
                0
            }
            Ok(n) => n,
            Err(Errno::EAGAIN) if deadline.is_now() => return Ok(false),
            Err(Errno::ECONNRESET) => {
                rx.set_error(Errno::ECONNRESET);
                0
            }
            Err(e) => return Err(e),
        };
        quota.received(got).await;
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
        let deadline = self.timeout.deadline();
        if !self.has_peer(deadline).await? {
            return Ok(None);
        }
        let limit = ctx.limits().max_buffered;
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
                // The bytes stay queued: a smaller read can still take them.
                _ if queued >= limit => return Err(Errno::ENOBUFS),
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
        let deadline = self.timeout.deadline();
        if !self.has_peer(deadline).await? {
            return Ok(None);
        }
        let limit = limit.unwrap_or(usize::MAX);
        let max_buffered = ctx.limits().max_buffered;
        // Bytes already searched for a newline, so each byte is scanned once per call.
        let mut scanned = 0;
        loop {
            let (_, rx) = self.connection()?;
            let queued = rx.queued();
            let window = &queued[..queued.len().min(limit)];
            if let Some(i) = window[scanned..].iter().position(|&b| b == b'\n') {
                return Ok(Some(rx.take(scanned + i + 1)));
            }
            if window.len() == limit {
                return Ok(Some(rx.take(limit)));
            }
            scanned = window.len();
            if rx.is_finished() {
                return match rx.take_error() {
                    Some(err) => Err(err),
                    None => Ok(Some(rx.take(scanned))),
                };
            }
            if scanned >= max_buffered {
                return Err(Errno::ENOBUFS);
            }
            if !self.fill(ctx, READ_CHUNK, deadline).await? {
                return self.whatever_is_queued();
            }
        }
    }

    /// `readline` plus up to `ahead` bytes already queued after the line (never waiting for
    /// more), which the guest library then owns until it gives them back with `unread`.
    pub(super) async fn readline_ahead(
        &mut self,
        ctx: &UsocketCtx,
        limit: Option<usize>,
        ahead: usize,
    ) -> SockResult<Option<(Vec<u8>, Vec<u8>)>> {
        let Some(line) = self.readline(ctx, limit).await? else {
            return Ok(None);
        };
        let (_, rx) = self.connection()?;
        let extra = rx.take(ahead.min(rx.len()));
        Ok(Some((line, extra)))
    }

    /// Puts read-ahead bytes back at the head of the queue (ENOBUFS over the per-socket limit).
    pub(super) fn unread(&mut self, ctx: &UsocketCtx, data: &[u8]) -> SockResult<()> {
        let (_, rx) = self.connection()?;
        if rx.len() + data.len() > ctx.limits().max_buffered {
            return Err(Errno::ENOBUFS);
        }
        rx.unread(data);
        Ok(())
    }

    /// `send(data)`: what fits, at least one byte unless non-blocking or timed out.
    pub(super) async fn send(&mut self, ctx: &UsocketCtx, data: &[u8]) -> SockResult<usize> {
        let deadline = self.timeout.deadline();
        self.ensure_peer(deadline).await?;
        if data.is_empty() {
            return Ok(0);
        }
        let quota = ctx.quota();
        let data = &data[..quota.send_budget(data.len())?];
        let (os, _) = self.connection()?;
        let n = os.send(data, deadline).await?;
        quota.sent(n).await;
        Ok(n)
    }

    /// `write(data)` / `sendall(data)`: all of it (blocking), all or ETIMEDOUT (timed), or
    /// what fits now (non-blocking, possibly 0, also while the connect is pending).
    pub(super) async fn write(&mut self, ctx: &UsocketCtx, data: &[u8]) -> SockResult<usize> {
        let deadline = self.timeout.deadline();
        if !self.has_peer(deadline).await? {
            return Ok(0);
        }
        let quota = ctx.quota();
        let (os, _) = self.connection()?;
        let mut sent = 0;
        while sent < data.len() {
            let chunk = &data[sent..sent + quota.send_budget(data.len() - sent)?];
            match os.send(chunk, deadline).await {
                Ok(n) => {
                    sent += n;
                    quota.sent(n).await;
                }
                Err(Errno::EAGAIN) if deadline.is_now() => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// `close()`: unread received data turns it into a reset, as a kernel socket's close does.
    pub(super) fn close(&mut self) {
        if let State::Connected(os, rx) = &self.state
            && rx.len() > 0
        {
            os.reset_on_close();
        }
        self.enter(|_| State::Closed);
    }

    pub(super) fn local_address(&self) -> SockResult<SocketAddr> {
        match &self.state {
            State::Fresh(_) => Err(Errno::EINVAL),
            state => state.os()?.local_addr(),
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

    /// The kernel's revents, plus POLLIN for what the queue holds.
    pub(super) fn revents(&self, mask: u32) -> u32 {
        match &self.state {
            State::Closed => POLL_CLOSED,
            State::Connected(os, rx) if mask & POLLIN != 0 && rx.has_news() => {
                os.revents(mask) | POLLIN
            }
            state => state.os().map_or(POLL_CLOSED, |os| os.revents(mask)),
        }
    }

    pub(super) async fn readiness(&self, mask: u32) {
        if let Ok(os) = self.os() {
            os.readiness(mask, || self.revents(mask) != 0).await;
        }
    }
}
