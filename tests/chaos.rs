//! Chaos: the client library against the real server through a proxy that cuts the connection
//! again and again while a process writes a seeded pseudo-random stream at full speed and takes
//! stdin writes issued across the cuts. What must hold: the reassembled stdout is byte-identical
//! (sha256), nothing is duplicated or lost, every stdin write arrives exactly once and in order,
//! the exit code is right.
//!
//! Retention. While a connection is attached, the server blocks a process whose client is
//! behind (its queue is full), so nothing is lost however fast the process writes. Between a cut
//! and the resume the process runs free, and what it writes then must fit in the server's
//! retention (`--retained-output-bytes`, 1 MiB by default) until the client reads it back.
//! - [`Mode::Lockstep`] (the CI test): the stream comes in 256 KiB segments written at full
//!   speed, and after each one the process waits for the client's next stdin write. Output
//!   produced while detached is then at most two segments, so the default 1 MiB suffices; the
//!   test runs the server with its defaults and checks the largest catch-up stayed below 1 MiB.
//!   Every cut falls on a live exchange, the resumes complete between cuts, and stdin writes are
//!   in flight across them.
//! - [`Mode::FreeRunning`]: `cat` of the whole stream. A resume that races the server's noticing
//!   of the drop waits 100 ms (-32010), long enough for `cat` to write everything, so the server
//!   must retain the whole stream; the later cuts then fall in the middle of the catch-up reads,
//!   whose progress must survive them.
//!
//! `soak_*` is the lockstep run at 100 MiB and 200 cuts (sizes from the environment), run by
//! `scripts/soak-chaos`.

#[path = "support/chaos_proxy.rs"]
mod chaos_proxy;
mod common;

use std::time::{Duration, Instant};

use chaos_proxy::{ChaosProxy, CutPlan, Rng};
use codex::client::{ClientOptions, ExecServerClient, ProcessEvent, start_params};
use codex::protocol::process::{Stream, WriteStatus};
use common::{Server, TestDir, file_uri};
use sha2::{Digest, Sha256};

/// How the process writes its stream.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Segments of this many bytes, each followed by one stdin write of the client.
    Lockstep { segment: usize },
    /// `cat` of the whole stream, while stdin writes come in on the side.
    FreeRunning,
}

/// One chaos run.
struct Chaos {
    /// How the process writes.
    mode: Mode,
    /// Bytes the process writes to stdout.
    bytes: usize,
    /// Connections the proxy cuts.
    cuts: usize,
    /// Stdin writes, spread over the run (one per segment in lockstep).
    stdin_writes: usize,
    /// Bytes per stdin write.
    stdin_write_len: usize,
    /// Seed of the stream, the stdin writes and the cut points.
    seed: u64,
}

/// What a run measured.
#[derive(Debug)]
struct Report {
    /// Stdout bytes missing (expected minus received; 0 when identical).
    lost: usize,
    /// Cuts the proxy made.
    cuts: usize,
    /// Resumes the client completed.
    recoveries: u64,
    /// Largest catch-up of one process after one resume, in bytes.
    largest_catch_up: u64,
    /// Wall time of the run.
    elapsed: Duration,
}

