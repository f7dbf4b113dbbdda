//! Live pages: server-sent events (`/events`) whenever builds, workers or
//! repositories change ([`Shared::changed`]), at most four a second.

use crate::shared::Shared;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use std::sync::Arc;
use std::time::Duration;

/// Server-sent events: `change` whenever builds, workers or repositories
/// change, at most four a second.
pub async fn events(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let rx = s.changes.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        tokio::time::sleep(Duration::from_millis(250)).await;
        rx.borrow_and_update();
        Some((Ok::<_, std::convert::Infallible>(SseEvent::default().event("change").data("changed")), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
