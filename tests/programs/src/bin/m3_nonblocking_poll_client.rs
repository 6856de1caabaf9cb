//! m3_nonblocking_poll_client: as 30_nonblocking_poll_client, with the server in another
//! instance. Usage: `m3_nonblocking_poll_client INSTANCE [NAME=REPR]...`.
use usocket::{self as socket, errno, select};
use usocket_test_programs::{Py, multitest, server, try_a_host};

const PORT: i64 = 9843;

fn instance0() {
    multitest::globals(&[("IP", "'127.0.0.1'")]);
    let l = server(PORT, None);
    multitest::next();
    let (s, _) = l.accept().unwrap();
    let req = s.readline().unwrap();
    println!("server got {}", req.py());
    // s.write(req.upper())
    let req = req.expect("readline on a blocking socket gave None");
    s.write(&req.to_ascii_uppercase()).unwrap();
    s.write(b"BYE\n").unwrap();
    s.close();
    l.close();
}

fn instance1() {
    multitest::next();
    let s = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
    s.setblocking(false).unwrap();
    // try: s.connect(A(PORT, IP)) except OSError as e: ...
    if let Err(err) = try_a_host(PORT, &multitest::global("IP")).and_then(|addr| s.connect(addr)) {
        println!("connect {}", (err.errno() == errno::EINPROGRESS).py());
    }
    let mut p = select::poll();
    p.register(&s, select::POLLOUT);
    let ev = p.poll(2000).unwrap();
    println!("writable {}", (ev[0].1 & select::POLLOUT != 0).py());
    println!("write {}", s.write(b"hello server\n").unwrap().py());
    p.modify(&s, select::POLLIN).unwrap();
    let mut data: Vec<u8> = Vec::new();
    let mut eof = false;
    while !eof {
        for (obj, _ev) in p.ipoll(2000, 0).unwrap() {
            let Some(chunk) = obj.read(64).unwrap() else {
                continue;
            };
            if chunk.is_empty() {
                eof = true;
            }
            data.extend_from_slice(&chunk);
        }
    }
    println!("EOF {}", data.py());
    s.close();
}

fn main() {
    multitest::run(instance0, instance1);
}
