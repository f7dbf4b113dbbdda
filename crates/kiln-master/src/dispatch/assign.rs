//! Starting a build on a worker: its component (or upload), source, steps
//! ([`kiln_core::job::steps_for`]), secrets and build-root repositories
//! become one job, sent once the build is claimed in the store.

use super::*;
use kiln_core::job::StepPlan;
use kiln_core::Component;

use crate::plan::component_of;

/// What the master believes from a worker about one build: the property
/// each step may set (by step index), how many steps there are (log output
/// for no other), and the artifact patterns it was sent (no other file is
/// taken). Anything else a worker reports is ignored or refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Allowed {
    pub sets: HashMap<u32, String>,
    pub steps: u32,
    pub artifacts: Vec<String>,
}

pub(super) fn allowed(plan: &StepPlan) -> Allowed {
    let declared = plan.steps.iter().enumerate();
    Allowed {
        sets: declared.filter_map(|(i, s)| Some((i as u32, s.spec.set_property.clone()?))).collect(),
        steps: plan.steps.len() as u32,
        // What a failed build keeps is named apart from its packages.
        artifacts: plan
            .artifacts
            .iter()
            .cloned()
            .chain((!plan.artifacts_on_failure.is_empty()).then(|| format!("{}*", kiln_core::pipeline::FAILURE_PREFIX)))
            .collect(),
    }
}

/// What is allowed for a build that was running before a restart, from the
/// config as it is now (nothing, if the build cannot be planned).
pub(super) fn allowed_now(farm: &crate::farm::LoadedFarm, b: &BuildRow) -> Allowed {
    component_of(farm, &b.component, &b.properties)
        .and_then(|c| steps_for(&b.target, farm.cfg.target(&b.target), &c).ok())
        .map(|plan| allowed(&plan))
        .unwrap_or_default()
}