async fn run(chaos: Chaos) -> Report {
    let started = Instant::now();
    let mut rng = Rng::new(chaos.seed);
    let stream = rng.bytes(chaos.bytes);
    let writes: Vec<Vec<u8>> = (0..chaos.stdin_writes)
        .map(|_| rng.bytes(chaos.stdin_write_len))
        .collect();
    let dir = TestDir::new();
    let data = dir.join("stream.bin");
    std::fs::write(&data, &stream).unwrap();

    let retained = (chaos.bytes + (1 << 20)).to_string();
    let server = match chaos.mode {
        Mode::Lockstep { .. } => Server::start(&[]).await,
        Mode::FreeRunning => Server::start(&["--retained-output-bytes", &retained]).await,
    };
    // Cut after up to 1.2x the average share of the wire bytes (base64 is 4/3 of the stream),
    // so every planned cut happens while the stream is still flowing.
    let wire = chaos.bytes as u64 * 4 / 3;
    let proxy = ChaosProxy::start(
        &server.addr(),
        CutPlan {
            cuts: chaos.cuts,
            // At most 3/4 of the stream's share per cut: the cut points always fall inside the
            // traffic, whatever the timing, so every planned cut happens.
            max_bytes: wire / chaos.cuts as u64 * 3 / 4,
            early_max_bytes: 16 << 10,
            first_min_bytes: 64 << 10,
            seed: chaos.seed,
        },
    )
    .await;
    let client = ExecServerClient::connect(&proxy.url(), ClientOptions::default())
        .await
        .expect("connect through the proxy");

    // stdout: the stream; stderr: the stdin writes, echoed by `head`.
    let stdin_total = chaos.stdin_writes * chaos.stdin_write_len;
    let data = data.display().to_string();
    let argv: Vec<String> = match chaos.mode {
        Mode::Lockstep { segment } => {
            assert_eq!(chaos.bytes % segment, 0);
            assert_eq!(chaos.bytes / segment, chaos.stdin_writes);
            let script = r#"i=0
                while [ "$i" -lt "$1" ]; do
                    dd if="$0" bs="$2" skip="$i" count=1 2>/dev/null
                    head -c "$3" >&2
                    i=$((i+1))
                done
                exit 7"#;
            vec![
                "sh".into(),
                "-c".into(),
                script.into(),
                data,
                chaos.stdin_writes.to_string(),
                segment.to_string(),
                chaos.stdin_write_len.to_string(),
            ]
        }
        Mode::FreeRunning => {
            let script = r#"cat "$0" & head -c "$1" >&2; wait $!; exit 7"#;
            vec![
                "sh".into(),
                "-c".into(),
                script.into(),
                data,
                stdin_total.to_string(),
            ]
        }
    };
    let mut params = start_params("chaos", argv, file_uri(dir.path()));
    params.pipe_stdin = true;
    let mut handle = client.start(params).await.expect("start");

    // Stdin writes, each issued once a share of the stream has come back, so they straddle cuts.
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let writer = {
        let control = handle.control();
        let writes = writes.clone();
        // In lockstep, write i answers segment i; otherwise the writes are spread evenly.
        let step = match chaos.mode {
            Mode::Lockstep { segment } => segment,
            Mode::FreeRunning => chaos.bytes / (chaos.stdin_writes + 1),
        };
        tokio::spawn(async move {
            for (i, write) in writes.iter().enumerate() {
                let threshold = step * (i + 1);
                if progress.wait_for(|got| *got >= threshold).await.is_err() {
                    return Err(format!("the stream ended before write {i}"));
                }
                match control.write(write).await {
                    Ok(WriteStatus::Accepted) => {}
                    other => return Err(format!("write {i}: {other:?}")),
                }
            }
            Ok(())
        })
    };

    let mut hasher = Sha256::new();
    let mut received = 0usize;
    let mut stderr = Vec::new();
    let mut exit_code = None;
    let mut failure = None;
    let mut last_seq = 0;
    let deadline = Duration::from_secs(120);
    let reading = tokio::time::timeout(deadline, async {
        while let Some(event) = handle.recv().await {
            let event = match event {
                Ok(event) => event,
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            };
            assert!(
                event.seq() > last_seq,
                "seq {} after {last_seq}",
                event.seq()
            );
            last_seq = event.seq();
            match event {
                ProcessEvent::Output {
                    stream: Stream::Stdout,
                    data,
                    ..
                } => {
                    hasher.update(&data);
                    received += data.len();
                    progress_tx.send_replace(received);
                }
                ProcessEvent::Output { data, .. } => stderr.extend(data),
                ProcessEvent::Exited {
                    exit_code: code, ..
                } => exit_code = Some(code),
                ProcessEvent::Closed { .. } => break,
            }
        }
    })
    .await;
    assert!(
        reading.is_ok(),
        "the run did not finish within {deadline:?}"
    );
    drop(progress_tx);
    if let Some(err) = failure {
        panic!(
            "the process failed after {received} of {} bytes: {err}",
            chaos.bytes
        );
    }
    writer.await.unwrap().expect("every stdin write accepted");

    assert_eq!(received, chaos.bytes, "stdout length");
    assert_eq!(
        hasher.finalize().as_slice(),
        Sha256::digest(&stream).as_slice(),
        "stdout sha256"
    );
    assert_eq!(stderr.len(), stdin_total, "stdin bytes echoed");
    assert!(
        stderr == writes.concat(),
        "stdin writes arrived once each, in order"
    );
    assert_eq!(exit_code, Some(7));
    let stats = client.stats();
    Report {
        lost: chaos.bytes.saturating_sub(received),
        cuts: proxy.cuts(),
        recoveries: stats.recoveries,
        largest_catch_up: stats.largest_catch_up_bytes,
        elapsed: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockstep_stream_and_stdin_survive_twenty_cuts_with_the_default_retention() {
    let report = run(Chaos {
        mode: Mode::Lockstep { segment: 256 << 10 },
        bytes: 20 << 20,
        cuts: 20,
        stdin_writes: 80,
        stdin_write_len: 1000,
        seed: 0x00C0_FFEE,
    })
    .await;
    eprintln!("chaos: {report:?}");
    assert_eq!(report.lost, 0);
    assert!(report.cuts >= 20, "only {} cuts", report.cuts);
    // Some cuts fall in the middle of a resume (the handshake, the catch-up): those attempts
    // start over, so there are fewer completed resumes than cuts.
    assert!(report.recoveries >= 5, "only {} resumes", report.recoveries);
    assert!(
        report.largest_catch_up < 1 << 20,
        "a catch-up of {} bytes would not fit the default retention",
        report.largest_catch_up
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_running_stream_survives_cuts_in_the_middle_of_its_catch_up() {
    let report = run(Chaos {
        mode: Mode::FreeRunning,
        bytes: 8 << 20,
        cuts: 10,
        stdin_writes: 16,
        stdin_write_len: 1000,
        seed: 0xBAD_CAFE,
    })
    .await;
    eprintln!("chaos: {report:?}");
    assert_eq!(report.lost, 0);
    assert!(report.cuts >= 10, "only {} cuts", report.cuts);
}

/// Reads a size from the environment.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: run by scripts/soak-chaos"]
async fn soak_stream_and_stdin_survive_many_connection_cuts() {
    let segment = 256 << 10;
    let bytes = env_or("CODEX_SOAK_BYTES", 100 << 20) / segment * segment;
    let chaos = Chaos {
        mode: Mode::Lockstep { segment },
        bytes,
        cuts: env_or("CODEX_SOAK_CUTS", 200),
        stdin_writes: bytes / segment,
        stdin_write_len: 1000,
        seed: env_or("CODEX_SOAK_SEED", 7) as u64,
    };
    let (bytes, planned) = (chaos.bytes, chaos.cuts);
    let report = run(chaos).await;
    println!(
        "soak-chaos: {bytes} bytes, {} of {planned} cuts, {} resumes, bytes lost: {}, largest \
         catch-up: {} bytes, time: {:.1?}",
        report.cuts, report.recoveries, report.lost, report.largest_catch_up, report.elapsed
    );
    assert_eq!(report.lost, 0);
    assert!(report.cuts >= planned);
}
