//! 27_http_like_server_client: makefile("rwb", 0) reads and writes the same stream, closing
//! the file closes the socket; a readline loop; read() to EOF.
use usocket as socket;
use usocket_test_programs::{Py, a, server};

/// CONTENT % i
fn content(i: i32) -> Vec<u8> {
    format!("HTTP/1.0 200 OK\r\n\r\nHello #{i} from MicroPython!\n").into_bytes()
}

fn main() {
    let l = server(9827, Some(5));
    for i in 0..2 {
        let mut c = socket::socket(socket::AF_INET, socket::SOCK_STREAM, 0).unwrap();
        c.connect(a(9827)).unwrap();
        // Python keeps the replaced socket object alive (unreferenced) after the rebinding
        // below; keep it here too so that dropping it cannot close the stream.
        let _orig = c.clone();
        if i == 0 {
            // c = c.makefile("rwb", 0)
            c = c.makefile("rwb").unwrap();
        }
        c.write(format!("GET /{i} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let (cs, _) = l.accept().unwrap();
        // stream = cs.makefile("rwb", 0) if i == 0 else cs
        let stream = if i == 0 {
            cs.makefile("rwb").unwrap()
        } else {
            cs.clone()
        };
        let req = stream.readline().unwrap();
        let mut hdrs: i32 = 0;
        loop {
            let h = stream.readline().unwrap();
            if h.as_deref() == Some(b"") || h.as_deref() == Some(b"\r\n") {
                break;
            }
            hdrs += 1;
        }
        stream.write(&content(i)).unwrap();
        stream.close();
        println!("{} {}", req.py(), hdrs.py());
        println!("{}", c.read_all().unwrap().py());
        c.close();
    }
    l.close();
}
