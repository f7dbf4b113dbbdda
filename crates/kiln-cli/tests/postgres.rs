//! The whole farm on PostgreSQL (`KILN_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`) in a schema of its own,
//! created and dropped by the test.

use kiln_core::BuildState;
use kiln_testing::{one_job, run, submit_jobs, Farm, LEDGER_JOB};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[tokio::test(flavor = "multi_thread")]
async fn the_farm_runs_on_postgresql() {
    let base = std::env::var("KILN_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw).expect("random");
    let schema = format!("kiln_farm_{}", hex::encode(raw));
    let admin = kiln_db::Store::connect(&base).await.expect("PostgreSQL is needed (see DEVELOPERS.md)");
    admin.execute_raw(&format!("CREATE SCHEMA {schema}")).await.expect("schema");
    let url = format!("{base}?options=-c%20search_path%3D{schema}");
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
    admin.execute_raw(&format!("DROP SCHEMA {schema} CASCADE")).await.expect("drop schema");
    admin.close().await;
}
