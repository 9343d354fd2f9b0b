//! Benchmark client of `codex exec-server`, run by `scripts/bench` (see README, "Benchmarks").
//!
//! It starts each server itself (`BIN exec-server --listen ws://127.0.0.1:0`, the URL read from
//! its first line of stdout), drives it over real WebSockets on loopback, and measures, round after
//! round with the servers alternating (ours first in odd rounds, the reference first in even ones):
//! spawn→closed, a large stdout stream, stdin write→echo, fs read/write, fan-out of 100 starts,
//! catch-up after a cut connection, and the server's resident memory. Every metric also has a floor
//! measured in the same run on the same machine (fork+exec from Rust, a pipe, a minimal WebSocket
//! server in this process, local file I/O), so a ratio can be read against what the machine can do.
//!
//! The client is the integration tests' (tests/common/client.rs, included below), in its lean
//! mode: process notifications are counted, not kept, and chunks measured, not decoded. Two client
//! flavours: `default` (like a plain tokio-tungstenite client: Nagle on, the kernel's delayed ACKs)
//! and `ack` (TCP_NODELAY, and TCP_QUICKACK re-armed after every read, so the client never delays
//! an ACK). The reference is said to stall ~40 ms on delayed ACKs because it never sets
//! TCP_NODELAY; the `ack` client shows what is left without those stalls.
//!
//! Nothing here asserts on time: failures (a dropped connection, a wrong byte count, a timeout) are
//! recorded per metric and reported, and the run goes on.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine;
use client::{Client, ConnectOptions, RpcError, b64_len, file_uri};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[path = "../tests/common/client.rs"]
mod client;

const MIB: usize = 1 << 20;
/// PATH given to every started process (the reference requires an explicit `env`).
const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Output of the process whose stream is cut and caught up (under the 1 MiB retention).
const RESUME_BYTES: usize = 512 * 1024;
/// Output of the process whose retained memory is measured.
const BIG_OUTPUT: usize = 100 * MIB;

static NEXT_PROCESS: AtomicU64 = AtomicU64::new(1);

fn process_id() -> String {
    format!("bench-{}", NEXT_PROCESS.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Options {
    ours: PathBuf,
    reference: Option<PathBuf>,
    quick: bool,
    rounds: usize,
    out: Option<PathBuf>,
    date: String,
    command: String,
    /// Run only the metrics whose key starts with one of these (for profiling); empty = all.
    only: Vec<String>,
    /// Skip the floors (for profiling a server).
    no_floors: bool,
}

impl Options {
    fn wants(&self, key: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| key.starts_with(p.as_str()))
    }
}

/// Iteration counts of one round.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    spawn: usize,
    echo: usize,
    stream_64: usize,
    stream_256: usize,
    fs_small: usize,
    fs_big: usize,
    fanout: usize,
    resume: usize,
    sessions: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                spawn: 20,
                echo: 20,
                stream_64: 1,
                stream_256: 0,
                fs_small: 3,
                fs_big: 1,
                fanout: 1,
                resume: 3,
                sessions: 100,
            }
        } else {
            Self {
                spawn: 200,
                echo: 200,
                stream_64: 3,
                stream_256: 1,
                fs_small: 10,
                fs_big: 2,
                fanout: 3,
                resume: 20,
                sessions: 1000,
            }
        }
    }
}

fn parse_args() -> Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut opts = Options {
        ours: PathBuf::from("target/release/codex"),
        reference: None,
        quick: false,
        rounds: 0,
        out: None,
        date: String::from("unknown date"),
        command: String::from("scripts/bench"),
        only: Vec::new(),
        no_floors: false,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--ours" => opts.ours = value("--ours")?.into(),
            "--reference" => opts.reference = Some(value("--reference")?.into()),
            "--quick" => opts.quick = true,
            "--rounds" => opts.rounds = value("--rounds")?.parse()?,
            "--out" => opts.out = Some(value("--out")?.into()),
            "--date" => opts.date = value("--date")?,
            "--command" => opts.command = value("--command")?,
            "--only" => opts.only = value("--only")?.split(',').map(str::to_string).collect(),
            "--no-floors" => opts.no_floors = true,
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            other => bail!(
                "unknown argument {other}; usage: exec_bench --ours BIN [--reference BIN] [--quick] [--rounds N] [--out FILE] [--date TEXT] [--only KEY,..] [--no-floors]"
            ),
        }
    }
    if opts.rounds == 0 {
        opts.rounds = if opts.quick { 1 } else { 5 };
    }
    Ok(opts)
}

// ---------------------------------------------------------------------------------------------
// Client: the integration tests' client (tests/common/client.rs), lean
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    /// Nagle on, delayed ACKs: what a client gets without asking for anything.
    Default,
    /// TCP_NODELAY, and TCP_QUICKACK after each read: ACKs leave at once.
    Ack,
}

/// How long a call may take where the measurement sets no limit of its own.
const PATIENCE: Duration = Duration::from_secs(120);

/// A lean WebSocket to `url` (process notifications counted, not kept), without the handshake.
async fn open(url: &str, flavour: Flavour) -> Result<Client> {
    let opts = ConnectOptions {
        at_once_acks: flavour == Flavour::Ack,
        lean: true,
    };
    Ok(Client::connect(url, opts).await?)
}

/// Opens and initializes a session; returns the client and the session id.
async fn connect(url: &str, flavour: Flavour) -> Result<(Client, String)> {
    let mut conn = open(url, flavour).await?;
    let answer = conn.try_initialize("exec-bench", None, PATIENCE).await?;
    let result = rpc("initialize", answer)?;
    let session = result["sessionId"].as_str().unwrap_or_default().to_string();
    Ok((conn, session))
}

/// An answer as a result, an error answer as an error naming the method.
fn rpc(method: &str, answer: std::result::Result<Value, RpcError>) -> Result<Value> {
    answer.map_err(|(code, message)| anyhow!("{method}: error {code} {message}"))
}

async fn call(conn: &mut Client, method: &str, params: Value) -> Result<Value> {
    rpc(method, conn.try_request(method, params, PATIENCE).await?)
}

/// The answer to request `id`, sent earlier.
async fn answer(conn: &mut Client, method: &str, id: i64) -> Result<Value> {
    rpc(method, conn.try_await_answer(id, PATIENCE).await?)
}

/// Waits until every process of `pids` is closed.
async fn wait_all_closed(conn: &mut Client, pids: &[String], within: Duration) -> Result<()> {
    // Processes close in about the order they started: look at the first still open only.
    let mut next = 0;
    conn.try_wait_until("every process closed", within, |c| {
        while next < pids.len() && c.tally(&pids[next]).closed {
            next += 1;
        }
        (next == pids.len()).then_some(())
    })
    .await?;
    Ok(())
}

