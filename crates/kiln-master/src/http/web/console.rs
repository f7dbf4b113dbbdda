//! The console: recent requests as rows, builders as columns (grouped by
//! target or by component), one bulb per build. Above
//! [`COLLAPSE_ABOVE`] builders it starts collapsed: one column per group,
//! each cell the worst state of that group's builds in the request.
//!
//! [`layout`] and [`model`] are pure (what to show, from the config and
//! what the store returned); [`render`] turns the model into HTML.

use super::layout::{bulb, frame, web_error, when};
use super::session::ctx;
use crate::shared::Shared;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use kiln_core::props::PropertySource;
use kiln_core::{BuildState, FarmConfig};
use kiln_db::{BuilderStats, RequestRow};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Requests shown on the console.
const CONSOLE_ROWS: i64 = 50;
/// The attention line names at most this many builders.
const ATTENTION_NAMED: usize = 12;
/// Above this many builder columns the console starts collapsed.
pub const COLLAPSE_ABOVE: usize = 200;

#[derive(Deserialize, Default, Debug, Clone)]
pub struct ConsoleQuery {
    pub target: Option<String>,
    pub component: Option<String>,
    pub before: Option<i64>,
    /// Show every builder even on a big farm.
    pub expand: Option<u8>,
    /// Group columns by `target` (default) or `component`.
    pub group: Option<String>,
}

/// A builder: (component, target).
type BuilderKey = (String, String);

/// The console's columns, decided before anything is read from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub by_component: bool,
    /// Groups (a target, or a component) and their builders.
    pub columns: Vec<(String, Vec<BuilderKey>)>,
    pub total: usize,
    pub collapsed: bool,
    pub target_filter: Option<String>,
    pub component_filter: Option<String>,
}

impl Layout {
    fn group_param(&self) -> &'static str {
        if self.by_component {
            "component"
        } else {
            "target"
        }
    }

    /// Within a group, a column is named by the other dimension.
    fn sub<'a>(&self, b: &'a BuilderKey) -> &'a str {
        if self.by_component {
            &b.1
        } else {
            &b.0
        }
    }
}

/// Which columns to show for `q`: the config's builders, and `seen`
/// builders the config does not name (uploaded source packages, which
/// build as components of their own name) after them.
pub fn layout(cfg: &FarmConfig, q: &ConsoleQuery, seen: &[BuilderKey]) -> Layout {
    let target_filter = q.target.clone().filter(|t| !t.is_empty());
    let component_filter = q.component.clone().filter(|t| !t.is_empty());
    let keep = |comp: &str, tgt: &str| {
        target_filter.as_deref().is_none_or(|t| t == tgt) && component_filter.as_deref().is_none_or(|x| x == comp)
    };
    let by_component = q.group.as_deref() == Some("component");
    let mut columns: Vec<(String, Vec<BuilderKey>)> = Vec::new();
    if by_component {
        for comp in &cfg.components {
            let builders: Vec<BuilderKey> = cfg
                .targets_of(comp)
                .filter(|t| keep(&comp.name, &t.name))
                .map(|t| (comp.name.clone(), t.name.clone()))
                .collect();
            if !builders.is_empty() {
                columns.push((comp.name.clone(), builders));
            }
        }
    } else {
        for t in &cfg.targets {
            let builders: Vec<BuilderKey> = cfg
                .components
                .iter()
                .filter(|comp| cfg.builds_on(comp, &t.name) && keep(&comp.name, &t.name))
                .map(|comp| (comp.name.clone(), t.name.clone()))
                .collect();
            if !builders.is_empty() {
                columns.push((t.name.clone(), builders));
            }
        }
    }
    let configured = |b: &BuilderKey| cfg.component(&b.0).is_some_and(|c| cfg.builds_on(c, &b.1));
    let mut uploaded: Vec<&BuilderKey> = seen.iter().filter(|b| !configured(b) && keep(&b.0, &b.1)).collect();
    uploaded.sort();
    uploaded.dedup();
    for b in uploaded {
        let group = if by_component { &b.0 } else { &b.1 };
        match columns.iter_mut().find(|(g, _)| g == group) {
            Some((_, builders)) => builders.push(b.clone()),
            None => columns.push((group.clone(), vec![b.clone()])),
        }
    }
    let total: usize = columns.iter().map(|(_, c)| c.len()).sum();
    let collapsed =
        total > COLLAPSE_ABOVE && q.expand.is_none() && target_filter.is_none() && component_filter.is_none();
    Layout { by_component, columns, total, collapsed, target_filter, component_filter }
}

