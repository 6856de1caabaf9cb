//! Helpers shared by the `usocket` command-line tests: running the binary with a bound on
//! its run time, and finding the example guests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long one run of the binary may take before the test fails.
pub const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Runs `usocket ARGS` to completion, killing it if it outlives [`RUN_LIMIT`].
pub fn usocket(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_usocket"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("usocket runs");
    finish(child, args)
}

/// Waits for `child` for at most [`RUN_LIMIT`], then kills it and fails the test.
pub fn finish(mut child: Child, args: &[&str]) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait for usocket").is_some() {
            return child.wait_with_output().expect("usocket's output");
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("usocket's output");
            panic!(
                "usocket {args:?} ran longer than {RUN_LIMIT:?}; stderr: {}",
                text(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The path of an example guest built by build.rs.
pub fn example(name: &str) -> String {
    PathBuf::from(env!("USOCKET_EXAMPLES_DIR"))
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A loopback port that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback HTTP/1.0 server that answers one request with `body`; returns its port.
pub fn http_server(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            line.clear();
        }
        let response = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(response.as_bytes());
    });
    port
}

pub mod python;
