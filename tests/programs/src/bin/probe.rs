//! A scriptable guest for host-level tests: runs the commands in its arguments in order and
//! prints one line per command (`ok ...` or `errno N`).
//!
//! Commands: `connect HOST PORT`, `bind HOST PORT`, `listen HOST PORT`, `resolve NAME`,
//! `sendto HOST PORT`, `std-connect HOST PORT` (Rust std, i.e. wasi:sockets), `sockets N` (open up to N, print how many opened), `hold-accept PORT`
//! (listen, then block in accept), `hold-recv PORT` (connect, then block in recv),
//! `huge PORT SIZE` (TCP recv/read/readline, then UDP recvfrom/read/readline, with size SIZE
//! or `max` for the largest), `read-close PORT N` (read N bytes, close with the rest unread), `lines PORT` (readline mixed with poll and recv),
//! `readline-close PORT` (readline, close with read-ahead unread), `trap PORT` (open a listener and sockets, then trap), `spin` (loop forever), `spin-wait`
//! (compute, waiting 1 ms in a socket call every 3 ms, forever),
//! `echo PORT COUNT` (COUNT 64-byte round trips to an echo server).
//!
//! For reset-on-close and receive accounting: `readline-then PORT ACTION`, `read-then PORT N
//! ACTION`, `lines-then PORT N ACTION` (readline, read(N) or N readlines, then ACTION:
//! `trap`, `exit`, `spin` or `close`), `readline-recv PORT COUNT` (readline, then COUNT
//! `recv(1000)`s), `readline-read PORT N` (readline, read(N), close), `poll-accept PORT MS`
//! (a non-blocking listener: after MS ms, poll(300) and accept, then poll(5000) and accept).
//!
//! For the escape, rebinding and quota tests: `connect6 HOST PORT` and `sendto6 HOST PORT`
//! (as `connect`/`sendto`, on AF_INET6 sockets), `rconnect NAME PORT` (getaddrinfo, then
//! connect to its first answer), `sleep MS`, `exit CODE`, `resolve-sleep-connect NAME PORT MS`
//! (getaddrinfo, sleep, then connect to the literal address it returned), `send-seq PORT SIZE
//! COUNT`, `write-seq PORT SIZE COUNT` (connect to 127.0.0.1:PORT, then COUNT `send`s or
//! `write`s of SIZE bytes, one line each), `sendto-seq PORT SIZE COUNT` (COUNT datagrams of
//! SIZE bytes to 127.0.0.1:PORT), `recv-seq PORT SIZE COUNT`, `read-seq PORT SIZE COUNT`,
//! `readline-seq PORT LIMIT COUNT` (connect, then COUNT `recv(SIZE)`s, `read(SIZE)`s or
//! `readline(LIMIT)`s, one line each), `blast PORT BYTES`
//! (connect, send BYTES with `sendall`, close; prints the milliseconds it took),
//! `pattern PORT SIZE write|send` (connect, send SIZE bytes of [`pattern`] with one `write`,
//! or `send`s until all are out, close).

use std::time::{Duration, Instant};

use usocket::{AF_INET, AF_INET6, SOCK_DGRAM, SOCK_STREAM, Socket, socket};

fn show<T>(r: usocket::Result<T>, ok: impl FnOnce(T) -> String) {
    match r {
        Ok(v) => println!("{}", ok(v)),
        Err(e) => println!("errno {}", e.errno()),
    }
}

/// Ends the guest as `action` says, with `s` still open: `trap`, `exit`, `spin`, `close`.
fn end_with(action: &str, s: &Socket) {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    match action {
        "trap" => std::process::abort(),
        "exit" => std::process::exit(0),
        "spin" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "close" => s.close(),
        other => panic!("unknown action {other}"),
    }
}

