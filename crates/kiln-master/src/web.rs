//! The web interface: server-rendered HTML (maud, escaped by construction)
//! with a little JavaScript for live updates. Every page reads without
//! JavaScript; with it, pages re-render their `<main>` when the master says
//! something changed (`/events`, server-sent events), and a running step's
//! log is followed by polling the log API from the last offset.
//!
//! Reading is anonymous. Force, cancel, rebuild, promote and remove need a
//! session (logged in with the admin token until users exist) and the
//! session's CSRF token in the form; both are checked on every POST.

use crate::api::{request_properties, submit, to_api_builds, ApiError};
use crate::clock::rfc3339;
use crate::dispatcher::{CancelOutcome, Event};
use crate::publisher::{PublishRequest, RepoOp};
use crate::shared::Shared;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use kiln_core::matrix::RequestSpec;
use kiln_core::perm::Permission;
use kiln_core::props::PropertySource;
use kiln_core::BuildState;
use kiln_proto::api::Build;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

type AppState = Arc<Shared>;

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: crate::auth::Caller,
    pub csrf: String,
    pub created: Instant,
}

/// Sessions end after this long.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
const COOKIE: &str = "kiln_session";
/// Requests shown on the console.
const CONSOLE_ROWS: i64 = 50;
/// The tail of a step log rendered with the page.
const LOG_TAIL: u64 = 64 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(console))
        .route("/console", get(console))
        .route("/builders", get(builders))
        .route("/builders/{component}/{target}", get(builder))
        .route("/builds/{id}", get(build_page))
        .route("/builds/{id}/cancel", post(cancel))
        .route("/builds/{id}/rebuild", post(rebuild))
        .route("/force", post(force))
        .route("/workers", get(workers))
        .route("/repos", get(repos))
        .route("/repos/{channel}", get(channel_page))
        .route("/repos/{channel}/change", post(repo_change))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/events", get(events))
        .route("/static/kiln.css", get(|| async { ([(header::CONTENT_TYPE, "text/css")], CSS) }))
        .route("/static/kiln.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], JS) }))
}

// ---------- sessions ----------

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::COOKIE)?.to_str().ok()?;
    raw.split(';').find_map(|kv| kv.trim().strip_prefix(&format!("{COOKIE}=")).map(str::to_string))
}

fn session(s: &Shared, headers: &HeaderMap) -> Option<Session> {
    let id = cookie_value(headers)?;
    let mut sessions = s.sessions.lock().unwrap_or_else(|e| e.into_inner());
    sessions.retain(|_, v| v.created.elapsed() < SESSION_TTL);
    sessions.get(&id).cloned()
}

/// The session a POST needs: logged in, and the form's CSRF token matches.
fn authorize(s: &Shared, headers: &HeaderMap, form_csrf: Option<&str>) -> Result<Session, Box<Response>> {
    let Some(sess) = session(s, headers) else {
        let page = page_error("Log in first", "This action needs you to log in.");
        return Err(Box::new((StatusCode::UNAUTHORIZED, page).into_response()));
    };
    match form_csrf {
        Some(t) if crate::auth::tokens_match(&sess.csrf, t) => Ok(sess),
        _ => {
            let page = page_error("Form expired", "The form's token did not match; reload the page and try again.");
            Err(Box::new((StatusCode::FORBIDDEN, page).into_response()))
        }
    }
}

/// A 403 page unless the session's user holds `p`.
fn permit(sess: &Session, p: Permission) -> Result<(), Box<Response>> {
    sess.caller
        .require(p)
        .map_err(|why| Box::new((StatusCode::FORBIDDEN, page_error("Not allowed", &why)).into_response()))
}

/// Values of a form, in order (keys may repeat).
type FormPairs = Vec<(String, String)>;

