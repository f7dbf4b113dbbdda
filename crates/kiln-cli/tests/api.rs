//! The HTTP API from outside: bad input gets a clear 4xx and stores nothing,
//! the OpenAPI document lists the endpoints, and Buildbot's `base` change
//! hook schedules a project.

use kiln_core::BuildState;
use kiln_testing::{run, Farm};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[tokio::test(flavor = "multi_thread")]
async fn the_api_rejects_bad_input_clearly() {
    let farm = Farm::example(KILN.as_ref()).await;
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
    let farm = Farm::example(KILN.as_ref()).await;
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
    // Buildbot's own trigger script, with the command line the seed teams
    // use: it takes the 202 it gets for success and exits 0.
    let host = farm.url().trim_start_matches("http://").to_string();
    let urlpath = format!("/change_hook/base?token={}", farm.admin_token());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/post_build_request.py");
    let (code, out, err) = run(std::process::Command::new("python3").arg(script).args([
        "-H",
        &host,
        "-u",
        &urlpath,
        "-v",
        "--project",
        "libgrace",
        "--repository",
        "https://git.example.org/libgrace.git",
        "--branch",
        "main",
        "--revision",
        "abc123",
        "--who",
        "alice <alice@example.org>",
        "--comments",
        "fix the frobnicator",
        "--category",
        "release",
        "--when",
        "1764633600.25",
        "--file",
        "src/grace.c",
        "--file",
        "README",
        "-p",
        "{'release': 'true'}",
    ]))
    .expect("post_build_request.py");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("202 Accepted"), "{out}");
    let builds = farm.client().builds(&Default::default()).await.expect("builds").builds;
    let ids: Vec<i64> = builds.iter().filter(|b| b.component == "libgrace").map(|b| b.id).collect();
    assert_eq!(ids.len(), 2, "all targets of the project");
    for id in ids {
        let b = farm.wait_finished(id, Duration::from_secs(30)).await;
        assert_eq!(b.state, BuildState::Succeeded);
        assert_eq!(b.properties["release"].value, "true");
        assert_eq!(b.properties["revision"].value, "abc123");
        // What Buildbot records of the change is kept with it.
        assert_eq!(b.properties["category"].value, "release");
        assert_eq!(b.properties["when"].value, "1764633600");
        assert_eq!(b.properties["files"].value, "src/grace.c\nREADME");
        assert_eq!(b.properties["repository"].value, "https://git.example.org/libgrace.git");
        assert!(b.requested_by.as_deref().expect("who").starts_with("alice"));
        let log = farm.client().log(id, "package", 0).await.expect("log");
        assert_eq!(log.data, "packaging 1.4.2 release=true\n");
    }
    // A form as Buildbot 2 and later send it: codebase and when_timestamp.
    let r = http
        .post(format!("{url}?token={}", farm.admin_token()))
        .form(&[("project", "libgrace"), ("codebase", "grace"), ("when_timestamp", "1764633601")])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 202);
    let created: serde_json::Value = r.json().await.expect("json");
    let first = created["builds"][0]["id"].as_i64().expect("id");
    let b = farm.wait_finished(first, Duration::from_secs(30)).await;
    assert_eq!((b.properties["codebase"].value.as_str(), b.properties["when"].value.as_str()), ("grace", "1764633601"));
    let r = http
        .post(format!("{url}?token={}", farm.admin_token()))
        .form(&[("project", "libgrace"), ("when", "yesterday")])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{url}?token={}", farm.admin_token()))
        .form(&[("project", "nope")])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    // A Latin-1 name is refused, not read as `Jos\u{fffd}` (Buildbot answers 400 too).
    let before = farm.client().builds(&Default::default()).await.expect("builds").builds.len();
    let r = http
        .post(format!("{url}?token={}", farm.admin_token()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("project=libgrace&who=Jos%E9")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.expect("json");
    assert_eq!(e["error"], "form field `who` is not valid UTF-8");
    assert_eq!(farm.client().builds(&Default::default()).await.expect("builds").builds.len(), before);
    let r = http
        .post(format!("{url}?token={}", farm.admin_token()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("project=libgrace&who=Jos%C3%A9")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 202);
    let created: serde_json::Value = r.json().await.expect("json");
    let b = farm.wait_finished(created["builds"][0]["id"].as_i64().expect("id"), Duration::from_secs(30)).await;
    assert!(b.requested_by.as_deref().is_some_and(|w| w.starts_with("José")), "{:?}", b.requested_by);
    // Not a form at all.
    let r = http
        .post(format!("{url}?token={}", farm.admin_token()))
        .header("content-type", "application/json")
        .body(r#"{"project": "libgrace"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 415);
}

/// `kiln log --follow` says how a build ended, also one that failed before
/// its first step (which has no log), and its exit code says it too; a
/// reader that stops early (`| head`) ends it quietly.
#[tokio::test(flavor = "multi_thread")]
async fn kiln_log_says_how_a_build_ended_and_stops_quietly_at_a_closed_pipe() {
    let config = kiln_testing::ONE_WORKER.to_string()
        + r#"
[[component]]
name = "lost"
source = { path = "src/missing" }
steps = [ { name = "x", run = "true" } ]

[[component]]
name = "chatty"
steps = [ { name = "talk", run = "seq 1 300000" } ]

[[component]]
name = "broken"
steps = [ { name = "fail", run = "echo trying; exit 3" } ]
"#;
    let farm = Farm::running(KILN.as_ref(), &config, &[], "w1", &["t"], 2).await;
    let client = farm.client();
    let created =
        client.create_builds(&kiln_testing::request(&["lost", "chatty", "broken"], &[])).await.expect("create");
    let id = |c: &str| created.builds.iter().find(|b| b.component == c).expect("build").id.to_string();
    let (code, out, err) = run(farm.kiln().args(["log", &id("lost"), "--follow"])).expect("kiln log");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("build #{} failed: source directory", id("lost"))), "{err}");
    let (code, out, err) = run(farm.kiln().args(["log", &id("broken"), "--follow"])).expect("kiln log");
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("trying") && err.contains("failed: step fail failed with exit code 3"), "{out}{err}");
    let (code, _, err) = run(farm.kiln().args(["log", &id("chatty"), "--follow"])).expect("kiln log");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("succeeded"), "{err}");
    // The whole log is far more than a pipe holds: `head` closes it early.
    let (code, out, err) = run(std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("\"$0\" log {} | head -n 2", id("chatty")))
        .arg(KILN)
        .env("KILN_URL", farm.url())
        .env("KILN_TOKEN", farm.admin_token()))
    .expect("sh");
    assert_eq!((code, out.as_str()), (0, "── step talk ──\n1\n"), "{err}");
    assert!(err.is_empty(), "a closed pipe is no error: {err}");
}

