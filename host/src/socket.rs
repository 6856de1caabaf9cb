//! The socket state machine: MicroPython socket semantics over tokio and host sockets.
//!
//! Knows nothing of WIT; the bindings map each guest call onto one method here. Every method
//! checks the state first, then the policy, and only then makes a syscall.
//!
//! All I/O goes through one non-blocking OS socket registered with tokio (`AsyncFd`), so a
//! blocked call suspends only its own guest, and readiness for `poll` is uniform across states.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::event::{PollFd, PollFlags};
use rustix::net::{RecvFlags, SendFlags};
use socket2::{Domain, Protocol, SockAddr, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::addr::{self, Family, Purpose};
use crate::ctx::{Slot, UsocketCtx};
use crate::errno::{Errno, SockResult};
use crate::policy::Use;

/// MicroPython's SOCK_STREAM / SOCK_DGRAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SOCK_STREAM (1): TCP.
    Stream,
    /// SOCK_DGRAM (2): UDP.
    Datagram,
}

impl Kind {
    /// The MicroPython type number.
    pub fn number(self) -> i32 {
        match self {
            Kind::Stream => 1,
            Kind::Datagram => 2,
        }
    }

    /// The protocol number of this type (IPPROTO_TCP 6, IPPROTO_UDP 17).
    pub fn proto(self) -> i32 {
        match self {
            Kind::Stream => 6,
            Kind::Datagram => 17,
        }
    }

    /// The type of a MicroPython type number.
    pub fn from_number(n: i32) -> Option<Kind> {
        match n {
            1 => Some(Kind::Stream),
            2 => Some(Kind::Datagram),
            _ => None,
        }
    }
}

/// The three modes of SEMANTICS.md "Blocking, timeouts, non-blocking".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// `settimeout(None)`: wait as long as it takes (the default).
    Blocking,
    /// `settimeout(0)`: never wait; EAGAIN (or a short result) instead.
    NonBlocking,
    /// `settimeout(t)`: each call has a deadline `t` after it starts.
    Timed(Duration),
}

impl Timeout {
    /// Parses `settimeout`'s argument: negative or NaN is EINVAL; a duration too large to
    /// represent is as good as blocking.
    pub fn from_seconds(seconds: Option<f64>) -> SockResult<Timeout> {
        match seconds {
            None => Ok(Timeout::Blocking),
            Some(s) if s.is_nan() || s < 0.0 => Err(Errno::EINVAL),
            Some(0.0) => Ok(Timeout::NonBlocking),
            Some(s) => Ok(Duration::try_from_secs_f64(s).map_or(Timeout::Blocking, Timeout::Timed)),
        }
    }

    fn deadline(self) -> Deadline {
        match self {
            Timeout::Blocking => Deadline::Never,
            Timeout::NonBlocking => Deadline::Now,
            Timeout::Timed(d) => Instant::now()
                .checked_add(d)
                .map_or(Deadline::Never, Deadline::At),
        }
    }
}

/// When one call must give up waiting.
#[derive(Clone, Copy, Debug)]
enum Deadline {
    /// Do not wait at all (non-blocking mode, MSG_DONTWAIT).
    Now,
    /// Wait without limit.
    Never,
    /// Wait until then, then ETIMEDOUT.
    At(Instant),
}

/// `recv` flags a guest may pass.
const MSG_PEEK: i32 = 2;
const MSG_DONTWAIT: i32 = 64;

/// How much a stream read asks the kernel for at once when it fills the host buffer.
const READ_CHUNK: usize = 64 * 1024;
/// The most one `recv` returns, and one fill of the host buffer asks for: sizes come from the
/// guest, and a `recv(2**32-1)` must not make the host allocate 4 GiB. (`recv` may always
/// return fewer bytes than asked.)
const MAX_RECV: usize = 1 << 20;
/// The largest UDP payload; `read()` of a datagram socket receives up to this.
const MAX_DATAGRAM: usize = 65535;
/// `listen` backlogs above this are clamped (SEMANTICS.md: "host may clamp").
const MAX_BACKLOG: i32 = 4096;
/// How often `poll` re-checks a socket whose tokio readiness is stuck at "closed".
const CLOSED_RECHECK: Duration = Duration::from_millis(10);

/// Where a socket is in its life. Closed sockets have no [`Io`] left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Just created. From here: `Bound` (bind), `Listening` (listen, which binds an ephemeral
    /// port), `Connecting`/`Connected` (connect), or a datagram `Bound` by its first `sendto`.
    Fresh,
    /// Has a local address. From here: `Listening`, `Connecting`, `Connected`.
    Bound,
    /// A stream socket accepting connections. Stays here until closed.
    Listening,
    /// A non-blocking (or timed-out) stream connect is under way. Becomes `Connected` once the
    /// handshake is seen to complete, or `Bound` again if it failed (the error is reported once).
    Connecting,
    /// A stream socket with a peer, or a datagram socket with a default peer.
    Connected,
    /// After `close()`: every call but `close` fails with EBADF.
    Closed,
}

/// Bytes received from the kernel and not yet given to the guest, plus what ended the stream.
///
/// This is what makes `read(n)`/`readline()` one host call each and keeps the promise that
/// nothing received is lost when a call times out.
#[derive(Debug, Default)]
struct RxQueue {
    buf: Vec<u8>,
    head: usize,
    /// The peer closed its side: every later read returns what is queued, then `b""`.
    eof: bool,
    /// An error (ECONNRESET) that arrived while a read still had bytes to return: reported by
    /// the next read once the queue is empty, then the stream is at EOF.
    error: Option<Errno>,
}

