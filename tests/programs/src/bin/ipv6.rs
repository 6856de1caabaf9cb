//! IPv6 (`AF_INET6`) end to end, for `tests/tests/ipv6.rs`: prints one line per check, with
//! results in the conformance scenarios' Python notation (`E(...)` is `('ok', value)` or
//! `('OSError', errno)`) and only what does not depend on ephemeral port numbers.
//!
//! Commands (one per run):
//! - `checks V4PORT`: the IPv6 checks, over `::1` with ephemeral ports. `V4PORT` is an IPv4
//!   listener of the test on 127.0.0.1, which an IPv6 socket must not reach through the
//!   IPv4-mapped address `::ffff:127.0.0.1`. Needs `bind=[::1]:*`, `connect=*:*` and
//!   `resolve=localhost`.
//! - `connect PORT`: an IPv6 TCP connect to `("::1", PORT)`.
//! - `sendto PORT`: an IPv6 datagram to `("::1", PORT)`.
//! - `bind`: binds an IPv6 TCP socket to `("::1", 0)`.

use usocket::{self as socket, AF_INET, AF_INET6, SOCK_DGRAM, SOCK_STREAM, Socket};
use usocket_test_programs::{Py, e};

/// Every wait of a guest socket is bounded.
const TIMEOUT: Option<f64> = Some(5.0);

fn sock(af: i32, socktype: i32) -> Socket {
    let s = socket::socket(af, socktype, 0).expect("socket");
    s.settimeout(TIMEOUT).expect("settimeout");
    s
}

fn checks(v4_port: i64) {
    // TCP over ::1: a listener on an ephemeral port, a client, data both ways.
    let listener = sock(AF_INET6, SOCK_STREAM);
    listener.bind(("::1", 0)).unwrap();
    listener.listen(None).unwrap();
    let (host, port) = listener.getsockname().unwrap();
    println!(
        "tcp listener getsockname {} {}",
        host.py(),
        (port != 0).py()
    );
    println!("tcp listener family {}", listener.family().unwrap());
    let client = sock(AF_INET6, SOCK_STREAM);
    println!("tcp connect {}", e(client.connect(("::1", port))));
    let (conn, (peer, peer_port)) = listener.accept().unwrap();
    conn.settimeout(TIMEOUT).unwrap();
    let client_name = client.getsockname().unwrap();
    println!(
        "tcp accept {} {}",
        peer.py(),
        (peer_port == client_name.1).py()
    );
    println!("tcp client getsockname {}", client_name.0.py());
    println!(
        "tcp client getpeername {}",
        (client.getpeername().unwrap() == ("::1".to_string(), port)).py()
    );
    println!("tcp client -> server {}", e(client.write(b"ping\n")));
    println!("tcp server got {}", conn.readline().unwrap().py());
    println!("tcp server -> client {}", e(conn.write(b"pong\n")));
    println!("tcp client got {}", client.readline().unwrap().py());
    conn.close();
    println!("tcp client eof {}", client.read_all().unwrap().py());
    client.close();
    listener.close();

    // UDP over ::1: each side sees the other's address tuple.
    let server = sock(AF_INET6, SOCK_DGRAM);
    server.bind(("::1", 0)).unwrap();
    let server_addr = server.getsockname().unwrap();
    println!("udp server getsockname {}", server_addr.0.py());
    let client = sock(AF_INET6, SOCK_DGRAM);
    println!("udp sendto {}", e(client.sendto(b"hello", &server_addr)));
    let client_addr = client.getsockname().unwrap();
    let (data, from) = server.recvfrom(100).unwrap();
    println!(
        "udp server recvfrom {} {} {}",
        data.py(),
        from.0.py(),
        (from.1 == client_addr.1).py()
    );
    println!("udp reply {}", e(server.sendto(b"HELLO", &from)));
    let (data, from) = client.recvfrom(100).unwrap();
    println!(
        "udp client recvfrom {} {}",
        data.py(),
        (from == server_addr).py()
    );
    server.close();
    client.close();

    // getaddrinfo with AF_INET6.
    let gai = |host: &str, af: i32| e(socket::getaddrinfo_with(host, 80, af, SOCK_STREAM, 0, 0));
    println!("getaddrinfo ::1 AF_INET6 {}", gai("::1", AF_INET6));
    println!(
        "getaddrinfo ::1 AF_INET6 SOCK_DGRAM {}",
        e(socket::getaddrinfo_with(
            "::1", 53, AF_INET6, SOCK_DGRAM, 0, 0
        ))
    );
    println!(
        "getaddrinfo ::1 any family {}",
        e(socket::getaddrinfo("::1", 80))
    );
    println!(
        "getaddrinfo 127.0.0.1 AF_INET6 {}",
        gai("127.0.0.1", AF_INET6)
    );
    println!("getaddrinfo ::1 AF_INET {}", gai("::1", AF_INET));
    println!("getaddrinfo ::1 af=12345 {}", gai("::1", 12345));
    // What the system resolver says about an IPv6 address of `localhost` (the test computes
    // the expected line from the same resolver).
    println!(
        "getaddrinfo localhost AF_INET6 {}",
        gai("localhost", AF_INET6)
    );

    // Addresses of the other family.
    let s6 = sock(AF_INET6, SOCK_STREAM);
    println!(
        "AF_INET6 connect 127.0.0.1 {}",
        e(s6.connect(("127.0.0.1", v4_port)))
    );
    let s4 = sock(AF_INET, SOCK_STREAM);
    println!("AF_INET connect ::1 {}", e(s4.connect(("::1", 80))));
    // IPV6_V6ONLY: an IPv6 socket never reaches IPv4, not even through a mapped address.
    let mapped = sock(AF_INET6, SOCK_STREAM);
    println!(
        "AF_INET6 connect ::ffff:127.0.0.1 {}",
        e(mapped.connect(("::ffff:127.0.0.1", v4_port)))
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let port = |s: &str| s.parse::<i64>().expect("port");
    match args[..] {
        ["checks", v4_port] => checks(port(v4_port)),
        ["connect", p] => {
            let s = sock(AF_INET6, SOCK_STREAM);
            println!("connect ::1 {}", e(s.connect(("::1", port(p)))));
        }
        ["sendto", p] => {
            let s = sock(AF_INET6, SOCK_DGRAM);
            println!("sendto ::1 {}", e(s.sendto(b"v6", ("::1", port(p)))));
        }
        ["bind"] => {
            let s = sock(AF_INET6, SOCK_STREAM);
            println!("bind ::1 {}", e(s.bind(("::1", 0))));
        }
        _ => panic!("usage: ipv6 checks V4PORT | connect PORT | sendto PORT | bind"),
    }
}
