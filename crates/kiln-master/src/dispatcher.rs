//! The dispatcher: the one task that decides what runs where.
//!
//! Every change to the queue goes through here, one event at a time (worker
//! hellos and messages, new requests, cancels, ticks), so there are no races
//! between deciding and recording. It keeps the queue in memory for speed;
//! the database stays the source of truth: it is written before a decision
//! is acted on, and the in-memory view is rebuilt from it at start.
//!
//! Invariant: a build is dispatched once. It is claimed by a conditional
//! UPDATE before its `Assign` is sent, and it is only re-queued after its
//! worker has been away for `worker_timeout`; a worker that comes back with
//! a build that was re-queued or cancelled meanwhile is told to abandon it.

use crate::clock::{now_us, rfc3339};
use crate::publisher::PublishRequest;
use crate::shared::Shared;
use crate::source::SourceCache;
use kiln_core::config::Source;
use kiln_core::props::{Properties, Property, PropertySource};
use kiln_core::schedule::{pick_worker, readiness, Readiness, WorkerLoad};
use kiln_core::BuildState;
use kiln_db::{BuildRow, Write};
use kiln_proto::api::WorkerInfo;
use kiln_proto::wire::{BuildResult, Hello, Job, JobStep, MasterMsg, StepResult, WorkerMsg, PROTOCOL_VERSION};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

pub enum Event {
    /// A worker connected and said hello; the reply is the list of builds it
    /// should abandon, or why it is refused.
    Hello {
        conn: u64,
        hello: Box<Hello>,
        address: String,
        /// The worker its client certificate names, when it showed one.
        certified: Option<String>,
        tx: UnboundedSender<MasterMsg>,
        reply: oneshot::Sender<Result<Vec<i64>, String>>,
    },
    FromWorker {
        conn: u64,
        worker: String,
        msg: WorkerMsg,
    },
    /// A worker's connection carried something (log output, artifact
    /// pieces): it is alive even if its heartbeat waits behind that.
    Seen {
        conn: u64,
        worker: String,
    },
    Gone {
        conn: u64,
        worker: String,
    },
    /// New builds were stored as queued.
    Queued(Vec<BuildRow>),
    Cancel {
        build_id: i64,
        by: String,
        reply: oneshot::Sender<CancelOutcome>,
    },
    ConfigChanged,
    /// The publisher finished with a build's packages.
    Published {
        build_id: i64,
        outcome: Result<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Removed from the queue, or ended while its worker was away.
    Cancelled,
    /// The worker was told to stop it; the build ends `cancelled` shortly.
    Stopping,
    AlreadyFinished(BuildState),
    NotFound,
    Failed(String),
}

struct QueuedBuild {
    component: String,
    target: String,
    depends_on: Vec<i64>,
    properties: Properties,
}

struct RunningBuild {
    worker: String,
    component: String,
    target: String,
    properties: Properties,
    steps_done: HashSet<u32>,
    /// Who asked to cancel it, for the reason recorded.
    cancelled_by: Option<String>,
    /// Its worker is done; its packages are with the publisher.
    publishing: bool,
}

struct Conn {
    conn: u64,
    tx: UnboundedSender<MasterMsg>,
    targets: Vec<String>,
    slots: usize,
    running: HashSet<i64>,
    last_seen: Instant,
}

pub struct Dispatcher {
    shared: Arc<Shared>,
    queue: BTreeMap<i64, QueuedBuild>,
    running: HashMap<i64, RunningBuild>,
    workers: HashMap<String, Conn>,
    /// Running builds whose worker is away, with the time they are re-queued.
    orphans: HashMap<i64, Instant>,
    /// Label and state of builds that others depend on.
    known: HashMap<i64, (String, BuildState)>,
    sources: SourceCache,
    last_poll: Instant,
    /// A build finished or joined the queue since the last look for
    /// builds whose dependencies failed.
    deps_dirty: bool,
    /// Step and build results not yet written; written together by `flush`
    /// before anything is acted on.
    pending: Vec<Write>,
    /// Results to acknowledge to their workers once written.
    pending_acks: Vec<(String, i64)>,
}

/// How often the dispatcher looks for work it was not told about (builds
/// queued by another master sharing the database).
const POLL: Duration = Duration::from_secs(2);

impl Dispatcher {
    pub fn new(shared: Arc<Shared>) -> Self {
        Dispatcher {
            shared,
            queue: BTreeMap::new(),
            running: HashMap::new(),
            workers: HashMap::new(),
            orphans: HashMap::new(),
            known: HashMap::new(),
            sources: SourceCache::default(),
            last_poll: Instant::now(),
            deps_dirty: true,
            pending: Vec::new(),
            pending_acks: Vec::new(),
        }
    }

    fn timeout(&self) -> Duration {
        self.shared.farm().cfg.master.worker_timeout
    }

