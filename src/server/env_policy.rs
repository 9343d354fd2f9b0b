//! Builds a child's environment from the server's own, a request's `envPolicy` and `env`, in the
//! documented order: inherit → default excludes → `exclude` → `set` → `includeOnly` → `env`
//! overlay → drop the server's own credentials (always, last).

use std::collections::BTreeMap;
use std::ffi::OsString;

use crate::protocol::process::{EnvInherit, EnvPolicy};

/// Names kept by `inherit: core`.
const CORE_VARS: &[&str] = &[
    "HOME", "LANG", "LC_ALL", "LC_CTYPE", "LOGNAME", "PATH", "SHELL", "TMPDIR", "USER", "TEMP",
    "TMP",
];

/// Dropped unless `ignoreDefaultExcludes`.
const DEFAULT_EXCLUDES: &[&str] = &["*KEY*", "*SECRET*", "*TOKEN*"];

/// Never passed to a child, whatever the request says: the server's own credentials.
pub const SERVER_CREDENTIALS: &[&str] = &[
    "NODE_REPL_AUTH_TOKEN",
    "OPENAI_IDENTITY_TOKEN_FILE",
    "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN",
    "OPENAI_FEDERATION_RULE_ID",
    "OPENAI_WORKLOAD_IDENTITY_CONTEXT",
    "CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE",
];

/// The child's environment. Without a policy, `env` is the whole environment.
pub fn build(
    server_env: impl IntoIterator<Item = (OsString, OsString)>,
    policy: Option<&EnvPolicy>,
    env: &BTreeMap<String, String>,
) -> Vec<(OsString, OsString)> {
    let mut vars: BTreeMap<OsString, OsString> = BTreeMap::new();
    if let Some(policy) = policy {
        vars = match policy.inherit {
            EnvInherit::All => server_env.into_iter().collect(),
            EnvInherit::Core => server_env
                .into_iter()
                .filter(|(k, _)| CORE_VARS.iter().any(|c| k == c))
                .collect(),
            EnvInherit::None => BTreeMap::new(),
        };
        if !policy.ignore_default_excludes {
            vars.retain(|k, _| !matches_any(DEFAULT_EXCLUDES, k));
        }
        vars.retain(|k, _| !matches_any(&policy.exclude, k));
        for (k, v) in &policy.set {
            vars.insert(k.into(), v.into());
        }
        if !policy.include_only.is_empty() {
            vars.retain(|k, _| matches_any(&policy.include_only, k));
        }
    }
    for (k, v) in env {
        vars.insert(k.into(), v.into());
    }
    vars.retain(|k, _| !SERVER_CREDENTIALS.iter().any(|c| k == c));
    vars.into_iter().collect()
}

fn matches_any<S: AsRef<str>>(patterns: &[S], name: &OsString) -> bool {
    let name = name.to_string_lossy();
    patterns.iter().any(|p| glob_match(p.as_ref(), &name))
}

/// Case-insensitive glob with `*` (any run) and `?` (one character). Written by hand: it is a
/// dozen lines, and the glob crates match paths (with `/` rules) rather than plain names.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let n: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
    // Iterative matcher with one backtrack point for the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    fn names(v: &[(OsString, OsString)]) -> Vec<String> {
        v.iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn glob_is_case_insensitive_with_star_and_question_mark() {
        assert!(glob_match("*key*", "MY_API_KEY"));
        assert!(glob_match("A?C", "abc"));
        assert!(!glob_match("A?C", "abbc"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn without_policy_env_is_the_whole_environment() {
        let out = build(
            env(&[("HOME", "/h")]),
            None,
            &[("A".into(), "1".into())].into(),
        );
        assert_eq!(names(&out), vec!["A"]);
    }

    #[test]
    fn policy_applies_in_documented_order() {
        let server = env(&[
            ("HOME", "/h"),
            ("PATH", "/bin"),
            ("API_KEY", "k"),
            ("FOO", "f"),
            ("BAR", "b"),
            ("OPENAI_IDENTITY_TOKEN_FILE", "x"),
        ]);
        let policy = EnvPolicy {
            inherit: EnvInherit::All,
            ignore_default_excludes: false,
            exclude: vec!["f?o".into()],
            set: [("MY_TOKEN".into(), "set-wins-over-exclude".into())].into(),
            include_only: vec!["*".into()],
        };
        let overlay = [("OPENAI_IDENTITY_TOKEN_FILE".into(), "y".into())].into();
        let out = build(server, Some(&policy), &overlay);
        assert_eq!(names(&out), vec!["BAR", "HOME", "MY_TOKEN", "PATH"]);
    }

    #[test]
    fn core_inherit_keeps_only_core_names() {
        let policy = EnvPolicy {
            inherit: EnvInherit::Core,
            ..Default::default()
        };
        let out = build(
            env(&[("HOME", "/h"), ("FOO", "f")]),
            Some(&policy),
            &BTreeMap::new(),
        );
        assert_eq!(names(&out), vec!["HOME"]);
    }
}
