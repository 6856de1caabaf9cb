//! `cargo bench -p usocket-tests --bench tls`: TLS over usocket (terminated in the host)
//! against native tokio-rustls, in the same run, against the same native TLS server on
//! loopback.
//!
//! Workloads: `recv` (the server sends 64 MiB, the client reads it in 64 KiB reads), `send`
//! (the client writes 64 MiB in 64 KiB writes to a server that reads it all), `handshakes`
//! (200 connections one after another: TCP connect, a full TLS 1.3 handshake verified
//! against a test CA, one byte from the server, close). The server offers no session
//! resumption, so every handshake is a full one for both clients. Prints medians of 7 rounds
//! (`USOCKET_BENCH_ROUNDS`) and usocket / native.
//!
//! `cargo bench -p usocket-tests --bench tls -- idle` (not in the default run) measures what
//! an idle TLS connection costs the host: a guest opens 300 verified TLS connections and
//! waits, then 300 plain ones; the difference in the process's resident memory, per
//! connection (the native server keeps only the TCP sockets, not its TLS state).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use usocket_host::{Policy, TlsConfig, UsocketCtx};
use usocket_test_pki::{Ca, Leaf, client_config};

const BULK: u64 = 64 << 20;
const CHUNK: usize = 64 * 1024;
const HANDSHAKES: u32 = 200;
const ROUNDS: usize = 7;

/// The test CA and the certificate for 127.0.0.1 it signs.
struct Pki {
    ca: Ca,
    leaf: Leaf,
}

fn pki() -> Pki {
    let ca = Ca::new("usocket bench CA");
    let leaf = ca.leaf(&["127.0.0.1"]);
    Pki { ca, leaf }
}

/// The native server's configuration: the shared one without session resumption (full
/// handshakes only).
fn server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let mut config = Arc::unwrap_or_clone(usocket_test_pki::server_config(&pki.leaf));
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// A native TLS server on loopback: `serve` runs on each of `conns` connections in turn.
fn server(
    config: Arc<rustls::ServerConfig>,
    conns: u32,
    serve: fn(&mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>),
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for _ in 0..conns {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_nodelay(true).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            serve(&mut s);
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    });
    port
}

fn source(s: &mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>) {
    let chunk = vec![0xa5u8; CHUNK];
    let mut sent = 0;
    while sent < BULK {
        s.write_all(&chunk).unwrap();
        sent += CHUNK as u64;
    }
}

fn sink(s: &mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>) {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < BULK {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n as u64,
        }
    }
    assert_eq!(got, BULK, "the sink got everything");
}

fn one_byte(s: &mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>) {
    s.write_all(b"!").unwrap();
}

fn port_for(mode: &str, config: &Arc<rustls::ServerConfig>) -> u16 {
    match mode {
        "recv" => server(config.clone(), 1, source),
        "send" => server(config.clone(), 1, sink),
        "handshakes" => server(config.clone(), HANDSHAKES, one_byte),
        _ => unreachable!(),
    }
}

/// The native client: tokio-rustls on this (current-thread) runtime.
async fn native(mode: &str, pki: &Pki, config: &Arc<rustls::ServerConfig>) -> Duration {
    let connector = tokio_rustls::TlsConnector::from(client_config(&pki.ca));
    let port = port_for(mode, config);
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        connector.connect(name.clone(), tcp).await.unwrap()
    };
    let start;
    match mode {
        "recv" => {
            let mut s = connect().await;
            start = Instant::now();
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0u64;
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            assert_eq!(got, BULK);
        }
        "send" => {
            let mut s = connect().await;
            start = Instant::now();
            let chunk = vec![0x5au8; CHUNK];
            let mut sent = 0;
            while sent < BULK {
                s.write_all(&chunk).await.unwrap();
                sent += CHUNK as u64;
            }
            s.shutdown().await.unwrap();
            // The server's close_notify: it has read everything.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        }
        _ => {
            start = Instant::now();
            for _ in 0..HANDSHAKES {
                let mut s = connect().await;
                let mut one = [0u8; 1];
                s.read_exact(&mut one).await.unwrap();
                s.shutdown().await.unwrap();
            }
        }
    }
    start.elapsed()
}

/// The usocket guest `bench_tls`, verifying against the test CA given to the host.
async fn guest(mode: &str, pki: &Pki, config: &Arc<rustls::ServerConfig>) -> Duration {
    let port = port_for(mode, config).to_string();
    let count = match mode {
        "handshakes" => HANDSHAKES.to_string(),
        _ => BULK.to_string(),
    };
    let policy = Policy::from_texts(
        &["connect=127.0.0.1:*"],
        &[] as &[&str],
        cap_std::ambient_authority(),
    )
    .unwrap();
    let tls = TlsConfig::empty()
        .add_roots(pki.ca.pem.as_bytes(), "bench CA")
        .unwrap();
    let ctx = UsocketCtx::new("bench_tls", Arc::new(policy)).with_tls(tls);
    let out = usocket_tests::run_with(
        "bench_tls",
        &[mode, &port, &count],
        ctx,
        Duration::from_secs(120),
    )
    .await
    .expect("bench_tls guest");
    assert_eq!(out.code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let nanos: u64 = out
        .stdout_text()
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("elapsed_ns");
    Duration::from_nanos(nanos)
}

/// Connections of the idle measurement.
const IDLE: usize = 300;

/// This process's resident memory in bytes (Linux `/proc/self/statm`).
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * rustix::param::page_size() as u64
}

