//! Users and their API tokens over the API: `/api/v1/users` (modify_users)
//! and `/api/v1/tokens` (one's own; anyone's with modify_users). Tokens
//! are shown once, when made; the store keeps argon2 hashes.

use crate::api::{ApiError, Caller};
use crate::clock::{now_us, rfc3339};
use crate::shared::Shared;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use kiln_core::perm::{check_email, Permission, Permissions};
use kiln_proto::api::{ErrorBody, NewToken, NewUser, TokenCreated, TokenInfo, UserInfo};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::{IntoParams, OpenApi};

type AppState = Arc<Shared>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users", get(list_users).post(add_user))
        .route("/api/v1/users/{email}", delete(remove_user))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
}

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
async fn list_users(State(s): State<AppState>, caller: Caller) -> Result<Json<Vec<UserInfo>>, ApiError> {
    caller.must(Permission::ModifyUsers)?;
    Ok(Json(s.store.users().await?.into_iter().map(user_info).collect()))
}

/// Adds a user and makes their first token (shown once). Nobody grants a
/// permission they do not hold themselves.
#[utoipa::path(post, path = "/api/v1/users", request_body = NewUser,
    responses((status = 200, body = TokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "the user exists"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"), (status = 422, body = ErrorBody, description = "the JSON does not have the expected shape")),
    security(("token" = [])))]
async fn add_user(
    State(s): State<AppState>,
    caller: Caller,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<Json<TokenCreated>, ApiError> {
    caller.must(Permission::ModifyUsers)?;
    let Json(body) = body?;
    check_email(&body.email).map_err(ApiError::bad)?;
    let perms = Permissions::parse(&body.permissions.join(",")).map_err(ApiError::bad)?;
    for p in perms.iter() {
        caller.must(p)?;
    }
    let Some(user) = s.store.add_user(&body.email, &perms.to_string(), now_us()).await? else {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("user {} exists already", body.email)));
    };
    tracing::info!(user = %user.email, permissions = %perms, by = %caller.name, "user added");
    Ok(Json(make_token(&s, &user, "first").await?))
}

/// Removes a user and every token of theirs.
#[utoipa::path(delete, path = "/api/v1/users/{email}", params(("email" = String, Path)),
    responses((status = 200, body = UserInfo), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("token" = [])))]
async fn remove_user(
    State(s): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    caller.must(Permission::ModifyUsers)?;
    let Some(user) = s.store.user(&email).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no user {email}")));
    };
    // Only a server admin removes one.
    if Permissions::parse(&user.permissions).unwrap_or_default().allows(Permission::ServerAdmin) {
        caller.must(Permission::ServerAdmin)?;
    }
    s.store.remove_user(&email).await?;
    s.checked_tokens.clear();
    tracing::info!(user = %email, by = %caller.name, "user removed");
    Ok(Json(user_info(user)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct TokenQuery {
    /// Someone else's tokens (needs modify_users); `*` for everyone's.
    user: Option<String>,
}

/// Tokens (never their values): one's own, or another user's.
#[utoipa::path(get, path = "/api/v1/tokens", params(TokenQuery),
    responses((status = 200, body = [TokenInfo]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("token" = [])))]
async fn list_tokens(
    State(s): State<AppState>,
    caller: Caller,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad(e.body_text()))?;
    let whose = q.user.unwrap_or_else(|| caller.name.clone());
    if whose != caller.name {
        caller.must(Permission::ModifyUsers)?;
    }
    let rows = s.store.tokens((whose != "*").then_some(whose.as_str())).await?;
    Ok(Json(rows.into_iter().map(token_info).collect()))
}

/// Makes a token: one's own, or (with modify_users) another user's.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = NewToken,
    responses((status = 200, body = TokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 415, body = ErrorBody, description = "the body is not JSON"), (status = 422, body = ErrorBody, description = "the JSON does not have the expected shape")),
    security(("token" = [])))]
async fn create_token(
    State(s): State<AppState>,
    caller: Caller,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Result<Json<TokenCreated>, ApiError> {
    let Json(body) = body?;
    let whose = body.user.unwrap_or_else(|| caller.name.clone());
    if whose != caller.name {
        caller.must(Permission::ModifyUsers)?;
    }
    let Some(user) = s.store.user(&whose).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no user {whose} (the admin token is not a user)")));
    };
    let name = body.name.unwrap_or_else(|| "token".into());
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad("a token's name is 1 to 100 printable characters"));
    }
    Ok(Json(make_token(&s, &user, &name).await?))
}

async fn make_token(s: &Shared, user: &kiln_db::UserRow, name: &str) -> Result<TokenCreated, ApiError> {
    let (secret, hash) = tokio::task::spawn_blocking(crate::auth::new_token_secret)
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let id = s.store.add_token(user.id, name, &hash, now_us()).await?;
    tracing::info!(user = %user.email, token = id, "token made");
    Ok(TokenCreated {
        id,
        user: user.email.clone(),
        name: name.to_string(),
        token: crate::auth::user_token(id, &secret),
    })
}

/// Revokes a token: one's own, or anyone's with modify_users.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = TokenInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = [])))]
async fn revoke_token(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::bad(format!("{id:?} is not a token id")))?;
    let Some(token) = s.store.live_token(id).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no live token {id}")));
    };
    if token.email != caller.name {
        caller.must(Permission::ModifyUsers)?;
    }
    s.store.revoke_token(id, now_us()).await?;
    s.checked_tokens.clear();
    tracing::info!(token = id, user = %token.email, by = %caller.name, "token revoked");
    let revoked = s.store.token(id).await?.unwrap_or(token);
    Ok(Json(token_info(revoked)))
}
