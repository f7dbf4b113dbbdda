//! kiln's store: the schema, its migrations and every SQL query, on SQLite
//! (the embedded default) and PostgreSQL, through one code path.
//!
//! Architecture invariant: the database is the only source of truth for the
//! queue. Every state change is a conditional UPDATE (`WHERE state = ...`),
//! so a build is claimed once even when several masters share a PostgreSQL
//! database. This crate stores what the master decided; it decides nothing.
//!
//! Times are microseconds since the Unix epoch, passed in by the caller.
//!
//! One module per concern: `store` (connecting, migrating), `builds`
//! (requests, builds and steps, the dispatcher's writes), `artifacts`,
//! `views` (what the web pages read), `packages` (publishing, channels,
//! snapshots, schedules), `users` (users and tokens), `workers` (drains), `masters` (leases of masters sharing it), `durable` (group commit), `news` (masters telling each other the queue changed), with `rows` (row types
//! and their SQL encoding) and `migrations` beneath them.

mod artifacts;
mod builds;
mod durable;
mod masters;
mod migrations;
mod news;
mod packages;
mod retention;
mod rows;
mod store;
mod users;
mod views;
mod workers;

pub use builds::Write;
pub use masters::{MasterRow, PublishLock};
pub use news::News;
pub use packages::{NameOwner, PackageRow, SnapshotRow};
pub use rows::{ArtifactRow, BuildFilter, BuildRow, BuilderStats, NewBuild, RequestRow, StepRow};
pub use store::{master_session_name, Store};
pub use users::{TokenRow, UserRow};
pub use workers::{DrainRow, WorkerSession};

/// The schema version this build of kiln migrates a database to.
pub fn latest_schema_version() -> i64 {
    migrations::MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database holds a value kiln cannot read ({0}); was it written by a newer kiln?")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: use postgres://... or sqlite:...")]
    BadUrl(String),
    #[error("master {master} no longer holds its lease (epoch {epoch}): another master took its builds over")]
    LeaseLost { master: String, epoch: i64 },
    #[error("this store handle acts for no master")]
    NoMaster,
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot sync the database's log to disk: {0}")]
    Durability(std::io::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}
