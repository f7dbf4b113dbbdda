//! `/metrics` for Prometheus ([`crate::ops::metrics`]). It is read like the
//! API: on a farm without anonymous reading, the scraper sends a token.

use crate::shared::Shared;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use std::sync::Arc;

pub async fn metrics(State(s): State<Arc<Shared>>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::ops::metrics::render(&s).await)
}
