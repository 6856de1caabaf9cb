//! 14_nonblocking_recv_family: non-blocking recv is EAGAIN; read/read()/readline/readinto
//! give None when nothing is there, else what is available; b"" at EOF.
use usocket::select;
use usocket_test_programs::{Py, e, pair, wait};

fn main() {
    let (l, c, s) = pair(9814);
    s.setblocking(false).unwrap();
    println!("{}", e(s.recv(10)));
    println!(
        "{} {} {} {}",
        s.read(10).unwrap().py(),
        s.read_all().unwrap().py(),
        s.readline().unwrap().py(),
        s.readinto(&mut [0u8; 4]).unwrap().py()
    );
    c.send(b"par").unwrap();
    wait(&s, select::POLLIN, 2000);
    println!("{}", s.read(10).unwrap().py());
    c.send(b"tial-line").unwrap();
    wait(&s, select::POLLIN, 2000);
    println!("{}", s.readline().unwrap().py());
    c.close();
    wait(&s, select::POLLIN, 2000);
    println!("{} {}", s.recv(10).unwrap().py(), s.read(10).unwrap().py());
    s.close();
    l.close();
}
