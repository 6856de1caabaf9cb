//! `write` and `send` send the guest's bytes straight from its memory (no host copy, see
//! `host/src/bindings.rs`): every byte arrives once and in order, also when the call waits for
//! a slow reader many times; and a guest stopped while blocked in such a call ends cleanly.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use usocket_host::UsocketCtx;
use usocket_tests::policy;

/// How long any wait of these tests may take at most.
const BOUND: Duration = Duration::from_secs(30);

/// What the `probe` guest's `pattern` command sends (the same formula).
fn pattern(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8)
        .collect()
}

/// Runs `probe pattern PORT SIZE HOW` against a reader that starts late and reads in small
/// pieces (the guest's call fills the socket buffers and waits many times); returns what the
/// guest printed and what arrived.
async fn pattern_through_a_slow_reader(size: usize, how: &str) -> (String, Vec<u8>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let reader = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 7 * 1024];
        loop {
            match conn.read(&mut buf).await.unwrap() {
                0 => break got,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    let rules = policy(&["connect=127.0.0.1:*"], &[]);
    let (p, n) = (port.to_string(), size.to_string());
    let out = usocket_tests::run_with(
        "probe",
        &["pattern", &p, &n, how],
        UsocketCtx::new("probe", rules),
        BOUND,
    )
    .await
    .expect("probe runs");
    assert_eq!(out.code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let got = tokio::time::timeout(BOUND, reader).await.unwrap().unwrap();
    (out.stdout_text(), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_large_write_arrives_whole_and_in_order() {
    let size = 24 << 20;
    let (said, got) = pattern_through_a_slow_reader(size, "write").await;
    assert_eq!(said, format!("ok pattern {size}\n"));
    assert_eq!(got.len(), size);
    assert!(
        got == pattern(size),
        "the bytes differ from what the guest wrote"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_of_what_fits_arrive_whole_and_in_order() {
    let size = (8 << 20) + 12_345;
    let (said, got) = pattern_through_a_slow_reader(size, "send").await;
    assert_eq!(said, format!("ok pattern {size}\n"));
    assert_eq!(got.len(), size);
    assert!(
        got == pattern(size),
        "the bytes differ from what the guest sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_stopped_while_its_write_waits_ends_and_its_peer_sees_the_connection_go() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and never reads: the guest's 64 MiB write waits for room until its time limit.
    let peer = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Then the connection must be gone (closed or reset) once the buffers drain.
        let mut buf = vec![0u8; 1 << 20];
        let deadline = Instant::now() + BOUND;
        while Instant::now() < deadline {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
        false
    });
    let rules = policy(&["connect=127.0.0.1:*"], &[]);
    let p = port.to_string();
    let started = Instant::now();
    let result = usocket_tests::run_with(
        "probe",
        &["pattern", &p, &(64 << 20).to_string(), "write"],
        UsocketCtx::new("probe", rules),
        Duration::from_secs(1),
    )
    .await;
    let err = result.expect_err("the write cannot finish: nobody reads");
    assert!(err.to_string().contains("time limit"), "{err}");
    assert!(started.elapsed() < BOUND);
    assert!(
        tokio::time::timeout(BOUND, peer).await.unwrap().unwrap(),
        "the peer still saw the connection after the guest ended"
    );
}
