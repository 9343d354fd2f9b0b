//! The wrapper's steps against the recording fake kernel: order, the mount → split-grant fallback,
//! fail-closed refusals and error variants. No privileges needed; nothing is confined.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use landlock::{ABI, Access as _, AccessFs, AccessNet, BitFlags};
use rustix::fs::StatVfsMountFlags;
use rustix::mount::MountFlags;
use rustix::thread::CapabilitySet;

use super::super::policy::{ManagedNetwork, NetworkMode, ResolvedEntry, ResolvedPolicy};
use super::super::sys::fake::{Call, FakeKernel, Op};
use super::*;
use crate::protocol::sandbox::Access;

const EPERM: i32 = libc::EPERM;

/// A canonical directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let d = std::env::temp_dir().join(format!("codex-wrapper-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&d).unwrap();
        Self(fs::canonicalize(&d).unwrap())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A workspace `w` with `w/.git` and `w/src`: write in `w`, `.git` read-only, network restricted.
fn workspace() -> (TempDir, ResolvedPolicy) {
    let dir = TempDir::new();
    let w = dir.0.clone();
    fs::create_dir(w.join(".git")).unwrap();
    fs::create_dir(w.join("src")).unwrap();
    let policy = policy(
        vec![(w.clone(), Access::Write), (w.join(".git"), Access::Read)],
        NetworkMode::Restricted,
    );
    (dir, policy)
}

fn policy(entries: Vec<(PathBuf, Access)>, network: NetworkMode) -> ResolvedPolicy {
    ResolvedPolicy {
        file_system: Some(
            entries
                .into_iter()
                .map(|(path, access)| ResolvedEntry { path, access })
                .collect(),
        ),
        network,
        managed_network: None,
    }
}

fn unconfined_fs(network: NetworkMode, managed: Option<ManagedNetwork>) -> ResolvedPolicy {
    ResolvedPolicy {
        file_system: None,
        network,
        managed_network: managed,
    }
}

fn with_mounts() -> ApplyOptions {
    ApplyOptions {
        allow_mount_namespace: true,
        ..ApplyOptions::default()
    }
}

/// The one ruleset the wrapper enforced.
fn ruleset(kernel: &FakeKernel) -> LandlockRuleset {
    let rulesets = kernel.rulesets();
    assert_eq!(rulesets.len(), 1, "one restrict_self: {:?}", kernel.calls());
    rulesets.into_iter().next().unwrap()
}

/// The rights the enforced ruleset grants beneath exactly `path`.
fn rule(kernel: &FakeKernel, path: &Path) -> Option<BitFlags<AccessFs>> {
    ruleset(kernel)
        .paths
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, a)| *a)
}

const V: ABI = LANDLOCK_ABI;

/// The confinement steps after the file-system plan, in order.
const CONFINE: [Op; 5] = [
    Op::SetNoNewPrivs,
    Op::DropCapabilities,
    Op::Capabilities,
    Op::LandlockRestrictSelf,
    Op::LoadSeccomp,
];

fn ops(first: &[Op], rest: &[Op]) -> Vec<Op> {
    first.iter().chain(rest).copied().collect()
}

#[test]
fn mount_layer_mounts_the_carve_out_read_only_then_confines_in_order() {
    let (w, policy) = workspace();
    let git = w.0.join(".git");
    let kernel = FakeKernel::default();
    apply_with(&kernel, &policy, with_mounts()).unwrap();
    let calls = kernel.calls();
    assert_eq!(calls[0], Call::LandlockAbi, "the ABI is probed first");
    assert_eq!(
        calls[1..5],
        [
            Call::EnterMountNamespace,
            Call::BindMount(git.clone()),
            Call::MountFlags(git.clone()),
            Call::Remount(
                git,
                MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV
            ),
        ]
    );
    assert_eq!(kernel.ops()[4..], CONFINE);
    assert_eq!(
        rule(&kernel, &w.0),
        Some(AccessFs::from_all(V)),
        "one plain write rule"
    );
    assert_eq!(rule(&kernel, &w.0.join("src")), None, "no split grants");
}