    /// Rebuilds the in-memory view from the database: queued builds join the
    /// queue; running ones wait for their worker to come back.
    pub async fn recover(&mut self) -> anyhow::Result<()> {
        let rows = self.shared.store.unfinished_builds().await?;
        let publishing: HashSet<i64> = self.shared.store.publishing_builds().await?.into_iter().collect();
        let deadline = Instant::now() + self.timeout();
        for b in rows {
            match b.state {
                BuildState::Queued => self.enqueue(b),
                BuildState::Running if publishing.contains(&b.id) => {
                    tracing::info!(build = b.id, "build was being published before restart; publishing again");
                    self.known.insert(b.id, (format!("{}@{}", b.component, b.target), BuildState::Running));
                    self.running.insert(
                        b.id,
                        RunningBuild {
                            worker: String::new(),
                            component: b.component,
                            target: b.target,
                            properties: b.properties,
                            steps_done: HashSet::new(),
                            cancelled_by: None,
                            publishing: true,
                        },
                    );
                    let _ = self.shared.publisher.send(PublishRequest::Build(b.id));
                }
                BuildState::Running => {
                    tracing::info!(
                        build = b.id,
                        worker = b.worker.as_deref().unwrap_or("?"),
                        "build was running before restart; waiting for its worker"
                    );
                    self.orphans.insert(b.id, deadline);
                    self.running.insert(
                        b.id,
                        RunningBuild {
                            worker: b.worker.clone().unwrap_or_default(),
                            component: b.component,
                            target: b.target,
                            properties: b.properties,
                            steps_done: HashSet::new(),
                            cancelled_by: None,
                            publishing: false,
                        },
                    );
                }
                _ => {}
            }
        }
        self.load_dependency_states().await;
        self.publish_workers();
        Ok(())
    }

    pub async fn run(mut self, mut rx: UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    self.handle(ev).await;
                    // Take whatever else is waiting before deciding once.
                    for _ in 0..256 {
                        match rx.try_recv() {
                            Ok(ev) => self.handle(ev).await,
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => {
                    self.flush().await;
                    self.tick().await;
                }
            }
            self.flush().await;
            self.dispatch().await;
        }
    }

    fn enqueue(&mut self, b: BuildRow) {
        self.deps_dirty = true;
        self.known.insert(b.id, (format!("{}@{}", b.component, b.target), BuildState::Queued));
        self.queue.insert(
            b.id,
            QueuedBuild {
                component: b.component,
                target: b.target,
                depends_on: b.depends_on,
                properties: b.properties,
            },
        );
    }

    /// Makes sure the state of every dependency of a queued build is known.
    async fn load_dependency_states(&mut self) {
        let missing: Vec<i64> = self
            .queue
            .values()
            .flat_map(|q| q.depends_on.iter().copied())
            .filter(|d| !self.known.contains_key(d))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            return;
        }
        for id in missing {
            match self.shared.store.build(id).await {
                Ok(Some(b)) => {
                    self.known.insert(id, (format!("{}@{}", b.component, b.target), b.state));
                }
                Ok(None) => {
                    self.known.insert(id, (format!("#{id}"), BuildState::Skipped));
                }
                Err(e) => tracing::error!(error = %e, "cannot read dependency state"),
            }
        }
    }

    fn set_state(&mut self, id: i64, state: BuildState) {
        self.shared.changed();
        if let Some(entry) = self.known.get_mut(&id) {
            entry.1 = state;
        }
        if state.is_finished() {
            self.deps_dirty = true;
        }
    }

    /// Writes pending results in one transaction, then acknowledges them.
    async fn flush(&mut self) {
        if !self.pending.is_empty() {
            let writes = std::mem::take(&mut self.pending);
            if let Err(e) = self.shared.store.apply(&writes).await {
                // Keep them (and hold the acks, so workers keep their results)
                // and try again at the next flush.
                tracing::error!(error = %e, writes = writes.len(), "cannot record build results; will retry");
                let newer = std::mem::replace(&mut self.pending, writes);
                self.pending.extend(newer);
                return;
            }
            self.shared.changed();
            for w in &writes {
                if let Write::Finish { build_id, .. } = w {
                    crate::notify::build_finished(&self.shared, *build_id);
                }
            }
        }
        for (worker, build_id) in self.pending_acks.drain(..) {
            if let Some(w) = self.workers.get(&worker) {
                let _ = w.tx.send(MasterMsg::Ack { build_id });
            }
        }
    }

    async fn handle(&mut self, ev: Event) {
        if !matches!(ev, Event::FromWorker { .. }) {
            // Everything else reads or writes the store directly.
            self.flush().await;
        }
        match ev {
            Event::Hello { conn, hello, address, certified, tx, reply } => {
                self.hello(conn, *hello, address, certified, tx, reply).await
            }
            Event::Seen { conn, worker } => {
                if let Some(w) = self.workers.get_mut(&worker).filter(|w| w.conn == conn) {
                    w.last_seen = Instant::now();
                }
            }
            Event::FromWorker { conn, worker, msg } => {
                let Some(w) = self.workers.get_mut(&worker) else {
                    return;
                };
                if w.conn != conn {
                    return;
                }
                w.last_seen = Instant::now();
                self.worker_message(&worker, msg).await;
            }
            Event::Gone { conn, worker } => {
                if self.workers.get(&worker).is_some_and(|w| w.conn == conn) {
                    tracing::warn!(worker = %worker, "worker disconnected");
                    self.drop_worker(&worker);
                }
            }
            Event::Queued(rows) => {
                let mut fresh = Vec::new();
                for b in rows {
                    if !self.queue.contains_key(&b.id) && !self.running.contains_key(&b.id) {
                        fresh.push(b.id);
                        self.enqueue(b);
                    }
                }
                self.load_dependency_states().await;
                self.collapse(&fresh).await;
            }
            Event::Cancel { build_id, by, reply } => {
                let outcome = self.cancel(build_id, &by).await;
                let _ = reply.send(outcome);
            }
            Event::ConfigChanged => self.publish_workers(),
            Event::Published { build_id, outcome } => self.published(build_id, outcome),
        }
    }

