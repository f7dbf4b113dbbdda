//! `/api/v1/uploads`: source packages to build, as multipart fields `file`
//! (the `.changes`, `.dsc` or `.src.rpm` and every file it lists), `target`
//! (repeatable; default every target of the package's family) and
//! `property` (`KEY=VALUE`, repeatable). The files are streamed into the
//! operation's staging area; [`crate::ops::uploads::accept`] decides.

use crate::caller::Caller;
use crate::http::ApiError;
use crate::ops;
use crate::ops::uploads::UploadChoice;
use crate::shared::Shared;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::Json;
use kiln_proto::api::{ErrorBody, UploadAccepted};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Uploads a source package to build. Every listed file is checked against
/// the sizes and checksums of the control file; a rejected upload is kept
/// under `rejected/` and the answer says why.
#[utoipa::path(post, path = "/api/v1/uploads", request_body(content_type = "multipart/form-data", description = "file, target, property fields"),
    responses((status = 200, body = UploadAccepted), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "rejected: missing file, checksum mismatch, malformed control file, unknown target, version already built")),
    security(("token" = [])))]
pub async fn upload(
    State(s): State<Arc<Shared>>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<UploadAccepted>, ApiError> {
    let mut staging = ops::uploads::begin(&s, &caller)?;
    let mut multipart =
        multipart.map_err(|e| ApiError::new(e.status(), format!("invalid upload: {}", e.body_text())))?;
    let bad = |e: MultipartError| ApiError::new(e.status(), format!("invalid upload: {}", e.body_text()));
    let mut choice = UploadChoice::default();
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        match field.name().unwrap_or_default() {
            "file" => {
                let path = staging.file(field.file_name().unwrap_or_default())?;
                let mut file = tokio::fs::File::create(&path).await.map_err(ApiError::internal)?;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    file.write_all(&chunk).await.map_err(ApiError::internal)?;
                }
                file.flush().await.map_err(ApiError::internal)?;
            }
            "target" => choice.targets.push(field.text().await.map_err(bad)?),
            "property" => {
                let text = field.text().await.map_err(bad)?;
                let (k, v) = kiln_core::props::parse_assignment(&text).map_err(ApiError::bad)?;
                choice.properties.insert(k, v);
            }
            other => {
                return Err(ApiError::bad(format!("unknown upload field {other:?}; known: file, target, property")))
            }
        }
    }
    let accepted = ops::uploads::accept(&s, &caller, staging, choice).await?;
    let created = crate::http::convert::created(&s, accepted.created);
    Ok(Json(UploadAccepted {
        upload_id: accepted.upload_id,
        source: accepted.source,
        version: accepted.version,
        request_id: created.request_id,
        builds: created.builds,
    }))
}
