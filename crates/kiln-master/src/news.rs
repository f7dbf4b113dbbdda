//! The other masters' news: a master sharing the PostgreSQL database that
//! queues, ends or re-queues a build, or asks for a cancel, says so (see
//! `kiln_db::News`); this master's dispatcher then looks at once (builds to
//! run, dependencies that ended, cancels asked of it), and its live pages
//! refresh. At most every `EVERY`, so a busy farm's news costs a few looks
//! a second; the dispatcher's own poll stays as the backstop.

use crate::events::Event;
use crate::shared::Shared;
use std::sync::Arc;
use std::time::Duration;

const EVERY: Duration = Duration::from_millis(100);

pub async fn listen(shared: Arc<Shared>) {
    loop {
        let mut news = match shared.store.news().await {
            Ok(Some(news)) => news,
            // SQLite: one master, no news (the task stays: the master ends
            // when any of its tasks does).
            Ok(None) => return std::future::pending().await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen to the other masters' news; relying on polling");
                tokio::time::sleep(Duration::from_secs(10)).await;
                continue;
            }
        };
        loop {
            if let Err(e) = news.next().await {
                tracing::warn!(error = %e, "lost the other masters' news; listening again");
                break;
            }
            shared.send(Event::Poll);
            shared.changed();
            tokio::time::sleep(EVERY).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
