//! 12_recv_on_listening_socket: recv on a listening socket is ENOTCONN (blocking and
//! non-blocking); accept on a socket that is not listening is EINVAL.
use usocket as socket;
use usocket_test_programs::{a, e, server};

fn main() {
    let l = server(9812, None);
    let c = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
    c.connect(a(9812)).unwrap();
    let (conn, _) = l.accept().unwrap();
    println!("{}", e(l.recv(10)));
    l.setblocking(false).unwrap();
    println!("{}", e(l.recv(10)));
    let f = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
    println!("{}", e(f.accept()));
    f.close();
    conn.close();
    c.close();
    l.close();
}
