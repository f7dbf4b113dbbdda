//! Requests and their builds: creating them, claiming, the dispatcher's
//! batched writes ([`Write`]), finishing and requeueing, and reading builds
//! and steps back.

use futures::TryStreamExt;
use kiln_core::props::{Properties, PropertySource};
use kiln_core::{BuildState, StepState};
use sqlx::{Executor, Row};

use crate::rows::{
    build_row, id_list, literal, step_row, to_json, BuildFilter, BuildRow, NewBuild, StepRow, BUILD_COLUMNS,
};
use crate::store::Store;
use crate::{Backend, Result, StoreError};
use std::collections::HashSet;

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

impl Write {
    /// The build it changes.
    pub fn build_id(&self) -> i64 {
        match self {
            Write::StepStarted { build_id, .. }
            | Write::StepFinished { build_id, .. }
            | Write::Properties { build_id, .. }
            | Write::QueuePublish { build_id }
            | Write::Finish { build_id, .. } => *build_id,
        }
    }
}

fn opt_literal(s: Option<&str>) -> String {
    s.map(literal).unwrap_or_else(|| "NULL".into())
}

fn opt_int<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into())
}

impl Store {
    /// Records a request and its builds in one transaction; returns the
    /// request id and the build ids in the order given.
    pub async fn create_request(
        &self,
        now: i64,
        requested_by: Option<&str>,
        reason: Option<&str>,
        builds: &[NewBuild],
    ) -> Result<(i64, Vec<i64>)> {
        if let [build] = builds {
            return self.create_one_build_request(now, requested_by, reason, build).await;
        }
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
        self.announce(&mut tx).await?;
        tx.commit().await?;
        Ok((request_id, ids))
    }

