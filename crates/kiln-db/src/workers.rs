//! Workers drained for maintenance: kept in the database so a drain holds
//! across a master's restart and for every master sharing the database.

use crate::{Result, Store};
use sqlx::Row;

/// A drained worker: who drained it, why, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainRow {
    pub name: String,
    pub drained_by: String,
    pub reason: Option<String>,
    pub drained_at: i64,
}

impl Store {
    /// Drains worker `name`; a worker drained already keeps its first drain
    /// (who and when). Returns the drain in force.
    pub async fn drain_worker(&self, name: &str, by: &str, reason: Option<&str>, at: i64) -> Result<DrainRow> {
        sqlx::query(
            "INSERT INTO worker_drains (name, drained_by, reason, drained_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(by)
        .bind(reason)
        .bind(at)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT name, drained_by, reason, drained_at FROM worker_drains WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        drain(&row)
    }

    /// Ends worker `name`'s drain; returns whether it was drained.
    pub async fn resume_worker(&self, name: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM worker_drains WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(n.rows_affected() == 1)
    }

    /// Every drained worker, by name.
    pub async fn drained_workers(&self) -> Result<Vec<DrainRow>> {
        let rows = sqlx::query("SELECT name, drained_by, reason, drained_at FROM worker_drains ORDER BY name")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(drain).collect()
    }
}

fn drain(r: &sqlx::any::AnyRow) -> Result<DrainRow> {
    Ok(DrainRow { name: r.try_get(0)?, drained_by: r.try_get(1)?, reason: r.try_get(2)?, drained_at: r.try_get(3)? })
}
