//! 32_bad_arguments: names, malformed literals, "" and port 0 in connect, ports out of
//! range, negative/NaN timeouts are EINVAL; unknown family EAFNOSUPPORT, unknown type or a
//! proto that does not fit EINVAL; setsockopt options work (int or bytes), unknown ENOPROTOOPT.
use usocket as socket;
use usocket_test_programs::e;

fn main() {
    let s = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
    println!(
        "{} {}",
        e(s.connect(("localhost", 9832))),
        e(s.connect(("1.2.3", 9832)))
    );
    println!(
        "{} {}",
        e(s.connect(("", 9832))),
        e(s.connect(("127.0.0.1", 0)))
    );
    println!(
        "{} {}",
        e(s.connect(("127.0.0.1", 65536))),
        e(s.bind(("127.0.0.1", -1)))
    );
    println!(
        "{} {}",
        e(s.settimeout(Some(-1.0))),
        e(s.settimeout(Some(f64::NAN)))
    );
    println!("{}", e(socket::getaddrinfo("127.0.0.1", 65536)));
    println!(
        "{} {}",
        e(s.setsockopt(socket::SOL_SOCKET, 12345, 1)),
        e(s.setsockopt(12345, 1, 1))
    );
    println!(
        "{}",
        e(s.setsockopt(socket::SOL_SOCKET, socket::SO_REUSEADDR, 1))
    );
    println!(
        "{}",
        e(s.setsockopt(socket::SOL_SOCKET, socket::SO_KEEPALIVE, 1))
    );
    println!(
        "{}",
        e(s.setsockopt(socket::IPPROTO_TCP, socket::TCP_NODELAY, 1))
    );
    println!(
        "{}",
        e(s.setsockopt(
            socket::SOL_SOCKET,
            socket::SO_REUSEADDR,
            b"\x01\x00\x00\x00"
        ))
    );
    s.close();
    let u = socket::socket(socket::AF_INET, socket::SOCK_DGRAM, 0).unwrap();
    println!(
        "{}",
        e(u.setsockopt(socket::SOL_SOCKET, socket::SO_BROADCAST, 1))
    );
    u.close();
    // socket.socket(12345): type and proto take their defaults
    println!("{}", e(socket::socket(12345, socket::SOCK_STREAM, 0)));
    println!("{}", e(socket::socket(socket::AF_INET, 12345, 0)));
    println!(
        "{}",
        e(socket::socket(
            socket::AF_INET,
            socket::SOCK_DGRAM,
            socket::IPPROTO_TCP
        ))
    );
    println!(
        "{}",
        e(
            socket::socket(socket::AF_INET, socket::SOCK_STREAM, socket::IPPROTO_TCP)
                .map(|sock| sock.close())
        )
    );
    println!(
        "{}",
        e(
            socket::socket(socket::AF_INET, socket::SOCK_DGRAM, socket::IPPROTO_UDP)
                .map(|sock| sock.close())
        )
    );
}
