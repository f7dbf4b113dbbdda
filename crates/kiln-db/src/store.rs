//! The handle on the database: connecting (SQLite or PostgreSQL),
//! migrating, and the schema version. The queries are `impl Store` blocks
//! of their own modules.

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, Row};
use std::time::Duration;

use crate::migrations;
use crate::{Backend, Result, StoreError};

/// A handle on the database; cheap to clone.
///
/// On SQLite, writes go through a single connection (SQLite has one writer
/// anyway, and one connection avoids lock contention and thread hand-offs:
/// measured 1.3x the build throughput of a pool of four) and reads through a
/// separate pool, which WAL lets run alongside. On PostgreSQL both are one pool.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) reader: AnyPool,
    backend: Backend,
    /// The master this handle acts for: builds it claims are recorded as
    /// its own (several masters may share a PostgreSQL database).
    pub(crate) owner: Option<std::sync::Arc<Owner>>,
    /// Where it connected (a listener for other masters' news dials it again).
    url: std::sync::Arc<str>,
    /// SQLite's write-ahead log, synced for the group ([`crate::durable`]).
    pub(crate) wal: Option<std::sync::Arc<crate::durable::WalSync>>,
}

/// A master acting through a store handle: its id, and the epoch of the
/// lease it holds (0 until it takes one). Every state change it makes to a
/// build is conditional on both, so a master whose lease was taken from it
/// (it was paused, or cut off, past its lease) changes nothing.
#[derive(Debug)]
pub(crate) struct Owner {
    pub id: String,
    pub epoch: std::sync::atomic::AtomicI64,
}

/// The PostgreSQL `application_name` of master `id`'s sessions (PostgreSQL
/// keeps 63 bytes of it).
pub fn master_session_name(id: &str) -> String {
    let mut name = format!("kiln master {id}");
    while name.len() > 63 {
        name.pop();
    }
    name
}

impl Owner {
    pub fn epoch(&self) -> i64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Store {
    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store> {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating.
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_as(url, None).await
    }

    /// Connects without migrating, for master `master` when given: its
    /// PostgreSQL sessions carry its name ([`master_session_name`]), so a
    /// master that fences it can end them (and the row locks a paused
    /// master's open transactions hold).
    pub async fn connect_as(url: &str, master: Option<&str>) -> Result<Store> {
        let session_name: Option<std::sync::Arc<str>> = master.map(|m| master_session_name(m).into());
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        let options = |max: u32| {
            let session_name = session_name.clone();
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(30))
                // A SQLite connection is a file this process holds open: it
                // cannot have dropped the way a server's can, and a ping
                // before each use is one more hand-off to its thread.
                .test_before_acquire(backend == Backend::Postgres)
                .after_connect(move |conn, _meta| {
                    let session_name = session_name.clone();
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // WAL lets readers go on while the master writes. NORMAL
                            // sync keeps commits across a process crash; across a
                            // power cut, what was answered is synced by
                            // Store::make_durable, a group at a time.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                        } else {
                            // Store::apply writes standard SQL string literals.
                            conn.execute("SET standard_conforming_strings = on").await?;
                            // A row another master locked and then went silent
                            // holding (paused) never blocks this one for long:
                            // the statement fails and is tried again, and the
                            // fence ends that master's sessions.
                            conn.execute("SET lock_timeout = '5s'").await?;
                            // A commit returns once the server's log is on disk,
                            // whatever the server's default (the server groups
                            // concurrent commits into one flush).
                            conn.execute("SET synchronous_commit = on").await?;
                            if let Some(name) = session_name.as_deref() {
                                let sql = format!("SET application_name = {}", crate::rows::literal(name));
                                conn.execute(sql.as_str()).await?;
                            }
                        }
                        Ok(())
                    })
                })
        };
        Ok(match backend {
            Backend::Sqlite => {
                let pool = options(1).connect(url).await?;
                let reader = options(4).connect(url).await?;
                // The file as SQLite opened it (the URL may be relative or
                // percent-encoded): its log is what group commit syncs.
                let file: String = sqlx::query("PRAGMA database_list")
                    .fetch_all(&pool)
                    .await?
                    .iter()
                    .find(|r| r.try_get::<String, _>(1).is_ok_and(|n| n == "main"))
                    .and_then(|r| r.try_get::<String, _>(2).ok())
                    .unwrap_or_default();
                let wal = crate::durable::WalSync::for_database(&file);
                Store { pool, reader, backend, owner: None, url: url.into(), wal }
            }
            Backend::Postgres => {
                let pool = options(8).connect(url).await?;
                Store { reader: pool.clone(), pool, backend, owner: None, url: url.into(), wal: None }
            }
        })
    }

    /// A new handle on the same database, connected as master `id` (its
    /// sessions named for it) and acting for it.
    pub async fn connect_again_as(&self, id: &str) -> Result<Store> {
        Ok(Store::connect_as(&self.url, Some(id)).await?.for_master(id))
    }

    /// This handle, acting for master `id`: the builds it claims are that master's.
    pub fn for_master(mut self, id: &str) -> Store {
        self.owner = Some(std::sync::Arc::new(Owner { id: id.to_string(), epoch: 0.into() }));
        self
    }

    /// The master this handle acts for, if any.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref().map(|o| o.id.as_str())
    }

    /// The epoch of the lease this handle's master holds (0: none yet).
    pub fn epoch(&self) -> i64 {
        self.owner.as_deref().map_or(0, Owner::epoch)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
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

    /// The schema version found, 0 for a database kiln never used.
    pub async fn found_schema_version(&self) -> Result<i64> {
        let exists = match self.backend {
            Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'kiln_schema'",
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'kiln_schema' \
                                  AND table_schema = current_schema()"
            }
        };
        let n: i64 = sqlx::query(exists).fetch_one(&self.pool).await?.try_get(0)?;
        if n == 0 {
            return Ok(0);
        }
        self.schema_version().await
    }

    pub async fn schema_version(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COALESCE(MAX(version), 0) FROM kiln_schema")
            .fetch_one(&self.reader)
            .await?
            .try_get(0)?)
    }
}
