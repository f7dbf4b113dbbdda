//! The client commands: build, builds, show, log, cancel, rebuild, workers.

use crate::output::{build_line, elapsed, header, human_secs};
use crate::Remote;
use anyhow::Context;
use clap::Args;
use kiln_client::BuildQuery;
use kiln_proto::api::BuildRequestBody;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct BuildArgs {
    /// Components to build (in dependency order when several are named).
    pub components: Vec<String>,
    /// Only on these targets (repeatable). Default: every target of each component.
    #[arg(long = "target", short = 't')]
    pub targets: Vec<String>,
    /// Every target of each component (the default when no --target is given).
    #[arg(long)]
    pub all_targets: bool,
    /// Every component of the farm.
    #[arg(long)]
    pub all: bool,
    /// A property, KEY=VALUE (repeatable).
    #[arg(short = 'p', long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// Why: shown with the request.
    #[arg(long)]
    pub reason: Option<String>,
    /// A release build (property release=true): the changelog's version, published to the release channel.
    #[arg(long)]
    pub release: bool,
    /// Overwrite a version already published (property replace=true).
    #[arg(long)]
    pub replace: bool,
    /// Dispatch before lower priorities (property priority, -1000 to 1000;
    /// default 0, a release 1); a running build is never preempted.
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<i64>,
    /// Follow the builds until they finish; exit non-zero unless all succeed.
    #[arg(long, short)]
    pub follow: bool,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    if args.all && !args.components.is_empty() {
        anyhow::bail!("name components or use --all, not both");
    }
    if args.all_targets && !args.targets.is_empty() {
        anyhow::bail!("use --target or --all-targets, not both");
    }
    let mut properties = BTreeMap::new();
    for p in &args.properties {
        let (k, v) = kiln_core::props::parse_assignment(p).map_err(|e| anyhow::anyhow!("-p {p}: {e}"))?;
        properties.insert(k, v);
    }
    if args.release {
        properties.insert("release".into(), "true".into());
    }
    if let Some(p) = args.priority {
        properties.insert(kiln_core::props::PRIORITY_PROPERTY.into(), p.to_string());
    }
    if args.replace {
        properties.insert("replace".into(), "true".into());
    }
    let client = args.remote.client()?;
    let body = BuildRequestBody {
        components: args.components.clone(),
        targets: args.targets.clone(),
        all_targets: args.all_targets,
        all: args.all,
        properties,
        reason: args.reason.clone(),
    };
    let created = client.create_builds(&body).await?;
    requested(&client, &created, "", args.follow, args.remote.json).await
}