    /// [`Store::create_request`] of one build (what most triggers ask), in
    /// one go: on SQLite the same transaction as one script
    /// ([`Store::run_script`], one hand-off to the connection's thread
    /// instead of four), on PostgreSQL one statement with its announcement
    /// (one implicit transaction, one round trip to the server instead of
    /// five).
    async fn create_one_build_request(
        &self,
        now: i64,
        requested_by: Option<&str>,
        reason: Option<&str>,
        build: &NewBuild,
    ) -> Result<(i64, Vec<i64>)> {
        const ON_SQLITE: &str = "BEGIN IMMEDIATE; \
             INSERT INTO requests (requested_at, requested_by, reason) VALUES ($1, $2, $3); \
             INSERT INTO builds (request_id, component, target, state, requested_at, requested_by, properties, depends_on) \
             VALUES (last_insert_rowid(), $4, $5, 'queued', $1, $2, $6, '[]'); \
             SELECT request_id, id FROM builds WHERE id = last_insert_rowid(); \
             COMMIT;";
        const ON_POSTGRES: &str = "WITH request AS \
             (INSERT INTO requests (requested_at, requested_by, reason) VALUES ($1, $2, $3) RETURNING id), \
             build AS (INSERT INTO builds (request_id, component, target, state, requested_at, requested_by, properties, \
             depends_on) SELECT id, $4, $5, 'queued', $1, $2, $6, '[]' FROM request RETURNING request_id, id) \
             SELECT build.request_id, build.id, CAST(pg_notify($7 || current_schema(), $8) AS TEXT) FROM build";
        let query = |sql: &'static str| {
            sqlx::query(sql)
                .bind(now)
                .bind(requested_by.map(str::to_owned))
                .bind(reason.map(str::to_owned))
                .bind(build.component.clone())
                .bind(build.target.clone())
                .bind(to_json(&build.properties))
        };
        let rows = match self.backend() {
            Backend::Sqlite => self.run_script(query(ON_SQLITE)).await?,
            // Read to the end: the row comes before the commit, and a commit
            // that fails must fail this call, not the connection's next one.
            Backend::Postgres => {
                query(ON_POSTGRES)
                    .bind(crate::news::CHANNEL)
                    .bind(self.owner().unwrap_or("").to_owned())
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let row = rows.first().ok_or_else(|| StoreError::Corrupt("the new build was not returned".into()))?;
        Ok((row.try_get(0)?, vec![row.try_get(1)?]))
    }

    /// Claims a queued build for a worker and records its steps. Returns
    /// false when the build was not queued any more (someone else took it, or
    /// it was cancelled): the claim is exactly-once. A store acting for a
    /// master claims only under that master's lease ([`StoreError::LeaseLost`]).
    ///
    /// It is one go on the way from trigger to first step. On SQLite, one
    /// script ([`Store::run_script`]): one hand-off to the connection's
    /// thread instead of five; the lease is checked inside the update, and
    /// a claim that changed nothing then asks, apart, whether the lease was
    /// the reason. On PostgreSQL, one statement (one implicit transaction,
    /// one round trip): the lease row is locked FOR KEY SHARE inside it, as
    /// [`Store::hold_lease`] does in a transaction, so a fence that took the
    /// row first is waited for, and its new epoch then fails the claim.
    pub async fn claim(&self, build_id: i64, worker: &str, now: i64, step_names: &[String]) -> Result<bool> {
        // `changes()` answers for the last insert, update or delete: the
        // SELECT reads the update's count, and the steps go in only when
        // it claimed the build.
        const ON_SQLITE: &str = "BEGIN IMMEDIATE; \
             UPDATE builds SET state = 'running', worker = $1, started_at = $2, attempt = attempt + 1, owner = $3, \
             owner_epoch = $4, cancel_asked_by = NULL WHERE id = $5 AND state = 'queued' \
             AND ($3 IS NULL OR EXISTS (SELECT 1 FROM masters WHERE id = $3 AND epoch = $4)); \
             SELECT changes(); \
             INSERT INTO steps (build_id, idx, name, state) \
             SELECT $5, CAST(key AS INTEGER), value, 'pending' FROM json_each($6) WHERE changes() = 1; \
             COMMIT;";
        const ON_POSTGRES: &str = "WITH lease AS (SELECT 1 FROM masters WHERE id = $3 AND epoch = $4 FOR KEY SHARE), \
             claimed AS (UPDATE builds SET state = 'running', worker = $1, started_at = $2, attempt = attempt + 1, \
             owner = $3, owner_epoch = $4, cancel_asked_by = NULL WHERE id = $5 AND state = 'queued' \
             AND (CAST($3 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM lease)) RETURNING id), \
             steps AS (INSERT INTO steps (build_id, idx, name, state) \
             SELECT claimed.id, CAST(step.n AS BIGINT) - 1, step.name, 'pending' FROM claimed, \
             json_array_elements_text(CAST($6 AS JSON)) WITH ORDINALITY AS step(name, n)) \
             SELECT (SELECT COUNT(*) FROM claimed), (SELECT COUNT(*) FROM lease)";
        let query = |sql: &'static str| {
            sqlx::query(sql)
                .bind(worker.to_owned())
                .bind(now)
                .bind(self.owner().map(str::to_owned))
                .bind(self.owner.is_some().then(|| self.epoch()))
                .bind(build_id)
                .bind(to_json(&step_names))
        };
        if self.backend() == Backend::Postgres {
            // Read to the end, past the commit (see create_one_build_request).
            let rows = query(ON_POSTGRES).fetch_all(&self.pool).await?;
            let row = rows.first().ok_or_else(|| StoreError::Corrupt("the claim answered nothing".into()))?;
            let (claimed, lease): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            if let Some(o) = self.owner.as_deref().filter(|_| lease == 0) {
                return Err(StoreError::LeaseLost { master: o.id.clone(), epoch: o.epoch() });
            }
            return Ok(claimed == 1);
        }
        let claimed = match self.run_script(query(ON_SQLITE)).await?.first() {
            Some(row) => row.try_get::<i64, _>(0)? == 1,
            None => return Err(StoreError::Corrupt("the claim's script answered nothing".into())),
        };
        if claimed {
            return Ok(true);
        }
        // Not queued any more, or not this master's to claim.
        let mut conn = self.pool.acquire().await?;
        self.hold_lease(&mut conn).await?;
        Ok(false)
    }

