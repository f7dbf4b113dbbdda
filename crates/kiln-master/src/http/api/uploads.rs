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
                // On disk before the upload is answered (its builds read it).
                file.sync_all().await.map_err(ApiError::internal)?;
            }
            "target" => choice.targets.push(capped_text(&mut field, MAX_TARGET).await?),
            "property" => {
                let text = capped_text(&mut field, kiln_core::props::MAX_VALUE_LEN + 100).await?;
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

/// The longest target name a form field may hold.
const MAX_TARGET: usize = 256;

/// A text field of the upload form, refused past `max` bytes: the form may
/// be as large as an upload, its text fields may not.
async fn capped_text(field: &mut axum::extract::multipart::Field<'_>, max: usize) -> Result<String, ApiError> {
    let name = field.name().unwrap_or_default().to_string();
    let mut bytes = Vec::new();
    while let Some(chunk) =
        field.chunk().await.map_err(|e| ApiError::new(e.status(), format!("invalid upload: {}", e.body_text())))?
    {
        if bytes.len() + chunk.len() > max {
            return Err(ApiError::bad(format!("the upload field {name} is longer than {max} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::bad(format!("the upload field {name} is not UTF-8")))
}
