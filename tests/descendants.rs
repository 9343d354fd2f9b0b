//! Every descendant accounted for: a process's descendants that leave its process group
//! (`setsid`, `setsid -f`, a double fork, `nohup … &` then `setsid`, a daemon that double-forks
//! and calls `setpgid`) die with it at `process/terminate`, at session expiry, when the server is
//! stopped (SIGTERM) and when it is killed outright (SIGKILL: the reaper). The server puts each
//! process in a cgroup of its own (docs/protocol.md, "Descendants").
//!
//! Each descendant ignores SIGTERM and SIGHUP, so only the kill of the whole tree ends it, and
//! tells its pid through a fifo the test reads (no polling of files). Its exit is awaited on a
//! pidfd, under a deadline.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;

/// The program every escaped descendant runs: ignores TERM and HUP, says its pid into the fifo
/// named by `$1`, then sleeps as that same pid.
const DESCENDANT: &str = "#!/bin/sh\ntrap '' TERM HUP\necho $$ > \"$1\"\nexec sleep 1000\n";

/// The ways a descendant leaves its process's group, as `sh -c` scripts: `D` runs the
/// descendant program, `F` is its fifo. Each process then sleeps (its own group's part).
const SCENARIOS: [(&str, &str); 5] = [
    ("setsid", "setsid \"$D\" \"$F\" & exec sleep 1000"),
    ("setsid-f", "setsid -f \"$D\" \"$F\"; exec sleep 1000"),
    ("double-fork", "(\"$D\" \"$F\" &) & exec sleep 1000"),
    (
        "nohup-setsid",
        "nohup sh -c 'setsid \"$D\" \"$F\"' > /dev/null 2>&1 & exec sleep 1000",
    ),
    (
        "daemon-setpgid",
        "perl -e 'exit if fork; setpgrp(0, 0); exit if fork; exec @ARGV' \"$D\" \"$F\" \
         < /dev/null > /dev/null 2>&1; exec sleep 1000",
    ),
];

/// The cgroup versions the server is tested with (`--process-cgroups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl Version {
    /// The server flags choosing it.
    fn flags(self) -> [&'static str; 2] {
        match self {
            Version::V1 => ["--process-cgroups", "v1"],
            Version::V2 => ["--process-cgroups", "v2"],
        }
    }
}

/// Whether this machine lets the test process (and so the server it starts) make a cgroup (v2)
/// under its own; if not the test is skipped (failed under `CODEX_TEST_REQUIRE_SANDBOX=1`).
fn cgroups_available() -> bool {
    version_available(Version::V2)
}

/// [`cgroups_available`] for `version` (v1: a `freezer` or `pids` hierarchy, as the server
/// takes).
fn version_available(version: Version) -> bool {
    let own = match version {
        Version::V2 => cgroup_v2_dir(),
        Version::V1 => cgroup_v1_dir(),
    };
    let Some(own) = own else {
        return skip(&format!(
            "no cgroup {version:?} hierarchy holding this process (a mount of the whole hierarchy)"
        ));
    };
    // Unique per call: the tests of this file run side by side in one process.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = own.join(format!("codex-test-probe.{}.{n}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            true
        }
        Err(err) => skip(&format!(
            "cannot make a cgroup ({}): {err}",
            probe.display()
        )),
    }
}

fn skip(reason: &str) -> bool {
    assert!(
        std::env::var_os("CODEX_TEST_REQUIRE_SANDBOX").is_none(),
        "cgroups required: {reason}"
    );
    eprintln!("skipped: {reason}");
    false
}

