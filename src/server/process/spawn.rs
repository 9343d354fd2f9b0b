//! Starting a child: pipes or a pseudo-terminal, its own process group (or session, for a tty),
//! its own cgroup where the server has one for it, a bare program name looked up on the child's
//! own `PATH`.

use std::ffi::{CString, OsString};
use std::os::fd::AsFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use super::cgroup::{CgroupRoot, ProcessCgroup};
use super::child::{Child, OwnChild};
use super::{spawn_sys, sys};
use crate::pty::{self, PtyMaster};
use crate::server::adopted;

/// What the caller asked to run, already validated.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub argv: Vec<String>,
    pub arg0: Option<String>,
    pub cwd: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    pub tty: bool,
    pub pipe_stdin: bool,
    /// Runs under `codex-linux-sandbox`: enables the `sandboxDenied` heuristic.
    pub sandboxed: bool,
    /// Start it as PID 1 of a new PID namespace where the kernel lets the server (the sandbox
    /// wrapper's `--pid-namespace-made`: it is then that namespace's init, with no supervisor
    /// process in front of it); elsewhere it starts as usual and makes its namespace itself.
    pub new_pid_namespace: bool,
    /// The terminal's size as (rows, cols), for a tty (default 80×24).
    pub pty_size: Option<(u16, u16)>,
    /// SIGTERM, then SIGKILL after the terminate grace, once this has passed (`timeoutMs`).
    pub timeout: Option<std::time::Duration>,
    /// `argv[0]` as the client sent it (`argv` may be the sandbox wrapper's), for `process/list`.
    pub listed_argv0: String,
    /// The client acknowledges the output from the first byte on (`process/start.outputAck`).
    pub output_ack: bool,
}

/// Why a spawn failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("process ID already exists")]
    DuplicateId,
    #[error("failed to open a pseudo-terminal: {0}")]
    Pty(#[source] std::io::Error),
    #[error("{source}: {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The session holds `--max-processes-per-session` processes already.
    #[error(
        "too many processes in this session: the limit is {0} (--max-processes-per-session), \
         finished processes included until their retention ends (--closed-process-ttl-ms)"
    )]
    TooMany(usize),
}

/// Where `process/write` bytes go.
pub(super) enum StdinSink {
    Pipe(ChildStdin),
    Pty(Arc<PtyMaster>),
    Closed,
}

/// The child's output ends.
pub(super) enum Output {
    Pipes {
        stdout: ChildStdout,
        stderr: ChildStderr,
    },
    Pty(Arc<PtyMaster>),
}

/// A started child and its ends.
pub(super) struct Spawned {
    pub(super) child: Child,
    pub(super) stdin: StdinSink,
    pub(super) output: Output,
}

