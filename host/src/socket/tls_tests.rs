//! Unit tests of the TLS layer: the socket core against native rustls peers on loopback, with
//! certificates made here (usocket-test-pki).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use usocket_abi::{AF_INET, IPPROTO_SEC, POLLIN, SOCK_STREAM};
use usocket_test_pki::{Ca, Leaf, client_config, server_config};

use super::tests::poll_on;
use super::*;
use crate::policy::Policy;
use crate::tls::TlsConfig;

/// A new test CA.
fn ca() -> Ca {
    Ca::new("usocket test CA")
}

/// The embedder trusting `ca` (and no system roots).
fn trusting(ca: &Ca) -> TlsConfig {
    TlsConfig::empty()
        .add_roots(ca.pem.as_bytes(), "test CA")
        .unwrap()
}

/// A native TLS server on loopback that runs `serve` on its one connection (on a thread,
/// with a read timeout so a test that goes wrong cannot hang it).
fn tls_server(
    leaf: &Leaf,
    serve: impl FnOnce(rustls::StreamOwned<rustls::ServerConnection, TcpStream>) + Send + 'static,
) -> (u16, thread::JoinHandle<()>) {
    let config = server_config(leaf);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        serve(rustls::StreamOwned::new(conn, tcp));
    });
    (port, handle)
}

/// Reads lines and answers each in upper case until the client closes (with close_notify).
fn upper_echo(mut s: rustls::StreamOwned<rustls::ServerConnection, TcpStream>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => s.write_all(&buf[..n].to_ascii_uppercase()).unwrap(),
            Err(e) => panic!("server read: {e}"),
        }
    }
}

fn ctx_with(rules: &[&str], tls: TlsConfig) -> UsocketCtx {
    let policy = Policy::from_texts(rules, &[] as &[&str], cap_std::ambient_authority()).unwrap();
    UsocketCtx::new("tls-test", Arc::new(policy)).with_tls(tls)
}

fn loopback(tls: TlsConfig) -> UsocketCtx {
    ctx_with(&["connect,bind,listen,accept=127.0.0.1:*"], tls)
}

async fn connect(ctx: &UsocketCtx, port: u16, proto: i32) -> SockResult<Socket> {
    let mut sock = Socket::create(ctx, AF_INET, SOCK_STREAM, proto)?;
    sock.connect(ctx, "127.0.0.1", i32::from(port)).await?;
    Ok(sock)
}

fn client(verify: bool) -> TlsParams {
    TlsParams {
        verify,
        ..TlsParams::default()
    }
}

#[tokio::test]
async fn a_verified_client_carries_lines_and_bulk_both_ways_and_closes_with_close_notify() {
    let ca = ca();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let (port, server) = tls_server(&leaf, upper_echo);
    let ctx = loopback(trusting(&ca));
    let mut sock = connect(&ctx, port, 0).await.unwrap();
    sock.start_tls(&ctx, client(true), true).await.unwrap();
    let der = sock
        .peer_certificate()
        .unwrap()
        .expect("a certificate after the handshake");
    assert_eq!(der, leaf.cert_der.to_vec());

    assert_eq!(sock.write(&ctx, b"hello\nworld\n").await, Ok(12));
    assert_eq!(
        sock.readline(&ctx, None).await.unwrap().unwrap(),
        b"HELLO\n"
    );
    assert_eq!(
        sock.readline(&ctx, None).await.unwrap().unwrap(),
        b"WORLD\n"
    );

    // More than a record, more than the host's buffers: byte-exact.
    let bulk: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let writer = sock.write(&ctx, &bulk).await.unwrap();
    assert_eq!(writer, bulk.len());
    let back = sock.read(&ctx, Some(bulk.len())).await.unwrap().unwrap();
    assert_eq!(back, bulk.to_ascii_uppercase());

    sock.close();
    // The server's read returned 0: a clean close_notify (a bare FIN is an error to rustls).
    server.join().unwrap();
}

