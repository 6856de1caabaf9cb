//! A scriptable guest for host-level tests: runs the commands in its arguments in order and
//! prints one line per command (`ok ...` or `errno N`).
//!
//! Commands: `connect HOST PORT`, `bind HOST PORT`, `listen HOST PORT`, `resolve NAME`,
//! `sendto HOST PORT`, `std-connect HOST PORT` (Rust std, i.e. wasi:sockets), `sockets N` (open up to N, print how many opened), `hold-accept PORT`
//! (listen, then block in accept), `hold-recv PORT` (connect, then block in recv),
//! `huge PORT` (recv/read/readline with the largest sizes), `read-close PORT N` (read N
//! bytes, close with the rest unread), `lines PORT` (readline mixed with poll and recv),
//! `readline-close PORT` (readline, close with read-ahead unread), `trap PORT` (open a listener and sockets, then trap), `spin` (loop forever),
//! `echo PORT COUNT` (COUNT 64-byte round trips to an echo server).

use usocket::{AF_INET, SOCK_DGRAM, SOCK_STREAM, Socket, socket};

fn show<T>(r: usocket::Result<T>, ok: impl FnOnce(T) -> String) {
    match r {
        Ok(v) => println!("{}", ok(v)),
        Err(e) => println!("errno {}", e.errno()),
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
                // Sizes a guest may pass that the host must not take literally.
                let p = port(arg());
                let s = tcp();
                s.connect(("127.0.0.1", p)).expect("connect");
                show(s.recv(usize::MAX), |d| format!("ok recv {}", d.len()));
                s.settimeout(Some(0.2)).expect("settimeout");
                show(s.read(usize::MAX), |d| {
                    format!("ok read {:?}", d.map(|d| d.len()))
                });
                show(s.readline_limit(usize::MAX), |d| {
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
            other => panic!("unknown command {other}"),
        }
    }
}
