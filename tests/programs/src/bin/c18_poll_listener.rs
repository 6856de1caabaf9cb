//! 18_poll_listener: a listener with a pending connection reports POLLIN (1); [] when none;
//! the result tuples hold the registered object.
use usocket::{self as socket, select};
use usocket_test_programs::{Py, a, server};

fn main() {
    let l = server(9818, None);
    let mut p = select::poll();
    p.register(&l, select::POLLIN);
    println!("{}", p.poll(0).unwrap().py());
    let c = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
    c.connect(a(9818)).unwrap();
    let r = p.poll(1000).unwrap();
    // r[0][0] is l
    println!("{} {} {}", r.len().py(), (r[0].0 == l).py(), r[0].1.py());
    let (conn, _) = l.accept().unwrap();
    println!("{}", p.poll(0).unwrap().py());
    conn.close();
    c.close();
    l.close();
}
