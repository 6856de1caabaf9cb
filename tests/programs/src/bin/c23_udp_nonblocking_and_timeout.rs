//! 23_udp_nonblocking_and_timeout: MSG_DONTWAIT; non-blocking recv/recvfrom EAGAIN, timed
//! ETIMEDOUT; read None / ETIMEDOUT.
use usocket as socket;
use usocket_test_programs::{Py, e};

fn main() {
    let a = socket::socket(socket::AF_INET, socket::SOCK_DGRAM, 0).unwrap();
    a.bind(&socket::getaddrinfo("127.0.0.1", 9823).unwrap()[0].sockaddr)
        .unwrap();
    println!("{}", e(a.recv_flags(10, socket::MSG_DONTWAIT)));
    println!("{}", e(a.recvfrom_flags(10, socket::MSG_DONTWAIT)));
    a.setblocking(false).unwrap();
    println!("{}", e(a.recv(10)));
    println!("{}", a.read(10).unwrap().py());
    a.settimeout(Some(0.2)).unwrap();
    println!("{}", e(a.recvfrom(10)));
    println!("{}", e(a.read(10)));
    println!(
        "{} {}",
        e(a.recv(10)),
        e(a.recv_flags(10, socket::MSG_DONTWAIT))
    );
    a.close();
}
