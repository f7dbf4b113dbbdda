//! The JSON API under `/api/v1`, and Buildbot's base change hook.
//!
//! Handlers are thin: they check input and tokens, call the store or the
//! dispatcher, and shape the answer. Reads are anonymous; every mutation
//! needs a token (`Authorization: Bearer TOKEN` or `?token=`).

use crate::clock::{now_us, rfc3339};
use crate::dispatcher::{CancelOutcome, Event};
use crate::shared::Shared;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use kiln_core::matrix::{self, PlanError, RequestSpec};
use kiln_core::props::{Properties, Property, PropertySource, MAX_VALUE_LEN};
use kiln_core::BuildState;
use kiln_db::{ArtifactRow, BuildFilter, BuildRow, NewBuild, StepRow};
use kiln_proto::api::{
    Artifact, Build, BuildPage, BuildRequestBody, BuildRequestCreated, BuilderInfo, ErrorBody, LogChunk, PropertyValue,
    Status, Step, UploadAccepted, WorkerInfo,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::oneshot;
use utoipa::{IntoParams, OpenApi};

/// Largest request body accepted (1 MiB); larger ones get 413.
pub const MAX_BODY: usize = 1024 * 1024;
const MAX_PROPERTIES: usize = 100;
const MAX_LOG_READ: usize = 4 * 1024 * 1024;

type AppState = Arc<Shared>;

pub fn router(shared: AppState) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/builds", get(list_builds).post(create_builds))
        .route("/api/v1/builds/{id}", get(get_build))
        .route("/api/v1/builds/{id}/cancel", post(cancel_build))
        .route("/api/v1/builds/{id}/steps/{step}/log", get(step_log))
        .route("/api/v1/builds/{id}/artifacts", get(list_artifacts))
        .route("/api/v1/builds/{id}/artifacts/{name}", get(download_artifact))
        .route(
            "/api/v1/uploads",
            post(upload_source).layer(axum::extract::DefaultBodyLimit::max(
                shared.farm().cfg.master.max_artifact_size.min(usize::MAX as u64) as usize,
            )),
        )
        .route("/api/v1/workers", get(list_workers))
        .route("/api/v1/builders", get(list_builders))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/change_hook/base", post(change_hook_base))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page; the API lives under /api/v1") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .merge(crate::hooks::routes())
        .merge(crate::repos::routes())
        .merge(crate::users::routes())
        .merge(crate::web::routes())
        .layer(axum::middleware::from_fn_with_state(shared.clone(), crate::web::read_gate))
        .with_state(shared)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kiln",
        description = "The kiln build farm's JSON API. Reads are anonymous unless the master says otherwise; mutations need a token (Authorization: Bearer TOKEN) whose user holds the permission they need (own_jobs, kill_any_job, modify_users, server_admin)."
    ),
    paths(
        status,
        list_builds,
        create_builds,
        get_build,
        cancel_build,
        step_log,
        list_workers,
        list_builders,
        change_hook_base
    ),
    components(schemas(
        Build,
        Step,
        PropertyValue,
        BuildPage,
        BuildRequestBody,
        BuildRequestCreated,
        LogChunk,
        WorkerInfo,
        BuilderInfo,
        Status,
        ErrorBody
    ))
)]
pub struct ApiDoc;

/// An error answer: a status code and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    /// The status and message, for rendering elsewhere (the web pages).
    pub(crate) fn parts(self) -> (StatusCode, String) {
        (self.status, self.message)
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error answering a request");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error; the master's log has details")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

impl From<kiln_db::StoreError> for ApiError {
    fn from(e: kiln_db::StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(r.status(), format!("invalid JSON body: {}", r.body_text()))
    }
}

