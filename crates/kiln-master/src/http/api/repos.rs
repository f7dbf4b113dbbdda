//! `/api/v1/repos`: the channels, their packages and snapshots, and
//! changes to them (promote, remove, snapshot, rollback), which go to
//! [`crate::ops::repos::change`].

use crate::caller::Caller;
use crate::clock::rfc3339;
use crate::events::RepoOp;
use crate::http::ApiError;
use crate::ops;
use crate::shared::Shared;
use axum::extract::{Path, Query, State};
use axum::Json;
use kiln_proto::api::{
    AdvisoryBody, AdvisoryInfo, ChannelInfo, PackageInfo, PromoteBody, RemoveBody, RepoChange, SnapshotBody,
    SnapshotInfo,
};
use serde::Deserialize;
use std::sync::Arc;

type AppState = Arc<Shared>;

async fn op(s: &Shared, caller: &Caller, op: RepoOp) -> Result<Json<RepoChange>, ApiError> {
    let message = ops::repos::change(s, caller, op).await?;
    Ok(Json(RepoChange { message }))
}

/// 404 unless `channel` is configured.
fn known_channel(s: &Shared, channel: &str) -> Result<(), ApiError> {
    match s.farm().cfg.channel(channel) {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!("no channel named {channel:?}"))),
    }
}

