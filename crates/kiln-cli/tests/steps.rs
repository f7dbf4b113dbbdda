//! How a worker runs a build's steps: output visible while the step runs,
//! time limits and memory/CPU limits (and which one ended a build), the
//! unprivileged build user of a root worker, and secrets handed to steps
//! but masked in everything the farm shows.

use kiln_core::{BuildState, StepState};
use kiln_testing::{request, wait_for, Farm, ONE_WORKER};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[tokio::test(flavor = "multi_thread")]
async fn output_is_visible_while_the_step_runs() {
    let config = r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "t"
family = "rpm"

[[component]]
name = "chatty"
steps = [ { name = "talk", run = "echo first line; touch started; while [ ! -e release ]; do sleep 0.05; done; echo second line" } ]
"#;
    let farm = Farm::running(KILN.as_ref(), config, &[], "w1", &["t"], 1).await;
    let client = farm.client();
    let id = client.create_builds(&request(&["chatty"], &[])).await.expect("create").builds[0].id;
    let ok = wait_for(Duration::from_secs(2), || async {
        client.log(id, "talk", 0).await.is_ok_and(|c| c.data == "first line\n" && !c.complete)
    })
    .await;
    let build = client.build(id).await.expect("build");
    assert!(ok, "the first line was not visible while running: {build:?}");
    assert_eq!(build.state, BuildState::Running);
    // Let the step finish: it waits for a file in its work dir.
    let workdir = farm.path(&format!("workers/w1/builds/{id}"));
    std::fs::write(workdir.join("release"), "").expect("release the step");
    let b = farm.wait_finished(id, Duration::from_secs(10)).await;
    assert_eq!(b.state, BuildState::Succeeded);
    let chunk = client.log(id, "talk", 11).await.expect("log from offset");
    assert_eq!((chunk.data.as_str(), chunk.complete, chunk.next_offset), ("second line\n", true, 23));
    assert!(!workdir.exists(), "the work dir is removed after the build");
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_end_builds_and_say_which_limit() {
    let config = &(ONE_WORKER.to_string()
        + r#"
[[component]]
name = "quiet"
no_output_timeout = "1s"
steps = [ { name = "wait", run = "echo started; sleep 30" } ]

[[component]]
name = "long"
timeout = "2s"
steps = [
  { name = "a", run = "sleep 0.2" },
  { name = "b", run = "sleep 30" },
  { name = "c", run = "true" },
]

[[component]]
name = "slowstep"
steps = [ { name = "s", run = "sleep 30", timeout = "1s" } ]
"#);
    let farm = Farm::running(KILN.as_ref(), config, &[], "w1", &["t"], 3).await;
    let created = farm.client().create_builds(&request(&["quiet", "long", "slowstep"], &[])).await.expect("create");
    let id_of = |c: &str| created.builds.iter().find(|b| b.component == c).expect("build").id;
    let quiet = farm.wait_finished(id_of("quiet"), Duration::from_secs(20)).await;
    assert_eq!((quiet.state, quiet.reason.as_deref()), (BuildState::Failed, Some("step wait had no output for 1s")));
    let long = farm.wait_finished(id_of("long"), Duration::from_secs(20)).await;
    assert_eq!((long.state, long.reason.as_deref()), (BuildState::Failed, Some("timed out after 2s")));
    let states: Vec<StepState> = long.steps.iter().map(|s| s.state).collect();
    assert_eq!(states, [StepState::Succeeded, StepState::Failed, StepState::Skipped]);
    let slow = farm.wait_finished(id_of("slowstep"), Duration::from_secs(20)).await;
    assert_eq!((slow.state, slow.reason.as_deref()), (BuildState::Failed, Some("step s timed out after 1s")));
    let log = farm.client().log(slow.id, "s", 0).await.expect("log").data;
    assert!(log.contains("kiln: step stopped: timed out after 1s"), "{log}");
    for id in [quiet.id, long.id, slow.id] {
        assert!(farm.build_processes(id).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_and_cpu_limits_hold_and_running_out_of_memory_is_named() {
    let config = &(ONE_WORKER.to_string()
        + r#"
[[component]]
name = "hog"
memory = "64MiB"
steps = [ { name = "eat", run = "echo eating; perl -e '$x = \"a\" x (400 * 1024 * 1024); print length($x), \"\\n\"'" } ]

[[component]]
name = "half"
cpus = 0.5
memory = "256MiB"
steps = [
  { name = "look", run = "for c in $(cut -d: -f2,3 /proc/self/cgroup | grep -E '^(cpu|memory):'); do echo $c; done" },
  { name = "quota", run = "cat /sys/fs/cgroup/cpu/kiln/$KILN_WORKER-$KILN_BUILD_ID/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/kiln/$KILN_WORKER-$KILN_BUILD_ID/cpu.max" },
]
"#);
    let farm = Farm::running(KILN.as_ref(), config, &[], "w1", &["t"], 2).await;
    let created = farm.client().create_builds(&request(&["hog", "half"], &[])).await.expect("create");
    let id_of = |c: &str| created.builds.iter().find(|b| b.component == c).expect("build").id;
    let hog = farm.wait_finished(id_of("hog"), Duration::from_secs(60)).await;
    assert_eq!(
        (hog.state, hog.reason.as_deref()),
        (BuildState::Failed, Some("step eat ran out of memory (limit 64 MiB)")),
        "{}",
        farm.client().log(hog.id, "eat", 0).await.map(|c| c.data).unwrap_or_default()
    );
    let half = farm.wait_finished(id_of("half"), Duration::from_secs(60)).await;
    assert_eq!(half.state, BuildState::Succeeded);
    let groups = farm.client().log(half.id, "look", 0).await.expect("log").data;
    // The step ran inside the build's groups, named after worker and build.
    let own = format!("/kiln/w1-{}", half.id);
    assert!(groups.lines().filter(|l| l.ends_with(&own)).count() >= 1, "{groups}");
    assert_eq!(
        farm.client().log(half.id, "quota", 0).await.expect("log").data,
        "50000\n",
        "half a CPU per 100 ms period"
    );
    // The groups are gone with the build.
    for ctl in ["memory", "cpu"] {
        assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/{ctl}/kiln/w1-{}", half.id)).exists());
    }
}

/// A worker that runs as root runs the components' own steps as `nobody`
/// (no groups, no capabilities), in a work dir handed to that user.
#[tokio::test(flavor = "multi_thread")]
async fn a_root_worker_runs_build_steps_unprivileged() {
    let config = format!(
        "{ONE_WORKER}\n[[component]]\nname = \"who\"\n\
         steps = [ {{ name = \"id\", run = \"id -u; id -G; grep CapEff /proc/self/status; echo made > made.txt; cat made.txt\" }} ]\n\
         artifacts = [\"made.txt\"]\n"
    );
    let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
    farm.start_master().await;
    farm.start_worker_with("w1", &["t"], 1, &["--default-build-user"]);
    farm.wait_for_workers(&["w1"]).await;
    let client = farm.client();
    let id = client.create_builds(&request(&["who"], &[])).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(20)).await;
    let log = client.log(id, "id", 0).await.expect("log").data;
    assert_eq!(b.state, BuildState::Succeeded, "{log}");
    let lines: Vec<&str> = log.lines().collect();
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").expect("proc").uid();
    if me == 0 {
        let nobody = kiln_worker::process::BuildUser::named("nobody").expect("nobody");
        assert_eq!(lines[0], nobody.uid.to_string(), "{log}");
        assert_eq!(lines[1], nobody.gid.to_string(), "only its own group: {log}");
        assert_eq!(lines[2].split_whitespace().last(), Some("0000000000000000"), "no capabilities: {log}");
    } else {
        assert_eq!(lines[0], me.to_string(), "a worker that is not root runs steps as itself: {log}");
    }
    assert_eq!(lines[3], "made", "the work dir is the build user's: {log}");
    assert_eq!(b.artifacts.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_steps_and_are_masked_in_logs_even_when_split() {
    let token = "tok-7f3a9c21e5";
    let config = ONE_WORKER.to_string()
        + r#"
[[component]]
name = "deploy"
secrets = { API_TOKEN = { file = "secrets/api.token" } }
steps = [
  { name = "use", run = "test \"$API_TOKEN\" = tok-7f3a9c21e5 && echo \"token is $API_TOKEN\"" },
  { name = "split", run = "printf 'half: %s' \"${API_TOKEN%%9*}\"; sleep 0.4; printf '%s\\n' \"9${API_TOKEN#*9}\"" },
  { name = "leak", run = "echo \"$API_TOKEN\"", set_property = "leaked" },
]
"#;
    let farm =
        Farm::running(KILN.as_ref(), &config, &[("secrets/api.token", &format!("{token}\n"))], "w1", &["t"], 1).await;
    let client = farm.client();
    let id = client.create_builds(&request(&["deploy"], &[])).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(30)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
    assert_eq!(client.log(id, "use", 0).await.expect("log").data, "token is ***\n");
    // The value left the step in two writes 0.4 s apart, flushed separately.
    assert_eq!(client.log(id, "split", 0).await.expect("log").data, "half: ***\n");
    assert_eq!(b.properties["leaked"].value, "***");
    let shown = serde_json::to_string(&client.build(id).await.expect("build")).expect("json");
    assert!(!shown.contains(token), "{shown}");
    assert!(!farm.master_log().contains(token) && !farm.worker_log("w1").contains(token));
    // A secret that cannot be read fails the build, naming the file, not a value.
    std::fs::remove_file(farm.path("secrets/api.token")).expect("rm");
    let id = client.create_builds(&request(&["deploy"], &[])).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(30)).await;
    assert_eq!(b.state, BuildState::Failed);
    assert!(b.reason.as_deref().is_some_and(|r| r.contains("secret API_TOKEN of component deploy")), "{:?}", b.reason);
}

/// `--root-cache` given as a relative path names one directory for every
/// build, resolved from where the worker started, not inside each build.
#[tokio::test(flavor = "multi_thread")]
async fn a_relative_root_cache_is_one_place_for_every_build() {
    let config = ONE_WORKER.to_string()
        + r#"
[[component]]
name = "where"
steps = [ { name = "say", run = "echo \"$KILN_ROOT_CACHE\"" } ]
"#;
    let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
    farm.start_master().await;
    farm.start_worker_with("w1", &["t"], 1, &["--root-cache", "relative-roots"]);
    farm.wait_for_workers(&["w1"]).await;
    let client = farm.client();
    let id = client.create_builds(&request(&["where"], &[])).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(20)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    let said = client.log(id, "say", 0).await.expect("log").data;
    let expected = std::env::current_dir().expect("cwd").join("relative-roots");
    assert_eq!(said.trim(), expected.display().to_string(), "resolved where the worker started");
}
