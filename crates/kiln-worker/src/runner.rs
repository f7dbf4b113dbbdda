//! Running one build: a fresh work dir with the source, each step in turn
//! (with properties, timeouts, `halt_on_failure` and `always_run`), output
//! streamed to the master as it comes, and the work dir removed at the end.

use crate::process;
use crate::tree_files::{files_under, open_plain, Unreadable};
use base64::Engine;
use kiln_core::duration::format_duration;
use kiln_core::props::{env_name, interpolate, interpolate_shell};
use kiln_core::{BuildState, StepState};
use kiln_proto::wire::{BuildResult, Job, JobStep, StepResult, WorkerMsg};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Output is sent at least this often while a step runs.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// ...or as soon as this much is waiting.
const FLUSH_BYTES: usize = 32 * 1024;

pub struct BuildContext {
    /// Where the component's own steps run ([`crate::sandbox`]); `None` on a
    /// root worker that runs them as root.
    pub sandbox: Option<crate::sandbox::Sandbox>,
    /// Whether the work dir is the build user's since the last step that
    /// ran as root (so it is handed over once, not before every step).
    pub tree_handed_over: bool,
    pub worker_dir: PathBuf,
    pub root_cache: Option<PathBuf>,
    pub worker_name: String,
    pub out: mpsc::UnboundedSender<WorkerMsg>,
    /// Flips to true when the build is to be cancelled.
    pub cancel: watch::Receiver<bool>,
    /// Where step timings are counted (`/metrics`).
    pub steps: std::sync::Arc<crate::metrics::StepMetrics>,
    /// Empty directories made ahead, for the build's own.
    pub spares: std::sync::Arc<crate::spare::SpareDirs>,
}

pub async fn run_build(job: Job, mut ctx: BuildContext) -> BuildResult {
    let id = job.build_id;
    let dir = ctx.worker_dir.join("builds").join(id.to_string());
    let scratch = scratch_dir(&dir);
    let mut results: Vec<StepResult> = Vec::new();
    let prepared = prepare_dirs(&dir, &scratch, job.source_tgz.as_deref(), &ctx.spares).await;
    let mut props: BTreeMap<String, String> = job.properties.clone();
    let mut failed_reason: Option<String> = None;
    let mut halted = false;
    if let Err(e) = &prepared {
        failed_reason = Some(format!("cannot prepare the work dir: {e}"));
        halted = true;
    }
    let grace = Duration::from_millis(job.kill_grace_ms.max(100));
    let build_deadline =
        job.timeout_ms.map(|ms| (Instant::now() + Duration::from_millis(ms), Duration::from_millis(ms)));
    let cgroup =
        match crate::cgroup::BuildCgroup::create(&format!("{}-{id}", ctx.worker_name), job.memory_bytes, job.cpus) {
            Ok(cg) => cg,
            Err(e) => {
                failed_reason.get_or_insert(format!("cannot apply the memory and CPU limits: {e}"));
                halted = true;
                None
            }
        };
    let redactor = kiln_core::redact::Redactor::new(job.secrets.0.values().map(String::as_str));
    for (i, step) in job.steps.iter().enumerate() {
        let idx = i as u32;
        let cancelled = *ctx.cancel.borrow();
        if (halted || cancelled) && !step.always_run {
            results.push(StepResult {
                build_id: id,
                step: idx,
                state: if cancelled { StepState::Cancelled } else { StepState::Skipped },
                exit_code: None,
                property: None,
                message: None,
            });
            continue;
        }
        let _ = ctx.out.send(WorkerMsg::StepStarted { build_id: id, step: idx });
        // Let the connection send it before the step's process is spawned
        // (a fork and exec that would otherwise hold the report back).
        tokio::task::yield_now().await;
        let scope =
            BuildScope { job: &job, dir: &dir, grace, build_deadline, cgroup: cgroup.as_ref(), redactor: &redactor };
        let began = Instant::now();
        let r = run_step(&scope, idx, step, &props, &mut ctx).await;
        ctx.steps.step_finished(&step.name, r.state.as_str(), began.elapsed());
        if let Some((k, v)) = &r.property {
            props.insert(k.clone(), v.clone());
        }
        if r.state == StepState::Failed {
            if failed_reason.is_none() {
                failed_reason = Some(match &r.message {
                    Some(m) => format!("step {} {m}", step.name),
                    None => format!("step {} failed", step.name),
                });
            }
            if step.halt_on_failure {
                halted = true;
            }
        }
        let _ = ctx.out.send(WorkerMsg::StepFinished(r.clone()));
        results.push(r);
    }
    let cancelled = *ctx.cancel.borrow();
    if let Some((at, limit)) = build_deadline {
        if failed_reason.is_some() && Instant::now() >= at {
            failed_reason = Some(format!("timed out after {}", format_duration(limit)));
        }
    }
    let mut artifacts = Vec::new();
    let outbox = ctx.worker_dir.join("outbox").join(id.to_string());
    if !cancelled && failed_reason.is_none() && !job.artifacts.is_empty() {
        match collect_artifacts(&dir, &job.artifacts, &outbox) {
            Ok(names) => artifacts = names,
            Err(e) => failed_reason = Some(format!("collecting artifacts: {e}")),
        }
    }
    if !cancelled && failed_reason.is_some() && !job.artifacts_on_failure.is_empty() {
        // Best effort: what is there of the logs is kept, the build's
        // failure stays the reason.
        match collect_failure_artifacts(&dir, &job.artifacts_on_failure, &outbox, &redactor) {
            Ok(names) => artifacts = names,
            Err(e) => tracing::warn!(build = id, error = %e, "cannot keep the failed build's logs"),
        }
    }
    let _ = tokio::fs::remove_dir_all(&dir).await;
    // A standard pipeline's root may be an overlay mount: unmount, then remove.
    let unmount_from = scratch.clone();
    let _ = tokio::task::spawn_blocking(move || process::unmount_under(&unmount_from)).await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    let (state, reason) = if cancelled {
        (BuildState::Cancelled, Some("cancelled".to_string()))
    } else if let Some(r) = failed_reason {
        (BuildState::Failed, Some(r))
    } else {
        (BuildState::Succeeded, None)
    };
    BuildResult { build_id: id, state, reason, steps: results, artifacts }
}

