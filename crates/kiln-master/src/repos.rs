//! Repositories over HTTP: the served trees under `/repos/CHANNEL/` (what
//! `apt` and `dnf` read) and the `/api/v1/repos` API that lists and changes
//! them. Changes go to the publisher's queue; reads come from the store and
//! the served generation.

use crate::api::{ApiError, Caller};
use crate::clock::rfc3339;
use crate::publisher::{PublishRequest, RepoOp};
use crate::shared::Shared;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kiln_core::perm::Permission;
use kiln_proto::api::{ChannelInfo, PackageInfo, PromoteBody, RemoveBody, RepoChange, SnapshotBody, SnapshotInfo};
use serde::Deserialize;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use tokio::sync::oneshot;
use tower::ServiceExt;

type AppState = Arc<Shared>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/repos/{channel}/{*path}", get(serve_file).head(serve_file))
        .route("/api/v1/repos", get(list_channels))
        .route("/api/v1/repos/promote", post(promote))
        .route("/api/v1/repos/{channel}/packages", get(list_packages))
        .route("/api/v1/repos/{channel}/remove", post(remove))
        .route("/api/v1/repos/{channel}/snapshots", get(list_snapshots).post(snapshot))
        .route("/api/v1/repos/{channel}/rollback", post(rollback))
}

fn channel_root(s: &Shared, channel: &str) -> Result<std::path::PathBuf, ApiError> {
    let farm = s.farm();
    if farm.cfg.channel(channel).is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no channel named {channel:?}")));
    }
    Ok(farm.data_dir().join("repos").join(channel))
}

/// Content types for what repositories hold (the rest by extension).
fn content_type(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    Some(match name {
        "InRelease" | "Release" | "Packages" | "Sources" => "text/plain; charset=utf-8",
        "Release.gpg" => "application/pgp-signature",
        "key.asc" => "application/pgp-keys",
        "key.gpg" => "application/octet-stream",
        _ if name.ends_with(".deb") || name.ends_with(".udeb") => "application/vnd.debian.binary-package",
        _ if name.ends_with(".rpm") => "application/x-rpm",
        _ if name.ends_with(".dsc") => "text/plain; charset=utf-8",
        _ if name.ends_with(".xml") => "application/xml",
        _ if name.ends_with(".asc") => "application/pgp-signature",
        _ if name.ends_with(".xz") => "application/x-xz",
        _ if name.ends_with(".zst") => "application/zstd",
        _ if name.ends_with(".gz") => "application/gzip",
        _ => return None,
    })
}

/// A file of a channel's served generation, with Range, Last-Modified and
/// an ETag from the file's size and modification time.
async fn serve_file(
    State(s): State<AppState>,
    Path((channel, path)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let root = channel_root(&s, &channel)?.join("current");
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("{channel}/{path}: no such file"));
    if path.split('/').any(|c| c == ".." || c.starts_with('.') && c.len() > 1) {
        return Err(not_found());
    }
    let file = root.join(&path);
    let meta = tokio::fs::metadata(&file).await.map_err(|_| not_found())?;
    if !meta.is_file() {
        return Err(not_found());
    }
    let etag = format!("\"{:x}-{:x}\"", meta.len(), meta.mtime_nsec() as u64 ^ ((meta.mtime() as u64) << 30));
    if req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains(&etag)) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(header::ETAG, HeaderValue::from_str(&etag).map_err(ApiError::internal)?);
        return Ok(r);
    }
    // ServeDir does Range, If-Modified-Since and HEAD; it sees the path
    // relative to the channel's served tree.
    let (mut parts, body) = req.into_parts();
    parts.uri = format!("/{path}").parse().map_err(|_| not_found())?;
    let res = tower_http::services::ServeDir::new(&root)
        .oneshot(Request::from_parts(parts, body))
        .await
        .map_err(ApiError::internal)?;
    let mut res = res.map(Body::new);
    if res.status().is_success() {
        let h = res.headers_mut();
        h.insert(header::ETAG, HeaderValue::from_str(&etag).map_err(ApiError::internal)?);
        if let Some(ct) = content_type(&path) {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        // Indexes change with every publish; packages never change under their name.
        let cache = if path.contains("/pool/") || path.contains("/Packages/") || path.contains("/by-hash/") {
            "public, max-age=86400"
        } else {
            "no-cache"
        };
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    }
    Ok(res)
}

async fn op(s: &Shared, op: RepoOp) -> Result<Json<RepoChange>, ApiError> {
    let (tx, rx) = oneshot::channel();
    s.publisher.send(PublishRequest::Op(op, tx)).map_err(ApiError::internal)?;
    match rx.await.map_err(ApiError::internal)? {
        Ok(message) => Ok(Json(RepoChange { message })),
        Err(e) if e.contains("not in channel") || e.starts_with("no channel") || e.contains("has no snapshot") => {
            Err(ApiError::new(StatusCode::NOT_FOUND, e))
        }
        Err(e) => Err(ApiError::new(StatusCode::CONFLICT, e)),
    }
}

