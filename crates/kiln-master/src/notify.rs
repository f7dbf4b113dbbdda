//! Notifications: each `[[notify]]` webhook gets a JSON POST when a build it
//! cares about ends, signed with HMAC-SHA256 when it has a secret. Sent from
//! a task of its own, after the result is in the database, with a few
//! retries; a notifier that is down never holds up a build.

use crate::shared::Shared;
use hmac::{Hmac, Mac};
use kiln_core::config::Notifier;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// Attempts per notification, with 1 s then 2 s between them.
const ATTEMPTS: u32 = 3;

/// Reports build `id`'s end to every notifier that wants it.
pub fn build_finished(shared: &Arc<Shared>, id: i64) {
    if shared.farm().cfg.notifiers.is_empty() {
        return;
    }
    tokio::spawn(send_all(shared.clone(), id));
}

async fn send_all(shared: Arc<Shared>, id: i64) {
    let Ok(Some(b)) = shared.store.build(id).await else { return };
    let farm = shared.farm();
    let wanted: Vec<&Notifier> = farm
        .cfg
        .notifiers
        .iter()
        .filter(|n| n.on.contains(&b.state) && (n.components.is_empty() || n.components.contains(&b.component)))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let properties: serde_json::Map<String, serde_json::Value> =
        b.properties.iter().map(|(k, p)| (k.clone(), serde_json::Value::String(p.value.clone()))).collect();
    let body = serde_json::json!({
        "event": "build_finished",
        "build_id": b.id,
        "component": b.component,
        "target": b.target,
        "state": b.state.as_str(),
        "reason": b.reason,
        "requested_by": b.requested_by,
        "attempt": b.attempt,
        "properties": properties,
        "url": format!("{}/builds/{}", farm.cfg.master.public_url(), b.id),
    })
    .to_string();
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot make an HTTP client for notifications");
            return;
        }
    };
    for n in wanted {
        let mut req =
            http.post(&n.webhook).header("content-type", "application/json").header("x-kiln-event", "build_finished");
        if let Some(file) = &n.secret_file {
            match std::fs::read_to_string(farm.resolve(file)) {
                Ok(secret) => {
                    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.trim().as_bytes()) else { continue };
                    mac.update(body.as_bytes());
                    req = req
                        .header("x-kiln-signature-256", format!("sha256={}", hex::encode(mac.finalize().into_bytes())));
                }
                Err(e) => {
                    tracing::error!(notifier = %n.name, error = %e, "cannot read the notifier's secret file; not sending");
                    continue;
                }
            }
        }
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let result = req.try_clone().map(|r| r.body(body.clone()).send());
            let Some(send) = result else { break };
            match send.await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => tracing::warn!(notifier = %n.name, status = %r.status(), attempt, "notification refused"),
                Err(e) => tracing::warn!(notifier = %n.name, error = %e, attempt, "notification failed"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