fn tcp() -> Socket {
    socket(AF_INET, SOCK_STREAM, 0).expect("socket")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter().map(String::as_str);
    let mut keep = Vec::new();
    while let Some(cmd) = it.next() {
        let mut arg = || {
            it.next()
                .unwrap_or_else(|| panic!("{cmd}: missing argument"))
                .to_string()
        };
        let port = |s: String| s.parse::<i64>().expect("port");
        match cmd {
            "connect" => {
                let (host, p) = (arg(), port(arg()));
                show(tcp().connect((host.as_str(), p)), |()| "ok".into());
            }
            "bind" => {
                let (host, p) = (arg(), port(arg()));
                let s = tcp();
                show(s.bind((host.as_str(), p)), |()| "ok".into());
                keep.push(s);
            }
            "listen" => {
                let (host, p) = (arg(), port(arg()));
                let s = tcp();
                show(
                    s.bind((host.as_str(), p)).and_then(|()| s.listen(None)),
                    |()| "ok".into(),
                );
                keep.push(s);
            }
            "resolve" => {
                let name = arg();
                show(usocket::getaddrinfo(&name, 80), |list| {
                    format!("ok {}", list[0].sockaddr.0)
                });
            }
            "std-connect" => {
                // Through wasi:sockets (Rust std), not usocket: must stay denied.
                let (host, p) = (arg(), port(arg()));
                match std::net::TcpStream::connect((host.as_str(), p as u16)) {
                    Ok(_) => println!("ok"),
                    Err(e) => println!("denied {:?}", e.kind()),
                }
            }
            "sendto" => {
                let (host, p) = (arg(), port(arg()));
                let s = socket(AF_INET, SOCK_DGRAM, 0).expect("socket");
                show(s.sendto(b"probe", (host.as_str(), p)), |n| {
                    format!("ok {n}")
                });
            }
            "sockets" => {
                let n: usize = arg().parse().expect("count");
                let mut opened = Vec::new();
                let mut last = String::from("ok");
                for _ in 0..n {
                    match socket(AF_INET, SOCK_STREAM, 0) {
                        Ok(s) => opened.push(s),
                        Err(e) => {
                            last = format!("errno {}", e.errno());
                            break;
                        }
                    }
                }
                println!("opened {} {last}", opened.len());
                drop(opened);
                // Dropped sockets give their slots back.
                show(socket(AF_INET, SOCK_STREAM, 0), |_| "ok again".into());
            }
            "hold-accept" => {
                let p = port(arg());
                let s = tcp();
                s.bind(("127.0.0.1", p)).expect("bind");
                s.listen(None).expect("listen");
                let _ = s.accept();
            }
            "hold-recv" => {
                let p = port(arg());
                let s = tcp();
                s.connect(("127.0.0.1", p)).expect("connect");
                let _ = s.recv(100);
            }
            "huge" => {
                // Sizes a guest may pass that the host must not take literally. SIZE `max` is
                // usize::MAX (u32::MAX on wasm32); a small SIZE makes the same calls, which
                // is how the memory test warms up without asking for much.
                let p = port(arg());
                let size = match arg().as_str() {
                    "max" => usize::MAX,
                    n => n.parse().expect("size"),
                };
                let s = tcp();
                s.connect(("127.0.0.1", p)).expect("connect");
                show(s.recv(size), |d| format!("ok recv {}", d.len()));
                s.settimeout(Some(0.2)).expect("settimeout");
                show(s.read(size), |d| {
                    format!("ok read {:?}", d.map(|d| d.len()))
                });
                show(s.readline_limit(size), |d| {
                    format!("ok readline {:?}", d.map(|d| d.len()))
                });
                // Datagram sockets: recvfrom, read and readline of one datagram each, sent to
                // itself.
                let u = socket(AF_INET, SOCK_DGRAM, 0).expect("socket");
                u.bind(("127.0.0.1", 0)).expect("bind");
                u.settimeout(Some(5.0)).expect("settimeout");
                let me = u.getsockname().expect("getsockname");
                u.sendto(b"dgram", &me).expect("sendto");
                show(u.recvfrom(size), |(d, _)| {
                    format!("ok recvfrom {}", d.len())
                });
                u.sendto(b"dgram", &me).expect("sendto");
                show(u.read(size), |d| {
                    format!("ok read {:?}", d.map(|d| d.len()))
                });
                u.sendto(b"dgram", &me).expect("sendto");
                show(u.readline_limit(size), |d| {
                    format!("ok readline {:?}", d.map(|d| d.len()))
                });
            }
            "read-close" => {
                // Leaves received bytes unread, then closes: the peer must see a reset.
                let (p, n) = (port(arg()), arg().parse::<usize>().expect("count"));
                let s = tcp();
                s.connect(("127.0.0.1", p)).expect("connect");
                show(s.read(n), |d| format!("ok read {:?}", d.map(|d| d.len())));
                s.close();
            }
            "lines" => {
                // readline's read-ahead must not reorder or hide bytes from other calls.
                let p = port(arg());
                let s = tcp();
                s.settimeout(Some(5.0)).expect("settimeout");
                s.connect(("127.0.0.1", p)).expect("connect");
                show(s.readline(), |l| {
                    format!(
                        "ok readline {:?}",
                        l.map(|l| String::from_utf8_lossy(&l).into_owned())
                    )
                });
                let mut p = usocket::select::poll();
                p.register(&s, usocket::select::POLLIN);
                show(p.poll(0), |r| {
                    format!(
                        "ok poll {:?}",
                        r.iter().map(|(_, ev)| *ev).collect::<Vec<_>>()
                    )
                });
                show(s.recv(100), |d| {
                    format!("ok recv {:?}", String::from_utf8_lossy(&d))
                });
                show(s.readline(), |l| {
                    format!(
                        "ok readline {:?}",
                        l.map(|l| String::from_utf8_lossy(&l).into_owned())
                    )
                });
            }
            "readline-close" => {
                // Leaves read-ahead unread, then closes: the peer must see a reset.
                let p = port(arg());
                let s = tcp();
                s.settimeout(Some(5.0)).expect("settimeout");
                s.connect(("127.0.0.1", p)).expect("connect");
                show(s.readline(), |l| {
                    format!("ok readline {:?}", l.map(|l| l.len()))
                });
                s.close();
            }
            "readline-then" => {
                // readline (the guest library then holds read-ahead), then ACTION: `trap`,
                // `exit` (std::process::exit: no destructor runs) or `spin` (until the time
                // limit): the peer must see a reset, the read-ahead being unread data.
                let (p, action) = (port(arg()), arg());
                let s = tcp();
                s.settimeout(Some(5.0)).expect("settimeout");
                s.connect(("127.0.0.1", p)).expect("connect");
                show(s.readline(), |l| {
                    format!("ok readline {:?}", l.map(|l| l.len()))
                });
                end_with(&action, &s);
            }
            "read-then" => {
                // read(N) with more received than N (queued in the host), then ACTION as
                // for `readline-then`.
                let (p, n, action) = (port(arg()), arg().parse::<usize>().expect("count"), arg());
                let s = tcp();
                s.settimeout(Some(5.0)).expect("settimeout");
                s.connect(("127.0.0.1", p)).expect("connect");
                show(s.read(n), |d| format!("ok read {:?}", d.map(|d| d.len())));
                end_with(&action, &s);
            }
            "lines-then" => {
                // N readlines that use up all that was received, then ACTION: nothing is
                // unread, so the peer must see a clean end of stream.
                let (p, n, action) = (port(arg()), arg().parse::<usize>().expect("count"), arg());
                let s = tcp();
                s.settimeout(Some(5.0)).expect("settimeout");
                s.connect(("127.0.0.1", p)).expect("connect");
                for _ in 0..n {
                    show(s.readline(), |l| {
                        format!("ok readline {:?}", l.map(|l| l.len()))
                    });
                }
                end_with(&action, &s);
            }
            "readline-recv" => {
                // readline, then COUNT recv(1000)s: one line each.
                let (p, count) = (port(arg()), arg().parse::<usize>().expect("count"));
                let s = tcp();
                s.settimeout(Some(2.0)).expect("settimeout");
                s.connect(("127.0.0.1", p)).expect("connect");
                show(s.readline(), |l| format!("ok {:?}", l.map(|l| l.len())));
                for _ in 0..count {
                    show(s.recv(1000), |d| format!("ok {}", d.len()));
                }
            }
            "readline-read" => {
                // readline, then read(N), then close: one line each.
                let (p, n) = (port(arg()), arg().parse::<usize>().expect("count"));
                let s = tcp();
                s.settimeout(Some(2.0)).expect("settimeout");
                s.connect(("127.0.0.1", p)).expect("connect");
                show(s.readline(), |l| format!("ok {:?}", l.map(|l| l.len())));
                show(s.read(n), |d| format!("ok {:?}", d.map(|d| d.len())));
                s.close();
            }
            "poll-accept" => {
                // A non-blocking listener on 127.0.0.1:PORT: after MS ms, poll(300) and
                // accept; then poll(5000) and accept again. One line each.
                let (p, ms) = (port(arg()), arg().parse::<u64>().expect("milliseconds"));
                let l = tcp();
                l.bind(("127.0.0.1", p)).expect("bind");
                l.listen(None).expect("listen");
                l.setblocking(false).expect("setblocking");
                std::thread::sleep(Duration::from_millis(ms));
                for wait in [300, 5000] {
                    let mut poller = usocket::select::poll();
                    poller.register(&l, usocket::select::POLLIN);
                    show(poller.poll(wait), |r| {
                        format!(
                            "ok poll {:?}",
                            r.iter().map(|(_, ev)| *ev).collect::<Vec<_>>()
                        )
                    });
                    show(l.accept(), |(_, (host, _))| format!("ok accept {host}"));
                }
            }
            "trap" => {
                let p = port(arg());
                let l = tcp();
                l.bind(("127.0.0.1", p)).expect("bind");
                l.listen(None).expect("listen");
                let extra: Vec<Socket> = (0..3).map(|_| tcp()).collect();
                std::hint::black_box((&l, &extra));
                std::process::abort();
            }
            "spin" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "spin-wait" => {
                // Computes, but waits 1 ms in a socket call every 3 ms or so.
                let u = usocket::socket(usocket::AF_INET, usocket::SOCK_DGRAM, 0).expect("udp");
                u.bind(("127.0.0.1", 0)).expect("bind");
                u.settimeout(Some(0.001)).expect("settimeout");
                let mut x = 0u64;
                loop {
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_millis(3) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                    let _ = u.recv(1);
                }
            }
            "echo" => {
                let (p, count) = (port(arg()), arg().parse::<usize>().expect("count"));
                let s = tcp();
                s.connect(("127.0.0.1", p)).expect("connect");
                let msg = [b'x'; 64];
                for _ in 0..count {
                    s.sendall(&msg).expect("send");
                    assert_eq!(s.read(64).expect("read").expect("data").len(), 64);
                }
                println!("ok echo {count}");
            }
            "connect6" => {
                let (host, p) = (arg(), port(arg()));
                let s = socket(AF_INET6, SOCK_STREAM, 0).expect("socket");
                show(s.connect((host.as_str(), p)), |()| "ok".into());
            }
            "sendto6" => {
                let (host, p) = (arg(), port(arg()));
                let s = socket(AF_INET6, SOCK_DGRAM, 0).expect("socket");
                show(s.sendto(b"probe", (host.as_str(), p)), |n| {
                    format!("ok {n}")
                });
            }
            "rconnect" => {
                let (name, p) = (arg(), port(arg()));
                show(
                    usocket::getaddrinfo(&name, p).and_then(|list| {
                        let s = socket(list[0].family, SOCK_STREAM, 0)?;
                        s.connect(&list[0].sockaddr)
                    }),
                    |()| "ok".into(),
                );
            }
            "exit" => {
                let code: u8 = arg().parse().expect("exit code");
                usocket::process::exit(code);
            }
            "sleep" => {
                let ms: u64 = arg().parse().expect("milliseconds");
                std::thread::sleep(Duration::from_millis(ms));
            }
            "resolve-sleep-connect" => {
                let (name, p) = (arg(), port(arg()));
                let ms: u64 = arg().parse().expect("milliseconds");
                show(
                    usocket::getaddrinfo(&name, p).and_then(|list| {
                        let (family, (address, _)) = (list[0].family, list[0].sockaddr.clone());
                        std::thread::sleep(Duration::from_millis(ms));
                        let s = socket(family, SOCK_STREAM, 0)?;
                        s.connect((address.as_str(), p))
                    }),
                    |()| "ok".into(),
                );
            }
            "send-seq" | "write-seq" | "sendto-seq" => {
                let (p, size) = (port(arg()), arg().parse::<usize>().expect("size"));
                let count: usize = arg().parse().expect("count");
                let data = vec![b's'; size];
                let s = if cmd == "sendto-seq" {
                    socket(AF_INET, SOCK_DGRAM, 0).expect("socket")
                } else {
                    let s = tcp();
                    s.connect(("127.0.0.1", p)).expect("connect");
                    s
                };
                for _ in 0..count {
                    match cmd {
                        "send-seq" => show(s.send(&data), |n| format!("ok {n}")),
                        "write-seq" => show(s.write(&data), |n| format!("ok {n:?}")),
                        _ => show(s.sendto(&data, ("127.0.0.1", p)), |n| format!("ok {n}")),
                    }
                }
            }
            "recv-seq" | "read-seq" | "readline-seq" => {
                let (p, size) = (port(arg()), arg().parse::<usize>().expect("size"));
                let count: usize = arg().parse().expect("count");
                let s = tcp();
                s.connect(("127.0.0.1", p)).expect("connect");
                s.settimeout(Some(5.0)).expect("settimeout");
                for _ in 0..count {
                    if cmd == "recv-seq" {
                        show(s.recv(size), |d| format!("ok {}", d.len()));
                    } else if cmd == "readline-seq" {
                        show(s.readline_limit(size), |d| {
                            format!("ok {:?}", d.map(|d| d.len()))
                        });
                    } else {
                        show(s.read(size), |d| format!("ok {:?}", d.map(|d| d.len())));
                    }
                }
            }
            "blast" => {
                let (p, total) = (port(arg()), arg().parse::<usize>().expect("bytes"));
                let started = Instant::now();
                let s = tcp();
                s.connect(("127.0.0.1", p)).expect("connect");
                let chunk = [b'b'; 16 * 1024];
                let mut sent = 0;
                while sent < total {
                    let n = chunk.len().min(total - sent);
                    s.sendall(&chunk[..n]).expect("sendall");
                    sent += n;
                }
                s.close();
                println!("ok blast {sent} {}", started.elapsed().as_millis());
            }
            "pattern" => {
                let (p, size) = (port(arg()), arg().parse::<usize>().expect("size"));
                let how = arg();
                let data = pattern(size);
                let s = tcp();
                s.connect(("127.0.0.1", p)).expect("connect");
                let mut sent = 0;
                match how.as_str() {
                    "write" => sent = s.write(&data).expect("write").expect("blocking"),
                    "send" => {
                        while sent < size {
                            sent += s.send(&data[sent..]).expect("send");
                        }
                    }
                    other => panic!("pattern: write or send, not {other}"),
                }
                s.close();
                println!("ok pattern {sent}");
            }
            other => panic!("unknown command {other}"),
        }
    }
}

/// `size` bytes, byte `i` being `i ^ i >> 8 ^ i >> 16` (truncated): not periodic at any
/// buffer size, so a chunk sent twice, dropped or out of order shows.
/// `tests/tests/sends.rs` checks what arrives against the same formula.
fn pattern(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8)
        .collect()
}
