//! Oversized request bodies are refused with 413 after they are read (up
//! to a bound), not while the client still sends: a server that answers
//! early and closes leaves a client mid-send with a reset connection
//! instead of the answer.

use super::ApiError;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

/// A body declared more than this over the limit is not read before the
/// 413; the connection then closes.
const DRAIN_OVER: u64 = 8 * 1024 * 1024;
/// Reading a refused body takes no longer than this in all (the idle
/// timeout alone would let a trickle hold the connection).
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Refuses a request whose declared `Content-Length` is over `limit`. A
/// body without one is cut by the routes' own limit as it is read.
pub async fn refuse_oversized(limit: usize, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(len) = declared.filter(|&n| n > limit as u64) else {
        return next.run(req).await;
    };
    // A client that asked whether to send (`Expect: 100-continue`) is told
    // now, before it sends anything.
    let asked = req.headers().get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !asked && len <= limit as u64 + DRAIN_OVER {
        let drain = async {
            let mut body = req.into_body().into_data_stream();
            let mut read = 0u64;
            while let Some(Ok(chunk)) = body.next().await {
                read += chunk.len() as u64;
                if read > len {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    }
    let mut refused = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is {len} bytes; at most {limit} are taken"),
    )
    .into_response();
    refused.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    refused
}
