//! Guest lifecycle: host resources are freed when a guest is cancelled, traps or finishes;
//! quotas hold; a spinning guest does not starve the others.

use std::net::TcpListener as StdListener;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use usocket_host::Limits;
use usocket_tests::{Options, open_fds, run};

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn bindable(port: u16) -> bool {
    StdListener::bind(("127.0.0.1", port)).is_ok()
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A guest run once so that the runner, its threads and compiled code exist before we
/// count file descriptors.
async fn warm_up() {
    run("probe", &["sockets", "1"], Options::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_guest_blocked_in_accept_frees_its_port_and_fds() {
    warm_up().await;
    let baseline = open_fds();
    let port = free_port();
    let p = port.to_string();
    let guest =
        tokio::spawn(async move { run("probe", &["hold-accept", &p], Options::default()).await });
    eventually("the guest listens", || !bindable(port)).await;
    assert!(open_fds() > baseline);
    guest.abort();
    let _ = guest.await;
    eventually("the port is free again", || bindable(port)).await;
    eventually("the fd count is back to its baseline", || {
        open_fds() <= baseline
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_guest_blocked_in_recv_closes_its_connection() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = server.local_addr().unwrap().port().to_string();
    let guest =
        tokio::spawn(async move { run("probe", &["hold-recv", &p], Options::default()).await });
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), server.accept())
        .await
        .unwrap()
        .unwrap();
    guest.abort();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("peer closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "the guest's socket should be closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_guest_frees_its_sockets() {
    warm_up().await;
    let baseline = open_fds();
    let port = free_port();
    let result = run("probe", &["trap", &port.to_string()], Options::default()).await;
    assert!(result.is_err(), "abort() must trap");
    assert!(
        bindable(port),
        "the trapped guest's listener still holds the port"
    );
    eventually("the fd count is back to its baseline", || {
        open_fds() <= baseline
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_quota_gives_enomem_at_once_and_slots_come_back() {
    let opts = Options {
        limits: Limits {
            max_sockets: 5,
            ..Limits::default()
        },
        ..Options::default()
    };
    let start = Instant::now();
    let out = run("probe", &["sockets", "100"], opts).await.unwrap();
    assert_eq!(out.stdout_text(), "opened 5 errno 12\nok again\n");
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// `spinner` is a probe command that computes forever.
fn spinner_does_not_starve_another_on_the_same_thread(spinner: &'static str) {
    // One runtime thread, with tokio's default `event_interval` (61): only epoch yields let
    // the echo guest make progress. A spinner is a task that is always ready again; its
    // yields must let the runtime poll for I/O first, or the echo guest's wake-ups would
    // wait 61 ticks (0.6 s) each (see run.rs docs).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut conn, _) = server.accept().await.unwrap();
            let (mut rd, mut wr) = conn.split();
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
        });
        let spin_opts = Options {
            time_limit: Duration::from_secs(3),
            ..Options::default()
        };
        let spinner = tokio::spawn(async move { run("probe", &[spinner], spin_opts).await });
        let p = port.to_string();
        let echo = run("probe", &["echo", &p, "20"], Options::default())
            .await
            .unwrap();
        assert_eq!(echo.stdout_text(), "ok echo 20\n");
        assert!(
            !spinner.is_finished(),
            "the spinner should still be running"
        );
        let spun = spinner.await.unwrap();
        let err = spun.expect_err("the spinner must hit its time limit");
        assert!(format!("{err}").contains("time limit"), "{err}");
    });
}

#[test]
fn a_spinning_guest_does_not_starve_another_on_the_same_thread() {
    spinner_does_not_starve_another_on_the_same_thread("spin");
}

/// A guest that waits in a socket call now and then is not made to yield at a tick after
/// it waited (it gave the thread up already); it still is when it computes a whole tick.
#[test]
fn a_guest_that_computes_between_short_waits_does_not_starve_another() {
    spinner_does_not_starve_another_on_the_same_thread("spin-wait");
}

/// The answers only; tests/memory.rs runs the same guest and measures what the host spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_sizes_from_a_guest_are_bounded_not_trusted() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = server.local_addr().unwrap().port().to_string();
    let peer = tokio::spawn(async move {
        let (mut conn, _) = server.accept().await.unwrap();
        conn.write_all(b"0123456789").await.unwrap();
        // Stay open so the guest's later reads time out instead of reaching EOF.
        let mut buf = [0u8; 1];
        let _ = conn.read(&mut buf).await;
    });
    let out = run("probe", &["huge", &p, "max"], Options::default())
        .await
        .unwrap();
    assert_eq!(
        out.stdout_text(),
        "ok recv 10\nerrno 110\nerrno 110\nok recvfrom 5\nok read Some(5)\nok readline Some(5)\n"
    );
    peer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_with_unread_data_resets_the_connection() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = server.local_addr().unwrap().port().to_string();
    let peer = tokio::spawn(async move {
        let (mut conn, _) = server.accept().await.unwrap();
        conn.write_all(b"0123456789").await.unwrap();
        let mut buf = [0u8; 16];
        tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("peer closes")
    });
    let out = run("probe", &["read-close", &p, "4"], Options::default())
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "ok read Some(4)\n");
    let seen = peer.await.unwrap();
    let err = seen.expect_err("a close with unread data must reset, not end the stream cleanly");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

/// A peer that sends `data` at once and reports how the guest's side ended.
async fn sending_peer(
    data: &'static [u8],
) -> (String, tokio::task::JoinHandle<std::io::Result<usize>>) {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    let peer = tokio::spawn(async move {
        let (mut conn, _) = server.accept().await.unwrap();
        conn.write_all(data).await.unwrap();
        let mut buf = [0u8; 16];
        tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("guest ends")
    });
    (port, peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readline_read_ahead_is_seen_by_poll_and_recv_in_order() {
    let (p, peer) = sending_peer(b"a\nb\nc").await;
    // Give the whole write time to arrive, so the first readline takes "b\nc" ahead.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let out = run("probe", &["lines", &p], Options::default())
        .await
        .unwrap();
    assert_eq!(
        out.stdout_text(),
        "ok readline Some(\"a\\n\")\nok poll [1]\nok recv \"b\\nc\"\nerrno 110\n"
    );
    peer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_with_read_ahead_unread_resets_the_connection() {
    let (p, peer) = sending_peer(b"x\ny\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let out = run("probe", &["readline-close", &p], Options::default())
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "ok readline Some(2)\n");
    let err = peer
        .await
        .unwrap()
        .expect_err("unread read-ahead must turn the close into a reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

/// Runs `probe ARGS` (which ends by trapping, exiting or spinning into a 2 s time limit) and
/// returns how the peer saw the guest's side of the connection end.
async fn peer_sees_after(
    data: &'static [u8],
    args: impl FnOnce(&str) -> Vec<String>,
) -> (std::io::Result<usize>, Option<String>) {
    let (p, peer) = sending_peer(data).await;
    // Let the whole write arrive first, so that the guest's first read takes all of it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let args = args(&p);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let opts = Options {
        time_limit: Duration::from_secs(2),
        ..Options::default()
    };
    let out = run("probe", &args, opts).await;
    // A guest that trapped or ran out of time has no outcome, so no stdout to show.
    let stdout = out.ok().map(|o| o.stdout_text());
    let seen = tokio::time::timeout(Duration::from_secs(10), peer)
        .await
        .expect("the peer sees the guest's side end")
        .unwrap();
    (seen, stdout)
}

fn assert_reset(seen: std::io::Result<usize>, what: &str) {
    let err = seen.expect_err(&format!(
        "{what}: the peer saw a clean end of stream, not a reset"
    ));
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{what}");
}

/// Issue 8, item 6: a guest that ends (trap, exit, time limit) while its guest library holds
/// `readline` read-ahead ends with unread data, so its connection must reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_ending_with_read_ahead_unread_resets_its_connection() {
    for action in ["trap", "exit", "spin"] {
        let (seen, out) = peer_sees_after(b"x\ny\n", |p| {
            ["readline-then", p, action].map(String::from).to_vec()
        })
        .await;
        if let Some(out) = out {
            assert_eq!(out, "ok readline Some(2)\n", "{action}");
        }
        assert_reset(seen, &format!("readline, then {action}"));
    }
}

/// Issue 8, item 6: bytes the host queued for a guest (read(2) of 6 received) are unread
/// data too when the guest is dropped without closing (trap, time limit, exit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_ending_with_host_queued_bytes_resets_its_connection() {
    for action in ["spin", "trap", "exit"] {
        let (seen, out) = peer_sees_after(b"abcdef", |p| {
            ["read-then", p, "2", action].map(String::from).to_vec()
        })
        .await;
        if let Some(out) = out {
            assert_eq!(out, "ok read Some(2)\n", "{action}");
        }
        assert_reset(seen, &format!("read(2) of 6, then {action}"));
    }
}

/// The other side of item 6: a guest library that used up all its read-ahead has nothing
/// unread, so ending (even by exit, with no destructor) or closing is a clean end of stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_read_everything_ends_with_a_clean_end_of_stream() {
    for action in ["exit", "close"] {
        let (seen, out) = peer_sees_after(b"x\ny\n", |p| {
            ["lines-then", p, "2", action].map(String::from).to_vec()
        })
        .await;
        assert_eq!(
            out.as_deref(),
            Some("ok readline Some(2)\nok readline Some(2)\n"),
            "{action}"
        );
        assert_eq!(seen.expect(action), 0, "{action}: a clean end of stream");
    }
}

/// Issue 9: a guest's `exit(n)` reaches the host as n (wasi:cli 0.2.12 `exit-with-code`),
/// not just 0 or 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_exit_code_reaches_the_host() {
    for code in [0, 1, 3, 42, 255] {
        let out = run("probe", &["exit", &code.to_string()], Options::default())
            .await
            .expect("probe runs");
        assert_eq!(out.code, code, "exit({code})");
    }
}
