//! The guest that `usocket demo` runs: one connection the host granted, one it did not.
//!
//! Arguments: GRANTED_PORT DENIED_PORT (both on 127.0.0.1).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port = |i: usize| {
        args.get(i)
            .and_then(|p| p.parse::<i64>().ok())
            .expect("usage: demo GRANTED_PORT DENIED_PORT")
    };
    let (granted, denied) = (port(1), port(2));

    println!("guest: connecting to 127.0.0.1:{granted} (granted)");
    match talk(granted) {
        Ok(reply) => println!(
            "guest: server replied {:?}",
            String::from_utf8_lossy(&reply).trim_end()
        ),
        Err(e) => println!("guest: unexpected error {e}"),
    }

    println!("guest: connecting to 127.0.0.1:{denied} (not granted)");
    match talk(denied) {
        Ok(_) => println!("guest: connected?! the policy should have refused"),
        Err(e) if e.errno() == usocket::errno::EACCES => println!(
            "guest: refused with OSError({}) EACCES, as it should be",
            e.errno()
        ),
        Err(e) => println!("guest: unexpected error {e}"),
    }
}

fn talk(port: i64) -> usocket::Result<Vec<u8>> {
    let sock = usocket::socket(usocket::AF_INET, usocket::SOCK_STREAM, 0)?;
    sock.settimeout(Some(5.0))?;
    sock.connect(("127.0.0.1", port))?;
    sock.write(b"hello from the guest\n")?;
    Ok(sock.readline()?.unwrap_or_default())
}
