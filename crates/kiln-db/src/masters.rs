//! Masters sharing one database: each holds a lease row it renews (its
//! heartbeat) under an epoch; a running build is owned by one master and
//! epoch (`builds.owner`, `builds.owner_epoch`).
//!
//! The rules that keep a build from being lost or run twice:
//! - every change a master makes to a build it runs is conditional on
//!   owning it at its current epoch, and every claim on holding its lease;
//! - a master whose heartbeat is older than the lease is *fenced* by a
//!   survivor (its epoch bumped, in the same transaction that takes its
//!   running builds over), so when it wakes it can change nothing: its
//!   renewal fails, and it rejoins under a new epoch;
//! - a worker's running build follows the worker: the master it connects
//!   to adopts it.

use crate::store::Owner;
use crate::{Backend, Result, Store, StoreError};
use sqlx::Row;

/// A master as its lease row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterRow {
    pub id: String,
    pub address: String,
    /// Bumped each time the master (re)takes its lease, and when it is fenced.
    pub epoch: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub schema_version: i64,
    /// When a survivor found its lease expired and took its builds over.
    pub fenced_at: Option<i64>,
}

impl Store {
    fn me(&self) -> Result<&Owner> {
        self.owner.as_deref().ok_or(StoreError::NoMaster)
    }

    /// SQL that holds for a build (columns of `builds`) this handle's
    /// master owns at its epoch (any build, for a handle acting for none).
    pub(crate) fn owned_sql(&self) -> String {
        match self.owner.as_deref() {
            Some(o) => format!("(owner = {} AND owner_epoch = {})", crate::rows::literal(&o.id), o.epoch()),
            None => "1 = 1".into(),
        }
    }

    /// Inside `tx`: fails with [`StoreError::LeaseLost`] unless this
    /// handle's master holds its lease, and (on PostgreSQL) keeps a fence
    /// from landing until `tx` ends, so what `tx` does is done under the lease.
    pub(crate) async fn hold_lease(&self, tx: &mut sqlx::AnyConnection) -> Result<()> {
        let Some(o) = self.owner.as_deref() else { return Ok(()) };
        // KEY SHARE: the master's own renewals (plain updates) never wait
        // for it; a fence (FOR UPDATE first) does.
        let lock = if self.backend() == Backend::Postgres { " FOR KEY SHARE" } else { "" };
        let held = sqlx::query(&format!("SELECT 1 FROM masters WHERE id = $1 AND epoch = $2{lock}"))
            .bind(&o.id)
            .bind(o.epoch())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if held {
            Ok(())
        } else {
            Err(StoreError::LeaseLost { master: o.id.clone(), epoch: o.epoch() })
        }
    }

    /// Takes this handle's master's lease (made, or taken again after a
    /// restart or a fence, with a new epoch); returns the epoch it holds now.
    pub async fn take_lease(&self, address: &str, now: i64, schema_version: i64) -> Result<i64> {
        let me = self.me()?;
        // One statement: two starts of the same id never share an epoch.
        let epoch: i64 = sqlx::query(
            "INSERT INTO masters (id, address, epoch, started_at, heartbeat_at, schema_version) \
             VALUES ($1, $2, 1, $3, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET address = $2, epoch = masters.epoch + 1, started_at = $3, \
             heartbeat_at = $3, schema_version = $4, fenced_at = NULL RETURNING epoch",
        )
        .bind(&me.id)
        .bind(address)
        .bind(now)
        .bind(schema_version)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        me.epoch.store(epoch, std::sync::atomic::Ordering::SeqCst);
        Ok(epoch)
    }

    /// Renews this handle's master's lease; false when it was lost (a
    /// survivor fenced it, or the same id started elsewhere).
    pub async fn renew_lease(&self, now: i64) -> Result<bool> {
        let me = self.me()?;
        let n = sqlx::query("UPDATE masters SET heartbeat_at = $1 WHERE id = $2 AND epoch = $3")
            .bind(now)
            .bind(&me.id)
            .bind(me.epoch())
            .execute(&self.pool)
            .await?;
        Ok(n.rows_affected() == 1)
    }

