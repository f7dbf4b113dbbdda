//! News between masters sharing a PostgreSQL database: a transaction that
//! queues, ends, re-queues a build or asks for a cancel also announces
//! (`NOTIFY`, delivered on commit) that the queue changed, naming the
//! master that changed it; every master listens and looks at once,
//! instead of finding out at its next poll. On SQLite there is one master
//! and nothing to announce.

use crate::{Backend, Result, Store};
use sqlx::postgres::PgListener;

const CHANNEL: &str = "kiln_queue_changed";

/// Announcements from the other masters, as they come.
pub struct News {
    listener: PgListener,
    me: String,
}

impl Store {
    /// The statement that announces a change by this handle's master, to
    /// run inside the transaction that makes it (none on SQLite).
    pub(crate) fn announce_sql(&self) -> Option<String> {
        (self.backend() == Backend::Postgres)
            .then(|| format!("SELECT pg_notify('{CHANNEL}', {})", crate::rows::literal(self.owner().unwrap_or(""))))
    }

    /// Announces, inside `tx`, that this handle's master changed the queue.
    pub(crate) async fn announce(&self, tx: &mut sqlx::AnyConnection) -> Result<()> {
        if let Some(sql) = self.announce_sql() {
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// Starts listening to the other masters' news (none on SQLite).
    pub async fn news(&self) -> Result<Option<News>> {
        if self.backend() != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = PgListener::connect(self.url()).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(News { listener, me: self.owner().unwrap_or_default().to_string() }))
    }
}

impl News {
    /// Waits for news from another master, then takes whatever else has
    /// arrived meanwhile with it: one look serves them all. After a lost
    /// connection (it reconnects by itself) it answers at once, as news
    /// may have been missed.
    pub async fn next(&mut self) -> Result<()> {
        loop {
            let n = self.listener.recv().await?;
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
