//! What every phase of `kiln bench` shares: a master and workers started as
//! real processes in a directory of their own ([`BenchFarm`]), builds
//! submitted through the API and waited for, and the figures read off
//! processes (`/proc`) and builds.

use anyhow::{bail, Context};
use kiln_client::Client;
use kiln_proto::api::{Build, BuildRequestBody};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    spawn_worker_with(exe, dir, i, worker_ports, 1, &[])
}

/// [`spawn_worker`] with `slots` slots and `extra` arguments.
pub(crate) fn spawn_worker_with(
    exe: &Path,
    dir: &Path,
    i: u32,
    worker_ports: &[u16],
    slots: u32,
    extra: &[&str],
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.arg("worker").args(extra);
    for port in worker_ports {
        cmd.args(["--master", &format!("127.0.0.1:{port}")]);
    }
    cmd.args(["--name", &format!("b{i}"), "--token-file"])
        .arg(dir.join(format!("secrets/b{i}.token")))
        .args(["--targets", "t", "--slots", &slots.to_string(), "--workdir"])
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

pub(crate) fn rss_kib(pid: u32, field: &str) -> u64 {
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

/// Where a process's resident memory is, in MiB, from `/proc/PID/smaps`:
/// its own (every anonymous page: heap, stacks, and the pages of its
/// binary it wrote, such as relocated data), the pages of its binary's
/// code and of its other sections read from the file, the pages of other
/// files (shared libraries, the database's shared memory); and its
/// proportional share (PSS), in which each page shared with other
/// processes (the workers run the same binary) counts as a part.
pub(crate) fn rss_by_mapping(pid: u32) -> serde_json::Value {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().trim_end_matches(" (deleted)").to_string());
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    // own, binary code, binary's other sections, other files (KiB).
    let mut kib = [0u64; 4];
    let mut pss = 0u64;
    // Which file-backed figure the current mapping's lines add to.
    let mut kind = 3;
    let mut rss = 0u64;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A mapping's header starts with its address range, "lo-hi"; no
        // field line's name has a '-' in it.
        if fields.first().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            let path = fields.get(5).map(|_| fields[5..].join(" "));
            kind = match path {
                Some(p) if exe.as_deref() == Some(p.trim_end_matches(" (deleted)")) => {
                    if fields.get(1).is_some_and(|perms| perms.contains('x')) {
                        1
                    } else {
                        2
                    }
                }
                _ => 3,
            };
            continue;
        }
        let value = || fields.get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match fields.first() {
            Some(&"Rss:") => rss = value(),
            Some(&"Pss:") => pss += value(),
            // Anonymous comes after Rss: what of the mapping is not
            // anonymous is file pages.
            Some(&"Anonymous:") => {
                let anonymous = value();
                kib[0] += anonymous;
                kib[kind] += rss.saturating_sub(anonymous);
            }
            _ => {}
        }
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    serde_json::json!({
        "own_mib": mib(kib[0]),
        "binary_code_mib": mib(kib[1]),
        "binary_other_sections_mib": mib(kib[2]),
        "other_files_mib": mib(kib[3]),
        "pss_mib": mib(pss),
    })
}

/// CPU seconds (user + system) a process has used, itself and its waited-for children.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
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
pub(crate) fn latency_ms(b: &Build) -> Option<f64> {
    let start = micros(b.steps.first()?.started_at.as_deref()?)?;
    Some((start - micros(&b.requested_at)?) as f64 / 1000.0)
}