impl From<FormRejection> for ApiError {
    fn from(r: FormRejection) -> Self {
        ApiError::new(r.status(), format!("invalid form body: {}", r.body_text()))
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

pub use crate::auth::Caller;
use kiln_core::perm::Permission;

/// Who may cancel a build: its requester with own_jobs, anyone with
/// kill_any_job (or server_admin).
pub fn may_cancel(caller: &Caller, requested_by: Option<&str>) -> Result<(), ApiError> {
    if requested_by == Some(caller.name.as_str()) {
        caller.must(Permission::OwnJobs)
    } else {
        caller.must(Permission::KillAnyJob)
    }
}

/// The token a request carries: `Authorization: Bearer TOKEN`, else `?token=`.
pub fn request_token(parts: &Parts) -> Option<String> {
    let from_header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    from_header.or_else(|| {
        parts.uri.query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")).map(str::to_string))
    })
}

/// Extracting a `Caller` checks the request's token.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = request_token(parts) else {
            // No token: a client certificate from the users' CA is a login too.
            if let Some(crate::auth::PeerCertificate(Some(email))) =
                parts.extensions.get::<crate::auth::PeerCertificate>()
            {
                return crate::auth::user_caller(state, email).await.map_err(|e| match e {
                    crate::auth::AuthError::Invalid => ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        format!("the client certificate names {email}, who is not a user here"),
                    ),
                    crate::auth::AuthError::Store(e) => ApiError::from(e),
                });
            }
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this action needs a token: send `Authorization: Bearer TOKEN`",
            ));
        };
        crate::auth::authenticate(state, &token).await.map_err(|e| match e {
            crate::auth::AuthError::Invalid => ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()),
            crate::auth::AuthError::Store(e) => ApiError::from(e),
        })
    }
}

impl Caller {
    /// 403 unless the caller holds `p`.
    pub fn must(&self, p: kiln_core::perm::Permission) -> Result<(), ApiError> {
        self.require(p).map_err(|why| ApiError::new(StatusCode::FORBIDDEN, why))
    }
}

/// The master's version and config generation.
#[utoipa::path(get, path = "/api/v1/status", responses((status = 200, body = Status)))]
async fn status(State(s): State<AppState>) -> ApiResult<Status> {
    let farm = s.farm();
    let connected = s.workers().values().filter(|w| w.connected).count() as i64;
    let (queued, running) = s.store.queue_counts().await?;
    Ok(Json(Status {
        builds_queued: queued,
        builds_running: running,
        version: env!("CARGO_PKG_VERSION").to_string(),
        config_generation: s.generation(),
        builders: matrix::builders(&farm.cfg).count() as i64,
        workers_connected: connected,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
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
async fn list_builds(
    State(s): State<AppState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<BuildPage> {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("invalid query: {}", e.body_text())))?;
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
async fn create_builds(
    State(s): State<AppState>,
    caller: Caller,
    body: Result<Json<BuildRequestBody>, JsonRejection>,
) -> ApiResult<BuildRequestCreated> {
    caller.must(Permission::OwnJobs)?;
    let who = caller.name;
    let Json(body) = body?;
    let spec = RequestSpec { components: body.components, all: body.all, targets: body.targets };
    let props = request_properties(&body.properties, PropertySource::Request)?;
    let created = submit(&s, &who, body.reason.as_deref(), &spec, props).await?;
    Ok(Json(created))
}

pub(crate) fn request_properties(
    given: &BTreeMap<String, String>,
    source: PropertySource,
) -> Result<Properties, ApiError> {
    if given.len() > MAX_PROPERTIES {
        return Err(ApiError::bad(format!("too many properties ({}); at most {MAX_PROPERTIES}", given.len())));
    }
    let mut out = Properties::new();
    for (k, v) in given {
        kiln_core::names::check_property_name(k).map_err(ApiError::bad)?;
        if k == crate::uploads::UPLOAD_PROPERTY {
            return Err(ApiError::bad(format!(
                "the property `{k}` is reserved: it names the upload a build takes its source from"
            )));
        }
        if v.len() > MAX_VALUE_LEN {
            return Err(ApiError::bad(format!("property {k:?} is {} bytes long; at most {MAX_VALUE_LEN}", v.len())));
        }
        // Steps see properties as environment variables, which cannot hold NUL.
        if v.contains('\0') {
            return Err(ApiError::bad(format!("property {k:?} holds a NUL byte, which no step could be given")));
        }
        out.insert(k.clone(), Property { value: v.clone(), source });
    }
    Ok(out)
}

/// Plans a request against the current config, stores it and wakes the dispatcher.
pub(crate) async fn submit(
    s: &AppState,
    who: &str,
    reason: Option<&str>,
    spec: &RequestSpec,
    props: Properties,
) -> Result<BuildRequestCreated, ApiError> {
    let farm = s.farm();
    let plan = matrix::plan(&farm.cfg, spec).map_err(|e| match e {
        PlanError::UnknownComponent { .. } | PlanError::UnknownTarget { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, e.to_string())
        }
        _ => ApiError::bad(e.to_string()),
    })?;
    let builds: Vec<NewBuild> = plan
        .into_iter()
        .map(|p| {
            let mut properties: Properties = farm
                .cfg
                .component(&p.component)
                .map(|c| {
                    c.properties
                        .iter()
                        .map(|(k, v)| (k.clone(), Property { value: v.clone(), source: PropertySource::Config }))
                        .collect()
                })
                .unwrap_or_default();
            properties.extend(props.clone());
            NewBuild { component: p.component, target: p.target, properties, depends_on: p.depends_on }
        })
        .collect();
    store_request(s, who, reason, builds).await
}

/// Stores a request's builds and wakes the dispatcher.
async fn store_request(
    s: &AppState,
    who: &str,
    reason: Option<&str>,
    builds: Vec<NewBuild>,
) -> Result<BuildRequestCreated, ApiError> {
    let reason = reason.map(|r| r.chars().take(1000).collect::<String>());
    let now = now_us();
    let (request_id, ids) = s.store.create_request(now, Some(who), reason.as_deref(), &builds).await?;
    tracing::info!(request = request_id, builds = ids.len(), by = who, "builds requested");
    // The rows as stored, without reading them back.
    let rows: Vec<BuildRow> = builds
        .into_iter()
        .zip(&ids)
        .map(|(b, &id)| BuildRow {
            id,
            request_id,
            component: b.component,
            target: b.target,
            state: BuildState::Queued,
            reason: None,
            requested_at: now,
            started_at: None,
            finished_at: None,
            requested_by: Some(who.to_string()),
            worker: None,
            attempt: 0,
            properties: b.properties,
            depends_on: b.depends_on.iter().filter_map(|&i| ids.get(i).copied()).collect(),
        })
        .collect();
    let builds = rows.iter().map(|b| to_api_build(s, b.clone(), Vec::new(), Vec::new())).collect();
    s.send(Event::Queued(rows));
    Ok(BuildRequestCreated { request_id, builds })
}

/// One build with its steps and properties.
#[utoipa::path(get, path = "/api/v1/builds/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = Build), (status = 400, body = ErrorBody, description = "not a build id"), (status = 404, body = ErrorBody)))]
async fn get_build(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Build> {
    let id = parse_id(&id)?;
    let row = s.store.build(id).await?.ok_or_else(|| not_found_build(id))?;
    let mut builds = to_api_builds(&s, vec![row]).await?;
    builds.pop().map(Json).ok_or_else(|| not_found_build(id))
}

fn parse_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>().map_err(|_| ApiError::bad(format!("build id must be a number, got {text:?}")))
}

fn not_found_build(id: i64) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no build {id}"))
}

/// Cancels a build: a queued one leaves the queue, a running one is stopped
/// (its `always_run` steps still run).
#[utoipa::path(post, path = "/api/v1/builds/{id}/cancel", params(("id" = i64, Path)),
    responses((status = 200, body = Build), (status = 400, body = ErrorBody, description = "not a build id"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "someone else's build, and no kill_any_job"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "already finished")),
    security(("token" = [])))]
