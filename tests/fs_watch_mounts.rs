//! `fs/watchMissing`: a change of the mount table invalidates the watch. Its own test binary: a
//! mount is seen by every process of the machine's mount namespace, so it would fire the watches
//! of the `fs_watch` tests that check that something does NOT fire, were they run alongside.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_mount_change_invalidates_the_watch() {
    let server = Server::start(&[]).await;
    let mut c = server.connect().await;
    c.initialize().await;
    let d = TestDir::new();
    let point = d.join("point");
    std::fs::create_dir(&point).unwrap();
    let missing = d.join("elsewhere/AGENTS.md");
    let r = c
        .request_ok(
            "fs/watchMissing",
            json!({"watchId": 1, "missing": [file_uri(&missing)]}),
        )
        .await;
    assert_eq!(r, json!({"watching": true}));
    let mount = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .status()
            .is_ok_and(|s| s.success())
    };
    let target = point.to_str().unwrap();
    if !mount(&["mount", "-t", "tmpfs", "none", target]) {
        eprintln!("skipped: this machine does not let the test mount a tmpfs");
        return;
    }
    // Unmounted even if the test fails, so the test directory can be removed.
    struct Unmount<'a>(&'a str);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(target);
    let fired = c
        .wait_for_notification("fs/missingChanged", |m| m["method"] == "fs/missingChanged")
        .await;
    assert_eq!(fired["params"], json!({"watchId": 1}));
}
