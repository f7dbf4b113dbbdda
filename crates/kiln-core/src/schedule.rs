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
}
