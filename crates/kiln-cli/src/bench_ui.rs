//! `kiln bench-ui`: how long the master takes to render its pages and
//! `/metrics` for a big farm — 70 components × 20 targets (1,400
//! builders), 100 workers connected, the console's 50 newest requests each
//! with a build on every builder, 100,000 builds in history (each with a
//! log), and a package of every builder in dev and in stable (the packages
//! page) — then how long a garbage collection over that history takes and
//! the master's peak memory while it runs. Writes JSON.

use anyhow::Context;
use clap::Args;
use kiln_db::{NewBuild, Store};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct BenchUiArgs {
    #[arg(long, default_value_t = 70)]
    pub components: usize,
    #[arg(long, default_value_t = 20)]
    pub targets: usize,
    /// Builds in history (the newest 50 requests cover every builder).
    #[arg(long, default_value_t = 100_000)]
    pub builds: usize,
    /// Requests of each page; the report gives median and p95.
    #[arg(long, default_value_t = 30)]
    pub samples: usize,
    /// Workers connected (worker loops in this process).
    #[arg(long, default_value_t = 100)]
    pub workers: usize,
    /// `[retention] keep_last` for the garbage collection at the end.
    #[arg(long, default_value_t = 20)]
    pub keep_last: u32,
    #[arg(long, default_value = "bench-ui")]
    pub dir: PathBuf,
    #[arg(long, default_value = "bench-ui.json")]
    pub out: PathBuf,
}

/// A `kB` field of `/proc/self/status` (resident memory now, its peak).
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

