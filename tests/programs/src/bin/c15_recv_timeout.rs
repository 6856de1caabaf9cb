//! 15_recv_timeout: timed recv, recvfrom, read, readline, readinto fail with ETIMEDOUT after
//! the timeout; the socket stays usable; settimeout(None) blocks again.
use usocket_test_programs::{Py, e, pair, time};

fn main() {
    let (l, c, s) = pair(9815);
    s.settimeout(Some(0.3)).unwrap();
    let t0 = time::ticks_ms();
    println!("{}", e(s.recv(10)));
    let dt = time::ticks_diff(time::ticks_ms(), t0);
    println!("{}", (250..2000).contains(&dt).py());
    println!("{}", e(s.read(10)));
    println!("{}", e(s.readline()));
    println!("{} {}", e(s.recvfrom(10)), e(s.readinto(&mut [0u8; 4])));
    c.send(b"ok").unwrap();
    println!("{}", s.recv(10).unwrap().py());
    s.settimeout(None).unwrap();
    c.send(b"blocking-again").unwrap();
    println!("{}", s.recv(100).unwrap().py());
    c.close();
    s.close();
    l.close();
}
