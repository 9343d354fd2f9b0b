//! A cgroup (v2) per process, so that a process's whole tree can be found and killed: the
//! descendants that leave its process group (`setsid`, a double fork, a daemon) stay in its
//! cgroup, which nothing but root can leave.
//!
//! ```text
//!   <the server's own cgroup>/                 (where /proc/self/cgroup says the server is)
//!     codex-exec-server.<server pid>/          [`CgroupRoot`], made at start
//!       p1/  p2/ …                             [`ProcessCgroup`], one per process/start
//! ```
//!
//! The server does not move itself: the v2 rule "no processes in a cgroup whose children have
//! controllers" only concerns cgroups that enable controllers for their children, and these
//! enable none (`cgroup.subtree_control` is left empty); `cgroup.procs`, `cgroup.events` and
//! `cgroup.kill` work without any. A child is put into its cgroup between fork and exec (it
//! writes `0`, itself, to the `cgroup.procs` its parent opened), so even its first fork lands
//! there. The tree is killed with `cgroup.kill` (Linux 5.14), or, before that, by sending SIGKILL
//! to each pid of `cgroup.procs` until none is left. A cgroup is removed once empty.
//!
//! Where the machine has no cgroup v2 (or not one the server may write to) but a v1 hierarchy of
//! the `freezer` or `pids` controller, the same tree is made there (`--process-cgroups v1` asks
//! for it; the default takes v2, then v1). v1 has no `cgroup.kill` (the tree is killed pid by pid,
//! as above) and no `cgroup.events`: nothing tells when a v1 cgroup empties (its release agent
//! is one program for the whole machine), so waiting for one to be empty before removing it
//! looks at its `cgroup.procs` again, 1 ms then twice as long each time. That only happens where a
//! tree is removed (a record let go of, shutdown), never on a process's way in or out.
//!
//! Where no cgroup can be made (no cgroup mounted, a read-only `/sys/fs/cgroup` in a container,
//! no right to write there, `--no-process-cgroups`), [`CgroupRoot::create`] fails and the server
//! runs without, as before: process groups only, said once at start.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, Signal};

/// The prefix of the server's sub-hierarchy, followed by its pid.
const ROOT_PREFIX: &str = "codex-exec-server.";

/// Process cgroup numbers a stale sub-hierarchy may hold taken at most (see
/// [`CgroupRoot::make`]); beyond them an existing `pN` is an error.
const STALE_SKIPS: u64 = 1024;

/// Signalling rounds at most when `cgroup.kill` is missing (each round catches what forked while
/// the previous one was being sent).
const KILL_ROUNDS: usize = 64;

/// The v1 controllers whose hierarchy may hold the processes' cgroups, in order of preference
/// (any hierarchy tracks processes; these two are the ones meant for it, and neither limits
/// anything by default). Never `name=systemd`: that one is systemd's own bookkeeping.
const V1_CONTROLLERS: [&str; 2] = ["freezer", "pids"];

/// Which cgroup version holds the processes' cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// A cgroup v1 hierarchy of one of [`V1_CONTROLLERS`].
    V1,
    /// The cgroup v2 (unified) hierarchy.
    V2,
}

impl std::fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// The server's own sub-hierarchy, under the cgroup it runs in.
#[derive(Debug)]
pub struct CgroupRoot {
    dir: PathBuf,
    next: AtomicU64,
    /// `cgroup.kill` exists (v2, Linux 5.14).
    has_kill: bool,
    version: CgroupVersion,
}

