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

mod assign;
mod masters;
mod queue;
mod registry;
mod results;
mod timeouts;

use crate::clock::{now_us, rfc3339};
use crate::events::{CancelOutcome, Event, PublishOutcome, PublishRequest};
use crate::shared::Shared;
use crate::source::SourceCache;
use kiln_core::builddeps::Verdict;
use kiln_core::config::Source;
use kiln_core::job::{steps_for, PlannedStep};
use kiln_core::props::{Properties, Property, PropertySource};
use kiln_core::schedule::{
    dispatch_order, pick_worker, priority_of, readiness, why_waiting, FarmView, InLine, QueuedView, Readiness, Waiting,
    WorkerLoad,
};
use kiln_core::BuildState;
use kiln_db::{BuildRow, Write};
use kiln_proto::api::WorkerInfo;
use kiln_proto::wire::{BuildResult, Hello, Job, JobStep, MasterMsg, StepResult, WorkerMsg};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

struct QueuedBuild {
    request: i64,
    component: String,
    target: String,
    depends_on: Vec<i64>,
    properties: Properties,
    /// Where the check of its build dependencies stands.
    check: DepsCheck,
}

/// The check of a queued deb build's build dependencies (see `buildable`).
enum DepsCheck {
    /// To be asked for once it is ready.
    Due,
    /// Asked for, when, and in which publish generation; the build waits
    /// for the answer.
    Asked { waiting: Waiting, since: Instant, generation: u64 },
    /// Not needed, or it can be built (or could not be checked).
    Passed,
    /// It cannot be built with what its build root would see.
    Unresolvable(Waiting),
}

struct RunningBuild {
    worker: String,
    component: String,
    target: String,
    properties: Properties,
    steps_done: HashSet<u32>,
    /// What its worker may report (properties, steps, artifacts).
    allowed: assign::Allowed,
    /// Who asked to cancel it, for the reason recorded.
    cancelled_by: Option<String>,
    /// Its worker is done; its packages are with the publisher.
    publishing: bool,
    /// When it was dispatched (or found running at a restart).
    started: Instant,
}

struct Conn {
    conn: u64,
    tx: UnboundedSender<MasterMsg>,
    /// The targets it said it serves.
    claimed: Vec<String>,
    /// Those of them the config lets it serve (`[[worker]] targets`).
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
    /// Builds dispatched so far of each request that still has builds
    /// queued: whose turn it is among equal priorities.
    dispatched: HashMap<i64, u64>,
    /// Drained workers (from the store): they take nothing new.
    drained: HashMap<String, kiln_db::DrainRow>,
    /// How long builds for each target typically take, for estimates.
    typical: HashMap<String, Duration>,
    /// Where build-dependency checks are asked for (none: not checked).
    checker: Option<UnboundedSender<crate::events::Check>>,
    /// When unresolvable builds were last checked again regardless of
    /// publishes (the archives' lists change too).
    last_recheck: Instant,
    /// Bumped by every publish: an "unresolvable" verdict asked for in an
    /// older generation may have missed what was just published.
    check_generation: u64,
    /// The queue changed since `Shared::waiting` was last written, and when that was.
    why_stale: bool,
    last_why: Instant,
}

/// How often the dispatcher looks for work it was not told about (builds
/// queued by another master sharing the database).
const POLL: Duration = Duration::from_secs(2);

/// How often unresolvable builds are checked again without a publish (the
/// archives' lists are fetched again only when older than the target's
/// `lists_max_age`).
const RECHECK_UNRESOLVABLE: Duration = Duration::from_secs(600);

/// How often, at most, the dispatcher says again why queued builds wait.
const WHY_EVERY: Duration = Duration::from_millis(200);

/// How long a build waits for its build-dependency check before it goes
/// ahead unchecked (the checker is stuck or gone).
const CHECK_DEADLINE: Duration = Duration::from_secs(900);