#[tokio::test]
async fn certificate_failures_have_their_own_errno() {
    let ca = ca();
    let cases = [
        (ca.leaf(&["other.test"]), trusting(&ca), Errno::EKEYREJECTED),
        (
            ca.expired_leaf(&["127.0.0.1"]),
            trusting(&ca),
            Errno::EKEYEXPIRED,
        ),
        (ca.leaf(&["127.0.0.1"]), TlsConfig::empty(), Errno::ENOKEY),
    ];
    for (leaf, trust, want) in cases {
        let (port, server) = tls_server(&leaf, |mut s| {
            let _ = s.read(&mut [0u8; 16]);
        });
        let ctx = loopback(trust);
        let mut sock = connect(&ctx, port, 0).await.unwrap();
        assert_eq!(sock.start_tls(&ctx, client(true), true).await, Err(want));
        // Sticky: the stream cannot be used after a failed handshake.
        assert_eq!(sock.send(&ctx, b"x").await, Err(want));
        assert!(
            ctx.stats()
                .by_reason()
                .iter()
                .any(|(reason, _)| reason.contains("TLS handshake failed")),
            "{:?}",
            ctx.stats().by_reason()
        );
        drop(sock);
        server.join().unwrap();
    }
}

#[tokio::test]
async fn cert_none_accepts_an_unknown_ca_but_a_tls_rule_verifies_anyway() {
    let ca = ca();
    let leaf = ca.leaf(&["127.0.0.1"]);

    let (port, server) = tls_server(&leaf, upper_echo);
    let ctx = loopback(TlsConfig::empty());
    let mut sock = connect(&ctx, port, 0).await.unwrap();
    sock.start_tls(&ctx, client(false), true).await.unwrap();
    sock.write(&ctx, b"ok\n").await.unwrap();
    assert_eq!(sock.readline(&ctx, None).await.unwrap().unwrap(), b"OK\n");
    sock.close();
    server.join().unwrap();

    // Granted by `tls=` only: plaintext is refused, and CERT_NONE does not turn verification off.
    let (port, server) = tls_server(&leaf, |mut s| {
        let _ = s.read(&mut [0u8; 16]);
    });
    let ctx = ctx_with(&["tls=127.0.0.1:*"], TlsConfig::empty());
    let mut sock = connect(&ctx, port, 0).await.unwrap();
    assert_eq!(sock.send(&ctx, b"plain").await, Err(Errno::EACCES));
    assert_eq!(sock.read(&ctx, Some(1)).await, Err(Errno::EACCES));
    assert_eq!(
        sock.start_tls(&ctx, client(false), true).await,
        Err(Errno::ENOKEY)
    );
    drop(sock);
    server.join().unwrap();
}

#[tokio::test]
async fn a_tls_rule_connection_works_over_verified_tls() {
    let ca = ca();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let (port, server) = tls_server(&leaf, upper_echo);
    let ctx = ctx_with(&["tls=127.0.0.1:*"], trusting(&ca));
    let mut sock = connect(&ctx, port, 0).await.unwrap();
    sock.start_tls(&ctx, client(false), true).await.unwrap();
    sock.write(&ctx, b"granted\n").await.unwrap();
    assert_eq!(
        sock.readline(&ctx, None).await.unwrap().unwrap(),
        b"GRANTED\n"
    );
    sock.close();
    server.join().unwrap();
}

#[tokio::test]
async fn a_server_hostname_must_be_granted() {
    let ca = ca();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let (port, server) = tls_server(&leaf, |mut s| {
        let _ = s.read(&mut [0u8; 16]);
    });
    let ctx = loopback(trusting(&ca));
    let mut sock = connect(&ctx, port, 0).await.unwrap();
    let params = TlsParams {
        server_hostname: Some("bank.example".into()),
        ..TlsParams::default()
    };
    assert_eq!(sock.start_tls(&ctx, params, true).await, Err(Errno::EACCES));
    // Not a host name at all: EINVAL, and nothing of it in the audit.
    for bad in [
        "",
        "bad name",
        &"a".repeat(300),
        "\u{0}x",
        "ex\u{e4}mple.com",
    ] {
        let params = TlsParams {
            server_hostname: Some(bad.to_string()),
            ..TlsParams::default()
        };
        assert_eq!(
            sock.start_tls(&ctx, params, true).await,
            Err(Errno::EINVAL),
            "{bad:?}"
        );
    }
    assert!(
        ctx.stats().by_reason().keys().all(|r| !r.contains("aaaa")),
        "{:?}",
        ctx.stats().by_reason()
    );
    drop(sock);
    server.join().unwrap();
}