impl CgroupRoot {
    /// Makes `codex-exec-server.<pid>` under the server's own cgroup: of `version`, or, without
    /// one, v2 where it can, else v1. Fails where the machine has no such hierarchy holding the
    /// server, or the server may not write to it.
    pub fn create(version: Option<CgroupVersion>) -> io::Result<Self> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        match version {
            Some(version) => Self::create_in(version, &mountinfo, &own),
            None => Self::create_in(CgroupVersion::V2, &mountinfo, &own).or_else(|v2| {
                Self::create_in(CgroupVersion::V1, &mountinfo, &own).map_err(|v1| {
                    io::Error::new(v2.kind(), format!("cgroup v2: {v2}; cgroup v1: {v1}"))
                })
            }),
        }
    }

    /// [`Self::create`] in the hierarchy of `version`.
    fn create_in(version: CgroupVersion, mountinfo: &str, own: &str) -> io::Result<Self> {
        let own_dir = match version {
            CgroupVersion::V2 => own_cgroup_dir(mountinfo, own).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "no cgroup v2 hierarchy mounted that holds this process",
                )
            })?,
            CgroupVersion::V1 => V1_CONTROLLERS
                .iter()
                .find_map(|controller| own_v1_cgroup_dir(mountinfo, own, controller))
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "no cgroup v1 hierarchy of {} mounted that holds this process",
                            V1_CONTROLLERS.join(" or ")
                        ),
                    )
                })?,
        };
        let dir = own_dir.join(format!("{ROOT_PREFIX}{}", std::process::id()));
        if dir.to_str().is_none_or(|s| s.contains('\n')) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the cgroup path is not one line of UTF-8",
            ));
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            // A server with the same pid that died without cleaning up (another pid namespace).
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(annotate(err, &dir)),
        }
        // Check now that a process can be moved in, not at the first spawn.
        let probe = dir.join("probe");
        let _ = std::fs::create_dir(&probe);
        let procs = rustix::fs::open(
            probe.join("cgroup.procs"),
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let _ = std::fs::remove_dir(&probe);
        if let Err(err) = procs {
            let _ = std::fs::remove_dir(&dir);
            return Err(annotate(err.into(), &probe));
        }
        let has_kill = dir.join("cgroup.kill").exists();
        Ok(Self {
            dir,
            next: AtomicU64::new(1),
            has_kill,
            version,
        })
    }

    /// The sub-hierarchy's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cgroup version it is in.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// A new, empty cgroup for one process.
    pub fn make(&self) -> io::Result<ProcessCgroup> {
        let dir = loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let dir = self.dir.join(format!("p{n}"));
            match std::fs::create_dir(&dir) {
                Ok(()) => break dir,
                // Left by a server of the same pid that was killed with its reaper (PID 1 of a
                // PID namespace: everything in it dies with it): removed if empty, else skipped.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists && n < STALE_SKIPS => {
                    if std::fs::remove_dir(&dir).is_ok() && std::fs::create_dir(&dir).is_ok() {
                        break dir;
                    }
                }
                Err(err) => return Err(annotate(err, &dir)),
            }
        };
        let procs = rustix::fs::open(
            dir.join("cgroup.procs"),
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        // v2: the directory itself, for a child created in it (`CLONE_INTO_CGROUP`).
        let dir_fd = (self.version == CgroupVersion::V2)
            .then(|| {
                rustix::fs::open(
                    &dir,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ok()
            })
            .flatten();
        match procs {
            Ok(procs) => Ok(ProcessCgroup {
                dir,
                has_kill: self.has_kill,
                procs: Some(procs),
                dir_fd,
            }),
            Err(err) => {
                let _ = std::fs::remove_dir(&dir);
                Err(annotate(err.into(), &dir))
            }
        }
    }

    /// Kills everything under the sub-hierarchy and removes it (server shutdown). Blocks up to
    /// `within` waiting for the killed to be gone.
    pub fn remove_all(&self, within: Duration) {
        kill_tree(&self.dir, self.has_kill);
        remove_tree(&self.dir, within);
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        // Empty by now after a shutdown; if not, the reaper removes it when the server is gone.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// One process's cgroup.
#[derive(Debug)]
pub struct ProcessCgroup {
    dir: PathBuf,
    has_kill: bool,
    /// Its `cgroup.procs`, open for the spawn (the child writes itself into it), closed after.
    procs: Option<OwnedFd>,
    /// Its directory (v2), open for the spawn (the child is created in it), closed after.
    dir_fd: Option<OwnedFd>,
}

impl ProcessCgroup {
    /// The `cgroup.procs` the child writes itself into, until [`Self::spawned`].
    pub fn procs_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.procs.as_ref().map(|fd| fd.as_fd())
    }

    /// Its directory (v2 only), for a child created in it, until [`Self::spawned`].
    pub fn dir_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.dir_fd.as_ref().map(|fd| fd.as_fd())
    }

    /// The child is spawned: the descriptors are no longer needed.
    pub fn spawned(&mut self) {
        self.procs = None;
        self.dir_fd = None;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends `signal` to every process in the cgroup (SIGKILL: see [`Self::kill`]).
    pub fn signal(&self, signal: Signal) {
        for pid in procs(&self.dir) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// SIGKILL to every process in the cgroup, those forking meanwhile included.
    pub fn kill(&self) {
        kill_tree(&self.dir, self.has_kill);
    }

    /// Whether some process is still in the cgroup (`cgroup.events`: `populated 1`); false once
    /// it is gone.
    pub fn populated(&self) -> bool {
        populated(&self.dir).unwrap_or(false)
    }

    /// Waits until the cgroup is empty or `within` has passed; true if empty. Without polling in
    /// v2; in v1 by looking again with a growing pause (module documentation).
    pub async fn wait_empty(&self, within: Duration) -> bool {
        let events = match std::fs::File::open(self.dir.join("cgroup.events")) {
            Ok(file) => file,
            Err(_) => {
                let deadline = tokio::time::Instant::now() + within;
                let mut pause = FIRST_V1_PAUSE;
                while !procs(&self.dir).is_empty() {
                    if tokio::time::Instant::now() + pause > deadline {
                        return false;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LAST_V1_PAUSE);
                }
                return true;
            }
        };
        // The kernel signals priority readiness each time `cgroup.events` changes (a read through
        // the same descriptor acknowledges it).
        let watched = match crate::server::sys::watch_priority(events) {
            Ok(watched) => watched,
            Err(_) => return !self.populated(),
        };
        let wait = async {
            // Registered before the first read, so a change after it is not missed.
            while populated_at(watched.get_ref()).unwrap_or(false) {
                match watched.ready(tokio::io::Interest::PRIORITY).await {
                    Ok(mut guard) => guard.clear_ready(),
                    Err(_) => return,
                }
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    /// Kills what is left, waits up to `within` for it to be gone, and removes the cgroup.
    pub async fn remove(&self, within: Duration) {
        self.kill();
        self.wait_empty(within).await;
        if let Err(err) = std::fs::remove_dir(&self.dir)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(%err, cgroup = %self.dir.display(), "cannot remove a process's cgroup");
        }
    }

    /// Removes a cgroup nothing was put into (the spawn failed).
    pub fn discard(self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Whether `name` is a [`CgroupRoot`]'s (`codex-exec-server.PID`).
pub fn is_root_name(name: &str) -> bool {
    name.strip_prefix(ROOT_PREFIX)
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// The pids in `dir/cgroup.procs` (none if it cannot be read).
fn procs(dir: &Path) -> Vec<Pid> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|&p| p > 1)
        .filter_map(Pid::from_raw)
        .collect()
}

/// `populated` of `dir/cgroup.events` (v2), or whether any process is in it or below (v1).
fn populated(dir: &Path) -> io::Result<bool> {
    match std::fs::File::open(dir.join("cgroup.events")) {
        Ok(events) => populated_at(&events),
        Err(err) if err.kind() == io::ErrorKind::NotFound && dir.exists() => {
            Ok(subtree(dir).iter().any(|d| !procs(d).is_empty()))
        }
        Err(err) => Err(err),
    }
}

/// The first pause of a wait for a v1 cgroup to empty, and the longest.
const FIRST_V1_PAUSE: Duration = Duration::from_millis(1);
const LAST_V1_PAUSE: Duration = Duration::from_millis(64);

/// `populated` of an open `cgroup.events`, read from its start.
fn populated_at(events: &std::fs::File) -> io::Result<bool> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = [0u8; 256];
    let n = events.read_at(&mut buf, 0)?;
    Ok(buf[..n].split(|&b| b == b'\n').any(|l| l == b"populated 1"))
}

/// SIGKILL to every process of the tree at `dir`: `cgroup.kill`, else pid by pid, child cgroups
/// included, until none is left (at most [`KILL_ROUNDS`] rounds).
pub fn kill_tree(dir: &Path, has_kill: bool) {
    if has_kill && std::fs::write(dir.join("cgroup.kill"), b"1").is_ok() {
        return;
    }
    for _ in 0..KILL_ROUNDS {
        let mut any = false;
        for cgroup in subtree(dir) {
            for pid in procs(&cgroup) {
                any = true;
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
        if !any {
            return;
        }
    }
}

/// `dir` and every cgroup below it, parents first.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        if let Ok(entries) = std::fs::read_dir(&all[i]) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    all.push(entry.path());
                }
            }
        }
        i += 1;
    }
    all
}

/// Removes `dir` and the cgroups below it, deepest first, waiting up to `within` in all for each
/// to be empty (`poll` on its `cgroup.events`, which the kernel wakes on every change).
pub fn remove_tree(dir: &Path, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    for cgroup in subtree(dir).iter().rev() {
        wait_empty_blocking(cgroup, deadline);
        let _ = std::fs::remove_dir(cgroup);
    }
}

/// Blocks until `dir` is empty or `deadline` has passed (in v1 by looking again with a growing
/// pause: module documentation).
fn wait_empty_blocking(dir: &Path, deadline: std::time::Instant) {
    let Ok(events) = std::fs::File::open(dir.join("cgroup.events")) else {
        let mut pause = FIRST_V1_PAUSE;
        while !procs(dir).is_empty() && std::time::Instant::now() + pause <= deadline {
            std::thread::sleep(pause);
            pause = (pause * 2).min(LAST_V1_PAUSE);
        }
        return;
    };
    while populated_at(&events).unwrap_or(false) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let mut fds = [rustix::event::PollFd::new(
            &events,
            rustix::event::PollFlags::PRI,
        )];
        let timeout = rustix::event::Timespec::try_from(left).ok();
        if rustix::event::poll(&mut fds, timeout.as_ref()).is_err() {
            return;
        }
    }
}

