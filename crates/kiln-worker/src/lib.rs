//! The kiln worker: dials the master (so it works behind NAT), says which
//! targets it builds, runs the builds it is given and reports back.
//!
//! The worker holds no long-term state. Across a lost connection it keeps
//! running its builds, buffers what it has to say, and reconnects with
//! backoff; a finished build's result is kept until the master acknowledges
//! it. Policy (what runs where, retries) is the master's.

pub mod caches;
mod cgroup;
pub mod checkout;
pub mod hg_checkout;
mod metrics;
pub mod pipeline;
pub mod process;
mod runner;
pub mod sandbox;
mod spare;
pub mod tree_files;

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use kiln_proto::wire::{self, BuildResult, Hello, MasterMsg, WorkerMsg, PROTOCOL_VERSION};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::rustls;
use tokio_util::codec::Framed;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The masters' worker ports, `HOST:PORT` each: the worker talks to
    /// one at a time and moves to the next when it goes (a name with
    /// several addresses is tried address by address too).
    pub masters: Vec<String>,
    pub name: String,
    pub token: String,
    pub targets: Vec<String>,
    pub slots: u32,
    pub workdir: PathBuf,
    /// Connect with TLS, trusting this CA certificate (PEM).
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM) from the workers' CA: the worker
    /// logs in with it (mutual TLS), with or without a token.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    /// Drop the cached build roots at start, so each target's is made again.
    pub refresh_roots: bool,
    /// Where cached build roots live (default: `roots/` in the work dir);
    /// workers on one host may share one.
    pub root_cache: Option<PathBuf>,
    /// Where the components' own steps (and the parts of the standard
    /// pipeline that read the source tree) run: `None` only for a root
    /// worker told to run them as root (trusted farms).
    pub sandbox: Option<sandbox::Sandbox>,
    /// Uids a root worker gives its builds, one each while it runs (group
    /// the same number), instead of the sandbox's one build user: builds
    /// then differ by uid too. Empty: every build runs as the build user.
    pub build_uids: Vec<u32>,
    /// Serve `/metrics` for Prometheus on this address.
    pub metrics: Option<std::net::SocketAddr>,
    /// Cache entries (build roots, mirrors) unused this long are removed.
    pub cache_max_age: Duration,
}

impl WorkerOptions {
    /// A worker loop run inside another program (the demo, the benchmarks):
    /// plain TCP to `master`, no sandbox (its own trusted steps), no metrics,
    /// caches kept 30 days.
    pub fn in_process(
        master: String,
        name: String,
        token: String,
        targets: Vec<String>,
        slots: u32,
        workdir: PathBuf,
    ) -> WorkerOptions {
        WorkerOptions {
            masters: vec![master],
            name,
            token,
            targets,
            slots,
            workdir,
            tls_ca: None,
            tls_identity: None,
            refresh_roots: false,
            root_cache: None,
            sandbox: None,
            build_uids: Vec::new(),
            metrics: None,
            cache_max_age: Duration::from_secs(30 * 86400),
        }
    }
}

struct RunningBuild {
    cancel: watch::Sender<bool>,
    /// Set when the master told us to drop the build: its result is not sent.
    abandoned: Arc<Mutex<bool>>,
}

struct State {
    running: HashMap<i64, RunningBuild>,
    /// Results not yet acknowledged by the master.
    unacked: HashMap<i64, BuildResult>,
    /// When the master was last heard from, and how long a silence makes
    /// this worker stop its builds (from the master's welcome).
    last_contact: Option<Instant>,
    fence: Option<Duration>,
    /// Counts welcomes: an upload that sees it change starts its file over.
    session: u64,
    /// Builds whose artifacts and result are being sent now.
    uploading: std::collections::HashSet<i64>,
    /// Finished builds cancelled while their artifacts were being sent.
    cancelled_uploads: std::collections::HashSet<i64>,
    /// Build uids not given to a running build (`WorkerOptions::build_uids`).
    free_uids: Vec<u32>,
    /// Step timings for `/metrics`.
    steps: Arc<metrics::StepMetrics>,
    /// Directories made ahead for builds' work and scratch dirs.
    spares: Arc<spare::SpareDirs>,
}

