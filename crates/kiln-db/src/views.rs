//! What the web pages read: recent requests, queue counts, per-builder
//! statistics, the console's cells and summaries, and the properties each
//! request asked for.

use kiln_core::props::Properties;
use kiln_core::BuildState;
use sqlx::Row;

use crate::rows::{id_list, parse_state, request_row, BuilderStats, RequestRow};
use crate::store::Store;
use crate::{Result, StoreError};

impl Store {
    /// The newest requests (id, when, by whom, why), newest first, with ids below `before`.
    pub async fn recent_requests(&self, limit: i64, before: Option<i64>) -> Result<Vec<RequestRow>> {
        let rows = sqlx::query(
            "SELECT id, requested_at, requested_by, reason FROM requests WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(request_row).collect()
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

    /// How long the `limit` most recently requested builds that ran to an
    /// end took, oldest first: (target, microseconds from start to finish).
    pub async fn recent_durations(&self, limit: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT target, finished_at - started_at FROM builds WHERE state IN ('succeeded', 'failed') \
             AND started_at IS NOT NULL AND finished_at IS NOT NULL ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        let mut out =
            rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)?.max(0)))).collect::<Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    pub async fn builder_stats(&self) -> Result<Vec<BuilderStats>> {
        // Three index-driven queries instead of per-builder subqueries: the
        // newest build of each builder, their states by primary key, and the
        // unfinished counts (by state). The first walks the index on
        // (component, target, id) from one builder to the next (a skip scan:
        // a few seeks per builder), where GROUP BY would read every build of
        // the history (150 ms at a million builds).
        let last = sqlx::query(
            "WITH RECURSIVE                comps(c) AS (                  SELECT MIN(component) FROM builds                  UNION ALL                  SELECT (SELECT MIN(component) FROM builds WHERE component > comps.c) FROM comps WHERE comps.c IS NOT NULL),                pairs(c, t) AS (                  SELECT c, (SELECT MIN(target) FROM builds WHERE component = comps.c) FROM comps WHERE c IS NOT NULL                  UNION ALL                  SELECT c, (SELECT MIN(target) FROM builds WHERE component = pairs.c AND target > pairs.t)                  FROM pairs WHERE t IS NOT NULL)              SELECT c, t, (SELECT MAX(id) FROM builds WHERE component = pairs.c AND target = pairs.t)              FROM pairs WHERE t IS NOT NULL ORDER BY c, t",
        )
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
                .persistent(false)
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
        let rows = sqlx::query(&sql)
            .persistent(false)
            .bind(target.unwrap_or(""))
            .bind(component.unwrap_or(""))
            .fetch_all(&self.reader)
            .await?;
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
        let rows = sqlx::query(&sql).persistent(false).fetch_all(&self.reader).await?;
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
        let rows = sqlx::query(&sql).persistent(false).fetch_all(&self.reader).await?;
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
