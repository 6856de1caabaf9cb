//! Policy enforcement end to end: a guest gets EACCES for what it was not granted, and the
//! refused use never reaches the network (loopback listeners count what arrives).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::UdpSocket;
use usocket_host::{Policy, Stats, UsocketCtx};
use usocket_tests::{counting_listener, policy};

async fn probe(p: Arc<Policy>, args: &[&str]) -> String {
    usocket_tests::stdout_of("probe", args, p).await
}

/// Lets a stray connection reach a listener before we count.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_needs_a_grant_and_a_refusal_sends_nothing() {
    let (port, count) = counting_listener("127.0.0.1:0").await;
    let p = port.to_string();
    assert_eq!(
        probe(policy(&[], &[]), &["connect", "127.0.0.1", &p]).await,
        "errno 13\n"
    );
    let other_port = format!("connect=127.0.0.1:{}", port.wrapping_add(1).max(1));
    assert_eq!(
        probe(policy(&[&other_port], &[]), &["connect", "127.0.0.1", &p]).await,
        "errno 13\n"
    );
    settle().await;
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "a refused connect reached the listener"
    );

    let grant = format!("connect=127.0.0.1:{port}");
    assert_eq!(
        probe(policy(&[&grant], &[]), &["connect", "127.0.0.1", &p]).await,
        "ok\n"
    );
    settle().await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cidr_and_port_range_grants() {
    let (port, count) = counting_listener("127.0.0.1:0").await;
    let p = port.to_string();
    let range = format!("connect=127.0.0.0/8:{}-{}", port.saturating_sub(1), port);
    assert_eq!(
        probe(policy(&[&range], &[]), &["connect", "127.0.0.1", &p]).await,
        "ok\n"
    );
    let below = format!("connect=127.0.0.0/8:1-{}", port - 1);
    assert_eq!(
        probe(policy(&[&below], &[]), &["connect", "127.0.0.1", &p]).await,
        "errno 13\n"
    );
    settle().await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_beats_allow() {
    let (port, count) = counting_listener("127.0.0.1:0").await;
    let p = port.to_string();
    let deny = format!("connect=127.0.0.1:{port}");
    let out = probe(
        policy(&["connect=*:*"], &[&deny]),
        &["connect", "127.0.0.1", &p],
    )
    .await;
    assert_eq!(out, "errno 13\n");
    settle().await;
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_and_listen_need_a_grant() {
    // Find a free port, then ask the guest to take it.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = free.to_string();
    let out = probe(
        policy(&["connect=127.0.0.1:*"], &[]),
        &["bind", "127.0.0.1", &p, "listen", "127.0.0.1", "0"],
    )
    .await;
    assert_eq!(out, "errno 13\nerrno 13\n");
    let grant = format!("bind=127.0.0.1:{free}");
    assert_eq!(
        probe(policy(&[&grant], &[]), &["bind", "127.0.0.1", &p]).await,
        "ok\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_needs_a_grant_and_a_denied_name_is_never_looked_up() {
    let p = policy(&["resolve=*.example.com"], &[]);
    assert_eq!(probe(p, &["resolve", "localhost"]).await, "errno 13\n");
    assert_eq!(
        probe(
            policy(&["resolve=localhost"], &[]),
            &["resolve", "localhost"]
        )
        .await,
        "ok 127.0.0.1\n"
    );
    assert_eq!(
        probe(
            policy(&["resolve=*"], &["resolve=localhost"]),
            &["resolve", "localhost"]
        )
        .await,
        "errno 13\n"
    );
    // Numeric literals need no grant: there is nothing to look up.
    assert_eq!(
        probe(policy(&[], &[]), &["resolve", "127.0.0.1"]).await,
        "ok 127.0.0.1\n"
    );

    let stats = lookups_of(policy(&["resolve=*.example.com"], &[]), "localhost").await;
    assert_eq!(
        Stats::get(&stats.lookups),
        0,
        "a denied name reached the resolver"
    );
    assert_eq!(Stats::get(&stats.denied), 1);
    let stats = lookups_of(policy(&["resolve=localhost"], &[]), "localhost").await;
    assert_eq!(Stats::get(&stats.lookups), 1);
}

/// Runs `probe resolve NAME` with a context whose counters we keep.
async fn lookups_of(p: Arc<Policy>, name: &str) -> Arc<Stats> {
    let ctx = UsocketCtx::new("probe", p);
    let stats = ctx.stats();
    let out = usocket_tests::run_with("probe", &["resolve", name], ctx, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(out.code, 0);
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendto_needs_a_send_grant_and_a_refused_datagram_never_arrives() {
    let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = receiver.local_addr().unwrap().port();
    let p = port.to_string();
    assert_eq!(
        probe(policy(&[], &[]), &["sendto", "127.0.0.1", &p]).await,
        "errno 13\n"
    );
    let mut buf = [0u8; 16];
    let nothing =
        tokio::time::timeout(Duration::from_millis(200), receiver.recv_from(&mut buf)).await;
    assert!(nothing.is_err(), "a refused datagram arrived");

    let grant = format!("send=127.0.0.1:{port}");
    assert_eq!(
        probe(policy(&[&grant], &[]), &["sendto", "127.0.0.1", &p]).await,
        "ok 5\n"
    );
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), receiver.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_sockets_stay_denied_even_when_usocket_grants_the_address() {
    let (port, count) = counting_listener("127.0.0.1:0").await;
    let p = port.to_string();
    let out = probe(
        policy(&["connect=*:*"], &[]),
        &["std-connect", "127.0.0.1", &p],
    )
    .await;
    assert!(out.starts_with("denied "), "{out}");
    settle().await;
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "wasi:sockets reached the network"
    );
}
