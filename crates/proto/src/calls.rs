//! Unary gRPC calls made and served without tonic's codec, over [`crate::frames`]: the client
//! side of a call over tonic's `Channel`, and the server side's request, as tonic's generated
//! code would make and read them (same path, headers, statuses).

use prost::Message;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::frames::{Chunks, Unary, ok_response, read_unary};

/// Whether a request's message is compressed (`grpc-encoding` other than identity): such a
/// request goes to tonic, which refuses it (the server enables no compression).
pub fn is_compressed(request: &http::Request<Body>) -> bool {
    request
        .headers()
        .get("grpc-encoding")
        .is_some_and(|encoding| encoding.as_bytes() != b"identity")
}

/// A unary request's head and message, not yet decoded; or tonic's answer to a request whose
/// message does not come.
pub async fn read_message(
    request: http::Request<Body>,
    max_request: usize,
) -> Result<(http::request::Parts, Chunks), http::Response<Body>> {
    let (parts, body) = request.into_parts();
    match read_unary(body, max_request).await {
        Ok(Unary { message: Some(message), .. }) => Ok((parts, message)),
        Ok(Unary { message: None, .. }) => {
            Err(Status::internal("Missing request message.").into_http())
        }
        Err(status) => Err(status.into_http()),
    }
}

/// `message` decoded as the request it came with; or tonic's refusal of one that does not
/// decode.
pub fn decode_request<M: Message + Default>(
    parts: http::request::Parts,
    message: Chunks,
) -> Result<tonic::Request<M>, Status> {
    let decoded = M::decode(message).map_err(|err| Status::internal(err.to_string()))?;
    Ok(tonic::Request::from_http(http::Request::from_parts(parts, decoded)))
}

/// A unary request's message, decoded; or tonic's answer to one that does not come or decode.
pub async fn read_request<M: Message + Default>(
    request: http::Request<Body>,
    max_request: usize,
) -> Result<tonic::Request<M>, http::Response<Body>> {
    let (parts, message) = read_message(request, max_request).await?;
    decode_request(parts, message).map_err(Status::into_http)
}

/// A service's answer as tonic would send it: the message, or the refusal.
pub fn respond<M: Message>(answer: Result<tonic::Response<M>, Status>) -> http::Response<Body> {
    match answer {
        Ok(response) => ok_response(&response.into_inner()),
        Err(status) => status.into_http(),
    }
}

/// A unary call of `path` with `body` (a prefixed message); its answer, decoded from a message
/// of at most `max_answer` bytes, or its status.
pub async fn unary_call<A: Message + Default>(
    mut channel: Channel,
    path: &'static str,
    body: Body,
    max_answer: usize,
) -> Result<A, Status> {
    let mut call = http::Request::new(body);
    *call.method_mut() = http::Method::POST;
    *call.uri_mut() = http::Uri::from_static(path);
    let headers = call.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::from_error(Box::new(e)))?;
    let answer = channel.call(call).await.map_err(|e| Status::from_error(Box::new(e)))?;
    let (parts, answer) = answer.into_parts();
    // A refusal comes as headers alone (trailers-only).
    if let Some(status) = Status::from_header_map(&parts.headers) {
        return Err(if status.code() == Code::Ok {
            Status::internal("Missing response message.")
        } else {
            status
        });
    }
    if parts.status != http::StatusCode::OK {
        return Err(http_refusal(parts.status));
    }
    let Unary { message, trailers } = match read_unary(answer, max_answer).await {
        Ok(read) => read,
        // Our own limit, not the server's word on an offset: never a reason to reset.
        Err(status) if status.code() == Code::OutOfRange => {
            return Err(Status::resource_exhausted(status.message().to_owned()));
        }
        Err(status) => return Err(status),
    };
    match trailers.as_ref().and_then(Status::from_header_map) {
        Some(status) if status.code() == Code::Ok => {}
        Some(status) => return Err(status),
        None => return Err(Status::unknown("the answer ended without a grpc-status trailer")),
    }
    let message = message.ok_or_else(|| Status::internal("Missing response message."))?;
    A::decode(message).map_err(|e| Status::internal(e.to_string()))
}

/// A non-200 answer without a gRPC status (from a proxy, say), coded as gRPC maps HTTP
/// statuses (and tonic with it): a gateway or an overloaded server is UNAVAILABLE, which the
/// consumer retries elsewhere.
fn http_refusal(status: http::StatusCode) -> Status {
    let code = match status {
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {status} without a gRPC status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_as_grpc_maps_them() {
        let code = |status| http_refusal(status).code();
        assert_eq!(code(http::StatusCode::SERVICE_UNAVAILABLE), Code::Unavailable);
        assert_eq!(code(http::StatusCode::BAD_GATEWAY), Code::Unavailable);
        assert_eq!(code(http::StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(code(http::StatusCode::IM_A_TEAPOT), Code::Unknown);
    }
}
