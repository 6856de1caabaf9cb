//! A non-blocking socket whose TCP connect is still pending: `read(n)`, `read()`, `readline()`
//! and `readinto(buf)` return None (nothing available), as `write` returns None (nothing
//! written), in both non-blocking spellings (docs/contract.md#blocking-timeouts-non-blocking).
//!
//! On loopback a connect completes at once unless the listener's accept queue is full: then
//! Linux drops the SYN and the connect stays in SYN_SENT (retrying after 1 s, 3 s, ...). The
//! test makes such a listener (backlog 0, never accepting, filled by its own connections) and
//! the guest shows, before and after the reads, that its connect is still pending.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use usocket_tests::{policy, stdout_of};

/// A listener whose accept queue is full, and the connections that keep it so.
struct FullListener {
    addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
    pending: JoinHandle<std::io::Result<TcpStream>>,
}

impl Drop for FullListener {
    fn drop(&mut self) {
        self.pending.abort();
    }
}

/// A listener on 127.0.0.1 with backlog 0 that never accepts, filled with connections of our
/// own until one of them stays pending (bounded: 8 tries of 300 ms), and still is 500 ms later.
async fn full_listener() -> FullListener {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..8 {
        let mut connect = tokio::spawn(TcpStream::connect(addr));
        match tokio::time::timeout(Duration::from_millis(300), &mut connect).await {
            Ok(done) => queued.push(done.unwrap().expect("a connection to the listener")),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                assert!(
                    !connect.is_finished(),
                    "a connect to the full listener completed after all"
                );
                return FullListener {
                    addr,
                    _listener: listener,
                    _queued: queued,
                    pending: connect,
                };
            }
        }
    }
    panic!("8 connects to a listener with backlog 0 all completed: cannot keep one pending here");
}

/// What the guest prints for each socket: the connect stays pending throughout.
const ONE_SOCKET: &str = "\
connect EINPROGRESS
connect EALREADY
poll 0
read(4) None
read() None
readline() None
readinto(4) None
write None
connect EALREADY
poll 0
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_a_pending_nonblocking_connect_return_none() {
    let full = full_listener().await;
    let port = full.addr.port().to_string();
    let out = stdout_of(
        "pending_connect",
        &[&port],
        policy(&["connect=127.0.0.1:*"], &[]),
    )
    .await;
    let expected = format!("setblocking(False)\n{ONE_SOCKET}settimeout(0)\n{ONE_SOCKET}");
    assert_eq!(out, expected);
    assert!(
        !full.pending.is_finished(),
        "the listener's queue must still be full"
    );
}
