//! Artifacts: collected by pattern, size-limited, uploaded, checked and
//! stored by content, fetched with `kiln fetch`; an upload cut off by the
//! network is sent again whole, and a cancel during the upload ends the
//! build cancelled without any.

use kiln_core::BuildState;
use kiln_testing::{files_under, request, run, wait_for, Farm, ONE_WORKER};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_are_uploaded_checked_stored_and_fetched() {
    let config = &("[master]\nmax_artifact_size = \"2MiB\"\n".to_string()
        + ONE_WORKER
        + r#"
[[component]]
name = "pkg"
artifacts = ["out/*.txt", "out/**/*.bin", "out/*.log"]
steps = [ { name = "make", run = "mkdir -p out/sub && printf hello > out/hello_1.0_all.txt && head -c 1500000 /dev/urandom > out/sub/big.bin && : > out/empty.log" } ]

[[component]]
name = "toobig"
artifacts = ["*.bin"]
steps = [ { name = "make", run = "head -c 3000000 /dev/urandom > big.bin" } ]

[[component]]
name = "nomatch"
artifacts = ["*.rpm"]
steps = [ { name = "make", run = "true" } ]
"#);
    let farm = Farm::running(KILN.as_ref(), config, &[], "w1", &["t"], 2).await;
    let client = farm.client();
    let created = client.create_builds(&request(&["pkg", "toobig", "nomatch"], &[])).await.expect("create");
    let id_of = |c: &str| created.builds.iter().find(|b| b.component == c).expect("build").id;

    let pkg = farm.wait_finished(id_of("pkg"), Duration::from_secs(30)).await;
    assert_eq!(pkg.state, BuildState::Succeeded, "{pkg:?}");
    let names: Vec<(&str, u64)> = pkg.artifacts.iter().map(|a| (a.name.as_str(), a.size)).collect();
    assert_eq!(names, [("big.bin", 1_500_000), ("empty.log", 0), ("hello_1.0_all.txt", 5)]);

    let dest = farm.path("fetched");
    let (code, out, err) = run(farm.kiln().args(["fetch", &pkg.id.to_string()]).arg(&dest)).expect("kiln fetch");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(std::fs::read(dest.join("hello_1.0_all.txt")).expect("deb"), b"hello");
    assert_eq!(std::fs::metadata(dest.join("big.bin")).expect("bin").len(), 1_500_000);
    assert_eq!(std::fs::metadata(dest.join("empty.log")).expect("log").len(), 0);

    let toobig = farm.wait_finished(id_of("toobig"), Duration::from_secs(30)).await;
    assert_eq!(toobig.state, BuildState::Failed);
    assert_eq!(
        toobig.reason.as_deref(),
        Some("upload failed: artifact big.bin: larger than the limit of 2097152 bytes")
    );
    assert!(toobig.artifacts.is_empty());
    let nomatch = farm.wait_finished(id_of("nomatch"), Duration::from_secs(30)).await;
    assert_eq!(nomatch.state, BuildState::Failed);
    assert_eq!(nomatch.reason.as_deref(), Some("collecting artifacts: pattern \"*.rpm\" matched no file"));

    // The incoming area is empty with no upload in flight, and the worker's
    // outbox is emptied once the master acknowledged the results.
    assert_eq!(files_under(&farm.path("data/incoming")), 0);
    let outbox = farm.path("workers/w1/outbox");
    assert!(
        wait_for(Duration::from_secs(10), || async {
            std::fs::read_dir(&outbox).map(|d| d.count() == 0).unwrap_or(true)
        })
        .await
    );
    // Stored by content: the same bytes twice are one file.
    let stored: usize = walk_files(&farm.path("data/artifacts"));
    assert_eq!(stored, 3);
    let r = reqwest::get(format!("{}/api/v1/builds/{}/artifacts/nope.deb", farm.url(), pkg.id)).await.expect("get");
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_build_keeps_its_logs_and_only_them() {
    let config = &(ONE_WORKER.to_string()
        + r#"
[[component]]
name = "checks"
artifacts = ["out/*.deb"]
artifacts_on_failure = ["logs/**/*.log", "missing/*.log"]
secrets = { API_TOKEN = { file = "secrets/api.token" } }
steps = [ { name = "test", run = "mkdir -p logs/unit out && echo \"FAIL: t1 with token $API_TOKEN\" > logs/unit/test-suite.log && echo done > logs/other.txt && ln -s /etc/passwd logs/passwd.log && : > out/x_1.0_all.deb && exit 1" } ]
"#);
    let secret = "kiln-secret-4d1f9a";
    let farm =
        Farm::running(KILN.as_ref(), config, &[("secrets/api.token", &format!("{secret}\n"))], "w1", &["t"], 1).await;
    let client = farm.client();
    let id = client.create_builds(&request(&["checks"], &[])).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(30)).await;
    assert_eq!(b.state, BuildState::Failed, "{b:?}");
    assert_eq!(b.reason.as_deref(), Some("step test failed with exit code 1"), "the step's failure stays the reason");
    // The matching log, named apart from packages; not the link, not the
    // package a failed build made, nothing for a pattern that matched none.
    let names: Vec<&str> = b.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["failed-logs_unit_test-suite.log"]);
    let dest = farm.path("fetched");
    let (code, _, err) = run(farm.kiln().args(["fetch", &id.to_string()]).arg(&dest)).expect("kiln fetch");
    assert_eq!(code, 0, "{err}");
    // A test log that records the environment does not give the secret away.
    assert_eq!(std::fs::read_to_string(dest.join(names[0])).expect("log"), "FAIL: t1 with token ***\n");
}

fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| if e.path().is_dir() { walk_files(&e.path()) } else { 1 }).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_cut_off_by_the_network_is_sent_again_whole() {
    let config = &(ONE_WORKER.to_string()
        + r#"
[[component]]
name = "pkg"
artifacts = ["big.bin"]
steps = [ { name = "make", run = "head -c 30000000 /dev/urandom > big.bin; touch ../made-$KILN_BUILD_ID; while [ ! -e ../go-$KILN_BUILD_ID ]; do sleep 0.05; done" } ]
"#);
    let (farm, proxy) = Farm::running_via_proxy(KILN.as_ref(), config, &[], "w1", &["t"], 1).await;
    let client = farm.client();
    let id = client.create_builds(&request(&["pkg"], &[])).await.expect("create").builds[0].id;
    let builds = farm.path("workers/w1/builds");
    assert!(wait_for(Duration::from_secs(20), || async { builds.join(format!("made-{id}")).exists() }).await);
    // The network stalls just as the 30 MB upload starts, then drops the connection.
    proxy.pause(true);
    std::fs::write(builds.join(format!("go-{id}")), "").expect("go");
    let outbox = farm.path(&format!("workers/w1/outbox/{id}/big.bin"));
    assert!(wait_for(Duration::from_secs(10), || async { outbox.exists() }).await, "the upload began");
    proxy.cut();
    proxy.pause(false);
    let b = farm.wait_finished(id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}\n{}", farm.worker_log("w1"));
    assert_eq!(b.attempt, 1, "the build was not run again, only its upload");
    assert!(farm.worker_log("w1").matches("connected to the master").count() >= 2, "the worker reconnected");
    assert_eq!(b.artifacts.len(), 1);
    assert_eq!(b.artifacts[0].size, 30_000_000);
    let dest = farm.path("fetched");
    std::fs::create_dir_all(&dest).expect("dir");
    client.download(&b.artifacts[0], &dest).await.expect("the stored file matches its checksum");
    assert_eq!(files_under(&farm.path("data/incoming")), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_during_the_upload_ends_the_build_cancelled_without_artifacts() {
    let config = ONE_WORKER.to_string()
        + r#"
[[component]]
name = "pkg"
artifacts = ["*.bin"]
steps = [ { name = "make", run = "head -c 1000000 /dev/urandom > small.bin; head -c 200000000 /dev/zero > big.bin; touch ../made-$KILN_BUILD_ID; while [ ! -e ../go-$KILN_BUILD_ID ]; do sleep 0.05; done" } ]
"#;
    let (farm, proxy) = Farm::running_via_proxy(KILN.as_ref(), &config, &[], "w1", &["t"], 1).await;
    let client = farm.client();
    let id = client.create_builds(&request(&["pkg"], &[])).await.expect("create").builds[0].id;
    let builds = farm.path("workers/w1/builds");
    assert!(wait_for(Duration::from_secs(20), || async { builds.join(format!("made-{id}")).exists() }).await);
    // The upload starts against a stalled network, the cancel waits in it,
    // and both go through when it moves again.
    proxy.pause(true);
    std::fs::write(builds.join(format!("go-{id}")), "").expect("go");
    let outbox = farm.path(&format!("workers/w1/outbox/{id}/big.bin"));
    assert!(wait_for(Duration::from_secs(10), || async { outbox.exists() }).await, "the upload began");
    client.cancel(id).await.expect("cancel");
    proxy.pause(false);
    let b = farm.wait_finished(id, Duration::from_secs(60)).await;
    assert_eq!((b.state, b.reason.as_deref()), (BuildState::Cancelled, Some("cancelled by admin")), "{b:?}");
    assert!(b.artifacts.is_empty(), "{:?}", b.artifacts);
    assert!(farm.worker_log("w1").contains("cancelling build during its upload"), "{}", farm.worker_log("w1"));
    assert_eq!(files_under(&farm.path("data/incoming")), 0);
    let gone = || async { !farm.path(&format!("workers/w1/outbox/{id}")).exists() };
    assert!(wait_for(Duration::from_secs(10), gone).await, "the worker's outbox is emptied");
}
