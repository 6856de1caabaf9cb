//! Fetches `/` over HTTP/1.0 and prints the reply: getaddrinfo, connect, sendall, read().
//!
//! Run: `usocket run --allow connect=127.0.0.1:8000 target/wasm32-wasip2/release/http_get.wasm 127.0.0.1 8000`
//! (a host name also needs `--allow resolve=NAME`).

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(host), Some(port)) = (args.get(1), args.get(2).and_then(|p| p.parse::<i64>().ok()))
    else {
        eprintln!("usage: http_get HOST PORT");
        return ExitCode::from(2);
    };
    match get(host, port) {
        Ok(body) => {
            std::io::stdout().write_all(&body).expect("stdout");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("http_get: {e}");
            ExitCode::FAILURE
        }
    }
}

fn get(host: &str, port: i64) -> usocket::Result<Vec<u8>> {
    let addr = usocket::getaddrinfo(host, port)?.remove(0).sockaddr;
    let sock = usocket::socket(usocket::AF_INET, usocket::SOCK_STREAM, 0)?;
    sock.connect(&addr)?;
    sock.sendall(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let reply = sock.read_all()?.unwrap_or_default();
    sock.close();
    Ok(reply)
}
