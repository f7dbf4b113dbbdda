//! `kiln bench`'s history phase: does a long history slow the farm down?
//! The same measurements on a fresh database and on one holding `history`
//! finished builds with their steps, spread over 1,400 builders (70
//! components on 20 targets, as a large farm's console shows): throughput,
//! trigger→start latency, the builds API and the console page.

use crate::bench::{one_at_a_time, percentile, submit_and_wait, BenchFarm};
use anyhow::Context;
use kiln_proto::api::BuildRequestBody;
use std::path::Path;
use std::time::{Duration, Instant};

const COMPONENTS: usize = 70;
const TARGETS: usize = 20;
const WORKERS: u32 = 8;

/// The 1,400 builders the console shows, beside the bench's own `noop`.
fn builders_config() -> String {
    let mut cfg = String::new();
    for t in 0..TARGETS {
        cfg.push_str(&format!("\n[[target]]\nname = \"t{t:02}\"\nfamily = \"deb\"\n"));
    }
    let targets: Vec<String> = (0..TARGETS).map(|t| format!("\"t{t:02}\"")).collect();
    for c in 0..COMPONENTS {
        cfg.push_str(&format!(
            "\n[[component]]\nname = \"c{c:02}\"\ntargets = [{}]\nsteps = [ {{ name = \"s\", run = \"true\" }} ]\n",
            targets.join(", ")
        ));
    }
    cfg
}

/// Writes `n` finished builds (a step each) of the 1,400 builders into the
/// farm's database, in requests of 1,000, as years of nightlies leave them.
async fn fill(data_dir: &Path, n: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let url = format!("sqlite://{}?mode=rwc", data_dir.join("kiln.db").display());
    let store = kiln_db::Store::open(&url).await.context("cannot open the bench database")?;
    // Two years back, one build every minute or so.
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000_000;
    let start = now - 2 * 365 * 86_400 * 1_000_000;
    let step = (now - start) / n.max(1) as i64;
    let requests = n.div_ceil(1000);
    store
        .execute_raw(&format!(
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < {requests}) \
             INSERT INTO requests (id, requested_at, requested_by, reason) \
             SELECT i, {start} + (i - 1) * 1000 * {step}, 'nightly', 'history' FROM r"
        ))
        .await?;
    store
        .execute_raw(&format!(
            "WITH RECURSIVE b(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM b WHERE i < {n}) \
             INSERT INTO builds (id, request_id, component, target, state, requested_at, started_at, finished_at, \
             requested_by, worker, attempt, properties) \
             SELECT i, (i - 1) / 1000 + 1, printf('c%02d', i % {COMPONENTS}), printf('t%02d', (i / {COMPONENTS}) % {TARGETS}), \
             CASE WHEN i % 97 = 0 THEN 'failed' ELSE 'succeeded' END, {start} + i * {step}, {start} + i * {step} + 1000000, \
             {start} + i * {step} + 60000000, 'nightly', 'w1', 1, '{{}}' FROM b"
        ))
        .await?;
    store
        .execute_raw(
            "INSERT INTO steps (build_id, idx, name, state, exit_code, started_at, finished_at, log_size) \
             SELECT id, 0, 's', state, CASE WHEN state = 'failed' THEN 2 ELSE 0 END, started_at, finished_at, 4096 \
             FROM builds",
        )
        .await?;
    store.close().await;
    Ok(())
}

/// Median milliseconds of `rounds` GETs of `path`.
async fn get_ms(http: &reqwest::Client, farm: &BenchFarm, path: &str, rounds: usize) -> anyhow::Result<f64> {
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let resp = http.get(format!("{}{path}", farm.url)).bearer_auth(&farm.token).send().await?;
        anyhow::ensure!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.bytes().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(percentile(&times, 0.5))
}

/// One farm's measurements, with `history` builds stored first.
async fn measure(exe: &Path, history: u64, builds: usize, latency_builds: usize) -> anyhow::Result<serde_json::Value> {
    let prepared = BenchFarm::prepare(WORKERS, None, "true", &builders_config())?;
    if history > 0 {
        let t = Instant::now();
        fill(&prepared.dir.path().join("data"), history).await?;
        eprintln!("kiln bench: history of {history} builds stored in {:.1} s", t.elapsed().as_secs_f64());
    }
    let mut farm = prepared.launch(exe).await?;
    // Without the sandbox: what is measured is kiln and its database.
    farm.start_workers(exe, WORKERS, 1, &["--build-user", "root"]).await?;
    let body = BuildRequestBody { components: vec!["noop".into()], ..Default::default() };
    let mut rates = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        submit_and_wait(&farm.client, &body, builds, 16).await?;
        rates.push(builds as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    let mut latency = one_at_a_time(&farm.client, &body, latency_builds).await?;
    latency.sort_by(|a, b| a.total_cmp(b));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let report = serde_json::json!({
        "history_builds": history,
        "builds_per_second": percentile(&rates, 0.5),
        "trigger_to_start_ms_p50": percentile(&latency, 0.5),
        "trigger_to_start_ms_p99": percentile(&latency, 0.99),
        "builds_api_ms": get_ms(&http, &farm, "/api/v1/builds?limit=50", 20).await?,
        "builds_api_one_builder_ms": get_ms(&http, &farm, "/api/v1/builds?component=c07&target=t03&limit=50", 20).await?,
        "console_1400_builders_ms": get_ms(&http, &farm, "/console", 10).await?,
    });
    eprintln!("kiln bench: history {history}: {report}");
    Ok(report)
}

/// Fresh against `history` builds; each figure's ratio (history / fresh;
/// for the rate, fresh / history, so above 1 is always slower).
pub async fn run(exe: &Path, history: u64, builds: usize, latency_builds: usize) -> anyhow::Result<serde_json::Value> {
    let fresh = measure(exe, 0, builds, latency_builds).await?;
    let full = measure(exe, history, builds, latency_builds).await?;
    let ratio = |key: &str, inverse: bool| {
        let (f, h) = (fresh[key].as_f64().unwrap_or(f64::NAN), full[key].as_f64().unwrap_or(f64::NAN));
        if inverse {
            f / h
        } else {
            h / f
        }
    };
    Ok(serde_json::json!({
        "fresh": fresh,
        "with_history": full,
        "slowdown": {
            "builds_per_second": ratio("builds_per_second", true),
            "trigger_to_start_ms_p50": ratio("trigger_to_start_ms_p50", false),
            "trigger_to_start_ms_p99": ratio("trigger_to_start_ms_p99", false),
            "builds_api_ms": ratio("builds_api_ms", false),
            "builds_api_one_builder_ms": ratio("builds_api_one_builder_ms", false),
            "console_1400_builders_ms": ratio("console_1400_builders_ms", false),
        },
    }))
}