/// How many recently finished builds seed the typical durations at start.
const RECENT_DURATIONS: i64 = 2000;

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
            dispatched: HashMap::new(),
            drained: HashMap::new(),
            typical: HashMap::new(),
            checker: None,
            last_recheck: Instant::now(),
            check_generation: 0,
            why_stale: true,
            last_why: Instant::now(),
        }
    }

    /// Checks the build dependencies of ready deb builds through `checker`
    /// before they go to a worker.
    pub fn check_build_deps_with(&mut self, checker: UnboundedSender<crate::events::Check>) {
        self.checker = Some(checker);
    }

    fn timeout(&self) -> Duration {
        self.shared.farm().cfg.master.worker_timeout
    }

    /// Rebuilds the in-memory view from the database: queued builds join the
    /// queue; running ones this master owns (see `masters`) wait for their
    /// worker to come back, or for the publisher.
    pub async fn recover(&mut self) -> anyhow::Result<()> {
        // No worker is connected to this master yet (or any more).
        self.shared.store.forget_worker_sessions().await?;
        let mine = self.running_builds_to_keep().await?;
        let rows = self.shared.store.unfinished_builds().await?;
        let publishing: HashSet<i64> = self.shared.store.publishing_builds().await?.into_iter().collect();
        for b in rows {
            match b.state {
                BuildState::Queued => self.enqueue(b),
                BuildState::Running if self.running.contains_key(&b.id) => {}
                BuildState::Running if mine.as_ref().is_none_or(|m| m.contains(&b.id)) => {
                    let publish = publishing.contains(&b.id);
                    if publish {
                        tracing::info!(build = b.id, "build was being published before restart; publishing again");
                    } else {
                        tracing::info!(
                            build = b.id,
                            worker = b.worker.as_deref().unwrap_or("?"),
                            "build was running before restart; waiting for its worker"
                        );
                    }
                    self.track_running(b, publish, false);
                }
                BuildState::Running => {
                    tracing::info!(build = b.id, "build runs under another live master; left to it");
                }
                _ => {}
            }
        }
        self.load_dependency_states().await;
        self.load_drains().await;
        for (target, took) in self.shared.store.recent_durations(RECENT_DURATIONS).await? {
            let typical = self.typical.get(&target).copied();
            self.typical
                .insert(target, kiln_core::schedule::blend_duration(typical, Duration::from_micros(took as u64)));
        }
        self.publish_workers();
        Ok(())
    }

    pub async fn run(mut self, mut rx: UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pass;
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    pass = Instant::now();
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
                    pass = Instant::now();
                    self.flush().await;
                    self.tick().await;
                }
            }
            self.flush().await;
            self.dispatch().await;
            self.shared.metrics.dispatch_pass(pass.elapsed());
        }
    }

    fn enqueue(&mut self, b: BuildRow) {
        self.deps_dirty = true;
        self.known.insert(b.id, (format!("{}@{}", b.component, b.target), BuildState::Queued));
        let farm = self.shared.farm();
        let checked = self.checker.is_some()
            && farm.cfg.target(&b.target).is_some_and(|t| {
                crate::plan::component_of(&farm, &b.component, &b.properties)
                    .is_some_and(|c| kiln_core::builddeps::is_checked(t, &c))
            });
        self.queue.insert(
            b.id,
            QueuedBuild {
                request: b.request_id,
                component: b.component,
                target: b.target,
                depends_on: b.depends_on,
                properties: b.properties,
                check: if checked { DepsCheck::Due } else { DepsCheck::Passed },
            },
        );
    }

    /// Reads the drained workers from the store (the one place they are
    /// kept, shared by every master), and shows them.
    async fn load_drains(&mut self) {
        match self.shared.store.drained_workers().await {
            Ok(rows) => {
                self.drained = rows.into_iter().map(|d| (d.name.clone(), d)).collect();
                self.publish_workers();
            }
            Err(e) => tracing::error!(error = %e, "cannot read the drained workers"),
        }
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
            let began = Instant::now();
            let applied = self.shared.store.apply(&writes).await;
            self.shared.metrics.database_call("apply", began.elapsed());
            let refused = match applied {
                Ok(refused) => refused,
                Err(e) => {
                    // Keep them (and hold the acks, so workers keep their results)
                    // and try again at the next flush.
                    tracing::error!(error = %e, writes = writes.len(), "cannot record build results; will retry");
                    let newer = std::mem::replace(&mut self.pending, writes);
                    self.pending.extend(newer);
                    return;
                }
            };
            if !refused.is_empty() {
                self.disown(&refused);
            }
            self.shared.changed();
            for w in &writes {
                if let Write::Finish { build_id, .. } = w {
                    if !refused.contains(build_id) {
                        crate::reporters::build_finished(&self.shared, *build_id);
                    }
                }
            }
        }
        if self.pending_acks.is_empty() {
            return;
        }
        let acks: Vec<_> = self
            .pending_acks
            .drain(..)
            .filter_map(|(worker, build_id)| self.workers.get(&worker).map(|w| (w.tx.clone(), build_id)))
            .collect();
        // A worker drops a result once acknowledged, so the result must be
        // on disk first; the dispatcher goes on meanwhile (the sync is
        // shared with whatever else commits now).
        let store = self.shared.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.make_durable().await {
                // Unacknowledged, the workers keep their results and send
                // them again on their next connection.
                tracing::error!(error = %e, "build results not acknowledged");
                return;
            }
            for (tx, build_id) in acks {
                let _ = tx.send(MasterMsg::Ack { build_id });
            }
        });
    }

    async fn handle(&mut self, ev: Event) {
        if !matches!(ev, Event::FromWorker { .. }) {
            // Everything else reads or writes the store directly.
            self.flush().await;
        }
        match ev {
            Event::Hello { conn, hello, address, tx, reply } => self.hello(conn, *hello, address, tx, reply).await,
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
            Event::ConfigChanged => {
                self.apply_worker_targets();
                self.publish_workers();
            }
            Event::DrainsChanged { done } => {
                self.load_drains().await;
                let _ = done.send(());
            }
            Event::Published { build_id, outcome } => {
                if matches!(outcome, PublishOutcome::Published(_)) {
                    // What it published may be what an unresolvable build lacked.
                    self.recheck_unresolvable();
                }
                self.published(build_id, outcome)
            }
            Event::Checked { build_id, verdict } => self.checked(build_id, verdict),
            Event::Rejoined => self.rejoin().await,
            Event::LeaseInDoubt => self.let_workers_go(),
            Event::TookOver { master, ids } => self.took_over(&master, ids).await,
            Event::Poll => self.poll().await,
        }
    }
}
