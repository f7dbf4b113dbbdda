//! Group commit: what the master has answered is on disk first.
//!
//! On SQLite, transactions commit with `synchronous = NORMAL`: the commit
//! is written to the write-ahead log without waiting for the disk. Before
//! the master answers a request that changed something, it calls
//! [`Store::make_durable`], which syncs the log: one `fdatasync` covers
//! every transaction committed before it began, so requests arriving while
//! a sync is under way share the next one instead of queueing one each
//! (with `synchronous = FULL` every commit on the single writer connection
//! would wait for its own). What nobody is answered about (the dispatcher
//! recording a step) rides along with the next sync, or with SQLite's own
//! at a checkpoint.
//!
//! On PostgreSQL, `synchronous_commit = on` (set on every session) makes
//! the server flush its log before a commit returns, grouping concurrent
//! commits itself; [`Store::make_durable`] has nothing left to do.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{Result, Store, StoreError};

/// The SQLite write-ahead log and how far it is known to be on disk.
#[derive(Debug)]
pub(crate) struct WalSync {
    /// `kiln.db-wal` beside the database file.
    wal: PathBuf,
    /// Counts calls to [`Store::make_durable`]; each takes a ticket after
    /// its own commit returned.
    tickets: AtomicU64,
    /// The highest ticket whose commit a finished sync covered. Holding the
    /// lock is being the one that syncs.
    synced: tokio::sync::Mutex<u64>,
    /// Syncs done (for the benchmark's report and the tests).
    syncs: AtomicU64,
    /// A sync failed once. Linux forgets a write-back error once it has
    /// reported it (and may drop the pages), so a later sync that succeeds
    /// proves nothing about what was committed before: every later call
    /// fails too, until the master restarts.
    failed: std::sync::atomic::AtomicBool,
}

impl WalSync {
    /// The log of the SQLite database file `file` (as SQLite names it in
    /// `PRAGMA database_list`), or `None` for an in-memory database.
    pub(crate) fn for_database(file: &str) -> Option<Arc<WalSync>> {
        if file.is_empty() {
            return None;
        }
        Some(Arc::new(WalSync {
            wal: PathBuf::from(format!("{file}-wal")),
            tickets: AtomicU64::new(0),
            synced: tokio::sync::Mutex::new(0),
            syncs: AtomicU64::new(0),
            failed: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    async fn sync(&self) -> Result<()> {
        let poisoned = || {
            StoreError::Durability(std::io::Error::other(
                "an earlier sync of the database's log failed; restart the master once the disk is sound",
            ))
        };
        if self.failed.load(Ordering::SeqCst) {
            return Err(poisoned());
        }
        let mine = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().await;
        if self.failed.load(Ordering::SeqCst) {
            return Err(poisoned());
        }
        if *synced >= mine {
            // A sync that began after our commit has finished meanwhile.
            return Ok(());
        }
        // Every ticket taken so far belongs to a commit already written to
        // the log: this sync covers them all.
        let upto = self.tickets.load(Ordering::SeqCst);
        let wal = self.wal.clone();
        let done = tokio::task::spawn_blocking(move || match std::fs::File::open(&wal) {
            // Opened each time: SQLite removes the log when its last
            // connection closes and makes a new one on the next write.
            Ok(f) => f.sync_data(),
            // No log yet: nothing was written since the last checkpoint,
            // which SQLite synced itself.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| StoreError::Durability(std::io::Error::other(e)));
        if let Err(e) = done.and_then(|r| r.map_err(StoreError::Durability)) {
            self.failed.store(true, Ordering::SeqCst);
            return Err(e);
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        *synced = upto;
        Ok(())
    }
}

impl Store {
    /// Returns once every transaction this process committed before the
    /// call is on disk (see the module's notes). Call it after a change and
    /// before answering for it.
    pub async fn make_durable(&self) -> Result<()> {
        match &self.wal {
            Some(wal) => wal.sync().await,
            None => Ok(()),
        }
    }

    /// The log file [`Store::make_durable`] syncs (SQLite).
    pub fn synced_log(&self) -> Option<&std::path::Path> {
        self.wal.as_deref().map(|w| w.wal.as_path())
    }

    /// How many log syncs [`Store::make_durable`] has made (SQLite; 0 on
    /// PostgreSQL, where the server syncs).
    pub fn log_syncs(&self) -> u64 {
        self.wal.as_ref().map_or(0, |w| w.syncs.load(Ordering::Relaxed))
    }

    /// The database's settings that decide what survives a power cut, as
    /// `(name, value)`: on SQLite `journal_mode` and `synchronous` of the
    /// writer connection, on PostgreSQL `fsync`, `synchronous_commit` and
    /// `wal_sync_method` of a session.
    pub async fn durability_settings(&self) -> Result<Vec<(String, String)>> {
        use sqlx::Row;
        let names: &[&str] = match self.backend() {
            crate::Backend::Sqlite => &["journal_mode", "synchronous"],
            crate::Backend::Postgres => &["fsync", "synchronous_commit", "wal_sync_method"],
        };
        let mut conn = self.pool.acquire().await?;
        let mut out = Vec::new();
        for name in names {
            let sql = match self.backend() {
                crate::Backend::Sqlite => format!("PRAGMA {name}"),
                crate::Backend::Postgres => format!("SHOW {name}"),
            };
            let row = sqlx::query(&sql).fetch_one(&mut *conn).await?;
            // PRAGMA synchronous answers a number; the others text.
            let value = row.try_get::<String, _>(0).or_else(|_| row.try_get::<i64, _>(0).map(|v| v.to_string()))?;
            out.push((name.to_string(), value));
        }
        Ok(out)
    }
}
