//! The connection flags of `codex remote` (`--url`, `--env`, `--token-file`, `--token-env`,
//! `--ca-file`), accepted before or after the subcommand, and how they become a connected
//! [`ExecServerClient`].

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

use crate::client::environments::{self, Environments, Transport};
use crate::client::{
    BearerToken, ClientError, ClientOptions, ExecServerClient, MAX_BEARER_TOKEN_BYTES,
};

/// Name of the environment variable that may give `--url`.
pub const URL_ENV: &str = "CODEX_EXEC_SERVER_URL";

/// How long a connection and the first `initialize` may take, unless the `--env` entry says.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the exec-server is and how to prove who we are. `global`: each may come before or
/// after the subcommand (`codex remote exec --url URL -- cmd`).
#[derive(Debug, Default, clap::Args)]
pub struct ConnectArgs {
    /// The exec-server's URL, `ws://HOST:PORT` or `wss://HOST:PORT`. Default: the
    /// CODEX_EXEC_SERVER_URL variable. Cannot be combined with --env. A bearer token is sent only
    /// over wss:// or to a loopback host (127.0.0.1, ::1, localhost); otherwise the command stops
    /// before connecting.
    #[arg(long, global = true, value_name = "URL", conflicts_with = "env_id")]
    pub url: Option<String>,

    /// Connect to the environment ID of $CODEX_HOME/environments.toml (default
    /// ~/.codex/environments.toml, the Codex CLI's file): its `url` and `auth_bearer_token` (or,
    /// for a `program` entry, that program over its stdio), and its timeouts. An unknown ID, or a
    /// file that the Codex CLI would refuse, is an error naming the file and the entry.
    #[arg(long = "env", global = true, value_name = "ID")]
    pub env_id: Option<String>,

    /// Read the bearer token from this file (surrounding whitespace is ignored). It overrides the
    /// --env entry's auth_bearer_token. Default: no file. An unreadable or empty file stops the
    /// command before connecting; a token the server refuses fails with its 401 answer.
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "token_env")]
    pub token_file: Option<PathBuf>,

    /// Take the bearer token from the environment variable VAR (its name, not the token: the
    /// token stays out of the process list). It overrides the --env entry's auth_bearer_token.
    /// An unset or empty variable stops the command before connecting.
    #[arg(long, global = true, value_name = "VAR")]
    pub token_env: Option<String>,

    /// Also trust the certificate authorities in this PEM file for wss:// (the system's trust
    /// store is always used). Default: the system's store alone. Only for wss:// URLs; an
    /// unreadable file or one without a certificate stops the command before connecting.
    #[arg(long, global = true, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,

    /// Resume the session ID (printed by `exec --detach`) instead of starting a new one: `ps`
    /// lists its processes, `kill` signals them, `exec` starts one more in it. A session lives
    /// on the server while a client is attached, then for the server's detached-session TTL
    /// (--detached-session-ttl-ms, 30 s by default), which each command here starts again.
    /// An unknown or expired ID is an error; a session still attached elsewhere is waited for
    /// up to 5 s. Only for WebSocket servers.
    #[arg(long, global = true, value_name = "ID")]
    pub session: Option<String>,
}

/// Help shown after the flags of `codex remote`: where each setting comes from.
pub const PRECEDENCE_HELP: &str = "\
Where the connection settings come from, first match wins:
  server:  --url URL, then --env ID (its url or program), then $CODEX_EXEC_SERVER_URL
  token:   --token-file PATH or --token-env VAR, then the --env entry's auth_bearer_token,
           else none
  timeouts: the --env entry's connect_timeout_sec / initialize_timeout_sec, else 10 s each
  session: --session ID (from `exec --detach`) resumes that session, else a new one
The connection flags may come before or after the subcommand:
  codex remote --env devbox exec -- make test
  codex remote exec --url wss://host:8443 --token-file ~/.codex/token -- make test
  codex remote --session 4f0c… ps";

