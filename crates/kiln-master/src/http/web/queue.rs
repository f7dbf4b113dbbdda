//! The queue page: queued builds in the order they are offered to free
//! slots (priority, then requests taking turns), each with why it waits,
//! as the dispatcher last saw it.

use super::layout::{frame, web_error, when};
use super::session::ctx;
use crate::shared::Shared;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;
use std::collections::HashMap;
use std::sync::Arc;

/// The most builds listed (a farm's nightly can queue thousands).
const SHOWN: usize = 500;

pub async fn page(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let c = ctx(&s, &headers, "/queue");
    let queue = s.waiting();
    let shown: Vec<i64> = queue.order.iter().take(SHOWN).copied().collect();
    let rows = match s.store.builds_by_ids(&shown).await {
        Ok(rows) => rows,
        Err(e) => return web_error(e),
    };
    let by_id: HashMap<i64, &kiln_db::BuildRow> = rows.iter().map(|b| (b.id, b)).collect();
    let body = html! {
        h1 { "Queue" }
        p {
            (queue.order.len()) " queued, in the order free slots take them: higher priority first, then the requests take turns."
            @if queue.order.len() > SHOWN { " The first " (SHOWN) " are shown." }
        }
        table.list {
            thead { tr { th { "#" } th { "Build" } th { "Builder" } th { "Priority" } th { "Request" } th { "Queued" } th { "Waits" } } }
            tbody {
                @for (place, id) in shown.iter().enumerate() {
                    @if let Some(b) = by_id.get(id) {
                        @let why = queue.why.get(id);
                        tr {
                            td { (place + 1) }
                            td { a href={"/builds/" (id)} { "#" (id) } }
                            td { a href={"/builders/" (b.component) "/" (b.target)} { (b.component) "@" (b.target) } }
                            td { (kiln_core::schedule::priority_of(&b.properties)) }
                            td { (b.request_id) }
                            td { (when(b.requested_at)) }
                            td { @if let Some(w) = why { span.waits title=(w.message()) { (w.kind()) } " " small { (w.message()) } } }
                        }
                    }
                }
            }
        }
    };
    frame(&c, "Queue", true, body)
}