fn start_params(pid: &str, argv: &[&str], pipe_stdin: bool) -> Value {
    json!({
        "processId": pid,
        "argv": argv,
        "cwd": "file:///tmp",
        "env": {"PATH": CHILD_PATH},
        "tty": false,
        "pipeStdin": pipe_stdin,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// CPU time (ns) that the threads of `pid` have run, from `/proc/PID/task/*/schedstat`.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time (ns) of one thread of this process.
fn thread_cpu_ns(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The thread id of the minimal server, for its CPU time.
static MINIMAL_TID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

async fn timed<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(anyhow!("{what}: no answer within {limit:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Servers under test
// ---------------------------------------------------------------------------------------------

struct Server {
    child: Child,
    url: String,
}

impl Server {
    async fn start(bin: &Path) -> Result<Self> {
        let bin = bin.to_path_buf();
        tokio::task::spawn_blocking(move || {
            // CODEX_BENCH_WRAP="strace -f -o F" runs the server under a tool (profiling only: the
            // RSS is then the tool's).
            let wrap = std::env::var("CODEX_BENCH_WRAP").unwrap_or_default();
            let mut words = wrap.split_whitespace();
            let mut command = match words.next() {
                Some(tool) => {
                    let mut c = Command::new(tool);
                    c.args(words).arg(&bin);
                    c
                }
                None => Command::new(&bin),
            };
            let mut child = command
                .args(["exec-server", "--listen", "ws://127.0.0.1:0"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
            let url = line.trim().to_string();
            if !url.starts_with("ws://") {
                let _ = child.kill();
                bail!("{} printed {line:?}, not a URL", bin.display());
            }
            Ok(Self { child, url })
        })
        .await?
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server process, in MiB.
    fn rss_mib(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .context("no VmRSS")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kb / 1024.0)
    }

    async fn stop(mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Lower,
    Higher,
}

/// One metric: what it measures and the target ratio (ours vs reference, > 1 = ours better).
struct Metric {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    better: Better,
    /// (minimum ratio, on p99 rather than p50)
    target: Option<(f64, bool)>,
    floor: &'static str,
}

const METRICS: &[Metric] = &[
    Metric {
        key: "spawn",
        label: "spawn `true` → closed (default client)",
        unit: "ms",
        better: Better::Lower,
        target: Some((30.0, false)),
        floor: "fork+exec+wait from Rust",
    },
    Metric {
        key: "spawn_ack",
        label: "spawn `true` → closed (at-once-ACK client)",
        unit: "ms",
        better: Better::Lower,
        target: Some((5.0, false)),
        floor: "fork+exec+wait from Rust",
    },
    Metric {
        key: "stream64",
        label: "stream 64 MiB stdout → closed",
        unit: "MB/s",
        better: Better::Higher,
        target: Some((2.0, false)),
        floor: "minimal WebSocket server",
    },
    Metric {
        key: "stream256",
        label: "stream 256 MiB stdout → closed",
        unit: "MB/s",
        better: Better::Higher,
        target: None,
        floor: "minimal WebSocket server",
    },
    Metric {
        key: "stream64_cpu",
        label: "server CPU time for the 64 MiB stream",
        unit: "ms",
        better: Better::Lower,
        target: None,
        floor: "minimal WebSocket server",
    },
    Metric {
        key: "stream256_cpu",
        label: "server CPU time for the 256 MiB stream",
        unit: "ms",
        better: Better::Lower,
        target: None,
        floor: "minimal WebSocket server",
    },
    Metric {
        key: "echo",
        label: "process/write → echoed output (default client)",
        unit: "ms",
        better: Better::Lower,
        target: Some((100.0, false)),
        floor: "WebSocket echo round trip",
    },
    Metric {
        key: "echo_ack",
        label: "process/write → echoed output (at-once-ACK client)",
        unit: "ms",
        better: Better::Lower,
        target: Some((1.2, false)),
        floor: "WebSocket echo round trip",
    },
    Metric {
        key: "fs_read_1",
        label: "fs/readFile 1 MiB",
        unit: "ms",
        better: Better::Lower,
        target: None,
        floor: "std::fs::read",
    },
    Metric {
        key: "fs_read_64",
        label: "fs/readFile 64 MiB",
        unit: "ms",
        better: Better::Lower,
        target: Some((1.7, false)),
        floor: "std::fs::read",
    },
    Metric {
        key: "fs_write_1",
        label: "fs/writeFile 1 MiB",
        unit: "ms",
        better: Better::Lower,
        target: None,
        floor: "std::fs::write",
    },
    Metric {
        key: "fs_write_8",
        label: "fs/writeFile 8 MiB",
        unit: "ms",
        better: Better::Lower,
        target: Some((1.1, false)),
        floor: "std::fs::write",
    },
    Metric {
        key: "fs_write_64",
        label: "fs/writeFile 64 MiB",
        unit: "ms",
        better: Better::Lower,
        target: None,
        floor: "std::fs::write",
    },
    Metric {
        key: "fanout_1",
        label: "100 starts pipelined on 1 connection → all closed",
        unit: "ms",
        better: Better::Lower,
        target: Some((5.0, false)),
        floor: "100 fork+exec at once, wait all",
    },
    Metric {
        key: "fanout_100",
        label: "100 starts on 100 connections → all closed",
        unit: "ms",
        better: Better::Lower,
        target: Some((4.0, false)),
        floor: "100 fork+exec at once, wait all",
    },
    Metric {
        key: "resume",
        label: "reconnect after a cut → caught up (512 KiB, default client)",
        unit: "ms",
        better: Better::Lower,
        target: Some((2.0, true)),
        floor: "new WebSocket + 512 KiB from a minimal server",
    },
    Metric {
        key: "resume_ack",
        label: "reconnect after a cut → caught up (at-once-ACK client)",
        unit: "ms",
        better: Better::Lower,
        target: None,
        floor: "new WebSocket + 512 KiB from a minimal server",
    },
    Metric {
        key: "rss_idle",
        label: "server RSS idle",
        unit: "MiB",
        better: Better::Lower,
        target: Some((5.0, false)),
        floor: "",
    },
    Metric {
        key: "rss_live100",
        label: "server RSS with 100 live processes",
        unit: "MiB",
        better: Better::Lower,
        target: Some((2.5, false)),
        floor: "",
    },
    Metric {
        key: "rss_after100m",
        label: "server RSS after one process wrote 100 MiB",
        unit: "MiB",
        better: Better::Lower,
        target: Some((2.0, false)),
        floor: "",
    },
    Metric {
        key: "sessions_open",
        label: "open + initialize N sessions (N connections)",
        unit: "ms",
        better: Better::Lower,
        target: None,
        floor: "",
    },
    Metric {
        key: "rss_sessions_held",
        label: "server RSS with N sessions held",
        unit: "MiB",
        better: Better::Lower,
        target: None,
        floor: "",
    },
    Metric {
        key: "rss_sessions_dropped",
        label: "server RSS after N sessions dropped",
        unit: "MiB",
        better: Better::Lower,
        target: None,
        floor: "",
    },
    // Part: http (issue 11, item 1).
    Metric {
        key: "http_1",
        label: "http/request 1 MiB, buffered",
        unit: "ms",
        better: Better::Lower,
        target: None,
        floor: "HTTP GET over loopback from Rust",
    },
    Metric {
        key: "http_stream64",
        label: "http/request 64 MiB, streamed → done",
        unit: "MB/s",
        better: Better::Higher,
        target: None,
        floor: "HTTP GET over loopback from Rust",
    },
    // Part: fast (issue 15, item 7): what the Codex CLI sends in workspace-write mode.
    Metric {
        key: "sbx_spawn",
        label: "sandboxed spawn `true` → closed (workspace-write)",
        unit: "ms",
        better: Better::Lower,
        target: Some((30.0, false)),
        floor: "",
    },
    Metric {
        key: "sbx_spawn_paced",
        label: "sandboxed spawn `true` → closed, 50 ms apart (workspace-write)",
        unit: "ms",
        better: Better::Lower,
        target: Some((30.0, false)),
        floor: "",
    },
    Metric {
        key: "sbx_write_4k",
        label: "sandboxed fs/writeFile 4 KiB (workspace-write)",
        unit: "ms",
        better: Better::Lower,
        target: Some((50.0, false)),
        floor: "",
    },
    Metric {
        key: "sbx_read_4k",
        label: "sandboxed fs/readFile 4 KiB (workspace-write)",
        unit: "ms",
        better: Better::Lower,
        target: Some((1.5, false)),
        floor: "",
    },
    Metric {
        key: "sbx_meta",
        label: "sandboxed fs/getMetadata (workspace-write)",
        unit: "ms",
        better: Better::Lower,
        target: Some((1.5, false)),
        floor: "",
    },
];

/// Extra floors beside a metric's main one.
const EXTRA_FLOORS: &[(&str, &str)] = &[
    ("stream64", "pipe into a reader"),
    ("stream256", "pipe into a reader"),
];

#[derive(Default)]
struct Results {
    /// (metric, who) → samples. `who` is "ours", "reference", "floor" or "floor:<kind>".
    samples: BTreeMap<(String, String), Vec<f64>>,
    /// (metric, who) → (count, first message)
    failures: BTreeMap<(String, String), (usize, String)>,
}

impl Results {
    fn add(&mut self, metric: &str, who: &str, value: f64) {
        self.samples
            .entry((metric.to_string(), who.to_string()))
            .or_default()
            .push(value);
    }

    fn fail(&mut self, metric: &str, who: &str, err: &anyhow::Error) {
        let msg = format!("{err:#}");
        eprintln!("    {who} {metric}: FAILED: {msg}");
        let entry = self
            .failures
            .entry((metric.to_string(), who.to_string()))
            .or_insert((0, msg));
        entry.0 += 1;
    }

    fn record(&mut self, metric: &str, who: &str, r: Result<Vec<f64>>) {
        match r {
            Ok(values) => {
                if std::env::var_os("CODEX_BENCH_DUMP").is_some() {
                    let q = |p| fmt_num(percentile(&values, p));
                    eprintln!(
                        "    {who} {metric}: n={} min={} p10={} p50={} p90={} p99={} max={}",
                        values.len(),
                        q(0.0),
                        q(0.1),
                        q(0.5),
                        q(0.9),
                        q(0.99),
                        q(1.0)
                    );
                }
                for v in values {
                    self.add(metric, who, v);
                }
            }
            Err(e) => self.fail(metric, who, &e),
        }
    }

    fn get(&self, metric: &str, who: &str) -> Option<&Vec<f64>> {
        self.samples
            .get(&(metric.to_string(), who.to_string()))
            .filter(|v| !v.is_empty())
    }

    fn failures(&self, metric: &str, who: &str) -> usize {
        self.failures
            .get(&(metric.to_string(), who.to_string()))
            .map(|f| f.0)
            .unwrap_or(0)
    }
}

/// Nearest-rank percentile.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

// ---------------------------------------------------------------------------------------------
// Floors, measured in this process
// ---------------------------------------------------------------------------------------------

fn floor_spawn(n: usize) -> Result<Vec<f64>> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let status = Command::new("true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "true failed");
            Ok(ms(t.elapsed()))
        })
        .collect()
}

fn floor_fanout() -> Result<f64> {
    let t = Instant::now();
    let mut children = (0..100)
        .map(|_| {
            Command::new("true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for c in &mut children {
        c.wait()?;
    }
    Ok(ms(t.elapsed()))
}

async fn floor_pipe(bytes: usize) -> Result<f64> {
    let t = Instant::now();
    let mut child = tokio::process::Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/zero"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().expect("piped");
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = out.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n;
    }
    child.wait().await?;
    anyhow::ensure!(total == bytes, "pipe gave {total} bytes, not {bytes}");
    Ok(mb_per_s(bytes, t.elapsed()))
}

fn floor_fs(dir: &Path, size: usize, write: bool) -> Result<f64> {
    let path = dir.join(format!("floor-{size}"));
    let data = vec![b'x'; size];
    if write {
        let t = Instant::now();
        std::fs::write(&path, &data)?;
        Ok(ms(t.elapsed()))
    } else {
        std::fs::write(&path, &data)?;
        let t = Instant::now();
        let read = std::fs::read(&path)?;
        let e = t.elapsed();
        anyhow::ensure!(read.len() == size);
        Ok(ms(e))
    }
}

/// A minimal WebSocket server in its own thread and single-threaded runtime: what a server that
/// does nothing but forward pipe output (base64 in JSON, one frame per 64 KiB read) or echo frames
/// can do on this machine.
fn start_minimal_server() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("ws://{}", listener.local_addr()?);
    listener.set_nonblocking(true)?;
    std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        MINIMAL_TID.store(unsafe { libc::gettid() }, Ordering::Relaxed);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = TcpListener::from_std(listener).expect("listener");
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = minimal_connection(tcp).await;
                });
            }
        });
    });
    Ok(url)
}

