//! Browser sessions: the cookie, the session a form's POST needs (logged
//! in, CSRF token matching), and the read gate for masters that do not
//! allow anonymous reading.

use super::layout::{page_error, Ctx};
use crate::caller::{tokens_match, PeerCertificate, Session};
use crate::http::error::bearer;
use crate::http::ApiError;
use crate::shared::Shared;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::sync::Arc;

pub const COOKIE: &str = "kiln_session";

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::COOKIE)?.to_str().ok()?;
    raw.split(';').find_map(|kv| kv.trim().strip_prefix(&format!("{COOKIE}=")).map(str::to_string))
}

/// Who is looking at `path`.
pub fn ctx(s: &Shared, headers: &HeaderMap, path: &str) -> Ctx {
    let disk_warning = crate::ops::disk::status(s).and_then(|d| d.warning);
    Ctx { session: session(s, headers), path: path.to_string(), disk_warning }
}

pub fn session(s: &Shared, headers: &HeaderMap) -> Option<Session> {
    s.session(&cookie_value(headers)?)
}

/// Why a form's POST has no session to act for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    /// Nobody is logged in.
    LoggedOut,
    /// The form's CSRF token is not the session's.
    FormExpired,
}

impl From<NoSession> for Response {
    fn from(why: NoSession) -> Response {
        match why {
            NoSession::LoggedOut => {
                (StatusCode::UNAUTHORIZED, page_error("Log in first", "This action needs you to log in."))
                    .into_response()
            }
            NoSession::FormExpired => {
                let text = "The form's token did not match; reload the page and try again.";
                (StatusCode::FORBIDDEN, page_error("Form expired", text)).into_response()
            }
        }
    }
}

/// The session, checked against the store: its token still live, its user
/// still there, with the permissions they hold now. A session whose token
/// was revoked or whose user was removed (on any master) ends here.
pub async fn checked_session(s: &Shared, headers: &HeaderMap) -> Option<Session> {
    let id = cookie_value(headers)?;
    let mut sess = s.session(&id)?;
    let Some(token_id) = sess.token_id else { return Some(sess) };
    let live = match s.store.live_token(token_id).await {
        Ok(Some(row)) => crate::auth::user_caller(s, &row.email).await.ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "cannot check a session's token");
            return None;
        }
    };
    match live {
        Some(caller) => {
            sess.caller = caller;
            Some(sess)
        }
        None => {
            s.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            None
        }
    }
}

/// The session a POST needs: logged in (checked now), and the form's CSRF
/// token matches.
pub async fn authorize(s: &Shared, headers: &HeaderMap, form_csrf: Option<&str>) -> Result<Session, NoSession> {
    let sess = checked_session(s, headers).await.ok_or(NoSession::LoggedOut)?;
    match form_csrf {
        Some(t) if tokens_match(&sess.csrf, t) => Ok(sess),
        _ => Err(NoSession::FormExpired),
    }
}

/// Values of a form, in order (keys may repeat).
pub type FormPairs = Vec<(String, String)>;

pub fn form_get<'a>(f: &'a FormPairs, key: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// With `anonymous_read = false`, every read needs a session or a token:
/// pages send the browser to log in, the API answers 401. Log-in, static
/// files and repositories (apt and dnf cannot log in) stay open; mutations
/// are checked by their own handlers either way.
pub async fn read_gate(
    State(s): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let open = s.farm().cfg.master.anonymous_read
        || !(req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD);
    let path = req.uri().path().to_string();
    // A channel's files (`/repos/CHANNEL/...`), not its page (`/repos/CHANNEL`).
    let repository_file = path.strip_prefix("/repos/").is_some_and(|rest| rest.contains('/'));
    let probe = path == "/healthz" || path == "/readyz";
    if open || probe || path == "/login" || path.starts_with("/static/") || repository_file {
        return next.run(req).await;
    }
    let token_ok = match bearer(req.headers()) {
        Some(t) => {
            let from = req.extensions().get::<crate::caller::PeerAddr>().map(|a| a.0);
            crate::auth::authenticate(&s, &t, from).await.is_ok()
        }
        None => match req.extensions().get::<PeerCertificate>() {
            Some(PeerCertificate(Some(email))) => crate::auth::user_caller(&s, email).await.is_ok(),
            _ => false,
        },
    };
    if token_ok || checked_session(&s, req.headers()).await.is_some() {
        return next.run(req).await;
    }
    if path.starts_with("/api/") {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "reading needs a token on this master: send `Authorization: Bearer TOKEN`",
        )
        .into_response();
    }
    let next_path: String = path.chars().filter(|c| c.is_ascii_alphanumeric() || "/-_.".contains(*c)).collect();
    Redirect::to(&format!("/login?next={next_path}")).into_response()
}
