//! 16_settimeout_zero_equals_setblocking_false: setblocking(False) is settimeout(0),
//! setblocking(True) is settimeout(None).
use usocket_test_programs::{Py, e, pair};

fn main() {
    let (l, c, s) = pair(9816);
    s.settimeout(Some(0.0)).unwrap();
    println!("{}", e(s.recv(1)));
    s.setblocking(true).unwrap();
    c.send(b"1").unwrap();
    println!("{}", s.recv(1).unwrap().py());
    s.setblocking(false).unwrap();
    println!("{}", e(s.recv(1)));
    s.settimeout(None).unwrap();
    c.send(b"2").unwrap();
    println!("{}", s.recv(1).unwrap().py());
    c.close();
    s.close();
    l.close();
}
