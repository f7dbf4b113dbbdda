//! Several masters on one PostgreSQL database and one data dir, as real
//! processes: workers given every master's address, builds submitted
//! through all of them, a master killed with `kill -9` or paused past its
//! lease in the middle. Every build must run exactly once (a ledger the
//! steps append to) and succeed.

use kiln_client::{BuildQuery, Client};
use kiln_core::BuildState;
use kiln_testing::{request, run, wait_for, Farm, PgSchema, MAKE_DEB};
use std::collections::HashMap;
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Four workers with two slots each, a trivial `job` that appends its build
/// id to the ledger its `ledger` property names, and a package `lib` (into
/// channel `dev`) with a dependent `app` that checks it was published.
///
/// A worker `w5` or `w6` serves only target `h`, where component `hold`
/// runs until the test lets it go: the way to have a build running on a
/// chosen master (a worker starts on master `sum of its name's bytes` mod
/// the number of masters: `w5` on the second of three, `w6` on the second
/// of two).
fn config(url: &str) -> String {
    let workers: String =
        (1..=6).map(|i| format!("[[worker]]\nname = \"w{i}\"\ntoken_file = \"secrets/w{i}.token\"\n\n")).collect();
    format!(
        r#"[master]
database = "{url}"
# A silent master is fenced within about 1.7 leases; its workers move after
# half their fence (two thirds of worker_timeout) and must be taken over
# before the fence stops their builds: room for that on a loaded machine.
lease = "2s"
worker_timeout = "9s"

{workers}
[[target]]
name = "t"
family = "deb"
suite = "bookworm"
arch = "amd64"

[[component]]
name = "job"
targets = ["t"]
steps = [ {{ name = "run", run = "echo ran $KILN_BUILD_ID; echo $KILN_BUILD_ID >> %(prop:ledger)s; sleep 0.1" }} ]

[[target]]
name = "h"
family = "deb"

[[component]]
name = "hold"
targets = ["h"]
steps = [ {{ name = "hold", run = "echo held $KILN_BUILD_ID; echo $KILN_BUILD_ID >> %(prop:ledger)s; while [ ! -e %(prop:ledger)s.go ]; do sleep 0.05; done" }} ]

[[component]]
name = "lib"
targets = ["t"]
properties = {{ pkg = "kiln-mlib" }}
steps = [ {{ name = "package", run = '''{MAKE_DEB}''' }} ]
artifacts = ["*.deb"]

[[component]]
name = "app"
targets = ["t"]
depends_on = ["lib"]
steps = [ {{ name = "check", run = 'set -- $KILN_APT_SOURCE; curl -fsS "$1/dists/$2/main/binary-amd64/Packages" | grep "^Package: kiln-mlib"' }} ]

[[channel]]
name = "dev"
accepts = "nightly"
"#
    )
}

/// Starts the farm's first master and `peers` more, then its four workers
/// (given every master), and waits until each worker is connected to one.
async fn start(farm: &mut Farm, peers: usize) -> Vec<Client> {
    farm.start_master().await;
    for _ in 0..peers {
        let n = farm.add_peer();
        farm.start_peer(n).await;
    }
    for w in ["w1", "w2", "w3", "w4"] {
        farm.start_worker(w, &["t"], 2);
    }
    let clients: Vec<Client> = std::iter::once(farm.client()).chain((0..peers).map(|n| farm.peer_client(n))).collect();
    let all = wait_for(Duration::from_secs(30), || async { connected(&clients).await.len() == 4 }).await;
    assert!(all, "the workers did not all connect: {:?}", connected(&clients).await);
    clients
}

/// Which master (by index) each connected worker talks to, as each master
/// says of its own connections.
async fn connected(clients: &[Client]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (i, c) in clients.iter().enumerate() {
        let Ok(me) = c.status().await.map(|s| s.master) else { continue };
        for w in c.workers().await.unwrap_or_default().into_iter().filter(|w| w.connected && w.master == me) {
            out.insert(w.name, i);
        }
    }
    out
}

