//! Streamed writes (capability `fileWriteStreaming`): `fs/open` with `mode: "replace"` and
//! `fs/writeBlock`, as a client sees them over a real socket: positional writes with zero-filled
//! gaps, truncation in place, the block and offset limits, the handle checks, bad input, the
//! handshake gate and the advertised capability (under a sandbox: fs_sandbox_streaming.rs).
//!
//! The harness is `common/mod.rs`. Every test starts its own server.

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use common::*;
use serde_json::{Value, json};

/// A server and an initialized client on it.
async fn ready() -> (Server, Client) {
    let server = Server::start(&[]).await;
    let mut client = server.connect().await;
    client.initialize().await;
    (server, client)
}

async fn open_replace(client: &mut Client, handle: &str, path: &Path) -> Result<Value, RpcError> {
    client
        .request(
            "fs/open",
            json!({"handleId": handle, "path": file_uri(path), "mode": "replace"}),
        )
        .await
}

async fn write_block(
    client: &mut Client,
    handle: &str,
    offset: u64,
    data: &[u8],
) -> Result<Value, RpcError> {
    client
        .request(
            "fs/writeBlock",
            json!({"handleId": handle, "offset": offset, "chunk": b64(data)}),
        )
        .await
}

fn length_error() -> RpcError {
    (
        INVALID_REQUEST,
        "file write block length must be between 1 and 1048576".to_string(),
    )
}

fn range_error() -> RpcError {
    (
        INVALID_REQUEST,
        "file write range exceeds the signed 64-bit file offset limit".to_string(),
    )
}

#[tokio::test]
async fn replace_open_then_positional_blocks_write_the_file_with_a_zero_filled_gap() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("new");
    assert_eq!(
        open_replace(&mut client, "w", &path).await.unwrap(),
        json!({"handleId": "w"})
    );
    assert!(path.exists(), "the open creates the file");
    // Out of order: the later block first, then the start; bytes 11..20 are never written.
    assert_eq!(
        write_block(&mut client, "w", 20, b"!").await.unwrap(),
        json!({})
    );
    write_block(&mut client, "w", 0, b"hello world")
        .await
        .unwrap();
    client
        .request_ok("fs/close", json!({"handleId": "w"}))
        .await;
    let mut expected = b"hello world".to_vec();
    expected.extend([0u8; 9]);
    expected.push(b'!');
    assert_eq!(std::fs::read(&path).unwrap(), expected);
    // A closed handle is unknown.
    assert_eq!(
        write_block(&mut client, "w", 0, b"x").await.unwrap_err(),
        (NOT_FOUND, "unknown file handle `w`".to_string())
    );
}

#[tokio::test]
async fn replace_truncates_in_place_keeping_hard_links_and_mode() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f");
    let link = dir.join("hard-link");
    std::fs::write(&path, b"old contents, longer than the new ones").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::hard_link(&path, &link).unwrap();
    let inode = std::fs::metadata(&path).unwrap().ino();
    open_replace(&mut client, "w", &path).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"", "truncated at the open");
    write_block(&mut client, "w", 0, b"new").await.unwrap();
    client
        .request_ok("fs/close", json!({"handleId": "w"}))
        .await;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.ino(), inode, "the same file, not a renamed copy");
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_eq!(std::fs::read(&link).unwrap(), b"new");
}

#[tokio::test]
async fn blocks_of_exactly_1_mib_are_written_whole() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("big");
    open_replace(&mut client, "w", &path).await.unwrap();
    let block: Vec<u8> = (0..1u32 << 20).map(|n| (n % 251) as u8).collect();
    write_block(&mut client, "w", 0, &block).await.unwrap();
    write_block(&mut client, "w", 1 << 20, &block)
        .await
        .unwrap();
    client
        .request_ok("fs/close", json!({"handleId": "w"}))
        .await;
    let written = std::fs::read(&path).unwrap();
    assert_eq!(written.len(), 2 << 20);
    assert!(written[..1 << 20] == block[..] && written[1 << 20..] == block[..]);
}

