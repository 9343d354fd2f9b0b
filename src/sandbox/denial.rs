//! Did the sandbox, rather than the program, make a sandboxed process fail? The verdict is the
//! `sandboxDenied` of `process/exited` and `process/read` (docs/sandbox.md, "sandboxDenied"): a
//! heuristic on the exit code and the retained output, the same the reference applies.

/// Words in a failed process's output that point at the sandbox (matched lowercased).
const NEEDLES: &[&str] = &[
    "operation not permitted",
    "permission denied",
    "read-only file system",
    "seccomp",
    "sandbox",
    "landlock",
    "failed to write file",
];

/// True if `output` carries a sign of a sandbox denial.
pub fn mentions_sandbox(output: &[u8]) -> bool {
    let text = String::from_utf8_lossy(output).to_lowercase();
    NEEDLES.iter().any(|n| text.contains(n))
}

/// The verdict for an exit with `exit_code`; `output_mentions_sandbox` is asked only when the
/// code leaves the question open (it decodes the retained output).
pub fn sandbox_denied(exit_code: i32, output_mentions_sandbox: impl FnOnce() -> bool) -> bool {
    match exit_code {
        0 => false,
        _ if output_mentions_sandbox() => true,
        2 | 126 | 127 => false,
        159 => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_is_never_a_denial_and_the_output_is_not_even_read() {
        assert!(!sandbox_denied(0, || panic!("not asked")));
    }

    #[test]
    fn a_failure_that_mentions_the_sandbox_is_a_denial_whatever_its_code() {
        for code in [1, 2, 126, 127, 159, 255] {
            assert!(sandbox_denied(code, || true), "{code}");
        }
    }

    #[test]
    fn without_a_mention_only_sigsys_is_a_denial() {
        assert!(
            sandbox_denied(159, || false),
            "128 + SIGSYS: seccomp killed it"
        );
        for code in [1, 2, 126, 127, 137] {
            assert!(!sandbox_denied(code, || false), "{code}");
        }
    }

    #[test]
    fn mentions_are_found_case_insensitively_in_lossy_text() {
        assert!(mentions_sandbox(b"touch: x: Read-only file system\n"));
        assert!(mentions_sandbox(b"\xff\xfe EPERM: Operation Not Permitted"));
        assert!(!mentions_sandbox(b"no such file or directory"));
    }
}
