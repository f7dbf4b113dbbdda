//! The web port: the JSON API, the change hooks, the served repositories
//! and the web pages. Handlers only parse, call [`crate::ops`] and shape
//! the answer; every route is named here, in one place.

pub mod api;
mod body_limit;
mod convert;
mod durable;
mod error;
mod hooks;
mod openapi;
mod repo_files;
mod web;

pub use error::ApiError;

use crate::shared::Shared;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use std::sync::Arc;

/// Largest request body accepted (1 MiB); larger ones get 413.
pub const MAX_BODY: usize = 1024 * 1024;
/// Forges send at most 25 MB; a push event is far smaller.
const MAX_HOOK_PAYLOAD: usize = 5 * 1024 * 1024;

type AppState = Arc<Shared>;

/// Every route of the web port.
pub fn router(shared: AppState) -> Router {
    let body_idle = shared.farm().cfg.master.header_timeout;
    use api::{builders, builds, health, metrics, repos, retention, uploads, users, workers};
    let max_upload = shared.farm().cfg.master.max_artifact_size.min(usize::MAX as u64) as usize;
    let api = Router::new()
        .route("/api/v1/status", get(builders::status))
        .route("/healthz", get(health::alive))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/builds", get(builds::list).post(builds::create))
        .route("/api/v1/builds/{id}", get(builds::get))
        .route("/api/v1/builds/{id}/cancel", post(builds::cancel))
        .route("/api/v1/builds/{id}/rebuild", post(builds::rebuild))
        .route("/api/v1/builds/{id}/pin", post(retention::pin))
        .route("/api/v1/gc", post(retention::gc))
        .route("/api/v1/builds/{id}/steps/{step}/log", get(builds::step_log))
        .route("/api/v1/builds/{id}/artifacts", get(builds::list_artifacts))
        .route("/api/v1/builds/{id}/artifacts/{name}", get(builds::download_artifact))
        .route("/api/v1/workers", get(workers::list))
        .route("/api/v1/workers/{name}/drain", post(workers::drain))
        .route("/api/v1/workers/{name}/resume", post(workers::resume))
        .route("/api/v1/builders", get(builders::builders))
        .route("/api/v1/openapi.json", get(openapi::openapi))
        .route("/api/v1/repos", get(repos::list_channels))
        .route("/api/v1/repos/promote", post(repos::promote))
        .route("/api/v1/repos/{channel}/packages", get(repos::list_packages))
        .route("/api/v1/repos/{channel}/remove", post(repos::remove))
        .route("/api/v1/repos/{channel}/snapshots", get(repos::list_snapshots).post(repos::snapshot))
        .route("/api/v1/repos/{channel}/rollback", post(repos::rollback))
        .route("/api/v1/repos/{channel}/resign", post(repos::resign))
        .route("/api/v1/repos/{channel}/advisories", get(repos::list_advisories).post(repos::add_advisory))
        .route("/api/v1/repos/{channel}/advisories/{id}", delete(repos::remove_advisory))
        .route("/api/v1/users", get(users::list_users).post(users::add_user))
        .route("/api/v1/users/{email}", delete(users::remove_user))
        .route("/api/v1/tokens", get(users::list_tokens).post(users::create_token))
        .route("/api/v1/tokens/{id}", delete(users::revoke_token))
        .route("/change_hook/base", post(hooks::base::change_hook_base))
        .fallback(|| async { ApiError::not_found("no such page; the API lives under /api/v1") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(move |req, next| body_limit::refuse_oversized(MAX_BODY, req, next)));
    let uploads = Router::new()
        .route("/api/v1/uploads", post(uploads::upload))
        .layer(DefaultBodyLimit::max(max_upload))
        .layer(axum::middleware::from_fn(move |req, next| body_limit::refuse_oversized(max_upload, req, next)));
    let forge_hooks = Router::new()
        .route("/change_hook/github", post(hooks::forges::github))
        .route("/change_hook/gitlab", post(hooks::forges::gitlab))
        .route("/change_hook/gitea", post(hooks::forges::gitea))
        .route("/change_hook/forgejo", post(hooks::forges::gitea))
        .layer(DefaultBodyLimit::max(MAX_HOOK_PAYLOAD))
        .layer(axum::middleware::from_fn(move |req, next| body_limit::refuse_oversized(MAX_HOOK_PAYLOAD, req, next)));
    let files =
        Router::new().route("/repos/{channel}/{*path}", get(repo_files::serve_file).head(repo_files::serve_file));
    let pages = Router::new()
        .route("/", get(web::console::page))
        .route("/console", get(web::console::page))
        .route("/builders", get(web::builders::list))
        .route("/builders/{component}/{target}", get(web::builders::one))
        .route("/force", post(web::builders::force))
        .route("/builds/{id}", get(web::build::page))
        .route("/builds/{id}/cancel", post(web::build::cancel))
        .route("/builds/{id}/rebuild", post(web::build::rebuild))
        .route("/packages", get(web::packages::page))
        .route("/workers", get(web::workers::page))
        .route("/queue", get(web::queue::page))
        .route("/workers/{name}/drain", post(web::workers::drain))
        .route("/workers/{name}/resume", post(web::workers::resume))
        .route("/repos", get(web::repos::list))
        .route("/repos/{channel}", get(web::repos::channel))
        .route("/repos/{channel}/change", post(web::repos::change))
        .route("/login", get(web::login::page).post(web::login::login))
        .route("/logout", post(web::login::logout))
        .route("/events", get(web::live::events))
        .route("/static/kiln.css", get(web::layout::css))
        .route("/static/kiln.js", get(web::layout::js));
    api.merge(uploads)
        .merge(forge_hooks)
        .merge(files)
        .merge(pages)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), durable::answer_when_synced))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), web::session::read_gate))
        // A body that stops arriving (a slow client holding the connection
        // and its buffers) ends the request after as long as its headers
        // may take.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_idle))
        .with_state(shared)
}
