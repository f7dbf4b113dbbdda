//! `kiln bench`: starts a master and W workers as real processes, submits
//! trivial builds (one `true` step) through the API, and writes what it
//! measured as JSON: throughput, trigger→first-step latency with a free slot
//! and under saturation, and the master's memory.

use crate::bench_farm::{
    cpu_seconds, latency_ms, log_syncs, one_at_a_time, rss_by_mapping, rss_kib, submit_and_wait, summary, BenchFarm,
};
use anyhow::Context;
use clap::Args;
use kiln_client::BuildQuery;
use kiln_proto::api::BuildRequestBody;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
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
    /// Then a master with this many workers connected (0: skip): its memory
    /// and dispatch latency.
    #[arg(long, default_value_t = 1000)]
    pub connections: u32,
    /// Then this many builds at once, each printing `--log-mib` MiB (0: skip).
    #[arg(long, default_value_t = 50)]
    pub log_builds: u32,
    /// MiB of output each of the `--log-builds` builds prints.
    #[arg(long, default_value_t = 20)]
    pub log_mib: u64,
    /// Then the same farm fresh and with this many finished builds stored
    /// (0: skip), to see what a long history costs.
    #[arg(long, default_value_t = 1_000_000)]
    pub history: u64,
    /// Root workers run steps as root without the sandbox (what kiln costs
    /// apart from it), instead of sandboxed as `nobody` as deployed.
    #[arg(long)]
    pub unsandboxed: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the kiln binary")?;
    let dir = tempfile::tempdir()?;
    // Measured first, on the machine as idle as the bench finds it.
    let ceilings = tokio::task::block_in_place(|| spawn_ceilings(args.workers, dir.path()))?;
    let mut farm = BenchFarm::start(&exe, args.workers, args.database.as_deref(), "true").await?;
    // As deployed, a root worker runs each step sandboxed as `nobody`;
    // `--unsandboxed` shows what kiln itself costs without the sandbox.
    let extra: &[&str] = if args.unsandboxed { &["--build-user", "root"] } else { &[] };
    farm.start_workers(&exe, args.workers, 1, extra).await?;
    let (client, url, token, master_pid) = (farm.client.clone(), farm.url.clone(), farm.token.clone(), farm.master_pid);
    let http = reqwest::Client::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = rss_kib(master_pid, "VmRSS:");
    // What the resident memory is: the master's own (heap, stacks) and the
    // pages of the binary and libraries it has touched (shared with any
    // other process running them, and given back first under pressure).
    let (rss_anon, rss_file) = (rss_kib(master_pid, "RssAnon:"), rss_kib(master_pid, "RssFile:"));
    let idle_by_mapping = rss_by_mapping(master_pid);
    eprintln!(
        "kiln bench: master idle with {} workers: {:.1} MiB RSS ({:.1} MiB its own, {:.1} MiB mapped files)",
        args.workers,
        rss_idle as f64 / 1024.0,
        rss_anon as f64 / 1024.0,
        rss_file as f64 / 1024.0
    );
    eprintln!("kiln bench: master idle, by mapping: {idle_by_mapping}");

    let body = BuildRequestBody { components: vec!["noop".into()], ..Default::default() };
    // Latency with a free slot: one build at a time.
    let one_by_one = one_at_a_time(&client, &body, args.latency_builds).await?;
    let (free, free_claim) = (summary(one_by_one.start), summary(one_by_one.claim));
    eprintln!("kiln bench: trigger→start with a free slot: {free} (of it trigger→claimed: {free_claim})");

    // Throughput: N builds submitted as fast as the API takes them, in
    // several rounds (a shared 2-core machine is noisy; the median counts).
    let pids: Vec<u32> = farm.procs.0.iter().map(|c| c.id()).collect();
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
        let syncs_before = log_syncs(&http, &url, &token).await?;
        let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
        let started = Instant::now();
        let submitted = submit_and_wait(&client, &body, args.builds, args.concurrency).await?;
        let wall = started.elapsed();
        let cpu: Vec<f64> = pids.iter().zip(&cpu_before).map(|(p, b)| cpu_seconds(*p) - b).collect();
        let syncs = log_syncs(&http, &url, &token).await? - syncs_before;
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
            // Requests answered per sync of the database's log (group commit).
            "log_syncs": syncs,
            "requests_per_log_sync": if syncs > 0.0 { args.builds as f64 / syncs } else { f64::NAN },
        });
        eprintln!("kiln bench: round: {round}");
        rounds.push(round);
    }
    let rss_peak = rss_kib(master_pid, "VmHWM:");
    drop(farm);
    let many = match args.connections {
        0 => serde_json::Value::Null,
        n => many_workers(&exe, n, args.latency_builds).await?,
    };
    let history = match args.history {
        0 => serde_json::Value::Null,
        n => crate::bench_history::run(&exe, n, args.builds, args.latency_builds).await?,
    };
    let logs = match args.log_builds {
        0 => serde_json::Value::Null,
        n => crate::bench_logs::run(&exe, n, args.log_mib).await?,
    };
    let median = |key: &str| {
        let mut v: Vec<f64> = rounds.iter().filter_map(|r| r[key].as_f64()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let waiting = waiting_pass_ms();
    let report = serde_json::json!({
        "waiting_pass_ms_10000_queued_1400_builders": waiting,
        "workers": args.workers,
        "sandboxed_steps": !args.unsandboxed,
        "builds_per_round": args.builds,
        "database": if args.database.is_some() { "postgresql" } else { "sqlite" },
        "failed": failed,
        "builds_per_second": median("builds_per_second"),
        "spawn_ceilings": ceilings,
        "ratio_to_spawn_ceiling": median("builds_per_second") / ceilings["sh_c_true_per_second"].as_f64().unwrap_or(f64::NAN),
        "ratio_to_sandboxed_ceiling": median("builds_per_second") / ceilings["sandboxed_step_per_second"].as_f64().unwrap_or(f64::NAN),
        // The most any sandbox with these namespaces could reach.
        "namespaces_only_ratio_to_spawn_ceiling": ceilings["namespaces_only_per_second"].as_f64().unwrap_or(f64::NAN) / ceilings["sh_c_true_per_second"].as_f64().unwrap_or(f64::NAN),
        "requests_per_log_sync": median("requests_per_log_sync"),
        "master_cpu_ms_per_build": median("master_cpu_ms_per_build"),
        "workers_cpu_ms_per_build": median("workers_cpu_ms_per_build"),
        "trigger_to_start_ms_free_slot": free,
        // The part of it before the master claimed the build for a worker.
        "trigger_to_claim_ms_free_slot": free_claim,
        "trigger_to_start_ms_saturated": summary(sat),
        "master_rss_idle_mib": rss_idle as f64 / 1024.0,
        "master_rss_idle_anon_mib": rss_anon as f64 / 1024.0,
        "master_rss_idle_file_mib": rss_file as f64 / 1024.0,
        "master_rss_idle_by_mapping": idle_by_mapping,
        "master_rss_peak_mib": rss_peak as f64 / 1024.0,
        "rounds": rounds,
        "many_workers": many,
        "logs": logs,
        "history": history,
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

/// Commands started and waited for per second, from `threads` threads
/// together, `total` in all: the machine's ceiling for what a worker runs
/// per build.
fn spawn_rate(threads: u32, total: u32, make: &(dyn Fn() -> Command + Sync)) -> anyhow::Result<f64> {
    let per = total.div_ceil(threads.max(1));
    let started = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let runs: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(move || -> anyhow::Result<()> {
                    for _ in 0..per {
                        let status =
                            make().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
                        anyhow::ensure!(status.success(), "the command failed: {status}");
                    }
                    Ok(())
                })
            })
            .collect();
        for r in runs {
            r.join().map_err(|_| anyhow::anyhow!("a spawning thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(f64::from(per * threads.max(1)) / started.elapsed().as_secs_f64())
}

/// The ceilings a build's rate is measured against: `sh -c true` spawned
/// from as many threads as workers, and (on a root worker's machine with
/// bubblewrap) the very sandbox command a root worker runs a step in, as
/// the build user `nobody`; and, beside them, `sh -c true` in new mount,
/// PID, IPC and UTS namespaces (util-linux `unshare`, nothing mounted):
/// the kernel's share of any sandbox that gives a step those namespaces,
/// however it is made.
fn spawn_ceilings(threads: u32, dir: &Path) -> anyhow::Result<serde_json::Value> {
    let total = 4000;
    let plain = spawn_rate(threads, total, &|| {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "true"]);
        c
    })?;
    eprintln!("kiln bench: spawn ceiling (sh -c true, {threads} threads): {plain:.0}/s");
    let user = kiln_worker::process::BuildUser::named("nobody");
    let sandboxed = match user {
        Some(user) if crate::running_as_root() && kiln_worker::sandbox::available().is_ok() => {
            let work = dir.join("ceiling");
            std::fs::create_dir_all(&work)?;
            kiln_worker::sandbox::give_tree(&work, user)?;
            let sandbox = kiln_worker::sandbox::Sandbox {
                hide: kiln_worker::sandbox::hidden_paths(&dir.join("work"), None, &[]),
                user: Some(user),
            };
            let rate = spawn_rate(threads, total / 4, &|| {
                sandbox.command(&["/bin/sh", "-c", "true"], &[work.as_path()], &[], &work, true)
            })?;
            eprintln!("kiln bench: sandboxed spawn ceiling (bwrap, as nobody): {rate:.0}/s");
            Some(rate)
        }
        _ => None,
    };
    let namespaces = if crate::running_as_root() && crate::on_path("unshare") {
        let rate = spawn_rate(threads, total / 4, &|| {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--pid", "--ipc", "--uts", "--fork", "/bin/sh", "-c", "true"]);
            c
        })?;
        eprintln!("kiln bench: namespaces alone (unshare -mpiu -f sh -c true): {rate:.0}/s");
        Some(rate)
    } else {
        None
    };
    Ok(serde_json::json!({
        "sh_c_true_per_second": plain,
        "sandboxed_step_per_second": sandboxed,
        "namespaces_only_per_second": namespaces,
    }))
}

/// A master with `n` workers connected (real connections, the worker loops
/// run in this process to stay on one machine): its resident memory once
/// they are all in, and trigger→start latency of builds submitted one at a
/// time while every worker waits for work.
async fn many_workers(exe: &Path, n: u32, latency_builds: usize) -> anyhow::Result<serde_json::Value> {
    let farm = BenchFarm::start(exe, n, None, "true").await?;
    let (dir, client, wport, master_pid) = (&farm.dir, &farm.client, farm.worker_port, farm.master_pid);
    let mut loops = tokio::task::JoinSet::new();
    for i in 1..=n {
        let token = std::fs::read_to_string(dir.path().join(format!("secrets/b{i}.token")))?.trim().to_string();
        loops.spawn(kiln_worker::run(kiln_worker::WorkerOptions::in_process(
            format!("127.0.0.1:{wport}"),
            format!("b{i}"),
            token,
            vec!["t".into()],
            1,
            dir.path().join(format!("work/b{i}")),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let connected = client.status().await?.workers_connected;
        if connected == i64::from(n) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "only {connected} of {n} workers connected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_kib(master_pid, "VmRSS:") as f64 / 1024.0;
    eprintln!("kiln bench: master with {n} workers connected: {rss:.1} MiB RSS");
    let body = BuildRequestBody { components: vec!["noop".into()], ..Default::default() };
    let latencies = one_at_a_time(client, &body, latency_builds).await?.start;
    let peak = rss_kib(master_pid, "VmHWM:") as f64 / 1024.0;
    loops.abort_all();
    Ok(serde_json::json!({
        "workers": n,
        "master_rss_mib": rss,
        "master_rss_peak_mib": peak,
        "trigger_to_start_ms": summary(latencies),
    }))
}
