//! A line echo server: listen, accept, then readline/write until the client closes.
//! Serves clients one after another; stops after `MAX` clients (default: forever).
//!
//! Run: `usocket run --allow bind=127.0.0.1:7000 --allow listen=127.0.0.1:7000 --allow accept=127.0.0.1:* target/wasm32-wasip2/release/echo_server.wasm 7000`

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(port) = args.get(1).and_then(|p| p.parse::<i64>().ok()) else {
        eprintln!("usage: echo_server PORT [MAX]");
        return ExitCode::from(2);
    };
    let max = args
        .get(2)
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    match serve(port, max) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(port: i64, max: u64) -> usocket::Result<()> {
    let listener = usocket::socket(usocket::AF_INET, usocket::SOCK_STREAM, 0)?;
    listener.setsockopt(usocket::SOL_SOCKET, usocket::SO_REUSEADDR, 1)?;
    listener.bind(("127.0.0.1", port))?;
    listener.listen(None)?;
    println!("echo_server: listening on 127.0.0.1:{port}");
    for _ in 0..max {
        let (conn, (peer, peer_port)) = listener.accept()?;
        println!("echo_server: client {peer}:{peer_port}");
        // One bad client must not stop the server: report its error and go on.
        if let Err(e) = echo(&conn) {
            eprintln!("echo_server: client {peer}:{peer_port}: {e}");
        }
        conn.close();
    }
    Ok(())
}

fn echo(conn: &usocket::Socket) -> usocket::Result<()> {
    while let Some(line) = conn.readline()? {
        if line.is_empty() {
            break;
        }
        conn.write(&line)?;
    }
    Ok(())
}
