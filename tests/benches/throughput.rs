//! `cargo bench -p usocket-tests`: each workload on loopback three ways in one run: native
//! Rust sockets, a usocket guest through the usocket host (`bench`), and a guest using Rust's
//! `std::net`, which goes through wasmtime-wasi's `wasi:sockets` (`bench_wasi`: what a guest
//! would use without usocket), run on the same engine with the network allowed
//! (`inherit_network`, TCP, UDP, lookups). Each figure is the median of several rounds (the
//! three alternate within a round). Arguments after `--` choose workloads by name;
//! `USOCKET_BENCH_ROUNDS` sets the rounds, `USOCKET_BENCH_SIDES` (e.g. `usocket`) runs only
//! some of the three (a side left out shows 0 and its ratios are meaningless), and
//! `USOCKET_BENCH_VERBOSE` prints every round's time.
//!
//! Each side's CPU time is measured too (the whole process's, so the side's peer thread is in
//! it, the same peer code for all three), and printed per unit of work in a second table: on
//! a machine shared with others, where wall times swing by tens of percent from round to
//! round, it says more steadily what a change cost.
//!
//! Every workload is a fixed amount of work timed as a whole, so a ratio compares times:
//! `u/native` is native time / usocket time, `u/wasi` is wasi:sockets time / usocket time.
//! Higher is better for usocket; 1.0 is parity. For the latency workloads (echo, udp) that is
//! the inverse of the time ratio (usocket taking 1.10x native's time is 0.91).
//!
//! Workloads: bulk send and bulk receive in 64 KiB chunks, 64-byte echo round trips, a 64 MiB
//! stream of 64-byte lines read two ways, and UDP request/response pairs of 64-byte datagrams.
//! `read_line` is `BufRead::read_line` into one reused `String` everywhere (native and
//! wasi:sockets through a 64 KiB `BufReader`, the size of usocket's read-ahead); `readline`
//! returns a new buffer per line as MicroPython's `readline()` does (native and wasi:sockets:
//! `read_until` into a new `Vec`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::LazyLock;
use std::thread;
use std::time::{Duration, Instant};

use usocket_tests::{Options, WasiOnly, run};
use wasmtime::Store;
use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// Rounds per workload (`USOCKET_BENCH_ROUNDS` overrides, for a quick look).
const ROUNDS: usize = 7;
const BULK: u64 = 1 << 30;
const ECHOES: u64 = 20_000;
const LINE: usize = 64;
const LINES_TOTAL: usize = 64 << 20;
const DATAGRAMS: u64 = 20_000;
/// usocket's read-ahead, and so the `BufReader` capacity of the native and wasi:sockets
/// line readers.
const LINE_BUF: usize = 64 * 1024;

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

/// The line workloads' stream, made once: a peer that built it while the reader is timed
/// would measure its page faults, on a core the reader needs.
static LINES: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut line = vec![b'x'; LINE - 1];
    line.push(b'\n');
    line.repeat(LINES_TOTAL / LINE)
});

fn line_source(mut c: TcpStream) {
    c.write_all(&LINES).unwrap();
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
        "read_line" => {
            let c = TcpStream::connect(("127.0.0.1", peer(line_source))).unwrap();
            let mut r = BufReader::with_capacity(LINE_BUF, c);
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
        "readline" => {
            let c = TcpStream::connect(("127.0.0.1", peer(line_source))).unwrap();
            let mut r = BufReader::with_capacity(LINE_BUF, c);
            start = Instant::now();
            let mut count = 0;
            loop {
                // A new buffer per line, as MicroPython's readline() returns.
                let mut line = Vec::new();
                if r.read_until(b'\n', &mut line).unwrap() == 0 {
                    break;
                }
                std::hint::black_box(line);
                count += 1;
            }
            assert_eq!(count, LINES_TOTAL / LINE);
        }
        _ => unreachable!(),
    }
    start.elapsed()
}

/// A guest of the bench: the usocket one through the usocket host, or the wasi:sockets one.
#[derive(Clone, Copy, PartialEq)]
enum Guest {
    Usocket,
    Wasi,
}

