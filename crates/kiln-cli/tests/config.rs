//! The farm's config: reloaded live (on change and on SIGHUP) only when it
//! is good, checked by `kiln checkconfig` with every error's position, and
//! a master that refuses to run as root unless told.

use kiln_core::BuildState;
use kiln_proto::api::BuildRequestBody;
use kiln_testing::{request, run, wait_for, Farm, EXAMPLE_CONFIG, ONE_WORKER};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[tokio::test(flavor = "multi_thread")]
async fn config_reload_takes_a_good_config_and_refuses_a_bad_one() {
    let mut farm = Farm::example(KILN.as_ref()).await;
    let client = farm.client();
    let before = client.status().await.expect("status");
    assert_eq!(before.builders, 6);
    // A running build must survive every reload.
    let slow = client
        .create_builds(&BuildRequestBody {
            components: vec!["slow".into()],
            targets: vec!["el-9-x86_64".into()],
            ..Default::default()
        })
        .await
        .expect("create")
        .builds[0]
        .id;
    farm.wait_build(slow, Duration::from_secs(10), |b| b.state == BuildState::Running).await;

    let good = std::fs::read_to_string(&farm.config).expect("config")
        + "\n[[component]]\nname = \"extra\"\nsteps = [ { name = \"hi\", run = \"echo hi from extra\" } ]\n";
    std::fs::write(&farm.config, &good).expect("write config");
    assert!(wait_for(Duration::from_secs(10), || async { client.status().await.is_ok_and(|s| s.builders == 8) }).await);
    let after_good = client.status().await.expect("status");
    assert!(after_good.config_generation > before.config_generation);
    let id = client.create_builds(&request(&["extra"], &[])).await.expect("the new component builds").builds[0].id;
    assert_eq!(farm.wait_finished(id, Duration::from_secs(30)).await.state, BuildState::Succeeded);

    std::fs::write(
        &farm.config,
        good.clone() + "\n[[component]]\nname = \"broken\"\ndepends_on = [\"nothing\"]\nsteps = []\n",
    )
    .expect("write bad config");
    assert!(wait_for(Duration::from_secs(10), || async { farm.master_log().contains("config reload refused") }).await);
    let after_bad = client.status().await.expect("status");
    assert_eq!(after_bad.config_generation, after_good.config_generation);
    assert_eq!(after_bad.builders, 8);
    assert!(farm.master_log().contains("unknown component \"nothing\""), "the errors are logged");

    // SIGHUP reloads too (the good config again).
    std::fs::write(&farm.config, &good).expect("write config");
    farm.hup_master();
    assert!(
        wait_for(Duration::from_secs(10), || async {
            client.status().await.is_ok_and(|s| s.config_generation > after_bad.config_generation)
        })
        .await
    );
    let ws = client.workers().await.expect("workers");
    assert!(ws.iter().all(|w| w.connected), "workers stay connected: {ws:?}");
    let b = client.build(slow).await.expect("slow");
    assert_eq!(b.state, BuildState::Running, "the running build survived the reloads");
    client.cancel(slow).await.expect("cancel");
    farm.wait_finished(slow, Duration::from_secs(20)).await;
    farm.kill_master();
}

#[test]
fn checkconfig_accepts_the_example_and_reports_every_error_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("farm.toml");
    std::fs::write(&good, EXAMPLE_CONFIG).expect("write");
    let (code, out, err) = run(std::process::Command::new(KILN).arg("checkconfig").arg(&good)).expect("run");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("config is good: 4 components × 2 targets = 6 builders"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        EXAMPLE_CONFIG
            .replace("depends_on = [\"libgrace\"]", "depends_on = [\"libgrace\", \"opencore\"]")
            .replace("name = \"w2\"", "name = \"w1\"")
            + "\n[[component]]\nname = \"x\"\nflavour = \"sour\"\nsteps = [ { name = \"s\", run = \"true\" } ]\n",
    )
    .expect("write");
    let (code, _, err) = run(std::process::Command::new(KILN).arg("checkconfig").arg(&bad)).expect("run");
    assert_eq!(code, 1);
    let file = bad.display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert_eq!(lines[0], format!("{file}:16:8: duplicate worker name \"w1\" (first defined at line 12, column 8)"));
    assert_eq!(lines[1], format!("{file}:41:27: component \"opencore\" depends on itself"));
    assert_eq!(lines[2], format!("{file}:69:1: unknown key `flavour` in [[component]]; known keys: name, source, depends_on, targets, steps, properties, artifacts, artifacts_on_failure, spec, timeout, no_output_timeout, memory, cpus, collapse, takes_uploads, rebuild_after, secrets, before, after, adopts, orig, upstream_tag"));
}

#[test]
fn the_master_refuses_to_run_as_root_unless_allowed() {
    use std::os::unix::fs::MetadataExt;
    let farm = Farm::new(KILN.as_ref(), ONE_WORKER, &[]);
    // Root here, or root in a user namespace of our own.
    let root = std::fs::metadata("/proc/self").expect("proc").uid() == 0;
    let mut cmd = if root {
        std::process::Command::new(KILN)
    } else {
        let mut c = std::process::Command::new("unshare");
        c.args(["--map-root-user", KILN]);
        c
    };
    cmd.arg("master").arg("--config").arg(&farm.config);
    let (code, _, err) = run(&mut cmd).expect("kiln master runs");
    assert_ne!(code, 0);
    assert!(err.contains("kiln master refuses to run as root") && err.contains("--allow-root"), "{err}");
    // It stopped before touching anything: no data dir, no admin token.
    let entries: Vec<String> = std::fs::read_dir(farm.dir.path())
        .expect("farm dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!entries.iter().any(|e| e == "data"), "{entries:?}");
}