/// A test directory with the descendant program and one fifo per scenario.
struct Setup {
    dir: TestDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = TestDir::new();
        let program = dir.join("descendant");
        std::fs::write(&program, DESCENDANT).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        Setup { dir }
    }

    fn program(&self) -> PathBuf {
        self.dir.join("descendant")
    }

    /// A fresh fifo named `name`.
    fn fifo(&self, name: &str) -> PathBuf {
        let path = self.dir.join(&format!("{name}.fifo"));
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path and a mode.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        path
    }

    /// `process/start` params running `script` with `D` and `F` set.
    fn params(&self, id: &str, script: &str, fifo: &Path) -> serde_json::Value {
        let mut params = sh(id, script);
        params["env"]["D"] = json!(self.program().to_str().unwrap());
        params["env"]["F"] = json!(fifo.to_str().unwrap());
        params
    }
}

/// Reads the pid the descendant writes into `fifo`, under the deadline, and opens a pidfd on it.
async fn descendant_pid(fifo: &Path, what: &str) -> Pidfd {
    // Opened read-write so that no writer yet is not an end-of-file.
    let receiver = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(fifo)
        .unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        DEADLINE,
        tokio::io::BufReader::new(receiver).read_line(&mut line),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: the descendant never said its pid"))
    .unwrap();
    let pid: i32 = line.trim().parse().unwrap();
    Pidfd::open(pid).unwrap_or_else(|| panic!("{what}: descendant {pid} already gone"))
}

/// Starts every scenario on `client` and returns each one's name and descendant.
async fn start_all(client: &mut Client, setup: &Setup) -> Vec<(&'static str, Pidfd)> {
    let mut descendants = Vec::new();
    for (name, script) in SCENARIOS {
        let fifo = setup.fifo(name);
        client
            .start_process(setup.params(name, script, &fifo))
            .await;
        descendants.push((name, descendant_pid(&fifo, name).await));
    }
    descendants
}

async fn all_die(descendants: &[(&str, Pidfd)], when: &str) {
    for (name, pidfd) in descendants {
        pidfd
            .wait_exit(DEADLINE, &format!("{name}, after {when}"))
            .await;
    }
}

/// The server flags of these tests: a short grace (the descendants ignore SIGTERM).
const FLAGS: [&str; 2] = ["--terminate-grace-ms", "200"];

#[tokio::test]
async fn descendants_that_left_the_group_die_at_process_terminate() {
    die_at_process_terminate(Version::V2).await;
}

/// The same with the processes' cgroups in a cgroup v1 hierarchy (`--process-cgroups v1`), as
/// on a machine without cgroup v2; each descendant is in its process's cgroup there.
#[tokio::test]
async fn with_v1_cgroups_descendants_that_left_the_group_die_at_process_terminate() {
    die_at_process_terminate(Version::V1).await;
}

async fn die_at_process_terminate(version: Version) {
    if !version_available(version) {
        return;
    }
    let setup = Setup::new();
    let server = Server::start(&[&FLAGS[..], &version.flags()[..]].concat()).await;
    let mut client = server.connect().await;
    client.initialize().await;
    let descendants = start_all(&mut client, &setup).await;
    for (name, pidfd) in &descendants {
        assert_in_server_cgroup(pidfd.pid(), version, name);
    }
    for (name, pidfd) in &descendants {
        assert!(!pidfd.has_exited(), "{name}: died before the terminate");
        let answer = client
            .request_ok("process/terminate", json!({"processId": name}))
            .await;
        assert_eq!(answer, json!({"running": true}), "{name}");
    }
    all_die(&descendants, "process/terminate").await;
    // The processes themselves end too, and report the SIGTERM.
    for (name, _) in SCENARIOS {
        let events = client.collect_process_events(name).await;
        assert_eq!(exit_code(&events), 128 + 15, "{name}");
    }
}

#[tokio::test]
async fn descendants_that_left_the_group_die_when_their_session_expires() {
    if !cgroups_available() {
        return;
    }
    let setup = Setup::new();
    let mut flags = FLAGS.to_vec();
    flags.extend(["--detached-session-ttl-ms", "200"]);
    let server = Server::start(&flags).await;
    let mut client = server.connect().await;
    client.initialize().await;
    let descendants = start_all(&mut client, &setup).await;
    client.close().await;
    all_die(&descendants, "session expiry").await;
}

