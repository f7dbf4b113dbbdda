//! The whole farm on PostgreSQL (`KILN_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`) in a schema of its own,
//! created and dropped by the test.

use kiln_core::BuildState;
use kiln_testing::{one_job, run, submit_jobs, Farm, PgSchema, LEDGER_JOB};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[tokio::test(flavor = "multi_thread")]
async fn the_farm_runs_on_postgresql() {
    let pg = PgSchema::new("kiln_farm").await;
    let url = pg.url.clone();
    let config = format!("[master]\ndatabase = \"{url}\"\n{}", one_job(LEDGER_JOB));
    {
        let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
        let (code, out, err) =
            run(std::process::Command::new(KILN).args(["upgrade", "--config"]).arg(&farm.config)).expect("upgrade");
        let applied = format!("applied {} migration(s)", kiln_db::latest_schema_version());
        assert_eq!((code, out.trim()), (0, applied.as_str()), "{err}");
        farm.start_master().await;
        farm.start_workers(&["w1", "w2"], &["t"], 1).await;
        let ledger = farm.path("ledger");
        let client = farm.client();
        let ids = submit_jobs(&client, &ledger, 4).await;
        for id in ids {
            assert_eq!(farm.wait_finished(id, Duration::from_secs(30)).await.state, BuildState::Succeeded);
        }
        assert!(!farm.path("data/kiln.db").exists(), "no SQLite file when a database is configured");
    }
    pg.drop().await;
}

/// A second master started on the same database while the first runs a
/// build leaves that build to it: nothing is re-queued, however long the
/// second waits, and `kiln status` lists both masters alive.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_master_leaves_the_first_ones_running_builds_alone() {
    let pg = PgSchema::new("kiln_farm").await;
    let url = pg.url.clone();
    let config = format!(
        "[master]\ndatabase = \"{url}\"\n\n[[worker]]\nname = \"w1\"\ntoken_file = \"secrets/w1.token\"\n\n\
         [[target]]\nname = \"t\"\nfamily = \"deb\"\n\n[[component]]\nname = \"hold\"\n\
         steps = [ {{ name = \"hold\", run = \"while [ ! -e ../go-$KILN_BUILD_ID ]; do sleep 0.05; done\" }} ]\n"
    );
    {
        let mut first = Farm::new(KILN.as_ref(), &config, &[]);
        first.start_master().await;
        first.start_workers(&["w1"], &["t"], 1).await;
        let client = first.client();
        let id = client.create_builds(&kiln_testing::request(&["hold"], &[])).await.expect("create").builds[0].id;
        first.wait_build(id, Duration::from_secs(20), |b| b.state == BuildState::Running).await;

        let mut second = Farm::new(KILN.as_ref(), &config, &[]);
        second.start_master().await;
        assert!(
            second.master_log().contains(&format!("build={id}")) && second.master_log().contains("left to it"),
            "the second master leaves the build to the first:\n{}",
            second.master_log()
        );
        let (code, out, err) = run(second.kiln().args(["status"])).expect("kiln status");
        assert_eq!(code, 0, "{err}");
        let alive: Vec<&str> = out.lines().filter(|l| l.contains(" alive ")).collect();
        assert_eq!(alive.len(), 2, "both masters hold their leases:\n{out}");
        // Longer than the test farms' worker timeout (3 s): the second master
        // would have re-queued a build it took for an orphan by now.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let still = client.build(id).await.expect("build");
        assert_eq!((still.state, still.attempt), (BuildState::Running, 1), "{still:?}");
        std::fs::write(first.path(&format!("workers/w1/builds/go-{id}")), "").expect("go");
        let done = first.wait_finished(id, Duration::from_secs(30)).await;
        assert_eq!((done.state, done.attempt), (BuildState::Succeeded, 1), "{done:?}");
    }
    pg.drop().await;
}

/// When a master dies (kill -9), another sharing the database takes its
/// running builds over once its lease expires: a build whose worker went
/// with it is re-queued once and built by the survivor's worker.
#[tokio::test(flavor = "multi_thread")]
async fn a_survivor_takes_over_the_builds_of_a_master_killed_mid_build() {
    let pg = PgSchema::new("kiln_farm").await;
    let url = pg.url.clone();
    let config = |worker: &str| {
        format!(
            "[master]\ndatabase = \"{url}\"\n\n[[worker]]\nname = \"{worker}\"\ntoken_file = \"secrets/{worker}.token\"\n\n\
             [[target]]\nname = \"t\"\nfamily = \"deb\"\n\n[[component]]\nname = \"hold\"\n\
             steps = [ {{ name = \"hold\", run = \"while [ ! -e ../go-$KILN_BUILD_ID ]; do sleep 0.05; done\" }} ]\n"
        )
    };
    {
        let mut doomed = Farm::new(KILN.as_ref(), &config("wa"), &[]);
        doomed.start_master().await;
        doomed.start_workers(&["wa"], &["t"], 1).await;
        let client = doomed.client();
        let id = client.create_builds(&kiln_testing::request(&["hold"], &[])).await.expect("create").builds[0].id;
        let running = doomed.wait_build(id, Duration::from_secs(20), |b| b.state == BuildState::Running).await;
        assert_eq!(running.worker.as_deref(), Some("wa"));
        // The survivor and its worker come once the build runs on wa (they
        // would otherwise race for it: masters hear of new builds at once).
        let mut survivor = Farm::new(KILN.as_ref(), &config("wb"), &[]);
        survivor.start_master().await;
        survivor.start_workers(&["wb"], &["t"], 1).await;
        doomed.kill_master();
        // The survivor serves the build too; it takes it over once the lease
        // (3 s in tests) expires, waits the worker timeout, and builds it again.
        let again = survivor.wait_build(id, Duration::from_secs(60), |b| b.worker.as_deref() == Some("wb")).await;
        assert_eq!((again.state, again.attempt), (BuildState::Running, 2), "{again:?}");
        assert!(
            survivor.master_log().contains("took over a build of a master whose lease expired"),
            "{}",
            survivor.master_log()
        );
        std::fs::write(survivor.path(&format!("workers/wb/builds/go-{id}")), "").expect("go");
        let done = survivor.wait_finished(id, Duration::from_secs(30)).await;
        assert_eq!(
            (done.state, done.attempt, done.worker.as_deref()),
            (BuildState::Succeeded, 2, Some("wb")),
            "{done:?}"
        );
        let (_, out, _) = run(survivor.kiln().args(["status"])).expect("kiln status");
        assert!(out.lines().any(|l| l.contains(" gone ")), "the killed master shows as gone:\n{out}");
    }
    pg.drop().await;
}