async fn cancel_build(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Build> {
    let id = parse_id(&id)?;
    let Some(build) = s.store.build(id).await? else { return Err(not_found_build(id)) };
    may_cancel(&caller, build.requested_by.as_deref())?;
    let (tx, rx) = oneshot::channel();
    s.send(Event::Cancel { build_id: id, by: caller.name, reply: tx });
    match rx.await.map_err(ApiError::internal)? {
        CancelOutcome::Cancelled | CancelOutcome::Stopping => get_build(State(s), Path(id.to_string())).await,
        CancelOutcome::AlreadyFinished(st) => {
            Err(ApiError::new(StatusCode::CONFLICT, format!("build {id} already finished: {st}")))
        }
        CancelOutcome::NotFound => Err(not_found_build(id)),
        CancelOutcome::Failed(e) => Err(ApiError::internal(e)),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    /// Byte offset to read from (default 0).
    offset: Option<u64>,
    /// Most bytes to return (default and maximum 4 MiB).
    limit: Option<usize>,
}

/// A step's log from an offset; `step` is the step's name or index.
#[utoipa::path(get, path = "/api/v1/builds/{id}/steps/{step}/log", params(("id" = i64, Path), ("step" = String, Path), LogQuery),
    responses((status = 200, body = LogChunk), (status = 400, body = ErrorBody, description = "not a build id, or a bad query"), (status = 404, body = ErrorBody)))]
