//! The store suite: every test runs on SQLite and on PostgreSQL.
//!
//! PostgreSQL comes from `KILN_TEST_POSTGRES` (default: the local server's
//! `test` database, see DEVELOPERS.md); each test gets its own schema,
//! dropped at the end.

use kiln_core::props::{Properties, Property, PropertySource};
use kiln_core::{BuildState, StepState};
use kiln_db::{BuildFilter, NewBuild, Store, Write};
use std::future::Future;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn on_both<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("kiln.db").display());
    let store = Store::open(&url).await.expect("open sqlite store");
    test(store.clone()).await;
    store.close().await;

    on_postgres(|store, _| test(store)).await;
}

/// Runs `test` on a PostgreSQL store of its own schema, with the URL that
/// reaches it (for a test that needs a connection of its own).
async fn on_postgres<F, Fut>(test: F)
where
    F: Fn(Store, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let base = std::env::var("KILN_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_PG.to_string());
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw).expect("random");
    let schema = format!("kiln_test_{}", hex::encode(raw));
    let admin = Store::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is needed for the store suite (see DEVELOPERS.md): {e}"));
    admin.execute_raw(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let store = Store::open(&url).await.expect("open postgres store");
    test(store.clone(), url).await;
    store.close().await;
    admin.execute_raw(&format!("DROP SCHEMA {schema} CASCADE")).await.expect("drop schema");
    admin.close().await;
}

fn props(pairs: &[(&str, &str)]) -> Properties {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Property { value: v.to_string(), source: PropertySource::Request }))
        .collect()
}

fn new_build(component: &str, target: &str, deps: &[usize]) -> NewBuild {
    NewBuild {
        component: component.into(),
        target: target.into(),
        properties: props(&[("release", "true")]),
        depends_on: deps.to_vec(),
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    on_both(|s| async move {
        assert_eq!(s.schema_version().await.expect("version"), kiln_db::latest_schema_version());
        assert_eq!(s.migrate().await.expect("migrate again"), 0);
    })
    .await;
}

#[tokio::test]
async fn a_request_stores_its_builds_and_dependencies() {
    on_both(|s| async move {
        let (req, ids) = s
            .create_request(
                1_000,
                Some("alice"),
                Some("nightly"),
                &[new_build("lib", "deb", &[]), new_build("app", "deb", &[0])],
            )
            .await
            .expect("create");
        assert_eq!(ids.len(), 2);
        let app = s.build(ids[1]).await.expect("read").expect("exists");
        assert_eq!(app.request_id, req);
        assert_eq!(app.depends_on, vec![ids[0]]);
        assert_eq!(app.state, BuildState::Queued);
        assert_eq!(app.requested_by.as_deref(), Some("alice"));
        assert_eq!(app.properties, props(&[("release", "true")]));
        assert_eq!(app.attempt, 0);
        assert!(s.build(ids[1] + 100).await.expect("read").is_none());
    })
    .await;
}

#[tokio::test]
async fn a_build_is_claimed_exactly_once() {
    on_both(|s| async move {
        let (_, ids) = s.create_request(1, None, None, &[new_build("a", "t", &[])]).await.expect("create");
        let id = ids[0];
        let steps = vec!["compile".to_string(), "test".to_string()];
        let mut tasks = Vec::new();
        for w in 0..8 {
            let s = s.clone();
            let steps = steps.clone();
            tasks.push(tokio::spawn(async move { s.claim(id, &format!("w{w}"), 2, &steps).await.expect("claim") }));
        }
        let mut won = 0;
        for t in tasks {
            if t.await.expect("join") {
                won += 1;
            }
        }
        assert_eq!(won, 1);
        let b = s.build(id).await.expect("read").expect("exists");
        assert_eq!(b.state, BuildState::Running);
        assert_eq!(b.attempt, 1);
        assert_eq!(b.started_at, Some(2));
        let st = s.steps(id).await.expect("steps");
        assert_eq!(st.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), ["compile", "test"]);
        assert!(st.iter().all(|x| x.state == StepState::Pending));
    })
    .await;
}

