//! `$CODEX_HOME/environments.toml` (default `~/.codex/environments.toml`): the Codex CLI's list
//! of executors, read here by the same rules so that one file configures both. Each
//! `[[environments]]` entry is either a WebSocket executor (`url`, with an optional
//! `auth_bearer_token` and `connect_timeout_sec`) or a program spoken to over its stdio
//! (`program`, `args`, `env`, `cwd`); both may set `initialize_timeout_sec`. `skills` is accepted
//! and not used here. Unknown keys are refused, as the Codex CLI refuses them.
//!
//! ```toml
//! [[environments]]
//! id = "devbox"
//! url = "wss://devbox.example:8443"
//! auth_bearer_token = "…"
//! ```
//!
//! Errors name the file and the entry, and never quote a token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::status::BearerToken;

/// The file's name inside `$CODEX_HOME`.
pub const FILE_NAME: &str = "environments.toml";

/// The variable naming the Codex home directory.
pub const CODEX_HOME_ENV: &str = "CODEX_HOME";

/// Longest environment id.
const MAX_ID_LEN: usize = 64;

/// Where the Codex CLI looks: `$CODEX_HOME/environments.toml`, else
/// `$HOME/.codex/environments.toml`; `None` when neither variable is set.
pub fn default_path() -> Option<PathBuf> {
    let home = match std::env::var_os(CODEX_HOME_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".codex"),
    };
    Some(home.join(FILE_NAME))
}

/// A problem with the file; its text names the file (and the entry, where there is one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct EnvironmentsError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// How to reach one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket executor.
    WebSocket {
        /// `ws://…` or `wss://…`, trimmed.
        url: String,
        /// `auth_bearer_token`.
        token: Option<BearerToken>,
        /// `connect_timeout_sec`.
        connect_timeout: Option<Duration>,
    },
    /// A program that speaks the protocol on its stdin and stdout.
    Stdio {
        /// `program`, trimmed.
        program: String,
        /// `args`.
        args: Vec<String>,
        /// `env`, added to the inherited environment.
        env: BTreeMap<String, String>,
        /// `cwd`; a relative one is taken from the file's directory.
        cwd: Option<PathBuf>,
    },
}

/// One `[[environments]]` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// `id`.
    pub id: String,
    /// `url` or `program`.
    pub transport: Transport,
    /// `initialize_timeout_sec`.
    pub initialize_timeout: Option<Duration>,
}

/// The whole file, checked.
#[derive(Debug, Clone)]
pub struct Environments {
    /// Where it was read from.
    path: PathBuf,
    /// In file order.
    entries: Vec<Environment>,
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    /// The Codex CLI's default environment (not used here).
    #[serde(rename = "default")]
    _default: Option<String>,
    /// Whether the Codex CLI offers its local environment too (not used here).
    #[serde(rename = "include_local")]
    _include_local: Option<bool>,
    /// The entries.
    #[serde(default)]
    environments: Vec<EntryToml>,
}

/// One entry as written: the ten fields of the Codex CLI's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryToml {
    /// The name `--env` takes.
    id: String,
    /// A WebSocket executor.
    url: Option<String>,
    /// Or a program spoken to over its stdio.
    program: Option<String>,
    /// The program's arguments.
    args: Option<Vec<String>>,
    /// Variables added to the program's environment.
    env: Option<BTreeMap<String, String>>,
    /// The program's working directory.
    cwd: Option<PathBuf>,
    /// Sent as `Authorization: Bearer` to `url`.
    auth_bearer_token: Option<String>,
    /// Limit on one connection to `url`.
    connect_timeout_sec: Option<f64>,
    /// Limit on the first `initialize`.
    initialize_timeout_sec: Option<f64>,
    /// Skills the environment requires (the Codex CLI's; not used here).
    #[serde(rename = "skills")]
    _skills: Option<toml::Value>,
}

