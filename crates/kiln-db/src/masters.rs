//! Masters sharing one database: each holds a lease row it renews (its
//! heartbeat); a build it claimed is its own (`builds.owner`). A master
//! whose heartbeat is older than the lease is taken for dead.

use crate::{Result, Store};
use sqlx::Row;
use std::collections::HashMap;

/// A master as its lease row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterRow {
    pub id: String,
    pub address: String,
    /// Bumped each time the master (re)takes its lease.
    pub epoch: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub schema_version: i64,
}

impl Store {
    /// Takes master `id`'s lease (made, or taken again after a restart with
    /// a new epoch); returns the epoch it holds now.
    pub async fn take_lease(&self, id: &str, address: &str, now: i64, schema_version: i64) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let old: Option<i64> = sqlx::query("SELECT epoch FROM masters WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let epoch = old.unwrap_or(0) + 1;
        if old.is_some() {
            sqlx::query(
                "UPDATE masters SET address = $1, epoch = $2, started_at = $3, heartbeat_at = $3, schema_version = $4 \
                 WHERE id = $5",
            )
            .bind(address)
            .bind(epoch)
            .bind(now)
            .bind(schema_version)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO masters (id, address, epoch, started_at, heartbeat_at, schema_version) \
                 VALUES ($1, $2, $3, $4, $4, $5)",
            )
            .bind(id)
            .bind(address)
            .bind(epoch)
            .bind(now)
            .bind(schema_version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(epoch)
    }

    /// Renews master `id`'s lease at `epoch`; false when it was taken
    /// since (by the same id started again elsewhere).
    pub async fn renew_lease(&self, id: &str, epoch: i64, now: i64) -> Result<bool> {
        let n = sqlx::query("UPDATE masters SET heartbeat_at = $1 WHERE id = $2 AND epoch = $3")
            .bind(now)
            .bind(id)
            .bind(epoch)
            .execute(&self.pool)
            .await?;
        Ok(n.rows_affected() == 1)
    }

    /// Every master that ever held a lease here, by id.
    pub async fn masters(&self) -> Result<Vec<MasterRow>> {
        let rows =
            sqlx::query("SELECT id, address, epoch, started_at, heartbeat_at, schema_version FROM masters ORDER BY id")
                .fetch_all(&self.reader)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(MasterRow {
                    id: r.try_get(0)?,
                    address: r.try_get(1)?,
                    epoch: r.try_get(2)?,
                    started_at: r.try_get(3)?,
                    heartbeat_at: r.try_get(4)?,
                    schema_version: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Takes over the running builds of master `gone` for this handle's
    /// master; returns their ids. Conditional on their owner, so when
    /// several masters take over at once each build goes to one of them.
    pub async fn take_over_builds(&self, gone: &str) -> Result<Vec<i64>> {
        let Some(me) = self.owner.as_deref() else { return Ok(Vec::new()) };
        let rows = sqlx::query("UPDATE builds SET owner = $1 WHERE state = 'running' AND owner = $2 RETURNING id")
            .bind(me)
            .bind(gone)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// The master each running build was claimed by (none for builds
    /// claimed before masters were recorded).
    pub async fn running_owners(&self) -> Result<HashMap<i64, String>> {
        let rows = sqlx::query("SELECT id, owner FROM builds WHERE state = 'running' AND owner IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }
}
