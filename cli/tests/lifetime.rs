//! The `usocket` process never outlives its guest: it ends within a bounded time after the
//! guest ends or its `--time-limit` is up, even when the guest is stuck writing to a stdout
//! pipe nobody reads; SIGTERM and SIGINT stop the guest, close its sockets and exit with 143
//! and 130 (128 + the signal, as shells report a job stopped by a signal); a SIGINT ignored
//! at start (as background jobs get it) stays ignored. Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::{example, free_tcp_port};

/// How long the process may take to exit once it should (generous: a loaded machine).
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// Waits for `child` at most `limit`; kills it and returns None if it is still running.
fn wait_at_most(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Everything `child` writes to stderr, collected by a thread.
fn collect_stderr(child: &mut Child) -> thread::JoinHandle<String> {
    let mut err = child.stderr.take().unwrap();
    thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    })
}

/// Sends `signal` (a `kill` name: TERM, INT) to `child`.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal}");
}

/// A loopback HTTP server that answers one request with `size` bytes of body.
fn big_http_server(size: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(EXIT_WITHIN)).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            line.clear();
        }
        let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {size}\r\n\r\n");
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(&vec![b'x'; size]);
    });
    port
}

#[test]
fn a_guest_stuck_writing_to_an_unread_stdout_ends_at_its_time_limit() {
    // http_get prints a 4 MiB body; nobody reads the CLI's stdout, so the guest's write
    // blocks once the pipe (64 KiB) is full, and stays blocked.
    let port = big_http_server(4 << 20).to_string();
    let grant = format!("connect=127.0.0.1:{port}");
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_usocket"))
        .args(["run", "--time-limit", "1", "--allow", &grant])
        .args([&example("http_get"), "127.0.0.1", &port])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Hold the read end open, unread: the guest's writes block instead of failing.
    let unread: ChildStdout = child.stdout.take().unwrap();
    let stderr = collect_stderr(&mut child);
    let status = wait_at_most(&mut child, EXIT_WITHIN);
    let took = start.elapsed();
    drop(unread);
    let err = stderr.join().unwrap();
    let status = status.unwrap_or_else(|| {
        panic!("usocket still ran {EXIT_WITHIN:?} after a time limit of 1 s; stderr: {err}")
    });
    eprintln!("exited after {took:?} with {status}");
    assert_eq!(status.code(), Some(125), "{err}");
    assert!(err.contains("time limit"), "{err}");
}

/// A running `usocket run echo_server PORT` (its listener ready), started through `sh` when
/// `ignore_sigint` (with SIGINT ignored, as a shell starts a background job).
struct Server {
    child: Child,
    port: u16,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Server {
    fn start(ignore_sigint: bool) -> Server {
        let port = free_tcp_port();
        let p = port.to_string();
        let (bind, listen) = (
            format!("bind=127.0.0.1:{port}"),
            format!("listen=127.0.0.1:{port}"),
        );
        let bin = env!("CARGO_BIN_EXE_usocket");
        let args = [
            "run",
            "--time-limit",
            "60",
            "--allow",
            &bind,
            "--allow",
            &listen,
            "--allow",
            "accept=127.0.0.1:*",
            &example("echo_server"),
            &p,
        ];
        let mut command = if ignore_sigint {
            let mut c = Command::new("sh");
            c.args(["-c", "trap '' INT; exec \"$0\" \"$@\"", bin]);
            c
        } else {
            Command::new(bin)
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = collect_stderr(&mut child);
        // Its first line says the listener is up.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {} // keep reading: a full pipe must not be why it stops
        });
        let mut server = Server {
            child,
            port,
            stderr: Some(stderr),
        };
        match rx.recv_timeout(EXIT_WITHIN) {
            Ok(line) => assert_eq!(line, format!("echo_server: listening on 127.0.0.1:{port}")),
            Err(_) => panic!("echo_server did not start; stderr: {}", server.stderr()),
        }
        server
    }

    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        self.stderr
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }

    /// Sends `sig`, then expects an exit with `code` within [`EXIT_WITHIN`], the client's
    /// connection (if any) closed and the port free again.
    fn stop_with(mut self, sig: &str, code: i32, client: Option<TcpStream>) {
        signal(&self.child, sig);
        let status = wait_at_most(&mut self.child, EXIT_WITHIN);
        let err = self.stderr();
        let status = status
            .unwrap_or_else(|| panic!("usocket still ran {EXIT_WITHIN:?} after SIG{sig}: {err}"));
        assert_eq!(
            status.code(),
            Some(code),
            "SIG{sig}: {status}; stderr: {err}"
        );
        assert!(err.contains(&format!("stopped by SIG{sig}")), "{err}");
        // The guest's connection is closed (end of stream or a reset), not left hanging.
        if let Some(mut client) = client {
            client.set_read_timeout(Some(EXIT_WITHIN)).unwrap();
            let mut buf = [0u8; 16];
            match client.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => panic!("{n} unexpected bytes"),
                Err(e) => assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                    ),
                    "the connection was not closed: {e}"
                ),
            }
        }
        // The listener is gone: the port can be listened on again.
        TcpListener::bind(("127.0.0.1", self.port)).expect("the port is free again");
    }

    /// A client the guest has accepted (echo checked), blocked serving it.
    fn client(&self) -> TcpStream {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        conn.set_read_timeout(Some(EXIT_WITHIN)).unwrap();
        conn.write_all(b"ping\n").unwrap();
        let mut line = String::new();
        BufReader::new(conn.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ping\n");
        conn
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigterm_stops_a_guest_blocked_in_accept_and_exits_with_143() {
    let server = Server::start(false);
    server.stop_with("TERM", 143, None);
}

#[test]
fn sigterm_stops_a_guest_serving_a_client_and_closes_its_connection() {
    let server = Server::start(false);
    let client = server.client();
    server.stop_with("TERM", 143, Some(client));
}

#[test]
fn sigint_stops_the_guest_and_exits_with_130() {
    let server = Server::start(false);
    let client = server.client();
    server.stop_with("INT", 130, Some(client));
}

#[test]
fn an_ignored_sigint_stays_ignored_and_sigterm_still_works() {
    let mut server = Server::start(true);
    let client = server.client();
    signal(&server.child, "INT");
    // Still serving after the SIGINT: a new line is echoed (bounded by the read timeout).
    let mut conn = client.try_clone().unwrap();
    conn.write_all(b"still there\n").unwrap();
    let mut line = String::new();
    BufReader::new(client.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "still there\n");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "usocket exited on an ignored SIGINT"
    );
    server.stop_with("TERM", 143, Some(client));
}
