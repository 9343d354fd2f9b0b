//! `http/request` with a buffered body: an HTTP request made by the executor (it reaches what the
//! executor reaches, and `valueEnvVar` headers take the executor's variables). Not replayed
//! after a dropped transport (see [`super::replay`]): it fails with
//! [`ClientError::Disconnected`](super::error::ClientError).

use super::error::ClientError;
use super::session::ExecServerClient;
use crate::protocol::http::{HttpRequestParams, HttpRequestResponse};
use crate::protocol::method;

impl ExecServerClient {
    /// `http/request`, the whole body in the answer (`streamResponse` is sent as false; the
    /// body, base64 in `bodyBase64`, must fit in one message).
    pub async fn http_request(
        &self,
        mut request: HttpRequestParams,
    ) -> Result<HttpRequestResponse, ClientError> {
        request.stream_response = Some(false);
        self.call(method::HTTP_REQUEST, &request).await
    }
}
