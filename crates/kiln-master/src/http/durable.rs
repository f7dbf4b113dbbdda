//! No change is answered before it is on disk: after any request that may
//! have changed something (every method but GET, HEAD and OPTIONS, on every
//! door: API, web forms, hooks, uploads), the answer waits for the
//! database's group commit ([`kiln_db::Store::make_durable`]). Requests
//! that arrive together share one sync.

use super::ApiError;
use crate::shared::Shared;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub async fn answer_when_synced(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let response = next.run(req).await;
    if !changes {
        return response;
    }
    match shared.store.make_durable().await {
        Ok(()) => response,
        Err(e) => {
            // The change is committed but may not survive a power cut:
            // the client must not read success from it.
            tracing::error!("{e}");
            ApiError::internal(format!("the change was made but could not be synced to disk: {e}")).into_response()
        }
    }
}