async fn step_log(
    State(s): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<LogChunk> {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("invalid query: {}", e.body_text())))?;
    let id = parse_id(&id)?;
    let build = s.store.build(id).await?.ok_or_else(|| not_found_build(id))?;
    let steps = s.store.steps(id).await?;
    let found = steps
        .iter()
        .find(|st| st.name == step)
        .or_else(|| step.parse::<i64>().ok().and_then(|i| steps.iter().find(|st| st.idx == i)))
        .ok_or_else(|| {
            let names: Vec<&str> = steps.iter().map(|st| st.name.as_str()).collect();
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("build {id} has no step {step:?}; its steps: {}", names.join(", ")),
            )
        })?;
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(MAX_LOG_READ).clamp(1, MAX_LOG_READ);
    let idx = found.idx as u32;
    let logs = &s.logs;
    let data = tokio::task::block_in_place(|| logs.read(id, idx, offset, limit)).map_err(ApiError::internal)?;
    let next_offset = offset + data.len() as u64;
    let complete = (found.state.is_finished() || build.state.is_finished())
        && next_offset >= (found.log_size as u64).max(logs.size(id, idx));
    Ok(Json(LogChunk { build_id: id, step: found.name.clone(), offset, next_offset, data, complete }))
}

/// Uploads a source package to build: multipart fields `file` (the
/// `.changes`, `.dsc` or `.src.rpm` and every file it lists), `target`
/// (repeatable; default every target of the package's family) and `property`
/// (`KEY=VALUE`, repeatable). Every listed file is checked against the sizes
/// and checksums of the control file; a rejected upload is kept under
/// `rejected/` and the answer says why.
#[utoipa::path(post, path = "/api/v1/uploads", request_body(content_type = "multipart/form-data", description = "file, target, property fields"),
    responses((status = 200, body = UploadAccepted), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "rejected: missing file, checksum mismatch, malformed control file, unknown target, version already built")),
    security(("token" = [])))]
