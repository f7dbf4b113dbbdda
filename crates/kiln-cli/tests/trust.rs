//! Attacks on the farm's trust boundaries, through real processes: what a
//! requester, a worker or a package can make the farm run or publish. Each
//! must get nowhere, with a reason that says why.

use kiln_core::BuildState;
use kiln_testing::{request, Farm, MAKE_DEB, ONE_WORKER};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A property value is data: shell syntax in it is printed, never run.
#[tokio::test(flavor = "multi_thread")]
async fn property_values_never_run_as_shell() {
    let config = ONE_WORKER.to_string()
        + r#"
[[component]]
name = "echoer"
steps = [ { name = "say", run = "echo got: %(prop:note)s; echo plain: %(prop:other:-none)s" } ]
"#;
    let farm = Farm::running(KILN.as_ref(), &config, &[], "w1", &["t"], 1).await;
    let marker = farm.path("pwned");
    let hostile = format!("x; touch {0}; echo $(touch {0}) `touch {0}` '\"", marker.display());
    let client = farm.client();
    let id = client.create_builds(&request(&["echoer"], &[("note", &hostile)])).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(30)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    let log = client.log(id, "say", 0).await.expect("log").data;
    assert!(log.contains(&format!("got: {hostile}\n")), "the value is printed as it is: {log:?}");
    assert!(log.contains("plain: none\n"), "{log:?}");
    assert!(!marker.exists(), "the property's shell syntax ran");
}

/// A worker (or whoever holds its token) is believed about the build it was
/// given and nothing else: no property its step was not declared to set,
/// none the master owns, no step or log it was not sent, no file the build
/// was not asked for.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_is_believed_only_about_what_it_was_asked() {
    use kiln_core::StepState;
    use kiln_proto::wire::{BuildResult, MasterMsg, StepResult, WorkerMsg};
    use kiln_testing::scripted::ScriptedWorker;
    let config = ONE_WORKER.to_string()
        + r#"
[[component]]
name = "honest"
steps = [
  { name = "version", run = "echo 1.0", set_property = "version" },
  { name = "package", run = "true" },
]
artifacts = ["out/*.txt"]
"#;
    let mut farm = Farm::new(KILN.as_ref(), &config, &[]);
    farm.start_master().await;
    let token = std::fs::read_to_string(farm.path("secrets/w1.token")).expect("token");
    let (mut w, welcome) = ScriptedWorker::connect(farm.worker_port, "w1", token.trim(), &["t"]).await;
    assert!(matches!(welcome, MasterMsg::Welcome { .. }), "{welcome:?}");
    let client = farm.client();
    let id = client.create_builds(&request(&["honest"], &[])).await.expect("create").builds[0].id;
    let job = w.job().await;
    assert_eq!((job.build_id, job.artifacts.as_slice()), (id, ["out/*.txt".to_string()].as_slice()));
    let step = |step: u32, property: Option<(&str, &str)>| StepResult {
        build_id: id,
        step,
        state: StepState::Succeeded,
        exit_code: Some(0),
        property: property.map(|(k, v)| (k.to_string(), v.to_string())),
        message: None,
    };
    // Step 0 declares `version`: believed. Step 1 declares nothing, and
    // `release` would place the packages in a release channel: ignored.
    w.send(WorkerMsg::StepStarted { build_id: id, step: 0 }).await;
    w.send(WorkerMsg::StepFinished(step(0, Some(("version", "1.0"))))).await;
    w.send(WorkerMsg::StepFinished(step(1, Some(("release", "true"))))).await;
    // A step the build does not have, and its log.
    w.send(WorkerMsg::StepFinished(step(99, Some(("version", "6.6.6"))))).await;
    w.send(WorkerMsg::Log { build_id: id, step: 1000, offset: 0, data: "made up\n".into() }).await;
    // A package the build was not asked for.
    w.upload(id, "evil_1.0_all.deb", b"!<arch>\n").await;
    let result = BuildResult {
        build_id: id,
        state: kiln_core::BuildState::Succeeded,
        reason: None,
        steps: vec![step(0, None), step(1, None)],
        artifacts: vec!["evil_1.0_all.deb".into()],
    };
    w.send(WorkerMsg::BuildFinished(result)).await;
    let b = farm.wait_finished(id, Duration::from_secs(30)).await;
    assert_eq!(b.state, BuildState::Failed, "{b:?}");
    let reason = b.reason.clone().unwrap_or_default();
    assert!(reason.contains("evil_1.0_all.deb: the build was not asked for a file of that name"), "{reason}");
    assert_eq!(b.properties["version"].value, "1.0");
    assert!(!b.properties.contains_key("release"), "{:?}", b.properties);
    assert!(b.artifacts.is_empty(), "{:?}", b.artifacts);
    assert!(!farm.path(&format!("data/logs/{id}/1000.log")).exists(), "a log for a step the build lacks");
    let log = farm.master_log();
    assert!(log.contains("ignored a property the step does not set"), "{log}");
}