async fn guest(which: Guest, mode: &str) -> Duration {
    let port = match mode {
        "send" => peer(sink),
        "recv" => peer(source(BULK)),
        "echo" => peer(echo),
        "read_line" | "readline" => peer(line_source),
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
    let text = match which {
        Guest::Usocket => {
            let out = run("bench", &args, Options::default())
                .await
                .expect("bench guest");
            assert_eq!(out.code, 0, "{}", String::from_utf8_lossy(&out.stderr));
            out.stdout_text()
        }
        Guest::Wasi => run_wasi(&args).await,
    };
    let nanos: u64 = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("elapsed_ns");
    Duration::from_nanos(nanos)
}

/// Runs `bench_wasi` with `args` as a user of plain wasmtime-wasi would: wasi:sockets linked,
/// the network allowed (TCP and UDP to any address, name lookups). Same engine (configuration, epoch
/// ticks) as the usocket guest, so only the socket layer differs. Returns its stdout.
async fn run_wasi(args: &[&str]) -> String {
    let engine = usocket_tests::runner().engine();
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    let stdout = MemoryOutputPipe::new(1 << 16);
    let stderr = MemoryOutputPipe::new(1 << 20);
    let mut argv = vec!["bench_wasi"];
    argv.extend(args);
    let ctx = WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .args(&argv)
        .inherit_network()
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(true)
        .build();
    let mut store = Store::new(engine, WasiOnly::new(ctx));
    // The engine interrupts guests at epoch ticks (as the usocket host's runner does).
    store.epoch_deadline_async_yield_and_update(1);
    let component = usocket_tests::component("bench_wasi");
    let command = Command::instantiate_async(&mut store, &component, &linker)
        .await
        .unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        command.wasi_cli_run().call_run(&mut store),
    )
    .await
    .expect("bench_wasi within 60 s");
    assert!(
        matches!(result, Ok(Ok(()))),
        "bench_wasi {args:?}: {result:?}: {}",
        String::from_utf8_lossy(&stderr.contents())
    );
    String::from_utf8_lossy(&stdout.contents()).into_owned()
}

/// The CPU time of the whole process so far: every thread, the measured side and its peer.
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Runs one side's round: its wall time as the side measured it, and the process's CPU time
/// over the whole round (connection set-up and, for a guest, its instantiation included:
/// small beside a round's work).
async fn measured(round: impl Future<Output = Duration>) -> (Duration, Duration) {
    let before = process_cpu();
    let wall = round.await;
    (wall, process_cpu().saturating_sub(before))
}

/// How the CPU table shows a workload: its unit, that unit in seconds, and how many units a
/// round does.
fn unit(mode: &str) -> (&'static str, f64, f64) {
    match mode {
        "send" | "recv" => ("ms/GiB", 1e-3, BULK as f64 / f64::from(1u32 << 30)),
        "echo" => ("us/rtt", 1e-6, ECHOES as f64),
        "udp" => ("us/rtt", 1e-6, DATAGRAMS as f64),
        _ => ("ns/line", 1e-9, (LINES_TOTAL / LINE) as f64),
    }
}

/// The median, or zero for a side that did not run.
/// The median of a side's rounds; `None` for a side that did not run.
fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

/// A side's figure, or `-` for a side that did not run.
fn cell(d: Option<Duration>, show: impl Fn(Duration) -> String) -> String {
    d.map_or_else(|| "-".to_string(), show)
}

/// A table row's figures: native, usocket, wasi:sockets, then the ratios of native's and
/// wasi:sockets' to usocket's.
fn row([n, u, w]: [Option<Duration>; 3], show: impl Fn(Duration) -> String) -> String {
    format!(
        "{:>15} {:>15} {:>15} {:>8} {:>8}",
        cell(n, &show),
        cell(u, &show),
        cell(w, &show),
        ratio(n, u),
        ratio(w, u)
    )
}

/// `other / usocket` (higher is better for usocket), or `-` if either side did not run.
fn ratio(other: Option<Duration>, usocket: Option<Duration>) -> String {
    match (other, usocket) {
        (Some(o), Some(u)) => format!("{:.2}", o.as_secs_f64() / u.as_secs_f64()),
        _ => "-".to_string(),
    }
}

/// Which of the three sides run: all, or those named in `USOCKET_BENCH_SIDES` (for example
/// `usocket` alone, to profile it).
struct Sides {
    native: bool,
    usocket: bool,
    wasi: bool,
}

