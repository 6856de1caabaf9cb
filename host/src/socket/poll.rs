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

/// Waits until one of `entries` (socket, mask) is ready or `timeout_ms` passes (negative: no
/// limit; 0: no wait), and returns the revents of every entry, in order. A listener is
/// readable only for connections the policy admits (`ctx`'s gate decides them first).
pub(crate) async fn poll(
    ctx: &UsocketCtx,
    entries: &[(&Socket, u32)],
    timeout_ms: i32,
) -> SockResult<Vec<u32>> {
    if entries.len() > MAX_POLL_ENTRIES {
        return Err(Errno::EINVAL);
    }
    let revents = |entries: &[(&Socket, u32)]| -> Vec<u32> {
        entries
            .iter()
            .map(|(sock, mask)| {
                sock.admit_pending(ctx, *mask);
                sock.revents(*mask)
            })
            .collect()
    };
    let deadline = (timeout_ms >= 0)
        .then(|| tokio::time::Instant::now() + Duration::from_millis(timeout_ms as u64));
    // Whether the reactor has taken in the kernel's events since the call began.
    let mut caught_up = false;
    loop {
        let now = revents(entries);
        if now.iter().any(|&r| r != 0)
            || timeout_ms == 0 && (caught_up || entries.is_empty())
            || entries.is_empty() && deadline.is_none()
        {
            return Ok(now);
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
            Some(at) => {
                if tokio::time::timeout_at(at, any_ready).await.is_err() {
                    return Ok(revents(entries));
                }
            }
            None => any_ready.await,
        }
    }
}
