//! Running a farm for years: Prometheus scrapes the master and a worker
//! (and `promtool` finds their exposition clean), and the master tells a
//! service manager when it is ready and when it reloads.

use kiln_testing::{free_addr, request, run, wait_for, Farm, MAKE_DEB, ONE_WORKER};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn config() -> String {
    format!("{ONE_WORKER}\n[[component]]\nname = \"c\"\nsteps = [ {{ name = \"hello\", run = \"echo hello\" }} ]\n")
}

/// A process stopped when the test ends, however it ends.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `promtool check metrics` on an exposition: its exit code and what it said.
fn promtool_check(text: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), said)
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_the_master_and_a_worker() {
    let mut farm = Farm::new(KILN.as_ref(), &config(), &[]);
    farm.start_master().await;
    let worker_metrics = free_addr();
    farm.start_worker_with("w1", &["t"], 2, &["--metrics", &worker_metrics.to_string()]);
    farm.wait_for_workers(&["w1"]).await;
    let client = farm.client();
    let id = client.create_builds(&request(&["c"], &[])).await.expect("create").builds[0].id;
    let b = farm.wait_finished(id, Duration::from_secs(60)).await;
    assert_eq!(b.state, kiln_core::BuildState::Succeeded, "{}", farm.master_log());

    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.expect("GET");
            assert_eq!(r.status(), 200);
            let kind = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
            r.text().await.expect("body")
        }
    };
    // Counted as the build ends (the finish is reported just after it is recorded).
    let wanted = "kiln_builds_finished_total{component=\"c\",target=\"t\",state=\"succeeded\"} 1\n";
    let mut master = String::new();
    for _ in 0..100 {
        master = get(format!("{}/metrics", farm.url())).await;
        if master.contains(wanted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(master.contains(wanted), "{master}");
    let (code, said) = promtool_check(&master);
    assert_eq!(code, 0, "promtool check metrics on the master's:\n{said}\n{master}");
    for expected in [
        "kiln_workers_connected 1\n",
        "kiln_worker_slots{worker=\"w1\"} 2\n",
        "kiln_builds_queued{target=\"t\"} 0\n",
        "kiln_build_duration_seconds_count{target=\"t\"} 1\n",
        "kiln_queue_wait_seconds_count{target=\"t\"} 1\n",
        "kiln_database_call_duration_seconds_count{call=\"claim\"}",
        "kiln_dispatch_pass_duration_seconds_count",
        "kiln_data_dir_free_bytes",
    ] {
        assert!(master.contains(expected), "no {expected:?} in\n{master}");
    }
    // The build's output ("hello\n") was received.
    let log_bytes: f64 = master
        .lines()
        .find_map(|l| l.strip_prefix("kiln_log_received_bytes_total "))
        .and_then(|v| v.parse().ok())
        .expect("log bytes counted");
    assert!(log_bytes >= 6.0, "{master}");

    let worker = get(format!("http://{worker_metrics}/metrics")).await;
    let (code, said) = promtool_check(&worker);
    assert_eq!(code, 0, "promtool check metrics on the worker's:\n{said}\n{worker}");
    assert!(
        worker.contains("kiln_worker_step_duration_seconds_count{step=\"hello\",state=\"succeeded\"} 1\n"),
        "{worker}"
    );
    assert!(worker.contains("kiln_worker_build_slots 2\n"), "{worker}");
    let r = http.get(format!("http://{worker_metrics}/other")).send().await.expect("GET");
    assert_eq!(r.status(), 404);

    // A real Prometheus scrapes both and answers a query.
    let prom_dir = farm.path("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("prometheus dir");
    let prom_config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: kiln-master\n    static_configs:\n      - targets: ['{}']\n  - job_name: kiln-worker\n    static_configs:\n      - targets: ['{worker_metrics}']\n",
            farm.http
        ),
    )
    .expect("write prometheus.yml");
    let prom_addr = free_addr();
    let log = std::fs::File::create(prom_dir.join("log")).expect("log");
    let _prometheus = Stopped(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!("--storage.tsdb.path={}", prom_dir.join("data").display()))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's package)"),
    );
    let query = |q: &'static str| {
        let http = http.clone();
        async move {
            let r = http.get(format!("http://{prom_addr}/api/v1/query")).query(&[("query", q)]).send().await.ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            v["data"]["result"][0]["value"][1].as_str().map(str::to_string)
        }
    };
    let answered =
        wait_for(Duration::from_secs(60), || async { query("kiln_workers_connected").await.as_deref() == Some("1") })
            .await;
    let prom_log = std::fs::read_to_string(prom_dir.join("log")).unwrap_or_default();
    assert!(answered, "Prometheus never answered kiln_workers_connected = 1:\n{prom_log}");
    let slots = wait_for(Duration::from_secs(60), || async {
        query("kiln_worker_build_slots{job=\"kiln-worker\"}").await.as_deref() == Some("2")
    })
    .await;
    assert!(slots, "Prometheus never scraped the worker");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_master_tells_its_service_manager_it_is_ready_and_reloading() {
    let mut farm = Farm::new(KILN.as_ref(), &config(), &[]);
    let socket_path = farm.path("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    farm.start_master_with(None, &[("NOTIFY_SOCKET", socket_path.to_str().expect("utf8"))]).await;
    let socket = std::sync::Arc::new(socket);
    let recv = |socket: std::sync::Arc<std::os::unix::net::UnixDatagram>| async move {
        tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 512];
            let n = socket.recv(&mut buf).expect("a message from the master");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .await
        .expect("receive")
    };
    let ready = recv(socket.clone()).await;
    assert!(ready.starts_with("READY=1\nSTATUS=serving on http://"), "{ready}");
    farm.hup_master();
    assert_eq!(recv(socket.clone()).await, "RELOADING=1");
    assert_eq!(recv(socket.clone()).await, "READY=1");
    // `kiln checkconfig` and the running master agree the config is good.
    let (code, out, _) = run(Command::new(KILN).arg("checkconfig").arg(&farm.config)).expect("checkconfig");
    assert_eq!(code, 0, "{out}");
}