/// [`spawn_passing`] in a new cgroup of `cgroups` where processes get one (a process that
/// cannot have one runs without, said in the log); the cgroup goes if the spawn fails.
pub(super) fn spawn_in_cgroup(
    spec: &SpawnSpec,
    cgroups: Option<&CgroupRoot>,
    pass: Option<(std::os::fd::BorrowedFd<'_>, i32)>,
) -> Result<(Spawned, Option<ProcessCgroup>), SpawnError> {
    let mut cgroup = cgroups.and_then(|root| {
        root.make()
            .inspect_err(|err| {
                tracing::warn!(%err, "cannot make a cgroup for a process: descendants that \
                    leave its process group will not be reached")
            })
            .ok()
    });
    let spawned = match spawn_passing(spec, cgroup.as_ref(), pass) {
        Ok(s) => s,
        Err(err) => {
            if let Some(cgroup) = cgroup {
                cgroup.discard();
            }
            return Err(err);
        }
    };
    if let Some(cgroup) = &mut cgroup {
        cgroup.spawned();
    }
    Ok((spawned, cgroup))
}

/// Spawns `spec`; with `cgroup`, the child is in that cgroup before it executes the program;
/// with `pass`, it is also given `pass.0` as descriptor `pass.1`.
fn spawn_passing(
    spec: &SpawnSpec,
    cgroup: Option<&ProcessCgroup>,
    pass: Option<(std::os::fd::BorrowedFd<'_>, i32)>,
) -> Result<Spawned, SpawnError> {
    let program = &spec.argv[0];
    // Look a bare name up on the child's PATH here, as execvp would: std falls back from
    // posix_spawn to fork when it has to search a PATH that differs from the server's.
    let resolved = resolve_program(program, &spec.env, &spec.cwd);
    if !spec.tty && OWN_SPAWN.load(Ordering::Relaxed) {
        match spawn_own(spec, resolved.as_deref(), cgroup, pass) {
            Ok(result) => return result,
            Err(spawn_sys::Unsupported) => {
                OWN_SPAWN.store(false, Ordering::Relaxed);
                tracing::debug!("clone3 spawn unsupported here: children are started by std");
            }
        }
    }
    let cgroup_procs = cgroup.and_then(|c| c.procs_fd());
    let mut cmd = tokio::process::Command::new(resolved.as_deref().unwrap_or(Path::new(program)));
    if resolved.is_some() && spec.arg0.is_none() {
        cmd.arg0(program);
    }
    cmd.args(&spec.argv[1..])
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(false);
    if let Some(arg0) = &spec.arg0 {
        cmd.arg0(arg0);
    }
    sys::configure_child(&mut cmd, spec.tty, cgroup_procs);
    if let Some((fd, target)) = pass {
        sys::pass_fd(&mut cmd, fd, target);
    }
    let spawn_err = |source| SpawnError::Spawn {
        program: program.clone(),
        source,
    };
    if spec.tty {
        let (rows, cols) = spec
            .pty_size
            .unwrap_or((pty::DEFAULT_ROWS, pty::DEFAULT_COLS));
        let pair = pty::open(rows, cols).map_err(SpawnError::Pty)?;
        let dup =
            |fd: &std::os::fd::OwnedFd| fd.try_clone().map(Stdio::from).map_err(SpawnError::Pty);
        cmd.stdin(dup(&pair.slave)?)
            .stdout(dup(&pair.slave)?)
            .stderr(dup(&pair.slave)?);
        let child = adopted::spawn(|| cmd.spawn(), tokio::process::Child::id).map_err(spawn_err)?;
        let child = Child::Std(child);
        // Our copy of the slave must go, or the master never sees EOF.
        drop(cmd);
        drop(pair.slave);
        let master = Arc::new(PtyMaster::new(pair.master).map_err(SpawnError::Pty)?);
        Ok(Spawned {
            child,
            stdin: StdinSink::Pty(master.clone()),
            output: Output::Pty(master),
        })
    } else {
        cmd.stdin(if spec.pipe_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child =
            adopted::spawn(|| cmd.spawn(), tokio::process::Child::id).map_err(spawn_err)?;
        let stdin = child
            .stdin
            .take()
            .map(StdinSink::Pipe)
            .unwrap_or(StdinSink::Closed);
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        Ok(Spawned {
            child: Child::Std(child),
            stdin,
            output: Output::Pipes { stdout, stderr },
        })
    }
}

/// Whether pipe children are started with `clone3` (`spawn_sys.rs`); cleared the first time the
/// kernel (or a seccomp filter around the server) refuses it.
static OWN_SPAWN: AtomicBool = AtomicBool::new(true);

/// Starts the pipe child of `spec` with `clone3` (`spawn_sys.rs`): as std would, but created in
/// its cgroup and without a fork of the server.
fn spawn_own(
    spec: &SpawnSpec,
    resolved: Option<&Path>,
    cgroup: Option<&ProcessCgroup>,
    pass: Option<(std::os::fd::BorrowedFd<'_>, i32)>,
) -> Result<Result<Spawned, SpawnError>, spawn_sys::Unsupported> {
    let program = &spec.argv[0];
    let spawn_err = |source| SpawnError::Spawn {
        program: program.clone(),
        source,
    };
    let prepared = (|| -> std::io::Result<_> {
        let nul = |_| std::io::Error::new(std::io::ErrorKind::InvalidInput, NUL_IN_ARGUMENT);
        let c = |s: &std::ffi::OsStr| CString::new(s.as_bytes()).map_err(nul);
        // A bare name that is not on the child's PATH: execvp would fail, execve would run a
        // file of that name in the cwd.
        let path: &std::ffi::OsStr = match resolved {
            Some(p) => p.as_os_str(),
            None if !program.contains('/') => {
                return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
            }
            None => program.as_ref(),
        };
        let mut argv = Vec::with_capacity(spec.argv.len());
        argv.push(c(spec.arg0.as_deref().unwrap_or(program).as_ref())?);
        for arg in &spec.argv[1..] {
            argv.push(c(arg.as_ref())?);
        }
        let mut env = Vec::with_capacity(spec.env.len());
        for (k, v) in &spec.env {
            let mut entry = k.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            env.push(CString::new(entry).map_err(nul)?);
        }
        // The child's stdin, and our end of it when it is a pipe.
        let stdin: (std::os::fd::OwnedFd, Option<std::io::PipeWriter>) = if spec.pipe_stdin {
            let (read, write) = std::io::pipe()?;
            (read.into(), Some(write))
        } else {
            (std::fs::File::open("/dev/null")?.into(), None)
        };
        Ok((c(path)?, argv, env, c(spec.cwd.as_os_str())?, stdin))
    })();
    let (program_c, argv, env, cwd, (child_stdin, our_stdin)) = match prepared {
        Ok(p) => p,
        Err(err) => return Ok(Err(spawn_err(err))),
    };
    let pipes = std::io::pipe().and_then(|out| Ok((out, std::io::pipe()?)));
    let ((out_read, out_write), (err_read, err_write)) = match pipes {
        Ok(p) => p,
        Err(err) => return Ok(Err(spawn_err(err))),
    };
    let out_write = std::os::fd::OwnedFd::from(out_write);
    let err_write = std::os::fd::OwnedFd::from(err_write);
    let setup = spawn_sys::ChildSetup {
        program: &program_c,
        argv: &argv,
        env: &env,
        cwd: &cwd,
        stdio: [child_stdin.as_fd(), out_write.as_fd(), err_write.as_fd()],
        pass,
        cgroup_dir: cgroup.and_then(|c| c.dir_fd()),
        cgroup_procs: cgroup.and_then(|c| c.procs_fd()),
        new_pid_namespace: spec.new_pid_namespace,
    };
    let mut unsupported = false;
    let started = adopted::spawn(
        || match spawn_sys::spawn(&setup) {
            Ok(result) => result,
            Err(spawn_sys::Unsupported) => {
                unsupported = true;
                Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
            }
        },
        |s| Some(s.pid as u32),
    );
    if unsupported {
        return Err(spawn_sys::Unsupported);
    }
    // The child's ends go; ours stay.
    drop((child_stdin, out_write, err_write));
    let started = match started {
        Ok(s) => s,
        Err(err) => return Ok(Err(spawn_err(err))),
    };
    let wrap = || -> std::io::Result<Spawned> {
        let child = Child::Own(OwnChild::new(started.pid, started.pidfd)?);
        let stdin = match our_stdin {
            Some(w) => StdinSink::Pipe(ChildStdin::from_std(std::process::ChildStdin::from(
                std::os::fd::OwnedFd::from(w),
            ))?),
            None => StdinSink::Closed,
        };
        let stdout = ChildStdout::from_std(std::process::ChildStdout::from(
            std::os::fd::OwnedFd::from(out_read),
        ))?;
        let stderr = ChildStderr::from_std(std::process::ChildStderr::from(
            std::os::fd::OwnedFd::from(err_read),
        ))?;
        Ok(Spawned {
            child,
            stdin,
            output: Output::Pipes { stdout, stderr },
        })
    };
    Ok(wrap().map_err(spawn_err))
}

/// std's words for an argument or environment entry with a NUL byte.
const NUL_IN_ARGUMENT: &str = "nul byte found in provided data";

/// The executable a bare `program` names on the child's `PATH` (execvp's default path when the
/// child has none), or `None` to leave the lookup to the OS (a name with a slash, or not found:
/// then the spawn reports the OS error).
fn resolve_program(program: &str, env: &[(OsString, OsString)], cwd: &Path) -> Option<PathBuf> {
    if program.contains('/') {
        return None;
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    which::which_in(program, Some(path), cwd).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_program_is_found_on_the_childs_path_like_execvp() {
        let env = vec![(
            OsString::from("PATH"),
            OsString::from("/nonexistent:/bin:/usr/bin"),
        )];
        let found = resolve_program("sh", &env, Path::new("/")).expect("sh is on PATH");
        assert!(found.is_absolute() && found.ends_with("sh"), "{found:?}");
        assert_eq!(
            resolve_program("./x", &env, Path::new("/")),
            None,
            "slash: left to the OS"
        );
        assert_eq!(
            resolve_program("no-such-program-xyz", &env, Path::new("/")),
            None
        );
    }
}
