//! 21_poll_timeout: poll(ms) returns [] after the timeout; poll(0) at once.
use usocket::select;
use usocket_test_programs::{Py, pair, time};

fn main() {
    let (l, c, s) = pair(9821);
    let mut p = select::poll();
    p.register(&s, select::POLLIN);
    let t0 = time::ticks_ms();
    println!("{}", p.poll(200).unwrap().py());
    let dt = time::ticks_diff(time::ticks_ms(), t0);
    println!("{}", (150..1000).contains(&dt).py());
    let t0 = time::ticks_ms();
    println!(
        "{} {}",
        p.poll(0).unwrap().py(),
        (time::ticks_diff(time::ticks_ms(), t0) < 100).py()
    );
    c.close();
    s.close();
    l.close();
}
