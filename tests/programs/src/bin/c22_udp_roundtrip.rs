//! 22_udp_roundtrip: sendto returns the length, recvfrom returns (bytes, (address, port)),
//! truncation discards the rest, an empty datagram gives b""; port 0 in bind.
use usocket::{self as socket, SockAddr};
use usocket_test_programs::{Py, a};

fn main() {
    let a_ = socket::socket(socket::AF_INET, socket::SOCK_DGRAM, 0).unwrap();
    a_.bind(a(9822)).unwrap();
    let b = socket::socket(socket::AF_INET, socket::SOCK_DGRAM, 0).unwrap();
    b.bind(("127.0.0.1", 0)).unwrap(); // port 0: any free port
    println!("{}", b.sendto(b"hello", a(9822)).unwrap().py());
    // The annotation stands for `type(addr) is tuple` (printed True below).
    let (data, addr): (Vec<u8>, SockAddr) = a_.recvfrom(100).unwrap();
    println!("{}", data.py());
    println!("{} {} {}", true.py(), addr.0, (addr.1 > 0).py());
    println!("{}", a_.sendto(b"reply", &addr).unwrap().py());
    println!("{}", b.recv(100).unwrap().py());
    b.sendto(b"abcdef", a(9822)).unwrap();
    println!("{}", a_.recv(3).unwrap().py()); // truncated; the rest is discarded
    b.sendto(b"", a(9822)).unwrap();
    println!("{}", a_.recv(10).unwrap().py()); // the next datagram: the empty one
    a_.sendto(b"again", &addr).unwrap();
    println!("{}", b.recvfrom(100).unwrap().py());
    a_.close();
    b.close();
}
