//! Issue 8, item 9: a listener whose only pending connection comes from a peer the policy
//! refuses is not readable (`poll` reports nothing and `accept` says EAGAIN), and the refused
//! peer is reset; an admitted peer makes it readable. Through a guest, on loopback (the
//! refused peer connects from 127.0.0.2).

use std::io::Read;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::time::{Duration, Instant};

use usocket_tests::{Options, policy, run};

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn connect_from(source: [u8; 4], port: u16) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((source, 0))).unwrap();
    let conn = s
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let conn = conn.into_std().unwrap();
    conn.set_nonblocking(false).unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_is_readable_only_for_a_peer_the_policy_admits() {
    usocket_tests::component("probe");
    let port = free_port();
    let opts = Options {
        policy: policy(&["bind,listen=127.0.0.1:*", "accept=127.0.0.1:*"], &[]),
        time_limit: Duration::from_secs(20),
        ..Options::default()
    };
    let p = port.to_string();
    let guest = tokio::spawn(async move { run("probe", &["poll-accept", &p, "700"], opts).await });
    // Once the guest listens (bounded wait), a refused peer connects during its sleep.
    let started = Instant::now();
    let mut refused = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the guest never listened"
        );
        if StdListener::bind(("127.0.0.1", port)).is_err() {
            break connect_from([127, 0, 0, 2], port).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let reset = tokio::task::spawn_blocking(move || {
        refused
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        refused.read(&mut [0u8; 4]).map_err(|e| e.kind())
    })
    .await
    .unwrap();
    assert_eq!(reset, Err(std::io::ErrorKind::ConnectionReset));
    // Then an admitted peer, during the guest's second poll: the reset came at the start of
    // its first poll(300), so a second later the second poll(5000) is under way.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let _admitted = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), guest)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        out.stdout_text(),
        "ok poll []\nerrno 11\nok poll [1]\nok accept 127.0.0.1\n"
    );
}