/// Moves the files matching `patterns` (relative to `dir`) into `outbox`,
/// where they wait until the master has them. Every pattern must match,
/// and artifact names (the file names) must be unique and valid.
fn collect_artifacts(dir: &Path, patterns: &[String], outbox: &Path) -> Result<Vec<String>, String> {
    let globs: Vec<kiln_core::glob::Pattern> =
        patterns.iter().map(|p| kiln_core::glob::Pattern::new(p)).collect::<Result<_, _>>()?;
    let files = files_under(dir, usize::MAX, Unreadable::Fail)?;
    let mut chosen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (pattern, glob) in patterns.iter().zip(&globs) {
        let mut matched = false;
        for (rel, full) in files.iter().filter(|(rel, _)| glob.matches(rel)) {
            matched = true;
            let name = rel.rsplit('/').next().unwrap_or(rel).to_string();
            if !kiln_core::names::valid_artifact_name(&name) {
                return Err(format!("{rel}: {name:?} is not a valid artifact name"));
            }
            match chosen.get(&name) {
                Some(other) if other != full => return Err(format!("two artifacts are named {name}")),
                _ => {
                    chosen.insert(name, full.clone());
                }
            }
        }
        if !matched {
            return Err(format!("pattern {pattern:?} matched no file"));
        }
    }
    std::fs::create_dir_all(outbox).map_err(|e| format!("cannot create {}: {e}", outbox.display()))?;
    for (name, path) in &chosen {
        std::fs::rename(path, outbox.join(name)).map_err(|e| format!("cannot keep {name}: {e}"))?;
    }
    Ok(chosen.into_keys().collect())
}

/// At most this many files are kept from a failed build...
const FAILURE_FILES_MAX: usize = 100;
/// ...none larger than this...
const FAILURE_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// ...and at most this many bytes of them.
const FAILURE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// The work dir's walk for them looks at no more entries than this.
const FAILURE_ENTRIES_MAX: usize = 200_000;

