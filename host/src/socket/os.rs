//! The OS socket under each guest socket: opening it, its registration with tokio's reactor,
//! waiting under a deadline, and the syscalls. Knows nothing of streams or datagrams beyond
//! what the syscalls need.
//!
//! The syscalls that a policy guards (`bind`, `listen`, `connect`, `sendto`) take a
//! [`Grant`] from the gate and use the address inside it, so none can run unchecked.
//!
//! Readiness. Once a socket is registered, tokio's reactor keeps its readiness from the
//! kernel's edge-triggered events: each event sets bits, and a bit is cleared only when a
//! syscall shows it false (would-block; a short stream read or write, see [`Os::wait`]) or a
//! `poll(2)` does. A blocking call therefore waits on the reactor first and makes its syscall
//! only when the socket may be ready, as tokio's own `TcpStream` does. And once the reactor
//! has caught up with the socket ("primed": it reported an event since the registration, or
//! the kernel said nothing was ready after it), "not ready" from it is the kernel's answer as
//! of the reactor's last look, so `poll` answers idle sockets without a syscall (an event the
//! reactor has not taken in yet is seen at its next look, as if it had come a moment later).
//! A call that must not wait still makes its syscall: for it, such a moment matters.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::event::{PollFd, PollFlags};
use rustix::net::{RecvFlags, SendFlags};
use socket2::{Domain, Protocol, SockAddr, Type};
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::{Interest, Ready};
use tokio::time::Instant;
use usocket_abi::{
    IPPROTO_TCP, POLLERR, POLLHUP, POLLIN, POLLOUT, SO_BROADCAST, SO_KEEPALIVE, SO_LINGER,
    SO_RCVBUF, SO_REUSEADDR, SO_SNDBUF, SOL_SOCKET, TCP_NODELAY,
};

use crate::addr::Family;
use crate::errno::{Errno, SockResult};
use crate::gate::{Grant, uses};
use crate::quota::Slot;

/// The three modes of the contract's "Blocking, timeouts, non-blocking".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timeout {
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
    pub(crate) fn from_seconds(seconds: Option<f64>) -> SockResult<Timeout> {
        match seconds {
            None => Ok(Timeout::Blocking),
            Some(s) if s.is_nan() || s < 0.0 => Err(Errno::EINVAL),
            Some(0.0) => Ok(Timeout::NonBlocking),
            Some(s) => Ok(Duration::try_from_secs_f64(s).map_or(Timeout::Blocking, Timeout::Timed)),
        }
    }

    /// When a call that starts now must give up waiting.
    pub(crate) fn deadline(self) -> Deadline {
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
pub(crate) enum Deadline {
    /// Do not wait at all (non-blocking mode, MSG_DONTWAIT).
    Now,
    /// Wait without limit.
    Never,
    /// Wait until then, then ETIMEDOUT.
    At(Instant),
}

impl Deadline {
    pub(crate) fn is_now(self) -> bool {
        matches!(self, Deadline::Now)
    }

    /// The instant a wait for rate tokens must end by (`None`: no limit; `Now`: now).
    pub(crate) fn until(self) -> Option<Instant> {
        match self {
            Deadline::Now => Some(Instant::now()),
            Deadline::Never => None,
            Deadline::At(at) => Some(at),
        }
    }

    /// The error of a call that waited for its deadline in vain: EAGAIN (non-blocking) or
    /// ETIMEDOUT.
    pub(crate) fn missed(self) -> Errno {
        if self.is_now() {
            Errno::EAGAIN
        } else {
            Errno::ETIMEDOUT
        }
    }
}

/// Whether a socket is a stream (TCP) or datagram (UDP) socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Stream,
    Datagram,
}

/// A `setsockopt` value as the guest passed it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OptValue<'a> {
    /// An integer.
    Int(i32),
    /// Raw bytes: a native C int of 1-4 bytes, or a `struct linger` of 8.
    Bytes(&'a [u8]),
}

