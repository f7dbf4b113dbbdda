//! `/metrics`: what this master counted since it started (builds finished,
//! durations, waits, publishes, database calls, dispatcher passes, bytes
//! received) and gauges read now (queue by target, workers and their
//! slots, the data dir's file system, memory), in Prometheus' text format.
//!
//! Counters are this master's own; with several masters, sum them. The
//! queue gauges are the farm's (every master reports the same): take their
//! `max`.

use crate::shared::Shared;
use kiln_core::metrics::{Exposition, Kind};
use std::collections::BTreeMap;

/// The exposition, rendered now.
pub async fn render(s: &Shared) -> String {
    let stats = s.builder_stats().await;
    let farm = s.farm();
    let counted = s.metrics.snapshot();
    let mut e = Exposition::new();

    e.family("kiln_build_info", Kind::Gauge, "The running kiln's version (always 1).");
    e.sample("kiln_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    e.single(
        "kiln_builders",
        Kind::Gauge,
        "Builders (component x target) in the config.",
        kiln_core::matrix::builders(&farm.cfg).count() as f64,
    );
    e.single(
        "kiln_config_generation",
        Kind::Gauge,
        "Config loads since start (1: none reloaded).",
        s.generation() as f64,
    );
    e.single(
        "kiln_lease_held",
        Kind::Gauge,
        "1 while this master holds its lease.",
        f64::from(u8::from(s.lease_held())),
    );

    e.family(
        "kiln_channel_key_expiry_timestamp_seconds",
        Kind::Gauge,
        "When each channel's signing key expires, in Unix seconds (channels whose key does not expire are absent).",
    );
    for ch in &farm.cfg.channels {
        if let Some(at) = s.key_expiry(&ch.name) {
            e.sample("kiln_channel_key_expiry_timestamp_seconds", &[("channel", &ch.name)], at as f64);
        }
    }

    // The queue, by target: every target of the config, zero or not, so a
    // rate or an alert sees it from the start.
    let mut queue: BTreeMap<&str, (i64, i64)> = farm.cfg.targets.iter().map(|t| (t.name.as_str(), (0, 0))).collect();
    for b in stats.iter() {
        let e = queue.entry(b.target.as_str()).or_default();
        e.0 += b.queued;
        e.1 += b.running;
    }
    e.family("kiln_builds_queued", Kind::Gauge, "Builds waiting to start, by target (the whole farm's).");
    for (target, (queued, _)) in &queue {
        e.sample("kiln_builds_queued", &[("target", target)], *queued as f64);
    }
    e.family("kiln_builds_running", Kind::Gauge, "Builds running or publishing, by target (the whole farm's).");
    for (target, (_, running)) in &queue {
        e.sample("kiln_builds_running", &[("target", target)], *running as f64);
    }

    e.family(
        "kiln_builds_finished_total",
        Kind::Counter,
        "Builds this master finished, by component, target and state.",
    );
    for ((component, target, state), n) in &counted.finished {
        e.sample(
            "kiln_builds_finished_total",
            &[("component", component), ("target", target), ("state", state)],
            *n as f64,
        );
    }
    e.family("kiln_build_duration_seconds", Kind::Histogram, "How long builds ran, from start to end, by target.");
    for (target, h) in &counted.build_seconds {
        e.histogram("kiln_build_duration_seconds", &[("target", target)], h);
    }
    e.family("kiln_queue_wait_seconds", Kind::Histogram, "How long builds waited from request to start, by target.");
    for (target, h) in &counted.wait_seconds {
        e.histogram("kiln_queue_wait_seconds", &[("target", target)], h);
    }
    e.family("kiln_publish_duration_seconds", Kind::Histogram, "Repository changes, by what asked (build, operation).");
    for (kind, h) in &counted.publish_seconds {
        e.histogram("kiln_publish_duration_seconds", &[("kind", kind)], h);
    }
    e.family(
        "kiln_database_call_duration_seconds",
        Kind::Histogram,
        "Database calls on the dispatcher's path, by call.",
    );
    for (call, h) in &counted.database_seconds {
        e.histogram("kiln_database_call_duration_seconds", &[("call", call)], h);
    }
    e.family(
        "kiln_dispatch_pass_duration_seconds",
        Kind::Histogram,
        "One dispatcher pass: take events, record, decide.",
    );
    if let Some(h) = &counted.dispatch_seconds {
        e.histogram("kiln_dispatch_pass_duration_seconds", &[], h);
    }
    e.single(
        "kiln_database_log_syncs_total",
        Kind::Counter,
        "Syncs of SQLite's log made before answering changes; one covers every change committed before it.",
        s.store.log_syncs() as f64,
    );
    e.single("kiln_log_received_bytes_total", Kind::Counter, "Bytes of build output stored.", s.logs.received() as f64);
    e.single(
        "kiln_artifact_received_bytes_total",
        Kind::Counter,
        "Bytes of artifacts received from workers.",
        s.artifacts.received() as f64,
    );

    let workers: Vec<kiln_proto::api::WorkerInfo> = s.workers().values().cloned().collect();
    let connected: Vec<&kiln_proto::api::WorkerInfo> = workers.iter().filter(|w| w.connected).collect();
    e.single("kiln_workers_connected", Kind::Gauge, "Workers connected to this master.", connected.len() as f64);
    e.family("kiln_worker_slots", Kind::Gauge, "Build slots of each connected worker.");
    for w in &connected {
        e.sample("kiln_worker_slots", &[("worker", &w.name)], w.slots as f64);
    }
    e.family("kiln_worker_busy_slots", Kind::Gauge, "Builds each connected worker runs.");
    for w in &connected {
        e.sample("kiln_worker_busy_slots", &[("worker", &w.name)], w.running.len() as f64);
    }

    if let Ok(disk) = super::disk::usage(&farm.data_dir()) {
        e.single("kiln_data_dir_size_bytes", Kind::Gauge, "Size of the data dir's file system.", disk.total as f64);
        e.single(
            "kiln_data_dir_free_bytes",
            Kind::Gauge,
            "Bytes free for kiln on the data dir's file system.",
            disk.free as f64,
        );
    }
    if let Some(rss) = resident_bytes() {
        e.single("process_resident_memory_bytes", Kind::Gauge, "Resident memory of the master.", rss as f64);
    }
    e.finish()
}

/// This process's resident memory, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}
