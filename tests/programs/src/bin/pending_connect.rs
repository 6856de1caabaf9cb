//! pending_connect PORT: the stream calls of a non-blocking socket (`setblocking(False)`, then
//! `settimeout(0)`) whose TCP connect is still pending. docs/contract.md#blocking-timeouts-non-blocking ("Blocking, timeouts,
//! non-blocking": `read`, `readinto` and `readline` return None when nothing is available;
//! `write` returns None when it wrote nothing.
//!
//! The test host makes 127.0.0.1:PORT a listener whose accept queue is full, so the handshake
//! cannot complete. Before and after the reads the program shows the connect is still pending
//! (a second `connect` gives EALREADY, `poll` reports nothing), so a pass cannot come from a
//! connection that completed. One line per call: the value's Python repr, or `OSError NAME`.
use usocket::{self as socket, errno, select};
use usocket_test_programs::Py;

/// `NAME` for an errno (its number if it has none).
fn name(n: i32) -> String {
    errno::errorcode(n).map_or_else(|| n.to_string(), str::to_string)
}

fn show<T: Py>(what: &str, r: usocket::Result<T>) {
    match r {
        Ok(v) => println!("{what} {}", v.py()),
        Err(e) => println!("{what} OSError {}", name(e.errno())),
    }
}

fn connect(s: &socket::Socket, port: i64) {
    match s.connect(("127.0.0.1", port)) {
        Ok(()) => println!("connect ok"),
        Err(e) => println!("connect {}", name(e.errno())),
    }
}

fn poll(s: &socket::Socket) {
    let mut p = select::poll();
    p.register(s, select::POLLIN | select::POLLOUT);
    let r = p.poll(0).unwrap();
    println!("poll {}", if r.is_empty() { 0 } else { r[0].1 });
}

fn main() {
    let port: i64 = std::env::args()
        .nth(1)
        .expect("usage: pending_connect PORT")
        .parse()
        .expect("port");
    for mode in ["setblocking(False)", "settimeout(0)"] {
        let s = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
        if mode == "setblocking(False)" {
            s.setblocking(false).unwrap();
        } else {
            s.settimeout(Some(0.0)).unwrap();
        }
        println!("{mode}");
        connect(&s, port);
        connect(&s, port);
        poll(&s);
        show("read(4)", s.read(4));
        show("read()", s.read_all());
        show("readline()", s.readline());
        let mut buf = [0u8; 4];
        show("readinto(4)", s.readinto(&mut buf));
        show("write", s.write(b"x"));
        connect(&s, port);
        poll(&s);
        s.close();
    }
}
