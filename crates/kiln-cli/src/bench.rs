//! `kiln bench`: starts a master and W workers as real processes, submits
//! trivial builds (one `true` step) through the API, and writes what it
//! measured as JSON: throughput, trigger→first-step latency with a free slot
//! and under saturation, and the master's memory.

use anyhow::{bail, Context};
use clap::Args;
use kiln_client::{BuildQuery, Client};
use kiln_proto::api::{Build, BuildRequestBody};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchArgs {
    /// Worker processes (one slot each).
    #[arg(long, default_value_t = 8)]
    pub workers: u32,
    /// Builds submitted at once for the throughput run.
    #[arg(long, default_value_t = 1000)]
    pub builds: usize,
    /// Builds submitted one at a time, each with a free slot, for latency.
    #[arg(long, default_value_t = 200)]
    pub latency_builds: usize,
    /// Throughput rounds; the report gives the median.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Requests in flight while submitting.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Use this PostgreSQL URL instead of the embedded SQLite.
    #[arg(long)]
    pub database: Option<String>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench.json")]
    pub out: PathBuf,
}

pub(crate) struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts bench worker `b{i}` (one slot, target `t`, its token and work
/// dir under `dir`), given the masters' worker ports on this machine.
pub(crate) fn spawn_worker(exe: &Path, dir: &Path, i: u32, worker_ports: &[u16]) -> anyhow::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.arg("worker");
    for port in worker_ports {
        cmd.args(["--master", &format!("127.0.0.1:{port}")]);
    }
    cmd.args(["--name", &format!("b{i}"), "--token-file"])
        .arg(dir.join(format!("secrets/b{i}.token")))
        .args(["--targets", "t", "--slots", "1", "--workdir"])
        .arg(dir.join(format!("work/b{i}")))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start a worker")
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used, itself and its waited-for children.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14-17 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f.get(11..15).map(|v| v.iter().filter_map(|x| x.parse::<u64>().ok()).sum()).unwrap_or(0);
    ticks as f64 / 100.0
}

fn micros(t: &str) -> Option<i128> {
    crate::output::parse_time(t).map(|t| t.unix_timestamp_nanos() / 1000)
}