/// A package name belongs to the component that published it first:
/// another component's build that makes it is refused, with the reason,
/// unless the config says the name moved (`adopts`).
#[tokio::test(flavor = "multi_thread")]
async fn a_component_cannot_publish_another_components_package() {
    let config = format!(
        r#"{ONE_WORKER}
[[component]]
name = "tool"
properties = {{ pkg = "kiln-tool" }}
steps = [ {{ name = "package", run = '''{MAKE_DEB}''' }} ]
artifacts = ["*.deb"]

[[component]]
name = "thief"
properties = {{ pkg = "kiln-tool" }}
steps = [ {{ name = "package", run = '''{MAKE_DEB}''' }} ]
artifacts = ["*.deb"]

[[component]]
name = "heir"
adopts = ["kiln-tool"]
properties = {{ pkg = "kiln-tool" }}
steps = [ {{ name = "package", run = '''{MAKE_DEB}''' }} ]
artifacts = ["*.deb"]
"#
    );
    let farm = Farm::running(KILN.as_ref(), &config, &[], "w1", &["t"], 1).await;
    let client = farm.client();
    let first = build(&farm, "tool").await;
    assert_eq!(first.state, BuildState::Succeeded, "{first:?}");
    let stolen = build(&farm, "thief").await;
    assert_eq!(stolen.state, BuildState::Failed, "{stolen:?}");
    let reason = stolen.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("component thief may not publish kiln-tool (a deb of component tool)")
            && reason.contains("`adopts`"),
        "{reason}"
    );
    let moved = build(&farm, "heir").await;
    assert_eq!(moved.state, BuildState::Succeeded, "{moved:?}");
    // Now the heir's: the first owner is refused in turn.
    let back = build(&farm, "tool").await;
    assert_eq!(back.state, BuildState::Failed, "{back:?}");
    let published = client.packages("dev", None, None).await.expect("packages");
    let builders: Vec<Option<i64>> = published.iter().map(|p| p.build_id).collect();
    assert!(builders.contains(&Some(first.id)) && builders.contains(&Some(moved.id)), "{published:?}");
    assert!(!builders.contains(&Some(stolen.id)) && !builders.contains(&Some(back.id)), "{published:?}");
}

async fn build(farm: &Farm, component: &str) -> kiln_proto::api::Build {
    let id = farm.client().create_builds(&request(&[component], &[])).await.expect("create").builds[0].id;
    farm.wait_finished(id, Duration::from_secs(60)).await
}