#[tokio::test]
async fn an_ipproto_sec_socket_handshakes_in_connect() {
    let ca = ca();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let (port, server) = tls_server(&leaf, upper_echo);
    let ctx = loopback(trusting(&ca));
    let mut sock = connect(&ctx, port, IPPROTO_SEC).await.unwrap();
    assert!(
        sock.peer_certificate().unwrap().is_some(),
        "connect ran the handshake"
    );
    sock.write(&ctx, b"sec\n").await.unwrap();
    assert_eq!(sock.readline(&ctx, None).await.unwrap().unwrap(), b"SEC\n");
    sock.close();
    server.join().unwrap();

    // The same against a certificate for another name fails in connect.
    let bad = ca.leaf(&["other.test"]);
    let (port, server) = tls_server(&bad, |mut s| {
        let _ = s.read(&mut [0u8; 16]);
    });
    assert_eq!(
        connect(&ctx, port, IPPROTO_SEC).await.err(),
        Some(Errno::EKEYREJECTED)
    );
    server.join().unwrap();
    assert_eq!(
        Socket::create(&ctx, AF_INET, usocket_abi::SOCK_DGRAM, IPPROTO_SEC).err(),
        Some(Errno::EINVAL)
    );
}

#[tokio::test]
async fn a_stream_cut_without_close_notify_is_econnreset_once_then_eof() {
    let ca = ca();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let (port, server) = tls_server(&leaf, |mut s| {
        s.write_all(b"partial").unwrap();
        s.flush().unwrap();
        // A bare FIN: no close_notify.
        s.sock.shutdown(std::net::Shutdown::Both).unwrap();
    });
    let ctx = loopback(trusting(&ca));
    let mut sock = connect(&ctx, port, 0).await.unwrap();
    sock.start_tls(&ctx, client(true), true).await.unwrap();
    // What came before the cut first, then the truncation, once, then the end.
    assert_eq!(sock.read(&ctx, None).await.unwrap().unwrap(), b"partial");
    assert_eq!(sock.read(&ctx, None).await, Err(Errno::ECONNRESET));
    assert_eq!(sock.read(&ctx, None).await.unwrap().unwrap(), b"");
    server.join().unwrap();

    let (port, server) = tls_server(&leaf, |mut s| {
        s.write_all(b"partial").unwrap();
        s.flush().unwrap();
        s.sock.shutdown(std::net::Shutdown::Both).unwrap();
    });
    let mut sock = connect(&ctx, port, 0).await.unwrap();
    sock.start_tls(&ctx, client(true), true).await.unwrap();
    assert_eq!(sock.recv(&ctx, 100, 0).await.unwrap(), b"partial");
    assert_eq!(sock.recv(&ctx, 100, 0).await, Err(Errno::ECONNRESET));
    assert_eq!(sock.recv(&ctx, 100, 0).await.unwrap(), b"");
    server.join().unwrap();
}

#[tokio::test]
async fn a_silent_server_times_the_handshake_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ctx = loopback(TlsConfig::empty());
    let mut sock = connect(&ctx, port, 0).await.unwrap();
    let (_held, _) = listener.accept().unwrap();
    sock.set_timeout(Some(0.2)).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        sock.start_tls(&ctx, client(true), true).await,
        Err(Errno::ETIMEDOUT)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn non_blocking_tls_moves_on_with_poll() {
    let ca = ca();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let (port, server) = tls_server(&leaf, upper_echo);
    let ctx = loopback(trusting(&ca));
    let mut sock = connect(&ctx, port, 0).await.unwrap();
    sock.set_timeout(Some(0.0)).unwrap();
    // Returns at once; the handshake goes on in later calls.
    sock.start_tls(&ctx, client(true), true).await.unwrap();
    let mut sent = 0;
    let mut line = Vec::new();
    for _ in 0..500 {
        if sent == 0 {
            match sock.send(&ctx, b"nb\n").await {
                Ok(n) => sent = n,
                Err(Errno::EAGAIN) => {}
                Err(e) => panic!("send: {e:?}"),
            }
        }
        let ready = poll_on(&ctx, &mut [(&mut sock, POLLIN)], 100)
            .await
            .unwrap();
        if ready[0] & POLLIN != 0 {
            match sock.recv(&ctx, 100, 0).await {
                Ok(data) => line.extend_from_slice(&data),
                Err(Errno::EAGAIN) => {}
                Err(e) => panic!("recv: {e:?}"),
            }
        }
        if line.ends_with(b"\n") {
            break;
        }
    }
    assert_eq!(sent, 3);
    assert_eq!(line, b"NB\n");
    sock.close();
    server.join().unwrap();
}

