//! Entry points for the fuzz targets under `fuzz/` (docs/fuzzing.md), hidden from the docs: each
//! takes arbitrary bytes and runs them through the code the server runs on them, checking what
//! must hold whatever the input (valid JSON out, no credential passed to a child, a path that
//! survives its URI). A panic here is a finding; an `Err` is the code doing its job.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::AsyncReadExt as _;

use crate::path_uri;
use crate::protocol::Method;
use crate::protocol::fs as pfs;
use crate::protocol::process as pproc;
use crate::protocol::process::EnvPolicy;
use crate::protocol::sandbox::SandboxIntent;
use crate::rpc::{Incoming, Transport, decode_params};
use crate::sandbox::{fs_helper, plan, policy};
use crate::server::env_policy;
use crate::server::{ServerConfig, ServerState, serve_connection};

/// Any bytes as one or more stdio lines of a connection: the stdio reader (line limit, framing),
/// `Incoming::parse`, the connection's handshake, the router and the handlers, on one in-process
/// server shared by every input (sessions expire the moment their connection ends).
///
/// The first byte chooses: bit 0, start with a valid handshake (else the input must make its
/// own); bit 1, a line limit of 512 bytes (else the protocol's). The rest is the connection's
/// input. Requests whose handler would act outside the server (start a process, touch a path,
/// make an HTTP request) have their params decoded as the router would, and are not run.
/// Everything the server writes back must be one JSON object per line.
pub fn frames(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (rt, state) = dispatcher();
    let mut input = Vec::with_capacity(rest.len() + 96);
    if mode & 1 == 1 {
        input.extend_from_slice(
            b"{\"id\":0,\"method\":\"initialize\",\"params\":{\"clientName\":\"fuzz\"}}\n\
              {\"method\":\"initialized\"}\n",
        );
    }
    input.extend_from_slice(rest);
    let limit = if mode & 2 == 2 {
        512
    } else {
        crate::rpc::MAX_MESSAGE_BYTES
    };
    rt.block_on(async move {
        let (writer, mut reader) = tokio::io::duplex(64 << 10);
        let tracker = tokio_util::task::TaskTracker::new();
        let wire = crate::rpc::stdio::spawn_with_limit(
            std::io::Cursor::new(input),
            writer,
            &tracker,
            limit,
        );
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut from_wire = wire.incoming;
        let filter = async move {
            while let Some(message) = from_wire.recv().await {
                if let Some(message) = admit(message)
                    && tx.send(message).await.is_err()
                {
                    break;
                }
            }
        };
        let transport = Transport {
            incoming: rx,
            outgoing: wire.outgoing,
        };
        let served = serve_connection(transport, state.clone());
        let drained = async move {
            let mut out = Vec::new();
            reader
                .read_to_end(&mut out)
                .await
                .expect("an in-memory pipe");
            out
        };
        let ((), (), out) = tokio::join!(filter, served, drained);
        for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Value>(line) {
                Ok(Value::Object(_)) => {}
                other => panic!(
                    "the server wrote a line that is not a JSON object: {other:?}: {}",
                    String::from_utf8_lossy(line)
                ),
            }
        }
        tracker.close();
        tracker.wait().await;
    });
}

/// The runtime and server [`frames`] shares between inputs (building a server per input would
/// probe the sandbox and the environment each time).
fn dispatcher() -> &'static (tokio::runtime::Runtime, Arc<ServerState>) {
    static DISPATCHER: OnceLock<(tokio::runtime::Runtime, Arc<ServerState>)> = OnceLock::new();
    DISPATCHER.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let config = ServerConfig {
            detached_session_ttl: Duration::ZERO,
            closed_process_ttl: Duration::ZERO,
            ..ServerConfig::default()
        };
        let state = rt.block_on(async { ServerState::new(config) });
        (rt, state)
    })
}

/// Whether a request of `method` is run by [`frames`]: those that stay inside the server (a
/// process, handle or session it does not have is an error), and whatever the connection refuses
/// itself (the handshake, notifications, unknown names).
fn runs_inside_the_server(method: Method) -> bool {
    !method.is_request()
        || matches!(
            method,
            Method::Initialize
                | Method::EnvironmentInfo
                | Method::EnvironmentStatus
                | Method::EnvironmentConfigRead
                | Method::ProcessRead
                | Method::ProcessWrite
                | Method::ProcessSignal
                | Method::ProcessTerminate
                | Method::ProcessList
                | Method::ProcessCloseStdin
                | Method::ProcessResize
                | Method::FsReadBlock
                | Method::FsWriteBlock
                | Method::FsClose
        )
}