/// Ctrl-C on `kiln build --follow` stops following, says the builds go on,
/// and they do.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_following_and_the_build_goes_on() {
    let config = kiln_testing::ONE_WORKER.to_string()
        + "\n[[component]]\nname = \"long\"\nsteps = [ { name = \"wait\", run = \"sleep 60\" } ]\n";
    let farm = Farm::running(KILN.as_ref(), &config, &[], "w1", &["t"], 1).await;
    let mut child = farm
        .kiln()
        .args(["build", "long", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kiln build --follow");
    let client = farm.client();
    let running = kiln_testing::wait_for(Duration::from_secs(20), || async {
        let builds = client.builds(&Default::default()).await.map(|p| p.builds).unwrap_or_default();
        builds.iter().any(|b| b.state == BuildState::Running)
    })
    .await;
    assert!(running, "the build runs");
    // The follower is following once it printed a build's line (it prints
    // one per change); Ctrl-C before that would meet no handler yet.
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stdout, &mut line).expect("read") > 0 && !line.starts_with("#1 ") {
        line.clear();
    }
    assert!(line.starts_with("#1 "), "the follower printed the build: {line:?}");
    let (code, _, err) =
        run(std::process::Command::new("kill").args(["-INT", &child.id().to_string()])).expect("kill -INT");
    assert_eq!(code, 0, "{err}");
    let out = child.wait_with_output().expect("the follower ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopped following; the builds of request #1 go on"), "{stderr}");
    let b = client.build(1).await.expect("build");
    assert_eq!(b.state, BuildState::Running, "Ctrl-C of a follower cancels nothing");
    client.cancel(1).await.expect("cancel");
}

/// A load balancer's probes need no login, even where reads do: `/healthz`
/// says the master answers, `/readyz` that it can serve (one line per check).
#[tokio::test(flavor = "multi_thread")]
async fn health_probes_answer_without_a_login() {
    let config = format!("[master]\nanonymous_read = false\n{}", kiln_testing::ONE_WORKER);
    let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
    farm.start_master().await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", farm.url())).send();
    let alive = get("/healthz").await.expect("healthz");
    assert_eq!(alive.status().as_u16(), 200);
    assert_eq!(alive.text().await.expect("body"), "ok\n");
    let ready = get("/readyz").await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(ready.text().await.expect("body"), "database: ok\ndata_dir: ok\nkeys: ok\nlease: ok\n");
    // Reads still need a login.
    assert_eq!(get("/api/v1/builds").await.expect("builds").status().as_u16(), 401);
}
