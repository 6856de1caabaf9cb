//! 03_recv_eof: after the peer closes, recv/read/readline give b"" every time, readinto 0.
use usocket_test_programs::{Py, pair};

fn main() {
    let (l, c, s) = pair(9803);
    c.send(b"last").unwrap();
    c.close();
    println!("{}", s.recv(100).unwrap().py());
    println!("{}", s.recv(100).unwrap().py());
    println!("{}", s.recv(100).unwrap().py());
    println!(
        "{} {} {}",
        s.read(10).unwrap().py(),
        s.read_all().unwrap().py(),
        s.readline().unwrap().py()
    );
    println!("{}", s.readinto(&mut [0u8; 4]).unwrap().py());
    s.close();
    l.close();
}