/// Every channel, with its revision and where it is served.
async fn list_channels(State(s): State<AppState>) -> Result<Json<Vec<ChannelInfo>>, ApiError> {
    let farm = s.farm();
    let base = farm.cfg.master.public_url();
    let mut out = Vec::new();
    for ch in &farm.cfg.channels {
        let revision = s.store.channel_revision(&ch.name).await?;
        let packages = s.store.packages(&ch.name).await?.len();
        let fingerprint = s
            .public_keys
            .get(&ch.name)
            .and_then(|armored| kiln_repo::key::fingerprint_of_public(armored).ok())
            .unwrap_or_default();
        out.push(ChannelInfo {
            name: ch.name.clone(),
            accepts: ch.accepts.as_str().into(),
            promote_to: ch.promote_to.clone(),
            revision,
            packages,
            url: format!("{base}/repos/{}/", ch.name),
            fingerprint,
        });
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackageQuery {
    /// Glob on the package name, e.g. `lib*`.
    filter: Option<String>,
    /// Only this target's repository (an rpm target's name, or a deb target's suite).
    target: Option<String>,
}

async fn list_packages(
    State(s): State<AppState>,
    Path(channel): Path<String>,
    Query(q): Query<PackageQuery>,
) -> Result<Json<Vec<PackageInfo>>, ApiError> {
    channel_root(&s, &channel)?;
    let farm = s.farm();
    let repo_filter = match &q.target {
        None => None,
        Some(t) => Some(match farm.cfg.target(t) {
            Some(target) if target.family == kiln_core::config::Family::Deb => {
                format!("apt:{}", target.suite.as_deref().unwrap_or("unstable"))
            }
            Some(target) => format!("yum:{}", target.name),
            None => return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no target named {t:?}"))),
        }),
    };
    let pattern = match &q.filter {
        Some(g) => Some(
            kiln_core::glob::Pattern::new(g)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("filter: {e}")))?,
        ),
        None => None,
    };
    let rows = s.store.packages(&channel).await?;
    let out = rows
        .into_iter()
        .filter(|p| pattern.as_ref().is_none_or(|g| g.matches(&p.name)))
        .filter(|p| repo_filter.as_ref().is_none_or(|r| &p.repo == r))
        .map(|p| PackageInfo {
            path: served_path(&p),
            name: p.name,
            version: p.version,
            arch: p.arch,
            kind: p.kind,
            repo: p.repo,
            size: p.size,
            sha256: p.sha256,
            build_id: p.build_id,
            published_at: rfc3339(p.published_at),
        })
        .collect();
    Ok(Json(out))
}

/// Where a pool file is served, relative to the channel's URL.
fn served_path(p: &kiln_db::PackageRow) -> String {
    if let Some(rest) = p.file.strip_prefix("pool/apt/") {
        return format!("apt/pool/{rest}");
    }
    if let Some(rest) = p.file.strip_prefix("pool/yum/") {
        if let Some((target, file)) = rest.split_once('/') {
            return format!("yum/{target}/Packages/{file}");
        }
    }
    p.file.clone()
}

async fn remove(
    State(s): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
    Json(b): Json<RemoveBody>,
) -> Result<Json<RepoChange>, ApiError> {
    caller.must(Permission::ServerAdmin)?;
    op(&s, RepoOp::Remove { channel, name: b.name, version: b.version }).await
}

async fn promote(
    State(s): State<AppState>,
    caller: Caller,
    Json(b): Json<PromoteBody>,
) -> Result<Json<RepoChange>, ApiError> {
    caller.must(Permission::ServerAdmin)?;
    op(&s, RepoOp::Promote { name: b.name, version: b.version, from: b.from, to: b.to, replace: b.replace }).await
}

async fn snapshot(
    State(s): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
    Json(b): Json<SnapshotBody>,
) -> Result<Json<RepoChange>, ApiError> {
    caller.must(Permission::ServerAdmin)?;
    op(&s, RepoOp::Snapshot { channel, name: b.name }).await
}

async fn rollback(
    State(s): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
    Json(b): Json<SnapshotBody>,
) -> Result<Json<RepoChange>, ApiError> {
    caller.must(Permission::ServerAdmin)?;
    op(&s, RepoOp::Rollback { channel, name: b.name }).await
}

async fn list_snapshots(
    State(s): State<AppState>,
    Path(channel): Path<String>,
) -> Result<Json<Vec<SnapshotInfo>>, ApiError> {
    channel_root(&s, &channel)?;
    let rows = s.store.snapshots(&channel).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| SnapshotInfo {
                name: r.name,
                created_at: rfc3339(r.created_at),
                revision: r.revision,
                packages: r.packages,
            })
            .collect(),
    ))
}
