//! One way out for reporters' HTTP requests and their retries.

use std::time::Duration;

/// Attempts per notification, with 1 s then 2 s between them.
const ATTEMPTS: u32 = 3;

/// Why one attempt to deliver something failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Undelivered(pub String);

/// Sends one HTTP request (a copy, so it can be sent again); any 2xx is success.
pub(crate) async fn send_http(req: Option<reqwest::RequestBuilder>) -> Result<(), Undelivered> {
    let req = req.ok_or_else(|| Undelivered("the request cannot be sent again".into()))?;
    match req.send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(Undelivered(format!("refused: {}", resp.status()))),
        // Without the URL: a webhook's URL may hold its secret.
        Err(e) => Err(Undelivered(e.without_url().to_string())),
    }
}

/// Runs `attempt_once` up to [`ATTEMPTS`] times, 1 s then 2 s apart, until it succeeds.
pub(crate) async fn retry<F, Fut>(name: &str, what: &str, mut attempt_once: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Undelivered>>,
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
