//! TLS for Python guests (guest-python/lib/tls.py and ssl.py, over the host's `start-tls`):
//! the scripts guest-python/tests/tls_*.py run in the generic runner against native rustls
//! peers on 127.0.0.1, with a test CA and certificates made here (usocket-test-pki). The guest gets the
//! CA as data (`cadata`, `load_verify_locations`) from a `--dir` of this test's files; the
//! host trusts only its system roots. Each script's stdout must equal its `.exp`.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod common;
#[path = "common/tls.rs"]
mod tls;
use common::python::{CONFORMANCE_GRANTS, repo, run_script, script_command};
use common::{finish, free_tcp_port, text};
use tls::{Ca, Leaf, ServerStream};

fn tests_dir() -> PathBuf {
    repo().join("guest-python").join("tests")
}

fn assert_matches(stem: &str, out: &Output) {
    let want = std::fs::read_to_string(tests_dir().join(format!("{stem}.exp"))).unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(text(&out.stdout), want, "{stem} (stderr: {stderr})");
    assert!(out.stderr.is_empty(), "{stem} wrote to stderr: {stderr}");
    assert_eq!(out.status.code(), Some(0), "{stem} exit status");
}

/// The test CA, a server certificate it signs for localhost and 127.0.0.1, and the
/// directory the guest sees as /pki: ca.pem, ca.der, server.pem, server.key, server.der,
/// server.key.der.
struct Pki {
    ca: Ca,
    server: Leaf,
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        // Per process: two runs of these tests at once do not share certificates.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("python-tls")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new("usocket python test CA");
        let server = ca.leaf(&["localhost", "127.0.0.1"]);
        std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
        std::fs::write(dir.join("ca.der"), &ca.der).unwrap();
        server.write(&dir, "server");
        Pki { ca, server, dir }
    }

    /// `flags`, and `--dir DIR::/pki`.
    fn flags<'a>(&'a self, flags: &[&'a str]) -> Vec<String> {
        let mut all: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        all.push("--dir".into());
        all.push(format!("{}::/pki", self.dir.display()));
        all
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a guest TLS client is granted here: connecting to loopback, looking up localhost.
const CLIENT_GRANTS: &[&str] = &[
    "--allow",
    "connect=127.0.0.1:*",
    "--allow",
    "resolve=localhost",
];

fn run(stem: &str, pki: &Pki, args: &[&str], grants: &[&str]) -> Output {
    let flags = pki.flags(grants);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    run_script(&tests_dir(), &format!("{stem}.py"), args, &flags)
}

/// How the connections of [`upper_service`] ended: "close_notify", or the error.
type Endings = Arc<Mutex<Vec<String>>>;

/// A native TLS peer's service: answers each chunk it reads in upper case; "CUT\n": answers
/// "cut\n" and closes the TCP stream without close_notify; "BYE\n": sends close_notify and
/// closes. Records how each other connection ended in `endings`.
fn upper_service(endings: Endings) -> impl Fn(ServerStream) + Send + Sync + 'static {
    move |mut s: ServerStream| {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    endings.lock().unwrap().push("close_notify".into());
                    return;
                }
                Ok(n) if &buf[..n] == b"CUT\n" => {
                    tls::send(&mut s, b"cut\n");
                    let _ = s.sock.shutdown(Shutdown::Both);
                    return;
                }
                Ok(n) if &buf[..n] == b"BYE\n" => {
                    s.conn.send_close_notify();
                    let _ = s.flush();
                    return;
                }
                Ok(n) => {
                    if s.write_all(&buf[..n].to_ascii_uppercase()).is_err() || s.flush().is_err() {
                        return;
                    }
                }
                Err(e) => {
                    endings.lock().unwrap().push(e.to_string());
                    return;
                }
            }
        }
    }
}

/// Waits (at most 5 s) until `endings` holds `n` entries; returns them.
fn wait_endings(endings: &Endings, n: usize) -> Vec<String> {
    let start = Instant::now();
    while endings.lock().unwrap().len() < n && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(10));
    }
    endings.lock().unwrap().clone()
}

#[test]
fn a_guest_client_verifies_a_native_server_with_cadata() {
    let pki = Pki::new("client");
    let endings = Endings::default();
    let port = tls::tls_server(&pki.server, 9, upper_service(endings.clone()));
    let out = run("tls_client", &pki, &[&port.to_string()], CLIENT_GRANTS);
    assert_matches("tls_client", &out);
    // Every connection the guest closed ended with its close_notify.
    let endings = wait_endings(&endings, 7);
    assert_eq!(endings, vec!["close_notify"; 7]);
}

