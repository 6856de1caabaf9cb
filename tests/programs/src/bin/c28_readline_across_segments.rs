//! 28_readline_across_segments: readline assembles a line across segments; the last line
//! without a newline, then b"".
use usocket::select;
use usocket_test_programs::{Py, pair, wait};

fn main() {
    let (l, c, s) = pair(9828);
    for part in [&b"hel"[..], b"lo\nwor", b"ld"] {
        c.write(part).unwrap();
        wait(&s, select::POLLIN, 2000);
    }
    c.close();
    println!("{}", s.readline().unwrap().py());
    println!("{}", s.readline().unwrap().py());
    println!("{}", s.readline().unwrap().py());
    s.close();
    l.close();
}
