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

/// What a master traced with `strace -f -y` did, in order: its syncs of the
/// SQLite log and its answers to build requests.
#[derive(Debug, PartialEq)]
enum Traced {
    LogSynced,
    RequestAnswered,
}

/// Reads strace's output: a sync counts where it completed (a thread's
/// `<unfinished ...>` call completes at its `resumed` line), an answer where
/// its write began.
fn traced_events(trace: &str) -> Vec<Traced> {
    let mut syncing: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut events = Vec::new();
    for line in trace.lines() {
        let Some((pid, call)) = line.split_once(' ') else { continue };
        let call = call.trim_start();
        let is_sync = call.starts_with("fdatasync(") || call.starts_with("fsync(");
        if is_sync && call.contains("kiln.db-wal") {
            if call.contains("<unfinished") {
                syncing.insert(pid);
            } else if call.ends_with("= 0") {
                events.push(Traced::LogSynced);
            }
        } else if call.starts_with("<... fdatasync resumed>") || call.starts_with("<... fsync resumed>") {
            if syncing.remove(pid) && call.ends_with("= 0") {
                events.push(Traced::LogSynced);
            }
        } else if call.contains("request_id") {
            events.push(Traced::RequestAnswered);
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answered_build_request_is_on_disk_before_the_answer() {
    // No worker: the builds stay queued, so nothing but the requests writes.
    let mut farm = Farm::new(KILN.as_ref(), &one_job("true"), &[]);
    // The first start makes the data dir and the admin token.
    farm.start_master().await;
    farm.kill_master();
    let trace = farm.path("master.strace");
    let log = std::fs::File::create(farm.path("traced-master.log")).expect("log");
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-qq", "-y", "-s", "64", "-e", "trace=fdatasync,fsync,write,writev,sendto,sendmsg", "-o"])
        .arg(&trace)
        .arg(KILN)
        .args(["master", "--allow-root", "--config"])
        .arg(&farm.config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("strace (Debian's strace package)");
    let client = farm.client();
    let up = wait_for(Duration::from_secs(60), || async { client.status().await.is_ok() }).await;
    assert!(
        up,
        "the traced master did not come up: {}",
        std::fs::read_to_string(farm.path("traced-master.log")).unwrap_or_default()
    );
    let mut ids = Vec::new();
    for _ in 0..5 {
        let made = client.create_builds(&request(&["job"], &[])).await.expect("submit");
        ids.extend(made.builds.iter().map(|b| b.id));
    }
    // The master dies the moment the last answer is read: kill -9 of the
    // traced process itself (strace's child), then strace ends with it.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id())).expect("children");
    let master: i32 = children.split_whitespace().next().expect("the traced master").parse().expect("pid");
    let _ = std::process::Command::new("kill").args(["-9", &master.to_string()]).status();
    strace.wait().expect("strace ends");

    let events = traced_events(&std::fs::read_to_string(&trace).expect("trace"));
    let answers = events.iter().filter(|e| **e == Traced::RequestAnswered).count();
    assert_eq!(answers, 5, "{events:?}");
    // Every answer follows a sync of the log made after the one before.
    let mut synced = false;
    for e in &events {
        match e {
            Traced::LogSynced => synced = true,
            Traced::RequestAnswered => {
                assert!(synced, "an answer went out before its sync: {events:?}");
                synced = false;
            }
        }
    }
    // And the restarted master has every answered build.
    farm.start_master().await;
    let client = farm.client();
    for id in ids {
        let b = client.build(id).await.expect("an answered build survives kill -9");
        assert_eq!(b.state, BuildState::Queued);
    }
}