/// A farm whose `tool` builds make a `.deb` that a `dev` channel keeping
/// `keep` versions per package publishes; `extra` is added to the config.
fn deb_farm(keep: u32, extra: &str) -> String {
    format!(
        r#"[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "debian-12-amd64"
family = "deb"
suite = "bookworm"
arch = "amd64"

[[component]]
name = "tool"
steps = [ {{ name = "package", run = '''{MAKE_DEB}''' }} ]
artifacts = ["*.deb"]

[[channel]]
name = "dev"
accepts = "nightly"
keep = {keep}

{extra}"#
    )
}

/// Every file under `dir`, dated back `ago` (as if stored long before).
fn backdate(dir: &std::path::Path, ago: Duration) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            backdate(&p, ago);
        } else {
            let f = std::fs::File::options().write(true).open(&p).expect("open");
            f.set_modified(std::time::SystemTime::now() - ago).expect("set mtime");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_keeps_the_newest_builds_pinned_ones_and_every_published_file() {
    let config = deb_farm(1, "[retention]\nkeep_last = 2\ndaily_at = \"off\"\n");
    let farm = Farm::running(KILN.as_ref(), &config, &[], "w1", &["debian-12-amd64"], 1).await;
    let client = farm.client();
    // Build 1 publishes a package of its own, which stays in the channel;
    // the others publish versions of one package the channel keeps one of.
    let mut ids = Vec::new();
    for i in 0..5 {
        let props: &[(&str, &str)] = if i == 0 { &[("pkg", "kiln-other")] } else { &[] };
        let id = client.create_builds(&request(&["tool"], props)).await.expect("create").builds[0].id;
        let b = farm.wait_finished(id, Duration::from_secs(120)).await;
        assert_eq!(b.state, kiln_core::BuildState::Succeeded, "{}", farm.master_log());
        ids.push(id);
    }
    let mut blobs = Vec::new();
    for id in &ids {
        let b = client.build(*id).await.expect("build");
        let sha = &b.artifacts.first().expect("an artifact").sha256;
        blobs.push(farm.path(&format!("data/artifacts/{}/{sha}", &sha[..2])));
    }
    let logs = |id: i64| farm.path(&format!("data/logs/{id}"));
    assert!(ids.iter().all(|id| logs(*id).is_dir()) && blobs.iter().all(|b| b.is_file()));
    // As if stored an hour ago: content stored in the last minutes is left alone.
    backdate(&farm.path("data/artifacts"), Duration::from_secs(3600));
    // Content nothing names (a retried build's first upload), old and new.
    let orphan = |sha: &str| farm.path(&format!("data/artifacts/{}/{sha}", &sha[..2]));
    let (old_orphan, new_orphan) = (orphan(&"ab".repeat(32)), orphan(&"cd".repeat(32)));
    for o in [&old_orphan, &new_orphan] {
        std::fs::create_dir_all(o.parent().expect("parent")).expect("dir");
        std::fs::write(o, "left behind").expect("orphan");
    }
    backdate(old_orphan.parent().expect("parent"), Duration::from_secs(3600));
    // A mirror of a repository no component builds from any more, days old.
    let stale_mirror = farm.path("data/git/0123456789abcdef0123.git");
    std::fs::create_dir_all(&stale_mirror).expect("mirror");
    std::fs::write(stale_mirror.join("HEAD"), "ref: refs/heads/main\n").expect("HEAD");
    let (code, _, err) = run(Command::new("touch").args(["-d", "3 days ago"]).arg(&stale_mirror)).expect("touch");
    assert_eq!(code, 0, "{err}");

    // A dry run says what would go and removes nothing.
    let (code, out, err) = run(farm.kiln().args(["gc", "--dry-run"])).expect("kiln gc --dry-run");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("would free") && out.contains("3 builds lose their logs and artifacts"), "{out}");
    assert!(ids.iter().all(|id| logs(*id).is_dir()) && blobs.iter().all(|b| b.is_file()));

    let (code, out, err) = run(farm.kiln().arg("gc")).expect("kiln gc");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("freed") && out.contains("3 builds lose"), "{out}");
    assert!(!stale_mirror.exists(), "the unnamed mirror went");
    assert!(!old_orphan.exists(), "content nothing names goes");
    assert!(new_orphan.exists(), "content stored minutes ago stays (its row may be on its way)");
    assert!(out.lines().any(|l| l.starts_with("mirrors") && l.split_whitespace().nth(1) == Some("1")), "{out}");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(logs(*id).exists(), i >= 3, "build {id}'s logs");
    }
    assert!(blobs[0].is_file(), "build 1's package is still published: its file stays");
    assert!(!blobs[1].exists() && !blobs[2].exists(), "builds 2 and 3's packages left the channel");
    assert!(blobs[3].is_file() && blobs[4].is_file());
    // The builds stay as history; their logs and artifacts are gone, and say so.
    let pruned = client.build(ids[1]).await.expect("build 2");
    assert_eq!(pruned.state, kiln_core::BuildState::Succeeded);
    let gone = client.log(ids[1], "package", 0).await.expect_err("the log is gone");
    assert!(gone.to_string().contains("removed by the retention rules"), "{gone}");
    let dl = farm.path("downloads");
    std::fs::create_dir_all(&dl).expect("dir");
    let gone = client.download(&pruned.artifacts[0], &dl).await.expect_err("the artifact is gone");
    assert!(gone.to_string().contains("removed by the retention rules"), "{gone}");

    // A pinned build keeps its files when newer builds push it out.
    let (code, out, err) = run(farm.kiln().args(["pin", &ids[3].to_string()])).expect("kiln pin");
    assert_eq!(code, 0, "{out}{err}");
    for _ in 0..2 {
        let id = client.create_builds(&request(&["tool"], &[])).await.expect("create").builds[0].id;
        farm.wait_finished(id, Duration::from_secs(120)).await;
    }
    backdate(&farm.path("data/artifacts"), Duration::from_secs(3600));
    let report = client.gc(false).await.expect("gc");
    assert_eq!(report.builds_pruned, 1, "{report:?}");
    assert!(logs(ids[3]).is_dir() && blobs[3].is_file(), "the pinned build keeps its files");
    assert!(!logs(ids[4]).exists(), "build 5 now has two newer builds");
    // Pinning a build whose files are gone is refused, and says why.
    let refused = client.pin(ids[1], true).await.expect_err("already pruned");
    assert!(refused.to_string().contains("already removed"), "{refused}");
    // Only a server admin collects.
    let anonymous = farm.anonymous().gc(true).await.expect_err("no token");
    assert!(
        anonymous.to_string().contains("401") || anonymous.to_string().to_lowercase().contains("token"),
        "{anonymous}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_backup_serves_the_same_builds_repository_bytes_and_keys() {
    let mut farm = Farm::running(KILN.as_ref(), &deb_farm(1, ""), &[], "w1", &["debian-12-amd64"], 1).await;
    let client = farm.client();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = client.create_builds(&request(&["tool"], &[])).await.expect("create").builds[0].id;
        let b = farm.wait_finished(id, Duration::from_secs(120)).await;
        assert_eq!(b.state, kiln_core::BuildState::Succeeded, "{}", farm.master_log());
        ids.push(id);
    }
    let http = reqwest::Client::new();
    let base = farm.url();
    let fetch = |path: String| {
        let http = http.clone();
        async move {
            let r = http.get(path).send().await.expect("GET");
            assert_eq!(r.status(), 200, "{}", r.url());
            r.bytes().await.expect("body").to_vec()
        }
    };
    let served = [
        format!("{base}/repos/dev/key.asc"),
        format!("{base}/repos/dev/apt/dists/bookworm/InRelease"),
        format!("{base}/repos/dev/apt/dists/bookworm/main/binary-amd64/Packages"),
    ];
    let mut before = Vec::new();
    for url in &served {
        before.push(fetch(url.clone()).await);
    }
    let builds_before = client.build(ids[1]).await.expect("build");

    // Backed up while the master runs.
    let backup = farm.path("backup");
    let (code, out, err) =
        run(farm.kiln().arg("backup").arg(&backup).arg("--config").arg(&farm.config)).expect("kiln backup");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("the database included"), "{out}");
    let manifest = std::fs::read_to_string(backup.join("MANIFEST")).expect("manifest");
    assert!(manifest.lines().any(|l| l.ends_with(" kiln.db")), "{manifest}");

    // The data dir is lost; a restore refuses a damaged backup, then brings it back.
    farm.kill_master();
    std::fs::remove_dir_all(farm.path("data")).expect("wipe the data dir");
    let db = backup.join("kiln.db");
    let original = std::fs::read(&db).expect("db copy");
    let mut damaged = original.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    std::fs::write(&db, &damaged).expect("damage");
    let (code, _, err) =
        run(farm.kiln().arg("restore").arg(&backup).arg("--config").arg(&farm.config)).expect("kiln restore");
    assert_ne!(code, 0);
    assert!(err.contains("does not match its checksum") && err.contains("nothing was restored"), "{err}");
    assert!(!farm.path("data").exists() || std::fs::read_dir(farm.path("data")).expect("dir").next().is_none());
    std::fs::write(&db, &original).expect("repair");
    let (code, out, err) =
        run(farm.kiln().arg("restore").arg(&backup).arg("--config").arg(&farm.config)).expect("kiln restore");
    assert_eq!(code, 0, "{out}{err}");
    // Never over a farm's data.
    let (code, _, err) =
        run(farm.kiln().arg("restore").arg(&backup).arg("--config").arg(&farm.config)).expect("kiln restore");
    assert_ne!(code, 0);
    assert!(err.contains("is not empty"), "{err}");

    farm.start_master().await;
    let client = farm.client();
    let after = client.build(ids[1]).await.expect("the build, restored");
    assert_eq!(
        (after.id, after.state, after.component.clone()),
        (builds_before.id, builds_before.state, builds_before.component.clone())
    );
    assert_eq!(after.artifacts, builds_before.artifacts);
    for (url, bytes) in served.iter().zip(&before) {
        assert_eq!(&fetch(url.clone()).await, bytes, "{url} differs after the restore");
    }
    // The artifacts download as before.
    let dl = farm.path("downloads");
    std::fs::create_dir_all(&dl).expect("dir");
    client.download(&after.artifacts[0], &dl).await.expect("download a restored artifact");
}

