//! `/healthz` (the process answers) and `/readyz` (it can serve:
//! [`crate::ops::health::readiness`]), for load balancers and service
//! managers. Plain text, one line per check; open to anyone, like a
//! repository's files, so a probe needs no token.

use crate::shared::Shared;
use axum::extract::State;
use axum::http::StatusCode;
use std::sync::Arc;

pub async fn alive() -> &'static str {
    "ok\n"
}

/// 200 when every check passes, else 503; each line says `name: ok` or
/// `name: what is wrong`.
pub async fn ready(State(s): State<Arc<Shared>>) -> (StatusCode, String) {
    let checks = crate::ops::health::readiness(&s).await;
    let status =
        if checks.iter().all(|c| c.problem.is_none()) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let text = checks.iter().map(|c| format!("{}: {}\n", c.name, c.problem.as_deref().unwrap_or("ok"))).collect();
    (status, text)
}
