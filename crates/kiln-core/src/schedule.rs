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

pub use crate::props::{PRIORITY_PROPERTY, PRIORITY_RANGE};

/// A release build's priority when nothing sets one: above nightlies' 0.
pub const RELEASE_PRIORITY: i64 = 1;

/// A build's priority from its properties: `priority` when set (a request
/// or the component's config), else a release's [`RELEASE_PRIORITY`], else 0.
pub fn priority_of(properties: &crate::props::Properties) -> i64 {
    match properties.get(PRIORITY_PROPERTY).and_then(|p| p.value.trim().parse::<i64>().ok()) {
        Some(p) => p.clamp(*PRIORITY_RANGE.start(), *PRIORITY_RANGE.end()),
        None if properties.get("release").is_some_and(|p| p.value == "true") => RELEASE_PRIORITY,
        None => 0,
    }
}

/// One queued build as the dispatch order sees it: its priority, its
/// request, and how many builds of that request were dispatched already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InLine {
    pub id: i64,
    pub priority: i64,
    pub request: i64,
    pub dispatched: u64,
}

/// The order queued builds are offered to free slots: higher priority
/// first (a running build is never preempted); among equal priority, the
/// request that has had the fewest builds dispatched goes next (the oldest
/// request on a tie), one build at a time, so requests take turns and one
/// requester's 1,400-build nightly does not keep another's single fix
/// waiting behind all of it. Within a request, oldest build first.
pub fn dispatch_order(queue: &[InLine]) -> Vec<i64> {
    use std::cmp::Reverse;
    use std::collections::{BTreeMap, BinaryHeap, VecDeque};
    // (priority, request) -> its queued builds, oldest first, and what it had.
    let mut lines: BTreeMap<(Reverse<i64>, i64), (u64, Vec<i64>)> = BTreeMap::new();
    for b in queue {
        let line = lines.entry((Reverse(b.priority), b.request)).or_insert((b.dispatched, Vec::new()));
        line.1.push(b.id);
    }
    /// A request's queued builds at one priority: (request, dispatched, builds).
    type Line = (i64, u64, VecDeque<i64>);
    let mut by_priority: BTreeMap<Reverse<i64>, Vec<Line>> = BTreeMap::new();
    for ((priority, request), (dispatched, mut ids)) in lines {
        ids.sort_unstable();
        by_priority.entry(priority).or_default().push((request, dispatched, ids.into()));
    }
    let mut order = Vec::with_capacity(queue.len());
    for requests in by_priority.into_values() {
        // The next turn: fewest dispatched, then the oldest request.
        let mut turns: BinaryHeap<Reverse<(u64, i64, usize)>> = requests
            .iter()
            .enumerate()
            .map(|(i, (request, dispatched, _))| Reverse((*dispatched, *request, i)))
            .collect();
        let mut requests = requests;
        while let Some(Reverse((dispatched, request, i))) = turns.pop() {
            if let Some(id) = requests[i].2.pop_front() {
                order.push(id);
                turns.push(Reverse((dispatched + 1, request, i)));
            }
        }
    }
    order
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

    #[test]
    fn priority_first_then_requests_take_turns() {
        let b = |id, priority, request, dispatched| InLine { id, priority, request, dispatched };
        // A nightly of four builds (request 1), one fix (request 2), an
        // urgent build (request 3) and another request's two (request 4).
        let queue = [
            b(1, 0, 1, 0),
            b(2, 0, 1, 0),
            b(3, 0, 1, 0),
            b(4, 0, 1, 0),
            b(5, 0, 2, 0),
            b(6, 10, 3, 0),
            b(7, 0, 4, 0),
            b(8, 0, 4, 0),
        ];
        assert_eq!(dispatch_order(&queue), [6, 1, 5, 7, 2, 8, 3, 4]);
        // The nightly had 500 builds dispatched already: the others go first.
        let later = [b(501, 0, 1, 500), b(502, 0, 1, 500), b(9, 0, 5, 0), b(10, 0, 5, 0)];
        assert_eq!(dispatch_order(&later), [9, 10, 501, 502]);
        // Turns follow what each had: one dispatched each, the older request first.
        let even = [b(2, 0, 1, 1), b(3, 0, 1, 1), b(12, 0, 2, 1)];
        assert_eq!(dispatch_order(&even), [2, 12, 3]);
        assert!(dispatch_order(&[]).is_empty());
    }

    #[test]
    fn priority_comes_from_the_property_or_a_release() {
        use crate::props::{Properties, Property, PropertySource};
        let props = |pairs: &[(&str, &str)]| -> Properties {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Property { value: v.to_string(), source: PropertySource::Request }))
                .collect()
        };
        assert_eq!(priority_of(&props(&[])), 0);
        assert_eq!(priority_of(&props(&[("release", "true")])), RELEASE_PRIORITY);
        assert_eq!(priority_of(&props(&[("release", "true"), ("priority", "-5")])), -5);
        assert_eq!(priority_of(&props(&[("priority", "99999")])), 1000);
    }
}
