//! Scheduling decisions: whether a queued build may start, and which worker
//! takes it. The dispatcher in the master asks; nothing here acts.

use crate::state::BuildState;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

/// What the dispatcher knows of one connected worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerLoad<'a> {
    pub name: &'a str,
    pub targets: &'a [String],
    pub slots: usize,
    pub running: usize,
    /// Drained: it finishes what it runs and takes nothing new.
    pub drained: bool,
}

/// The worker that should take a build for `target`: one that serves the
/// target, is not drained and has a free slot, least loaded first (by the share of its slots
/// in use, then by running builds, then by name so the choice is stable).
pub fn pick_worker(workers: &[WorkerLoad<'_>], target: &str) -> Option<usize> {
    workers
        .iter()
        .enumerate()
        .filter(|(_, w)| !w.drained && w.running < w.slots && w.targets.iter().any(|t| t == target))
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
    /// No connected worker serves its target; `could` names the known
    /// workers (configured or seen before) that would.
    NoWorker { target: String, could: Vec<String>, message: String },
    /// Every connected worker serving its target is drained.
    Drained { target: String, workers: Vec<String>, message: String },
    /// Every slot that serves its target is taken; `position` is its place
    /// among the ready builds for that target (1: next), `starts_in_s` the
    /// estimate from recent build durations, when there are any.
    SlotsBusy { target: String, position: usize, starts_in_s: Option<u64>, message: String },
    /// Like `slots_busy`, with builds of a higher priority ahead of it.
    Priority { target: String, position: usize, ahead: usize, starts_in_s: Option<u64>, message: String },
    /// It waits for a build of its request to succeed first.
    Dependency { build: i64, message: String },
    /// Its Build-Depends cannot be met from what its build root would see.
    Unresolvable { missing: Vec<String>, message: String },
    /// Its Build-Depends are being checked before it goes to a worker.
    Checking { message: String },
}

impl Waiting {
    pub fn message(&self) -> &str {
        match self {
            Waiting::NoWorker { message, .. }
            | Waiting::Drained { message, .. }
            | Waiting::SlotsBusy { message, .. }
            | Waiting::Priority { message, .. }
            | Waiting::Dependency { message, .. }
            | Waiting::Unresolvable { message, .. }
            | Waiting::Checking { message } => message,
        }
    }

    /// The short name of the reason (`no_worker`, `slots_busy`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Waiting::NoWorker { .. } => "no_worker",
            Waiting::Drained { .. } => "drained",
            Waiting::SlotsBusy { .. } => "slots_busy",
            Waiting::Priority { .. } => "priority",
            Waiting::Dependency { .. } => "dependency",
            Waiting::Unresolvable { .. } => "unresolvable",
            Waiting::Checking { .. } => "checking",
        }
    }
}

/// A queued build as [`why_waiting`] needs it: its target, priority and
/// the first of its dependencies that has not finished (id and
/// `component@target`).
#[derive(Debug, Clone, Copy)]
pub struct QueuedView<'a> {
    pub target: &'a str,
    pub priority: i64,
    pub unfinished_dependency: Option<(i64, &'a str)>,
    /// A reason the dispatcher holds it back for itself (its build
    /// dependencies being checked, or unresolvable).
    pub held: Option<&'a Waiting>,
}

/// What [`why_waiting`] knows of the farm besides the connected workers.
#[derive(Debug, Default)]
pub struct FarmView<'a> {
    /// Known workers that are not connected, with the targets they serve
    /// (as configured, or as they last said).
    pub away: Vec<(&'a str, &'a [String])>,
    /// How long builds for a target typically take.
    pub typical: HashMap<&'a str, Duration>,
    /// Each connected worker's running builds: how long each has left by
    /// its target's typical duration (`None`: not known).
    pub remaining: HashMap<&'a str, Vec<Option<Duration>>>,
}

/// Why each build of `queue` (in dispatch order) waits, after a dispatch
/// pass left them queued: a dependency first, then what the dispatcher holds
/// it back for (its build dependencies), then whether any connected
/// worker serves the target at all, then whether those that do are
/// drained, then its place in line for the busy slots (behind higher
/// priorities, when it is), with an estimated start.
pub fn why_waiting(queue: &[QueuedView<'_>], workers: &[WorkerLoad<'_>], farm: &FarmView<'_>) -> Vec<Waiting> {
    // What a target's builds wait for, worked out once per target.
    let mut targets: HashMap<&str, ForTarget> = HashMap::new();
    queue
        .iter()
        .map(|q| {
            if let Some((build, label)) = q.unfinished_dependency {
                return Waiting::Dependency { build, message: format!("waits for build {build} ({label}) to succeed") };
            }
            if let Some(held) = q.held {
                return held.clone();
            }
            match targets.entry(q.target).or_insert_with(|| ForTarget::new(q.target, workers, farm)) {
                ForTarget::Stuck(why) => why.clone(),
                ForTarget::InLine(line) => line.next(q),
            }
        })
        .collect()
}

/// Why builds for one target wait when nothing else holds them.
enum ForTarget {
    /// No connected worker serves it, or only drained ones do.
    Stuck(Waiting),
    /// Workers serve it and their slots are busy.
    InLine(Line),
}

