//! A farm that loses a part and carries on: the master killed with `kill -9`,
//! a worker killed mid-build, and a worker cut off by a network partition.
//! No build is lost and none runs twice at once.

use kiln_core::BuildState;
use kiln_testing::{one_job, request, submit_jobs, wait_for, Farm};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_master_loses_no_build_and_runs_none_twice() {
    let config = one_job("echo $KILN_BUILD_ID >> %(prop:ledger)s; sleep 1.5; echo done");
    let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
    farm.start_master().await;
    farm.start_workers(&["w1", "w2"], &["t"], 1).await;
    let ledger = farm.path("ledger");
    let client = farm.client();
    let ids = submit_jobs(&client, &ledger, 6).await;
    // Two run, four wait; then the master dies without warning.
    farm.wait_build(ids[0], Duration::from_secs(10), |b| b.state == BuildState::Running).await;
    farm.kill_master();
    farm.start_master().await;
    let client = farm.client();
    for id in &ids {
        let b = farm.wait_finished(*id, Duration::from_secs(60)).await;
        assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
        assert_eq!(client.log(*id, "run", 0).await.expect("log").data, "done\n");
    }
    let ran: Vec<i64> =
        std::fs::read_to_string(&ledger).expect("ledger").lines().map(|l| l.trim().parse().expect("id")).collect();
    let mut sorted = ran.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ids, "every build ran exactly once");
    let first = client.build(ids[0]).await.expect("build");
    assert_eq!(first.attempt, 1, "the running build was resumed, not restarted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_workers_build_is_requeued_and_finishes_on_the_other_worker() {
    let config = one_job("echo on $KILN_WORKER; sleep 2");
    let mut farm = Farm::running(KILN.as_ref(), &config, &[], "w1", &["t"], 1).await;
    let client = farm.client();
    let id = client.create_builds(&request(&["job"], &[])).await.expect("create").builds[0].id;
    farm.wait_build(id, Duration::from_secs(10), |b| b.state == BuildState::Running).await;
    farm.start_worker("w2", &["t"], 1);
    farm.wait_for_workers(&["w2"]).await;
    farm.kill_worker("w1");
    let b = farm.wait_finished(id, Duration::from_secs(30)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    assert_eq!(b.worker.as_deref(), Some("w2"));
    assert_eq!(b.attempt, 2);
    assert_eq!(client.log(id, "run", 0).await.expect("log").data, "on w2\n");
    let ws = client.workers().await.expect("workers");
    assert!(ws.iter().any(|w| w.name == "w1" && !w.connected));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_worker_stops_its_build_before_another_worker_runs_it() {
    let config =
        one_job("echo start-$KILN_WORKER >> %(prop:ledger)s; sleep 5; echo end-$KILN_WORKER >> %(prop:ledger)s");
    let (mut farm, proxy) = Farm::running_via_proxy(KILN.as_ref(), &config, &[], "w1", &["t"], 1).await;
    let ledger = farm.path("ledger");
    let client = farm.client();
    let id = submit_jobs(&client, &ledger, 1).await[0];
    assert!(wait_for(Duration::from_secs(10), || async { std::fs::read_to_string(&ledger).is_ok() }).await);
    farm.start_worker("w2", &["t"], 1);
    farm.wait_for_workers(&["w2"]).await;
    // The network between w1 and the master goes silent; both ends stay open.
    proxy.pause(true);
    let b = farm.wait_finished(id, Duration::from_secs(30)).await;
    assert_eq!((b.state, b.worker.as_deref(), b.attempt), (BuildState::Succeeded, Some("w2"), 2), "{b:?}");
    assert!(farm.master_log().contains("no heartbeat"), "{}", farm.master_log());
    assert!(farm.worker_log("w1").contains("no word from the master"), "{}", farm.worker_log("w1"));
    // w1 stopped its copy before w2 started: it never reached its end.
    assert_eq!(std::fs::read_to_string(&ledger).expect("ledger"), "start-w1\nstart-w2\nend-w2\n");
    assert!(farm.build_processes(id).is_empty());
    // The network heals; w1 reconnects, and the result stands.
    proxy.pause(false);
    farm.wait_for_workers(&["w1", "w2"]).await;
    let b = client.build(id).await.expect("build");
    assert_eq!((b.state, b.worker.as_deref()), (BuildState::Succeeded, Some("w2")));
}
