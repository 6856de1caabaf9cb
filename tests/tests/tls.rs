//! TLS in the host (issue 11), end to end: guests using `usocket::ssl` (`tls_client`,
//! `tls_server`, `tls_nonblocking`) against native rustls peers on 127.0.0.1, with a test CA
//! and certificates made here (usocket-test-pki).
//!
//! Covered: verification against the embedder's roots and the guest's `cadata`, each
//! certificate failure's errno (EKEYREJECTED, ENOKEY, EKEYEXPIRED), CERT_NONE, the server side
//! (the guest's own certificate, the embedder's identity), STARTTLS with the ClientHello in
//! the guest's read-ahead and plaintext left before TLS, a handshake under a timeout, a
//! non-blocking handshake driven by poll, `IPPROTO_SEC`, `getpeercert`, a 1 MiB exchange,
//! a peer ending without close_notify, and the policy: a `tls=` rule refusing plaintext,
//! verifying whatever the guest asks (against a rebinding name), and `server_hostname` grants.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use usocket_host::addr::Family;
use usocket_host::audit::{AuditEvent, AuditHook, Verdict};
use usocket_host::errno::Errno;
use usocket_host::resolver::{ResolveFuture, Resolver};
use usocket_host::{Policy, TlsConfig, Use, UsocketCtx};
use usocket_test_pki::{Ca, Leaf, client_config, server_config};
use usocket_tests::{Options, Outcome, policy, run, run_with};

/// How long any wait of these tests may take at most.
const BOUND: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// Certificates.

/// The certificates all tests share (made once per test binary).
struct Pki {
    ca: Ca,
    /// Signed by `ca`.
    localhost: Leaf,
    server_test: Leaf,
    /// For the address 127.0.0.1 (an IP address SAN).
    loopback_ip: Leaf,
    other_name: Leaf,
    expired: Leaf,
    /// Signed by a CA no test trusts.
    unknown: Leaf,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = Ca::new("usocket test CA");
        let stranger = Ca::new("usocket unknown CA");
        Pki {
            localhost: ca.leaf(&["localhost"]),
            server_test: ca.leaf(&["server.test"]),
            loopback_ip: ca.leaf(&["127.0.0.1"]),
            other_name: ca.leaf(&["other.test"]),
            expired: ca.expired_leaf(&["localhost"]),
            unknown: stranger.leaf(&["localhost"]),
            ca,
        }
    })
}

/// The embedder trusting the test CA (and no system roots).
fn trusting_ca() -> TlsConfig {
    TlsConfig::empty()
        .add_roots(pki().ca.pem.as_bytes(), "test CA")
        .unwrap()
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Native peers.

/// What a native TLS server does with each connection.
#[derive(Clone, Copy)]
enum Serve {
    /// Echoes lines until end of stream, then closes with close_notify.
    Echo,
    /// Reads this many bytes, sends them back, then waits for end of stream.
    Mirror(usize),
    /// Sends `hello\n`, then ends the TCP stream without close_notify.
    HelloThenCut,
    /// Plain TCP: sends `220 ready\n` and plaintext after it in one write, then TLS (echo).
    StartTlsInjected,
    /// Reads slowly (after a pause) until the end, checking the bytes of `nb-write`; ends
    /// as `count N` then how the stream ended.
    SlowCount,
}

/// A native TLS server on 127.0.0.1 presenting `leaf`, serving every connection as `serve`
/// says; returns its port. It lives as long as the test's runtime.
async fn tls_server(leaf: &Leaf, serve: Serve) -> u16 {
    watched_tls_server(leaf, serve).await.0
}

/// How each connection of a [`Serve::Echo`] server ended: `close_notify` or `cut`.
type Endings = Arc<Mutex<Vec<String>>>;

/// [`tls_server`], also telling how its echo connections ended.
async fn watched_tls_server(leaf: &Leaf, serve: Serve) -> (u16, Endings) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(leaf));
    let endings = Endings::default();
    let seen = endings.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                if let Serve::StartTlsInjected = serve {
                    let _ = tcp.write_all(b"220 ready\nINJECTED\n").await;
                }
                let Ok(Ok(tls)) = tokio::time::timeout(BOUND, acceptor.accept(tcp)).await else {
                    return;
                };
                let ending = tokio::time::timeout(BOUND, serve_tls(tls, serve)).await;
                let ending = match ending {
                    Ok(Ok(())) => "close_notify".to_string(),
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => "cut".into(),
                    Ok(Err(e)) => format!("error: {e}"),
                    Err(_) => "still open".into(),
                };
                seen.lock().unwrap().push(ending);
            });
        }
    });
    (port, endings)
}

