//! TLS for the CLI's tests: native rustls peers on 127.0.0.1 (blocking std sockets on
//! threads, each read bounded by a timeout so that a test that goes wrong cannot hang), with
//! a CA made at test time and the certificates it signs (`usocket-test-pki`).
//!
//! Used as `#[path = "common/tls.rs"] mod tls;` by the test files that need it, so the other
//! test binaries do not build it.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::pki_types::ServerName;
pub use usocket_test_pki::{Ca, Leaf, client_config, server_config};

/// How long a native peer waits for the guest's next bytes.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(15);

/// A server side TLS stream over a blocking TCP stream.
pub type ServerStream = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;
/// A client side TLS stream over a blocking TCP stream.
pub type ClientStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A native TLS server on 127.0.0.1 presenting `leaf`: accepts up to `connections`
/// connections and runs `serve` on each on its own thread (a failed handshake shows as an
/// error of its first read or write). Returns the port.
pub fn tls_server(
    leaf: &Leaf,
    connections: usize,
    serve: impl Fn(ServerStream) + Send + Sync + 'static,
) -> u16 {
    let config = server_config(leaf);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let serve = Arc::new(serve);
    thread::spawn(move || {
        for _ in 0..connections {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            tcp.set_read_timeout(Some(PEER_TIMEOUT)).unwrap();
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let serve = serve.clone();
            thread::spawn(move || serve(rustls::StreamOwned::new(conn, tcp)));
        }
    });
    port
}

/// A TCP server on 127.0.0.1 that accepts up to `connections` connections and never sends
/// anything (a TLS handshake with it waits forever). Returns the port.
pub fn silent_server(connections: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..connections {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            tcp.set_read_timeout(Some(PEER_TIMEOUT)).unwrap();
            held.push(tcp);
        }
        // Until the guest gives up (or the timeout passes): never a byte.
        for mut tcp in held {
            let mut buf = [0u8; 4096];
            while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    port
}

/// A TLS client of a guest server on 127.0.0.1:`port`, verifying `name` with `ca`.
pub fn tls_client(ca: &Ca, port: u16, name: &str) -> ClientStream {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(PEER_TIMEOUT)).unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(client_config(ca), name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads one line (up to and with `\n`) from a TLS stream, byte by byte; what was read if
/// the stream ends or fails first.
pub fn read_line(s: &mut impl Read) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if s.read(&mut byte)? == 0 {
            break;
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// How a TLS stream ended: "close_notify" (a clean end), "cut" (no close_notify), or the
/// error, after reading everything before it.
pub fn ending(s: &mut impl Read) -> String {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => "close_notify".into(),
        Ok(_) => format!("close_notify after {} more bytes", rest.len()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => "cut".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// Writes all of `data` and flushes it.
pub fn send(s: &mut impl Write, data: &[u8]) {
    s.write_all(data).unwrap();
    s.flush().unwrap();
}