    async fn hello(
        &mut self,
        conn: u64,
        hello: Hello,
        address: String,
        certified: Option<String>,
        tx: UnboundedSender<MasterMsg>,
        reply: oneshot::Sender<Result<Vec<i64>, String>>,
    ) {
        if hello.protocol != PROTOCOL_VERSION {
            let _ = reply.send(Err(format!(
                "protocol version {} is not supported; this master speaks {PROTOCOL_VERSION}",
                hello.protocol
            )));
            return;
        }
        let farm = self.shared.farm();
        // A certificate from the workers' CA that names this worker, or its token.
        let declared = farm.cfg.workers.iter().any(|w| w.name == hello.name);
        let by_cert = certified.as_deref() == Some(hello.name.as_str());
        let by_token = farm.worker_tokens.get(&hello.name).is_some_and(|t| crate::auth::tokens_match(t, &hello.token));
        if let Some(other) = certified.as_deref().filter(|c| *c != hello.name) {
            tracing::warn!(worker = %hello.name, certificate = other, address = %address, "refused a worker: its certificate names another");
            let _ = reply.send(Err(format!("the certificate names worker {other}, not {}", hello.name)));
            return;
        }
        if !(declared && (by_cert || by_token)) {
            tracing::warn!(worker = %hello.name, address = %address, "refused a worker: unknown name or wrong token");
            let _ = reply.send(Err("unknown worker or wrong token".into()));
            return;
        }
        let name = hello.name.clone();
        if self.workers.contains_key(&name) {
            tracing::warn!(worker = %name, "worker connected again; dropping its old connection");
            self.drop_worker(&name);
        }
        let unacked: HashSet<i64> = hello.finished.iter().copied().collect();
        let mut abandon = Vec::new();
        let mut running = HashSet::new();
        // Builds it still runs, or finished and is about to report: they stay its own.
        for id in hello.running.iter().chain(&hello.finished) {
            if self.running.get(id).is_some_and(|r| r.worker == name) {
                running.insert(*id);
                self.orphans.remove(id);
                self.shared.logs.begin(*id, &name);
                tracing::info!(build = id, worker = %name, "worker resumed a running build");
            } else {
                abandon.push(*id);
            }
        }
        // Builds this worker had but no longer knows about (it restarted).
        let lost: Vec<i64> = self
            .running
            .iter()
            .filter(|(id, r)| r.worker == name && !running.contains(id) && !unacked.contains(id))
            .map(|(id, _)| *id)
            .collect();
        self.workers.insert(
            name.clone(),
            Conn {
                conn,
                tx,
                targets: hello.targets.clone(),
                slots: hello.slots.max(1) as usize,
                running,
                last_seen: Instant::now(),
            },
        );
        {
            let mut infos = self.shared.workers();
            let info = infos.entry(name.clone()).or_insert_with(|| empty_info(&name));
            info.connected = true;
            info.targets = hello.targets.clone();
            info.slots = i64::from(hello.slots.max(1));
            info.version = Some(hello.version.clone());
            info.address = Some(address.clone());
            info.last_seen = Some(rfc3339(now_us()));
        }
        tracing::info!(worker = %name, address = %address, targets = ?hello.targets, slots = hello.slots, "worker connected");
        let _ = reply.send(Ok(abandon));
        // A cancel asked for while the worker was away is sent again.
        if let Some(w) = self.workers.get(&name) {
            for id in &w.running {
                if self.running.get(id).is_some_and(|r| r.cancelled_by.is_some()) {
                    let _ = w.tx.send(MasterMsg::Cancel { build_id: *id });
                }
            }
        }
        for id in lost {
            self.requeue(id, &format!("worker {name} restarted and lost the build")).await;
        }
        self.publish_workers();
    }

    async fn worker_message(&mut self, worker: &str, msg: WorkerMsg) {
        match msg {
            // Output and artifacts go straight to their stores (workers.rs).
            WorkerMsg::Hello(_)
            | WorkerMsg::Heartbeat
            | WorkerMsg::Log { .. }
            | WorkerMsg::ArtifactChunk { .. }
            | WorkerMsg::ArtifactDone { .. } => {}
            WorkerMsg::StepStarted { build_id, step } => {
                if !self.is_running_on(build_id, worker) {
                    return;
                }
                self.pending.push(Write::StepStarted { build_id, idx: i64::from(step), at: now_us() });
            }
            WorkerMsg::StepFinished(r) => self.step_finished(worker, r).await,
            WorkerMsg::BuildFinished(r) => self.build_finished(worker, r).await,
        }
    }

    fn is_running_on(&self, build_id: i64, worker: &str) -> bool {
        self.running.get(&build_id).is_some_and(|r| r.worker == worker)
    }

