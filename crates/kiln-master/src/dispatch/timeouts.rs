//! Time: silent workers are dropped, their builds re-queued after
//! `worker_timeout`, the queue is polled for builds other masters queued,
//! the builds of masters whose lease expired are taken over, and the
//! dispatcher forgets what nothing waits for.

use super::*;

impl Dispatcher {
    pub(super) async fn requeue(&mut self, id: i64, reason: &str) {
        // What the lost attempt's steps set does not carry over; gone in the
        // same statement, before another master can claim the build again.
        let properties = self.running.get(&id).map(|r| {
            let mut p = r.properties.clone();
            p.retain(|_, p| p.source != PropertySource::Step);
            p
        });
        self.orphans.remove(&id);
        self.running.remove(&id);
        self.shared.logs.end(id);
        self.shared.artifacts.finish_build(id, &[]);
        match self.shared.store.requeue(id, reason, properties.as_ref()).await {
            Ok(true) => {
                tracing::warn!(build = id, reason, "build re-queued");
                // The lost attempt's logs go; its artifact records went with the requeue.
                if let Err(e) = self.shared.logs.discard(id) {
                    tracing::error!(build = id, error = %e, "cannot remove the logs of the lost attempt");
                }
                if let Ok(Some(b)) = self.shared.store.build(id).await {
                    self.enqueue(b);
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(build = id, error = %e, "cannot re-queue build"),
        }
    }

    /// Forgets the states of finished builds nothing queued waits for, so
    /// the dispatcher's memory follows the queue, not the history.
    pub(super) fn prune_known(&mut self) {
        let needed: HashSet<i64> = self.queue.values().flat_map(|q| q.depends_on.iter().copied()).collect();
        self.known.retain(|id, (_, state)| !state.is_finished() || needed.contains(id));
    }

    pub(super) async fn tick(&mut self) {
        self.publish_workers();
        self.prune_known();
        let now = Instant::now();
        if now.duration_since(self.last_recheck) > RECHECK_UNRESOLVABLE {
            self.recheck_unresolvable();
        }
        self.overdue_checks();
        self.refresh_why_waiting();
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
            self.poll().await;
        }
    }

    /// Looks at what other masters sharing the database changed: drains,
    /// cancels asked of this master, and builds they queued. (Masters gone
    /// are fenced by the lease task.)
    pub(super) async fn poll(&mut self) {
        self.last_poll = Instant::now();
        self.load_drains().await;
        self.cancels_from_other_masters().await;
        match self
            .shared
            .store
            .list_builds(&kiln_db::BuildFilter { state: Some(BuildState::Queued), limit: 1000, ..Default::default() })
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
        self.refresh_dependency_states().await;
    }

    /// Reads again the state of dependencies this master does not run
    /// itself: another master may have ended them.
    async fn refresh_dependency_states(&mut self) {
        let elsewhere: Vec<i64> = self
            .known
            .iter()
            .filter(|(id, (_, state))| {
                !state.is_finished() && !self.queue.contains_key(id) && !self.running.contains_key(id)
            })
            .map(|(id, _)| *id)
            .collect();
        if elsewhere.is_empty() {
            return;
        }
        match self.shared.store.builds_by_ids(&elsewhere).await {
            Ok(rows) => {
                for b in rows {
                    if b.state.is_finished() {
                        self.set_state(b.id, b.state);
                    } else if let Some(entry) = self.known.get_mut(&b.id) {
                        entry.1 = b.state;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the state of dependencies"),
        }
    }
}
