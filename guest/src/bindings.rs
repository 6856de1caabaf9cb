//! The generated bindings of `wit/usocket.wit` (private).
wit_bindgen::generate!({
    path: "../wit",
    world: "usocket-command",
});
