//! Starting a child: pipes or a pseudo-terminal, its own process group (or session, for a tty),
//! its own cgroup where the server has one for it, a bare program name looked up on the child's
//! own `PATH`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};

use super::cgroup::{CgroupRoot, ProcessCgroup};
use super::sys;
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
    let spawned = match spawn_passing(spec, cgroup.as_ref().and_then(|c| c.procs_fd()), pass) {
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

/// Spawns `spec`; with `cgroup_procs` (a cgroup's `cgroup.procs`, open for writing), the child
/// enters that cgroup before it executes the program; with `pass`, it is also given `pass.0` as
/// descriptor `pass.1`.
fn spawn_passing(
    spec: &SpawnSpec,
    cgroup_procs: Option<std::os::fd::BorrowedFd<'_>>,
    pass: Option<(std::os::fd::BorrowedFd<'_>, i32)>,
) -> Result<Spawned, SpawnError> {
    let program = &spec.argv[0];
    // Look a bare name up on the child's PATH here, as execvp would: std falls back from
    // posix_spawn to fork when it has to search a PATH that differs from the server's.
    let resolved = resolve_program(program, &spec.env, &spec.cwd);
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
            child,
            stdin,
            output: Output::Pipes { stdout, stderr },
        })
    }
}

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
