//! A non-blocking TLS client for `tests/tests/tls.rs`: connect, wrap and talk with
//! `setblocking(False)` and `select.poll`, as a MicroPython event loop does.
//!
//! `tls_nonblocking HOST PORT CA MODE`: MODE `handshake` wraps with `do_handshake=True`
//! (which returns at once on a non-blocking socket), `lazy` with `do_handshake=False`, `sec`
//! makes an `IPPROTO_SEC` socket instead (its connect starts TLS, verified with the host's
//! roots; CA is then unused); either way the handshake finishes inside the writes and reads
//! that follow. Writes `hello\n`,
//! reads the echoed line, and prints `connected`, `wrapped`, `wrote N`, `line REPR`, `cert
//! some`, `waits N` (how many times a call said "not yet") and `writable-but-not N` (how many
//! writes wrote nothing right after poll said POLLOUT); any failure prints `errno N`
//! or `stuck WHAT` and ends the program. Every wait is bounded (200 polls of 50 ms).

use std::process::ExitCode;

use usocket::select::{self, POLLIN, POLLOUT};
use usocket::ssl::{self, WrapOptions};
use usocket::{AF_INET, IPPROTO_SEC, SOCK_STREAM, errno, socket};
use usocket_test_programs::bytes_repr;

const POLLS: usize = 200;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (host, port, ca, mode) = (&args[0], &args[1], &args[2], &args[3]);
    let port: i64 = port.parse().expect("port");
    let e = |e: usocket::OSError| format!("errno {}", e.errno());

    let addr = usocket::getaddrinfo_with(host, port, AF_INET, SOCK_STREAM, 0, 0)
        .map_err(e)?
        .remove(0)
        .sockaddr;
    let proto = if mode == "sec" { IPPROTO_SEC } else { 0 };
    let s = socket(AF_INET, SOCK_STREAM, proto).map_err(e)?;
    s.setblocking(false).map_err(e)?;
    match s.connect(&addr) {
        Err(err) if err.errno() == errno::EINPROGRESS => {}
        other => return Err(format!("connect gave {other:?}")),
    }
    let mut p = select::poll();
    p.register(&s, POLLOUT);
    let mut waits = 0;
    if p.poll(10_000).map_err(e)?.is_empty() {
        return Err("stuck connecting".into());
    }
    println!("connected");

    let opts = WrapOptions {
        cert_reqs: ssl::CERT_REQUIRED,
        cadata: Some(ca.as_bytes().to_vec()),
        do_handshake: mode == "handshake",
        ..WrapOptions::default()
    };
    let s = if mode == "sec" {
        s // TLS since connect
    } else {
        ssl::wrap_socket(&s, opts).map_err(e)?
    };
    println!("wrapped");

    p.modify(&s, POLLIN | POLLOUT).map_err(e)?;
    let request = b"hello\n";
    let mut written = 0;
    // Writes that found nothing writable right after poll said POLLOUT.
    let mut writable_but_not = 0;
    let mut said_pollout = false;
    for _ in 0..POLLS {
        match s.write(&request[written..]).map_err(e)? {
            Some(n) => written += n,
            None => {
                waits += 1;
                writable_but_not += usize::from(said_pollout);
            }
        }
        if written == request.len() {
            break;
        }
        let ready = p.poll(50).map_err(e)?;
        said_pollout = ready.iter().any(|(_, revents)| revents & POLLOUT != 0);
    }
    if written < request.len() {
        return Err(format!("stuck writing after {written} bytes"));
    }
    println!("wrote {written}");

    p.modify(&s, POLLIN).map_err(e)?;
    let mut line = Vec::new();
    for _ in 0..POLLS {
        match s.readline().map_err(e)? {
            Some(part) if part.is_empty() => return Err("end of stream".into()),
            Some(part) => line.extend_from_slice(&part),
            None => waits += 1,
        }
        if line.ends_with(b"\n") {
            break;
        }
        p.poll(50).map_err(e)?;
    }
    if !line.ends_with(b"\n") {
        return Err(format!("stuck reading after {}", bytes_repr(&line)));
    }
    println!("line {}", bytes_repr(&line));
    match s.getpeercert(true).map_err(e)? {
        Some(_) => println!("cert some"),
        None => println!("cert none"),
    }
    println!("waits {waits}");
    println!("writable-but-not {writable_but_not}");
    s.close();
    Ok(())
}
