//! What workers report: steps and builds ending, with their properties and
//! artifacts; a build with packages goes to the publisher and ends when
//! its packages are published.

use super::*;

impl Dispatcher {
    pub(super) async fn worker_message(&mut self, worker: &str, msg: WorkerMsg) {
        match msg {
            // Output and artifacts go straight to their stores (workers.rs).
            WorkerMsg::Hello(_)
            | WorkerMsg::Heartbeat
            | WorkerMsg::Log { .. }
            | WorkerMsg::ArtifactChunk { .. }
            | WorkerMsg::ArtifactDone { .. } => {}
            WorkerMsg::StepStarted { build_id, step } => {
                let known = self.running.get(&build_id).is_some_and(|r| r.worker == worker && step < r.allowed.steps);
                if !known {
                    return;
                }
                self.pending.push(Write::StepStarted { build_id, idx: i64::from(step), at: now_us() });
            }
            WorkerMsg::StepFinished(r) => self.step_finished(worker, r).await,
            WorkerMsg::BuildFinished(r) => self.build_finished(worker, r).await,
        }
    }

    pub(super) fn is_running_on(&self, build_id: i64, worker: &str) -> bool {
        self.running.get(&build_id).is_some_and(|r| r.worker == worker)
    }

    pub(super) async fn step_finished(&mut self, worker: &str, r: StepResult) {
        if !self.is_running_on(r.build_id, worker) {
            return;
        }
        let Some(run) = self.running.get_mut(&r.build_id) else {
            return;
        };
        if r.step >= run.allowed.steps || !run.steps_done.insert(r.step) {
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
            // Only the property the step was given to set, and never one
            // the master owns: a worker cannot make up others (a `release`
            // that places packages, a `revision` a rebuild would build).
            if run.allowed.sets.get(&r.step) == Some(&name)
                && kiln_core::names::check_property_name(&name).is_ok()
                && value.len() <= kiln_core::props::MAX_VALUE_LEN
                && !kiln_core::props::is_reserved(&name)
            {
                run.properties.insert(name, Property { value, source: PropertySource::Step });
                self.pending.push(Write::Properties { build_id: r.build_id, properties: run.properties.clone() });
            } else {
                tracing::warn!(build = r.build_id, step = r.step, worker, property = %name, "ignored a property the step does not set");
            }
        }
    }

    pub(super) async fn build_finished(&mut self, worker: &str, r: BuildResult) {
        let id = r.build_id;
        if !self.is_running_on(id, worker) {
            // Not acknowledged: the worker keeps the result, and at its next
            // hello the master it reaches takes the build or has it dropped.
            tracing::warn!(
                build = id,
                worker,
                "a result for a build this master does not run on that worker; not taken"
            );
            return;
        }
        self.pending_acks.push((worker.to_string(), id));
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
        // A worker's words, shown on pages and in mail: bounded.
        let mut reason = r.reason.as_deref().map(|s| cut(s, MAX_REASON));
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
        if state != BuildState::Cancelled {
            // How long a slot was taken, for estimating when queued builds start.
            if let Some(run) = self.running.get(&id) {
                let typical = self.typical.get(&run.target).copied();
                let blended = kiln_core::schedule::blend_duration(typical, run.started.elapsed());
                self.typical.insert(run.target.clone(), blended);
            }
        }
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

    /// Whether a build that succeeded has packages a channel will take.
    pub(super) async fn has_packages(&self, id: i64, reported: &[String]) -> bool {
        let farm = self.shared.farm();
        let Some(run) = self.running.get(&id) else { return false };
        if kiln_core::channel::publishing_channels(&farm.cfg.channels, &run.properties).is_empty() {
            return false;
        }
        if reported.iter().any(|n| kiln_core::job::is_package(n)) {
            return true;
        }
        // Uploads stored before a restart are in the store, not the report.
        self.shared
            .store
            .artifacts_of(&[id])
            .await
            .is_ok_and(|rows| rows.iter().any(|a| kiln_core::job::is_package(&a.name)))
    }

    /// Ends a build whose packages the publisher handled.
    pub(super) fn published(&mut self, id: i64, outcome: PublishOutcome) {
        if !self.running.get(&id).is_some_and(|r| r.publishing) {
            return;
        }
        let Some(mut run) = self.running.remove(&id) else { return };
        let (state, reason, note) = match outcome {
            PublishOutcome::Published(summary) => (BuildState::Succeeded, None, summary),
            PublishOutcome::Failed(e) => {
                (BuildState::Failed, Some(format!("publish failed: {e}")), "failed".to_string())
            }
        };
        run.properties.insert("published".into(), Property { value: note, source: PropertySource::Step });
        self.pending.push(Write::Properties { build_id: id, properties: run.properties.clone() });
        self.pending.push(Write::Finish { build_id: id, state, reason, at: now_us() });
        tracing::info!(build = id, component = %run.component, target = %run.target, state = %state, "build finished");
        self.set_state(id, state);
        if state == BuildState::Succeeded {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                crate::ops::requests::rebuild_dependents(&shared, id, &run.component, &run.target).await
            });
        }
    }
}

/// The longest failure reason kept from a worker.
const MAX_REASON: usize = 4096;

/// `s`, cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