/// Runs the workspace policy with `kernel`; asserts the split-grant layer was used: the root is
/// pass-through (read only), its other entries get the write grant, `.git` is read-only.
fn assert_falls_back_to_split_grants(kernel: &FakeKernel, options: ApplyOptions) -> TempDir {
    let (w, policy) = workspace();
    apply_with(kernel, &policy, options).unwrap();
    assert_eq!(
        rule(kernel, &w.0),
        Some(AccessFs::from_read(V)),
        "pass-through"
    );
    assert_eq!(rule(kernel, &w.0.join("src")), Some(AccessFs::from_all(V)));
    assert_eq!(
        rule(kernel, &w.0.join(".git")),
        Some(AccessFs::from_read(V))
    );
    w
}

#[test]
fn refused_mount_namespace_falls_back_to_split_grants_and_still_confines() {
    let kernel = FakeKernel::default().fail(Op::EnterMountNamespace, EPERM);
    assert_falls_back_to_split_grants(&kernel, with_mounts());
    assert_eq!(kernel.ops(), ops(&[Op::EnterMountNamespace], &CONFINE));
}

#[test]
fn refused_bind_mount_falls_back_to_split_grants_without_remounting() {
    let kernel = FakeKernel::default().fail(Op::BindMount, EPERM);
    assert_falls_back_to_split_grants(&kernel, with_mounts());
    assert_eq!(
        kernel.ops(),
        ops(&[Op::EnterMountNamespace, Op::BindMount], &CONFINE)
    );
}

#[test]
fn refused_read_only_remount_falls_back_to_split_grants() {
    let kernel = FakeKernel::default().fail(Op::Remount, EPERM);
    assert_falls_back_to_split_grants(&kernel, with_mounts());
    assert_eq!(
        kernel.ops(),
        ops(
            &[
                Op::EnterMountNamespace,
                Op::BindMount,
                Op::MountFlags,
                Op::Remount
            ],
            &CONFINE
        )
    );
}

#[test]
fn second_refused_bind_mount_falls_back_for_every_carve_out() {
    let (w, mut policy) = workspace();
    fs::create_dir(w.0.join(".codex")).unwrap();
    policy.file_system.as_mut().unwrap().push(ResolvedEntry {
        path: w.0.join(".codex"),
        access: Access::Read,
    });
    let kernel = FakeKernel::default().fail_nth(Op::BindMount, 1, EPERM);
    apply_with(&kernel, &policy, with_mounts()).unwrap();
    let binds: Vec<Call> = kernel
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::BindMount(_)))
        .collect();
    assert_eq!(
        binds,
        [
            Call::BindMount(w.0.join(".codex")),
            Call::BindMount(w.0.join(".git"))
        ]
    );
    assert_eq!(
        rule(&kernel, &w.0),
        Some(AccessFs::from_read(V)),
        "pass-through"
    );
    assert_eq!(
        rule(&kernel, &w.0.join(".codex")),
        Some(AccessFs::from_read(V))
    );
    assert_eq!(
        rule(&kernel, &w.0.join(".git")),
        Some(AccessFs::from_read(V))
    );
}

#[test]
fn no_mount_namespace_option_uses_split_grants_without_trying_one() {
    let kernel = FakeKernel::default();
    assert_falls_back_to_split_grants(&kernel, ApplyOptions::default());
    assert_eq!(kernel.ops(), CONFINE);
}

#[test]
fn policy_without_read_only_carve_outs_enters_no_mount_namespace() {
    let w = TempDir::new();
    let policy = policy(vec![(w.0.clone(), Access::Write)], NetworkMode::Restricted);
    let kernel = FakeKernel::default();
    apply_with(&kernel, &policy, with_mounts()).unwrap();
    assert_eq!(kernel.ops(), CONFINE);
    assert_eq!(rule(&kernel, &w.0), Some(AccessFs::from_all(V)));
}

