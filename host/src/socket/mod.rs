//! The socket core: MicroPython socket semantics over tokio and host sockets. Knows nothing
//! of WIT; the bindings map each guest call onto one method of [`Socket`].
//!
//! Layers, each in its own file:
//! - [`os`]: the OS socket, its tokio registration, waiting under a deadline, the syscalls
//!   (those a policy guards take a grant from the gate);
//! - [`rx_queue`]: a stream's receive queue, a pure buffer;
//! - [`stream`] and [`datagram`]: the two state machines and their calls, each counting what
//!   it takes from the kernel against the guest's quotas (bytes, rate, host buffers) once;
//! - this file: creating sockets and dispatching each call to its kind, with what the two
//!   share (argument checks);
//! - [`poll`] and [`getaddrinfo`]: the calls that are not methods of one socket.

mod datagram;
pub(crate) mod getaddrinfo;
mod os;
pub(crate) mod poll;
mod rx_queue;
mod stream;
pub(crate) mod tls;

use std::net::SocketAddr;

use rustix::net::RecvFlags;
use usocket_abi::{
    IPPROTO_SEC, IPPROTO_TCP, IPPROTO_UDP, MSG_DONTWAIT, MSG_PEEK, SOCK_DGRAM, SOCK_STREAM,
};

use crate::addr::Family;
use crate::ctx::UsocketCtx;
use crate::errno::{Errno, SockResult};
use datagram::Datagram;
pub(crate) use os::Kind;
pub(crate) use os::OptValue;
use os::{Deadline, Os, Timeout};
use stream::Stream;
pub(crate) use tls::TlsParams;

/// How much a stream read asks the kernel for at once when it fills the receive queue.
const READ_CHUNK: usize = 64 * 1024;
/// The most one `recv` returns, and one fill of the receive queue asks for: sizes come from
/// the guest, and a `recv(2**32-1)` must not make the host allocate 4 GiB. (`recv` may always
/// return fewer bytes than asked.)
const MAX_RECV: usize = 1 << 20;
/// The largest UDP payload; `read()` of a datagram socket receives up to this.
const MAX_DATAGRAM: usize = 65535;

impl Kind {
    /// The kind of a MicroPython type number.
    pub(crate) fn from_number(n: i32) -> Option<Kind> {
        match n {
            SOCK_STREAM => Some(Kind::Stream),
            SOCK_DGRAM => Some(Kind::Datagram),
            _ => None,
        }
    }

    /// The MicroPython type number.
    pub(crate) fn number(self) -> i32 {
        match self {
            Kind::Stream => SOCK_STREAM,
            Kind::Datagram => SOCK_DGRAM,
        }
    }

    /// The protocol number of this kind.
    pub(crate) fn proto(self) -> i32 {
        match self {
            Kind::Stream => IPPROTO_TCP,
            Kind::Datagram => IPPROTO_UDP,
        }
    }
}

/// Where a socket is in its life (for logs and tests; each kind's state carries the data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Fresh,
    Bound,
    Listening,
    Connecting,
    Connected,
    Closed,
}

/// One guest socket: the resource behind the WIT's `socket`. Opaque to embedders; dropping it
/// closes the OS socket and gives its quota slot back.
pub struct Socket(Inner);

enum Inner {
    Stream(Stream),
    Datagram(Datagram),
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("family", &self.family())
            .field("kind", &self.kind())
            .field("phase", &self.phase())
            .finish()
    }
}

/// Calls the same method on either kind.
macro_rules! each_kind {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            Inner::Stream($s) => $call,
            Inner::Datagram($s) => $call,
        }
    };
}

impl Socket {
    /// `socket(af, type, proto)`: validates the numbers, takes a quota slot, opens the socket.
    pub(crate) fn create(
        ctx: &UsocketCtx,
        af: i32,
        socktype: i32,
        proto: i32,
    ) -> SockResult<Socket> {
        let family = Family::from_af(af).ok_or(Errno::EAFNOSUPPORT)?;
        let kind = Kind::from_number(socktype).ok_or(Errno::EINVAL)?;
        let sec = kind == Kind::Stream && proto == IPPROTO_SEC;
        if proto != 0 && proto != kind.proto() && !sec {
            return Err(Errno::EINVAL);
        }
        let os = Os::open(family, kind, ctx.quota().take_slot()?)?;
        Ok(Socket(match kind {
            Kind::Stream => {
                let mut stream = Stream::new(family, os);
                if sec {
                    stream.tls_on_connect(TlsParams::default());
                }
                Inner::Stream(stream)
            }
            Kind::Datagram => Inner::Datagram(Datagram::new(family, os)),
        }))
    }

