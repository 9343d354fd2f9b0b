//! The client library's whole-file transfers (`ExecServerClient::upload_from` / `download_to`)
//! against a real server: a download and an upload carried on across connection cuts, with the
//! bytes and the hash intact; the progress each reports, phase by phase; a file that changes
//! size during the copy, either way, is an error; a remote directory refused as a download
//! source.

#[path = "support/chaos_proxy.rs"]
mod chaos_proxy;
mod common;

use std::path::Path;

use chaos_proxy::{ChaosProxy, CutPlan, Rng};
use codex::client::{ClientOptions, ExecServerClient, Phase, Progress, TransferError};
use common::{DEADLINE, Server, TestDir};
use sha2::{Digest, Sha256};

/// The size of the files sent through cuts: 12 blocks of 1 MiB.
const SIZE: usize = 12 << 20;

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A proxy that cuts the connection `cuts` times while a file of [`SIZE`] bytes is on the way
/// back to the client (base64: 4/3 of it): each cut at most 3/4 of an even share, so every
/// planned cut falls inside the traffic; the first not before the handshake is through.
async fn cutting_proxy(server: &Server, cuts: usize, seed: u64) -> ChaosProxy {
    let wire = SIZE as u64 * 4 / 3;
    ChaosProxy::start(
        &server.addr(),
        CutPlan {
            cuts,
            max_bytes: wire / cuts as u64 * 3 / 4,
            early_max_bytes: 16 << 10,
            first_min_bytes: 64 << 10,
            seed,
        },
    )
    .await
}

