//! 24_getaddrinfo_shape: getaddrinfo returns a list of 5-tuples (family, type, proto,
//! canonname, sockaddr); numeric literals; AF_INET6.
use usocket::{self as socket, AddrInfo};
use usocket_test_programs::Py;

fn main() {
    // The annotation is `type(r) is list` (printed True); `len(t) == 5` is the exhaustive
    // pattern of AddrInfo's 5 fields, which compiles only if there are exactly those.
    let r: Vec<AddrInfo> = socket::getaddrinfo("127.0.0.1", 8080).unwrap();
    let len_is_5 = |t: &AddrInfo| {
        let AddrInfo {
            family: _,
            socktype: _,
            proto: _,
            canonname: _,
            sockaddr: _,
        } = t;
        true
    };
    println!("{} {}", true.py(), r.iter().all(len_is_5).py());
    let r = socket::getaddrinfo_with("127.0.0.1", 8080, 0, socket::SOCK_STREAM, 0, 0).unwrap();
    let AddrInfo {
        family: f,
        socktype: t,
        proto,
        canonname: canon,
        sockaddr: _sa,
    } = r[0].clone();
    println!(
        "{} {} {} {}",
        (f == socket::AF_INET).py(),
        (t == socket::SOCK_STREAM).py(),
        (proto == socket::IPPROTO_TCP).py(),
        canon.is_empty().py()
    );
    let r6 =
        socket::getaddrinfo_with("::1", 8080, socket::AF_INET6, socket::SOCK_STREAM, 0, 0).unwrap();
    println!("{}", (r6[0].family == socket::AF_INET6).py());
    println!(
        "{}",
        (socket::getaddrinfo_with("localhost", 80, socket::AF_INET, 0, 0, 0).unwrap()[0].sockaddr
            == ("127.0.0.1".to_string(), 80))
            .py()
    );
    println!(
        "{}",
        socket::getaddrinfo_with("0.0.0.0", 80, 0, socket::SOCK_STREAM, 0, 0)
            .unwrap()
            .len()
            .py()
    );
    println!("{}", socket::getaddrinfo("127.0.0.1", 8080).unwrap().py());
    println!(
        "{}",
        socket::getaddrinfo_with("127.0.0.1", 53, 0, socket::SOCK_DGRAM, 0, 0)
            .unwrap()
            .py()
    );
    println!("{}", r6.py());
}