/// What the store returned for the console's requests.
#[derive(Debug, Default)]
pub struct Fetched {
    pub requests: Vec<RequestRow>,
    /// Each request's own properties, by request id.
    pub properties: Vec<(i64, kiln_core::props::Properties)>,
    /// Expanded: (build id, request id, component, target, state).
    pub cells: Vec<(i64, i64, String, String, BuildState)>,
    /// Collapsed: (request id, group, state, how many).
    pub summary: Vec<(i64, String, BuildState, i64)>,
}

/// Everything the console shows.
#[derive(Debug)]
pub struct Model {
    pub layout: Layout,
    pub requests: Vec<RequestRow>,
    /// A request's properties as `k=v` words.
    pub props: HashMap<i64, String>,
    /// Expanded cells: (request, component, target) to (build, state).
    pub cells: HashMap<(i64, String, String), (i64, BuildState)>,
    /// Collapsed cells: (request, group) to (worst state, builds).
    pub worst: HashMap<(i64, String), (BuildState, i64)>,
    /// Each builder's last result.
    pub last: HashMap<BuilderKey, BuildState>,
    /// Builders by the bulb of their last result.
    pub counts: BTreeMap<&'static str, usize>,
    /// Each group's worst last result.
    pub group_worst: HashMap<String, BuildState>,
    /// Builders whose last build did not end well.
    pub not_green: usize,
    /// Those builders, in column order.
    pub failing: Vec<BuilderKey>,
    /// Why queued builds wait, by build id (their cells say it on hover).
    pub waits: HashMap<i64, String>,
}

/// The console's content from its layout, what the store returned and the
/// builders' last results.
pub fn model(layout: Layout, fetched: Fetched, stats: &[BuilderStats]) -> Model {
    let props = fetched
        .properties
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
    let cells = fetched.cells.into_iter().map(|(id, rid, comp, tgt, st)| ((rid, comp, tgt), (id, st))).collect();
    let mut worst: HashMap<(i64, String), (BuildState, i64)> = HashMap::new();
    for (rid, group, st, n) in fetched.summary {
        let e = worst.entry((rid, group)).or_insert((st, 0));
        if st.severity() > e.0.severity() {
            e.0 = st;
        }
        e.1 += n;
    }
    let last: HashMap<BuilderKey, BuildState> =
        stats.iter().map(|st| ((st.component.clone(), st.target.clone()), st.last_state)).collect();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut group_worst: HashMap<String, BuildState> = HashMap::new();
    for (g, builders) in &layout.columns {
        for b in builders {
            if let Some(st) = last.get(b) {
                *counts.entry(bulb(*st)).or_default() += 1;
                let w = group_worst.entry(g.clone()).or_insert(*st);
                if st.severity() > w.severity() {
                    *w = *st;
                }
            }
        }
    }
    let not_green = counts.iter().filter(|(k, _)| matches!(**k, "bad" | "cancel" | "skip")).map(|(_, n)| n).sum();
    let failing = layout
        .columns
        .iter()
        .flat_map(|(_, builders)| builders)
        .filter(|b| last.get(*b).is_some_and(|st| matches!(bulb(*st), "bad" | "cancel" | "skip")))
        .cloned()
        .collect();
    Model {
        layout,
        requests: fetched.requests,
        props,
        cells,
        worst,
        last,
        counts,
        group_worst,
        not_green,
        failing,
        waits: HashMap::new(),
    }
}

pub async fn page(State(s): State<Arc<Shared>>, headers: HeaderMap, Query(q): Query<ConsoleQuery>) -> Response {
    let c = ctx(&s, &headers, "/");
    let farm = s.farm();
    let stats = s.builder_stats().await;
    let seen: Vec<BuilderKey> = stats.iter().map(|st| (st.component.clone(), st.target.clone())).collect();
    let layout = layout(&farm.cfg, &q, &seen);
    let requests = match s.store.recent_requests(CONSOLE_ROWS, q.before).await {
        Ok(r) => r,
        Err(e) => return web_error(e),
    };
    let ids: Vec<i64> = requests.iter().map(|r| r.id).collect();
    let properties = s.store.request_properties(&ids).await.unwrap_or_default();
    let mut fetched = Fetched { requests, properties, ..Default::default() };
    if layout.collapsed {
        fetched.summary = s.store.console_summary(&ids, layout.by_component).await.unwrap_or_default();
    } else {
        let (t, comp) = (layout.target_filter.as_deref(), layout.component_filter.as_deref());
        fetched.cells = s.store.console_cells(&ids, t, comp).await.unwrap_or_default();
    }
    let mut m = model(layout, fetched, &stats);
    let waiting = s.waiting();
    m.waits = m.cells.values().filter_map(|(id, _)| Some((*id, waiting.why.get(id)?.message().to_string()))).collect();
    frame(&c, "Console", true, render(&m, &farm.cfg))
}

