//! The shared conformance scenarios (tests/conformance/*.py), each run as a Rust guest program
//! whose stdout must equal the scenario's `.exp` byte for byte.

use std::path::PathBuf;

use usocket_tests::{Options, multitest, run};

fn expected(stem: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("conformance")
        .join(format!("{stem}.exp"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn single(stem: &str) {
    let program = format!("c{stem}");
    let out = run(&program, &[], Options::default())
        .await
        .unwrap_or_else(|e| panic!("{program}: {e:?}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.stdout_text(),
        expected(stem),
        "{program} stdout (stderr: {stderr})"
    );
    assert!(out.stderr.is_empty(), "{program} wrote to stderr: {stderr}");
    assert_eq!(out.code, 0, "{program} exit code");
}

async fn pair(stem: &str) {
    let got = multitest::run(stem, Options::default())
        .await
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
    assert_eq!(got, expected(stem), "{stem}");
}

macro_rules! scenarios {
    ($runner:ident: $($name:ident => $stem:literal,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $runner($stem).await;
        }
    )*};
}

scenarios! { single:
    s01_tcp_echo => "01_tcp_echo",
    s02_accept_shape => "02_accept_shape",
    s03_recv_eof => "03_recv_eof",
    s04_read_until_eof => "04_read_until_eof",
    s05_read_n_short_only_at_eof => "05_read_n_short_only_at_eof",
    s06_readinto => "06_readinto",
    s07_readline => "07_readline",
    s08_write_send_sendall_returns => "08_write_send_sendall_returns",
    s09_close_twice_and_use_after_close => "09_close_twice_and_use_after_close",
    s10_unconnected_socket => "10_unconnected_socket",
    s11_connect_refused => "11_connect_refused",
    s12_recv_on_listening_socket => "12_recv_on_listening_socket",
    s13_listen_backlog_variants => "13_listen_backlog_variants",
    s14_nonblocking_recv_family => "14_nonblocking_recv_family",
    s15_recv_timeout => "15_recv_timeout",
    s16_settimeout_zero_equals_setblocking_false => "16_settimeout_zero_equals_setblocking_false",
    s17_poll_fresh_socket => "17_poll_fresh_socket",
    s18_poll_listener => "18_poll_listener",
    s19_poll_data_and_peer_close => "19_poll_data_and_peer_close",
    s20_poll_after_local_close => "20_poll_after_local_close",
    s21_poll_timeout => "21_poll_timeout",
    s22_udp_roundtrip => "22_udp_roundtrip",
    s23_udp_nonblocking_and_timeout => "23_udp_nonblocking_and_timeout",
    s24_getaddrinfo_shape => "24_getaddrinfo_shape",
    s25_getaddrinfo_errors => "25_getaddrinfo_errors",
    s26_constants => "26_constants",
    s27_http_like_server_client => "27_http_like_server_client",
    s28_readline_across_segments => "28_readline_across_segments",
    s29_blocked_recv_wakes_on_close => "29_blocked_recv_wakes_on_close",
    s30_nonblocking_poll_client => "30_nonblocking_poll_client",
    s31_udp_echo => "31_udp_echo",
    s32_bad_arguments => "32_bad_arguments",
}

scenarios! { pair:
    m1_readline_across_segments => "m1_readline_across_segments",
    m2_blocked_recv_wakes_on_close => "m2_blocked_recv_wakes_on_close",
    m3_nonblocking_poll_client => "m3_nonblocking_poll_client",
    m4_udp_echo => "m4_udp_echo",
}
