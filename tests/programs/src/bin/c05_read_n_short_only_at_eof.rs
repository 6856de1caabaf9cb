//! 05_read_n_short_only_at_eof: read(n) returns exactly n bytes, fewer only at EOF; read(0) is b"".
use usocket_test_programs::{Py, pair};

fn main() {
    let (l, c, s) = pair(9805);
    c.write(b"abcdefgh").unwrap();
    println!("{}", s.read(3).unwrap().py());
    println!("{}", s.read(3).unwrap().py());
    println!("{}", s.read(0).unwrap().py());
    c.close();
    println!("{}", s.read(10).unwrap().py());
    println!("{}", s.read(10).unwrap().py());
    s.close();
    l.close();
}
