//! IPv6 end to end: the `ipv6` guest program over `::1` (TCP, UDP, getaddrinfo, family
//! errors), IPV6_V6ONLY (an IPv6 socket never reaches an IPv4 listener, not even through
//! `::ffff:127.0.0.1`), and policy rules for IPv6 addresses. Ports are all ephemeral.

use std::net::{IpAddr, Ipv6Addr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::UdpSocket;
use usocket_host::Policy;
use usocket_tests::{counting_listener, policy};

/// Runs `ipv6 ARGS` under `p` (bounded by the harness's time limit) and returns its stdout.
async fn ipv6(p: Arc<Policy>, args: &[&str]) -> String {
    usocket_tests::stdout_of("ipv6", args, p).await
}

/// Lets a stray connection reach a listener before we count.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The line for `getaddrinfo("localhost", 80, AF_INET6, SOCK_STREAM)`, from what this
/// machine's resolver knows. Here /etc/hosts has no `::1` entry for localhost (only
/// `127.0.0.1 localhost`), so the answer is -2 (EAI_NONAME); where /etc/hosts does list
/// `::1 localhost` it is that address.
fn localhost_v6_line() -> String {
    let has_v6 = ("localhost", 80)
        .to_socket_addrs()
        .map(|mut addrs| addrs.any(|a| a.ip() == IpAddr::V6(Ipv6Addr::LOCALHOST)))
        .unwrap_or(false);
    if has_v6 {
        "('ok', [(10, 1, 6, '', ('::1', 80))])".into()
    } else {
        "('OSError', -2)".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_over_loopback() {
    let (v4_port, v4_count) = counting_listener("127.0.0.1:0").await;
    let p = policy(
        &[
            "bind,listen,accept,recv=[::1]:*",
            "connect,send=*:*",
            "resolve=localhost",
        ],
        &[],
    );
    let out = ipv6(p, &["checks", &v4_port.to_string()]).await;
    let expected = format!(
        "\
tcp listener getsockname '::1' True
tcp listener family 10
tcp connect ('ok', None)
tcp accept '::1' True
tcp client getsockname '::1'
tcp client getpeername True
tcp client -> server ('ok', 5)
tcp server got b'ping\\n'
tcp server -> client ('ok', 5)
tcp client got b'pong\\n'
tcp client eof b''
udp server getsockname '::1'
udp sendto ('ok', 5)
udp server recvfrom b'hello' '::1' True
udp reply ('ok', 5)
udp client recvfrom b'HELLO' True
getaddrinfo ::1 AF_INET6 ('ok', [(10, 1, 6, '', ('::1', 80))])
getaddrinfo ::1 AF_INET6 SOCK_DGRAM ('ok', [(10, 2, 17, '', ('::1', 53))])
getaddrinfo ::1 any family ('ok', [(10, 1, 6, '', ('::1', 80))])
getaddrinfo 127.0.0.1 AF_INET6 ('OSError', -9)
getaddrinfo ::1 AF_INET ('OSError', -9)
getaddrinfo ::1 af=12345 ('OSError', -6)
getaddrinfo localhost AF_INET6 {localhost}
AF_INET6 connect 127.0.0.1 ('OSError', 97)
AF_INET connect ::1 ('OSError', 97)
AF_INET6 connect ::ffff:127.0.0.1 ('OSError', 101)
",
        localhost = localhost_v6_line()
    );
    // The last line is Linux's answer with IPV6_V6ONLY (ENETUNREACH); what matters most is
    // that it is an OSError and that the IPv4 listener saw nothing (checked below).
    assert_eq!(out, expected);
    settle().await;
    assert_eq!(
        v4_count.load(Ordering::SeqCst),
        0,
        "an AF_INET6 socket reached the IPv4 listener"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v6_grant_covers_v6_and_a_v4_grant_does_not() {
    let (port, count) = counting_listener("[::1]:0").await;
    let p = port.to_string();

    assert_eq!(
        ipv6(policy(&["connect=[::1]:*"], &[]), &["connect", &p]).await,
        "connect ::1 ('ok', None)\n"
    );
    settle().await;
    assert_eq!(count.load(Ordering::SeqCst), 1);

    for refused in [
        policy(&["connect=127.0.0.1:*"], &[]),
        policy(&["connect=127.0.0.0/8:*"], &[]),
        policy(&[], &[]),
        policy(&["connect=*:*"], &["connect=[::1]:*"]),
    ] {
        assert_eq!(
            ipv6(refused, &["connect", &p]).await,
            "connect ::1 ('OSError', 13)\n"
        );
    }
    settle().await;
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "a refused connect reached the listener"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v6_sendto_and_bind_need_v6_grants() {
    let receiver = UdpSocket::bind("[::1]:0").await.unwrap();
    let port = receiver.local_addr().unwrap().port();
    let p = port.to_string();
    let mut buf = [0u8; 16];

    assert_eq!(
        ipv6(policy(&["send=127.0.0.1:*"], &[]), &["sendto", &p]).await,
        "sendto ::1 ('OSError', 13)\n"
    );
    let nothing =
        tokio::time::timeout(Duration::from_millis(200), receiver.recv_from(&mut buf)).await;
    assert!(nothing.is_err(), "a refused datagram arrived");

    assert_eq!(
        ipv6(policy(&["send=[::1]:*"], &[]), &["sendto", &p]).await,
        "sendto ::1 ('ok', 2)\n"
    );
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), receiver.recv_from(&mut buf))
        .await
        .expect("the datagram arrives")
        .unwrap();
    assert_eq!(&buf[..n], b"v6");
    assert_eq!(from.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));

    assert_eq!(
        ipv6(policy(&["bind=127.0.0.1:*"], &[]), &["bind"]).await,
        "bind ::1 ('OSError', 13)\n"
    );
    assert_eq!(
        ipv6(policy(&["bind=[::1]:*"], &[]), &["bind"]).await,
        "bind ::1 ('ok', None)\n"
    );
}
