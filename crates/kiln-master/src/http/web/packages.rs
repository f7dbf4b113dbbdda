//! The packages view, as a packaging team reads a farm (OBS's package ×
//! repository monitor): each source package (component, or uploaded
//! source) by target, with the version each channel holds, the build that
//! made it, and a newer build of it that failed.
//!
//! [`table`] is pure: the view from the config's targets and channels, the
//! channels' packages, the builds that made them and the builders' last
//! results. [`page`] reads those and renders it.

use super::layout::{bulb, frame, web_error};
use super::session::ctx;
use crate::shared::Shared;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use kiln_core::BuildState;
use kiln_db::{BuildRow, BuilderStats, PackageRow};
use maud::{html, Markup};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// What one channel holds of a builder's packages: the newest build of it
/// there and that build's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub build: i64,
    pub version: String,
}

/// One source package on one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell {
    /// By channel, in the table's channel order.
    pub held: Vec<Option<Held>>,
    /// The builder's last build when it failed after what the channels hold.
    pub newer_failure: Option<(i64, BuildState)>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub channels: Vec<String>,
    pub targets: Vec<String>,
    /// Source packages, by name; a cell per target where it has anything.
    pub rows: BTreeMap<String, BTreeMap<String, Cell>>,
}

/// The view from each channel's packages (`published`, in `channels`
/// order), the builds they name and the builders' last results.
pub fn table(
    channels: Vec<String>,
    targets: Vec<String>,
    published: &[Vec<PackageRow>],
    builds: &[BuildRow],
    stats: &[BuilderStats],
) -> Table {
    let by_id: HashMap<i64, &BuildRow> = builds.iter().map(|b| (b.id, b)).collect();
    let mut rows: BTreeMap<String, BTreeMap<String, Cell>> = BTreeMap::new();
    for (i, packages) in published.iter().enumerate() {
        for (p, b) in packages.iter().filter_map(|p| p.build_id.and_then(|id| by_id.get(&id)).map(|b| (p, b))) {
            let cell = rows.entry(b.component.clone()).or_default().entry(b.target.clone()).or_default();
            cell.held.resize(channels.len(), None);
            // The newest build there; of its files, the source package
            // names the version best (a binary may carry a binNMU's).
            let replaces = match &cell.held[i] {
                None => true,
                Some(h) => h.build < b.id || (h.build == b.id && p.kind == "dsc"),
            };
            if replaces {
                cell.held[i] = Some(Held { build: b.id, version: p.version.clone() });
            }
        }
    }
    for st in stats {
        let failed = matches!(st.last_state, BuildState::Failed | BuildState::Cancelled);
        let Some(cell) = rows.get_mut(&st.component).and_then(|r| r.get_mut(&st.target)) else { continue };
        let newest = cell.held.iter().flatten().map(|h| h.build).max().unwrap_or(0);
        if failed && st.last_build_id > newest {
            cell.newer_failure = Some((st.last_build_id, st.last_state));
        }
    }
    Table { channels, targets, rows }
}

pub async fn page(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let c = ctx(&s, &headers, "/packages");
    let farm = s.farm();
    let channels: Vec<String> = farm.cfg.channels.iter().map(|ch| ch.name.clone()).collect();
    let mut published = Vec::new();
    for ch in &channels {
        match s.store.packages_to_show(ch).await {
            Ok(p) => published.push(p),
            Err(e) => return web_error(e),
        }
    }
    let ids: BTreeSet<i64> = published.iter().flatten().filter_map(|p| p.build_id).collect();
    let builds = match s.store.builds_by_ids(&ids.into_iter().collect::<Vec<_>>()).await {
        Ok(b) => b,
        Err(e) => return web_error(e),
    };
    let stats = s.builder_stats().await;
    let targets = farm.cfg.targets.iter().map(|t| t.name.clone()).collect();
    let t = table(channels, targets, &published, &builds, &stats);
    frame(&c, "Packages", true, render(&t))
}

