//! Embedding as a wasmtime-wasi user does it, without `Runner`: a synchronous host of its own
//! (`add_to_linker_sync` beside wasmtime-wasi's), an embedder's own address check, a typed
//! audit hook, and a `Canceller` stopping a guest blocked in a host call.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use usocket_host::audit::{AuditEvent, Verdict};
use usocket_host::policy::{AddrCheck, Use};
use usocket_host::{UsocketCtx, UsocketCtxView, UsocketView};
use usocket_tests::guest_path;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct Host {
    wasi: WasiCtx,
    usocket: UsocketCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl UsocketView for Host {
    fn usocket(&mut self) -> UsocketCtxView<'_> {
        UsocketCtxView {
            ctx: &mut self.usocket,
            table: &mut self.table,
        }
    }
}

/// A synchronous engine and linker, and the `http_get` example compiled for it, once.
fn sync_host() -> &'static (Engine, Linker<Host>, Component) {
    static HOST: OnceLock<(Engine, Linker<Host>, Component)> = OnceLock::new();
    HOST.get_or_init(|| {
        let engine = Engine::default();
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        usocket_host::add_to_linker_sync(&mut linker).unwrap();
        let component = Component::from_file(&engine, guest_path("http_get")).unwrap();
        (engine, linker, component)
    })
}

/// Runs `http_get 127.0.0.1 PORT` synchronously on this thread: its result and stdout.
fn run_http_get(usocket: UsocketCtx, port: u16) -> (wasmtime::Result<Result<(), ()>>, String) {
    let (engine, linker, component) = sync_host();
    let stdout = MemoryOutputPipe::new(1 << 20);
    let argv = ["http_get".to_string(), "127.0.0.1".into(), port.to_string()];
    let host = Host {
        wasi: WasiCtx::builder()
            .stdout(stdout.clone())
            .args(&argv)
            .build(),
        usocket,
        table: ResourceTable::new(),
    };
    let mut store = Store::new(engine, host);
    let result = Command::instantiate(&mut store, component, linker)
        .and_then(|command| command.wasi_cli_run().call_run(&mut store));
    drop(store);
    let out = String::from_utf8_lossy(&stdout.contents()).into_owned();
    (result, out)
}

/// Only connections to `port` on loopback (and the implicit bind they cause).
fn only_port(port: u16) -> Arc<AddrCheck<impl Fn(Use, std::net::SocketAddr) -> bool>> {
    Arc::new(AddrCheck::new("test-check", move |use_, addr| match use_ {
        Use::Connect => addr.ip().is_loopback() && addr.port() == port,
        Use::AutoBind => true,
        _ => false,
    }))
}

#[test]
fn a_sync_host_runs_a_guest_under_its_own_check_and_audit_hook() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let serving = std::thread::spawn(move || {
        let mut conn = accept_within(&server, Duration::from_secs(20));
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // The guest's `sendall`, through the sync linker's send from guest memory.
        let mut request = Vec::new();
        let mut buf = [0u8; 256];
        while !request.ends_with(b"\r\n\r\n") {
            match conn.read(&mut buf).unwrap() {
                0 => break,
                n => request.extend_from_slice(&buf[..n]),
            }
        }
        conn.write_all(b"HTTP/1.0 200 OK\r\n\r\nhello from a sync host\n")
            .unwrap();
        request
    });
    let events: Arc<Mutex<Vec<AuditEvent>>> = Arc::default();
    let seen = events.clone();
    let usocket = UsocketCtx::new("sync-guest", only_port(port)).with_audit(Arc::new(
        move |e: &AuditEvent| seen.lock().unwrap().push(e.clone()),
    ));
    let (result, stdout) = run_http_get(usocket, port);
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    assert!(stdout.ends_with("hello from a sync host\n"), "{stdout:?}");
    let request = serving.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&request),
        "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    );
    let events = events.lock().unwrap();
    let connect = events
        .iter()
        .find(|e| e.use_ == Use::Connect)
        .expect("a connect decision");
    assert_eq!(connect.verdict, Verdict::Allow);
    assert_eq!(connect.target.to_string(), format!("127.0.0.1:{port}"));
    assert_eq!(connect.reason(), "allowed by test-check");
    assert_eq!(&*connect.guest, "sync-guest");
}

