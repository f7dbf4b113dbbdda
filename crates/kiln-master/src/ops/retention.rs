//! Garbage collection by the `[retention]` rules (`kiln gc`, `POST
//! /api/v1/gc`, and the master's daily run): old builds' logs and
//! artifacts, accepted uploads' files, rejected uploads, and mirrors of
//! repositories the config no longer names. Pinning a
//! build keeps its files.
//!
//! Which builds lose their files is [`kiln_core::retention::to_prune`]'s
//! decision. Stored content goes when nothing names it any more: no
//! channel, no snapshot, no build that keeps its files (content is stored
//! once, whoever uploaded it) — also content a channel dropped after its
//! build was pruned, or a retried build's first upload. Content stored or
//! reused within the last ten minutes is left for the next run, so an
//! upload racing a collection keeps its file (the store touches content it
//! reuses). An upload a queued or running build takes its source from
//! stays. Files go first, then the builds are marked: a collection cut
//! short leaves nothing named that is gone for good, and the next one
//! finishes it.

use crate::caller::Caller;
use crate::ops::OpError;
use crate::shared::Shared;
use kiln_core::perm::Permission;
use kiln_proto::api::{GcFreed, GcReport};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// Content stored or reused this long before a collection began is not
/// removed: its build's artifact row may not be written yet.
const RECENT_CONTENT: Duration = Duration::from_secs(600);

/// A mirror of a repository the config no longer names goes once unchanged this long.
const UNNAMED_MIRROR_AGE: Duration = Duration::from_secs(86_400);

/// Runs a collection for `caller` (server admins only).
pub async fn gc(s: &Shared, caller: &Caller, dry_run: bool) -> Result<GcReport, OpError> {
    caller.require(Permission::ServerAdmin).map_err(|e| OpError::Forbidden(e.0))?;
    collect(s, dry_run).await
}

/// Pins (or unpins) build `id`, for whoever may cancel it.
pub async fn pin(s: &Shared, caller: &Caller, id: i64, pinned: bool) -> Result<(), OpError> {
    let Some(build) = s.store.build(id).await? else { return Err(OpError::NotFound(format!("no build {id}"))) };
    super::builds::may_cancel(caller, build.requested_by.as_deref()).map_err(|e| OpError::Forbidden(e.0))?;
    if let Some((_, Some(_))) = s.store.retention_of(id).await? {
        if pinned {
            return Err(OpError::Conflict(format!("build {id}'s logs and artifacts were already removed")));
        }
    }
    s.store.set_pinned(id, pinned).await?;
    tracing::info!(build = id, pinned, by = %caller.name, "build pin changed");
    Ok(())
}