/// A `.dsc` whose `Source:` climbs out of the pool is refused before the
/// publisher writes anything, and nothing appears outside the repository.
#[tokio::test(flavor = "multi_thread")]
async fn a_traversing_source_name_is_refused_and_writes_nothing() {
    let make_dsc = r#"set -e
echo data > x_1.0.tar.gz
sum=$(sha256sum x_1.0.tar.gz | cut -d' ' -f1); md=$(md5sum x_1.0.tar.gz | cut -d' ' -f1); size=$(stat -c %s x_1.0.tar.gz)
printf 'Format: 1.0\nSource: ../../../../../escaped\nVersion: 1.0\nFiles:\n %s %s x_1.0.tar.gz\nChecksums-Sha256:\n %s %s x_1.0.tar.gz\n' "$md" "$size" "$sum" "$size" > x_1.0.dsc"#;
    let config = format!(
        r#"{ONE_WORKER}
[[component]]
name = "climber"
steps = [ {{ name = "package", run = '''{make_dsc}''' }} ]
artifacts = ["*.dsc", "*.tar.gz"]
"#
    );
    let farm = Farm::running(KILN.as_ref(), &config, &[], "w1", &["t"], 1).await;
    let id = farm.client().create_builds(&request(&["climber"], &[])).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Failed, "{b:?}");
    let reason = b.reason.clone().unwrap_or_default();
    assert!(reason.contains("Source \"../../../../../escaped\" is not valid"), "{reason}");
    let escaped: Vec<_> =
        walk(&farm.path("")).into_iter().filter(|p| p.to_string_lossy().contains("escaped")).collect();
    assert!(escaped.is_empty(), "{escaped:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            out.push(e.path());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Builds run sandboxed: one build sees neither another's processes (nor
/// their secrets through `/proc`) nor its files, nor the worker's token,
/// and a `setsid` child does not outlive its build; on a root worker (as
/// the build user) and on one that is not root (in a user namespace).
#[tokio::test(flavor = "multi_thread")]
async fn builds_see_nothing_of_each_other_or_the_worker() {
    builds_apart(Worker::BuildUser).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn builds_see_nothing_of_each_other_or_the_worker_when_it_is_not_root() {
    builds_apart(Worker::NotRoot).await;
}

/// With `--build-uids`, each running build has a uid of its own too.
#[tokio::test(flavor = "multi_thread")]
async fn builds_see_nothing_of_each_other_with_a_uid_each() {
    builds_apart(Worker::UidEach).await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Worker {
    /// Root, running builds as the default build user.
    BuildUser,
    /// Root, with `--build-uids 300000-300001`.
    UidEach,
    /// Running as nobody.
    NotRoot,
}

async fn builds_apart(worker: Worker) {
    // Each variant's lingering child has its own mark (they run side by side).
    let mark = match worker {
        Worker::BuildUser => "3141.5",
        Worker::UidEach => "1414.5",
        Worker::NotRoot => "2718.5",
    };
    let config = ONE_WORKER.to_string()
        + &r#"
[[component]]
name = "holder"
secrets = { HELD = { file = "secrets/held" } }
steps = [ { name = "hold", run = "echo held > mine.txt; (setsid sleep MARK &); while [ ! -e $KILN_BUILD_DIR/go ]; do sleep 0.05; done" } ]

[[component]]
name = "peeker"
steps = [ { name = "peek", run = '''
echo "procs: $(ls /proc | grep -c '^[0-9]')"
cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -c HELD= || true
ls "$KILN_WORKER_DIR/builds" 2>&1
cat "$KILN_WORKER_DIR/../../secrets/w1.token" 2>&1 || true
cat "$TOKEN_FILE" 2>&1 || true
echo "uid: $(id -u)"
''' } ]
"#
        .replace("MARK", mark);
    let mut farm = Farm::new(KILN.as_ref(), &config, &[("secrets/held", "held-secret-4711")]);
    farm.start_master().await;
    let nobody = kiln_worker::process::BuildUser::named("nobody").expect("nobody");
    match worker {
        Worker::BuildUser => farm.start_worker_with("w1", &["t"], 2, &["--default-build-user"]),
        Worker::UidEach => {
            farm.start_worker_with("w1", &["t"], 2, &["--default-build-user", "--build-uids", "300000-300001"])
        }
        Worker::NotRoot => farm.start_unprivileged_worker("w1", &["t"], 2, nobody.uid, nobody.gid),
    }
    farm.wait_for_workers(&["w1"]).await;
    let client = farm.client();
    let holder = client.create_builds(&request(&["holder"], &[])).await.expect("create").builds[0].id;
    let held = farm.path(&format!("workers/w1/builds/{holder}/mine.txt"));
    let started = kiln_testing::wait_for(Duration::from_secs(30), || async { held.exists() }).await;
    assert!(started, "the holder's step did not start");
    let holder_uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&held).expect("the holder's file").uid()
    };
    let token = std::fs::read_to_string(farm.path("secrets/w1.token")).expect("token");
    let peek = request(&["peeker"], &[]);
    let peeker = client.create_builds(&peek).await.expect("create").builds[0].id;
    let b = farm.wait_finished(peeker, Duration::from_secs(30)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    let log = client.log(peeker, "peek", 0).await.expect("log").data;
    std::fs::write(farm.path(&format!("workers/w1/builds/{holder}/go")), "").expect("release the holder");
    let h = farm.wait_finished(holder, Duration::from_secs(30)).await;
    assert_eq!(h.state, BuildState::Succeeded, "{h:?}");
    let lines: Vec<&str> = log.lines().collect();
    let procs: usize = lines[0].trim_start_matches("procs: ").parse().expect("a count");
    assert!(procs < 10, "only its own processes: {log}");
    assert_eq!(lines[1], "0", "no other build's environment: {log}");
    assert!(!log.contains(&holder.to_string()) || !log.contains("mine.txt"), "{log}");
    assert!(!log.contains(token.trim()), "the worker's token leaked: {log}");
    assert!(!log.contains("held-secret-4711"), "{log}");
    let peeker_uid: u32 = log.lines().find_map(|l| l.strip_prefix("uid: ")?.parse().ok()).expect("uid");
    if worker == Worker::UidEach {
        assert!([300000, 300001].contains(&peeker_uid) && [300000, 300001].contains(&holder_uid), "{log}");
        assert_ne!(peeker_uid, holder_uid, "each running build has its own uid");
    } else {
        assert_eq!(peeker_uid, nobody.uid, "ran as the build user: {log}");
    }
    // The holder's setsid child went with its build.
    let left = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains(mark));
    assert!(!left, "a setsid child outlived its build");
}

/// A spec's `%( )` runs when rpmspec reads it: as the build user, in the
/// sandbox, where the host is read-only.
#[tokio::test(flavor = "multi_thread")]
async fn a_spec_runs_its_shell_as_the_build_user_in_the_sandbox() {
    let marker = "/var/tmp/kiln-spec-was-here";
    let _ = std::fs::remove_file(marker);
    let spec = format!(
        "Name: kiln-probe\nVersion: 1.0\nRelease: %(id -u)\nSummary: probe%(touch {marker} 2>/dev/null)\n\
         License: MIT\nBuildArch: noarch\n%description\nprobe\n%prep\n%build\n%install\n\
         mkdir -p %{{buildroot}}/usr/share/kiln-probe\necho hi > %{{buildroot}}/usr/share/kiln-probe/hi\n\
         %files\n/usr/share/kiln-probe/hi\n"
    );
    let config = r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "el"
family = "rpm"

[[component]]
name = "probe"
source = { path = "src/probe" }
"#;
    let mut farm = Farm::new(KILN.as_ref(), config, &[("src/probe/probe.spec", &spec)]);
    // The tree's output dir is a link to a host dir: root must not copy
    // the build's results through it.
    let escape = farm.path("escape");
    std::fs::create_dir_all(&escape).expect("escape dir");
    std::os::unix::fs::symlink(&escape, farm.path("src/probe/.kiln-out")).expect("link");
    farm.start_master().await;
    farm.start_worker_with("w1", &["el"], 1, &["--default-build-user"]);
    farm.wait_for_workers(&["w1"]).await;
    let id = farm.client().create_builds(&request(&["probe"], &[])).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(120)).await;
    let log = farm.client().log(id, "source", 0).await.map(|c| c.data).unwrap_or_default();
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}\n{log}");
    let nobody = kiln_worker::process::BuildUser::named("nobody").expect("nobody");
    let version = &b.properties["version"].value;
    // The nightly tag goes before the first macro: the release ends with what `id -u` printed.
    assert!(version.ends_with(&nobody.uid.to_string()), "the spec's shell ran as {version}");
    assert!(!std::path::Path::new(marker).exists(), "the spec's shell wrote to the host");
    assert_eq!(std::fs::read_dir(&escape).expect("escape dir").count(), 0, "root wrote through the tree's link");
    assert!(b.artifacts.iter().any(|a| a.name.ends_with(".noarch.rpm")), "{:?}", b.artifacts);
}