    async fn step_finished(&mut self, worker: &str, r: StepResult) {
        if !self.is_running_on(r.build_id, worker) {
            return;
        }
        let Some(run) = self.running.get_mut(&r.build_id) else {
            return;
        };
        if !run.steps_done.insert(r.step) {
            return;
        }
        let size = self.shared.logs.finish_step(r.build_id, r.step).unwrap_or_else(|e| {
            tracing::error!(build = r.build_id, step = r.step, error = %e, "cannot compress step log");
            self.shared.logs.size(r.build_id, r.step)
        });
        self.pending.push(Write::StepFinished {
            build_id: r.build_id,
            idx: i64::from(r.step),
            state: r.state,
            exit_code: r.exit_code,
            at: now_us(),
            log_size: size as i64,
        });
        if let Some((name, value)) = r.property {
            if kiln_core::names::check_property_name(&name).is_ok() {
                run.properties.insert(name, Property { value, source: PropertySource::Step });
                self.pending.push(Write::Properties { build_id: r.build_id, properties: run.properties.clone() });
            }
        }
    }

    async fn build_finished(&mut self, worker: &str, r: BuildResult) {
        let id = r.build_id;
        self.pending_acks.push((worker.to_string(), id));
        if !self.is_running_on(id, worker) {
            return;
        }
        // Steps whose own message was lost (e.g. across a reconnect).
        for s in r.steps.iter().filter(|s| s.state.is_finished()) {
            self.step_finished(worker, s.clone()).await;
        }
        let state = match r.state {
            s @ (BuildState::Succeeded | BuildState::Failed | BuildState::Cancelled) => s,
            other => {
                tracing::warn!(build = id, state = %other, "worker reported an unfinished state as final; recording failed");
                BuildState::Failed
            }
        };
        let mut reason = r.reason.clone();
        let mut state = state;
        // Artifacts stored before a master restart count as arrived too.
        let mut expected = r.artifacts.clone();
        if !expected.is_empty() {
            if let Ok(rows) = self.shared.store.artifacts_of(&[id]).await {
                expected.retain(|name| !rows.iter().any(|a| &a.name == name));
            }
        }
        if let Some(failure) = self.shared.artifacts.finish_build(id, &expected) {
            if state == BuildState::Succeeded {
                state = BuildState::Failed;
                reason = Some(format!("upload failed: {failure}"));
            }
        }
        if state == BuildState::Cancelled {
            if let Some(by) = self.running.get(&id).and_then(|run| run.cancelled_by.as_ref()) {
                reason = Some(format!("cancelled by {by}"));
            }
        }
        self.orphans.remove(&id);
        self.shared.logs.end(id);
        if let Some(w) = self.workers.get_mut(worker) {
            w.running.remove(&id);
        }
        if state == BuildState::Succeeded && self.has_packages(id, &r.artifacts).await {
            // Succeeded on the worker; it ends when its packages are published.
            if let Some(run) = self.running.get_mut(&id) {
                run.publishing = true;
                run.worker.clear();
            }
            self.pending.push(Write::QueuePublish { build_id: id });
            let _ = self.shared.publisher.send(PublishRequest::Build(id));
            self.publish_running(worker);
            return;
        }
        self.pending.push(Write::Finish { build_id: id, state, reason, at: now_us() });
        if let Some(run) = self.running.remove(&id) {
            tracing::info!(build = id, component = %run.component, target = %run.target, worker, state = %state, "build finished");
        }
        self.set_state(id, state);
        if let Some(w) = self.workers.get_mut(worker) {
            w.running.remove(&id);
        }
        self.publish_running(worker);
    }

    /// The farm's own repository for a deb build root: the channel the build
    /// publishes to (dev for nightlies, stable for releases), so a
    /// component builds against what its dependencies just published.
    /// The target's own `repositories` come after it, each with its key.
    fn repo_env(&self, farm: &crate::farm::LoadedFarm, target: &str, props: &Properties) -> BTreeMap<String, String> {
        use kiln_proto::wire::BuildRootRepo;
        let cfg = &farm.cfg;
        let mut env = BTreeMap::new();
        let Some(t) = cfg.target(target).filter(|t| t.family == kiln_core::config::Family::Deb) else { return env };
        let mut repos = Vec::new();
        let values: BTreeMap<String, String> = props.iter().map(|(k, p)| (k.clone(), p.value.clone())).collect();
        let channel = cfg.channels.iter().find(|c| c.accepts.takes(&values));
        if let Some((ch, key)) = channel.and_then(|ch| Some((ch, self.shared.public_keys.get(&ch.name)?))) {
            let suite = t.suite.as_deref().unwrap_or("unstable");
            let source = format!("{}/repos/{}/apt {suite} {}", cfg.master.public_url(), ch.name, ch.component);
            env.insert("KILN_APT_CHANNEL".into(), ch.name.clone());
            env.insert("KILN_APT_SOURCE".into(), source.clone());
            env.insert("KILN_APT_KEY".into(), key.clone());
            repos.push(BuildRootRepo { name: ch.name.clone(), source, key: key.clone() });
        }
        let keys = farm.repository_keys.get(target).map(Vec::as_slice).unwrap_or_default();
        for (i, (repo, key)) in t.repositories.iter().zip(keys).enumerate() {
            repos.push(BuildRootRepo { name: format!("extra-{}", i + 1), source: repo.source(), key: key.clone() });
        }
        if !repos.is_empty() {
            if let Ok(json) = serde_json::to_string(&repos) {
                env.insert(kiln_proto::wire::APT_REPOS_ENV.into(), json);
            }
        }
        env
    }

