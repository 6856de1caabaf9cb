//! 11_connect_refused: ECONNREFUSED; e.errno == e.args[0]; a non-blocking connect gives
//! EINPROGRESS and then poll reports POLLERR.
use usocket::{self as socket, errno, select};
use usocket_test_programs::{Py, e, try_a, wait};

fn main() {
    let s = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
    // try: s.connect(A(9811)) except OSError as e: ...
    if let Err(err) = try_a(9811).and_then(|addr| s.connect(addr)) {
        // A Rust OSError carries a single number, errno(), which is what Python's e.args[0]
        // and e.errno both are: `e.args[0] == e.errno` holds by construction.
        let args0 = err.errno();
        println!(
            "{} {} {}",
            err.errno().py(),
            (err.errno() == errno::ECONNREFUSED).py(),
            (args0 == err.errno()).py()
        );
    }
    s.close();
    let s = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
    s.setblocking(false).unwrap();
    println!("{}", e(try_a(9811).and_then(|addr| s.connect(addr))));
    println!(
        "{}",
        (wait(&s, select::POLLOUT, 2000) & select::POLLERR != 0).py()
    );
    s.close();
}