#[tokio::test]
async fn descendants_that_left_the_group_die_when_the_server_is_stopped() {
    if !cgroups_available() {
        return;
    }
    let setup = Setup::new();
    let mut server = Server::start(&FLAGS).await;
    let mut client = server.connect().await;
    client.initialize().await;
    let descendants = start_all(&mut client, &setup).await;
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    assert_eq!(unsafe { libc::kill(server.pid(), libc::SIGTERM) }, 0);
    all_die(&descendants, "SIGTERM to the server").await;
    assert!(server.wait_for_exit().await.success());
}

#[tokio::test]
async fn descendants_that_left_the_group_die_when_the_server_is_killed_outright() {
    die_when_the_server_is_killed_outright(Version::V2).await;
}

/// The same in a cgroup v1 hierarchy: the reaper kills the tree and removes the server's
/// cgroups there too.
#[tokio::test]
async fn with_v1_cgroups_descendants_die_when_the_server_is_killed_outright() {
    die_when_the_server_is_killed_outright(Version::V1).await;
}

async fn die_when_the_server_is_killed_outright(version: Version) {
    if !version_available(version) {
        return;
    }
    let setup = Setup::new();
    let server = Server::start(&[&FLAGS[..], &version.flags()[..]].concat()).await;
    let mut client = server.connect().await;
    client.initialize().await;
    let descendants = start_all(&mut client, &setup).await;
    let root = server_cgroup_root(descendants[0].1.pid(), version);
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    assert_eq!(unsafe { libc::kill(server.pid(), libc::SIGKILL) }, 0);
    all_die(&descendants, "SIGKILL to the server (the reaper)").await;
    wait_gone(&root, "the server's cgroups after the reaper").await;
}

/// A process that exits while a descendant it detached lives on reports its own exit code and
/// closes (the descendant's output goes elsewhere); the descendant is left running until the
/// process's record is let go of after the closed TTL, and then killed.
#[tokio::test]
async fn a_descendant_outliving_its_process_dies_when_the_record_is_let_go_of() {
    outliving_descendant_dies_with_the_record(Version::V2).await;
}

/// The same in a cgroup v1 hierarchy, whose emptying nothing announces: the process's cgroup is
/// still removed once its last process is gone.
#[tokio::test]
async fn with_v1_cgroups_a_descendant_outliving_its_process_dies_with_the_record() {
    outliving_descendant_dies_with_the_record(Version::V1).await;
}

async fn outliving_descendant_dies_with_the_record(version: Version) {
    if !version_available(version) {
        return;
    }
    let setup = Setup::new();
    let server = Server::start(
        &[
            &["--closed-process-ttl-ms", "300"][..],
            &version.flags()[..],
        ]
        .concat(),
    )
    .await;
    let mut client = server.connect().await;
    client.initialize().await;
    let fifo = setup.fifo("outlives");
    let script = "setsid -f \"$D\" \"$F\" < /dev/null > /dev/null 2>&1; echo done; exit 3";
    client
        .start_process(setup.params("outlives", script, &fifo))
        .await;
    let descendant = descendant_pid(&fifo, "outlives").await;
    let cgroup = process_cgroup(descendant.pid(), version);
    let events = client.collect_process_events("outlives").await;
    assert_eq!(exit_code(&events), 3);
    assert_eq!(output_text(&events, Some("stdout")), "done\n");
    assert!(
        !descendant.has_exited(),
        "the descendant must outlive its process's exit and close"
    );
    descendant
        .wait_exit(DEADLINE, "the descendant after the closed TTL")
        .await;
    wait_gone(
        &cgroup,
        "the process's cgroup after its record was let go of",
    )
    .await;
}