    /// Runs a script that is one transaction (`BEGIN IMMEDIATE; …;
    /// COMMIT;`, SQLite) on the writer connection and returns its rows. It
    /// runs to its end even when the caller stops waiting (a client that
    /// hangs up): stopped between its statements, it would leave its
    /// transaction open on a connection going back to the pool. A
    /// statement that fails ends the transaction.
    async fn run_script(
        &self,
        script: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>>,
    ) -> Result<Vec<sqlx::any::AnyRow>> {
        let pool = self.pool.clone();
        let run = tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            let done = script.fetch_all(&mut *conn).await;
            if done.is_err() {
                let _ = conn.execute("ROLLBACK").await;
            }
            done
        });
        Ok(run.await.map_err(|_| sqlx::Error::WorkerCrashed)??)
    }

    /// Applies writes in order, in one transaction and one round trip. The
    /// statements are conditional like their one-at-a-time forms: a finish
    /// only ends a build that is still running. Writes to builds this
    /// handle's master does not own at its epoch are not made: their ids
    /// come back (another master took them over, or the worker moved).
    pub async fn apply(&self, writes: &[Write]) -> Result<HashSet<i64>> {
        if writes.is_empty() {
            return Ok(HashSet::new());
        }
        let mut tx = self.pool.begin().await?;
        let refused = self.not_owned(&mut tx, writes.iter().map(Write::build_id)).await?;
        let mut sql = String::with_capacity(writes.len() * 120);
        for w in writes.iter().filter(|w| !refused.contains(&w.build_id())) {
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
        run_script(&mut tx, &sql).await?;
        if writes.iter().any(|w| matches!(w, Write::Finish { .. })) {
            self.announce(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(refused)
    }

    /// Inside `tx`: which of `ids` this handle's master does not own at its
    /// epoch; the rows it owns are locked until `tx` ends (on PostgreSQL),
    /// so no other master takes them over in between.
    async fn not_owned(&self, tx: &mut sqlx::AnyConnection, ids: impl Iterator<Item = i64>) -> Result<HashSet<i64>> {
        let ids: HashSet<i64> = ids.collect();
        if self.owner.is_none() || ids.is_empty() {
            return Ok(HashSet::new());
        }
        let list = id_list(&ids.iter().copied().collect::<Vec<_>>());
        let lock = if self.backend() == Backend::Postgres { " FOR UPDATE" } else { "" };
        let owned: HashSet<i64> =
            sqlx::query(&format!("SELECT id FROM builds WHERE id IN ({list}) AND {}{lock}", self.owned_sql()))
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
        Ok(ids.difference(&owned).copied().collect())
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
            "UPDATE builds SET state = $1, reason = $2, finished_at = $3 WHERE id = $4 AND state IN ({in_list}) \
             AND (state = 'queued' OR {})",
            self.owned_sql()
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
        if changed {
            self.announce(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Puts a running build back in the queue (its worker was lost), with
    /// `properties` instead of its own when given.
    pub async fn requeue(&self, build_id: i64, reason: &str, properties: Option<&Properties>) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(&format!(
            "UPDATE builds SET state = 'queued', worker = NULL, started_at = NULL, reason = $1, \
             cancel_asked_by = NULL, properties = COALESCE($3, properties) \
             WHERE id = $2 AND state = 'running' AND {}",
            self.owned_sql()
        ))
        .bind(reason)
        .bind(build_id)
        .bind(properties.map(to_json))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if changed {
            // The next attempt starts with no steps and no artifacts.
            sqlx::query("DELETE FROM steps WHERE build_id = $1").bind(build_id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM artifacts WHERE build_id = $1").bind(build_id).execute(&mut *tx).await?;
        }
        if changed {
            self.announce(&mut tx).await?;
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
        .persistent(false)
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

    /// The builds of many requests.
    pub async fn builds_of_requests(&self, request_ids: &[i64]) -> Result<Vec<BuildRow>> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql =
            format!("SELECT {BUILD_COLUMNS} FROM builds WHERE request_id IN ({}) ORDER BY id", id_list(request_ids));
        let rows = sqlx::query(&sql).persistent(false).fetch_all(&self.reader).await?;
        rows.iter().map(build_row).collect()
    }

    /// The builds with these ids (those that exist), by id.
    pub async fn builds_by_ids(&self, ids: &[i64]) -> Result<Vec<BuildRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {BUILD_COLUMNS} FROM builds WHERE id IN ({}) ORDER BY id", id_list(ids));
        let rows = sqlx::query(&sql).persistent(false).fetch_all(&self.reader).await?;
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

    /// The newest builds (at most `limit`, newest first) whose property
    /// `name` is `value`, given by `source`.
    pub async fn builds_with_property(
        &self,
        name: &str,
        value: &str,
        source: PropertySource,
        limit: i64,
    ) -> Result<Vec<BuildRow>> {
        // The properties column is JSON text (a property's value, then its
        // source); the pattern narrows the scan to rows holding exactly
        // this, and each is checked again below (SQLite's LIKE ignores case).
        let pair = format!("{}:{{\"value\":{},\"source\":{}}}", to_json(&name), to_json(&value), to_json(&source));
        let escaped: String =
            pair.chars().flat_map(|c| if "%_\\".contains(c) { vec!['\\', c] } else { vec![c] }).collect();
        let sql = format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE properties LIKE $1 ESCAPE '\\' ORDER BY id DESC LIMIT $2"
        );
        let rows =
            sqlx::query(&sql).bind(format!("%{escaped}%")).bind(limit.clamp(1, 10_000)).fetch_all(&self.reader).await?;
        let mut out = Vec::new();
        for r in &rows {
            let b = build_row(r)?;
            if b.properties.get(name).is_some_and(|p| p.value == value && p.source == source) {
                out.push(b);
            }
        }
        Ok(out)
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
