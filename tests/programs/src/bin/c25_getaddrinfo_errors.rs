//! 25_getaddrinfo_errors: getaddrinfo failures are negative ints in e.args[0] and e.errno.
use usocket as socket;
use usocket_test_programs::Py;

fn main() {
    for host in ["", "nonexistent.invalid", "hey.!!$$"] {
        match socket::getaddrinfo(host, 80) {
            Ok(_) => println!("resolved"),
            Err(err) => {
                // A Rust OSError carries a single i32, errno(), which is Python's e.args[0] and
                // e.errno: `type(a0).__name__` is "int" and `isinstance(a0, int)` and
                // `e.errno == a0` hold by construction; `a0 < 0` is the real check.
                let a0: i32 = err.errno();
                println!("OSError int {}", (a0 < 0 && err.errno() == a0).py());
            }
        }
    }
    if let Err(err) = socket::getaddrinfo("nonexistent.invalid", 80) {
        // -2 no such name, -3 no resolver reachable
        println!("{}", [-2, -3].contains(&err.errno()).py());
    }
}
