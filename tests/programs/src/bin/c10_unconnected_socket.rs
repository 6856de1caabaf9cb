//! 10_unconnected_socket: on a fresh TCP socket recv/read/readline/readinto and
//! send/write/sendall fail with ENOTCONN, also in non-blocking mode.
use usocket as socket;
use usocket_test_programs::e;

fn main() {
    let s = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
    println!("{}", e(s.recv(1)));
    println!("{}", e(s.read(1)));
    println!("{}", e(s.send(b"x")));
    println!("{} {}", e(s.write(b"x")), e(s.sendall(b"x")));
    println!("{} {}", e(s.readline()), e(s.readinto(&mut [0u8; 1])));
    s.settimeout(Some(0.0)).unwrap();
    println!("{} {}", e(s.recv(1)), e(s.send(b"x")));
    s.close();
}