impl State {
    /// Stops every running build without reporting it: the master has (or
    /// soon will have) given them to another worker.
    fn abandon_all(&mut self, why: &str) {
        for (id, r) in &self.running {
            tracing::warn!(build = id, "{why}; stopping the build");
            *r.abandoned.lock().unwrap_or_else(|e| e.into_inner()) = true;
            let _ = r.cancel.send(true);
        }
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the worker until a fatal error (refused by the master).
pub async fn run(opts: WorkerOptions) -> anyhow::Result<()> {
    let workdir = std::path::absolute(&opts.workdir).context("cannot resolve the work dir")?;
    std::fs::create_dir_all(workdir.join("builds"))
        .with_context(|| format!("cannot create the work dir {}", workdir.display()))?;
    if opts.sandbox.is_some() {
        sandbox::available().map_err(|e| {
            anyhow::anyhow!("builds run in a bubblewrap sandbox, and {e} (a root worker may run them unsandboxed as root with --build-user root, for a trusted farm only)")
        })?;
    }
    clean_leftovers(&workdir);
    let groups = cgroup::remove_leftovers(&opts.name);
    if groups > 0 {
        tracing::warn!(groups, "removed cgroups left over from an earlier run");
    }
    if opts.refresh_roots {
        match std::fs::remove_dir_all(opts.root_cache.clone().unwrap_or_else(|| workdir.join("roots"))) {
            Ok(()) => tracing::info!("dropped the cached build roots"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("cannot drop the cached build roots"),
        }
    }
    // Steps run in each build's own directory: a relative root cache would
    // be made (and removed) inside every build.
    let root_cache = match &opts.root_cache {
        Some(dir) => Some(std::path::absolute(dir).context("cannot resolve the root cache dir")?),
        None => None,
    };
    let opts = WorkerOptions { workdir, root_cache, ..opts };
    // Two per slot: a build's work dir and its scratch dir.
    let spares = spare::SpareDirs::new(opts.workdir.join("spare"), 2 * opts.slots.max(1) as usize)
        .with_context(|| format!("cannot make directories in the work dir {}", opts.workdir.display()))?;
    let state: Shared = Arc::new(Mutex::new(State {
        running: HashMap::new(),
        unacked: HashMap::new(),
        last_contact: None,
        fence: None,
        session: 0,
        uploading: Default::default(),
        cancelled_uploads: Default::default(),
        free_uids: opts.build_uids.iter().rev().copied().collect(),
        steps: Default::default(),
        spares: Arc::new(spares),
    }));
    tokio::spawn(fence_watchdog(state.clone()));
    anyhow::ensure!(
        opts.cache_max_age >= caches::MIN_MAX_AGE,
        "--cache-max-age must be two days at least: a build may use its cached root for as long as it runs"
    );
    let cache_dirs = caches::dirs(&opts.workdir, opts.root_cache.as_deref());
    tokio::spawn(clean_caches(cache_dirs.clone(), opts.cache_max_age));
    if let Some(addr) = opts.metrics {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot serve metrics on {addr}"))?;
        let running = state.clone();
        let gauges = metrics::Gauges {
            slots: opts.slots,
            running: Box::new(move || lock(&running).running.len()),
            caches: cache_dirs,
        };
        let steps = lock(&state).steps.clone();
        tokio::spawn(metrics::serve(listener, steps, Arc::new(gauges)));
        tracing::info!(%addr, "serving metrics");
    }
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<WorkerMsg>();
    // Artifacts and the results after them go through a short queue, so an
    // upload goes at the connection's pace instead of filling memory.
    let (upload_tx, mut upload_rx) = mpsc::channel::<WorkerMsg>(16);
    let tls = match &opts.tls_ca {
        // Only this CA: the worker trusts no other certificate for its master.
        Some(ca) => Some(tls_connector(ca, opts.tls_identity.as_ref())?),
        None => {
            if let Some(master) = opts.masters.iter().find(|m| !master_is_loopback(m)) {
                tracing::warn!(
                    master = %master,
                    "talking to the master over plain TCP: anyone on the path can read this worker's token and \
                     impersonate the master (and hand it builds); use the master's worker_tls and --tls-ca"
                );
            }
            None
        }
    };
    anyhow::ensure!(!opts.masters.is_empty(), "no master to connect to: give --master HOST:PORT");
    let mut backoff = Duration::from_millis(200);
    // Workers given the same masters start on different ones.
    let mut next = start_index(&opts.name, opts.masters.len());
    let mut tried = 0;
    // Refusals in a row: the worker gives up once every master refused it.
    let mut refused = 0;
    loop {
        let master = &opts.masters[next % opts.masters.len()];
        let chans = Channels { out_tx: &out_tx, out_rx: &mut out_rx, upload_tx: &upload_tx, upload_rx: &mut upload_rx };
        match session(&opts, master, tls.clone(), &state, chans, &mut backoff).await {
            Ok(()) => {
                refused = 0;
                tracing::warn!(%master, "connection to the master closed; reconnecting")
            }
            Err(SessionError::Refused(reason)) => {
                refused += 1;
                if refused >= opts.masters.len() {
                    bail!("the master {master} refused this worker: {reason}");
                }
                tracing::error!(%master, %reason, "the master refused this worker; trying another");
            }
            Err(SessionError::Other(e)) => {
                tracing::warn!(%master, error = %format!("{e:#}"), "cannot talk to the master")
            }
        }
        // The next master at once; after a round of them, wait a little more each time.
        next += 1;
        tried += 1;
        if tried % opts.masters.len() == 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

/// How often the worker looks for stale cache entries.
const CLEAN_CACHES_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Removes stale cache entries at start and every few hours after.
async fn clean_caches(dirs: Vec<caches::CacheDir>, max_age: Duration) {
    let mut tick = tokio::time::interval(CLEAN_CACHES_EVERY);
    loop {
        tick.tick().await;
        let dirs = dirs.clone();
        let cleaned = tokio::task::spawn_blocking(move || caches::clean(&dirs, max_age, std::time::SystemTime::now()))
            .await
            .unwrap_or_default();
        if cleaned.entries > 0 {
            tracing::info!(entries = cleaned.entries, bytes = cleaned.bytes, "removed stale cache entries");
        }
    }
}

/// Where in a list of `n` masters worker `name` starts: the same each
/// time, and spread over the list across workers (by the sum of the
/// name's bytes, so workers numbered in sequence start on the masters in
/// turn).
fn start_index(name: &str, n: usize) -> usize {
    name.bytes().map(usize::from).sum::<usize>() % n.max(1)
}

/// Stops the builds when the master has been silent too long (a network
/// partition, or a master that is gone for good): they will be re-queued,
/// and must not run twice at once.
async fn fence_watchdog(state: Shared) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let mut st = lock(&state);
        let (Some(last), Some(fence)) = (st.last_contact, st.fence) else {
            continue;
        };
        if last.elapsed() > fence && !st.running.is_empty() {
            st.abandon_all(&format!("no word from the master for {fence:?}"));
            st.last_contact = None;
        }
    }
}

/// Kills processes and removes work dirs left by an earlier run of a worker
/// in this work dir (after a crash or `kill -9`).
fn clean_leftovers(workdir: &std::path::Path) {
    // Artifacts of results no one will ask for again (this run knows none).
    let _ = std::fs::remove_dir_all(workdir.join("outbox"));
    let killed = process::kill_leftovers(&workdir.display().to_string());
    if killed > 0 {
        tracing::warn!(killed, "killed processes left over from an earlier run");
    }
    let mounts = process::unmount_under(&workdir.join("builds"));
    if mounts > 0 {
        tracing::warn!(mounts, "unmounted build roots left over from an earlier run");
    }
    // Extracted roots of tarballs that were since made again, and half-made ones.
    if let Ok(entries) = std::fs::read_dir(workdir.join("roots")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let current = name.strip_suffix(".dir").and_then(|rest| rest.rsplit_once('.')).and_then(|(key, stamp)| {
                let tar = workdir.join("roots").join(format!("{key}.tar"));
                let mtime = std::fs::metadata(tar).and_then(|m| m.modified()).ok()?;
                let secs = mtime.duration_since(std::time::SystemTime::UNIX_EPOCH).ok()?.as_secs();
                Some(secs.to_string() == stamp)
            });
            if name.ends_with(".tmpdir") || current == Some(false) || (name.ends_with(".dir") && current.is_none()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(workdir.join("builds")) {
        for e in entries.flatten() {
            tracing::warn!(dir = %e.path().display(), "removing a build dir left over from an earlier run");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The queues a session drains and the builds it starts feed.
struct Channels<'a> {
    out_tx: &'a mpsc::UnboundedSender<WorkerMsg>,
    out_rx: &'a mut mpsc::UnboundedReceiver<WorkerMsg>,
    upload_tx: &'a mpsc::Sender<WorkerMsg>,
    upload_rx: &'a mut mpsc::Receiver<WorkerMsg>,
}

enum SessionError {
    Refused(String),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for SessionError {
    fn from(e: E) -> Self {
        SessionError::Other(e.into())
    }
}

async fn session(
    opts: &WorkerOptions,
    master: &str,
    tls: Option<tokio_rustls::TlsConnector>,
    state: &Shared,
    chans: Channels<'_>,
    backoff: &mut Duration,
) -> Result<(), SessionError> {
    let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(master))
        .await
        .context("timed out connecting")?
        .with_context(|| format!("cannot connect to {master}"))?;
    stream.set_nodelay(true)?;
    match tls {
        Some(connector) => {
            let host = master.rsplit_once(':').map(|(h, _)| h).unwrap_or(master);
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let name = rustls::pki_types::ServerName::try_from(host).context("invalid master host name for TLS")?;
            let s = connector.connect(name, stream).await.context("TLS handshake failed")?;
            converse(Framed::new(s, wire::codec()), opts, master, state, chans, backoff).await
        }
        None => converse(Framed::new(stream, wire::codec()), opts, master, state, chans, backoff).await,
    }
}

async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    mut framed: Framed<S, tokio_util::codec::LengthDelimitedCodec>,
    opts: &WorkerOptions,
    master: &str,
    state: &Shared,
    chans: Channels<'_>,
    backoff: &mut Duration,
) -> Result<(), SessionError> {
    let Channels { out_tx, out_rx, upload_tx, upload_rx } = chans;
    let hello = {
        let st = lock(state);
        Hello {
            protocol: PROTOCOL_VERSION,
            name: opts.name.clone(),
            token: opts.token.clone(),
            targets: opts.targets.clone(),
            slots: opts.slots,
            version: env!("CARGO_PKG_VERSION").to_string(),
            // A build being stopped because it was abandoned is not ours to report.
            running: st
                .running
                .iter()
                .filter(|(_, r)| !*r.abandoned.lock().unwrap_or_else(|e| e.into_inner()))
                .map(|(id, _)| *id)
                .collect(),
            finished: st.unacked.keys().copied().collect(),
        }
    };
    framed.send(wire::encode(&WorkerMsg::Hello(hello))).await?;
    // With other masters to try, a silent one is left as soon as it would
    // be once connected (half the fence), before the fence stops the builds.
    let answer_within = match lock(state).fence {
        Some(fence) if opts.masters.len() > 1 => fence / 2,
        _ if opts.masters.len() > 1 => Duration::from_secs(5),
        _ => Duration::from_secs(30),
    };
    let reply = tokio::time::timeout(answer_within, framed.next())
        .await
        .context("no answer to hello")?
        .context("the master closed the connection")??;
    let heartbeat = match wire::decode::<MasterMsg>(&reply)? {
        MasterMsg::Welcome { heartbeat_ms, fence_ms, abandon } => {
            let mut st = lock(state);
            for id in abandon {
                tracing::warn!(build = id, "the master gave this build to another worker; stopping it");
                if let Some(r) = st.running.get(&id) {
                    *r.abandoned.lock().unwrap_or_else(|e| e.into_inner()) = true;
                    let _ = r.cancel.send(true);
                }
                // A finished result of it is not sent either.
                if st.unacked.remove(&id).is_some() {
                    let _ = std::fs::remove_dir_all(outbox(&opts.workdir, id));
                }
            }
            // Upload messages queued for the old connection are stale: the
            // uploads start over on this one.
            while upload_rx.try_recv().is_ok() {}
            st.last_contact = Some(Instant::now());
            st.fence = Some(Duration::from_millis(fence_ms.max(1000)));
            st.session += 1;
            // Results the master has not acknowledged go again, artifacts
            // first; an upload still under way starts over by itself.
            for result in st.unacked.values().filter(|r| !st.uploading.contains(&r.build_id)) {
                tokio::spawn(upload(opts.workdir.clone(), result.clone(), state.clone(), upload_tx.clone()));
            }
            Duration::from_millis(heartbeat_ms.max(100))
        }
        MasterMsg::Refused { reason } => return Err(SessionError::Refused(reason)),
        other => return Err(anyhow::anyhow!("unexpected first message from the master: {other:?}").into()),
    };
    tracing::info!(%master, name = %opts.name, "connected to the master");
    *backoff = Duration::from_millis(200);
    let mut beat = tokio::time::interval(heartbeat);
    // A silent master is left for another well before the fence stops the
    // builds, so they go on under the master it moves to.
    let fence = lock(state).fence.unwrap_or(Duration::from_secs(20));
    let silence = if opts.masters.len() > 1 { fence / 2 } else { fence };
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            // Step output goes before results: a build's last log lines and
            // step results must reach the master before its BuildFinished.
            biased;
            frame = framed.next() => {
                let Some(frame) = frame else { return Ok(()) };
                let frame = frame?;
                last_heard = Instant::now();
                lock(state).last_contact = Some(last_heard);
                match wire::decode::<MasterMsg>(&frame)? {
                    MasterMsg::Assign(job) => start_build(*job, opts, state, out_tx, upload_tx),
                    MasterMsg::Cancel { build_id } => {
                        let mut st = lock(state);
                        if let Some(r) = st.running.get(&build_id) {
                            tracing::info!(build = build_id, "cancelling build");
                            let _ = r.cancel.send(true);
                            // Its steps may all be done already, its result
                            // about to go out with artifacts: the upload
                            // that follows is cancelled too.
                            st.cancelled_uploads.insert(build_id);
                        } else if st.unacked.contains_key(&build_id) {
                            tracing::info!(build = build_id, "cancelling build during its upload");
                            st.cancelled_uploads.insert(build_id);
                        }
                    }
                    MasterMsg::Ack { build_id } => {
                        {
                            let mut st = lock(state);
                            st.unacked.remove(&build_id);
                            st.cancelled_uploads.remove(&build_id);
                        }
                        let _ = tokio::fs::remove_dir_all(outbox(&opts.workdir, build_id)).await;
                    }
                    MasterMsg::Ping | MasterMsg::Welcome { .. } | MasterMsg::Refused { .. } => {}
                }
            }
            Some(msg) = out_rx.recv() => framed.send(wire::encode(&msg)).await?,
            Some(msg) = upload_rx.recv() => framed.send(wire::encode(&msg)).await?,
            _ = beat.tick() => {
                if last_heard.elapsed() > silence {
                    return Err(anyhow::anyhow!("the master has been silent for {:?}", last_heard.elapsed()).into());
                }
                framed.send(wire::encode(&WorkerMsg::Heartbeat)).await?
            }
        }
    }
}

fn start_build(
    job: kiln_proto::wire::Job,
    opts: &WorkerOptions,
    state: &Shared,
    out_tx: &mpsc::UnboundedSender<WorkerMsg>,
    upload_tx: &mpsc::Sender<WorkerMsg>,
) {
    let id = job.build_id;
    let stopping = match lock(state).running.get(&id) {
        None => false,
        // Already running it (a repeated assign): nothing to do.
        Some(r) if !*r.abandoned.lock().unwrap_or_else(|e| e.into_inner()) => return,
        Some(_) => true,
    };
    if stopping {
        // An abandoned copy of this build is still being stopped: start the
        // new attempt once it is gone (they share the build's directories).
        let (opts, state, out_tx, upload_tx) = (opts.clone(), state.clone(), out_tx.clone(), upload_tx.clone());
        tokio::spawn(async move {
            for _ in 0..600 {
                if !lock(&state).running.contains_key(&id) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            start_build(job, &opts, &state, &out_tx, &upload_tx);
        });
        return;
    }
    tracing::info!(build = id, component = %job.component, target = %job.target, "starting build");
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let abandoned = Arc::new(Mutex::new(false));
    let uid = {
        let mut st = lock(state);
        st.running.insert(id, RunningBuild { cancel: cancel_tx, abandoned: abandoned.clone() });
        st.free_uids.pop()
    };
    if uid.is_none() && !opts.build_uids.is_empty() {
        tracing::warn!(build = id, "no build uid is free; this build runs as the build user");
    }
    // A uid of its own for this build, when the worker has a range.
    let sandbox = opts.sandbox.clone().map(|mut s| {
        if let (Some(uid), Some(_)) = (uid, s.user) {
            s.user = Some(process::BuildUser { uid, gid: uid });
        }
        s
    });
    let (steps, spares) = {
        let st = lock(state);
        (st.steps.clone(), st.spares.clone())
    };
    let ctx = runner::BuildContext {
        steps,
        spares,
        worker_dir: opts.workdir.clone(),
        root_cache: opts.root_cache.clone(),
        sandbox,
        tree_handed_over: false,
        worker_name: opts.name.clone(),
        out: out_tx.clone(),
        cancel: cancel_rx,
    };
    let state = state.clone();
    let upload_tx = upload_tx.clone();
    let workdir = opts.workdir.clone();
    tokio::spawn(async move {
        let result = runner::run_build(job, ctx).await;
        tracing::info!(build = id, state = %result.state, "build finished");
        let dropped = {
            let mut st = lock(&state);
            st.running.remove(&id);
            // Nothing of the build runs any more (its namespace is gone).
            st.free_uids.extend(uid);
            let dropped = *abandoned.lock().unwrap_or_else(|e| e.into_inner());
            if !dropped {
                st.unacked.insert(id, result.clone());
            }
            dropped
        };
        if dropped {
            let _ = tokio::fs::remove_dir_all(outbox(&workdir, id)).await;
            return;
        }
        upload(workdir, result, state, upload_tx).await;
    });
}

fn outbox(workdir: &std::path::Path, build_id: i64) -> PathBuf {
    workdir.join("outbox").join(build_id.to_string())
}

/// Sends a finished build's artifacts, then its result. A file is started
/// over if the connection was replaced while it was being sent (the master
/// drops the pieces of the broken upload and checks the whole file).
async fn upload(workdir: PathBuf, result: BuildResult, state: Shared, tx: mpsc::Sender<WorkerMsg>) {
    let id = result.build_id;
    if !lock(&state).uploading.insert(id) {
        return;
    }
    send_artifacts_and_result(&workdir, result, &state, &tx).await;
    lock(&state).uploading.remove(&id);
}

async fn send_artifacts_and_result(
    workdir: &std::path::Path,
    result: BuildResult,
    state: &Shared,
    tx: &mpsc::Sender<WorkerMsg>,
) {
    let id = result.build_id;
    let dir = outbox(workdir, id);
    let mut buf = vec![0u8; kiln_proto::wire::ARTIFACT_CHUNK];
    // When the connection is replaced, every file is sent again: pieces of
    // files already queued may have been lost with the old connection.
    let mut result = result;
    'all: loop {
        let session = lock(state).session;
        for name in &result.artifacts {
            match send_file(&dir, name, id, session, state, tx, &mut buf).await {
                Sent::Whole | Sent::Unreadable => {}
                Sent::Restart => continue 'all,
                Sent::Cancelled => break 'all,
                Sent::Closed => return,
            }
        }
        if lock(state).session == session {
            break;
        }
    }
    if lock(state).cancelled_uploads.contains(&id) && result.state != kiln_core::BuildState::Cancelled {
        // The build ends cancelled; what it produced is not kept.
        result.state = kiln_core::BuildState::Cancelled;
        result.reason = Some("cancelled during the upload".into());
        result.artifacts.clear();
        lock(state).unacked.insert(id, result.clone());
    }
    let _ = tx.send(WorkerMsg::BuildFinished(result)).await;
}

enum Sent {
    Whole,
    /// The file cannot be read; the master will find it missing.
    Unreadable,
    /// The connection was replaced meanwhile.
    Restart,
    /// The build was cancelled meanwhile.
    Cancelled,
    Closed,
}

async fn send_file(
    dir: &std::path::Path,
    name: &str,
    id: i64,
    session: u64,
    state: &Shared,
    tx: &mpsc::Sender<WorkerMsg>,
    buf: &mut [u8],
) -> Sent {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncReadExt;
    let unreadable = |e: std::io::Error| {
        tracing::error!(build = id, artifact = %name, error = %e, "cannot read an artifact");
        Sent::Unreadable
    };
    let mut file = match tokio::fs::File::open(dir.join(name)).await {
        Ok(f) => f,
        Err(e) => return unreadable(e),
    };
    let (mut offset, mut hash) = (0u64, Sha256::new());
    loop {
        let n = match file.read(buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return unreadable(e),
        };
        {
            let st = lock(state);
            if st.cancelled_uploads.contains(&id) {
                return Sent::Cancelled;
            }
            if st.session != session {
                return Sent::Restart;
            }
        }
        hash.update(&buf[..n]);
        let data = base64::engine::general_purpose::STANDARD.encode(&buf[..n]);
        let chunk = WorkerMsg::ArtifactChunk { build_id: id, name: name.to_string(), offset, data };
        if tx.send(chunk).await.is_err() {
            return Sent::Closed;
        }
        offset += n as u64;
    }
    if lock(state).session != session {
        return Sent::Restart;
    }
    let sha256 = hex::encode(hash.finalize());
    let done = WorkerMsg::ArtifactDone { build_id: id, name: name.to_string(), size: offset, sha256 };
    if tx.send(done).await.is_err() {
        return Sent::Closed;
    }
    Sent::Whole
}

fn tls_connector(
    ca: &std::path::Path,
    identity: Option<&(PathBuf, PathBuf)>,
) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let roots = kiln_proto::tls::roots(ca)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        None => config.with_no_client_auth(),
        Some((cert, key)) => {
            let (certs, key) = (kiln_proto::tls::certificates(cert)?, kiln_proto::tls::private_key(key)?);
            config.with_client_auth_cert(certs, key).context("the client certificate and key do not fit together")?
        }
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Whether `master` (`HOST:PORT`) names this machine: a loopback address or
/// `localhost`. Any other may be reached across a network.
fn master_is_loopback(master: &str) -> bool {
    let host = master.rsplit_once(':').map_or(master, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod loopback_tests {
    use super::master_is_loopback;

    #[test]
    fn only_this_machine_is_loopback() {
        for m in ["127.0.0.1:7001", "[::1]:7001", "localhost:7001", "127.8.0.1:1"] {
            assert!(master_is_loopback(m), "{m}");
        }
        for m in ["10.0.0.5:7001", "master.example.org:7001", "[2001:db8::1]:7001"] {
            assert!(!master_is_loopback(m), "{m}");
        }
    }
}
