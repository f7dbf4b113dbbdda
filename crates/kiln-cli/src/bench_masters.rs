//! `kiln bench-masters`: several masters sharing one PostgreSQL database
//! and one data dir, as real processes. It measures the throughput of
//! trivial builds with one, two, … masters (workers given every master,
//! builds submitted round-robin through them), then kills one master with
//! SIGKILL in the middle of a run and measures how long until its workers
//! build again under the others and until a survivor fenced it and took
//! its builds over (the target: under twice the lease), and that every
//! build still succeeded. Writes JSON.

use crate::bench_farm::{free_port, Procs};
use anyhow::{bail, Context};
use clap::Args;
use kiln_client::Client;
use kiln_proto::api::BuildRequestBody;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchMastersArgs {
    /// A PostgreSQL URL; the bench works in a schema of its own there, dropped at the end.
    #[arg(long)]
    pub database: String,
    /// Up to this many masters (throughput is measured with 1, 2, … of them).
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// Worker processes (one slot each), given every master.
    #[arg(long, default_value_t = 8)]
    pub workers: u32,
    /// Builds per throughput run.
    #[arg(long, default_value_t = 1000)]
    pub builds: usize,
    /// The masters' `[master] lease`, in seconds.
    #[arg(long, default_value_t = 5)]
    pub lease: u64,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-masters.json")]
    pub out: PathBuf,
}

fn write_configs(dir: &Path, args: &BenchMastersArgs, url: &str, ports: &[(u16, u16)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("secrets"))?;
    let mut rest = String::new();
    for i in 1..=args.workers {
        rest.push_str(&format!("\n[[worker]]\nname = \"b{i}\"\ntoken_file = \"secrets/b{i}.token\"\n"));
        std::fs::write(dir.join(format!("secrets/b{i}.token")), format!("bench-token-{i}-{}\n", std::process::id()))?;
    }
    rest.push_str("\n[[target]]\nname = \"t\"\nfamily = \"deb\"\n");
    rest.push_str("\n[[component]]\nname = \"noop\"\nsteps = [ { name = \"noop\", run = \"true\" } ]\n");
    for (n, (http, wport)) in ports.iter().enumerate() {
        let cfg = format!(
            "[master]\nlisten = \"127.0.0.1:{http}\"\nworker_listen = \"127.0.0.1:{wport}\"\ndata_dir = \"data\"\n\
             database = \"{url}\"\nlease = \"{}s\"\nworker_timeout = \"10s\"\n{rest}",
            args.lease
        );
        std::fs::write(dir.join(format!("farm-{n}.toml")), cfg)?;
    }
    Ok(())
}

fn start_master(exe: &Path, dir: &Path, n: usize) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("master-{n}.log")))?;
    Command::new(exe)
        .args(["master", "--allow-root", "--config"])
        .arg(dir.join(format!("farm-{n}.toml")))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start a master")
}

async fn wait_up(client: &Client, dir: &Path, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.status().await.is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join(format!("master-{n}.log"))).unwrap_or_default();
            bail!("master {n} did not start:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Submits `n` builds round-robin through `masters`, 16 in flight; returns their ids.
async fn submit(masters: &[Client], n: usize) -> anyhow::Result<Vec<i64>> {
    let body = BuildRequestBody { components: vec!["noop".into()], ..Default::default() };
    let mut inflight = tokio::task::JoinSet::new();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        if inflight.len() >= 16 {
            if let Some(r) = inflight.join_next().await {
                ids.push(r??);
            }
        }
        let (c, body) = (masters[i % masters.len()].clone(), body.clone());
        inflight.spawn(async move { c.create_builds(&body).await.map(|r| r.builds[0].id) });
    }
    while let Some(r) = inflight.join_next().await {
        ids.push(r??);
    }
    Ok(ids)
}

