//! A UDP echo server: `recvfrom` a datagram, `sendto` it back to its sender, as it is.
//! Stops after `COUNT` datagrams (default: never). Replying is a `sendto`, which the policy
//! checks as a connect use: grant the senders' addresses with `connect=`.
//!
//! Run: `usocket run --allow bind=127.0.0.1:7002 --allow recv=127.0.0.1:* --allow send=127.0.0.1:* target/wasm32-wasip2/release/udp_echo.wasm 7002`

use std::io::Write as _;
use std::process::ExitCode;

/// The largest UDP payload: no datagram is ever truncated.
const MAX_DATAGRAM: usize = 65535;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(port) = args.get(1).and_then(|p| p.parse::<i64>().ok()) else {
        eprintln!("usage: udp_echo PORT [COUNT]");
        return ExitCode::from(2);
    };
    let count = match args.get(2).map(|c| c.parse::<u64>()) {
        None => u64::MAX,
        Some(Ok(count)) => count,
        Some(Err(_)) => {
            eprintln!("usage: udp_echo PORT [COUNT]");
            return ExitCode::from(2);
        }
    };
    match serve(port, count) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp_echo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(port: i64, count: u64) -> usocket::Result<()> {
    let sock = usocket::socket(usocket::AF_INET, usocket::SOCK_DGRAM, 0)?;
    sock.bind(("127.0.0.1", port))?;
    println!("udp_echo: listening on 127.0.0.1:{port}");
    let _ = std::io::stdout().flush();
    for _ in 0..count {
        let (data, (peer, peer_port)) = sock.recvfrom(MAX_DATAGRAM)?;
        // A reply that fails (not granted, say) loses that datagram only: report it, go on.
        if let Err(e) = sock.sendto(&data, (peer.as_str(), peer_port)) {
            eprintln!("udp_echo: reply to {peer}:{peer_port}: {e}");
        }
    }
    sock.close();
    Ok(())
}
