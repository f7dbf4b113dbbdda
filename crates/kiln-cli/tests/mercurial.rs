//! Mercurial sources end to end, against a real `hg serve` on loopback:
//! polling a branch, the `changegroup` hook kiln ships posting to the base
//! change hook, and each build checking out exactly the revision it names.

use kiln_client::BuildQuery;
use kiln_core::BuildState;
use kiln_proto::api::BuildRequestBody;
use kiln_testing::{free_addr, listening, wait_for, Farm, Server};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Runs `hg` with no user configuration beyond a name; returns stdout.
fn hg(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("hg")
        .arg("--cwd")
        .arg(dir)
        .args(args)
        .env("HGRCPATH", "")
        .env("HGPLAIN", "1")
        .env("HGUSER", "Ann Packager <ann@example.org>")
        .output()
        .expect("hg runs");
    assert!(
        out.status.success(),
        "hg {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(work: &Path, file: &str, text: &str, message: &str) -> String {
    std::fs::write(work.join(file), text).expect("write");
    hg(work, &["commit", "--addremove", "-m", message]);
    hg(work, &["log", "-r", ".", "-T", "{node}"])
}

async fn builds_of(farm: &Farm, component: &str) -> Vec<kiln_proto::api::Build> {
    let all =
        farm.client().builds(&BuildQuery { limit: Some(100), ..Default::default() }).await.expect("builds").builds;
    all.into_iter().filter(|b| b.component == component).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn mercurial_sources_build_by_polling_and_by_the_changegroup_hook() {
    let hgdir = tempfile::tempdir().expect("tempdir");
    let served = hgdir.path().join("grace");
    let work = hgdir.path().join("work");
    std::fs::create_dir_all(&served).expect("dir");
    hg(&served, &["init"]);
    hg(hgdir.path(), &["clone", "--quiet", served.to_str().expect("path"), work.to_str().expect("path")]);
    let first = commit(&work, "grace.txt", "GRACE 1\n", "first");
    hg(&work, &["branch", "--quiet", "stable"]);
    commit(&work, "grace.txt", "STABLE 1\n", "stable branch");
    hg(&work, &["push", "--quiet", "--new-branch"]);
    hg(&work, &["update", "--quiet", "default"]);

    let addr = free_addr();
    let server = Command::new("hg")
        .args(["serve", "--address", "127.0.0.1", "--port", &addr.port().to_string(), "--cwd"])
        .arg(&served)
        .env("HGRCPATH", "")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hg serve starts");
    let _server = Server(server);
    listening(addr, "hg serve").await;
    let url = format!("http://127.0.0.1:{}/", addr.port());

    let config = format!(
        r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "t"
family = "deb"

[[component]]
name = "grace"
source = {{ hg = "{url}", poll = "10s" }}
steps = [{{ name = "show", run = "cat grace.txt; test -d .hg" }}]

[[component]]
name = "grace-stable"
source = {{ hg = "{url}", branch = "stable" }}
steps = [{{ name = "show", run = "cat grace.txt" }}]
"#
    );
    let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
    farm.start_master().await;
    farm.start_worker("w1", &["t"], 2);
    farm.wait_for_workers(&["w1"]).await;

    // A build without a revision builds the branch's tip.
    let client = farm.client();
    let request = |component: &str, props: &[(&str, &str)]| BuildRequestBody {
        components: vec![component.to_string()],
        properties: props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let id = client.create_builds(&request("grace-stable", &[])).await.expect("build").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(60)).await;
    assert_eq!(
        b.state,
        BuildState::Succeeded,
        "{b:?}\n{}",
        client.log(id, "checkout", 0).await.map(|c| c.data).unwrap_or_default()
    );
    assert_eq!(client.log(id, "show", 0).await.expect("log").data, "STABLE 1\n");
    assert_eq!(b.properties["got_revision"].value.len(), 40);

    // Polling: the first sight builds nothing; a pushed commit builds that revision.
    let seen = wait_for(Duration::from_secs(30), || async { farm.master_log().contains("polling a new branch") }).await;
    assert!(seen, "{}", farm.master_log());
    assert!(builds_of(&farm, "grace").await.is_empty());
    // A bookmark named like the branch, left on an old revision, does not
    // stand for the branch (hg identify -r default would take it).
    hg(&served, &["bookmark", "--quiet", "--force", "-r", &first, "default"]);
    let second = commit(&work, "grace.txt", "GRACE 2\n", "second");
    hg(&work, &["push", "--quiet"]);
    let polled = wait_for(Duration::from_secs(60), || async { !builds_of(&farm, "grace").await.is_empty() }).await;
    assert!(polled, "the poller found the push: {}", farm.master_log());
    let b = &builds_of(&farm, "grace").await[0];
    let b = farm.wait_finished(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    assert_eq!(b.properties["revision"].value, second);
    assert_eq!(b.properties["got_revision"].value, second);
    assert_eq!(b.properties["changed_by"].value, "Ann Packager <ann@example.org>");
    assert_eq!(client.log(b.id, "show", 0).await.expect("log").data, "GRACE 2\n");
    let checkout = client.log(b.id, "checkout", 0).await.expect("log").data;
    assert!(checkout.contains(&format!("checked out {url} default at {second} (second)")), "{checkout}");

    // An exact earlier revision, by request.
    let id = client.create_builds(&request("grace", &[("revision", &first)])).await.expect("build").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    assert_eq!(client.log(id, "show", 0).await.expect("log").data, "GRACE 1\n");

    // The hook kiln ships, as the served repository's changegroup hook: a
    // push to the stable branch builds the stable component at that revision.
    let token = hgdir.path().join("hook.token");
    std::fs::write(&token, farm.admin_token()).expect("token");
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/hg-changegroup-hook");
    let hgrc = format!(
        "[hooks]\nchangegroup.kiln = {}\n[kiln]\nurl = {}\nrepository = {url}\ntoken_file = {}\n",
        hook.canonicalize().expect("the hook").display(),
        farm.url(),
        token.display()
    );
    std::fs::write(served.join(".hg/hgrc"), hgrc).expect("hgrc");
    let before = builds_of(&farm, "grace-stable").await.len();
    hg(&work, &["update", "--quiet", "stable"]);
    let stable2 = commit(&work, "grace.txt", "STABLE 2\n", "stable fix");
    hg(&work, &["push", "--quiet"]);
    let hooked = builds_of(&farm, "grace-stable").await;
    assert_eq!(hooked.len(), before + 1, "the hook requested one build as the push ended");
    let b = farm.wait_finished(hooked[0].id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    assert_eq!(b.properties["revision"].value, stable2);
    assert_eq!(client.log(b.id, "show", 0).await.expect("log").data, "STABLE 2\n");
    assert!(builds_of(&farm, "grace").await.len() == 2, "nothing on default was built for it");
}