#[derive(Default)]
struct Tally(BTreeMap<&'static str, (u64, u64)>);

impl Tally {
    fn add(&mut self, kind: &'static str, bytes: u64) {
        let e = self.0.entry(kind).or_default();
        e.0 += 1;
        e.1 += bytes;
    }
}

async fn collect(s: &Shared, dry_run: bool) -> Result<GcReport, OpError> {
    let began = Instant::now();
    let farm = s.farm();
    let rules = farm.cfg.retention.clone();
    let data_dir = farm.data_dir();
    let now_us = crate::clock::now_us();
    let facts = s.store.retention_facts().await?;
    let prune = kiln_core::retention::to_prune(&facts, &rules, now_us);
    let kept = s.store.kept_content(&prune).await?;
    let uploads_in_use = s.store.uploads_in_use().await?;
    let read_ms = began.elapsed().as_millis() as u64;
    // Every stored content nothing keeps: the pruned builds', and any a
    // channel or a retried build let go of since.
    let leaving_content: Vec<String> =
        s.artifacts.stored().map_err(OpError::internal)?.into_iter().filter(|sha| !kept.contains(sha)).collect();
    let unused_since = SystemTime::now() - RECENT_CONTENT;
    let mut tally = Tally::default();
    for (i, sha) in leaving_content.iter().enumerate() {
        if i % 256 == 255 {
            // Many small file operations: let the rest of the master run between.
            tokio::task::yield_now().await;
        }
        match s.artifacts.remove_unused(sha, unused_since, dry_run) {
            Ok(Some(bytes)) => tally.add("artifacts", bytes),
            Ok(None) => {}
            Err(e) => tracing::warn!(sha256 = %sha, error = %e, "garbage collection cannot remove stored content"),
        }
    }
    let content_ms = began.elapsed().as_millis() as u64 - read_ms;
    let (prune_ids, tally) = tokio::task::spawn_blocking({
        let data_dir = data_dir.clone();
        let cfg = farm.cfg.clone();
        move || {
            let now = SystemTime::now();
            for id in &prune {
                let dir = data_dir.join("logs").join(id.to_string());
                remove(&dir, "logs", dry_run, &mut tally);
            }
            if let Some(age) = rules.uploads {
                for (dir, name) in entries_older_than(&data_dir.join("uploads"), age, now) {
                    if !uploads_in_use.contains(&name) {
                        remove(&dir, "uploads", dry_run, &mut tally);
                    }
                }
            }
            // Mirrors of repositories the config no longer names (after a
            // day unchanged: a reload may bring a component back).
            for dir in crate::mirrors::unnamed(&data_dir, &cfg) {
                if older_than(&dir, UNNAMED_MIRROR_AGE, now) {
                    remove(&dir, "mirrors", dry_run, &mut tally);
                }
            }
            if let Some(age) = rules.rejected_uploads {
                for (dir, _) in entries_older_than(&data_dir.join("rejected"), age, now) {
                    remove(&dir, "rejected_uploads", dry_run, &mut tally);
                }
            }
            (prune, tally)
        }
    })
    .await
    .map_err(OpError::internal)?;
    let files_ms = began.elapsed().as_millis() as u64 - read_ms - content_ms;
    if !dry_run {
        s.store.mark_pruned(&prune_ids, now_us).await?;
    }
    let mark_ms = began.elapsed().as_millis() as u64 - read_ms - content_ms - files_ms;
    tracing::debug!(read_ms, content_ms, files_ms, mark_ms, "garbage collection phases");
    let report = GcReport {
        dry_run,
        builds_pruned: prune_ids.len() as u64,
        freed: ["logs", "artifacts", "uploads", "rejected_uploads", "mirrors"]
            .into_iter()
            .map(|kind| {
                let (count, bytes) = tally.0.get(kind).copied().unwrap_or_default();
                GcFreed { kind: kind.to_string(), count, bytes }
            })
            .collect(),
        took_ms: began.elapsed().as_millis() as u64,
    };
    let bytes: u64 = report.freed.iter().map(|f| f.bytes).sum();
    tracing::info!(
        dry_run,
        builds = report.builds_pruned,
        bytes,
        took_ms = report.took_ms,
        "garbage collection {}",
        if dry_run { "would free" } else { "freed" }
    );
    Ok(report)
}

/// Removes `path` (a file or a tree), counting what it held under `kind`.
fn remove(path: &Path, kind: &'static str, dry_run: bool, tally: &mut Tally) {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return };
    let bytes = size_of(path);
    let removed = if dry_run {
        Ok(())
    } else if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Ok(()) => tally.add(kind, bytes),
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "garbage collection cannot remove this"),
    }
}

/// Bytes under `path`, symlinks not followed.
fn size_of(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path).map(|d| d.filter_map(|e| e.ok()).map(|e| size_of(&e.path())).sum()).unwrap_or(0)
}

/// The entries of `dir` last changed longer than `age` ago, with their names.
fn entries_older_than(dir: &Path, age: Duration, now: SystemTime) -> Vec<(std::path::PathBuf, String)> {
    let Ok(read) = std::fs::read_dir(dir) else { return Vec::new() };
    read.filter_map(|e| e.ok())
        .filter(|e| older_than(&e.path(), age, now))
        .filter_map(|e| Some((e.path(), e.file_name().to_str()?.to_string())))
        .collect()
}

/// Whether `path` last changed longer than `age` before `now`.
fn older_than(path: &Path, age: Duration, now: SystemTime) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > age)
}
