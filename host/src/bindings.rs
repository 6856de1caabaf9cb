//! The only `bindgen!` call, and thin adapters from the generated traits to [`crate::socket`].
//!
//! Each method looks up the guest's socket, calls the state machine, and converts the
//! result; no socket behaviour lives here.

use std::net::SocketAddr;

use wasmtime::component::{HasData, Linker, Resource};

use crate::addr;
use crate::ctx::{UsocketCtxView, UsocketView};
use crate::errno::{Errno, SockResult};
use crate::socket::Socket;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "usocket-command",
    imports: { default: async | trappable },
    with: { "usocket:net/usocket.socket": crate::socket::Socket },
});

use usocket::net::usocket::{self as wit, Addrinfo, Errno as WitErrno, Sockaddr, SockoptValue};

/// Adds the `usocket` interface to `linker`.
pub fn add_to_linker<T: UsocketView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, UsocketBinding<T>>(linker, T::usocket)
}

struct UsocketBinding<T>(T);

impl<T: 'static> HasData for UsocketBinding<T> {
    type Data<'a> = UsocketCtxView<'a>;
}

type Res<T> = wasmtime::Result<Result<T, WitErrno>>;

fn out<T>(r: SockResult<T>) -> Res<T> {
    Ok(r.map_err(|e: Errno| e.0))
}

fn sockaddr(addr: SocketAddr) -> Sockaddr {
    Sockaddr {
        address: addr::literal(&addr),
        port: i32::from(addr.port()),
    }
}

/// Sizes from the guest are u32; a host with a smaller usize clamps them.
fn size(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn u32_len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl wit::Host for UsocketCtxView<'_> {
    async fn poll(
        &mut self,
        sockets: Vec<(Resource<Socket>, u32)>,
        timeout_ms: i32,
    ) -> Res<Vec<u32>> {
        let mut entries = Vec::with_capacity(sockets.len());
        for (res, mask) in &sockets {
            entries.push((self.table.get(res)?, *mask));
        }
        out(crate::poll::poll(&entries, timeout_ms).await)
    }

    async fn getaddrinfo(
        &mut self,
        host: String,
        port: i32,
        family: i32,
        socktype: i32,
        proto: i32,
        _flags: i32,
    ) -> Res<Vec<Addrinfo>> {
        let found =
            crate::resolve::getaddrinfo(&mut *self.ctx, &host, port, family, socktype, proto).await;
        out(found.map(|list| {
            list.into_iter()
                .map(|info| Addrinfo {
                    family: info.family.af(),
                    socktype: info.kind.number(),
                    proto: info.kind.proto(),
                    canonname: String::new(),
                    sockaddr: sockaddr(info.addr),
                })
                .collect()
        }))
    }
}

