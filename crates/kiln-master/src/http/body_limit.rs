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

/// A body declared larger than this is not read before the 413; the
/// connection then closes.
const DRAIN_MAX: u64 = 64 * 1024 * 1024;

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
    if len <= DRAIN_MAX {
        // The idle-body timeout around the router bounds a client that stops.
        let mut body = req.into_body().into_data_stream();
        let mut read = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            read += chunk.len() as u64;
            if read > len {
                break;
            }
        }
    }
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is {len} bytes; at most {limit} are taken"))
        .into_response()
}