#[test]
fn certificate_failures_have_their_own_errno() {
    let pki = Pki::new("verify");
    let other = Ca::new("another CA");
    let servers = [
        (pki.ca.leaf(&["localhost", "127.0.0.1"]), 5),
        (pki.ca.leaf(&["wrong.test"]), 3),
        (other.leaf(&["localhost", "127.0.0.1"]), 4),
        (pki.ca.expired_leaf(&["localhost", "127.0.0.1"]), 1),
    ];
    let ports: Vec<String> = servers
        .iter()
        .map(|(leaf, n)| tls::tls_server(leaf, *n, upper_service(Endings::default())).to_string())
        .collect();
    let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
    let out = run("tls_verify", &pki, &ports, CLIENT_GRANTS);
    assert_matches("tls_verify", &out);
}

/// A STARTTLS server on 127.0.0.1 for one client: sends "220 go\r\n" in plaintext (and
/// `extra` in the same segment), then runs TLS as [`upper_service`]. Returns the port.
fn starttls_server(leaf: &Leaf, extra: &'static [u8]) -> u16 {
    let config = tls::server_config(leaf);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let Ok((mut tcp, _)) = listener.accept() else {
            return;
        };
        tcp.set_read_timeout(Some(tls::PEER_TIMEOUT)).unwrap();
        tcp.write_all(&[b"220 go\r\n", extra].concat()).unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        upper_service(Endings::default())(rustls::StreamOwned::new(conn, tcp));
    });
    port
}

#[test]
fn starttls_after_a_plaintext_line_and_no_plaintext_read_as_tls() {
    let pki = Pki::new("starttls");
    let clean = starttls_server(&pki.server, b"");
    let injecting = starttls_server(&pki.server, b"INJECTED\r\n");
    let out = run(
        "tls_starttls",
        &pki,
        &[&clean.to_string(), &injecting.to_string()],
        CLIENT_GRANTS,
    );
    assert_matches("tls_starttls", &out);
}

/// A client that sends "STARTTLS\n" and its ClientHello in one segment, then runs TLS.
fn starttls_client(ca: &Ca, port: u16) -> tls::ClientStream {
    let mut s = tls::tls_client(ca, port, "localhost");
    let mut first = b"STARTTLS\n".to_vec();
    s.conn.write_tls(&mut first).unwrap();
    s.sock.write_all(&first).unwrap();
    s
}

