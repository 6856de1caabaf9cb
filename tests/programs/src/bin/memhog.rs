//! A guest that asks for memory in a loop: `memhog MODE CHUNK_MIB`. Each round allocates
//! CHUNK_MIB MiB, touches every page of it (so that the host really backs it) and keeps it;
//! after 2 GiB asked it stops (a bound: without a memory limit it prints `done 2048`).
//!
//! Modes: `try` asks with `Vec::try_reserve_exact` and prints `refused N` when an allocation
//! fails (N: the MiB held then) and exits 0; `abort` allocates with `Vec::with_capacity`, so a
//! failed allocation aborts the guest (a trap). Both print `held N` after each round.

use std::io::Write as _;

/// The most the guest asks for in all.
const MAX_MIB: usize = 2048;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, chunk) = match (
        args.first().map(String::as_str),
        args.get(1).and_then(|c| c.parse::<usize>().ok()),
    ) {
        (Some(mode @ ("try" | "abort")), Some(chunk)) if chunk > 0 => (mode, chunk),
        _ => {
            eprintln!("usage: memhog try|abort CHUNK_MIB");
            std::process::exit(2);
        }
    };
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total = 0;
    while total + chunk <= MAX_MIB {
        let size = chunk << 20;
        let mut block: Vec<u8> = if mode == "try" {
            let mut v = Vec::new();
            if v.try_reserve_exact(size).is_err() {
                println!("refused {total}");
                return;
            }
            v
        } else {
            Vec::with_capacity(size)
        };
        // Touch every page: the memory is really used, not only reserved.
        block.resize(size, 1);
        held.push(block);
        total += chunk;
        println!("held {total}");
        let _ = std::io::stdout().flush();
    }
    std::hint::black_box(&held);
    println!("done {total}");
}
