//! Which builds lose their logs and artifacts, by the farm's
//! [`Retention`] rules: a build's files go once it is older than its
//! component's `max_age` or has `keep_last` newer builds of its builder.
//! The build row stays (history); what it published is kept elsewhere
//! (the caller keeps every file a channel or snapshot still names).
//!
//! Never chosen: a pinned build, an unfinished one, and each builder's
//! newest finished build (its last result is what people look at, however
//! old).

use crate::config::Retention;
use std::collections::HashMap;

/// What the rules need to know of one finished build not yet pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildFacts {
    pub id: i64,
    pub component: String,
    pub target: String,
    /// When it finished, in microseconds since the epoch; `None`: unfinished.
    pub finished_at: Option<i64>,
    pub pinned: bool,
}

/// The builds whose logs and artifacts go now, in id order. `builds` holds
/// every build of the builders concerned that still has its files, in any
/// order; `now` is in microseconds since the epoch.
pub fn to_prune(builds: &[BuildFacts], rules: &Retention, now: i64) -> Vec<i64> {
    let mut by_builder: HashMap<(&str, &str), Vec<&BuildFacts>> = HashMap::new();
    for b in builds {
        by_builder.entry((b.component.as_str(), b.target.as_str())).or_default().push(b);
    }
    let mut out = Vec::new();
    for ((component, _), mut list) in by_builder {
        let rule = rules.rule_for(component);
        // Newest first: a build's rank is how many builds of its builder are newer.
        list.sort_by_key(|b| std::cmp::Reverse(b.id));
        let mut newest_finished_seen = false;
        for (rank, b) in list.iter().enumerate() {
            let Some(finished) = b.finished_at else { continue };
            if !newest_finished_seen {
                newest_finished_seen = true;
                continue;
            }
            if b.pinned {
                continue;
            }
            let too_many = rule.keep_last.is_some_and(|k| rank >= k as usize);
            let too_old = rule.max_age.is_some_and(|age| now.saturating_sub(finished) > age.as_micros() as i64);
            if too_many || too_old {
                out.push(b.id);
            }
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeepRule;
    use std::time::Duration;

    const DAY_US: i64 = 86_400_000_000;

    fn build(id: i64, component: &str, finished_days_ago: Option<i64>, now: i64) -> BuildFacts {
        BuildFacts {
            id,
            component: component.into(),
            target: "t".into(),
            finished_at: finished_days_ago.map(|d| now - d * DAY_US),
            pinned: false,
        }
    }

    fn rules(keep_last: Option<u32>, max_age_days: Option<u64>) -> Retention {
        Retention {
            builds: KeepRule { keep_last, max_age: max_age_days.map(|d| Duration::from_secs(d * 86_400)) },
            ..Retention::default()
        }
    }

    #[test]
    fn keep_last_keeps_the_newest_of_each_builder() {
        let now = 1_000 * DAY_US;
        let builds: Vec<BuildFacts> = (1..=5).map(|i| build(i, "a", Some(10 - i), now)).collect();
        assert_eq!(to_prune(&builds, &rules(Some(2), None), now), [1, 2, 3]);
        // Another builder counts on its own.
        let mut more = builds.clone();
        more.push(BuildFacts { target: "u".into(), ..build(6, "a", Some(50), now) });
        assert_eq!(to_prune(&more, &rules(Some(2), None), now), [1, 2, 3]);
    }

    #[test]
    fn max_age_removes_old_files_but_never_the_builders_last_result() {
        let now = 1_000 * DAY_US;
        let builds = vec![build(1, "a", Some(200), now), build(2, "a", Some(100), now), build(3, "a", Some(5), now)];
        assert_eq!(to_prune(&builds, &rules(None, Some(90)), now), [1, 2]);
        // The newest is kept however old; an unfinished newer one does not count.
        let old = vec![build(1, "a", Some(300), now), build(2, "a", Some(200), now), build(3, "a", None, now)];
        assert_eq!(to_prune(&old, &rules(None, Some(90)), now), [1]);
    }

    #[test]
    fn pinned_builds_and_component_rules_are_honoured() {
        let now = 1_000 * DAY_US;
        let mut builds: Vec<BuildFacts> = (1..=4).map(|i| build(i, "a", Some(10 - i), now)).collect();
        builds[0].pinned = true;
        assert_eq!(to_prune(&builds, &rules(Some(1), None), now), [2, 3]);
        let mut r = rules(Some(1), None);
        r.components.insert("a".into(), KeepRule { keep_last: Some(3), max_age: None });
        assert_eq!(to_prune(&builds, &r, now), Vec::<i64>::new());
        // No rule at all keeps everything.
        assert_eq!(to_prune(&builds, &rules(None, None), now), Vec::<i64>::new());
    }
}
