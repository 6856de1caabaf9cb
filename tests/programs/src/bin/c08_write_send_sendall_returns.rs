//! 08_write_send_sendall_returns: write returns len(buf) on a blocking socket, sendall None,
//! send a count; with bytes, bytearray and memoryview (all `&[u8]` in Rust).
// Printing the None a method returns is `().py()`.
#![allow(clippy::unit_arg)]
use usocket_test_programs::{Py, pair};

fn main() {
    let (l, c, s) = pair(9808);
    println!("{}", c.write(b"12345").unwrap().py());
    // memoryview(b"12345")[:2]
    println!("{}", c.write(&b"12345"[..2]).unwrap().py());
    println!("{}", c.send(b"abc").unwrap().py());
    println!("{}", c.sendall(b"xyz").unwrap().py());
    // bytearray(b"BA"), memoryview(b"MV")
    let bytearray = b"BA".to_vec();
    println!(
        "{} {}",
        c.send(&bytearray).unwrap().py(),
        c.send(&b"MV"[..]).unwrap().py()
    );
    c.close();
    println!("{}", s.read_all().unwrap().py());
    s.close();
    l.close();
}
