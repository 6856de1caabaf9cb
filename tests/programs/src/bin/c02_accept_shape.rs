//! 02_accept_shape: accept() returns (socket, (address, port)) with a numeric address string
//! and an int port.
use usocket::{self as socket, SockAddr, Socket};
use usocket_test_programs::{Py, a, server};

fn main() {
    let l = server(9802, None);
    let c = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
    c.connect(a(9802)).unwrap();
    // The annotation is the Rust form of the shape checks below: a 2-tuple of a socket (the
    // same type as the listener) and a 2-tuple (str, int), guaranteed at compile time.
    let r: (Socket, SockAddr) = l.accept().unwrap();
    // print(type(r) is tuple, len(r))
    println!("{} {}", true.py(), 2usize.py());
    let (conn, addr) = r;
    // print(type(conn) is type(l))
    println!("{}", true.py());
    // print(type(addr) is tuple, len(addr))
    println!("{} {}", true.py(), 2usize.py());
    // print(addr[0], type(addr[1]) is int, 1 <= addr[1] <= 65535)
    println!(
        "{} {} {}",
        addr.0,
        true.py(),
        (1..=65535).contains(&addr.1).py()
    );
    conn.send(b"via accepted").unwrap();
    println!("{}", c.recv(100).unwrap().py());
    conn.close();
    c.close();
    l.close();
}