/// Copies the files matching `patterns` (relative to `dir`) into `outbox`
/// under their failure names ([`kiln_core::pipeline::failure_artifact_name`]),
/// with the build's secrets masked as in its logs (a test log may record
/// its environment). A pattern may match nothing; files past the limits
/// are left out. Regular files only: a link the build left is never followed.
fn collect_failure_artifacts(
    dir: &Path,
    patterns: &[String],
    outbox: &Path,
    redactor: &kiln_core::redact::Redactor,
) -> Result<Vec<String>, String> {
    let globs: Vec<kiln_core::glob::Pattern> =
        patterns.iter().map(|p| kiln_core::glob::Pattern::new(p)).collect::<Result<_, _>>()?;
    let files = files_under(dir, FAILURE_ENTRIES_MAX, Unreadable::Skip)?;
    let mut kept = Vec::new();
    let mut bytes = 0u64;
    for (rel, path) in files.iter().filter(|(rel, _)| globs.iter().any(|g| g.matches(rel))) {
        let Some(name) = kiln_core::pipeline::failure_artifact_name(rel) else { continue };
        if kept.len() >= FAILURE_FILES_MAX || kept.contains(&name) {
            continue;
        }
        let Ok((file, size)) = open_plain(path) else { continue };
        if size > FAILURE_FILE_BYTES_MAX || bytes + size > FAILURE_BYTES_MAX {
            continue;
        }
        let mut content = Vec::new();
        if std::io::Read::read_to_end(&mut std::io::Read::take(file, size), &mut content).is_err() {
            continue;
        }
        std::fs::create_dir_all(outbox).map_err(|e| format!("cannot create {}: {e}", outbox.display()))?;
        let masked = redactor.split(&content, true).0;
        if std::fs::write(outbox.join(&name), &masked).is_ok() {
            bytes += size;
            kept.push(name);
        }
    }
    Ok(kept)
}

/// A build's scratch dir (build roots, source packages), beside its work dir.
fn scratch_dir(dir: &Path) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.with_file_name(format!("{name}.scratch"))
}

/// Makes a build's work and scratch dirs, empty. Usually neither is there
/// and nothing is to be unpacked: two spare directories are renamed into
/// place, here (quicker than a hand-off to a blocking thread and back),
/// and spares are made again on a blocking thread. Removing what an
/// earlier attempt left, or unpacking a source archive, is done on a
/// blocking thread.
async fn prepare_dirs(
    dir: &Path,
    scratch: &Path,
    source_tgz: Option<&str>,
    spares: &std::sync::Arc<crate::spare::SpareDirs>,
) -> std::io::Result<()> {
    let left_over = |p: &Path| p.symlink_metadata().is_ok();
    if source_tgz.is_none() && !left_over(dir) && !left_over(scratch) {
        for d in [scratch, dir] {
            if !spares.take_into(d) {
                std::fs::create_dir_all(d)?;
            }
        }
        let spares = spares.clone();
        tokio::task::spawn_blocking(move || spares.fill());
        return Ok(());
    }
    let (dir, scratch, tgz) = (dir.to_path_buf(), scratch.to_path_buf(), source_tgz.map(str::to_owned));
    tokio::task::spawn_blocking(move || {
        prepare_dir(&scratch, None)?;
        prepare_dir(&dir, tgz.as_deref())
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Makes `dir` afresh and empty, then unpacks the source archive into it
/// when there is one.
fn prepare_dir(dir: &Path, source_tgz: Option<&str>) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(dir)?;
    let Some(tgz) = source_tgz else { return Ok(()) };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(tgz)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("source archive: {e}")))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    ar.set_preserve_permissions(true);
    // `unpack` refuses entries that would land outside `dir`.
    ar.unpack(dir)
}

/// Collects output and sends it as `Log` messages at step-local offsets,
/// never splitting a UTF-8 character across two messages.
struct LogSender<'a> {
    out: &'a mpsc::UnboundedSender<WorkerMsg>,
    build_id: i64,
    step: u32,
    offset: u64,
    pending: Vec<u8>,
    /// Masks the build's secrets, also when split across reads.
    redactor: &'a kiln_core::redact::Redactor,
}

