//! The `poll_server` and `udp_echo` examples, run by the `usocket` command line against
//! native std clients on loopback. Every wait is bounded: socket timeouts, a deadline for the
//! guest's first line and for its exit, and the runner's own `--time-limit`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::{example, free_tcp_port, text};

/// How long any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(10);

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `usocket run ...`: its stdout lines arrive through a channel (so that reading
/// them can time out) and its stderr is collected by a thread.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_usocket"))
            .args(["run", "--time-limit", "60"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("usocket runs");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Running {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The guest's next stdout line (bounded wait).
    fn line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                panic!("no line from the guest within {WAIT:?} ({e})");
            }
        }
    }

    /// Waits (bounded) for the guest to exit; returns its exit code and stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the guest did not exit within {WAIT:?}; stderr: {}",
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        (status.code(), self.stderr_text())
    }

    /// Everything the guest wrote to stderr (it has exited or been killed).
    fn stderr_text(&mut self) -> String {
        self.stderr
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed assertion must not leave the guest running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `usocket run ARGS` to completion, bounded by its `--time-limit`.
fn usocket_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_usocket"))
        .args(["run", "--time-limit", "30"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("usocket runs")
}

/// A native client of the line echo server.
struct LineClient {
    name: &'static str,
    conn: TcpStream,
    reader: BufReader<TcpStream>,
}

impl LineClient {
    fn connect(name: &'static str, port: u16) -> LineClient {
        let conn = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), WAIT).unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        conn.set_write_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(conn.try_clone().unwrap());
        LineClient { name, conn, reader }
    }

    fn send(&mut self, data: &str) {
        self.conn.write_all(data.as_bytes()).unwrap();
    }

    /// Reads one line (bounded by the read timeout) and checks it.
    fn expect(&mut self, want: &str) {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("client {}: no echo of {want:?}: {e}", self.name));
        assert_eq!(line, want, "client {}", self.name);
    }

    /// Closes the connection; the server's answer is end of stream, nothing more.
    fn close(mut self) {
        self.conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = String::new();
        self.reader.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "", "client {}: data after its last echo", self.name);
    }
}

#[test]
fn poll_server_serves_three_clients_at_once() {
    let port = free_tcp_port();
    let p = port.to_string();
    let (bind, listen) = (
        format!("bind=127.0.0.1:{port}"),
        format!("listen=127.0.0.1:{port}"),
    );
    let mut server = Running::start(&[
        "--allow",
        &bind,
        "--allow",
        &listen,
        "--allow",
        "accept=127.0.0.1:*",
        &example("poll_server"),
        &p,
        "3",
    ]);
    assert_eq!(
        server.line(),
        format!("poll_server: listening on 127.0.0.1:{port}")
    );

    // All three connected before any of them sends: a server that served one client at a
    // time would leave B and C without an echo (and their reads would time out).
    let mut a = LineClient::connect("A", port);
    let mut b = LineClient::connect("B", port);
    let mut c = LineClient::connect("C", port);

    a.send("a1\n");
    b.send("b1\n");
    a.expect("a1\n");
    c.send("c1\n");
    b.expect("b1\n");
    c.expect("c1\n");

    // Several lines in one segment, and one line in pieces.
    b.send("b2\nb3\n");
    a.send("par");
    c.send("c2 with spaces and UPPER and lower\n");
    a.send("tial a2\n");
    c.expect("c2 with spaces and UPPER and lower\n");
    b.expect("b2\n");
    a.expect("partial a2\n");
    b.expect("b3\n");

    // One client leaves while the others carry on.
    b.close();
    a.send("a3\n");
    c.send("c3\n");
    c.expect("c3\n");
    a.expect("a3\n");
    // A long line (larger than one read chunk of a small buffer).
    let long = format!("{}\n", "x".repeat(100_000));
    a.send(&long);
    a.expect(&long);
    a.close();
    c.close();

    let (code, stderr) = server.finish();
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stderr, "", "the server reported errors");
}

#[test]
fn udp_echo_returns_each_datagram_to_its_sender() {
    let port = free_udp_port();
    let p = port.to_string();
    let grant = format!("bind=127.0.0.1:{port}");
    let mut server = Running::start(&[
        "--allow",
        &grant,
        "--allow",
        "recv=127.0.0.1:*",
        "--allow",
        "send=127.0.0.1:*",
        &example("udp_echo"),
        &p,
        "3",
    ]);
    assert_eq!(
        server.line(),
        format!("udp_echo: listening on 127.0.0.1:{port}")
    );

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 2048];
    for msg in [&b"one"[..], b"", &[0u8, 255, b'\n', 7][..]] {
        client.send_to(msg, ("127.0.0.1", port)).unwrap();
        let (n, from) = client
            .recv_from(&mut buf)
            .expect("an echo within the timeout");
        assert_eq!(&buf[..n], msg);
        assert_eq!(from, ([127, 0, 0, 1], port).into());
    }

    let (code, stderr) = server.finish();
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn udp_echo_without_a_send_grant_cannot_reply() {
    let port = free_udp_port();
    let p = port.to_string();
    let grant = format!("bind=127.0.0.1:{port}");
    let mut server = Running::start(&[
        "--allow",
        &grant,
        "--allow",
        "recv=127.0.0.1:*",
        &example("udp_echo"),
        &p,
        "1",
    ]);
    assert_eq!(
        server.line(),
        format!("udp_echo: listening on 127.0.0.1:{port}")
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    client.send_to(b"hello", ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        client.recv_from(&mut buf).is_err(),
        "a reply arrived without a send grant"
    );
    let (code, stderr) = server.finish();
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(stderr.contains("[Errno 13] EACCES"), "{stderr}");
}

#[test]
fn examples_fail_with_eacces_without_a_bind_grant() {
    let port = free_tcp_port().to_string();
    for (name, args) in [
        (
            "poll_server",
            vec![example("poll_server"), port.clone(), "1".into()],
        ),
        (
            "udp_echo",
            vec![
                "--allow".into(),
                "connect=127.0.0.1:*".into(),
                example("udp_echo"),
                port.clone(),
                "1".into(),
            ],
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = usocket_run(&args);
        assert!(!out.status.success(), "{name} ran without a bind grant");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: the guest's own exit code"
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("{name}: [Errno 13] EACCES")),
            "{name}: {stderr}"
        );
        assert_eq!(text(&out.stdout), "", "{name} printed before failing");
    }
}