async fn upload_source(
    State(s): State<AppState>,
    caller: Caller,
    multipart: Result<axum::extract::Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<UploadAccepted> {
    caller.must(Permission::OwnJobs)?;
    let who = caller.name;
    use crate::uploads;
    use tokio::io::AsyncWriteExt;
    let mut multipart =
        multipart.map_err(|e| ApiError::new(e.status(), format!("invalid upload: {}", e.body_text())))?;
    let farm = s.farm();
    let data_dir = farm.data_dir();
    let upload_id = crate::auth::random_token().map_err(ApiError::internal)?[..16].to_string();
    let staging = data_dir.join("incoming").join(format!("upload-{upload_id}"));
    tokio::fs::create_dir_all(&staging).await.map_err(ApiError::internal)?;
    // Whatever happens below, the staging dir does not outlive the request.
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(staging.clone());
    let (mut names, mut targets, mut props) = (Vec::new(), Vec::new(), BTreeMap::new());
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(e.status(), format!("invalid upload: {}", e.body_text()))
    };
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        match field.name().unwrap_or_default() {
            "file" => {
                let name = field.file_name().unwrap_or_default().to_string();
                if !uploads::valid_upload_name(&name) {
                    return Err(ApiError::bad(format!(
                        "invalid file name {name:?}: one path segment of letters, digits and ._+-~:"
                    )));
                }
                if names.contains(&name) {
                    return Err(ApiError::bad(format!("{name} is in the upload twice")));
                }
                let mut file = tokio::fs::File::create(staging.join(&name)).await.map_err(ApiError::internal)?;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    file.write_all(&chunk).await.map_err(ApiError::internal)?;
                }
                file.flush().await.map_err(ApiError::internal)?;
                names.push(name);
            }
            "target" => targets.push(field.text().await.map_err(bad)?),
            "property" => {
                let text = field.text().await.map_err(bad)?;
                let (k, v) = kiln_core::props::parse_assignment(&text).map_err(ApiError::bad)?;
                props.insert(k, v);
            }
            other => {
                return Err(ApiError::bad(format!("unknown upload field {other:?}; known: file, target, property")))
            }
        }
    }
    let mut props = request_properties(&props, PropertySource::Request)?;
    let stem = names
        .iter()
        .find(|n| n.ends_with(".changes") || n.ends_with(".dsc") || n.ends_with(".src.rpm"))
        .cloned()
        .unwrap_or_else(|| format!("upload-{upload_id}"));
    let reject = |problems: Vec<String>| {
        let kept = uploads::reject(&data_dir, &staging, &stem, &problems);
        let kept = kept.map(|p| p.display().to_string()).unwrap_or_else(|e| format!("(could not be kept: {e})"));
        tracing::warn!(upload = %upload_id, by = %who, kept = %kept, "upload rejected: {}", problems.join("; "));
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("upload rejected: {}", problems.join("; ")))
    };
    let checked = {
        let (staging, names) = (staging.clone(), names.clone());
        tokio::task::spawn_blocking(move || uploads::check(&staging, &names)).await.map_err(ApiError::internal)?
    };
    let checked = match checked {
        Ok(c) => c,
        Err(problems) => return Err(reject(problems)),
    };
    if let Err(e) = kiln_core::names::check_name(&checked.source) {
        return Err(reject(vec![format!("source package name: {e}")]));
    }
    let family =
        if checked.kind == uploads::UploadKind::SrcRpm { kiln_core::Family::Rpm } else { kiln_core::Family::Deb };
    let mut problems = Vec::new();
    if targets.is_empty() {
        targets = farm.cfg.targets.iter().filter(|t| t.family == family).map(|t| t.name.clone()).collect();
        if targets.is_empty() {
            problems.push(format!("no {family} target is configured"));
        }
    }
    for t in &targets {
        match farm.cfg.target(t) {
            None => {
                let known: Vec<&str> = farm.cfg.targets.iter().map(|t| t.name.as_str()).collect();
                problems.push(format!("unknown target {t:?}; known targets: {}", known.join(", ")));
            }
            Some(target) if target.family != family => {
                problems.push(format!("target {t} builds {} packages, not {family}", target.family))
            }
            Some(_) => {
                let done = s
                    .store
                    .list_builds(&BuildFilter {
                        state: Some(BuildState::Succeeded),
                        component: Some(checked.source.clone()),
                        target: Some(t.clone()),
                        before: None,
                        limit: 1000,
                    })
                    .await?;
                if let Some(b) =
                    done.iter().find(|b| b.properties.get("version").is_some_and(|p| p.value == checked.version))
                {
                    problems.push(format!(
                        "version {} of {} was already built on {t} (build {})",
                        checked.version, checked.source, b.id
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(reject(problems));
    }
    let kept = data_dir.join("uploads").join(&upload_id);
    tokio::fs::create_dir_all(kept.parent().unwrap_or(&data_dir)).await.map_err(ApiError::internal)?;
    tokio::fs::rename(&staging, &kept).await.map_err(ApiError::internal)?;
    props.insert(
        uploads::UPLOAD_PROPERTY.into(),
        Property { value: upload_id.clone(), source: PropertySource::Request },
    );
    let builds: Vec<NewBuild> = targets
        .iter()
        .map(|t| NewBuild {
            component: checked.source.clone(),
            target: t.clone(),
            properties: props.clone(),
            depends_on: Vec::new(),
        })
        .collect();
    let reason = format!("upload of {} {}", checked.source, checked.version);
    let created = store_request(&s, &who, Some(&reason), builds).await?;
    tracing::info!(upload = %upload_id, source = %checked.source, version = %checked.version, by = %who, "upload accepted");
    Ok(Json(UploadAccepted {
        upload_id,
        source: checked.source,
        version: checked.version,
        request_id: created.request_id,
        builds: created.builds,
    }))
}

/// The files a build produced.
#[utoipa::path(get, path = "/api/v1/builds/{id}/artifacts", params(("id" = i64, Path)),
    responses((status = 200, body = [Artifact]), (status = 404, body = ErrorBody)))]
async fn list_artifacts(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Vec<Artifact>> {
    let Json(b) = get_build(State(s), Path(id)).await?;
    Ok(Json(b.artifacts))
}

/// Downloads one artifact of a build.
#[utoipa::path(get, path = "/api/v1/builds/{id}/artifacts/{name}", params(("id" = i64, Path), ("name" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", description = "the file"), (status = 404, body = ErrorBody)))]
async fn download_artifact(
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
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("build {id} has no artifact {name:?}")))?;
    let path = s.artifacts.path_of(&row.sha256).ok_or_else(|| ApiError::internal("bad checksum in the database"))?;
    let file = tokio::fs::File::open(&path).await.map_err(ApiError::internal)?;
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

/// Every configured worker, connected or not.
#[utoipa::path(get, path = "/api/v1/workers", responses((status = 200, body = [WorkerInfo])))]
async fn list_workers(State(s): State<AppState>) -> ApiResult<Vec<WorkerInfo>> {
    Ok(Json(s.workers().values().cloned().collect()))
}

/// Every builder (component × target) with its last result and queue.
#[utoipa::path(get, path = "/api/v1/builders", responses((status = 200, body = [BuilderInfo])))]
async fn list_builders(State(s): State<AppState>) -> ApiResult<Vec<BuilderInfo>> {
    let farm = s.farm();
    let stats: HashMap<(String, String), kiln_db::BuilderStats> =
        s.store.builder_stats().await?.into_iter().map(|b| ((b.component.clone(), b.target.clone()), b)).collect();
    let workers = s.workers().clone();
    let out = matrix::builders(&farm.cfg)
        .map(|b| {
            let st = stats.get(&(b.component.name.clone(), b.target.name.clone()));
            BuilderInfo {
                component: b.component.name.clone(),
                target: b.target.name.clone(),
                family: b.target.family.to_string(),
                last_build_id: st.map(|x| x.last_build_id),
                last_state: st.map(|x| x.last_state),
                queued: st.map_or(0, |x| x.queued),
                running: st.map_or(0, |x| x.running),
                workers: workers
                    .values()
                    .filter(|w| w.connected && w.targets.contains(&b.target.name))
                    .map(|w| w.name.clone())
                    .collect(),
            }
        })
        .collect();
    Ok(Json(out))
}

async fn openapi() -> impl IntoResponse {
    let mut doc = ApiDoc::openapi().merge_from(crate::users::UsersDoc::openapi());
    let mut components = doc.components.take().unwrap_or_default();
    components.add_security_scheme(
        "token",
        utoipa::openapi::security::SecurityScheme::Http(utoipa::openapi::security::Http::new(
            utoipa::openapi::security::HttpAuthScheme::Bearer,
        )),
    );
    doc.components = Some(components);
    Json(doc)
}

/// Buildbot's base change hook form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct BaseChange {
    project: Option<String>,
    repository: Option<String>,
    branch: Option<String>,
    revision: Option<String>,
    author: Option<String>,
    who: Option<String>,
    comments: Option<String>,
    /// A JSON object of properties.
    properties: Option<String>,
    #[allow(dead_code)]
    category: Option<String>,
    #[allow(dead_code)]
    when: Option<String>,
    #[allow(dead_code)]
    revlink: Option<String>,
    /// A JSON list of the paths the change touched.
    files: Option<String>,
    #[allow(dead_code)]
    codebase: Option<String>,
    #[allow(dead_code)]
    token: Option<String>,
}

/// Buildbot's base change hook: builds the component named by `project` on
/// all its targets. Compatible with `post_build_request.py`.
#[utoipa::path(post, path = "/change_hook/base", request_body(content = BaseChange, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = BuildRequestCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "no own_jobs permission"), (status = 404, body = ErrorBody),
        (status = 415, body = ErrorBody, description = "the body is not a form")),
    security(("token" = [])))]
