//! Byte quotas and the rate limit (issue 4, item 5) end to end, through the `probe` guest
//! and native loopback peers. (The socket-count quota is tested in lifecycle.rs.)
//!
//! The contract: an exhausted quota is ENOMEM at once, never a wait; a call that would cross
//! it gets what is left (`send`, `recv`: a short count) and then ENOMEM; the rate limit delays
//! I/O instead of failing it, and one guest at its rate does not slow the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use usocket_host::{Limits, Policy, Stats, UsocketCtx};
use usocket_tests::policy;

/// How long any wait of these tests may take at most.
const BOUND: Duration = Duration::from_secs(20);

fn loopback() -> Arc<Policy> {
    policy(&["connect,send,autobind=127.0.0.1:*"], &[])
}

/// Runs `probe ARGS` with these limits; returns its stdout and its counters. An exhausted
/// quota that made a call wait would hit the time limit, as a failure.
async fn probe(limits: Limits, args: &[&str]) -> (String, Arc<Stats>) {
    let ctx = UsocketCtx::new("probe", loopback()).with_limits(limits);
    let stats = ctx.stats();
    let out = usocket_tests::run_with("probe", args, ctx, BOUND)
        .await
        .expect("probe runs within its time limit");
    assert_eq!(
        out.code,
        0,
        "probe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.stdout_text(), stats)
}

/// A loopback TCP sink: accepts one connection and counts what it reads until end of stream.
/// The handle answers the total and when the stream ended.
async fn sink() -> (
    u16,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<(usize, Instant)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let done = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.fetch_add(n, Ordering::SeqCst);
                }
            }
        }
        (seen.load(Ordering::SeqCst), Instant::now())
    });
    (port, count, done)
}

/// A loopback TCP source: accepts one connection, writes `data`, and keeps the connection
/// open until the guest closes it.
async fn source(data: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        conn.write_all(&data).await.unwrap();
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(BOUND, conn.read(&mut buf)).await;
    });
    port
}

async fn total_of(done: tokio::task::JoinHandle<(usize, Instant)>) -> usize {
    tokio::time::timeout(BOUND, done)
        .await
        .expect("the sink saw end of stream")
        .unwrap()
        .0
}

fn sent_limit(max: u64) -> Limits {
    Limits {
        max_bytes_sent: Some(max),
        ..Limits::default()
    }
}