impl OptValue<'_> {
    /// The value as an int: an int, or 1-4 bytes in the host's (= wasm's little-endian)
    /// byte order; EINVAL otherwise.
    fn int(self) -> SockResult<i32> {
        match self {
            OptValue::Int(n) => Ok(n),
            OptValue::Bytes(b) if (1..=4).contains(&b.len()) => {
                let mut word = [0u8; 4];
                word[..b.len()].copy_from_slice(b);
                Ok(i32::from_le_bytes(word))
            }
            OptValue::Bytes(_) => Err(Errno::EINVAL),
        }
    }

    /// The value as a `struct linger {int onoff; int seconds;}` (8 bytes, little-endian), as
    /// the host applies it: on with 0 seconds is `Some(0)` (close resets the connection);
    /// off, or on with a positive time, is `None` (close returns at once and the kernel
    /// delivers what is still queued in the background). A positive linger is not applied
    /// because Linux's `close` would then block the thread running the guest for up to that
    /// many seconds (found by the fuzz harness). EINVAL for any other shape or negative
    /// seconds.
    fn linger(self) -> SockResult<Option<Duration>> {
        let OptValue::Bytes(&[a, b, c, d, e, f, g, h]) = self else {
            return Err(Errno::EINVAL);
        };
        let onoff = i32::from_le_bytes([a, b, c, d]);
        let seconds = i32::from_le_bytes([e, f, g, h]);
        if seconds < 0 {
            return Err(Errno::EINVAL);
        }
        Ok((onoff != 0 && seconds == 0).then_some(Duration::ZERO))
    }
}

/// `SO_SNDBUF`/`SO_RCVBUF` values are clamped to this (the kernel doubles and caps them too).
const MAX_SOCKET_BUFFER: usize = 16 << 20;

/// `listen` backlogs above this are clamped (the contract: "host may clamp").
const MAX_BACKLOG: i32 = 4096;
/// How often `poll` re-checks a socket whose tokio readiness is stuck at "closed".
const CLOSED_RECHECK: Duration = Duration::from_millis(10);

/// A stream read of at least this many bytes counts as large (see [`Os::recv_chunk`]).
const SMALL_CHUNK: usize = 16 * 1024;

/// The size of each thread's scratch buffer for small reads: the read-ahead's 64 KiB and the
/// one byte more that tells whether the kernel has more.
const SCRATCH: usize = 64 * 1024 + 1;

thread_local! {
    /// Where small stream reads land before they are copied into a buffer of their size.
    static SCRATCH_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One open OS socket, non-blocking, with the quota slot it takes. Dropping it deregisters
/// it, closes the descriptor and gives the slot back.
///
/// Registration with tokio waits until the first blocking wait (or, for sockets that the
/// caller says are safe to register, the first `poll`): a TCP socket that has neither
/// connected nor listened reports EPOLLHUP, which tokio keeps as a final "closed" readiness,
/// and every later wait would then spin. By the first wait the socket is connecting,
/// connected or listening (or is a UDP socket, which has no such state).
pub(crate) struct Os {
    /// Declared before `sock` so that it is dropped (deregistered) before the socket closes.
    reactor: OnceLock<io::Result<AsyncFd<RawSocket>>>,
    /// Whether the reactor has caught up with the socket since it registered (see the module
    /// docs): only then does its "not ready" stand for the kernel's.
    primed: AtomicBool,
    /// The size of the last stream read into a new buffer (see [`Os::recv_chunk`]).
    last_chunk: AtomicUsize,
    sock: socket2::Socket,
    /// What the syscalls did, for the unit tests.
    #[cfg(test)]
    pub(super) counts: Counts,
    _slot: Slot,
}

/// Syscalls on one socket, counted for the unit tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Every syscall that asks the socket for I/O or its state (`recv`, `send`, `accept`,
    /// `poll`, ...).
    pub(super) syscalls: std::sync::atomic::AtomicUsize,
    /// Those of them that failed with EAGAIN.
    pub(super) would_block: std::sync::atomic::AtomicUsize,
}

/// The descriptor of an [`Os`] socket, as tokio's reactor sees it.
struct RawSocket(RawFd);

impl AsRawFd for RawSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// How a look at a socket that must not wait may learn that nothing is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Look {
    /// From the reactor when it knows (`poll`: a moment's lag is as if the event came later).
    Cached,
    /// From the syscall itself (a guest's non-blocking call).
    Kernel,
}

