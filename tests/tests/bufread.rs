//! `BufRead` (`read_line`, `read_until`, `fill_buf`/`consume`) over the guest library's read-ahead,
//! end to end, mixed with `readline`, `recv`, `poll`, `Read`, partial lines under timeouts and
//! non-blocking mode, invalid UTF-8, long lines, and reset on close with read-ahead unread;
//! the library's wasm SIMD line scans checked inside a guest, and `select::Poll`'s bookkeeping.
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use usocket_tests::{Options, run};

async fn peer(
    chunks: Vec<(u64, Vec<u8>)>,
) -> (String, tokio::task::JoinHandle<std::io::Result<usize>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = l.local_addr().unwrap().port().to_string();
    let h = tokio::spawn(async move {
        let (mut c, _) = l.accept().await.unwrap();
        for (wait, data) in chunks {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            c.write_all(&data).await.unwrap();
        }
        c.shutdown().await.unwrap();
        let mut b = [0u8; 16];
        tokio::time::timeout(Duration::from_secs(10), c.read(&mut b))
            .await
            .unwrap()
    });
    (p, h)
}

async fn check(mode: &str, chunks: Vec<(u64, Vec<u8>)>, want: &str) -> std::io::Result<usize> {
    let (p, h) = peer(chunks).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let out = run("bufread", &[mode, &p], Options::default())
        .await
        .unwrap();
    assert_eq!(
        out.stdout_text(),
        want,
        "{mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bufread() {
    check(
        "order",
        vec![(0, b"a\nb\nc\ntail".to_vec())],
        "read_line Ok(2) \"a\\n\"\npoll [1]\nrecv \"b\\nc\\ntail\"\nread_line Ok(0) \"\"\n",
    )
    .await
    .unwrap();
    check("mixed", vec![(0, b"l1\nl2\nabcdef;ghij\nk\nrest".to_vec())],
        "read_line Ok(3) \"l1\\n\"\nreadline Some(\"l2\\n\")\nio read \"abc\"\nread_until 4 \"def;\"\nfill_buf \"ghij\\nk\\nrest\"\nother readline Some(\"ij\\n\")\nfill_buf \"k\\nrest\"\nread_line Ok(4) \"rest\"\nread_line Ok(0) \"\"\nread_line Ok(0) \"\"\n").await.unwrap();
    check("partial", vec![(0, b"par".to_vec()), (300, b"t\nnext\n".to_vec())],
        "nb Err(WouldBlock) \"par\"\ntimed Err(TimedOut) \"par\"\nblocking Ok(2) \"part\\n\"\nread_line Ok(5) \"next\\n\"\nread_line Ok(0) \"\"\n").await.unwrap();
    check(
        "utf8",
        vec![(0, b"ok\n\xff\n\xc3\xa9\n".to_vec())],
        "a Ok(3) \"ok\\n\"\nb Err(InvalidData) \"\"\nc Ok(3) \"\u{e9}\\n\"\nd Ok(0) \"\"\n",
    )
    .await
    .unwrap();
    let mut long = vec![b'x'; 200_000];
    long.extend_from_slice(b"\nafter\n");
    long.extend_from_slice(&b"l\n".repeat(1000));
    check(
        "long",
        vec![(0, long)],
        "long Ok(200001) ends_nl=true\nafter Ok(6) \"after\\n\"\nlines 1000\n",
    )
    .await
    .unwrap();
    let e = check(
        "close",
        vec![(0, b"x\ny\n".to_vec())],
        "read_line Ok(2) \"x\\n\"\n",
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(
        check("fill_close", vec![(0, b"x\ny\n".to_vec())], "fill 4\n")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        check(
            "all_then_exit",
            vec![(0, b"x\ny\n".to_vec())],
            "a Ok(2) \"x\\n\"\nb Ok(2) \"y\\n\"\n"
        )
        .await
        .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bufread_udp() {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let p = s.local_addr().unwrap().port().to_string();
    let h = tokio::spawn(async move {
        let mut b = [0u8; 16];
        let (_, from) = s.recv_from(&mut b).await.unwrap();
        for d in [&b"one\ntwo"[..], b"d2\n", b"last"] {
            s.send_to(d, from).await.unwrap();
        }
    });
    let out = run("bufread", &["udp", &p], Options::default())
        .await
        .unwrap();
    assert_eq!(
        out.stdout_text(),
        "udp read_line Ok(4) \"one\\n\"\nudp read_line Ok(6) \"twod2\\n\"\nudp recv \"last\"\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.await.unwrap();
}

/// The read-ahead's line scans and copies (wasm SIMD in a guest) give what the portable
/// versions give, at every length and position around their 16-byte steps.
#[tokio::test]
async fn scans_in_wasm() {
    let out = run("scan_check", &[], Options::default()).await.unwrap();
    assert_eq!(
        (out.code, out.stdout_text().as_str()),
        (0, "ok\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `select::Poll` keeps registration order and one entry per socket through registering
/// again, unregistering from the middle and modifying (its index must follow every move).
#[tokio::test]
async fn poll_keeps_registration_order() {
    let out = run("poll_order", &[], Options::default()).await.unwrap();
    assert_eq!(
        out.stdout_text(),
        "registered: 3 1 4 0 5 2 6 7\n\
         without 1 and 5: 3 4 0 2 6 7\n\
         1 again, 0 masked: 3 4 2 6 7 1\n\
         modify unregistered: Err(2)\n\
         without 3 and 7: 4 2 6 1\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
