//! A synchronous wasmtime host of its own that gives a `wasi:cli` command component
//! `usocket`, the way an embedder would: wasmtime-wasi and usocket share one `ResourceTable`;
//! the address check is the embedder's own closure; every decision reaches an audit hook; the
//! guest's sockets count against a ceiling the host owns; and a watchdog thread stops the guest
//! after a time limit even while it is blocked in a socket call (where epoch deadlines cannot
//! reach it).
//!
//! ```text
//! cargo run -p usocket-embed-example -- GUEST.wasm PORT [SECONDS] [GUEST ARGS]...
//! ```
//!
//! The guest may connect to 127.0.0.1:PORT and nothing else.

use std::sync::Arc;
use std::time::Duration;

use usocket_host::audit::AuditEvent;
use usocket_host::policy::{AddrCheck, Use};
use usocket_host::{SocketCeiling, UsocketCtx, UsocketCtxView, UsocketView};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

/// The host's `Store` data: WASI, usocket, and the table they share.
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

fn main() -> wasmtime::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [component, port, rest @ ..] = args.as_slice() else {
        wasmtime::bail!("usage: embed GUEST.wasm PORT [SECONDS] [GUEST ARGS]...");
    };
    let port: u16 = port
        .parse()
        .map_err(|_| wasmtime::format_err!("PORT `{port}`: give a port number 1-65535"))?;
    let (seconds, guest_args) = match rest.split_first() {
        Some((s, more)) if s.parse::<u64>().is_ok() => (s.parse::<u64>()?, more),
        _ => (10, rest),
    };

    let engine = Engine::default();
    let mut linker = Linker::<Host>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    usocket_host::add_to_linker_sync(&mut linker)?;

    // The embedder's own rule, as a closure: connect to 127.0.0.1:PORT (and bind implicitly
    // for it); nothing else.
    let check = AddrCheck::new(
        format!("connect-127.0.0.1:{port}-only"),
        move |use_, addr| match use_ {
            Use::Connect => addr.ip().is_loopback() && addr.port() == port,
            Use::AutoBind => true,
            _ => false,
        },
    );
    let audit = |event: &AuditEvent| {
        eprintln!(
            "audit: {} {} {} ({})",
            event.verdict,
            event.use_.keyword(),
            event.target,
            event.reason()
        );
    };
    let ceiling = SocketCeiling::new(32); // shared by every guest this host would run
    let usocket = UsocketCtx::new("embedded-guest", Arc::new(check))
        .with_ceiling(ceiling)
        .with_audit(Arc::new(audit));

    // A watchdog: cancelling makes the guest's current (blocked) and later socket calls trap.
    let canceller = usocket.canceller();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(seconds));
        canceller.cancel();
    });

    let mut argv = vec![component.clone()];
    argv.extend(guest_args.iter().cloned());
    let host = Host {
        wasi: WasiCtx::builder().inherit_stdio().args(&argv).build(),
        usocket,
        table: ResourceTable::new(),
    };
    let mut store = Store::new(&engine, host);
    let component = Component::from_file(&engine, component)?;
    let command = Command::instantiate(&mut store, &component, &linker)?;
    let code = match command.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => 0,
        Ok(Err(())) => 1,
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => exit.0,
            None => return Err(e),
        },
    };
    std::process::exit(code);
}