/// The part of [`latency_ms`] before the master claimed the build for a
/// worker (the rest is the job's way to the worker and its first step's
/// report back), in milliseconds.
pub(crate) fn claim_ms(b: &Build) -> Option<f64> {
    let claimed = micros(b.started_at.as_deref()?)?;
    Some((claimed - micros(&b.requested_at)?) as f64 / 1000.0)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn summary(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({
        "count": v.len(),
        "p50": percentile(&v, 0.5),
        "p99": percentile(&v, 0.99),
        "max": v.last().copied().unwrap_or(f64::NAN),
    })
}

/// A bench farm's config: `workers` workers `b1`… (a token file each),
/// target `t`, and component `noop` whose one step runs `run`.
fn write_config(
    dir: &Path,
    workers: u32,
    database: Option<&str>,
    run: &str,
    http: u16,
    wport: u16,
) -> anyhow::Result<()> {
    let mut cfg = format!(
        "[master]\nlisten = \"127.0.0.1:{http}\"\nworker_listen = \"127.0.0.1:{wport}\"\ndata_dir = \"data\"\n"
    );
    if let Some(db) = database {
        cfg.push_str(&format!("database = \"{db}\"\n"));
    }
    std::fs::create_dir_all(dir.join("secrets"))?;
    for i in 1..=workers {
        cfg.push_str(&format!("\n[[worker]]\nname = \"b{i}\"\ntoken_file = \"secrets/b{i}.token\"\n"));
        std::fs::write(dir.join(format!("secrets/b{i}.token")), format!("bench-token-{i}-{}\n", std::process::id()))?;
    }
    cfg.push_str("\n[[target]]\nname = \"t\"\nfamily = \"deb\"\n");
    cfg.push_str(&format!(
        "\n[[component]]\nname = \"noop\"\ntargets = [\"t\"]\nsteps = [ {{ name = \"noop\", run = {run:?} }} ]\n"
    ));
    std::fs::write(dir.join("farm.toml"), cfg)?;
    Ok(())
}

/// A master started as a real process for one phase of a bench, in its own
/// directory; stopped (with whatever workers were added) when dropped.
pub(crate) struct BenchFarm {
    pub dir: tempfile::TempDir,
    pub procs: Procs,
    pub master_pid: u32,
    pub url: String,
    pub token: String,
    pub client: Client,
    pub worker_port: u16,
}

impl BenchFarm {
    /// Writes the config ([`write_config`]) and starts the master; returns
    /// once its API answers.
    pub async fn start(exe: &Path, workers: u32, database: Option<&str>, run: &str) -> anyhow::Result<BenchFarm> {
        BenchFarm::prepare(workers, database, run, "")?.launch(exe).await
    }

    /// Writes the config (with `extra` appended) without starting anything:
    /// the caller may fill the data dir first.
    pub fn prepare(workers: u32, database: Option<&str>, run: &str, extra: &str) -> anyhow::Result<Prepared> {
        let dir = tempfile::tempdir()?;
        let (http, wport) = (free_port()?, free_port()?);
        write_config(dir.path(), workers, database, run, http, wport)?;
        if !extra.is_empty() {
            let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("farm.toml"))?;
            std::io::Write::write_all(&mut f, extra.as_bytes())?;
        }
        Ok(Prepared { dir, http, wport })
    }
}

/// A bench farm's directory and ports, its master not started yet.
pub(crate) struct Prepared {
    pub dir: tempfile::TempDir,
    http: u16,
    wport: u16,
}

impl Prepared {
    /// Starts the master; returns once its API answers.
    pub async fn launch(self, exe: &Path) -> anyhow::Result<BenchFarm> {
        let Prepared { dir, http, wport } = self;
        let master_log = std::fs::File::create(dir.path().join("master.log"))?;
        let master = Command::new(exe)
            .args(["master", "--allow-root", "--config"])
            .arg(dir.path().join("farm.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(master_log)
            .spawn()
            .context("cannot start the master")?;
        let master_pid = master.id();
        let procs = Procs(vec![master]);
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
        let client = Client::new(&url, Some(token.clone()))?;
        Ok(BenchFarm { dir, procs, master_pid, url, token, client, worker_port: wport })
    }
}

impl BenchFarm {
    /// Starts worker processes `b1`…`bN`, `slots` each, and waits until all
    /// are connected.
    pub async fn start_workers(&mut self, exe: &Path, n: u32, slots: u32, extra: &[&str]) -> anyhow::Result<()> {
        for i in 1..=n {
            self.procs.0.push(spawn_worker_with(exe, self.dir.path(), i, &[self.worker_port], slots, extra)?);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.client.status().await?.workers_connected < i64::from(n) {
            if Instant::now() > deadline {
                bail!("the workers did not connect");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// The master's count of database log syncs (`/metrics`).
pub(crate) async fn log_syncs(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<f64> {
    let text = http.get(format!("{url}/metrics")).bearer_auth(token).send().await?.error_for_status()?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix("kiln_database_log_syncs_total "))
        .and_then(|v| v.trim().parse().ok())
        .context("/metrics has no kiln_database_log_syncs_total")
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

/// Submits `n` build requests through the API, `concurrency` in flight,
/// then waits until the farm is idle; returns how long submitting took.
pub(crate) async fn submit_and_wait(
    client: &Client,
    body: &BuildRequestBody,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut inflight = tokio::task::JoinSet::new();
    for _ in 0..n {
        if inflight.len() >= concurrency.max(1) {
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
    wait_idle(client, Duration::from_secs(600)).await?;
    Ok(submitted)
}

/// Trigger→start latencies of builds run one at a time, ms: to the first
/// step's start, and the part of it before the build was claimed.
#[derive(Default)]
pub(crate) struct Latencies {
    pub start: Vec<f64>,
    pub claim: Vec<f64>,
}

/// Trigger→first-step latency (ms) of `n` builds submitted one at a time,
/// each with a free slot.
pub(crate) async fn one_at_a_time(client: &Client, body: &BuildRequestBody, n: usize) -> anyhow::Result<Latencies> {
    let mut latencies = Latencies::default();
    for _ in 0..n {
        let id = client.create_builds(body).await?.builds[0].id;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let b = client.build(id).await?;
            if b.state.is_finished() {
                latencies.start.extend(latency_ms(&b));
                latencies.claim.extend(claim_ms(&b));
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "build {id} did not finish");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(latencies)
}
