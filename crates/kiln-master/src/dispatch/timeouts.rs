//! Time: silent workers are dropped, their builds re-queued after
//! `worker_timeout`, the queue is polled for builds other masters queued,
//! the builds of masters whose lease expired are taken over, and the
//! dispatcher forgets what nothing waits for.

use super::*;

impl Dispatcher {
    pub(super) async fn requeue(&mut self, id: i64, reason: &str) {
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
            self.last_poll = now;
            // Another master sharing the database may have drained a worker,
            // or gone (its running builds are then taken over).
            self.load_drains().await;
            self.take_over_from_gone_masters().await;
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

    /// Takes over the running builds of masters sharing the database whose
    /// lease expired: they become this master's orphans, kept for their
    /// worker to come back to this master, else re-queued after
    /// `worker_timeout` like any other.
    pub(super) async fn take_over_from_gone_masters(&mut self) {
        let Some(me) = self.shared.store.owner().map(str::to_string) else { return };
        let lease = self.shared.farm().cfg.master.lease;
        let now = now_us();
        let gone: Vec<String> = match self.shared.store.masters().await {
            Ok(ms) => {
                ms.into_iter().filter(|m| m.id != me && !crate::lease::alive(m, lease, now)).map(|m| m.id).collect()
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the masters' leases");
                return;
            }
        };
        for master in gone {
            let ids = match self.shared.store.take_over_builds(&master).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!(master = %master, error = %e, "cannot take over a gone master's builds");
                    continue;
                }
            };
            if ids.is_empty() {
                continue;
            }
            let publishing: HashSet<i64> =
                self.shared.store.publishing_builds().await.unwrap_or_default().into_iter().collect();
            let deadline = Instant::now() + self.timeout();
            for id in ids {
                let Ok(Some(b)) = self.shared.store.build(id).await else { continue };
                let publish = publishing.contains(&id);
                tracing::warn!(build = id, master = %master, "took over a build of a master whose lease expired; waiting for its worker");
                self.known.insert(id, (format!("{}@{}", b.component, b.target), BuildState::Running));
                let allowed = super::assign::allowed_now(&self.shared.farm(), &b);
                self.running.insert(
                    id,
                    RunningBuild {
                        worker: b.worker.clone().unwrap_or_default(),
                        component: b.component,
                        target: b.target,
                        properties: b.properties,
                        steps_done: HashSet::new(),
                        allowed,
                        cancelled_by: None,
                        publishing: publish,
                        started: Instant::now(),
                    },
                );
                if publish {
                    // Its worker was done; its packages were waiting for the publisher.
                    let _ = self.shared.publisher.send(crate::events::PublishRequest::Build(id));
                } else {
                    self.orphans.insert(id, deadline);
                }
            }
        }
    }
}
