//! The web port's errors and who is calling: [`ApiError`] (a status and
//! `{"error": "..."}`), the one mapping from [`OpError`] to a status, and
//! the [`Caller`] extractor (a bearer token, `?token=`, or a client
//! certificate from the users' CA).

use crate::caller::{Caller, PeerCertificate};
use crate::ops::OpError;
use crate::shared::Shared;
use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_proto::api::ErrorBody;
use std::sync::Arc;

/// An error answer: a status code and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::from(OpError::internal(e))
    }
}

/// One status per kind of operation error. An internal error's details
/// stay in the master's log.
impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        let status = match &e {
            OpError::NotFound(_) => StatusCode::NOT_FOUND,
            OpError::Forbidden(_) => StatusCode::FORBIDDEN,
            OpError::Conflict(_) => StatusCode::CONFLICT,
            OpError::Invalid(_) => StatusCode::BAD_REQUEST,
            OpError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            OpError::Internal(_) => {
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error; the master's log has details")
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<kiln_db::StoreError> for ApiError {
    fn from(e: kiln_db::StoreError) -> Self {
        ApiError::from(OpError::from(e))
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

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad(format!("invalid query: {}", r.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

/// The token a request carries: `Authorization: Bearer TOKEN`, else `?token=`.
pub fn request_token(parts: &Parts) -> Option<String> {
    bearer(&parts.headers).or_else(|| {
        parts.uri.query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")).map(str::to_string))
    })
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
}

/// Extracting a `Caller` checks the request's token (or certificate).
impl FromRequestParts<Arc<Shared>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        use crate::auth::AuthError;
        let Some(token) = request_token(parts) else {
            // No token: a client certificate from the users' CA is a login too.
            if let Some(PeerCertificate(Some(email))) = parts.extensions.get::<PeerCertificate>() {
                return crate::auth::user_caller(state, email).await.map_err(|e| match e {
                    AuthError::Invalid => ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        format!("the client certificate names {email}, who is not a user here"),
                    ),
                    AuthError::Busy | AuthError::Throttled => {
                        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    }
                    AuthError::Store(e) => ApiError::from(e),
                });
            }
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this action needs a token: send `Authorization: Bearer TOKEN`",
            ));
        };
        let from = parts.extensions.get::<crate::caller::PeerAddr>().map(|a| a.0);
        crate::auth::authenticate(state, &token, from).await.map_err(|e| match e {
            AuthError::Invalid => ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()),
            AuthError::Throttled => ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
            AuthError::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            AuthError::Store(e) => ApiError::from(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_error_has_one_status() {
        let cases = [
            (OpError::NotFound("x".into()), 404),
            (OpError::Forbidden("x".into()), 403),
            (OpError::Conflict("x".into()), 409),
            (OpError::Invalid("x".into()), 400),
            (OpError::Rejected("x".into()), 422),
            (OpError::Unavailable("x".into()), 503),
            (OpError::Internal("secret detail".into()), 500),
        ];
        for (e, status) in cases {
            let a = ApiError::from(e);
            assert_eq!(a.status.as_u16(), status);
            assert!(!a.message.contains("secret detail"), "{}", a.message);
        }
    }
}