impl Dispatcher {
    pub(super) async fn start(&mut self, id: i64, worker: &str) {
        let farm = self.shared.farm();
        let Some(q) = self.queue.get(&id) else { return };
        let Some(component) = component_of(&farm, &q.component, &q.properties) else {
            let reason = format!("component {} is no longer in the config", q.component);
            self.fail_unstarted(id, &reason).await;
            return;
        };
        let component: &Component = &component;
        let source = match &component.source {
            Some(Source::Path(p)) => match self.sources.archive(&farm.resolve(p)) {
                Ok(a) => Some(a),
                Err(e) => {
                    self.fail_unstarted(id, &e).await;
                    return;
                }
            },
            // The worker checks the revision out itself (a first step).
            Some(Source::Vcs(_)) | None => None,
        };
        let plan = match steps_for(&q.target, farm.cfg.target(&q.target), component) {
            Ok(plan) => plan,
            Err(e) => {
                self.fail_unstarted(id, &e.to_string()).await;
                return;
            }
        };
        let allowed = allowed(&plan);
        let (artifacts, artifacts_on_failure) = (plan.artifacts, plan.artifacts_on_failure);
        let steps: Vec<JobStep> = plan
            .steps
            .into_iter()
            .map(|PlannedStep { spec: s, privileged }| JobStep {
                no_output_timeout_ms: s.no_output_timeout.or(component.no_output_timeout).map(|d| d.as_millis() as u64),
                timeout_ms: s.timeout.map(|d| d.as_millis() as u64),
                name: s.name,
                run: s.run,
                set_property: s.set_property,
                env: s.env,
                halt_on_failure: s.halt_on_failure,
                always_run: s.always_run,
                privileged,
            })
            .collect();
        let mut secrets = BTreeMap::new();
        // A pull request's code is untrusted unless the forge said it comes
        // from the repository itself: it builds without the secrets.
        let trusted = kiln_core::props::may_have_secrets(&q.properties);
        if !trusted && !component.secrets.is_empty() {
            tracing::info!(
                build = id,
                "a test build of a pull request from a fork runs without the component's secrets"
            );
        }
        for (var, r) in component.secrets.iter().filter(|_| trusted) {
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
        let began = Instant::now();
        let claimed = self.shared.store.claim(id, worker, now_us(), &names).await;
        self.shared.metrics.database_call("claim", began.elapsed());
        match claimed {
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
        *self.dispatched.entry(q.request).or_default() += 1;
        self.shared.logs.begin(id, worker, allowed.steps);
        self.shared.artifacts.expect(id, &allowed.artifacts);
        let job = Job {
            build_id: id,
            component: q.component.clone(),
            target: q.target.clone(),
            properties: q.properties.iter().map(|(k, p)| (k.clone(), p.value.clone())).collect(),
            steps,
            source_tgz: source.map(|s| s.as_str().to_owned()),
            kill_grace_ms: farm.cfg.master.kill_grace.as_millis() as u64,
            artifacts,
            artifacts_on_failure,
            timeout_ms: component.timeout.map(|d| d.as_millis() as u64),
            memory_bytes: component.memory,
            cpus: component.millicpus.map(|m| f64::from(m) / 1000.0),
            env: {
                let mut env = self.repo_env(&farm, &q.target, &q.properties);
                if !trusted {
                    env.insert(kiln_proto::wire::UNTRUSTED_SOURCE_ENV.into(), "1".into());
                }
                env
            },
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
                allowed,
                cancelled_by: None,
                publishing: false,
                started: Instant::now(),
            },
        );
        if let Some(w) = self.workers.get_mut(worker) {
            w.running.insert(id);
            let _ = w.tx.send(MasterMsg::Assign(Box::new(job)));
        }
        self.publish_running(worker);
    }

    /// The farm's own repository for a deb build root: the channel the build
    /// publishes to (dev for nightlies, stable for releases), so a
    /// component builds against what its dependencies just published.
    /// The target's own `repositories` come after it, each with its key.
    pub(super) fn repo_env(
        &self,
        farm: &crate::farm::LoadedFarm,
        target: &str,
        props: &Properties,
    ) -> BTreeMap<String, String> {
        use kiln_proto::wire::BuildRootRepo;
        let cfg = &farm.cfg;
        let mut env = BTreeMap::new();
        let Some(t) = cfg.target(target).filter(|t| t.family == kiln_core::config::Family::Deb) else { return env };
        env.insert(kiln_proto::wire::CHANGELOG_MAINTAINER_ENV.into(), farm.changelog_maintainer.clone());
        let mut repos = Vec::new();
        let values: BTreeMap<String, String> = props.iter().map(|(k, p)| (k.clone(), p.value.clone())).collect();
        let channel = cfg.channels.iter().find(|c| c.accepts.takes(&values));
        if let Some((ch, key)) = channel.and_then(|ch| Some((ch, self.shared.channel_key(&ch.name)?.armored.clone()))) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::Tester;
    use kiln_core::job::BuildSource;

    fn row(component: &str, properties: Properties) -> BuildRow {
        BuildRow {
            id: 1,
            request_id: 1,
            component: component.into(),
            target: "debian-12-amd64".into(),
            state: BuildState::Running,
            reason: None,
            requested_at: 0,
            started_at: None,
            finished_at: None,
            requested_by: None,
            worker: Some("w1".into()),
            attempt: 1,
            properties,
            depends_on: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_step_may_set_only_the_property_it_declares() {
        let t = Tester::new().await;
        let farm = t.shared.farm();
        // A git component of the standard pipeline: its checkout (step 0)
        // sets `revision`, its source step `version`; nothing else is believed.
        let pkg = allowed_now(&farm, &row("pkg", Properties::new()));
        assert_eq!(pkg.sets, HashMap::from([(0, "got_revision".to_string()), (1, "version".to_string())]));
        // Its packages, and (when it fails) the logs kept under their own names.
        assert_eq!(
            pkg.artifacts,
            [format!("{}/*", kiln_core::pipeline::OUTPUT_DIR), format!("{}*", kiln_core::pipeline::FAILURE_PREFIX)]
        );
        // A component of shell steps that set nothing.
        let hello = allowed_now(&farm, &row("hello", Properties::new()));
        assert!(hello.sets.is_empty() && hello.steps > 0, "{hello:?}");
        // A build whose component is gone: nothing is believed.
        assert_eq!(allowed_now(&farm, &row("gone", Properties::new())), Allowed::default());
        // An upload builds with the standard pipeline, whatever its name.
        let (k, v) = BuildSource::Upload("0123456789abcdef".into()).property().expect("property");
        let upload = allowed_now(&farm, &row("hello", Properties::from([(k, v)])));
        assert!(upload.sets.values().all(|p| p == "version"), "{upload:?}");
    }
}
