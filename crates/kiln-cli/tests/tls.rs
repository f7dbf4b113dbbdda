//! TLS: workers connecting over TLS, `kiln cert` CAs and certificates, a
//! master serving HTTPS, and certificates as worker and user logins.

use kiln_core::BuildState;
use kiln_proto::api::BuildRequestBody;
use kiln_testing::{one_job, run, submit_jobs, wait_for, Farm, LEDGER_JOB};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

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
