//! The served repositories: `/repos/CHANNEL/...` are the files of each
//! channel's served generation, what `apt` and `dnf` read, with Range,
//! Last-Modified and ETags.

use crate::http::ApiError;
use crate::shared::Shared;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use tower::ServiceExt;

fn channel_root(s: &Shared, channel: &str) -> Result<std::path::PathBuf, ApiError> {
    let farm = s.farm();
    if farm.cfg.channel(channel).is_none() {
        return Err(ApiError::not_found(format!("no channel named {channel:?}")));
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
pub async fn serve_file(
    State(s): State<Arc<Shared>>,
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
    // Indexes change with every publish; packages never change under their name.
    let immutable = path.contains("/pool/") || path.contains("/Packages/") || path.contains("/by-hash/");
    // ServeDir does Range, If-Modified-Since and HEAD; it sees the path
    // relative to the channel's served tree.
    let (mut parts, body) = req.into_parts();
    if !immutable {
        // If-Modified-Since names a whole second, and two generations can
        // be written within one: apt, revalidating an InRelease it fetched
        // in that second, would be told "not modified" and keep the old
        // indexes. An index is sent whole instead (apt still fetches only
        // the indexes whose hashes changed); the ETag, which holds the
        // nanoseconds, still answers 304.
        parts.headers.remove(header::IF_MODIFIED_SINCE);
    }
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
        let cache = if immutable { "public, max-age=86400" } else { "no-cache" };
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    }
    Ok(res)
}
