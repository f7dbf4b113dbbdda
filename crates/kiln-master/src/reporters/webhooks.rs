//! `[[notify]]` webhooks: a JSON POST about a finished build, signed with
//! HMAC-SHA256 of the body when the notifier has a secret.

use super::outbound::{retry, send_http};
use crate::shared::Shared;
use hmac::{Hmac, Mac};
use kiln_core::config::{Notifier, SecretRef};
use kiln_db::BuildRow;
use sha2::Sha256;
use std::time::Duration;

pub(super) async fn send(
    shared: &Shared,
    n: &Notifier,
    url: &str,
    secret_file: Option<&str>,
    b: &BuildRow,
    outcome: &str,
    link: &str,
) {
    let farm = shared.farm();
    let properties: serde_json::Map<String, serde_json::Value> =
        b.properties.iter().map(|(k, p)| (k.clone(), serde_json::Value::String(p.value.clone()))).collect();
    let body = serde_json::json!({
        "event": "build_finished",
        "build_id": b.id,
        "component": b.component,
        "target": b.target,
        "state": b.state.as_str(),
        "outcome": outcome,
        "reason": b.reason,
        "requested_by": b.requested_by,
        "attempt": b.attempt,
        "properties": properties,
        "url": link,
    })
    .to_string();
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot make an HTTP client for notifications");
            return;
        }
    };
    let mut req = http.post(url).header("content-type", "application/json").header("x-kiln-event", "build_finished");
    if let Some(file) = secret_file {
        match farm.secret(&SecretRef::File(file.to_string()), &format!("notifier {}'s secret", n.name)) {
            Ok(secret) => {
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.trim().as_bytes()) else { return };
                mac.update(body.as_bytes());
                req =
                    req.header("x-kiln-signature-256", format!("sha256={}", hex::encode(mac.finalize().into_bytes())));
            }
            Err(e) => {
                tracing::error!(notifier = %n.name, error = %e, "cannot read the notifier's secret file; not sending");
                return;
            }
        }
    }
    retry(&n.name, "notification", || send_http(req.try_clone().map(|r| r.body(body.clone())))).await;
}