async fn minimal_connection(tcp: TcpStream) -> Result<()> {
    tcp.set_nodelay(true)?;
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let mut ws = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await?;
    while let Some(msg) = ws.next().await {
        let text = match msg? {
            Message::Text(t) => t.as_str().to_string(),
            Message::Close(_) => break,
            _ => continue,
        };
        let notify = |method: &str, seq: u64, chunk: Option<String>| {
            let mut params = json!({"processId": "m", "seq": seq});
            if let Some(c) = chunk {
                params["stream"] = json!("stdout");
                params["chunk"] = json!(c);
            }
            Message::text(json!({"method": method, "params": params}).to_string())
        };
        if let Some(n) = text.strip_prefix("stream ") {
            let mut child = tokio::process::Command::new("head")
                .args(["-c", n, "/dev/zero"])
                .stdout(Stdio::piped())
                .spawn()?;
            let mut out = child.stdout.take().expect("piped");
            let mut buf = vec![0u8; 64 * 1024];
            let mut seq = 0;
            loop {
                let n = out.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                seq += 1;
                let chunk = base64::engine::general_purpose::STANDARD.encode(&buf[..n]);
                ws.send(notify("process/output", seq, Some(chunk))).await?;
            }
            child.wait().await?;
            ws.send(notify("process/closed", seq + 1, None)).await?;
        } else if let Some(n) = text.strip_prefix("blob ") {
            let n: usize = n.parse()?;
            let chunk = base64::engine::general_purpose::STANDARD.encode(vec![0u8; n]);
            ws.send(notify("process/output", 1, Some(chunk))).await?;
            ws.send(notify("process/closed", 2, None)).await?;
        } else {
            ws.send(Message::text(text)).await?;
        }
    }
    Ok(())
}

/// (MB/s, server CPU ms)
async fn floor_ws_stream(url: &str, bytes: usize) -> Result<(f64, f64)> {
    let mut conn = open(url, Flavour::Default).await?;
    let tid = MINIMAL_TID.load(Ordering::Relaxed);
    let cpu = thread_cpu_ns(tid);
    let t = Instant::now();
    conn.try_send_text(format!("stream {bytes}")).await?;
    let got = conn.try_wait_closed("m", PATIENCE).await?;
    let e = t.elapsed();
    let cpu = thread_cpu_ns(tid) - cpu;
    anyhow::ensure!(got == bytes, "got {got} bytes, not {bytes}");
    Ok((mb_per_s(bytes, e), cpu as f64 / 1e6))
}