/// The farm of `fixtures/farm-schema-12.tar.gz`: its data dir as the kiln
/// before retention (database schema 12) left it, after two builds of
/// `tool` published into `dev`. See `fixtures/README.md`.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_made_by_the_previous_kiln_is_upgraded_and_served() {
    let mut farm = Farm::new(KILN.as_ref(), &deb_farm(2, ""), &[]);
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/farm-schema-12.tar.gz");
    std::fs::create_dir_all(farm.path("data")).expect("data dir");
    let (code, _, err) =
        run(Command::new("tar").arg("-xzf").arg(&fixture).arg("-C").arg(farm.path("data"))).expect("tar");
    assert_eq!(code, 0, "{err}");
    let inrelease_on_disk = std::fs::read(farm.path("data/repos/dev/current/apt/dists/bookworm/InRelease"))
        .expect("the fixture's InRelease");

    let (code, out, err) = run(farm.kiln().arg("upgrade").arg("--config").arg(&farm.config)).expect("kiln upgrade");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied 2 migration"), "{out}");
    let (_, again, _) = run(farm.kiln().arg("upgrade").arg("--config").arg(&farm.config)).expect("kiln upgrade");
    assert!(again.contains("applied 0 migration"), "a second upgrade has nothing to do: {again}");

    farm.start_master().await;
    let client = farm.client();
    for id in [1, 2] {
        assert_eq!(client.build(id).await.expect("an old build").state, kiln_core::BuildState::Succeeded);
    }
    let http = reqwest::Client::new();
    let base = farm.url();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move { http.get(url).send().await.expect("GET").bytes().await.expect("body").to_vec() }
    };
    assert_eq!(get("/repos/dev/apt/dists/bookworm/InRelease").await, inrelease_on_disk, "served as signed before");
    let packages =
        String::from_utf8(get("/repos/dev/apt/dists/bookworm/main/binary-amd64/Packages").await).expect("utf8");
    assert!(packages.contains("Version: 1.0~b1") && packages.contains("Version: 1.0~b2"), "{packages}");

    // It builds and publishes on: the new build's version joins the channel.
    farm.start_worker("w1", &["debian-12-amd64"], 1);
    farm.wait_for_workers(&["w1"]).await;
    let id = client.create_builds(&request(&["tool"], &[])).await.expect("create").builds[0].id;
    assert_eq!(id, 3);
    let b = farm.wait_finished(id, Duration::from_secs(120)).await;
    assert_eq!(b.state, kiln_core::BuildState::Succeeded, "{}", farm.master_log());
    let packages =
        String::from_utf8(get("/repos/dev/apt/dists/bookworm/main/binary-amd64/Packages").await).expect("utf8");
    assert!(packages.contains("Version: 1.0~b3") && !packages.contains("Version: 1.0~b1"), "{packages}");
    // The new retention columns are there.
    let report = client.gc(true).await.expect("gc on the upgraded database");
    assert_eq!(report.builds_pruned, 0);
}
