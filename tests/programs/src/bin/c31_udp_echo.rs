//! 31_udp_echo: replying to the address recvfrom returned; recvfrom on the client gives the
//! server's address tuple.
use usocket as socket;
use usocket_test_programs::{Py, a};

fn main() {
    let srv = socket::socket(socket::AF_INET, socket::SOCK_DGRAM, 0).unwrap();
    srv.bind(a(9831)).unwrap();
    let cli = socket::socket(socket::AF_INET, socket::SOCK_DGRAM, 0).unwrap();
    cli.settimeout(Some(2.0)).unwrap();
    let dst = a(9831);
    for m in [&b"one"[..], b"two", b"three"] {
        cli.sendto(m, &dst).unwrap();
        let (data, addr) = srv.recvfrom(100).unwrap();
        println!("server {} {}", data.py(), addr.0);
        srv.sendto(&data.to_ascii_uppercase(), &addr).unwrap();
        let (data, addr) = cli.recvfrom(100).unwrap();
        println!("client {} {}", data.py(), (addr == dst).py());
    }
    srv.close();
    cli.close();
}