#[test]
fn unsplit_read_carve_outs_keep_the_plain_write_grant_and_mount_nothing() {
    let (w, policy) = workspace();
    let kernel = FakeKernel::default();
    let options = ApplyOptions {
        unsplit_read_carve_outs: true,
        ..with_mounts()
    };
    apply_with(&kernel, &policy, options).unwrap();
    assert_eq!(kernel.ops(), CONFINE);
    assert_eq!(rule(&kernel, &w.0), Some(AccessFs::from_all(V)));
    assert_eq!(rule(&kernel, &w.0.join("src")), None, "no split grants");
}

#[test]
fn remount_keeps_the_noexec_and_atime_flags_of_the_file_system() {
    let (w, policy) = workspace();
    let mut kernel = FakeKernel::default();
    kernel.mount_flags = StatVfsMountFlags::NOEXEC
        | StatVfsMountFlags::RELATIME
        | StatVfsMountFlags::NOSUID
        | StatVfsMountFlags::SYNCHRONOUS;
    apply_with(&kernel, &policy, with_mounts()).unwrap();
    let base = MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    assert!(
        kernel.calls().contains(&Call::Remount(
            w.0.join(".git"),
            base | MountFlags::NOEXEC | MountFlags::RELATIME
        )),
        "{:?}",
        kernel.calls()
    );
}

#[test]
fn remount_flags_map_each_kept_statvfs_flag() {
    let base = MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    assert_eq!(read_only_remount_flags(StatVfsMountFlags::empty()), base);
    for (st, ms) in [
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ] {
        assert_eq!(read_only_remount_flags(st), base | ms, "{st:?}");
    }
}

#[test]
fn confined_file_system_without_landlock_is_refused_before_any_change() {
    let (_w, policy) = workspace();
    let kernel = FakeKernel::with_abi(0);
    let err = apply_with(&kernel, &policy, with_mounts()).unwrap_err();
    assert!(matches!(err, WrapperError::NoLandlock), "{err}");
    assert_eq!(kernel.calls(), [Call::LandlockAbi]);
}

#[test]
fn simulated_missing_landlock_is_refused_without_asking_the_kernel() {
    let (_w, policy) = workspace();
    let kernel = FakeKernel::default();
    let options = ApplyOptions {
        simulate_no_landlock: true,
        ..with_mounts()
    };
    let err = apply_with(&kernel, &policy, options).unwrap_err();
    assert!(matches!(err, WrapperError::NoLandlock), "{err}");
    assert_eq!(kernel.calls(), []);
}

#[test]
fn managed_network_below_landlock_abi_4_is_refused_before_any_change() {
    let w = TempDir::new();
    for policy in [
        unconfined_fs(NetworkMode::Managed, None),
        policy(vec![(w.0.clone(), Access::Write)], NetworkMode::Managed),
    ] {
        let kernel = FakeKernel::with_abi(3);
        let err = apply_with(&kernel, &policy, with_mounts()).unwrap_err();
        assert!(matches!(err, WrapperError::NoLandlockNet(3)), "{err}");
        assert_eq!(kernel.calls(), [Call::LandlockAbi]);
    }
}