async fn connect(url: &str) -> ExecServerClient {
    tokio::time::timeout(
        DEADLINE,
        ExecServerClient::connect(url, ClientOptions::default()),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

/// Each phase reported, in order, with its announced total and the bytes it advanced by; panics
/// if the events do not nest as Begin, Advance*, End.
fn phases(events: &[Progress]) -> Vec<(Phase, u64, u64)> {
    let mut out = Vec::new();
    let mut current: Option<(Phase, u64, u64)> = None;
    for event in events {
        match (*event, current.as_mut()) {
            (Progress::Begin { phase, total }, None) => current = Some((phase, total, 0)),
            (Progress::Advance { bytes }, Some((_, _, done))) => *done += bytes,
            (Progress::End, Some(_)) => out.push(current.take().unwrap()),
            (event, current) => panic!("{event:?} while in {current:?}: {events:?}"),
        }
    }
    assert!(current.is_none(), "a phase never ended: {events:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_to_reopens_the_file_after_each_cut_and_lands_it_whole() {
    let server = Server::start(&[]).await;
    let dir = TestDir::new();
    let data = Rng::new(11).bytes(SIZE);
    let remote = dir.join("remote.bin");
    std::fs::write(&remote, &data).unwrap();
    let proxy = cutting_proxy(&server, 3, 11).await;
    let client = connect(&proxy.url()).await;

    let local = dir.join("local.bin");
    let mut events = Vec::new();
    let landed = tokio::time::timeout(
        DEADLINE * 3,
        client.download_to(&remote, &local, |p| events.push(p)),
    )
    .await
    .expect("download in time")
    .expect("download");

    assert_eq!(proxy.cuts(), 3, "every planned cut happened mid-download");
    assert_eq!(landed.path, local);
    assert_eq!(landed.bytes, SIZE as u64);
    assert_eq!(landed.sha256, sha256_hex(&data));
    assert!(std::fs::read(&local).unwrap() == data, "local copy differs");
    let size = SIZE as u64;
    assert_eq!(
        phases(&events),
        [(Phase::Downloading, size, size)],
        "each block reported once, none twice after a reopen"
    );
}

/// Server-to-client bytes of a connection's handshake through the proxy (the HTTP upgrade and
/// the `initialize` answer with its environment info: 1,137 bytes when measured), with a little
/// room: a cut budget just above it falls in the upload's answers (a stat, then one short answer
/// per 1 MiB block: about 700 bytes for the file here).
const HANDSHAKE_BYTES: u64 = 1300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_from_starts_again_after_each_cut_and_lands_it_whole() {
    let server = Server::start(&[]).await;
    let dir = TestDir::new();
    let data = Rng::new(12).bytes(SIZE);
    let local = dir.join("local.bin");
    std::fs::write(&local, &data).unwrap();
    // The upload's answers are small (one per 1 MiB block): the first connection is cut a few
    // answers after its handshake, the second anywhere up to that; the third is left alone.
    let proxy = ChaosProxy::start(
        &server.addr(),
        CutPlan {
            cuts: 2,
            max_bytes: HANDSHAKE_BYTES + 200,
            early_max_bytes: HANDSHAKE_BYTES + 200,
            first_min_bytes: HANDSHAKE_BYTES + 200,
            seed: 12,
        },
    )
    .await;
    let client = connect(&proxy.url()).await;

    let remote = dir.join("remote.bin");
    let mut events = Vec::new();
    let landed = tokio::time::timeout(
        DEADLINE * 3,
        client.upload_from(&local, &remote, |p| events.push(p)),
    )
    .await
    .expect("upload in time")
    .expect("upload");

    assert_eq!(proxy.cuts(), 2);
    assert_eq!(landed.path, remote);
    assert_eq!(landed.bytes, SIZE as u64);
    assert_eq!(landed.sha256, sha256_hex(&data));
    assert!(
        std::fs::read(&remote).unwrap() == data,
        "remote copy differs"
    );
    let size = SIZE as u64;
    assert_eq!(
        phases(&events),
        [(Phase::Uploading, size, size)],
        "bytes sent again after a cut are not reported twice"
    );
}

/// Whether `events` holds an `Advance`.
fn advanced(events: &[Progress]) -> bool {
    events.iter().any(|e| matches!(e, Progress::Advance { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_from_a_file_that_grows_during_the_copy_fails() {
    let server = Server::start(&[]).await;
    let dir = TestDir::new();
    let local = dir.join("local.bin");
    std::fs::write(&local, Rng::new(13).bytes(SIZE)).unwrap();
    let remote = dir.join("remote.bin");
    let client = connect(server.url()).await;

    // When the first block is acknowledged, 1 MiB more lands at the end of the local file.
    let mut events = Vec::new();
    let err = tokio::time::timeout(
        DEADLINE * 3,
        client.upload_from(&local, &remote, |p| {
            if matches!(p, Progress::Advance { .. }) && !advanced(&events) {
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&local)
                    .unwrap();
                f.write_all(&vec![7u8; 1 << 20]).unwrap();
            }
            events.push(p);
        }),
    )
    .await
    .expect("upload in time")
    .unwrap_err();

    assert!(
        matches!(&err, TransferError::LocalChanged { expected, read, .. }
            if *expected == SIZE as u64 && *read > SIZE as u64),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("changed during the upload"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_to_of_a_file_that_grows_during_the_copy_fails_and_leaves_nothing() {
    let server = Server::start(&[]).await;
    let dir = TestDir::new();
    let remote = dir.join("remote.bin");
    std::fs::write(&remote, Rng::new(14).bytes(SIZE)).unwrap();
    let local = dir.join("local.bin");
    let client = connect(server.url()).await;

    // When the first block arrives, 1 MiB more lands at the end of the remote file: the reads
    // still to be sent find it.
    let mut events = Vec::new();
    let err = tokio::time::timeout(
        DEADLINE * 3,
        client.download_to(&remote, &local, |p| {
            if matches!(p, Progress::Advance { .. }) && !advanced(&events) {
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&remote)
                    .unwrap();
                f.write_all(&vec![7u8; 1 << 20]).unwrap();
            }
            events.push(p);
        }),
    )
    .await
    .expect("download in time")
    .unwrap_err();

    assert!(
        matches!(&err, TransferError::SizeMismatch { expected, received, .. }
            if *expected == SIZE as u64 && *received == SIZE as u64 + (1 << 20)),
        "{err:?}"
    );
    assert!(!local.exists(), "the partial file is removed");
}

#[tokio::test]
async fn upload_from_into_a_remote_directory_lands_under_the_local_name() {
    let server = Server::start(&[]).await;
    let dir = TestDir::new();
    let local = dir.join("notes.txt");
    std::fs::write(&local, b"hello\n").unwrap();
    let remote_dir = dir.join("inbox");
    std::fs::create_dir(&remote_dir).unwrap();
    let client = connect(server.url()).await;

    let landed = client
        .upload_from(&local, &remote_dir, |_| {})
        .await
        .unwrap();

    assert_eq!(landed.path, remote_dir.join("notes.txt"));
    assert_eq!(
        std::fs::read(remote_dir.join("notes.txt")).unwrap(),
        b"hello\n"
    );
    assert_eq!(landed.sha256, sha256_hex(b"hello\n"));
}

#[tokio::test]
async fn download_to_refuses_a_remote_directory_and_creates_nothing() {
    let server = Server::start(&[]).await;
    let dir = TestDir::new();
    let remote_dir = dir.join("a-dir");
    std::fs::create_dir(&remote_dir).unwrap();
    let local = dir.join("local.bin");
    let client = connect(server.url()).await;

    let err = client
        .download_to(&remote_dir, &local, |_| {})
        .await
        .unwrap_err();

    assert!(
        matches!(&err, TransferError::RemoteIsDirectory { path } if path == Path::new(&remote_dir)),
        "{err:?}"
    );
    assert!(!local.exists());
}
