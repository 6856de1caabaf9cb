//! What a guest's size arguments cost the host in memory: a guest that asks `recv`, `read`,
//! `readline` (TCP) and `recvfrom`, `read`, `readline` (UDP) for u32::MAX bytes (4 GiB) must
//! not make the host reserve or touch anything of that order.
//!
//! The host process's own figures from /proc/self/status (Linux): the resident peak `VmHWM`,
//! reset before each measured run by writing "5" to /proc/self/clear_refs, and the virtual
//! peak `VmPeak` (it cannot be reset; warm-up runs of the same guest raise it first to what a
//! run needs anyway). The resident peak sees memory the host fills; the virtual peak also sees
//! a reservation it never touches (`Vec::with_capacity(4 GiB)` costs no resident memory).
//!
//! And a guest's large `write` costs the host no copy of it: a guest blocked writing 96 MiB to
//! a peer that does not read raises the peak by its own buffer, not twice that.
//!
//! One test in its own test binary: the figures belong to the whole process, so no other test
//! may run beside it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use usocket_tests::{Options, proc_status as status, run};

const MIB: u64 = 1 << 20;
/// The most the resident peak may grow during the run that asks for 4 GiB.
const MAX_RESIDENT_GROWTH: u64 = 64 * MIB;
/// The most the virtual peak may grow during that run (allocator arenas and thread stacks
/// may add some; a reservation of the size asked for adds 4 GiB).
const MAX_VIRTUAL_GROWTH: u64 = 1024 * MIB;

/// What `probe huge` prints against [`peer`], at any size of at least 10.
const HUGE_OUT: &str =
    "ok recv 10\nerrno 110\nerrno 110\nok recvfrom 5\nok read Some(5)\nok readline Some(5)\n";

/// Resets `VmHWM` to the current resident size.
fn reset_resident_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the resident peak");
}

/// How much the resident and the virtual peak grew while `f` ran.
async fn growth<T>(f: impl Future<Output = T>) -> (T, u64, u64) {
    reset_resident_peak();
    let (hwm, peak) = (status("VmHWM"), status("VmPeak"));
    let out = f.await;
    let (hwm2, peak2) = (status("VmHWM"), status("VmPeak"));
    (out, hwm2.saturating_sub(hwm), peak2.saturating_sub(peak))
}

/// A loopback peer for one `probe huge` run: sends 10 bytes, then holds the connection open
/// (so the guest's later reads time out) until the guest closes it.
async fn peer() -> (String, tokio::task::JoinHandle<()>) {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    let task = tokio::spawn(async move {
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(30), server.accept())
            .await
            .expect("the guest connects")
            .unwrap();
        conn.write_all(b"0123456789").await.unwrap();
        let mut buf = [0u8; 16];
        let _ = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf)).await;
    });
    (port, task)
}

/// Runs `probe huge PORT size` against a fresh [`peer`] and returns its stdout.
async fn huge(size: &str) -> String {
    let (port, peer) = peer().await;
    let opts = Options {
        time_limit: Duration::from_secs(30),
        ..Options::default()
    };
    let out = run("probe", &["huge", &port, size], opts).await.unwrap();
    assert_eq!(out.code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    tokio::time::timeout(Duration::from_secs(30), peer)
        .await
        .expect("the peer ends")
        .unwrap();
    out.stdout_text()
}

/// The size of the blocked write of [`blocked_write`].
const WRITE: u64 = 96 * MIB;

/// Runs `probe pattern PORT 96MiB write` against a peer that accepts and never reads, so that
/// the guest's `write` waits with most of its bytes unsent until its 2 s time limit.
async fn blocked_write() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    let peer = tokio::spawn(async move {
        let (conn, _) = server.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(conn);
    });
    let opts = Options {
        time_limit: Duration::from_secs(2),
        ..Options::default()
    };
    let size = WRITE.to_string();
    let err = run("probe", &["pattern", &port, &size, "write"], opts)
        .await
        .expect_err("nobody reads: the write waits until the time limit");
    assert!(err.to_string().contains("time limit"), "{err}");
    peer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_sizes_from_a_guest_cost_the_host_almost_no_memory() {
    // Warm-up with the same calls at a small size: compiles the guest, starts the threads,
    // and lets the allocator and both peaks settle.
    for _ in 0..3 {
        assert_eq!(huge("4096").await, HUGE_OUT);
    }
    let (out, small_rss, small_virt) = growth(huge("4096")).await;
    assert_eq!(out, HUGE_OUT);
    let (out, rss, virt) = growth(huge("max")).await;
    assert_eq!(out, HUGE_OUT);
    let report = format!(
        "size 4096: resident peak +{} KiB, virtual peak +{} KiB; \
         size u32::MAX: resident peak +{} KiB, virtual peak +{} KiB",
        small_rss >> 10,
        small_virt >> 10,
        rss >> 10,
        virt >> 10
    );
    eprintln!("{report}");
    assert!(rss < MAX_RESIDENT_GROWTH, "{report}");
    assert!(virt < MAX_VIRTUAL_GROWTH, "{report}");

    // The guest's 96 MiB are resident in its own memory; a host copy of them would be as much
    // again. (The kernel's socket buffers are not the process's.)
    let ((), rss, _) = growth(blocked_write()).await;
    eprintln!(
        "a blocked write of 96 MiB: resident peak +{} KiB",
        rss >> 10
    );
    assert!(rss >= WRITE - 8 * MIB, "the guest's buffer: +{rss}");
    assert!(
        rss < WRITE + WRITE / 2,
        "a host copy of the write: +{} KiB",
        rss >> 10
    );

    // The readings do see memory: 128 MiB filled raise the resident peak, and a 2 GiB
    // reservation never touched raises the virtual size (the virtual peak is its maximum).
    let (filled, rss, _) = growth(async { vec![1u8; 128 << 20] }).await;
    std::hint::black_box(&filled);
    assert!(rss >= 120 * MIB, "128 MiB filled: resident peak +{rss}");
    drop(filled);
    let before = status("VmSize");
    let mut reserved: Vec<u8> = Vec::new();
    reserved
        .try_reserve_exact(2 << 30)
        .expect("reserve 2 GiB of address space");
    std::hint::black_box(&reserved);
    let grew = status("VmSize").saturating_sub(before);
    assert!(grew >= 2 << 30, "2 GiB reserved: virtual size +{grew}");
}