fn render(t: &Table) -> Markup {
    html! {
        h1 { "Packages" }
        p { "Each source package by target: the version each channel holds and the build that made it; "
            "a build that failed after it is marked." }
        @if t.rows.is_empty() {
            p { "No channel holds a package yet." }
        } @else {
            div.gridwrap {
                table.list.packages {
                    thead { tr { th scope="col" { "Source package" } @for target in &t.targets { th scope="col" { (target) } } } }
                    tbody {
                        @for (name, cells) in &t.rows {
                            tr {
                                th scope="row" { (name) }
                                @for target in &t.targets {
                                    td { @if let Some(cell) = cells.get(target) { (render_cell(t, name, target, cell)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn render_cell(t: &Table, name: &str, target: &str, cell: &Cell) -> Markup {
    html! {
        @for (channel, held) in t.channels.iter().zip(&cell.held) {
            @if let Some(h) = held {
                div.held {
                    span.channel { (channel) } " "
                    a href={"/builds/" (h.build)} title={"build #" (h.build)} { (h.version) }
                }
            }
        }
        @if let Some((id, state)) = cell.newer_failure {
            div.newer {
                span class={"bulb " (bulb(state))} {} " "
                a href={"/builds/" (id)} { "#" (id) " " (state) } " "
                a href={"/builders/" (name) "/" (target)} { "builder" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(id: i64, component: &str, target: &str) -> BuildRow {
        BuildRow {
            id,
            request_id: id,
            component: component.into(),
            target: target.into(),
            state: BuildState::Succeeded,
            reason: None,
            requested_at: 0,
            started_at: None,
            finished_at: None,
            requested_by: None,
            worker: None,
            attempt: 1,
            properties: Default::default(),
            depends_on: Vec::new(),
        }
    }

    fn package(channel: &str, build: i64, kind: &str, version: &str) -> PackageRow {
        PackageRow {
            id: 0,
            channel: channel.into(),
            repo: String::new(),
            kind: kind.into(),
            name: String::new(),
            version: version.into(),
            arch: "all".into(),
            file: String::new(),
            sha256: String::new(),
            size: 0,
            build_id: Some(build),
            entry: String::new(),
            published_at: 0,
        }
    }

    #[test]
    fn each_channel_shows_its_newest_build_and_a_later_failure_is_marked() {
        let builds = [
            build(3, "libgrace", "d12"),
            build(7, "libgrace", "d12"),
            build(8, "libgrace", "d12"),
            build(9, "hello", "el9"),
        ];
        let dev = vec![
            package("dev", 7, "dsc", "1.4-1+nightly.7"),
            package("dev", 8, "deb", "1.4-1+nightly.8+b1"),
            package("dev", 8, "dsc", "1.4-1+nightly.8"),
            package("dev", 9, "rpm", "2.0-1"),
        ];
        let stable = vec![package("stable", 3, "deb", "1.4-1")];
        let stats = [BuilderStats {
            component: "libgrace".into(),
            target: "d12".into(),
            last_build_id: 12,
            last_state: BuildState::Failed,
            queued: 0,
            running: 0,
        }];
        let t = table(
            vec!["dev".into(), "stable".into()],
            vec!["d12".into(), "el9".into()],
            &[dev, stable],
            &builds,
            &stats,
        );
        let lib = &t.rows["libgrace"]["d12"];
        let held: Vec<Option<(i64, &str)>> =
            lib.held.iter().map(|h| h.as_ref().map(|h| (h.build, h.version.as_str()))).collect();
        assert_eq!(held, [Some((8, "1.4-1+nightly.8")), Some((3, "1.4-1"))]);
        assert_eq!(lib.newer_failure, Some((12, BuildState::Failed)));
        assert_eq!(t.rows["hello"]["el9"].newer_failure, None);
        let html = render(&t).into_string();
        assert!(html.contains("<a href=\"/builds/8\" title=\"build #8\">1.4-1+nightly.8</a>"), "{html}");
        assert!(html.contains("#12 failed"), "{html}");
    }
}