/// Without cgroups the server makes itself a child subreaper: an orphan whose parent exited
/// (`setsid -f`) is adopted by the server instead of init; one that exits is reaped (no zombie
/// is left holding its pid), and one still running when the server is stopped is killed.
#[tokio::test]
async fn without_cgroups_orphans_are_adopted_reaped_and_killed_at_shutdown() {
    let setup = Setup::new();
    let mut server = Server::start(&["--no-process-cgroups"]).await;
    let mut client = server.connect().await;
    client.initialize().await;
    let (lives, ends) = (setup.fifo("lives"), setup.fifo("ends"));
    let script = "setsid -f \"$D\" \"$F\" < /dev/null > /dev/null 2>&1; \
                  setsid -f sh -c 'echo $$ > \"$G\"; exec sleep 0.5' < /dev/null > /dev/null 2>&1; \
                  exit 0";
    let mut params = setup.params("orphans", script, &lives);
    params["env"]["G"] = json!(ends.to_str().unwrap());
    client.start_process(params).await;
    let living = descendant_pid(&lives, "the orphan that lives on").await;
    let ending = descendant_pid(&ends, "the orphan that ends").await;
    let events = client.collect_process_events("orphans").await;
    assert_eq!(exit_code(&events), 0);
    for (what, pid) in [("lives", living.pid()), ("ends", ending.pid())] {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid: Option<i32> = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        // The one that ends may already be gone (reaped): then it had been adopted too.
        if !stat.is_empty() {
            assert_eq!(
                ppid,
                Some(server.pid()),
                "{what}: not adopted by the server: {stat}"
            );
        }
    }
    ending.wait_exit(DEADLINE, "the orphan that ends").await;
    // Exited is not enough: until its parent reaps it, a zombie keeps its /proc entry.
    wait_gone(
        Path::new(&format!("/proc/{}", ending.pid())),
        "the exited orphan (a zombie nobody reaps)",
    )
    .await;
    assert!(!living.has_exited(), "the orphan that lives on died early");
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    assert_eq!(unsafe { libc::kill(server.pid(), libc::SIGTERM) }, 0);
    living
        .wait_exit(DEADLINE, "the adopted orphan after the server's SIGTERM")
        .await;
    assert!(server.wait_for_exit().await.success());
}

/// As PID 1 (a container started with the server as its entrypoint and no init), the server
/// is where every orphan goes: those that exit are reaped, not left as zombies holding pids.
#[tokio::test]
async fn as_pid_1_the_server_reaps_the_orphans_it_inherits() {
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        skip(
            "`unshare --pid --fork --mount-proc` cannot run here (needs util-linux, and root or \
             user namespaces)",
        );
        return;
    }
    // A stale sub-hierarchy of an earlier PID 1 server (killed with its reaper, which lives in
    // the same namespace): its process cgroups are taken over, not refused.
    let stale = cgroup_v2_dir().map(|own| own.join("codex-exec-server.1"));
    if let Some(stale) = &stale {
        let _ = std::fs::create_dir_all(stale.join("p1"));
    }
    let server = Server::start_with(ServerOptions {
        // A /proc of its own, as a container has.
        wrapper: ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
            .map(String::from)
            .to_vec(),
        ..ServerOptions::default()
    })
    .await;
    // `unshare` forks the server: the one child of the pid the test started.
    let pid1 = children_of(server.pid())
        .into_iter()
        .next()
        .expect("the server under unshare");
    let mut client = server.connect().await;
    client.initialize().await;
    const ORPHANS: usize = 5;
    let script = format!(
        "for i in $(seq {ORPHANS}); do setsid -f sh -c 'sleep 1' < /dev/null > /dev/null 2>&1; \
         done; exit 0"
    );
    client.start_process(sh("orphans", &script)).await;
    let events = client.collect_process_events("orphans").await;
    assert_eq!(exit_code(&events), 0);
    // The orphans are the server's children now (besides its reaper helper)...
    let shells = || {
        children_of(pid1)
            .into_iter()
            .filter(|&pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.starts_with("sh\0") || c.is_empty())
            })
            .count()
    };
    let adopted = shells();
    assert!(adopted > 0, "no orphan was adopted by the server as PID 1");
    if stale.as_ref().is_some_and(|d| d.exists()) {
        // Each orphan is in its process's cgroup under the stale-named sub-hierarchy.
        let orphan = children_of(pid1)
            .into_iter()
            .find(|&pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.starts_with("sh\0"))
            })
            .expect("an orphan");
        let cgroup = std::fs::read_to_string(format!("/proc/{orphan}/cgroup")).unwrap();
        assert!(
            cgroup.contains("/codex-exec-server.1/p"),
            "the orphan is not in a process cgroup: {cgroup}"
        );
    }
    // ...and once they have exited, nothing of them is left: reaped, not zombies.
    wait_until("the exited orphans reaped (no zombie left)", || {
        shells() == 0
    })
    .await;
}

