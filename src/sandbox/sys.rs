//! The system calls of the sandbox wrapper, each a thin safe fn over `libc`. The only `unsafe` of
//! `sandbox/`. Called only from `codex-linux-sandbox` (never from the server or the test process).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn check(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// The Landlock ABI version of the running kernel; 0 when Landlock is missing or disabled.
pub fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attr and size 0, the call only returns the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 { 0 } else { v as i32 }
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } as libc::c_long)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability: the bounding set, ambient set, and the effective, permitted and
/// inheritable sets; then verifies with `capget` that nothing effective or permitted is left.
pub fn drop_all_capabilities() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only. EINVAL marks the end of known capabilities.
    unsafe {
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                // EPERM: no CAP_SETPCAP, so nothing to drop from the bounding set.
                if err.raw_os_error() != Some(libc::EPERM) {
                    return Err(err);
                }
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array of the v3 layout, as capset expects.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })?;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: as above; capget writes into the two-element array.
    check(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    if data.iter().any(|d| d.effective != 0 || d.permitted != 0) {
        return Err(io::Error::other(
            "Linux sandbox retained effective or permitted capabilities",
        ));
    }
    Ok(())
}

/// Enters a private mount namespace: directly as root, else inside a new user namespace that maps
/// the caller's uid and gid onto themselves.
pub fn enter_mount_namespace() -> io::Result<()> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid, euid) = unsafe { (libc::getuid(), libc::getgid(), libc::geteuid()) };
    if euid == 0 {
        // SAFETY: unshare with a flag word.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } == 0 {
            return make_mounts_private();
        }
    }
    // SAFETY: unshare with a flag word.
    check(unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } as libc::c_long)?;
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    make_mounts_private()
}

fn make_mounts_private() -> io::Result<()> {
    let root = cstring(Path::new("/"))?;
    // SAFETY: valid C strings or null for the unused arguments.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    } as libc::c_long)
}

/// Bind-mounts `path` onto itself and remounts it read-only, keeping the flags the kernel locks.
pub fn bind_read_only(path: &Path) -> io::Result<()> {
    let c = cstring(path)?;
    // SAFETY: valid C strings or null for the unused arguments.
    check(unsafe {
        libc::mount(
            c.as_ptr(),
            c.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    } as libc::c_long)?;
    // SAFETY: statvfs writes into the zeroed struct we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) } as libc::c_long)?;
    let mut flags =
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    for (st_flag, ms_flag) in [
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    // SAFETY: valid C strings or null for the unused arguments.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            c.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    } as libc::c_long)
}

/// Closes every fd from 3 up.
pub fn close_fds_above_stderr() -> io::Result<()> {
    // SAFETY: close_range on a range of fds; no memory involved.
    check(unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) })
}
