//! 09_close_twice_and_use_after_close: close() is idempotent; every later operation fails
//! with EBADF.
// Printing the None a method returns is `().py()`.
#![allow(clippy::unit_arg)]
use usocket as socket;
use usocket_test_programs::{Py, e, pair, try_a};

fn main() {
    let (l, c, s) = pair(9809);
    println!("{} {}", c.close().py(), c.close().py());
    println!("{}", e(c.settimeout(Some(1.0))));
    println!("{}", e(c.recv(1)));
    println!("{}", e(c.send(b"x")));
    println!("{}", e(c.read(1)));
    println!("{}", e(c.write(b"x")));
    println!("{}", e(c.readline()));
    // A(9809) is evaluated inside the lambda.
    println!("{}", e(try_a(9809).and_then(|addr| c.connect(addr))));
    println!("{}", e(c.setblocking(false)));
    s.close();
    l.close();
    println!("{}", e(l.accept()));
    println!(
        "{} {}",
        e(l.listen(None)),
        e(try_a(9809).and_then(|addr| l.bind(addr)))
    );
    println!(
        "{}",
        e(l.setsockopt(socket::SOL_SOCKET, socket::SO_REUSEADDR, 1))
    );
    println!("{} {}", e(s.makefile("rwb")), e(s.sendall(b"x")));
    println!("{} {}", e(s.readinto(&mut [0u8; 1])), e(s.recvfrom(1)));
    println!("{}", e(try_a(9809).and_then(|addr| s.sendto(b"x", addr))));
}