/// The message to hand to the connection, or `None` for a request that must not run here (its
/// params are decoded instead, as the router would).
fn admit(message: Incoming) -> Option<Incoming> {
    let Incoming::Request(request) = &message else {
        return Some(message);
    };
    let Some(method) = Method::from_name(&request.method) else {
        return Some(message);
    };
    if runs_inside_the_server(method) {
        return Some(message);
    }
    let params = request.params.clone();
    match method {
        Method::ProcessStart => decode::<pproc::StartParams>(params),
        Method::FsReadFile => decode::<pfs::ReadFileParams>(params),
        Method::FsWriteFile => decode::<pfs::WriteFileParams>(params),
        Method::FsCreateDirectory => decode::<pfs::CreateDirectoryParams>(params),
        Method::FsGetMetadata => decode::<pfs::GetMetadataParams>(params),
        Method::FsReadDirectory => decode::<pfs::ReadDirectoryParams>(params),
        Method::FsRemove => decode::<pfs::RemoveParams>(params),
        Method::FsCopy => decode::<pfs::CopyParams>(params),
        Method::FsCanonicalize => decode::<pfs::CanonicalizeParams>(params),
        Method::FsOpen => decode::<pfs::OpenParams>(params),
        Method::FsWalk => decode::<pfs::WalkParams>(params),
        Method::FsWatchMissing => decode::<pfs::WatchMissingParams>(params),
        Method::HttpRequest => decode::<crate::protocol::http::HttpRequestParams>(params),
        _ => {}
    }
    None
}

fn decode<T: DeserializeOwned>(params: Value) {
    let _ = decode_params::<T>(params);
}

/// Any bytes as a `file:` URI: parsing must not panic, and a path that parses comes back
/// unchanged through [`path_uri::from_path`]. The bytes as a native absolute path must survive
/// the same round trip (except the shapes the parser refuses on purpose: a NUL, `/C:`).
pub fn path_uri(data: &[u8]) {
    if let Ok(uri) = std::str::from_utf8(data) {
        if let Ok(path) = path_uri::to_unresolved_path(uri) {
            let again = path_uri::from_path(&path);
            assert_eq!(
                path_uri::to_unresolved_path(&again).as_ref(),
                Ok(&path),
                "{uri:?} -> {path:?} -> {again:?}"
            );
        }
        let _ = path_uri::to_path(uri);
    }
    use std::os::unix::ffi::OsStrExt as _;
    let mut bytes = vec![b'/'];
    bytes.extend_from_slice(data);
    let path = Path::new(std::ffi::OsStr::from_bytes(&bytes));
    let refused_shape = bytes.contains(&0)
        || (bytes.len() >= 3 && bytes[1].is_ascii_alphabetic() && bytes[2] == b':');
    let uri = path_uri::from_path(path);
    match path_uri::to_unresolved_path(&uri) {
        Ok(back) => assert_eq!(back, path, "{path:?} -> {uri:?}"),
        Err(err) => assert!(refused_shape, "{path:?} -> {uri:?}: {err}"),
    }
}

/// What [`env_policy`] reads: the `envPolicy` and `env` members of `process/start` params.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvInput {
    #[serde(default)]
    env_policy: Option<EnvPolicy>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// Any bytes as the `envPolicy` and `env` of `process/start`, built on a server environment that
/// holds the server's own credentials and a few secrets: the server's credentials never reach
/// the child, and every `env` member does (except those credentials).
pub fn env_policy(data: &[u8]) {
    let Ok(input) = serde_json::from_slice::<EnvInput>(data) else {
        return;
    };
    let mut server_env: Vec<(OsString, OsString)> = [
        ("PATH", "/usr/bin:/bin"),
        ("HOME", "/root"),
        ("LANG", "C.UTF-8"),
        ("OPENAI_API_KEY", "sk-x"),
        ("GITHUB_TOKEN", "t"),
        ("my_secret_thing", "s"),
        ("TERM", "xterm"),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect();
    server_env.extend(
        env_policy::SERVER_CREDENTIALS
            .iter()
            .map(|k| (OsString::from(k), OsString::from("credential"))),
    );
    let built = env_policy::build(server_env, input.env_policy.as_ref(), &input.env);
    for (k, _) in &built {
        assert!(
            !env_policy::SERVER_CREDENTIALS.iter().any(|c| k == c),
            "{k:?} reached the child"
        );
    }
    for (k, v) in &input.env {
        if env_policy::SERVER_CREDENTIALS.contains(&k.as_str()) {
            continue;
        }
        let found = built.iter().find(|(bk, _)| bk == k.as_str());
        assert_eq!(
            found.map(|(_, bv)| bv),
            Some(&OsString::from(v)),
            "env member {k:?}"
        );
    }
    if let Some(policy) = &input.env_policy {
        for pattern in policy.exclude.iter().chain(&policy.include_only).take(8) {
            let _ = env_policy::glob_match(pattern, "OPENAI_API_KEY");
        }
    }
}

/// What the sandbox reads from a request: `sandbox`, and for `process/start` the managed network.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SandboxInput {
    sandbox: SandboxIntent,
    #[serde(default)]
    enforce_managed_network: bool,
    #[serde(default)]
    managed_network: Option<Value>,
}

