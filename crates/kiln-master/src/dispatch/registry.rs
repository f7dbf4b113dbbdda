//! The worker registry: workers joining (taking over an older connection,
//! keeping the builds they still run), leaving, and what
//! `/api/v1/workers` shows of them.

use super::*;

impl Dispatcher {
    /// A worker the worker port admitted: it takes over any older
    /// connection of the same name, keeps the builds it still runs, and is
    /// told to abandon the ones that were re-queued or cancelled meanwhile.
    pub(super) async fn hello(
        &mut self,
        conn: u64,
        hello: Hello,
        address: String,
        tx: UnboundedSender<MasterMsg>,
        reply: oneshot::Sender<Option<Vec<i64>>>,
    ) {
        let name = hello.name.clone();
        // A master that cannot renew its lease takes no worker; and builds
        // it cannot take over (the database failing) stay the worker's, for
        // another master.
        if !self.shared.lease_held() || !self.adopt_all(&name, &hello).await {
            let _ = reply.send(None);
            return;
        }
        if self.workers.contains_key(&name) {
            tracing::warn!(worker = %name, "worker connected again; dropping its old connection");
            self.drop_worker(&name);
        }
        let unacked: HashSet<i64> = hello.finished.iter().copied().collect();
        let mut abandon = Vec::new();
        let mut running = HashSet::new();
        // Builds it still runs, or finished and is about to report: they stay its own.
        for id in hello.running.iter().chain(&hello.finished) {
            if let Some(run) = self.running.get(id).filter(|r| r.worker == name) {
                running.insert(*id);
                self.orphans.remove(id);
                self.shared.logs.begin(*id, &name, run.allowed.steps);
                self.shared.artifacts.expect(*id, &run.allowed.artifacts);
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
        let targets = self.allowed_targets(&name, &hello.targets);
        self.workers.insert(
            name.clone(),
            Conn {
                conn,
                tx,
                claimed: hello.targets.clone(),
                targets: targets.clone(),
                slots: hello.slots.max(1) as usize,
                running,
                last_seen: Instant::now(),
            },
        );
        {
            let mut infos = self.shared.workers();
            let info = infos.entry(name.clone()).or_insert_with(|| empty_info(&name));
            info.connected = true;
            info.targets = targets;
            info.slots = i64::from(hello.slots.max(1));
            info.version = Some(hello.version.clone());
            info.address = Some(address.clone());
            info.last_seen = Some(rfc3339(now_us()));
        }
        tracing::info!(worker = %name, address = %address, targets = ?hello.targets, slots = hello.slots, "worker connected");
        // Other masters sharing the database show where it is.
        if let Err(e) = self.shared.store.worker_connected(&name, conn as i64, &address, now_us()).await {
            tracing::warn!(worker = %name, error = %e, "cannot record the worker's connection");
        }
        let _ = reply.send(Some(abandon));
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

    /// Makes the builds worker `name` brings this master's in the store (a
    /// build follows its worker), those another master had and those this
    /// one believes it runs alike: another master may have taken one in
    /// between. False when the store could not say.
    async fn adopt_all(&mut self, name: &str, hello: &Hello) -> bool {
        for id in hello.running.iter().chain(&hello.finished) {
            if self.running.get(id).is_some_and(|r| r.worker != name) {
                continue;
            }
            if let Err(e) = self.adopt(*id, name).await {
                tracing::warn!(worker = %name, build = id, error = %e, "cannot take over a build a worker brought; sending the worker elsewhere");
                return false;
            }
        }
        true
    }

    /// Lets every worker go (their connections close; they reconnect to
    /// another master with their builds), keeping their builds as orphans.
    pub(super) fn let_workers_go(&mut self) {
        let names: Vec<String> = self.workers.keys().cloned().collect();
        for name in names {
            tracing::warn!(worker = %name, "letting the worker go to another master");
            self.drop_worker(&name);
        }
    }

    /// The targets a worker that claims `claimed` is given builds for: those
    /// its `[[worker]] targets` allow; none once the config no longer
    /// declares it (a reload that removes a worker revokes it).
    fn allowed_targets(&self, name: &str, claimed: &[String]) -> Vec<String> {
        let farm = self.shared.farm();
        let Some(def) = farm.cfg.worker(name) else {
            tracing::warn!(worker = %name, "the config no longer declares this worker; it gets no builds");
            return Vec::new();
        };
        let (allowed, refused): (Vec<String>, Vec<String>) = claimed.iter().cloned().partition(|t| def.may_serve(t));
        if !refused.is_empty() {
            tracing::warn!(worker = %name, refused = ?refused, "worker claims targets its [[worker]] `targets` do not list; it gets no builds for them");
        }
        allowed
    }

    /// After a config change: what each connected worker may serve again.
    pub(super) fn apply_worker_targets(&mut self) {
        let names: Vec<String> = self.workers.keys().cloned().collect();
        for name in names {
            let claimed = self.workers[&name].claimed.clone();
            let targets = self.allowed_targets(&name, &claimed);
            if let Some(info) = self.shared.workers().get_mut(&name) {
                info.targets = targets.clone();
            }
            if let Some(w) = self.workers.get_mut(&name) {
                w.targets = targets;
            }
        }
    }

    pub(super) fn drop_worker(&mut self, name: &str) {
        let Some(w) = self.workers.remove(name) else {
            return;
        };
        let (store, name_owned, conn) = (self.shared.store.clone(), name.to_string(), w.conn as i64);
        tokio::spawn(async move {
            if let Err(e) = store.worker_disconnected(&name_owned, conn).await {
                tracing::warn!(worker = %name_owned, error = %e, "cannot record that the worker left");
            }
        });
        let deadline = Instant::now() + self.timeout();
        for id in w.running {
            self.orphans.insert(id, deadline);
        }
        if let Some(info) = self.shared.workers().get_mut(name) {
            info.connected = false;
        }
        self.publish_workers();
    }

    /// Refreshes one worker's running builds in what `/api/v1/workers` shows.
    pub(super) fn publish_running(&self, name: &str) {
        let Some(c) = self.workers.get(name) else { return };
        if let Some(info) = self.shared.workers().get_mut(name) {
            let mut r: Vec<i64> = c.running.iter().copied().collect();
            r.sort_unstable();
            info.running = r;
        }
    }

    /// Refreshes what `/api/v1/workers` shows.
    pub(super) fn publish_workers(&self) {
        let farm = self.shared.farm();
        let mut infos = self.shared.workers();
        // Live pages follow changes; heartbeats alone (last_seen) are not one.
        let shape = |infos: &BTreeMap<String, WorkerInfo>| -> Vec<WorkerInfo> {
            infos.values().map(|i| WorkerInfo { last_seen: None, ..i.clone() }).collect()
        };
        let before = shape(&infos);
        for w in &farm.cfg.workers {
            infos.entry(w.name.clone()).or_insert_with(|| empty_info(&w.name));
        }
        for name in self.drained.keys() {
            infos.entry(name.clone()).or_insert_with(|| empty_info(name));
        }
        for (name, info) in infos.iter_mut() {
            info.drained = self.drained.get(name).map(|d| kiln_proto::api::Drained {
                by: d.drained_by.clone(),
                reason: d.reason.clone(),
                at: rfc3339(d.drained_at),
            });
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

/// A configured worker that has not connected yet.
pub(super) fn empty_info(name: &str) -> WorkerInfo {
    WorkerInfo::never_seen(name)
}
