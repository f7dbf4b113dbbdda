//! Requesting builds: [`submit`] (the API, the web's force form, the base
//! hook, schedules), [`submit_change`] (forge hooks, the base hook with a
//! repository, the poller), [`rebuild`] (the same build again: the API, the
//! CLI and the web's Rebuild button) and [`rebuild_dependents`] (after a
//! publish). Every one ends in [`store_request`], which stores the builds
//! and tells the dispatcher.

use super::OpError;
use crate::caller::Caller;
use crate::clock::now_us;
use crate::events::Event;
use crate::shared::Shared;
use kiln_core::change::Change;
use kiln_core::job::BuildSource;
use kiln_core::matrix::{self, RequestSpec};
use kiln_core::perm::Permission;
use kiln_core::props::{
    request_properties, requested, Properties, Property, PropertySource, AUTHOR, BASE_BRANCH, FETCH_REF, FORK,
    HEAD_REPOSITORY, PULL_REQUEST, REVISION, SIGNED_BY_PROPERTY,
};
use kiln_core::BuildState;
use kiln_db::{BuildRow, NewBuild};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest reason kept with a request.
const MAX_REASON: usize = 1000;

/// Builds asked for together.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub spec: RequestSpec,
    /// Checked already (see [`kiln_core::props::request_properties`]).
    pub properties: Properties,
    pub reason: Option<String>,
}

/// A stored request and its builds, as stored (queued).
#[derive(Debug, Clone)]
pub struct Created {
    pub request_id: i64,
    pub builds: Vec<BuildRow>,
}

/// Plans a request against the current config, stores it and wakes the
/// dispatcher. Needs own_jobs; the builds are recorded as the caller's.
pub async fn submit(s: &Shared, caller: &Caller, req: NewRequest) -> Result<Created, OpError> {
    caller.require(Permission::OwnJobs)?;
    let farm = s.farm();
    let plan = matrix::plan(&farm.cfg, &req.spec)?;
    let builds: Vec<NewBuild> = plan
        .into_iter()
        .map(|p| {
            let mut properties: Properties = farm
                .cfg
                .component(&p.component)
                .map(|c| {
                    c.properties
                        .iter()
                        .map(|(k, v)| (k.clone(), Property { value: v.clone(), source: PropertySource::Config }))
                        .collect()
                })
                .unwrap_or_default();
            properties.extend(req.properties.clone());
            NewBuild { component: p.component, target: p.target, properties, depends_on: p.depends_on }
        })
        .collect();
    store_request(s, caller, req.reason.as_deref(), builds).await
}

/// Requests builds of every component `change` concerns, at its revision;
/// `None` when it concerns none. `origin` says where the change came from
/// (a forge, `poller`, the base hook): statuses go back to a forge with a
/// token. The builds are recorded as the change's pusher at `origin`.
///
/// A pull request's builds are test builds: they carry the pull request's
/// properties (`pull_request`, `fetch_ref`, `head_repository`,
/// `base_branch`, `fork`), are never published, and a fork's run without
/// the component's secrets. When the change does not list its files (a
/// pull request, a new branch), the master's mirror tells; if it cannot,
/// every component of the repository and branch builds.
pub async fn submit_change(
    s: &Arc<Shared>,
    caller: &Caller,
    change: &Change,
    origin: &str,
) -> Result<Option<Created>, OpError> {
    caller.require(Permission::OwnJobs)?;
    let farm = s.farm();
    let mut change = change.clone();
    if change.files_unknown() {
        if let Some(source) = change.source_in(&farm.cfg.components) {
            match crate::mirrors::changed_files(&farm.data_dir(), &source.url, &change).await {
                Ok(files) => change.files = Some(files),
                Err(e) => tracing::warn!(
                    url = %kiln_core::redact::url_for_logs(&source.url), revision = %change.revision, error = %e,
                    "cannot tell which files the change touched; building every component of its branch"
                ),
            }
        }
    }
    let components: Vec<String> = change.components(&farm.cfg.components).iter().map(|c| c.name.clone()).collect();
    if components.is_empty() {
        return Ok(None);
    }
    let properties = request_properties(&change_properties(&change, origin), PropertySource::Change)?;
    let where_ = change.project.clone().or_else(|| change.urls.first().cloned()).unwrap_or_default();
    let what = match &change.pull {
        Some(p) => format!("pull request #{} of {where_} into {}", p.number, change.branch),
        None => format!("push to {} of {where_}", change.branch),
    };
    let reason = if change.comments.is_empty() { what } else { format!("{what}: {}", change.comments) };
    let by = match &change.who {
        Some(w) => format!("{w} ({origin})"),
        None => origin.to_string(),
    };
    let spec = RequestSpec { components, all: false, targets: Vec::new() };
    let created = submit(s, &caller.named(by), NewRequest { spec, properties, reason: Some(reason) }).await?;
    crate::reporters::status::request_created(s, &created.builds);
    Ok(Some(created))
}