impl ForTarget {
    fn new(target: &str, workers: &[WorkerLoad<'_>], farm: &FarmView<'_>) -> ForTarget {
        let serving: Vec<&WorkerLoad<'_>> = workers.iter().filter(|w| w.targets.iter().any(|t| t == target)).collect();
        if serving.is_empty() {
            return ForTarget::Stuck(no_worker(target, workers, farm));
        }
        let open: Vec<&WorkerLoad<'_>> = serving.iter().copied().filter(|w| !w.drained).collect();
        if open.is_empty() {
            let names: Vec<String> = serving.iter().map(|w| w.name.to_string()).collect();
            let message = format!(
                "every connected worker serving {target} is drained ({}); `kiln workers resume NAME` gives it work again",
                names.join(", ")
            );
            return ForTarget::Stuck(Waiting::Drained { target: target.to_string(), workers: names, message });
        }
        ForTarget::InLine(Line::new(target, &open, farm))
    }
}

fn no_worker(target: &str, workers: &[WorkerLoad<'_>], farm: &FarmView<'_>) -> Waiting {
    let could: Vec<String> =
        farm.away.iter().filter(|(_, ts)| ts.iter().any(|t| t == target)).map(|(n, _)| n.to_string()).collect();
    let connected: Vec<&str> = workers.iter().map(|w| w.name).collect();
    let mut message = if connected.is_empty() {
        format!("no worker is connected; one serving {target} would take it")
    } else {
        format!("no connected worker serves {target} (connected: {})", connected.join(", "))
    };
    if could.is_empty() {
        message.push_str(&format!("; start one with --targets {target}"));
    } else {
        message.push_str(&format!("; {} would (not connected)", could.join(", ")));
    }
    Waiting::NoWorker { target: target.to_string(), could, message }
}

/// The line of ready builds for one target's busy slots.
struct Line {
    taken: usize,
    /// How many builds ahead have each priority, to count those above a newcomer.
    priorities: std::collections::BTreeMap<i64, usize>,
    typical: Option<Duration>,
    /// When each slot frees, from now (a min-heap).
    frees_at: BinaryHeap<std::cmp::Reverse<Duration>>,
    /// "all N slots serving T are busy (w1, w2)", the same for every build in line.
    busy: String,
}

impl Line {
    fn new(target: &str, open: &[&WorkerLoad<'_>], farm: &FarmView<'_>) -> Line {
        let typical = farm.typical.get(target).copied();
        let mut frees_at = BinaryHeap::new();
        if let Some(typical) = typical {
            for w in open {
                let left = farm.remaining.get(w.name).map(Vec::as_slice).unwrap_or(&[]);
                for slot in 0..w.slots {
                    let free_in = match slot.checked_sub(w.slots.saturating_sub(w.running)) {
                        // A free slot (taken by a build ahead in this pass).
                        None => Duration::ZERO,
                        Some(i) => left.get(i).copied().flatten().unwrap_or(typical),
                    };
                    frees_at.push(std::cmp::Reverse(free_in));
                }
            }
        }
        let slots: usize = open.iter().map(|w| w.slots).sum();
        let names: Vec<&str> = open.iter().map(|w| w.name).collect();
        let busy = format!("all {slots} slots serving {target} are busy ({})", names.join(", "));
        Line { taken: 0, priorities: Default::default(), typical, frees_at, busy }
    }

    fn next(&mut self, q: &QueuedView<'_>) -> Waiting {
        self.taken += 1;
        let position = self.taken;
        let ahead: usize = self.priorities.range(q.priority.saturating_add(1)..).map(|(_, n)| n).sum();
        *self.priorities.entry(q.priority).or_default() += 1;
        let starts_in = match (self.typical, self.frees_at.pop()) {
            (Some(typical), Some(std::cmp::Reverse(at))) => {
                self.frees_at.push(std::cmp::Reverse(at + typical));
                Some(at)
            }
            _ => None,
        };
        use std::fmt::Write;
        let mut message = String::with_capacity(self.busy.len() + 96);
        if ahead > 0 {
            let _ = write!(message, "behind {ahead} build(s) of higher priority for {}; ", q.target);
        }
        let _ = write!(message, "{}; number {position} in line", self.busy);
        if let (Some(at), Some(typical)) = (starts_in, self.typical) {
            let _ = write!(
                message,
                "; starts in about {} (builds for {} take about {})",
                about(at),
                q.target,
                about(typical)
            );
        }
        let target = q.target.to_string();
        let starts_in_s = starts_in.map(|d| d.as_secs());
        if ahead > 0 {
            Waiting::Priority { target, position, ahead, starts_in_s, message }
        } else {
            Waiting::SlotsBusy { target, position, starts_in_s, message }
        }
    }
}

/// A rough duration for people: `40 s`, `3 min`, `2 h 5 min`.
pub fn about(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{} s", s.max(1)),
        60..3600 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A target's typical build duration, updated with one more finished
/// build: an exponentially weighted mean (one fifth for the newest), so
/// it follows a change in a few builds without one outlier ruling it.
pub fn blend_duration(typical: Option<Duration>, finished: Duration) -> Duration {
    match typical {
        None => finished,
        Some(t) => (t * 4 + finished) / 5,
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
            WorkerLoad { name: "a", targets: &both, slots: 1, running: 1, drained: false },
            WorkerLoad { name: "b", targets: &deb, slots: 4, running: 1, drained: false },
            WorkerLoad { name: "c", targets: &both, slots: 2, running: 1, drained: false },
        ];
        assert_eq!(pick_worker(&ws, "deb"), Some(1));
        assert_eq!(pick_worker(&ws, "rpm"), Some(2));
        assert_eq!(pick_worker(&ws, "msi"), None);
        let full = [WorkerLoad { name: "a", targets: &both, slots: 1, running: 1, drained: false }];
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
        let el = vec!["el9".to_string()];
        let workers = [WorkerLoad { name: "w1", targets: &t, slots: 2, running: 2, drained: false }];
        let view = |target, priority, dep| QueuedView { target, priority, unfinished_dependency: dep, held: None };
        let queue = [
            view("d12", 0, None),
            view("el9", 0, None),
            view("d12", 0, Some((7, "libgrace@d12"))),
            view("d12", 0, None),
        ];
        let farm = FarmView::default();
        let why = why_waiting(&queue, &workers, &farm);
        assert_eq!(why[0].kind(), "slots_busy");
        assert_eq!(why[0].message(), "all 2 slots serving d12 are busy (w1); number 1 in line");
        assert_eq!(why[1].message(), "no connected worker serves el9 (connected: w1); start one with --targets el9");
        assert_eq!(
            why[2],
            Waiting::Dependency { build: 7, message: "waits for build 7 (libgrace@d12) to succeed".into() }
        );
        assert!(matches!(why[3], Waiting::SlotsBusy { position: 2, starts_in_s: None, .. }));
        // A worker known to serve el9 but away is named.
        let away = FarmView { away: vec![("w9", el.as_slice())], ..FarmView::default() };
        let none = why_waiting(&queue[1..2], &[], &away);
        assert_eq!(
            none[0],
            Waiting::NoWorker {
                target: "el9".into(),
                could: vec!["w9".into()],
                message: "no worker is connected; one serving el9 would take it; w9 would (not connected)".into()
            }
        );
        // What the dispatcher holds it back for comes first (after a dependency).
        let unmet =
            Waiting::Unresolvable { missing: vec!["libfoo-dev".into()], message: "nothing provides libfoo-dev".into() };
        let held = [QueuedView { target: "d12", priority: 0, unfinished_dependency: None, held: Some(&unmet) }];
        assert_eq!(why_waiting(&held, &workers, &farm), std::slice::from_ref(&unmet));
        // Its only worker is drained.
        let drained = [WorkerLoad { name: "w1", targets: &t, slots: 2, running: 1, drained: true }];
        let why = why_waiting(&queue[..1], &drained, &farm);
        assert_eq!(why[0].kind(), "drained");
        assert!(why[0].message().starts_with("every connected worker serving d12 is drained (w1)"), "{why:?}");
    }

    #[test]
    fn a_place_in_line_comes_with_an_estimated_start_and_the_priorities_ahead() {
        let t = vec!["d12".to_string()];
        // Two workers of one slot each: one build has 1 min left, the other 4 min.
        let workers = [
            WorkerLoad { name: "w1", targets: &t, slots: 1, running: 1, drained: false },
            WorkerLoad { name: "w2", targets: &t, slots: 1, running: 1, drained: false },
        ];
        let min = |m: u64| Duration::from_secs(60 * m);
        let farm = FarmView {
            away: Vec::new(),
            typical: [("d12", min(5))].into_iter().collect(),
            remaining: [("w1", vec![Some(min(1))]), ("w2", vec![Some(min(4))])].into_iter().collect(),
        };
        let view = |priority| QueuedView { target: "d12", priority, unfinished_dependency: None, held: None };
        let why = why_waiting(&[view(5), view(0), view(0)], &workers, &farm);
        // First slot frees in 1 min, the second in 4, the first again in 1 + 5.
        let starts: Vec<Option<u64>> = why
            .iter()
            .map(|w| match w {
                Waiting::SlotsBusy { starts_in_s, .. } | Waiting::Priority { starts_in_s, .. } => *starts_in_s,
                _ => panic!("{w:?}"),
            })
            .collect();
        assert_eq!(starts, [Some(60), Some(240), Some(360)]);
        assert_eq!(why[0].kind(), "slots_busy");
        assert_eq!(
            why[1].message(),
            "behind 1 build(s) of higher priority for d12; all 2 slots serving d12 are busy (w1, w2); number 2 in \
             line; starts in about 4 min (builds for d12 take about 5 min)"
        );
        assert!(matches!(why[2], Waiting::Priority { position: 3, ahead: 1, .. }));
        assert_eq!(blend_duration(None, min(5)), min(5));
        assert_eq!(blend_duration(Some(min(5)), min(10)), min(6));
        assert_eq!(about(Duration::from_secs(3 * 3600 + 120)), "3 h 2 min");
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
