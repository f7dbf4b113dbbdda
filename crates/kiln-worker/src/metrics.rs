//! `kiln worker --metrics ADDR`: the worker's own `/metrics` for
//! Prometheus: step durations by step name and result, builds running,
//! slots, and each cache entry's size and age ([`crate::caches`]).
//!
//! A small HTTP/1.1 answerer, not a web framework: it serves one path to
//! a scraper on a trusted address (bind it to loopback or the monitoring
//! network), reads at most one request head per connection, and times out.

use crate::caches::{self, CacheDir};
use kiln_core::metrics::{Exposition, Histogram, Kind, SECONDS_BUCKETS};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Measuring the caches walks their files: not more often than this.
const CENSUS_EVERY: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 8192;
/// Scrapes answered at once; more wait their turn.
const MAX_CONNECTIONS: usize = 8;

#[derive(Default)]
pub struct StepMetrics {
    /// Step durations by (step name, state).
    steps: Mutex<BTreeMap<(String, String), Histogram>>,
}

impl StepMetrics {
    pub fn step_finished(&self, name: &str, state: &str, took: Duration) {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        steps
            .entry((name.to_string(), state.to_string()))
            .or_insert_with(|| Histogram::new(SECONDS_BUCKETS))
            .observe(took.as_secs_f64());
    }

    fn snapshot(&self) -> BTreeMap<(String, String), Histogram> {
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The caches as last measured, and when.
type Census = tokio::sync::Mutex<Option<(Instant, Vec<caches::Entry>)>>;

/// What a scrape reads besides the step timings.
pub struct Gauges {
    pub slots: u32,
    pub running: Box<dyn Fn() -> usize + Send + Sync>,
    pub caches: Vec<CacheDir>,
}

/// Serves `/metrics` on `listener` until the worker ends.
pub async fn serve(listener: TcpListener, steps: Arc<StepMetrics>, gauges: Arc<Gauges>) {
    let census: Arc<Census> = Default::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (steps, gauges, census) = (steps.clone(), gauges.clone(), census.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let answered = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                let ended = |h: &[u8]| h.windows(4).any(|w| w == b"\r\n\r\n") || h.windows(2).any(|w| w == b"\n\n");
                while !ended(&head) && head.len() < MAX_HEAD {
                    let n = conn.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let line = head.split(|b| *b == b'\r' || *b == b'\n').next().unwrap_or_default();
                let (status, body) = if line.starts_with(b"GET /metrics ") {
                    ("200 OK", render(&steps, &gauges, &census).await)
                } else {
                    ("404 Not Found", "only /metrics is served here\n".to_string())
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(answer.as_bytes()).await?;
                conn.shutdown().await
            })
            .await;
            if let Ok(Err(e)) = answered {
                tracing::debug!(error = %e, "a metrics request failed");
            }
        });
    }
}

async fn render(steps: &StepMetrics, gauges: &Gauges, census: &Census) -> String {
    let entries = {
        let mut held = census.lock().await;
        match held.as_ref() {
            Some((at, entries)) if at.elapsed() < CENSUS_EVERY => entries.clone(),
            _ => {
                let dirs = gauges.caches.clone();
                let entries = tokio::task::spawn_blocking(move || caches::census(&dirs, SystemTime::now()))
                    .await
                    .unwrap_or_default();
                *held = Some((Instant::now(), entries.clone()));
                entries
            }
        }
    };
    let mut e = Exposition::new();
    e.single("kiln_worker_build_slots", Kind::Gauge, "Builds this worker runs at once.", f64::from(gauges.slots));
    e.single("kiln_worker_builds_running", Kind::Gauge, "Builds running on this worker.", (gauges.running)() as f64);
    e.family("kiln_worker_step_duration_seconds", Kind::Histogram, "How long build steps ran, by step and result.");
    for ((step, state), h) in &steps.snapshot() {
        e.histogram("kiln_worker_step_duration_seconds", &[("step", step), ("state", state)], h);
    }
    e.family("kiln_worker_cache_bytes", Kind::Gauge, "Bytes of each cache entry (build roots, mirrors).");
    for c in &entries {
        e.sample("kiln_worker_cache_bytes", &[("kind", c.kind), ("entry", &c.key)], c.bytes as f64);
    }
    e.family("kiln_worker_cache_age_seconds", Kind::Gauge, "Since each cache entry was made (a root: its tarball).");
    for c in &entries {
        e.sample("kiln_worker_cache_age_seconds", &[("kind", c.kind), ("entry", &c.key)], c.age.as_secs_f64());
    }
    e.family("kiln_worker_cache_unused_seconds", Kind::Gauge, "Since each cache entry was last used.");
    for c in &entries {
        e.sample("kiln_worker_cache_unused_seconds", &[("kind", c.kind), ("entry", &c.key)], c.unused.as_secs_f64());
    }
    e.finish()
}