/// Connects as the flags say.
pub async fn connect(args: &ConnectArgs) -> anyhow::Result<ExecServerClient> {
    let token = flag_token(args)?;
    let mut options = ClientOptions {
        ca_file: args.ca_file.clone(),
        connect_timeout: Some(DEFAULT_TIMEOUT),
        initialize_timeout: Some(DEFAULT_TIMEOUT),
        ..ClientOptions::default()
    };
    let url = match (&args.url, &args.env_id) {
        (Some(url), _) => url.clone(),
        (None, Some(id)) => {
            let entry = environment(id)?;
            if let Some(limit) = entry.initialize_timeout {
                options.initialize_timeout = Some(limit);
            }
            match entry.transport {
                Transport::WebSocket {
                    url,
                    token: entry_token,
                    connect_timeout,
                } => {
                    options.bearer_token = entry_token;
                    if let Some(limit) = connect_timeout {
                        options.connect_timeout = Some(limit);
                    }
                    url
                }
                Transport::Stdio {
                    program,
                    args: program_args,
                    env,
                    cwd,
                } => {
                    if args.session.is_some() {
                        bail!(
                            "--session: environment `{id}` is a program spoken to over its \
                             stdio, which starts a new server each time: there is no session to \
                             resume"
                        );
                    }
                    if token.is_some() || args.ca_file.is_some() {
                        bail!(
                            "environment `{id}` is a program spoken to over its stdio: \
                             --token-file, --token-env and --ca-file are for WebSocket servers"
                        );
                    }
                    let mut command = std::process::Command::new(&program);
                    command.args(&program_args).envs(&env);
                    if let Some(cwd) = cwd {
                        command.current_dir(cwd);
                    }
                    return Ok(ExecServerClient::spawn_stdio(command, options).await?);
                }
            }
        }
        (None, None) => match std::env::var(URL_ENV) {
            Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
            _ => bail!(
                "no exec-server given: pass --url URL (or set {URL_ENV}), or --env ID (an entry \
                 of $CODEX_HOME/environments.toml)"
            ),
        },
    };
    if token.is_some() {
        options.bearer_token = token;
    }
    match &args.session {
        None => Ok(ExecServerClient::connect(&url, options).await?),
        Some(session) => resume(&url, session, options).await,
    }
}

/// How long a session still attached to another connection (a client killed a moment ago,
/// whose connection the server has not seen close yet) is waited for.
const ATTACHED_PATIENCE: Duration = Duration::from_secs(5);

/// Resumes `session`, waiting out a short -32010 (attached elsewhere).
async fn resume(
    url: &str,
    session: &str,
    options: ClientOptions,
) -> anyhow::Result<ExecServerClient> {
    let deadline = tokio::time::Instant::now() + ATTACHED_PATIENCE;
    loop {
        match ExecServerClient::resume(url, session, options.clone()).await {
            Ok(client) => return Ok(client),
            Err(ClientError::Server { code: -32010, .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(ClientError::Server { code: -32010, .. }) => bail!(
                "--session {session}: the session is attached to another client (still \
                 connected after {ATTACHED_PATIENCE:?})"
            ),
            Err(ClientError::Server { code: -32600, .. }) => bail!(
                "--session {session}: the server has no such session (it expired after the \
                 server's detached-session TTL, or the server restarted)"
            ),
            Err(err) => return Err(err.into()),
        }
    }
}

/// The token of `--token-file` or `--token-env`, if one was given.
fn flag_token(args: &ConnectArgs) -> anyhow::Result<Option<BearerToken>> {
    if let Some(path) = &args.token_file {
        // Bounded: a wrong path such as /dev/zero must not fill the memory.
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| {
                file.take(MAX_BEARER_TOKEN_BYTES as u64 + 64)
                    .read_to_end(&mut bytes)
            })
            .with_context(|| format!("--token-file {}: cannot read it", path.display()))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            anyhow!(
                "--token-file {}: the file is not UTF-8 text",
                path.display()
            )
        })?;
        let token =
            BearerToken::new(text).map_err(|e| anyhow!("--token-file {}: {e}", path.display()))?;
        return Ok(Some(token));
    }
    if let Some(var) = &args.token_env {
        let value = match std::env::var(var) {
            Ok(value) => value,
            Err(std::env::VarError::NotPresent) => {
                bail!("--token-env {var}: the variable is not set")
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("--token-env {var}: the variable is not valid UTF-8")
            }
        };
        let token = BearerToken::new(value).map_err(|e| anyhow!("--token-env {var}: {e}"))?;
        return Ok(Some(token));
    }
    Ok(None)
}

/// The entry `id` of the environments file.
fn environment(id: &str) -> anyhow::Result<environments::Environment> {
    if id.contains('=') {
        bail!(
            "--env {id}: --env names an environment of environments.toml; to set a variable for \
             the command, use `exec -e K=V` (long form `--set-env K=V`)"
        );
    }
    let path = environments::default_path().ok_or_else(|| {
        anyhow!("--env {id}: neither CODEX_HOME nor HOME is set, so there is no environments.toml")
    })?;
    let file = load(&path, id)?;
    let entry = file.get(id).map_err(|e| anyhow!("--env {id}: {e}"))?;
    Ok(entry.clone())
}

/// Reads the file, saying which flag wanted it.
fn load(path: &Path, id: &str) -> anyhow::Result<Environments> {
    Environments::load(path).map_err(|e| anyhow!("--env {id}: {e}"))
}