#[tokio::test]
async fn state_changes_follow_the_state_machine() {
    on_both(|s| async move {
        let (_, ids) = s
            .create_request(1, None, None, &[new_build("a", "t", &[]), new_build("b", "t", &[])])
            .await
            .expect("create");
        // A queued build cannot succeed without running.
        assert!(!s.finish(ids[0], BuildState::Succeeded, None, 5).await.expect("finish"));
        assert!(s.claim(ids[0], "w", 2, &["one".into(), "two".into()]).await.expect("claim"));
        // Claimed once: a second claim changes nothing, not even its steps.
        assert!(!s.claim(ids[0], "w2", 3, &["other".into()]).await.expect("claim again"));
        let claimed = s.build(ids[0]).await.expect("get").expect("row");
        assert_eq!((claimed.worker.as_deref(), claimed.attempt), (Some("w"), 1));
        assert_eq!(
            s.steps(ids[0]).await.expect("steps").iter().map(|st| st.name.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        s.apply(&[
            Write::StepStarted { build_id: ids[0], idx: 0, at: 3 },
            Write::StepFinished {
                build_id: ids[0],
                idx: 0,
                state: StepState::Failed,
                exit_code: Some(2),
                at: 4,
                log_size: 17,
            },
        ])
        .await
        .expect("step start and end");
        assert!(s.finish(ids[0], BuildState::Failed, Some("step one failed"), 5).await.expect("finish"));
        assert!(!s.finish(ids[0], BuildState::Succeeded, None, 6).await.expect("finish twice"));
        let b = s.build(ids[0]).await.expect("read").expect("exists");
        assert_eq!(
            (b.state, b.reason.as_deref(), b.finished_at),
            (BuildState::Failed, Some("step one failed"), Some(5))
        );
        let st = s.steps(ids[0]).await.expect("steps");
        assert_eq!((st[0].state, st[0].exit_code, st[0].log_size), (StepState::Failed, Some(2), 17));
        assert_eq!((st[1].state, st[1].started_at), (StepState::Skipped, None));
        // A queued build can be cancelled, and then not claimed.
        assert!(s.finish(ids[1], BuildState::Cancelled, None, 7).await.expect("cancel"));
        assert!(!s.claim(ids[1], "w", 8, &[]).await.expect("claim"));
    })
    .await;
}

#[tokio::test]
async fn a_requeued_build_runs_again_with_a_new_attempt() {
    on_both(|s| async move {
        let (_, ids) = s.create_request(1, None, None, &[new_build("a", "t", &[])]).await.expect("create");
        assert!(s.claim(ids[0], "w1", 2, &["s".into()]).await.expect("claim"));
        s.apply(&[Write::StepStarted { build_id: ids[0], idx: 0, at: 3 }]).await.expect("started");
        assert!(s.requeue(ids[0], "worker w1 lost", None).await.expect("requeue"));
        assert!(!s.requeue(ids[0], "again", None).await.expect("requeue twice"));
        let b = s.build(ids[0]).await.expect("read").expect("exists");
        assert_eq!((b.state, b.worker.as_deref()), (BuildState::Queued, None));
        assert!(s.steps(ids[0]).await.expect("steps").is_empty());
        assert!(s.claim(ids[0], "w2", 4, &["s".into()]).await.expect("claim"));
        let b = s.build(ids[0]).await.expect("read").expect("exists");
        assert_eq!((b.attempt, b.worker.as_deref()), (2, Some("w2")));
    })
    .await;
}

#[tokio::test]
async fn listing_filters_and_pages_newest_first() {
    on_both(|s| async move {
        let builds: Vec<NewBuild> =
            (0..25).map(|i| new_build(if i % 2 == 0 { "even" } else { "odd" }, "t", &[])).collect();
        let (_, ids) = s.create_request(1, None, None, &builds).await.expect("create");
        assert!(s.claim(ids[3], "w", 2, &[]).await.expect("claim"));
        let page = s.list_builds(&BuildFilter { limit: 10, ..Default::default() }).await.expect("list");
        assert_eq!(page.len(), 10);
        assert_eq!(page[0].id, ids[24]);
        let next = s
            .list_builds(&BuildFilter { limit: 10, before: Some(page[9].id), ..Default::default() })
            .await
            .expect("list");
        assert_eq!(next[0].id, ids[14]);
        let odd = s
            .list_builds(&BuildFilter { component: Some("odd".into()), limit: 100, ..Default::default() })
            .await
            .expect("list");
        assert_eq!(odd.len(), 12);
        let running = s
            .list_builds(&BuildFilter { state: Some(BuildState::Running), limit: 100, ..Default::default() })
            .await
            .expect("list");
        assert_eq!(running.iter().map(|b| b.id).collect::<Vec<_>>(), [ids[3]]);
        assert_eq!(s.unfinished_builds().await.expect("unfinished").len(), 25);
        let stats = s.builder_stats().await.expect("stats");
        let odd_stats = stats.iter().find(|x| x.component == "odd").expect("odd builder");
        assert_eq!((odd_stats.queued, odd_stats.running, odd_stats.last_build_id), (11, 1, ids[23]));
    })
    .await;
}

#[tokio::test]
async fn builds_are_found_by_a_property_value_exactly() {
    on_both(|s| async move {
        let with = |pairs: &[(&str, &str)]| NewBuild {
            component: "c".into(),
            target: "t".into(),
            properties: props(pairs),
            depends_on: Vec::new(),
        };
        let (_, first) = s.create_request(1, None, None, &[with(&[("pull_request", "7")])]).await.expect("create");
        let (_, other) = s
            .create_request(2, None, None, &[with(&[("pull_request", "70")]), with(&[("pull_request", "1_%\\\"x")])])
            .await
            .expect("create");
        let (_, second) = s
            .create_request(3, None, None, &[with(&[("pull_request", "7"), ("note", "pull_request 7")])])
            .await
            .expect("create");
        let found = s.builds_with_property("pull_request", "7", PropertySource::Request, 10).await.expect("query");
        assert_eq!(found.iter().map(|b| b.id).collect::<Vec<_>>(), [second[0], first[0]]);
        let odd = s.builds_with_property("pull_request", "1_%\\\"x", PropertySource::Request, 10).await.expect("query");
        assert_eq!(odd.iter().map(|b| b.id).collect::<Vec<_>>(), [other[1]]);
        assert!(s
            .builds_with_property("pull_request", "1", PropertySource::Request, 10)
            .await
            .expect("query")
            .is_empty());
        assert_eq!(
            s.builds_with_property("pull_request", "7", PropertySource::Request, 1).await.expect("query").len(),
            1
        );
        // The same value from another source is not it.
        assert!(s
            .builds_with_property("pull_request", "7", PropertySource::Change, 10)
            .await
            .expect("query")
            .is_empty());
    })
    .await;
}

#[tokio::test]
async fn batched_writes_apply_in_order_and_stay_conditional() {
    on_both(|s| async move {
        let (_, ids) = s
            .create_request(1, None, None, &[new_build("a", "t", &[]), new_build("b", "t", &[])])
            .await
            .expect("create");
        assert!(s.claim(ids[0], "w", 2, &["one".into(), "two".into()]).await.expect("claim"));
        let tricky = props(&[("note", "it's; -- a \"quote\"\n"), ("version", "1.0")]);
        s.apply(&[
            Write::StepStarted { build_id: ids[0], idx: 0, at: 3 },
            Write::StepFinished {
                build_id: ids[0],
                idx: 0,
                state: StepState::Failed,
                exit_code: Some(2),
                at: 4,
                log_size: 9,
            },
            Write::Properties { build_id: ids[0], properties: tricky.clone() },
            Write::Finish {
                build_id: ids[0],
                state: BuildState::Failed,
                reason: Some("step one's exit 2".into()),
                at: 5,
            },
            // Not running: stays queued.
            Write::Finish { build_id: ids[1], state: BuildState::Succeeded, reason: None, at: 5 },
        ])
        .await
        .expect("apply");
        let a = s.build(ids[0]).await.expect("read").expect("exists");
        assert_eq!(
            (a.state, a.reason.as_deref(), a.finished_at),
            (BuildState::Failed, Some("step one's exit 2"), Some(5))
        );
        assert_eq!(a.properties, tricky);
        let st = s.steps(ids[0]).await.expect("steps");
        assert_eq!(
            (st[0].state, st[0].exit_code, st[0].started_at, st[0].log_size),
            (StepState::Failed, Some(2), Some(3), 9)
        );
        assert_eq!(st[1].state, StepState::Skipped);
        let b = s.build(ids[1]).await.expect("read").expect("exists");
        assert_eq!(b.state, BuildState::Queued);
        // A finished build is not finished again.
        s.apply(&[Write::Finish { build_id: ids[0], state: BuildState::Succeeded, reason: None, at: 9 }])
            .await
            .expect("apply");
        assert_eq!(s.build(ids[0]).await.expect("read").expect("exists").state, BuildState::Failed);
    })
    .await;
}

#[tokio::test]
async fn artifacts_are_recorded_replaced_and_removed() {
    on_both(|s| async move {
        let (_, ids) = s.create_request(1, None, None, &[new_build("a", "t", &[])]).await.expect("create");
        let row = |name: &str, size: i64, sha: &str| kiln_db::ArtifactRow {
            build_id: ids[0],
            name: name.into(),
            size,
            sha256: sha.into(),
        };
        s.add_artifact(&row("hello.deb", 10, "aa")).await.expect("add");
        s.add_artifact(&row("hello.dsc", 3, "bb")).await.expect("add");
        s.add_artifact(&row("hello.deb", 12, "cc")).await.expect("replace");
        let got = s.artifacts_of(&ids).await.expect("list");
        assert_eq!(got, vec![row("hello.deb", 12, "cc"), row("hello.dsc", 3, "bb")]);
        // A re-queued build's next attempt starts without the old artifacts.
        assert!(s.claim(ids[0], "w", 2, &[]).await.expect("claim"));
        assert!(s.requeue(ids[0], "lost", None).await.expect("requeue"));
        assert!(s.artifacts_of(&ids).await.expect("list").is_empty());
    })
    .await;
}

#[tokio::test]
async fn console_queries_cover_cells_summaries_and_builder_stats() {
    on_both(|s| async move {
        let builds = [new_build("a", "t1", &[]), new_build("b", "t1", &[]), new_build("a", "t2", &[])];
        let (r1, ids) = s.create_request(1, Some("me"), Some("first"), &builds).await.expect("request");
        let (r2, ids2) = s.create_request(2, Some("me"), None, &builds[..1]).await.expect("request");
        assert!(s.claim(ids[1], "w", 3, &[]).await.expect("claim"));
        assert!(s.finish(ids[1], BuildState::Failed, Some("boom"), 4).await.expect("finish"));

        let recent = s.recent_requests(10, None).await.expect("recent");
        assert_eq!(recent.iter().map(|r| r.id).collect::<Vec<_>>(), [r2, r1]);
        assert_eq!(s.recent_requests(10, Some(r2)).await.expect("older")[0].reason.as_deref(), Some("first"));

        let all = s.console_cells(&[r1, r2], None, None).await.expect("cells");
        assert_eq!(all.len(), 4);
        let t2 = s.console_cells(&[r1, r2], Some("t2"), None).await.expect("cells");
        assert_eq!(t2, [(ids[2], r1, "a".to_string(), "t2".to_string(), BuildState::Queued)]);
        let only_b = s.console_cells(&[r1], None, Some("b")).await.expect("cells");
        assert_eq!(only_b[0].4, BuildState::Failed);

        let by_component = s.console_summary(&[r1], true).await.expect("summary");
        assert_eq!(by_component.iter().filter(|x| x.1 == "a").map(|x| x.3).sum::<i64>(), 2);
        let mut summary = s.console_summary(&[r1], false).await.expect("summary");
        summary.sort_by(|a, b| (&a.1, a.2.as_str()).cmp(&(&b.1, b.2.as_str())));
        assert_eq!(
            summary,
            [
                (r1, "t1".to_string(), BuildState::Failed, 1),
                (r1, "t1".to_string(), BuildState::Queued, 1),
                (r1, "t2".to_string(), BuildState::Queued, 1)
            ]
        );
        let props = s.request_properties(&[r1, r2]).await.expect("props");
        assert_eq!(props.len(), 2);
        assert!(props.iter().all(|(_, p)| p["release"].value == "true"));

        let stats = s.builder_stats().await.expect("stats");
        assert_eq!(stats.len(), 3);
        let of = |c: &str, t: &str| stats.iter().find(|x| x.component == c && x.target == t).expect("builder");
        let a_t1 = of("a", "t1");
        assert_eq!((a_t1.last_build_id, a_t1.last_state, a_t1.queued), (ids2[0], BuildState::Queued, 2));
        let b_t1 = of("b", "t1");
        assert_eq!((b_t1.last_state, b_t1.queued, b_t1.running), (BuildState::Failed, 0, 0));
    })
    .await;
}

#[tokio::test]
async fn a_drain_holds_until_resumed_and_keeps_its_first_author() {
    on_both(|s| async move {
        assert!(s.drained_workers().await.expect("none").is_empty());
        let first = s.drain_worker("w1", "ann@example.org", Some("disk swap"), 10).await.expect("drain");
        assert_eq!(
            (first.drained_by.as_str(), first.reason.as_deref(), first.drained_at),
            ("ann@example.org", Some("disk swap"), 10)
        );
        // Draining again changes nothing: the first drain stays in force.
        let again = s.drain_worker("w1", "bob@example.org", None, 20).await.expect("drain again");
        assert_eq!(again, first);
        s.drain_worker("w2", "bob@example.org", None, 30).await.expect("drain w2");
        let names: Vec<String> = s.drained_workers().await.expect("list").into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["w1", "w2"]);
        assert!(s.resume_worker("w1").await.expect("resume"));
        assert!(!s.resume_worker("w1").await.expect("resume twice"), "a worker not drained is not resumed");
        assert_eq!(s.drained_workers().await.expect("list").len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_claim_caught_by_a_fence_under_way_waits_for_it_and_then_loses_the_lease() {
    use sqlx::{Connection, Executor, Row};
    on_postgres(|s, url| async move {
        let m2 = s.clone().for_master("m2");
        m2.take_lease("10.0.0.2:8010", 100, 12).await.expect("lease");
        let (_, ids) = s.create_request(1, None, None, &[new_build("a", "t", &[])]).await.expect("create");
        // Another master fences m2, as take_over_master does, and has not
        // committed yet: m2's lease row is locked and its epoch moved on.
        let mut fence = sqlx::AnyConnection::connect(&url).await.expect("connect");
        fence.execute("BEGIN").await.expect("begin");
        let fence_pid: i32 = fence.fetch_one("SELECT pg_backend_pid()").await.expect("pid").get(0);
        fence.execute("SELECT 1 FROM masters WHERE id = 'm2' FOR UPDATE").await.expect("lock");
        fence.execute("UPDATE masters SET epoch = epoch + 1 WHERE id = 'm2'").await.expect("fence");
        // m2, which still thinks it holds epoch 1, claims meanwhile.
        let claim = tokio::spawn({
            let (m2, id) = (m2.clone(), ids[0]);
            async move { m2.claim(id, "w1", 2, &["s".into()]).await }
        });
        // It waits for the fence: seen as a session the fence blocks.
        // (PostgreSQL tells of no lock wait but through its views: looked at
        // every 10 ms, for at most 10 s.)
        let mut watch = sqlx::AnyConnection::connect(&url).await.expect("connect");
        let blocked = format!("SELECT COUNT(*) FROM pg_stat_activity WHERE {fence_pid} = ANY(pg_blocking_pids(pid))");
        let mut waited = false;
        for _ in 0..1000 {
            let n: i64 = watch.fetch_one(blocked.as_str()).await.expect("activity").get(0);
            if n > 0 {
                waited = true;
                break;
            }
            if claim.is_finished() {
                panic!("the claim went ahead under a fence: {:?}", claim.await);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(waited, "the claim never waited for the fence");
        fence.execute("COMMIT").await.expect("commit");
        let lost = claim.await.expect("join");
        assert!(matches!(lost, Err(kiln_db::StoreError::LeaseLost { .. })), "{lost:?}");
        let b = s.build(ids[0]).await.expect("read").expect("exists");
        assert_eq!(b.state, BuildState::Queued, "the fenced master claimed nothing");
        assert!(s.steps(ids[0]).await.expect("steps").is_empty());
    })
    .await;
}

#[tokio::test]
async fn masters_hold_leases_and_own_the_builds_they_claim() {
    on_both(|s| async move {
        let (m1, m2) = (s.clone().for_master("m1"), s.clone().for_master("m2"));
        assert_eq!(m1.take_lease("10.0.0.1:8010", 100, 12).await.expect("lease"), 1);
        assert_eq!(m2.take_lease("10.0.0.2:8010", 100, 12).await.expect("lease"), 1);
        assert!(m1.renew_lease(150).await.expect("renew"));
        // m1 restarts (a new handle, a new epoch); the old one can renew nothing.
        let m1_again = s.clone().for_master("m1");
        assert_eq!(m1_again.take_lease("10.0.0.1:8010", 200, 12).await.expect("lease"), 2);
        assert!(!m1.renew_lease(210).await.expect("stale renew"));
        assert!(m1_again.renew_lease(220).await.expect("renew"));
        let m1 = m1_again;
        let masters = s.masters().await.expect("masters");
        let seen: Vec<(&str, i64, i64)> = masters.iter().map(|m| (m.id.as_str(), m.epoch, m.heartbeat_at)).collect();
        assert_eq!(seen, [("m1", 2, 220), ("m2", 1, 100)]);
        // A build claimed through m2's handle is m2's: m1 cannot change it.
        let (_, ids) = s
            .create_request(1, None, None, &[new_build("a", "t", &[]), new_build("b", "t", &[])])
            .await
            .expect("create");
        assert!(m2.claim(ids[0], "w1", 2, &["s".into()]).await.expect("claim"));
        assert!(m1.claim(ids[1], "w2", 2, &[]).await.expect("claim"));
        let finish = |id| Write::Finish { build_id: id, state: BuildState::Succeeded, reason: None, at: 5 };
        let refused = m1.apply(&[finish(ids[0]), finish(ids[1])]).await.expect("apply");
        assert_eq!(refused, [ids[0]].into_iter().collect());
        assert_eq!(s.build(ids[0]).await.expect("get").expect("row").state, BuildState::Running);
        assert_eq!(s.build(ids[1]).await.expect("get").expect("row").state, BuildState::Succeeded);
        assert!(!m1.requeue(ids[0], "not mine", None).await.expect("requeue"));
        // m2 goes silent past its lease (heartbeat 100, stale before 300):
        // m1 and m3 both take over; m2 is fenced once and its build goes to one.
        let m3 = s.clone().for_master("m3");
        m3.take_lease("10.0.0.3:8010", 290, 12).await.expect("lease");
        // m2 went silent holding the publish lock (through a session of its
        // own, as a master's are): fencing it ends the session and frees the lock.
        let m2_session = s.connect_again_as("m2").await.expect("connect as m2");
        let stuck = m2_session.publish_lock().await.expect("publish lock");
        let (a, b) = tokio::join!(m1.take_over_master("m2", 300, 310), m3.take_over_master("m2", 300, 310));
        let (a, b) = (a.expect("take over"), b.expect("take over"));
        assert_eq!((a.len() + b.len(), a.iter().chain(&b).next()), (1, Some(&ids[0])), "{a:?} {b:?}");
        let freed = tokio::time::timeout(std::time::Duration::from_secs(10), m1.publish_lock()).await;
        freed.expect("the fenced master's publish lock was freed").expect("publish lock").release().await;
        stuck.release().await;
        let fenced = s.masters().await.expect("masters").into_iter().find(|m| m.id == "m2").expect("m2");
        assert_eq!((fenced.epoch, fenced.fenced_at), (2, Some(310)));
        // m2 wakes: it can renew, claim and change nothing.
        assert!(!m2.renew_lease(400).await.expect("renew"));
        assert_eq!(m2.apply(&[finish(ids[0])]).await.expect("apply"), [ids[0]].into_iter().collect());
        let (_, more) = s.create_request(1, None, None, &[new_build("c", "t", &[])]).await.expect("create");
        let lost = m2.claim(more[0], "w1", 401, &[]).await;
        assert!(matches!(lost, Err(kiln_db::StoreError::LeaseLost { .. })), "{lost:?}");
        assert!(!m2.holds_lease().await.expect("holds"));
        // It rejoins under a new epoch; the build it lost stays with its new owner.
        assert_eq!(m2.take_lease("10.0.0.2:8010", 410, 12).await.expect("lease"), 3);
        assert!(m2.reclaim_own_builds().await.expect("reclaim").is_empty());
        // The build's worker connects to m2: the build follows it, and its
        // former owner can change it no more.
        assert!(m2.adopt(ids[0], "w1").await.expect("adopt"));
        assert!(!m2.adopt(ids[0], "w9").await.expect("adopt on another worker"));
        let former = if a.is_empty() { &m3 } else { &m1 };
        assert_eq!(former.apply(&[finish(ids[0])]).await.expect("apply"), [ids[0]].into_iter().collect());
        // A cancel asked through another master reaches the owner.
        assert!(m3.ask_cancel(ids[0], "kim").await.expect("ask"));
        assert!(!m3.ask_cancel(ids[0], "kim").await.expect("ask again"));
        assert_eq!(m2.cancels_asked().await.expect("asked"), [(ids[0], "kim".to_string())]);
        assert!(m1.cancels_asked().await.expect("asked").is_empty());
        assert!(m2.apply(&[finish(ids[0])]).await.expect("apply").is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_master_hears_of_queue_changes_other_masters_make() {
    on_both(|s| async move {
        let (m1, m2) = (s.clone().for_master("m1"), s.clone().for_master("m2"));
        let Some(mut news) = m1.news().await.expect("listen") else {
            // SQLite: one master, nothing to hear.
            return;
        };
        let within = std::time::Duration::from_secs(10);
        // Its own change is not news to it; another master's is.
        m1.create_request(1, None, None, &[new_build("a", "t", &[])]).await.expect("create");
        m2.create_request(2, None, None, &[new_build("b", "t", &[])]).await.expect("create");
        tokio::time::timeout(within, news.next()).await.expect("news within 10 s").expect("news");
        // Only m1's own change since: nothing to hear (the channel is this
        // schema's alone, so other tests' farms are not heard either).
        m1.create_request(1, None, None, &[new_build("d", "t", &[])]).await.expect("create");
        let heard_own = tokio::time::timeout(std::time::Duration::from_millis(500), news.next()).await;
        assert!(heard_own.is_err(), "nothing more to hear: {heard_own:?}");
        // A cancel asked of the master running a build is news to it.
        let (_, ids) = m2.create_request(3, None, None, &[new_build("c", "t", &[])]).await.expect("create");
        tokio::time::timeout(within, news.next()).await.expect("news within 10 s").expect("news");
        // m1 runs it; m2 is asked to cancel it and asks m1.
        m1.take_lease("10.0.0.1:8010", 4, 12).await.expect("lease");
        assert!(m1.claim(ids[0], "w", 4, &[]).await.expect("claim"));
        assert!(m2.ask_cancel(ids[0], "kim").await.expect("ask"));
        tokio::time::timeout(within, news.next()).await.expect("news within 10 s").expect("news");
    })
    .await;
}

#[tokio::test]
async fn an_answered_change_is_synced_to_disk() {
    on_both(|s| async move {
        let settings = s.durability_settings().await.expect("settings");
        let get = |name: &str| settings.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_lowercase());
        match s.backend() {
            kiln_db::Backend::Sqlite => {
                // The log SQLite writes commits to, and Store::make_durable syncs.
                assert_eq!(get("journal_mode").as_deref(), Some("wal"), "{settings:?}");
                // Each call with nothing else in flight makes a sync of its own:
                // none returns on a sync that began before its commit.
                let before = s.log_syncs();
                for i in 0..3 {
                    s.create_request(2_000 + i, None, None, &[new_build("lib", "deb", &[])]).await.expect("create");
                    s.make_durable().await.expect("sync");
                }
                assert_eq!(s.log_syncs() - before, 3);
                // The log synced is the database's own, as SQLite names it.
                let log = s.synced_log().expect("a file database has a log");
                assert!(log.ends_with("kiln.db-wal") && log.exists(), "{log:?}");
            }
            kiln_db::Backend::Postgres => {
                // The server flushes its log before a commit returns.
                assert_eq!(get("fsync").as_deref(), Some("on"), "{settings:?}");
                assert_eq!(get("synchronous_commit").as_deref(), Some("on"), "{settings:?}");
                s.make_durable().await.expect("nothing left to sync");
                assert_eq!(s.log_syncs(), 0);
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_request_whose_caller_hangs_up_leaves_the_store_whole_and_usable() {
    on_both(|s| async move {
        // Where the caller stops waiting is a race: tried many times.
        for round in 0..20 {
            // The caller goes away right after asking (a client that hangs
            // up): its request goes in whole or not at all.
            let builds = [new_build("gone", "t", &[])];
            let asked = s.create_request(round, None, None, &builds);
            let _ = tokio::time::timeout(std::time::Duration::ZERO, asked).await;
            // Later requests and claims still commit: no transaction was
            // left open on the writer connection.
            let (_, ids) =
                s.create_request(round, None, None, &[new_build("next", "t", &[])]).await.expect("create after");
            assert!(s.claim(ids[0], "w", round, &["s".into()]).await.expect("claim"));
            let next = s.build(ids[0]).await.expect("read").expect("committed");
            assert_eq!((next.state, next.worker.as_deref()), (BuildState::Running, Some("w")));
        }
        let filter = BuildFilter { component: Some("gone".into()), ..Default::default() };
        let gone = s.list_builds(&filter).await.expect("list");
        assert!(gone.len() <= 20 && gone.iter().all(|b| b.state == BuildState::Queued), "{gone:?}");
    })
    .await;
}