impl RxQueue {
    fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    fn queued(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Removes and returns the first `n` queued bytes; without a copy when that is all of them.
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.len());
        if self.head == 0 && n == self.buf.len() {
            return std::mem::take(&mut self.buf);
        }
        let out = self.buf[self.head..self.head + n].to_vec();
        self.head += n;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        }
        out
    }

    /// Makes room for at least `want` more bytes at the end, reusing consumed space.
    fn reserve(&mut self, want: usize) {
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.reserve(want);
    }

    /// Puts `data` back in front of the queue.
    fn unread(&mut self, data: &[u8]) {
        if data.len() <= self.head {
            // The usual case: these are the bytes just taken, and their room is still there.
            self.head -= data.len();
            self.buf[self.head..self.head + data.len()].copy_from_slice(data);
        } else {
            let mut buf = Vec::with_capacity(data.len() + self.len());
            buf.extend_from_slice(data);
            buf.extend_from_slice(self.queued());
            self.buf = buf;
            self.head = 0;
        }
    }

    /// Takes the pending error if nothing is queued before it; afterwards the stream is at EOF.
    fn take_error(&mut self) -> Option<Errno> {
        if self.len() > 0 {
            return None;
        }
        let err = self.error.take()?;
        self.eof = true;
        Some(err)
    }
}

/// The OS socket, and its registration with tokio's reactor.
///
/// Registration waits until the first blocking wait: a TCP socket that has neither connected
/// nor listened reports EPOLLHUP, which tokio keeps as a final "closed" readiness, and every
/// later wait would then spin. By the first wait the socket is connecting, connected or
/// listening (or is a UDP socket, which has no such state).
struct Os {
    /// Declared before `sock` so that it is dropped (deregistered) before the socket closes.
    reactor: OnceLock<io::Result<AsyncFd<RawSocket>>>,
    sock: socket2::Socket,
}

/// The descriptor of an [`Os`] socket, as tokio's reactor sees it.
struct RawSocket(RawFd);

impl AsRawFd for RawSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Os {
    fn reactor(&self) -> SockResult<&AsyncFd<RawSocket>> {
        let registered = self.reactor.get_or_init(|| {
            let fd = RawSocket(self.sock.as_raw_fd());
            // SAFETY: the descriptor belongs to `self.sock`, which outlives the registration:
            // `reactor` is dropped first (field order) or taken in `unregister`.
            #[allow(
                unsafe_code,
                reason = "tokio's registration asks the caller to vouch for fd ownership"
            )]
            let registered = unsafe { AsyncFd::register(fd) };
            registered.map_err(|e| e.into_parts().1)
        });
        registered.as_ref().map_err(Errno::from_io)
    }

    /// Forgets the registration, e.g. after a failed connect left a final HUP readiness.
    fn unregister(&mut self) {
        self.reactor.take();
    }

    /// Runs `op` on the socket until it stops saying "would block", waiting for `interest`
    /// between tries as `deadline` allows.
    async fn wait<R>(
        &self,
        interest: Interest,
        deadline: Deadline,
        mut op: impl FnMut(&socket2::Socket) -> io::Result<R>,
    ) -> SockResult<R> {
        let sock = &self.sock;
        let mut retrying = || loop {
            match op(sock) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        };
        let result = match deadline {
            Deadline::Now => retrying(),
            Deadline::Never => self.reactor()?.async_io(interest, |_| retrying()).await,
            Deadline::At(at) => {
                let io = self.reactor()?.async_io(interest, |_| retrying());
                match tokio::time::timeout_at(at, io).await {
                    Ok(result) => result,
                    Err(_elapsed) => return Err(Errno::ETIMEDOUT),
                }
            }
        };
        result.map_err(Errno::from)
    }
}

/// The live parts of an open socket.
struct Io {
    os: Os,
    rx: RxQueue,
    _slot: Slot,
}

/// One guest socket.
pub struct Socket {
    family: Family,
    kind: Kind,
    timeout: Timeout,
    phase: Phase,
    /// A connected datagram socket's peer: the destination every `send` is checked against,
    /// kept here so the per-datagram check costs no syscall.
    udp_peer: Option<SocketAddr>,
    io: Option<Io>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("family", &self.family)
            .field("kind", &self.kind)
            .field("phase", &self.phase)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Socket {
    /// `socket(af, type, proto)`: validates the numbers, takes a quota slot, opens the socket.
    pub fn create(ctx: &UsocketCtx, af: i32, socktype: i32, proto: i32) -> SockResult<Socket> {
        let family = Family::from_af(af).ok_or(Errno::EAFNOSUPPORT)?;
        let kind = Kind::from_number(socktype).ok_or(Errno::EINVAL)?;
        if proto != 0 && proto != kind.proto() {
            return Err(Errno::EINVAL);
        }
        let slot = ctx.take_slot()?;
        let domain = match family {
            Family::V4 => Domain::IPV4,
            Family::V6 => Domain::IPV6,
        };
        let (ty, protocol) = match kind {
            Kind::Stream => (Type::STREAM, Protocol::TCP),
            Kind::Datagram => (Type::DGRAM, Protocol::UDP),
        };
        let sock = socket2::Socket::new(domain, ty.nonblocking(), Some(protocol))?;
        if family == Family::V6 {
            // An IPv6 socket must never reach IPv4 through v4-mapped addresses.
            sock.set_only_v6(true)?;
        }
        Ok(Socket::from_os(
            family,
            kind,
            Timeout::Blocking,
            Phase::Fresh,
            sock,
            slot,
        )?)
    }

    fn from_os(
        family: Family,
        kind: Kind,
        timeout: Timeout,
        phase: Phase,
        sock: socket2::Socket,
        slot: Slot,
    ) -> io::Result<Socket> {
        let os = Os {
            reactor: OnceLock::new(),
            sock,
        };
        Ok(Socket {
            family,
            kind,
            timeout,
            phase,
            udp_peer: None,
            io: Some(Io {
                os,
                rx: RxQueue::default(),
                _slot: slot,
            }),
        })
    }

    /// The socket's family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The socket's type.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Where the socket is in its life.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    fn io(&self) -> SockResult<&Io> {
        self.io.as_ref().ok_or(Errno::EBADF)
    }

