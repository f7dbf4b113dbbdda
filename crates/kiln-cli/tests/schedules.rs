//! Cron schedules: a nightly missed while the master was down runs once
//! when it is back, and `only_if_changed` builds only what changed.

use kiln_core::BuildState;
use kiln_testing::{unix_micros_ago, wait_for, Farm, ONE_WORKER};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[tokio::test(flavor = "multi_thread")]
async fn a_nightly_missed_while_the_master_was_down_runs_once_when_it_is_back() {
    let config = ONE_WORKER.to_string()
        + r#"
[[component]]
name = "pkg"
steps = [ { name = "s", run = "echo built by $KILN_PROP_SCHEDULE" } ]

[[schedule]]
name = "nightly"
cron = "0 3 * * *"
components = ["*"]
"#;
    let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
    farm.start_master().await;
    // A new schedule starts counting from now: nothing runs for times before it existed.
    let db = farm.sqlite_url();
    let store = kiln_db::Store::connect(&db).await.expect("db");
    assert!(
        wait_for(Duration::from_secs(10), || async {
            store.schedule_last_run("nightly").await.ok().flatten().is_some()
        })
        .await,
        "the schedule is recorded"
    );
    assert!(farm.client().builds(&Default::default()).await.expect("builds").builds.is_empty());
    farm.kill_master();
    // The master was down for three nights.
    let three_days_ago = unix_micros_ago(Duration::from_secs(3 * 86_400));
    store.execute_raw(&format!("UPDATE schedules SET last_run = {three_days_ago}")).await.expect("rewind");
    store.close().await;

    farm.start_master().await;
    farm.start_worker("w1", &["t"], 1);
    let client = farm.client();
    let found = wait_for(Duration::from_secs(30), || async {
        client.builds(&Default::default()).await.is_ok_and(|p| !p.builds.is_empty())
    })
    .await;
    assert!(found, "the missed nightly runs\n{}", farm.master_log());
    let scheduled = client.builds(&Default::default()).await.expect("builds").builds;
    let b = farm.wait_finished(scheduled[0].id, Duration::from_secs(30)).await;
    assert_eq!(b.state, BuildState::Succeeded);
    assert_eq!(b.requested_by.as_deref(), Some("schedule:nightly"));
    assert_eq!(client.log(b.id, "s", 0).await.expect("log").data, "built by nightly\n");
    // Once, not once per missed night.
    let all = client.builds(&Default::default()).await.expect("builds").builds;
    assert_eq!(all.len(), 1, "{all:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nightly_with_only_if_changed_builds_what_changed() {
    let config = ONE_WORKER.to_string()
        + r#"
[[component]]
name = "a"
source = { path = "src/a" }
steps = [ { name = "s", run = "cat file" } ]

[[component]]
name = "b"
source = { path = "src/b" }
steps = [ { name = "s", run = "cat file" } ]

[[schedule]]
name = "nightly"
cron = "0 3 * * *"
only_if_changed = true
"#;
    let mut farm = Farm::new(KILN.as_ref(), &config, &[("src/a/file", "a1\n"), ("src/b/file", "b1\n")]);
    let db = farm.sqlite_url();
    // Each "night": the master comes back after its nightly was due.
    let night = async |farm: &mut Farm| {
        farm.kill_master();
        let store = kiln_db::Store::open(&db).await.expect("db");
        let long_ago = unix_micros_ago(Duration::from_secs(2 * 86_400));
        store.execute_raw("DELETE FROM schedules").await.expect("reset");
        assert!(store.claim_schedule_run("nightly", None, long_ago).await.expect("rewind"));
        store.close().await;
        farm.start_master().await;
    };
    farm.start_master().await;
    farm.start_worker("w1", &["t"], 2);
    let client = farm.client();
    let built = async |n: usize| {
        assert!(
            wait_for(Duration::from_secs(30), || async {
                client
                    .builds(&Default::default())
                    .await
                    .is_ok_and(|p| p.builds.len() == n && p.builds.iter().all(|b| b.state.is_finished()))
            })
            .await,
            "{n} builds in all"
        );
        client.builds(&Default::default()).await.expect("builds").builds
    };
    night(&mut farm).await;
    let first = built(2).await;
    assert!(first.iter().all(|b| b.state == BuildState::Succeeded));
    // Nothing changed: the next night requests nothing. (A change to b follows, so waiting for
    // exactly three builds after it shows the quiet night added none.)
    night(&mut farm).await;
    assert!(
        wait_for(Duration::from_secs(10), || async {
            farm.master_log().contains("nothing changed since the last run")
        })
        .await,
        "{}",
        farm.master_log()
    );
    std::fs::write(farm.path("src/b/file"), "b2, longer\n").expect("change b");
    night(&mut farm).await;
    let all = built(3).await;
    let newest = &all[0];
    assert_eq!(newest.component, "b");
    assert_eq!(client.log(newest.id, "s", 0).await.expect("log").data, "b2, longer\n");
}
