//! 13_listen_backlog_variants: listen() and listen(0/1/2/-1) all accept a connection;
//! listen on a datagram socket is EOPNOTSUPP.
// Printing the None a method returns is `().py()`.
#![allow(clippy::unit_arg)]
use usocket as socket;
use usocket_test_programs::{Py, a, e};

fn main() {
    for arg in [None, Some(0), Some(1), Some(2), Some(-1)] {
        let l = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
        l.setsockopt(socket::SOL_SOCKET, socket::SO_REUSEADDR, 1)
            .unwrap();
        l.bind(a(9813)).unwrap();
        // l.listen() if arg is None else l.listen(arg)
        println!("{}", l.listen(arg).unwrap().py());
        let c = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
        c.connect(a(9813)).unwrap();
        let (conn, _) = l.accept().unwrap();
        c.send(b"hi").unwrap();
        println!("{}", conn.recv(2).unwrap().py());
        c.close();
        conn.close();
        l.close();
    }
    let u = socket::socket(socket::AF_INET, socket::SOCK_DGRAM, 0).unwrap();
    println!("{}", e(u.listen(None)));
    u.close();
}