/// The directory of the cgroup (v2) this process is in: the `0::PATH` line of
/// `/proc/self/cgroup` under the mount point of a `cgroup2` mount of `/proc/self/mountinfo` whose
/// root contains it.
fn own_cgroup_dir(mountinfo: &str, proc_cgroup: &str) -> Option<PathBuf> {
    let path = proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim_end();
    if !path.starts_with('/') || path.ends_with(" (deleted)") {
        return None;
    }
    in_mount(mountinfo, path, |fs_type, _| fs_type == "cgroup2")
}

/// The directory of this process's cgroup in the v1 hierarchy of `controller`: the
/// `N:…controller…:PATH` line of `/proc/self/cgroup` under the mount point of a `cgroup` mount
/// whose super options name `controller` and whose root contains it.
fn own_v1_cgroup_dir(mountinfo: &str, proc_cgroup: &str, controller: &str) -> Option<PathBuf> {
    let path = proc_cgroup.lines().find_map(|l| {
        let mut fields = l.splitn(3, ':');
        let _id = fields.next()?;
        let controllers = fields.next()?;
        let path = fields.next()?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path.trim_end())
    })?;
    if !path.starts_with('/') || path.ends_with(" (deleted)") {
        return None;
    }
    in_mount(mountinfo, path, |fs_type, options| {
        fs_type == "cgroup" && options.split(',').any(|o| o == controller)
    })
}