    /// Whether a build that succeeded has packages a channel will take.
    async fn has_packages(&self, id: i64, reported: &[String]) -> bool {
        let farm = self.shared.farm();
        let Some(run) = self.running.get(&id) else { return false };
        let props: std::collections::BTreeMap<String, String> =
            run.properties.iter().map(|(k, p)| (k.clone(), p.value.clone())).collect();
        if !farm.cfg.channels.iter().any(|c| c.accepts.takes(&props)) {
            return false;
        }
        if reported.iter().any(|n| crate::publisher::is_package(n)) {
            return true;
        }
        // Uploads stored before a restart are in the store, not the report.
        self.shared
            .store
            .artifacts_of(&[id])
            .await
            .is_ok_and(|rows| rows.iter().any(|a| crate::publisher::is_package(&a.name)))
    }

    /// Ends a build whose packages the publisher handled.
    fn published(&mut self, id: i64, outcome: Result<String, String>) {
        if !self.running.get(&id).is_some_and(|r| r.publishing) {
            return;
        }
        let Some(mut run) = self.running.remove(&id) else { return };
        let (state, reason, note) = match outcome {
            Ok(summary) => (BuildState::Succeeded, None, summary),
            Err(e) => (BuildState::Failed, Some(format!("publish failed: {e}")), "failed".to_string()),
        };
        run.properties.insert("published".into(), Property { value: note, source: PropertySource::Step });
        self.pending.push(Write::Properties { build_id: id, properties: run.properties.clone() });
        self.pending.push(Write::Finish { build_id: id, state, reason, at: now_us() });
        tracing::info!(build = id, component = %run.component, target = %run.target, state = %state, "build finished");
        self.set_state(id, state);
        if state == BuildState::Succeeded {
            tokio::spawn(rebuild_dependents(self.shared.clone(), id, run.component, run.target));
        }
    }

    fn drop_worker(&mut self, name: &str) {
        let Some(w) = self.workers.remove(name) else {
            return;
        };
        let deadline = Instant::now() + self.timeout();
        for id in w.running {
            self.orphans.insert(id, deadline);
        }
        if let Some(info) = self.shared.workers().get_mut(name) {
            info.connected = false;
        }
        self.publish_workers();
    }