/// Every channel, with its revision and where it is served.
pub async fn list_channels(State(s): State<AppState>) -> Result<Json<Vec<ChannelInfo>>, ApiError> {
    let farm = s.farm();
    let base = farm.cfg.master.public_url();
    let mut out = Vec::new();
    for ch in &farm.cfg.channels {
        let revision = s.store.channel_revision(&ch.name).await?;
        let packages = s.store.packages(&ch.name).await?.len();
        let fingerprint = s.channel_key(&ch.name).map(|k| k.fingerprint.clone()).unwrap_or_default();
        out.push(ChannelInfo {
            name: ch.name.clone(),
            accepts: ch.accepts.as_str().into(),
            promote_to: ch.promote_to.clone(),
            revision,
            packages,
            url: format!("{base}/repos/{}/", ch.name),
            fingerprint,
        });
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageQuery {
    /// Glob on the package name, e.g. `lib*`.
    filter: Option<String>,
    /// Only this target's repository (an rpm target's name, or a deb target's suite).
    target: Option<String>,
}

pub async fn list_packages(
    State(s): State<AppState>,
    Path(channel): Path<String>,
    Query(q): Query<PackageQuery>,
) -> Result<Json<Vec<PackageInfo>>, ApiError> {
    known_channel(&s, &channel)?;
    let farm = s.farm();
    let repo_filter = match &q.target {
        None => None,
        Some(t) => Some(match farm.cfg.target(t) {
            Some(target) if target.family == kiln_core::config::Family::Deb => {
                format!("apt:{}", target.suite.as_deref().unwrap_or("unstable"))
            }
            Some(target) => format!("yum:{}", target.name),
            None => return Err(ApiError::not_found(format!("no target named {t:?}"))),
        }),
    };
    let pattern = match &q.filter {
        Some(g) => Some(kiln_core::glob::Pattern::new(g).map_err(|e| ApiError::bad(format!("filter: {e}")))?),
        None => None,
    };
    let rows = s.store.packages(&channel).await?;
    let out = rows
        .into_iter()
        .filter(|p| pattern.as_ref().is_none_or(|g| g.matches(&p.name)))
        .filter(|p| repo_filter.as_ref().is_none_or(|r| &p.repo == r))
        .map(|p| PackageInfo {
            path: served_path(&p),
            name: p.name,
            version: p.version,
            arch: p.arch,
            kind: p.kind,
            repo: p.repo,
            size: p.size,
            sha256: p.sha256,
            build_id: p.build_id,
            published_at: rfc3339(p.published_at),
        })
        .collect();
    Ok(Json(out))
}

/// Where a pool file is served, relative to the channel's URL.
fn served_path(p: &kiln_db::PackageRow) -> String {
    if let Some(rest) = p.file.strip_prefix("pool/apt/") {
        return format!("apt/pool/{rest}");
    }
    if let Some(rest) = p.file.strip_prefix("pool/yum/") {
        if let Some((target, file)) = rest.split_once('/') {
            return format!("yum/{target}/Packages/{file}");
        }
    }
    p.file.clone()
}

pub async fn remove(
    State(s): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
    Json(b): Json<RemoveBody>,
) -> Result<Json<RepoChange>, ApiError> {
    op(&s, &caller, RepoOp::Remove { channel, name: b.name, version: b.version }).await
}

pub async fn promote(
    State(s): State<AppState>,
    caller: Caller,
    Json(b): Json<PromoteBody>,
) -> Result<Json<RepoChange>, ApiError> {
    op(&s, &caller, RepoOp::Promote { name: b.name, version: b.version, from: b.from, to: b.to, replace: b.replace })
        .await
}

pub async fn snapshot(
    State(s): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
    Json(b): Json<SnapshotBody>,
) -> Result<Json<RepoChange>, ApiError> {
    op(&s, &caller, RepoOp::Snapshot { channel, name: b.name }).await
}

pub async fn rollback(
    State(s): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
    Json(b): Json<SnapshotBody>,
) -> Result<Json<RepoChange>, ApiError> {
    op(&s, &caller, RepoOp::Rollback { channel, name: b.name }).await
}

pub async fn resign(
    State(s): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
) -> Result<Json<RepoChange>, ApiError> {
    op(&s, &caller, RepoOp::Resign { channel }).await
}

pub async fn add_advisory(
    State(s): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
    Json(b): Json<AdvisoryBody>,
) -> Result<Json<RepoChange>, ApiError> {
    let request = kiln_core::advisory::AdvisoryRequest {
        id: b.id,
        kind: b.kind,
        severity: b.severity,
        title: b.title,
        description: b.description,
        packages: b.packages,
        references: b.references,
    };
    op(&s, &caller, RepoOp::AddAdvisory { channel, request }).await
}

pub async fn remove_advisory(
    State(s): State<AppState>,
    caller: Caller,
    Path((channel, id)): Path<(String, String)>,
) -> Result<Json<RepoChange>, ApiError> {
    op(&s, &caller, RepoOp::RemoveAdvisory { channel, id }).await
}

pub async fn list_advisories(
    State(s): State<AppState>,
    Path(channel): Path<String>,
) -> Result<Json<Vec<AdvisoryInfo>>, ApiError> {
    known_channel(&s, &channel)?;
    let mut out = Vec::new();
    for body in s.store.advisories(&channel).await? {
        // One that cannot be read is left out, as the publisher leaves it out.
        let Ok(a) = serde_json::from_str::<kiln_core::advisory::Advisory>(&body) else { continue };
        out.push(AdvisoryInfo {
            id: a.id,
            kind: a.kind.as_str().into(),
            severity: a.severity,
            title: a.title,
            issued: rfc3339(i64::try_from(a.issued).unwrap_or(i64::MAX).saturating_mul(1_000_000)),
            packages: a
                .packages
                .iter()
                .map(|p| {
                    let epoch = if p.epoch > 0 { format!("{}:", p.epoch) } else { String::new() };
                    format!("{}-{epoch}{}-{}.{}", p.name, p.version, p.release, p.arch)
                })
                .collect(),
            references: a.references.into_iter().map(|r| r.href).collect(),
        });
    }
    Ok(Json(out))
}

pub async fn list_snapshots(
    State(s): State<AppState>,
    Path(channel): Path<String>,
) -> Result<Json<Vec<SnapshotInfo>>, ApiError> {
    known_channel(&s, &channel)?;
    let rows = s.store.snapshots(&channel).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| SnapshotInfo {
                name: r.name,
                created_at: rfc3339(r.created_at),
                revision: r.revision,
                packages: r.packages,
            })
            .collect(),
    ))
}
