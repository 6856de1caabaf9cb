//! Runs a two-instance scenario the way MicroPython's `run-multitests.py` does (see the
//! conformance README): both instances are guests of this one host, coordinated over their
//! stdin/stdout.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;
use usocket_host::UsocketCtx;
use usocket_host::run::Guest;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream};

use crate::{Options, component, runner};

/// How long an instance may stay silent before the scenario fails.
const SILENCE: Duration = Duration::from_secs(10);

struct Instance {
    stdin: DuplexStream,
    run: tokio::task::JoinHandle<wasmtime::Result<i32>>,
}

fn start(
    program: &str,
    index: usize,
    globals: &[String],
    opts: &Options,
    lines: mpsc::UnboundedSender<(usize, String)>,
) -> Instance {
    let (stdin_host, stdin_guest) = tokio::io::duplex(64 * 1024);
    let (stdout_guest, stdout_host) = tokio::io::duplex(64 * 1024);
    let mut argv = vec![program.to_string(), index.to_string()];
    argv.extend(globals.iter().cloned());
    let guest = Guest {
        wasi: WasiCtxBuilder::new()
            .stdin(AsyncStdinStream::new(stdin_guest))
            .stdout(AsyncStdoutStream::new(64 * 1024, stdout_guest))
            .inherit_stderr()
            .args(&argv)
            .build(),
        usocket: UsocketCtx::new(format!("{program}#{index}"), opts.policy.clone())
            .with_limits(opts.limits.clone()),
        time_limit: Some(opts.time_limit),
    };
    let component = component(program);
    let run = tokio::spawn(async move { runner().run(&component, guest).await });
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout_host).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if lines.send((index, line)).is_err() {
                break;
            }
        }
    });
    Instance {
        stdin: stdin_host,
        run,
    }
}

/// Runs both instances of `program` and returns the combined output in the `.exp` format.
pub async fn run(program: &str, opts: Options) -> Result<String, String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut output: [Vec<String>; 2] = Default::default();
    let mut globals = Vec::new();
    let mut instances = vec![start(program, 0, &[], &opts, tx.clone())];

    // Instance 1 starts once instance 0 says NEXT (its server listens by then).
    loop {
        let (_, line) = next_line(&mut rx)
            .await
            .map_err(|e| format!("instance0 before NEXT: {e}"))?;
        if line == "NEXT" {
            break;
        }
        record(&line, &mut globals, &mut output[0]);
    }
    instances.push(start(program, 1, &globals, &opts, tx));

    // Until both guests exit and their stdout pipes close.
    loop {
        match tokio::time::timeout(SILENCE, rx.recv()).await {
            Err(_) => return Err(format!("an instance was silent for {SILENCE:?}")),
            Ok(None) => break,
            Ok(Some((from, line))) => {
                if let Some(msg) = line.strip_prefix("BROADCAST ") {
                    let to = 1 - from;
                    let _ = instances[to]
                        .stdin
                        .write_all(format!("BROADCAST {msg}\n").as_bytes())
                        .await;
                } else if line != "NEXT" {
                    record(&line, &mut globals, &mut output[from]);
                }
            }
        }
    }
    for (i, inst) in instances.into_iter().enumerate() {
        let code = tokio::time::timeout(SILENCE, inst.run)
            .await
            .map_err(|_| format!("instance{i} did not exit"))?
            .map_err(|e| format!("instance{i} task: {e}"))?
            .map_err(|e| format!("instance{i} failed: {e:?}"))?;
        if code != 0 {
            return Err(format!("instance{i} exited with {code}"));
        }
    }
    let mut text = String::new();
    for (i, lines) in output.iter().enumerate() {
        text.push_str(&format!("--- instance{i} ---\n"));
        if lines.is_empty() {
            text.push('\n');
        }
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
    }
    Ok(text)
}

async fn next_line(
    rx: &mut mpsc::UnboundedReceiver<(usize, String)>,
) -> Result<(usize, String), String> {
    match tokio::time::timeout(SILENCE, rx.recv()).await {
        Ok(Some(item)) => Ok(item),
        Ok(None) => Err("output ended".into()),
        Err(_) => Err(format!("silent for {SILENCE:?}")),
    }
}

/// `SET NAME = repr` lines become globals (`NAME=repr` arguments of instance 1); other lines
/// are output.
fn record(line: &str, globals: &mut Vec<String>, out: &mut Vec<String>) {
    match line
        .strip_prefix("SET ")
        .and_then(|rest| rest.split_once(" = "))
    {
        Some((name, value)) => globals.push(format!("{name}={value}")),
        None => out.push(line.to_string()),
    }
}
