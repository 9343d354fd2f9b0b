//! A TCP proxy on 127.0.0.1 that cuts the connection between a client and a server again and
//! again: each proxied connection is dropped (both sockets) after a pseudo-random number of
//! bytes went from the server to the client, until the planned number of cuts is reached; later
//! connections pass untouched. Seeded, so a failing run can be replayed.
//!
//! Included with `#[path]` by the tests that need it (`chaos.rs`, `remote_cli.rs`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// When to cut.
#[derive(Debug, Clone)]
pub struct CutPlan {
    /// How many connections to cut; later ones are left alone.
    pub cuts: usize,
    /// A connection is cut after this many server-to-client bytes, at most.
    pub max_bytes: u64,
    /// One cut in four comes after at most this many bytes instead (the handshake, the catch-up
    /// reads right after a resume).
    pub early_max_bytes: u64,
    /// The first connection is never cut before this many bytes (so the first handshake, which
    /// is not retried, gets through).
    pub first_min_bytes: u64,
    /// Seed of the byte counts.
    pub seed: u64,
}

/// xorshift64*: small, seeded, good enough to spread cut points.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `1..=max`.
    pub fn upto(&mut self, max: u64) -> u64 {
        1 + self.next_u64() % max.max(1)
    }

    /// `len` pseudo-random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// The running proxy; stops on drop.
pub struct ChaosProxy {
    /// Where clients connect.
    addr: SocketAddr,
    /// Cuts made so far.
    cuts: Arc<AtomicUsize>,
    /// The accept loop (and, through it, every pair).
    task: tokio::task::JoinHandle<()>,
}

impl ChaosProxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream` (`127.0.0.1:PORT`).
    pub async fn start(upstream: &str, plan: CutPlan) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream: SocketAddr = upstream.parse().unwrap();
        let cuts = Arc::new(AtomicUsize::new(0));
        let planned = Arc::new(AtomicUsize::new(0));
        let rng = Arc::new(Mutex::new(Rng::new(plan.seed)));
        let task = {
            let cuts = cuts.clone();
            tokio::spawn(async move {
                let mut pairs = tokio::task::JoinSet::new();
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        break;
                    };
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let n = planned.fetch_add(1, Ordering::SeqCst);
                    let budget = if n < plan.cuts {
                        let mut rng = rng.lock().unwrap();
                        let max = if rng.upto(4) == 1 {
                            plan.early_max_bytes
                        } else {
                            plan.max_bytes
                        };
                        let budget = rng.upto(max);
                        Some(if n == 0 {
                            budget.max(plan.first_min_bytes)
                        } else {
                            budget
                        })
                    } else {
                        None
                    };
                    pairs.spawn(pump(client, server, budget, cuts.clone()));
                    // Reap finished pairs without waiting.
                    while pairs.try_join_next().is_some() {}
                }
            })
        };
        ChaosProxy { addr, cuts, task }
    }

    /// `ws://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Cuts made so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards both ways; after `budget` server-to-client bytes, drops both sockets (a cut).
async fn pump(client: TcpStream, server: TcpStream, budget: Option<u64>, cuts: Arc<AtomicUsize>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
        std::future::pending::<()>().await;
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        loop {
            let want = match budget {
                Some(b) => (b - sent).min(buf.len() as u64) as usize,
                None => buf.len(),
            };
            let n = match server_read.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if client_write.write_all(&buf[..n]).await.is_err() {
                return false;
            }
            sent += n as u64;
            if budget.is_some_and(|b| sent >= b) {
                return true;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        cut = down => if cut { cuts.fetch_add(1, Ordering::SeqCst); },
    }
}
