//! Hostile input against a real master: path traversal in artifact, log
//! and upload names, oversized bodies, absurd properties, invalid UTF-8 in
//! logs and a client too slow to send its headers. Each gets a clear 4xx
//! (or a closed connection), and nothing is written where it should not be.

use kiln_core::BuildState;
use kiln_proto::api::BuildRequestBody;
use kiln_testing::{Farm, ONE_WORKER};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_clear_errors_and_change_nothing() {
    let config = format!(
        "[master]\nheader_timeout = \"1s\"\n{ONE_WORKER}\n\
         [hooks.github]\nsecret_file = \"secrets/github.secret\"\n\
         [[component]]\nname = \"bytes\"\n\
         steps = [{{ name = \"emit\", run = \"printf 'bad \\\\377\\\\376 bytes\\\\nok\\\\n'; echo made > out.txt\" }}]\n\
         artifacts = [\"out.txt\"]\n"
    );
    let farm = Farm::running(KILN.as_ref(), &config, &[("secrets/github.secret", "s3cret\n")], "w1", &["t"], 1).await;
    let client = farm.client();
    let base = farm.url();
    let token = farm.admin_token();
    let http = reqwest::Client::new();

    // A build whose step prints bytes that are not UTF-8: the log is served, the build succeeds.
    let id = client
        .create_builds(&BuildRequestBody { components: vec!["bytes".into()], ..Default::default() })
        .await
        .expect("create")
        .builds[0]
        .id;
    let b = farm.wait_finished(id, Duration::from_secs(30)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    let log = client.log(id, "emit", 0).await.expect("log").data;
    assert!(log.starts_with("bad ") && log.ends_with(" bytes\nok\n"), "{log:?}");

    // Path traversal in artifact and step names: looked up by name, never joined to a path.
    for path in [
        format!("/api/v1/builds/{id}/artifacts/..%2F..%2F..%2Fetc%2Fpasswd"),
        format!("/api/v1/builds/{id}/artifacts/%2Fetc%2Fpasswd"),
        format!("/api/v1/builds/{id}/steps/..%2F..%2Fkiln.db/log"),
        "/repos/dev/..%2F..%2Fadmin.token".to_string(),
        "/repos/..%2Fdata/kiln.db".to_string(),
    ] {
        let resp = http.get(format!("{base}{path}")).send().await.expect("get");
        let status = resp.status().as_u16();
        let body = resp.text().await.expect("body");
        assert!((400..500).contains(&status), "{path}: {status} {body}");
        assert!(!body.contains("root:") && !body.contains(&token), "{path} leaked something");
    }

    // An upload whose file name climbs out: refused, nothing written there.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"Format: 3.0 (native)\n".to_vec()).file_name("../../escape.dsc"),
    );
    let resp =
        http.post(format!("{base}/api/v1/uploads")).bearer_auth(&token).multipart(form).send().await.expect("up");
    assert_eq!(resp.status().as_u16(), 400);
    let text = resp.text().await.expect("body");
    assert!(text.contains("invalid file name"), "{text}");
    assert!(!farm.path("escape.dsc").exists() && !farm.path("data/escape.dsc").exists());

    // Oversized bodies: 413, nothing queued.
    let before = client.builds(&Default::default()).await.expect("builds").builds.len();
    let huge = "x".repeat(2 * 1024 * 1024);
    let body = serde_json::json!({ "components": ["bytes"], "properties": { "note": huge } });
    let resp = http.post(format!("{base}/api/v1/builds")).bearer_auth(&token).json(&body).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 413);
    let resp = http
        .post(format!("{base}/change_hook/github"))
        .header("x-github-event", "push")
        .body(vec![b'{'; 6 * 1024 * 1024])
        .send()
        .await;
    // Refused with 413 once the body is in, whatever the client's timing.
    assert_eq!(resp.expect("an answer, not a reset connection").status().as_u16(), 413);

    // Absurd property names and values, malformed JSON: 400 with the reason.
    for (props, want) in [
        (serde_json::json!({ "../../x": "1" }), "property"),
        (serde_json::json!({ "": "1" }), "property"),
        (serde_json::json!({ "ok": "a\u{0}b" }), "property"),
    ] {
        let body = serde_json::json!({ "components": ["bytes"], "properties": props });
        let resp =
            http.post(format!("{base}/api/v1/builds")).bearer_auth(&token).json(&body).send().await.expect("post");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        assert_eq!(status, 400, "{props}: {text}");
        assert!(text.contains(want), "{text}");
    }
    let resp = http
        .post(format!("{base}/api/v1/builds"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"components\": [\"bytes\"")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(client.builds(&Default::default()).await.expect("builds").builds.len(), before, "nothing was queued");

    // A client that never finishes its headers is cut off (header_timeout = 1s).
    let mut slow = tokio::net::TcpStream::connect(farm.http).await.expect("connect");
    slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the master kept a slow client's connection open");
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // And the master still answers everyone else.
    assert!(client.status().await.is_ok());
}
