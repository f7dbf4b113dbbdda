//! A pull (merge) request's test builds after it was opened: closing or
//! merging it cancels those that have not ended, and a comment asking for
//! it rebuilds the latest ones. (Opening and updating one request test
//! builds through [`super::requests::submit_change`].)

use super::requests::{rebuild, Created};
use super::OpError;
use crate::caller::Caller;
use crate::shared::Shared;
use kiln_core::change::normalize_url;
use kiln_core::perm::Permission;
use kiln_core::props::{PropertySource, FORK, PULL_REQUEST};
use kiln_db::BuildRow;
use std::sync::Arc;

/// Which pull request of which repository, as a forge's hook names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRef<'a> {
    /// The forge whose hook said so (`github`, `gitlab`, `gitea`).
    pub forge: &'a str,
    /// `owner/name` on the forge, when the payload gives it.
    pub project: Option<&'a str>,
    /// The repository's URLs, used when there is no project.
    pub urls: &'a [String],
    pub number: u64,
}

impl PullRef<'_> {
    /// Whether build `b` is a test build this forge's hook started for
    /// this pull request: only properties a verified change set count,
    /// never what a requester gave.
    fn started(&self, b: &BuildRow) -> bool {
        let change = |k: &str| b.properties.get(k).filter(|p| p.source == PropertySource::Change).map(|p| &p.value);
        if change("change_source").map(String::as_str) != Some(self.forge)
            || change(PULL_REQUEST).map(String::as_str) != Some(self.number.to_string().as_str())
        {
            return false;
        }
        match self.project {
            Some(p) => change("project").map(String::as_str) == Some(p),
            None => {
                change("repository").is_some_and(|r| self.urls.iter().any(|u| normalize_url(u) == normalize_url(r)))
            }
        }
    }
}

/// How far back a rebuild looks for a pull request's test builds.
const LOOK_BACK: i64 = 500;