async fn floor_ws_echo(url: &str, n: usize) -> Result<Vec<f64>> {
    let mut conn = open(url, Flavour::Ack).await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let id = conn
            .try_send_request_text(|id| format!(r#"{{"id":{id},"result":{{"chunk":"cGluZwo="}}}}"#))
            .await?;
        answer(&mut conn, "echo", id).await?;
        out.push(ms(t.elapsed()));
    }
    Ok(out)
}

async fn floor_resume(url: &str) -> Result<f64> {
    let t = Instant::now();
    let mut conn = open(url, Flavour::Default).await?;
    conn.try_send_text(format!("blob {RESUME_BYTES}")).await?;
    let got = conn.try_wait_closed("m", PATIENCE).await?;
    anyhow::ensure!(got == RESUME_BYTES);
    Ok(ms(t.elapsed()))
}

// ---------------------------------------------------------------------------------------------
// Measurements against a server
// ---------------------------------------------------------------------------------------------

async fn bench_spawn(url: &str, flavour: Flavour, n: usize) -> Result<Vec<f64>> {
    let (mut conn, _) = connect(url, flavour).await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let pid = process_id();
        let t = Instant::now();
        let id = conn
            .try_send_request("process/start", start_params(&pid, &["true"], false))
            .await?;
        conn.try_wait_closed(&pid, Duration::from_secs(10)).await?;
        out.push(ms(t.elapsed()));
        answer(&mut conn, "process/start", id).await?;
    }
    Ok(out)
}

/// (MB/s, server CPU ms)
async fn bench_stream(url: &str, server_pid: u32, bytes: usize) -> Result<(f64, f64)> {
    let (mut conn, _) = connect(url, Flavour::Default).await?;
    let pid = process_id();
    let n = bytes.to_string();
    let cpu = cpu_ns(server_pid);
    let t = Instant::now();
    let id = conn
        .try_send_request(
            "process/start",
            start_params(&pid, &["head", "-c", &n, "/dev/zero"], false),
        )
        .await?;
    let got = conn.try_wait_closed(&pid, Duration::from_secs(120)).await?;
    let e = t.elapsed();
    let cpu = cpu_ns(server_pid).saturating_sub(cpu);
    answer(&mut conn, "process/start", id).await?;
    anyhow::ensure!(got == bytes, "received {got} bytes, not {bytes}");
    Ok((mb_per_s(bytes, e), cpu as f64 / 1e6))
}

async fn bench_echo(url: &str, flavour: Flavour, n: usize) -> Result<Vec<f64>> {
    let (mut conn, _) = connect(url, flavour).await?;
    let pid = process_id();
    call(
        &mut conn,
        "process/start",
        start_params(&pid, &["cat"], true),
    )
    .await?;
    let chunk = base64::engine::general_purpose::STANDARD.encode(b"ping\n");
    let mut out = Vec::with_capacity(n);
    let result = async {
        for i in 0..n {
            let before = conn.tally(&pid).output_bytes;
            let t = Instant::now();
            let id = conn
                .try_send_request(
                    "process/write",
                    json!({"processId": pid, "chunk": chunk, "writeId": format!("w{i}")}),
                )
                .await?;
            let cat_closed = conn
                .try_wait_until("the echo", Duration::from_secs(10), |c| {
                    let tally = c.tally(&pid);
                    (tally.closed || tally.output_bytes >= before + 5).then_some(tally.closed)
                })
                .await?;
            if cat_closed {
                bail!("cat closed");
            }
            out.push(ms(t.elapsed()));
            answer(&mut conn, "process/write", id).await?;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = call(&mut conn, "process/terminate", json!({"processId": pid})).await;
    result.map(|()| out)
}

/// The `sandbox` object the Codex CLI sends in workspace-write mode for workspace `root`
/// (docs/sandbox.md §1): root read; project roots, `/tmp`, `$TMPDIR` write; `.git`,
/// `.agents`, `.codex`, `.aws` under each root read (skipped when missing); network restricted.
fn workspace_write(root: &Path) -> Value {
    let protected = |name: &str| {
        json!({"path": {"type": "special", "value": {"kind": "project_roots", "subpath": name}},
               "access": "read", "missing_path_behavior": "skip"})
    };
    json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"},
                {"path": {"type": "special", "value": {"kind": "slash_tmp"}}, "access": "write"},
                {"path": {"type": "special", "value": {"kind": "tmpdir"}}, "access": "write"},
                protected(".git"), protected(".agents"), protected(".codex"), protected(".aws")
            ]}},
        "windowsSandboxLevel": "disabled",
        "cwd": file_uri(root),
        "workspaceRoots": [file_uri(root)]
    })
}

/// A workspace for the sandboxed metrics: `dir/ws` with a `.git`.
fn sandbox_workspace(dir: &Path) -> Result<PathBuf> {
    let ws = dir.join("ws");
    std::fs::create_dir_all(ws.join(".git"))?;
    Ok(std::fs::canonicalize(ws)?)
}

/// Sandboxed `true`, started and waited for one at a time on one connection, `pause` between
/// one's `closed` and the next start (not timed).
async fn bench_sandboxed_spawn(
    url: &str,
    dir: &Path,
    n: usize,
    pause: Duration,
) -> Result<Vec<f64>> {
    let ws = sandbox_workspace(dir)?;
    let (mut conn, _) = connect(url, Flavour::Default).await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let pid = process_id();
        let mut params = start_params(&pid, &["true"], false);
        params["cwd"] = json!(file_uri(&ws));
        params["env"]["TMPDIR"] = json!("/tmp");
        params["sandbox"] = workspace_write(&ws);
        let t = Instant::now();
        let id = conn.try_send_request("process/start", params).await?;
        conn.try_wait_closed(&pid, Duration::from_secs(10)).await?;
        out.push(ms(t.elapsed()));
        answer(&mut conn, "process/start", id).await?;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(out)
}

/// One sandboxed fs call (`method` with `params` and the workspace-write sandbox) at a time on
/// one connection, `n` times; `check` looks at each result.
async fn bench_sandboxed_fs(
    url: &str,
    dir: &Path,
    n: usize,
    method: &str,
    params: impl Fn(&Path) -> Value,
    check: impl Fn(&Value) -> Result<()>,
) -> Result<Vec<f64>> {
    let ws = sandbox_workspace(dir)?;
    std::fs::write(ws.join("small.txt"), vec![b's'; 4096])?;
    let (mut conn, _) = connect(url, Flavour::Default).await?;
    let mut p = params(&ws);
    p["sandbox"] = workspace_write(&ws);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let answer = conn.try_request(method, p.clone(), PATIENCE).await?;
        let e = t.elapsed();
        check(&rpc(method, answer)?)?;
        out.push(ms(e));
    }
    Ok(out)
}

async fn bench_fs_write(url: &str, dir: &Path, size: usize, n: usize) -> Result<Vec<f64>> {
    let (mut conn, _) = connect(url, Flavour::Default).await?;
    let path = dir.join(format!("write-{size}"));
    let data = base64::engine::general_purpose::STANDARD.encode(vec![b'y'; size]);
    let params = json!({"path": file_uri(&path), "dataBase64": data}).to_string();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let _ = std::fs::remove_file(&path);
        let t = Instant::now();
        let id = conn
            .try_send_request_text(|id| {
                format!(r#"{{"id":{id},"method":"fs/writeFile","params":{params}}}"#)
            })
            .await?;
        let answer = conn.try_await_answer(id, Duration::from_secs(60)).await?;
        rpc("fs/writeFile", answer)?;
        out.push(ms(t.elapsed()));
        let len = std::fs::metadata(&path)?.len() as usize;
        anyhow::ensure!(len == size, "file has {len} bytes, not {size}");
    }
    Ok(out)
}

/// A loopback HTTP server answering every request with `size` bytes (one request per
/// connection); its port.
async fn http_body_server(size: usize) -> Result<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let body = std::sync::Arc::new(vec![b'h'; size]);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.write_all(&body).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok(port)
}

