//! 26_constants: every constant and errno number; no socket.timeout/error/gaierror.
use usocket::{self as socket, errno, select};

fn main() {
    println!(
        "{} {} {} {}",
        socket::AF_INET,
        socket::AF_INET6,
        socket::SOCK_STREAM,
        socket::SOCK_DGRAM
    );
    println!(
        "{} {} {} {}",
        socket::IPPROTO_IP,
        socket::IPPROTO_TCP,
        socket::IPPROTO_UDP,
        socket::IPPROTO_IPV6
    );
    println!(
        "{} {} {} {} {}",
        socket::SOL_SOCKET,
        socket::SO_REUSEADDR,
        socket::SO_BROADCAST,
        socket::SO_KEEPALIVE,
        socket::TCP_NODELAY
    );
    println!("{} {}", socket::MSG_PEEK, socket::MSG_DONTWAIT);
    println!(
        "{} {} {} {}",
        select::POLLIN,
        select::POLLOUT,
        select::POLLERR,
        select::POLLHUP
    );
    println!(
        "{} {} {} {} {} {} {} {}",
        errno::EPERM,
        errno::ENOENT,
        errno::EIO,
        errno::EBADF,
        errno::EAGAIN,
        errno::ENOMEM,
        errno::EACCES,
        errno::EEXIST
    );
    println!(
        "{} {} {} {} {} {}",
        errno::EINVAL,
        errno::EPIPE,
        errno::ENOPROTOOPT,
        errno::EOPNOTSUPP,
        errno::EAFNOSUPPORT,
        errno::EADDRINUSE
    );
    println!(
        "{} {} {} {} {} {}",
        errno::EADDRNOTAVAIL,
        errno::ENETUNREACH,
        errno::ECONNABORTED,
        errno::ECONNRESET,
        errno::ENOBUFS,
        errno::EISCONN
    );
    println!(
        "{} {} {} {} {} {}",
        errno::ENOTCONN,
        errno::ETIMEDOUT,
        errno::ECONNREFUSED,
        errno::EHOSTUNREACH,
        errno::EALREADY,
        errno::EINPROGRESS
    );
    // hasattr(socket, "timeout"), hasattr(socket, "error"), hasattr(socket, "gaierror"):
    // the Rust API has no such items (a reference to `socket::timeout`, `socket::error` or
    // `socket::gaierror` does not compile); every failure is an `OSError`.
    println!("False False False");
}