/// Waits (bounded) until `endings` holds `n` entries, and returns them.
async fn endings_of(endings: &Endings, n: usize) -> Vec<String> {
    let start = Instant::now();
    while endings.lock().unwrap().len() < n && start.elapsed() < BOUND {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    endings.lock().unwrap().clone()
}

async fn serve_tls(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    serve: Serve,
) -> std::io::Result<()> {
    match serve {
        Serve::Echo | Serve::StartTlsInjected => {
            let mut reader = tokio::io::BufReader::new(tls);
            let mut line = Vec::new();
            // Ends at close_notify; a stream cut without it is UnexpectedEof.
            while reader.read_until(b'\n', &mut line).await? > 0 {
                reader.get_mut().write_all(&line).await?;
                line.clear();
            }
            reader.get_mut().shutdown().await
        }
        Serve::SlowCount => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut buf = vec![0; 16 * 1024];
            let mut count = 0usize;
            let end = loop {
                match tls.read(&mut buf).await {
                    Ok(0) => break Ok(()),
                    Ok(k) => {
                        let bad = (0..k).find(|&i| buf[i] != ((count + i) % 251) as u8);
                        if let Some(i) = bad {
                            break Err(std::io::Error::other(format!("bad byte at {}", count + i)));
                        }
                        count += k;
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    Err(e) => break Err(e),
                }
            };
            Err(std::io::Error::other(format!("count {count} {end:?}")))
        }
        Serve::Mirror(n) => {
            let mut data = vec![0; n];
            tls.read_exact(&mut data).await?;
            tls.write_all(&data).await?;
            tls.flush().await?;
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).await?;
            tls.shutdown().await
        }
        Serve::HelloThenCut => {
            tls.write_all(b"hello\n").await?;
            tls.flush().await?;
            // The TCP stream ends (FIN) with no close_notify before it.
            let (tcp, _) = tls.into_inner();
            drop(tcp);
            Ok(())
        }
    }
}

/// A TCP server that accepts and never says a word (a handshake with it never ends).
async fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    port
}