/// `http/request` of a `size`-byte body, buffered: ms per request.
async fn bench_http_buffered(url: &str, size: usize, n: usize) -> Result<Vec<f64>> {
    let port = http_body_server(size).await?;
    let (mut conn, _) = connect(url, Flavour::Default).await?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let params = json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/"),
                            "requestId": format!("b{i}")});
        let t = Instant::now();
        let answer = conn
            .try_request("http/request", params, Duration::from_secs(60))
            .await?;
        let e = t.elapsed();
        let result = rpc("http/request", answer)?;
        let len = result["bodyBase64"].as_str().map(b64_len).unwrap_or(0);
        anyhow::ensure!(len == size, "got {len} bytes, not {size}");
        out.push(ms(e));
    }
    Ok(out)
}

/// `http/request` of a `size`-byte body, streamed, until its `done` delta: MB/s.
async fn bench_http_streamed(url: &str, size: usize) -> Result<f64> {
    let port = http_body_server(size).await?;
    // Not lean: a lean client keeps process notifications only.
    let opts = ConnectOptions {
        at_once_acks: false,
        lean: false,
    };
    let mut conn = Client::connect(url, opts).await?;
    rpc(
        "initialize",
        conn.try_initialize("exec-bench", None, PATIENCE).await?,
    )?;
    let params = json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/"),
                        "requestId": "s", "streamResponse": true});
    let t = Instant::now();
    let id = conn.try_send_request("http/request", params).await?;
    rpc(
        "http/request",
        conn.try_await_answer(id, Duration::from_secs(60)).await?,
    )?;
    let mut got = 0;
    loop {
        let delta = conn
            .try_wait_until("a body delta", Duration::from_secs(60), |c| {
                c.take_notification(|m| m["method"] == "http/request/bodyDelta")
            })
            .await?;
        let p = &delta["params"];
        got += p["deltaBase64"].as_str().map(b64_len).unwrap_or(0);
        if p["done"] == true {
            anyhow::ensure!(p["error"].is_null(), "body failed: {}", p["error"]);
            break;
        }
    }
    let e = t.elapsed();
    anyhow::ensure!(got == size, "got {got} bytes, not {size}");
    Ok(size as f64 / 1e6 / e.as_secs_f64())
}

/// The floor of both: the same GET read straight off a socket, in ms.
async fn floor_http_get(size: usize) -> Result<f64> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let port = http_body_server(size).await?;
    let t = Instant::now();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    let mut all = Vec::with_capacity(size + 256);
    conn.read_to_end(&mut all).await?;
    let e = t.elapsed();
    anyhow::ensure!(all.len() > size, "short answer");
    Ok(ms(e))
}

async fn bench_fs_read(url: &str, dir: &Path, size: usize, n: usize) -> Result<Vec<f64>> {
    let (mut conn, _) = connect(url, Flavour::Default).await?;
    let path = dir.join(format!("read-{size}"));
    std::fs::write(&path, vec![b'z'; size])?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let params = json!({"path": file_uri(&path)});
        let answer = conn
            .try_request("fs/readFile", params, Duration::from_secs(60))
            .await?;
        let e = t.elapsed();
        let result = rpc("fs/readFile", answer)?;
        let len = result["dataBase64"].as_str().map(b64_len).unwrap_or(0);
        anyhow::ensure!(len == size, "read {len} bytes, not {size}");
        out.push(ms(e));
    }
    Ok(out)
}

async fn bench_fanout_one(url: &str) -> Result<f64> {
    let (mut conn, _) = connect(url, Flavour::Default).await?;
    let pids: Vec<String> = (0..100).map(|_| process_id()).collect();
    let t = Instant::now();
    let mut ids = Vec::with_capacity(pids.len());
    for pid in &pids {
        ids.push(
            conn.try_send_request("process/start", start_params(pid, &["true"], false))
                .await?,
        );
    }
    wait_all_closed(&mut conn, &pids, Duration::from_secs(30)).await?;
    let e = t.elapsed();
    for id in ids {
        answer(&mut conn, "process/start", id).await?;
    }
    Ok(ms(e))
}

async fn bench_fanout_many(url: &str) -> Result<f64> {
    let mut conns = Vec::with_capacity(100);
    for _ in 0..100 {
        conns.push(connect(url, Flavour::Default).await?.0);
    }
    let t = Instant::now();
    let runs = conns.iter_mut().map(|conn| async move {
        let pid = process_id();
        let id = conn
            .try_send_request("process/start", start_params(&pid, &["true"], false))
            .await?;
        conn.try_wait_closed(&pid, Duration::from_secs(30)).await?;
        answer(conn, "process/start", id).await?;
        Ok::<_, anyhow::Error>(())
    });
    let results = timed(Duration::from_secs(30), "fan-out", async {
        Ok(futures_util::future::join_all(runs).await)
    })
    .await?;
    let e = t.elapsed();
    for r in results {
        r?;
    }
    Ok(ms(e))
}

async fn bench_resume(url: &str, flavour: Flavour) -> Result<f64> {
    let (mut conn, session) = connect(url, flavour).await?;
    let pid = process_id();
    let n = RESUME_BYTES.to_string();
    call(
        &mut conn,
        "process/start",
        start_params(&pid, &["head", "-c", &n, "/dev/zero"], false),
    )
    .await?;
    // Take the first chunk, then cut the TCP connection (no close frame).
    let first = conn
        .try_wait_until("first output", Duration::from_secs(10), |c| {
            let tally = c.tally(&pid);
            (tally.output_bytes > 0).then_some(tally)
        })
        .await?;
    let (mut last_seq, mut bytes) = (first.last_seq as u64, first.output_bytes);
    drop(conn);
    // The process finishes and the server sees the drop; what follows is the catch-up alone.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t = Instant::now();
    let mut conn = timed(Duration::from_secs(10), "resume", async {
        loop {
            let mut conn = open(url, flavour).await?;
            match conn
                .try_initialize("exec-bench", Some(&session), PATIENCE)
                .await?
            {
                Ok(_) => return Ok(conn),
                // -32010: the old connection is not seen to be gone yet; retry.
                Err((-32010, _)) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err((code, message)) => bail!("resume: error {code} {message}"),
            }
        }
    })
    .await?;
    loop {
        let params = json!({"processId": pid, "afterSeq": last_seq, "waitMs": 1000});
        let answer = conn
            .try_request("process/read", params, Duration::from_secs(10))
            .await?;
        let r = rpc("process/read", answer)?;
        let chunks = r["chunks"].as_array().cloned().unwrap_or_default();
        let mut last_chunk = None;
        for c in &chunks {
            bytes += c["chunk"].as_str().map(b64_len).unwrap_or(0);
            last_chunk = c["seq"].as_u64();
        }
        let next_seq = r["nextSeq"].as_u64().context("no nextSeq")?;
        let complete = r["closed"].as_bool() == Some(true)
            && last_chunk.is_none_or(|last| next_seq > last + 1);
        last_seq = next_seq.saturating_sub(1).max(last_seq);
        if complete {
            break;
        }
    }
    let e = t.elapsed();
    anyhow::ensure!(
        bytes == RESUME_BYTES,
        "caught up {bytes} bytes, not {RESUME_BYTES}"
    );
    Ok(ms(e))
}

async fn rss_idle(bin: &Path) -> Result<f64> {
    let server = Server::start(bin).await?;
    let r = async {
        drop(connect(&server.url, Flavour::Default).await?);
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.rss_mib()
    }
    .await;
    server.stop().await;
    r
}