#[test]
fn a_guest_server_serves_native_clients() {
    let pki = Pki::new("server");
    let port = free_tcp_port();
    let flags = pki.flags(&[
        "--allow",
        &format!("bind,listen=127.0.0.1:{port}"),
        "--allow",
        "accept=127.0.0.1:*",
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut guest = script_command(&tests_dir(), "tls_server.py", &[&port.to_string()], &flags)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("usocket runs");
    let mut stdout = guest.stdout.take().unwrap();
    let mut ready = [0u8; 6];
    stdout.read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"READY\n");

    for case in 1..=4 {
        let mut s = if case == 4 {
            starttls_client(&pki.ca, port)
        } else {
            tls::tls_client(&pki.ca, port, "localhost")
        };
        tls::send(&mut s, format!("line {case}\n").as_bytes());
        assert_eq!(
            tls::read_line(&mut s).unwrap(),
            format!("{case} line {case}\n")
        );
        assert_eq!(tls::ending(&mut s), "close_notify", "case {case}");
    }
    // 5: the guest cannot use its certificate: no handshake.
    let mut s = tls::tls_client(&pki.ca, port, "localhost");
    let mut buf = [0u8; 1];
    assert!(s.write_all(b"x\n").and_then(|_| s.read(&mut buf)).is_err());

    let out = finish(guest, &["tls_server.py"]);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let out = Output {
        stdout: format!("READY\n{rest}").into_bytes(),
        ..out
    };
    assert_matches("tls_server", &out);
}

#[test]
fn non_blocking_tls_with_poll_and_handshake_timeouts() {
    let pki = Pki::new("nonblocking");
    let echo = tls::tls_server(&pki.server, 2, upper_service(Endings::default()));
    let silent = tls::silent_server(4);
    let out = run(
        "tls_nonblocking",
        &pki,
        &[&echo.to_string(), &silent.to_string()],
        CLIENT_GRANTS,
    );
    assert_matches("tls_nonblocking", &out);
}

#[test]
fn wrong_arguments_raise_oserror_and_never_trap() {
    let pki = Pki::new("conversions");
    let echo = tls::tls_server(&pki.server, 2, upper_service(Endings::default()));
    let out = run("tls_conversions", &pki, &[&echo.to_string()], CLIENT_GRANTS);
    assert_matches("tls_conversions", &out);
}

#[test]
fn asyncio_streams_over_tls() {
    let pki = Pki::new("asyncio");
    let out = run("tls_asyncio", &pki, &[], CONFORMANCE_GRANTS);
    assert_matches("tls_asyncio", &out);
}

/// A guest asyncio TLS server whose client sends its ClientHello and stalls: the handler's
/// drain waits without spinning; an open_connection to a silent server waits too.
#[test]
fn asyncio_waits_without_spinning_while_a_handshake_stalls() {
    let pki = Pki::new("asyncio_stall");
    let port = free_tcp_port();
    let silent = tls::silent_server(1);
    let flags = pki.flags(&["--allow", "bind,listen,accept,connect=127.0.0.1:*"]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut guest = script_command(
        &tests_dir(),
        "tls_asyncio_stall.py",
        &[&port.to_string(), &silent.to_string()],
        &flags,
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("usocket runs");
    let mut stdout = guest.stdout.take().unwrap();
    let mut ready = [0u8; 6];
    stdout.read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"READY\n");

    // A ClientHello, then nothing: the guest's handshake waits for the client's next flight.
    let mut hello = tls::tls_client(&pki.ca, port, "localhost");
    let mut first = Vec::new();
    hello.conn.write_tls(&mut first).unwrap();
    hello.sock.write_all(&first).unwrap();

    let out = finish(guest, &["tls_asyncio_stall.py"]);
    drop(hello);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let out = Output {
        stdout: format!("READY\n{rest}").into_bytes(),
        ..out
    };
    assert_matches("tls_asyncio_stall", &out);
}

/// A native HTTPS/1.0 server for one request: answers `body`.
fn https_server(leaf: &Leaf, body: &'static str) -> u16 {
    tls::tls_server(leaf, 1, move |mut s: ServerStream| {
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            match tls::read_line(&mut s) {
                Ok(line) if !line.is_empty() => request.extend_from_slice(line.as_bytes()),
                _ => return,
            }
        }
        let response = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tls::send(&mut s, response.as_bytes());
        s.conn.send_close_notify();
        let _ = s.flush();
    })
}

#[test]
fn https_get_example_fetches_a_verified_page() {
    let pki = Pki::new("https_get");
    let examples = repo().join("examples").join("python");
    let port = https_server(&pki.server, "hello over tls\n");
    let grant = format!("connect=127.0.0.1:{port}");
    let flags = pki.flags(&["--allow", &grant, "--allow", "resolve=localhost"]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let port = port.to_string();
    let out = run_script(
        &examples,
        "https_get.py",
        &["--cafile", "/pki/ca.pem", "localhost", &port, "/"],
        &flags,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("HTTP/1.0 200 OK\r\n"), "{stdout}");
    assert!(stdout.ends_with("\r\n\r\nhello over tls\n"), "{stdout}");

    // Without the CA: the host's roots do not know it.
    let port = https_server(&pki.server, "never sent\n").to_string();
    let grant = format!("connect=127.0.0.1:{port}");
    let out = run_script(
        &examples,
        "https_get.py",
        &["localhost", &port],
        &["--allow", &grant, "--allow", "resolve=localhost"],
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("https_get: [Errno 126] ENOKEY"),
        "{}",
        text(&out.stderr)
    );
}

/// `IPPROTO_SEC` against a server the host trusts: only where `usocket run` has `--tls-ca`
/// (the embedder's trust; a guest cannot give CAs to an `IPPROTO_SEC` connect). Without it,
/// tls_verify.py shows the verifying handshake failing with ENOKEY.
#[test]
fn ipproto_sec_connects_to_a_server_the_host_trusts() {
    let help = common::usocket(&["run", "--help"]);
    if !text(&help.stdout).contains("--tls-ca") {
        eprintln!("skipped: this usocket has no --tls-ca");
        return;
    }
    let pki = Pki::new("ipproto_sec");
    let port = tls::tls_server(&pki.server, 1, upper_service(Endings::default()));
    let code = "\
import sys, usocket as socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SEC)
s.settimeout(10)
s.connect(('127.0.0.1', int(sys.argv[1])))
s.write(b'sec\\n')
print(s.readline())
s.close()
";
    let dir = pki.dir.join("code");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.py"), code).unwrap();
    let ca = pki.dir.join("ca.pem");
    let out = run_script(
        &dir,
        "main.py",
        &[&port.to_string()],
        &[
            "--allow",
            "connect=127.0.0.1:*",
            "--tls-ca",
            ca.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "b'SEC\\n'\n");
}
