//! The usocket guest of `cargo bench -p usocket-tests --bench tls`: a TLS client (terminated
//! in the host) against a native TLS server on loopback; prints `elapsed_ns` measured around
//! its own loop only. The host trusts the server's certificate (the bench configures it).
//!
//! Modes: `recv PORT BYTES` (recv 64 KiB until the server's close_notify), `send PORT BYTES`
//! (sendall 64 KiB chunks, then wait for the server's close_notify), `handshakes PORT COUNT`
//! (connect, verified handshake, read one byte, close; COUNT times), `idle PORT COUNT` and
//! `idle-plain PORT COUNT` (COUNT connections, TLS or plain, kept open until the server ends
//! the first: the bench measures the host's memory meanwhile).

use std::time::Instant;

use usocket::ssl::{CERT_REQUIRED, WrapOptions, wrap_socket};
use usocket::{AF_INET, SOCK_STREAM, Socket, socket};

fn connect(port: i64) -> Socket {
    let s = socket(AF_INET, SOCK_STREAM, 0).expect("socket");
    s.connect(("127.0.0.1", port)).expect("connect");
    let opts = WrapOptions {
        cert_reqs: CERT_REQUIRED,
        ..WrapOptions::default()
    };
    wrap_socket(s, opts).expect("wrap_socket")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: i64 = args[2].parse().expect("port");
    let count: u64 = args[3].parse().expect("count");
    let start;
    match args[1].as_str() {
        "recv" => {
            let s = connect(port);
            start = Instant::now();
            let mut got = 0;
            loop {
                let data = s.recv(64 * 1024).expect("recv");
                if data.is_empty() {
                    break;
                }
                got += data.len() as u64;
            }
            assert_eq!(got, count);
        }
        "send" => {
            let s = connect(port);
            start = Instant::now();
            let chunk = vec![0x5a_u8; 64 * 1024];
            let mut sent = 0;
            while sent < count {
                s.sendall(&chunk).expect("sendall");
                sent += chunk.len() as u64;
            }
            // The server's close_notify says it has read everything.
            while !s.recv(1024).expect("recv").is_empty() {}
            s.close();
        }
        "handshakes" => {
            start = Instant::now();
            for _ in 0..count {
                let s = connect(port);
                assert_eq!(s.read(1).expect("read").expect("blocking"), b"!");
                s.close();
            }
        }
        "idle" | "idle-plain" => {
            start = Instant::now();
            let conns: Vec<Socket> = (0..count)
                .map(|_| {
                    if args[1] == "idle" {
                        connect(port)
                    } else {
                        let s = socket(AF_INET, SOCK_STREAM, 0).expect("socket");
                        s.connect(("127.0.0.1", port)).expect("connect");
                        s
                    }
                })
                .collect();
            // Idle until the server ends the first connection (any outcome will do).
            let _ = conns[0].recv(1);
        }
        other => panic!("unknown mode {other}"),
    }
    println!("{}", start.elapsed().as_nanos());
}