#[test]
fn an_embedders_check_refuses_what_it_does_not_allow() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    server.set_nonblocking(true).unwrap();
    // The check allows another port only.
    let usocket = UsocketCtx::new("sync-guest", only_port(port.wrapping_add(1)));
    let stats = usocket.stats();
    let (result, _) = run_http_get(usocket, port);
    assert!(
        matches!(result, Ok(Err(()))),
        "the guest reports EACCES: {result:?}"
    );
    assert_eq!(stats.denied.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        stats.by_reason().get("connect: denied by test-check"),
        Some(&1),
        "{:?}",
        stats.by_reason()
    );
    assert!(server.accept().is_err(), "nothing reached the server");
}

/// Accepts one connection within `limit` (a bounded wait, so a test never hangs on it).
fn accept_within(server: &TcpListener, limit: Duration) -> std::net::TcpStream {
    server.set_nonblocking(true).unwrap();
    let until = Instant::now() + limit;
    loop {
        match server.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                return conn;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("no connection within {limit:?}: {e}"),
        }
    }
}

#[test]
fn a_canceller_stops_a_guest_blocked_in_a_host_call() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let usocket = UsocketCtx::new("blocked-guest", only_port(port));
    let canceller = usocket.canceller();
    // Reads the request and then says nothing, so the guest blocks in read() for good; once
    // it is blocked there, cancels it and waits for the connection to close.
    let silent = std::thread::spawn(move || {
        let mut conn = accept_within(&server, Duration::from_secs(20));
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = [0u8; 1024];
        let request = conn.read(&mut buf).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let cancelled_at = Instant::now();
        canceller.cancel();
        let end = conn.read(&mut buf);
        (request, end.map_err(|e| e.kind()), cancelled_at.elapsed())
    });
    let (result, _) = run_http_get(usocket, port);
    let err = result.expect_err("a cancelled guest traps");
    assert!(format!("{err:?}").contains("cancelled"), "{err:?}");
    let (request, end, took) = silent.join().unwrap();
    assert!(request > 0, "the guest had sent its request");
    assert_eq!(
        end,
        Ok(0),
        "the guest's socket closed (FIN) when its store went"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A host with a `bindgen!` world of its own that imports `usocket:net/usocket`, mapped onto
/// usocket-host's bindings with `with:` (as wasmtime-wasi's bindings are mapped).
mod own_world {
    wasmtime::component::bindgen!({
        inline: "package my:host; world plugin { import usocket:net/usocket@0.1.0; }",
        path: ["../host/wit"],
        world: "my:host/plugin",
        imports: { default: async | trappable },
        with: { "usocket:net/usocket": usocket_host::bindings::usocket::net::usocket },
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_world_of_its_own_maps_usocket_with_with() {
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    let serving = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut conn, _) = server.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 256];
        while !request.ends_with(b"\r\n\r\n") {
            match conn.read(&mut buf).await.unwrap() {
                0 => break,
                n => request.extend_from_slice(&buf[..n]),
            }
        }
        conn.write_all(b"HTTP/1.0 200 OK\r\n\r\nmapped\n")
            .await
            .unwrap();
        request
    });
    let engine = Engine::default();
    let mut linker = Linker::<Host>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    own_world::Plugin::add_to_linker::<Host, usocket_host::Usocket>(&mut linker, |h| h.usocket())
        .unwrap();
    // The generated functions copy what the guest sends; this makes them send from its memory.
    usocket_host::bindings::redefine_sends_async(&mut linker).unwrap();
    let component = Component::from_file(&engine, guest_path("http_get")).unwrap();
    let stdout = MemoryOutputPipe::new(1 << 20);
    let argv = ["http_get".to_string(), "127.0.0.1".into(), port.to_string()];
    let host = Host {
        wasi: WasiCtx::builder()
            .stdout(stdout.clone())
            .args(&argv)
            .build(),
        usocket: UsocketCtx::new("own-world", only_port(port)),
        table: ResourceTable::new(),
    };
    let mut store = Store::new(&engine, host);
    let command =
        wasmtime_wasi::p2::bindings::Command::instantiate_async(&mut store, &component, &linker)
            .await
            .unwrap();
    let result = command.wasi_cli_run().call_run(&mut store).await.unwrap();
    assert_eq!(result, Ok(()));
    let out = String::from_utf8_lossy(&stdout.contents()).into_owned();
    assert!(out.ends_with("mapped\n"), "{out:?}");
    let request = serving.await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&request),
        "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    );
}
