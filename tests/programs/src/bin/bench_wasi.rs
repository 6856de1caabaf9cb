//! The wasi:sockets guest of `cargo bench -p usocket-tests`: the workloads of `bench` over
//! Rust's `std::net`, which on wasm32-wasip2 goes through wasi:sockets (what a guest uses
//! without usocket). Prints `elapsed_ns UNITS` measured around its own loop only.
//!
//! Modes: `send PORT BYTES`, `recv PORT`, `echo PORT COUNT`, `read_line PORT`
//! (`BufReader::read_line` into one reused `String`), `readline PORT` (`read_until` into a new
//! `Vec` per line, as MicroPython's `readline()` returns), `udp PORT COUNT`. The `BufReader`
//! holds 64 KiB, as usocket's read-ahead does.
//!
//! `serve PORT` is the `echo_server` example's loop for the `scale` bench's load test: listen
//! on 127.0.0.1:PORT, print `listening`, accept one client, echo its lines (a new `Vec` each,
//! as `readline()` returns) until it closes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Instant;

const BUF: usize = 64 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args[2].parse().expect("port");
    if args[1] == "serve" {
        serve(port);
        return;
    }
    if args[1] == "udp" {
        let count: u64 = args[3].parse().expect("count");
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.connect(("127.0.0.1", port)).expect("connect");
        let msg = [0x75_u8; 64];
        let mut back = [0_u8; 64];
        let start = Instant::now();
        for _ in 0..count {
            s.send(&msg).expect("send");
            assert_eq!(s.recv(&mut back).expect("recv"), 64);
        }
        println!("{} {count}", start.elapsed().as_nanos());
        return;
    }
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let start = Instant::now();
    let units: u64 = match args[1].as_str() {
        "send" => {
            let total: u64 = args[3].parse().expect("bytes");
            let chunk = vec![0x5a_u8; BUF];
            let mut sent = 0;
            while sent < total {
                s.write_all(&chunk).expect("write_all");
                sent += chunk.len() as u64;
            }
            drop(s);
            sent
        }
        "recv" => {
            let mut buf = vec![0_u8; BUF];
            let mut got = 0;
            loop {
                let n = s.read(&mut buf).expect("read");
                if n == 0 {
                    break got;
                }
                got += n as u64;
            }
        }
        "echo" => {
            let count: u64 = args[3].parse().expect("count");
            let msg = [0x61_u8; 64];
            let mut back = [0_u8; 64];
            for _ in 0..count {
                s.write_all(&msg).expect("write_all");
                s.read_exact(&mut back).expect("read_exact");
            }
            count
        }
        "read_line" => {
            let mut r = BufReader::with_capacity(BUF, s);
            let mut line = String::new();
            let mut lines = 0;
            loop {
                line.clear();
                if r.read_line(&mut line).expect("read_line") == 0 {
                    break lines;
                }
                lines += 1;
            }
        }
        "readline" => {
            let mut r = BufReader::with_capacity(BUF, s);
            let mut lines = 0;
            loop {
                let mut line = Vec::new();
                if r.read_until(b'\n', &mut line).expect("read_until") == 0 {
                    break lines;
                }
                lines += 1;
            }
        }
        other => panic!("unknown mode {other}"),
    };
    println!("{} {units}", start.elapsed().as_nanos());
}

fn serve(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    println!("listening");
    std::io::stdout().flush().expect("flush");
    let (conn, _) = listener.accept().expect("accept");
    let mut r = BufReader::with_capacity(BUF, conn);
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).expect("read_until") == 0 {
            break;
        }
        // The echo goes out through the stream the reader wraps.
        r.get_mut().write_all(&line).expect("write_all");
    }
}
