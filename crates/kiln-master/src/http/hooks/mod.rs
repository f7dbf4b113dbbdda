//! Change hooks: forges' events (`forges`), checked against the forge's
//! secret before anything else, and Buildbot's base hook (`base`). Both
//! hand what they learn to [`crate::ops::requests`] and
//! [`crate::ops::pulls`].

pub mod base;
pub mod forges;

use crate::http::ApiError;
use axum::http::{header::CONTENT_TYPE, HeaderMap};

/// Whether the body is sent as a form (`application/x-www-form-urlencoded`).
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// The fields of a form body; a field that is not UTF-8 is a 400 naming it.
fn form_fields(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    kiln_core::form::parse_form(body).map_err(|e| ApiError::bad(e.to_string()))
}
