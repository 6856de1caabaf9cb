//! The usocket guest of `cargo bench -p usocket-tests`: each mode talks to a native peer on
//! loopback and prints `elapsed_ns UNITS` measured around its own loop only.
//!
//! Modes: `send PORT BYTES` (sendall 64 KiB chunks), `recv PORT` (recv 64 KiB until EOF),
//! `echo PORT COUNT` (64-byte round trips), `read_line PORT` (`BufRead::read_line` into one
//! reused `String` until EOF), `readline PORT` (MicroPython's `readline()`, a new `Vec` per
//! line, until EOF), `udp PORT COUNT` (64-byte datagram request/response pairs).
//! `bench_wasi` does the same over `std::net` (wasi:sockets).

use std::io::BufRead;
use std::time::Instant;

use usocket::{AF_INET, SOCK_DGRAM, SOCK_STREAM, socket};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: i64 = args[2].parse().expect("port");
    if args[1] == "udp" {
        let count: u64 = args[3].parse().expect("count");
        let s = socket(AF_INET, SOCK_DGRAM, 0).expect("socket");
        s.connect(("127.0.0.1", port)).expect("connect");
        let msg = [0x75_u8; 64];
        let start = Instant::now();
        for _ in 0..count {
            s.send(&msg).expect("send");
            assert_eq!(s.recv(64).expect("recv").len(), 64);
        }
        println!("{} {count}", start.elapsed().as_nanos());
        return;
    }
    let mut s = socket(AF_INET, SOCK_STREAM, 0).expect("socket");
    s.connect(("127.0.0.1", port)).expect("connect");
    let start = Instant::now();
    let units: u64 = match args[1].as_str() {
        "send" => {
            let total: u64 = args[3].parse().expect("bytes");
            let chunk = vec![0x5a_u8; 64 * 1024];
            let mut sent = 0;
            while sent < total {
                s.sendall(&chunk).expect("sendall");
                sent += chunk.len() as u64;
            }
            s.close();
            sent
        }
        "recv" => {
            let mut got = 0;
            loop {
                let data = s.recv(64 * 1024).expect("recv");
                if data.is_empty() {
                    break got;
                }
                got += data.len() as u64;
            }
        }
        "echo" => {
            let count: u64 = args[3].parse().expect("count");
            let msg = [0x61_u8; 64];
            for _ in 0..count {
                s.sendall(&msg).expect("send");
                let back = s.read(64).expect("read").expect("blocking");
                assert_eq!(back.len(), 64);
            }
            count
        }
        "read_line" => {
            let mut line = String::new();
            let mut lines = 0;
            loop {
                line.clear();
                if s.read_line(&mut line).expect("read_line") == 0 {
                    break lines;
                }
                lines += 1;
            }
        }
        "readline" => {
            let mut lines = 0;
            while let Some(line) = s.readline().expect("readline") {
                if line.is_empty() {
                    break;
                }
                lines += 1;
            }
            lines
        }
        other => panic!("unknown mode {other}"),
    };
    println!("{} {units}", start.elapsed().as_nanos());
}
