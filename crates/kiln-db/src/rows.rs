//! The rows kiln reads and writes, and their conversion to and from SQL
//! values: decoding result rows (states, JSON columns) and encoding JSON
//! columns and id lists. A leaf: the query modules use it, it uses none of
//! them.

use kiln_core::props::Properties;
use kiln_core::{BuildState, StepState};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::str::FromStr;

use crate::{Result, StoreError};

/// A build as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRow {
    pub id: i64,
    pub request_id: i64,
    pub component: String,
    pub target: String,
    pub state: BuildState,
    pub reason: Option<String>,
    pub requested_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub requested_by: Option<String>,
    pub worker: Option<String>,
    pub attempt: i64,
    pub properties: Properties,
    pub depends_on: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRow {
    pub build_id: i64,
    pub idx: i64,
    pub name: String,
    pub state: StepState,
    pub exit_code: Option<i32>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub log_size: i64,
}

/// A build to create; `depends_on` holds indices of earlier builds of the
/// same request.
#[derive(Debug, Clone)]
pub struct NewBuild {
    pub component: String,
    pub target: String,
    pub properties: Properties,
    pub depends_on: Vec<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct BuildFilter {
    pub state: Option<BuildState>,
    pub component: Option<String>,
    pub target: Option<String>,
    /// Only builds with an id below this (paging, newest first).
    pub before: Option<i64>,
    pub limit: i64,
}

/// A build request as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRow {
    pub id: i64,
    pub requested_at: i64,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
}

/// A file a build produced, stored by content (SHA-256) on the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRow {
    pub build_id: i64,
    pub name: String,
    pub size: i64,
    pub sha256: String,
}

/// Counts per builder, for the builders page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderStats {
    pub component: String,
    pub target: String,
    pub last_build_id: i64,
    pub last_state: BuildState,
    pub queued: i64,
    pub running: i64,
}

/// The columns of a build, as [`build_row`] reads them.
pub(crate) const BUILD_COLUMNS: &str = "id, request_id, component, target, state, reason, requested_at, started_at, \
    finished_at, requested_by, worker, attempt, properties, depends_on";

/// Ids for an `IN (...)` list. They are integers kiln produced, so listing
/// them inline is safe. A statement holding such a list is run with
/// `persistent(false)`: each list makes a statement text of its own, and
/// cached, they would push the statements used on every build out of each
/// connection's cache (on PostgreSQL, every push-out and prepare again is
/// one more round trip to the server).
pub(crate) fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Maps with string keys and plain values always serialize.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub(crate) fn parse_state<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(StoreError::Corrupt)
}

pub(crate) fn build_row(r: &AnyRow) -> Result<BuildRow> {
    let props: String = r.try_get("properties")?;
    let deps: String = r.try_get("depends_on")?;
    Ok(BuildRow {
        id: r.try_get("id")?,
        request_id: r.try_get("request_id")?,
        component: r.try_get("component")?,
        target: r.try_get("target")?,
        state: parse_state(&r.try_get::<String, _>("state")?)?,
        reason: r.try_get("reason")?,
        requested_at: r.try_get("requested_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        requested_by: r.try_get("requested_by")?,
        worker: r.try_get("worker")?,
        attempt: r.try_get("attempt")?,
        properties: serde_json::from_str(&props).map_err(|e| StoreError::Corrupt(format!("properties: {e}")))?,
        depends_on: serde_json::from_str(&deps).map_err(|e| StoreError::Corrupt(format!("depends_on: {e}")))?,
    })
}

pub(crate) fn step_row(r: &AnyRow) -> Result<StepRow> {
    let exit: Option<i64> = r.try_get("exit_code")?;
    Ok(StepRow {
        build_id: r.try_get("build_id")?,
        idx: r.try_get("idx")?,
        name: r.try_get("name")?,
        state: parse_state(&r.try_get::<String, _>("state")?)?,
        exit_code: exit.and_then(|e| i32::try_from(e).ok()),
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        log_size: r.try_get("log_size")?,
    })
}

/// A request from `SELECT id, requested_at, requested_by, reason`.
pub(crate) fn request_row(r: &AnyRow) -> Result<RequestRow> {
    Ok(RequestRow {
        id: r.try_get(0)?,
        requested_at: r.try_get(1)?,
        requested_by: r.try_get(2)?,
        reason: r.try_get(3)?,
    })
}

/// An artifact from `SELECT build_id, name, size, sha256`.
pub(crate) fn artifact_row(r: &AnyRow) -> Result<ArtifactRow> {
    Ok(ArtifactRow { build_id: r.try_get(0)?, name: r.try_get(1)?, size: r.try_get(2)?, sha256: r.try_get(3)? })
}

/// An SQL string literal; valid on SQLite and PostgreSQL (standard strings).
pub(crate) fn literal(s: &str) -> String {
    // NUL cannot be stored in PostgreSQL text; nothing kiln writes needs it.
    format!("'{}'", s.replace('\0', "").replace('\'', "''"))
}