impl LogSender<'_> {
    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= FLUSH_BYTES {
            self.flush(false);
        }
    }

    fn line(&mut self, text: &str) {
        self.push(text.as_bytes());
    }

    fn flush(&mut self, last: bool) {
        if self.pending.is_empty() {
            return;
        }
        let keep = if last { 0 } else { incomplete_tail(&self.pending) };
        let cut = self.pending.len() - keep;
        let text = if self.redactor.is_empty() {
            let text = String::from_utf8_lossy(&self.pending[..cut]).into_owned();
            self.pending.drain(..cut);
            text
        } else {
            // A tail that may be the start of a secret waits for what follows.
            let (masked, used) = self.redactor.split(&self.pending[..cut], last);
            self.pending.drain(..used);
            String::from_utf8_lossy(&masked).into_owned()
        };
        if text.is_empty() {
            return;
        }
        let len = text.len() as u64;
        let _ =
            self.out.send(WorkerMsg::Log { build_id: self.build_id, step: self.step, offset: self.offset, data: text });
        self.offset += len;
    }
}

/// How many bytes at the end of `buf` start a UTF-8 character that is not
/// complete yet.
fn incomplete_tail(buf: &[u8]) -> usize {
    match std::str::from_utf8(buf) {
        Ok(_) => 0,
        Err(e) if e.error_len().is_none() => buf.len() - e.valid_up_to(),
        Err(_) => {
            // Invalid bytes somewhere; only hold back a short trailing run.
            let tail = &buf[buf.len().saturating_sub(3)..];
            match tail.iter().rposition(|b| b & 0xC0 == 0xC0) {
                Some(p) if std::str::from_utf8(&tail[p..]).is_err() => tail.len() - p,
                _ => 0,
            }
        }
    }
}

/// What every step of a build shares.
struct BuildScope<'a> {
    job: &'a Job,
    dir: &'a Path,
    /// Time between SIGTERM and SIGKILL.
    grace: Duration,
    /// When the build's own time limit runs out, and that limit.
    build_deadline: Option<(Instant, Duration)>,
    /// The build's memory and CPU limits, when it has any.
    cgroup: Option<&'a crate::cgroup::BuildCgroup>,
    /// Masks the build's secrets in its logs and properties.
    redactor: &'a kiln_core::redact::Redactor,
}