    fn io_mut(&mut self) -> SockResult<&mut Io> {
        self.io.as_mut().ok_or(Errno::EBADF)
    }

    /// The open check every call but `close` starts with.
    pub fn ensure_open(&self) -> SockResult<()> {
        self.io().map(drop)
    }

    /// `settimeout`.
    pub fn set_timeout(&mut self, seconds: Option<f64>) -> SockResult<()> {
        self.ensure_open()?;
        self.timeout = Timeout::from_seconds(seconds)?;
        Ok(())
    }

    /// `setsockopt(level, option, value)` for the options of SEMANTICS.md.
    pub fn set_option(&mut self, level: i32, option: i32, value: i32) -> SockResult<()> {
        const SOL_SOCKET: i32 = 1;
        const IPPROTO_TCP: i32 = 6;
        let sock = &self.io()?.os.sock;
        let on = value != 0;
        match (level, option) {
            (SOL_SOCKET, 2) => sock.set_reuse_address(on)?,
            (SOL_SOCKET, 6) => sock.set_broadcast(on)?,
            (SOL_SOCKET, 9) => sock.set_keepalive(on)?,
            (IPPROTO_TCP, 1) if self.kind == Kind::Stream => sock.set_tcp_nodelay(on)?,
            _ => return Err(Errno::ENOPROTOOPT),
        }
        Ok(())
    }

    /// `bind(addr)`: explicit binds only, once.
    pub fn bind(&mut self, ctx: &UsocketCtx, address: &str, port: i32) -> SockResult<()> {
        self.ensure_open()?;
        let addr = addr::parse(self.family, address, port, Purpose::Bind)?;
        if self.phase != Phase::Fresh {
            return Err(Errno::EINVAL);
        }
        ctx.check_addr(Use::Bind, addr)?;
        self.io()?.os.sock.bind(&SockAddr::from(addr))?;
        self.phase = Phase::Bound;
        Ok(())
    }

    /// `listen(backlog)`.
    pub fn listen(&mut self, ctx: &UsocketCtx, backlog: i32) -> SockResult<()> {
        self.ensure_open()?;
        if self.kind != Kind::Stream {
            return Err(Errno::EOPNOTSUPP);
        }
        let local = match self.phase {
            // The kernel binds the wildcard on an ephemeral port first.
            Phase::Fresh => SocketAddr::new(self.family.unspecified(), 0),
            Phase::Bound | Phase::Listening => self.local_address()?,
            Phase::Connecting | Phase::Connected => return Err(Errno::EINVAL),
            Phase::Closed => return Err(Errno::EBADF),
        };
        ctx.check_addr(Use::Listen, local)?;
        if self.phase == Phase::Fresh {
            ctx.check_addr(Use::AutoBind, local)?;
        }
        self.io()?.os.sock.listen(backlog.clamp(0, MAX_BACKLOG))?;
        self.phase = Phase::Listening;
        Ok(())
    }

    /// `accept()`: the next connection, in this socket's timeout mode.
    pub async fn accept(&mut self, ctx: &UsocketCtx) -> SockResult<(Socket, SocketAddr)> {
        self.ensure_open()?;
        if self.kind != Kind::Stream {
            return Err(Errno::EOPNOTSUPP);
        }
        if self.phase != Phase::Listening {
            return Err(Errno::EINVAL);
        }
        // Quota first: an exhausted guest gets ENOMEM at once, not after waiting.
        let slot = ctx.take_slot()?;
        let io = self.io()?;
        let deadline = self.timeout.deadline();
        let (conn, peer) = loop {
            let (conn, peer) = io
                .os
                .wait(Interest::READABLE, deadline, |s| s.accept())
                .await?;
            let peer = peer.as_socket().ok_or(Errno::EIO)?;
            if ctx.check_addr(Use::Accept, peer).is_ok() {
                break (conn, peer);
            }
            // Not granted: reset it and keep waiting; the guest never sees it.
            let _ = conn.set_linger(Some(Duration::ZERO));
        };
        conn.set_nonblocking(true)?;
        let sock = Socket::from_os(
            self.family,
            self.kind,
            self.timeout,
            Phase::Connected,
            conn,
            slot,
        )?;
        Ok((sock, peer))
    }

    /// `connect(addr)`: a handshake for streams, the default peer for datagrams.
    pub async fn connect(&mut self, ctx: &UsocketCtx, address: &str, port: i32) -> SockResult<()> {
        self.ensure_open()?;
        let addr = addr::parse(self.family, address, port, Purpose::Destination)?;
        match (self.kind, self.phase) {
            (_, Phase::Closed) => return Err(Errno::EBADF),
            (Kind::Stream, Phase::Connected) => return Err(Errno::EISCONN),
            (Kind::Stream, Phase::Listening) => return Err(Errno::EINVAL),
            (Kind::Stream, Phase::Connecting) => {
                return self.finish_connect(self.timeout.deadline()).await;
            }
            _ => {}
        }
        // The use first, then the implicit bind it causes (so the audit reads in that order).
        ctx.check_addr(Use::Connect, addr)?;
        if self.phase == Phase::Fresh {
            ctx.check_addr(Use::AutoBind, SocketAddr::new(self.family.unspecified(), 0))?;
        }
        let sock = &self.io()?.os.sock;
        match sock.connect(&SockAddr::from(addr)) {
            Ok(()) => {
                self.phase = Phase::Connected;
                if self.kind == Kind::Datagram {
                    self.udp_peer = Some(addr);
                }
                return Ok(());
            }
            Err(e) if e.raw_os_error() == Some(Errno::EINPROGRESS.0) => {
                self.phase = Phase::Connecting
            }
            Err(e) => return Err(e.into()),
        }
        match self.timeout {
            Timeout::NonBlocking => Err(Errno::EINPROGRESS),
            _ => self.finish_connect(self.timeout.deadline()).await,
        }
    }

