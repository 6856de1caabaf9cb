//! m2_blocked_recv_wakes_on_close: timed recv ETIMEDOUT; after setblocking(True) a recv
//! waits without limit for late data, then for the peer's close (b"").
//! Usage: `m2_blocked_recv_wakes_on_close INSTANCE [NAME=REPR]...`.
use usocket as socket;
use usocket_test_programs::{Py, a_host, e, multitest, server, time};

const PORT: i64 = 9842;

fn instance0() {
    multitest::globals(&[("IP", "'127.0.0.1'")]);
    let l = server(PORT, None);
    multitest::next();
    let (s, _) = l.accept().unwrap();
    multitest::wait("blocking");
    time::sleep(0.5);
    s.send(b"late").unwrap();
    time::sleep(0.5);
    s.close();
    l.close();
}

fn instance1() {
    multitest::next();
    let s = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
    s.connect(a_host(PORT, &multitest::global("IP"))).unwrap();
    s.settimeout(Some(0.2)).unwrap();
    println!("{}", e(s.recv(10)));
    s.setblocking(true).unwrap(); // exactly settimeout(None): no timeout is left
    multitest::broadcast("blocking");
    let t0 = time::ticks_ms();
    println!(
        "{} {}",
        e(s.recv(10)),
        (time::ticks_diff(time::ticks_ms(), t0) >= 300).py()
    );
    let t0 = time::ticks_ms();
    println!(
        "{} {}",
        e(s.recv(10)),
        (time::ticks_diff(time::ticks_ms(), t0) >= 300).py()
    );
    s.close();
}

fn main() {
    multitest::run(instance0, instance1);
}
