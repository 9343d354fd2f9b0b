//! The one place where domain errors become JSON-RPC error objects ([`RpcError`]), and where
//! params are decoded with an error that names the offending field.

use crate::protocol::ErrorCode;

/// A JSON-RPC error object: the code and a message that names the offending field or path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code:?})")]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: String,
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParams, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

/// Decodes a request's params into `T`. `null` and absent params decode as `{}`, so a struct with
/// only optional members accepts both; the error names the offending field.
pub fn decode_params<T: serde::de::DeserializeOwned>(
    params: serde_json::Value,
) -> Result<T, RpcError> {
    let params = match params {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        other => other,
    };
    serde_path_to_error::deserialize(params).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." || path.is_empty() {
            RpcError::invalid_params(format!("invalid params: {inner}"))
        } else {
            RpcError::invalid_params(format!("invalid params: {path}: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::process::StartParams;

    #[test]
    fn ill_typed_param_error_names_the_field() {
        let err = decode_params::<StartParams>(serde_json::json!({
            "processId": "p", "argv": "ls", "cwd": "file:///"
        }))
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParams);
        assert!(err.message.contains("argv"), "{}", err.message);
    }

    #[test]
    fn missing_param_error_names_the_field() {
        let err =
            decode_params::<StartParams>(serde_json::json!({"processId": "p", "cwd": "file:///"}))
                .unwrap_err();
        assert!(
            err.message.contains("missing field `argv`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn null_params_decode_like_an_empty_object() {
        #[derive(serde::Deserialize)]
        struct Empty {}
        decode_params::<Empty>(serde_json::Value::Null).unwrap();
    }
}
