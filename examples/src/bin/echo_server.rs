//! A line echo server: listen, accept, then readline/write until the client closes.
//! Serves clients one after another; stops after `MAX` clients (default: forever).
//!
//! Each call on a client's socket has a timeout of `TIMEOUT` seconds (default 30): a client
//! that sends no whole line for that long, or does not read its echoes, is dropped, so one
//! slow or silent client cannot keep the server from the others for longer than that. (For
//! many clients at once, see `poll_server`.)
//!
//! Run: `usocket run --allow bind=127.0.0.1:7000 --allow listen=127.0.0.1:7000 --allow accept=127.0.0.1:* target/wasm32-wasip2/release/echo_server.wasm 7000 [MAX [TIMEOUT]]`

use std::process::ExitCode;

use usocket::errno;

const USAGE: &str = "usage: echo_server PORT [MAX [TIMEOUT_SECS]]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(port) = args.get(1).and_then(|p| p.parse::<i64>().ok()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let max = args
        .get(2)
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let timeout = match args.get(3).map(|t| t.parse::<f64>()) {
        None => 30.0,
        Some(Ok(t)) if t > 0.0 && t.is_finite() => t,
        Some(_) => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(port, max, timeout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(port: i64, max: u64, timeout: f64) -> usocket::Result<()> {
    let listener = usocket::socket(usocket::AF_INET, usocket::SOCK_STREAM, 0)?;
    listener.setsockopt(usocket::SOL_SOCKET, usocket::SO_REUSEADDR, 1)?;
    listener.bind(("127.0.0.1", port))?;
    listener.listen(None)?;
    println!("echo_server: listening on 127.0.0.1:{port}");
    for _ in 0..max {
        let (conn, (peer, peer_port)) = listener.accept()?;
        println!("echo_server: client {peer}:{peer_port}");
        // One bad client must not stop the server: report its error and go on.
        match conn.settimeout(Some(timeout)).and_then(|()| echo(&conn)) {
            Ok(()) => {}
            Err(e) if e.errno() == errno::ETIMEDOUT => {
                eprintln!(
                    "echo_server: client {peer}:{peer_port}: no progress for {timeout} s, dropped"
                );
            }
            Err(e) => eprintln!("echo_server: client {peer}:{peer_port}: {e}"),
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