/// Where the cgroup `path` is under the first mount of `mountinfo` that `accept`s (given its
/// file system type and super options) and whose root contains `path`.
fn in_mount(mountinfo: &str, path: &str, accept: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (fields, fs) = line.split_once(" - ")?;
        let mut fs = fs.split(' ');
        let fs_type = fs.next()?;
        let options = fs.nth(1).unwrap_or("");
        if !accept(fs_type, options) {
            return None;
        }
        let mut fields = fields.split(' ');
        let root = unescape(fields.nth(3)?);
        let mount_point = unescape(fields.next()?);
        under_mount(path, &root, &mount_point)
    })
}

/// Where the cgroup `path` is, in a hierarchy whose mount of `root` is at `mount_point`; `None`
/// if `path` is not under `root`.
fn under_mount(path: &str, root: &str, mount_point: &str) -> Option<PathBuf> {
    let rest = if root == "/" {
        path
    } else {
        let rest = path.strip_prefix(root)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest
    };
    Some(PathBuf::from(mount_point).join(rest.trim_start_matches('/')))
}

/// A mountinfo field with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The error with the path it concerns.
fn annotate(err: io::Error, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 20 0:22 / /sys/fs/cgroup ro,relatime - tmpfs tmpfs ro,size=4096k
31 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
35 25 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn the_v2_line_is_found_under_the_cgroup2_mount() {
        let own = "4:memory:/x\n0::/user.slice/s 1\n";
        assert_eq!(
            own_cgroup_dir(HYBRID, own),
            Some(PathBuf::from("/sys/fs/cgroup/unified/user.slice/s 1"))
        );
        assert_eq!(
            own_cgroup_dir(HYBRID, "0::/\n"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn no_v2_mount_or_no_v2_line_means_no_cgroup() {
        let v1_only = "31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(own_cgroup_dir(v1_only, "0::/\n"), None);
        assert_eq!(own_cgroup_dir(HYBRID, "4:memory:/x\n"), None);
        assert_eq!(own_cgroup_dir(HYBRID, "0::/gone (deleted)\n"), None);
    }

    #[test]
    fn a_mount_of_a_subtree_is_used_only_for_paths_under_it() {
        let sub = "40 25 0:30 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_cgroup_dir(sub, "0::/kubepods/pod1/c\n"),
            Some(PathBuf::from("/sys/fs/cgroup/c"))
        );
        assert_eq!(own_cgroup_dir(sub, "0::/kubepods/pod10\n"), None);
        assert_eq!(own_cgroup_dir(sub, "0::/other\n"), None);
    }

    #[test]
    fn the_v1_line_of_a_controller_is_found_under_its_mount() {
        let mountinfo = "\
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
";
        let own = "9:name=systemd:/user.slice\n8:pids:/p\n6:freezer:/\n2:cpu,cpuacct:/c\n";
        assert_eq!(
            own_v1_cgroup_dir(mountinfo, own, "freezer"),
            Some(PathBuf::from("/sys/fs/cgroup/freezer"))
        );
        assert_eq!(
            own_v1_cgroup_dir(mountinfo, own, "pids"),
            Some(PathBuf::from("/sys/fs/cgroup/pids/p"))
        );
        assert_eq!(
            own_v1_cgroup_dir(mountinfo, own, "cpuacct"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/c"))
        );
        // Not mounted, or this process has no line for it, or only a v2 mount: none.
        assert_eq!(own_v1_cgroup_dir(HYBRID, own, "freezer"), None);
        assert_eq!(own_v1_cgroup_dir(mountinfo, "0::/\n", "freezer"), None);
        assert_eq!(own_v1_cgroup_dir(HYBRID, "0::/\n", "memory"), None);
        // The controller is matched whole, not as a part of another's name.
        assert_eq!(own_v1_cgroup_dir(mountinfo, own, "cpu,cpuacct"), None);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/a\"), r"/a\");
    }
}