impl wit::HostSocket for UsocketCtxView<'_> {
    async fn create(&mut self, family: i32, socktype: i32, proto: i32) -> Res<Resource<Socket>> {
        match Socket::create(self.ctx, family, socktype, proto) {
            Ok(sock) => Ok(Ok(self.table.push(sock)?)),
            Err(e) => out(Err(e)),
        }
    }

    async fn bind(&mut self, this: Resource<Socket>, addr: Sockaddr) -> Res<()> {
        let sock = self.table.get_mut(&this)?;
        out(sock.bind(self.ctx, &addr.address, addr.port))
    }

    async fn listen(&mut self, this: Resource<Socket>, backlog: i32) -> Res<()> {
        let sock = self.table.get_mut(&this)?;
        out(sock.listen(self.ctx, backlog))
    }

    async fn accept(&mut self, this: Resource<Socket>) -> Res<(Resource<Socket>, Sockaddr)> {
        let sock = self.table.get_mut(&this)?;
        match sock.accept(self.ctx).await {
            Ok((conn, peer)) => Ok(Ok((self.table.push(conn)?, sockaddr(peer)))),
            Err(e) => out(Err(e)),
        }
    }

    async fn connect(&mut self, this: Resource<Socket>, addr: Sockaddr) -> Res<()> {
        let sock = self.table.get_mut(&this)?;
        out(sock.connect(self.ctx, &addr.address, addr.port).await)
    }

    async fn send(&mut self, this: Resource<Socket>, data: Vec<u8>) -> Res<u32> {
        let sock = self.table.get_mut(&this)?;
        out(sock.send(self.ctx, &data).await.map(u32_len))
    }

    async fn write(&mut self, this: Resource<Socket>, data: Vec<u8>) -> Res<u32> {
        let sock = self.table.get_mut(&this)?;
        out(sock.write(self.ctx, &data).await.map(u32_len))
    }

    async fn send_to(&mut self, this: Resource<Socket>, data: Vec<u8>, addr: Sockaddr) -> Res<u32> {
        let sock = self.table.get_mut(&this)?;
        out(sock
            .send_to(self.ctx, &data, &addr.address, addr.port)
            .await
            .map(u32_len))
    }

    async fn recv(&mut self, this: Resource<Socket>, max: u32, flags: i32) -> Res<Vec<u8>> {
        let sock = self.table.get_mut(&this)?;
        out(sock.recv(self.ctx, size(max), flags).await)
    }

    async fn recv_from(
        &mut self,
        this: Resource<Socket>,
        max: u32,
        flags: i32,
    ) -> Res<(Vec<u8>, Sockaddr)> {
        let sock = self.table.get_mut(&this)?;
        out(sock
            .recv_from(self.ctx, size(max), flags)
            .await
            .map(|(data, from)| (data, sockaddr(from))))
    }

    async fn read(&mut self, this: Resource<Socket>, n: Option<u32>) -> Res<Option<Vec<u8>>> {
        let sock = self.table.get_mut(&this)?;
        out(sock.read(self.ctx, n.map(size)).await)
    }

    async fn readline(
        &mut self,
        this: Resource<Socket>,
        limit: Option<u32>,
    ) -> Res<Option<Vec<u8>>> {
        let sock = self.table.get_mut(&this)?;
        out(sock.readline(self.ctx, limit.map(size)).await)
    }

    async fn readline_ahead(
        &mut self,
        this: Resource<Socket>,
        limit: Option<u32>,
        ahead: u32,
    ) -> Res<Option<(Vec<u8>, Vec<u8>)>> {
        let sock = self.table.get_mut(&this)?;
        out(sock
            .readline_ahead(self.ctx, limit.map(size), size(ahead))
            .await)
    }

    async fn unread(&mut self, this: Resource<Socket>, data: Vec<u8>) -> Res<()> {
        let sock = self.table.get_mut(&this)?;
        out(sock.unread(self.ctx, &data))
    }

    async fn close(&mut self, this: Resource<Socket>) -> wasmtime::Result<()> {
        self.table.get_mut(&this)?.close();
        Ok(())
    }

    async fn set_timeout(&mut self, this: Resource<Socket>, seconds: Option<f64>) -> Res<()> {
        out(self.table.get_mut(&this)?.set_timeout(seconds))
    }

    async fn set_sockopt(
        &mut self,
        this: Resource<Socket>,
        level: i32,
        name: i32,
        value: SockoptValue,
    ) -> Res<()> {
        let sock = self.table.get_mut(&this)?;
        let value = match value {
            SockoptValue::Int(n) => Ok(n),
            // A C int of 1-4 bytes in the host's (= wasm's little-endian) byte order.
            SockoptValue::Bytes(b) if (1..=4).contains(&b.len()) => {
                let mut word = [0u8; 4];
                word[..b.len()].copy_from_slice(&b);
                Ok(i32::from_le_bytes(word))
            }
            SockoptValue::Bytes(_) => Err(Errno::EINVAL),
        };
        out(sock
            .ensure_open()
            .and(value)
            .and_then(|v| sock.set_option(level, name, v)))
    }

    async fn kind(&mut self, this: Resource<Socket>) -> Res<(i32, i32)> {
        let sock = self.table.get(&this)?;
        out(sock
            .ensure_open()
            .map(|()| (sock.family().af(), sock.kind().number())))
    }

    async fn local_address(&mut self, this: Resource<Socket>) -> Res<Sockaddr> {
        out(self.table.get(&this)?.local_address().map(sockaddr))
    }

    async fn peer_address(&mut self, this: Resource<Socket>) -> Res<Sockaddr> {
        out(self.table.get(&this)?.peer_address().map(sockaddr))
    }

    async fn drop(&mut self, this: Resource<Socket>) -> wasmtime::Result<()> {
        // Dropping the state machine closes the OS socket and gives the quota slot back.
        self.table.delete(this)?;
        Ok(())
    }
}
