//! The OpenAPI document of `/api/v1` (`/api/v1/openapi.json`).

use super::api::{builders, builds, retention, users, workers};
use super::hooks;
use axum::response::IntoResponse;
use axum::Json;
use kiln_proto::api::{
    Build, BuildPage, BuildRequestBody, BuildRequestCreated, BuilderInfo, DiskStatus, DrainBody, Drained, ErrorBody,
    GcFreed, GcReport, GcRequest, LogChunk, MasterInfo, PinRequest, PropertyValue, Status, Step, WorkerInfo,
};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kiln",
        description = "The kiln build farm's JSON API. Reads are anonymous unless the master says otherwise; mutations need a token (Authorization: Bearer TOKEN) whose user holds the permission they need (own_jobs, kill_any_job, modify_users, server_admin)."
    ),
    paths(
        builders::status,
        builds::list,
        builds::create,
        builds::get,
        builds::cancel,
        builds::rebuild,
        builds::step_log,
        retention::gc,
        retention::pin,
        workers::list,
        workers::drain,
        workers::resume,
        builders::builders,
        hooks::base::change_hook_base
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
        Drained,
        DrainBody,
        BuilderInfo,
        Status,
        MasterInfo,
        DiskStatus,
        GcRequest,
        GcReport,
        GcFreed,
        PinRequest,
        ErrorBody
    ))
)]
struct ApiDoc;

pub async fn openapi() -> impl IntoResponse {
    let mut doc = ApiDoc::openapi().merge_from(users::UsersDoc::openapi());
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
