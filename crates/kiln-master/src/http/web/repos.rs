//! The repositories pages: every channel, and one channel's packages with
//! how to use it and (for a logged-in user) promote and remove buttons,
//! which go to [`crate::ops::repos::change`].

use super::layout::{frame, page_error, web_error, when};
use super::session::{authorize, ctx, form_get, FormPairs};
use crate::events::RepoOp;
use crate::ops;
use crate::shared::Shared;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

type AppState = Arc<Shared>;

pub async fn list(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let c = ctx(&s, &headers, "/repos");
    let farm = s.farm();
    let base = farm.cfg.master.public_url();
    let mut rows = Vec::new();
    for ch in &farm.cfg.channels {
        let revision = s.store.channel_revision(&ch.name).await.unwrap_or(0);
        let n = s.store.packages(&ch.name).await.map(|p| p.len()).unwrap_or(0);
        rows.push((ch.clone(), revision, n, s.key_expiry(&ch.name)));
    }
    let body = html! {
        h1 { "Repositories" }
        table.list {
            thead { tr { th { "Channel" } th { "Takes" } th { "Promotes to" } th { "Files" } th { "Revision" } th { "Key expires" } } }
            tbody { @for (ch, rev, n, expiry) in &rows { tr {
                td { a href={"/repos/" (ch.name)} { (ch.name) } }
                td { (ch.accepts.as_str()) }
                td { (ch.promote_to.join(", ")) }
                td { (n) }
                td { (rev) }
                td { @match expiry {
                    Some(at) => { (key_expiry_text(*at)) }
                    None => { "never" }
                } }
            } } }
        }
        p { "Each channel is served at " code { (base) "/repos/CHANNEL/" } ", signed with its own key." }
    };
    frame(&c, "Repositories", true, body)
}

/// A key's expiry as the page shows it: the date, and how far off it is.
fn key_expiry_text(at: u64) -> String {
    let date = crate::clock::rfc3339(at.saturating_mul(1_000_000).min(i64::MAX as u64) as i64);
    let now = (crate::clock::now_us() / 1_000_000).max(0) as u64;
    let day = date.split('T').next().unwrap_or(&date).to_string();
    if at <= now {
        format!("{day} (expired)")
    } else {
        format!("{day} (in {} days)", (at - now) / 86400)
    }
}

pub async fn channel(State(s): State<AppState>, headers: HeaderMap, Path(channel): Path<String>) -> Response {
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
    frame(&c, &format!("Channel {channel}"), true, body)
}

pub async fn change(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(channel): Path<String>,
    Form(f): Form<FormPairs>,
) -> Result<Redirect, Response> {
    let sess = authorize(&s, &headers, form_get(&f, "csrf")).await?;
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
        other => return Err((StatusCode::BAD_REQUEST, page_error("Unknown change", other)).into_response()),
    };
    ops::repos::change(&s, &sess.caller, op).await.map_err(web_error)?;
    Ok(Redirect::to(&format!("/repos/{channel}")))
}