/// What the reactor knows of a socket's readiness for some interest, now.
enum Cached<'a> {
    /// Nothing to go by (not registered, not primed, or the reactor is gone): ask the kernel.
    Unknown,
    /// None of it: the kernel's answer too.
    Idle,
    /// Some of it, perhaps no longer true: the guard can clear what the kernel denies.
    Seen(AsyncFdReadyGuard<'a, RawSocket>),
}

/// Every readiness the reactor keeps.
const ANY: Interest = Interest::READABLE
    .add(Interest::WRITABLE)
    .add(Interest::ERROR)
    .add(Interest::PRIORITY);

/// The reactor's readiness for `interest` now, without waiting (or registering a waker).
fn ready_now(
    reactor: &AsyncFd<RawSocket>,
    interest: Interest,
) -> Poll<io::Result<AsyncFdReadyGuard<'_, RawSocket>>> {
    pin!(reactor.ready(interest)).poll(&mut Context::from_waker(Waker::noop()))
}

/// The reactor readiness a call with `interest` waits for: also errors, so that a pending
/// error (say an ICMP refusal on a connected UDP socket, which is not "readable") wakes the
/// call and its syscall reports it.
fn with_errors(interest: Interest) -> Interest {
    interest | Interest::ERROR
}

/// The readiness bit a short read or write shows to be false for `interest`.
fn drained_bit(interest: Interest) -> Ready {
    if interest.is_writable() {
        Ready::WRITABLE
    } else {
        Ready::READABLE
    }
}

/// The reactor readiness that can make a `poll` revents for `mask` non-zero: readable (or at
/// least read-closed, which a hang-up also sets: PRIORITY asks for that alone), writable if
/// asked for, and errors. Every bit it covers counts for the answer, so a wait on it never
/// wakes for what the caller did not ask about.
fn poll_interest(mask: u32) -> Interest {
    let mut interest = if mask & POLLIN != 0 {
        Interest::READABLE
    } else {
        Interest::PRIORITY
    };
    if mask & POLLOUT != 0 {
        interest |= Interest::WRITABLE;
    }
    interest | Interest::ERROR
}