fn form_get<'a>(f: &'a FormPairs, key: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// With `anonymous_read = false`, every read needs a session or a token:
/// pages send the browser to log in, the API answers 401. Log-in, static
/// files and repositories (apt and dnf cannot log in) stay open; mutations
/// are checked by their own handlers either way.
pub async fn read_gate(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let open = s.farm().cfg.master.anonymous_read
        || !(req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD);
    let path = req.uri().path().to_string();
    if open || path == "/login" || path.starts_with("/static/") || path.starts_with("/repos/") {
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let token_ok = match bearer {
        Some(t) => crate::auth::authenticate(&s, &t).await.is_ok(),
        None => match req.extensions().get::<crate::auth::PeerCertificate>() {
            Some(crate::auth::PeerCertificate(Some(email))) => crate::auth::user_caller(&s, email).await.is_ok(),
            _ => false,
        },
    };
    if token_ok || session(&s, req.headers()).is_some() {
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

// ---------- layout ----------

struct Ctx {
    session: Option<Session>,
    path: String,
}

fn ctx(s: &Shared, headers: &HeaderMap, path: &str) -> Ctx {
    Ctx { session: session(s, headers), path: path.to_string() }
}

fn page(c: &Ctx, title: &str, live: bool, body: Markup) -> Response {
    let nav = [("/", "Console"), ("/builders", "Builders"), ("/workers", "Workers"), ("/repos", "Repositories")];
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · kiln" }
                link rel="stylesheet" href="/static/kiln.css";
                script src="/static/kiln.js" defer {}
            }
            body data-live=[live.then_some("1")] {
                header.top {
                    a.brand href="/" { "kiln" }
                    nav aria-label="Main" {
                        @for (href, label) in nav {
                            @let current = if href == "/" { c.path == "/" || c.path == "/console" } else { c.path.starts_with(href) };
                            a href=(href) aria-current=[current.then_some("page")] { (label) }
                        }
                    }
                    div.who {
                        @match &c.session {
                            Some(sess) => {
                                span { "Logged in as " (sess.caller.name) }
                                form method="post" action="/logout" {
                                    input type="hidden" name="csrf" value=(sess.csrf);
                                    button type="submit" { "Log out" }
                                }
                            }
                            None => a href={"/login?next=" (c.path)} { "Log in" },
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    };
    let mut r = maud_response(markup);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn maud_response(m: Markup) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], m.into_string()).into_response()
}

fn page_error(title: &str, message: &str) -> axum::response::Html<String> {
    axum::response::Html(page_error_markup(title, message).into_string())
}

fn page_error_markup(title: &str, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" { head { meta charset="utf-8"; title { (title) " · kiln" } link rel="stylesheet" href="/static/kiln.css"; }
        body { main { h1 { (title) } p { (message) } p { a href="/" { "Back to the console" } } } } }
    }
}

fn web_error(e: ApiError) -> Response {
    let (status, msg) = e.parts();
    (status, page_error("Something went wrong", &msg)).into_response()
}

fn bulb(state: BuildState) -> &'static str {
    match state {
        BuildState::Succeeded => "ok",
        BuildState::Failed => "bad",
        BuildState::Running => "run",
        BuildState::Queued => "wait",
        BuildState::Cancelled => "cancel",
        BuildState::Skipped => "skip",
    }
}

/// A time as "3 min ago" with the exact time on hover.
fn when(us: i64) -> Markup {
    let exact = rfc3339(us);
    let now = crate::clock::now_us();
    let secs = (now - us).max(0) / 1_000_000;
    let rel = match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    };
    html! { time datetime=(exact) title=(exact) { (rel) } }
}

fn duration(start: Option<&str>, end: Option<&str>) -> String {
    let parse = |t: &str| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok();
    match (start.and_then(parse), end.and_then(parse)) {
        (Some(a), Some(b)) => {
            let ms = (b - a).whole_milliseconds();
            if ms < 1000 {
                format!("{ms} ms")
            } else {
                format!("{:.1} s", ms as f64 / 1000.0)
            }
        }
        (Some(a), None) => {
            let secs = (time::OffsetDateTime::now_utc() - a).whole_seconds();
            format!("for {secs} s")
        }
        _ => String::new(),
    }
}

// ---------- console ----------

#[derive(Deserialize, Default)]
struct ConsoleQuery {
    target: Option<String>,
    component: Option<String>,
    before: Option<i64>,
    /// Show every builder even on a big farm.
    expand: Option<u8>,
    /// Group columns by `target` (default) or `component`.
    group: Option<String>,
}

/// Above this many builder columns the console starts collapsed: one column
/// per target, each cell the worst state of that target's builds.
const COLLAPSE_ABOVE: usize = 200;

/// How bad a state is, for a collapsed cell: the worst one shows.
fn severity(st: BuildState) -> u8 {
    match st {
        BuildState::Failed => 6,
        BuildState::Cancelled => 5,
        BuildState::Running => 4,
        BuildState::Queued => 3,
        BuildState::Skipped => 2,
        BuildState::Succeeded => 1,
    }
}

