//! A scriptable TLS client for `tests/tests/tls.rs`: runs the commands in its arguments in
//! order on one current socket and prints one line per command (`ok ...`, `errno N`, ...).
//!
//! Data: `data NAME TEXT` keeps TEXT (a PEM certificate or key) under NAME for the options.
//!
//! Sockets: `connect HOST PORT` (a name goes through getaddrinfo first), `connect-sec HOST
//! PORT` (the same with an `IPPROTO_SEC` socket), `timeout SECS|none`, `close`, `drop` (drops
//! the socket without `close`), `exit` (prints `exiting` and ends the program at once, with
//! the socket open).
//!
//! TLS: `wrap OPTS` (`ssl::wrap_socket`), `ctx-wrap OPTS` (`SSLContext`: a client context,
//! `load_verify_locations`, `wrap_socket`/`wrap_socket_with`), where OPTS is `-` or
//! comma-separated `reqs=N`, `hostname=NAME`, `cadata=DATA`, `cert=DATA`, `key=DATA`,
//! `handshake=0|1`, `server=1`; `cert` (`getpeercert(true)`: `cert HEX` or `cert none`),
//! `cert-text` (`getpeercert(false)`).
//!
//! Stream: `write TEXT` (`\n` in TEXT is a newline), `readline`, `read N`, `recv N`,
//! `read-all` (each prints `data REPR`, `none` or `errno N`), `big N` (writes N bytes of
//! lines ending in binary bytes, reads the server's echo of them back with `readline` and
//! `read(n)`, and prints `big ok N` if it is byte-exact), `write-n N` (writes N bytes of a
//! pattern), `nb-write N` (the same non-blocking, with `write` and `poll`; prints `wrote N`).

use std::collections::HashMap;

use usocket::ssl::{self, SSLContext, WrapOptions};
use usocket::{AF_INET, IPPROTO_SEC, SOCK_STREAM, Socket, socket};
use usocket_test_programs::bytes_repr;

fn show<T>(r: usocket::Result<T>, ok: impl FnOnce(T) -> String) {
    match r {
        Ok(v) => println!("{}", ok(v)),
        Err(e) => println!("errno {}", e.errno()),
    }
}

fn data_line(r: usocket::Result<Option<Vec<u8>>>) {
    show(r, |d| match d {
        Some(d) => format!("data {}", bytes_repr(&d)),
        None => "none".into(),
    });
}

/// Connects a new socket of protocol `proto` to HOST:PORT (a name is resolved first).
fn connect(host: &str, port: i64, proto: i32) -> usocket::Result<Socket> {
    let addr = usocket::getaddrinfo_with(host, port, AF_INET, SOCK_STREAM, 0, 0)?
        .remove(0)
        .sockaddr;
    let s = socket(AF_INET, SOCK_STREAM, proto)?;
    s.settimeout(Some(10.0))?;
    s.connect(&addr)?;
    Ok(s)
}

/// The options of `wrap`/`ctx-wrap`.
fn options(text: &str, data: &HashMap<String, Vec<u8>>) -> WrapOptions {
    let mut opts = WrapOptions::default();
    for item in text.split(',').filter(|i| !i.is_empty() && *i != "-") {
        let (k, v) = item.split_once('=').expect("key=value");
        let get = || {
            data.get(v)
                .cloned()
                .unwrap_or_else(|| v.as_bytes().to_vec())
        };
        match k {
            "reqs" => opts.cert_reqs = v.parse().expect("reqs"),
            "hostname" => opts.server_hostname = Some(v.to_string()),
            "cadata" => opts.cadata = Some(get()),
            "cert" => opts.cert = Some(get()),
            "key" => opts.key = Some(get()),
            "handshake" => opts.do_handshake = v == "1",
            "server" => opts.server_side = v == "1",
            _ => panic!("unknown option {k}"),
        }
    }
    opts
}

/// `ctx-wrap`: the same through an `SSLContext` (verify_mode only if `reqs` was given).
fn ctx_wrap(sock: &Socket, text: &str, opts: WrapOptions) -> usocket::Result<Socket> {
    let protocol = if opts.server_side {
        ssl::PROTOCOL_TLS_SERVER
    } else {
        ssl::PROTOCOL_TLS_CLIENT
    };
    let mut ctx = SSLContext::new(protocol)?;
    if text.contains("reqs=") {
        ctx.verify_mode = opts.cert_reqs;
    }
    if let Some(cadata) = &opts.cadata {
        ctx.load_verify_locations(cadata)?;
    }
    if let (Some(cert), Some(key)) = (&opts.cert, &opts.key) {
        ctx.load_cert_chain(cert, key)?;
    }
    let hostname = opts.server_hostname.as_deref();
    if opts.do_handshake {
        ctx.wrap_socket(sock, opts.server_side, hostname)
    } else {
        ctx.wrap_socket_with(sock, opts.server_side, hostname, false)
    }
}

