//! Notifications: when a build ends, every `[[notify]]` that wants it hears
//! about it — a signed JSON POST (webhook), a mail (SMTP) to list addresses
//! and to whoever asked for the build, or a line in an IRC channel. Sent
//! from a task of its own after the result is in the database, with a few
//! retries; a notifier that is down never holds up a build. Commit
//! statuses go back to forges from here too ([`crate::status`]).

use crate::shared::Shared;
use hmac::{Hmac, Mac};
use kiln_core::config::{Notifier, NotifyVia, SecretRef, Smtp, SmtpSecurity};
use kiln_core::{BuildState, StepState};
use kiln_db::{BuildFilter, BuildRow};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// Attempts per notification, with 1 s then 2 s between them.
const ATTEMPTS: u32 = 3;
/// Log lines of the failing step quoted in a mail.
const LOG_LINES: usize = 30;

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
    crate::status::build_finished(&shared, &b);
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
                webhook(&shared, n, url, secret_file.as_deref(), &b, &outcome, &link).await
            }
            NotifyVia::Email { to, requester } => {
                let mut rcpt: Vec<String> = to.clone();
                if *requester {
                    rcpt.extend(requester_address(&b));
                }
                rcpt.sort();
                rcpt.dedup();
                if rcpt.is_empty() {
                    continue;
                }
                match &farm.cfg.smtp {
                    Some(smtp) => email(&shared, n, smtp, &rcpt, &b, &outcome, &link).await,
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
                let _ = shared.chat.send(crate::irc::Say { channel: channel.clone(), text });
            }
        }
    }
}

/// The mail address of whoever asked for the build: the pusher of a change,
/// else the requester when that is an address.
fn requester_address(b: &BuildRow) -> Option<String> {
    let from_angle = |s: &str| -> Option<String> {
        let start = s.find('<')? + 1;
        let end = s[start..].find('>')? + start;
        Some(s[start..end].to_string())
    };
    let candidate = b
        .properties
        .get("changed_by")
        .and_then(|p| from_angle(&p.value))
        .or_else(|| b.requested_by.as_deref().and_then(|r| from_angle(r).or_else(|| Some(r.to_string()))))?;
    let ok = candidate.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !candidate.chars().any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c));
    ok.then_some(candidate)
}

/// Sends one HTTP request (a copy, so it can be sent again); any 2xx is success.
pub(crate) async fn send_http(req: Option<reqwest::RequestBuilder>) -> Result<(), String> {
    let req = req.ok_or("the request cannot be sent again")?;
    match req.send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("refused: {}", resp.status())),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `attempt_once` up to [`ATTEMPTS`] times, 1 s then 2 s apart, until it succeeds.
pub(crate) async fn retry<F, Fut>(name: &str, what: &str, mut attempt_once: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        match attempt_once().await {
            Ok(()) => return,
            Err(e) => tracing::warn!(to = %name, error = %e, attempt, "{what} not delivered"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
}

async fn webhook(
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

/// The failing step's name and the last lines of its log.
async fn failing_step(shared: &Shared, b: &BuildRow) -> Option<(String, String)> {
    let steps = shared.store.steps(b.id).await.ok()?;
    let step = steps.iter().find(|s| s.state == StepState::Failed)?;
    let idx = u32::try_from(step.idx).ok()?;
    let size = shared.logs.size(b.id, idx);
    let from = size.saturating_sub(16 * 1024);
    let mut text = shared.logs.read(b.id, idx, from, 16 * 1024).unwrap_or_default();
    if text.is_empty() {
        text = shared.logs.read(b.id, idx, 0, 4 << 20).unwrap_or_default();
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_LINES)..].join("\n");
    Some((step.name.clone(), tail))
}

async fn email(shared: &Shared, n: &Notifier, smtp: &Smtp, to: &[String], b: &BuildRow, outcome: &str, link: &str) {
    use lettre::message::{header::ContentType, Mailbox};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::AsyncTransport;
    use lettre::Message;

    let farm = shared.farm();
    let subject = format!("kiln: {} on {} {} (build {})", b.component, b.target, outcome, b.id);
    let mut body = format!("{} on {}: {}\n\n", b.component, b.target, outcome);
    if let Some(r) = &b.reason {
        body.push_str(&format!("Reason: {r}\n"));
    }
    for key in ["version", "revision", "branch", "changed_by"] {
        if let Some(p) = b.properties.get(key) {
            body.push_str(&format!("{key}: {}\n", p.value));
        }
    }
    if let Some(by) = &b.requested_by {
        body.push_str(&format!("Requested by: {by}\n"));
    }
    body.push_str(&format!("Build: {link}\n"));
    if b.state == BuildState::Failed {
        if let Some((step, tail)) = failing_step(shared, b).await {
            body.push_str(&format!("\nStep {step} failed. The last lines of its log:\n\n{tail}\n"));
        }
    }
    let from: Mailbox = match smtp.from.parse() {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "[smtp] from is not a mail address");
            return;
        }
    };
    let mut builder = Message::builder().from(from).subject(subject);
    for addr in to {
        match addr.parse::<Mailbox>() {
            Ok(m) => builder = builder.to(m),
            Err(e) => tracing::warn!(notifier = %n.name, address = %addr, error = %e, "not a mail address; skipped"),
        }
    }
    let message = match builder.header(ContentType::TEXT_PLAIN).body(body) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(notifier = %n.name, error = %e, "cannot compose the mail");
            return;
        }
    };
    let transport = smtp_transport(&farm, smtp);
    let mut transport = transport.map(|t| t.port(smtp.port).timeout(Some(Duration::from_secs(20))));
    if let (Ok(t), Some(user), Some(pass)) = (&mut transport, &smtp.username, &smtp.password) {
        match farm.secret(pass, "[smtp] password") {
            Ok(p) => *t = t.clone().credentials(Credentials::new(user.clone(), p)),
            Err(e) => {
                tracing::error!(error = %e, "mail not sent");
                return;
            }
        }
    }
    let transport = match transport {
        Ok(t) => t.build(),
        Err(e) => {
            tracing::error!(notifier = %n.name, error = %e, "cannot set up SMTP");
            return;
        }
    };
    retry(&n.name, "mail", || {
        let (t, m) = (transport.clone(), message.clone());
        async move { t.send(m).await.map(|_| ()).map_err(|e| e.to_string()) }
    })
    .await;
}

type SmtpBuilder = lettre::transport::smtp::AsyncSmtpTransportBuilder;

/// An SMTP transport as `[smtp]` says: STARTTLS (required) or TLS from the
/// first byte, trusting the web's roots or the configured CA file; plain
/// text only when asked for.
fn smtp_transport(farm: &crate::farm::LoadedFarm, smtp: &Smtp) -> Result<SmtpBuilder, String> {
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, Tokio1Executor};
    let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.server);
    if smtp.security == SmtpSecurity::None {
        return Ok(builder.tls(Tls::None));
    }
    let mut params = TlsParameters::builder(smtp.server.clone());
    if let Some(file) = &smtp.ca_file {
        let path = farm.resolve(file);
        let pem = std::fs::read(&path).map_err(|e| format!("[smtp] ca_file {}: {e}", path.display()))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| format!("[smtp] ca_file {}: {e}", path.display()))?;
        params = params.add_root_certificate(cert);
    }
    let params = params.build_rustls().map_err(|e| e.to_string())?;
    Ok(builder.tls(match smtp.security {
        SmtpSecurity::Tls => Tls::Wrapper(params),
        _ => Tls::Required(params),
    }))
}
