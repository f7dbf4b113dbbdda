//! `/api/v1/workers`: every worker the master knows, and draining one for
//! maintenance (it finishes what it runs, takes nothing new) or resuming it.

use crate::caller::Caller;
use crate::http::ApiError;
use crate::ops;
use crate::shared::Shared;
use axum::extract::{Path, State};
use axum::Json;
use kiln_proto::api::{DrainBody, ErrorBody, WorkerInfo};
use std::sync::Arc;

type AppState = Arc<Shared>;
type ApiResult<T> = Result<Json<T>, ApiError>;

/// Every configured worker, connected or not (and any drained one).
#[utoipa::path(get, path = "/api/v1/workers", responses((status = 200, body = [WorkerInfo])))]
pub async fn list(State(s): State<AppState>) -> ApiResult<Vec<WorkerInfo>> {
    Ok(Json(ops::workers::list(&s).await.into_values().collect()))
}

/// Drains a worker: it finishes the builds it runs and is given no new ones
/// until resumed. The drain is kept across restarts of the master.
#[utoipa::path(post, path = "/api/v1/workers/{name}/drain", params(("name" = String, Path)), request_body(content = DrainBody, description = "optional"),
    responses((status = 200, body = WorkerInfo), (status = 400, body = ErrorBody, description = "a reason that is not one short line"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "no server_admin permission"), (status = 404, body = ErrorBody, description = "no such worker")),
    security(("token" = [])))]
pub async fn drain(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<WorkerInfo> {
    let body: DrainBody = if body.iter().all(u8::is_ascii_whitespace) {
        DrainBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("the body is not a drain request: {e}")))?
    };
    let row = ops::workers::drain(&s, &caller, &name, body.reason.as_deref()).await?;
    let mut info = worker_info(&s, &name);
    info.drained = Some(kiln_proto::api::Drained {
        by: row.drained_by,
        reason: row.reason,
        at: crate::clock::rfc3339(row.drained_at),
    });
    Ok(Json(info))
}

/// Resumes a drained worker: it is given builds again.
#[utoipa::path(post, path = "/api/v1/workers/{name}/resume", params(("name" = String, Path)),
    responses((status = 200, body = WorkerInfo), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "no server_admin permission"),
        (status = 404, body = ErrorBody, description = "no such worker"), (status = 409, body = ErrorBody, description = "not drained")),
    security(("token" = [])))]
pub async fn resume(State(s): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<WorkerInfo> {
    ops::workers::resume(&s, &caller, &name).await?;
    let mut info = worker_info(&s, &name);
    info.drained = None;
    Ok(Json(info))
}

/// What the master shows of worker `name` now (a configured one that never
/// connected has an empty entry until the dispatcher adds it).
fn worker_info(s: &Shared, name: &str) -> WorkerInfo {
    s.workers().get(name).cloned().unwrap_or_else(|| WorkerInfo::never_seen(name))
}