    /// Waits (per `deadline`) for a pending stream connect to resolve.
    ///
    /// Non-blocking: EALREADY while pending, EISCONN once connected (the lwIP choice of
    /// SEMANTICS.md), or the connect's error once.
    async fn finish_connect(&mut self, deadline: Deadline) -> SockResult<()> {
        let io = self.io()?;
        let outcome = io
            .os
            .wait(Interest::WRITABLE, deadline, |s| match connect_outcome(s) {
                None => Err(io::ErrorKind::WouldBlock.into()),
                Some(result) => Ok(result),
            })
            .await;
        match outcome {
            Ok(Ok(())) => {
                self.phase = Phase::Connected;
                if matches!(deadline, Deadline::Now) {
                    Err(Errno::EISCONN)
                } else {
                    Ok(())
                }
            }
            Ok(Err(e)) => {
                // The failure left a final HUP readiness; a later connect needs a fresh one.
                self.phase = Phase::Bound;
                self.io_mut()?.os.unregister();
                Err(e.into())
            }
            Err(Errno::EAGAIN) => Err(Errno::EALREADY),
            Err(e) => Err(e),
        }
    }

    /// Before a stream data call: a socket whose connect was pending becomes connected (or
    /// reports its failure); a socket without a peer is ENOTCONN.
    async fn ensure_peer(&mut self, deadline: Deadline) -> SockResult<()> {
        self.ensure_open()?;
        match self.phase {
            Phase::Connected => Ok(()),
            Phase::Connecting => match self.finish_connect(deadline).await {
                Ok(()) | Err(Errno::EISCONN) => Ok(()),
                Err(Errno::EALREADY) => Err(Errno::EAGAIN),
                Err(e) => Err(e),
            },
            _ => Err(Errno::ENOTCONN),
        }
    }

    fn recv_deadline(&self, flags: i32) -> SockResult<(Deadline, RecvFlags)> {
        if flags & !(MSG_PEEK | MSG_DONTWAIT) != 0 {
            return Err(Errno::EINVAL);
        }
        let deadline = if flags & MSG_DONTWAIT != 0 {
            Deadline::Now
        } else {
            self.timeout.deadline()
        };
        let peek = if flags & MSG_PEEK != 0 {
            RecvFlags::PEEK
        } else {
            RecvFlags::empty()
        };
        Ok((deadline, peek))
    }

    /// `recv(max, flags)`.
    pub async fn recv(&mut self, ctx: &UsocketCtx, max: usize, flags: i32) -> SockResult<Vec<u8>> {
        self.recv_from_inner(ctx, max, flags)
            .await
            .map(|(data, _)| data)
    }

    /// `recvfrom(max, flags)`.
    pub async fn recv_from(
        &mut self,
        ctx: &UsocketCtx,
        max: usize,
        flags: i32,
    ) -> SockResult<(Vec<u8>, SocketAddr)> {
        let (data, from) = self.recv_from_inner(ctx, max, flags).await?;
        match from {
            Some(from) => Ok((data, from)),
            None => Ok((data, self.peer_address()?)),
        }
    }

    /// `recv`/`recvfrom`: the data, and for datagrams the sender.
    async fn recv_from_inner(
        &mut self,
        ctx: &UsocketCtx,
        max: usize,
        flags: i32,
    ) -> SockResult<(Vec<u8>, Option<SocketAddr>)> {
        self.ensure_open()?;
        let (deadline, peek) = self.recv_deadline(flags)?;
        let max = ctx.recv_budget(max)?;
        let (data, from) = match self.kind {
            Kind::Stream => (self.recv_stream(max, deadline, peek).await?, None),
            Kind::Datagram => {
                // Without a local address nothing can arrive: the ENOTCONN of SEMANTICS.md.
                if self.phase == Phase::Fresh {
                    return Err(Errno::ENOTCONN);
                }
                let (data, from) = recv_datagram(ctx, &self.io()?.os, max, deadline, peek).await?;
                (data, Some(from))
            }
        };
        if peek.is_empty() {
            ctx.received(data.len()).await;
        }
        Ok((data, from))
    }

    async fn recv_stream(
        &mut self,
        max: usize,
        deadline: Deadline,
        peek: RecvFlags,
    ) -> SockResult<Vec<u8>> {
        self.ensure_peer(deadline).await?;
        let io = self.io_mut()?;
        if io.rx.len() > 0 {
            let n = max.min(io.rx.len());
            return Ok(if peek.is_empty() {
                io.rx.take(n)
            } else {
                io.rx.queued()[..n].to_vec()
            });
        }
        if let Some(err) = io.rx.take_error() {
            return Err(err);
        }
        if io.rx.eof || max == 0 {
            return Ok(Vec::new());
        }
        let mut data = Vec::with_capacity(max.min(MAX_RECV));
        match io
            .os
            .wait(Interest::READABLE, deadline, |s| {
                rustix::net::recv(s, spare_capacity(&mut data), peek)
                    .map(|(n, _)| n)
                    .map_err(io::Error::from)
            })
            .await
        {
            Ok(0) if peek.is_empty() => io.rx.eof = true,
            Ok(_) => {}
            Err(Errno::ECONNRESET) => {
                // Reported once; afterwards the stream reads as ended.
                io.rx.eof = true;
                return Err(Errno::ECONNRESET);
            }
            Err(e) => return Err(e),
        }
        Ok(data)
    }

