//! The build page: state, properties, each step with the tail of its log
//! (followed live while it runs), artifacts; Cancel and Rebuild for a
//! logged-in user, both through [`crate::ops`].

use super::layout::{bulb, duration, frame, page_error, running_for, web_error};
use super::session::{authorize, ctx, CsrfForm};
use crate::clock::now_us;
use crate::ops;
use crate::shared::Shared;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;
use std::sync::Arc;

type AppState = Arc<Shared>;

/// The tail of a step log rendered with the page.
const LOG_TAIL: u64 = 64 * 1024;

#[derive(Deserialize, Default)]
pub struct BuildQuery {
    /// Page through one step's log: the step index and the byte offset.
    step: Option<u32>,
    offset: Option<u64>,
}

pub async fn page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<BuildQuery>,
) -> Response {
    let c = ctx(&s, &headers, &format!("/builds/{id}"));
    let b = match s.store.build(id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return (StatusCode::NOT_FOUND, page_error("No such build", &format!("There is no build {id}.")))
                .into_response()
        }
        Err(e) => return web_error(e),
    };
    let (steps, artifacts) = match (s.store.steps(id).await, s.store.artifacts_of(&[id]).await) {
        (Ok(st), Ok(a)) => (st, a),
        (Err(e), _) | (_, Err(e)) => return web_error(e),
    };
    let now = now_us();
    let finished = b.state.is_finished();
    let body = html! {
        h1 { "Build #" (b.id) " " span class={"bulb " (bulb(b.state))} {} " " span.state { (b.state) } }
        p.meta {
            a href={"/builders/" (b.component) "/" (b.target)} { (b.component) "@" (b.target) }
            " · requested by " (b.requested_by.as_deref().unwrap_or("?"))
            @if let Some(w) = &b.worker { " · on " (w) }
            @if b.attempt > 1 { " · attempt " (b.attempt) }
        }
        @if let Some(reason) = &b.reason { p.reason { (reason) } }
        @if b.state == kiln_core::BuildState::Queued {
            @if let Some(w) = s.waiting_of(b.id) { p.waiting { "Waiting: " (w.message()) } }
        }
        @if let Some(sess) = &c.session {
            div.actions {
                @if !finished {
                    form method="post" action={"/builds/" (b.id) "/cancel"} {
                        input type="hidden" name="csrf" value=(sess.csrf);
                        button.danger type="submit" { "Cancel" }
                    }
                }
                form method="post" action={"/builds/" (b.id) "/rebuild"} {
                    input type="hidden" name="csrf" value=(sess.csrf);
                    button type="submit" { "Rebuild" }
                }
            }
        }
        h2 { "Properties" }
        @if b.properties.is_empty() { p.hint { "none" } }
        table.list.props {
            tbody { @for (k, v) in &b.properties { tr { th scope="row" { (k) } td { code { (v.value) } } td.src { (format!("{:?}", v.source).to_lowercase()) } } } }
        }
        h2 { "Steps" }
        @for st in &steps {
            @let running = st.state == kiln_core::StepState::Running;
            section.step id={"step-" (st.idx)} {
                h3 { span class={"bulb " (step_bulb(st.state))} {} " " (st.name) " " small { (st.state) " "
                    @match (running, st.started_at) {
                        (true, Some(start)) => (running_for(start, now)),
                        _ => (duration(st.started_at, st.finished_at, now)),
                    }
                } }
                (log_view(&s, b.id, st.idx, st.log_size.max(0) as u64, running, &q))
            }
        }
        @if !artifacts.is_empty() {
            h2 { "Artifacts" }
            ul.artifacts { @for a in &artifacts { li { a href={"/api/v1/builds/" (b.id) "/artifacts/" (a.name)} download { (a.name) } " " small { (a.size) " bytes, sha256 " code { (a.sha256.get(..16).unwrap_or("")) } } } } }
        }
    };
    frame(&c, &format!("Build #{id}"), !finished, body)
}

fn step_bulb(st: kiln_core::StepState) -> &'static str {
    use kiln_core::StepState::*;
    match st {
        Succeeded => "ok",
        Failed => "bad",
        Running => "run",
        Pending => "wait",
        Cancelled => "cancel",
        _ => "skip",
    }
}

/// A step's log: the tail (or the page asked for), ANSI colours rendered,
/// with a link to the earlier part; a running step's view is followed live.
fn log_view(s: &Shared, build: i64, step: i64, stored_size: u64, running: bool, q: &BuildQuery) -> Markup {
    let Ok(step) = u32::try_from(step) else { return html! {} };
    let size = s.logs.size(build, step).max(stored_size);
    let start = match (q.step, q.offset) {
        (Some(qs), Some(off)) if qs == step => off.min(size),
        _ => size.saturating_sub(LOG_TAIL),
    };
    let text = s.logs.read(build, step, start, LOG_TAIL as usize).unwrap_or_default();
    let end = start + text.len() as u64;
    html! {
        @if start > 0 {
            p.more { a href={"?step=" (step) "&offset=" (start.saturating_sub(LOG_TAIL)) "#step-" (step)} { "Earlier output (" (start) " bytes before)" } }
        }
        pre.log data-build=(build) data-step=(step) data-offset=(end) data-follow=[running.then_some("1")] { (PreEscaped(ansi_to_html(&text))) }
        @if end < size && !running {
            p.more { a href={"?step=" (step) "&offset=" (end) "#step-" (step)} { "Later output" } }
        }
    }
}

/// Renders ANSI SGR colours (30–37, 90–97, bold, reset) as spans; the text is escaped.
pub fn ansi_to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut open = false;
    let mut rest = text;
    while let Some(pos) = rest.find('\u{1b}') {
        out.push_str(&maud::html! { (rest[..pos]) }.into_string());
        rest = &rest[pos..];
        let Some(end) = rest.find('m').filter(|e| rest.get(1..2) == Some("[") && *e < 16) else {
            rest = &rest[1..];
            continue;
        };
        let codes = &rest[2..end];
        rest = &rest[end + 1..];
        if open {
            out.push_str("</span>");
            open = false;
        }
        let classes: Vec<String> = codes
            .split(';')
            .filter_map(|c| match c.parse::<u8>().ok()? {
                1 => Some("ansi-bold".to_string()),
                n @ 30..=37 => Some(format!("ansi-{}", n - 30)),
                n @ 90..=97 => Some(format!("ansi-{}", n - 90 + 8)),
                _ => None,
            })
            .collect();
        if !classes.is_empty() {
            out.push_str(&format!("<span class=\"{}\">", classes.join(" ")));
            open = true;
        }
    }
    out.push_str(&maud::html! { (rest) }.into_string());
    if open {
        out.push_str("</span>");
    }
    out
}

pub async fn cancel(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Result<Redirect, Response> {
    let sess = authorize(&s, &headers, f.csrf.as_deref()).await?;
    ops::builds::cancel(&s, &sess.caller, id).await.map_err(web_error)?;
    Ok(Redirect::to(&format!("/builds/{id}")))
}

pub async fn rebuild(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Result<Redirect, Response> {
    let sess = authorize(&s, &headers, f.csrf.as_deref()).await?;
    let created = ops::requests::rebuild(&s, &sess.caller, id).await.map_err(web_error)?;
    Ok(match created.builds.first() {
        Some(b) => Redirect::to(&format!("/builds/{}", b.id)),
        None => Redirect::to("/"),
    })
}