    pub(crate) fn family(&self) -> Family {
        each_kind!(&self.0, s => s.family)
    }

    pub(crate) fn kind(&self) -> Kind {
        match self.0 {
            Inner::Stream(_) => Kind::Stream,
            Inner::Datagram(_) => Kind::Datagram,
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        each_kind!(&self.0, s => s.phase())
    }

    /// EBADF once closed: the check of every call but `close`.
    pub(crate) fn ensure_open(&self) -> SockResult<()> {
        each_kind!(&self.0, s => s.os().map(drop))
    }

    /// `settimeout`.
    pub(crate) fn set_timeout(&mut self, seconds: Option<f64>) -> SockResult<()> {
        self.ensure_open()?;
        let timeout = Timeout::from_seconds(seconds)?;
        each_kind!(&mut self.0, s => s.timeout = timeout);
        Ok(())
    }

    /// `setsockopt(level, option, value)` for the options of the contract.
    pub(crate) fn set_option(
        &self,
        level: i32,
        option: i32,
        value: OptValue<'_>,
    ) -> SockResult<()> {
        each_kind!(&self.0, s => s.set_option(level, option, value))
    }

    /// `bind(addr)`: explicit binds only, once.
    pub(crate) fn bind(&mut self, ctx: &UsocketCtx, address: &str, port: i32) -> SockResult<()> {
        each_kind!(&mut self.0, s => s.bind(ctx, address, port))
    }

    /// `listen(backlog)`.
    pub(crate) fn listen(&mut self, ctx: &UsocketCtx, backlog: i32) -> SockResult<()> {
        match &mut self.0 {
            Inner::Stream(s) => s.listen(ctx, backlog),
            Inner::Datagram(d) => d.os().and(Err(Errno::EOPNOTSUPP)),
        }
    }

    /// `accept()`: the next connection, in this socket's timeout mode.
    pub(crate) async fn accept(&mut self, ctx: &UsocketCtx) -> SockResult<(Socket, SocketAddr)> {
        match &mut self.0 {
            Inner::Stream(s) => {
                let (conn, peer) = s.accept(ctx).await?;
                Ok((Socket(Inner::Stream(conn)), peer))
            }
            Inner::Datagram(d) => d.os().and(Err(Errno::EOPNOTSUPP)),
        }
    }

    /// `connect(addr)`: a handshake for streams, the default peer for datagrams.
    pub(crate) async fn connect(
        &mut self,
        ctx: &UsocketCtx,
        address: &str,
        port: i32,
    ) -> SockResult<()> {
        match &mut self.0 {
            Inner::Stream(s) => s.connect(ctx, address, port).await,
            Inner::Datagram(d) => d.connect(ctx, address, port),
        }
    }

    /// The deadline and kernel flags of a `recv`'s flags (EINVAL for any but MSG_PEEK and
    /// MSG_DONTWAIT).
    fn recv_flags(&self, flags: i32) -> SockResult<(Deadline, RecvFlags)> {
        if flags & !(MSG_PEEK | MSG_DONTWAIT) != 0 {
            return Err(Errno::EINVAL);
        }
        let deadline = if flags & MSG_DONTWAIT != 0 {
            Deadline::Now
        } else {
            each_kind!(&self.0, s => s.timeout).deadline()
        };
        let peek = if flags & MSG_PEEK != 0 {
            RecvFlags::PEEK
        } else {
            RecvFlags::empty()
        };
        Ok((deadline, peek))
    }

    /// `recv(max, flags)`.
    pub(crate) async fn recv(
        &mut self,
        ctx: &UsocketCtx,
        max: usize,
        flags: i32,
    ) -> SockResult<Vec<u8>> {
        Ok(self.recv_from_inner(ctx, max, flags).await?.0)
    }

    /// `recvfrom(max, flags)`.
    pub(crate) async fn recv_from(
        &mut self,
        ctx: &UsocketCtx,
        max: usize,
        flags: i32,
    ) -> SockResult<(Vec<u8>, SocketAddr)> {
        match self.recv_from_inner(ctx, max, flags).await? {
            (data, Some(from)) => Ok((data, from)),
            (data, None) => Ok((data, self.peer_address()?)),
        }
    }

    /// `recv`/`recvfrom`: the data, and for datagrams the sender. Each kind counts what comes
    /// in from the kernel against the guest's receive quota and rate, once.
    async fn recv_from_inner(
        &mut self,
        ctx: &UsocketCtx,
        max: usize,
        flags: i32,
    ) -> SockResult<(Vec<u8>, Option<SocketAddr>)> {
        self.ensure_open()?;
        let (deadline, peek) = self.recv_flags(flags)?;
        match &mut self.0 {
            Inner::Stream(s) => Ok((s.recv(ctx, max, deadline, peek).await?, None)),
            Inner::Datagram(d) => {
                let (data, from) = d.recv(ctx, max, deadline, peek).await?;
                Ok((data, Some(from)))
            }
        }
    }

    /// `read(n)` with `Some(n)`, `read()` with `None`. `Ok(None)`: non-blocking and nothing
    /// available (also while a non-blocking connect is still pending).
    pub(crate) async fn read(
        &mut self,
        ctx: &UsocketCtx,
        n: Option<usize>,
    ) -> SockResult<Option<Vec<u8>>> {
        self.ensure_open()?;
        match &mut self.0 {
            Inner::Stream(s) => s.read(ctx, n).await,
            Inner::Datagram(_) => match self.recv(ctx, n.unwrap_or(MAX_DATAGRAM), 0).await {
                Err(Errno::EAGAIN) => Ok(None),
                other => other.map(Some),
            },
        }
    }

    /// `readline(limit)`: one line with its `\n`, the last partial line at EOF, then `b""`.
    /// A datagram socket reads one datagram.
    pub(crate) async fn readline(
        &mut self,
        ctx: &UsocketCtx,
        limit: Option<usize>,
    ) -> SockResult<Option<Vec<u8>>> {
        self.ensure_open()?;
        match &mut self.0 {
            Inner::Stream(s) => s.readline(ctx, limit).await,
            Inner::Datagram(_) => self.read(ctx, limit).await,
        }
    }

    /// `readline(limit)` for guest libraries with a read-ahead buffer: the line, then up to
    /// `ahead` bytes already queued in the host after it (never waiting for more; none for
    /// datagrams), in one buffer, and the line's length. The guest then owns the bytes after
    /// the line, and gives back what it does not use with [`Socket::unread`].
    pub(crate) async fn readline_ahead(
        &mut self,
        ctx: &UsocketCtx,
        limit: Option<usize>,
        ahead: usize,
    ) -> SockResult<Option<(Vec<u8>, usize)>> {
        self.ensure_open()?;
        match &mut self.0 {
            Inner::Stream(s) => s.readline_ahead(ctx, limit, ahead).await,
            Inner::Datagram(_) => Ok(self.read(ctx, limit).await?.map(|d| {
                let n = d.len();
                (d, n)
            })),
        }
    }

    /// `read-ahead(max)`: received bytes lent to a guest library's read-ahead buffer.
    pub(crate) async fn read_ahead(
        &mut self,
        ctx: &UsocketCtx,
        max: usize,
    ) -> SockResult<Option<Vec<u8>>> {
        self.ensure_open()?;
        match &mut self.0 {
            Inner::Stream(s) => s.read_ahead(ctx, max).await,
            Inner::Datagram(_) => Err(Errno::EOPNOTSUPP),
        }
    }

    /// Puts bytes back at the head of a stream's receive queue: read-ahead that a guest library
    /// did not use. Later reads return them first, `poll` counts them, and a close with them
    /// still queued resets the connection, as for any unread data.
    ///
    /// Errors: EOPNOTSUPP (datagram socket), ENOTCONN (no connection), ENOBUFS (more than
    /// was lent, and the extra would exceed the buffer limits; what was lent always fits),
    /// EBADF.
    pub(crate) fn unread(&mut self, ctx: &UsocketCtx, data: &[u8]) -> SockResult<()> {
        match &mut self.0 {
            Inner::Stream(s) => s.unread(ctx, data),
            Inner::Datagram(d) => d.os().and(Err(Errno::EOPNOTSUPP)),
        }
    }

    /// `send(data)`: what fits, at least one byte unless non-blocking or timed out; one
    /// datagram on a datagram socket.
    pub(crate) async fn send(&mut self, ctx: &UsocketCtx, data: &[u8]) -> SockResult<usize> {
        each_kind!(&mut self.0, s => s.send(ctx, data).await)
    }

    /// `write(data)` / `sendall(data)`: all of it (blocking), all or ETIMEDOUT (timed), or what
    /// fits now (non-blocking, possibly 0).
    pub(crate) async fn write(&mut self, ctx: &UsocketCtx, data: &[u8]) -> SockResult<usize> {
        match &mut self.0 {
            Inner::Stream(s) => s.write(ctx, data).await,
            Inner::Datagram(d) => d.send(ctx, data).await,
        }
    }

    /// `sendto(data, addr)`: one datagram (on a stream socket: EISCONN if connected, else
    /// ENOTCONN).
    pub(crate) async fn send_to(
        &mut self,
        ctx: &UsocketCtx,
        data: &[u8],
        address: &str,
        port: i32,
    ) -> SockResult<usize> {
        match &mut self.0 {
            Inner::Stream(s) => {
                s.os()?;
                Err(if s.phase() == Phase::Connected {
                    Errno::EISCONN
                } else {
                    Errno::ENOTCONN
                })
            }
            Inner::Datagram(d) => d.send_to(ctx, data, address, port).await,
        }
    }

    /// The guest dropped its handle: a stream closes as with `close` (a TLS one sends
    /// close_notify); the descriptor goes when the socket is dropped.
    pub(crate) fn dropped_by_guest(&mut self) {
        if let Inner::Stream(s) = &mut self.0 {
            s.dropped_by_guest();
        }
    }

    /// Before `close` (or the guest's drop): a TLS stream sends what the host holds and
    /// close_notify, waiting a little (see [`stream::Stream::finish_tls`]).
    pub(crate) async fn finish_tls(&mut self) {
        if let Inner::Stream(s) = &mut self.0 {
            s.finish_tls().await;
        }
    }

    /// `close()`: idempotent.
    pub(crate) fn close(&mut self) {
        each_kind!(&mut self.0, s => s.close())
    }

    /// The bound local address (EINVAL before there is one).
    pub(crate) fn local_address(&self) -> SockResult<SocketAddr> {
        each_kind!(&self.0, s => s.local_address())
    }

    /// The peer's address (ENOTCONN without one).
    /// `start-tls`: makes a connected stream a TLS one (see [`tls`]).
    pub(crate) async fn start_tls(
        &mut self,
        ctx: &UsocketCtx,
        params: TlsParams,
        handshake: bool,
    ) -> SockResult<()> {
        self.ensure_open()?;
        match &mut self.0 {
            Inner::Stream(s) => s.start_tls(ctx, params, handshake).await,
            Inner::Datagram(_) => Err(Errno::EINVAL),
        }
    }

    /// The peer's certificate (DER) once a TLS handshake has finished.
    pub(crate) fn peer_certificate(&self) -> SockResult<Option<Vec<u8>>> {
        self.ensure_open()?;
        match &self.0 {
            Inner::Stream(s) => Ok(s.peer_certificate()),
            Inner::Datagram(_) => Ok(None),
        }
    }

    pub(crate) fn peer_address(&self) -> SockResult<SocketAddr> {
        each_kind!(&self.0, s => s.peer_address())
    }

    /// The `poll` revents of this socket now, for the POLLIN/POLLOUT bits in `mask`: the
    /// kernel's answer (so values match Linux), plus POLLIN for bytes queued in the host;
    /// POLL_CLOSED once closed.
    pub(crate) fn revents(&self, mask: u32) -> u32 {
        each_kind!(&self.0, s => s.revents(mask))
    }

    /// `poll`'s look at this socket for `mask`: its revents now, after taking what a look
    /// can take. A listener asked for POLLIN admits its pending connections first (see
    /// [`Socket::admit_pending`]); a plain connection the reactor saw become readable reads
    /// the kernel's bytes into the host (see [`stream::Stream::prefetch`]).
    pub(crate) fn look(&mut self, ctx: &UsocketCtx, mask: u32) -> u32 {
        self.admit_pending(ctx, mask);
        if let Inner::Stream(s) = &mut self.0 {
            s.prefetch(ctx, mask);
        }
        self.revents(mask)
    }

    /// Before [`Socket::revents`] in `poll`: a listener asked for POLLIN takes its pending
    /// connections from the kernel and keeps only those the policy admits, so that it is
    /// readable only when `accept` has a connection to give.
    pub(crate) fn admit_pending(&self, ctx: &UsocketCtx, mask: u32) {
        if let Inner::Stream(s) = &self.0
            && mask & usocket_abi::POLLIN != 0
        {
            s.admit_pending(ctx, os::Look::Cached);
        }
    }

    /// Waits until [`Socket::revents`] may have changed for `mask`. Spurious wake-ups are
    /// possible; a caller re-checks with `revents`.
    pub(crate) async fn readiness(&self, mask: u32) {
        each_kind!(&self.0, s => s.readiness(mask).await)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