    /// Reads from the kernel into the host queue: at least one byte, end of stream, or an
    /// error. Returns `Ok(false)` when nothing was available (non-blocking) and ETIMEDOUT
    /// when the deadline passed; both leave the queue as it was.
    async fn fill(
        &mut self,
        ctx: &UsocketCtx,
        want: usize,
        deadline: Deadline,
    ) -> SockResult<bool> {
        let want = ctx.recv_budget(want)?;
        let io = self.io_mut()?;
        io.rx.reserve(want);
        // After `reserve`, which may move the queue to the front of the buffer.
        let before = io.rx.buf.len();
        let rx = &mut io.rx;
        // Under a receive quota, take exactly the budget from the kernel (a read into all of
        // the buffer's spare room could overshoot it); otherwise whatever fits.
        let exact = ctx.limits().max_bytes_received.is_some();
        let result = io
            .os
            .wait(Interest::READABLE, deadline, |s| {
                if exact {
                    let mut chunk = Vec::with_capacity(want.max(1));
                    let (n, _) =
                        rustix::net::recv(s, spare_capacity(&mut chunk), RecvFlags::empty())?;
                    rx.buf.extend_from_slice(&chunk);
                    return Ok(n);
                }
                rustix::net::recv(s, spare_capacity(&mut rx.buf), RecvFlags::empty())
                    .map(|(n, _)| n)
                    .map_err(io::Error::from)
            })
            .await;
        match result {
            Ok(0) => rx.eof = true,
            Ok(_) => {}
            Err(Errno::EAGAIN) if matches!(deadline, Deadline::Now) => return Ok(false),
            Err(Errno::ECONNRESET) => rx.error = Some(Errno::ECONNRESET),
            Err(e) => return Err(e),
        }
        let got = rx.buf.len() - before;
        ctx.received(got).await;
        Ok(true)
    }