/// What a change's builds record of it, as properties.
fn change_properties(change: &Change, origin: &str) -> BTreeMap<String, String> {
    let bounded = |s: &str, max: usize| s.chars().take(max).collect::<String>();
    let mut given = BTreeMap::new();
    given.insert(REVISION.to_string(), change.revision.clone());
    given.insert("branch".to_string(), change.branch.clone());
    if let Some(url) = change.urls.first() {
        given.insert("repository".to_string(), bounded(url, 500));
    }
    given.insert("change_source".to_string(), origin.to_string());
    if let Some(p) = &change.project {
        given.insert("project".to_string(), bounded(p, 200));
    }
    if let Some(w) = &change.who {
        given.insert("changed_by".to_string(), w.clone());
    }
    if let Some(a) = &change.author {
        given.insert(AUTHOR.to_string(), a.clone());
    }
    if let Some(p) = &change.pull {
        given.insert(PULL_REQUEST.to_string(), p.number.to_string());
        given.insert(FETCH_REF.to_string(), p.fetch_ref.clone());
        given.insert(BASE_BRANCH.to_string(), change.branch.clone());
        given.insert(FORK.to_string(), p.fork.to_string());
        if !p.head_repository.is_empty() {
            given.insert(HEAD_REPOSITORY.to_string(), bounded(&p.head_repository, 500));
        }
    }
    given
}

/// Builds build `id` again: the same component on the same target, with
/// the properties its request gave (the user's and the change's, so a
/// change builds at the same revision) and from the same source (the same
/// upload for an uploaded package). Needs own_jobs.
pub async fn rebuild(s: &Shared, caller: &Caller, id: i64) -> Result<Created, OpError> {
    caller.require(Permission::OwnJobs)?;
    let row = s.store.build(id).await?.ok_or_else(|| OpError::NotFound(format!("no build {id}")))?;
    let reason = format!("rebuild of #{id}");
    let properties = requested(&row.properties);
    match BuildSource::of(&row.properties) {
        BuildSource::Component => {
            let spec = RequestSpec { components: vec![row.component], all: false, targets: vec![row.target] };
            submit(s, caller, NewRequest { spec, properties, reason: Some(reason) }).await
        }
        BuildSource::Upload(upload) => {
            if !crate::uploads::kept_dir(&s.farm().data_dir(), &upload).is_dir() {
                return Err(OpError::NotFound(format!("the upload build {id} was made from is no longer kept")));
            }
            if s.farm().cfg.target(&row.target).is_none() {
                return Err(OpError::NotFound(format!("target {} is no longer in the config", row.target)));
            }
            // The same upload was signed by the same key, whoever rebuilds it.
            let mut properties = with_source(properties, &BuildSource::Upload(upload));
            if let Some(signer) = row.properties.get(SIGNED_BY_PROPERTY).filter(|p| p.source == PropertySource::Request)
            {
                properties.insert(SIGNED_BY_PROPERTY.to_string(), signer.clone());
            }
            let build = NewBuild { component: row.component, target: row.target, properties, depends_on: Vec::new() };
            store_request(s, caller, Some(&reason), vec![build]).await
        }
    }
}

/// The properties with the one that records `source` added.
pub(super) fn with_source(mut properties: Properties, source: &BuildSource) -> Properties {
    properties.extend(source.property());
    properties
}

/// After `component` was published on `target` by build `id`: requests
/// builds of the components that asked to be rebuilt after it
/// (`rebuild_after`) on that target, unless the same request builds them
/// there already. The new request carries the triggering request's own
/// properties (a release rebuilds as a release).
pub async fn rebuild_dependents(s: &Shared, id: i64, component: &str, target: &str) {
    let farm = s.farm();
    let Ok(Some(build)) = s.store.build(id).await else { return };
    let siblings = s.store.request_builds(build.request_id).await.unwrap_or_default();
    let wanted = matrix::dependents_to_rebuild(&farm.cfg, component, target, |dependent| {
        siblings.iter().any(|b| b.component == dependent && b.target == target)
    });
    // The user's own request properties only: not the upload (nor who
    // signed it), and not what steps set (a commit of another repository
    // means nothing here).
    let properties: Properties = build
        .properties
        .iter()
        .filter(|(k, p)| {
            p.source == PropertySource::Request && !kiln_core::props::kiln_only(k) && k.as_str() != REPLACE
        })
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    let rebuilder = Caller::system("rebuild");
    for dependent in wanted {
        let spec = RequestSpec { components: vec![dependent.clone()], all: false, targets: vec![target.to_string()] };
        let reason = format!("rebuild after {component} was published (build {id})");
        let req = NewRequest { spec, properties: properties.clone(), reason: Some(reason) };
        match submit(s, &rebuilder, req).await {
            Ok(created) => {
                tracing::info!(build = id, dependent = %dependent, request = created.request_id, "dependent rebuild requested")
            }
            Err(e) => {
                tracing::error!(build = id, dependent = %dependent, error = %e, "cannot request the dependent's rebuild")
            }
        }
    }
}

