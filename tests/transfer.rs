//! The client library's whole-file transfers (`ExecServerClient::upload_from` / `download_to`)
//! against a real server: a download and an upload carried on across connection cuts, with the
//! bytes and the hash intact; the progress each reports, phase by phase; the 90 MiB upload limit
//! applied before anything is sent; a remote directory refused as a download source.

#[path = "support/chaos_proxy.rs"]
mod chaos_proxy;
mod common;

use std::path::Path;

use chaos_proxy::{ChaosProxy, CutPlan, Rng};
use codex::client::{
    ClientOptions, ExecServerClient, MAX_UPLOAD_BYTES, Phase, Progress, TransferError,
};
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
        [
            (Phase::Downloading, size, size),
            (Phase::Checking, size, size)
        ],
        "each block reported once, none twice after a reopen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_from_verifies_across_cuts_in_the_read_back() {
    let server = Server::start(&[]).await;
    let dir = TestDir::new();
    let data = Rng::new(12).bytes(SIZE);
    let local = dir.join("local.bin");
    std::fs::write(&local, &data).unwrap();
    // The upload's own answers are small: the cuts fall in the read-back of the verification.
    let proxy = cutting_proxy(&server, 2, 12).await;
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
        [
            (Phase::Reading, size, size),
            (Phase::Uploading, size, 0),
            (Phase::Verifying, size, size)
        ]
    );
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
async fn upload_from_refuses_a_file_over_the_limit_before_sending_anything() {
    let server = Server::start(&[]).await;
    let dir = TestDir::new();
    let local = dir.join("big.bin");
    // Sparse: the size is what counts, not the disk it takes.
    std::fs::File::create(&local)
        .unwrap()
        .set_len(MAX_UPLOAD_BYTES + 1)
        .unwrap();
    let remote = dir.join("remote.bin");
    let client = connect(server.url()).await;

    let mut events = Vec::new();
    let err = client
        .upload_from(&local, &remote, |p| events.push(p))
        .await
        .unwrap_err();

    assert!(
        matches!(err, TransferError::TooLarge { size, .. } if size == MAX_UPLOAD_BYTES + 1),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("uploads are limited to 94371840 bytes")
    );
    assert!(events.is_empty(), "nothing read: {events:?}");
    assert!(!remote.exists(), "nothing written");
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
