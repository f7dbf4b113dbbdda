//! Notifications: finished builds reported to a webhook, signed with a
//! shared secret.

use kiln_core::BuildState;
use kiln_testing::{request, Farm, ONE_WORKER};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

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