impl Sides {
    fn from_env() -> Sides {
        let Ok(names) = std::env::var("USOCKET_BENCH_SIDES") else {
            return Sides {
                native: true,
                usocket: true,
                wasi: true,
            };
        };
        let has = |side: &str| names.split(',').any(|n| n.trim() == side);
        let sides = Sides {
            native: has("native"),
            usocket: has("usocket"),
            wasi: has("wasi"),
        };
        assert!(
            sides.native || sides.usocket || sides.wasi,
            "USOCKET_BENCH_SIDES={names:?}: name one or more of native, usocket, wasi, \
             separated by commas"
        );
        sides
    }
}

// The guests run as the `usocket` CLI runs its guest: on a current-thread runtime, where a
// guest's wake-ups never cross threads (docs/scaling.md compares the layouts).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Compile the guests before timing anything.
    usocket_tests::component("bench");
    usocket_tests::component("bench_wasi");
    LazyLock::force(&LINES);
    let rounds = std::env::var("USOCKET_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    let sides = Sides::from_env();
    // `cargo bench -p usocket-tests -- echo udp` runs only those workloads.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    println!(
        "{:<10} {:>15} {:>15} {:>15} {:>8} {:>8}  target (usocket/native)",
        "workload", "native", "usocket", "wasi:sockets", "u/native", "u/wasi"
    );
    let mut cpu_rows = Vec::new();
    for (mode, target) in [
        ("send", ">= 0.95"),
        ("recv", ">= 0.95"),
        ("echo", ">= 0.87 (time <= 1.15x)"),
        ("read_line", ">= 0.9"),
        ("readline", ">= 0.8"),
        ("udp", ">= 0.8"),
    ] {
        if !only.is_empty() && !only.iter().any(|o| o == mode) {
            continue;
        }
        let (mut n, mut u, mut w) = (Vec::new(), Vec::new(), Vec::new());
        let (mut n_cpu, mut u_cpu, mut w_cpu) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            if sides.native {
                let round = async {
                    let round = tokio::task::spawn_blocking(move || native(mode));
                    round.await.unwrap()
                };
                let (wall, cpu) = measured(round).await;
                n.push(wall);
                n_cpu.push(cpu);
            }
            if sides.usocket {
                let (wall, cpu) = measured(guest(Guest::Usocket, mode)).await;
                u.push(wall);
                u_cpu.push(cpu);
            }
            if sides.wasi {
                let (wall, cpu) = measured(guest(Guest::Wasi, mode)).await;
                w.push(wall);
                w_cpu.push(cpu);
            }
        }
        cpu_rows.push((mode, median(n_cpu), median(u_cpu), median(w_cpu)));
        if std::env::var_os("USOCKET_BENCH_VERBOSE").is_some() {
            let ms = |v: &[Duration]| {
                v.iter()
                    .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            eprintln!(
                "{mode} ms per round: native [{}] usocket [{}] wasi [{}]",
                ms(&n),
                ms(&u),
                ms(&w)
            );
        }
        let (n, u, w) = (median(n), median(u), median(w));
        let show = |d: Duration| match mode {
            "send" | "recv" => format!("{:.2} GB/s", BULK as f64 / d.as_secs_f64() / 1e9),
            "echo" => format!("{:.1} us/rtt", d.as_secs_f64() * 1e6 / ECHOES as f64),
            "udp" => format!("{:.1} us/rtt", d.as_secs_f64() * 1e6 / DATAGRAMS as f64),
            _ => format!(
                "{:.2} Mlines/s",
                (LINES_TOTAL / LINE) as f64 / d.as_secs_f64() / 1e6
            ),
        };
        println!("{mode:<10} {}  {target}", row([n, u, w], show));
    }
    println!(
        "medians of {rounds} rounds; u/native = native time / usocket time, u/wasi = \
         wasi:sockets time / usocket time (higher is better for usocket)"
    );
    println!(
        "\nCPU time per unit of work (the whole process: the side and its peer)\n\
         {:<10} {:>15} {:>15} {:>15} {:>8} {:>8}",
        "workload", "native", "usocket", "wasi:sockets", "u/native", "u/wasi"
    );
    for (mode, n, u, w) in cpu_rows {
        let (name, seconds, units) = unit(mode);
        let show = |d: Duration| format!("{:.1} {name}", d.as_secs_f64() / seconds / units);
        println!("{mode:<10} {}", row([n, u, w], show));
    }
    println!(
        "medians of {rounds} rounds; u/native = native CPU / usocket CPU, u/wasi = \
         wasi:sockets CPU / usocket CPU (higher is better for usocket)"
    );
}
