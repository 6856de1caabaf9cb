//! Datagram (UDP) sockets: their states, and MicroPython's calls over them.
//!
//! ```text
//!          bind / first sendto (implicit bind)
//!   Fresh ───────────────────────────────────> Bound
//!     │ connect (implicit bind)                  │ connect
//!     └──────────────> Connected(peer) <─────────┘   (connect again: a new peer)
//!   any state ── close ──> Closed (no descriptor: every call but close is EBADF)
//! ```
//!
//! Every datagram is a use of its own: each destination is granted (`send`) before it leaves,
//! and each sender admitted (`recv`) before the guest sees its datagram; refused datagrams
//! are dropped unseen.

use std::net::SocketAddr;

use rustix::net::RecvFlags;
use usocket_abi::POLL_CLOSED;

use super::os::{Deadline, Kind, OptValue, Os, Timeout};
use super::{MAX_DATAGRAM, Phase};
use crate::addr::{self, Family, Purpose};
use crate::ctx::UsocketCtx;
use crate::errno::{Errno, SockResult};
use crate::gate::{Grant, uses};
use crate::policy::Use;
use crate::quota::Direction;

/// Where a datagram socket is in its life, with what it holds there.
enum State {
    /// Just created: nothing can arrive yet.
    Fresh(Os),
    /// Has a local address (explicit `bind` or the first `sendto`).
    Bound(Os),
    /// Has a default peer: `send` goes there, and only its datagrams arrive.
    Connected(Os, SocketAddr),
    /// After `close()`.
    Closed,
}

impl State {
    fn phase(&self) -> Phase {
        match self {
            State::Fresh(_) => Phase::Fresh,
            State::Bound(_) => Phase::Bound,
            State::Connected(..) => Phase::Connected,
            State::Closed => Phase::Closed,
        }
    }

    fn os(&self) -> SockResult<&Os> {
        match self {
            State::Fresh(os) | State::Bound(os) | State::Connected(os, _) => Ok(os),
            State::Closed => Err(Errno::EBADF),
        }
    }
}

pub(crate) struct Datagram {
    pub(super) family: Family,
    pub(super) timeout: Timeout,
    state: State,
}