/// The source step reads the tree's files inside the tree only: a
/// changelog that links to the worker's token is refused, and nothing of
/// the token reaches the log; on a root worker (dropping to the build user)
/// and on one that is not root.
#[test]
fn a_changelog_linking_out_of_the_tree_is_refused_unread() {
    changelog_link_refused(false);
}

#[test]
fn a_changelog_linking_out_of_the_tree_is_refused_unread_when_the_worker_is_not_root() {
    changelog_link_refused(true);
}

fn changelog_link_refused(unprivileged: bool) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let nobody = kiln_worker::process::BuildUser::named("nobody").expect("nobody");
    let tree = dir.path().join("builds/1");
    let scratch = dir.path().join("builds/1.scratch");
    std::fs::create_dir_all(tree.join("debian")).expect("tree");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let token = dir.path().join("w1.token");
    std::fs::write(&token, "hello (1.0-1) unstable; urgency=low SECRET-TOKEN-9931\n").expect("token");
    std::os::unix::fs::symlink(&token, tree.join("debian/changelog")).expect("link");
    let mut cmd = if unprivileged && running_as_root() {
        // The worker's own user owns its files and runs the step.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for p in [dir.path().join("builds"), tree.clone(), tree.join("debian"), scratch.clone(), token.clone()] {
            std::os::unix::fs::chown(&p, Some(nobody.uid), Some(nobody.gid)).expect("chown");
        }
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut c = std::process::Command::new("setpriv");
        c.arg(format!("--reuid={}", nobody.uid)).arg(format!("--regid={}", nobody.gid)).args([
            "--clear-groups",
            "--",
            KILN,
        ]);
        c
    } else {
        std::process::Command::new(KILN)
    };
    let sandbox = kiln_worker::sandbox::Sandbox {
        hide: kiln_worker::sandbox::hidden_paths(&dir.path().join("builds"), None, std::slice::from_ref(&token)),
        user: (!unprivileged && running_as_root()).then_some(nobody),
    };
    let out = cmd
        .args(["internal", "deb-source"])
        .env("KILN_BUILD_DIR", &tree)
        .env("KILN_SCRATCH", &scratch)
        .env("KILN_BUILD_ID", "1")
        .envs(sandbox.env())
        .output()
        .expect("run the source step");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("SECRET-TOKEN") && !String::from_utf8_lossy(&out.stdout).contains("SECRET"), "{err}");
    assert!(err.contains("debian/changelog leads out of the source tree"), "the error names the file: {err}");
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// Guessing tokens costs the master almost nothing: guesses with a real
/// token id and made-up secrets are refused without the slow hash, past
/// thirty from one address as too many, its memory stays bounded, and the
/// real token still answers (from the same address).
#[tokio::test(flavor = "multi_thread")]
async fn a_storm_of_made_up_tokens_costs_the_master_little() {
    let farm = Farm::running(KILN.as_ref(), ONE_WORKER, &[], "w1", &["t"], 1).await;
    let made = farm
        .client()
        .add_user(&kiln_proto::api::NewUser { email: "ann@example.org".into(), permissions: vec!["own_jobs".into()] })
        .await
        .expect("user");
    let pid = farm.master_pid().expect("master");
    let before = rss_kib(pid);
    let url = format!("{}/api/v1/builds", farm.url());
    let http = reqwest::Client::new();
    let guess = |i: usize| {
        let (http, url) = (http.clone(), url.clone());
        let token = format!("kiln_{}_{:0>43}", made.id, i);
        async move {
            let body = serde_json::json!({ "components": ["nothing"] });
            http.post(&url).bearer_auth(token).json(&body).send().await.map(|r| r.status().as_u16())
        }
    };
    // Thirty wrong guesses are each refused as wrong...
    for i in 0..30 {
        assert_eq!(guess(i).await.expect("answered"), 401);
    }
    // ...and the next 370, at once, as too many from this address.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 30..400 {
        tasks.spawn(guess(i));
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        *statuses.entry(r.expect("task").expect("answered")).or_insert(0) += 1;
    }
    assert_eq!(statuses, std::collections::BTreeMap::from([(429, 370)]), "failures are throttled per address");
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(grown < 100 * 1024, "the master grew by {grown} KiB answering guesses");
    // The real token still works.
    let ann = kiln_client::Client::new(&farm.url(), Some(made.token.clone())).expect("client");
    ann.builds(&Default::default()).await.expect("a real request answers");
}

