//! News between masters sharing a PostgreSQL database: a transaction that
//! queues, ends, re-queues a build or asks for a cancel also announces
//! (`NOTIFY`, delivered on commit) that the queue changed, naming the
//! master that changed it; every master listens and looks at once,
//! instead of finding out at its next poll. The channel is named by the
//! schema, so farms sharing a PostgreSQL database in schemas of their own
//! do not wake each other. On SQLite there is one master and nothing to
//! announce.

use crate::{Backend, Result, Store};
use sqlx::postgres::PgListener;

/// The channel's name, before the schema's.
pub(crate) const CHANNEL: &str = "kiln_queue_";

/// Announcements from the other masters, as they come.
pub struct News {
    listener: PgListener,
    me: String,
}

impl Store {
    /// Announces, inside `tx` (delivered when it commits), that this
    /// handle's master changed the queue. Nothing on SQLite.
    pub(crate) async fn announce(&self, tx: &mut sqlx::AnyConnection) -> Result<()> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1 || current_schema(), $2)")
                .bind(CHANNEL)
                .bind(self.owner().unwrap_or(""))
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    /// Starts listening to the other masters' news (none on SQLite).
    pub async fn news(&self) -> Result<Option<News>> {
        if self.backend() != Backend::Postgres {
            return Ok(None);
        }
        let schema: String =
            sqlx::Row::try_get(&sqlx::query("SELECT CAST(current_schema() AS TEXT)").fetch_one(&self.pool).await?, 0)?;
        let mut listener = PgListener::connect(self.url()).await?;
        listener.listen(&format!("{CHANNEL}{schema}")).await?;
        Ok(Some(News { listener, me: self.owner().unwrap_or_default().to_string() }))
    }
}

impl News {
    /// Waits for news from another master, then takes whatever else has
    /// arrived meanwhile with it: one look serves them all. A lost
    /// connection is news too (some may have been missed); the listener
    /// connects again at the next call.
    pub async fn next(&mut self) -> Result<()> {
        loop {
            let Some(n) = self.listener.try_recv().await? else { return Ok(()) };
            let mut from_others = n.payload() != self.me;
            while let Some(more) = self.listener.next_buffered() {
                from_others |= more.payload() != self.me;
            }
            if from_others {
                return Ok(());
            }
        }
    }
}