/// How much the host's resident memory grows while a guest holds [`IDLE`] idle connections,
/// TLS (`tls`) or plain, to a server that keeps only their TCP sockets. Run in a process of
/// its own (freed memory stays with the allocator, so a second measurement would reuse it).
async fn idle_growth(tls: bool, pki: &Pki, config: &Arc<rustls::ServerConfig>) -> u64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let config = config.clone();
    let server = thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..IDLE {
            let (mut tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            if tls {
                let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
                while conn.is_handshaking() {
                    conn.complete_io(&mut tcp).unwrap();
                }
            }
            held.push(tcp);
        }
        let _ = ready_tx.send(());
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
        drop(held);
    });
    let policy = Policy::from_texts(
        &["connect=127.0.0.1:*"],
        &[] as &[&str],
        cap_std::ambient_authority(),
    )
    .unwrap();
    let tls_config = TlsConfig::empty()
        .add_roots(pki.ca.pem.as_bytes(), "bench CA")
        .unwrap();
    let limits = usocket_host::Limits {
        max_sockets: IDLE + 1,
        ..usocket_host::Limits::default()
    };
    let ctx = UsocketCtx::new("bench_tls", Arc::new(policy))
        .with_tls(tls_config)
        .with_limits(limits);
    let (mode, count) = (if tls { "idle" } else { "idle-plain" }, IDLE.to_string());
    let before = resident();
    let guest = tokio::spawn(async move {
        usocket_tests::run_with(
            "bench_tls",
            &[mode, &port.to_string(), &count],
            ctx,
            Duration::from_secs(120),
        )
        .await
    });
    ready_rx.await.expect("the server took every connection");
    // The guest's last connect has returned and it waits in recv.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = resident().saturating_sub(before);
    release_tx.send(()).unwrap();
    let out = guest.await.unwrap().expect("bench_tls idle");
    assert_eq!(out.code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    server.join().unwrap();
    rss
}

/// `-- idle`: what an idle TLS connection costs the host, three rounds, each measurement in
/// a process of its own (this bench run again with `idle-one tls|plain`).
fn idle() {
    let one = |kind: &str| -> f64 {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--bench", "idle-one", kind])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("growth "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("idle-one {kind}: {text}"))
    };
    let mut per_conn = Vec::new();
    for _ in 0..3 {
        let (plain, tls) = (one("plain"), one("tls"));
        per_conn.push((tls - plain) / IDLE as f64 / 1024.0);
    }
    let (lo, med, hi) = stats(per_conn);
    println!(
        "idle TLS connection in the host, over a plain one: {lo:.1} / {med:.1} / {hi:.1} KiB \
         (min / median / max of 3 rounds, {IDLE} connections each)"
    );
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

// As the `usocket` CLI runs its guest: one current-thread runtime (the native client too).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    usocket_tests::component("bench_tls");
    let pki = pki();
    let config = server_config(&pki);
    let rounds = std::env::var("USOCKET_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if only.first().is_some_and(|o| o == "idle-one") {
        let tls = only.get(1).is_some_and(|k| k == "tls");
        println!("growth {}", idle_growth(tls, &pki, &config).await);
        return;
    }
    if only.iter().any(|o| o == "idle") {
        idle();
        return;
    }
    println!(
        "{:<11} {:>14} {:>14} {:>24}  target",
        "workload", "native", "usocket", "usocket/native min/med/max"
    );
    for mode in ["recv", "send", "handshakes"] {
        if !only.is_empty() && !only.iter().any(|o| o == mode) {
            continue;
        }
        let (mut n, mut u, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let nt = native(mode, &pki, &config).await;
            let ut = guest(mode, &pki, &config).await;
            ratios.push(nt.as_secs_f64() / ut.as_secs_f64());
            n.push(nt.as_secs_f64());
            u.push(ut.as_secs_f64());
        }
        let show = |secs: f64| match mode {
            "handshakes" => format!("{:.0} /s", f64::from(HANDSHAKES) / secs),
            _ => format!("{:.2} GB/s", BULK as f64 / secs / 1e9),
        };
        let (_, n_med, _) = stats(n);
        let (_, u_med, _) = stats(u);
        let (lo, med, hi) = stats(ratios);
        println!(
            "{mode:<11} {:>14} {:>14} {:>24}  >= 0.9",
            show(n_med),
            show(u_med),
            format!("{lo:.2} / {med:.2} / {hi:.2}")
        );
    }
    println!(
        "medians of {rounds} rounds; usocket/native = native time / usocket time per round \
         (higher is better for usocket)"
    );
}
