//! `kiln bench`'s history phase: does a long history slow the farm down?
//! The same measurements on a young farm's database (ten nightlies of 1,400
//! builders: 70 components on 20 targets, as a large farm's console shows)
//! and on one holding `history` finished builds of the same shape with their
//! steps: throughput, trigger→start latency, the builds API and the console.

use crate::bench_farm::{one_at_a_time, percentile, submit_and_wait, BenchFarm};
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

/// Writes `n` finished builds (a step each) into the farm's database, as
/// years of nightlies leave them: requests of every one of the 1,400
/// builders, oldest first.
async fn fill(data_dir: &Path, n: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let url = format!("sqlite://{}?mode=rwc", data_dir.join("kiln.db").display());
    let store = kiln_db::Store::open(&url).await.context("cannot open the bench database")?;
    let builders = (COMPONENTS * TARGETS) as u64;
    // Two years back, evenly spread.
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000_000;
    let start = now - 2 * 365 * 86_400 * 1_000_000;
    let step = (now - start) / n.max(1) as i64;
    let requests = n.div_ceil(builders);
    store
        .execute_raw(&format!(
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < {requests}) \
             INSERT INTO requests (id, requested_at, requested_by, reason) \
             SELECT i, {start} + (i - 1) * {builders} * {step}, 'nightly', 'history' FROM r"
        ))
        .await?;
    store
        .execute_raw(&format!(
            "WITH RECURSIVE b(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM b WHERE i < {n}) \
             INSERT INTO builds (id, request_id, component, target, state, requested_at, started_at, finished_at, \
             requested_by, worker, attempt, properties) \
             SELECT i, (i - 1) / {builders} + 1, printf('c%02d', ((i - 1) % {builders}) / {TARGETS}), \
             printf('t%02d', (i - 1) % {TARGETS}), CASE WHEN i % 97 = 0 THEN 'failed' ELSE 'succeeded' END, \
             {start} + i * {step}, {start} + i * {step} + 1000000, {start} + i * {step} + 60000000, 'nightly', 'w1', 1, \
             '{{}}' FROM b"
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

/// A farm with `history` builds stored before its master started, and its
/// workers connected.
async fn farm_with(exe: &Path, history: u64) -> anyhow::Result<BenchFarm> {
    let prepared = BenchFarm::prepare(WORKERS, None, "true", &builders_config())?;
    let t = Instant::now();
    fill(&prepared.dir.path().join("data"), history).await?;
    eprintln!("kiln bench: history of {history} builds stored in {:.1} s", t.elapsed().as_secs_f64());
    let mut farm = prepared.launch(exe).await?;
    // Without the sandbox: what is measured is kiln and its database.
    farm.start_workers(exe, WORKERS, 1, &["--build-user", "root"]).await?;
    Ok(farm)
}

#[derive(Default)]
struct Figures {
    rates: Vec<f64>,
    latency: Vec<f64>,
    builds_api: Vec<f64>,
    one_builder: Vec<f64>,
    console: Vec<f64>,
}

impl Figures {
    fn report(&mut self, history: u64) -> serde_json::Value {
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            percentile(v, 0.5)
        };
        self.latency.sort_by(|a, b| a.total_cmp(b));
        serde_json::json!({
            "history_builds": history,
            "builds_per_second": median(&mut self.rates),
            "trigger_to_start_ms_p50": percentile(&self.latency, 0.5),
            "trigger_to_start_ms_p99": percentile(&self.latency, 0.99),
            "builds_api_ms": median(&mut self.builds_api),
            "builds_api_one_builder_ms": median(&mut self.one_builder),
            "console_1400_builders_ms": median(&mut self.console),
        })
    }
}

/// Milliseconds of one GET of `path`.
async fn get_ms(http: &reqwest::Client, farm: &BenchFarm, path: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let resp = http.get(format!("{}{path}", farm.url)).bearer_auth(&farm.token).send().await?;
    anyhow::ensure!(resp.status().is_success(), "GET {path}: {}", resp.status());
    resp.bytes().await?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// A young farm (ten nightlies of the 1,400 builders) against one with
/// `history` builds of the same shape: the pages and answers hold the same
/// rows, only the history behind them differs. Both run side by side and
/// are measured in turns, so a shared machine's drift falls on both alike.
/// Each figure's ratio is history / young (for the rate young / history),
/// so above 1 is slower.
pub async fn run(exe: &Path, history: u64, builds: usize, latency_builds: usize) -> anyhow::Result<serde_json::Value> {
    let young_builds = 10 * (COMPONENTS * TARGETS) as u64;
    let farms = [farm_with(exe, young_builds).await?, farm_with(exe, history).await?];
    let mut figures = [Figures::default(), Figures::default()];
    let body = BuildRequestBody { components: vec!["noop".into()], ..Default::default() };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let paths = ["/api/v1/builds?limit=50", "/api/v1/builds?component=c07&target=t03&limit=10", "/console"];
    for _ in 0..5 {
        for (farm, f) in farms.iter().zip(&mut figures) {
            let t = Instant::now();
            submit_and_wait(&farm.client, &body, builds, 16).await?;
            f.rates.push(builds as f64 / t.elapsed().as_secs_f64());
            // `latency_builds` a turn, five times as many in all: a p99 of
            // 200 rests on two values, one hiccup apart.
            f.latency.extend(one_at_a_time(&farm.client, &body, latency_builds).await?.start);
            // Each page takes a millisecond or two: enough of them that a
            // shared machine's hiccups do not make a 10 % difference.
            for _ in 0..20 {
                f.builds_api.push(get_ms(&http, farm, paths[0]).await?);
                f.one_builder.push(get_ms(&http, farm, paths[1]).await?);
                f.console.push(get_ms(&http, farm, paths[2]).await?);
            }
        }
    }
    let [young, full] = [figures[0].report(young_builds), figures[1].report(history)];
    eprintln!("kiln bench: history: young {young}\nkiln bench: history: {history} builds {full}");
    let ratio = |key: &str, inverse: bool| {
        let (f, h) = (young[key].as_f64().unwrap_or(f64::NAN), full[key].as_f64().unwrap_or(f64::NAN));
        if inverse {
            f / h
        } else {
            h / f
        }
    };
    Ok(serde_json::json!({
        "young": young,
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
