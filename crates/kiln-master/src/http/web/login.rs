//! Logging in with an API token (a session cookie and its CSRF token)
//! and logging out.

use super::layout::{frame, page_error};
use super::session::{authorize, cookie_value, ctx, CsrfForm, COOKIE};
use crate::caller::{random_token, Session};
use crate::shared::{Shared, SESSION_TTL};
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;

type AppState = Arc<Shared>;

#[derive(Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only local paths are followed after login (no open redirect).
/// Browsers drop tabs, newlines and spaces in a URL and read `\` as `/`, so
/// `/\t/evil.example` would leave the site: a path holding any of them is refused.
fn safe_next(next: Option<&str>) -> String {
    let local = |n: &str| {
        n.starts_with('/')
            && !n.starts_with("//")
            && !n.chars().any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    };
    match next {
        Some(n) if local(n) => n.to_string(),
        _ => "/".to_string(),
    }
}

pub async fn page(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let c = ctx(&s, &headers, "/login");
    let body = html! {
        h1 { "Log in" }
        form.login method="post" action="/login" {
            input type="hidden" name="next" value=(safe_next(q.next.as_deref()));
            label { "API token " input type="password" name="token" autocomplete="current-password" required; }
            p.hint { "The master writes its admin token to DATA_DIR/admin.token." }
            button type="submit" { "Log in" }
        }
    };
    frame(&c, "Log in", false, body)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

pub async fn login(
    State(s): State<AppState>,
    from: Option<axum::Extension<crate::caller::PeerAddr>>,
    Form(f): Form<LoginForm>,
) -> Response {
    let from = from.map(|a| a.0 .0);
    let caller = match crate::auth::authenticate(&s, f.token.trim(), from).await {
        Ok(c) => c,
        Err(crate::auth::AuthError::Invalid) => {
            return (StatusCode::UNAUTHORIZED, page_error("Log in failed", "That token is not valid.")).into_response()
        }
        Err(crate::auth::AuthError::Throttled) => {
            let page = page_error("Log in failed", "Too many failed log-ins from here; wait a minute.");
            return (StatusCode::TOO_MANY_REQUESTS, page).into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot check a token at login");
            let page = page_error("Log in failed", "The token cannot be checked now; the master's log says why.");
            return (StatusCode::SERVICE_UNAVAILABLE, page).into_response();
        }
    };
    let token_id = crate::caller::split_user_token(f.token.trim()).map(|(id, _)| id);
    let (Ok(id), Ok(csrf)) = (random_token(), random_token()) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, page_error("Log in failed", "no randomness")).into_response();
    };
    s.sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), Session { caller, token_id, csrf, created: Instant::now() });
    let mut r = Redirect::to(&safe_next(f.next.as_deref())).into_response();
    // Secure whenever the master is reached over TLS.
    let farm = s.farm();
    let secure = if farm.cfg.master.tls.is_some() || farm.cfg.master.public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", SESSION_TTL.as_secs());
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub async fn logout(State(s): State<AppState>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    if authorize(&s, &headers, f.csrf.as_deref()).await.is_ok() {
        if let Some(id) = cookie_value(&headers) {
            s.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        }
    }
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("kiln_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(super::safe_next(Some("/builds/7?step=1")), "/builds/7?step=1");
        for off_site in
            ["//evil.example", "/\t/evil.example", "/\\evil.example", "/ /evil.example", "https://x", "/\n/x"]
        {
            assert_eq!(super::safe_next(Some(off_site)), "/", "{off_site:?}");
        }
        assert_eq!(super::safe_next(None), "/");
    }
}
