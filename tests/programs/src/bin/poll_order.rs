//! `select::Poll` bookkeeping with many sockets: registering, re-registering, modifying and
//! unregistering in any order keeps one entry per socket, reported in registration order.
//! Eight UDP sockets bound to loopback, each sent a datagram (so each is readable); prints
//! the index of every socket `poll` reports, after each change.

use usocket::select::{self, POLLIN};

fn main() {
    let socks: Vec<usocket::Socket> = (0..8)
        .map(|_| {
            let s = usocket::socket(usocket::AF_INET, usocket::SOCK_DGRAM, 0).unwrap();
            s.bind(("127.0.0.1", 0)).unwrap();
            s
        })
        .collect();
    for s in &socks {
        let to = s.getsockname().unwrap();
        s.sendto(b"x", &to).unwrap();
    }
    // Loopback may deliver a datagram a little after `sendto` returns: wait for each.
    for s in &socks {
        let mut one = select::poll();
        one.register(s, POLLIN);
        assert_eq!(
            one.poll(5000).unwrap().len(),
            1,
            "a datagram to itself arrives"
        );
    }
    let mut poller = select::poll();
    let show = |poller: &mut select::Poll, what: &str| {
        let ready = poller.poll(1000).unwrap();
        let idx: Vec<String> = ready
            .iter()
            .map(|(r, _)| socks.iter().position(|s| s == r).unwrap().to_string())
            .collect();
        println!("{what}: {}", idx.join(" "));
    };
    for i in [3, 1, 4, 0, 5, 2, 6, 7] {
        poller.register(&socks[i], POLLIN);
    }
    show(&mut poller, "registered");
    poller.register(&socks[4], POLLIN); // again: stays where it was
    poller.unregister(&socks[1]);
    poller.unregister(&socks[5]);
    show(&mut poller, "without 1 and 5");
    poller.register(&socks[1], POLLIN); // back, at the end
    poller.modify(&socks[0], 0).unwrap();
    show(&mut poller, "1 again, 0 masked");
    poller.unregister(&socks[3]);
    poller.unregister(&socks[7]);
    poller.unregister(&socks[7]); // not registered: nothing
    println!(
        "modify unregistered: {:?}",
        poller.modify(&socks[7], POLLIN).map_err(|e| e.errno())
    );
    show(&mut poller, "without 3 and 7");
}