async fn change_hook_base(
    State(s): State<AppState>,
    caller: Result<Caller, ApiError>,
    form: Result<Form<BaseChange>, FormRejection>,
) -> ApiResult<BuildRequestCreated> {
    // A token with own_jobs, unless the config opens the hook.
    let who = match caller {
        Ok(c) => {
            c.must(Permission::OwnJobs)?;
            c.name
        }
        Err(_) if s.farm().cfg.hooks.base_open => "anonymous".to_string(),
        Err(e) => return Err(e),
    };
    let Form(change) = form?;
    let project = change.project.clone().filter(|p| !p.is_empty());
    let Some(project) = project else {
        // No project: the components whose git source is this repository and branch.
        let (Some(repository), Some(branch), Some(revision)) = (&change.repository, &change.branch, &change.revision)
        else {
            return Err(ApiError::bad(
                "the change names neither a `project` (a component) nor a `repository`, `branch` and `revision`",
            ));
        };
        kiln_core::config::check_branch(branch).map_err(ApiError::bad)?;
        kiln_core::config::check_revision(revision).map_err(ApiError::bad)?;
        let files = match change.files.as_deref().filter(|f| !f.trim().is_empty()) {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<Vec<String>>(text)
                    .map_err(|e| ApiError::bad(format!("`files` is not a JSON list of paths: {e}")))?,
            ),
        };
        let found = kiln_core::change::Change {
            urls: vec![repository.clone()],
            branch: branch.clone(),
            revision: revision.clone(),
            files,
            who: change.author.clone().or(change.who.clone()).filter(|a| !a.is_empty()),
            comments: change.comments.clone().unwrap_or_default().lines().next().unwrap_or("").to_string(),
            project: None,
        };
        return match crate::hooks::submit_change(&s, &found, &format!("change hook ({who})")).await? {
            Some(created) => Ok(Json(created)),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no component builds from {repository} branch {branch} with these files"),
            )),
        };
    };
    let mut given: BTreeMap<String, String> = match change.properties.as_deref().filter(|p| !p.trim().is_empty()) {
        None => BTreeMap::new(),
        Some(text) => {
            let v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| ApiError::bad(format!("`properties` is not valid JSON: {e}")))?;
            let obj = v.as_object().ok_or_else(|| ApiError::bad("`properties` must be a JSON object"))?;
            obj.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect()
        }
    };
    let mut props = request_properties(&given, PropertySource::Request)?;
    given.clear();
    for (k, v) in [("revision", &change.revision), ("branch", &change.branch), ("repository", &change.repository)] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            given.insert(k.to_string(), v.clone());
        }
    }
    for (k, p) in request_properties(&given, PropertySource::Change)? {
        props.entry(k).or_insert(p);
    }
    let author = change.author.or(change.who).filter(|a| !a.is_empty());
    let by = match &author {
        Some(a) => format!("{a} (change hook, {who})"),
        None => format!("change hook ({who})"),
    };
    let spec = RequestSpec { components: vec![project], all: false, targets: Vec::new() };
    let created = submit(&s, &by, change.comments.as_deref(), &spec, props).await?;
    Ok(Json(created))
}

