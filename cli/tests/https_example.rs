//! The `https_get` example, run by the `usocket` command line against a native rustls HTTPS
//! server on 127.0.0.1 with a certificate for `localhost` from a CA made here (trusted with
//! `--tls-ca`). Every wait is bounded: the peer's read timeout and `RUN_LIMIT` for the run.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use usocket_test_pki::{Ca, server_config};

mod common;
use common::{example, text, usocket};

/// How long the native server waits for the guest's next bytes.
const PEER_TIMEOUT: Duration = Duration::from_secs(15);

/// A folder of its own for this test's files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "usocket-https-example-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `text` to `name` in the folder and returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTPS server on 127.0.0.1 for one connection, with `config`: it sends the request's
/// lines (up to the empty one) through the channel, answers `hello over tls`, and ends with
/// close_notify. A refused handshake ends it (its first read fails).
fn https_server(config: Arc<rustls::ServerConfig>) -> (u16, mpsc::Receiver<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((tcp, _)) = listener.accept() else {
            return;
        };
        tcp.set_read_timeout(Some(PEER_TIMEOUT)).unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let lines = head.split_inclusive("\r\n").map(str::to_string);
        let _ = tx.send(lines.filter(|l| l != "\r\n").collect());
        let body = "hello over tls\n";
        let reply = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(reply.as_bytes());
        s.conn.send_close_notify();
        let _ = s.flush();
    });
    (port, rx)
}

fn run_https_get(allow: &str, ca: Option<&str>, url: &str) -> std::process::Output {
    let wasm = example("https_get");
    let mut args = vec!["run", "--time-limit", "30", "--allow", allow];
    if let Some(ca) = ca {
        args.extend(["--tls-ca", ca]);
    }
    args.extend([wasm.as_str(), url]);
    usocket(&args)
}

#[test]
fn https_get_fetches_over_verified_tls() {
    let dir = TempDir::new("ok");
    let ca = Ca::new("usocket https_get test CA");
    let ca_file = dir.file("ca.pem", &ca.pem);
    let (port, requests) = https_server(server_config(&ca.leaf(&["localhost"])));
    // A tls rule: the connection is granted only with the certificate verified.
    let allow = format!("tls=localhost:{port}");
    let out = run_https_get(
        &allow,
        Some(&ca_file),
        &format!("https://localhost:{port}/greeting"),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("HTTP/1.0 200 OK\r\n"), "{stdout:?}");
    assert!(stdout.ends_with("\r\n\r\nhello over tls\n"), "{stdout:?}");
    let request = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the request reached the server");
    assert_eq!(
        request,
        ["GET /greeting HTTP/1.0\r\n", "Host: localhost\r\n"]
    );
}

#[test]
fn https_get_reports_a_certificate_for_another_name_as_ekeyrejected() {
    let dir = TempDir::new("mismatch");
    let ca = Ca::new("usocket https_get test CA");
    let ca_file = dir.file("ca.pem", &ca.pem);
    let (port, requests) = https_server(server_config(&ca.leaf(&["other.test"])));
    let allow = format!("tls=localhost:{port}");
    let out = run_https_get(
        &allow,
        Some(&ca_file),
        &format!("https://localhost:{port}/"),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("https_get: OSError: [Errno 129] EKEYREJECTED"),
        "{stderr}"
    );
    assert!(text(&out.stdout).is_empty());
    assert!(
        requests.recv_timeout(Duration::from_millis(200)).is_err(),
        "no request may cross a refused handshake"
    );
}

#[test]
fn https_get_without_the_ca_is_enokey() {
    let ca = Ca::new("usocket https_get test CA");
    let (port, _requests) = https_server(server_config(&ca.leaf(&["localhost"])));
    // Only the system's CAs: the test CA is not among them.
    let allow = format!("connect=localhost:{port}");
    let out = run_https_get(&allow, None, &format!("https://localhost:{port}/"));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("https_get: OSError: [Errno 126] ENOKEY"),
        "{stderr}"
    );
}
