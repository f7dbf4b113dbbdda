//! The builders page (every component × target with its last result,
//! and the force form), one builder's history, and forcing builds.

use super::layout::{bulb, duration, frame, page_error, web_error, when, Ctx};
use super::session::{authorize, ctx, form_get, FormPairs};
use crate::ops;
use crate::ops::requests::NewRequest;
use crate::shared::Shared;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use kiln_core::matrix::RequestSpec;
use kiln_core::props::{request_properties, PropertySource};
use maud::{html, Markup};
use std::collections::BTreeMap;
use std::sync::Arc;

type AppState = Arc<Shared>;

pub async fn list(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let c = ctx(&s, &headers, "/builders");
    let workers = crate::ops::workers::list(&s).await;
    let farm = s.farm();
    let stats = s.builder_stats().await;
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
    frame(&c, "Builders", true, body)
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
                    " "
                    label title="Higher goes first when a slot frees (-1000 to 1000; default 0, releases 1)" {
                        "Priority " input type="number" name="priority" min="-1000" max="1000" step="1" placeholder="0";
                    }
                    button type="submit" { "Force build" }
                }
            } @else {
                p { a href={"/login?next=" (c.path)} { "Log in" } " to force builds." }
            }
        }
    }
}

pub async fn one(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((component, target)): Path<(String, String)>,
) -> Response {
    let path = format!("/builders/{component}/{target}");
    let c = ctx(&s, &headers, &path);
    let farm = s.farm();
    let configured = farm.cfg.component(&component).is_some_and(|comp| farm.cfg.builds_on(comp, &target));
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
    // An uploaded source package is a builder of its builds: it has no
    // config to force a build from (its page's builds have Rebuild).
    if !configured && rows.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            page_error("No such builder", &format!("{component}@{target} is not a builder of this farm.")),
        )
            .into_response();
    }
    let now = crate::clock::now_us();
    let body = html! {
        h1 { (component) "@" (target) }
        @if configured {
            (force_form(&c, &[], &[], Some((&component, &target))))
        } @else {
            p { "Builds of uploads of " (component) " (no component of this name in the config): rebuild one from its page." }
        }
        table.list {
            thead { tr { th { "Build" } th { "State" } th { "Version" } th { "Took" } th { "Requested" } th { "By" } th { "Worker" } th { "Reason" } } }
            tbody {
                @for b in &rows {
                    tr {
                        td { a href={"/builds/" (b.id)} { "#" (b.id) } }
                        td { span class={"bulb " (bulb(b.state))} {} " " (b.state) }
                        td { (b.properties.get("version").map(|p| p.value.as_str()).unwrap_or("")) }
                        td { (duration(b.started_at, b.finished_at, now)) }
                        td { (when(b.requested_at)) }
                        td { (b.requested_by.as_deref().unwrap_or("")) }
                        td { (b.worker.as_deref().unwrap_or("")) }
                        td { (b.reason.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    };
    frame(&c, &format!("{component}@{target}"), true, body)
}

pub async fn force(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<FormPairs>,
) -> Result<Redirect, Response> {
    let sess = authorize(&s, &headers, form_get(&f, "csrf")).await?;
    let components: Vec<String> = f.iter().filter(|(k, _)| k == "component").map(|(_, v)| v.clone()).collect();
    let targets: Vec<String> = f.iter().filter(|(k, _)| k == "target").map(|(_, v)| v.clone()).collect();
    let keys = f.iter().filter(|(k, _)| k == "prop_key").map(|(_, v)| v.trim().to_string());
    let values = f.iter().filter(|(k, _)| k == "prop_value").map(|(_, v)| v.clone());
    let mut given: BTreeMap<String, String> = keys.zip(values).filter(|(k, _)| !k.is_empty()).collect();
    if let Some(p) = form_get(&f, "priority").map(str::trim).filter(|p| !p.is_empty()) {
        given.insert(kiln_core::props::PRIORITY_PROPERTY.to_string(), p.to_string());
    }
    if components.is_empty() {
        let page = page_error("Nothing to build", "Choose at least one component.");
        return Err((StatusCode::BAD_REQUEST, page).into_response());
    }
    let properties =
        request_properties(&given, PropertySource::Request).map_err(|e| web_error(ops::OpError::from(e)))?;
    let reason = form_get(&f, "reason").filter(|r| !r.trim().is_empty()).unwrap_or("forced from the web");
    let spec = RequestSpec { components, all: false, targets };
    let req = NewRequest { spec, properties, reason: Some(reason.to_string()) };
    let created = ops::requests::submit(&s, &sess.caller, req).await.map_err(web_error)?;
    Ok(match created.builds.as_slice() {
        [one] => Redirect::to(&format!("/builds/{}", one.id)),
        _ => Redirect::to("/"),
    })
}
