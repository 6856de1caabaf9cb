//! 19_poll_data_and_peer_close: an idle socket polls [], with data POLLIN, peer closed POLLIN.
use usocket::select;
use usocket_test_programs::{Py, pair};

fn main() {
    let (l, c, s) = pair(9819);
    let mut p = select::poll();
    p.register(&s, select::POLLIN);
    println!("{}", p.poll(0).unwrap().py());
    c.send(b"data").unwrap();
    let r = p.poll(1000).unwrap();
    println!("{}", r[0].1.py());
    println!("{}", s.recv(100).unwrap().py());
    c.close();
    let r = p.poll(1000).unwrap();
    println!("{}", (r[0].1 & select::POLLIN).py());
    println!("{}", s.recv(100).unwrap().py());
    s.close();
    l.close();
}