/// The console's HTML.
pub fn render(m: &Model, cfg: &FarmConfig) -> Markup {
    let l = &m.layout;
    let group_param = l.group_param();
    let target_filter = l.target_filter.as_deref();
    let component_filter = l.component_filter.as_deref();
    html! {
        section.summary aria-label="Summary" {
            @if m.not_green == 0 {
                p.allgood { "All " (l.total) " builders: last build green or in progress." }
            } @else {
                p.attention {
                    (m.not_green) " of " (l.total) " builders need attention: "
                    @for (i, (comp, t)) in m.failing.iter().take(ATTENTION_NAMED).enumerate() {
                        @if i > 0 { ", " }
                        a href={"/builders/" (comp) "/" (t)} { (comp) "@" (t) }
                    }
                    @if m.failing.len() > ATTENTION_NAMED { " and " (m.failing.len() - ATTENTION_NAMED) " more" }
                    "."
                }
            }
            ul.counts {
                @for (k, n) in &m.counts { li { span class={"bulb " (k)} {} " " (n) " " (label_of(k)) } }
            }
        }
        form.filter method="get" action="/" {
            label { "Target " select name="target" { option value="" { "all" } @for t in &cfg.targets { option value=(t.name) selected[target_filter == Some(t.name.as_str())] { (t.name) } } } }
            label { "Component " select name="component" { option value="" { "all" } @for comp in &cfg.components { option value=(comp.name) selected[component_filter == Some(comp.name.as_str())] { (comp.name) } } } }
            label { "Group by " select name="group" {
                option value="target" selected[!l.by_component] { "target" }
                option value="component" selected[l.by_component] { "component" }
            } }
            button type="submit" { "Show" }
            @if l.collapsed {
                span.hint { (l.total) " builders: one column per " (group_param) " (worst state). " a href={"/?expand=1&group=" (group_param)} { "Show every builder" } }
            }
        }
        div.gridwrap {
            table.console {
                @if l.collapsed {
                    thead {
                        tr {
                            th scope="col" { "Request" }
                            @for (g, builders) in &l.columns { th.group scope="col" { a href={"/?" (group_param) "=" (g) "&group=" (group_param)} title={"expand " (g)} { (g) } br; small { (builders.len()) } } }
                        }
                        tr.lastrow {
                            th scope="row" { "Last result" }
                            @for (g, _) in &l.columns { td { @if let Some(st) = m.group_worst.get(g) { span class={"bulb " (bulb(*st))} title={(g) ": worst " (st)} {} } } }
                        }
                    }
                    tbody {
                        @for r in &m.requests {
                            tr {
                                (request_header(r, m.props.get(&r.id)))
                                @for (g, _) in &l.columns {
                                    td { @if let Some((st, n)) = m.worst.get(&(r.id, g.clone())) {
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
                            @for (g, builders) in &l.columns { th.group colspan=(builders.len()) scope="colgroup" { (g) } }
                        }
                        tr {
                            @for (_, builders) in &l.columns { @for b in builders { th.comp scope="col" title={(b.0) "@" (b.1)} { span { (l.sub(b)) } } } }
                        }
                        tr.lastrow {
                            th scope="row" { "Last result" }
                            @for (_, builders) in &l.columns { @for b in builders {
                                td { @if let Some(st) = m.last.get(b) { span class={"bulb " (bulb(*st))} title={(b.0) "@" (b.1) ": " (st)} {} } }
                            } }
                        }
                    }
                    tbody {
                        @for r in &m.requests {
                            tr id={"r" (r.id)} {
                                (request_header(r, m.props.get(&r.id)))
                                @for (_, builders) in &l.columns { @for (comp, t) in builders {
                                    td { @if let Some((id, st)) = m.cells.get(&(r.id, comp.clone(), t.clone())) {
                                        @let why = m.waits.get(id).filter(|_| *st == BuildState::Queued).map(|w| format!(": {w}")).unwrap_or_default();
                                        a class={"bulb " (bulb(*st))} href={"/builds/" (id)} title={"#" (id) " " (st) (why)} aria-label={"build " (id) " " (st) (why)} {}
                                    } }
                                } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(oldest) = m.requests.last() {
            @if m.requests.len() as i64 == CONSOLE_ROWS { p { a href={"/?before=" (oldest.id)} { "Older requests" } } }
        }
    }
}

fn request_header(r: &RequestRow, props: Option<&String>) -> Markup {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn farm(components: usize, targets: usize) -> FarmConfig {
        let mut text = String::from("[[worker]]\nname = \"w1\"\ntoken_file = \"w1.token\"\n");
        for t in 0..targets {
            text.push_str(&format!("[[target]]\nname = \"t{t}\"\nfamily = \"deb\"\n"));
        }
        for c in 0..components {
            text.push_str(&format!("[[component]]\nname = \"c{c}\"\nsteps = [{{ name = \"s\", run = \"true\" }}]\n"));
        }
        kiln_core::config::parse(&text).expect("config")
    }

    fn stats(component: &str, target: &str, last_state: BuildState) -> BuilderStats {
        BuilderStats {
            component: component.into(),
            target: target.into(),
            last_build_id: 1,
            last_state,
            queued: 0,
            running: 0,
        }
    }

    #[test]
    fn columns_group_by_target_or_component_and_filter() {
        let cfg = farm(2, 3);
        let by_target = layout(&cfg, &ConsoleQuery::default(), &[]);
        assert_eq!(by_target.columns.len(), 3);
        assert_eq!(by_target.columns[0].1, [("c0".to_string(), "t0".to_string()), ("c1".into(), "t0".into())]);
        assert!(!by_target.collapsed);
        let q = ConsoleQuery { group: Some("component".into()), target: Some("t1".into()), ..Default::default() };
        let by_component = layout(&cfg, &q, &[]);
        let names: Vec<&str> = by_component.columns.iter().map(|(g, _)| g.as_str()).collect();
        assert_eq!(names, ["c0", "c1"]);
        assert_eq!(by_component.total, 2);
    }

    #[test]
    fn a_big_farm_starts_collapsed_unless_expanded_or_filtered() {
        let cfg = farm(21, 10);
        assert!(layout(&cfg, &ConsoleQuery::default(), &[]).collapsed);
        assert!(!layout(&cfg, &ConsoleQuery { expand: Some(1), ..Default::default() }, &[]).collapsed);
        assert!(!layout(&cfg, &ConsoleQuery { target: Some("t0".into()), ..Default::default() }, &[]).collapsed);
    }

    #[test]
    fn the_worst_state_shows_and_red_builders_are_counted() {
        let cfg = farm(2, 1);
        let fetched = Fetched {
            summary: vec![(7, "t0".into(), BuildState::Succeeded, 3), (7, "t0".into(), BuildState::Failed, 1)],
            ..Default::default()
        };
        let last = [stats("c0", "t0", BuildState::Succeeded), stats("c1", "t0", BuildState::Cancelled)];
        let m = model(layout(&cfg, &ConsoleQuery::default(), &[]), fetched, &last);
        assert_eq!(m.worst[&(7, "t0".to_string())], (BuildState::Failed, 4));
        assert_eq!(m.group_worst["t0"], BuildState::Cancelled);
        assert_eq!(m.not_green, 1);
        assert_eq!(m.failing, [("c1".to_string(), "t0".to_string())]);
        assert_eq!(m.counts.get("ok"), Some(&1));
        let html = render(&m, &cfg).into_string();
        assert!(html.contains("1 of 2 builders need attention: <a href=\"/builders/c1/t0\">c1@t0</a>."), "{html}");
    }

    #[test]
    fn uploaded_source_packages_get_columns_of_their_own() {
        let cfg = farm(1, 2);
        let seen = [("c0".to_string(), "t0".to_string()), ("hello".to_string(), "t1".to_string())];
        let by_target = layout(&cfg, &ConsoleQuery::default(), &seen);
        assert_eq!(by_target.total, 3);
        assert_eq!(by_target.columns[1].1, [("c0".to_string(), "t1".to_string()), ("hello".into(), "t1".into())]);
        let q = ConsoleQuery { group: Some("component".into()), ..Default::default() };
        let by_component = layout(&cfg, &q, &seen);
        let groups: Vec<&str> = by_component.columns.iter().map(|(g, _)| g.as_str()).collect();
        assert_eq!(groups, ["c0", "hello"]);
        let last = [stats("hello", "t1", BuildState::Failed)];
        let m = model(by_target, Fetched::default(), &last);
        assert_eq!(m.failing, [("hello".to_string(), "t1".to_string())], "an upload that failed is named too");
    }
}