/// Says which builds a request made (`ID COMPONENT TARGET`, each with
/// `note`; or the JSON), then with `follow` follows them to the end: the
/// exit code says whether all succeeded.
async fn requested(
    client: &kiln_client::Client,
    created: &kiln_proto::api::BuildRequestCreated,
    note: &str,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if json && !follow {
        println!("{}", serde_json::to_string_pretty(created)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        for b in &created.builds {
            println!("{}\t{}\t{}{note}", b.id, b.component, b.target);
        }
    }
    if !follow {
        let ids: Vec<i64> = created.builds.iter().map(|b| b.id).collect();
        return failed_at_once(client, &ids).await;
    }
    let ok = crate::follow::follow_request_from_client(client, created.request_id, json).await?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[derive(Args)]
pub struct BuildsArgs {
    /// queued, running, succeeded, failed, cancelled or skipped
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub component: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn builds(args: BuildsArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let page = client
        .builds(&BuildQuery {
            state: args.state,
            component: args.component,
            target: args.target,
            limit: Some(args.limit),
            ..Default::default()
        })
        .await?;
    if args.remote.json {
        println!("{}", serde_json::to_string_pretty(&page.builds)?);
    } else {
        println!("{}", header());
        for b in &page.builds {
            println!("{}", build_line(b));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show(id: i64, remote: &Remote) -> anyhow::Result<ExitCode> {
    let b = remote.client()?.build(id).await?;
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("build #{}: {} on {}", b.id, b.component, b.target);
    println!("  state:        {}{}", b.state, b.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default());
    println!("  requested:    {} by {}", b.requested_at, b.requested_by.as_deref().unwrap_or("-"));
    if let Some(w) = &b.waiting {
        println!("  waiting:      {} ({})", w.message(), w.kind());
    }
    if let Some(s) = &b.started_at {
        println!("  started:      {s} on {} (attempt {})", b.worker.as_deref().unwrap_or("-"), b.attempt);
    }
    if let Some(f) = &b.finished_at {
        println!("  finished:     {f}");
    }
    if !b.depends_on.is_empty() {
        let deps: Vec<String> = b.depends_on.iter().map(|d| format!("#{d}")).collect();
        println!("  depends on:   {}", deps.join(", "));
    }
    if !b.properties.is_empty() {
        println!("  properties:");
        for (k, p) in &b.properties {
            println!("    {k} = {} ({})", p.value, serde_json::to_value(p.source)?.as_str().unwrap_or(""));
        }
    }
    if !b.artifacts.is_empty() {
        println!("  artifacts:");
        for a in &b.artifacts {
            println!("    {:<40} {:>12} bytes  sha256 {}", a.name, a.size, a.sha256);
        }
    }
    if !b.steps.is_empty() {
        println!("  steps:");
        for s in &b.steps {
            let dur = elapsed(s.started_at.as_deref(), s.finished_at.as_deref()).map(human_secs).unwrap_or_default();
            let code = s.exit_code.map(|c| format!("exit {c}")).unwrap_or_default();
            println!("    {:<20} {:<10} {:>8} {:>8}  {} bytes of log", s.name, s.state.as_str(), dur, code, s.log_size);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct LogArgs {
    pub build: i64,
    /// Only this step (name or index).
    #[arg(long)]
    pub step: Option<String>,
    /// Keep printing as the build runs, until it ends.
    #[arg(long, short)]
    pub follow: bool,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn log(args: LogArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let mut b = client.build(args.build).await?;
    if let Some(s) = &args.step {
        let known = b.steps.iter().any(|st| &st.name == s || st.index.to_string() == *s);
        // A queued build has no steps yet; when following, wait for them.
        let may_appear = args.follow && !b.state.is_finished();
        if !known && !may_appear {
            let names: Vec<&str> = b.steps.iter().map(|st| st.name.as_str()).collect();
            anyhow::bail!("build {} has no step {s:?}; its steps: {}", b.id, names.join(", "));
        }
    }
    let mut stdout = std::io::stdout();
    // Wait for a queued build to start when following.
    while args.follow && b.steps.is_empty() && !b.state.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        b = client.build(args.build).await?;
    }
    for step in b.steps.clone() {
        if let Some(s) = &args.step {
            if &step.name != s && step.index.to_string() != *s {
                continue;
            }
        }
        if args.step.is_none() && !args.remote.json {
            writeln!(stdout, "── step {} ──", step.name)?;
        }
        let mut offset = 0;
        loop {
            let chunk = client.log(b.id, &step.index.to_string(), offset).await?;
            if args.remote.json {
                // One JSON object per chunk (NDJSON), also while following.
                if !chunk.data.is_empty() || chunk.complete {
                    writeln!(stdout, "{}", serde_json::to_string(&chunk)?)?;
                }
            } else {
                stdout.write_all(chunk.data.as_bytes())?;
            }
            stdout.flush()?;
            offset = chunk.next_offset;
            if chunk.complete || (!args.follow && chunk.data.is_empty()) {
                break;
            }
            if chunk.data.is_empty() {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let nb = client.build(b.id).await.context("cannot re-read the build")?;
                let st = nb.steps.iter().find(|s| s.index == step.index);
                if nb.state.is_finished() && st.is_none_or(|s| offset >= s.log_size as u64) {
                    break;
                }
            }
        }
    }
    // How it ended: a build that failed before its first step has no log
    // to show, only its reason. Following, the exit code says it too.
    if args.follow {
        while !b.state.is_finished() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            b = client.build(b.id).await.context("cannot re-read the build")?;
        }
    }
    if b.state.is_finished() && !args.remote.json {
        match &b.reason {
            Some(reason) => eprintln!("build #{} {}: {}", b.id, b.state, crate::output::terminal_safe(reason)),
            None => eprintln!("build #{} {}", b.id, b.state),
        }
    }
    let failed = b.state.is_finished() && b.state != kiln_core::BuildState::Succeeded;
    Ok(if args.follow && failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub async fn fetch(id: i64, dir: &std::path::Path, remote: &Remote) -> anyhow::Result<ExitCode> {
    let client = remote.client()?;
    let b = client.build(id).await?;
    if b.artifacts.is_empty() {
        anyhow::bail!("build {id} has no artifacts (state: {})", b.state);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut fetched = Vec::new();
    for a in &b.artifacts {
        let path = client.download(a, dir).await?;
        if !remote.json {
            println!("{}\t{} bytes\tsha256 {}", path.display(), a.size, a.sha256);
        }
        fetched.push(serde_json::json!({"path": path, "name": a.name, "size": a.size, "sha256": a.sha256}));
    }
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&fetched)?);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(id: i64, remote: &Remote) -> anyhow::Result<ExitCode> {
    let b = remote.client()?.cancel(id).await?;
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else if b.state.is_finished() {
        println!("build #{id} {}", b.state);
    } else {
        println!("build #{id} is being cancelled");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn pin(id: i64, pinned: bool, remote: &Remote) -> anyhow::Result<ExitCode> {
    let b = remote.client()?.pin(id, pinned).await?;
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else if pinned {
        println!("build #{id} is pinned: it keeps its logs and artifacts");
    } else {
        println!("build #{id} is no longer pinned");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn gc(dry_run: bool, remote: &Remote) -> anyhow::Result<ExitCode> {
    let r = remote.client()?.gc(dry_run).await?;
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if r.dry_run { "would free" } else { "freed" };
    println!("{:<18} {:>8} {:>12}", "KIND", "COUNT", "BYTES");
    for f in &r.freed {
        println!("{:<18} {:>8} {:>12}", f.kind, f.count, kiln_core::size::format_bytes(f.bytes));
    }
    let total: u64 = r.freed.iter().map(|f| f.bytes).sum();
    println!(
        "{verb} {} in all; {} builds lose their logs and artifacts (their records stay); took {} ms",
        kiln_core::size::format_bytes(total),
        r.builds_pruned,
        r.took_ms
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn rebuild(id: i64, follow: bool, remote: &Remote) -> anyhow::Result<ExitCode> {
    let client = remote.client()?;
    let created = client.rebuild(id).await?;
    requested(&client, &created, &format!("\t(rebuild of #{id})"), follow, remote.json).await
}

pub async fn status(remote: &Remote) -> anyhow::Result<ExitCode> {
    let s = remote.client()?.status().await?;
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "kiln {} (config generation {}), answered by {}",
        s.version,
        s.config_generation,
        s.master.as_deref().unwrap_or("-")
    );
    println!(
        "{} builders, {} workers connected, {} builds queued, {} running",
        s.builders, s.workers_connected, s.builds_queued, s.builds_running
    );
    if let Some(d) = &s.disk {
        println!(
            "data dir: {}% of {} used, {} free",
            d.used_percent,
            kiln_core::size::format_bytes(d.total_bytes),
            kiln_core::size::format_bytes(d.free_bytes)
        );
        if let Some(w) = &d.warning {
            println!("warning: {w}");
        }
    }
    if !s.masters.is_empty() {
        println!("{:<28} {:<24} {:<6} {:>5} LAST HEARTBEAT", "MASTER", "ADDRESS", "STATE", "EPOCH");
        for m in &s.masters {
            let state = if m.alive { "alive" } else { "gone" };
            println!("{:<28} {:<24} {:<6} {:>5} {}", m.id, m.address, state, m.epoch, m.heartbeat_at);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand)]
pub enum WorkersAction {
    /// Drain a worker: it finishes the builds it runs and is given no new ones until resumed (needs server_admin).
    Drain {
        name: String,
        /// Why, shown beside the worker.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Give a drained worker builds again (needs server_admin).
    Resume { name: String },
}

pub async fn workers(action: Option<WorkersAction>, remote: &Remote) -> anyhow::Result<ExitCode> {
    let client = remote.client()?;
    let changed = match action {
        None => None,
        Some(WorkersAction::Drain { name, reason }) => Some(client.drain_worker(&name, reason.as_deref()).await?),
        Some(WorkersAction::Resume { name }) => Some(client.resume_worker(&name).await?),
    };
    if let Some(w) = changed {
        if remote.json {
            println!("{}", serde_json::to_string_pretty(&w)?);
        } else if w.drained.is_some() {
            let running: Vec<String> = w.running.iter().map(|r| format!("#{r}")).collect();
            match running.len() {
                0 => println!("worker {} drained; it runs nothing", w.name),
                _ => println!("worker {} drained; it finishes {} and takes nothing new", w.name, running.join(", ")),
            }
        } else {
            println!("worker {} resumed; it takes builds again", w.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let ws = client.workers().await?;
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&ws)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<16} {:<12} {:>5} {:<24} {:<30} TARGETS", "NAME", "STATE", "SLOTS", "RUNNING", "LAST SEEN");
    for w in ws {
        let running: Vec<String> = w.running.iter().map(|r| format!("#{r}")).collect();
        let state = match (w.connected, w.drained.is_some()) {
            (true, false) => "connected",
            (false, false) => "away",
            (true, true) => "drained",
            (false, true) => "away,drained",
        };
        println!(
            "{:<16} {:<12} {:>5} {:<24} {:<30} {}",
            w.name,
            state,
            w.slots,
            if running.is_empty() { "-".into() } else { running.join(",") },
            w.last_seen.as_deref().unwrap_or("never"),
            w.targets.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct UploadArgs {
    /// The .changes, .dsc or .src.rpm; the files a .changes or .dsc lists are sent from beside it.
    pub file: std::path::PathBuf,
    /// Build on these targets (repeatable). Default: every target of the package's family.
    #[arg(long = "target", short = 't')]
    pub targets: Vec<String>,
    /// A property, KEY=VALUE (repeatable).
    #[arg(short = 'p', long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn upload(args: UploadArgs) -> anyhow::Result<ExitCode> {
    let path = &args.file;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let mut properties = Vec::new();
    for p in &args.properties {
        properties.push(kiln_core::props::parse_assignment(p).map_err(|e| anyhow::anyhow!("-p {p}: {e}"))?);
    }
    let control = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut files = Vec::new();
    if name.ends_with(".dsc") || name.ends_with(".changes") {
        // Send what the control file lists; the master checks it all and says
        // what is missing or wrong.
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        if let Ok(listed) = kiln_core::deb822::parse_source_upload(&String::from_utf8_lossy(&control)) {
            for f in listed.files {
                if let Ok(bytes) = std::fs::read(dir.join(&f.name)) {
                    files.push((f.name, bytes));
                }
            }
        }
    }
    files.push((name, control));
    let client = args.remote.client()?;
    let accepted = client.upload(files, &args.targets, &properties).await?;
    if args.remote.json {
        println!("{}", serde_json::to_string_pretty(&accepted)?);
    } else {
        println!("upload {} accepted: {} {}", accepted.upload_id, accepted.source, accepted.version);
        for b in &accepted.builds {
            println!("{}\t{}\t{}", b.id, b.component, b.target);
        }
    }
    let ids: Vec<i64> = accepted.builds.iter().map(|b| b.id).collect();
    failed_at_once(&client, &ids).await
}

/// How long a command that queued builds looks for one that failed before
/// it could start (its source gone, its target unplannable). Best effort:
/// a master slower than this to dispatch is not waited for.
const AT_ONCE: Duration = Duration::from_secs(3);

/// After queueing `ids` without following them: a build that failed at
/// once is said, with its reason, and the exit code is non-zero; "accepted"
/// alone would hide it. Builds still waiting for a worker are fine.
async fn failed_at_once(client: &kiln_client::Client, ids: &[i64]) -> anyhow::Result<ExitCode> {
    let until = std::time::Instant::now() + AT_ONCE;
    loop {
        let mut builds = Vec::new();
        for id in ids {
            builds.push(client.build(*id).await?);
        }
        let failed: Vec<&kiln_proto::api::Build> = builds
            .iter()
            .filter(|b| b.state == kiln_core::BuildState::Failed && b.steps.iter().all(|s| s.started_at.is_none()))
            .collect();
        if !failed.is_empty() {
            for b in failed {
                let reason = b.reason.as_deref().map(crate::output::terminal_safe);
                eprintln!("build #{} failed at once: {}", b.id, reason.as_deref().unwrap_or("no reason given"));
            }
            return Ok(ExitCode::FAILURE);
        }
        // Settled: finished, or running a step on a worker. (A build failing
        // before it starts is claimed by the master for a moment first.)
        let settled = builds.iter().all(|b| {
            b.state.is_finished()
                || (b.state == kiln_core::BuildState::Running && b.steps.iter().any(|s| s.started_at.is_some()))
        });
        if settled || std::time::Instant::now() >= until {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
