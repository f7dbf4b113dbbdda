//! `/api/v1/builds`: list, force, read, cancel and rebuild builds; step
//! logs and artifacts.

use crate::caller::Caller;
use crate::http::convert::{created, to_api_builds};
use crate::http::ApiError;
use crate::ops;
use crate::ops::requests::NewRequest;
use crate::shared::Shared;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_core::matrix::RequestSpec;
use kiln_core::props::{request_properties, PropertySource};
use kiln_core::BuildState;
use kiln_db::BuildFilter;
use kiln_proto::api::{Build, BuildPage, BuildRequestBody, BuildRequestCreated, ErrorBody, LogChunk};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

type AppState = Arc<Shared>;
type ApiResult<T> = Result<Json<T>, ApiError>;

/// Most of a step's log one read returns.
const MAX_LOG_READ: usize = 4 * 1024 * 1024;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// queued, running, succeeded, failed, cancelled or skipped
    state: Option<String>,
    component: Option<String>,
    target: Option<String>,
    /// Only builds of this request.
    request: Option<i64>,
    /// Only builds older than this id (the `next_before` of the previous page).
    before: Option<i64>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<i64>,
}

/// Builds, newest first, filtered and paginated.
#[utoipa::path(get, path = "/api/v1/builds", params(ListQuery),
    responses((status = 200, body = BuildPage), (status = 400, body = ErrorBody)))]
pub async fn list(State(s): State<AppState>, q: Result<Query<ListQuery>, QueryRejection>) -> ApiResult<BuildPage> {
    let Query(q) = q?;
    let state = q.state.as_deref().map(str::parse::<BuildState>).transpose().map_err(ApiError::bad)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad("limit must be between 1 and 1000"));
    }
    let rows = match q.request {
        Some(req) => s.store.request_builds(req).await?,
        None => {
            s.store
                .list_builds(&BuildFilter { state, component: q.component, target: q.target, before: q.before, limit })
                .await?
        }
    };
    let next_before = if q.request.is_none() && rows.len() as i64 == limit { rows.last().map(|b| b.id) } else { None };
    let builds = to_api_builds(&s, rows).await?;
    Ok(Json(BuildPage { builds, next_before }))
}

/// Forces builds: the same options as `kiln build`.
#[utoipa::path(post, path = "/api/v1/builds", request_body = BuildRequestBody,
    responses((status = 200, body = BuildRequestCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "no own_jobs permission"),
        (status = 404, body = ErrorBody, description = "unknown component or target"), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody, description = "the body is not JSON"), (status = 422, body = ErrorBody, description = "the JSON does not have the expected shape")),
    security(("token" = [])))]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    body: Result<Json<BuildRequestBody>, JsonRejection>,
) -> ApiResult<BuildRequestCreated> {
    let Json(body) = body?;
    let spec = RequestSpec { components: body.components, all: body.all, targets: body.targets };
    let properties = request_properties(&body.properties, PropertySource::Request).map_err(ops::OpError::from)?;
    let req = NewRequest { spec, properties, reason: body.reason };
    let made = ops::requests::submit(&s, &caller, req).await?;
    Ok(Json(created(&s, made)))
}

/// One build with its steps and properties.
#[utoipa::path(get, path = "/api/v1/builds/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = Build), (status = 400, body = ErrorBody, description = "not a build id"), (status = 404, body = ErrorBody)))]
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Build> {
    let id = parse_id(&id)?;
    Ok(Json(build(&s, id).await?))
}

pub(super) async fn build(s: &Shared, id: i64) -> Result<Build, ApiError> {
    let row = s.store.build(id).await?.ok_or_else(|| not_found_build(id))?;
    to_api_builds(s, vec![row]).await?.pop().ok_or_else(|| not_found_build(id))
}

pub fn parse_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>().map_err(|_| ApiError::bad(format!("build id must be a number, got {text:?}")))
}

/// Whether build `id`'s logs and artifacts were removed by retention.
async fn pruned(s: &Shared, id: i64) -> bool {
    matches!(s.store.retention_of(id).await, Ok(Some((_, Some(_)))))
}

fn not_found_build(id: i64) -> ApiError {
    ApiError::not_found(format!("no build {id}"))
}