    /// The leases of masters sharing the database, read with what every
    /// schema since masters were recorded has (for deciding whether this
    /// kiln may migrate it): id, heartbeat and the schema version each
    /// knows. Empty for a schema from before (`found` below 11).
    pub async fn leases(&self, found: i64) -> Result<Vec<(String, i64, i64)>> {
        if found < 11 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT id, heartbeat_at, schema_version FROM masters ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// Every master that ever held a lease here, by id.
    pub async fn masters(&self) -> Result<Vec<MasterRow>> {
        let rows = sqlx::query(
            "SELECT id, address, epoch, started_at, heartbeat_at, schema_version, fenced_at FROM masters ORDER BY id",
        )
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
                    fenced_at: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// Fences master `gone` if its heartbeat is older than `stale_before`
    /// (bumping its epoch, so it can change nothing more), and takes over
    /// the running builds of a fenced `gone` for this handle's master, in
    /// one transaction; returns their ids. Conditional throughout, so when
    /// several masters do this at once each build goes to one of them.
    pub async fn take_over_master(&self, gone: &str, stale_before: i64, now: i64) -> Result<Vec<i64>> {
        let me = self.me()?;
        let mut tx = self.pool.begin().await?;
        self.hold_lease(&mut tx).await?;
        if self.backend() == Backend::Postgres {
            // Paused, it may hold row locks in open transactions, and the
            // publish lock: end its sessions (named by `Store::connect_as`).
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 \
                 AND EXISTS (SELECT 1 FROM masters WHERE id = $2 AND heartbeat_at < $3 AND fenced_at IS NULL)",
            )
            .bind(crate::store::master_session_name(gone))
            .bind(gone)
            .bind(stale_before)
            .execute(&mut *tx)
            .await?;
            // Its claims and writes in flight (each holds its lease row
            // KEY SHARE) end before the fence lands. This lock is also what
            // makes the epoch's change below conflict with KEY SHARE: a plain
            // update of a column no key holds would not wait for them, nor
            // fail a claim that waited for it.
            sqlx::query("SELECT 1 FROM masters WHERE id = $1 FOR UPDATE").bind(gone).execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE masters SET epoch = epoch + 1, fenced_at = $1 \
             WHERE id = $2 AND heartbeat_at < $3 AND fenced_at IS NULL",
        )
        .bind(now)
        .bind(gone)
        .bind(stale_before)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "UPDATE builds SET owner = $1, owner_epoch = $2 WHERE state = 'running' AND owner = $3 \
             AND EXISTS (SELECT 1 FROM masters WHERE id = $3 AND fenced_at IS NOT NULL) RETURNING id",
        )
        .bind(&me.id)
        .bind(me.epoch())
        .bind(gone)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Makes this handle's master, at its current epoch, the owner of the
    /// running builds it owned under an earlier epoch (before a restart or
    /// a fence) or that no master owns (claimed before masters were
    /// recorded); returns their ids.
    pub async fn reclaim_own_builds(&self) -> Result<Vec<i64>> {
        let me = self.me()?;
        let mut tx = self.pool.begin().await?;
        self.hold_lease(&mut tx).await?;
        let rows = sqlx::query(
            "UPDATE builds SET owner = $1, owner_epoch = $2 \
             WHERE state = 'running' AND (owner = $1 OR owner IS NULL) RETURNING id",
        )
        .bind(&me.id)
        .bind(me.epoch())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Makes this handle's master the owner of running build `build_id`,
    /// which `worker` runs and has just connected here with: the build
    /// follows its worker, whichever master had it. False when the build is
    /// not running on that worker any more.
    pub async fn adopt(&self, build_id: i64, worker: &str) -> Result<bool> {
        let me = self.me()?;
        let mut tx = self.pool.begin().await?;
        self.hold_lease(&mut tx).await?;
        let n = sqlx::query(
            "UPDATE builds SET owner = $1, owner_epoch = $2 WHERE id = $3 AND state = 'running' AND worker = $4 \
             AND NOT EXISTS (SELECT 1 FROM publishing WHERE build_id = $3)",
        )
        .bind(&me.id)
        .bind(me.epoch())
        .bind(build_id)
        .bind(worker)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Asks the master running build `build_id` to cancel it (it runs on a
    /// worker connected to another master); false when it is not running.
    pub async fn ask_cancel(&self, build_id: i64, by: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE builds SET cancel_asked_by = $1 WHERE id = $2 AND state = 'running' AND cancel_asked_by IS NULL",
        )
        .bind(by)
        .bind(build_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.announce(&mut tx).await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// The builds this handle's master owns that another master was asked
    /// to cancel, with who asked.
    pub async fn cancels_asked(&self) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(&format!(
            "SELECT id, cancel_asked_by FROM builds WHERE state = 'running' AND cancel_asked_by IS NOT NULL AND {}",
            self.owned_sql()
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }
}

/// The farm-wide lock the publisher holds while it changes repositories:
/// masters sharing a PostgreSQL database (and a data dir) publish one at a
/// time. A PostgreSQL session lock: if its holder dies, its connection
/// ends and the lock goes with it. On SQLite (one master) it is nothing.
pub struct PublishLock {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
}

/// Any number: it only has to be the same on every master.
const PUBLISH_LOCK_KEY: i64 = 7_206_155;

impl Store {
    /// Waits for the farm's publish lock.
    pub async fn publish_lock(&self) -> Result<PublishLock> {
        if self.backend() != Backend::Postgres {
            return Ok(PublishLock { conn: None });
        }
        let mut conn = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)").bind(PUBLISH_LOCK_KEY).execute(&mut *conn).await?;
        Ok(PublishLock { conn: Some(conn) })
    }

    /// Whether this handle's master holds its lease now (always, for a
    /// handle acting for no master).
    pub async fn holds_lease(&self) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        match self.hold_lease(&mut conn).await {
            Ok(()) => Ok(true),
            Err(StoreError::LeaseLost { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl PublishLock {
    /// Lets the next master publish.
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            if sqlx::query("SELECT pg_advisory_unlock($1)").bind(PUBLISH_LOCK_KEY).execute(&mut *conn).await.is_err() {
                // The session ends with the connection, and the lock with it.
                drop(conn.detach());
            }
        }
    }
}

impl Drop for PublishLock {
    fn drop(&mut self) {
        // Not released (a task cancelled mid-publish): end the session
        // rather than return a connection that still holds the lock.
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}