/// Starts hold worker `worker` and a `hold` build on it, which runs (and
/// stays running) under master `master`; returns the build's id.
async fn hold_on(farm: &mut Farm, clients: &[Client], worker: &str, master: usize, ledger: &std::path::Path) -> i64 {
    farm.start_worker(worker, &["h"], 1);
    let on =
        wait_for(Duration::from_secs(30), || async { connected(clients).await.get(worker) == Some(&master) }).await;
    assert!(on, "{worker} is not on master {master}: {:?}", connected(clients).await);
    let ledger = ledger.to_str().expect("utf8 path");
    let id =
        clients[master].create_builds(&request(&["hold"], &[("ledger", ledger)])).await.expect("create").builds[0].id;
    let running = wait_for(Duration::from_secs(30), || async {
        clients[master].workers().await.is_ok_and(|ws| ws.iter().any(|w| w.name == worker && w.running == [id]))
    })
    .await;
    assert!(running, "build {id} did not start on {worker}");
    id
}

/// Submits `n` jobs round-robin through `clients`; returns their ids.
async fn submit(clients: &[&Client], ledger: &std::path::Path, n: usize) -> Vec<i64> {
    let ledger = ledger.to_str().expect("utf8 path");
    let mut ids = Vec::new();
    for i in 0..n {
        let c = clients[i % clients.len()];
        ids.push(c.create_builds(&request(&["job"], &[("ledger", ledger)])).await.expect("create").builds[0].id);
    }
    ids
}

/// The state of every build, read through `client` (one master answers for all).
async fn states(client: &Client) -> HashMap<i64, BuildState> {
    let mut out = HashMap::new();
    let mut before = None;
    loop {
        let q = BuildQuery { limit: Some(1000), before, ..Default::default() };
        let Ok(page) = client.builds(&q).await else { return out };
        for b in &page.builds {
            out.insert(b.id, b.state);
        }
        match page.next_before {
            Some(n) => before = Some(n),
            None => return out,
        }
    }
}

async fn wait_all_finished(farm: &Farm, client: &Client, ids: &[i64], within: Duration) -> HashMap<i64, BuildState> {
    let done = wait_for(within, || async {
        let s = states(client).await;
        ids.iter().all(|id| s.get(id).is_some_and(|st| st.is_finished()))
    })
    .await;
    let s = states(client).await;
    let left: Vec<_> = ids.iter().filter(|id| !s[id].is_finished()).collect();
    let peers: String = (0..farm.peers.len()).map(|n| farm.peer_log(n)).collect();
    assert!(done, "not all builds finished: {left:?}\n{}\n{peers}", farm.master_log());
    s
}

/// How many times each build id is in the ledger.
fn ledger_counts(ledger: &std::path::Path) -> HashMap<i64, usize> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(ledger).unwrap_or_default().lines() {
        *counts.entry(line.trim().parse::<i64>().expect("a build id")).or_default() += 1;
    }
    counts
}