/// The children of `pid` (`/proc/PID/task/*/children`).
fn children_of(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        found.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    found
}

/// `--process-cgroups` takes `v1` or `v2`, and not beside `--no-process-cgroups`: anything else
/// stops the start, naming the flag.
#[test]
fn a_bad_or_contradictory_cgroup_version_is_refused_at_start() {
    for args in [
        &["--process-cgroups", "v3"][..],
        &["--process-cgroups", "v2", "--no-process-cgroups"][..],
    ] {
        let out = std::process::Command::new(server_binary())
            .arg("exec-server")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--process-cgroups"), "{args:?}: {stderr}");
    }
}

/// The directory of `pid`'s cgroup in the hierarchy of `version` (from `/proc/PID/cgroup`).
fn process_cgroup(pid: i32, version: Version) -> PathBuf {
    let (own, controller) = match version {
        Version::V1 => cgroup_v1().expect("available"),
        Version::V2 => (cgroup_v2_dir().expect("available"), ""),
    };
    // The path of the hierarchy's line (`0::PATH` in v2, `N:controller:PATH` in v1).
    let path_of = |pid: &str| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        text.lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let id = f.next()?;
                let controllers = f.next()?;
                let right = match version {
                    Version::V2 => id == "0" && controllers.is_empty(),
                    Version::V1 => controllers == controller,
                };
                right.then(|| f.next().map(str::to_string))?
            })
            .unwrap()
    };
    let (mine, its) = (path_of("self"), path_of(&pid.to_string()));
    let rest = its
        .strip_prefix(mine.trim_end_matches('/'))
        .unwrap_or_else(|| {
            panic!("{pid} is in {its}, not under the test's cgroup {mine} ({version:?})")
        });
    own.join(rest.trim_start_matches('/'))
}

/// Asserts that `pid` is in a process cgroup of the server (`codex-exec-server.PID/pN`) in the
/// hierarchy of `version`.
fn assert_in_server_cgroup(pid: i32, version: Version, what: &str) {
    let cgroup = process_cgroup(pid, version);
    let parent = cgroup
        .parent()
        .and_then(Path::file_name)
        .unwrap_or_default();
    assert!(
        parent.to_string_lossy().starts_with("codex-exec-server.")
            && cgroup
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with('p'),
        "{what}: {pid} is in {}, not a process cgroup of the server ({version:?})",
        cgroup.display()
    );
}

/// The server's cgroup root (`codex-exec-server.PID`) that `pid`'s process cgroup is in.
fn server_cgroup_root(pid: i32, version: Version) -> PathBuf {
    assert_in_server_cgroup(pid, version, "a descendant");
    process_cgroup(pid, version).parent().unwrap().to_path_buf()
}

/// Waits until `dir` is gone (nothing announces the removal of a cgroup directory).
async fn wait_gone(dir: &Path, what: &str) {
    wait_until(&format!("{what}: {} gone", dir.display()), || !dir.exists()).await;
}

