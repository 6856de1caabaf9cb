//! 06_readinto: readinto(buf[, nbytes]) fills buf or its first nbytes, returns the count,
//! 0 at EOF; also into a memoryview.
use usocket_test_programs::{ByteArray, Py, pair};

fn main() {
    let (l, c, s) = pair(9806);
    c.write(b"0123456789").unwrap();
    c.close();
    let mut buf = vec![0u8; 4]; // bytearray(4)
    let n = s.readinto(&mut buf).unwrap();
    println!("{} {}", n.py(), ByteArray(&buf).py());
    // readinto(buf, 2)
    let n = s.readinto(&mut buf[..2]).unwrap();
    println!("{} {}", n.py(), ByteArray(&buf).py());
    let mut mv = vec![0u8; 8]; // memoryview(bytearray(8))
    let n = s.readinto(&mut mv).unwrap();
    // bytes(mv[:n]); mv[:None] would be all of it.
    let end = n.unwrap_or(mv.len());
    println!("{} {}", n.py(), mv[..end].py());
    println!("{}", s.readinto(&mut buf).unwrap().py());
    s.close();
    l.close();
}
