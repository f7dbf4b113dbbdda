//! What retention reads and records: the finished builds that still have
//! their files, the content every channel, snapshot and kept build still
//! names, pins, and the builds whose files were removed.

use crate::packages::PackageRow;
use crate::rows::id_list;
use crate::store::Store;
use crate::Result;
use kiln_core::retention::BuildFacts;
use sqlx::Row;
use std::collections::HashSet;

impl Store {
    /// Every finished build whose logs and artifacts are still kept.
    pub async fn retention_facts(&self) -> Result<Vec<BuildFacts>> {
        let rows = sqlx::query(
            "SELECT id, component, target, finished_at, pinned FROM builds \
             WHERE pruned_at IS NULL AND finished_at IS NOT NULL",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BuildFacts {
                    id: r.try_get(0)?,
                    component: r.try_get(1)?,
                    target: r.try_get(2)?,
                    finished_at: r.try_get(3)?,
                    pinned: r.try_get::<i64, _>(4)? != 0,
                })
            })
            .collect()
    }

    /// The SHA-256 of every file a channel or a snapshot names, and of
    /// every artifact of a build that keeps its files (other than
    /// `leaving`, the builds about to lose theirs).
    pub async fn kept_content(&self, leaving: &[i64]) -> Result<HashSet<String>> {
        let mut kept = HashSet::new();
        for r in sqlx::query("SELECT DISTINCT sha256 FROM packages").fetch_all(&self.reader).await? {
            kept.insert(r.try_get::<String, _>(0)?);
        }
        for r in sqlx::query("SELECT packages FROM snapshots").fetch_all(&self.reader).await? {
            let text: String = r.try_get(0)?;
            let pkgs: Vec<PackageRow> =
                serde_json::from_str(&text).map_err(|e| crate::StoreError::Corrupt(format!("snapshot: {e}")))?;
            kept.extend(pkgs.into_iter().map(|p| p.sha256));
        }
        let leaving: HashSet<i64> = leaving.iter().copied().collect();
        let rows = sqlx::query(
            "SELECT a.build_id, a.sha256 FROM artifacts a JOIN builds b ON b.id = a.build_id WHERE b.pruned_at IS NULL",
        )
        .fetch_all(&self.reader)
        .await?;
        for r in rows {
            if !leaving.contains(&r.try_get::<i64, _>(0)?) {
                kept.insert(r.try_get::<String, _>(1)?);
            }
        }
        Ok(kept)
    }

    /// Records that these builds' logs and artifacts were removed `at`.
    pub async fn mark_pruned(&self, ids: &[i64], at: i64) -> Result<()> {
        for chunk in ids.chunks(500) {
            sqlx::query(&format!(
                "UPDATE builds SET pruned_at = $1 WHERE id IN ({}) AND pruned_at IS NULL AND pinned = 0",
                id_list(chunk)
            ))
            .persistent(false)
            .bind(at)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Pins or unpins a build (a pinned build keeps its files); false when
    /// there is no such build.
    pub async fn set_pinned(&self, id: i64, pinned: bool) -> Result<bool> {
        let changed = sqlx::query("UPDATE builds SET pinned = $1 WHERE id = $2")
            .bind(i64::from(pinned))
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(changed == 1)
    }

    /// Whether build `id` is pinned, and when its files were removed.
    pub async fn retention_of(&self, id: i64) -> Result<Option<(bool, Option<i64>)>> {
        let row = sqlx::query("SELECT pinned, pruned_at FROM builds WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| Ok((r.try_get::<i64, _>(0)? != 0, r.try_get(1)?))).transpose()
    }

    /// Writes a consistent copy of the whole database to `path` (a new
    /// file) while it is in use: SQLite's `VACUUM INTO`. PostgreSQL's copy
    /// is `pg_dump`'s job, which knows its server's version.
    pub async fn snapshot_into(&self, path: &std::path::Path) -> Result<()> {
        if self.backend() != crate::Backend::Sqlite {
            return Err(crate::StoreError::Unsupported(
                "the database is PostgreSQL: back it up with pg_dump (see docs/operating.md); kiln backup copies the data dir".into(),
            ));
        }
        let path = path.to_str().ok_or_else(|| crate::StoreError::Unsupported("a backup path must be UTF-8".into()))?;
        sqlx::query("VACUUM INTO $1").bind(path).execute(&self.pool).await?;
        Ok(())
    }

    /// The upload ids queued and running builds take their source from.
    pub async fn uploads_in_use(&self) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        for b in self.unfinished_builds().await? {
            if let kiln_core::job::BuildSource::Upload(id) = kiln_core::job::BuildSource::of(&b.properties) {
                out.insert(id);
            }
        }
        Ok(out)
    }
}
