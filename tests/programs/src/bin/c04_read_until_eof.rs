//! 04_read_until_eof: read() reads until EOF, then b"".
use usocket_test_programs::{Py, pair};

fn main() {
    let (l, c, s) = pair(9804);
    for i in 0..5 {
        c.write(format!("chunk{i};").as_bytes()).unwrap();
    }
    c.close();
    println!("{}", s.read_all().unwrap().py());
    println!("{}", s.read_all().unwrap().py());
    s.close();
    l.close();
}
