//! Ending the program with an exit code the host sees.
//!
//! Rust's `std::process::exit(n)` on wasm32-wasip2 reports only success or failure (any n other
//! than 0 arrives as 1), because it uses wasi:cli's original `exit(result)`. [`exit`] uses
//! `exit-with-code` of wasi:cli 0.2.12, which the `usocket` host (wasmtime 48) links, so a
//! program's own status codes reach the shell.

mod bindings {
    // The interface as wasi:cli 0.2.12 states it: std imports an older wasi:cli/exit, and the
    // component linker merges the two into one import only if this one is a superset.
    wit_bindgen::generate!({
        inline: "
            package wasi:cli@0.2.12;
            @since(version = 0.2.0)
            interface exit {
                @since(version = 0.2.0)
                exit: func(status: result);
                @since(version = 0.2.12)
                exit-with-code: func(status-code: u8);
            }
            world exit-code {
                import exit;
            }
        ",
    });
}

/// Ends the program now with `code` as its exit status (0 to 255), like `std::process::exit`,
/// without running destructors; stdout is flushed first.
pub fn exit(code: u8) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    bindings::wasi::cli::exit::exit_with_code(code);
    // The host never returns from exit-with-code; a host without it traps instead.
    std::process::exit(i32::from(code))
}
