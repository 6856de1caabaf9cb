//! `cargo bench -p usocket-tests`: native Rust sockets against a guest through the usocket host,
//! on loopback, in one run. Each figure is the median of several rounds; the ratio is
//! guest/native for throughput and native/guest for latency, so higher is better (1.0 = native).
//!
//! Workloads: bulk send and bulk receive in 64 KiB chunks, 64-byte echo round trips,
//! `readline` over a 16 MiB stream of 64-byte lines (native: `BufRead::read_line`), and UDP
//! request/response pairs of 64-byte datagrams.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use usocket_tests::{Options, run};

const ROUNDS: usize = 7;
const BULK: u64 = 1 << 30;
const ECHOES: u64 = 20_000;
const LINE: usize = 64;
const LINES_TOTAL: usize = 16 << 20;
const DATAGRAMS: u64 = 20_000;

/// A native UDP echo on loopback that answers `count` datagrams; returns its port.
fn udp_echo(count: u64) -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..count {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            sock.send_to(&buf[..n], from).unwrap();
        }
    });
    port
}

/// A one-connection native peer on loopback; returns its port.
fn peer(serve: impl FnOnce(TcpStream) + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        conn.set_nodelay(true).unwrap();
        serve(conn);
    });
    port
}

fn sink(mut c: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while c.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
}

fn source(total: u64) -> impl FnOnce(TcpStream) {
    move |mut c| {
        let chunk = vec![0xa5u8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            c.write_all(&chunk).unwrap();
            sent += chunk.len() as u64;
        }
    }
}

fn echo(mut c: TcpStream) {
    let mut buf = [0u8; 64];
    while c.read_exact(&mut buf).is_ok() {
        if c.write_all(&buf).is_err() {
            break;
        }
    }
}

fn lines() -> Vec<u8> {
    let mut line = vec![b'x'; LINE - 1];
    line.push(b'\n');
    line.repeat(LINES_TOTAL / LINE)
}

fn line_source(mut c: TcpStream) {
    let data = lines();
    c.write_all(&data).unwrap();
}

fn native(mode: &str) -> Duration {
    let start;
    match mode {
        "send" => {
            let mut c = TcpStream::connect(("127.0.0.1", peer(sink))).unwrap();
            let chunk = vec![0x5au8; 64 * 1024];
            start = Instant::now();
            let mut sent = 0;
            while sent < BULK {
                c.write_all(&chunk).unwrap();
                sent += chunk.len() as u64;
            }
        }
        "recv" => {
            let mut c = TcpStream::connect(("127.0.0.1", peer(source(BULK)))).unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            start = Instant::now();
            let mut got = 0u64;
            loop {
                let n = c.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            assert_eq!(got, BULK);
        }
        "echo" => {
            let mut c = TcpStream::connect(("127.0.0.1", peer(echo))).unwrap();
            let msg = [0x61u8; 64];
            let mut back = [0u8; 64];
            start = Instant::now();
            for _ in 0..ECHOES {
                c.write_all(&msg).unwrap();
                c.read_exact(&mut back).unwrap();
            }
        }
        "udp" => {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(("127.0.0.1", udp_echo(DATAGRAMS))).unwrap();
            let msg = [0x75u8; 64];
            let mut back = [0u8; 64];
            start = Instant::now();
            for _ in 0..DATAGRAMS {
                s.send(&msg).unwrap();
                assert_eq!(s.recv(&mut back).unwrap(), 64);
            }
        }
        "readline" => {
            let c = TcpStream::connect(("127.0.0.1", peer(line_source))).unwrap();
            let mut r = BufReader::new(c);
            let mut line = String::new();
            start = Instant::now();
            let mut count = 0;
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                count += 1;
            }
            assert_eq!(count, LINES_TOTAL / LINE);
        }
        _ => unreachable!(),
    }
    start.elapsed()
}

async fn guest(mode: &str) -> Duration {
    let port = match mode {
        "send" => peer(sink),
        "recv" => peer(source(BULK)),
        "echo" => peer(echo),
        "readline" => peer(line_source),
        "udp" => udp_echo(DATAGRAMS),
        _ => unreachable!(),
    };
    let p = port.to_string();
    let (bulk, echoes, datagrams) = (BULK.to_string(), ECHOES.to_string(), DATAGRAMS.to_string());
    let args: Vec<&str> = match mode {
        "send" => vec![mode, &p, &bulk],
        "echo" => vec![mode, &p, &echoes],
        "udp" => vec![mode, &p, &datagrams],
        _ => vec![mode, &p],
    };
    let out = run("bench", &args, Options::default())
        .await
        .expect("bench guest");
    assert_eq!(out.code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let text = out.stdout_text();
    let nanos: u64 = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("elapsed_ns");
    Duration::from_nanos(nanos)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Compile the guest before timing anything.
    usocket_tests::component("bench");
    println!(
        "{:<10} {:>14} {:>14} {:>7}  target",
        "workload", "native", "guest", "ratio"
    );
    for (mode, target) in [
        ("send", ">= 0.95"),
        ("recv", ">= 0.95"),
        ("echo", "time <= 1.15x"),
        ("readline", ">= 0.8"),
        ("udp", "report"),
    ] {
        let mut n = Vec::new();
        let mut g = Vec::new();
        for _ in 0..ROUNDS {
            n.push(
                tokio::task::spawn_blocking(move || native(mode))
                    .await
                    .unwrap(),
            );
            g.push(guest(mode).await);
        }
        let (n, g) = (median(n), median(g));
        let ratio = n.as_secs_f64() / g.as_secs_f64();
        let show = |d: Duration| match mode {
            "send" | "recv" => format!("{:.2} GB/s", BULK as f64 / d.as_secs_f64() / 1e9),
            "echo" => format!("{:.1} us/rtt", d.as_secs_f64() * 1e6 / ECHOES as f64),
            "udp" => format!("{:.0} k/s", DATAGRAMS as f64 / d.as_secs_f64() / 1e3),
            _ => format!(
                "{:.2} Mlines/s",
                (LINES_TOTAL / LINE) as f64 / d.as_secs_f64() / 1e6
            ),
        };
        println!(
            "{mode:<10} {:>14} {:>14} {ratio:>6.2}x  {target}",
            show(n),
            show(g)
        );
    }
}
