//! The workers page: every configured worker, connected or away.

use super::layout::frame;
use super::session::ctx;
use crate::shared::Shared;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;
use std::sync::Arc;

pub async fn page(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let c = ctx(&s, &headers, "/workers");
    let workers = s.workers().clone();
    let body = html! {
        h1 { "Workers" }
        table.list {
            thead { tr { th { "Worker" } th { "State" } th { "Targets" } th { "Slots" } th { "Running" } th { "Last seen" } th { "Version" } } }
            tbody {
                @for w in workers.values() {
                    tr {
                        td { (w.name) }
                        td { @if w.connected { span.bulb.ok {} " connected" } @else { span.bulb.skip {} " away" } }
                        td { (w.targets.join(", ")) }
                        td { (w.slots) }
                        td { @for id in &w.running { a href={"/builds/" (id)} { "#" (id) } " " } }
                        td { @if let Some(t) = &w.last_seen { time datetime=(t) title=(t) { (t) } } }
                        td { (w.version.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    };
    frame(&c, "Workers", true, body)
}