fn received_limit(max: u64) -> Limits {
    Limits {
        max_bytes_received: Some(max),
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_quota_gives_a_short_count_then_enomem() {
    let (port, _, done) = sink().await;
    let p = port.to_string();
    let (out, stats) = probe(sent_limit(100), &["send-seq", &p, "64", "3"]).await;
    println!("max_bytes_sent 100, send(64) x3: {out:?}");
    // 64 fit; 36 are left, so the second send is short; then nothing is left.
    assert_eq!(out, "ok 64\nok 36\nerrno 12\n");
    assert_eq!(stats.bytes_sent.load(Ordering::Relaxed), 100);
    assert_eq!(total_of(done).await, 100, "bytes on the wire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_quota_sends_what_is_left_then_enomem() {
    let (port, _, done) = sink().await;
    let p = port.to_string();
    let (out, stats) = probe(sent_limit(100), &["write-seq", &p, "64", "3"]).await;
    println!("max_bytes_sent 100, write(64) x3: {out:?}");
    // write() is all or an error: the second one sends the 36 bytes left (as a timed write
    // may send a prefix before ETIMEDOUT), then reports ENOMEM.
    assert_eq!(out, "ok Some(64)\nerrno 12\nerrno 12\n");
    assert_eq!(stats.bytes_sent.load(Ordering::Relaxed), 100);
    assert_eq!(total_of(done).await, 100, "bytes on the wire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_quota_never_truncates_a_datagram() {
    let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let p = receiver.local_addr().unwrap().port().to_string();
    let (out, stats) = probe(sent_limit(100), &["sendto-seq", &p, "64", "3"]).await;
    println!("max_bytes_sent 100, sendto(64) x3: {out:?}");
    // A datagram that does not fit whole is not sent at all.
    assert_eq!(out, "ok 64\nerrno 12\nerrno 12\n");
    assert_eq!(stats.bytes_sent.load(Ordering::Relaxed), 64);
    let mut buf = [0u8; 256];
    let (n, _) = tokio::time::timeout(BOUND, receiver.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 64);
    let more = tokio::time::timeout(Duration::from_millis(200), receiver.recv_from(&mut buf)).await;
    assert!(more.is_err(), "a refused datagram arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_quota_gives_a_short_count_then_enomem() {
    let p = source(vec![b'r'; 64]).await.to_string();
    let (out, stats) = probe(received_limit(10), &["recv-seq", &p, "6", "3"]).await;
    println!("max_bytes_received 10, recv(6) x3: {out:?}");
    assert_eq!(out, "ok 6\nok 4\nerrno 12\n");
    assert_eq!(stats.bytes_received.load(Ordering::Relaxed), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_quota_holds_for_read() {
    let p = source(vec![b'r'; 64]).await.to_string();
    let (out, stats) = probe(received_limit(10), &["read-seq", &p, "6", "3"]).await;
    let received = stats.bytes_received.load(Ordering::Relaxed);
    println!("max_bytes_received 10, read(6) x3: {out:?}, bytes_received {received}");
    let delivered: usize = out
        .lines()
        .filter_map(|l| {
            l.strip_prefix("ok Some(")?
                .strip_suffix(')')?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(
        delivered <= 10,
        "the guest was given {delivered} bytes: {out:?}"
    );
    assert!(received <= 10, "the host took in {received} bytes");
    assert!(out.ends_with("errno 12\n"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_quota_holds_for_readline() {
    let p = source(vec![b'x'; 400_000]).await.to_string();
    let (out, stats) = probe(
        received_limit(100_000),
        &["readline-seq", &p, "1000000", "2"],
    )
    .await;
    let received = stats.bytes_received.load(Ordering::Relaxed);
    println!("max_bytes_received 100000, readline(1000000) x2: {out:?}, bytes_received {received}");
    assert!(received <= 100_000, "the host took in {received} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_guest_is_paced_and_does_not_slow_another() {
    const BYTES: usize = 300_000;
    // Compile before any clock starts.
    usocket_tests::component("probe");
    let total = BYTES.to_string();

    let (slow_port, slow_count, slow_done) = sink().await;
    let slow_args = ["blast".to_string(), slow_port.to_string(), total.clone()];
    let limits = Limits {
        rate: Some(100_000),
        ..Limits::default()
    };
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let args: Vec<&str> = slow_args.iter().map(String::as_str).collect();
        probe(limits, &args).await
    });
    // Past its one-second burst (100 KB), the limited guest is being paced...
    let wait = Instant::now();
    while slow_count.load(Ordering::SeqCst) < 150_000 {
        assert!(wait.elapsed() < BOUND, "the limited guest does not send");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!slow.is_finished());

    // ...and meanwhile an unlimited guest sends as much at full speed.
    let (fast_port, _, fast_done) = sink().await;
    let fast_started = Instant::now();
    let (fast_out, _) = probe(
        Limits::default(),
        &["blast", &fast_port.to_string(), &total],
    )
    .await;
    let fast_elapsed = fast_started.elapsed();
    assert_eq!(total_of(fast_done).await, BYTES);
    let slow_still_running = !slow.is_finished();

    let (slow_out, slow_stats) = tokio::time::timeout(BOUND, slow)
        .await
        .expect("the limited guest finishes")
        .unwrap();
    let slow_elapsed = started.elapsed();
    assert_eq!(total_of(slow_done).await, BYTES);
    println!(
        "rate 100000 B/s, {BYTES} bytes: limited guest {slow_out:?} ({slow_elapsed:?} in all); \
         unlimited guest at the same time {fast_out:?} ({fast_elapsed:?} in all)"
    );
    assert_eq!(slow_stats.bytes_sent.load(Ordering::Relaxed), BYTES as u64);

    let guest_ms = |out: &str| -> u64 {
        let words: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(words[..3], ["ok", "blast", total.as_str()], "{out}");
        words[3].parse().unwrap()
    };
    // 200 KB beyond the burst at 100 KB/s: about 2 s.
    assert!(
        guest_ms(&slow_out) >= 1500,
        "the limited guest was not paced: {slow_out}"
    );
    assert!(
        guest_ms(&fast_out) < 1000,
        "the unlimited guest was slowed: {fast_out}"
    );
    assert!(
        fast_elapsed < Duration::from_millis(1500),
        "{fast_elapsed:?}"
    );
    assert!(
        slow_still_running,
        "the unlimited guest should finish while the limited one is still paced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_applies_to_each_direction_separately() {
    usocket_tests::component("probe");
    let (sink_port, _, sink_done) = sink().await;
    let source_port = source(vec![b'r'; 100_000]).await;
    let limits = Limits {
        rate: Some(100_000),
        ..Limits::default()
    };
    let started = Instant::now();
    // One second's burst of sending, then one second's burst of receiving: neither waits
    // if each direction has its own bucket.
    let (out, _) = probe(
        limits,
        &[
            "blast",
            &sink_port.to_string(),
            "100000",
            "read-seq",
            &source_port.to_string(),
            "100000",
            "1",
        ],
    )
    .await;
    let elapsed = started.elapsed();
    println!("rate 100000 B/s, send 100000 then receive 100000: {out:?} in {elapsed:?}");
    assert_eq!(total_of(sink_done).await, 100_000);
    assert!(out.ends_with("ok Some(100000)\n"), "{out:?}");
    assert!(
        elapsed < Duration::from_millis(700),
        "receiving waited for the sending direction's tokens: {elapsed:?}"
    );
}

/// Issue 8, item 4: each received byte counts once against the receive quota. A line, then
/// the rest by recv: the host took all 156 bytes in (counted then), and handing the queued
/// ones to the guest does not count them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_byte_counts_once_whichever_call_hands_it_over() {
    let mut data = b"line\n".to_vec();
    data.extend([b'x'; 151]);
    let p = source(data).await.to_string();
    // Let the whole write arrive, so that readline takes it all into the host at once.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (out, stats) = probe(received_limit(200), &["readline-recv", &p, "1"]).await;
    println!("max_bytes_received 200, readline then recv(1000) of 156 bytes: {out:?}");
    assert_eq!(out, "ok Some(5)\nok 151\n");
    assert_eq!(stats.bytes_received.load(Ordering::Relaxed), 156);
}

/// Issue 8, item 4: a `max_buffered` below the guest library's 64 KiB read-ahead must not
/// wedge the socket: the read-ahead fits the limit, and giving it back cannot fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_max_buffered_does_not_wedge_a_socket_after_readline() {
    let mut data = b"a\n".to_vec();
    data.extend([b'b'; 3000]);
    let p = source(data).await.to_string();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let limits = Limits {
        max_buffered: 1000,
        ..Limits::default()
    };
    let (out, _) = probe(limits, &["readline-read", &p, "10"]).await;
    println!("max_buffered 1000, readline then read(10): {out:?}");
    assert_eq!(out, "ok Some(2)\nok Some(10)\n");
}

/// Issue 8, item 4: rate tokens are paid before bytes leave. At 1000 B/s one 4000-byte write
/// goes out over about 3 s (one second of burst, then 1000 B/s), not all at once with the
/// guest sleeping afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_write_leaves_at_the_rate_not_in_one_burst() {
    usocket_tests::component("probe");
    let (port, count, done) = sink().await;
    let limits = Limits {
        rate: Some(1000),
        ..Limits::default()
    };
    let started = Instant::now();
    let guest =
        tokio::spawn(async move { probe(limits, &["blast", &port.to_string(), "4000"]).await });
    // Half a second in, the bucket has allowed 1500 bytes: far from all 4000.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let early = count.load(Ordering::SeqCst);
    let (out, _) = tokio::time::timeout(BOUND, guest).await.unwrap().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(total_of(done).await, 4000);
    println!("rate 1000 B/s, 4000 bytes: {out:?}, {early} bytes after 0.5 s, {elapsed:?} in all");
    assert!(early <= 2500, "{early} bytes had left after 0.5 s");
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
}
