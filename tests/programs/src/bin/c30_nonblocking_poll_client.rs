//! 30_nonblocking_poll_client: non-blocking connect EINPROGRESS; poll POLLOUT once
//! connected; write count; modify; ipoll; non-blocking read None / data / b"".
use usocket::{self as socket, errno, select};
use usocket_test_programs::{Py, server, try_a};

fn main() {
    let l = server(9830, None);
    let c = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
    c.setblocking(false).unwrap();
    // try: c.connect(A(9830)) except OSError as e: ...
    if let Err(err) = try_a(9830).and_then(|addr| c.connect(addr)) {
        println!("connect {}", (err.errno() == errno::EINPROGRESS).py());
    }
    let mut p = select::poll();
    p.register(&c, select::POLLOUT);
    let ev = p.poll(2000).unwrap();
    println!("writable {}", (ev[0].1 & select::POLLOUT != 0).py());
    println!("write {}", c.write(b"hello server\n").unwrap().py());
    let (s, _) = l.accept().unwrap();
    let req = s.readline().unwrap();
    println!("server got {}", req.py());
    // s.write(req.upper())
    let req = req.expect("readline on a blocking socket gave None");
    s.write(&req.to_ascii_uppercase()).unwrap();
    s.write(b"BYE\n").unwrap();
    s.close();
    p.modify(&c, select::POLLIN).unwrap();
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
    c.close();
    l.close();
}