impl Os {
    /// A new socket of `family` and `kind`. IPv6 sockets are IPV6_V6ONLY: they never reach
    /// IPv4 through v4-mapped addresses.
    pub(crate) fn open(family: Family, kind: Kind, slot: Slot) -> SockResult<Os> {
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
            sock.set_only_v6(true)?;
        }
        Ok(Os::wrap(sock, slot))
    }

    fn wrap(sock: socket2::Socket, slot: Slot) -> Os {
        Os {
            reactor: OnceLock::new(),
            primed: AtomicBool::new(false),
            last_chunk: AtomicUsize::new(0),
            sock,
            #[cfg(test)]
            counts: Counts::default(),
            _slot: slot,
        }
    }

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

    /// The registration, if there is one (never registers).
    fn registered(&self) -> Option<&AsyncFd<RawSocket>> {
        self.reactor.get()?.as_ref().ok()
    }

    #[cfg(test)]
    pub(super) fn is_registered(&self) -> bool {
        self.registered().is_some()
    }

    /// Registers the socket now, for a caller that knows its state allows it (connected,
    /// listening, or a datagram socket), so that `poll` can answer from the reactor.
    pub(crate) fn watch(&self) {
        let _ = self.reactor();
    }

    /// Forgets the registration, e.g. after a failed connect left a final HUP readiness.
    pub(crate) fn unregister(&mut self) {
        self.reactor.take();
        self.primed.store(false, Ordering::Relaxed);
    }

    /// What the reactor says of `interest` now, without waiting.
    fn cached(&self, interest: Interest) -> Cached<'_> {
        let Some(reactor) = self.registered() else {
            return Cached::Unknown;
        };
        match ready_now(reactor, interest) {
            Poll::Ready(Ok(guard)) => {
                // Only an event sets readiness: the reactor has caught up.
                self.primed.store(true, Ordering::Relaxed);
                Cached::Seen(guard)
            }
            Poll::Pending if self.primed.load(Ordering::Relaxed) => Cached::Idle,
            // Readiness of another kind (an idle connection is writable) shows that an event
            // came too.
            Poll::Pending if matches!(ready_now(reactor, ANY), Poll::Ready(Ok(_))) => {
                self.primed.store(true, Ordering::Relaxed);
                Cached::Idle
            }
            _ => Cached::Unknown,
        }
    }

    /// Whether the reactor has seen the socket readable (or in error) since a read last
    /// found it drained. Its word can be stale (an event taken in after a read that already
    /// took the event's bytes); only a syscall can tell.
    pub(crate) fn seen_readable(&self) -> bool {
        matches!(
            self.cached(with_errors(Interest::READABLE)),
            Cached::Seen(_)
        )
    }

    /// Counts a syscall's outcome for the unit tests (nothing otherwise).
    fn note<R>(&self, result: &io::Result<R>) {
        #[cfg(test)]
        {
            self.counts.syscalls.fetch_add(1, Ordering::Relaxed);
            if matches!(result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                self.counts.would_block.fetch_add(1, Ordering::Relaxed);
            }
        }
        #[cfg(not(test))]
        let _ = result;
    }

    /// `op` once, retried while interrupted.
    fn once<R>(&self, op: &mut impl FnMut(&socket2::Socket) -> io::Result<R>) -> io::Result<R> {
        loop {
            let result = op(&self.sock);
            self.note(&result);
            match result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// `op` once under `guard`: a would-block clears the readiness the guard saw, and so does
    /// a result that `drained` says leaves the socket not ready (a short read or write), so
    /// that the next call waits for the reactor's next event instead of making a syscall
    /// bound to fail. The guard's tick keeps any event that came since it was taken.
    fn try_under<R>(
        &self,
        guard: &mut AsyncFdReadyGuard<'_, RawSocket>,
        interest: Interest,
        op: &mut impl FnMut(&socket2::Socket) -> io::Result<R>,
        drained: &impl Fn(&R) -> bool,
    ) -> Option<io::Result<R>> {
        match guard.try_io(|_| self.once(op)) {
            Ok(Ok(value)) => {
                if drained(&value) {
                    guard.clear_ready_matching(drained_bit(interest));
                }
                Some(Ok(value))
            }
            Ok(Err(e)) => Some(Err(e)),
            Err(_would_block) => None,
        }
    }

    /// Runs `op` on the socket until it stops saying "would block", waiting for `interest`
    /// between tries as `deadline` allows. `drained`: whether a result shows the socket is no
    /// longer ready for `interest` (a stream's short read or write).
    ///
    /// A blocking or timed call waits for the reactor first and tries only when it reports
    /// the socket ready. A non-blocking one (`Deadline::Now`) always makes its syscall, even
    /// when the reactor says "not ready": an event it has not taken in yet (data that arrived
    /// a moment ago) would make EAGAIN wrong; its outcome still updates the readiness.
    pub(crate) async fn wait<R>(
        &self,
        interest: Interest,
        deadline: Deadline,
        mut op: impl FnMut(&socket2::Socket) -> io::Result<R>,
        drained: impl Fn(&R) -> bool,
    ) -> SockResult<R> {
        let interest = with_errors(interest);
        let result = match deadline {
            Deadline::Now => match self.cached(interest) {
                Cached::Seen(mut guard) => self
                    .try_under(&mut guard, interest, &mut op, &drained)
                    .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into())),
                Cached::Idle | Cached::Unknown => self.once(&mut op),
            },
            Deadline::Never => self.wait_ready(interest, &mut op, &drained).await?,
            Deadline::At(at) => {
                let io = self.wait_ready(interest, &mut op, &drained);
                match tokio::time::timeout_at(at, io).await {
                    Ok(result) => result?,
                    Err(_elapsed) => return Err(Errno::ETIMEDOUT),
                }
            }
        };
        result.map_err(Errno::from)
    }

    /// The waiting loop of [`Os::wait`]: the outer error is the registration's.
    async fn wait_ready<R>(
        &self,
        interest: Interest,
        op: &mut impl FnMut(&socket2::Socket) -> io::Result<R>,
        drained: &impl Fn(&R) -> bool,
    ) -> SockResult<io::Result<R>> {
        let reactor = self.reactor()?;
        loop {
            let mut guard = match reactor.ready(interest).await {
                Ok(guard) => guard,
                Err(e) => return Ok(Err(e)),
            };
            self.primed.store(true, Ordering::Relaxed);
            if let Some(result) = self.try_under(&mut guard, interest, op, drained) {
                return Ok(result);
            }
        }
    }

    // The syscalls a policy guards: each takes its grant.

    pub(crate) fn bind(&self, grant: &Grant<uses::Bind>) -> SockResult<()> {
        Ok(self.sock.bind(&SockAddr::from(grant.addr()))?)
    }

    pub(crate) fn listen(&self, _grant: &Grant<uses::Listen>, backlog: i32) -> SockResult<()> {
        Ok(self.sock.listen(backlog.clamp(0, MAX_BACKLOG))?)
    }

    /// Starts a connect; `Ok(false)` when it is in progress (a stream's handshake).
    pub(crate) fn connect(&self, grant: &Grant<uses::Connect>) -> SockResult<bool> {
        match self.sock.connect(&SockAddr::from(grant.addr())) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(Errno::EINPROGRESS.0) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// One datagram to the granted destination.
    pub(crate) async fn send_to(
        &self,
        grant: &Grant<uses::Send>,
        data: &[u8],
        deadline: Deadline,
    ) -> SockResult<usize> {
        let to = grant.addr();
        let op = |s: &socket2::Socket| {
            rustix::net::sendto(s, data, SendFlags::NOSIGNAL, &to).map_err(io::Error::from)
        };
        // A datagram goes whole or not at all: its success says nothing of the next one.
        self.wait(Interest::WRITABLE, deadline, op, |_| false).await
    }

    // Syscalls on what the policy already granted (a connection, a bound socket).

    /// Sends on a connected stream: what fits, at least one byte unless `deadline` says not
    /// to wait.
    pub(crate) async fn send(&self, data: &[u8], deadline: Deadline) -> SockResult<usize> {
        // MSG_NOSIGNAL: a write to a closed connection is EPIPE, never SIGPIPE for the host.
        let op = |s: &socket2::Socket| {
            rustix::net::send(s, data, SendFlags::NOSIGNAL).map_err(io::Error::from)
        };
        // A short write: the send buffer is full (the kernel then reports the next room).
        self.wait(Interest::WRITABLE, deadline, op, |&n| n < data.len())
            .await
    }

    /// Receives from a stream into the spare room of `buf` (after its length): the byte
    /// count.
    pub(crate) async fn recv_into(
        &self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
        flags: RecvFlags,
    ) -> SockResult<usize> {
        let room = buf.capacity() - buf.len();
        // A short read took all there was (a peek took nothing; 0 is the end of stream,
        // which stays readable).
        let peek = flags.contains(RecvFlags::PEEK);
        let drained = |&n: &usize| !peek && n > 0 && n < room;
        let op = |s: &socket2::Socket| {
            rustix::net::recv(s, spare_capacity(&mut *buf), flags)
                .map(|(n, _)| n)
                .map_err(io::Error::from)
        };
        self.wait(Interest::READABLE, deadline, op, drained).await
    }

    /// Receives from a stream into a new buffer of up to `max` bytes, made only once the
    /// socket is ready (so a connection waiting for data holds no buffer): empty at the end of
    /// the stream.
    ///
    /// After a small read on this socket (a request, a line), the next one lands in this
    /// thread's scratch buffer and is copied into a buffer of its own size: a buffer of `max`
    /// bytes for every read would cost a large allocation and free per 64-byte request (and
    /// glibc's `free` of 64 KiB or more sweeps its fast bins each time). After a large read
    /// (a bulk transfer), the next one gets a buffer of `max` bytes and keeps it, with no copy.
    pub(crate) async fn recv_chunk(&self, max: usize, deadline: Deadline) -> SockResult<Vec<u8>> {
        self.recv_chunk_after([&[], &[]], max, deadline).await
    }

    /// [`Os::recv_chunk`] into a buffer that starts with a copy of `prefix` (its two parts in
    /// order): bytes already received that the new ones join. The buffer, `prefix` included,
    /// is made only once the socket is ready, as `recv_chunk`'s; empty at the end of the
    /// stream.
    pub(crate) async fn recv_chunk_after(
        &self,
        prefix: [&[u8]; 2],
        max: usize,
        deadline: Deadline,
    ) -> SockResult<Vec<u8>> {
        let before = prefix[0].len() + prefix[1].len();
        let with_prefix = |capacity: usize| {
            let mut buf = Vec::with_capacity(before.saturating_add(capacity));
            buf.extend_from_slice(prefix[0]);
            buf.extend_from_slice(prefix[1]);
            buf
        };
        let op = |s: &socket2::Socket| {
            let buf = if self.last_chunk.load(Ordering::Relaxed) >= SMALL_CHUNK || max > SCRATCH {
                let mut buf = with_prefix(max);
                rustix::net::recv(s, spare_capacity(&mut buf), RecvFlags::empty())?;
                buf
            } else {
                SCRATCH_BUF.with_borrow_mut(|scratch| {
                    scratch.resize(SCRATCH, 0); // zeroed once per thread
                    let (n, _) = rustix::net::recv(s, &mut scratch[..max], RecvFlags::empty())?;
                    let mut buf = with_prefix(n);
                    buf.extend_from_slice(&scratch[..n]);
                    Ok::<_, io::Error>(buf)
                })?
            };
            let got = buf.len() - before;
            self.last_chunk.store(got, Ordering::Relaxed);
            Ok((buf, got))
        };
        // A short read took all there was (0 is the end of stream, which stays readable).
        let drained = |&(_, got): &(Vec<u8>, usize)| got > 0 && got < max;
        let (buf, got) = self.wait(Interest::READABLE, deadline, op, drained).await?;
        Ok(if got == 0 { Vec::new() } else { buf })
    }

    /// Receives one datagram into the spare room of `buf`: its sender.
    pub(crate) async fn recv_from_into(
        &self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
        flags: RecvFlags,
    ) -> SockResult<SocketAddr> {
        let op = |s: &socket2::Socket| {
            let (_, _, from) = rustix::net::recvfrom(s, spare_capacity(&mut *buf), flags)?;
            Ok(from)
        };
        // One datagram says nothing of whether another is queued behind it.
        let from = self
            .wait(Interest::READABLE, deadline, op, |_| false)
            .await?;
        from.and_then(|a| SocketAddr::try_from(a).ok())
            .ok_or(Errno::EIO)
    }

    /// Drops the datagram at the head of the queue without looking at it.
    pub(crate) fn discard_datagram(&self) {
        let _ = rustix::net::recv(&self.sock, &mut [0u8; 1][..], RecvFlags::DONTWAIT);
    }

    /// The next pending connection: the new socket (non-blocking), its peer, and the slot
    /// `slot` gave it. The slot is taken only once the reactor says a connection may be
    /// waiting, just before `accept(2)`: a call waiting for a connection holds none, and when
    /// `slot` fails (ENOMEM) the connection stays in the kernel's queue for a later accept.
    pub(crate) async fn accept<S>(
        &self,
        deadline: Deadline,
        slot: impl Fn() -> SockResult<S>,
    ) -> SockResult<(socket2::Socket, SocketAddr, S)> {
        let op = |s: &socket2::Socket| {
            let slot = slot().map_err(|e| io::Error::from_raw_os_error(e.0))?;
            let (conn, peer) = accept_nonblocking(s)?;
            Ok((conn, peer, slot))
        };
        // One connection says nothing of whether another is queued behind it.
        let (conn, peer, slot) = self
            .wait(Interest::READABLE, deadline, op, |_| false)
            .await?;
        Ok((conn, peer.ok_or(Errno::EIO)?, slot))
    }

    /// The next pending connection if there is one now (never waits; errors count as none).
    /// With `Look::Cached` (for `poll`), the reactor's "none pending" is the answer, without
    /// a syscall.
    pub(crate) fn accept_now(&self, look: Look) -> Option<(socket2::Socket, SocketAddr)> {
        let interest = with_errors(Interest::READABLE);
        let mut op = accept_nonblocking;
        let (conn, peer) = match self.cached(interest) {
            Cached::Idle if look == Look::Cached => return None,
            Cached::Seen(mut guard) => self.try_under(&mut guard, interest, &mut op, &|_| false)?,
            Cached::Idle | Cached::Unknown => self.once(&mut op),
        }
        .ok()?;
        Some((conn, peer?))
    }

    /// Wraps an accepted connection, with the slot it takes.
    pub(crate) fn accepted(conn: socket2::Socket, slot: Slot) -> Os {
        Os::wrap(conn, slot)
    }

    /// Resets `conn` (an accepted connection the guest never sees).
    pub(crate) fn refuse(conn: socket2::Socket) {
        let _ = conn.set_linger(Some(Duration::ZERO));
    }

    /// Makes closing this socket send a reset instead of a FIN (unread data at close).
    pub(crate) fn reset_on_close(&self) {
        let _ = self.sock.set_linger(Some(Duration::ZERO));
    }

    /// The outcome of a non-blocking connect: `None` while pending.
    pub(crate) fn connect_outcome(&self) -> Option<io::Result<()>> {
        let s = &self.sock;
        let mut fds = [PollFd::new(s, PollFlags::OUT)];
        let polled = rustix::event::poll(&mut fds, Some(&zero())).map_err(io::Error::from);
        self.note(&polled);
        match polled {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(e)),
        }
        match s.take_error() {
            Ok(Some(err)) => Some(Err(err)),
            Ok(None) if fds[0].revents().contains(PollFlags::OUT) => Some(Ok(())),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    pub(crate) fn local_addr(&self) -> SockResult<SocketAddr> {
        self.sock.local_addr()?.as_socket().ok_or(Errno::EINVAL)
    }

    /// The socket's local address if the kernel gave it a port: a socket that was never bound
    /// (explicitly, or implicitly by a datagram that left or a connect) has none, whatever
    /// the caller's bookkeeping believes. (`getsockname` then says port 0.)
    pub(crate) fn bound_addr(&self) -> Option<SocketAddr> {
        self.local_addr().ok().filter(|a| a.port() != 0)
    }

    pub(crate) fn peer_addr(&self) -> SockResult<SocketAddr> {
        self.sock.peer_addr()?.as_socket().ok_or(Errno::ENOTCONN)
    }

    /// `setsockopt` for the options of the contract; ENOPROTOOPT for any other.
    pub(crate) fn set_option(
        &self,
        kind: Kind,
        level: i32,
        option: i32,
        value: OptValue<'_>,
    ) -> SockResult<()> {
        let sock = &self.sock;
        let buffer_size = |v: OptValue<'_>| -> SockResult<usize> {
            Ok(usize::try_from(v.int()?)
                .unwrap_or(0)
                .min(MAX_SOCKET_BUFFER))
        };
        match (level, option) {
            (SOL_SOCKET, SO_REUSEADDR) => sock.set_reuse_address(value.int()? != 0)?,
            (SOL_SOCKET, SO_BROADCAST) => sock.set_broadcast(value.int()? != 0)?,
            (SOL_SOCKET, SO_KEEPALIVE) => sock.set_keepalive(value.int()? != 0)?,
            (SOL_SOCKET, SO_SNDBUF) => sock.set_send_buffer_size(buffer_size(value)?)?,
            (SOL_SOCKET, SO_RCVBUF) => sock.set_recv_buffer_size(buffer_size(value)?)?,
            (SOL_SOCKET, SO_LINGER) => sock.set_linger(value.linger()?)?,
            (IPPROTO_TCP, TCP_NODELAY) if kind == Kind::Stream => {
                sock.set_tcp_nodelay(value.int()? != 0)?
            }
            _ => return Err(Errno::ENOPROTOOPT),
        }
        Ok(())
    }

    /// The `poll` revents for the POLLIN/POLLOUT bits of `mask`, plus POLLERR and POLLHUP, in
    /// the contract's numbers (which are Linux's): the kernel's, asked only when the reactor
    /// does not know them to be none.
    pub(crate) fn revents(&self, mask: u32) -> u32 {
        let seen = match self.cached(poll_interest(mask)) {
            Cached::Idle => return 0,
            Cached::Seen(guard) => Some(guard),
            Cached::Unknown => None,
        };
        let registered = self.registered().is_some();
        let kernel = self.kernel_revents();
        if registered && kernel == 0 {
            // Nothing was ready after the registration: every change since has an event.
            self.primed.store(true, Ordering::Relaxed);
        }
        if let Some(mut guard) = seen {
            // What the kernel denies, the reactor forgets: it waits for the next event (the
            // kernel reports the next change: a poll without POLLOUT asks it to), and an
            // event since the guard was taken keeps its bits.
            let stale = [
                (POLLIN, Ready::READABLE),
                (POLLOUT, Ready::WRITABLE),
                (POLLERR, Ready::ERROR),
            ]
            .into_iter()
            .filter(|&(bit, _)| kernel & bit == 0)
            .fold(Ready::EMPTY, |stale, (_, ready)| stale | ready);
            let stale = stale & guard.ready();
            if !stale.is_empty() {
                guard.clear_ready_matching(stale);
            }
        }
        kernel & (mask | POLLERR | POLLHUP)
    }

    /// The kernel's `poll` revents (readable, writable, error, hang-up), in the contract's
    /// numbers.
    pub(super) fn kernel_revents(&self) -> u32 {
        let mut fds = [PollFd::new(&self.sock, PollFlags::IN | PollFlags::OUT)];
        let polled = rustix::event::poll(&mut fds, Some(&zero())).map_err(io::Error::from);
        self.note(&polled);
        let kernel = match polled {
            Ok(_) => fds[0].revents(),
            Err(_) => PollFlags::ERR,
        };
        [
            (PollFlags::IN, POLLIN),
            (PollFlags::OUT, POLLOUT),
            (PollFlags::ERR, POLLERR),
            (PollFlags::HUP, POLLHUP),
        ]
        .into_iter()
        .filter(|(flag, _)| kernel.contains(*flag))
        .fold(0, |revents, (_, bit)| revents | bit)
    }

    /// Waits until `ready()` may have turned true for `mask`. Spurious wake-ups are possible;
    /// the caller re-checks.
    pub(crate) async fn readiness(&self, mask: u32, ready: impl Fn() -> bool) {
        let interest = poll_interest(mask);
        let Ok(reactor) = self.reactor() else { return };
        loop {
            let Ok(mut guard) = reactor.ready(interest).await else {
                return;
            };
            self.primed.store(true, Ordering::Relaxed);
            if ready() {
                return;
            }
            let seen = guard.ready();
            if seen.is_read_closed() || seen.is_write_closed() {
                // tokio keeps "closed" readiness for good, so it cannot tell us about the next
                // change (say, a half-closed socket becoming writable): look again shortly.
                tokio::time::sleep(CLOSED_RECHECK).await;
                continue;
            }
            // Not ready for what was asked (the interest covers only that, so nothing true is
            // forgotten): wait for a new event.
            guard.clear_ready();
        }
    }
}

