//! kiln's store: the schema, its migrations and every SQL query, on SQLite
//! (the embedded default) and PostgreSQL, through one code path.
//!
//! Architecture invariant: the database is the only source of truth for the
//! queue. Every state change is a conditional UPDATE (`WHERE state = ...`),
//! so a build is claimed once even when several masters share a PostgreSQL
//! database. This crate stores what the master decided; it decides nothing.
//!
//! Times are microseconds since the Unix epoch, passed in by the caller.

mod migrations;
mod packages;
mod users;
pub use users::{TokenRow, UserRow};

pub use packages::{PackageRow, SnapshotRow};

/// The schema version this build of kiln migrates a database to.
pub fn latest_schema_version() -> i64 {
    migrations::MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

use futures::TryStreamExt;
use kiln_core::props::Properties;
use kiln_core::{BuildState, StepState};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database holds a value kiln cannot read ({0}); was it written by a newer kiln?")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: use postgres://... or sqlite:...")]
    BadUrl(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the database; cheap to clone.
///
/// On SQLite, writes go through a single connection (SQLite has one writer
/// anyway, and one connection avoids lock contention and thread hand-offs:
/// measured 1.3x the build throughput of a pool of four) and reads through a
/// separate pool, which WAL lets run alongside. On PostgreSQL both are one pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    reader: AnyPool,
    backend: Backend,
}

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

/// A change the dispatcher records about a running build. Many of them are
/// applied together by [`Store::apply`], in one round trip and one
/// transaction, because the master reports steps of hundreds of builds a
/// second and each statement's round trip costs more than its work.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    StepStarted {
        build_id: i64,
        idx: i64,
        at: i64,
    },
    StepFinished {
        build_id: i64,
        idx: i64,
        state: StepState,
        exit_code: Option<i32>,
        at: i64,
        log_size: i64,
    },
    Properties {
        build_id: i64,
        properties: Properties,
    },
    /// Its packages wait for the publisher (the build stays running until they land).
    QueuePublish {
        build_id: i64,
    },
    /// Ends a running build (only if it is still running).
    Finish {
        build_id: i64,
        state: BuildState,
        reason: Option<String>,
        at: i64,
    },
}

/// An SQL string literal; valid on SQLite and PostgreSQL (standard strings).
fn literal(s: &str) -> String {
    // NUL cannot be stored in PostgreSQL text; nothing kiln writes needs it.
    format!("'{}'", s.replace('\0', "").replace('\'', "''"))
}

fn opt_literal(s: Option<&str>) -> String {
    s.map(literal).unwrap_or_else(|| "NULL".into())
}

fn opt_int<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into())
}

const BUILD_COLUMNS: &str = "id, request_id, component, target, state, reason, requested_at, started_at, \
    finished_at, requested_by, worker, attempt, properties, depends_on";

