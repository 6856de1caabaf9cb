//! The server side of TLS for `tests/tests/tls.rs`: listens on 127.0.0.1:PORT, accepts one
//! connection, wraps it with `server_side=True` and echoes lines until end of stream.
//!
//! `tls_server PORT MODE [CERT KEY]`. MODE: `wrap` (wrap at once), `starttls` (read one
//! plaintext line with `readline` first, then wrap: the client may have sent its ClientHello
//! right after the line), `starttls-lazy` (as `starttls`, then non-blocking: wrap with
//! `do_handshake=False` and wait for the first line with `poll`, as MicroPython advises for
//! non-blocking sockets), `ctx` (wrap through `SSLContext(PROTOCOL_TLS_SERVER)` and
//! `load_cert_chain`). Without CERT and KEY the host's configured identity is presented.
//!
//! Prints `accepted`, the line read first (`starttls`), `wrapped` or `errno N`, `readable`
//! or `stuck` (`starttls-lazy`: whether poll said POLLIN within 3 s), `cert none` or `cert
//! some` (the client's certificate), then `echoed N` (lines) and `end` or `errno N`.

use usocket::select::{self, POLLIN};
use usocket::ssl::{self, SSLContext, WrapOptions};
use usocket::{AF_INET, SO_REUSEADDR, SOCK_STREAM, SOL_SOCKET, Socket, socket};
use usocket_test_programs::bytes_repr;

fn wrap(conn: &Socket, mode: &str, identity: Option<(&str, &str)>) -> usocket::Result<Socket> {
    if mode == "ctx" {
        let mut ctx = SSLContext::new(ssl::PROTOCOL_TLS_SERVER)?;
        if let Some((cert, key)) = identity {
            ctx.load_cert_chain(cert, key)?;
        }
        return ctx.wrap_socket(conn, true, None);
    }
    let opts = WrapOptions {
        server_side: true,
        do_handshake: mode != "starttls-lazy",
        cert: identity.map(|(c, _)| c.as_bytes().to_vec()),
        key: identity.map(|(_, k)| k.as_bytes().to_vec()),
        ..WrapOptions::default()
    };
    ssl::wrap_socket(conn, opts)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: i64 = args[0].parse().expect("port");
    let mode = args[1].as_str();
    let identity = args
        .get(2)
        .zip(args.get(3))
        .map(|(c, k)| (c.as_str(), k.as_str()));

    let listener = socket(AF_INET, SOCK_STREAM, 0).expect("socket");
    listener
        .setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        .expect("SO_REUSEADDR");
    listener.bind(("127.0.0.1", port)).expect("bind");
    listener.listen(None).expect("listen");
    listener.settimeout(Some(10.0)).expect("settimeout");
    let (conn, _) = listener.accept().expect("accept");
    conn.settimeout(Some(10.0)).expect("settimeout");
    println!("accepted");
    if mode.starts_with("starttls") {
        match conn.readline() {
            Ok(line) => println!("{}", bytes_repr(&line.unwrap_or_default())),
            Err(e) => println!("errno {}", e.errno()),
        }
    }
    if mode == "starttls-lazy" {
        conn.setblocking(false).expect("setblocking");
    }
    let tls = match wrap(&conn, mode, identity) {
        Ok(tls) => tls,
        Err(e) => {
            println!("errno {}", e.errno());
            return;
        }
    };
    println!("wrapped");
    if mode == "starttls-lazy" {
        // The ClientHello came before the wrap: poll must still see that a read can make
        // progress (then the rest runs blocking, timed).
        let mut p = select::poll();
        p.register(&tls, POLLIN);
        let readable = !p.poll(3000).expect("poll").is_empty();
        tls.settimeout(Some(10.0)).expect("settimeout");
        println!("{}", if readable { "readable" } else { "stuck" });
        if !readable {
            return;
        }
    }
    match tls.getpeercert(true) {
        Ok(Some(_)) => println!("cert some"),
        Ok(None) => println!("cert none"),
        Err(e) => println!("errno {}", e.errno()),
    }
    let mut echoed = 0;
    let end = loop {
        match tls.readline() {
            Ok(Some(line)) if line.is_empty() => break "end".to_string(),
            Ok(Some(line)) => {
                if let Err(e) = tls.write(&line) {
                    break format!("errno {}", e.errno());
                }
                echoed += 1;
            }
            Ok(None) => break "none".to_string(),
            Err(e) => break format!("errno {}", e.errno()),
        }
    };
    println!("echoed {echoed}");
    println!("{end}");
    tls.close();
}