/// `process/terminate` of a process that has exited and closed still ends what is left of its
/// tree, and answers `running: false`.
#[tokio::test]
async fn terminate_after_close_kills_what_is_left_of_the_tree() {
    if !cgroups_available() {
        return;
    }
    let setup = Setup::new();
    let server = Server::start(&FLAGS).await;
    let mut client = server.connect().await;
    client.initialize().await;
    let fifo = setup.fifo("lingers");
    let script = "setsid -f \"$D\" \"$F\" < /dev/null > /dev/null 2>&1; exit 0";
    client
        .start_process(setup.params("lingers", script, &fifo))
        .await;
    let descendant = descendant_pid(&fifo, "lingers").await;
    let events = client.collect_process_events("lingers").await;
    assert_eq!(exit_code(&events), 0);
    assert!(!descendant.has_exited());
    let answer = client
        .request_ok("process/terminate", json!({"processId": "lingers"}))
        .await;
    assert_eq!(answer, json!({"running": false}));
    descendant
        .wait_exit(DEADLINE, "the lingering descendant after terminate")
        .await;
}

/// Without cgroups (`--no-process-cgroups`, as on a machine that has none), a descendant that
/// left the group while its parent still runs is found through /proc and dies at terminate and
/// at session expiry; the process reports its own exit as usual.
#[tokio::test]
async fn without_cgroups_a_setsid_child_of_a_live_parent_still_dies() {
    let setup = Setup::new();
    let server = Server::start(&[
        "--no-process-cgroups",
        "--terminate-grace-ms",
        "200",
        "--detached-session-ttl-ms",
        "200",
    ])
    .await;
    let mut client = server.connect().await;
    client.initialize().await;
    let script = "setsid \"$D\" \"$F\" & wait";
    let mut descendants = Vec::new();
    for id in ["terminated", "expired"] {
        let fifo = setup.fifo(id);
        client.start_process(setup.params(id, script, &fifo)).await;
        descendants.push(descendant_pid(&fifo, id).await);
    }
    client
        .request_ok("process/terminate", json!({"processId": "terminated"}))
        .await;
    descendants[0]
        .wait_exit(DEADLINE, "setsid child, after process/terminate")
        .await;
    let events = client.collect_process_events("terminated").await;
    assert_eq!(exit_code(&events), 128 + 15);
    assert!(!descendants[1].has_exited());
    client.close().await;
    descendants[1]
        .wait_exit(DEADLINE, "setsid child, after session expiry")
        .await;
}

/// Without cgroups (`--no-process-cgroups`, as on a machine that has none) processes run and
/// report as before.
#[tokio::test]
async fn without_cgroups_a_process_still_reports_its_exit_code() {
    for flags in [&[][..], &["--no-process-cgroups"][..]] {
        let server = Server::start(flags).await;
        let mut client = server.connect().await;
        client.initialize().await;
        client.start_process(sh("plain", "echo out; exit 7")).await;
        let events = client.collect_process_events("plain").await;
        assert_eq!(exit_code(&events), 7, "{flags:?}");
        assert_eq!(output_text(&events, Some("stdout")), "out\n", "{flags:?}");
    }
}

