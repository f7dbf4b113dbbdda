//! `kiln bench`'s log phase: many builds printing a lot at once. Reports
//! the master's CPU per MiB of log and its peak memory, checks that every
//! log arrived whole, and follows a few logs live through the API as a
//! user's `kiln log -f` would, to see how far behind the end they finish.

use crate::bench_farm::{cpu_seconds, rss_kib, summary, BenchFarm};
use anyhow::{bail, Context};
use kiln_client::Client;
use kiln_proto::api::BuildRequestBody;
use std::path::Path;
use std::time::{Duration, Instant};

/// Builds of this phase run on this many worker processes.
const WORKERS: u32 = 5;
/// Logs followed live while the builds run.
const FOLLOWED: usize = 5;

/// Follows build `id`'s step log from the start to its end, as a live tail
/// does; returns the bytes read and how long after the build finished the
/// tail reached the end (0 when it was never behind at the end).
async fn follow(client: Client, id: i64) -> anyhow::Result<(u64, f64)> {
    let mut offset = 0;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let chunk = client.log(id, "noop", offset).await?;
        offset = chunk.next_offset;
        if chunk.complete {
            let b = client.build(id).await?;
            let finished = b.steps.first().and_then(|s| s.finished_at.as_deref()).and_then(crate::output::parse_time);
            let behind = finished
                .map(|f| ((time::OffsetDateTime::now_utc() - f).as_seconds_f64() * 1000.0).max(0.0))
                .unwrap_or(f64::NAN);
            return Ok((offset, behind));
        }
        if chunk.data.is_empty() {
            if Instant::now() > deadline {
                bail!("the log of build {id} stopped at {offset} bytes");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `builds` builds at once, each printing `mib` MiB.
pub async fn run(exe: &Path, builds: u32, mib: u64) -> anyhow::Result<serde_json::Value> {
    let bytes = mib * 1024 * 1024;
    // A compiler's kind of line, repeated, cut at exactly `bytes`.
    let run = format!("yes 'cc -O2 -c src/module.c -o build/module.o (a line of build output)' | head -c {bytes}");
    let mut farm = BenchFarm::start(exe, WORKERS, None, &run).await?;
    farm.start_workers(exe, WORKERS, builds.div_ceil(WORKERS), &[]).await?;
    let cpu_before = cpu_seconds(farm.master_pid);
    let started = Instant::now();
    let body = BuildRequestBody { components: vec!["noop".into()], ..Default::default() };
    let mut ids = Vec::new();
    for _ in 0..builds {
        ids.push(farm.client.create_builds(&body).await?.builds[0].id);
    }
    let mut tails = tokio::task::JoinSet::new();
    for id in ids.iter().take(FOLLOWED) {
        tails.spawn(follow(farm.client.clone(), *id));
    }
    let deadline = Instant::now() + Duration::from_secs(1800);
    for id in &ids {
        loop {
            if farm.client.build(*id).await?.state.is_finished() {
                break;
            }
            if Instant::now() > deadline {
                bail!("build {id} did not finish");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(farm.master_pid) - cpu_before;
    let peak = rss_kib(farm.master_pid, "VmHWM:") as f64 / 1024.0;
    let mut behind = Vec::new();
    let mut tails_whole = true;
    while let Some(t) = tails.join_next().await {
        let (read, ms) = t.context("a tail stopped")??;
        tails_whole &= read == bytes;
        behind.push(ms);
    }
    let mut short = Vec::new();
    for id in &ids {
        let b = farm.client.build(*id).await?;
        let size = b.steps.first().map_or(0, |s| s.log_size);
        if b.state != kiln_core::BuildState::Succeeded || size != bytes as i64 {
            short.push(serde_json::json!({ "build": id, "state": b.state.as_str(), "log_size": size }));
        }
    }
    let total_mib = (bytes * u64::from(builds)) as f64 / (1024.0 * 1024.0);
    eprintln!(
        "kiln bench: logs: {builds} builds × {mib} MiB in {wall:.1} s, master {:.2} ms CPU per MiB, peak {peak:.1} MiB",
        cpu * 1000.0 / total_mib
    );
    Ok(serde_json::json!({
        "builds": builds,
        "mib_each": mib,
        "wall_seconds": wall,
        "master_cpu_seconds": cpu,
        "master_cpu_ms_per_mib": cpu * 1000.0 / total_mib,
        "master_rss_peak_mib": peak,
        "logs_not_whole": short,
        "followed": FOLLOWED,
        "followed_logs_whole": tails_whole,
        "tail_behind_at_end_ms": summary(behind),
    }))
}