async fn console(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<ConsoleQuery>) -> Response {
    let c = ctx(&s, &headers, "/");
    let farm = s.farm();
    let target_filter = q.target.as_deref().filter(|t| !t.is_empty());
    let component_filter = q.component.as_deref().filter(|t| !t.is_empty());
    let requests = match s.store.recent_requests(CONSOLE_ROWS, q.before).await {
        Ok(r) => r,
        Err(e) => return web_error(e.into()),
    };
    let ids: Vec<i64> = requests.iter().map(|r| r.id).collect();
    let keep =
        |comp: &str, tgt: &str| target_filter.is_none_or(|t| t == tgt) && component_filter.is_none_or(|x| x == comp);
    // Columns: builders (component, target) grouped by target or by component.
    let by_component = q.group.as_deref() == Some("component");
    let mut columns: Vec<(String, Vec<(String, String)>)> = Vec::new();
    if by_component {
        for comp in &farm.cfg.components {
            let builders: Vec<(String, String)> = farm
                .cfg
                .targets_of(comp)
                .filter(|t| keep(&comp.name, &t.name))
                .map(|t| (comp.name.clone(), t.name.clone()))
                .collect();
            if !builders.is_empty() {
                columns.push((comp.name.clone(), builders));
            }
        }
    } else {
        for t in &farm.cfg.targets {
            let builders: Vec<(String, String)> = farm
                .cfg
                .components
                .iter()
                .filter(|comp| farm.cfg.builds_on(comp, &t.name) && keep(&comp.name, &t.name))
                .map(|comp| (comp.name.clone(), t.name.clone()))
                .collect();
            if !builders.is_empty() {
                columns.push((t.name.clone(), builders));
            }
        }
    }
    // Within a group, a column is named by the other dimension.
    let sub = |b: &(String, String)| if by_component { b.1.clone() } else { b.0.clone() };
    let group_param = if by_component { "component" } else { "target" };
    let total: usize = columns.iter().map(|(_, c)| c.len()).sum();
    let collapsed =
        total > COLLAPSE_ABOVE && q.expand.is_none() && target_filter.is_none() && component_filter.is_none();
    let stats = s.builder_stats().await;
    let props_of: HashMap<i64, String> = s
        .store
        .request_properties(&ids)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(rid, props)| {
            let p: Vec<String> = props
                .iter()
                .filter(|(_, v)| v.source == PropertySource::Request)
                .map(|(k, v)| format!("{k}={}", v.value))
                .collect();
            (rid, p.join(" "))
        })
        .collect();
    // Cells: one per build, or (collapsed) the worst state per request and target.
    let mut cells: HashMap<(i64, String, String), (i64, BuildState)> = HashMap::new();
    let mut worst: HashMap<(i64, String), (BuildState, i64)> = HashMap::new();
    if collapsed {
        for (rid, group, st, n) in s.store.console_summary(&ids, by_component).await.unwrap_or_default() {
            let e = worst.entry((rid, group)).or_insert((st, 0));
            if severity(st) > severity(e.0) {
                e.0 = st;
            }
            e.1 += n;
        }
    } else {
        for (id, rid, comp, tgt, st) in
            s.store.console_cells(&ids, target_filter, component_filter).await.unwrap_or_default()
        {
            cells.insert((rid, comp, tgt), (id, st));
        }
    }
    let last: HashMap<(&str, &str), BuildState> =
        stats.iter().map(|st| ((st.component.as_str(), st.target.as_str()), st.last_state)).collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut group_worst: HashMap<&str, BuildState> = HashMap::new();
    for (g, builders) in &columns {
        for (comp, t) in builders {
            if let Some(st) = last.get(&(comp.as_str(), t.as_str())) {
                *counts.entry(bulb(*st)).or_default() += 1;
                let w = group_worst.entry(g.as_str()).or_insert(*st);
                if severity(*st) > severity(*w) {
                    *w = *st;
                }
            }
        }
    }
    let not_green =
        counts.iter().filter(|(k, _)| **k == "bad" || **k == "cancel" || **k == "skip").map(|(_, n)| n).sum::<usize>();
    let body = html! {
        section.summary aria-label="Summary" {
            @if not_green == 0 {
                p.allgood { "All " (total) " builders: last build green or in progress." }
            } @else {
                p.attention { (not_green) " of " (total) " builders need attention." }
            }
            ul.counts {
                @for (k, n) in &counts { li { span class={"bulb " (k)} {} " " (n) " " (label_of(k)) } }
            }
        }
        form.filter method="get" action="/" {
            label { "Target " select name="target" { option value="" { "all" } @for t in &farm.cfg.targets { option value=(t.name) selected[target_filter == Some(t.name.as_str())] { (t.name) } } } }
            label { "Component " select name="component" { option value="" { "all" } @for comp in &farm.cfg.components { option value=(comp.name) selected[component_filter == Some(comp.name.as_str())] { (comp.name) } } } }
            label { "Group by " select name="group" {
                option value="target" selected[!by_component] { "target" }
                option value="component" selected[by_component] { "component" }
            } }
            button type="submit" { "Show" }
            @if collapsed {
                span.hint { (total) " builders: one column per " (group_param) " (worst state). " a href={"/?expand=1&group=" (group_param)} { "Show every builder" } }
            }
        }
        div.gridwrap {
            table.console {
                @if collapsed {
                    thead {
                        tr {
                            th scope="col" { "Request" }
                            @for (g, builders) in &columns { th.group scope="col" { a href={"/?" (group_param) "=" (g) "&group=" (group_param)} title={"expand " (g)} { (g) } br; small { (builders.len()) } } }
                        }
                        tr.lastrow {
                            th scope="row" { "Last result" }
                            @for (g, _) in &columns { td { @if let Some(st) = group_worst.get(g.as_str()) { span class={"bulb " (bulb(*st))} title={(g) ": worst " (st)} {} } } }
                        }
                    }
                    tbody {
                        @for r in &requests {
                            tr {
                                (request_header(r, props_of.get(&r.id)))
                                @for (g, _) in &columns {
                                    td { @if let Some((st, n)) = worst.get(&(r.id, g.clone())) {
                                        a class={"bulb " (bulb(*st))} href={"/?" (group_param) "=" (g) "&group=" (group_param) "#r" (r.id)} title={(n) " builds, worst " (st)} aria-label={(g) ": " (n) " builds, worst " (st)} {}
                                    } }
                                }
                            }
                        }
                    }
                } @else {
                    thead {
                        tr {
                            th rowspan="2" scope="col" { "Request" }
                            @for (g, builders) in &columns { th.group colspan=(builders.len()) scope="colgroup" { (g) } }
                        }
                        tr {
                            @for (_, builders) in &columns { @for b in builders { th.comp scope="col" title={(b.0) "@" (b.1)} { span { (sub(b)) } } } }
                        }
                        tr.lastrow {
                            th scope="row" { "Last result" }
                            @for (_, builders) in &columns { @for (comp, t) in builders {
                                td { @if let Some(st) = last.get(&(comp.as_str(), t.as_str())) { span class={"bulb " (bulb(*st))} title={(comp) "@" (t) ": " (st)} {} } }
                            } }
                        }
                    }
                    tbody {
                        @for r in &requests {
                            tr id={"r" (r.id)} {
                                (request_header(r, props_of.get(&r.id)))
                                @for (_, builders) in &columns { @for (comp, t) in builders {
                                    td { @if let Some((id, st)) = cells.get(&(r.id, comp.clone(), t.clone())) {
                                        a class={"bulb " (bulb(*st))} href={"/builds/" (id)} title={"#" (id) " " (st)} aria-label={"build " (id) " " (st)} {}
                                    } }
                                } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(oldest) = requests.last() {
            @if requests.len() as i64 == CONSOLE_ROWS { p { a href={"/?before=" (oldest.id)} { "Older requests" } } }
        }
    };
    page(&c, "Console", true, body)
}

fn request_header(r: &kiln_db::RequestRow, props: Option<&String>) -> Markup {
    html! {
        th scope="row" {
            div { "#" (r.id) " " (r.requested_by.as_deref().unwrap_or("?")) " " (when(r.requested_at)) }
            @if let Some(reason) = &r.reason { div.reason { (reason) } }
            @if let Some(p) = props { @if !p.is_empty() { div.props { (p) } } }
        }
    }
}

fn label_of(k: &str) -> &'static str {
    match k {
        "ok" => "succeeded",
        "bad" => "failed",
        "run" => "running",
        "wait" => "queued",
        "cancel" => "cancelled",
        _ => "skipped",
    }
}

// ---------- builders ----------

async fn builders(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let c = ctx(&s, &headers, "/builders");
    let farm = s.farm();
    let stats = s.builder_stats().await;
    let workers = s.workers().clone();
    let body = html! {
        h1 { "Builders" }
        (force_form(&c, &farm.cfg.components.iter().map(|x| x.name.clone()).collect::<Vec<_>>(), &farm.cfg.targets.iter().map(|t| t.name.clone()).collect::<Vec<_>>(), None))
        table.list {
            thead { tr { th { "Builder" } th { "Last" } th { "Running" } th { "Queued" } th { "Workers" } } }
            tbody {
                @for comp in &farm.cfg.components { @for t in farm.cfg.targets_of(comp) {
                    @let st = stats.iter().find(|x| x.component == comp.name && x.target == t.name);
                    tr {
                        td { a href={"/builders/" (comp.name) "/" (t.name)} { (comp.name) "@" (t.name) } }
                        td { @if let Some(st) = st { a class={"bulb " (bulb(st.last_state))} href={"/builds/" (st.last_build_id)} aria-label={"last build " (st.last_state)} {} " " (st.last_state) } }
                        td { (st.map_or(0, |x| x.running)) }
                        td { (st.map_or(0, |x| x.queued)) }
                        td { (workers.values().filter(|w| w.targets.contains(&t.name)).map(|w| w.name.as_str()).collect::<Vec<_>>().join(", ")) }
                    }
                } }
            }
        }
    };
    page(&c, "Builders", true, body)
}

/// The force form: one builder (fixed) or a choice of components and targets.
fn force_form(c: &Ctx, components: &[String], targets: &[String], fixed: Option<(&str, &str)>) -> Markup {
    html! {
        details.force open[fixed.is_some()] {
            summary { @if fixed.is_some() { "Force build" } @else { "Force builds" } }
            @if let Some(sess) = &c.session {
                form method="post" action="/force" {
                    input type="hidden" name="csrf" value=(sess.csrf);
                    @if let Some((comp, tgt)) = fixed {
                        input type="hidden" name="component" value=(comp);
                        input type="hidden" name="target" value=(tgt);
                    } @else {
                        fieldset { legend { "Components" } @for comp in components { label.check { input type="checkbox" name="component" value=(comp); " " (comp) } } }
                        fieldset { legend { "Targets (none: every target)" } @for t in targets { label.check { input type="checkbox" name="target" value=(t); " " (t) } } }
                    }
                    fieldset.props {
                        legend { "Properties" }
                        @for i in 0..3 {
                            div { input type="text" name="prop_key" aria-label={"property " (i + 1) " name"} placeholder="name"; " = " input type="text" name="prop_value" aria-label={"property " (i + 1) " value"} placeholder="value"; }
                        }
                    }
                    label { "Reason " input type="text" name="reason" placeholder="why"; }
                    button type="submit" { "Force build" }
                }
            } @else {
                p { a href={"/login?next=" (c.path)} { "Log in" } " to force builds." }
            }
        }
    }
}

async fn builder(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((component, target)): Path<(String, String)>,
) -> Response {
    let path = format!("/builders/{component}/{target}");
    let c = ctx(&s, &headers, &path);
    let farm = s.farm();
    if farm.cfg.component(&component).is_none_or(|comp| !farm.cfg.builds_on(comp, &target)) {
        return (
            StatusCode::NOT_FOUND,
            page_error("No such builder", &format!("{component}@{target} is not a builder of this farm.")),
        )
            .into_response();
    }
    let rows = s
        .store
        .list_builds(&kiln_db::BuildFilter {
            component: Some(component.clone()),
            target: Some(target.clone()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    let body = html! {
        h1 { (component) "@" (target) }
        (force_form(&c, &[], &[], Some((&component, &target))))
        table.list {
            thead { tr { th { "Build" } th { "State" } th { "Requested" } th { "By" } th { "Worker" } th { "Reason" } } }
            tbody {
                @for b in &rows {
                    tr {
                        td { a href={"/builds/" (b.id)} { "#" (b.id) } }
                        td { span class={"bulb " (bulb(b.state))} {} " " (b.state) }
                        td { (when(b.requested_at)) }
                        td { (b.requested_by.as_deref().unwrap_or("")) }
                        td { (b.worker.as_deref().unwrap_or("")) }
                        td { (b.reason.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    };
    page(&c, &format!("{component}@{target}"), true, body)
}

async fn force(State(s): State<AppState>, headers: HeaderMap, Form(f): Form<FormPairs>) -> Response {
    let sess = match authorize(&s, &headers, form_get(&f, "csrf")) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Err(r) = permit(&sess, Permission::OwnJobs) {
        return *r;
    }
    let components: Vec<String> = f.iter().filter(|(k, _)| k == "component").map(|(_, v)| v.clone()).collect();
    let targets: Vec<String> = f.iter().filter(|(k, _)| k == "target").map(|(_, v)| v.clone()).collect();
    let keys = f.iter().filter(|(k, _)| k == "prop_key").map(|(_, v)| v.trim().to_string());
    let values = f.iter().filter(|(k, _)| k == "prop_value").map(|(_, v)| v.clone());
    let given: BTreeMap<String, String> = keys.zip(values).filter(|(k, _)| !k.is_empty()).collect();
    if components.is_empty() {
        return (StatusCode::BAD_REQUEST, page_error("Nothing to build", "Choose at least one component."))
            .into_response();
    }
    let props = match request_properties(&given, PropertySource::Request) {
        Ok(p) => p,
        Err(e) => return web_error(e),
    };
    let reason = form_get(&f, "reason").filter(|r| !r.trim().is_empty()).unwrap_or("forced from the web");
    let spec = RequestSpec { components: components.clone(), all: false, targets };
    match submit(&s, &sess.caller.name, Some(reason), &spec, props).await {
        Ok(created) if created.builds.len() == 1 => {
            Redirect::to(&format!("/builds/{}", created.builds[0].id)).into_response()
        }
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => web_error(e),
    }
}

// ---------- build ----------

#[derive(Deserialize, Default)]
struct BuildQuery {
    /// Page through one step's log: the step index and the byte offset.
    step: Option<u32>,
    offset: Option<u64>,
}

async fn build_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<BuildQuery>,
) -> Response {
    let c = ctx(&s, &headers, &format!("/builds/{id}"));
    let row = match s.store.build(id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return (StatusCode::NOT_FOUND, page_error("No such build", &format!("There is no build {id}.")))
                .into_response()
        }
        Err(e) => return web_error(e.into()),
    };
    let b: Build = match to_api_builds(&s, vec![row]).await {
        Ok(mut v) if !v.is_empty() => v.remove(0),
        Ok(_) => return (StatusCode::NOT_FOUND, page_error("No such build", "")).into_response(),
        Err(e) => return web_error(e),
    };
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
        @for st in &b.steps {
            @let running = st.state == kiln_core::StepState::Running;
            section.step id={"step-" (st.index)} {
                h3 { span class={"bulb " (step_bulb(st.state))} {} " " (st.name) " " small { (st.state) " " (duration(st.started_at.as_deref(), st.finished_at.as_deref())) } }
                (log_view(&s, b.id, st.index, st.log_size.max(0) as u64, running, &q))
            }
        }
        @if !b.artifacts.is_empty() {
            h2 { "Artifacts" }
            ul.artifacts { @for a in &b.artifacts { li { a href=(a.url) download { (a.name) } " " small { (a.size) " bytes, sha256 " code { (a.sha256.get(..16).unwrap_or("")) } } } } }
        }
    };
    page(&c, &format!("Build #{id}"), !finished, body)
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

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn cancel(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let sess = match authorize(&s, &headers, f.csrf.as_deref()) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let requested_by = match s.store.build(id).await {
        Ok(Some(b)) => b.requested_by,
        _ => return (StatusCode::NOT_FOUND, page_error("No such build", "")).into_response(),
    };
    if let Err(e) = crate::api::may_cancel(&sess.caller, requested_by.as_deref()) {
        return (StatusCode::FORBIDDEN, page_error("Not allowed", &e.message)).into_response();
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.send(Event::Cancel { build_id: id, by: sess.caller.name, reply: tx });
    match rx.await {
        Ok(CancelOutcome::Cancelled | CancelOutcome::Stopping | CancelOutcome::AlreadyFinished(_)) => {
            Redirect::to(&format!("/builds/{id}")).into_response()
        }
        Ok(CancelOutcome::NotFound) => (StatusCode::NOT_FOUND, page_error("No such build", "")).into_response(),
        Ok(CancelOutcome::Failed(e)) => (StatusCode::CONFLICT, page_error("Cannot cancel", &e)).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, page_error("Shutting down", "")).into_response(),
    }
}

async fn rebuild(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let sess = match authorize(&s, &headers, f.csrf.as_deref()) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Err(r) = permit(&sess, Permission::OwnJobs) {
        return *r;
    }
    let row = match s.store.build(id).await {
        Ok(Some(r)) => r,
        _ => return (StatusCode::NOT_FOUND, page_error("No such build", "")).into_response(),
    };
    let given: BTreeMap<String, String> = row
        .properties
        .iter()
        .filter(|(_, p)| p.source == PropertySource::Request)
        .map(|(k, p)| (k.clone(), p.value.clone()))
        .collect();
    let props = match request_properties(&given, PropertySource::Request) {
        Ok(p) => p,
        Err(e) => return web_error(e),
    };
    let spec = RequestSpec { components: vec![row.component], all: false, targets: vec![row.target] };
    match submit(&s, &sess.caller.name, Some(&format!("rebuild of #{id}")), &spec, props).await {
        Ok(created) => match created.builds.first() {
            Some(b) => Redirect::to(&format!("/builds/{}", b.id)).into_response(),
            None => Redirect::to("/").into_response(),
        },
        Err(e) => web_error(e),
    }
}

// ---------- workers ----------

async fn workers(State(s): State<AppState>, headers: HeaderMap) -> Response {
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
    page(&c, "Workers", true, body)
}

// ---------- repositories ----------

async fn repos(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let c = ctx(&s, &headers, "/repos");
    let farm = s.farm();
    let base = farm.cfg.master.public_url();
    let mut rows = Vec::new();
    for ch in &farm.cfg.channels {
        let revision = s.store.channel_revision(&ch.name).await.unwrap_or(0);
        let n = s.store.packages(&ch.name).await.map(|p| p.len()).unwrap_or(0);
        rows.push((ch.clone(), revision, n));
    }
    let body = html! {
        h1 { "Repositories" }
        table.list {
            thead { tr { th { "Channel" } th { "Takes" } th { "Promotes to" } th { "Files" } th { "Revision" } } }
            tbody { @for (ch, rev, n) in &rows { tr {
                td { a href={"/repos/" (ch.name)} { (ch.name) } }
                td { (ch.accepts.as_str()) }
                td { (ch.promote_to.join(", ")) }
                td { (n) }
                td { (rev) }
            } } }
        }
        p { "Each channel is served at " code { (base) "/repos/CHANNEL/" } ", signed with its own key." }
    };
    page(&c, "Repositories", true, body)
}

async fn channel_page(State(s): State<AppState>, headers: HeaderMap, Path(channel): Path<String>) -> Response {
    let c = ctx(&s, &headers, &format!("/repos/{channel}"));
    let farm = s.farm();
    let Some(ch) = farm.cfg.channel(&channel).cloned() else {
        return (StatusCode::NOT_FOUND, page_error("No such channel", &channel)).into_response();
    };
    let base = farm.cfg.master.public_url();
    let pkgs = s.store.packages(&channel).await.unwrap_or_default();
    let suites: BTreeSet<String> = farm.cfg.targets.iter().filter_map(|t| t.suite.clone()).collect();
    let rpm_targets: Vec<String> = farm
        .cfg
        .targets
        .iter()
        .filter(|t| t.family == kiln_core::config::Family::Rpm)
        .map(|t| t.name.clone())
        .collect();
    let mut by_repo: BTreeMap<&str, Vec<&kiln_db::PackageRow>> = BTreeMap::new();
    for p in &pkgs {
        by_repo.entry(p.repo.as_str()).or_default().push(p);
    }
    let body = html! {
        h1 { "Channel " (ch.name) }
        p { "Takes " (ch.accepts.as_str()) " builds" @if !ch.promote_to.is_empty() { "; promotes to " (ch.promote_to.join(", ")) } "." }
        h2 { "Use it" }
        @for suite in &suites {
            pre.cmd { "sudo curl -o /etc/apt/keyrings/kiln-" (ch.name) ".asc " (base) "/repos/" (ch.name) "/key.asc\n"
                "echo 'deb [signed-by=/etc/apt/keyrings/kiln-" (ch.name) ".asc] " (base) "/repos/" (ch.name) "/apt " (suite) " " (ch.component) "' | sudo tee /etc/apt/sources.list.d/kiln-" (ch.name) ".list" }
        }
        @for t in &rpm_targets {
            pre.cmd { "[kiln-" (ch.name) "]\nname=kiln " (ch.name) " (" (t) ")\nbaseurl=" (base) "/repos/" (ch.name) "/yum/" (t) "\ngpgcheck=1\nrepo_gpgcheck=1\ngpgkey=" (base) "/repos/" (ch.name) "/key.asc" }
        }
        @for (repo, list) in &by_repo {
            h2 { (repo) }
            table.list {
                thead { tr { th { "Package" } th { "Version" } th { "Arch" } th { "Build" } th { "Published" } @if c.session.is_some() { th { "Actions" } } } }
                tbody { @for p in list { tr {
                    td { (p.name) }
                    td { code { (p.version) } }
                    td { (p.arch) }
                    td { @if let Some(b) = p.build_id { a href={"/builds/" (b)} { "#" (b) } } }
                    td { (when(p.published_at)) }
                    @if let Some(sess) = &c.session { td.actions {
                        @for to in &ch.promote_to {
                            form method="post" action={"/repos/" (ch.name) "/change"} {
                                input type="hidden" name="csrf" value=(sess.csrf);
                                input type="hidden" name="op" value="promote";
                                input type="hidden" name="to" value=(to);
                                input type="hidden" name="name" value=(p.name);
                                input type="hidden" name="version" value=(p.version);
                                button type="submit" { "Promote to " (to) }
                            }
                        }
                        form method="post" action={"/repos/" (ch.name) "/change"} {
                            input type="hidden" name="csrf" value=(sess.csrf);
                            input type="hidden" name="op" value="remove";
                            input type="hidden" name="name" value=(p.name);
                            input type="hidden" name="version" value=(p.version);
                            button.danger type="submit" { "Remove" }
                        }
                    } }
                } } }
            }
        }
    };
    page(&c, &format!("Channel {channel}"), true, body)
}

async fn repo_change(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(channel): Path<String>,
    Form(f): Form<FormPairs>,
) -> Response {
    match authorize(&s, &headers, form_get(&f, "csrf")) {
        Ok(sess) => {
            if let Err(r) = permit(&sess, Permission::ServerAdmin) {
                return *r;
            }
        }
        Err(r) => return *r,
    }
    let get = |k: &str| form_get(&f, k).unwrap_or_default().to_string();
    let op = match get("op").as_str() {
        "promote" => RepoOp::Promote {
            name: get("name"),
            version: get("version"),
            from: channel.clone(),
            to: get("to"),
            replace: false,
        },
        "remove" => RepoOp::Remove { channel: channel.clone(), name: get("name"), version: Some(get("version")) },
        other => return (StatusCode::BAD_REQUEST, page_error("Unknown change", other)).into_response(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if s.publisher.send(PublishRequest::Op(op, tx)).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, page_error("Shutting down", "")).into_response();
    }
    match rx.await {
        Ok(Ok(_)) => {
            s.changed();
            Redirect::to(&format!("/repos/{channel}")).into_response()
        }
        Ok(Err(e)) => (StatusCode::CONFLICT, page_error("The change was refused", &e)).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, page_error("Shutting down", "")).into_response(),
    }
}

// ---------- login ----------

#[derive(Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
}

/// Only local paths are followed after login (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

async fn login_page(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
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
    page(&c, "Log in", false, body)
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login(State(s): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let caller = match crate::auth::authenticate(&s, f.token.trim()).await {
        Ok(c) => c,
        Err(crate::auth::AuthError::Invalid) => {
            return (StatusCode::UNAUTHORIZED, page_error("Log in failed", "That token is not valid.")).into_response()
        }
        Err(e) => {
            return (StatusCode::SERVICE_UNAVAILABLE, page_error("Log in failed", &e.to_string())).into_response()
        }
    };
    let (Ok(id), Ok(csrf)) = (crate::auth::random_token(), crate::auth::random_token()) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, page_error("Log in failed", "no randomness")).into_response();
    };
    s.sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), Session { caller, csrf, created: Instant::now() });
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

async fn logout(State(s): State<AppState>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    if authorize(&s, &headers, f.csrf.as_deref()).is_ok() {
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

// ---------- live ----------

/// Server-sent events: `change` whenever builds, workers or repositories
/// change, at most four a second.
async fn events(State(s): State<AppState>) -> impl IntoResponse {
    let rx = s.changes.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        tokio::time::sleep(Duration::from_millis(250)).await;
        rx.borrow_and_update();
        Some((Ok::<_, std::convert::Infallible>(SseEvent::default().event("change").data("changed")), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

const CSS: &str = include_str!("web/kiln.css");
const JS: &str = include_str!("web/kiln.js");