/// The property that overwrites a version already published.
const REPLACE: &str = "replace";

/// Whether `caller` may ask for builds with these properties: replacing a
/// published version (`replace=true`) takes server_admin, since clients
/// that installed the old bytes would never see the new ones.
pub(super) fn may_ask(caller: &Caller, properties: &Properties) -> Result<(), crate::caller::Forbidden> {
    if properties.get(REPLACE).is_some_and(|p| p.value == "true") {
        caller.require(Permission::ServerAdmin)?;
    }
    Ok(())
}

/// Stores a request's builds as queued and wakes the dispatcher.
pub(super) async fn store_request(
    s: &Shared,
    caller: &Caller,
    reason: Option<&str>,
    builds: Vec<NewBuild>,
) -> Result<Created, OpError> {
    for b in &builds {
        may_ask(caller, &b.properties)?;
    }
    let who = caller.name.as_str();
    let reason = reason.map(|r| r.chars().take(MAX_REASON).collect::<String>());
    let now = now_us();
    let (request_id, ids) = s.store.create_request(now, Some(who), reason.as_deref(), &builds).await?;
    tracing::info!(request = request_id, builds = ids.len(), by = who, "builds requested");
    // The rows as stored, without reading them back.
    let rows: Vec<BuildRow> = builds
        .into_iter()
        .zip(&ids)
        .map(|(b, &id)| BuildRow {
            id,
            request_id,
            component: b.component,
            target: b.target,
            state: BuildState::Queued,
            reason: None,
            requested_at: now,
            started_at: None,
            finished_at: None,
            requested_by: Some(who.to_string()),
            worker: None,
            attempt: 0,
            properties: b.properties,
            depends_on: b.depends_on.iter().filter_map(|&i| ids.get(i).copied()).collect(),
        })
        .collect();
    s.send(Event::Queued(rows.clone()));
    Ok(Created { request_id, builds: rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{user, Tester};

    fn spec(component: &str) -> RequestSpec {
        RequestSpec { components: vec![component.into()], all: false, targets: Vec::new() }
    }

    fn queued(t: &mut Tester) -> Vec<BuildRow> {
        match t.next_event() {
            Some(Event::Queued(rows)) => rows,
            _ => panic!("the dispatcher was not told of new builds"),
        }
    }

    #[tokio::test]
    async fn submit_stores_the_builds_and_tells_the_dispatcher() {
        let mut t = Tester::new().await;
        let ann = user("ann@example.org", &[Permission::OwnJobs]);
        let given = BTreeMap::from([("release".to_string(), "true".to_string())]);
        let properties = request_properties(&given, PropertySource::Request).expect("props");
        let made = submit(&t.shared, &ann, NewRequest { spec: spec("hello"), properties, reason: Some("why".into()) })
            .await
            .expect("submitted");
        let rows = queued(&mut t);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, made.builds[0].id);
        let stored = t.shared.store.build(made.builds[0].id).await.expect("read").expect("stored");
        assert_eq!(stored.requested_by.as_deref(), Some("ann@example.org"));
        assert_eq!(stored.properties["release"].value, "true");
        assert_eq!(stored.properties["flavour"].source, PropertySource::Config);
    }

    #[tokio::test]
    async fn submit_refuses_without_own_jobs_and_for_unknown_components() {
        let mut t = Tester::new().await;
        let carl = user("carl@example.org", &[]);
        let req = NewRequest { spec: spec("hello"), properties: Properties::new(), reason: None };
        let refused = submit(&t.shared, &carl, req.clone()).await.expect_err("forbidden");
        assert_eq!(refused, OpError::Forbidden("carl@example.org lacks the own_jobs permission this needs".into()));
        let unknown = NewRequest { spec: spec("nope"), ..req };
        assert!(matches!(submit(&t.shared, &Caller::admin(), unknown).await, Err(OpError::NotFound(_))));
        assert!(t.next_event().is_none(), "nothing may be queued");
    }

    #[tokio::test]
    async fn a_rebuild_of_a_change_builds_the_same_revision() {
        let mut t = Tester::new().await;
        let change = Change {
            urls: vec!["https://example.org/pkg.git".into()],
            branch: "main".into(),
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            who: Some("dev".into()),
            ..Default::default()
        };
        let made = submit_change(&t.shared, &Caller::system("github"), &change, "github")
            .await
            .expect("submitted")
            .expect("concerns pkg");
        queued(&mut t);
        let again = rebuild(&t.shared, &Caller::admin(), made.builds[0].id).await.expect("rebuilt");
        let row = &queued(&mut t)[0];
        assert_eq!(row.id, again.builds[0].id);
        assert_eq!(row.component, "pkg");
        assert_eq!(row.properties["revision"].value, change.revision);
        assert_eq!(row.properties["revision"].source, PropertySource::Change);
        assert_eq!(row.properties["branch"].value, "main");
        assert_eq!(row.requested_by.as_deref(), Some("admin"));
    }

    #[tokio::test]
    async fn a_rebuild_of_an_upload_builds_the_same_upload() {
        let mut t = Tester::new().await;
        let upload = BuildSource::Upload("0123456789abcdef".into());
        let dir = t.shared.farm().data_dir().join("uploads/0123456789abcdef");
        std::fs::create_dir_all(&dir).expect("upload dir");
        let build = NewBuild {
            component: "hello-src".into(),
            target: "debian-12-amd64".into(),
            properties: with_source(Properties::new(), &upload),
            depends_on: Vec::new(),
        };
        let made = store_request(&t.shared, &Caller::admin(), None, vec![build]).await.expect("stored");
        queued(&mut t);
        let again = rebuild(&t.shared, &Caller::admin(), made.builds[0].id).await.expect("rebuilt");
        let row = &queued(&mut t)[0];
        assert_eq!(row.id, again.builds[0].id);
        assert_eq!(BuildSource::of(&row.properties), upload);
        assert_eq!(row.component, "hello-src");
        // Once the upload is gone, a rebuild says so.
        std::fs::remove_dir_all(&dir).expect("remove");
        let gone = rebuild(&t.shared, &Caller::admin(), made.builds[0].id).await.expect_err("gone");
        assert!(matches!(gone, OpError::NotFound(ref m) if m.contains("no longer kept")), "{gone:?}");
    }

    #[tokio::test]
    async fn dependents_rebuild_with_the_request_properties_only() {
        let config = format!(
            "{}\n[[component]]\nname = \"app\"\ndepends_on = [\"hello\"]\nrebuild_after = [\"hello\"]\nsteps = [{{ name = \"s\", run = \"true\" }}]\n",
            crate::ops::testing::FARM
        );
        let mut t = Tester::with_config(&config).await;
        let mut properties = Properties::new();
        properties.insert("release".into(), Property { value: "true".into(), source: PropertySource::Request });
        properties.insert("got_revision".into(), Property { value: "c0ffee1".into(), source: PropertySource::Step });
        let build =
            NewBuild { component: "hello".into(), target: "debian-12-amd64".into(), properties, depends_on: vec![] };
        let made = store_request(&t.shared, &Caller::admin(), None, vec![build]).await.expect("stored");
        queued(&mut t);
        rebuild_dependents(&t.shared, made.builds[0].id, "hello", "debian-12-amd64").await;
        let rows = queued(&mut t);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].component, "app");
        assert_eq!(rows[0].properties["release"].value, "true");
        assert!(!rows[0].properties.contains_key("revision"), "{:?}", rows[0].properties);
        assert_eq!(rows[0].requested_by.as_deref(), Some("rebuild"));
    }

    #[tokio::test]
    async fn replacing_a_published_version_needs_server_admin() {
        let mut t = Tester::new().await;
        let given = BTreeMap::from([("replace".to_string(), "true".to_string())]);
        let properties = request_properties(&given, PropertySource::Request).expect("props");
        let req = NewRequest { spec: spec("hello"), properties, reason: None };
        let ann = user("ann@example.org", &[Permission::OwnJobs]);
        let refused = submit(&t.shared, &ann, req.clone()).await.expect_err("refused");
        assert_eq!(refused, OpError::Forbidden("ann@example.org lacks the server_admin permission this needs".into()));
        assert!(t.next_event().is_none());
        submit(&t.shared, &Caller::admin(), req).await.expect("an admin may");
        assert!(matches!(t.next_event(), Some(Event::Queued(_))));
    }

    #[tokio::test]
    async fn rebuild_needs_own_jobs_and_a_build() {
        let t = Tester::new().await;
        let carl = user("carl@example.org", &[]);
        assert!(matches!(rebuild(&t.shared, &carl, 1).await, Err(OpError::Forbidden(_))));
        assert_eq!(
            rebuild(&t.shared, &Caller::admin(), 42).await.expect_err("none"),
            OpError::NotFound("no build 42".into())
        );
    }
}