async fn run_step(
    scope: &BuildScope<'_>,
    idx: u32,
    step: &JobStep,
    props: &BTreeMap<String, String>,
    ctx: &mut BuildContext,
) -> StepResult {
    let BuildScope { job, dir, grace, build_deadline, cgroup, redactor } = *scope;
    let mut log = LogSender {
        out: &ctx.out,
        build_id: job.build_id,
        step: idx,
        offset: 0,
        pending: Vec::new(),
        redactor: scope.redactor,
    };
    let mut result = StepResult {
        build_id: job.build_id,
        step: idx,
        state: StepState::Failed,
        exit_code: None,
        property: None,
        message: None,
    };
    let lookup = |name: &str| props.get(name).cloned();
    // Property values are data: they enter the script as quoted words.
    let script = match interpolate_shell(&step.run, lookup) {
        Ok(s) => s,
        Err(e) => {
            log.line(&format!("kiln: cannot run step {}: {e}\n", step.name));
            log.flush(true);
            result.message = Some(e.to_string());
            return result;
        }
    };
    let mut env: Vec<(String, String)> = vec![
        ("KILN_BUILD_ID".into(), job.build_id.to_string()),
        ("KILN_COMPONENT".into(), job.component.clone()),
        ("KILN_TARGET".into(), job.target.clone()),
        ("KILN_STEP".into(), step.name.clone()),
        ("KILN_WORKER".into(), ctx.worker_name.clone()),
        ("KILN_WORKER_DIR".into(), ctx.worker_dir.display().to_string()),
        ("KILN_BUILD_DIR".into(), dir.display().to_string()),
        ("KILN_SCRATCH".into(), scratch_dir(dir).display().to_string()),
        ("KILN_EXE".into(), std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "kiln".into())),
    ];
    if let Some(cache) = &ctx.root_cache {
        env.push(("KILN_ROOT_CACHE".into(), cache.display().to_string()));
    }
    env.extend(job.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(job.secrets.0.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(props.iter().map(|(k, v)| (env_name(k), v.clone())));
    for (k, v) in &step.env {
        match interpolate(v, lookup) {
            Ok(v) => env.push((k.clone(), v)),
            Err(e) => {
                log.line(&format!("kiln: cannot set {k} for step {}: {e}\n", step.name));
                log.flush(true);
                result.message = Some(e.to_string());
                return result;
            }
        }
    }
    let capture = step.set_property.is_some();
    let cgroups = cgroup.map(|c| c.procs_files()).unwrap_or_default();
    // A step of the component's own runs as the build user (when the worker
    // is root); the tree becomes that user's first, as kiln's own steps
    // (checkout, unpacking) wrote it as root.
    let sandbox = ctx.sandbox.as_ref().filter(|_| !step.privileged);
    let user = sandbox.and_then(|s| s.user);
    if step.privileged {
        ctx.tree_handed_over = false;
        // kiln's own helpers sandbox what they run from the tree themselves.
        if let Some(s) = &ctx.sandbox {
            env.extend(s.env());
        }
    }
    if let Some(u) = user.filter(|_| !ctx.tree_handed_over) {
        ctx.tree_handed_over = true;
        if let Err(e) = crate::sandbox::give_tree(dir, u) {
            log.line(&format!("kiln: cannot hand the work dir to the build user: {e}\n"));
            log.flush(true);
            result.message = Some(format!("could not start: {e}"));
            return result;
        }
    }
    let scratch = scratch_dir(dir);
    let writable = [dir, scratch.as_path()];
    let mut proc = match process::spawn(&script, dir, &env, capture, cgroups, sandbox.map(|s| (s, &writable[..]))) {
        Ok(p) => p,
        Err(e) => {
            log.line(&format!("kiln: cannot start step {}: {e}\n", step.name));
            log.flush(true);
            result.message = Some(format!("could not start: {e}"));
            return result;
        }
    };
    // The nearest time limit: the step's own, or what is left of the build's.
    let step_limit = step
        .timeout_ms
        .map(|ms| (Instant::now() + Duration::from_millis(ms), Stop::StepTimeout(Duration::from_millis(ms))));
    let build_limit = build_deadline.map(|(at, d)| (at, Stop::BuildTimeout(d)));
    let limit = match (step_limit, build_limit) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    let deadline = limit.map(|(at, _)| at);
    let no_output = step.no_output_timeout_ms.map(Duration::from_millis);
    let mut last_output = Instant::now();
    let mut stdout = Vec::new();
    let mut stopping: Option<(Instant, Stop)> = None;
    let mut killed = false;
    // An always_run step is not interrupted by the cancel that let it run;
    // any other step cancelled while it was being set up stops at once.
    let mut cancel_seen = *ctx.cancel.borrow();
    if cancel_seen && !step.always_run {
        process::signal_group(proc.pgid, libc::SIGTERM);
        stopping = Some((Instant::now(), Stop::Cancelled));
    }
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut status = None;
    let (mut log_open, mut out_open) = (true, proc.stdout.is_some());
    let mut log_buf = vec![0u8; 64 * 1024];
    let mut out_buf = vec![0u8; 64 * 1024];
    // After the step's shell exits, its group is killed and the pipes close;
    // a process that left the group could hold them open, so stop waiting.
    let mut drain_until = None;
    while status.is_none() || ((log_open || out_open) && drain_until.is_none_or(|t| Instant::now() < t)) {
        // SIGKILL once; a process stuck in the kernel may outlive it for a while.
        let kill_at = stopping.filter(|_| !killed).map(|(t, _)| t + grace);
        tokio::select! {
            st = proc.child.wait(), if status.is_none() => {
                // Whatever the step left running in its group goes with it.
                process::signal_group(proc.pgid, libc::SIGKILL);
                status = Some(st);
                drain_until = Some(Instant::now() + Duration::from_secs(5));
            }
            r = proc.log.read(&mut log_buf), if log_open => match r {
                Ok(0) | Err(_) => log_open = false,
                Ok(n) => {
                    last_output = Instant::now();
                    log.push(&log_buf[..n]);
                }
            },
            r = read_some(proc.stdout.as_mut(), &mut out_buf), if out_open => match r {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => {
                    last_output = Instant::now();
                    log.push(&out_buf[..n]);
                    stdout.extend_from_slice(&out_buf[..n]);
                }
            },
            _ = flush.tick() => log.flush(false),
            _ = ctx.cancel.changed(), if !cancel_seen && status.is_none() => {
                cancel_seen = true;
                if *ctx.cancel.borrow() && stopping.is_none() {
                    process::signal_group(proc.pgid, libc::SIGTERM);
                    stopping = Some((Instant::now(), Stop::Cancelled));
                }
            }
            _ = sleep_until(deadline), if stopping.is_none() && deadline.is_some() && status.is_none() => {
                process::signal_group(proc.pgid, libc::SIGTERM);
                stopping = limit.map(|(_, why)| (Instant::now(), why));
            }
            _ = sleep_until(no_output.map(|d| last_output + d)), if stopping.is_none() && no_output.is_some() && status.is_none() => {
                // Output may have come in the meantime: the branch re-arms from the latest.
                if no_output.is_some_and(|d| last_output.elapsed() >= d) {
                    process::signal_group(proc.pgid, libc::SIGTERM);
                    stopping = no_output.map(|d| (Instant::now(), Stop::NoOutput(d)));
                }
            }
            _ = sleep_until(kill_at), if kill_at.is_some() && status.is_none() => {
                process::signal_group(proc.pgid, libc::SIGKILL);
                killed = true;
            }
            _ = sleep_until(drain_until), if drain_until.is_some() => {}
        }
    }
    let status = status.unwrap_or_else(|| Err(std::io::Error::other("the step was not waited for")));
    let code = status.as_ref().ok().and_then(|s| s.code());
    result.exit_code = code;
    match stopping.map(|(_, why)| why) {
        Some(Stop::Cancelled) => {
            log.line("\nkiln: step cancelled\n");
            result.state = StepState::Cancelled;
            result.message = Some("was cancelled".into());
        }
        Some(why) => {
            let message = why.message();
            log.line(&format!("\nkiln: step stopped: {message}\n"));
            result.message = Some(message);
        }
        None if code == Some(0) => {
            result.state = StepState::Succeeded;
            if let Some(name) = &step.set_property {
                let value = redactor.redact(String::from_utf8_lossy(&stdout).trim());
                result.property = Some((name.clone(), value));
            }
        }
        None if cgroup.is_some_and(|c| c.out_of_memory()) => {
            let limit = cgroup.and_then(|c| c.memory_limit()).unwrap_or(0);
            let message = format!("ran out of memory (limit {} MiB)", limit >> 20);
            log.line(&format!("\nkiln: step stopped: {message}\n"));
            result.message = Some(message);
        }
        None => {
            result.message = Some(match (code, &status) {
                (Some(c), _) => format!("failed with exit code {c}"),
                (None, Ok(s)) => format!("was killed by {}", describe_signal(s)),
                (None, Err(e)) => format!("could not be waited for: {e}"),
            });
        }
    }
    log.flush(true);
    result
}

/// Why a step was stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    StepTimeout(Duration),
    BuildTimeout(Duration),
    NoOutput(Duration),
}

impl Stop {
    fn message(self) -> String {
        match self {
            Stop::Cancelled => "was cancelled".into(),
            Stop::StepTimeout(d) => format!("timed out after {}", format_duration(d)),
            Stop::BuildTimeout(d) => format!("hit the build's time limit of {}", format_duration(d)),
            Stop::NoOutput(d) => format!("had no output for {}", format_duration(d)),
        }
    }
}

async fn read_some(pipe: Option<&mut tokio::net::unix::pipe::Receiver>, buf: &mut [u8]) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    match pipe {
        Some(p) => p.read(buf).await,
        None => Ok(0),
    }
}

fn describe_signal(s: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match s.signal() {
        Some(9) => "SIGKILL".into(),
        Some(15) => "SIGTERM".into(),
        Some(n) => format!("signal {n}"),
        None => "an unknown cause".into(),
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::incomplete_tail;

    #[test]
    fn holds_back_only_an_unfinished_character() {
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail("hé".as_bytes()), 0);
        assert_eq!(incomplete_tail(&"hé".as_bytes()[..2]), 1);
        assert_eq!(incomplete_tail(&"€".as_bytes()[..2]), 2);
        assert_eq!(incomplete_tail(b"\xff\xfeabc"), 0);
    }
}