impl Environments {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, EnvironmentsError> {
        let text = std::fs::read_to_string(path).map_err(|e| EnvironmentsError {
            path: path.to_path_buf(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Checks `text`, the contents of the file at `path` (relative `cwd`s are taken from its
    /// directory).
    pub fn parse(text: &str, path: &Path) -> Result<Self, EnvironmentsError> {
        let fail = |message: String| EnvironmentsError {
            path: path.to_path_buf(),
            message,
        };
        let file: FileToml = toml::from_str(text).map_err(|e| fail(describe(&e, text)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut entries: Vec<Environment> = Vec::with_capacity(file.environments.len());
        for entry in file.environments {
            let checked = check(entry, base).map_err(fail)?;
            if entries.iter().any(|e| e.id == checked.id) {
                return Err(fail(format!(
                    "environment id `{}` is duplicated",
                    checked.id
                )));
            }
            entries.push(checked);
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The entry `id`; the error lists the ids there are.
    pub fn get(&self, id: &str) -> Result<&Environment, EnvironmentsError> {
        self.entries.iter().find(|e| e.id == id).ok_or_else(|| {
            let known: Vec<_> = self.entries.iter().map(|e| format!("`{}`", e.id)).collect();
            EnvironmentsError {
                path: self.path.clone(),
                message: if known.is_empty() {
                    format!("no environment `{id}`: the file has no [[environments]] entry")
                } else {
                    format!("no environment `{id}` (there are: {})", known.join(", "))
                },
            }
        })
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[Environment] {
        &self.entries
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A TOML error as `message at line L, column C`, from toml's message and span, never its
/// rendering (which quotes the source line, perhaps a token). A message about the token's line
/// is replaced, as it may quote the value.
fn describe(error: &toml::de::Error, text: &str) -> String {
    let Some(span) = error.span() else {
        return error.message().to_string();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or_default();
    let message = if line_text.contains("auth_bearer_token") {
        "invalid auth_bearer_token (its value is not shown)".to_string()
    } else {
        error.message().trim().to_string()
    };
    format!("{message} at line {line}, column {column}")
}

/// Checks one entry against the Codex CLI's rules.
fn check(entry: EntryToml, base: &Path) -> Result<Environment, String> {
    let id = entry.id;
    check_id(&id)?;
    if entry.program.is_none()
        && (entry.args.is_some() || entry.env.is_some() || entry.cwd.is_some())
    {
        return Err(format!(
            "environment `{id}` args, env, and cwd require program"
        ));
    }
    if entry.url.is_none() && entry.auth_bearer_token.is_some() {
        return Err(format!("environment `{id}` auth_bearer_token requires url"));
    }
    if entry.url.is_none() && entry.connect_timeout_sec.is_some() {
        return Err(format!(
            "environment `{id}` connect_timeout_sec requires url"
        ));
    }
    let seconds = |name: &str, value: Option<f64>| -> Result<Option<Duration>, String> {
        value
            .map(|s| {
                Duration::try_from_secs_f64(s).map_err(|_| {
                    format!("environment `{id}` {name} must be a non-negative number of seconds")
                })
            })
            .transpose()
    };
    let connect_timeout = seconds("connect_timeout_sec", entry.connect_timeout_sec)?;
    let initialize_timeout = seconds("initialize_timeout_sec", entry.initialize_timeout_sec)?;
    let transport = match (entry.url, entry.program) {
        (Some(url), None) => {
            let url = url.trim().to_string();
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(format!(
                    "environment `{id}` url must start with ws:// or wss://"
                ));
            }
            let token = entry
                .auth_bearer_token
                .map(|t| {
                    BearerToken::new(t)
                        .map_err(|e| format!("environment `{id}` auth_bearer_token: {e}"))
                })
                .transpose()?;
            Transport::WebSocket {
                url,
                token,
                connect_timeout,
            }
        }
        (None, Some(program)) => {
            let program = program.trim().to_string();
            if program.is_empty() {
                return Err(format!("environment `{id}` program cannot be empty"));
            }
            Transport::Stdio {
                program,
                args: entry.args.unwrap_or_default(),
                env: entry.env.unwrap_or_default(),
                cwd: entry
                    .cwd
                    .filter(|c| !c.as_os_str().is_empty())
                    .map(|c| base.join(c)),
            }
        }
        _ => {
            return Err(format!(
                "environment `{id}` must set exactly one of url or program"
            ));
        }
    };
    Ok(Environment {
        id,
        transport,
        initialize_timeout,
    })
}

/// An id: 1 to 64 ASCII letters, digits, `-` or `_`; not `local` or `none` (the Codex CLI's own).
fn check_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("an environment id is empty".into());
    }
    if id == "local" || id.eq_ignore_ascii_case("none") {
        return Err(format!("environment id `{id}` is reserved"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "environment id `{id}` is longer than {MAX_ID_LEN} characters"
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "environment id `{id}` may contain only ASCII letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Environments, String> {
        Environments::parse(text, Path::new("/home/u/.codex/environments.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_file_with_every_field_parses() {
        let envs = parse(
            r#"
default = "devbox"
include_local = true

[[environments]]
id = "devbox"
url = " wss://devbox.example:8443 "
auth_bearer_token = "tok\n"
connect_timeout_sec = 2.5
initialize_timeout_sec = 7
skills = { required = ["a"] }

[[environments]]
id = "ssh-dev"
program = "ssh"
args = ["dev", "codex exec-server --listen stdio"]
env = { CODEX_LOG = "debug" }
cwd = "work"
"#,
        )
        .unwrap();
        let devbox = envs.get("devbox").unwrap();
        assert_eq!(
            devbox.transport,
            Transport::WebSocket {
                url: "wss://devbox.example:8443".into(),
                token: Some(BearerToken::new("tok").unwrap()),
                connect_timeout: Some(Duration::from_millis(2500)),
            }
        );
        assert_eq!(devbox.initialize_timeout, Some(Duration::from_secs(7)));
        let Transport::Stdio {
            program,
            args,
            env,
            cwd,
        } = &envs.get("ssh-dev").unwrap().transport
        else {
            panic!("ssh-dev is a program");
        };
        assert_eq!(program, "ssh");
        assert_eq!(args.len(), 2);
        assert_eq!(env["CODEX_LOG"], "debug");
        assert_eq!(cwd.as_deref(), Some(Path::new("/home/u/.codex/work")));
        let missing = envs.get("nope").unwrap_err().to_string();
        assert!(
            missing.contains("no environment `nope` (there are: `devbox`, `ssh-dev`)"),
            "{missing}"
        );
        assert!(
            missing.starts_with("/home/u/.codex/environments.toml: "),
            "{missing}"
        );
    }

    #[test]
    fn a_token_without_url_is_refused_with_the_reference_text() {
        let err = parse(
            "[[environments]]\nid = \"box\"\nprogram = \"p\"\nauth_bearer_token = \"sekrit\"\n",
        )
        .unwrap_err();
        assert_eq!(
            err,
            "/home/u/.codex/environments.toml: environment `box` auth_bearer_token requires url"
        );
    }

    #[test]
    fn bad_entries_are_refused_naming_the_file_and_the_entry() {
        let cases = [
            (
                "[[environments]]\nid = \"a\"\nurl = \"ws://h\"\ncolour = 1\n",
                "unknown field `colour`",
            ),
            ("colour = 1\n", "unknown field `colour`"),
            ("[[environments]]\nurl = \"ws://h\"\n", "missing field `id`"),
            (
                "[[environments]]\nid = \"a\"\n",
                "environment `a` must set exactly one of url or program",
            ),
            (
                "[[environments]]\nid = \"a\"\nurl = \"ws://h\"\nprogram = \"p\"\n",
                "environment `a` must set exactly one of url or program",
            ),
            (
                "[[environments]]\nid = \"a\"\nurl = \"ws://h\"\nargs = []\n",
                "environment `a` args, env, and cwd require program",
            ),
            (
                "[[environments]]\nid = \"a\"\nprogram = \"p\"\nconnect_timeout_sec = 1\n",
                "environment `a` connect_timeout_sec requires url",
            ),
            (
                "[[environments]]\nid = \"a\"\nurl = \"http://h\"\n",
                "environment `a` url must start with ws:// or wss://",
            ),
            (
                "[[environments]]\nid = \"a\"\nprogram = \"  \"\n",
                "environment `a` program cannot be empty",
            ),
            (
                "[[environments]]\nid = \"a\"\nurl = \"ws://h\"\ninitialize_timeout_sec = -1\n",
                "environment `a` initialize_timeout_sec must be a non-negative",
            ),
            (
                "[[environments]]\nid = \"local\"\nurl = \"ws://h\"\n",
                "environment id `local` is reserved",
            ),
            (
                "[[environments]]\nid = \"a b\"\nurl = \"ws://h\"\n",
                "environment id `a b` may contain only",
            ),
            (
                "[[environments]]\nid = \"\"\nurl = \"ws://h\"\n",
                "an environment id is empty",
            ),
            (
                "[[environments]]\nid = \"a\"\nurl = \"ws://h\"\n[[environments]]\nid = \"a\"\nurl = \"ws://i\"\n",
                "environment id `a` is duplicated",
            ),
            (
                "[[environments]]\nid = \"a\"\nurl = \"ws://h\"\nauth_bearer_token = \"\"\n",
                "environment `a` auth_bearer_token: the bearer token is empty",
            ),
            ("[[environments]]\nid = 5\n", "invalid type"),
            ("[[environments\n", "line 1"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.starts_with("/home/u/.codex/environments.toml: "),
                "{text}: {err}"
            );
            assert!(err.contains(want), "{text}: got {err}, want {want}");
        }
    }

    #[test]
    fn a_malformed_token_line_is_reported_without_its_value() {
        for text in [
            "[[environments]]\nid = \"a\"\nurl = \"ws://h\"\nauth_bearer_token = 12345678\n",
            "[[environments]]\nid = \"a\"\nurl = \"ws://h\"\nauth_bearer_token = \"12345678\" junk\n",
        ] {
            let err = parse(text).unwrap_err();
            assert!(!err.contains("12345678"), "{err}");
            assert!(err.contains("auth_bearer_token"), "{err}");
        }
    }
}