#[tokio::test]
async fn replace_open_with_a_missing_parent_is_not_found_and_of_a_directory_is_internal() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let orphan = dir.join("missing").join("f");
    let (code, message) = open_replace(&mut client, "w", &orphan).await.unwrap_err();
    assert_eq!(code, NOT_FOUND, "{message}");
    assert_eq!(
        message,
        format!(
            "No such file or directory (os error 2): {}",
            orphan.display()
        )
    );
    assert_eq!(
        open_replace(&mut client, "w", dir.path())
            .await
            .unwrap_err(),
        (
            INTERNAL_ERROR,
            format!("Is a directory (os error 21): {}", dir.path().display())
        )
    );
    // A failed open leaves the id free.
    open_replace(&mut client, "w", &dir.join("f"))
        .await
        .unwrap();
}

#[tokio::test]
async fn open_with_an_unknown_mode_is_invalid_params() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    for mode in [json!("bogus"), json!(1), json!("Replace"), json!(null)] {
        let (code, message) = client
            .request_err(
                "fs/open",
                json!({"handleId": "h", "path": file_uri(&dir.join("f")), "mode": mode}),
            )
            .await;
        assert_eq!(code, INVALID_PARAMS, "{mode}: {message}");
        if mode == json!("bogus") {
            assert!(
                message.contains("unknown variant `bogus`, expected `read` or `replace`"),
                "{message}"
            );
        }
    }
    assert!(!dir.join("f").exists(), "nothing was opened");
}

#[tokio::test]
async fn write_block_length_must_be_between_1_and_1_mib() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f");
    open_replace(&mut client, "w", &path).await.unwrap();
    assert_eq!(
        write_block(&mut client, "w", 0, b"").await.unwrap_err(),
        length_error(),
        "empty"
    );
    assert_eq!(
        write_block(&mut client, "w", 0, &vec![1u8; (1 << 20) + 1])
            .await
            .unwrap_err(),
        length_error(),
        "one byte over"
    );
    // A huge chunk (8 MiB of base64) is refused before it is decoded.
    let huge = "A".repeat(8 << 20);
    assert_eq!(
        client
            .request_err(
                "fs/writeBlock",
                json!({"handleId": "w", "offset": 0, "chunk": huge}),
            )
            .await,
        length_error(),
        "huge"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "nothing written"
    );
}

#[tokio::test]
async fn write_block_past_the_64_bit_offset_limit_is_refused() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f");
    open_replace(&mut client, "w", &path).await.unwrap();
    let max = i64::MAX as u64;
    for (offset, data) in [
        (max, &b"x"[..]),
        (max - 1, &b"xy"[..]),
        (u64::MAX, &b"x"[..]),
        (max + 1, &b"x"[..]),
    ] {
        assert_eq!(
            write_block(&mut client, "w", offset, data)
                .await
                .unwrap_err(),
            range_error(),
            "offset {offset}"
        );
    }
    // Ending exactly at the limit passes the check (the file system then refuses it).
    let err = write_block(&mut client, "w", max - 1, b"x")
        .await
        .unwrap_err();
    assert_ne!(err, range_error());
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "nothing written"
    );
    // The handle still works.
    write_block(&mut client, "w", 0, b"ok").await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"ok");
}

#[tokio::test]
async fn write_on_a_read_handle_and_read_on_a_replace_handle_are_bad_descriptors() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f");
    std::fs::write(&path, b"keep").unwrap();
    client
        .request_ok("fs/open", json!({"handleId": "r", "path": file_uri(&path)}))
        .await;
    assert_eq!(
        write_block(&mut client, "r", 0, b"x").await.unwrap_err(),
        (
            INTERNAL_ERROR,
            format!("Bad file descriptor (os error 9): {}", path.display())
        )
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    let other = dir.join("g");
    open_replace(&mut client, "w", &other).await.unwrap();
    assert_eq!(
        client
            .request_err(
                "fs/readBlock",
                json!({"handleId": "w", "offset": 0, "len": 4}),
            )
            .await,
        (
            INTERNAL_ERROR,
            format!("Bad file descriptor (os error 9): {}", other.display())
        )
    );
}