/// Waits until no build is queued or running; returns how many of `ids` did not succeed.
async fn wait_done(client: &Client, ids: &[i64], within: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + within;
    loop {
        let s = client.status().await?;
        if s.builds_queued == 0 && s.builds_running == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("builds did not finish within {within:?}: {} queued, {} running", s.builds_queued, s.builds_running);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut failed = 0;
    for id in ids {
        if client.build(*id).await?.state != kiln_core::BuildState::Succeeded {
            failed += 1;
        }
    }
    Ok(failed)
}

pub async fn run(args: BenchMastersArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.masters >= 2, "--masters must be at least 2 (one of them is killed)");
    let exe = std::env::current_exe().context("cannot find the kiln binary")?;
    let admin = kiln_db::Store::connect(&args.database).await.context("cannot reach the database")?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let schema = format!("kiln_bench_{}_{stamp}", std::process::id());
    admin.execute_raw(&format!("CREATE SCHEMA {schema}")).await?;
    let sep = if args.database.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}options=-c%20search_path%3D{schema}", args.database);
    let result = measure(&args, &exe, &url).await;
    admin.execute_raw(&format!("DROP SCHEMA {schema} CASCADE")).await?;
    admin.close().await;
    let report = result?;
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.out, &text).with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("{text}");
    let failed = report["failed"].as_u64().unwrap_or(1);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn measure(args: &BenchMastersArgs, exe: &Path, url: &str) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let ports: Vec<(u16, u16)> =
        (0..args.masters).map(|_| Ok((free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
    write_configs(dir.path(), args, url, &ports)?;
    // The first master makes the schema and the admin token; the others share them.
    let mut masters_procs = Procs(Vec::new());
    let mut masters: Vec<Client> = Vec::new();
    for (n, (http, _)) in ports.iter().enumerate() {
        masters_procs.0.push(start_master(exe, dir.path(), n)?);
        let anon = Client::new(&format!("http://127.0.0.1:{http}"), None)?;
        wait_up(&anon, dir.path(), n).await?;
        let token = std::fs::read_to_string(dir.path().join("data/admin.token"))?.trim().to_string();
        masters.push(Client::new(&format!("http://127.0.0.1:{http}"), Some(token))?);
    }
    let mut workers = Procs(Vec::new());
    let mut failed = 0;
    let mut throughput = Vec::new();
    for using in 1..=args.masters {
        // Workers given the first `using` masters only, started afresh.
        for mut c in workers.0.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        workers = start_workers(exe, dir.path(), args, &ports[..using])?;
        wait_workers(&masters[0], args.workers).await?;
        let started = Instant::now();
        let ids = submit(&masters[..using], args.builds).await?;
        failed += wait_done(&masters[0], &ids, Duration::from_secs(600)).await?;
        let rate = args.builds as f64 / started.elapsed().as_secs_f64();
        eprintln!("kiln bench-masters: {using} master(s): {rate:.0} builds/s");
        throughput.push(serde_json::json!({ "masters": using, "builds_per_second": rate }));
    }

    // A takeover: kill -9 of the last master in the middle of a run.
    let victim = masters.len() - 1;
    let store = kiln_db::Store::connect(url).await?;
    let victim_id = store
        .masters()
        .await?
        .into_iter()
        .find(|m| m.address.ends_with(&format!(":{}", ports[victim].0)))
        .map(|m| m.id)
        .context("the victim's lease is not in the database")?;
    // Builds go in through the survivors while it dies.
    let submitting = {
        let survivors: Vec<Client> = masters[..victim].to_vec();
        let n = args.builds;
        tokio::spawn(async move { submit(&survivors, n).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    let mut victim_proc = masters_procs.0.remove(victim);
    let _ = victim_proc.kill();
    let _ = victim_proc.wait();
    let survivors = &masters[..victim];
    // Its workers are back at work under the others.
    let mut workers_back = None;
    let mut fenced = None;
    let deadline = killed_at + Duration::from_secs(args.lease * 4 + 30);
    while (workers_back.is_none() || fenced.is_none()) && Instant::now() < deadline {
        if workers_back.is_none() {
            // Connected to a survivor (the dead master's lease, and the
            // connections it recorded, outlive it for a while).
            let ws = survivors[0].workers().await.unwrap_or_default();
            let moved = ws.iter().filter(|w| w.connected && w.master.as_ref().is_some_and(|m| *m != victim_id));
            if moved.count() as u32 == args.workers {
                workers_back = Some(killed_at.elapsed());
            }
        }
        if fenced.is_none() && store.masters().await?.iter().any(|m| m.id == victim_id && m.fenced_at.is_some()) {
            fenced = Some(killed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ids = submitting.await??;
    failed += wait_done(&survivors[0], &ids, Duration::from_secs(600)).await?;
    store.close().await;
    drop(workers);
    let lease = Duration::from_secs(args.lease);
    let fenced = fenced.context("the killed master was never fenced")?;
    Ok(serde_json::json!({
        "workers": args.workers,
        "builds_per_run": args.builds,
        "throughput": throughput,
        "lease_seconds": args.lease,
        "takeover": {
            "workers_building_again_ms": workers_back.map(|d| d.as_secs_f64() * 1000.0),
            "fenced_and_taken_over_ms": fenced.as_secs_f64() * 1000.0,
            "fenced_within_lease_ratio": fenced.as_secs_f64() / lease.as_secs_f64(),
            "builds_during_takeover": ids.len(),
        },
        "failed": failed,
    }))
}

fn start_workers(exe: &Path, dir: &Path, args: &BenchMastersArgs, ports: &[(u16, u16)]) -> anyhow::Result<Procs> {
    let mut procs = Procs(Vec::new());
    let worker_ports: Vec<u16> = ports.iter().map(|(_, w)| *w).collect();
    for i in 1..=args.workers {
        procs.0.push(crate::bench_farm::spawn_worker(exe, dir, i, &worker_ports)?);
    }
    Ok(procs)
}

async fn wait_workers(client: &Client, n: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ws = client.workers().await?;
        if ws.iter().filter(|w| w.connected).count() as u32 >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the workers did not connect");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