/// `big N`: what is written: numbered lines of varying length, then binary bytes (with
/// newlines among them) up to N bytes in all. Returns it and where the lines end.
fn big_payload(n: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(n);
    let mut i = 0usize;
    while out.len() + 200 < n / 2 {
        let line = format!("line {i} {}\r\n", "x".repeat(i % 150));
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    let lines_end = out.len();
    let mut b = 0u8;
    while out.len() < n {
        out.push(b);
        b = b.wrapping_mul(31).wrapping_add(7);
    }
    (out, lines_end)
}

/// Writes the big payload and checks the echo: lines with `readline`, the rest with
/// `read(n)` in pieces of varying size.
fn big(s: &Socket, n: usize) -> Result<usize, String> {
    let (payload, lines_end) = big_payload(n);
    let errno = |e: usocket::OSError| format!("errno {}", e.errno());
    s.write(&payload).map_err(errno)?;
    let mut got = Vec::with_capacity(n);
    while got.len() < lines_end {
        match s.readline().map_err(errno)? {
            Some(line) if !line.is_empty() => got.extend_from_slice(&line),
            other => return Err(format!("readline gave {other:?} at {}", got.len())),
        }
    }
    let mut piece = 1;
    while got.len() < n {
        let want = piece.min(n - got.len());
        match s.read(want).map_err(errno)? {
            Some(d) if d.len() == want => got.extend_from_slice(&d),
            other => {
                return Err(format!(
                    "read({want}) gave {:?} bytes",
                    other.map(|d| d.len())
                ));
            }
        }
        piece = piece * 3 + 1;
    }
    match got.iter().zip(&payload).position(|(a, b)| a != b) {
        Some(i) => Err(format!("mismatch at byte {i}")),
        None if got.len() == n => Ok(n),
        None => Err(format!("{} bytes, not {n}", got.len())),
    }
}

/// `nb-write N`: non-blocking, writes N bytes with `write` and `poll(POLLOUT)` until every
/// byte was taken (at most 10 000 polls of up to 1 s); returns how many were taken.
fn nb_write(s: &Socket, n: usize) -> Result<usize, String> {
    use usocket::select::{self, POLLOUT};
    let errno = |e: usocket::OSError| format!("errno {}", e.errno());
    s.setblocking(false).map_err(errno)?;
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let mut p = select::poll();
    p.register(s, POLLOUT);
    let mut written = 0;
    for _ in 0..10_000 {
        if written == n {
            break;
        }
        match s.write(&data[written..]).map_err(errno)? {
            Some(k) => written += k,
            None => {
                p.poll(1000).map_err(errno)?;
            }
        }
    }
    Ok(written)
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter().map(String::as_str);
    let mut data: HashMap<String, Vec<u8>> = HashMap::new();
    let mut sock: Option<Socket> = None;
    while let Some(cmd) = it.next() {
        let mut arg = || {
            it.next()
                .unwrap_or_else(|| panic!("{cmd}: missing argument"))
        };
        let s = || sock.as_ref().expect("no socket: connect first");
        match cmd {
            "data" => {
                let (name, text) = (arg().to_string(), arg());
                data.insert(name, text.as_bytes().to_vec());
            }
            "connect" | "connect-sec" => {
                let (host, port) = (arg(), arg().parse::<i64>().expect("port"));
                let proto = if cmd == "connect" { 0 } else { IPPROTO_SEC };
                match connect(host, port, proto) {
                    Ok(s) => {
                        sock = Some(s);
                        println!("ok");
                    }
                    Err(e) => println!("errno {}", e.errno()),
                }
            }
            "timeout" => {
                let t = arg();
                let t = (t != "none").then(|| t.parse::<f64>().expect("seconds"));
                show(s().settimeout(t), |()| "ok".into());
            }
            "wrap" => {
                let opts = options(arg(), &data);
                show(ssl::wrap_socket(s(), opts), |_| "ok".into());
            }
            "ctx-wrap" => {
                let text = arg();
                let opts = options(text, &data);
                show(ctx_wrap(s(), text, opts), |_| "ok".into());
            }
            "cert" => show(s().getpeercert(true), |c| match c {
                Some(der) => format!("cert {}", hex(&der)),
                None => "cert none".into(),
            }),
            "cert-text" => show(s().getpeercert(false), |_| "cert ?".into()),
            "write" => {
                let text = arg().replace("\\n", "\n");
                show(s().write(text.as_bytes()), |n| format!("ok {n:?}"));
            }
            "readline" => data_line(s().readline()),
            "read" => data_line(s().read(arg().parse().expect("n"))),
            "read-all" => data_line(s().read_all()),
            "recv" => show(s().recv(arg().parse().expect("n")), |d| {
                format!("data {}", bytes_repr(&d))
            }),
            "write-n" => {
                let n: usize = arg().parse().expect("n");
                let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
                show(s().write(&data), |n| format!("wrote {}", n.unwrap_or(0)));
            }
            "nb-write" => match nb_write(s(), arg().parse().expect("n")) {
                Ok(n) => println!("wrote {n}"),
                Err(e) => println!("{e}"),
            },
            "big" => match big(s(), arg().parse().expect("n")) {
                Ok(n) => println!("big ok {n}"),
                Err(e) => println!("big {e}"),
            },
            "close" => {
                s().close();
                println!("ok");
            }
            "drop" => {
                sock = None;
                println!("ok");
            }
            "exit" => {
                println!("exiting");
                use std::io::Write;
                let _ = std::io::stdout().flush();
                std::process::exit(0);
            }
            other => panic!("unknown command {other}"),
        }
    }
}