#[tokio::test]
async fn a_guest_server_side_with_its_own_or_the_embedders_certificate() {
    let ca = ca();
    let leaf = ca.leaf(&["127.0.0.1"]);
    for embedder_identity in [false, true] {
        let mut config = trusting(&ca);
        if embedder_identity {
            config = config
                .with_server_identity(
                    leaf.cert_pem.as_bytes(),
                    leaf.key_pem.as_bytes(),
                    "identity",
                )
                .unwrap();
        }
        let ctx = loopback(config);
        let mut listener = Socket::create(&ctx, AF_INET, SOCK_STREAM, 0).unwrap();
        listener.bind(&ctx, "127.0.0.1", 0).unwrap();
        listener.listen(&ctx, 1).unwrap();
        let port = listener.local_address().unwrap().port();

        let config = client_config(&ca);
        let client = thread::spawn(move || {
            let name = "127.0.0.1".try_into().unwrap();
            let conn = rustls::ClientConnection::new(config, name).unwrap();
            let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(b"ping\n").unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            got
        });

        let (mut conn, _) = listener.accept(&ctx).await.unwrap();
        let params = TlsParams {
            server_side: true,
            cert: (!embedder_identity).then(|| leaf.cert_pem.clone().into_bytes()),
            key: (!embedder_identity).then(|| leaf.key_pem.clone().into_bytes()),
            ..TlsParams::default()
        };
        conn.start_tls(&ctx, params, true).await.unwrap();
        assert_eq!(conn.readline(&ctx, None).await.unwrap().unwrap(), b"ping\n");
        conn.write(&ctx, b"pong\n").await.unwrap();
        conn.close();
        assert_eq!(client.join().unwrap(), b"pong\n");
    }
    // Server side with no certificate anywhere: EINVAL.
    let ctx = loopback(TlsConfig::empty());
    let mut listener = Socket::create(&ctx, AF_INET, SOCK_STREAM, 0).unwrap();
    listener.bind(&ctx, "127.0.0.1", 0).unwrap();
    listener.listen(&ctx, 1).unwrap();
    let port = listener.local_address().unwrap().port();
    let _peer = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut conn, _) = listener.accept(&ctx).await.unwrap();
    let params = TlsParams {
        server_side: true,
        ..TlsParams::default()
    };
    assert_eq!(conn.start_tls(&ctx, params, true).await, Err(Errno::EINVAL));
}

