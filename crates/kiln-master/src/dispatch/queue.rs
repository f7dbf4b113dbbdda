//! The queue: cancels, builds skipped because a dependency did not
//! succeed or a newer build stands for them (collapsing), build
//! dependencies checked before a deb build may go, and handing ready
//! builds to the least-loaded worker with a free slot.

use super::*;

impl Dispatcher {
    pub(super) async fn cancel(&mut self, id: i64, by: &str) -> CancelOutcome {
        if self.running.get(&id).is_some_and(|r| r.publishing) {
            return CancelOutcome::Busy("its packages are being published".into());
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
                // Another master took it (claimed it, or its worker moved there).
                Ok(false) if !self.queue.contains_key(&id) => {
                    self.disown(&HashSet::from([id]));
                    CancelOutcome::Busy("another master handles it now; ask again".into())
                }
                Ok(_) => {
                    self.queue.remove(&id);
                    self.running.remove(&id);
                    self.orphans.remove(&id);
                    self.shared.logs.end(id);
                    self.set_state(id, BuildState::Cancelled);
                    crate::reporters::build_finished(&self.shared, id);
                    CancelOutcome::Cancelled
                }
                Err(e) => CancelOutcome::Failed(e.to_string()),
            };
        }
        // Not in this master's hands: queued here by another master a
        // moment ago, or running on a worker connected to another master,
        // which is asked to stop it.
        let reason = format!("cancelled by {by}");
        match self.shared.store.build(id).await {
            Ok(Some(b)) if b.state.is_finished() => CancelOutcome::AlreadyFinished(b.state),
            Ok(Some(b)) if b.state == BuildState::Queued => {
                match self.shared.store.finish(id, BuildState::Cancelled, Some(&reason), now_us()).await {
                    Ok(true) => {
                        self.shared.changed();
                        crate::reporters::build_finished(&self.shared, id);
                        CancelOutcome::Cancelled
                    }
                    Ok(false) => CancelOutcome::Busy("it started meanwhile; ask again".into()),
                    Err(e) => CancelOutcome::Failed(e.to_string()),
                }
            }
            Ok(Some(_)) => match self.shared.store.ask_cancel(id, by).await {
                Ok(true) => CancelOutcome::Stopping,
                Ok(false) => CancelOutcome::Busy("its master was asked to cancel it already, or it just ended".into()),
                Err(e) => CancelOutcome::Failed(e.to_string()),
            },
            Ok(None) => CancelOutcome::NotFound,
            Err(e) => CancelOutcome::Failed(e.to_string()),
        }
    }

    pub(super) fn readiness_of(&self, q: &QueuedBuild) -> Readiness {
        readiness(
            q.depends_on.iter().map(|d| {
                self.known.get(d).map(|(l, s)| (l.as_str(), *s)).unwrap_or(("unknown build", BuildState::Queued))
            }),
        )
    }

    /// Skips the queued builds whose dependencies failed, starts what can
    /// start, then says why each build still queued waits.
    pub(super) async fn dispatch(&mut self) {
        self.start_what_can_start().await;
        self.why_stale = true;
        // Saying why each build waits costs a pass over the whole queue:
        // not after every event of a busy farm, a few times a second.
        if self.last_why.elapsed() >= WHY_EVERY {
            self.refresh_why_waiting();
        }
    }

    /// Says again why each queued build waits, if anything changed since.
    pub(super) fn refresh_why_waiting(&mut self) {
        if !self.why_stale {
            return;
        }
        self.why_stale = false;
        self.last_why = Instant::now();
        self.note_why_waiting();
        // Turns are kept only for requests that still wait.
        let waiting: HashSet<i64> = self.queue.values().map(|q| q.request).collect();
        self.dispatched.retain(|request, _| waiting.contains(request));
    }

    /// The queue in the order builds are offered to free slots.
    fn in_order(&self) -> Vec<i64> {
        let line: Vec<InLine> = self
            .queue
            .iter()
            .map(|(id, q)| InLine {
                id: *id,
                priority: priority_of(&q.properties),
                request: q.request,
                dispatched: self.dispatched.get(&q.request).copied().unwrap_or(0),
            })
            .collect();
        dispatch_order(&line)
    }

    /// Why each queued build waits, in dispatch order, for the API and pages.
    fn note_why_waiting(&self) {
        let loads: Vec<WorkerLoad<'_>> = self
            .workers
            .iter()
            .map(|(n, w)| WorkerLoad {
                name: n,
                targets: &w.targets,
                slots: w.slots,
                running: w.running.len(),
                drained: self.drained.contains_key(n),
            })
            .collect();
        let farm = self.shared.farm();
        let infos = self.shared.workers();
        let mut view =
            FarmView { typical: self.typical.iter().map(|(t, d)| (t.as_str(), *d)).collect(), ..FarmView::default() };
        // Known workers that are away: the targets their config allows, else
        // the ones they served when last connected.
        for info in infos.values().filter(|i| !self.workers.contains_key(&i.name)) {
            let declared = farm.cfg.worker(&info.name).and_then(|w| w.targets.as_deref());
            view.away.push((info.name.as_str(), declared.unwrap_or(&info.targets)));
        }
        for (name, w) in &self.workers {
            let left: Vec<Option<Duration>> = w
                .running
                .iter()
                .map(|id| {
                    let run = self.running.get(id)?;
                    let typical = self.typical.get(&run.target)?;
                    Some(typical.saturating_sub(run.started.elapsed()))
                })
                .collect();
            view.remaining.insert(name.as_str(), left);
        }
        let order = self.in_order();
        let views: Vec<QueuedView<'_>> = order
            .iter()
            .filter_map(|id| self.queue.get(id))
            .map(|q| QueuedView {
                target: &q.target,
                priority: priority_of(&q.properties),
                unfinished_dependency: q.depends_on.iter().find_map(|d| match self.known.get(d) {
                    Some((label, BuildState::Queued | BuildState::Running)) => Some((*d, label.as_str())),
                    Some(_) => None,
                    None => Some((*d, "unknown build")),
                }),
                held: match &q.check {
                    DepsCheck::Asked { waiting: w, .. } | DepsCheck::Unresolvable(w) => Some(w),
                    DepsCheck::Due | DepsCheck::Passed => None,
                },
            })
            .collect();
        let why = why_waiting(&views, &loads, &view);
        let map: HashMap<i64, Waiting> = order.iter().copied().zip(why).collect();
        let queue = crate::shared::WaitingQueue { order, why: map };
        *self.shared.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(queue);
    }

    /// Starts what can start, oldest first, while workers have free slots.
    async fn start_what_can_start(&mut self) {
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
        self.ask_checks();
        let mut loads: Vec<(String, WorkerLoadOwned)> = self
            .workers
            .iter()
            .map(|(n, w)| {
                let load = WorkerLoadOwned {
                    targets: w.targets.clone(),
                    slots: w.slots,
                    running: w.running.len(),
                    drained: self.drained.contains_key(n),
                };
                (n.clone(), load)
            })
            .collect();
        let mut free: usize =
            loads.iter().filter(|(_, l)| !l.drained).map(|(_, l)| l.slots.saturating_sub(l.running)).sum();
        if free == 0 || self.queue.is_empty() {
            return;
        }
        for id in self.in_order() {
            if free == 0 {
                break;
            }
            let Some(q) = self.queue.get(&id) else { continue };
            if !matches!(q.check, DepsCheck::Passed) || self.readiness_of(q) != Readiness::Ready {
                continue;
            }
            let view: Vec<WorkerLoad<'_>> = loads
                .iter()
                .map(|(n, l)| WorkerLoad {
                    name: n,
                    targets: &l.targets,
                    slots: l.slots,
                    running: l.running,
                    drained: l.drained,
                })
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

    /// Asks for the build dependencies of every ready build whose check is
    /// due to be checked (a build waiting for another is asked for once
    /// that one has succeeded: it may need what that one publishes).
    fn ask_checks(&mut self) {
        let Some(checker) = self.checker.clone() else { return };
        let due: Vec<i64> = self
            .queue
            .iter()
            .filter(|(_, q)| matches!(q.check, DepsCheck::Due) && self.readiness_of(q) == Readiness::Ready)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(q) = self.queue.get_mut(&id) else { continue };
            let check = crate::events::Check {
                build_id: id,
                component: q.component.clone(),
                target: q.target.clone(),
                properties: q.properties.clone(),
            };
            let message = format!("its build dependencies are being checked against what {} provides", q.target);
            let waiting = Waiting::Checking { message };
            q.check = DepsCheck::Asked { waiting, since: Instant::now(), generation: self.check_generation };
            if checker.send(check).is_err() {
                q.check = DepsCheck::Passed;
            }
        }
    }

    /// The answer to a build-dependency check.
    pub(super) fn checked(&mut self, id: i64, verdict: Verdict) {
        let Some(q) = self.queue.get_mut(&id) else { return };
        let DepsCheck::Asked { generation, .. } = q.check else { return };
        q.check = match verdict {
            // Something was published while it was being checked: again.
            Verdict::Unresolvable(_) if generation < self.check_generation => DepsCheck::Due,
            Verdict::Unresolvable(unmet) => {
                let message = unmet.message();
                tracing::info!(build = id, component = %q.component, target = %q.target, %message, "build is unresolvable; it waits");
                DepsCheck::Unresolvable(Waiting::Unresolvable { missing: unmet.missing_names(), message })
            }
            Verdict::Buildable | Verdict::Unknown(_) => DepsCheck::Passed,
        };
        self.shared.changed();
    }

    /// Unresolvable builds are checked again (after a publish, and now and
    /// then for the archives' own changes).
    pub(super) fn recheck_unresolvable(&mut self) {
        self.last_recheck = Instant::now();
        self.check_generation += 1;
        for q in self.queue.values_mut() {
            if matches!(q.check, DepsCheck::Unresolvable(_)) {
                q.check = DepsCheck::Due;
            }
        }
    }

    /// Builds whose check has not come back within [`CHECK_DEADLINE`] go
    /// ahead unchecked.
    pub(super) fn overdue_checks(&mut self) {
        for (id, q) in self.queue.iter_mut() {
            if matches!(q.check, DepsCheck::Asked { since, .. } if since.elapsed() > CHECK_DEADLINE) {
                tracing::warn!(build = id, "no answer from the build-dependency check; the build goes ahead unchecked");
                q.check = DepsCheck::Passed;
            }
        }
    }

    /// Build collapsing: for each new build of a component with `collapse`,
    /// older builds of the same builder still waiting, asked for with the
    /// same request properties, are skipped (the newest stands for them).
    pub(super) async fn collapse(&mut self, fresh: &[i64]) {
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

    pub(super) async fn skip(&mut self, id: i64, reason: &str) {
        self.queue.remove(&id);
        match self.shared.store.finish(id, BuildState::Skipped, Some(reason), now_us()).await {
            Ok(_) => {
                tracing::info!(build = id, reason, "build skipped");
                self.set_state(id, BuildState::Skipped);
                crate::reporters::build_finished(&self.shared, id);
            }
            Err(e) => tracing::error!(build = id, error = %e, "cannot record skip"),
        }
    }

    pub(super) async fn fail_unstarted(&mut self, id: i64, reason: &str) {
        self.queue.remove(&id);
        // A queued build cannot fail without running; claim it to the master.
        let store = &self.shared.store;
        let ok = store.claim(id, "master", now_us(), &[]).await.unwrap_or(false)
            && store.finish(id, BuildState::Failed, Some(reason), now_us()).await.unwrap_or(false);
        if ok {
            tracing::warn!(build = id, reason, "build failed before it could start");
            self.set_state(id, BuildState::Failed);
            crate::reporters::build_finished(&self.shared, id);
        }
    }
}

struct WorkerLoadOwned {
    targets: Vec<String>,
    slots: usize,
    running: usize,
    drained: bool,
}
