//! A wasmtime host for `usocket`: MicroPython-style sockets for WebAssembly components,
//! scoped by a deny-by-default [`Policy`].

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
mod bindings;
pub mod ctx;
pub mod errno;
pub mod policy;
pub mod policy_file;
pub mod poll;
pub mod resolve;
pub mod run;
pub mod socket;

pub use bindings::add_to_linker;
pub use ctx::{Limits, Stats, UsocketCtx, UsocketCtxView, UsocketView};
pub use errno::Errno;
pub use policy::{Decision, Policy, PolicyBuilder, Rule, Use};
