//! m1_readline_across_segments: readline waits for the rest of a line sent 200 ms apart;
//! the last partial line at EOF. Usage: `m1_readline_across_segments INSTANCE [NAME=REPR]...`.
use usocket as socket;
use usocket_test_programs::{Py, a_host, multitest, server, time};

const PORT: i64 = 9841;

fn instance0() {
    multitest::globals(&[("IP", "'127.0.0.1'")]);
    let l = server(PORT, None);
    multitest::next();
    let (s, _) = l.accept().unwrap();
    for part in [&b"hel"[..], b"lo\nwor", b"ld"] {
        s.write(part).unwrap();
        time::sleep(0.2);
    }
    s.close();
    l.close();
}

fn instance1() {
    multitest::next();
    let s = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
    s.connect(a_host(PORT, &multitest::global("IP"))).unwrap();
    println!("{}", s.readline().unwrap().py());
    println!("{}", s.readline().unwrap().py());
    println!("{}", s.readline().unwrap().py());
    s.close();
}

fn main() {
    multitest::run(instance0, instance1);
}
