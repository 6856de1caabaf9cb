//! 17_poll_fresh_socket: the default mask is POLLIN|POLLOUT; a fresh TCP socket reports 20
//! (POLLOUT|POLLHUP, the HUP unasked).
use usocket::{self as socket, select};
use usocket_test_programs::Py;

fn main() {
    let s = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
    let mut p = select::poll();
    // p.register(s): the default mask
    p.register_default(&s);
    let r = p.poll(0).unwrap();
    println!("{} {}", r.len().py(), r[0].1.py());
    s.close();
}