/// Any bytes as the sandbox members of a request, bound as `process/start` binds them (the
/// request's cwd, its environment) and as an `fs/*` call does (`policyContext`), then planned
/// for both Landlock layers.
pub fn sandbox_policy(data: &[u8]) {
    let Ok(input) = serde_json::from_slice::<SandboxInput>(data) else {
        return;
    };
    let intent = &input.sandbox;
    let _ = intent.permissions.network();
    let _ = intent.permissions.restricts_file_system();
    let env: Vec<(OsString, OsString)> = vec![("TMPDIR".into(), "/tmp".into())];
    let process = policy::BindContext {
        cwd: Path::new("/tmp"),
        env: &env,
        workspace_roots_override: None,
        enforce_managed_network: input.enforce_managed_network,
        managed_network: input.managed_network.as_ref(),
    };
    // An fs call needs a cwd (the server refuses one without).
    let context = intent.policy_context.clone().unwrap_or_default();
    let fs_cwd: Option<PathBuf> = context
        .cwd
        .as_ref()
        .or(intent.cwd.as_ref())
        .and_then(|uri| path_uri::to_path(uri).ok());
    let fs_call = fs_cwd.as_deref().map(|cwd| policy::BindContext {
        cwd,
        env: &env,
        workspace_roots_override: context.workspace_roots.as_deref(),
        enforce_managed_network: false,
        managed_network: None,
    });
    for ctx in std::iter::once(&process).chain(fs_call.as_ref()) {
        if let Ok(resolved) = policy::resolve(intent, ctx) {
            let _ = resolved.is_noop();
            if let Some(entries) = &resolved.file_system {
                let _ = plan::build(entries, plan::Layer::Mount);
                let _ = plan::build(entries, plan::Layer::Split);
            }
        }
    }
}

/// Any bytes as what the `codex-fs` helper is given: the first line its `--guard` JSON, the rest
/// the request on its stdin; parsed and checked against the guard as the helper does, never
/// executed.
pub fn fs_helper_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (guard, request) = text.split_once('\n').unwrap_or(("{}", text));
    let _ = fs_helper::checked_request(guard, request);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fuzz/seeds/TARGET: the inputs each target starts from.
    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                let path = e.unwrap().path();
                (path.display().to_string(), std::fs::read(&path).unwrap())
            })
            .collect();
        seeds.sort();
        assert!(seeds.len() >= 3, "{target}: too few seeds");
        seeds
    }

    /// A target: its name under fuzz/, and its entry point.
    type Target = (&'static str, fn(&[u8]));

    #[test]
    fn every_seed_of_every_target_runs_clean() {
        let targets: [Target; 5] = [
            ("frames", frames),
            ("path_uri", path_uri),
            ("env_policy", env_policy),
            ("sandbox_policy", sandbox_policy),
            ("fs_helper_request", fs_helper_request),
        ];
        for (target, run) in targets {
            for (name, data) in seeds(target) {
                eprintln!("{name}");
                run(&data);
            }
        }
    }

    #[test]
    fn seeds_of_the_structured_targets_are_what_they_parse() {
        for (_, data) in seeds("env_policy") {
            serde_json::from_slice::<EnvInput>(&data).unwrap();
        }
        for (name, data) in seeds("sandbox_policy") {
            let input: SandboxInput = serde_json::from_slice(&data).unwrap();
            let env = [("TMPDIR".into(), "/tmp".into())];
            let ctx = policy::BindContext {
                cwd: Path::new("/tmp"),
                env: &env,
                workspace_roots_override: None,
                enforce_managed_network: input.enforce_managed_network,
                managed_network: input.managed_network.as_ref(),
            };
            policy::resolve(&input.sandbox, &ctx).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        for (name, data) in seeds("fs_helper_request") {
            let text = String::from_utf8(data).unwrap();
            let (guard, request) = text.split_once('\n').unwrap();
            if let Err(e) = fs_helper::checked_request(guard, request) {
                // Refused by the guard is a parsed request; a parse error is a bad seed.
                assert!(!e.starts_with("invalid"), "{name}: {e}");
            }
        }
    }

    #[test]
    fn frames_decodes_but_never_runs_a_request_that_would_touch_a_path() {
        let target = std::env::temp_dir().join(format!("codex-fuzz-{}", uuid::Uuid::new_v4()));
        let uri = path_uri::from_path(&target);
        let mut input = vec![1u8];
        input.extend_from_slice(
            format!(
                "{{\"id\":1,\"method\":\"fs/writeFile\",\"params\":{{\"path\":\"{uri}\",\"dataBase64\":\"aGkK\"}}}}\n\
                 {{\"id\":2,\"method\":\"fs/createDirectory\",\"params\":{{\"path\":\"{uri}\"}}}}\n"
            )
            .as_bytes(),
        );
        frames(&input);
        assert!(!target.exists(), "{} was created", target.display());
        // The same request does reach its handler when admitted (the filter is what stops it).
        assert!(
            admit(Incoming::parse(
                &input[1..input.iter().position(|b| *b == b'\n').unwrap()]
            ))
            .is_none()
        );
        assert!(
            admit(Incoming::parse(
                br#"{"id":3,"method":"process/list","params":{}}"#
            ))
            .is_some()
        );
    }
}
