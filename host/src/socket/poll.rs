//! `select.poll`: one host call that waits on many sockets at once.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use super::Socket;
use crate::ctx::UsocketCtx;
use crate::errno::{Errno, SockResult};

/// The most sockets one `poll` call may wait on.
pub(crate) const MAX_POLL_ENTRIES: usize = 4096;

/// The sockets of one `poll` call, each with its mask, in the guest's order, as their holder
/// (the binding's resource table, a test's locals) lends them: one at a time to look at,
/// which may read (a look can take a connection's bytes into the host), then all at once,
/// shared, to wait on.
pub(crate) trait PollSet {
    /// What lending a socket can fail with (a handle that is not a socket).
    type Error;
    /// How many entries there are.
    fn len(&self) -> usize;
    /// Calls `f` with each socket and its mask, in order.
    fn for_each_mut(&mut self, f: impl FnMut(&mut Socket, u32)) -> Result<(), Self::Error>;
    /// Every socket and its mask, in order.
    fn shared(&self) -> Result<Vec<(&Socket, u32)>, Self::Error>;
}

/// Local sockets (tests, embedders' own loops).
impl PollSet for [(&mut Socket, u32)] {
    type Error = std::convert::Infallible;
    fn len(&self) -> usize {
        <[_]>::len(self)
    }
    fn for_each_mut(&mut self, mut f: impl FnMut(&mut Socket, u32)) -> Result<(), Self::Error> {
        for (sock, mask) in self.iter_mut() {
            f(sock, *mask);
        }
        Ok(())
    }
    fn shared(&self) -> Result<Vec<(&Socket, u32)>, Self::Error> {
        Ok(self.iter().map(|(sock, mask)| (&**sock, *mask)).collect())
    }
}

/// Waits until one of `set`'s sockets is ready or `timeout_ms` passes (negative: no limit;
/// 0: no wait), and returns the revents of every entry, in order. A listener is readable only
/// for connections the policy admits (`ctx`'s gate decides them first); a connection the
/// reactor saw become readable reads what the kernel holds into the host as it is looked at
/// (see [`Socket::look`]). The outer error is `set`'s.
pub(crate) async fn poll<S: PollSet + ?Sized>(
    ctx: &UsocketCtx,
    set: &mut S,
    timeout_ms: i32,
) -> Result<SockResult<Vec<u32>>, S::Error> {
    if set.len() > MAX_POLL_ENTRIES {
        return Ok(Err(Errno::EINVAL));
    }
    let look = |set: &mut S| -> Result<Vec<u32>, S::Error> {
        let mut revents = Vec::with_capacity(set.len());
        set.for_each_mut(|sock, mask| revents.push(sock.look(ctx, mask)))?;
        Ok(revents)
    };
    let deadline = (timeout_ms >= 0)
        .then(|| tokio::time::Instant::now() + Duration::from_millis(timeout_ms as u64));
    let empty = set.len() == 0;
    // Whether the reactor has taken in the kernel's events since the call began.
    let mut caught_up = false;
    loop {
        let now = look(set)?;
        if now.iter().any(|&r| r != 0)
            || timeout_ms == 0 && (caught_up || empty)
            || empty && deadline.is_none()
        {
            return Ok(Ok(now));
        }
        if timeout_ms == 0 {
            // Idle sockets are answered from the reactor's readiness, which may lag behind
            // events the kernel has already queued (say, a guest that polls in a loop on a
            // runtime busy with it). Before "nothing", let the reactor look once: tokio wakes
            // a yielded task only after polling its driver. (A poll that waits needs no such
            // step: its wait wakes at the reactor's next look.)
            tokio::task::yield_now().await;
            caught_up = true;
            continue;
        }
        let timed_out = {
            let entries = set.shared()?;
            let mut waiters: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = entries
                .iter()
                .map(|(sock, mask)| {
                    Box::pin(sock.readiness(*mask)) as Pin<Box<dyn Future<Output = ()> + Send + '_>>
                })
                .collect();
            let any_ready = std::future::poll_fn(|cx| {
                for w in waiters.iter_mut() {
                    if w.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending
            });
            match deadline {
                Some(at) => tokio::time::timeout_at(at, any_ready).await.is_err(),
                None => {
                    any_ready.await;
                    false
                }
            }
        };
        if timed_out {
            return look(set).map(Ok);
        }
    }
}