#[test]
fn examples_explain_bad_arguments() {
    for name in ["poll_server", "udp_echo"] {
        let out = usocket_run(&[&example(name)]);
        // The guests exit with 2, which wasm32-wasip2 (wasi:cli/exit carries only ok or
        // error) delivers as 1.
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(
            text(&out.stderr).contains(&format!("usage: {name} PORT")),
            "{name}"
        );
    }
}

/// The next server line that starts with `prefix` (bounded: each line waits at most
/// [`WAIT`], and at most 100 lines are looked at).
fn line_starting(server: &mut Running, prefix: &str) -> String {
    for _ in 0..100 {
        let line = server.line();
        if line.starts_with(prefix) {
            return line;
        }
    }
    panic!("no line starting with {prefix:?}");
}

#[test]
fn poll_server_at_its_socket_quota_defers_new_clients_and_keeps_serving() {
    let port = free_tcp_port();
    let p = port.to_string();
    let (bind, listen) = (
        format!("bind=127.0.0.1:{port}"),
        format!("listen=127.0.0.1:{port}"),
    );
    // 4 sockets: the listener and 3 clients.
    let mut server = Running::start(&[
        "--max-sockets",
        "4",
        "--allow",
        &bind,
        "--allow",
        &listen,
        "--allow",
        "accept=127.0.0.1:*",
        &example("poll_server"),
        &p,
    ]);
    assert_eq!(
        server.line(),
        format!("poll_server: listening on 127.0.0.1:{port}")
    );
    let mut a = LineClient::connect("A", port);
    let mut b = LineClient::connect("B", port);
    let mut c = LineClient::connect("C", port);
    for (client, line) in [(&mut a, "a1\n"), (&mut b, "b1\n"), (&mut c, "c1\n")] {
        client.send(line);
        client.expect(line);
    }
    // Clients 4 and 5 get through the kernel's backlog; the guest cannot take them yet.
    let mut d = LineClient::connect("D", port);
    d.send("d1\n");
    let mut e = LineClient::connect("E", port);
    e.send("e1\n");
    line_starting(&mut server, "poll_server: socket quota full");
    // The server goes on serving the clients it has.
    c.send("c2\n");
    c.expect("c2\n");

    // Each client that leaves makes room for one that waited.
    a.close();
    d.expect("d1\n");
    b.close();
    e.expect("e1\n");
    for (client, line) in [(&mut c, "c3\n"), (&mut d, "d2\n"), (&mut e, "e2\n")] {
        client.send(line);
        client.expect(line);
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited: {}",
        server.stderr_text()
    );
    c.close();
    d.close();
    e.close();
    // Still serving after all that.
    let mut f = LineClient::connect("F", port);
    f.send("f1\n");
    f.expect("f1\n");
    f.close();
    assert!(server.child.try_wait().unwrap().is_none());
    let _ = server.child.kill();
    let _ = server.child.wait();
    let stderr = server.stderr_text();
    assert!(
        !stderr.contains("poll_server:"),
        "the guest reported: {stderr}"
    );
}

#[test]
fn echo_server_drops_a_silent_client_and_serves_the_next() {
    let port = free_tcp_port();
    let p = port.to_string();
    let (bind, listen) = (
        format!("bind=127.0.0.1:{port}"),
        format!("listen=127.0.0.1:{port}"),
    );
    // MAX 3, a timeout of 1 s per call on a client.
    let mut server = Running::start(&[
        "--allow",
        &bind,
        "--allow",
        &listen,
        "--allow",
        "accept=127.0.0.1:*",
        &example("echo_server"),
        &p,
        "3",
        "1",
    ]);
    assert_eq!(
        server.line(),
        format!("echo_server: listening on 127.0.0.1:{port}")
    );
    // A silent client, then one that sends half a line and stops: each would keep a
    // one-at-a-time server to itself.
    let silent = LineClient::connect("silent", port);
    line_starting(&mut server, "echo_server: client ");
    let mut partial = LineClient::connect("partial", port);
    partial.send("no newline");
    // Another client is served all the same (its read waits at most WAIT).
    let mut other = LineClient::connect("other", port);
    other.send("hello\n");
    other.expect("hello\n");
    other.send("again\n");
    other.expect("again\n");
    other.close();
    // The two stalled clients were dropped: their connections are closed.
    for mut stalled in [silent, partial] {
        let mut rest = Vec::new();
        match stalled.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "client {}: {rest:?}", stalled.name),
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "client {}",
                stalled.name
            ),
        }
    }
    let (code, stderr) = server.finish();
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(
        stderr.matches("no progress for 1 s, dropped").count(),
        2,
        "{stderr}"
    );
}
