//! A guest's own memory is bounded (`Limits::max_memory`, enforced by the runner's resource
//! limiter): a guest that allocates in a loop (the `memhog` program, which stops by itself
//! after asking for 2 GiB) gets a failed allocation or traps at the limit, and the host's
//! resident memory stays far below what the guest asked for.
//!
//! One test in its own test binary: the resident peak (`VmHWM` of /proc/self/status, reset
//! through /proc/self/clear_refs) belongs to the whole process, so no other test may run
//! beside it.

use std::time::Duration;

use usocket_host::Limits;
use usocket_tests::{Options, proc_status as status, run};

const MIB: u64 = 1 << 20;

/// How much the resident peak grew while `f` ran.
async fn resident_growth<T>(f: impl Future<Output = T>) -> (T, u64) {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the resident peak");
    let before = status("VmHWM");
    let out = f.await;
    (out, status("VmHWM").saturating_sub(before))
}

/// The last `held N` / `refused N` / `done N` line of memhog's output, as (word, N).
fn last_line(stdout: &str) -> (String, u64) {
    let line = stdout.lines().last().unwrap_or("");
    let (word, n) = line.split_once(' ').unwrap_or((line, ""));
    (word.to_string(), n.parse().unwrap_or(0))
}

fn options(limits: Limits) -> Options {
    Options {
        limits,
        time_limit: Duration::from_secs(60),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_grow_its_memory_past_the_limit() {
    // Warm-up: compiles the guest and lets the allocator settle.
    let out = run("memhog", &["try", "1"], options(Limits::default()))
        .await
        .unwrap();
    assert_eq!(out.code, 0);

    // 1. An explicit limit of 64 MiB, allocations that can fail: the guest sees its
    // allocation refused near the limit and ends normally.
    let limits = Limits {
        max_memory: 64 << 20,
        ..Limits::default()
    };
    let (out, grew) = resident_growth(run("memhog", &["try", "8"], options(limits))).await;
    let out = out.expect("the guest runs");
    let stdout = out.stdout_text();
    let (word, held) = last_line(&stdout);
    eprintln!(
        "max_memory 64 MiB: {word} {held} MiB; resident peak +{} MiB",
        grew / MIB
    );
    assert_eq!(out.code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        word, "refused",
        "the allocation loop was not stopped:\n{stdout}"
    );
    assert!((40..64).contains(&held), "refused at {held} MiB:\n{stdout}");
    assert!(grew < 256 * MIB, "resident peak +{} MiB", grew / MIB);

    // 2. The default limit (256 MiB), allocations that abort: the guest traps, the host
    // carries on.
    let (out, grew) =
        resident_growth(run("memhog", &["abort", "16"], options(Limits::default()))).await;
    eprintln!(
        "default limit: {}; resident peak +{} MiB",
        match &out {
            Ok(o) => format!("exit {}, {:?}", o.code, last_line(&o.stdout_text())),
            Err(e) => format!("trapped ({})", e.root_cause()),
        },
        grew / MIB
    );
    match out {
        Err(e) => {
            let e = format!("{e:?}");
            assert!(
                e.contains("unreachable") || e.contains("abort"),
                "not an allocation failure: {e}"
            );
        }
        Ok(out) => panic!(
            "the guest was not stopped (exit {}):\n{}",
            out.code,
            out.stdout_text()
        ),
    }
    assert!(grew < 512 * MIB, "resident peak +{} MiB", grew / MIB);

    // 3. The same host still runs guests, and the limit holds for each of them.
    let limits = Limits {
        max_memory: 64 << 20,
        ..Limits::default()
    };
    let out = run("memhog", &["try", "2"], options(limits)).await.unwrap();
    let (word, held) = last_line(&out.stdout_text());
    assert_eq!(word, "refused");
    assert!((40..64).contains(&held), "refused at {held} MiB");
}