impl Store {
    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store> {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        let options = |max: u32| {
            AnyPoolOptions::new().max_connections(max).acquire_timeout(Duration::from_secs(30)).after_connect(
                move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // WAL lets readers go on while the master writes; NORMAL
                            // sync keeps commits durable across a process crash.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                        } else {
                            // Store::apply writes standard SQL string literals.
                            conn.execute("SET standard_conforming_strings = on").await?;
                        }
                        Ok(())
                    })
                },
            )
        };
        Ok(match backend {
            Backend::Sqlite => {
                let pool = options(1).connect(url).await?;
                let reader = options(4).connect(url).await?;
                Store { pool, reader, backend }
            }
            Backend::Postgres => {
                let pool = options(8).connect(url).await?;
                Store { reader: pool.clone(), pool, backend }
            }
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.reader.close().await;
    }

    /// Applies every migration not yet applied; returns how many ran.
    pub async fn migrate(&self) -> Result<usize> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            // Several masters may start at once against one database.
            conn.execute("SELECT pg_advisory_lock(7206154)").await?;
        }
        let result = async {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS kiln_schema (version BIGINT PRIMARY KEY, description TEXT NOT NULL)",
            )
            .await?;
            let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM kiln_schema")
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
            let mut ran = 0;
            for m in migrations::MIGRATIONS.iter().filter(|m| m.version > current) {
                let sql = m.sql_for(self.backend);
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    tx.execute(stmt).await?;
                }
                sqlx::query("INSERT INTO kiln_schema (version, description) VALUES ($1, $2)")
                    .bind(m.version)
                    .bind(m.description)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                tracing::info!(version = m.version, description = m.description, "applied migration");
                ran += 1;
            }
            Ok::<usize, StoreError>(ran)
        }
        .await;
        if self.backend == Backend::Postgres {
            conn.execute("SELECT pg_advisory_unlock(7206154)").await?;
        }
        result
    }

    /// Runs one statement as given; for administration and tests only.
    pub async fn execute_raw(&self, sql: &str) -> Result<()> {
        self.pool.execute(sql).await?;
        Ok(())
    }

    pub async fn schema_version(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COALESCE(MAX(version), 0) FROM kiln_schema")
            .fetch_one(&self.reader)
            .await?
            .try_get(0)?)
    }

    /// Records a request and its builds in one transaction; returns the
    /// request id and the build ids in the order given.
    pub async fn create_request(
        &self,
        now: i64,
        requested_by: Option<&str>,
        reason: Option<&str>,
        builds: &[NewBuild],
    ) -> Result<(i64, Vec<i64>)> {
        let mut tx = self.pool.begin().await?;
        let request_id: i64 =
            sqlx::query("INSERT INTO requests (requested_at, requested_by, reason) VALUES ($1, $2, $3) RETURNING id")
                .bind(now)
                .bind(requested_by)
                .bind(reason)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        let mut ids: Vec<i64> = Vec::with_capacity(builds.len());
        for b in builds {
            let deps: Vec<i64> = b.depends_on.iter().filter_map(|&i| ids.get(i).copied()).collect();
            let id: i64 = sqlx::query(
                "INSERT INTO builds (request_id, component, target, state, requested_at, requested_by, properties, depends_on) \
                 VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7) RETURNING id",
            )
            .bind(request_id)
            .bind(&b.component)
            .bind(&b.target)
            .bind(now)
            .bind(requested_by)
            .bind(to_json(&b.properties))
            .bind(to_json(&deps))
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok((request_id, ids))
    }

    /// Claims a queued build for a worker and records its steps. Returns
    /// false when the build was not queued any more (someone else took it, or
    /// it was cancelled): the claim is exactly-once.
    pub async fn claim(&self, build_id: i64, worker: &str, now: i64, step_names: &[String]) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE builds SET state = 'running', worker = $1, started_at = $2, attempt = attempt + 1 \
             WHERE id = $3 AND state = 'queued'",
        )
        .bind(worker)
        .bind(now)
        .bind(build_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            return Ok(false);
        }
        // A queued build has no step rows: `requeue` removes them.
        if !step_names.is_empty() {
            let values: Vec<String> = (0..step_names.len())
                .map(|i| format!("(${}, ${}, ${}, 'pending')", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect();
            let sql = format!("INSERT INTO steps (build_id, idx, name, state) VALUES {}", values.join(", "));
            let mut q = sqlx::query(&sql);
            for (i, name) in step_names.iter().enumerate() {
                q = q.bind(build_id).bind(i as i64).bind(name.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Applies writes in order, in one transaction and one round trip. The
    /// statements are conditional like their one-at-a-time forms: a finish
    /// only ends a build that is still running.
    pub async fn apply(&self, writes: &[Write]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut sql = String::with_capacity(writes.len() * 120);
        for w in writes {
            match w {
                Write::StepStarted { build_id, idx, at } => sql.push_str(&format!(
                    "UPDATE steps SET state = 'running', started_at = {at} WHERE build_id = {build_id} AND idx = {idx};\n"
                )),
                Write::StepFinished { build_id, idx, state, exit_code, at, log_size } => {
                    // A step that never ran keeps no times.
                    let (started, finished) = if *state == StepState::Skipped {
                        ("started_at".to_string(), "NULL".to_string())
                    } else {
                        (format!("COALESCE(started_at, {at})"), at.to_string())
                    };
                    sql.push_str(&format!(
                        "UPDATE steps SET state = '{}', exit_code = {}, finished_at = {finished}, log_size = {log_size}, \
                         started_at = {started} WHERE build_id = {build_id} AND idx = {idx};\n",
                        state.as_str(),
                        opt_int(*exit_code)
                    ))
                }
                Write::Properties { build_id, properties } => sql.push_str(&format!(
                    "UPDATE builds SET properties = {} WHERE id = {build_id};\n",
                    literal(&to_json(properties))
                )),
                Write::QueuePublish { build_id } => sql.push_str(&format!(
                    "INSERT INTO publishing (build_id) SELECT id FROM builds WHERE id = {build_id} AND state = 'running' \
                     AND NOT EXISTS (SELECT 1 FROM publishing WHERE build_id = {build_id});\n"
                )),
                Write::Finish { build_id, state, reason, at } => {
                    if !BuildState::Running.can_become(*state) {
                        continue;
                    }
                    sql.push_str(&format!("DELETE FROM publishing WHERE build_id = {build_id};\n"));
                    let guard = format!("EXISTS (SELECT 1 FROM builds WHERE id = {build_id} AND state = 'running')");
                    if let Some(close) = close_steps_sql(*build_id, *state, *at, Some(&guard)) {
                        sql.push_str(&close);
                    }
                    if *state == BuildState::Cancelled {
                        // A cancelled build keeps nothing it uploaded.
                        sql.push_str(&format!("DELETE FROM artifacts WHERE build_id = {build_id} AND {guard};\n"));
                    }
                    sql.push_str(&format!(
                        "UPDATE builds SET state = '{}', reason = {}, finished_at = {at} \
                         WHERE id = {build_id} AND state = 'running';\n",
                        state.as_str(),
                        opt_literal(reason.as_deref())
                    ));
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        run_script(&mut tx, &sql).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves a build to a finished state if the state machine allows it from
    /// where it is now; returns whether it changed. Steps still pending or
    /// running are closed with `step_state`.
    pub async fn finish(&self, build_id: i64, state: BuildState, reason: Option<&str>, now: i64) -> Result<bool> {
        let from: Vec<&str> = [BuildState::Queued, BuildState::Running]
            .into_iter()
            .filter(|s| s.can_become(state))
            .map(BuildState::as_str)
            .collect();
        if from.is_empty() {
            return Ok(false);
        }
        let in_list = from.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(&format!(
            "UPDATE builds SET state = $1, reason = $2, finished_at = $3 WHERE id = $4 AND state IN ({in_list})"
        ))
        .bind(state.as_str())
        .bind(reason)
        .bind(now)
        .bind(build_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if let Some(close) = close_steps_sql(build_id, state, now, None).filter(|_| changed) {
            run_script(&mut tx, &close).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Puts a running build back in the queue (its worker was lost).
    pub async fn requeue(&self, build_id: i64, reason: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE builds SET state = 'queued', worker = NULL, started_at = NULL, reason = $1 \
             WHERE id = $2 AND state = 'running'",
        )
        .bind(reason)
        .bind(build_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if changed {
            // The next attempt starts with no steps and no artifacts.
            sqlx::query("DELETE FROM steps WHERE build_id = $1").bind(build_id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM artifacts WHERE build_id = $1").bind(build_id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    pub async fn build(&self, id: i64) -> Result<Option<BuildRow>> {
        let row = sqlx::query(&format!("SELECT {BUILD_COLUMNS} FROM builds WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| build_row(&r)).transpose()
    }

    pub async fn steps(&self, build_id: i64) -> Result<Vec<StepRow>> {
        let rows = sqlx::query(
            "SELECT build_id, idx, name, state, exit_code, started_at, finished_at, log_size \
             FROM steps WHERE build_id = $1 ORDER BY idx",
        )
        .bind(build_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(step_row).collect()
    }

    /// Steps of many builds at once, grouped by build id.
    pub async fn steps_of(&self, build_ids: &[i64]) -> Result<Vec<StepRow>> {
        if build_ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = id_list(build_ids);
        let rows = sqlx::query(&format!(
            "SELECT build_id, idx, name, state, exit_code, started_at, finished_at, log_size \
             FROM steps WHERE build_id IN ({list}) ORDER BY build_id, idx"
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(step_row).collect()
    }

    /// Builds matching a filter, newest first.
    pub async fn list_builds(&self, f: &BuildFilter) -> Result<Vec<BuildRow>> {
        let mut sql = format!("SELECT {BUILD_COLUMNS} FROM builds WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if f.state.is_some() {
            sql += &format!(" AND state = {}", next());
        }
        if f.component.is_some() {
            sql += &format!(" AND component = {}", next());
        }
        if f.target.is_some() {
            sql += &format!(" AND target = {}", next());
        }
        if f.before.is_some() {
            sql += &format!(" AND id < {}", next());
        }
        sql += &format!(" ORDER BY id DESC LIMIT {}", next());
        let mut q = sqlx::query(&sql);
        if let Some(s) = f.state {
            q = q.bind(s.as_str());
        }
        if let Some(c) = &f.component {
            q = q.bind(c.as_str());
        }
        if let Some(t) = &f.target {
            q = q.bind(t.as_str());
        }
        if let Some(b) = f.before {
            q = q.bind(b);
        }
        q = q.bind(f.limit.clamp(1, 1000));
        let rows = q.fetch_all(&self.reader).await?;
        rows.iter().map(build_row).collect()
    }

    /// Records an artifact of a build (replacing one of the same name).
    pub async fn add_artifact(&self, a: &ArtifactRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO artifacts (build_id, name, size, sha256) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (build_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256",
        )
        .bind(a.build_id)
        .bind(&a.name)
        .bind(a.size)
        .bind(&a.sha256)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Artifacts of many builds, by build then name.
    pub async fn artifacts_of(&self, build_ids: &[i64]) -> Result<Vec<ArtifactRow>> {
        if build_ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = id_list(build_ids);
        let rows = sqlx::query(&format!(
            "SELECT build_id, name, size, sha256 FROM artifacts WHERE build_id IN ({list}) ORDER BY build_id, name"
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ArtifactRow {
                    build_id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    size: r.try_get(2)?,
                    sha256: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// The newest requests (id, when, by whom, why), newest first, with ids below `before`.
    pub async fn recent_requests(&self, limit: i64, before: Option<i64>) -> Result<Vec<RequestRow>> {
        let rows = sqlx::query(
            "SELECT id, requested_at, requested_by, reason FROM requests WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RequestRow {
                    id: r.try_get(0)?,
                    requested_at: r.try_get(1)?,
                    requested_by: r.try_get(2)?,
                    reason: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// The builds of many requests.
    pub async fn builds_of_requests(&self, request_ids: &[i64]) -> Result<Vec<BuildRow>> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql =
            format!("SELECT {BUILD_COLUMNS} FROM builds WHERE request_id IN ({}) ORDER BY id", id_list(request_ids));
        let rows = sqlx::query(&sql).fetch_all(&self.reader).await?;
        rows.iter().map(build_row).collect()
    }

    /// The builds of one request, in the order they were planned.
    pub async fn request_builds(&self, request_id: i64) -> Result<Vec<BuildRow>> {
        let rows = sqlx::query(&format!("SELECT {BUILD_COLUMNS} FROM builds WHERE request_id = $1 ORDER BY id"))
            .bind(request_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(build_row).collect()
    }

    /// Every build that is queued or running, oldest first.
    pub async fn unfinished_builds(&self) -> Result<Vec<BuildRow>> {
        let mut out = Vec::new();
        let sql = format!("SELECT {BUILD_COLUMNS} FROM builds WHERE state IN ('queued', 'running') ORDER BY id");
        let mut rows = sqlx::query(&sql).fetch(&self.reader);
        while let Some(r) = rows.try_next().await? {
            out.push(build_row(&r)?);
        }
        Ok(out)
    }

    /// How many builds are queued and how many running.
    pub async fn queue_counts(&self) -> Result<(i64, i64)> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) FROM builds WHERE state IN ('queued', 'running') GROUP BY state")
                .fetch_all(&self.reader)
                .await?;
        let mut counts = (0, 0);
        for r in rows {
            let state: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            match state.as_str() {
                "queued" => counts.0 = n,
                _ => counts.1 = n,
            }
        }
        Ok(counts)
    }

    pub async fn builder_stats(&self) -> Result<Vec<BuilderStats>> {
        // Three index-driven queries instead of per-builder subqueries: the
        // newest build of each builder (covering index on component, target,
        // id), their states by primary key, and the unfinished counts (by state).
        let last = sqlx::query("SELECT component, target, MAX(id) FROM builds GROUP BY component, target")
            .fetch_all(&self.reader)
            .await?;
        let mut out = Vec::with_capacity(last.len());
        let mut ids = Vec::with_capacity(last.len());
        for r in &last {
            let id: i64 = r.try_get(2)?;
            ids.push(id);
            out.push(BuilderStats {
                component: r.try_get(0)?,
                target: r.try_get(1)?,
                last_build_id: id,
                last_state: BuildState::Queued,
                queued: 0,
                running: 0,
            });
        }
        let mut states = std::collections::HashMap::new();
        for chunk in ids.chunks(500) {
            let rows = sqlx::query(&format!("SELECT id, state FROM builds WHERE id IN ({})", id_list(chunk)))
                .fetch_all(&self.reader)
                .await?;
            for r in rows {
                states.insert(r.try_get::<i64, _>(0)?, parse_state::<BuildState>(&r.try_get::<String, _>(1)?)?);
            }
        }
        let counts = sqlx::query(
            "SELECT component, target, state, COUNT(*) FROM builds WHERE state IN ('queued', 'running') \
             GROUP BY component, target, state",
        )
        .fetch_all(&self.reader)
        .await?;
        let mut by_builder: std::collections::HashMap<(String, String), (i64, i64)> = std::collections::HashMap::new();
        for r in counts {
            let e = by_builder.entry((r.try_get(0)?, r.try_get(1)?)).or_default();
            let n: i64 = r.try_get(3)?;
            if r.try_get::<String, _>(2)? == "queued" {
                e.0 = n;
            } else {
                e.1 = n;
            }
        }
        for b in &mut out {
            if let Some(st) = states.get(&b.last_build_id) {
                b.last_state = *st;
            }
            if let Some((q, r)) = by_builder.get(&(b.component.clone(), b.target.clone())) {
                b.queued = *q;
                b.running = *r;
            }
        }
        Ok(out)
    }

    /// The console's cells: (id, request, component, target, state) of the
    /// builds of these requests, optionally of one target or component only.
    pub async fn console_cells(
        &self,
        request_ids: &[i64],
        target: Option<&str>,
        component: Option<&str>,
    ) -> Result<Vec<(i64, i64, String, String, BuildState)>> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, request_id, component, target, state FROM builds WHERE request_id IN ({}) \
             AND ($1 = '' OR target = $1) AND ($2 = '' OR component = $2)",
            id_list(request_ids)
        );
        let rows =
            sqlx::query(&sql).bind(target.unwrap_or("")).bind(component.unwrap_or("")).fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    parse_state(&r.try_get::<String, _>(4)?)?,
                ))
            })
            .collect()
    }

    /// Per request and target (or component, with `by_component`), how many
    /// builds are in each state (the console's collapsed view).
    pub async fn console_summary(
        &self,
        request_ids: &[i64],
        by_component: bool,
    ) -> Result<Vec<(i64, String, BuildState, i64)>> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let column = if by_component { "component" } else { "target" };
        let sql = format!(
            "SELECT request_id, {column}, state, COUNT(*) FROM builds WHERE request_id IN ({}) \
             GROUP BY request_id, {column}, state",
            id_list(request_ids)
        );
        let rows = sqlx::query(&sql).fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, parse_state(&r.try_get::<String, _>(2)?)?, r.try_get(3)?)))
            .collect()
    }

    /// The properties of each request's first build (what the request asked for).
    pub async fn request_properties(&self, request_ids: &[i64]) -> Result<Vec<(i64, Properties)>> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT request_id, properties FROM builds WHERE id IN \
             (SELECT MIN(id) FROM builds WHERE request_id IN ({}) GROUP BY request_id)",
            id_list(request_ids)
        );
        let rows = sqlx::query(&sql).fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get(1)?;
                let props: Properties =
                    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("properties: {e}")))?;
                Ok((r.try_get(0)?, props))
            })
            .collect()
    }
}

/// The statement that closes the steps a build leaves unfinished when it
/// ends (cancelled steps for a cancel, skipped ones otherwise); none for a
/// success, which only happens when every step ended.
fn close_steps_sql(build_id: i64, state: BuildState, at: i64, guard: Option<&str>) -> Option<String> {
    let step_state = match state {
        BuildState::Succeeded => return None,
        BuildState::Cancelled => StepState::Cancelled,
        _ => StepState::Skipped,
    };
    let guard = guard.map(|g| format!(" AND {g}")).unwrap_or_default();
    Some(format!(
        "UPDATE steps SET state = '{}', finished_at = CASE WHEN started_at IS NULL THEN NULL ELSE {at} END \
         WHERE build_id = {build_id} AND state IN ('pending', 'running'){guard};\n",
        step_state.as_str()
    ))
}

/// Runs several statements in one round trip. A plain function (not a
/// generic executor call inline) keeps the caller's future `Send`.
async fn run_script(conn: &mut sqlx::AnyConnection, sql: &str) -> Result<()> {
    let script = sqlx::raw_sql(sql);
    conn.execute(script).await?;
    Ok(())
}

/// Ids for an `IN (...)` list. They are integers kiln produced, so listing
/// them inline is safe.
fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Maps with string keys and plain values always serialize.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn parse_state<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(StoreError::Corrupt)
}

fn build_row(r: &AnyRow) -> Result<BuildRow> {
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

fn step_row(r: &AnyRow) -> Result<StepRow> {
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