fn assert_each_ran_once(farm: &Farm, ledger: &std::path::Path, ids: &[i64]) {
    let counts = ledger_counts(ledger);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let peers: String = (0..farm.peers.len()).map(|n| farm.peer_log(n)).collect();
    let workers: String = (1..=6).map(|i| farm.worker_log(&format!("w{i}"))).collect();
    assert!(twice.is_empty(), "builds that ran more than once: {twice:?}\n{}\n{peers}\n{workers}", farm.master_log());
    let missing: Vec<_> = ids.iter().filter(|id| !counts.contains_key(id)).collect();
    assert!(missing.is_empty(), "builds that never ran: {missing:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn three_masters_lose_no_build_and_run_none_twice_when_one_is_killed() {
    let pg = PgSchema::new("kiln_masters").await;
    let url = pg.url.clone();
    {
        let mut farm = Farm::new(KILN.as_ref(), &config(&url), &[]);
        let clients = start(&mut farm, 2).await;
        let ledger = farm.path("ledger");
        // The package and its dependent go through the master to be killed,
        // and a build runs on a worker connected to it when it dies.
        let doomed = 1;
        let held = hold_on(&mut farm, &clients, "w5", doomed, &ledger).await;
        let pkg = clients[doomed].create_builds(&request(&["lib", "app"], &[])).await.expect("create").builds;
        let (lib, app) = (pkg[0].id, pkg[1].id);
        let all: Vec<&Client> = clients.iter().collect();
        let mut ids = submit(&all, &ledger, 500).await;
        // Mid-run: a third of them done.
        let mid = wait_for(Duration::from_secs(120), || async { ledger_counts(&ledger).len() >= 150 }).await;
        assert!(mid, "the farm did not get going: {} in the ledger", ledger_counts(&ledger).len());
        let before_kill: Vec<i64> = {
            let s = states(&clients[0]).await;
            ids.iter().copied().filter(|id| s.get(id) == Some(&BuildState::Succeeded)).collect()
        };
        farm.kill_peer(doomed - 1);
        let survivors = [&clients[0], &clients[2]];
        // Its worker takes the held build to a survivor, which adopts it.
        let adopted = wait_for(Duration::from_secs(30), || async {
            clients[0].build(held).await.is_ok_and(|b| b.state == BuildState::Running)
                && (farm.master_log() + &farm.peer_log(1)).contains("adopted a running build its worker brought")
        })
        .await;
        assert!(adopted, "{}\n{}", farm.master_log(), farm.peer_log(1));
        // Every survivor shows the whole farm: the held build's log (written
        // by the dead master, then the adopter) and every worker, wherever
        // it is connected.
        for c in survivors {
            let log = c.log(held, "hold", 0).await.expect("log");
            assert!(log.data.contains(&format!("held {held}")), "{log:?}");
            let on: Vec<String> =
                c.workers().await.expect("workers").into_iter().filter(|w| w.connected).map(|w| w.name).collect();
            assert_eq!(on, ["w1", "w2", "w3", "w4", "w5"]);
        }
        std::fs::write(format!("{}.go", ledger.display()), "").expect("let the held build go");
        ids.push(held);
        let states_now =
            wait_all_finished(&farm, &clients[0], &[ids.clone(), vec![lib, app]].concat(), Duration::from_secs(300))
                .await;
        let failed: Vec<_> = states_now
            .iter()
            .filter(|(id, s)| **s != BuildState::Succeeded && (ids.contains(id) || **id == lib || **id == app))
            .collect();
        assert!(failed.is_empty(), "builds that did not succeed: {failed:?}\n{}", farm.master_log());
        assert_each_ran_once(&farm, &ledger, &ids);
        // The dependent started only once the package was published.
        let (lib_b, app_b) = (clients[2].build(lib).await.expect("lib"), clients[2].build(app).await.expect("app"));
        assert!(lib_b.properties.contains_key("published"), "{lib_b:?}");
        assert!(app_b.started_at >= lib_b.finished_at, "{app_b:?} started before {lib_b:?} ended");
        // The survivors serve what every master wrote: logs of builds of
        // all three, and the package's artifact.
        for id in before_kill.iter().take(30) {
            for c in survivors {
                let log = c.log(*id, "run", 0).await.expect("log");
                assert!(log.data.contains(&format!("ran {id}")), "{log:?}");
                assert_eq!(c.build(*id).await.expect("build").state, BuildState::Succeeded);
            }
        }
        let deb = lib_b.artifacts.iter().find(|a| a.name.ends_with(".deb")).expect("the package artifact");
        std::fs::create_dir_all(farm.path("download")).expect("download dir");
        let got = clients[2].download(deb, &farm.path("download")).await.expect("download through a survivor");
        assert!(std::fs::metadata(got).expect("downloaded").len() > 0);
        let status = clients[0].status().await.expect("status");
        let gone: Vec<_> = status.masters.iter().filter(|m| !m.alive).map(|m| m.address.clone()).collect();
        assert_eq!(gone, [farm.peers[doomed - 1].http.to_string()], "{:?}", status.masters);
        // The killed master comes back and takes its share again.
        farm.start_peer(doomed - 1).await;
        let back = wait_for(Duration::from_secs(30), || async {
            clients[0].status().await.is_ok_and(|s| s.masters.iter().all(|m| m.alive))
        })
        .await;
        assert!(back, "{:?}", clients[0].status().await.expect("status").masters);
        let more = submit(&[&clients[doomed]], &ledger, 20).await;
        let s = wait_all_finished(&farm, &clients[doomed], &more, Duration::from_secs(120)).await;
        assert!(more.iter().all(|id| s[id] == BuildState::Succeeded), "{s:?}");
        ids.extend(more);
        assert_each_ran_once(&farm, &ledger, &ids);
    }
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_master_paused_past_its_lease_changes_nothing_and_rejoins() {
    let pg = PgSchema::new("kiln_masters").await;
    let url = pg.url.clone();
    {
        let mut farm = Farm::new(KILN.as_ref(), &config(&url), &[]);
        let clients = start(&mut farm, 1).await;
        let ledger = farm.path("ledger");
        let held = hold_on(&mut farm, &clients, "w6", 1, &ledger).await;
        let mut ids = submit(&[&clients[0], &clients[1]], &ledger, 200).await;
        let mid = wait_for(Duration::from_secs(120), || async { ledger_counts(&ledger).len() >= 40 }).await;
        assert!(mid, "the farm did not get going");
        farm.pause_peer(0, true);
        // The first master fences the paused one once its lease (2 s) is over.
        let fenced = wait_for(Duration::from_secs(30), || async {
            clients[0].status().await.is_ok_and(|s| s.masters.iter().any(|m| !m.alive))
        })
        .await;
        assert!(fenced, "the paused master never showed as gone");
        let taken = wait_for(Duration::from_secs(30), || async {
            farm.master_log().contains("fenced it and took its running builds over")
        })
        .await;
        assert!(taken, "{}", farm.master_log());
        // The held build's worker left the silent master for the first one,
        // and the build goes on there (adopted, or taken over by the fence
        // first and resumed: whichever came first).
        let moved = wait_for(Duration::from_secs(30), || async {
            connected(&clients[..1]).await.get("w6") == Some(&0)
                && clients[0].workers().await.is_ok_and(|ws| ws.iter().any(|w| w.name == "w6" && w.running == [held]))
        })
        .await;
        assert!(moved, "{}", farm.master_log());
        farm.pause_peer(0, false);
        std::fs::write(format!("{}.go", ledger.display()), "").expect("let the held build go");
        ids.push(held);
        let s = wait_all_finished(&farm, &clients[0], &ids, Duration::from_secs(300)).await;
        assert!(ids.iter().all(|id| s[id] == BuildState::Succeeded), "{s:?}");
        assert_each_ran_once(&farm, &ledger, &ids);
        let rejoined = wait_for(Duration::from_secs(30), || async {
            farm.peer_log(0).contains("holding this master's lease again")
        })
        .await;
        assert!(rejoined, "{}", farm.peer_log(0));
        // It serves again, and builds submitted through it run.
        let more = submit(&[&clients[1]], &ledger, 10).await;
        let s = wait_all_finished(&farm, &clients[1], &more, Duration::from_secs(120)).await;
        assert!(more.iter().all(|id| s[id] == BuildState::Succeeded), "{s:?}");
        ids.extend(more);
        assert_each_ran_once(&farm, &ledger, &ids);
    }
    pg.drop().await;
}

/// `kiln upgrade` (and a master, which migrates at start) leaves the schema
/// alone while a live master knows only an older one, and no kiln runs
/// against a schema newer than it knows.
#[tokio::test(flavor = "multi_thread")]
async fn no_kiln_migrates_under_an_older_master_or_runs_on_a_newer_schema() {
    let farm = Farm::new(KILN.as_ref(), kiln_testing::ONE_WORKER, &[]);
    let upgrade = || run(std::process::Command::new(KILN).args(["upgrade", "--config"]).arg(&farm.config));
    let (code, _, err) = upgrade().expect("upgrade");
    assert_eq!(code, 0, "{err}");
    let latest = kiln_db::latest_schema_version();
    let store = kiln_db::Store::connect(&farm.sqlite_url()).await.expect("open");
    // A master of the previous kiln holds a lease; the schema is one behind.
    let now = kiln_testing::unix_micros_ago(Duration::ZERO);
    store
        .execute_raw(&format!(
            "INSERT INTO masters (id, address, epoch, started_at, heartbeat_at, schema_version) \
             VALUES ('old-host:8010', '10.0.0.9:8010', 1, {now}, {now}, {})",
            latest - 1
        ))
        .await
        .expect("lease");
    // The previous schema, as that master knows it: what migration 12 added is not there.
    store.execute_raw(&format!("DELETE FROM kiln_schema WHERE version = {latest}")).await.expect("behind");
    store.execute_raw("ALTER TABLE masters DROP COLUMN fenced_at").await.expect("drop column");
    let (code, _, err) = upgrade().expect("upgrade");
    assert_ne!(code, 0);
    assert!(err.contains(&format!("master old-host:8010 (schema {})", latest - 1)), "{err}");
    // A newer kiln migrated it: this one refuses to run.
    store
        .execute_raw(&format!(
            "INSERT INTO kiln_schema (version, description) VALUES ({latest}, 'back'), ({}, 'from the future')",
            latest + 1
        ))
        .await
        .expect("ahead");
    let (code, _, err) = upgrade().expect("upgrade");
    assert_ne!(code, 0);
    assert!(err.contains(&format!("newer than this kiln knows ({latest})")), "{err}");
    let (code, _, err) =
        run(std::process::Command::new(KILN).args(["master", "--allow-root", "--config"]).arg(&farm.config))
            .expect("master");
    assert_ne!(code, 0);
    assert!(err.contains("newer than this kiln knows"), "{err}");
    store.close().await;
}
