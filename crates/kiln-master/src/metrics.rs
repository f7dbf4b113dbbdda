//! What the master counts for `/metrics` while it runs: builds finished,
//! their durations and queue waits, publishes, database calls and
//! dispatcher passes. Gauges (queue, workers, disk) are read at scrape
//! time by [`crate::ops::metrics`]; this holds only what must be counted as
//! it happens. Every label is a component, target, state, channel or call
//! name, never a build id: the label sets stay bounded by the config.

use kiln_core::metrics::{Histogram, SECONDS_BUCKETS};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Counted>,
}

/// The counters and histograms, as a scrape reads them.
#[derive(Clone, Default)]
pub struct Counted {
    /// Builds finished by (component, target, state).
    pub finished: BTreeMap<(String, String, String), u64>,
    /// How long builds ran, by target.
    pub build_seconds: BTreeMap<String, Histogram>,
    /// How long builds waited in the queue before starting, by target.
    pub wait_seconds: BTreeMap<String, Histogram>,
    /// Repository changes, by what asked for them (a build, an operation).
    pub publish_seconds: BTreeMap<&'static str, Histogram>,
    /// Database calls on the dispatcher's path, by call.
    pub database_seconds: BTreeMap<&'static str, Histogram>,
    /// One pass of the dispatcher: take events, write them, decide.
    pub dispatch_seconds: Option<Histogram>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counted> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy to render from, so a scrape never holds up the dispatcher.
    pub fn snapshot(&self) -> Counted {
        self.lock().clone()
    }

    /// Counts a build that ended; times are microseconds since the epoch.
    pub fn build_finished(&self, b: &kiln_db::BuildRow) {
        let mut c = self.lock();
        *c.finished.entry((b.component.clone(), b.target.clone(), b.state.as_str().to_string())).or_default() += 1;
        if let Some(started) = b.started_at {
            let wait = (started - b.requested_at).max(0) as f64 / 1e6;
            observe(&mut c.wait_seconds, b.target.clone(), wait);
            if let Some(finished) = b.finished_at {
                let ran = (finished - started).max(0) as f64 / 1e6;
                observe(&mut c.build_seconds, b.target.clone(), ran);
            }
        }
    }

    pub fn published(&self, kind: &'static str, took: Duration) {
        observe(&mut self.lock().publish_seconds, kind, took.as_secs_f64());
    }

    pub fn database_call(&self, call: &'static str, took: Duration) {
        observe(&mut self.lock().database_seconds, call, took.as_secs_f64());
    }

    pub fn dispatch_pass(&self, took: Duration) {
        self.lock().dispatch_seconds.get_or_insert_with(|| Histogram::new(SECONDS_BUCKETS)).observe(took.as_secs_f64());
    }
}

fn observe<K: Ord>(map: &mut BTreeMap<K, Histogram>, key: K, value: f64) {
    map.entry(key).or_insert_with(|| Histogram::new(SECONDS_BUCKETS)).observe(value);
}
