//! 01_tcp_echo: a loopback TCP pair exchanges data both ways with send/recv.
use usocket_test_programs::{Py, pair};

fn main() {
    let (l, c, s) = pair(9801);
    println!("{}", c.send(b"ping").unwrap().py());
    println!("{}", s.recv(100).unwrap().py());
    println!("{}", s.send(b"pong").unwrap().py());
    println!("{}", c.recv(100).unwrap().py());
    c.close();
    s.close();
    l.close();
}