/// A loopback port that was free a moment ago (for a guest server to listen on).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects to 127.0.0.1:`port` as soon as a guest listens there (bounded retries).
fn connect_when_listening(port: u16) -> std::net::TcpStream {
    let start = Instant::now();
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(tcp) => {
                tcp.set_read_timeout(Some(BOUND)).unwrap();
                tcp.set_write_timeout(Some(BOUND)).unwrap();
                return tcp;
            }
            Err(e) if start.elapsed() > BOUND => panic!("the guest never listened: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// What [`native_client`] saw of a guest server.
struct Peer {
    /// The server's certificate (DER).
    cert: Vec<u8>,
    /// The echo of each line.
    echoes: Vec<String>,
    /// How the server ended the stream after our close_notify: `close_notify` or `cut`.
    ending: String,
}

/// A native TLS client of a guest server: sends `lines`, reads each echo, closes with
/// close_notify and reads to the end; with `starttls`, first sends `STARTTLS\n` and the
/// ClientHello in one write (so that the ClientHello is in the guest's read-ahead when it
/// wraps).
fn native_client(port: u16, lines: &[&str], starttls: bool) -> Peer {
    let mut tcp = connect_when_listening(port);
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(client_config(&pki().ca), name).unwrap();
    if starttls {
        let mut first = b"STARTTLS\n".to_vec();
        conn.write_tls(&mut first).unwrap();
        tcp.write_all(&first).unwrap();
    }
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut echoes = Vec::new();
    for line in lines {
        tls.write_all(format!("{line}\n").as_bytes()).unwrap();
        tls.flush().unwrap();
    }
    let mut reader = BufReader::new(&mut tls);
    for _ in lines {
        let mut echo = String::new();
        reader.read_line(&mut echo).unwrap();
        echoes.push(echo);
    }
    let cert = tls.conn.peer_certificates().unwrap()[0].to_vec();
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    let ending = match tls.read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => "close_notify".to_string(),
        Ok(_) => format!("close_notify after {} more bytes", rest.len()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => "cut".into(),
        Err(e) => format!("error: {e}"),
    };
    Peer {
        cert,
        echoes,
        ending,
    }
}

// ---------------------------------------------------------------------------------------
// Guests.

/// Runs `program ARGS` with `opts`, bounded, and returns its outcome.
async fn guest(program: &str, args: &[&str], opts: Options) -> Outcome {
    let opts = Options {
        time_limit: Duration::from_secs(30),
        ..opts
    };
    run(program, args, opts)
        .await
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e:?}"))
}

/// A `tls_client` script: each command line with the line it must print.
type Steps = Vec<(String, String)>;

/// `steps![("connect localhost {port}", "ok"), ...]`: the pairs, formatted in place.
macro_rules! steps {
    ($(($cmd:literal, $out:literal)),* $(,)?) => {
        vec![$((format!($cmd), format!($out))),*]
    };
}

/// The arguments of `tls_client` for `steps`, after `data NAME TEXT` for each of `data`.
fn script_args(data: &[(&str, &str)], steps: &Steps) -> Vec<String> {
    let mut args = Vec::new();
    for (name, text) in data {
        args.extend(["data".to_string(), name.to_string(), text.to_string()]);
    }
    for (cmd, _) in steps {
        args.extend(cmd.split_whitespace().map(str::to_string));
    }
    args
}

/// Checks the guest's lines against the steps, one per command.
#[track_caller]
fn check(out: &[String], steps: &Steps) {
    let want: Vec<&str> = steps.iter().map(|(_, line)| line.as_str()).collect();
    let table: Vec<String> = steps
        .iter()
        .zip(out.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|((cmd, want), got)| format!("{cmd:40} want {want:12} got {got:?}"))
        .collect();
    assert_eq!(out, want, "\n{}", table.join("\n"));
}

/// Runs the `tls_client` script under the conformance policy (loopback, every name
/// resolvable) with `tls`, and checks what it prints.
async fn client(tls: TlsConfig, data: &[(&str, &str)], steps: Steps) {
    let args = script_args(data, &steps);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let opts = Options {
        tls: Some(tls),
        ..Options::default()
    };
    check(&lines(&guest("tls_client", &args, opts).await), &steps);
}

fn lines(out: &Outcome) -> Vec<String> {
    assert_eq!(
        out.code,
        0,
        "guest failed: {}\n{}",
        out.stdout_text(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout_text().lines().map(str::to_string).collect()
}

/// Captures audit events.
#[derive(Default)]
struct Audit(Mutex<Vec<(Use, Verdict, String)>>);

impl Audit {
    fn hook(self: &Arc<Self>) -> Arc<dyn AuditHook> {
        let me = self.clone();
        Arc::new(move |e: &AuditEvent| {
            me.0.lock().unwrap().push((e.use_, e.verdict, e.reason()));
        })
    }

    fn denied(&self, use_: Use) -> Vec<String> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|(u, v, _)| *u == use_ && *v == Verdict::Deny)
            .map(|(_, _, reason)| reason.clone())
            .collect()
    }
}

/// Answers `localhost` and every name below `example.test` with 127.0.0.1 (a name that
/// rebinds to where a test's server is).
struct ToLoopback;

impl Resolver for ToLoopback {
    fn lookup(&self, name: &str, _family: Option<Family>) -> ResolveFuture {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let answer = if name == "localhost" || name.ends_with(".example.test") {
            Ok(vec![(IpAddr::from([127, 0, 0, 1]), None)])
        } else {
            Err(Errno::EAI_NONAME)
        };
        Box::pin(async move { answer })
    }
}

/// Runs the `tls_client` script under `rules` with the test resolver, `tls` and an audit
/// hook, and checks what it prints.
async fn client_with(
    rules: Arc<Policy>,
    tls: TlsConfig,
    audit: &Arc<Audit>,
    data: &[(&str, &str)],
    steps: Steps,
) {
    let ctx = UsocketCtx::new("tls_client", rules)
        .with_tls(tls)
        .with_resolver(Arc::new(ToLoopback))
        .with_audit(audit.hook());
    let args = script_args(data, &steps);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_with("tls_client", &args, ctx, Duration::from_secs(30))
        .await
        .expect("tls_client runs");
    check(&lines(&out), &steps);
}

// ---------------------------------------------------------------------------------------
// Clients: verification.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_verifies_against_the_embedders_roots_and_gets_the_certificate() {
    let pki = pki();
    let (port, endings) = watched_tls_server(&pki.localhost, Serve::Echo).await;
    let der = hex(&pki.localhost.cert_der);
    // No server_hostname: verified against the name the guest resolved, "localhost".
    let steps = steps![
        ("connect localhost {port}", "ok"),
        ("cert", "cert none"),
        ("wrap reqs=2", "ok"),
        ("cert", "cert {der}"),
        ("write hi\\n", "ok Some(3)"),
        ("readline", "data b'hi\\n'"),
        ("close", "ok"),
    ];
    client(trusting_ca(), &[], steps).await;
    // `close` sent close_notify.
    assert_eq!(endings_of(&endings, 1).await, ["close_notify"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_verifies_against_the_guests_cadata() {
    let pki = pki();
    let port = tls_server(&pki.server_test, Serve::Echo).await;
    let ca = &pki.ca.pem;
    let data = [("ca", ca.as_str())];
    // The embedder trusts nothing: only the guest's cadata can make these verify. Once by
    // `ssl.wrap_socket`, once by an `SSLContext` (CERT_REQUIRED by default).
    let steps = steps![
        ("connect 127.0.0.1 {port}", "ok"),
        ("wrap reqs=2,cadata=ca,hostname=server.test", "ok"),
        ("write one\\n", "ok Some(4)"),
        ("readline", "data b'one\\n'"),
        ("connect 127.0.0.1 {port}", "ok"),
        ("ctx-wrap cadata=ca,hostname=server.test", "ok"),
        ("write two\\n", "ok Some(4)"),
        ("readline", "data b'two\\n'"),
    ];
    client(TlsConfig::empty(), &data, steps).await;
    // Without it, the server's CA is unknown (ENOKEY), also to the host's default roots
    // (the system's).
    let without = || {
        steps![
            ("connect 127.0.0.1 {port}", "ok"),
            ("wrap reqs=2,hostname=server.test", "errno 126"),
        ]
    };
    client(TlsConfig::empty(), &[], without()).await;
    client(TlsConfig::default(), &[], without()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_name_the_address_itself_is_verified() {
    let pki = pki();
    let by_ip = tls_server(&pki.loopback_ip, Serve::Echo).await;
    let by_name = tls_server(&pki.localhost, Serve::Echo).await;
    // Connected by address, no server_hostname: verified against "127.0.0.1".
    let steps = steps![
        ("connect 127.0.0.1 {by_ip}", "ok"),
        ("wrap reqs=2", "ok"),
        ("write ip\\n", "ok Some(3)"),
        ("readline", "data b'ip\\n'"),
        ("connect 127.0.0.1 {by_name}", "ok"),
        ("wrap reqs=2", "errno 129"),
        // The address given as server_hostname is the same check.
        ("connect 127.0.0.1 {by_ip}", "ok"),
        ("wrap reqs=2,hostname=127.0.0.1", "ok"),
    ];
    client(trusting_ca(), &[], steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_certificate_failure_has_its_errno() {
    let pki = pki();
    let mismatch = tls_server(&pki.other_name, Serve::Echo).await;
    let unknown = tls_server(&pki.unknown, Serve::Echo).await;
    let expired = tls_server(&pki.expired, Serve::Echo).await;
    let steps = steps![
        ("connect localhost {mismatch}", "ok"),
        ("wrap reqs=2", "errno 129"), // EKEYREJECTED: not valid for localhost
        ("write x\\n", "errno 129"),  // a failed session stays failed
        ("connect localhost {unknown}", "ok"),
        ("wrap reqs=2", "errno 126"), // ENOKEY: an unknown issuer
        ("connect localhost {expired}", "ok"),
        ("wrap reqs=2", "errno 127"), // EKEYEXPIRED
        ("connect localhost {unknown}", "ok"),
        ("wrap reqs=1", "errno 126"), // CERT_OPTIONAL verifies as CERT_REQUIRED does
    ];
    client(trusting_ca(), &[], steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_none_accepts_an_unknown_ca_and_still_shows_its_certificate() {
    let pki = pki();
    let port = tls_server(&pki.unknown, Serve::Echo).await;
    let der = hex(&pki.unknown.cert_der);
    // `ssl.wrap_socket`'s default is CERT_NONE.
    let steps = steps![
        ("connect localhost {port}", "ok"),
        ("wrap -", "ok"),
        ("cert", "cert {der}"),
        ("write a\\nb\\n", "ok Some(4)"),
        ("readline", "data b'a\\n'"),
        ("readline", "data b'b\\n'"),
        ("close", "ok"),
    ];
    client(trusting_ca(), &[], steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_einval_and_leave_the_socket_usable() {
    let pki = pki();
    let port = tls_server(&pki.localhost, Serve::Echo).await;
    let data = [("k", pki.localhost.key_pem.as_str())];
    let steps = steps![
        ("connect localhost {port}", "ok"),
        // getpeercert(False): MicroPython's NotImplementedError.
        ("cert-text", "errno 95"),
        ("wrap reqs=7", "errno 22"),      // no such verify mode
        ("wrap cadata=junk", "errno 22"), // neither PEM nor DER
        ("wrap key=k", "errno 22"),       // a key without a certificate
        // A server side without a certificate (and none configured by the embedder).
        ("ctx-wrap server=1", "errno 22"),
        ("wrap reqs=2,hostname=localhost", "ok"),
        ("write still\\n", "ok Some(6)"),
        ("readline", "data b'still\\n'"),
        ("wrap -", "errno 22"), // already TLS
        ("close", "ok"),
        ("wrap -", "errno 9"),
    ];
    client(trusting_ca(), &data, steps).await;
}

// ---------------------------------------------------------------------------------------
// Clients: IPPROTO_SEC, payloads, the end of the stream, deadlines, non-blocking.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipproto_sec_socket_verifies_in_connect() {
    let pki = pki();
    let good = tls_server(&pki.localhost, Serve::Echo).await;
    let bad = tls_server(&pki.other_name, Serve::Echo).await;
    let der = hex(&pki.localhost.cert_der);
    let steps = steps![
        ("connect-sec localhost {good}", "ok"),
        ("cert", "cert {der}"),
        ("write sec\\n", "ok Some(4)"),
        ("readline", "data b'sec\\n'"),
        ("wrap -", "errno 22"), // already TLS
        ("close", "ok"),
        ("connect-sec localhost {bad}", "errno 129"),
    ];
    client(trusting_ca(), &[], steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_goes_both_ways_byte_exact() {
    const N: usize = 1 << 20;
    let pki = pki();
    let port = tls_server(&pki.localhost, Serve::Mirror(N)).await;
    let steps = steps![
        ("connect localhost {port}", "ok"),
        ("wrap reqs=2", "ok"),
        ("big {N}", "big ok {N}"),
        ("close", "ok"),
    ];
    client(trusting_ca(), &[], steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_ending_without_close_notify_is_econnreset_once_then_eof() {
    let pki = pki();
    let port = tls_server(&pki.localhost, Serve::HelloThenCut).await;
    let steps = steps![
        ("connect localhost {port}", "ok"),
        ("wrap reqs=2", "ok"),
        ("readline", "data b'hello\\n'"),
        ("readline", "errno 104"),
        ("readline", "data b''"),
        ("recv 10", "data b''"),
        // read() to the end: the data, then the truncation, then the end.
        ("connect localhost {port}", "ok"),
        ("wrap reqs=2", "ok"),
        ("read-all", "data b'hello\\n'"),
        ("read-all", "errno 104"),
        ("read-all", "data b''"),
    ];
    client(trusting_ca(), &[], steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_notify_unless_the_guest_just_ends() {
    let pki = pki();
    for (end, ending) in [
        ("close", "close_notify"),
        ("drop", "close_notify"),
        ("exit", "cut"),
    ] {
        let (port, endings) = watched_tls_server(&pki.localhost, Serve::Echo).await;
        let mut steps = steps![
            ("connect localhost {port}", "ok"),
            ("wrap reqs=2", "ok"),
            ("write a\\n", "ok Some(2)"),
            ("readline", "data b'a\\n'"),
        ];
        let said = if end == "exit" { "exiting" } else { "ok" };
        steps.push((end.to_string(), said.to_string()));
        client(trusting_ca(), &[], steps).await;
        assert_eq!(endings_of(&endings, 1).await, [ending], "{end}");
    }
}

/// Writes `N` bytes with `write` (`write-n`: blocking, `nb-write`: non-blocking with poll)
/// and closes, against a server that reads slowly: it must get every byte, then
/// close_notify.
async fn write_then_close(write: &str) {
    const N: usize = 4 << 20;
    let pki = pki();
    let (port, endings) = watched_tls_server(&pki.localhost, Serve::SlowCount).await;
    let mut steps = steps![("connect localhost {port}", "ok"), ("wrap reqs=2", "ok")];
    steps.push((format!("{write} {N}"), format!("wrote {N}")));
    steps.push(("close".into(), "ok".into()));
    client(trusting_ca(), &[], steps).await;
    assert_eq!(
        endings_of(&endings, 1).await,
        [format!("error: count {N} Ok(())")],
        "{write}"
    );
}

/// A client that writes and closes without reading has the server's TLS 1.3 session
/// tickets (sent after the handshake) unread in its kernel socket: its close must not turn
/// into a reset that throws away what is still in flight (they are no data of the guest's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_only_writes_then_closes_loses_nothing() {
    write_then_close("write-n").await;
}

/// Non-blocking writes that returned a count were written: the records the host still held
/// when the guest closed must go out, and close_notify after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonblocking_writes_then_close_lose_nothing() {
    write_then_close("nb-write").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_under_a_timeout_gives_up_with_etimedout() {
    let port = silent_server().await;
    let start = Instant::now();
    let steps = steps![
        ("connect localhost {port}", "ok"),
        ("timeout 0.5", "ok"),
        ("wrap reqs=2", "errno 110"),
        ("readline", "errno 110"), // the handshake goes on in the read, and times out
    ];
    client(trusting_ca(), &[], steps).await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonblocking_handshake_finishes_in_later_calls_under_poll() {
    let pki = pki();
    let port = tls_server(&pki.localhost, Serve::Echo).await.to_string();
    let ca = &pki.ca.pem;
    for mode in ["handshake", "lazy", "sec"] {
        // `sec` verifies with the host's roots.
        let opts = Options {
            tls: Some(trusting_ca()),
            ..Options::default()
        };
        let out = guest("tls_nonblocking", &["localhost", &port, ca, mode], opts).await;
        let out = lines(&out);
        println!("{mode}: {out:?}");
        assert_eq!(
            out[..5],
            [
                "connected",
                "wrapped",
                "wrote 6",
                "line b'hello\\n'",
                "cert some"
            ],
            "{mode}: {out:?}"
        );
        assert!(out[5].starts_with("waits "), "{mode}: {out:?}");
        // POLLOUT while the handshake waits for the peer would make this loop spin (it
        // counted 20-30 writes that moved nothing per handshake before poll waited to read).
        let idle: u32 = out[6]
            .strip_prefix("writable-but-not ")
            .and_then(|n| n.parse().ok())
            .expect("writable-but-not N");
        assert!(idle <= 3, "{mode}: {out:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Servers.

/// Runs the guest server `tls_server PORT MODE ...` against [`native_client`]; returns the
/// guest's lines and what the client saw.
async fn guest_server(
    mode: &str,
    identity: Option<&Leaf>,
    tls: TlsConfig,
    starttls: bool,
) -> (Vec<String>, Peer) {
    let port = free_port();
    let p = port.to_string();
    let mut args = vec![p, mode.to_string()];
    if let Some(leaf) = identity {
        args.push(leaf.cert_pem.clone());
        args.push(leaf.key_pem.clone());
    }
    let opts = Options {
        policy: policy(&["bind,listen,accept=127.0.0.1:*"], &[]),
        tls: Some(tls),
        ..Options::default()
    };
    let server = tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        guest("tls_server", &args, opts).await
    });
    let got = tokio::task::spawn_blocking(move || {
        native_client(port, &["first", "second line", "third"], starttls)
    })
    .await
    .expect("the native client");
    let out = tokio::time::timeout(BOUND, server)
        .await
        .expect("the guest server ends")
        .unwrap();
    (lines(&out), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_server_presents_its_own_certificate() {
    let pki = pki();
    for mode in ["wrap", "ctx"] {
        let (out, peer) = guest_server(mode, Some(&pki.localhost), TlsConfig::empty(), false).await;
        assert_eq!(
            out,
            ["accepted", "wrapped", "cert none", "echoed 3", "end"],
            "{mode}"
        );
        assert_eq!(peer.cert, pki.localhost.cert_der.to_vec(), "{mode}");
        assert_eq!(
            peer.echoes,
            ["first\n", "second line\n", "third\n"],
            "{mode}"
        );
        // The guest's close sent close_notify.
        assert_eq!(peer.ending, "close_notify", "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_server_presents_the_embedders_identity() {
    let pki = pki();
    let leaf = &pki.localhost;
    let identity = TlsConfig::empty()
        .with_server_identity(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes(), "test")
        .unwrap();
    let (out, peer) = guest_server("wrap", None, identity, false).await;
    assert_eq!(out, ["accepted", "wrapped", "cert none", "echoed 3", "end"]);
    assert_eq!(peer.cert, leaf.cert_der.to_vec());
    assert_eq!(peer.echoes, ["first\n", "second line\n", "third\n"]);
    assert_eq!(peer.ending, "close_notify");
}

/// STARTTLS: the client's ClientHello arrives with its `STARTTLS` line, so the guest's
/// `readline` holds it as read-ahead when it wraps; it must reach the handshake, also when
/// a non-blocking guest defers the handshake and waits with `poll` (which must then say
/// POLLIN: the kernel has nothing more to say).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_the_clienthello_in_the_read_ahead() {
    let pki = pki();
    for mode in ["starttls", "starttls-lazy"] {
        let (out, peer) = guest_server(mode, Some(&pki.localhost), TlsConfig::empty(), true).await;
        let mut want = vec!["accepted", "b'STARTTLS\\n'", "wrapped"];
        if mode == "starttls-lazy" {
            want.push("readable");
        }
        want.extend(["cert none", "echoed 3", "end"]);
        assert_eq!(out, want, "{mode}");
        assert_eq!(peer.cert, pki.localhost.cert_der.to_vec(), "{mode}");
        assert_eq!(
            peer.echoes,
            ["first\n", "second line\n", "third\n"],
            "{mode}"
        );
        assert_eq!(peer.ending, "close_notify", "{mode}");
    }
}

/// Plaintext the peer sent before TLS and the guest did not read is taken as TLS records
/// (and fails the handshake): it is never handed out as if it came through TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_left_before_tls_is_not_passed_off_as_protected() {
    let pki = pki();
    let port = tls_server(&pki.localhost, Serve::StartTlsInjected).await;
    // The server sent `220 ready\nINJECTED\n` before its TLS: the second line is in the
    // guest's read-ahead when it wraps.
    let steps = steps![
        ("connect localhost {port}", "ok"),
        ("readline", "data b'220 ready\\n'"),
        ("wrap reqs=2", "errno 71"),
        ("readline", "errno 71"),
    ];
    client(trusting_ca(), &[], steps).await;
}

// ---------------------------------------------------------------------------------------
// Policy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_rule_refuses_plaintext_and_allows_verified_tls() {
    let pki = pki();
    let port = tls_server(&pki.localhost, Serve::Echo).await;
    let rules = policy(&[&format!("tls=localhost:{port}")], &[]);
    let audit = Arc::new(Audit::default());
    let ca = &pki.ca.pem;
    let data = [("ca", ca.as_str())];
    let steps = steps![
        ("connect localhost {port}", "ok"),
        ("write plain\\n", "errno 13"),
        ("readline", "errno 13"),
        ("recv 5", "errno 13"),
        // The guest's own CAs do not count here: only the host's roots.
        ("wrap reqs=2,cadata=ca", "errno 13"),
        // CERT_NONE asked, verified anyway (the certificate is valid for localhost).
        ("wrap reqs=0", "ok"),
        ("write tls\\n", "ok Some(4)"),
        ("readline", "data b'tls\\n'"),
    ];
    client_with(rules, trusting_ca(), &audit, &data, steps).await;
    let failed = audit.denied(Use::Tls);
    assert_eq!(failed.len(), 1, "the cadata refused: {failed:?}");
    assert!(failed[0].contains("cadata"), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_rule_verifies_the_granted_name_even_under_cert_none() {
    let pki = pki();
    // The granted name rebinds to 127.0.0.1, where the server's certificate (from a trusted
    // CA) is for another name.
    let port = tls_server(&pki.other_name, Serve::Echo).await;
    let rules = policy(&[&format!("tls=www.example.test:{port}")], &[]);
    let audit = Arc::new(Audit::default());
    let steps = steps![
        ("connect www.example.test {port}", "ok"),
        ("wrap reqs=0", "errno 129"),
        ("write x\\n", "errno 129"),
        // Naming the certificate's name instead is not granted.
        ("connect www.example.test {port}", "ok"),
        ("wrap reqs=0,hostname=other.test", "errno 13"),
    ];
    client_with(rules, trusting_ca(), &audit, &[], steps).await;
    let denied = audit.denied(Use::Tls);
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(
        denied[0].contains("certificate") && denied[0].contains("EKEYREJECTED"),
        "{denied:?}"
    );
    assert!(denied[1].contains("other.test"), "{denied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_hostname_that_is_not_granted_is_eacces() {
    let pki = pki();
    let port = tls_server(&pki.server_test, Serve::Echo).await;
    let ca = &pki.ca.pem;
    let data = [("ca", ca.as_str())];
    let wrap = |result: &str| {
        let mut steps = steps![("connect 127.0.0.1 {port}", "ok")];
        let cmd = "wrap reqs=2,cadata=ca,hostname=server.test";
        steps.push((cmd.to_string(), result.to_string()));
        steps
    };
    let audit = Arc::new(Audit::default());
    // Connect granted, the name not.
    let rules = policy(&[&format!("connect=127.0.0.1:{port}")], &[]);
    client_with(rules, TlsConfig::empty(), &audit, &data, wrap("errno 13")).await;
    let denied = audit.denied(Use::Tls);
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(denied[0].contains("server.test"), "{denied:?}");
    // Granting its lookup grants it as server_hostname.
    let rules = policy(
        &[&format!("connect=127.0.0.1:{port}"), "resolve=server.test"],
        &[],
    );
    client_with(rules, TlsConfig::empty(), &audit, &data, wrap("ok")).await;
}
