//! `/api/v1/users` and `/api/v1/tokens`: the shapes of
//! [`crate::ops::users`] on the API. Tokens are shown once, when made.

use crate::caller::Caller;
use crate::clock::rfc3339;
use crate::http::ApiError;
use crate::ops;
use crate::ops::users::MadeToken;
use crate::shared::Shared;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use kiln_core::perm::Permissions;
use kiln_proto::api::{ErrorBody, NewToken, NewUser, TokenCreated, TokenInfo, UserInfo};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::{IntoParams, OpenApi};

type AppState = Arc<Shared>;

#[derive(OpenApi)]
#[openapi(
    paths(list_users, add_user, remove_user, list_tokens, create_token, revoke_token),
    components(schemas(UserInfo, NewUser, NewToken, TokenCreated, TokenInfo))
)]
pub struct UsersDoc;

fn user_info(row: kiln_db::UserRow) -> UserInfo {
    let perms = Permissions::parse(&row.permissions).unwrap_or_default();
    UserInfo {
        email: row.email,
        permissions: perms.iter().map(|p| p.as_str().to_string()).collect(),
        created_at: rfc3339(row.created_at),
    }
}

fn token_info(row: kiln_db::TokenRow) -> TokenInfo {
    TokenInfo {
        id: row.id,
        user: row.email,
        name: row.name,
        created_at: rfc3339(row.created_at),
        revoked_at: row.revoked_at.map(rfc3339),
    }
}

/// Every user and their permissions.
#[utoipa::path(get, path = "/api/v1/users",
    responses((status = 200, body = [UserInfo]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("token" = [])))]
pub async fn list_users(State(s): State<AppState>, caller: Caller) -> Result<Json<Vec<UserInfo>>, ApiError> {
    Ok(Json(ops::users::list_users(&s, &caller).await?.into_iter().map(user_info).collect()))
}

/// Adds a user and makes their first token (shown once). Nobody grants a
/// permission they do not hold themselves.
#[utoipa::path(post, path = "/api/v1/users", request_body = NewUser,
    responses((status = 200, body = TokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "the user exists"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"), (status = 422, body = ErrorBody, description = "the JSON does not have the expected shape")),
    security(("token" = [])))]
pub async fn add_user(
    State(s): State<AppState>,
    caller: Caller,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<Json<TokenCreated>, ApiError> {
    let Json(body) = body?;
    Ok(Json(token_created(ops::users::add_user(&s, &caller, &body.email, &body.permissions).await?)))
}

/// Removes a user and every token of theirs.
#[utoipa::path(delete, path = "/api/v1/users/{email}", params(("email" = String, Path)),
    responses((status = 200, body = UserInfo), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("token" = [])))]
pub async fn remove_user(
    State(s): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    Ok(Json(user_info(ops::users::remove_user(&s, &caller, &email).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    /// Someone else's tokens (needs modify_users); `*` for everyone's.
    user: Option<String>,
}

/// Tokens (never their values): one's own, or another user's.
#[utoipa::path(get, path = "/api/v1/tokens", params(TokenQuery),
    responses((status = 200, body = [TokenInfo]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("token" = [])))]
pub async fn list_tokens(
    State(s): State<AppState>,
    caller: Caller,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad(e.body_text()))?;
    Ok(Json(ops::users::list_tokens(&s, &caller, q.user).await?.into_iter().map(token_info).collect()))
}

/// Makes a token: one's own, or (with modify_users) another user's.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = NewToken,
    responses((status = 200, body = TokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 415, body = ErrorBody, description = "the body is not JSON"), (status = 422, body = ErrorBody, description = "the JSON does not have the expected shape")),
    security(("token" = [])))]
pub async fn create_token(
    State(s): State<AppState>,
    caller: Caller,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Result<Json<TokenCreated>, ApiError> {
    let Json(body) = body?;
    Ok(Json(token_created(ops::users::create_token(&s, &caller, body.user, body.name).await?)))
}

fn token_created(t: MadeToken) -> TokenCreated {
    TokenCreated { id: t.id, user: t.user, name: t.name, token: t.token }
}

/// Revokes a token: one's own, or anyone's with modify_users.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = TokenInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = [])))]
pub async fn revoke_token(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::bad(format!("{id:?} is not a token id")))?;
    Ok(Json(token_info(ops::users::revoke_token(&s, &caller, id).await?)))
}
