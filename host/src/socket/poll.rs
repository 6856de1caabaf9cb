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
    loop {
        let now = revents(entries);
        if now.iter().any(|&r| r != 0)
            || timeout_ms == 0
            || entries.is_empty() && deadline.is_none()
        {
            return Ok(now);
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
