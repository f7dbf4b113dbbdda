//! The build queue end to end, on real `kiln master` and `kiln worker`
//! processes: builds through the CLI and the API spread over workers and
//! targets, `depends_on` ordering, cancelling running builds, a failed
//! dependency skipping its dependents, and a burst of requests collapsing
//! into the newest.

use kiln_core::{BuildState, StepState};
use kiln_testing::{request, run, wait_for, Farm, ONE_WORKER};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[tokio::test(flavor = "multi_thread")]
async fn twenty_builds_across_both_targets_succeed_with_their_logs_and_properties() {
    let farm = Farm::example(KILN.as_ref()).await;
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
    let farm = Farm::example(KILN.as_ref()).await;
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
    let config = &(ONE_WORKER.to_string()
        + r#"
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
"#);
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

/// Every queued build says why it waits: a dependency, busy slots (with its
/// place in line), or no connected worker for its target (named), in the
/// API, `kiln show`, `kiln builds` and on its page.
#[tokio::test(flavor = "multi_thread")]
async fn a_queued_build_says_why_it_waits() {
    let config = r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "t"
family = "deb"

[[target]]
name = "nobody"
family = "deb"

[[component]]
name = "hold"
targets = ["t"]
steps = [ { name = "hold", run = "while [ ! -e ../go-$KILN_BUILD_ID ]; do sleep 0.05; done" } ]

[[component]]
name = "dependent"
targets = ["t"]
depends_on = ["hold"]
steps = [ { name = "s", run = "true" } ]

[[component]]
name = "quick"
steps = [ { name = "s", run = "true" } ]
"#;
    let farm = Farm::running(KILN.as_ref(), config, &[], "w1", &["t"], 1).await;
    let client = farm.client();
    let first = client.create_builds(&request(&["hold", "dependent"], &[])).await.expect("create");
    let id = |c: &kiln_proto::api::BuildRequestCreated, comp: &str, target: &str| {
        c.builds.iter().find(|b| b.component == comp && b.target == target).expect("build").id
    };
    let (hold, dependent) = (id(&first, "hold", "t"), id(&first, "dependent", "t"));
    farm.wait_build(hold, Duration::from_secs(20), |b| b.state == BuildState::Running).await;
    let second = client.create_builds(&request(&["quick"], &[])).await.expect("create");
    let (busy, lost) = (id(&second, "quick", "t"), id(&second, "quick", "nobody"));
    let waits = |id: i64| {
        let client = &client;
        async move { client.build(id).await.ok().and_then(|b| b.waiting) }
    };
    let all_known = wait_for(Duration::from_secs(20), || async {
        waits(dependent).await.is_some() && waits(busy).await.is_some() && waits(lost).await.is_some()
    })
    .await;
    assert!(all_known, "the dispatcher says why each waits");
    let dep = waits(dependent).await.expect("waiting");
    assert_eq!(
        (dep.kind(), dep.message()),
        ("dependency", format!("waits for build {hold} (hold@t) to succeed").as_str())
    );
    let slot = waits(busy).await.expect("waiting");
    assert_eq!((slot.kind(), slot.message()), ("slots_busy", "all 1 slots serving t are busy (w1); number 1 in line"));
    let none = waits(lost).await.expect("waiting");
    assert_eq!(none.kind(), "no_worker");
    assert!(none.message().contains("no connected worker serves nobody (connected: w1)"), "{}", none.message());

    let (code, out, err) = run(farm.kiln().args(["show", &lost.to_string()])).expect("kiln show");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("waiting:      no connected worker serves nobody"), "{out}");
    let (_, out, _) = run(farm.kiln().args(["builds", "--state", "queued"])).expect("kiln builds");
    assert!(out.lines().any(|l| l.starts_with(&format!("#{busy} ")) && l.ends_with("waits: slots_busy")), "{out}");
    let page = reqwest::get(format!("{}/builds/{lost}", farm.url())).await.expect("page").text().await.expect("text");
    assert!(page.contains("Waiting: no connected worker serves nobody"), "{page}");
    // The console's cell says it on hover.
    let console = reqwest::get(farm.url()).await.expect("console").text().await.expect("text");
    assert!(console.contains(&format!("title=\"#{lost} queued: no connected worker serves nobody")), "{console}");

    // Released, the rest runs; what waited for it no longer says it waits.
    std::fs::write(farm.path(&format!("workers/w1/builds/go-{hold}")), "").expect("go");
    for id in [hold, dependent, busy] {
        assert_eq!(farm.wait_finished(id, Duration::from_secs(30)).await.state, BuildState::Succeeded);
    }
    assert!(client.build(busy).await.expect("build").waiting.is_none());
    client.cancel(lost).await.expect("cancel");
}

/// A higher priority is dispatched first when a slot frees; among equal
/// priorities the requests take turns, so a long request does not keep a
/// short one waiting behind all of it.
#[tokio::test(flavor = "multi_thread")]
async fn priority_goes_first_and_requests_take_turns() {
    let mut config = String::from(
        "[[worker]]\nname = \"w1\"\ntoken_file = \"secrets/w1.token\"\n\n[[target]]\nname = \"t\"\nfamily = \"deb\"\n\n\
         [[component]]\nname = \"hold\"\nsteps = [ { name = \"hold\", run = \"while [ ! -e ../go-$KILN_BUILD_ID ]; do sleep 0.05; done\" } ]\n",
    );
    for c in ["a1", "a2", "a3", "b1", "b2", "urgent"] {
        config.push_str(&format!("\n[[component]]\nname = \"{c}\"\nsteps = [ {{ name = \"s\", run = \"true\" }} ]\n"));
    }
    let farm = Farm::running(KILN.as_ref(), &config, &[], "w1", &["t"], 1).await;
    let client = farm.client();
    let hold = client.create_builds(&request(&["hold"], &[])).await.expect("create").builds[0].id;
    farm.wait_build(hold, Duration::from_secs(20), |b| b.state == BuildState::Running).await;
    // Behind the busy slot: a three-build request, a two-build one, then an urgent one.
    let made = |out: &str| -> Vec<i64> {
        out.lines().filter_map(|l| l.split('\t').next().and_then(|id| id.parse().ok())).collect()
    };
    let mut ids = Vec::new();
    for args in [&["build", "a1", "a2", "a3"][..], &["build", "b1", "b2"], &["build", "urgent", "--priority", "10"]] {
        let (code, out, err) = run(farm.kiln().args(args)).expect("kiln build");
        assert_eq!(code, 0, "{err}");
        ids.extend(made(&out));
    }
    let (code, _, err) = run(farm.kiln().args(["build", "a1", "--priority", "high"])).expect("kiln build");
    assert_ne!(code, 0);
    assert!(err.contains("invalid value 'high'"), "{err}");
    // While the slot is busy: the builds behind the urgent one say so, and
    // the queue page lists them in the order they will go.
    let all_known = wait_for(Duration::from_secs(20), || async {
        let mut known = true;
        for id in &ids {
            known &= client.build(*id).await.ok().and_then(|b| b.waiting).is_some();
        }
        known
    })
    .await;
    assert!(all_known, "the dispatcher says why each waits");
    let urgent = *ids.last().expect("urgent");
    let first = client.build(ids[0]).await.expect("a1").waiting.expect("waiting");
    assert_eq!(first.kind(), "priority");
    assert!(first.message().starts_with("behind 1 build(s) of higher priority for t; "), "{}", first.message());
    let top = client.build(urgent).await.expect("urgent").waiting.expect("waiting");
    assert_eq!((top.kind(), top.message()), ("slots_busy", "all 1 slots serving t are busy (w1); number 1 in line"));
    let page = reqwest::get(format!("{}/queue", farm.url())).await.expect("page").text().await.expect("text");
    let listed: Vec<i64> = page
        .split("<a href=\"/builds/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next().and_then(|id| id.parse().ok()))
        .collect();
    let expected: Vec<i64> = [5, 0, 3, 1, 4, 2].iter().map(|i| ids[*i]).collect();
    assert_eq!(listed, expected, "urgent, then the requests' builds in turn:\n{page}");
    assert!(page.contains("6 queued"), "{page}");
    std::fs::write(farm.path(&format!("workers/w1/builds/go-{hold}")), "").expect("go");
    let mut started = Vec::new();
    for id in &ids {
        let b = farm.wait_finished(*id, Duration::from_secs(30)).await;
        assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
        started.push((b.started_at.expect("started"), b.component));
    }
    started.sort();
    let order: Vec<&str> = started.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(order, ["urgent", "a1", "b1", "a2", "b2", "a3"]);
    // The API refuses a priority that is not a number in range.
    let body = kiln_proto::api::BuildRequestBody {
        components: vec!["a1".into()],
        properties: [("priority".to_string(), "5000".to_string())].into(),
        ..Default::default()
    };
    let err = client.create_builds(&body).await.expect_err("out of range").to_string();
    assert!(err.contains("property `priority` must be a whole number from -1000 to 1000"), "{err}");
}

/// A drained worker finishes what it runs and takes nothing new: a build
/// queued meanwhile says so, and starts once the worker is resumed (here
/// through the workers page's button).
#[tokio::test(flavor = "multi_thread")]
async fn a_drained_worker_finishes_its_build_and_takes_nothing_new_until_resumed() {
    let config = "[[worker]]\nname = \"w1\"\ntoken_file = \"secrets/w1.token\"\n\n[[target]]\nname = \"t\"\nfamily = \"deb\"\n\n\
         [[component]]\nname = \"hold\"\nsteps = [ { name = \"hold\", run = \"while [ ! -e ../go-$KILN_BUILD_ID ]; do sleep 0.05; done\" } ]\n\n\
         [[component]]\nname = \"quick\"\nsteps = [ { name = \"s\", run = \"true\" } ]\n";
    let farm = Farm::running(KILN.as_ref(), config, &[], "w1", &["t"], 2).await;
    let client = farm.client();
    let hold = client.create_builds(&request(&["hold"], &[])).await.expect("create").builds[0].id;
    farm.wait_build(hold, Duration::from_secs(20), |b| b.state == BuildState::Running).await;

    let (code, out, err) = run(farm.kiln().args(["workers", "drain", "w1", "--reason", "new disk"])).expect("drain");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("worker w1 drained; it finishes #{hold} and takes nothing new\n"));
    let (_, out, _) = run(farm.kiln().args(["workers"])).expect("kiln workers");
    assert!(out.lines().any(|l| l.starts_with("w1 ") && l.contains(" drained ")), "{out}");
    // Drained with a free slot: a new build waits, and says why.
    let quick = client.create_builds(&request(&["quick"], &[])).await.expect("create").builds[0].id;
    let drained = wait_for(Duration::from_secs(20), || async {
        client.build(quick).await.ok().and_then(|b| b.waiting).is_some_and(|w| w.kind() == "drained")
    })
    .await;
    assert!(drained, "{:?}", client.build(quick).await.map(|b| b.waiting));
    let why = client.build(quick).await.expect("build").waiting.expect("waiting");
    assert!(why.message().starts_with("every connected worker serving t is drained (w1)"), "{}", why.message());

    // What it ran finishes; the queued build still waits.
    std::fs::write(farm.path(&format!("workers/w1/builds/go-{hold}")), "").expect("go");
    assert_eq!(farm.wait_finished(hold, Duration::from_secs(30)).await.state, BuildState::Succeeded);
    let idle = wait_for(Duration::from_secs(20), || async {
        client.workers().await.is_ok_and(|ws| ws.iter().any(|w| w.name == "w1" && w.running.is_empty()))
    })
    .await;
    assert!(idle);
    let still = client.build(quick).await.expect("build");
    assert_eq!((still.state, still.waiting.as_ref().map(|w| w.kind())), (BuildState::Queued, Some("drained")));

    // The page shows the drain; only someone logged in with server_admin gets the buttons.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http");
    let anonymous = http.get(format!("{}/workers", farm.url())).send().await.expect("page").text().await.expect("text");
    assert!(anonymous.contains("drained by admin: new disk (idle)"), "{anonymous}");
    assert!(!anonymous.contains("/workers/w1/resume"), "no button for the anonymous");
    let (cookie, csrf) = farm.web_login(&http, &farm.admin_token(), "/workers", "admin").await;
    let page = http
        .get(format!("{}/workers", farm.url()))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(page.contains("action=\"/workers/w1/resume\""), "{page}");
    let resumed = http
        .post(format!("{}/workers/w1/resume", farm.url()))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("resume");
    assert_eq!(resumed.status().as_u16(), 303, "back to the workers page");
    assert_eq!(farm.wait_finished(quick, Duration::from_secs(30)).await.state, BuildState::Succeeded);
    assert!(client.workers().await.expect("workers").iter().all(|w| w.drained.is_none()));
    // The force form takes a priority too.
    let forced = http
        .post(format!("{}/force", farm.url()))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("component", "quick"), ("priority", "7")])
        .send()
        .await
        .expect("force");
    assert_eq!(forced.status().as_u16(), 303);
    let location = forced.headers()["location"].to_str().expect("location").to_string();
    let forced_id: i64 = location.trim_start_matches("/builds/").parse().expect("a build's page");
    let b = farm.wait_finished(forced_id, Duration::from_secs(30)).await;
    assert_eq!((b.state, b.properties["priority"].value.as_str()), (BuildState::Succeeded, "7"));
    let refused = http
        .post(format!("{}/force", farm.url()))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("component", "quick"), ("priority", "urgent")])
        .send()
        .await
        .expect("force");
    assert_eq!(refused.status().as_u16(), 400);
    // Resuming again is a conflict, said plainly.
    let (code, _, err) = run(farm.kiln().args(["workers", "resume", "w1"])).expect("resume");
    assert_ne!(code, 0);
    assert!(err.contains("worker w1 is not drained"), "{err}");
}