impl Datagram {
    pub(super) fn new(family: Family, os: Os) -> Datagram {
        Datagram {
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

    /// The one place the state changes, as for streams.
    fn enter(&mut self, next: impl FnOnce(Os) -> State) {
        let from = self.state.phase();
        self.state = match std::mem::replace(&mut self.state, State::Closed) {
            State::Fresh(os) | State::Bound(os) | State::Connected(os, _) => next(os),
            State::Closed => State::Closed,
        };
        tracing::debug!(target: "usocket::socket", kind = "datagram", ?from, to = ?self.state.phase(), "transition");
    }

    /// The implicit bind a use causes on a socket without a local address.
    fn implicit_bind(&self) -> Option<Family> {
        matches!(self.state, State::Fresh(_)).then_some(self.family)
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

    /// `connect(addr)`: sets the default peer (never blocks).
    pub(super) fn connect(&mut self, ctx: &UsocketCtx, address: &str, port: i32) -> SockResult<()> {
        let os = self.os()?;
        let addr = addr::parse(self.family, address, port, Purpose::Destination)?;
        let grant = ctx
            .gate()
            .grant::<uses::Connect>(addr, self.implicit_bind())?;
        os.connect(&grant)?;
        self.enter(|os| State::Connected(os, addr));
        Ok(())
    }

    /// One datagram to a granted destination, whole or not at all. Its rate tokens are taken
    /// before it leaves (a blocking send waits for them; timed or non-blocking, only until
    /// the deadline).
    async fn send_granted(
        &mut self,
        ctx: &UsocketCtx,
        grant: Grant<uses::Send>,
        data: &[u8],
    ) -> SockResult<usize> {
        let quota = ctx.quota();
        if quota.send_budget(data.len())? < data.len() {
            // A datagram is never cut short: the quota refuses it whole.
            return Err(Errno::ENOMEM);
        }
        let deadline = self.timeout.deadline();
        if !data.is_empty()
            && quota
                .allowance(Direction::Send, data.len(), true, deadline.until())
                .await
                == 0
        {
            return Err(deadline.missed());
        }
        let result = self.os()?.send_to(&grant, data, deadline).await;
        if let State::Fresh(os) = &self.state
            && os.bound_addr().is_some()
        {
            // The kernel bound an ephemeral port for the first datagram. (Not when the call
            // ended before the datagram reached the kernel, a timeout waiting for the socket
            // to be writable: the socket is still without an address, and its next datagram
            // is again an implicit bind for the policy.)
            self.enter(State::Bound);
        }
        let n = *result.as_ref().unwrap_or(&0);
        quota.refund(Direction::Send, data.len() - n);
        quota.sent(n);
        result
    }

    /// `sendto(data, addr)`.
    pub(super) async fn send_to(
        &mut self,
        ctx: &UsocketCtx,
        data: &[u8],
        address: &str,
        port: i32,
    ) -> SockResult<usize> {
        self.os()?;
        let addr = addr::parse(self.family, address, port, Purpose::Destination)?;
        let grant = ctx.gate().grant::<uses::Send>(addr, self.implicit_bind())?;
        self.send_granted(ctx, grant, data).await
    }

    /// `send(data)` / `write(data)`: one datagram to the connected peer.
    pub(super) async fn send(&mut self, ctx: &UsocketCtx, data: &[u8]) -> SockResult<usize> {
        let peer = match self.state {
            State::Connected(_, peer) => peer,
            State::Closed => return Err(Errno::EBADF),
            _ => return Err(Errno::ENOTCONN),
        };
        // Every datagram's destination is a use of its own.
        let grant = ctx.gate().grant::<uses::Send>(peer, None)?;
        self.send_granted(ctx, grant, data).await
    }

    /// One datagram whose sender the policy admits, truncated to `max`; others are dropped
    /// unseen and the wait goes on, under the same deadline. What the guest gets counts
    /// against its receive quota and rate (not a peek's: it stays queued); a datagram's size
    /// is known only once it is in, so the rate limit waits for a token first and charges the
    /// rest after.
    pub(super) async fn recv(
        &self,
        ctx: &UsocketCtx,
        max: usize,
        deadline: Deadline,
        flags: RecvFlags,
    ) -> SockResult<(Vec<u8>, SocketAddr)> {
        let os = match &self.state {
            // Without a local address nothing can arrive: the contract's ENOTCONN.
            State::Fresh(_) => return Err(Errno::ENOTCONN),
            state => state.os()?,
        };
        let quota = ctx.quota();
        let peek = flags.contains(RecvFlags::PEEK);
        let max = quota.recv_budget(max)?;
        loop {
            let token = if peek {
                0
            } else {
                match quota
                    .allowance(Direction::Recv, 1, false, deadline.until())
                    .await
                {
                    0 => return Err(deadline.missed()),
                    n => n,
                }
            };
            // A zero-length read still consumes one datagram, as recv(0) does.
            let mut data = Vec::with_capacity(max.clamp(1, MAX_DATAGRAM));
            let from = match os.recv_from_into(&mut data, deadline, flags).await {
                Ok(from) => from,
                Err(e) => {
                    quota.refund(Direction::Recv, token);
                    return Err(e);
                }
            };
            if ctx.gate().admits(Use::Recv, from) {
                data.truncate(max);
                if !peek {
                    quota.refund(Direction::Recv, token.saturating_sub(data.len()));
                    quota.charge(Direction::Recv, data.len().saturating_sub(token));
                    quota.received(data.len());
                }
                return Ok((data, from));
            }
            quota.refund(Direction::Recv, token);
            if peek {
                // A peek left it queued: take it off before looking at the next one.
                os.discard_datagram();
            }
        }
    }

    pub(super) fn close(&mut self) {
        self.enter(|_| State::Closed);
    }

    pub(super) fn local_address(&self) -> SockResult<SocketAddr> {
        match &self.state {
            State::Fresh(_) => Err(Errno::EINVAL),
            // Never ("0.0.0.0", 0): without a port the socket is not bound.
            state => state.os()?.bound_addr().ok_or(Errno::EINVAL),
        }
    }

    pub(super) fn peer_address(&self) -> SockResult<SocketAddr> {
        match &self.state {
            State::Connected(_, peer) => Ok(*peer),
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
        self.os()?.set_option(Kind::Datagram, level, option, value)
    }

    pub(super) fn revents(&self, mask: u32) -> u32 {
        self.os().map_or(POLL_CLOSED, |os| {
            // A datagram socket has no state that registering would spoil: later looks can
            // answer from the reactor.
            os.watch();
            os.revents(mask)
        })
    }

    pub(super) async fn readiness(&self, mask: u32) {
        if let Ok(os) = self.os() {
            os.readiness(mask, || self.revents(mask) != 0).await;
        }
    }
}
