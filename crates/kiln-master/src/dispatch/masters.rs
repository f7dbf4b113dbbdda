//! Sharing the database with other masters: which running builds are this
//! master's (its own after a restart, those of a master whose lease
//! expired, those whose worker moved here), what it drops when another
//! master took a build, and starting afresh when its own lease was taken
//! while it was away (paused, or cut off). The rules themselves are the
//! store's (`kiln_db` masters module): every change is conditional on the
//! owner and its epoch.

use super::*;

impl Dispatcher {
    /// Tracks running build `b`, which is now this master's. Its packages
    /// go to the publisher again if they were waiting for it; otherwise it
    /// waits for its worker (`here`: the worker is connected to this
    /// master now) and is re-queued after `worker_timeout` if the worker
    /// does not come.
    pub(super) fn track_running(&mut self, b: BuildRow, publishing: bool, here: bool) {
        let id = b.id;
        self.known.insert(id, (format!("{}@{}", b.component, b.target), BuildState::Running));
        let allowed = assign::allowed_now(&self.shared.farm(), &b);
        if here {
            self.shared.logs.begin(id, b.worker.as_deref().unwrap_or_default(), allowed.steps);
            self.shared.artifacts.expect(id, &allowed.artifacts);
        }
        self.running.insert(
            id,
            RunningBuild {
                worker: if publishing { String::new() } else { b.worker.clone().unwrap_or_default() },
                component: b.component,
                target: b.target,
                properties: b.properties,
                steps_done: HashSet::new(),
                allowed,
                cancelled_by: None,
                publishing,
                started: Instant::now(),
            },
        );
        if publishing {
            // Its worker was done; its packages were waiting for the publisher.
            let _ = self.shared.publisher.send(PublishRequest::Build(id));
        } else if !here {
            self.orphans.insert(id, Instant::now() + self.timeout());
        }
    }

    /// Which running builds in the store are this master's now: it takes
    /// over those of masters whose lease expired and reclaims its own from
    /// before a restart (or a fence), at its current epoch.
    pub(super) async fn running_builds_to_keep(&mut self) -> anyhow::Result<Option<HashSet<i64>>> {
        if self.shared.store.owner().is_none() {
            return Ok(None);
        }
        self.take_over_from_gone_masters().await;
        Ok(Some(self.shared.store.reclaim_own_builds().await?.into_iter().collect()))
    }

    /// Fences the masters whose lease expired and takes their running
    /// builds over (see [`crate::lease::fence_gone`]); tracks them.
    pub(super) async fn take_over_from_gone_masters(&mut self) {
        for (master, ids) in crate::lease::fence_gone(&self.shared).await {
            self.took_over(&master, ids).await;
        }
    }

    /// Tracks builds taken over from master `master` (fenced): each is kept
    /// for its worker to come back to any live master, else re-queued after
    /// `worker_timeout`; one whose packages waited for the publisher is
    /// published.
    pub(super) async fn took_over(&mut self, master: &str, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        let publishing: HashSet<i64> =
            self.shared.store.publishing_builds().await.unwrap_or_default().into_iter().collect();
        for id in ids {
            if self.running.contains_key(&id) {
                continue;
            }
            let Ok(Some(b)) = self.shared.store.build(id).await else { continue };
            tracing::warn!(build = id, master = %master, "took over a build of a master whose lease expired; waiting for its worker");
            self.track_running(b, publishing.contains(&id), false);
        }
    }

    /// Makes running build `id`, which worker `worker` has just connected
    /// here with, this master's (whichever master had it); false when the
    /// build is not running on that worker any more.
    pub(super) async fn adopt(&mut self, id: i64, worker: &str) -> Result<bool, kiln_db::StoreError> {
        if !self.shared.store.adopt(id, worker).await? {
            // Not running on it any more: whatever this master thought.
            if self.running.get(&id).is_some_and(|r| r.worker == worker) {
                self.disown(&HashSet::from([id]));
            }
            return Ok(false);
        }
        if self.running.contains_key(&id) {
            return Ok(true);
        }
        let Some(b) = self.shared.store.build(id).await? else { return Ok(false) };
        tracing::info!(build = id, worker, "adopted a running build its worker brought from another master");
        self.track_running(b, false, true);
        Ok(true)
    }

    /// Forgets builds the store would not let this master change: another
    /// master owns them now. Their results are not acknowledged, so their
    /// workers keep them for the master that does.
    pub(super) fn disown(&mut self, ids: &HashSet<i64>) {
        for id in ids {
            if self.running.remove(id).is_some() {
                tracing::warn!(build = id, "another master owns this build now; dropped it here");
            }
            self.orphans.remove(id);
            self.shared.logs.end(*id);
            for w in self.workers.values_mut() {
                w.running.remove(id);
            }
        }
        self.pending_acks.retain(|(_, id)| !ids.contains(id));
    }

    /// This master's lease was taken while it was away (a survivor fenced
    /// it and took its builds over) and it holds a new one now: what it
    /// held in memory may be stale, so it drops it all, closes its worker
    /// connections (the workers come back, to any master, with their
    /// builds) and loads the queue again.
    pub(super) async fn rejoin(&mut self) {
        tracing::warn!("this master lost its lease while away; dropping what it held and loading the queue again");
        self.pending.clear();
        self.pending_acks.clear();
        for id in self.running.keys() {
            self.shared.logs.end(*id);
        }
        // Dropping a connection's sender closes it.
        self.workers.clear();
        self.queue.clear();
        self.running.clear();
        self.orphans.clear();
        self.known.clear();
        self.dispatched.clear();
        if let Err(e) = self.recover().await {
            tracing::error!(error = %format!("{e:#}"), "cannot load the queue again after rejoining");
        }
        self.shared.changed();
    }

    /// Cancels asked of this master by others (their API was asked to
    /// cancel a build running on a worker connected here).
    pub(super) async fn cancels_from_other_masters(&mut self) {
        let asked = match self.shared.store.cancels_asked().await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the cancels other masters were asked for");
                return;
            }
        };
        for (id, by) in asked {
            if self.running.get(&id).is_some_and(|r| r.cancelled_by.is_none() && !r.publishing) {
                self.cancel(id, &by).await;
            }
        }
    }
}