    /// `read(n)` with `Some(n)`, `read()` with `None`.
    ///
    /// `Ok(None)`: non-blocking and nothing available.
    pub async fn read(
        &mut self,
        ctx: &UsocketCtx,
        n: Option<usize>,
    ) -> SockResult<Option<Vec<u8>>> {
        self.ensure_open()?;
        if self.kind == Kind::Datagram {
            let max = n.unwrap_or(MAX_DATAGRAM);
            return match self.recv(ctx, max, 0).await {
                Err(Errno::EAGAIN) => Ok(None),
                other => other.map(Some),
            };
        }
        let deadline = self.timeout.deadline();
        self.ensure_peer(deadline).await?;
        let limit = ctx.limits().max_buffered;
        loop {
            let rx = &mut self.io_mut()?.rx;
            let queued = rx.len();
            match n {
                Some(n) if queued >= n => return Ok(Some(rx.take(n))),
                _ if rx.eof || rx.error.is_some() => {
                    return match rx.take_error() {
                        Some(err) => Err(err),
                        None => Ok(Some(rx.take(queued))),
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
                let rx = &mut self.io_mut()?.rx;
                return Ok((rx.len() > 0).then(|| rx.take(rx.len())));
            }
        }
    }

    /// `readline(limit)`: one line with its `\n`, the last partial line at EOF, then `b""`.
    pub async fn readline(
        &mut self,
        ctx: &UsocketCtx,
        limit: Option<usize>,
    ) -> SockResult<Option<Vec<u8>>> {
        self.ensure_open()?;
        if self.kind == Kind::Datagram {
            return self.read(ctx, limit).await;
        }
        let deadline = self.timeout.deadline();
        self.ensure_peer(deadline).await?;
        let limit = limit.unwrap_or(usize::MAX);
        let max_buffered = ctx.limits().max_buffered;
        // Bytes already searched for a newline, so each byte is scanned once per call.
        let mut scanned = 0;
        loop {
            let rx = &mut self.io_mut()?.rx;
            let queued = rx.queued();
            let window = &queued[..queued.len().min(limit)];
            if let Some(i) = window[scanned..].iter().position(|&b| b == b'\n') {
                return Ok(Some(rx.take(scanned + i + 1)));
            }
            if window.len() == limit {
                return Ok(Some(rx.take(limit)));
            }
            scanned = window.len();
            if rx.eof || rx.error.is_some() {
                return match rx.take_error() {
                    Some(err) => Err(err),
                    None => Ok(Some(rx.take(scanned))),
                };
            }
            if scanned >= max_buffered {
                return Err(Errno::ENOBUFS);
            }
            if !self.fill(ctx, READ_CHUNK, deadline).await? {
                let rx = &mut self.io_mut()?.rx;
                return Ok((rx.len() > 0).then(|| rx.take(rx.len())));
            }
        }
    }

    /// `readline(limit)` for guest libraries with a read-ahead buffer: the line, plus up to
    /// `ahead` bytes already queued in the host after it (never waiting for more). The guest
    /// then owns those bytes, and gives back what it does not use with [`Socket::unread`].
    pub async fn readline_ahead(
        &mut self,
        ctx: &UsocketCtx,
        limit: Option<usize>,
        ahead: usize,
    ) -> SockResult<Option<(Vec<u8>, Vec<u8>)>> {
        let Some(line) = self.readline(ctx, limit).await? else {
            return Ok(None);
        };
        if self.kind != Kind::Stream {
            return Ok(Some((line, Vec::new())));
        }
        let rx = &mut self.io_mut()?.rx;
        let extra = rx.take(ahead.min(rx.len()));
        Ok(Some((line, extra)))
    }

    /// Puts bytes back at the head of a stream's receive queue: read-ahead that a guest library
    /// did not use. Later reads return them first, `poll` counts them, and a close with them
    /// still queued resets the connection, as for any unread data.
    ///
    /// Errors: EOPNOTSUPP (datagram socket), ENOTCONN (no connection), ENOBUFS (the queue
    /// would exceed the per-socket limit), EBADF.
    pub fn unread(&mut self, ctx: &UsocketCtx, data: &[u8]) -> SockResult<()> {
        self.ensure_open()?;
        if self.kind != Kind::Stream {
            return Err(Errno::EOPNOTSUPP);
        }
        if self.phase != Phase::Connected {
            return Err(Errno::ENOTCONN);
        }
        let rx = &mut self.io_mut()?.rx;
        if rx.len() + data.len() > ctx.limits().max_buffered {
            return Err(Errno::ENOBUFS);
        }
        rx.unread(data);
        Ok(())
    }

    /// `send(data)`: what fits, at least one byte unless non-blocking or timed out.
    pub async fn send(&mut self, ctx: &UsocketCtx, data: &[u8]) -> SockResult<usize> {
        let deadline = self.timeout.deadline();
        if self.kind == Kind::Datagram {
            self.ensure_open()?;
            if self.phase != Phase::Connected {
                return Err(Errno::ENOTCONN);
            }
            // Every datagram's destination is a use of its own.
            ctx.check_addr(Use::Send, self.udp_peer.ok_or(Errno::ENOTCONN)?)?;
        } else {
            self.ensure_peer(deadline).await?;
            if data.is_empty() {
                return Ok(0);
            }
        }
        let allowed = ctx.send_budget(data.len())?;
        if self.kind == Kind::Datagram && allowed < data.len() {
            // A datagram is never cut short: the quota refuses it whole.
            return Err(Errno::ENOMEM);
        }
        let data = &data[..allowed];
        let io = self.io()?;
        let n = io
            .os
            .wait(Interest::WRITABLE, deadline, |s| send_nosignal(s, data))
            .await?;
        ctx.sent(n).await;
        Ok(n)
    }

    /// `write(data)` / `sendall(data)`: all of it (blocking), all or ETIMEDOUT (timed), or what
    /// fits now (non-blocking, possibly 0).
    pub async fn write(&mut self, ctx: &UsocketCtx, data: &[u8]) -> SockResult<usize> {
        if self.kind == Kind::Datagram {
            return self.send(ctx, data).await;
        }
        let deadline = self.timeout.deadline();
        match self.ensure_peer(deadline).await {
            Err(Errno::EAGAIN) => return Ok(0),
            other => other?,
        }
        let io = self.io()?;
        let mut sent = 0;
        while sent < data.len() {
            let chunk = &data[sent..sent + ctx.send_budget(data.len() - sent)?];
            match io
                .os
                .wait(Interest::WRITABLE, deadline, |s| send_nosignal(s, chunk))
                .await
            {
                Ok(n) => {
                    sent += n;
                    ctx.sent(n).await;
                }
                Err(Errno::EAGAIN) if matches!(deadline, Deadline::Now) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// `sendto(data, addr)`: one datagram.
    pub async fn send_to(
        &mut self,
        ctx: &UsocketCtx,
        data: &[u8],
        address: &str,
        port: i32,
    ) -> SockResult<usize> {
        self.ensure_open()?;
        if self.kind == Kind::Stream {
            return Err(if self.phase == Phase::Connected {
                Errno::EISCONN
            } else {
                Errno::ENOTCONN
            });
        }
        let addr = addr::parse(self.family, address, port, Purpose::Destination)?;
        ctx.check_addr(Use::Send, addr)?;
        if self.phase == Phase::Fresh {
            ctx.check_addr(Use::AutoBind, SocketAddr::new(self.family.unspecified(), 0))?;
        }
        if ctx.send_budget(data.len())? < data.len() {
            return Err(Errno::ENOMEM);
        }
        let io = self.io()?;
        let n = io
            .os
            .wait(Interest::WRITABLE, self.timeout.deadline(), |s| {
                rustix::net::sendto(s, data, SendFlags::NOSIGNAL, &addr).map_err(io::Error::from)
            })
            .await?;
        if self.phase == Phase::Fresh {
            // The kernel bound an ephemeral port for the first datagram.
            self.phase = Phase::Bound;
        }
        ctx.sent(n).await;
        Ok(n)
    }

    /// `close()`: idempotent. Unread received data turns the close into a reset, as a kernel
    /// socket's close does.
    pub fn close(&mut self) {
        if let Some(io) = self.io.take()
            && self.kind == Kind::Stream
            && io.rx.len() > 0
        {
            let _ = io.os.sock.set_linger(Some(Duration::ZERO));
        }
        self.phase = Phase::Closed;
    }

    /// The bound local address.
    pub fn local_address(&self) -> SockResult<SocketAddr> {
        let io = self.io()?;
        if self.phase == Phase::Fresh {
            return Err(Errno::EINVAL);
        }
        io.os.sock.local_addr()?.as_socket().ok_or(Errno::EINVAL)
    }

    /// The peer's address.
    pub fn peer_address(&self) -> SockResult<SocketAddr> {
        let io = self.io()?;
        if self.phase != Phase::Connected {
            return Err(Errno::ENOTCONN);
        }
        io.os.sock.peer_addr()?.as_socket().ok_or(Errno::ENOTCONN)
    }

    /// The `poll` revents of this socket now, for the POLLIN/POLLOUT bits in `mask`:
    /// the kernel's answer (so values match Linux), plus POLLIN for bytes queued in the host.
    pub fn revents(&self, mask: u32) -> u32 {
        let Some(io) = &self.io else {
            return POLL_CLOSED;
        };
        let mut events = PollFlags::empty();
        if mask & POLLIN != 0 {
            events |= PollFlags::IN;
        }
        if mask & POLLOUT != 0 {
            events |= PollFlags::OUT;
        }
        let mut fds = [PollFd::new(&io.os.sock, events)];
        let kernel = match rustix::event::poll(
            &mut fds,
            Some(&rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        ) {
            Ok(_) => fds[0].revents(),
            Err(_) => PollFlags::ERR,
        };
        let mut revents = 0;
        for (flag, bit) in [
            (PollFlags::IN, POLLIN),
            (PollFlags::OUT, POLLOUT),
            (PollFlags::ERR, POLLERR),
            (PollFlags::HUP, POLLHUP),
        ] {
            if kernel.contains(flag) {
                revents |= bit;
            }
        }
        if mask & POLLIN != 0 && (io.rx.len() > 0 || io.rx.error.is_some()) {
            revents |= POLLIN;
        }
        revents & (mask | POLLERR | POLLHUP)
    }

    /// Waits until [`Socket::revents`] may have changed for `mask`. Spurious wake-ups are
    /// possible; a caller re-checks with `revents`.
    pub(crate) async fn readiness(&self, mask: u32) {
        let Some(io) = &self.io else { return };
        let mut interest = Interest::READABLE | Interest::ERROR;
        if mask & POLLOUT != 0 {
            interest |= Interest::WRITABLE;
        }
        let Ok(reactor) = io.os.reactor() else { return };
        loop {
            let Ok(mut guard) = reactor.ready(interest).await else {
                return;
            };
            if self.revents(mask) != 0 {
                return;
            }
            let ready = guard.ready();
            if ready.is_read_closed() || ready.is_write_closed() {
                // tokio keeps "closed" readiness for good, so it cannot tell us about the next
                // change (say, a half-closed socket becoming writable): look again shortly.
                tokio::time::sleep(CLOSED_RECHECK).await;
                continue;
            }
            // Not ready for what was asked: forget this readiness and wait for a new event.
            guard.clear_ready();
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.close();
    }
}

/// poll bits of SEMANTICS.md.
pub const POLLIN: u32 = 1;
/// Writable.
pub const POLLOUT: u32 = 4;
/// Error.
pub const POLLERR: u32 = 8;
/// Hang-up.
pub const POLLHUP: u32 = 16;
/// A locally closed socket (no constant in MicroPython).
pub const POLL_CLOSED: u32 = 32;

/// One datagram whose sender the policy grants (`recv` use); others are dropped unseen and
/// the wait goes on, under the same deadline.
async fn recv_datagram(
    ctx: &UsocketCtx,
    os: &Os,
    max: usize,
    deadline: Deadline,
    flags: RecvFlags,
) -> SockResult<(Vec<u8>, SocketAddr)> {
    loop {
        // A zero-length read still consumes one datagram, as recv(0) does.
        let mut data = Vec::with_capacity(max.clamp(1, MAX_DATAGRAM));
        let from = os
            .wait(Interest::READABLE, deadline, |s| {
                let (_, _, from) = rustix::net::recvfrom(s, spare_capacity(&mut data), flags)?;
                Ok(from)
            })
            .await?;
        let from = from
            .and_then(|a| SocketAddr::try_from(a).ok())
            .ok_or(Errno::EIO)?;
        if ctx.check_addr(Use::Recv, from).is_ok() {
            data.truncate(max);
            return Ok((data, from));
        }
        if flags.contains(RecvFlags::PEEK) {
            // A peek left it queued: take it off before looking at the next one.
            let _ = rustix::net::recv(&os.sock, &mut [0u8; 1][..], RecvFlags::DONTWAIT);
        }
    }
}

fn send_nosignal(s: &socket2::Socket, data: &[u8]) -> io::Result<usize> {
    // MSG_NOSIGNAL: a write to a closed connection is EPIPE, never SIGPIPE for the host.
    rustix::net::send(s, data, SendFlags::NOSIGNAL).map_err(io::Error::from)
}

/// The outcome of a non-blocking connect: `None` while pending.
fn connect_outcome(s: &socket2::Socket) -> Option<io::Result<()>> {
    let mut fds = [PollFd::new(s, PollFlags::OUT)];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&zero)) {
        Ok(0) => return None,
        Ok(_) => {}
        Err(e) => return Some(Err(e.into())),
    }
    match s.take_error() {
        Ok(Some(err)) => Some(Err(err)),
        Ok(None) if fds[0].revents().contains(PollFlags::OUT) => Some(Ok(())),
        Ok(None) => None,
        Err(e) => Some(Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use std::io::Write;
    use std::sync::Arc;

    /// Every use granted on loopback.
    fn ctx() -> UsocketCtx {
        let all = ["connect,send,bind,listen,accept,recv=127.0.0.1:*"];
        let policy =
            Policy::from_texts(&all, &[] as &[&str], cap_std::ambient_authority()).unwrap();
        UsocketCtx::new("test", Arc::new(policy))
    }

    /// A connected stream socket and the native peer it talks to.
    async fn connected(ctx: &UsocketCtx) -> (Socket, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut sock = Socket::create(ctx, 2, 1, 0).unwrap();
        sock.connect(ctx, "127.0.0.1", i32::from(port))
            .await
            .unwrap();
        let (peer, _) = listener.accept().unwrap();
        (sock, peer)
    }

    // Tests for the Connected state.

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timed_read_of_a_huge_size_times_out_and_keeps_what_arrived() {
        let ctx = ctx();
        let (mut sock, mut peer) = connected(&ctx).await;
        // The data arrives while recv waits for it.
        let mut writer = peer.try_clone().unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer.write_all(b"abc").unwrap();
        });
        assert_eq!(
            sock.recv(&ctx, u32::MAX as usize, 0).await,
            Ok(b"abc".to_vec())
        );
        peer.write_all(b"0123").unwrap();
        sock.set_timeout(Some(0.1)).unwrap();
        assert_eq!(
            sock.read(&ctx, Some(u32::MAX as usize)).await,
            Err(Errno::ETIMEDOUT)
        );
        assert_eq!(
            sock.readline(&ctx, Some(u32::MAX as usize)).await,
            Err(Errno::ETIMEDOUT)
        );
        sock.set_timeout(Some(0.0)).unwrap();
        assert_eq!(sock.read(&ctx, Some(2)).await, Ok(Some(b"01".to_vec())));
        assert_eq!(sock.read(&ctx, Some(10)).await, Ok(Some(b"23".to_vec())));
        assert_eq!(sock.read(&ctx, Some(10)).await, Ok(None));
    }

    // Tests for the Listening state.

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timed_accept_times_out_then_accepts() {
        let ctx = ctx();
        let mut listener = Socket::create(&ctx, 2, 1, 0).unwrap();
        listener.bind(&ctx, "127.0.0.1", 0).unwrap();
        listener.listen(&ctx, 8).unwrap();
        let port = listener.local_address().unwrap().port();
        listener.set_timeout(Some(0.1)).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(listener.accept(&ctx).await.err(), Some(Errno::ETIMEDOUT));
        assert!(started.elapsed() < Duration::from_secs(2));
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (conn, peer) = listener.accept(&ctx).await.unwrap();
        assert_eq!(conn.phase(), Phase::Connected);
        assert_eq!(peer.ip().to_string(), "127.0.0.1");
    }

    // Tests for the Connecting state.

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_connect_leaves_an_unconnected_socket_that_answers_at_once() {
        let ctx = ctx();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = i32::from(closed.local_addr().unwrap().port());
        drop(closed);
        let mut sock = Socket::create(&ctx, 2, 1, 0).unwrap();
        sock.set_timeout(Some(2.0)).unwrap();
        assert_eq!(
            sock.connect(&ctx, "127.0.0.1", closed_port).await,
            Err(Errno::ECONNREFUSED)
        );
        assert_eq!(sock.recv(&ctx, 10, 0).await, Err(Errno::ENOTCONN));
        assert_ne!(sock.revents(POLLIN | POLLOUT) & (POLLERR | POLLHUP), 0);
        // POSIX leaves a retry's outcome unspecified (Linux: ECONNABORTED); it must not hang.
        let started = std::time::Instant::now();
        let _ = sock.connect(&ctx, "127.0.0.1", closed_port).await;
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn non_blocking_connect_reports_in_progress_then_already_or_isconn() {
        let ctx = ctx();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = i32::from(listener.local_addr().unwrap().port());
        let mut sock = Socket::create(&ctx, 2, 1, 0).unwrap();
        sock.set_timeout(Some(0.0)).unwrap();
        assert_eq!(
            sock.connect(&ctx, "127.0.0.1", port).await,
            Err(Errno::EINPROGRESS)
        );
        // Until the handshake is seen: EALREADY; then EISCONN, every time.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match sock.connect(&ctx, "127.0.0.1", port).await {
                Err(Errno::EALREADY) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                other => {
                    assert_eq!(other, Err(Errno::EISCONN));
                    break;
                }
            }
        }
        assert_eq!(
            sock.connect(&ctx, "127.0.0.1", port).await,
            Err(Errno::EISCONN)
        );
        assert_eq!(sock.phase(), Phase::Connected);
    }

    // Tests for the Closed state.

    #[tokio::test]
    async fn closed_socket_is_ebadf_for_everything_and_polls_32() {
        let ctx = ctx();
        let mut sock = Socket::create(&ctx, 2, 1, 0).unwrap();
        assert_eq!(ctx.open_sockets(), 1);
        sock.close();
        sock.close();
        assert_eq!(ctx.open_sockets(), 0, "closing gives the quota slot back");
        assert_eq!(sock.recv(&ctx, 1, 0).await, Err(Errno::EBADF));
        assert_eq!(sock.write(&ctx, b"x").await, Err(Errno::EBADF));
        assert_eq!(sock.set_timeout(None), Err(Errno::EBADF));
        assert_eq!(sock.revents(POLLIN | POLLOUT), POLL_CLOSED);
    }

    #[tokio::test]
    async fn readline_ahead_and_unread_keep_the_stream_in_order() {
        let ctx = ctx();
        let (mut sock, mut peer) = connected(&ctx).await;
        peer.write_all(b"one\ntwo\nthr").unwrap();
        sock.set_timeout(Some(2.0)).unwrap();
        let mut got = sock
            .readline_ahead(&ctx, None, 1 << 16)
            .await
            .unwrap()
            .unwrap();
        // Wait until the rest of the write has arrived too.
        while got.1.len() < 7 {
            sock.unread(&ctx, &got.1).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            sock.set_timeout(Some(0.0)).unwrap();
            let rest = sock
                .read(&ctx, Some(1 << 16))
                .await
                .unwrap()
                .unwrap_or_default();
            got.1 = rest;
        }
        assert_eq!(got.0, b"one\n");
        assert_eq!(got.1, b"two\nthr");
        // The guest used "two\n" and gives back "thr".
        sock.unread(&ctx, b"thr").unwrap();
        assert_eq!(sock.revents(POLLIN) & POLLIN, POLLIN);
        peer.write_all(b"ee\n").unwrap();
        sock.set_timeout(Some(2.0)).unwrap();
        assert_eq!(
            sock.readline(&ctx, None).await,
            Ok(Some(b"three\n".to_vec()))
        );
        sock.unread(&ctx, b"x").unwrap();
        assert_eq!(
            sock.unread(&ctx, &vec![0; ctx.limits().max_buffered]),
            Err(Errno::ENOBUFS)
        );
    }
}