async fn rss_live100(bin: &Path) -> Result<f64> {
    let server = Server::start(bin).await?;
    let r = async {
        let (mut conn, _) = connect(&server.url, Flavour::Default).await?;
        let pids: Vec<String> = (0..100).map(|_| process_id()).collect();
        let mut ids = Vec::new();
        for pid in &pids {
            ids.push(
                conn.try_send_request("process/start", start_params(pid, &["sleep", "30"], false))
                    .await?,
            );
        }
        for id in ids {
            answer(&mut conn, "process/start", id).await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss = server.rss_mib();
        let mut ids = Vec::new();
        for pid in &pids {
            ids.push(
                conn.try_send_request("process/terminate", json!({"processId": pid}))
                    .await?,
            );
        }
        for id in ids {
            let _ = answer(&mut conn, "process/terminate", id).await;
        }
        let _ = wait_all_closed(&mut conn, &pids, Duration::from_secs(5)).await;
        rss
    }
    .await;
    server.stop().await;
    r
}

async fn rss_after_big_output(bin: &Path) -> Result<f64> {
    let server = Server::start(bin).await?;
    let r = async {
        let (mut conn, _) = connect(&server.url, Flavour::Default).await?;
        let pid = process_id();
        let n = BIG_OUTPUT.to_string();
        call(
            &mut conn,
            "process/start",
            start_params(&pid, &["head", "-c", &n, "/dev/zero"], false),
        )
        .await?;
        let got = conn.try_wait_closed(&pid, Duration::from_secs(120)).await?;
        anyhow::ensure!(got == BIG_OUTPUT, "received {got} bytes");
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.rss_mib()
    }
    .await;
    server.stop().await;
    r
}

/// (open time ms, RSS held, RSS after drop)
async fn sessions(bin: &Path, n: usize) -> Result<(f64, f64, f64)> {
    let server = Server::start(bin).await?;
    let r = async {
        let t = Instant::now();
        let mut conns = Vec::with_capacity(n);
        let (mut ws_open, mut init) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let t = Instant::now();
            let mut conn = open(&server.url, Flavour::Default).await?;
            ws_open.push(ms(t.elapsed()));
            let t = Instant::now();
            let answer = conn.try_initialize("exec-bench", None, PATIENCE).await?;
            rpc("initialize", answer)?;
            init.push(ms(t.elapsed()));
            conns.push(conn);
        }
        let open = ms(t.elapsed());
        if std::env::var_os("CODEX_BENCH_DUMP").is_some() {
            eprintln!(
                "    sessions: WebSocket open p50 {} ms, initialize p50 {} ms",
                fmt_num(percentile(&ws_open, 0.5)),
                fmt_num(percentile(&init, 0.5))
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = server.rss_mib()?;
        // Still alive: one request on the last connection. A server without environment/info
        // still answers; any answer will do.
        let last = conns.last_mut().context("no sessions")?;
        let _any_answer = last
            .try_request("environment/info", json!({}), PATIENCE)
            .await?;
        drop(conns);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let dropped = server.rss_mib()?;
        Ok((open, held, dropped))
    }
    .await;
    server.stop().await;
    r
}

// ---------------------------------------------------------------------------------------------
// One round against one server
// ---------------------------------------------------------------------------------------------

async fn round_server(
    who: &str,
    bin: &Path,
    opts: &Options,
    sizes: Sizes,
    dir: &Path,
    res: &mut Results,
) -> Result<()> {
    let server = Server::start(bin).await?;
    let url = server.url.clone();
    eprintln!("  {who}: {} (pid {}) at {url}", bin.display(), server.pid());
    let want = |key: &str| opts.wants(key);

    if want("spawn") {
        let r = bench_spawn(&url, Flavour::Default, sizes.spawn).await;
        res.record("spawn", who, r);
    }
    if want("spawn_ack") {
        let r = bench_spawn(&url, Flavour::Ack, sizes.spawn).await;
        res.record("spawn_ack", who, r);
    }
    for (key, bytes, n) in [
        ("stream64", 64 * MIB, sizes.stream_64),
        ("stream256", 256 * MIB, sizes.stream_256),
    ] {
        for _ in 0..if want(key) { n } else { 0 } {
            match bench_stream(&url, server.pid(), bytes).await {
                Ok((rate, cpu)) => {
                    res.add(key, who, rate);
                    res.add(&format!("{key}_cpu"), who, cpu);
                }
                Err(e) => res.fail(key, who, &e),
            }
        }
    }
    if want("echo") {
        let r = bench_echo(&url, Flavour::Default, sizes.echo).await;
        res.record("echo", who, r);
    }
    if want("echo_ack") {
        let r = bench_echo(&url, Flavour::Ack, sizes.echo).await;
        res.record("echo_ack", who, r);
    }
    for (key, size, n) in [
        ("fs_read_1", MIB, sizes.fs_small),
        ("fs_read_64", 64 * MIB, sizes.fs_big),
    ] {
        if want(key) {
            let r = bench_fs_read(&url, dir, size, n).await;
            res.record(key, who, r);
        }
    }
    if want("http_1") {
        let r = bench_http_buffered(&url, MIB, sizes.fs_small).await;
        res.record("http_1", who, r);
    }
    for _ in 0..if want("http_stream64") {
        sizes.fs_big
    } else {
        0
    } {
        let r = bench_http_streamed(&url, 64 * MIB).await.map(|v| vec![v]);
        res.record("http_stream64", who, r);
    }
    for (key, size, n) in [
        ("fs_write_1", MIB, sizes.fs_small),
        ("fs_write_8", 8 * MIB, sizes.fs_big.max(3)),
        ("fs_write_64", 64 * MIB, sizes.fs_big),
    ] {
        if want(key) {
            let r = bench_fs_write(&url, dir, size, n).await;
            res.record(key, who, r);
        }
    }
    for _ in 0..sizes.fanout {
        if want("fanout_1") {
            let r = bench_fanout_one(&url).await.map(|v| vec![v]);
            res.record("fanout_1", who, r);
        }
        if want("fanout_100") {
            let r = bench_fanout_many(&url).await.map(|v| vec![v]);
            res.record("fanout_100", who, r);
        }
    }
    for _ in 0..if want("resume") { sizes.resume } else { 0 } {
        let r = bench_resume(&url, Flavour::Default).await.map(|v| vec![v]);
        res.record("resume", who, r);
    }
    for _ in 0..if want("resume_ack") { sizes.resume } else { 0 } {
        let r = bench_resume(&url, Flavour::Ack).await.map(|v| vec![v]);
        res.record("resume_ack", who, r);
    }
    if want("sbx_spawn") {
        let r = bench_sandboxed_spawn(&url, dir, sizes.spawn, Duration::ZERO).await;
        res.record("sbx_spawn", who, r);
    }
    if want("sbx_spawn_paced") {
        // As a client runs commands: with time between them (a model's turn takes far longer).
        let n = sizes.spawn.min(40);
        let r = bench_sandboxed_spawn(&url, dir, n, Duration::from_millis(50)).await;
        res.record("sbx_spawn_paced", who, r);
    }
    if want("sbx_write_4k") {
        let r = bench_sandboxed_fs(
            &url,
            dir,
            sizes.spawn,
            "fs/writeFile",
            |ws| json!({"path": file_uri(&ws.join("w.txt")), "dataBase64": base64::engine::general_purpose::STANDARD.encode([b'w'; 4096])}),
            |_| Ok(()),
        )
        .await;
        res.record("sbx_write_4k", who, r);
    }
    if want("sbx_read_4k") {
        let r = bench_sandboxed_fs(
            &url,
            dir,
            sizes.spawn,
            "fs/readFile",
            |ws| json!({"path": file_uri(&ws.join("small.txt"))}),
            |v| {
                let len = v["dataBase64"].as_str().map(b64_len).unwrap_or(0);
                anyhow::ensure!(len == 4096, "read {len} bytes, not 4096");
                Ok(())
            },
        )
        .await;
        res.record("sbx_read_4k", who, r);
    }
    if want("sbx_meta") {
        let r = bench_sandboxed_fs(
            &url,
            dir,
            sizes.spawn,
            "fs/getMetadata",
            |ws| json!({"path": file_uri(&ws.join("small.txt"))}),
            |v| {
                anyhow::ensure!(v["isFile"] == json!(true), "not a file: {v}");
                Ok(())
            },
        )
        .await;
        res.record("sbx_meta", who, r);
    }
    server.stop().await;

    // Memory: each on a fresh server, so nothing above inflates it.
    if want("rss_idle") {
        let r = rss_idle(bin).await.map(|v| vec![v]);
        res.record("rss_idle", who, r);
    }
    if want("rss_live100") {
        let r = rss_live100(bin).await.map(|v| vec![v]);
        res.record("rss_live100", who, r);
    }
    if want("rss_after100m") {
        let r = rss_after_big_output(bin).await.map(|v| vec![v]);
        res.record("rss_after100m", who, r);
    }
    if want("sessions") || want("rss_sessions") {
        match sessions(bin, sizes.sessions).await {
            Ok((open, held, dropped)) => {
                res.add("sessions_open", who, open);
                res.add("rss_sessions_held", who, held);
                res.add("rss_sessions_dropped", who, dropped);
            }
            Err(e) => {
                res.fail("sessions_open", who, &e);
                res.fail("rss_sessions_held", who, &e);
            }
        }
    }
    Ok(())
}

async fn round_floors(opts: &Options, sizes: Sizes, dir: &Path, minimal: &str, res: &mut Results) {
    let want = |key: &str| opts.wants(key);
    if want("spawn") {
        let n = sizes.spawn;
        let spawn = tokio::task::spawn_blocking(move || floor_spawn(n))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        if let Ok(v) = &spawn {
            for x in v {
                res.add("spawn_ack", "floor", *x);
            }
        }
        res.record("spawn", "floor", spawn);
    }
    for _ in 0..if want("fanout") { sizes.fanout } else { 0 } {
        let r = tokio::task::spawn_blocking(floor_fanout)
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        if let Ok(v) = &r {
            res.add("fanout_100", "floor", *v);
        }
        res.record("fanout_1", "floor", r.map(|v| vec![v]));
    }
    for (key, bytes, n) in [
        ("stream64", 64 * MIB, sizes.stream_64),
        ("stream256", 256 * MIB, sizes.stream_256),
    ] {
        for _ in 0..if want(key) { n } else { 0 } {
            let r = floor_pipe(bytes).await.map(|v| vec![v]);
            res.record(key, "floor:pipe into a reader", r);
            match floor_ws_stream(minimal, bytes).await {
                Ok((rate, cpu)) => {
                    res.add(key, "floor", rate);
                    res.add(&format!("{key}_cpu"), "floor", cpu);
                }
                Err(e) => res.fail(key, "floor", &e),
            }
        }
    }
    if want("echo") {
        let echo = floor_ws_echo(minimal, sizes.echo).await;
        if let Ok(v) = &echo {
            for x in v {
                res.add("echo_ack", "floor", *x);
            }
        }
        res.record("echo", "floor", echo);
    }
    for (key, size, n, write) in [
        ("fs_read_1", MIB, sizes.fs_small, false),
        ("fs_read_64", 64 * MIB, sizes.fs_big, false),
        ("fs_write_1", MIB, sizes.fs_small, true),
        ("fs_write_8", 8 * MIB, sizes.fs_big.max(3), true),
        ("fs_write_64", 64 * MIB, sizes.fs_big, true),
    ] {
        if want(key) {
            let r = (0..n).map(|_| floor_fs(dir, size, write)).collect();
            res.record(key, "floor", r);
        }
    }
    if want("http_1") {
        let mut r = Vec::new();
        for _ in 0..sizes.fs_small {
            r.push(floor_http_get(MIB).await);
        }
        res.record("http_1", "floor", r.into_iter().collect());
    }
    for _ in 0..if want("http_stream64") {
        sizes.fs_big
    } else {
        0
    } {
        let r = floor_http_get(64 * MIB)
            .await
            .map(|t| vec![(64 * MIB) as f64 / 1e6 / (t / 1e3)]);
        res.record("http_stream64", "floor", r);
    }
    for _ in 0..if want("resume") { sizes.resume } else { 0 } {
        let r = floor_resume(minimal).await;
        if let Ok(v) = &r {
            res.add("resume_ack", "floor", *v);
        }
        res.record("resume", "floor", r.map(|v| vec![v]));
    }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn ratio(metric: &Metric, ours: f64, reference: f64) -> f64 {
    match metric.better {
        Better::Lower => reference / ours,
        Better::Higher => ours / reference,
    }
}

fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "unknown".into());
    vec![
        ("nproc".into(), nproc),
        ("CPU model".into(), model),
        ("kernel".into(), kernel),
    ]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn stat(res: &Results, key: &str, who: &str, p: f64) -> Option<f64> {
    res.get(key, who).map(|v| percentile(v, p))
}

fn cell(v: Option<f64>) -> String {
    v.map(fmt_num).unwrap_or_else(|| "—".into())
}

struct Report<'a> {
    opts: &'a Options,
    sizes: Sizes,
    res: &'a Results,
    load_before: String,
    load_after: String,
    elapsed: Duration,
}

impl Report<'_> {
    fn label(&self, m: &Metric) -> String {
        m.label.replace("N ", &format!("{} ", self.sizes.sessions))
    }

    /// The ratio table, with each target's verdict.
    fn ratios(&self) -> String {
        let has_ref = self.opts.reference.is_some();
        let mut s = String::new();
        s.push_str(
            "| metric | ours p50 | reference p50 | ratio p50 | ratio p99 | target | holds |\n",
        );
        s.push_str("|---|---|---|---|---|---|---|\n");
        for m in METRICS {
            let (o50, o99) = (
                stat(self.res, m.key, "ours", 0.5),
                stat(self.res, m.key, "ours", 0.99),
            );
            let (r50, r99) = (
                stat(self.res, m.key, "reference", 0.5),
                stat(self.res, m.key, "reference", 0.99),
            );
            let ours_failed = self.res.failures(m.key, "ours");
            let ref_failed = self.res.failures(m.key, "reference");
            if o50.is_none() && ours_failed == 0 {
                continue;
            }
            let rat50 = o50.zip(r50).map(|(o, r)| ratio(m, o, r));
            let rat99 = o99.zip(r99).map(|(o, r)| ratio(m, o, r));
            let target = m
                .target
                .map(|(t, p99)| format!("≥ {t} ({})", if p99 { "p99" } else { "p50" }))
                .unwrap_or_else(|| "—".into());
            let holds = match (m.target, ours_failed) {
                (_, f) if f > 0 => "**no** (ours failed)".to_string(),
                (Some((t, p99)), _) if has_ref => {
                    let r = if p99 { rat99 } else { rat50 };
                    match r {
                        Some(r) if r >= t => "yes".into(),
                        Some(_) => "**no**".into(),
                        None if ref_failed > 0 => "yes (reference failed)".into(),
                        None => "—".into(),
                    }
                }
                _ => "—".into(),
            };
            let ref_cell = if r50.is_none() && ref_failed > 0 {
                format!("failed ×{ref_failed}")
            } else {
                cell(r50)
            };
            s.push_str(&format!(
                "| {} ({}) | {} | {} | {} | {} | {} | {} |\n",
                self.label(m),
                m.unit,
                cell(o50),
                ref_cell,
                cell(rat50),
                cell(rat99),
                target,
                holds
            ));
        }
        // Extra checks that are not ours-vs-reference.
        if let (Some(o), Some(f)) = (
            stat(self.res, "stream64", "ours", 0.5),
            stat(self.res, "stream64", "floor", 0.5),
        ) {
            s.push_str(&format!(
                "| stream 64 MiB, ours / minimal server | {} | {} (minimal) | {} | — | ≥ 0.8 | {} |\n",
                fmt_num(o),
                fmt_num(f),
                fmt_num(o / f),
                if o / f >= 0.8 { "yes" } else { "**no**" }
            ));
        }
        if self.res.get("fs_write_64", "ours").is_some() {
            let failed = self.res.failures("fs_write_64", "ours");
            s.push_str(&format!(
                "| fs/writeFile 64 MiB works (ours) | {} | — | — | — | works | {} |\n",
                if failed == 0 { "ok" } else { "failed" },
                if failed == 0 { "yes" } else { "**no**" }
            ));
        }
        if self.res.get("rss_sessions_held", "ours").is_some() {
            let failed = self.res.failures("sessions_open", "ours");
            s.push_str(&format!(
                "| {} sessions held on {} cores (ours) | {} | — | — | — | held | {} |\n",
                self.sizes.sessions,
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(0),
                if failed == 0 { "ok" } else { "failed" },
                if failed == 0 { "yes" } else { "**no**" }
            ));
        }
        s
    }

    fn details(&self) -> String {
        let mut s = String::new();
        s.push_str("| metric | unit | ours p50 | ours p99 | ours n | reference p50 | reference p99 | reference n | floor p50 | floor p99 | floor |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
        for m in METRICS {
            let n = |who: &str| {
                let ok = self.res.get(m.key, who).map(Vec::len).unwrap_or(0);
                let failed = self.res.failures(m.key, who);
                if failed > 0 {
                    format!("{ok} (+{failed} failed)")
                } else {
                    ok.to_string()
                }
            };
            if self.res.get(m.key, "ours").is_none() && self.res.failures(m.key, "ours") == 0 {
                continue;
            }
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                self.label(m),
                m.unit,
                cell(stat(self.res, m.key, "ours", 0.5)),
                cell(stat(self.res, m.key, "ours", 0.99)),
                n("ours"),
                cell(stat(self.res, m.key, "reference", 0.5)),
                cell(stat(self.res, m.key, "reference", 0.99)),
                n("reference"),
                cell(stat(self.res, m.key, "floor", 0.5)),
                cell(stat(self.res, m.key, "floor", 0.99)),
                if m.floor.is_empty() { "—" } else { m.floor },
            ));
            for (key, kind) in EXTRA_FLOORS {
                let who = format!("floor:{kind}");
                if *key == m.key && self.res.get(key, &who).is_some() {
                    s.push_str(&format!(
                        "| {} | {} | | | | | | | {} | {} | {} |\n",
                        self.label(m),
                        m.unit,
                        cell(stat(self.res, key, &who, 0.5)),
                        cell(stat(self.res, key, &who, 0.99)),
                        kind
                    ));
                }
            }
        }
        s
    }

    fn failures(&self) -> String {
        if self.res.failures.is_empty() {
            return "None.\n".into();
        }
        let mut s = String::new();
        for ((metric, who), (count, msg)) in &self.res.failures {
            s.push_str(&format!("- {who}, `{metric}`: {count}× — {msg}\n"));
        }
        s
    }

    fn markdown(&self) -> String {
        let o = self.opts;
        let mut s = String::new();
        s.push_str("# Benchmarks\n\n");
        s.push_str(&format!(
            "Written by `{}` on {} — do not edit by hand; run it again instead (see README, \
             \"Benchmarks\").\n\n",
            o.command, o.date
        ));
        s.push_str(&format!(
            "Mode: {}, {} round(s){}; {:.0} s in all.\n\n",
            if o.quick { "quick (smoke run)" } else { "full" },
            o.rounds,
            if o.reference.is_some() {
                ", ours and the reference alternating (ours first in odd rounds)"
            } else {
                ", ours only (no reference)"
            },
            self.elapsed.as_secs_f64()
        ));
        s.push_str("## Machine\n\n");
        for (k, v) in machine() {
            s.push_str(&format!("- {k}: {v}\n"));
        }
        s.push_str(&format!(
            "- load (/proc/loadavg) before: `{}`, after: `{}` (the machine is shared: other \
             builds may have run meanwhile)\n",
            self.load_before, self.load_after
        ));
        s.push_str(&format!("- ours: `{}`\n", o.ours.display()));
        if let Some(r) = &o.reference {
            s.push_str(&format!("- reference: `{}`\n", r.display()));
        }
        s.push_str(
            "\n## Ratios (ours vs reference; > 1 means ours is better)\n\n\
             Latency and memory: reference / ours; throughput: ours / reference. p50 and p99 are \
             over every sample of every round.\n\n",
        );
        s.push_str(&self.ratios());
        s.push_str("\n## All metrics, with their floors\n\n");
        s.push_str(&format!(
            "Per round: spawn ×{}, echo ×{}, stream 64 MiB ×{}, 256 MiB ×{}, fs 1 MiB ×{}, \
             8 MiB ×{}, 64 MiB ×{}, fan-out ×{}, resume ×{}, memory ×1 each (fresh server each), \
             {} sessions. Floors are measured in the bench process in the same rounds: \
             \"minimal WebSocket server\" is a single-threaded tokio-tungstenite server in the \
             bench that sends a pipe's 64 KiB reads as base64 JSON frames (or echoes frames).\n\n",
            self.sizes.spawn,
            self.sizes.echo,
            self.sizes.stream_64,
            self.sizes.stream_256,
            self.sizes.fs_small,
            self.sizes.fs_big.max(3),
            self.sizes.fs_big,
            self.sizes.fanout,
            self.sizes.resume,
            self.sizes.sessions
        ));
        s.push_str(&self.details());
        s.push_str("\n## Failures\n\n");
        s.push_str(&self.failures());
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() -> Result<()> {
    let opts = parse_args()?;
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(opts))
}

