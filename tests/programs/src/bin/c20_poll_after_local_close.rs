//! 20_poll_after_local_close: a locally closed socket polls 32; unregister removes it.
use usocket::select;
use usocket_test_programs::{Py, pair};

fn main() {
    let (l, c, s) = pair(9820);
    let mut p = select::poll();
    p.register(&s, select::POLLIN);
    s.close();
    let r = p.poll(0).unwrap();
    println!("{} {}", r.len().py(), r[0].1.py());
    p.unregister(&s);
    println!("{}", p.poll(0).unwrap().py());
    c.close();
    l.close();
}
