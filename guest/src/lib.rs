#[allow(unsafe_code, missing_docs)]
mod bindings;
pub fn f() { let _ = bindings::usocket::net::usocket::Socket::create(2,1,0); }