/// The reaper, told the server's cgroup directory (`cPATH`), kills every process under it and
/// removes it when its input ends; a directory not named as the server names its own is ignored.
#[tokio::test]
async fn reaper_kills_and_removes_the_cgroup_it_was_told_of() {
    use std::io::Write as _;
    let Some(own) = own_cgroup_dir() else {
        return;
    };
    // A pid no live server has here: the name is the server's pattern, the number is ours.
    let dir = own.join(format!(
        "codex-exec-server.{}",
        4_000_000 + std::process::id()
    ));
    let child_dir = dir.join("p1");
    std::fs::create_dir_all(&child_dir).unwrap();
    let other = own.join(format!("codex-test-other.{}", std::process::id()));
    std::fs::create_dir(&other).unwrap();
    let spawn_in = |cgroup: &Path| {
        let child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        std::fs::write(cgroup.join("cgroup.procs"), child.id().to_string()).unwrap();
        child
    };
    let (mut inside, mut spared) = (spawn_in(&child_dir), spawn_in(&other));
    let inside_fd = Pidfd::open(inside.id() as i32).unwrap();
    let mut reaper = std::process::Command::new(server_binary())
        .arg("reap-process-groups")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = reaper.stdin.take().unwrap();
    write!(stdin, "c{}\nc{}\nc/tmp\n", dir.display(), other.display()).unwrap();
    drop(stdin);
    assert!(reaper.wait().unwrap().success());
    inside_fd
        .wait_exit(DEADLINE, "the process in the cgroup")
        .await;
    let _ = inside.wait();
    assert!(!dir.exists(), "the reaper left {}", dir.display());
    assert!(
        spared.try_wait().unwrap().is_none(),
        "a cgroup not ours was killed"
    );
    let _ = spared.kill();
    let _ = spared.wait();
    let _ = std::fs::remove_dir(&other);
}

/// The test process's own cgroup (v2) directory, if cgroups can be made there.
fn own_cgroup_dir() -> Option<PathBuf> {
    cgroups_available().then(cgroup_v2_dir).flatten()
}

/// Where the test process's cgroup is in the v1 `freezer` (else `pids`) hierarchy mounted whole.
fn cgroup_v1_dir() -> Option<PathBuf> {
    cgroup_v1().map(|(dir, _)| dir)
}

/// [`cgroup_v1_dir`] and the controller of its hierarchy.
fn cgroup_v1() -> Option<(PathBuf, &'static str)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    ["freezer", "pids"].iter().find_map(|controller| {
        let path = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let _ = f.next()?;
            (f.next()? == *controller).then(|| f.next())?
        })?;
        let mount = mounts.lines().find_map(|l| {
            let (fields, fs) = l.split_once(" - ")?;
            let mut f = fields.split(' ');
            let options = fs.split(' ').nth(2)?;
            (fs.starts_with("cgroup ")
                && options.split(',').any(|o| o == *controller)
                && f.nth(3)? == "/")
                .then(|| f.next().map(PathBuf::from))?
        })?;
        Some((mount.join(path.trim_start_matches('/')), *controller))
    })
}

/// Where the test process's cgroup (v2) is: its `0::` line under a cgroup2 mount of the root.
fn cgroup_v2_dir() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mount = mounts.lines().find_map(|l| {
        let (fields, fs) = l.split_once(" - ")?;
        let mut f = fields.split(' ');
        (fs.starts_with("cgroup2 ") && f.nth(3)? == "/").then(|| f.next().map(PathBuf::from))?
    })?;
    Some(mount.join(path.trim_start_matches('/')))
}

/// Spawn cost with and without a cgroup per process: sequential `process/start` of `true` until
/// `closed`, 300 each (run by hand: `cargo test --test descendants -- --ignored --nocapture`;
/// a debug build shows the difference as well as a release one, since the kernel's fork and
/// the cgroup's mkdir/rmdir dominate).
#[tokio::test]
#[ignore]
async fn spawn_cost_with_and_without_cgroups() {
    const N: usize = 300;
    for cgroups in [false, true, false, true] {
        let mut flags = vec![
            "--closed-process-ttl-ms",
            "1",
            "--max-processes-per-session",
            "4096",
        ];
        if !cgroups {
            flags.push("--no-process-cgroups");
        }
        let server = Server::start(&flags).await;
        let mut client = server.connect().await;
        client.initialize().await;
        let started = tokio::time::Instant::now();
        for i in 0..N {
            let id = format!("t{i}");
            client.start_process(process_params(&id, &["true"])).await;
            client.collect_process_events(&id).await;
            client.forget_process_events(&id);
        }
        let per = started.elapsed() / N as u32;
        eprintln!("spawn round trip, cgroups {cgroups}: {per:?} per process ({N} sequential)");
    }
}
