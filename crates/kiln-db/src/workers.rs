//! Workers drained for maintenance: kept in the database so a drain holds
//! across a master's restart and for every master sharing the database;
//! and which master each worker is connected to, so any master can say.

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

/// A worker's connection to a master sharing the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSession {
    pub name: String,
    pub master: String,
    pub address: String,
    pub connected_at: i64,
}

impl Store {
    /// Records that worker `name` is connected to this handle's master, by
    /// connection `conn` (replacing where it was connected before).
    pub async fn worker_connected(&self, name: &str, conn: i64, address: &str, at: i64) -> Result<()> {
        let Some(master) = self.owner() else { return Ok(()) };
        sqlx::query(
            "INSERT INTO worker_sessions (name, master, conn, address, connected_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET master = $2, conn = $3, address = $4, connected_at = $5",
        )
        .bind(name)
        .bind(master)
        .bind(conn)
        .bind(address)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that connection `conn` of worker `name` to this handle's
    /// master ended (a newer connection, anywhere, is left as it is).
    pub async fn worker_disconnected(&self, name: &str, conn: i64) -> Result<()> {
        let Some(master) = self.owner() else { return Ok(()) };
        sqlx::query("DELETE FROM worker_sessions WHERE name = $1 AND master = $2 AND conn = $3")
            .bind(name)
            .bind(master)
            .bind(conn)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets every worker connection of this handle's master (at its
    /// start, or when it starts afresh after losing its lease).
    pub async fn forget_worker_sessions(&self) -> Result<()> {
        let Some(master) = self.owner() else { return Ok(()) };
        sqlx::query("DELETE FROM worker_sessions WHERE master = $1").bind(master).execute(&self.pool).await?;
        Ok(())
    }

    /// Every worker connection recorded, by worker name.
    pub async fn worker_sessions(&self) -> Result<Vec<WorkerSession>> {
        let rows = sqlx::query("SELECT name, master, address, connected_at FROM worker_sessions ORDER BY name")
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(WorkerSession {
                    name: r.try_get(0)?,
                    master: r.try_get(1)?,
                    address: r.try_get(2)?,
                    connected_at: r.try_get(3)?,
                })
            })
            .collect()
    }
}