/// Store rows to API objects, with steps and live log sizes.
pub(crate) async fn to_api_builds(s: &AppState, rows: Vec<BuildRow>) -> Result<Vec<Build>, ApiError> {
    let ids: Vec<i64> = rows.iter().map(|b| b.id).collect();
    let mut steps: HashMap<i64, Vec<StepRow>> = HashMap::new();
    for st in s.store.steps_of(&ids).await? {
        steps.entry(st.build_id).or_default().push(st);
    }
    let mut artifacts: HashMap<i64, Vec<ArtifactRow>> = HashMap::new();
    for a in s.store.artifacts_of(&ids).await? {
        artifacts.entry(a.build_id).or_default().push(a);
    }
    Ok(rows
        .into_iter()
        .map(|b| {
            let st = steps.remove(&b.id).unwrap_or_default();
            let arts = artifacts.remove(&b.id).unwrap_or_default();
            to_api_build(s, b, st, arts)
        })
        .collect())
}

fn to_api_build(s: &Shared, b: BuildRow, steps: Vec<StepRow>, artifacts: Vec<ArtifactRow>) -> Build {
    let artifacts = artifacts
        .into_iter()
        .map(|a| Artifact {
            url: format!("/api/v1/builds/{}/artifacts/{}", b.id, a.name),
            name: a.name,
            size: a.size as u64,
            sha256: a.sha256,
        })
        .collect();
    Build {
        artifacts,
        id: b.id,
        request_id: b.request_id,
        component: b.component,
        target: b.target,
        state: b.state,
        reason: b.reason,
        requested_at: rfc3339(b.requested_at),
        started_at: b.started_at.map(rfc3339),
        finished_at: b.finished_at.map(rfc3339),
        requested_by: b.requested_by,
        worker: b.worker,
        attempt: b.attempt,
        depends_on: b.depends_on,
        properties: b
            .properties
            .into_iter()
            .map(|(k, p)| (k, PropertyValue { value: p.value, source: p.source }))
            .collect(),
        steps: steps
            .into_iter()
            .map(|st| Step {
                index: st.idx,
                log_size: if st.state.is_finished() { st.log_size } else { s.logs.size(b.id, st.idx as u32) as i64 },
                name: st.name,
                state: st.state,
                exit_code: st.exit_code,
                started_at: st.started_at.map(rfc3339),
                finished_at: st.finished_at.map(rfc3339),
            })
            .collect(),
    }
}
