//! Retention over the API: a garbage collection (`kiln gc`) and pinning a
//! build so that it keeps its files (`kiln pin`); see [`crate::ops::retention`].

use crate::caller::Caller;
use crate::ops;
use crate::shared::Shared;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use kiln_proto::api::{Build, ErrorBody, GcReport, GcRequest, PinRequest};
use std::sync::Arc;

type ApiResult<T> = Result<Json<T>, crate::http::ApiError>;

/// Removes what the `[retention]` rules say has been kept long enough (or,
/// with `dry_run`, says what would go).
#[utoipa::path(post, path = "/api/v1/gc", request_body = GcRequest,
    responses((status = 200, body = GcReport), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "no server_admin")),
    security(("token" = [])))]
pub async fn gc(
    State(s): State<Arc<Shared>>,
    caller: Caller,
    body: Result<Json<GcRequest>, JsonRejection>,
) -> ApiResult<GcReport> {
    let Json(req) = body?;
    Ok(Json(ops::retention::gc(&s, &caller, req.dry_run).await?))
}

/// Pins a build (it keeps its logs and artifacts whatever the retention
/// rules say) or unpins it.
#[utoipa::path(post, path = "/api/v1/builds/{id}/pin", params(("id" = i64, Path)), request_body = PinRequest,
    responses((status = 200, body = Build), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "someone else's build, and no kill_any_job"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "its files were already removed")),
    security(("token" = [])))]
pub async fn pin(
    State(s): State<Arc<Shared>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<PinRequest>, JsonRejection>,
) -> ApiResult<Build> {
    let id = super::builds::parse_id(&id)?;
    let Json(req) = body?;
    ops::retention::pin(&s, &caller, id, req.pinned).await?;
    Ok(Json(super::builds::build(&s, id).await?))
}
