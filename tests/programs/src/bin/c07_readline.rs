//! 07_readline: lines include b"\n" / b"\r\n" as received; the last partial line, then b"".
use usocket_test_programs::{Py, pair};

fn main() {
    let (l, c, s) = pair(9807);
    c.write(b"GET / HTTP/1.0\r\nHost: x\n\nbody-no-newline")
        .unwrap();
    c.close();
    loop {
        let line = s.readline().unwrap();
        println!("{}", line.py());
        // `not line`: None or b"".
        if line.as_deref().is_none_or(<[u8]>::is_empty) {
            break;
        }
    }
    s.close();
    l.close();
}