/// Trigger→first-step-start latency of a build, in milliseconds.
fn latency_ms(b: &Build) -> Option<f64> {
    let start = micros(b.steps.first()?.started_at.as_deref()?)?;
    Some((start - micros(&b.requested_at)?) as f64 / 1000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({
        "count": v.len(),
        "p50": percentile(&v, 0.5),
        "p99": percentile(&v, 0.99),
        "max": v.last().copied().unwrap_or(f64::NAN),
    })
}

fn write_config(dir: &Path, args: &BenchArgs, http: u16, wport: u16) -> anyhow::Result<()> {
    let mut cfg = format!(
        "[master]\nlisten = \"127.0.0.1:{http}\"\nworker_listen = \"127.0.0.1:{wport}\"\ndata_dir = \"data\"\n"
    );
    if let Some(db) = &args.database {
        cfg.push_str(&format!("database = \"{db}\"\n"));
    }
    std::fs::create_dir_all(dir.join("secrets"))?;
    for i in 1..=args.workers {
        cfg.push_str(&format!("\n[[worker]]\nname = \"b{i}\"\ntoken_file = \"secrets/b{i}.token\"\n"));
        std::fs::write(dir.join(format!("secrets/b{i}.token")), format!("bench-token-{i}-{}\n", std::process::id()))?;
    }
    cfg.push_str("\n[[target]]\nname = \"t\"\nfamily = \"deb\"\n");
    cfg.push_str("\n[[component]]\nname = \"noop\"\nsteps = [ { name = \"noop\", run = \"true\" } ]\n");
    std::fs::write(dir.join("farm.toml"), cfg)?;
    Ok(())
}

async fn wait_idle(client: &Client, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let s = client.status().await?;
        if s.builds_queued == 0 && s.builds_running == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("builds did not finish within {within:?}: {} queued, {} running", s.builds_queued, s.builds_running);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the kiln binary")?;
    let dir = tempfile::tempdir()?;
    let (http, wport) = (free_port()?, free_port()?);
    write_config(dir.path(), &args, http, wport)?;
    let mut procs = Procs(Vec::new());
    let master_log = std::fs::File::create(dir.path().join("master.log"))?;
    let master = Command::new(&exe)
        .args(["master", "--allow-root", "--config"])
        .arg(dir.path().join("farm.toml"))
        .stdout(Stdio::null())
        .stderr(master_log)
        .spawn()
        .context("cannot start the master")?;
    let master_pid = master.id();
    procs.0.push(master);
    let url = format!("http://127.0.0.1:{http}");
    let anon = Client::new(&url, None)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while anon.status().await.is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("master.log")).unwrap_or_default();
            bail!("the master did not start:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = std::fs::read_to_string(dir.path().join("data/admin.token"))?.trim().to_string();
    let client = Client::new(&url, Some(token))?;
    for i in 1..=args.workers {
        procs.0.push(spawn_worker(&exe, dir.path(), i, &[wport])?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.status().await?.workers_connected < i64::from(args.workers) {
        if Instant::now() > deadline {
            bail!("the workers did not connect");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = rss_kib(master_pid, "VmRSS:");
    eprintln!("kiln bench: master idle with {} workers: {:.1} MiB RSS", args.workers, rss_idle as f64 / 1024.0);

    let body = BuildRequestBody { components: vec!["noop".into()], ..Default::default() };
    // Latency with a free slot: one build at a time.
    let mut free = Vec::new();
    for _ in 0..args.latency_builds {
        let id = client.create_builds(&body).await?.builds[0].id;
        loop {
            let b = client.build(id).await?;
            if b.state.is_finished() {
                free.extend(latency_ms(&b));
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let free = summary(free);
    eprintln!("kiln bench: trigger→start with a free slot: {free}");

    // Throughput: N builds submitted as fast as the API takes them, in
    // several rounds (a shared 2-core machine is noisy; the median counts).
    let pids: Vec<u32> = procs.0.iter().map(|c| c.id()).collect();
    let mut rounds = Vec::new();
    let mut sat = Vec::new();
    let mut failed = 0;
    for _ in 0..args.rounds.max(1) {
        let first_id = client
            .builds(&BuildQuery { limit: Some(1), ..Default::default() })
            .await?
            .builds
            .first()
            .map_or(0, |b| b.id);
        let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
        let started = Instant::now();
        let mut inflight = tokio::task::JoinSet::new();
        for _ in 0..args.builds {
            if inflight.len() >= args.concurrency {
                if let Some(r) = inflight.join_next().await {
                    r??;
                }
            }
            let c = client.clone();
            let body = body.clone();
            inflight.spawn(async move { c.create_builds(&body).await.map(|_| ()) });
        }
        while let Some(r) = inflight.join_next().await {
            r??;
        }
        let submitted = started.elapsed();
        wait_idle(&client, Duration::from_secs(600)).await?;
        let wall = started.elapsed();
        let cpu: Vec<f64> = pids.iter().zip(&cpu_before).map(|(p, b)| cpu_seconds(*p) - b).collect();
        let mut before = None;
        loop {
            let page = client.builds(&BuildQuery { limit: Some(1000), before, ..Default::default() }).await?;
            for b in page.builds.iter().filter(|b| b.id > first_id) {
                if b.state != kiln_core::BuildState::Succeeded {
                    failed += 1;
                }
                sat.extend(latency_ms(b));
            }
            match page.next_before {
                Some(n) if n > first_id => before = Some(n),
                _ => break,
            }
        }
        let round = serde_json::json!({
            "builds_per_second": args.builds as f64 / wall.as_secs_f64(),
            "submit_seconds": submitted.as_secs_f64(),
            "wall_seconds": wall.as_secs_f64(),
            "master_cpu_ms_per_build": cpu[0] * 1000.0 / args.builds as f64,
            "workers_cpu_ms_per_build": cpu[1..].iter().sum::<f64>() * 1000.0 / args.builds as f64,
        });
        eprintln!("kiln bench: round: {round}");
        rounds.push(round);
    }
    let rss_peak = rss_kib(master_pid, "VmHWM:");
    let median = |key: &str| {
        let mut v: Vec<f64> = rounds.iter().filter_map(|r| r[key].as_f64()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let waiting = waiting_pass_ms();
    let report = serde_json::json!({
        "waiting_pass_ms_10000_queued_1400_builders": waiting,
        "workers": args.workers,
        "builds_per_round": args.builds,
        "database": if args.database.is_some() { "postgresql" } else { "sqlite" },
        "failed": failed,
        "builds_per_second": median("builds_per_second"),
        "master_cpu_ms_per_build": median("master_cpu_ms_per_build"),
        "workers_cpu_ms_per_build": median("workers_cpu_ms_per_build"),
        "trigger_to_start_ms_free_slot": free,
        "trigger_to_start_ms_saturated": summary(sat),
        "master_rss_idle_mib": rss_idle as f64 / 1024.0,
        "master_rss_peak_mib": rss_peak as f64 / 1024.0,
        "rounds": rounds,
    });
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.out, &text).with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("{text}");
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The dispatcher's pass over a queue it cannot start: the dispatch order
/// (`kiln_core::schedule::dispatch_order`: priorities, requests taking
/// turns) and why each build waits (`why_waiting`, with estimated starts),
/// over 10,000 queued builds of 70 components on 20 targets (1,400
/// builders) from 50 requests at three priorities, every fifth waiting for
/// a dependency, ten workers with every slot busy: the median of 21 passes, ms.
fn waiting_pass_ms() -> f64 {
    use kiln_core::schedule::{dispatch_order, why_waiting, FarmView, InLine, QueuedView, WorkerLoad};
    use std::time::Duration;
    let targets: Vec<String> = (0..20).map(|i| format!("target-{i:02}")).collect();
    let labels: Vec<String> = (0..70).map(|c| format!("component-{c:02}@{}", targets[c % 20])).collect();
    let served: Vec<Vec<String>> = (0..10).map(|w| vec![targets[2 * w].clone(), targets[2 * w + 1].clone()]).collect();
    let names: Vec<String> = (0..10).map(|w| format!("w{w}")).collect();
    let workers: Vec<WorkerLoad<'_>> = (0..10)
        .map(|w| WorkerLoad { name: &names[w], targets: &served[w], slots: 4, running: 4, drained: false })
        .collect();
    let farm = FarmView {
        away: Vec::new(),
        typical: targets.iter().map(|t| (t.as_str(), Duration::from_secs(300))).collect(),
        remaining: names.iter().map(|n| (n.as_str(), vec![Some(Duration::from_secs(60)); 4])).collect(),
    };
    let line: Vec<InLine> = (0..10_000)
        .map(|i| InLine { id: i as i64, priority: (i % 3) as i64, request: (i % 50) as i64, dispatched: 0 })
        .collect();
    let mut times: Vec<f64> = (0..21)
        .map(|_| {
            let t = std::time::Instant::now();
            let order = dispatch_order(&line);
            let queue: Vec<QueuedView<'_>> = order
                .iter()
                .map(|&id| {
                    let i = id as usize;
                    QueuedView {
                        target: &targets[i % 20],
                        priority: (i % 3) as i64,
                        unfinished_dependency: i.is_multiple_of(5).then(|| (id, labels[i % 70].as_str())),
                        held: None,
                    }
                })
                .collect();
            let why = why_waiting(&queue, &workers, &farm);
            std::hint::black_box(why);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}