/// Cancels the test builds of a pull request that was closed or merged
/// and have not ended; returns their ids. The forge's hook stands for the
/// caller: it may cancel what it started, nothing else.
pub async fn close(s: &Shared, pull: &PullRef<'_>) -> Result<Vec<i64>, OpError> {
    let caller =
        Caller::system(format!("{} (pull request #{} closed)", pull.forge, pull.number)).with(Permission::KillAnyJob);
    let mut cancelled = Vec::new();
    for b in s.store.unfinished_builds().await?.iter().filter(|b| pull.started(b)) {
        match super::builds::cancel(s, &caller, b.id).await {
            Ok(_) => cancelled.push(b.id),
            // It ended meanwhile.
            Err(OpError::Conflict(_) | OpError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if !cancelled.is_empty() {
        tracing::info!(forge = pull.forge, pull_request = pull.number, builds = ?cancelled, "pull request closed; its test builds cancelled");
    }
    Ok(cancelled)
}

/// Builds again the latest request of test builds of a pull request (the
/// same components, targets and head commit), for `caller` (the forge's
/// hook, named after the commenter), and reports them pending on the
/// forge. A fork's are rebuilt only while `forks` allows them. `None` when
/// the pull request has no test builds to repeat.
pub async fn rebuild_latest(
    s: &Arc<Shared>,
    caller: &Caller,
    pull: &PullRef<'_>,
    forks: bool,
) -> Result<Option<Vec<Created>>, OpError> {
    caller.require(Permission::OwnJobs)?;
    let number = pull.number.to_string();
    let found = s.store.builds_with_property(PULL_REQUEST, &number, PropertySource::Change, LOOK_BACK).await?;
    let wanted =
        |b: &BuildRow| pull.started(b) && (forks || b.properties.get(FORK).is_some_and(|f| f.value == "false"));
    let Some(latest) = found.iter().filter(|b| wanted(b)).map(|b| b.request_id).max() else {
        return Ok(None);
    };
    let mut made = Vec::new();
    for b in s.store.request_builds(latest).await?.iter().filter(|b| wanted(b)) {
        let again = rebuild(s, caller, b.id).await?;
        crate::reporters::status::request_created(s, &again.builds);
        made.push(again);
    }
    Ok(Some(made))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{CancelOutcome, Event};
    use crate::ops::requests::submit_change;
    use crate::ops::testing::Tester;
    use kiln_core::change::{Change, PullRequest};

    fn pull_change(number: u64, revision: &str) -> Change {
        Change {
            urls: vec!["https://example.org/pkg.git".into()],
            branch: "main".into(),
            revision: revision.into(),
            files: Some(vec!["src/main.c".into()]),
            who: Some("mallory".into()),
            comments: "faster".into(),
            project: Some("grace/pkg".into()),
            pull: Some(PullRequest {
                number,
                fetch_ref: format!("refs/pull/{number}/head"),
                head_repository: "https://example.org/mallory/pkg.git".into(),
                fork: true,
            }),
            ..Default::default()
        }
    }

    fn queued(t: &mut Tester) -> Vec<BuildRow> {
        match t.next_event() {
            Some(Event::Queued(rows)) => rows,
            _ => panic!("the dispatcher was not told of new builds"),
        }
    }

    #[tokio::test]
    async fn a_pull_request_is_test_built_and_closing_it_cancels_only_its_own_builds() {
        let mut t = Tester::new().await;
        let github = Caller::system("github");
        let made = submit_change(&t.shared, &github, &pull_change(7, &"a".repeat(40)), "github")
            .await
            .expect("submitted")
            .expect("concerns pkg");
        let row = &queued(&mut t)[0];
        assert_eq!(row.id, made.builds[0].id);
        for (k, v) in
            [("pull_request", "7"), ("fetch_ref", "refs/pull/7/head"), ("fork", "true"), ("base_branch", "main")]
        {
            assert_eq!(row.properties[k].value, v, "{k}");
            assert_eq!(row.properties[k].source, PropertySource::Change, "{k}");
        }
        assert!(kiln_core::props::is_test_build(&row.properties));
        assert!(!kiln_core::props::may_have_secrets(&row.properties));
        let stored = t.shared.store.build(row.id).await.expect("read").expect("stored");
        assert_eq!(stored.requested_by.as_deref(), Some("mallory (github)"));
        // Another pull request, and a user's request naming pull request 7.
        submit_change(&t.shared, &github, &pull_change(8, &"b".repeat(40)), "github").await.expect("8").expect("8");
        let other = queued(&mut t)[0].id;
        let given = std::collections::BTreeMap::from([("pull_request".to_string(), "7".to_string())]);
        let properties = kiln_core::props::request_properties(&given, PropertySource::Request).expect("props");
        let spec = kiln_core::matrix::RequestSpec { components: vec!["pkg".into()], all: false, targets: Vec::new() };
        let req = crate::ops::requests::NewRequest { spec, properties, reason: None };
        crate::ops::requests::submit(&t.shared, &Caller::admin(), req).await.expect("a user's");
        let users = queued(&mut t)[0].id;

        let pull = PullRef { forge: "github", project: Some("grace/pkg"), urls: &[], number: 7 };
        let shared = t.shared.clone();
        let closing = tokio::spawn(async move {
            let pull = PullRef { forge: "github", project: Some("grace/pkg"), urls: &[], number: 7 };
            close(&shared, &pull).await
        });
        match t.events.recv().await {
            Some(Event::Cancel { build_id, by, reply }) => {
                assert_eq!(build_id, row.id);
                assert_eq!(by, "github (pull request #7 closed)");
                let _ = reply.send(CancelOutcome::Cancelled);
            }
            _ => panic!("no cancel asked"),
        }
        assert_eq!(closing.await.expect("task").expect("closed"), [row.id]);
        assert!(t.next_event().is_none(), "builds {other} and {users} must stay");
        // A gitlab hook cannot close github's pull request 7.
        let theirs = PullRef { forge: "gitlab", ..pull };
        assert!(!theirs.started(&stored));
    }

    #[tokio::test]
    async fn a_rebuild_repeats_the_latest_test_builds_at_their_head() {
        let mut t = Tester::new().await;
        let github = Caller::system("github");
        for rev in ["a", "c"] {
            submit_change(&t.shared, &github, &pull_change(7, &rev.repeat(40)), "github")
                .await
                .expect("ok")
                .expect("pkg");
            queued(&mut t);
        }
        let pull = PullRef { forge: "github", project: Some("grace/pkg"), urls: &[], number: 7 };
        let made = rebuild_latest(&t.shared, &github.named("grace (github comment)"), &pull, true)
            .await
            .expect("rebuilt")
            .expect("there were test builds");
        assert_eq!(made.len(), 1);
        let row = &queued(&mut t)[0];
        assert_eq!(row.properties["revision"].value, "c".repeat(40));
        assert_eq!(row.properties["pull_request"].value, "7");
        assert!(kiln_core::props::is_test_build(&row.properties));
        assert_eq!(row.requested_by.as_deref(), Some("grace (github comment)"));
        let none = PullRef { number: 9, ..pull };
        assert!(rebuild_latest(&t.shared, &github, &none, true).await.expect("asked").is_none());
        // The fork's builds are not repeated once forks are no longer built.
        assert!(rebuild_latest(&t.shared, &github, &pull, false).await.expect("asked").is_none());
    }
}