#[tokio::test]
async fn start_tls_checks_its_state_and_arguments() {
    let ctx = loopback(TlsConfig::empty());
    let mut fresh = Socket::create(&ctx, AF_INET, SOCK_STREAM, 0).unwrap();
    assert_eq!(
        fresh.start_tls(&ctx, client(true), true).await,
        Err(Errno::ENOTCONN)
    );
    let mut udp = Socket::create(&ctx, AF_INET, usocket_abi::SOCK_DGRAM, 0).unwrap();
    assert_eq!(
        udp.start_tls(&ctx, client(true), true).await,
        Err(Errno::EINVAL)
    );
    fresh.close();
    assert_eq!(
        fresh.start_tls(&ctx, client(true), true).await,
        Err(Errno::EBADF)
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut sock = connect(&ctx, port, 0).await.unwrap();
    let huge = TlsParams {
        cadata: Some(vec![0u8; crate::tls::MAX_GUEST_PEM + 1]),
        ..TlsParams::default()
    };
    assert_eq!(sock.start_tls(&ctx, huge, false).await, Err(Errno::EINVAL));
    let junk = TlsParams {
        cadata: Some(b"not a certificate".to_vec()),
        ..TlsParams::default()
    };
    assert_eq!(sock.start_tls(&ctx, junk, false).await, Err(Errno::EINVAL));
    let key_only = TlsParams {
        key: Some(b"k".to_vec()),
        ..TlsParams::default()
    };
    assert_eq!(
        sock.start_tls(&ctx, key_only, false).await,
        Err(Errno::EINVAL)
    );
    // A TLS socket cannot start TLS again.
    sock.start_tls(&ctx, client(false), false).await.unwrap();
    assert_eq!(
        sock.start_tls(&ctx, client(false), false).await,
        Err(Errno::EINVAL)
    );
}

#[tokio::test]
async fn bytes_queued_before_start_tls_are_the_start_of_the_tls_stream() {
    // STARTTLS: the client sends a plaintext line and its hello at once; the guest's readline
    // takes the line, and the hello (already in the host's queue) starts the handshake.
    let ca = ca();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let ctx = loopback(TlsConfig::empty());
    let mut listener = Socket::create(&ctx, AF_INET, SOCK_STREAM, 0).unwrap();
    listener.bind(&ctx, "127.0.0.1", 0).unwrap();
    listener.listen(&ctx, 1).unwrap();
    let port = listener.local_address().unwrap().port();
    let config = client_config(&ca);
    let client = thread::spawn(move || {
        let mut conn =
            rustls::ClientConnection::new(config, "127.0.0.1".try_into().unwrap()).unwrap();
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The line and the ClientHello in one write.
        let mut first = b"STARTTLS\n".to_vec();
        conn.write_tls(&mut first).unwrap();
        tcp.write_all(&first).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    let (mut conn, _) = listener.accept(&ctx).await.unwrap();
    // Wait until the hello is in the host's queue behind the line.
    let mut line = Vec::new();
    for _ in 0..100 {
        line = conn.readline(&ctx, None).await.unwrap().unwrap();
        if !line.is_empty() {
            break;
        }
    }
    assert_eq!(line, b"STARTTLS\n");
    let params = TlsParams {
        server_side: true,
        cert: Some(leaf.cert_pem.clone().into_bytes()),
        key: Some(leaf.key_pem.clone().into_bytes()),
        ..TlsParams::default()
    };
    conn.start_tls(&ctx, params, true).await.unwrap();
    conn.write(&ctx, b"secure\n").await.unwrap();
    conn.close();
    assert_eq!(client.join().unwrap(), b"secure\n");
}

#[tokio::test]
async fn close_notify_only_when_the_guest_closes_not_when_it_ends() {
    let ca = ca();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let ctx = loopback(trusting(&ca));
    for by_guest in [true, false] {
        let (tx, rx) = std::sync::mpsc::channel();
        let (port, server) = tls_server(&leaf, move |mut s| {
            let mut buf = [0u8; 64];
            let clean = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(_) => break false,
                }
            };
            tx.send(clean).unwrap();
        });
        let mut sock = connect(&ctx, port, 0).await.unwrap();
        sock.start_tls(&ctx, client(true), true).await.unwrap();
        sock.write(&ctx, b"bye").await.unwrap();
        if by_guest {
            // What the bindings do when the guest drops its handle.
            sock.dropped_by_guest();
        }
        drop(sock); // the guest's end: its table goes
        server.join().unwrap();
        assert_eq!(
            rx.recv().unwrap(),
            by_guest,
            "clean close iff the guest closed"
        );
    }
}

#[tokio::test]
async fn under_a_tls_rule_the_guest_cannot_bring_its_own_trust() {
    let ca = ca();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let (port, server) = tls_server(&leaf, |mut s| {
        let _ = s.read(&mut [0u8; 16]);
    });
    // The host trusts nothing; the guest offers the server's CA itself.
    let ctx = ctx_with(&["tls=127.0.0.1:*"], TlsConfig::empty());
    let mut sock = connect(&ctx, port, 0).await.unwrap();
    let own_trust = TlsParams {
        cadata: Some(ca.pem.clone().into_bytes()),
        ..TlsParams::default()
    };
    assert_eq!(
        sock.start_tls(&ctx, own_trust, true).await,
        Err(Errno::EACCES)
    );
    assert!(
        ctx.stats()
            .by_reason()
            .keys()
            .any(|r| r.contains("cadata under a tls rule")),
        "{:?}",
        ctx.stats().by_reason()
    );
    drop(sock);
    server.join().unwrap();
}
