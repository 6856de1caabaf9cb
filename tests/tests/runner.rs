//! `Runner`'s capacity and worker threads: a runner at its limit refuses the next guest with a
//! clear error while the running ones go on; `Runner::spawn` runs guests on its workers from
//! any thread; a guest's place is given back when it ends or is stopped.

use std::time::Duration;

use usocket_host::run::{Guest, Runner, RunnerConfig, RunnerFull};
use usocket_host::{Limits, UsocketCtx};
use usocket_tests::{conformance_policy, guest_path};
use wasmtime::component::Component;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

fn runner(max_guests: usize) -> Runner {
    Runner::with_config(RunnerConfig {
        cache: true,
        max_guests: Some(max_guests),
        workers: Some(2),
        ..RunnerConfig::default()
    })
    .expect("runner")
}

fn probe(runner: &Runner) -> Component {
    let bytes = std::fs::read(guest_path("probe")).expect("probe.wasm");
    runner.compile(&bytes).expect("probe compiles")
}

/// A probe guest running `args`, with its stdout in `out`.
fn guest(args: &[&str], out: &MemoryOutputPipe) -> Guest {
    let mut argv = vec!["probe".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    Guest {
        wasi: WasiCtxBuilder::new()
            .stdout(out.clone())
            .args(&argv)
            .build(),
        usocket: UsocketCtx::new("probe", conformance_policy()).with_limits(Limits::default()),
        time_limit: Some(Duration::from_secs(60)),
    }
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "current_thread")]
async fn runner_at_its_limit_refuses_the_next_guest_and_the_others_go_on() {
    let runner = runner(2);
    let component = probe(&runner);
    assert_eq!(runner.max_guests(), 2);

    // Two guests blocked in accept (ephemeral ports), on the runner's workers.
    let outs = [MemoryOutputPipe::new(4096), MemoryOutputPipe::new(4096)];
    let held: Vec<_> = outs
        .iter()
        .map(|out| runner.spawn(&component, guest(&["hold-accept", "0"], out)))
        .collect();
    until("both guests run", || runner.guests() == 2).await;

    // The third is refused at once, by `spawn` and by `run`, with an error that says why.
    let out = MemoryOutputPipe::new(4096);
    let refused = runner
        .spawn(&component, guest(&["exit", "0"], &out))
        .await
        .expect("the task ends normally")
        .expect_err("a third guest is refused");
    assert_eq!(
        refused.downcast_ref::<RunnerFull>(),
        Some(&RunnerFull { max_guests: 2 })
    );
    let message = format!("{refused:#}");
    assert!(
        message.contains("limit of 2 guests") && message.contains("RunnerConfig::max_guests"),
        "{message}"
    );
    let refused = runner
        .run(&component, guest(&["exit", "0"], &out))
        .await
        .expect_err("refused by run too");
    assert!(refused.is::<RunnerFull>(), "{refused:#}");

    // The two running guests went on: still blocked, still counted.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(held.iter().all(|h| !h.is_finished()));
    assert_eq!(runner.guests(), 2);

    // Stopping one gives its place back: the next guest runs to its end.
    held[0].abort();
    until("the stopped guest's place is free", || runner.guests() == 1).await;
    let code = runner
        .run(&component, guest(&["exit", "7"], &out))
        .await
        .expect("admitted once a place is free");
    assert_eq!(code, 7);
    assert_eq!(runner.guests(), 1);
    assert!(!held[1].is_finished());
    held[1].abort();
    until("every place is free", || runner.guests() == 0).await;
}

#[test]
fn spawn_runs_guests_on_the_workers_from_a_thread_without_a_runtime() {
    let runner = runner(64);
    let component = probe(&runner);
    let outs: Vec<_> = (0..8).map(|_| MemoryOutputPipe::new(4096)).collect();
    let handles: Vec<_> = outs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            let code = i.to_string();
            runner.spawn(&component, guest(&["exit", &code], out))
        })
        .collect();
    // Awaited on a runtime of the test's own: the handles work from anywhere.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (i, handle) in handles.into_iter().enumerate() {
            let code = tokio::time::timeout(Duration::from_secs(60), handle)
                .await
                .expect("the guest ends")
                .expect("its task ends normally")
                .expect("it runs");
            assert_eq!(code, i as i32);
        }
    });
    assert_eq!(runner.guests(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_trapping_guest_gives_its_place_back() {
    let runner = runner(1);
    let component = probe(&runner);
    let out = MemoryOutputPipe::new(4096);
    let err = runner
        .run(&component, guest(&["trap", "0"], &out))
        .await
        .expect_err("the guest traps");
    assert!(!err.is::<RunnerFull>(), "{err:#}");
    assert_eq!(runner.guests(), 0);
    let code = runner
        .run(&component, guest(&["exit", "3"], &out))
        .await
        .expect("the place is free again");
    assert_eq!(code, 3);
}

#[test]
fn a_spinning_guest_does_not_hold_up_the_others_on_its_worker() {
    let runner = Runner::with_config(RunnerConfig {
        cache: true,
        max_guests: Some(8),
        workers: Some(1),
        ..RunnerConfig::default()
    })
    .expect("runner");
    let component = probe(&runner);
    let out = MemoryOutputPipe::new(4096);
    let spinner = runner.spawn(&component, guest(&["spin"], &out));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        while c.read_exact(&mut buf).is_ok() && c.write_all(&buf).is_ok() {}
    });
    // 20 round trips on the spinner's worker: each wake-up waits at most an epoch tick
    // (10 ms) for the spinner to yield, about 0.6 s in all (12 s if the worker polled for I/O
    // only every 61 task polls, tokio's default).
    let started = std::time::Instant::now();
    let echo = runner.spawn(&component, guest(&["echo", &port, "20"], &out));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), echo).await })
        .expect("the echo guest ends")
        .expect("its task ends normally")
        .expect("it runs");
    assert_eq!(code, 0);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "20 round trips took {took:?}"
    );
    assert!(!spinner.is_finished());
    spinner.abort();
}
