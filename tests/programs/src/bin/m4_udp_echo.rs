//! m4_udp_echo: as 31_udp_echo, with the server in another instance.
//! Usage: `m4_udp_echo INSTANCE [NAME=REPR]...`.
use usocket as socket;
use usocket_test_programs::{Py, a, a_host, multitest};

const PORT: i64 = 9844;

fn instance0() {
    multitest::globals(&[("IP", "'127.0.0.1'")]);
    let s = socket::socket(socket::AF_INET, socket::SOCK_DGRAM, 0).unwrap();
    s.bind(a(PORT)).unwrap();
    multitest::next();
    for _ in 0..3 {
        let (data, addr) = s.recvfrom(100).unwrap();
        println!("server {} {}", data.py(), addr.0);
        s.sendto(&data.to_ascii_uppercase(), &addr).unwrap();
    }
    s.close();
}

fn instance1() {
    multitest::next();
    let s = socket::socket(socket::AF_INET, socket::SOCK_DGRAM, 0).unwrap();
    s.settimeout(Some(2.0)).unwrap();
    let dst = a_host(PORT, &multitest::global("IP"));
    for m in [&b"one"[..], b"two", b"three"] {
        s.sendto(m, &dst).unwrap();
        let (data, addr) = s.recvfrom(100).unwrap();
        println!("client {} {}", data.py(), (addr == dst).py());
    }
    s.close();
}

fn main() {
    multitest::run(instance0, instance1);
}