/// A request body that stops arriving ends its request after the
/// configured client timeout; the master keeps answering others.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_request_body_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = format!("[master]\nheader_timeout = \"1s\"\n{ONE_WORKER}");
    let farm = Farm::running(KILN.as_ref(), &config, &[], "w1", &["t"], 1).await;
    let addr = farm.url().trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/builds HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"components\":",
        farm.admin_token()
    );
    conn.write_all(head.as_bytes()).await.expect("send head");
    // Then nothing: the master ends the request (an error answer, or the
    // connection closed) instead of waiting for ever.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the stalled request was still open after 20 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.is_empty() || !text.starts_with("HTTP/1.1 2"), "{text}");
    farm.client().status().await.expect("the master still answers");
}

/// With `[uploads] require_signature`, only a source upload clear-signed by
/// a key of the uploaders keyring is accepted, and its signer is recorded
/// as who asked; unsigned uploads and strangers' signatures are refused
/// with the reason. Keys and signatures are made by real gpg.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_must_be_signed_by_a_known_uploader() {
    use kiln_testing::run;
    use sha2::Digest;
    let config = r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "debian-12-amd64"
family = "deb"
suite = "bookworm"

[uploads]
keyring = "keys/uploaders.asc"
require_signature = true
"#;
    let scratch = tempfile::tempdir().expect("tmp");
    let gpg = |home: &str, args: &[&str]| {
        let dir = scratch.path().join(home);
        std::fs::create_dir_all(&dir).expect("gnupg home");
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
        let mut cmd = std::process::Command::new("gpg");
        cmd.env("GNUPGHOME", &dir).args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""]).args(args);
        let (code, out, err) = run(&mut cmd).expect("gpg");
        assert_eq!(code, 0, "gpg {args:?}: {err}");
        out
    };
    gpg("jane", &["--quick-gen-key", "Jane Doe <jane@example.org>", "ed25519", "sign", "never"]);
    gpg("eve", &["--quick-gen-key", "Eve <eve@example.org>", "ed25519", "sign", "never"]);
    let keyring = gpg("jane", &["--armor", "--export", "jane@example.org"]);
    let mut farm = Farm::new(KILN.as_ref(), config, &[("keys/uploaders.asc", &keyring)]);
    farm.start_master().await;

    let dir = scratch.path().join("upload");
    std::fs::create_dir_all(&dir).expect("dir");
    let tarball = b"kiln signed upload test\n";
    std::fs::write(dir.join("kiln-signed_1.0.tar.xz"), tarball).expect("tarball");
    let sha = hex::encode(sha2::Sha256::digest(tarball));
    let (_, md5, _) =
        run(std::process::Command::new("md5sum").arg(dir.join("kiln-signed_1.0.tar.xz"))).expect("md5sum");
    let md5 = md5.split_whitespace().next().expect("sum").to_string();
    let dsc = format!(
        "Format: 3.0 (native)\nSource: kiln-signed\nBinary: kiln-signed\nArchitecture: all\nVersion: 1.0\n\
         Checksums-Sha256:\n {sha} {n} kiln-signed_1.0.tar.xz\nFiles:\n {md5} {n} kiln-signed_1.0.tar.xz\n",
        n = tarball.len()
    );
    let plain = dir.join("plain.txt");
    std::fs::write(&plain, &dsc).expect("dsc text");
    let signed_by = |who: &str| {
        let out = dir.join(format!("{who}.asc"));
        let _ = std::fs::remove_file(&out);
        gpg(who, &["--clearsign", "--output", out.to_str().expect("path"), plain.to_str().expect("path")]);
        std::fs::read_to_string(out).expect("signed")
    };
    let dsc_path = dir.join("kiln-signed_1.0.dsc");
    let upload = |text: &str| {
        std::fs::write(&dsc_path, text).expect("write dsc");
        run(farm.kiln().arg("upload").arg(&dsc_path)).expect("kiln upload")
    };
    let (code, _, err) = upload(&dsc);
    assert_eq!(code, 1, "an unsigned upload is refused");
    assert!(err.contains("is not signed"), "{err}");
    let (code, _, err) = upload(&signed_by("eve"));
    assert_eq!(code, 1, "a stranger's signature is refused");
    assert!(err.contains("not in the uploaders keyring"), "{err}");
    let (code, out, err) = upload(&signed_by("jane"));
    assert_eq!(code, 0, "{out}{err}");
    let page = farm.client().builds(&Default::default()).await.expect("builds");
    assert_eq!(page.builds.len(), 1, "one build, of the signed upload: {page:?}");
    let who = page.builds[0].requested_by.clone().unwrap_or_default();
    assert!(who.starts_with("Jane Doe <jane@example.org> (signed upload"), "{who}");
}
