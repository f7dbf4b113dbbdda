//! End-to-end tests of the core farm: real `kiln master` and `kiln worker`
//! processes on loopback, driven through the CLI and the HTTP API.

use kiln_core::{BuildState, StepState};
use kiln_proto::api::BuildRequestBody;
use kiln_testing::{run, wait_for, Farm, Proxy, ONE_WORKER};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const EXAMPLE: &str = include_str!("../../../examples/farm.toml");
const SOURCES: &[(&str, &str)] = &[
    ("src/libgrace/README", "libgrace sources\n"),
    ("src/opencore/README", "opencore sources\n"),
    ("src/slow/README", "slow sources\n"),
];
const BOTH: &[&str] = &["debian-12-amd64", "el-9-x86_64"];

async fn example_farm() -> Farm {
    let mut farm = Farm::new(KILN.as_ref(), EXAMPLE, SOURCES);
    farm.start_master().await;
    farm.start_worker("w1", BOTH, 2);
    farm.start_worker("w2", BOTH, 2);
    farm.wait_for_workers(&["w1", "w2"]).await;
    farm
}

fn request(components: &[&str], props: &[(&str, &str)]) -> BuildRequestBody {
    BuildRequestBody {
        components: components.iter().map(|c| c.to_string()).collect(),
        properties: props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_builds_across_both_targets_succeed_with_their_logs_and_properties() {
    let farm = example_farm().await;
    let mut ids = Vec::new();
    // Half through the CLI, half through the API.
    for i in 0..5 {
        let (code, out, err) =
            run(farm.kiln().args(["build", "libgrace", "-p", &format!("release=cli{i}")])).expect("kiln build");
        assert_eq!(code, 0, "{err}");
        let lines: Vec<i64> =
            out.lines().map(|l| l.split('\t').next().expect("id").parse().expect("numeric id")).collect();
        assert_eq!(lines.len(), 2, "one build per target: {out}");
        ids.extend(lines);
    }
    let client = farm.client();
    for i in 0..5 {
        let created =
            client.create_builds(&request(&["libgrace"], &[("release", &format!("api{i}"))])).await.expect("create");
        ids.extend(created.builds.iter().map(|b| b.id));
    }
    assert_eq!(ids.len(), 20);
    let mut workers = HashSet::new();
    let mut targets = HashSet::new();
    for id in &ids {
        let b = farm.wait_finished(*id, Duration::from_secs(60)).await;
        assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
        assert_eq!(b.steps.len(), 3);
        assert!(b.steps.iter().all(|s| s.state == StepState::Succeeded && s.exit_code == Some(0)));
        assert_eq!(b.properties["version"].value, "1.4.2");
        let release = b.properties["release"].value.clone();
        let compile = client.log(b.id, "compile", 0).await.expect("log");
        assert_eq!(compile.data, format!("compiling libgrace for {}\n", b.target));
        assert!(compile.complete);
        let package = client.log(b.id, "package", 0).await.expect("log");
        assert_eq!(package.data, format!("packaging 1.4.2 release={release}\n"));
        workers.insert(b.worker.clone().expect("worker"));
        targets.insert(b.target.clone());
        assert!(b.started_at.is_some() && b.finished_at.is_some());
    }
    assert_eq!(targets.len(), 2);
    assert_eq!(workers.len(), 2, "both workers took builds");

    // The CLI shows the same in text and JSON.
    let (code, out, _) = run(farm.kiln().args(["show", &ids[0].to_string(), "--json"])).expect("kiln show");
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["state"], "succeeded");
    assert_eq!(shown["properties"]["version"]["source"], "step");
    assert_eq!(shown["properties"]["release"]["value"], "cli0");
    let (code, out, _) = run(farm.kiln().args(["log", &ids[0].to_string(), "--step", "version"])).expect("kiln log");
    assert_eq!((code, out.as_str()), (0, "1.4.2\n"));
    let (code, out, _) = run(farm.kiln().args(["log", &ids[0].to_string(), "--json"])).expect("kiln log --json");
    assert_eq!(code, 0);
    let chunks: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    let steps: Vec<&str> = chunks.iter().filter_map(|c| c["step"].as_str()).collect();
    assert_eq!(steps, ["compile", "version", "package"]);
    assert_eq!(chunks[1]["data"], "1.4.2\n");
    let (code, out, _) =
        run(farm.kiln().args(["builds", "--state", "succeeded", "--limit", "25", "--json"])).expect("kiln builds");
    assert_eq!(code, 0);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    assert_eq!(listed.len(), 20);
    let (code, out, _) = run(farm.kiln().args(["workers"])).expect("kiln workers");
    assert_eq!(code, 0);
    assert!(out.contains("w1") && out.contains("connected"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn all_honours_depends_on_and_a_cancel_leaves_no_process_behind() {
    let farm = example_farm().await;
    let (code, out, err) =
        run(farm.kiln().args(["build", "--all", "-p", "release=true", "--json"])).expect("kiln build --all");
    assert_eq!(code, 0, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).expect("json");
    let builds = created["builds"].as_array().expect("builds");
    let find = |c: &str, t: &str| {
        builds
            .iter()
            .find(|b| b["component"] == c && b["target"] == t)
            .and_then(|b| b["id"].as_i64())
            .expect("build in request")
    };
    let (lib_deb, opencore, slow_deb, slow_el) = (
        find("libgrace", "debian-12-amd64"),
        find("opencore", "debian-12-amd64"),
        find("slow", "debian-12-amd64"),
        find("slow", "el-9-x86_64"),
    );
    let lib = farm.wait_finished(lib_deb, Duration::from_secs(30)).await;
    let oc = farm.wait_finished(opencore, Duration::from_secs(30)).await;
    assert_eq!((lib.state, oc.state), (BuildState::Succeeded, BuildState::Succeeded));
    assert_eq!(oc.depends_on, vec![lib_deb]);
    assert!(
        oc.started_at.as_deref().expect("started") >= lib.finished_at.as_deref().expect("finished"),
        "opencore started before libgrace finished: {lib:?} {oc:?}"
    );

    // Both slow builds are running their `sleep 600`: cancel one through the
    // CLI and one through the API; nothing of them may survive.
    for id in [slow_deb, slow_el] {
        farm.wait_build(id, Duration::from_secs(30), |b| {
            b.steps.first().is_some_and(|s| s.state == StepState::Running)
        })
        .await;
        assert!(
            wait_for(Duration::from_secs(10), || async { !farm.build_processes(id).is_empty() }).await,
            "the step's processes are visible"
        );
    }
    let (code, _, err) = run(farm.kiln().args(["cancel", &slow_deb.to_string()])).expect("kiln cancel");
    assert_eq!(code, 0, "{err}");
    farm.client().cancel(slow_el).await.expect("cancel through the API");
    for id in [slow_deb, slow_el] {
        let b = farm.wait_finished(id, Duration::from_secs(20)).await;
        assert_eq!(b.state, BuildState::Cancelled);
        assert_eq!(b.reason.as_deref(), Some("cancelled by admin"));
        assert_eq!(b.steps[0].state, StepState::Cancelled);
        assert!(
            farm.build_processes(id).is_empty(),
            "processes of build {id} survived: {:?}",
            farm.build_processes(id)
        );
    }
    // Cancelling a finished build is a conflict, not a crash.
    let err = farm.client().cancel(slow_deb).await.expect_err("already finished");
    assert!(err.to_string().contains("409"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_dependency_skips_its_dependents_and_always_run_steps_still_run() {
    let config = r#"
[master]

[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "t"
family = "deb"

[[component]]
name = "base"
steps = [
  { name = "build", run = "echo breaking; exit 3" },
  { name = "never", run = "echo must not run" },
  { name = "cleanup", run = "echo cleaned up", always_run = true },
]

[[component]]
name = "app"
depends_on = ["base"]
steps = [ { name = "build", run = "true" } ]

[[component]]
name = "tool"
depends_on = ["app"]
steps = [ { name = "build", run = "true" } ]
"#;
    let farm = Farm::running(KILN.as_ref(), config, &[], "w1", &["t"], 1).await;
    let (code, out, _) = run(farm.kiln().args(["build", "--all", "--follow"])).expect("kiln build --follow");
    assert_eq!(code, 1, "a failed build makes --follow fail: {out}");
    let client = farm.client();
    let page = client.builds(&Default::default()).await.expect("list");
    let by_name: BTreeMap<String, _> = page.builds.into_iter().map(|b| (b.component.clone(), b)).collect();
    let base = &by_name["base"];
    assert_eq!(base.state, BuildState::Failed);
    assert_eq!(base.reason.as_deref(), Some("step build failed with exit code 3"));
    let states: Vec<StepState> = base.steps.iter().map(|s| s.state).collect();
    assert_eq!(states, [StepState::Failed, StepState::Skipped, StepState::Succeeded]);
    assert_eq!(client.log(base.id, "cleanup", 0).await.expect("log").data, "cleaned up\n");
    assert_eq!(by_name["app"].state, BuildState::Skipped);
    assert_eq!(by_name["app"].reason.as_deref(), Some("dependency base@t failed"));
    assert_eq!(by_name["tool"].state, BuildState::Skipped);
    assert_eq!(by_name["tool"].reason.as_deref(), Some("dependency app@t skipped"));
}

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
async fn kill_9_of_the_master_loses_no_build_and_runs_none_twice() {
    let config = one_job("echo $KILN_BUILD_ID >> %(prop:ledger)s; sleep 1.5; echo done");
    let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
    farm.start_master().await;
    farm.start_worker("w1", &["t"], 1);
    farm.start_worker("w2", &["t"], 1);
    farm.wait_for_workers(&["w1", "w2"]).await;
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
async fn config_reload_takes_a_good_config_and_refuses_a_bad_one() {
    let mut farm = example_farm().await;
    let client = farm.client();
    let before = client.status().await.expect("status");
    assert_eq!(before.builders, 5);
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
    assert!(wait_for(Duration::from_secs(10), || async { client.status().await.is_ok_and(|s| s.builders == 7) }).await);
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
    assert_eq!(after_bad.builders, 7);
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

#[tokio::test(flavor = "multi_thread")]
async fn the_api_rejects_bad_input_clearly() {
    let farm = example_farm().await;
    // No connection reuse: after a 413 the server may close the connection
    // without reading the rest of the body.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let url = farm.url();
    let token = farm.admin_token();
    let post = |path: &str| http.post(format!("{url}{path}"));

    let r = post("/api/v1/builds").json(&serde_json::json!({"components": ["libgrace"]})).send().await.expect("send");
    assert_eq!(r.status(), 401, "no token, no build");
    let r = post("/api/v1/builds")
        .bearer_auth("wrong")
        .json(&serde_json::json!({"components": ["libgrace"]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let r = post("/api/v1/builds")
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"components\": [")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("body").contains("invalid JSON"));
    let r = post("/api/v1/builds")
        .bearer_auth(&token)
        .json(&serde_json::json!({"components": ["nope"]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    assert!(r.text().await.expect("body").contains("known components: libgrace, opencore, slow"));
    let r = post("/api/v1/builds")
        .bearer_auth(&token)
        .json(&serde_json::json!({"components": ["libgrace"], "targets": ["win-11"]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    let r = post("/api/v1/builds")
        .bearer_auth(&token)
        .json(&serde_json::json!({"components": ["libgrace"], "properties": {"bad key": "x"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let big = "x".repeat(2 * 1024 * 1024);
    let r = post("/api/v1/builds")
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 413);
    let r = http.get(format!("{url}/api/v1/builds/abc")).send().await.expect("send");
    assert_eq!(r.status(), 400);
    let r = http.get(format!("{url}/api/v1/builds/999999")).send().await.expect("send");
    assert_eq!(r.status(), 404);
    let r = http.get(format!("{url}/api/v1/builds?state=exploded")).send().await.expect("send");
    assert_eq!(r.status(), 400);
    // Nothing was stored by any of that.
    assert!(farm.client().builds(&Default::default()).await.expect("list").builds.is_empty());

    // The OpenAPI document describes the API.
    let doc: serde_json::Value =
        http.get(format!("{url}/api/v1/openapi.json")).send().await.expect("send").json().await.expect("json");
    for path in [
        "/api/v1/builds",
        "/api/v1/builds/{id}",
        "/api/v1/builds/{id}/cancel",
        "/api/v1/builds/{id}/steps/{step}/log",
        "/api/v1/workers",
        "/change_hook/base",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn buildbots_base_change_hook_schedules_the_project() {
    let farm = example_farm().await;
    let http = reqwest::Client::new();
    let url = format!("{}/change_hook/base", farm.url());
    let form = [
        ("project", "libgrace"),
        ("repository", "https://git.example.org/libgrace.git"),
        ("branch", "main"),
        ("revision", "abc123"),
        ("who", "alice <alice@example.org>"),
        ("comments", "fix the frobnicator"),
        ("properties", "{\"release\": \"true\"}"),
    ];
    let r = http.post(&url).form(&form).send().await.expect("send");
    assert_eq!(r.status(), 401, "the hook needs the token");
    let r = http.post(format!("{url}?token={}", farm.admin_token())).form(&form).send().await.expect("send");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let created: serde_json::Value = r.json().await.expect("json");
    let ids: Vec<i64> =
        created["builds"].as_array().expect("builds").iter().map(|b| b["id"].as_i64().expect("id")).collect();
    assert_eq!(ids.len(), 2, "all targets of the project");
    for id in ids {
        let b = farm.wait_finished(id, Duration::from_secs(30)).await;
        assert_eq!(b.state, BuildState::Succeeded);
        assert_eq!(b.properties["release"].value, "true");
        assert_eq!(b.properties["revision"].value, "abc123");
        assert!(b.requested_by.as_deref().expect("who").starts_with("alice"));
        let log = farm.client().log(id, "package", 0).await.expect("log");
        assert_eq!(log.data, "packaging 1.4.2 release=true\n");
    }
    let r = http
        .post(format!("{url}?token={}", farm.admin_token()))
        .form(&[("project", "nope")])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
}

#[test]
fn checkconfig_accepts_the_example_and_reports_every_error_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("farm.toml");
    std::fs::write(&good, EXAMPLE).expect("write");
    let (code, out, err) = run(std::process::Command::new(KILN).arg("checkconfig").arg(&good)).expect("run");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("config is good: 3 components × 2 targets = 5 builders"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        EXAMPLE
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
    assert_eq!(lines[0], format!("{file}:15:8: duplicate worker name \"w1\" (first defined at line 11, column 8)"));
    assert_eq!(lines[1], format!("{file}:38:27: component \"opencore\" depends on itself"));
    assert_eq!(lines[2], format!("{file}:49:1: unknown key `flavour` in [[component]]; known keys: name, source, depends_on, targets, steps, properties, artifacts, spec, timeout, no_output_timeout, memory, cpus, collapse, rebuild_after, secrets, before, after"));
}

/// A farm of two workers, one target `t` and one component `job` whose only
/// step (`run`) runs `run`.
fn one_job(run: &str) -> String {
    format!(
        "[[worker]]\nname = \"w1\"\ntoken_file = \"secrets/w1.token\"\n\n\
         [[worker]]\nname = \"w2\"\ntoken_file = \"secrets/w2.token\"\n\n\
         [[target]]\nname = \"t\"\nfamily = \"deb\"\n\n\
         [[component]]\nname = \"job\"\nsteps = [ {{ name = \"run\", run = \"{run}\" }} ]\n"
    )
}

/// Requests `n` builds of `job`, each with the `ledger` property naming the
/// file its step appends to; returns their ids.
async fn submit_jobs(client: &kiln_client::Client, ledger: &std::path::Path, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let created = client
            .create_builds(&request(&["job"], &[("ledger", ledger.to_str().expect("utf8 path"))]))
            .await
            .expect("create");
        ids.push(created.builds[0].id);
    }
    ids
}

const LEDGER_JOB: &str = "echo $KILN_WORKER >> %(prop:ledger)s; echo on $KILN_WORKER; sleep 2";

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_worker_stops_its_build_before_another_worker_runs_it() {
    let config =
        one_job("echo start-$KILN_WORKER >> %(prop:ledger)s; sleep 5; echo end-$KILN_WORKER >> %(prop:ledger)s");
    let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
    farm.start_master().await;
    let proxy = Proxy::start(farm.worker_port).await;
    farm.start_worker_via("w1", &["t"], 1, proxy.addr);
    farm.wait_for_workers(&["w1"]).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn workers_connect_over_tls() {
    let config = one_job(LEDGER_JOB);
    let config = format!("[master]\nworker_tls = {{ cert = \"tls/cert.pem\", key = \"tls/key.pem\" }}\n{config}");
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("cert");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.key_pair.serialize_pem());
    let mut farm = Farm::new(KILN.as_ref(), &config, &[("tls/cert.pem", &cert_pem), ("tls/key.pem", &key_pem)]);
    farm.start_master().await;
    let ca = farm.path("tls/cert.pem");
    farm.start_worker_with("w1", &["t"], 1, &["--tls-ca", ca.to_str().expect("utf8")]);
    farm.wait_for_workers(&["w1"]).await;
    let ledger = farm.path("ledger");
    let id = submit_jobs(&farm.client(), &ledger, 1).await[0];
    let b = farm.wait_finished(id, Duration::from_secs(20)).await;
    assert_eq!(b.state, BuildState::Succeeded);
    assert_eq!(farm.client().log(id, "run", 0).await.expect("log").data, "on w1\n");
    // A worker speaking plain TCP to the TLS port gets nowhere.
    farm.start_worker("w2", &["t"], 1);
    let connected = wait_for(Duration::from_secs(3), || async {
        farm.client().workers().await.is_ok_and(|ws| ws.iter().any(|w| w.name == "w2" && w.connected))
    })
    .await;
    assert!(!connected, "a plain-TCP worker must not get through the TLS port");
}

/// `kiln cert` makes three CAs (server, workers, users); the master serves
/// HTTPS, and a worker logs in with its certificate alone. A user's
/// certificate, or a worker certificate naming another worker, gets nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn https_and_worker_certificates_from_separate_cas() {
    use std::os::unix::fs::PermissionsExt;
    let certs = tempfile::tempdir().expect("tempdir");
    let at = |p: &str| certs.path().join(p).display().to_string();
    let kiln = |args: &[&str]| {
        let (code, out, err) = run(std::process::Command::new(KILN).args(args)).expect("kiln cert");
        assert_eq!(code, 0, "kiln {args:?}: {err}");
        out
    };
    for (name, dir) in [("farm server", "sca"), ("farm workers", "wca"), ("farm users", "uca")] {
        kiln(&["cert", "ca", "--name", name, "--out", &at(dir)]);
    }
    kiln(&["cert", "issue", "--ca", &at("sca"), "--server", "127.0.0.1,localhost", "--out", &at("tls")]);
    kiln(&["cert", "issue", "--ca", &at("wca"), "--worker", "w2", "--out", &at("wc")]);
    kiln(&["cert", "issue", "--ca", &at("wca"), "--worker", "w3", "--out", &at("wc")]);
    kiln(&["cert", "issue", "--ca", &at("uca"), "--user", "bob@example.org", "--out", &at("uc")]);
    let user_pem = kiln(&["cert", "issue", "--ca", &at("uca"), "--user", "ann@example.org", "--out", &at("uc")]);
    assert_eq!(user_pem.trim(), at("uc/ann@example.org.pem"));
    for key in ["sca/ca.key", "wca/ca.key", "tls/127.0.0.1.key", "wc/w2.key", "uc/ann@example.org.key"] {
        let mode = std::fs::metadata(at(key)).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let (code, _, err) = run(std::process::Command::new(KILN).args([
        "cert",
        "issue",
        "--ca",
        &at("nowhere"),
        "--worker",
        "w9",
        "--out",
        &at("x"),
    ]))
    .expect("kiln cert");
    assert_ne!(code, 0);
    assert!(err.contains("cannot read") && err.contains("ca.pem"), "{err}");

    let (cert, key) = (at("tls/127.0.0.1.pem"), at("tls/127.0.0.1.key"));
    let config = format!(
        "[master]\ntls = {{ cert = \"{cert}\", key = \"{key}\", client_ca = \"{}\" }}\n\
         worker_tls = {{ cert = \"{cert}\", key = \"{key}\", client_ca = \"{}\" }}\n\
         [[worker]]\nname = \"w1\"\ntoken_file = \"secrets/w1.token\"\n\
         [[worker]]\nname = \"w2\"\n\
         [[target]]\nname = \"t\"\nfamily = \"deb\"\n\
         [[component]]\nname = \"job\"\nsteps = [ {{ name = \"run\", run = \"echo on $KILN_WORKER\" }} ]\n",
        at("uca/ca.pem"),
        at("wca/ca.pem")
    );
    let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
    farm.web_ca = Some(at("sca/ca.pem").into());
    farm.start_master().await;
    assert!(farm.url().starts_with("https://"));
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = reqwest::get(format!("http://{}/api/v1/status", farm.http)).await;
    assert!(plain.is_err() || !plain.as_ref().is_ok_and(|r| r.status().is_success()), "{plain:?}");

    // w2 has no token: its certificate is its login.
    let tls_ca = at("sca/ca.pem");
    let w2 = ["--tls-ca", tls_ca.as_str(), "--tls-cert", &at("wc/w2.pem"), "--tls-key", &at("wc/w2.key")];
    farm.start_worker_with("w2", &["t"], 1, &w2);
    farm.wait_for_workers(&["w2"]).await;
    let client = farm.client();
    let id = client
        .create_builds(&BuildRequestBody { components: vec!["job".into()], ..Default::default() })
        .await
        .expect("create over https")
        .builds[0]
        .id;
    let b = farm.wait_finished(id, Duration::from_secs(20)).await;
    assert_eq!(b.state, BuildState::Succeeded);
    assert_eq!(client.log(id, "run", 0).await.expect("log").data, "on w2\n");

    // w3's certificate claiming to be w1 (no token): refused by name.
    std::fs::remove_file(farm.path("secrets/w1.token")).expect("no token for this try");
    let w3 = ["--tls-ca", tls_ca.as_str(), "--tls-cert", &at("wc/w3.pem"), "--tls-key", &at("wc/w3.key")];
    farm.start_worker_with("w1", &["t"], 1, &w3);
    assert!(
        wait_for(Duration::from_secs(10), || async {
            farm.master_log().contains("refused a worker: its certificate names another")
        })
        .await,
        "{}",
        farm.master_log()
    );
    farm.kill_worker("w1");
    // A user's certificate (another CA) cannot connect as a worker at all.
    let user = [
        "--tls-ca",
        tls_ca.as_str(),
        "--tls-cert",
        &at("uc/ann@example.org.pem"),
        "--tls-key",
        &at("uc/ann@example.org.key"),
    ];
    farm.start_worker_with("w1", &["t"], 1, &user);
    assert!(
        wait_for(Duration::from_secs(10), || async {
            farm.master_log().contains("TLS handshake with a worker failed")
        })
        .await,
        "{}",
        farm.master_log()
    );
    let ws = client.workers().await.expect("workers");
    assert!(
        ws.iter().any(|w| w.name == "w2" && w.connected) && !ws.iter().any(|w| w.name == "w1" && w.connected),
        "{ws:?}"
    );

    // On the web port, a certificate from the users' CA logs its user in (no token).
    client
        .add_user(&kiln_proto::api::NewUser { email: "ann@example.org".into(), permissions: vec!["own_jobs".into()] })
        .await
        .expect("add ann");
    let with_identity = |pem: &str, key: &str| {
        let mut both = std::fs::read(at(pem)).expect("cert");
        both.extend(std::fs::read(at(key)).expect("key"));
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(at("sca/ca.pem")).expect("ca")).expect("ca"),
            )
            .identity(reqwest::Identity::from_pem(&both).expect("identity"))
            .build()
            .expect("client")
    };
    let body = serde_json::json!({ "components": ["job"] });
    let ann = with_identity("uc/ann@example.org.pem", "uc/ann@example.org.key");
    let resp = ann.post(format!("{}/api/v1/builds", farm.url())).json(&body).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let created: kiln_proto::api::BuildRequestCreated = resp.json().await.expect("json");
    let b = farm.wait_finished(created.builds[0].id, Duration::from_secs(20)).await;
    assert_eq!(b.requested_by.as_deref(), Some("ann@example.org"));
    let bob = with_identity("uc/bob@example.org.pem", "uc/bob@example.org.key");
    let resp = bob.post(format!("{}/api/v1/builds", farm.url())).json(&body).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 401, "bob has a certificate but is not a user");
    // A worker's certificate (another CA) gets no connection on the web port.
    let worker = with_identity("wc/w2.pem", "wc/w2.key");
    let resp = worker.post(format!("{}/api/v1/builds", farm.url())).json(&body).send().await;
    assert!(resp.is_err(), "{resp:?}");
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
        farm.start_worker("w1", &["t"], 1);
        farm.start_worker("w2", &["t"], 1);
        farm.wait_for_workers(&["w1", "w2"]).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_are_uploaded_checked_stored_and_fetched() {
    let config = r#"
[master]
max_artifact_size = "2MiB"

[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "t"
family = "deb"

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
"#;
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
    assert_eq!(std::fs::read_dir(farm.path("data/incoming")).expect("incoming").count(), 0);
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
    let mut farm = Farm::new(KILN.as_ref(), config, &[]);
    farm.start_master().await;
    let proxy = Proxy::start(farm.worker_port).await;
    farm.start_worker_via("w1", &["t"], 1, proxy.addr);
    farm.wait_for_workers(&["w1"]).await;
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
    assert_eq!(std::fs::read_dir(farm.path("data/incoming")).expect("incoming").count(), 0);
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

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_during_the_upload_ends_the_build_cancelled_without_artifacts() {
    let config = ONE_WORKER.to_string()
        + r#"
[[component]]
name = "pkg"
artifacts = ["*.bin"]
steps = [ { name = "make", run = "head -c 1000000 /dev/urandom > small.bin; head -c 200000000 /dev/zero > big.bin; touch ../made-$KILN_BUILD_ID; while [ ! -e ../go-$KILN_BUILD_ID ]; do sleep 0.05; done" } ]
"#;
    let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
    farm.start_master().await;
    let proxy = Proxy::start(farm.worker_port).await;
    farm.start_worker_via("w1", &["t"], 1, proxy.addr);
    farm.wait_for_workers(&["w1"]).await;
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
    assert_eq!(std::fs::read_dir(farm.path("data/incoming")).expect("incoming").count(), 0);
    let gone = || async { !farm.path(&format!("workers/w1/outbox/{id}")).exists() };
    assert!(wait_for(Duration::from_secs(10), gone).await, "the worker's outbox is emptied");
}

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
    let db = format!("sqlite://{}?mode=rwc", farm.path("data/kiln.db").display());
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
    let three_days_ago = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros()
        as i64)
        - 3 * 86_400 * 1_000_000;
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
async fn a_burst_of_requests_collapses_into_the_newest_build() {
    let config = ONE_WORKER.to_string()
        + r#"
[[component]]
name = "pkg"
collapse = true
steps = [ { name = "s", run = "echo built" } ]
"#;
    let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
    farm.start_master().await;
    let client = farm.client();
    // No worker yet: five pushes queue up; a release request is a different kind of build.
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(client.create_builds(&request(&["pkg"], &[])).await.expect("create").builds[0].id);
    }
    let release = client.create_builds(&request(&["pkg"], &[("release", "true")])).await.expect("create").builds[0].id;
    // Each arrival stands for the one before it: only the newest of the burst waits.
    for pair in ids.windows(2) {
        let b = farm.wait_finished(pair[0], Duration::from_secs(10)).await;
        assert_eq!(b.state, BuildState::Skipped);
        assert_eq!(b.reason.as_deref(), Some(format!("collapsed into build {}", pair[1]).as_str()));
    }
    farm.start_worker("w1", &["t"], 1);
    for id in [ids[4], release] {
        assert_eq!(farm.wait_finished(id, Duration::from_secs(30)).await.state, BuildState::Succeeded);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_builds_are_reported_to_a_signed_webhook() {
    let (base, mut rx) = kiln_testing::http_recorder().await;
    let url = format!("{base}/hook");
    let config = ONE_WORKER.to_string()
        + &format!(
            r#"
[[component]]
name = "good"
steps = [ {{ name = "s", run = "true" }} ]

[[component]]
name = "bad"
steps = [ {{ name = "s", run = "exit 3" }} ]

[[notify]]
name = "chat"
webhook = "{url}"
on = ["failed"]
secret_file = "secrets/hook.secret"
"#
        );
    let farm = Farm::running(KILN.as_ref(), &config, &[("secrets/hook.secret", "s3cret\n")], "w1", &["t"], 1).await;
    let client = farm.client();
    let good = client.create_builds(&request(&["good"], &[])).await.expect("create").builds[0].id;
    assert_eq!(farm.wait_finished(good, Duration::from_secs(30)).await.state, BuildState::Succeeded);
    let bad = client.create_builds(&request(&["bad"], &[("why", "test")])).await.expect("create").builds[0].id;
    assert_eq!(farm.wait_finished(bad, Duration::from_secs(30)).await.state, BuildState::Failed);
    let (head, body) =
        tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("a notification").expect("sent");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["build_id"], bad, "only the failure is reported (on = [failed]): {v}");
    assert_eq!((v["component"].as_str(), v["state"].as_str()), (Some("bad"), Some("failed")));
    assert_eq!(v["properties"]["why"], "test");
    assert!(v["url"].as_str().is_some_and(|u| u.ends_with(&format!("/builds/{bad}"))));
    // The signature is HMAC-SHA256 of the body with the shared secret.
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").expect("hmac");
    mac.update(body.as_bytes());
    let want = format!("x-kiln-signature-256: sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert!(head.lines().any(|l| l.trim() == want), "{head}");
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
    let db = format!("sqlite://{}?mode=rwc", farm.path("data/kiln.db").display());
    // Each "night": the master comes back after its nightly was due.
    let night = async |farm: &mut Farm| {
        farm.kill_master();
        let store = kiln_db::Store::open(&db).await.expect("db");
        let long_ago = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros()
            as i64)
            - 86_400 * 1_000_000 * 2;
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