async fn run(opts: Options) -> Result<()> {
    let sizes = Sizes::new(opts.quick);
    let started = Instant::now();
    let load_before = loadavg();
    let dir = std::env::temp_dir().join(format!("codex-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let minimal = start_minimal_server()?;
    let mut res = Results::default();

    let mut servers: Vec<(&str, PathBuf)> = vec![("ours", opts.ours.clone())];
    if let Some(r) = &opts.reference {
        servers.push(("reference", r.clone()));
    }
    for round in 1..=opts.rounds {
        eprintln!("round {round}/{}", opts.rounds);
        let mut order = servers.clone();
        if round % 2 == 0 {
            order.reverse();
        }
        for (who, bin) in &order {
            if let Err(e) = round_server(who, bin, &opts, sizes, &dir, &mut res).await {
                res.fail("server", who, &e);
            }
        }
        if !opts.no_floors {
            eprintln!("  floors");
            round_floors(&opts, sizes, &dir, &minimal, &mut res).await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    let report = Report {
        opts: &opts,
        sizes,
        res: &res,
        load_before,
        load_after: loadavg(),
        elapsed: started.elapsed(),
    };
    let md = report.markdown();
    println!("{md}");
    if let Some(out) = &opts.out {
        let mut f = std::fs::File::create(out)?;
        f.write_all(md.as_bytes())?;
        eprintln!("written to {}", out.display());
    }
    // A failure of ours (a wrong byte count, a dropped connection, an error answer) is a bug, not a
    // slow run: say so in the exit status. Times never do.
    let ours_failed: Vec<_> = res
        .failures
        .keys()
        .filter(|(_, who)| who == "ours")
        .map(|(metric, _)| metric.as_str())
        .collect();
    if !ours_failed.is_empty() {
        bail!("our server failed: {}", ours_failed.join(", "));
    }
    Ok(())
}
