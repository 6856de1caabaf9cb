//! A wasmtime host for `usocket`: MicroPython-style sockets for WebAssembly components,
//! scoped by a deny-by-default [`Policy`].
//!
//! The behaviour guests get is the contract in `docs/contract.md` of this repository; the
//! interface is `wit/usocket.wit` (shipped in this crate).
//!
//! # Embedding
//!
//! Put a [`UsocketCtx`] in your `Store` data, implement [`UsocketView`] (sharing the
//! `ResourceTable` your `WasiView` uses), and call [`add_to_linker_async`] or
//! [`add_to_linker_sync`] beside wasmtime-wasi's own. An async host:
//!
//! ```
//! use std::sync::Arc;
//! use usocket_host::{Policy, UsocketCtx, UsocketCtxView, UsocketView};
//! use wasmtime::component::{Linker, ResourceTable};
//! use wasmtime::{Config, Engine, Store};
//! use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
//!
//! struct Host {
//!     wasi: WasiCtx,
//!     usocket: UsocketCtx,
//!     table: ResourceTable,
//! }
//! impl WasiView for Host {
//!     fn ctx(&mut self) -> WasiCtxView<'_> {
//!         WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
//!     }
//! }
//! impl UsocketView for Host {
//!     fn usocket(&mut self) -> UsocketCtxView<'_> {
//!         UsocketCtxView { ctx: &mut self.usocket, table: &mut self.table }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = Config::new();
//! config.epoch_interruption(true); // so a spinning guest can be stopped, see below
//! let engine = Engine::new(&config)?;
//! let mut linker = Linker::<Host>::new(&engine);
//! wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
//! usocket_host::add_to_linker_async(&mut linker)?;
//!
//! let policy = Policy::from_texts(
//!     &["connect=127.0.0.1:8080"],  // allow
//!     &["connect=metadata:*"],      // deny
//!     cap_std::ambient_authority(),
//! )?;
//! let host = Host {
//!     wasi: WasiCtx::builder().inherit_stdio().build(),
//!     usocket: UsocketCtx::new("plugin-a", Arc::new(policy)),
//!     table: ResourceTable::new(),
//! };
//! let store = Store::new(&engine, host);
//! // Instantiate a component with `linker.instantiate_async(&mut store, &component)`, or
//! // `wasmtime_wasi::p2::bindings::Command::instantiate_async` for a wasi:cli command.
//! # drop(store);
//! # Ok(())
//! # }
//! ```
//!
//! A synchronous host is the same with `add_to_linker_sync` on both sides (guests then run
//! with `instantiate` and `call_run`; each blocking socket call blocks the calling thread):
//!
//! ```
//! # use std::sync::Arc;
//! # use usocket_host::{Policy, UsocketCtx, UsocketCtxView, UsocketView};
//! # use wasmtime::component::{Linker, ResourceTable};
//! # use wasmtime::{Engine, Store};
//! # use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
//! # struct Host { wasi: WasiCtx, usocket: UsocketCtx, table: ResourceTable }
//! # impl WasiView for Host {
//! #     fn ctx(&mut self) -> WasiCtxView<'_> { WasiCtxView { ctx: &mut self.wasi, table: &mut self.table } }
//! # }
//! # impl UsocketView for Host {
//! #     fn usocket(&mut self) -> UsocketCtxView<'_> { UsocketCtxView { ctx: &mut self.usocket, table: &mut self.table } }
//! # }
//! # fn main() -> wasmtime::Result<()> {
//! let engine = Engine::default();
//! let mut linker = Linker::<Host>::new(&engine);
//! wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
//! usocket_host::add_to_linker_sync(&mut linker)?;
//! let host = Host {
//!     wasi: WasiCtx::builder().build(),
//!     usocket: UsocketCtx::new("plugin-b", Arc::new(Policy::deny_all())),
//!     table: ResourceTable::new(),
//! };
//! let store = Store::new(&engine, host);
//! # drop((store, linker));
//! # Ok(())
//! # }
//! ```
//!
//! [`run::Runner`] does all of this for `wasi:cli` command components.
//!
//! # Limits and stopping a guest
//!
//! - Each guest's [`Limits`] (sockets, buffered and transferred bytes, rate) are in its
//!   context; a [`SocketCeiling`] that you create and share (`UsocketCtx::with_ceiling`)
//!   bounds the sockets of a group of guests together. Running out (or the process running
//!   out of descriptors) reaches the guest as ENOMEM.
//! - A guest running wasm code is stopped by wasmtime's epoch deadlines. A guest blocked in a
//!   `usocket` call is not (it runs no wasm): drop the future that runs it (async hosts; e.g.
//!   `tokio::time::timeout`), or call [`Canceller::cancel`] from any thread
//!   ([`UsocketCtx::canceller`]; sync or async hosts), which makes that call and every later
//!   one trap. Either way, dropping the `Store` closes every socket the guest had open.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod audit;
pub mod bindings;
mod ctx;
pub mod errno;
mod gate;
pub mod limits;
pub mod policy;
pub mod policy_file;
mod quota;
pub mod resolver;
pub mod run;
mod socket;
mod stats;
pub mod tls;

pub use bindings::{Usocket, add_to_linker_async, add_to_linker_sync};
pub use ctx::{Canceller, UsocketCtx, UsocketCtxView, UsocketView};
pub use errno::Errno;
pub use limits::Limits;
pub use policy::{AddrCheck, AddressPolicy, Decision, Policy, PolicyBuilder, Rule, Use};
pub use quota::SocketCeiling;
pub use socket::Socket;
pub use stats::Stats;
pub use tls::{TlsConfig, TlsConfigError};

/// The README's Rust examples, compiled and run as doctests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