#[test]
fn managed_network_handles_tcp_and_allows_connect_to_the_loopback_ports_only() {
    let managed = ManagedNetwork {
        loopback_ports: vec![3128, 8080],
        ..ManagedNetwork::default()
    };
    let kernel = FakeKernel::with_abi(4);
    apply_with(
        &kernel,
        &unconfined_fs(NetworkMode::Managed, Some(managed.clone())),
        ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(
        ruleset(&kernel),
        LandlockRuleset {
            handled_net: AccessNet::ConnectTcp | AccessNet::BindTcp,
            connect_ports: vec![3128, 8080],
            ..LandlockRuleset::default()
        },
        "no file-system rights handled, no scopes"
    );
    assert_eq!(kernel.ops(), CONFINE);

    let binding = ManagedNetwork {
        allow_local_binding: true,
        ..managed
    };
    let kernel = FakeKernel::with_abi(4);
    apply_with(
        &kernel,
        &unconfined_fs(NetworkMode::Managed, Some(binding)),
        ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(
        ruleset(&kernel).handled_net,
        BitFlags::from(AccessNet::ConnectTcp),
        "binding allowed: bind is not handled"
    );
}

#[test]
fn unconfined_file_system_and_network_load_neither_landlock_nor_seccomp() {
    let kernel = FakeKernel::with_abi(0);
    apply_with(
        &kernel,
        &unconfined_fs(NetworkMode::Unrestricted, None),
        with_mounts(),
    )
    .unwrap();
    assert_eq!(
        kernel.ops(),
        [Op::SetNoNewPrivs, Op::DropCapabilities, Op::Capabilities]
    );
}

#[test]
fn restricted_network_alone_loads_seccomp_without_landlock() {
    let kernel = FakeKernel::with_abi(0);
    apply_with(
        &kernel,
        &unconfined_fs(NetworkMode::Restricted, None),
        with_mounts(),
    )
    .unwrap();
    assert_eq!(
        kernel.ops(),
        [
            Op::SetNoNewPrivs,
            Op::DropCapabilities,
            Op::Capabilities,
            Op::LoadSeccomp
        ]
    );
}

#[test]
fn landlock_abi_below_3_gets_truncate_denied_by_a_longer_seccomp_filter() {
    let (_w, policy) = workspace();
    let filter_len = |abi| {
        let kernel = FakeKernel::with_abi(abi);
        apply_with(&kernel, &policy, with_mounts()).unwrap();
        kernel
            .calls()
            .iter()
            .find_map(|c| match c {
                Call::LoadSeccomp(n) => Some(*n),
                _ => None,
            })
            .unwrap()
    };
    assert!(
        filter_len(2) > filter_len(3),
        "truncate rules added below ABI 3"
    );
    assert_eq!(filter_len(3), filter_len(7));
}

#[test]
fn files_get_file_rights_and_vanished_paths_get_no_rule() {
    let w = TempDir::new();
    let file = w.0.join("a.txt");
    fs::write(&file, "x").unwrap();
    let gone = w.0.join("gone");
    let policy = policy(
        vec![(file.clone(), Access::Write), (gone.clone(), Access::Write)],
        NetworkMode::Restricted,
    );
    let kernel = FakeKernel::default();
    apply_with(&kernel, &policy, ApplyOptions::default()).unwrap();
    let file_rights = AccessFs::from_all(V) & AccessFs::from_file(V);
    assert_eq!(rule(&kernel, &file), Some(file_rights));
    assert_ne!(
        file_rights,
        AccessFs::from_all(V),
        "directory rights left out"
    );
    assert_eq!(rule(&kernel, &gone), None);
    let rs = ruleset(&kernel);
    assert_eq!(rs.handled_fs, AccessFs::from_all(V));
    assert!(rs.scoped);
    assert!(rs.handled_net.is_empty(), "restricted network is seccomp's");
}

/// Each confinement step's failure: its error variant, and nothing after it is attempted.
#[test]
fn each_failing_step_refuses_the_run_with_its_error_and_stops_there() {
    type Check = fn(&WrapperError) -> bool;
    let cases: [(Op, Check); 5] = [
        (Op::SetNoNewPrivs, |e| {
            matches!(e, WrapperError::NoNewPrivs(_))
        }),
        (Op::DropCapabilities, |e| {
            matches!(e, WrapperError::Capabilities(_))
        }),
        (Op::Capabilities, |e| {
            matches!(e, WrapperError::Capabilities(_))
        }),
        (Op::LandlockRestrictSelf, |e| {
            matches!(e, WrapperError::Landlock(_))
        }),
        (Op::LoadSeccomp, |e| {
            matches!(e, WrapperError::SeccompLoad(_))
        }),
    ];
    for (i, (op, check)) in cases.into_iter().enumerate() {
        let (_w, policy) = workspace();
        let kernel = FakeKernel::default().fail(op, EPERM);
        let err = apply_with(&kernel, &policy, ApplyOptions::default()).unwrap_err();
        assert!(check(&err), "{op:?}: {err:?}");
        assert!(err.to_string().contains("Operation not permitted"), "{err}");
        assert_eq!(kernel.ops(), CONFINE[..=i], "{op:?}");
    }
}

#[test]
fn retained_capabilities_refuse_the_run_before_landlock() {
    let (_w, policy) = workspace();
    for caps in [
        |k: &mut FakeKernel| k.capabilities.permitted = CapabilitySet::SYS_ADMIN,
        |k: &mut FakeKernel| k.capabilities.effective = CapabilitySet::DAC_OVERRIDE,
    ] {
        let mut kernel = FakeKernel::default();
        caps(&mut kernel);
        let err = apply_with(&kernel, &policy, ApplyOptions::default()).unwrap_err();
        assert!(matches!(err, WrapperError::CapabilitiesRetained), "{err}");
        assert_eq!(kernel.ops(), CONFINE[..3]);
    }
    let mut kernel = FakeKernel::default();
    kernel.capabilities.inheritable = CapabilitySet::CHOWN;
    apply_with(&kernel, &policy, ApplyOptions::default())
        .expect("only effective and permitted capabilities are checked");
}

#[test]
fn ruleset_not_enforced_by_the_kernel_refuses_the_run_before_seccomp() {
    let (_w, policy) = workspace();
    let mut kernel = FakeKernel::default();
    kernel.not_enforced = true;
    let err = apply_with(&kernel, &policy, ApplyOptions::default()).unwrap_err();
    assert!(matches!(err, WrapperError::NotEnforced), "{err}");
    assert_eq!(kernel.ops(), CONFINE[..4]);
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[test]
fn exec_closes_inherited_descriptors_then_execs_the_command_with_its_arg0() {
    let kernel = FakeKernel::default();
    let err = exec_with(
        &kernel,
        os(&["sh", "-c", "exit 3"]),
        Some("login".into()),
        None,
    )
    .unwrap_err();
    assert_eq!(
        kernel.calls(),
        [
            Call::CloseFdsAboveStderr,
            Call::Exec {
                program: "sh".into(),
                args: os(&["-c", "exit 3"]),
                arg0: Some("login".into()),
            }
        ]
    );
    // The fake never replaces the test process: exec "fails", and that is the Exec error.
    match err {
        WrapperError::Exec { program, source } => {
            assert_eq!(program, "sh");
            assert_eq!(source.raw_os_error(), Some(libc::ENOEXEC));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn exec_is_not_attempted_when_descriptors_cannot_be_closed() {
    let kernel = FakeKernel::default().fail(Op::CloseFdsAboveStderr, libc::ENOSYS);
    let err = exec_with(&kernel, os(&["true"]), None, None).unwrap_err();
    assert!(matches!(err, WrapperError::CloseFds(_)), "{err}");
    assert_eq!(kernel.ops(), [Op::CloseFdsAboveStderr]);
}

#[test]
fn empty_command_is_refused_before_any_call() {
    let kernel = FakeKernel::default();
    let err = exec_with(&kernel, Vec::new(), None, None).unwrap_err();
    assert!(matches!(err, WrapperError::Args(_)), "{err}");
    assert_eq!(kernel.calls(), []);
}

#[test]
fn pid_namespace_comes_before_every_other_change() {
    let (_w, policy) = workspace();
    let kernel = FakeKernel::default();
    let options = ApplyOptions {
        isolate_pids: true,
        ..with_mounts()
    };
    apply_with(&kernel, &policy, options).unwrap();
    let ops = kernel.ops();
    assert_eq!(ops[0], Op::IsolatePids, "{ops:?}");
    assert_eq!(ops[1], Op::EnterMountNamespace, "{ops:?}");
    assert_eq!(ops[2], Op::MountProc, "the namespace's /proc: {ops:?}");
    assert_eq!(ops.iter().filter(|o| **o == Op::IsolatePids).count(), 1);
}

#[test]
fn refused_pid_namespace_refuses_the_run_before_any_other_change() {
    let (_w, policy) = workspace();
    let kernel = FakeKernel::default().fail(Op::IsolatePids, libc::EPERM);
    let options = ApplyOptions {
        isolate_pids: true,
        ..with_mounts()
    };
    let err = apply_with(&kernel, &policy, options).unwrap_err();
    assert!(matches!(err, WrapperError::PidNamespace(_)), "{err}");
    assert_eq!(kernel.ops(), [Op::IsolatePids]);
}

#[test]
fn no_pid_namespace_unless_asked() {
    let (_w, policy) = workspace();
    let kernel = FakeKernel::default();
    apply_with(&kernel, &policy, with_mounts()).unwrap();
    assert!(!kernel.ops().contains(&Op::IsolatePids));
    assert!(!kernel.ops().contains(&Op::MountProc));
}

#[test]
fn a_refused_proc_mount_changes_nothing_else() {
    let (_w, policy) = workspace();
    let kernel = FakeKernel::default().fail(Op::MountProc, libc::EPERM);
    let options = ApplyOptions {
        isolate_pids: true,
        ..with_mounts()
    };
    apply_with(&kernel, &policy, options).unwrap();
    // Still the mount layer: the carve-out was bind-mounted after the refused proc mount.
    assert!(kernel.ops().contains(&Op::Remount), "{:?}", kernel.ops());
}

#[test]
fn no_mount_namespace_is_entered_only_for_proc() {
    let (_w, policy) = workspace();
    let kernel = FakeKernel::default();
    let options = ApplyOptions {
        isolate_pids: true,
        ..ApplyOptions::default()
    };
    apply_with(&kernel, &policy, options).unwrap();
    let ops = kernel.ops();
    assert!(
        !ops.contains(&Op::EnterMountNamespace) && !ops.contains(&Op::MountProc),
        "{ops:?}"
    );
}

#[test]
fn refused_pid_namespace_is_refused_before_landlock_checks_too() {
    // A kernel without Landlock refuses first: nothing is forked for a run that cannot happen.
    let (_w, policy) = workspace();
    let kernel = FakeKernel::with_abi(0);
    let options = ApplyOptions {
        isolate_pids: true,
        ..with_mounts()
    };
    let err = apply_with(&kernel, &policy, options).unwrap_err();
    assert!(matches!(err, WrapperError::NoLandlock), "{err}");
    assert_eq!(kernel.ops(), []);
}

#[test]
fn a_sent_command_decodes_as_it_was_encoded_and_a_damaged_one_not_at_all() {
    use std::os::unix::ffi::OsStringExt as _;
    let argv = os(&["sh", "-c", "echo \"$X\""]);
    let env = vec![
        (OsString::from("X"), OsString::from("a=b c")),
        (
            OsString::from("RAW"),
            OsString::from_vec(vec![0xff, b'\n', 0]),
        ),
    ];
    let bytes = encode_command(&argv, Some(OsStr::new("login")), &env);
    assert_eq!(
        decode_command(&bytes),
        Some((argv.clone(), Some(OsString::from("login")), env.clone()))
    );
    let plain = encode_command(&argv, None, &[]);
    assert_eq!(
        decode_command(&plain),
        Some((argv.clone(), None, Vec::new()))
    );
    // Cut anywhere, or followed by more: refused, never a partial command.
    for cut in 0..bytes.len() {
        assert_eq!(decode_command(&bytes[..cut]), None, "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(decode_command(&longer), None);
    // No program: refused.
    assert_eq!(decode_command(&encode_command(&[], None, &env)), None);
}
