//! Mail notifications over SMTP (lettre), with the failing step's log tail.

use super::outbound::{retry, Undelivered};
use crate::shared::Shared;
use kiln_core::config::{Notifier, Smtp, SmtpSecurity};
use kiln_core::{BuildState, StepState};
use kiln_db::BuildRow;
use std::time::Duration;

/// Log lines of the failing step quoted in a mail.
const LOG_LINES: usize = 30;

/// The mail address of whoever asked for the build: the pusher of a change,
/// else the requester when that is an address.
pub(super) fn requester_address(b: &BuildRow) -> Option<String> {
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

pub(super) async fn send(
    shared: &Shared,
    n: &Notifier,
    smtp: &Smtp,
    to: &[String],
    b: &BuildRow,
    outcome: &str,
    link: &str,
) {
    let subject = format!("kiln: {} on {} {} (build {})", b.component, b.target, outcome, b.id);
    let mut body = format!("{} on {}: {}\n\n", b.component, b.target, outcome);
    if let Some(r) = &b.reason {
        body.push_str(&format!("Reason: {r}\n"));
    }
    for key in ["version", "revision", "got_revision", "branch", "changed_by"] {
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
    deliver(shared, &n.name, smtp, to, &subject, body).await;
}

/// Sends one plain-text mail through `[smtp]` to `to` (addresses that do
/// not parse are skipped and logged), retrying as every notification does.
/// `who` names the sender in the logs (a notifier, the incoming directory).
pub(crate) async fn deliver(shared: &Shared, who: &str, smtp: &Smtp, to: &[String], subject: &str, body: String) {
    use lettre::message::{header::ContentType, Mailbox};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::AsyncTransport;
    use lettre::Message;

    let farm = shared.farm();
    let from: Mailbox = match smtp.from.parse() {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "[smtp] from is not a mail address");
            return;
        }
    };
    let mut builder = Message::builder().from(from).subject(subject);
    let mut anyone = false;
    for addr in to {
        match addr.parse::<Mailbox>() {
            Ok(m) => {
                builder = builder.to(m);
                anyone = true;
            }
            Err(e) => tracing::warn!(notifier = %who, address = %addr, error = %e, "not a mail address; skipped"),
        }
    }
    if !anyone {
        return;
    }
    let message = match builder.header(ContentType::TEXT_PLAIN).body(body) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(notifier = %who, error = %e, "cannot compose the mail");
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
            tracing::error!(notifier = %who, error = %e, "cannot set up SMTP");
            return;
        }
    };
    retry(who, "mail", || {
        let (t, m) = (transport.clone(), message.clone());
        async move { t.send(m).await.map(|_| ()).map_err(|e| Undelivered(e.to_string())) }
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
