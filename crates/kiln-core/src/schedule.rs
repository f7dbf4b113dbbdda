//! Scheduling decisions: whether a queued build may start, and which worker
//! takes it. The dispatcher in the master asks; nothing here acts.

use crate::state::BuildState;

/// What the dispatcher knows of one connected worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerLoad<'a> {
    pub name: &'a str,
    pub targets: &'a [String],
    pub slots: usize,
    pub running: usize,
}

/// The worker that should take a build for `target`: one that serves the
/// target and has a free slot, least loaded first (by the share of its slots
/// in use, then by running builds, then by name so the choice is stable).
pub fn pick_worker(workers: &[WorkerLoad<'_>], target: &str) -> Option<usize> {
    workers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.running < w.slots && w.targets.iter().any(|t| t == target))
        .min_by(|(_, a), (_, b)| {
            // a.running / a.slots < b.running / b.slots, without floats.
            (a.running * b.slots).cmp(&(b.running * a.slots)).then(a.running.cmp(&b.running)).then(a.name.cmp(b.name))
        })
        .map(|(i, _)| i)
}

/// Whether a queued build may start, given the states of its dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Waiting,
    /// A dependency will never succeed; the build is to be skipped.
    Blocked {
        reason: String,
    },
}

pub fn readiness<'a>(deps: impl IntoIterator<Item = (&'a str, BuildState)>) -> Readiness {
    let mut waiting = false;
    for (name, state) in deps {
        match state {
            BuildState::Succeeded => {}
            BuildState::Queued | BuildState::Running => waiting = true,
            other => {
                return Readiness::Blocked { reason: format!("dependency {name} {other}") };
            }
        }
    }
    if waiting {
        Readiness::Waiting
    } else {
        Readiness::Ready
    }
}

/// Why a queued build has not started, as the dispatcher sees it after a
/// pass over the queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Waiting {
    /// No connected worker serves its target.
    NoWorker { target: String, message: String },
    /// Every slot that serves its target is taken; `position` is its place
    /// among the ready builds for that target (1: next).
    SlotsBusy { target: String, position: usize, message: String },
    /// It waits for a build of its request to succeed first.
    Dependency { build: i64, message: String },
}

impl Waiting {
    pub fn message(&self) -> &str {
        match self {
            Waiting::NoWorker { message, .. }
            | Waiting::SlotsBusy { message, .. }
            | Waiting::Dependency { message, .. } => message,
        }
    }

    /// The short name of the reason (`no_worker`, `slots_busy`, `dependency`).
    pub fn kind(&self) -> &'static str {
        match self {
            Waiting::NoWorker { .. } => "no_worker",
            Waiting::SlotsBusy { .. } => "slots_busy",
            Waiting::Dependency { .. } => "dependency",
        }
    }
}

/// A queued build as [`why_waiting`] needs it: its target and the first of
/// its dependencies that has not finished (id and `component@target`).
#[derive(Debug, Clone, Copy)]
pub struct QueuedView<'a> {
    pub target: &'a str,
    pub unfinished_dependency: Option<(i64, &'a str)>,
}

/// Why each build of `queue` (in dispatch order) waits, after a dispatch
/// pass left them queued: a dependency first, then whether any connected
/// worker serves the target at all, then its place in line for the busy
/// slots that do.
pub fn why_waiting(queue: &[QueuedView<'_>], workers: &[WorkerLoad<'_>]) -> Vec<Waiting> {
    let mut in_line: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    queue
        .iter()
        .map(|q| {
            if let Some((build, label)) = q.unfinished_dependency {
                return Waiting::Dependency { build, message: format!("waits for build {build} ({label}) to succeed") };
            }
            let serving: Vec<&WorkerLoad<'_>> =
                workers.iter().filter(|w| w.targets.iter().any(|t| t == q.target)).collect();
            if serving.is_empty() {
                let connected: Vec<&str> = workers.iter().map(|w| w.name).collect();
                let message = if connected.is_empty() {
                    format!("no worker is connected; one serving {} would take it", q.target)
                } else {
                    format!(
                        "no connected worker serves {} (connected: {}); start one with --targets {}",
                        q.target,
                        connected.join(", "),
                        q.target
                    )
                };
                return Waiting::NoWorker { target: q.target.to_string(), message };
            }
            let position = in_line.entry(q.target).or_insert(0);
            *position += 1;
            let slots: usize = serving.iter().map(|w| w.slots).sum();
            let names: Vec<&str> = serving.iter().map(|w| w.name).collect();
            Waiting::SlotsBusy {
                target: q.target.to_string(),
                position: *position,
                message: format!(
                    "all {slots} slots serving {} are busy ({}); number {} in line",
                    q.target,
                    names.join(", "),
                    position
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_loaded_serving_worker_wins() {
        let deb = vec!["deb".to_string()];
        let both = vec!["deb".to_string(), "rpm".to_string()];
        let ws = [
            WorkerLoad { name: "a", targets: &both, slots: 1, running: 1 },
            WorkerLoad { name: "b", targets: &deb, slots: 4, running: 1 },
            WorkerLoad { name: "c", targets: &both, slots: 2, running: 1 },
        ];
        assert_eq!(pick_worker(&ws, "deb"), Some(1));
        assert_eq!(pick_worker(&ws, "rpm"), Some(2));
        assert_eq!(pick_worker(&ws, "msi"), None);
        let full = [WorkerLoad { name: "a", targets: &both, slots: 1, running: 1 }];
        assert_eq!(pick_worker(&full, "deb"), None);
    }

    #[test]
    fn readiness_follows_dependencies() {
        assert_eq!(readiness([]), Readiness::Ready);
        assert_eq!(readiness([("libgrace", BuildState::Succeeded)]), Readiness::Ready);
        assert_eq!(readiness([("libgrace", BuildState::Running)]), Readiness::Waiting);
        assert_eq!(
            readiness([("libgrace", BuildState::Running), ("x", BuildState::Failed)]),
            Readiness::Blocked { reason: "dependency x failed".into() }
        );
    }

    #[test]
    fn each_queued_build_says_why_it_waits() {
        let t = vec!["d12".to_string()];
        let workers = [WorkerLoad { name: "w1", targets: &t, slots: 2, running: 2 }];
        let queue = [
            QueuedView { target: "d12", unfinished_dependency: None },
            QueuedView { target: "el9", unfinished_dependency: None },
            QueuedView { target: "d12", unfinished_dependency: Some((7, "libgrace@d12")) },
            QueuedView { target: "d12", unfinished_dependency: None },
        ];
        let why = why_waiting(&queue, &workers);
        assert_eq!(why[0].kind(), "slots_busy");
        assert_eq!(why[0].message(), "all 2 slots serving d12 are busy (w1); number 1 in line");
        assert_eq!(why[1].message(), "no connected worker serves el9 (connected: w1); start one with --targets el9");
        assert_eq!(
            why[2],
            Waiting::Dependency { build: 7, message: "waits for build 7 (libgrace@d12) to succeed".into() }
        );
        assert!(matches!(why[3], Waiting::SlotsBusy { position: 2, .. }));
        let none = why_waiting(&queue[1..2], &[]);
        assert_eq!(none[0].message(), "no worker is connected; one serving el9 would take it");
    }
}
