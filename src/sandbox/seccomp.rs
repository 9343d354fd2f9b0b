//! The seccomp filters of sandbox.md §4.4, built with `seccompiler`: denied calls fail with EPERM;
//! a foreign architecture (i386 `int 0x80`) kills the process; x32 syscall numbers are denied.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule, TargetArch,
};

use super::policy::{ManagedNetwork, NetworkMode};

/// Why a filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("failed to build the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("failed to compile the seccomp filter: {0}")]
    Compile(#[from] seccompiler::Error),
}

/// First x32 syscall number (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn cond(arg: u8, op: Op, value: u64) -> Result<Cond, SeccompError> {
    Ok(Cond::new(arg, Len::Dword, op, value)?)
}

fn always() -> Vec<SeccompRule> {
    Vec::new()
}

/// The BPF program for `mode`, or `None` when nothing is filtered. `deny_truncate` closes the
/// gap of Landlock ABIs below 3, which cannot restrict `truncate`.
pub fn program(
    mode: NetworkMode,
    managed: Option<&ManagedNetwork>,
    deny_truncate: bool,
) -> Result<Option<BpfProgram>, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let unix = libc::AF_UNIX as u64;
    let process_escapes = [
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ];
    match mode {
        NetworkMode::Unrestricted => {}
        NetworkMode::Vsock => {
            let vsock = libc::AF_VSOCK as u64;
            rules.insert(
                libc::SYS_socket,
                vec![SeccompRule::new(vec![cond(0, Op::Eq, vsock)?])?],
            );
            rules.insert(
                libc::SYS_socketpair,
                vec![SeccompRule::new(vec![cond(0, Op::Eq, vsock)?])?],
            );
        }
        NetworkMode::Restricted => {
            rules.insert(
                libc::SYS_socket,
                vec![SeccompRule::new(vec![cond(0, Op::Ne, unix)?])?],
            );
            rules.insert(
                libc::SYS_socketpair,
                vec![SeccompRule::new(vec![cond(0, Op::Ne, unix)?])?],
            );
            for nr in [
                libc::SYS_connect,
                libc::SYS_accept,
                libc::SYS_accept4,
                libc::SYS_bind,
                libc::SYS_listen,
                libc::SYS_getpeername,
                libc::SYS_getsockname,
                libc::SYS_shutdown,
                libc::SYS_sendto,
                libc::SYS_sendmmsg,
                libc::SYS_recvmmsg,
                libc::SYS_getsockopt,
                libc::SYS_setsockopt,
            ] {
                rules.insert(nr, always());
            }
            for nr in process_escapes {
                rules.insert(nr, always());
            }
        }
        NetworkMode::Managed => {
            let allow_unix = managed.is_some_and(|m| m.dangerously_allow_all_unix_sockets);
            let (inet, inet6) = (libc::AF_INET as u64, libc::AF_INET6 as u64);
            // Deny any family but INET/INET6 (and UNIX when allowed).
            let mut family = vec![cond(0, Op::Ne, inet)?, cond(0, Op::Ne, inet6)?];
            if allow_unix {
                family.push(cond(0, Op::Ne, unix)?);
            }
            let mut socket_rules = vec![SeccompRule::new(family)?];
            for fam in [inet, inet6] {
                // Only SOCK_STREAM (type & 0xf == 1) ...
                for ty in [
                    libc::SOCK_DGRAM,
                    libc::SOCK_RAW,
                    libc::SOCK_RDM,
                    libc::SOCK_SEQPACKET,
                    libc::SOCK_DCCP,
                    10, // SOCK_PACKET (deprecated name in libc)
                ] {
                    socket_rules.push(SeccompRule::new(vec![
                        cond(0, Op::Eq, fam)?,
                        cond(1, Op::MaskedEq(0xf), ty as u64)?,
                    ])?);
                }
                // ... with protocol 0 or IPPROTO_TCP.
                socket_rules.push(SeccompRule::new(vec![
                    cond(0, Op::Eq, fam)?,
                    cond(2, Op::Ne, 0)?,
                    cond(2, Op::Ne, libc::IPPROTO_TCP as u64)?,
                ])?);
            }
            rules.insert(libc::SYS_socket, socket_rules);
            rules.insert(
                libc::SYS_socketpair,
                vec![SeccompRule::new(vec![cond(0, Op::Ne, unix)?])?],
            );
            let fastopen = libc::MSG_FASTOPEN as u64;
            for (nr, flags_arg) in [
                (libc::SYS_sendto, 3u8),
                (libc::SYS_sendmsg, 2),
                (libc::SYS_sendmmsg, 3),
            ] {
                rules.insert(
                    nr,
                    vec![SeccompRule::new(vec![cond(
                        flags_arg,
                        Op::MaskedEq(fastopen),
                        fastopen,
                    )?])?],
                );
            }
            for nr in process_escapes {
                rules.insert(nr, always());
            }
        }
    }
    if deny_truncate {
        rules.insert(libc::SYS_truncate, always());
        rules.insert(libc::SYS_ftruncate, always());
    }
    if rules.is_empty() {
        return Ok(None);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )?;
    let mut program: BpfProgram = filter.try_into()?;
    // After the architecture check (3 instructions), deny x32 syscall numbers.
    let deny_x32 = [
        seccompiler::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        }, // ld [nr]
        seccompiler::sock_filter {
            code: 0x35,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        }, // jge
        seccompiler::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        }, // ret errno
    ];
    program.splice(3..3, deny_x32);
    Ok(Some(program))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrestricted_network_builds_no_filter() {
        assert!(
            program(NetworkMode::Unrestricted, None, false)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn every_restricting_mode_builds_a_filter_that_checks_the_architecture_first() {
        for mode in [
            NetworkMode::Vsock,
            NetworkMode::Restricted,
            NetworkMode::Managed,
        ] {
            let p = program(mode, Some(&ManagedNetwork::default()), false)
                .unwrap()
                .unwrap();
            // ld arch; jeq x86_64; ret kill; then our x32 check.
            assert_eq!(p[2].k, libc::SECCOMP_RET_KILL_PROCESS, "{mode:?}");
            assert_eq!(p[4].k, X32_SYSCALL_BIT, "{mode:?}");
        }
    }
}
