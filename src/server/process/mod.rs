//! The processes of one session. This file only declares the parts; they import each other
//! directly:
//! - `table.rs`: the table that owns them by client-chosen id; starting one, freeing its id.
//! - `spawn.rs`: starting a child (pipes or PTY) in its own process group.
//! - `spawn_sys.rs`: the `clone3` start of a pipe child, straight into its cgroup.
//! - `child.rs`: a started child, however it was started; waiting for it.
//! - `entry.rs`: one process: reads, stdin writes with `writeId` dedupe, signals to its group.
//! - `pump.rs`: the task that moves a child's output into its log and on to the connection.
//! - `output_log.rs`: the single source of truth for a process's events.
//! - `lifecycle.rs`: where a process is (Running → Exited → Closed), drawn there.
//! - `sys.rs`: the child's set-up between fork and exec, signals to a group.
//! - `cgroup.rs`: a cgroup per process where one can be made, to find and kill its whole tree.
//! - `warm.rs`: sandbox wrappers started ahead of the command they will run.

pub mod cgroup;
pub(crate) mod child;
pub(crate) mod entry;
pub mod lifecycle;
pub mod output_log;
mod pump;
pub(crate) mod spawn;
mod spawn_sys;
mod sys;
pub(crate) use sys::proc_stat;
pub(crate) mod table;
pub(crate) mod warm;
