//! Reporters: when a build ends, every `[[notify]]` that wants it hears
//! about it — a signed JSON POST ([`webhooks`]), a mail to list addresses
//! and to whoever asked for the build ([`mail`]), or a line in an IRC
//! channel ([`irc`]) — and commit statuses go back to the forge a change
//! came from ([`status`]). All are sent from tasks of their own after the
//! result is in the database, through one send-with-retry
//! ([`outbound`]); a notifier that is down never holds up a build.

pub mod irc;
pub(crate) mod mail;
mod outbound;
pub mod status;
mod webhooks;

use crate::events::Say;
use crate::shared::Shared;
use kiln_core::config::{Notifier, NotifyVia};
use kiln_core::BuildState;
use kiln_db::{BuildFilter, BuildRow};
use std::sync::Arc;

/// Reports build `id`'s end to every notifier that wants it.
pub fn build_finished(shared: &Arc<Shared>, id: i64) {
    tokio::spawn(send_all(shared.clone(), id));
}

/// The last result of the same builder before `b` (succeeded or failed).
async fn previous_result(shared: &Shared, b: &BuildRow) -> Option<BuildState> {
    let filter = BuildFilter {
        component: Some(b.component.clone()),
        target: Some(b.target.clone()),
        before: Some(b.id),
        limit: 50,
        ..Default::default()
    };
    let rows = shared.store.list_builds(&filter).await.ok()?;
    rows.iter().map(|r| r.state).find(|s| matches!(s, BuildState::Succeeded | BuildState::Failed))
}

async fn send_all(shared: Arc<Shared>, id: i64) {
    let Ok(Some(b)) = shared.store.build(id).await else { return };
    shared.metrics.build_finished(&b);
    status::build_finished(&shared, &b);
    let farm = shared.farm();
    if farm.cfg.notifiers.is_empty() {
        return;
    }
    // Only `fixed` needs the builder's previous result.
    let previous = if farm.cfg.notifiers.iter().any(|n| n.fixed) { previous_result(&shared, &b).await } else { None };
    let fixed = b.state == BuildState::Succeeded && previous == Some(BuildState::Failed);
    let wanted: Vec<&Notifier> =
        farm.cfg.notifiers.iter().filter(|n| n.wants(&b.component, b.state, previous)).collect();
    if wanted.is_empty() {
        return;
    }
    let link = format!("{}/builds/{}", farm.cfg.master.public_url(), b.id);
    let outcome = if fixed { "fixed".to_string() } else { b.state.as_str().to_string() };
    for n in wanted {
        match &n.via {
            NotifyVia::Webhook { url, secret_file } => {
                webhooks::send(&shared, n, url, secret_file.as_deref(), &b, &outcome, &link).await
            }
            NotifyVia::Email { to, requester } => {
                let mut rcpt: Vec<String> = to.clone();
                if *requester {
                    rcpt.extend(mail::requester_address(&b));
                }
                rcpt.sort();
                rcpt.dedup();
                if rcpt.is_empty() {
                    continue;
                }
                match &farm.cfg.smtp {
                    Some(smtp) => mail::send(&shared, n, smtp, &rcpt, &b, &outcome, &link).await,
                    None => tracing::error!(notifier = %n.name, "no [smtp] section; mail not sent"),
                }
            }
            NotifyVia::Irc { channel } => {
                let mut text = format!("{} on {} {}", b.component, b.target, outcome);
                if b.state != BuildState::Succeeded {
                    if let Some(r) = &b.reason {
                        text.push_str(&format!(": {r}"));
                    }
                }
                if let Some(v) = b.properties.get("version") {
                    text.push_str(&format!(" (version {})", v.value));
                }
                text.push_str(&format!(" — {link}"));
                let _ = shared.chat.send(Say { channel: channel.clone(), text });
            }
        }
    }
}
