//! The workers page: every configured worker, connected or away, drained or
//! not, with Drain and Resume buttons for those who may (server_admin).

use super::layout::{frame, web_error};
use super::session::{authorize, ctx, CsrfForm};
use crate::ops;
use crate::shared::Shared;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{Redirect, Response};
use axum::Form;
use kiln_core::perm::Permission;
use maud::html;
use serde::Deserialize;
use std::sync::Arc;

pub async fn page(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let c = ctx(&s, &headers, "/workers");
    let workers = ops::workers::list(&s).await;
    let masters = ops::workers::masters(&s).await.unwrap_or_default();
    // Only those who may drain see the buttons; the operation checks again.
    let admin = c.session.as_ref().filter(|sess| sess.caller.require(Permission::ServerAdmin).is_ok());
    let disk = ops::disk::status(&s);
    let body = html! {
        h1 { "Workers" }
        @if let Some(d) = &disk {
            p.disk { "Data dir: " (d.used_percent) "% of " (kiln_core::size::format_bytes(d.total_bytes)) " used, "
                (kiln_core::size::format_bytes(d.free_bytes)) " free." }
        }
        table.list {
            thead { tr { th { "Worker" } th { "State" } th { "Targets" } th { "Slots" } th { "Running" } th { "Last seen" } th { "Version" } th { "Master" } @if admin.is_some() { th {} } } }
            tbody {
                @for w in workers.values() {
                    tr {
                        td { (w.name) }
                        td {
                            @if w.connected { span.bulb.ok {} " connected" } @else { span.bulb.skip {} " away" }
                            @if let Some(d) = &w.drained {
                                br;
                                span.drained title={"since " (d.at)} {
                                    "drained by " (d.by)
                                    @if let Some(r) = &d.reason { ": " (r) }
                                    @if w.running.is_empty() { " (idle)" } @else { " (finishing " (w.running.len()) ")" }
                                }
                            }
                        }
                        td { (w.targets.join(", ")) }
                        td { (w.slots) }
                        td { @for id in &w.running { a href={"/builds/" (id)} { "#" (id) } " " } }
                        td { @if let Some(t) = &w.last_seen { time datetime=(t) title=(t) { (t) } } }
                        td { (w.version.as_deref().unwrap_or("")) }
                        td { (w.master.as_deref().unwrap_or("")) }
                        @if let Some(sess) = admin {
                            td {
                                @if w.drained.is_some() {
                                    form method="post" action={"/workers/" (w.name) "/resume"} {
                                        input type="hidden" name="csrf" value=(sess.csrf);
                                        button type="submit" { "Resume" }
                                    }
                                } @else {
                                    form method="post" action={"/workers/" (w.name) "/drain"} {
                                        input type="hidden" name="csrf" value=(sess.csrf);
                                        input type="text" name="reason" placeholder="reason (optional)" maxlength="200";
                                        " "
                                        button.danger type="submit" { "Drain" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    // Masters sharing the database, when there is more than this one.
    let body = html! {
        (body)
        @if masters.len() > 1 {
            h2 { "Masters" }
            table.list {
                thead { tr { th { "Master" } th { "Address" } th { "State" } th { "Started" } th { "Last heartbeat" } } }
                tbody {
                    @for m in &masters {
                        tr {
                            td { (m.id) }
                            td { (m.address) }
                            td { @if m.alive { span.bulb.ok {} " alive" } @else { span.bulb.skip {} " gone" } }
                            td { time datetime=(m.started_at) { (m.started_at) } }
                            td { time datetime=(m.heartbeat_at) { (m.heartbeat_at) } }
                        }
                    }
                }
            }
        }
    };
    frame(&c, "Workers", true, body)
}

#[derive(Deserialize)]
pub struct DrainForm {
    csrf: Option<String>,
    reason: Option<String>,
}

pub async fn drain(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<DrainForm>,
) -> Result<Redirect, Response> {
    let sess = authorize(&s, &headers, f.csrf.as_deref()).await?;
    ops::workers::drain(&s, &sess.caller, &name, f.reason.as_deref()).await.map_err(web_error)?;
    Ok(Redirect::to("/workers"))
}

pub async fn resume(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Redirect, Response> {
    let sess = authorize(&s, &headers, f.csrf.as_deref()).await?;
    ops::workers::resume(&s, &sess.caller, &name).await.map_err(web_error)?;
    Ok(Redirect::to("/workers"))
}
