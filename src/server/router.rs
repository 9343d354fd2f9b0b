//! The router: one arm per method of the protocol's table ([`Method`]), each decoding the params
//! and calling that method's handler. The match is exhaustive, so a method added to the table
//! without a handler does not compile; methods a client may not request (the handshake, which
//! the connection serves itself, and the server's notifications) are refused here too.

use serde_json::Value;

use super::call::{Answer, Call, to_value};
use super::{environment, exec, fs, fs_watch, http_request};
use crate::protocol::{ErrorCode, Method};
use crate::rpc::{RpcError, decode_params};

/// Runs one request of an initialized connection.
pub(super) async fn route(call: Call, method: Method, params: Value) -> Result<Answer, RpcError> {
    let call = &call;
    let value = match method {
        // `environment/info`: computed once at start (`env_info.rs`).
        Method::EnvironmentInfo => to_value(&call.state.environment().await),
        Method::ProcessStart => to_value(&exec::start(call, decode_params(params)?).await?),
        Method::ProcessRead => to_value(&exec::read(call, decode_params(params)?).await?),
        Method::ProcessWrite => to_value(&exec::write(call, decode_params(params)?).await?),
        Method::ProcessSignal => {
            exec::signal(call, decode_params(params)?);
            Ok(empty())
        }
        Method::ProcessTerminate => to_value(&exec::terminate(call, decode_params(params)?)),
        Method::FsReadFile => return fs::read_file(call, decode_params(params)?).await,
        Method::FsWriteFile => fs::write_file(call, decode_params(params)?).await,
        Method::FsCreateDirectory => fs::create_directory(call, decode_params(params)?).await,
        Method::FsGetMetadata => fs::get_metadata(call, decode_params(params)?).await,
        Method::FsReadDirectory => fs::read_directory(call, decode_params(params)?).await,
        Method::FsRemove => fs::remove(call, decode_params(params)?).await,
        Method::FsCopy => fs::copy(call, decode_params(params)?).await,
        Method::FsCanonicalize => fs::canonicalize(call, decode_params(params)?).await,
        Method::FsOpen => to_value(&fs::open(call, decode_params(params)?).await?),
        Method::FsReadBlock => return fs::read_block(call, decode_params(params)?).await,
        Method::FsClose => {
            fs::close(call, decode_params(params)?);
            Ok(empty())
        }
        Method::EnvironmentStatus => to_value(&environment::status(params)?),
        Method::EnvironmentConfigRead => {
            to_value(&environment::config_read(call, decode_params(params)?).await?)
        }
        Method::FsWriteBlock => to_value(&fs::write_block(call, decode_params(params)?).await?),
        Method::HttpRequest => {
            return http_request::request(call, decode_params(params)?).await;
        }
        Method::FsWalk => fs::walk(call, decode_params(params)?).await,
        Method::FsWatchMissing => to_value(&fs::watch_missing(call, decode_params(params)?).await?),
        Method::ProcessList => to_value(&exec::list(call, decode_params(params)?)),
        Method::ProcessCloseStdin => {
            exec::close_stdin(call, decode_params(params)?).await?;
            Ok(empty())
        }
        Method::ProcessResize => {
            exec::resize(call, decode_params(params)?)?;
            Ok(empty())
        }
        // Issue 14: watches.
        Method::FsWatch => {
            let p: crate::protocol::fs::WatchParams = decode_params(params)?;
            let route = fs::route(call, p.sandbox.as_ref(), false).await?;
            fs_watch::watch(&call.fs_watches, route, p).await
        }
        Method::FsUnwatch => fs_watch::unwatch(&call.fs_watches, decode_params(params)?).await,
        Method::ProcessAck => {
            exec::ack(call, decode_params(params)?)?;
            Ok(empty())
        }
        Method::Initialize
        | Method::Initialized
        | Method::FsMissingChanged
        | Method::ProcessOutput
        | Method::ProcessExited
        | Method::ProcessClosed
        | Method::HttpRequestBodyDelta
        | Method::FsChanged => Err(not_implemented(method.name())),
    }?;
    Ok(Answer::Value(value))
}

/// The error for a method this server does not serve as a request (the reference's wording).
pub(super) fn not_implemented(name: &str) -> RpcError {
    RpcError::new(
        ErrorCode::MethodNotFound,
        format!("exec-server does not implement `{name}`"),
    )
}

/// The `{}` result.
fn empty() -> Value {
    Value::Object(Default::default())
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