    async fn requeue(&mut self, id: i64, reason: &str) {
        self.orphans.remove(&id);
        self.running.remove(&id);
        self.shared.logs.end(id);
        self.shared.artifacts.finish_build(id, &[]);
        match self.shared.store.requeue(id, reason).await {
            Ok(true) => {
                tracing::warn!(build = id, reason, "build re-queued");
                // The lost attempt's logs go; its artifact records went with the requeue.
                if let Err(e) = self.shared.logs.discard(id) {
                    tracing::error!(build = id, error = %e, "cannot remove the logs of the lost attempt");
                }
                if let Ok(Some(mut b)) = self.shared.store.build(id).await {
                    // What the lost attempt's steps set does not carry over.
                    let before = b.properties.len();
                    b.properties.retain(|_, p| p.source != PropertySource::Step);
                    if b.properties.len() != before {
                        self.pending.push(Write::Properties { build_id: id, properties: b.properties.clone() });
                    }
                    self.enqueue(b);
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(build = id, error = %e, "cannot re-queue build"),
        }
    }

    /// Forgets the states of finished builds nothing queued waits for, so
    /// the dispatcher's memory follows the queue, not the history.
    fn prune_known(&mut self) {
        let needed: HashSet<i64> = self.queue.values().flat_map(|q| q.depends_on.iter().copied()).collect();
        self.known.retain(|id, (_, state)| !state.is_finished() || needed.contains(id));
    }

    async fn tick(&mut self) {
        self.publish_workers();
        self.prune_known();
        let now = Instant::now();
        let timeout = self.timeout();
        let silent: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| now.duration_since(w.last_seen) > timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for name in silent {
            tracing::warn!(worker = %name, "no heartbeat for {:?}; dropping the worker", timeout);
            self.drop_worker(&name);
        }
        let expired: Vec<i64> = self.orphans.iter().filter(|(_, d)| **d <= now).map(|(id, _)| *id).collect();
        for id in expired {
            let (worker, cancelled_by) =
                self.running.get(&id).map(|r| (r.worker.clone(), r.cancelled_by.clone())).unwrap_or_default();
            match cancelled_by {
                // Its cancel never reached the worker: it ends cancelled, not re-queued.
                Some(by) => {
                    self.cancel(id, &by).await;
                }
                None => self.requeue(id, &format!("worker {worker} was lost")).await,
            }
        }
        if now.duration_since(self.last_poll) >= POLL {
            self.last_poll = now;
            match self
                .shared
                .store
                .list_builds(&kiln_db::BuildFilter {
                    state: Some(BuildState::Queued),
                    limit: 1000,
                    ..Default::default()
                })
                .await
            {
                Ok(rows) => {
                    for b in rows {
                        if !self.queue.contains_key(&b.id) && !self.running.contains_key(&b.id) {
                            self.enqueue(b);
                        }
                    }
                    self.load_dependency_states().await;
                }
                Err(e) => tracing::error!(error = %e, "cannot poll the queue"),
            }
        }
    }

    async fn cancel(&mut self, id: i64, by: &str) -> CancelOutcome {
        if self.running.get(&id).is_some_and(|r| r.publishing) {
            return CancelOutcome::Failed("its packages are being published; it cannot be cancelled now".into());
        }
        if let Some(run) = self.running.get_mut(&id) {
            if let Some(w) = self.workers.get(&run.worker) {
                let _ = w.tx.send(MasterMsg::Cancel { build_id: id });
                run.cancelled_by.get_or_insert_with(|| by.to_string());
                return CancelOutcome::Stopping;
            }
        }
        // Queued, or running on a worker that is away: end it here. A worker
        // that comes back with it is told to abandon it.
        if self.queue.contains_key(&id) || self.running.contains_key(&id) {
            let reason = format!("cancelled by {by}");
            return match self.shared.store.finish(id, BuildState::Cancelled, Some(&reason), now_us()).await {
                Ok(_) => {
                    self.queue.remove(&id);
                    self.running.remove(&id);
                    self.orphans.remove(&id);
                    self.shared.logs.end(id);
                    self.set_state(id, BuildState::Cancelled);
                    crate::notify::build_finished(&self.shared, id);
                    CancelOutcome::Cancelled
                }
                Err(e) => CancelOutcome::Failed(e.to_string()),
            };
        }
        match self.shared.store.build(id).await {
            Ok(Some(b)) if b.state.is_finished() => CancelOutcome::AlreadyFinished(b.state),
            Ok(Some(_)) => CancelOutcome::Failed("the build is handled by another master".into()),
            Ok(None) => CancelOutcome::NotFound,
            Err(e) => CancelOutcome::Failed(e.to_string()),
        }
    }

    fn readiness_of(&self, q: &QueuedBuild) -> Readiness {
        readiness(
            q.depends_on.iter().map(|d| {
                self.known.get(d).map(|(l, s)| (l.as_str(), *s)).unwrap_or(("unknown build", BuildState::Queued))
            }),
        )
    }

    /// Skips the queued builds whose dependencies failed, then starts what
    /// can start, oldest first, while workers have free slots.
    async fn dispatch(&mut self) {
        // Skips cascade (a skipped build blocks its own dependents), so
        // repeat until nothing changes. Only needed after a state change.
        while self.deps_dirty {
            self.deps_dirty = false;
            let blocked: Vec<(i64, String)> = self
                .queue
                .iter()
                .filter_map(|(id, q)| match self.readiness_of(q) {
                    Readiness::Blocked { reason } => Some((*id, reason)),
                    _ => None,
                })
                .collect();
            for (id, reason) in blocked {
                self.skip(id, &reason).await;
            }
        }
        let mut loads: Vec<(String, WorkerLoadOwned)> = self
            .workers
            .iter()
            .map(|(n, w)| {
                let load = WorkerLoadOwned { targets: w.targets.clone(), slots: w.slots, running: w.running.len() };
                (n.clone(), load)
            })
            .collect();
        let mut free: usize = loads.iter().map(|(_, l)| l.slots.saturating_sub(l.running)).sum();
        if free == 0 || self.queue.is_empty() {
            return;
        }
        let ids: Vec<i64> = self.queue.keys().copied().collect();
        for id in ids {
            if free == 0 {
                break;
            }
            let Some(q) = self.queue.get(&id) else { continue };
            if self.readiness_of(q) != Readiness::Ready {
                continue;
            }
            let view: Vec<WorkerLoad<'_>> = loads
                .iter()
                .map(|(n, l)| WorkerLoad { name: n, targets: &l.targets, slots: l.slots, running: l.running })
                .collect();
            let Some(i) = pick_worker(&view, &q.target) else {
                continue;
            };
            let worker = loads[i].0.clone();
            loads[i].1.running += 1;
            free -= 1;
            self.start(id, &worker).await;
        }
    }

    /// Build collapsing: for each new build of a component with `collapse`,
    /// older builds of the same builder still waiting, asked for with the
    /// same request properties, are skipped (the newest stands for them).
    async fn collapse(&mut self, fresh: &[i64]) {
        let farm = self.shared.farm();
        let request_props = |q: &QueuedBuild| -> BTreeMap<String, String> {
            q.properties
                .iter()
                .filter(|(_, p)| p.source == PropertySource::Request)
                .map(|(k, p)| (k.clone(), p.value.clone()))
                .collect()
        };
        for &id in fresh {
            let Some(newer) = self.queue.get(&id) else { continue };
            if !farm.cfg.component(&newer.component).is_some_and(|c| c.collapse) {
                continue;
            }
            let props = request_props(newer);
            let older: Vec<i64> = self
                .queue
                .iter()
                .filter(|(other, q)| {
                    **other < id
                        && q.component == newer.component
                        && q.target == newer.target
                        && request_props(q) == props
                })
                .map(|(other, _)| *other)
                .collect();
            for old in older {
                self.skip(old, &format!("collapsed into build {id}")).await;
            }
        }
    }

    async fn skip(&mut self, id: i64, reason: &str) {
        self.queue.remove(&id);
        match self.shared.store.finish(id, BuildState::Skipped, Some(reason), now_us()).await {
            Ok(_) => {
                tracing::info!(build = id, reason, "build skipped");
                self.set_state(id, BuildState::Skipped);
                crate::notify::build_finished(&self.shared, id);
            }
            Err(e) => tracing::error!(build = id, error = %e, "cannot record skip"),
        }
    }

    async fn fail_unstarted(&mut self, id: i64, reason: &str) {
        self.queue.remove(&id);
        // A queued build cannot fail without running; claim it to the master.
        let store = &self.shared.store;
        let ok = store.claim(id, "master", now_us(), &[]).await.unwrap_or(false)
            && store.finish(id, BuildState::Failed, Some(reason), now_us()).await.unwrap_or(false);
        if ok {
            tracing::warn!(build = id, reason, "build failed before it could start");
            self.set_state(id, BuildState::Failed);
            crate::notify::build_finished(&self.shared, id);
        }
    }

    async fn start(&mut self, id: i64, worker: &str) {
        let farm = self.shared.farm();
        let Some(q) = self.queue.get(&id) else { return };
        let uploaded;
        let upload = q.properties.get(crate::uploads::UPLOAD_PROPERTY).filter(|p| p.source == PropertySource::Request);
        let component = match (farm.cfg.component(&q.component), upload) {
            // An uploaded source package: the standard pipeline over the
            // upload's files, even when a component has the same name.
            (_, Some(upload)) if upload.value.len() == 16 && upload.value.chars().all(|c| c.is_ascii_hexdigit()) => {
                let dir = farm.data_dir().join("uploads").join(&upload.value);
                uploaded = kiln_core::Component {
                    name: q.component.clone(),
                    source: Some(Source::Path(dir.display().to_string())),
                    depends_on: Vec::new(),
                    targets: None,
                    steps: Vec::new(),
                    before: Vec::new(),
                    after: Vec::new(),
                    properties: Default::default(),
                    artifacts: Vec::new(),
                    spec: None,
                    timeout: None,
                    no_output_timeout: None,
                    memory: None,
                    millicpus: None,
                    collapse: false,
                    rebuild_after: Vec::new(),
                    secrets: Default::default(),
                };
                &uploaded
            }
            (Some(c), _) => c,
            _ => {
                let reason = format!("component {} is no longer in the config", q.component);
                self.fail_unstarted(id, &reason).await;
                return;
            }
        };
        let source = match &component.source {
            Some(Source::Path(p)) => match self.sources.archive(&farm.resolve(p)) {
                Ok(a) => Some(a),
                Err(e) => {
                    self.fail_unstarted(id, &e).await;
                    return;
                }
            },
            // The worker checks the revision out itself (a first step).
            Some(Source::Git(_)) | None => None,
        };
        // A component without steps gets its family's standard pipeline.
        let (specs, artifacts, pipeline) = if component.steps.is_empty() {
            let Some(target) = farm.cfg.target(&q.target) else {
                let reason = format!("target {} is no longer in the config", q.target);
                self.fail_unstarted(id, &reason).await;
                return;
            };
            match kiln_core::pipeline::standard_steps(target, component) {
                Ok((steps, mut artifacts)) => {
                    artifacts.extend(component.artifacts.iter().cloned());
                    (steps, artifacts, true)
                }
                Err(e) => {
                    self.fail_unstarted(id, &e).await;
                    return;
                }
            }
        } else {
            (component.steps.clone(), component.artifacts.clone(), false)
        };
        let checkout = match &component.source {
            Some(Source::Git(git)) => Some(kiln_core::pipeline::checkout_step(git)),
            _ => None,
        };
        // The component's own `before`/`after` steps wrap the standard
        // pipeline; kiln's own steps keep the worker's privileges.
        let (before, after) = if pipeline { (&component.before[..], &component.after[..]) } else { (&[][..], &[][..]) };
        let steps: Vec<JobStep> = checkout
            .iter()
            .map(|s| (s, true))
            .chain(before.iter().map(|s| (s, false)))
            .chain(specs.iter().map(|s| (s, pipeline)))
            .chain(after.iter().map(|s| (s, false)))
            .map(|(s, privileged)| JobStep {
                name: s.name.clone(),
                run: s.run.clone(),
                set_property: s.set_property.clone(),
                timeout_ms: s.timeout.map(|d| d.as_millis() as u64),
                no_output_timeout_ms: s.no_output_timeout.or(component.no_output_timeout).map(|d| d.as_millis() as u64),
                env: s.env.clone(),
                halt_on_failure: s.halt_on_failure,
                always_run: s.always_run,
                privileged,
            })
            .collect();
        let mut secrets = BTreeMap::new();
        for (var, r) in &component.secrets {
            match farm.secret(r, &format!("secret {var} of component {}", component.name)) {
                Ok(v) => {
                    secrets.insert(var.clone(), v);
                }
                Err(e) => {
                    self.fail_unstarted(id, &format!("{e:#}")).await;
                    return;
                }
            }
        }
        let names: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
        match self.shared.store.claim(id, worker, now_us(), &names).await {
            Ok(true) => {}
            Ok(false) => {
                // Cancelled or taken elsewhere meanwhile.
                self.queue.remove(&id);
                if let Ok(Some(b)) = self.shared.store.build(id).await {
                    self.set_state(id, b.state);
                }
                return;
            }
            Err(e) => {
                tracing::error!(build = id, error = %e, "cannot claim build");
                return;
            }
        }
        let Some(q) = self.queue.remove(&id) else {
            return;
        };
        self.shared.logs.begin(id, worker);
        let job = Job {
            build_id: id,
            component: q.component.clone(),
            target: q.target.clone(),
            properties: q.properties.iter().map(|(k, p)| (k.clone(), p.value.clone())).collect(),
            steps,
            source_tgz: source.map(|s| s.as_str().to_owned()),
            kill_grace_ms: farm.cfg.master.kill_grace.as_millis() as u64,
            artifacts,
            timeout_ms: component.timeout.map(|d| d.as_millis() as u64),
            memory_bytes: component.memory,
            cpus: component.millicpus.map(|m| f64::from(m) / 1000.0),
            env: self.repo_env(&farm, &q.target, &q.properties),
            secrets: kiln_proto::wire::Secrets(secrets),
        };
        self.set_state(id, BuildState::Running);
        tracing::info!(build = id, component = %q.component, target = %q.target, worker, "build dispatched");
        self.running.insert(
            id,
            RunningBuild {
                worker: worker.to_string(),
                component: q.component,
                target: q.target,
                properties: q.properties,
                steps_done: HashSet::new(),
                cancelled_by: None,
                publishing: false,
            },
        );
        if let Some(w) = self.workers.get_mut(worker) {
            w.running.insert(id);
            let _ = w.tx.send(MasterMsg::Assign(Box::new(job)));
        }
        self.publish_running(worker);
    }

    /// Refreshes one worker's running builds in what `/api/v1/workers` shows.
    fn publish_running(&self, name: &str) {
        let Some(c) = self.workers.get(name) else { return };
        if let Some(info) = self.shared.workers().get_mut(name) {
            let mut r: Vec<i64> = c.running.iter().copied().collect();
            r.sort_unstable();
            info.running = r;
        }
    }

    /// Refreshes what `/api/v1/workers` shows.
    fn publish_workers(&self) {
        let farm = self.shared.farm();
        let mut infos = self.shared.workers();
        // Live pages follow changes; heartbeats alone (last_seen) are not one.
        let shape = |infos: &BTreeMap<String, WorkerInfo>| -> Vec<(String, bool, Vec<i64>)> {
            infos.values().map(|i| (i.name.clone(), i.connected, i.running.clone())).collect()
        };
        let before = shape(&infos);
        for w in &farm.cfg.workers {
            infos.entry(w.name.clone()).or_insert_with(|| empty_info(&w.name));
        }
        for (name, info) in infos.iter_mut() {
            match self.workers.get(name) {
                Some(c) => {
                    info.connected = true;
                    let mut r: Vec<i64> = c.running.iter().copied().collect();
                    r.sort_unstable();
                    info.running = r;
                }
                None => {
                    info.connected = false;
                    info.running.clear();
                }
            }
        }
        for (name, c) in &self.workers {
            if let Some(info) = infos.get_mut(name) {
                let ago = c.last_seen.elapsed();
                info.last_seen = Some(rfc3339(now_us() - ago.as_micros() as i64));
            }
        }
        if shape(&infos) != before {
            drop(infos);
            self.shared.changed();
        }
    }
}

struct WorkerLoadOwned {
    targets: Vec<String>,
    slots: usize,
    running: usize,
}

fn empty_info(name: &str) -> WorkerInfo {
    WorkerInfo {
        name: name.to_string(),
        connected: false,
        targets: Vec::new(),
        slots: 0,
        running: Vec::new(),
        last_seen: None,
        version: None,
        address: None,
    }
}

/// After `component` is published on `target` by build `id`, requests builds
/// of the components that asked to be rebuilt after it (`rebuild_after`) on
/// that target, unless the same request already builds them there. The new
/// request carries the triggering request's properties (a release rebuilds
/// as a release).
async fn rebuild_dependents(shared: Arc<Shared>, id: i64, component: String, target: String) {
    let farm = shared.farm();
    let wanted: Vec<String> = farm
        .cfg
        .components
        .iter()
        .filter(|c| c.rebuild_after.contains(&component) && farm.cfg.builds_on(c, &target))
        .map(|c| c.name.clone())
        .collect();
    if wanted.is_empty() {
        return;
    }
    let Ok(Some(build)) = shared.store.build(id).await else { return };
    let siblings = shared.store.request_builds(build.request_id).await.unwrap_or_default();
    let given: BTreeMap<String, String> = build
        .properties
        .iter()
        .filter(|(k, p)| p.source == PropertySource::Request && k.as_str() != crate::uploads::UPLOAD_PROPERTY)
        .map(|(k, p)| (k.clone(), p.value.clone()))
        .collect();
    for dependent in wanted {
        if siblings.iter().any(|b| b.component == dependent && b.target == target) {
            continue;
        }
        let Ok(props) = crate::api::request_properties(&given, PropertySource::Request) else { return };
        let spec = kiln_core::matrix::RequestSpec {
            components: vec![dependent.clone()],
            all: false,
            targets: vec![target.clone()],
        };
        let reason = format!("rebuild after {component} was published (build {id})");
        match crate::api::submit(&shared, "rebuild", Some(&reason), &spec, props).await {
            Ok(created) => {
                tracing::info!(build = id, dependent = %dependent, request = created.request_id, "dependent rebuild requested")
            }
            Err(e) => {
                tracing::error!(build = id, dependent = %dependent, error = ?e, "cannot request the dependent's rebuild")
            }
        }
    }
}