pub async fn run(args: BenchUiArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("secrets"))?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let wlisten = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut config = format!(
        "[master]\nlisten = \"{listen}\"\nworker_listen = \"{wlisten}\"\n\n[retention]\nkeep_last = {}\nmax_age = \"forever\"\ndaily_at = \"off\"\n",
        args.keep_last
    );
    let workers: Vec<String> = (1..=args.workers.max(1)).map(|i| format!("w{i}")).collect();
    for w in &workers {
        let token = dir.join(format!("secrets/{w}.token"));
        std::fs::write(&token, format!("bench-token-{w}\n"))?;
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        config.push_str(&format!("\n[[worker]]\nname = \"{w}\"\ntoken_file = \"secrets/{w}.token\"\n"));
    }
    let targets: Vec<String> = (0..args.targets).map(|i| format!("target-{i:02}")).collect();
    let components: Vec<String> = (0..args.components).map(|i| format!("component-{i:02}")).collect();
    for t in &targets {
        config.push_str(&format!("\n[[target]]\nname = \"{t}\"\nfamily = \"deb\"\nsuite = \"bookworm\"\n"));
    }
    for c in &components {
        config.push_str(&format!("\n[[component]]\nname = \"{c}\"\nsteps = [ {{ name = \"s\", run = \"true\" }} ]\n"));
    }
    let config_path = dir.join("farm.toml");
    std::fs::write(&config_path, config)?;
    let farm = kiln_master::farm::LoadedFarm::load(&config_path)?;
    std::fs::create_dir_all(farm.data_dir())?;

    // History: old requests of 1,000 builds, then 50 requests covering every builder.
    let store = Store::open(&farm.database_url()).await.context("cannot open the database")?;
    let builders: Vec<(String, String)> =
        components.iter().flat_map(|c| targets.iter().map(move |t| (c.clone(), t.clone()))).collect();
    let recent = 50 * builders.len();
    let mut old = args.builds.saturating_sub(recent);
    let t0 = Instant::now();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000_000;
    let new_build = |(c, t): &(String, String)| NewBuild {
        component: c.clone(),
        target: t.clone(),
        properties: Default::default(),
        depends_on: vec![],
    };
    while old > 0 {
        let n = old.min(1000);
        let builds: Vec<NewBuild> = builders.iter().cycle().take(n).map(new_build).collect();
        store.create_request(now, Some("bench"), Some("history"), &builds).await?;
        old -= n;
    }
    for _ in 0..50 {
        let builds: Vec<NewBuild> = builders.iter().map(new_build).collect();
        store.create_request(now, Some("bench"), Some("nightly"), &builds).await?;
    }
    store
        .execute_raw(
            "UPDATE builds SET state = CASE WHEN id % 97 = 0 THEN 'failed' WHEN id % 89 = 0 THEN 'cancelled' \
             ELSE 'succeeded' END, started_at = requested_at, finished_at = requested_at",
        )
        .await?;
    // What the packages page shows: each builder's newest build in dev and
    // the one before it in stable.
    let first_of_last = (args.builds.max(recent) - builders.len() + 1) as i64;
    for (channel, first) in [("dev", first_of_last), ("stable", first_of_last - builders.len() as i64)] {
        let rows: Vec<kiln_db::PackageRow> = builders
            .iter()
            .enumerate()
            .map(|(i, (c, _))| {
                let build = first + i as i64;
                let version = format!("1.0-1+nightly.{build}");
                let entry = kiln_repo::deb::DebEntry {
                    name: c.clone(),
                    version: version.clone(),
                    arch: "all".into(),
                    source: c.clone(),
                    stanza: format!("Package: {c}\nVersion: {version}\nArchitecture: all"),
                };
                kiln_db::PackageRow {
                    id: 0,
                    channel: channel.into(),
                    repo: "apt:bookworm".into(),
                    kind: "deb".into(),
                    name: c.clone(),
                    version,
                    arch: "all".into(),
                    file: format!("pool/apt/main/c/{c}/{c}_{build}_all.deb"),
                    sha256: "0".repeat(64),
                    size: 1,
                    build_id: Some(build),
                    entry: serde_json::to_string(&entry).unwrap_or_default(),
                    published_at: now,
                }
            })
            .collect();
        store.change_channel(channel, &rows, &[]).await?;
    }
    store.close().await;
    // Each build's log, as a finished build leaves one.
    let logs = farm.data_dir().join("logs");
    for id in 1..=args.builds.max(recent) {
        let d = logs.join(id.to_string());
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("0.log"), "a line of build output\n")?;
    }
    eprintln!(
        "kiln bench-ui: {} builds over {} builders stored in {:.1} s",
        args.builds.max(recent),
        builders.len(),
        t0.elapsed().as_secs_f64()
    );

    let master = kiln_master::start(&config_path).await?;
    let base = format!("http://{}", master.http_addr);
    let http = reqwest::Client::new();
    let mut loops = tokio::task::JoinSet::new();
    for w in &workers {
        let opts = kiln_worker::WorkerOptions::in_process(
            master.worker_addr.to_string(),
            w.clone(),
            format!("bench-token-{w}"),
            targets.clone(),
            2,
            dir.join("workers").join(w),
        );
        loops.spawn(kiln_worker::run(opts));
    }
    let client = kiln_client::Client::new(&base, Some(master.admin_token.clone()))?;
    let mut connected = 0;
    for _ in 0..600 {
        connected = client.status().await?.workers_connected;
        if connected as usize == workers.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::ensure!(connected as usize == workers.len(), "only {connected} of {} workers connected", workers.len());
    // One build of every builder runs, so `/metrics` counts a finished
    // build, a duration and a wait on each.
    let t = Instant::now();
    let body = kiln_proto::api::BuildRequestBody { all: true, all_targets: true, ..Default::default() };
    let ids: Vec<i64> = client.create_builds(&body).await?.builds.iter().map(|b| b.id).collect();
    let last = *ids.iter().max().unwrap_or(&0);
    for _ in 0..1200 {
        let b = client.build(last).await?;
        let q = client.status().await?;
        if b.state.is_finished() && q.builds_queued == 0 && q.builds_running == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let every_builder_built_s = t.elapsed().as_secs_f64();
    let mut report = serde_json::Map::new();
    report.insert("builders".into(), json!(builders.len()));
    report.insert("builds".into(), json!(args.builds.max(recent)));
    let last_build = args.builds.max(recent);
    for (name, path) in [
        ("console", "/".to_string()),
        ("console_one_target", format!("/?target={}", targets[0])),
        ("console_by_component", "/?group=component".to_string()),
        ("console_every_builder", "/?expand=1".to_string()),
        ("builders", "/builders".to_string()),
        ("builder", format!("/builders/{}/{}", components[0], targets[0])),
        ("build", format!("/builds/{last_build}")),
        ("workers", "/workers".to_string()),
        ("packages", "/packages".to_string()),
        ("metrics", "/metrics".to_string()),
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..args.samples.max(1) {
            let t = Instant::now();
            let r = http.get(format!("{base}{path}")).send().await?;
            anyhow::ensure!(r.status().is_success(), "GET {path}: {}", r.status());
            bytes = r.bytes().await?.len();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        report.insert(
            name.into(),
            json!({ "path": path, "median_ms": percentile(times.clone(), 0.5), "p95_ms": percentile(times, 0.95), "bytes": bytes }),
        );
    }
    report.insert("workers_connected".into(), json!(connected));
    report.insert("every_builder_built_s".into(), json!(every_builder_built_s));

    // A garbage collection over the history: the time it takes, and the
    // process's peak memory while it runs (the peak is reset first).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = proc_status_kib("VmRSS");
    let t = Instant::now();
    let gc = client.gc(false).await?;
    let wall_ms = t.elapsed().as_secs_f64() * 1000.0;
    let freed: u64 = gc.freed.iter().map(|f| f.bytes).sum();
    report.insert(
        "gc".into(),
        json!({
            "keep_last": args.keep_last,
            "builds_pruned": gc.builds_pruned,
            "bytes_freed": freed,
            "took_ms": gc.took_ms,
            "wall_ms": wall_ms,
            "rss_before_kib": rss_before,
            "peak_rss_kib": proc_status_kib("VmHWM"),
        }),
    );
    loops.abort_all();
    master.shutdown().await;
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(report))?;
    let mut f = std::fs::File::create(&args.out).with_context(|| format!("cannot write {}", args.out.display()))?;
    writeln!(f, "{text}")?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}