#[tokio::test]
async fn write_block_of_an_unknown_handle_is_not_found() {
    let (_server, mut client) = ready().await;
    assert_eq!(
        write_block(&mut client, "nope", 0, b"x").await.unwrap_err(),
        (NOT_FOUND, "unknown file handle `nope`".to_string())
    );
    let huge_id = "h".repeat(1 << 20);
    let (code, _) = write_block(&mut client, &huge_id, 0, b"x")
        .await
        .unwrap_err();
    assert_eq!(code, NOT_FOUND);
}

#[tokio::test]
async fn write_block_with_missing_null_or_ill_typed_fields_is_invalid_params() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f");
    open_replace(&mut client, "w", &path).await.unwrap();
    for params in [
        json!({}),
        json!(null),
        json!({"offset": 0, "chunk": "eA=="}),
        json!({"handleId": "w", "chunk": "eA=="}),
        json!({"handleId": "w", "offset": 0}),
        json!({"handleId": null, "offset": 0, "chunk": "eA=="}),
        json!({"handleId": "w", "offset": null, "chunk": "eA=="}),
        json!({"handleId": "w", "offset": 0, "chunk": null}),
        json!({"handleId": 7, "offset": 0, "chunk": "eA=="}),
        json!({"handleId": "w", "offset": -1, "chunk": "eA=="}),
        json!({"handleId": "w", "offset": "0", "chunk": "eA=="}),
        json!({"handleId": "w", "offset": 1.5, "chunk": "eA=="}),
        json!({"handleId": "w", "offset": 0, "chunk": [120]}),
        json!({"handleId": "w", "offset": 1e20, "chunk": "eA=="}),
    ] {
        let (code, message) = client.request_err("fs/writeBlock", params.clone()).await;
        assert_eq!(code, INVALID_PARAMS, "{params}: {message}");
    }
    // Not base64: refused, nothing written.
    for chunk in ["not base64!", "eA", "e==="] {
        let (code, message) = client
            .request_err(
                "fs/writeBlock",
                json!({"handleId": "w", "offset": 0, "chunk": chunk}),
            )
            .await;
        assert_eq!(code, INVALID_REQUEST, "{chunk}: {message}");
        assert!(message.starts_with("invalid chunk: "), "{message}");
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[tokio::test]
async fn write_block_before_initialize_is_refused() {
    let server = Server::start(&[]).await;
    let mut client = server.connect().await;
    let params = json!({"handleId": "w", "offset": 0, "chunk": "eA=="});
    assert_eq!(
        client.request_err("fs/writeBlock", params.clone()).await,
        (
            INVALID_REQUEST,
            "client must call initialize before using filesystem methods".to_string()
        )
    );
    client
        .request_ok("initialize", json!({"clientName": "test"}))
        .await;
    assert_eq!(
        client.request_err("fs/writeBlock", params).await,
        (
            INVALID_REQUEST,
            "client must send initialized before using filesystem methods".to_string()
        )
    );
}

#[tokio::test]
async fn replace_handles_share_the_128_handle_limit_with_read_handles() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f");
    std::fs::write(&path, b"x").unwrap();
    for n in 0..64 {
        client
            .request_ok(
                "fs/open",
                json!({"handleId": format!("r{n}"), "path": file_uri(&path)}),
            )
            .await;
        open_replace(&mut client, &format!("w{n}"), &dir.join(&format!("w{n}")))
            .await
            .unwrap();
    }
    assert_eq!(
        open_replace(&mut client, "one-too-many", &dir.join("x"))
            .await
            .unwrap_err(),
        (
            INVALID_REQUEST,
            "at most 128 file handles may be open per connection".to_string()
        )
    );
    assert_eq!(
        open_replace(&mut client, "r0", &dir.join("x"))
            .await
            .unwrap_err()
            .0,
        INVALID_REQUEST,
        "an id in use"
    );
}

#[tokio::test]
async fn file_write_streaming_is_advertised() {
    let server = Server::start(&[]).await;
    let mut client = server.connect().await;
    let result = client
        .request_ok("initialize", json!({"clientName": "test"}))
        .await;
    let capabilities = &result["environmentInfo"]["capabilities"];
    assert_eq!(capabilities["fileWriteStreaming"], json!(true), "{result}");
}
