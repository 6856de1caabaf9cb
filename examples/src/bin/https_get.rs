//! Fetches a URL over HTTPS (HTTP/1.0) and prints the reply: getaddrinfo, connect,
//! `ssl.wrap_socket` with `CERT_REQUIRED` and `server_hostname`, write, recv until the end.
//!
//! The host runs TLS and checks the server's certificate against its trusted CAs (the
//! system's, plus `--tls-ca FILE`) and the URL's host name. A refused certificate ends the
//! program with the errno (see `usocket::ssl`): ENOKEY 126 (unknown CA), EKEYEXPIRED 127,
//! EKEYREJECTED 129 (not valid for the name), EBADMSG 74, EPROTO 71; EACCES 13 means the
//! policy does not grant the host (or not over TLS: `--allow tls=HOST:PORT` grants a
//! connection only with a verified certificate).
//!
//! Run: `usocket run --allow tls=example.org:443 target/wasm32-wasip2/release/https_get.wasm https://example.org/`
//! (a test server: add `--tls-ca ca.pem`).

use std::io::Write;
use std::process::ExitCode;

use usocket::ssl::{self, WrapOptions};

const USAGE: &str = "usage: https_get https://HOST[:PORT][/PATH]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some((host, port, path)) = args.get(1).and_then(|url| parse(url)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match get(&host, port, &path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // As MicroPython prints an uncaught OSError: `OSError: [Errno 129] EKEYREJECTED`.
            eprintln!("https_get: OSError: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `https://HOST[:PORT][/PATH]` → (host, port, path); an IPv6 literal host in brackets.
fn parse(url: &str) -> Option<(String, i64, String)> {
    let rest = url.strip_prefix("https://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 443,
    };
    (!host.is_empty()).then(|| (host.to_string(), port, path.to_string()))
}

/// Sends the request and copies the reply to stdout as it comes.
fn get(host: &str, port: i64, path: &str) -> usocket::Result<()> {
    let info = usocket::getaddrinfo(host, port)?.remove(0);
    let sock = usocket::socket(info.family, usocket::SOCK_STREAM, 0)?;
    sock.settimeout(Some(30.0))?;
    sock.connect(&info.sockaddr)?;
    let sock = ssl::wrap_socket(
        sock,
        WrapOptions {
            cert_reqs: ssl::CERT_REQUIRED,
            server_hostname: Some(host.to_string()),
            ..WrapOptions::default()
        },
    )?;
    sock.write(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let mut out = std::io::stdout().lock();
    loop {
        let data = sock.recv(16 * 1024)?;
        if data.is_empty() {
            break; // the server's close_notify
        }
        out.write_all(&data).expect("stdout");
    }
    out.flush().expect("stdout");
    sock.close();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn urls() {
        let p = parse;
        assert_eq!(
            p("https://example.org"),
            Some(("example.org".into(), 443, "/".into()))
        );
        assert_eq!(
            p("https://localhost:8443/a/b?c=d"),
            Some(("localhost".into(), 8443, "/a/b?c=d".into()))
        );
        assert_eq!(
            p("https://[::1]:8443/"),
            Some(("::1".into(), 8443, "/".into()))
        );
        assert_eq!(p("https://[::1]/x"), Some(("::1".into(), 443, "/x".into())));
        assert_eq!(p("http://example.org/"), None);
        assert_eq!(p("https://:443/"), None);
        assert_eq!(p("https://host:port/"), None);
    }
}
