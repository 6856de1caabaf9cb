//! End-to-end checks of `BufRead` over the guest library's read-ahead (tests/tests/bufread.rs):
//! `bufread MODE PORT` connects to 127.0.0.1:PORT and prints what each call returned.
use std::io::{BufRead, Read};
use usocket::select::{POLLIN, poll};
use usocket::{AF_INET, SOCK_DGRAM, SOCK_STREAM, socket};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: i64 = args[2].parse().unwrap();
    if args[1] == "udp" {
        let mut s = socket(AF_INET, SOCK_DGRAM, 0).unwrap();
        s.connect(("127.0.0.1", port)).unwrap();
        s.settimeout(Some(5.0)).unwrap();
        s.send(b"go").unwrap();
        let mut line = String::new();
        println!(
            "udp read_line {:?} {line:?}",
            s.read_line(&mut line).map_err(|e| e.kind())
        );
        line.clear();
        println!(
            "udp read_line {:?} {line:?}",
            s.read_line(&mut line).map_err(|e| e.kind())
        );
        println!(
            "udp recv {:?}",
            String::from_utf8_lossy(&s.recv(100).unwrap())
        );
        return;
    }
    let mut s = socket(AF_INET, SOCK_STREAM, 0).unwrap();
    s.settimeout(Some(5.0)).unwrap();
    s.connect(("127.0.0.1", port)).unwrap();
    let rl = |s: &mut usocket::Socket, tag: &str| {
        let mut line = String::new();
        let r = s.read_line(&mut line).map_err(|e| e.kind());
        println!("{tag} {r:?} {line:?}");
    };
    let mut line = String::new();
    match args[1].as_str() {
        "order" => {
            rl(&mut s, "read_line");
            let mut p = poll();
            p.register(&s, POLLIN);
            println!(
                "poll {:?}",
                p.poll(0)
                    .unwrap()
                    .iter()
                    .map(|(_, e)| *e)
                    .collect::<Vec<_>>()
            );
            println!("recv {:?}", String::from_utf8_lossy(&s.recv(100).unwrap()));
            rl(&mut s, "read_line");
        }
        "mixed" => {
            rl(&mut s, "read_line");
            println!(
                "readline {:?}",
                s.readline()
                    .unwrap()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
            );
            let mut b = [0u8; 3];
            let n = Read::read(&mut s, &mut b).unwrap();
            println!("io read {:?}", String::from_utf8_lossy(&b[..n]));
            let mut v = Vec::new();
            let n = s.read_until(b';', &mut v).unwrap();
            println!("read_until {n} {:?}", String::from_utf8_lossy(&v));
            let other = s.makefile("rb").unwrap();
            let buf = s.fill_buf().unwrap().to_vec();
            println!("fill_buf {:?}", String::from_utf8_lossy(&buf));
            s.consume(2);
            println!(
                "other readline {:?}",
                other
                    .readline()
                    .unwrap()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
            );
            // stale: consumes nothing
            let buf = s.fill_buf().unwrap().to_vec();
            println!("fill_buf {:?}", String::from_utf8_lossy(&buf));
            let _ = other.readline();
            s.consume(100);
            rl(&mut s, "read_line");
            rl(&mut s, "read_line");
            rl(&mut s, "read_line");
        }
        "partial" => {
            // Peer sends "par", waits 300 ms, sends "t\nnext\n".
            std::thread::sleep(std::time::Duration::from_millis(100));
            s.setblocking(false).unwrap();
            line.clear();
            let r = s.read_line(&mut line).map_err(|e| e.kind());
            println!("nb {r:?} {line:?}");
            s.settimeout(Some(0.05)).unwrap();
            let r = s.read_line(&mut line).map_err(|e| e.kind());
            println!("timed {r:?} {line:?}");
            s.settimeout(Some(5.0)).unwrap();
            let r = s.read_line(&mut line).map_err(|e| e.kind());
            println!("blocking {r:?} {line:?}");
            rl(&mut s, "read_line");
            rl(&mut s, "read_line");
        }
        "utf8" => {
            rl(&mut s, "a");
            rl(&mut s, "b");
            rl(&mut s, "c");
            rl(&mut s, "d");
        }
        "long" => {
            line.clear();
            let r = s.read_line(&mut line);
            println!(
                "long {:?} ends_nl={}",
                r.map_err(|e| e.kind()),
                line.ends_with('\n')
            );
            rl(&mut s, "after");
            let mut count = 0;
            loop {
                line.clear();
                if s.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                count += 1;
            }
            println!("lines {count}");
        }
        "close" => {
            rl(&mut s, "read_line");
            s.close();
        }
        "fill_close" => {
            let n = s.fill_buf().unwrap().len();
            println!("fill {n}");
            s.consume(n);
            drop(s);
        }
        "all_then_exit" => {
            rl(&mut s, "a");
            rl(&mut s, "b");
            usocket::process::exit(0);
        }
        m => panic!("{m}"),
    }
}