/// `accept(2)` of a connection that is non-blocking from the start (one syscall, not three),
/// with its peer's address if it is an IP one.
fn accept_nonblocking(s: &socket2::Socket) -> io::Result<(socket2::Socket, Option<SocketAddr>)> {
    let flags = rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC;
    let (conn, peer) = rustix::net::acceptfrom_with(s, flags)?;
    let peer = peer.and_then(|a| SocketAddr::try_from(a).ok());
    Ok((socket2::Socket::from(conn), peer))
}

fn zero() -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Policy, UsocketCtx};

    #[test]
    fn a_socket_has_a_local_address_only_once_the_kernel_gave_it_a_port() {
        let ctx = UsocketCtx::new("test", Arc::new(Policy::deny_all()));
        let open = |kind| Os::open(Family::V6, kind, ctx.quota().take_slot().unwrap()).unwrap();
        // A v4-mapped destination on an IPV6_V6ONLY socket: unreachable.
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9".parse().unwrap();
        let unreachable = Some(Errno::ENETUNREACH.0);

        let tcp = open(Kind::Stream);
        assert_eq!(tcp.bound_addr(), None, "fresh");
        // A connect that fails this early takes no port: getsockname says ("::", 0), which
        // is no address.
        let err = tcp.sock.connect(&mapped.into()).unwrap_err();
        assert_eq!(err.raw_os_error(), unreachable);
        assert_eq!(tcp.local_addr().map(|a| a.port()), Ok(0));
        assert_eq!(tcp.bound_addr(), None);
        tcp.sock
            .bind(&"[::1]:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let bound = tcp.bound_addr().unwrap();
        assert_eq!(
            (bound.ip().to_string(), bound.port() != 0),
            ("::1".into(), true)
        );

        // A datagram takes a port before the kernel looks at its destination.
        let udp = open(Kind::Datagram);
        assert_eq!(udp.bound_addr(), None, "fresh");
        let err = udp.sock.send_to(b"x", &mapped.into()).unwrap_err();
        assert_eq!(err.raw_os_error(), unreachable);
        assert_ne!(udp.bound_addr().map(|a| a.port()), None);
    }
}
