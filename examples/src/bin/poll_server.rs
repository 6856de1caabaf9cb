//! A non-blocking line echo server: one guest serves many clients at once with
//! `select::poll`. Every socket is non-blocking; the listener's POLLIN means a client to
//! accept, a client's POLLIN means lines to echo (as received), and end of stream, an error or
//! a hang-up closes that client. Stops after `MAX` clients have come and gone (default: never).
//!
//! At its socket quota (`usocket run --max-sockets`; `accept` fails with ENOMEM) the server
//! keeps serving the clients it has and defers new ones: it stops polling the listener, so
//! they wait in the kernel's backlog, until a client leaves (or, with no client at all, for a
//! second), then accepts them.
//!
//! Run: `usocket run --allow bind=127.0.0.1:7001 --allow listen=127.0.0.1:7001 --allow accept=127.0.0.1:* target/wasm32-wasip2/release/poll_server.wasm 7001`

use std::collections::HashMap;
use std::io::Write as _;
use std::process::ExitCode;

use usocket::select::{self, POLL_CLOSED, POLLERR, POLLHUP, POLLIN, POLLOUT};
use usocket::{Socket, errno};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(port) = args.get(1).and_then(|p| p.parse::<i64>().ok()) else {
        eprintln!("usage: poll_server PORT [MAX]");
        return ExitCode::from(2);
    };
    let max = match args.get(2).map(|m| m.parse::<u64>()) {
        None => u64::MAX,
        Some(Ok(max)) => max,
        Some(Err(_)) => {
            eprintln!("usage: poll_server PORT [MAX]");
            return ExitCode::from(2);
        }
    };
    match serve(port, max) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poll_server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One connected client: its socket, its address (for messages), and the part of its echo
/// that did not fit into the socket yet.
struct Client {
    sock: Socket,
    name: String,
    pending: Vec<u8>,
}

fn serve(port: i64, max: u64) -> usocket::Result<()> {
    let listener = usocket::socket(usocket::AF_INET, usocket::SOCK_STREAM, 0)?;
    listener.setsockopt(usocket::SOL_SOCKET, usocket::SO_REUSEADDR, 1)?;
    listener.bind(("127.0.0.1", port))?;
    listener.listen(None)?;
    listener.setblocking(false)?;
    println!("poll_server: listening on 127.0.0.1:{port}");
    let _ = std::io::stdout().flush();

    let mut poller = select::poll();
    poller.register(&listener, POLLIN);
    // Keyed by socket: `poll` returns sockets, and a server of thousands finds each at once.
    #[allow(
        clippy::mutable_key_type,
        reason = "a Socket hashes its identity, which never changes"
    )]
    let mut clients: HashMap<Socket, Client> = HashMap::new();
    let mut served = 0u64;
    // Whether new clients are deferred (the socket quota is full).
    let mut deferred = false;
    let mut quota_full_at = usize::MAX;
    while served < max {
        // While deferred, look at the quota again every second (a slot may also free up
        // outside this guest, in a ceiling shared with others).
        let ready = poller.poll(if deferred { 1000 } else { -1 })?;
        if deferred && ready.is_empty() {
            deferred = resume(&listener, &mut poller);
        }
        for (sock, revents) in ready {
            if sock == listener {
                if revents & POLLIN != 0 && !deferred {
                    deferred = !accept(&listener, &mut poller, &mut clients)?;
                    if deferred {
                        // Said once for each number of clients the quota is full at.
                        if clients.len() != quota_full_at {
                            println!("poll_server: socket quota full; new clients wait");
                            quota_full_at = clients.len();
                        }
                        poller.unregister(&listener);
                    }
                }
                continue;
            }
            let Some(client) = clients.get_mut(&sock) else {
                continue;
            };
            let done = match service(client, &mut poller, revents) {
                Ok(done) => done,
                Err(e) => {
                    // One bad client must not stop the server: report it and drop it.
                    eprintln!("poll_server: client {}: {e}", client.name);
                    true
                }
            };
            if done {
                let Some(client) = clients.remove(&sock) else {
                    continue;
                };
                poller.unregister(&client.sock);
                client.sock.close();
                println!("poll_server: client {} gone", client.name);
                served += 1;
                // A slot is free again: take the clients that waited.
                if deferred {
                    deferred = resume(&listener, &mut poller);
                }
            }
        }
    }
    listener.close();
    Ok(())
}

/// Polls the listener again; returns the new `deferred` state (false).
fn resume(listener: &Socket, poller: &mut select::Poll) -> bool {
    poller.register(listener, POLLIN);
    false
}

/// Accepts every pending connection and registers each new client for POLLIN. `Ok(false)`
/// when the socket quota is full (ENOMEM): the rest stay pending.
#[allow(
    clippy::mutable_key_type,
    reason = "a Socket hashes its identity, which never changes"
)]
fn accept(
    listener: &Socket,
    poller: &mut select::Poll,
    clients: &mut HashMap<Socket, Client>,
) -> usocket::Result<bool> {
    loop {
        match listener.accept() {
            Ok((sock, (peer, peer_port))) => {
                sock.setblocking(false)?;
                poller.register(&sock, POLLIN);
                let name = format!("{peer}:{peer_port}");
                println!("poll_server: client {name}");
                let client = Client {
                    sock: sock.clone(),
                    name,
                    pending: Vec::new(),
                };
                clients.insert(sock, client);
            }
            // No more pending connections, or one that went away before we took it.
            Err(e) if e.errno() == errno::EAGAIN || e.errno() == errno::ECONNABORTED => {
                return Ok(true);
            }
            // At the socket quota: defer the rest.
            Err(e) if e.errno() == errno::ENOMEM => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Handles one client's events; `Ok(true)` when the client is finished.
fn service(client: &mut Client, poller: &mut select::Poll, revents: u32) -> usocket::Result<bool> {
    if revents & POLLOUT != 0 {
        flush(client)?;
    }
    if revents & POLLIN != 0 && client.pending.is_empty() {
        // Echo one line. A non-blocking `readline` returns a line, or the part of one
        // received so far (echoed as it is: the stream stays the same), or None when nothing
        // is queued. Lines already received after it keep the socket readable, so the next
        // `poll` reports it again at once; reading on until None would mostly end in a read
        // that finds nothing.
        match client.sock.readline()? {
            None => {}
            Some(line) if line.is_empty() => return Ok(true), // end of stream
            Some(line) => {
                client.pending = line;
                flush(client)?;
            }
        }
    } else if revents & (POLLERR | POLLHUP | POLL_CLOSED) != 0 && revents & POLLIN == 0 {
        return Ok(true);
    }
    // While an echo is waiting for room, stop reading that client (so that a client that
    // sends without reading cannot make the server buffer without limit).
    let mask = if client.pending.is_empty() {
        POLLIN
    } else {
        POLLOUT
    };
    poller.register(&client.sock, mask);
    Ok(false)
}

/// Writes what fits of the client's pending echo.
fn flush(client: &mut Client) -> usocket::Result<()> {
    if client.pending.is_empty() {
        return Ok(());
    }
    // None: nothing fit (the socket is full); POLLOUT will tell when there is room.
    if let Some(n) = client.sock.write(&client.pending)? {
        client.pending.drain(..n);
    }
    Ok(())
}