/// Cancels a build: a queued one leaves the queue, a running one is stopped
/// (its `always_run` steps still run).
#[utoipa::path(post, path = "/api/v1/builds/{id}/cancel", params(("id" = i64, Path)),
    responses((status = 200, body = Build), (status = 400, body = ErrorBody, description = "not a build id"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "someone else's build, and no kill_any_job"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "already finished")),
    security(("token" = [])))]
pub async fn cancel(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Build> {
    let id = parse_id(&id)?;
    ops::builds::cancel(&s, &caller, id).await?;
    Ok(Json(build(&s, id).await?))
}

/// Builds a build again: the same component, target, request properties
/// and source (the same revision of a change, the same upload).
#[utoipa::path(post, path = "/api/v1/builds/{id}/rebuild", params(("id" = i64, Path)),
    responses((status = 200, body = BuildRequestCreated), (status = 400, body = ErrorBody, description = "not a build id"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "no own_jobs permission"),
        (status = 404, body = ErrorBody, description = "no such build, or its component, target or upload is gone")),
    security(("token" = [])))]
pub async fn rebuild(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<BuildRequestCreated> {
    let id = parse_id(&id)?;
    let made = ops::requests::rebuild(&s, &caller, id).await?;
    Ok(Json(created(&s, made)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Byte offset to read from (default 0).
    offset: Option<u64>,
    /// Most bytes to return (default and maximum 4 MiB).
    limit: Option<usize>,
}

/// A step's log from an offset; `step` is the step's name or index.
#[utoipa::path(get, path = "/api/v1/builds/{id}/steps/{step}/log", params(("id" = i64, Path), ("step" = String, Path), LogQuery),
    responses((status = 200, body = LogChunk), (status = 400, body = ErrorBody, description = "not a build id, or a bad query"), (status = 404, body = ErrorBody)))]
pub async fn step_log(
    State(s): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult<LogChunk> {
    let Query(q) = q?;
    let id = parse_id(&id)?;
    let build = s.store.build(id).await?.ok_or_else(|| not_found_build(id))?;
    let steps = s.store.steps(id).await?;
    let found = steps
        .iter()
        .find(|st| st.name == step)
        .or_else(|| step.parse::<i64>().ok().and_then(|i| steps.iter().find(|st| st.idx == i)))
        .ok_or_else(|| {
            let names: Vec<&str> = steps.iter().map(|st| st.name.as_str()).collect();
            ApiError::not_found(format!("build {id} has no step {step:?}; its steps: {}", names.join(", ")))
        })?;
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(MAX_LOG_READ).clamp(1, MAX_LOG_READ);
    let idx = found.idx as u32;
    let logs = &s.logs;
    if build.state.is_finished() && pruned(&s, id).await {
        return Err(ApiError::new(
            axum::http::StatusCode::GONE,
            format!("build {id}'s logs were removed by the retention rules; its record stays"),
        ));
    }
    let data = tokio::task::block_in_place(|| logs.read(id, idx, offset, limit)).map_err(ApiError::internal)?;
    let next_offset = offset + data.len() as u64;
    let complete = (found.state.is_finished() || build.state.is_finished())
        && next_offset >= (found.log_size as u64).max(logs.size(id, idx));
    Ok(Json(LogChunk { build_id: id, step: found.name.clone(), offset, next_offset, data, complete }))
}

/// The files a build produced.
pub async fn list_artifacts(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Vec<kiln_proto::api::Artifact>> {
    let id = parse_id(&id)?;
    Ok(Json(build(&s, id).await?.artifacts))
}

/// Downloads one artifact of a build.
pub async fn download_artifact(
    State(s): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let row = s
        .store
        .artifacts_of(&[id])
        .await?
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::not_found(format!("build {id} has no artifact {name:?}")))?;
    let path = s.artifacts.path_of(&row.sha256).ok_or_else(|| ApiError::internal("bad checksum in the database"))?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && pruned(&s, id).await => {
            return Err(ApiError::new(
                axum::http::StatusCode::GONE,
                format!("build {id}'s artifacts were removed by the retention rules; its record stays"),
            ))
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let disposition = format!("attachment; filename=\"{}\"", row.name);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, row.size.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::ETAG, format!("\"{}\"", row.sha256)),
        ],
        body,
    )
        .into_response())
}
