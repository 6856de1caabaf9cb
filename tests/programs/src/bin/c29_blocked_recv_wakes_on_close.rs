//! 29_blocked_recv_wakes_on_close: timed recv ETIMEDOUT; setblocking(True) is
//! settimeout(None); the socket stays usable; EOF b"".
use usocket_test_programs::{Py, e, pair};

fn main() {
    let (l, c, s) = pair(9829);
    s.settimeout(Some(0.2)).unwrap();
    println!("{}", e(s.recv(10)));
    s.setblocking(true).unwrap();
    c.send(b"late").unwrap();
    println!("{}", s.recv(10).unwrap().py());
    c.close();
    println!("{}", s.recv(10).unwrap().py());
    s.close();
    l.close();
}
