//! Users, permissions and tokens end to end: a real master and worker; users
//! made with `kiln user add`; every mutating endpoint tried by a user who
//! lacks its permission (403, nothing changed); tokens revoked; only
//! argon2 hashes stored.

use kiln_core::BuildState;
use kiln_proto::api::BuildRequestBody;
use kiln_testing::{run, wait_for, Farm, ONE_WORKER};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn config() -> String {
    format!(
        r#"{ONE_WORKER}
[[component]]
name = "sleepy"
steps = [{{ name = "wait", run = "sleep 120" }}]
"#
    )
}

/// `kiln user add` as the admin; returns the printed token.
fn add_user(farm: &Farm, email: &str, perms: &str) -> String {
    let mut cmd = farm.kiln();
    cmd.args(["user", "add", email]);
    if !perms.is_empty() {
        cmd.args(["--perm", perms]);
    }
    let (code, out, err) = run(&mut cmd).expect("kiln user add");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("for {email}; it is shown this once")), "{err}");
    out.trim().to_string()
}

/// A raw request with a token; returns the status and body.
async fn call(
    farm: &Farm,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, String) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", farm.url())).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// Logs in to the web with `token`; returns the session cookie and the
/// CSRF token of `page`, which must greet `who`.
fn sleepy() -> BuildRequestBody {
    BuildRequestBody { components: vec!["sleepy".into()], ..Default::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_mutation_needs_its_permission_and_tokens_are_hashed() {
    let farm = Farm::running(KILN.as_ref(), &config(), &[], "w1", &["t"], 4).await;
    let admin = farm.client();
    let ann = add_user(&farm, "ann@example.org", "own_jobs");
    let bob = add_user(&farm, "bob@example.org", "own_jobs");
    let carl = add_user(&farm, "carl@example.org", "");
    let kim = add_user(&farm, "kim@example.org", "kill_any_job");
    let mod_token = add_user(&farm, "mod@example.org", "modify_users");
    assert!(ann.starts_with("kiln_") && ann != bob);
    let (code, out, _) = run(farm.kiln().args(["user", "list"])).expect("kiln user list");
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("ann@example.org") && l.ends_with("own_jobs")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("carl@example.org") && l.ends_with("(read only)")), "{out}");
    let (code, _, err) = run(farm.kiln().args(["user", "add", "ann@example.org"])).expect("kiln user add");
    assert_ne!(code, 0);
    assert!(err.contains("user ann@example.org exists already (HTTP 409)"), "{err}");
    let (code, _, err) = run(farm.kiln().args(["user", "add", "ann@example.org", "--perm", "root"])).expect("add");
    assert_ne!(code, 0);
    assert!(err.contains("unknown permission \"root\""), "{err}");

    // Ann's build; Bob may not cancel it, Kim (kill_any_job) may.
    let ann_client = kiln_client::Client::new(&farm.url(), Some(ann.clone())).expect("client");
    let first = ann_client.create_builds(&sleepy()).await.expect("ann builds").builds[0].id;
    let b = admin.build(first).await.expect("build");
    assert_eq!(b.requested_by.as_deref(), Some("ann@example.org"));
    let bob_client = kiln_client::Client::new(&farm.url(), Some(bob.clone())).expect("client");
    let err = bob_client.cancel(first).await.expect_err("not Bob's");
    assert!(
        err.to_string().contains("bob@example.org lacks the kill_any_job permission this needs (HTTP 403)"),
        "{err}"
    );
    assert!(!admin.build(first).await.expect("build").state.is_finished());
    let kim_client = kiln_client::Client::new(&farm.url(), Some(kim.clone())).expect("client");
    kim_client.cancel(first).await.expect("kill_any_job cancels anyone's");
    let second = ann_client.create_builds(&sleepy()).await.expect("ann builds").builds[0].id;
    ann_client.cancel(second).await.expect("Ann cancels her own");
    for id in [first, second] {
        assert_eq!(farm.wait_finished(id, Duration::from_secs(30)).await.state, BuildState::Cancelled);
    }
    let running = admin.create_builds(&sleepy()).await.expect("admin builds").builds[0].id;

    // Carl (no permissions) tries every mutation: 403 each, nothing changes.
    let builds_before = admin.builds(&Default::default()).await.expect("builds").builds.len();
    let ann_tokens = ann_client.tokens(None).await.expect("Ann's tokens");
    let ann_token_id = ann_tokens[0].id;
    use reqwest::Method;
    let tries: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::POST, "/api/v1/builds".into(), Some(serde_json::json!({"components": ["sleepy"]}))),
        (Method::POST, format!("/api/v1/builds/{running}/cancel"), None),
        (
            Method::POST,
            "/api/v1/repos/promote".into(),
            Some(serde_json::json!({"name": "x", "version": "1", "from": "dev", "to": "stable"})),
        ),
        (Method::POST, "/api/v1/repos/dev/remove".into(), Some(serde_json::json!({"name": "x"}))),
        (Method::POST, "/api/v1/repos/dev/snapshots".into(), Some(serde_json::json!({"name": "s1"}))),
        (Method::POST, "/api/v1/repos/dev/rollback".into(), Some(serde_json::json!({"name": "s1"}))),
        (Method::POST, "/api/v1/repos/dev/resign".into(), None),
        (
            Method::POST,
            "/api/v1/repos/dev/advisories".into(),
            Some(serde_json::json!({"id": "X-1", "type": "bugfix", "title": "t", "packages": ["x"]})),
        ),
        (Method::DELETE, "/api/v1/repos/dev/advisories/X-1".into(), None),
        (Method::GET, "/api/v1/users".into(), None),
        (
            Method::POST,
            "/api/v1/users".into(),
            Some(serde_json::json!({"email": "eve@example.org", "permissions": []})),
        ),
        (Method::DELETE, "/api/v1/users/ann@example.org".into(), None),
        (Method::GET, "/api/v1/tokens?user=ann@example.org".into(), None),
        (Method::POST, "/api/v1/tokens".into(), Some(serde_json::json!({"user": "ann@example.org"}))),
        (Method::DELETE, format!("/api/v1/tokens/{ann_token_id}"), None),
    ];
    for (method, path, body) in &tries {
        let (status, text) = call(&farm, &carl, method.clone(), path, body.clone()).await;
        assert_eq!(status, 403, "{method} {path}: {text}");
        assert!(text.contains("carl@example.org lacks the"), "{method} {path}: {text}");
    }
    // Multipart and form endpoints too.
    let form = reqwest::multipart::Form::new().text("target", "t");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/uploads", farm.url()))
        .bearer_auth(&carl)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 403);
    let resp = reqwest::Client::new()
        .post(format!("{}/change_hook/base", farm.url()))
        .bearer_auth(&carl)
        .form(&[("project", "sleepy")])
        .send()
        .await
        .expect("base hook");
    assert_eq!(resp.status().as_u16(), 403);
    let resp = reqwest::Client::new()
        .post(format!("{}/change_hook/base", farm.url()))
        .form(&[("project", "sleepy")])
        .send()
        .await
        .expect("base hook");
    assert_eq!(resp.status().as_u16(), 401, "the base hook needs a token unless opened");
    assert_eq!(admin.builds(&Default::default()).await.expect("builds").builds.len(), builds_before);
    assert!(!admin.build(running).await.expect("build").state.is_finished());
    assert_eq!(admin.users().await.expect("users").len(), 5);
    assert!(ann_client.tokens(None).await.expect("tokens").iter().all(|t| t.revoked_at.is_none()));

    // modify_users manages users, but grants nothing it lacks.
    let moderator = kiln_client::Client::new(&farm.url(), Some(mod_token.clone())).expect("client");
    let err = moderator
        .add_user(&kiln_proto::api::NewUser {
            email: "eve@example.org".into(),
            permissions: vec!["server_admin".into()],
        })
        .await
        .expect_err("no escalation");
    assert!(err.to_string().contains("lacks the server_admin permission"), "{err}");
    let eve = moderator
        .add_user(&kiln_proto::api::NewUser {
            email: "eve@example.org".into(),
            permissions: vec!["modify_users".into()],
        })
        .await
        .expect("grants what it holds");
    assert_eq!(eve.user, "eve@example.org");
    moderator.remove_user("eve@example.org").await.expect("removes");
    let (status, _) = call(&farm, &eve.token, Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(status, 401, "a removed user's token is dead");

    // Tokens: Ann makes a second one, revokes it with the CLI; it stops working at once.
    let (code, extra, err) = run(farm.kiln().env("KILN_TOKEN", &ann).args(["token", "create", "--name", "laptop"]))
        .expect("kiln token create");
    assert_eq!(code, 0, "{err}");
    let extra = extra.trim().to_string();
    let (status, _) = call(&farm, &extra, Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(status, 200);
    let listed = ann_client.tokens(None).await.expect("tokens");
    let laptop = listed.iter().find(|t| t.name == "laptop").expect("listed");
    let (code, out, err) = run(farm.kiln().env("KILN_TOKEN", &ann).args(["token", "list"])).expect("kiln token list");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("laptop") && !out.contains(&extra) && !out.contains(&ann), "{out}");
    let (code, out, err) = run(farm.kiln().env("KILN_TOKEN", &ann).args(["token", "revoke", &laptop.id.to_string()]))
        .expect("kiln token revoke");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked token"), "{out}");
    let (status, text) = call(&farm, &extra, Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(status, 401, "{text}");
    let (status, _) = call(&farm, &format!("{ann}x"), Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(status, 401, "a wrong secret with a right id");

    // The store has argon2 hashes, never a token.
    // (SQLite in WAL mode: recent rows may be in the -wal file.)
    let mut db = std::fs::read(farm.path("data/kiln.db")).expect("database");
    db.extend(std::fs::read(farm.path("data/kiln.db-wal")).unwrap_or_default());
    let db = String::from_utf8_lossy(&db);
    assert!(db.contains("$argon2id$"));
    for t in [&ann, &bob, &carl, &kim, &mod_token, &extra] {
        let secret = t.rsplit('_').next().expect("secret");
        assert!(!db.contains(secret), "a token is stored in the clear");
        assert!(!farm.master_log().contains(secret), "a token is in the master's log");
    }

    // The web: a user without server_admin logs in, cannot change a repository.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http");
    let (cookie, csrf) = farm.web_login(&http, &ann, &format!("/builds/{running}"), "ann@example.org").await;
    let resp = http
        .post(format!("{}/repos/dev/change", farm.url()))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("op", "remove"), ("name", "x"), ("version", "1")])
        .send()
        .await
        .expect("repo change");
    assert_eq!(resp.status().as_u16(), 403);
    let resp = http
        .post(format!("{}/builds/{running}/cancel", farm.url()))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("cancel");
    assert_eq!(resp.status().as_u16(), 403, "not Ann's build");
    assert!(!admin.build(running).await.expect("build").state.is_finished());
    // Carl (no permissions) logs in too; forcing and rebuilding are refused.
    let (carl_cookie, carl_csrf) =
        farm.web_login(&http, &carl, &format!("/builds/{running}"), "carl@example.org").await;
    let builds_before = admin.builds(&Default::default()).await.expect("builds").builds.len();
    for (path, form) in [
        ("/force".to_string(), vec![("csrf", carl_csrf.as_str()), ("component", "sleepy")]),
        (format!("/builds/{running}/rebuild"), vec![("csrf", carl_csrf.as_str())]),
    ] {
        let resp = http
            .post(format!("{}{path}", farm.url()))
            .header("cookie", &carl_cookie)
            .form(&form)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status().as_u16(), 403, "{path}");
    }
    assert_eq!(admin.builds(&Default::default()).await.expect("builds").builds.len(), builds_before);
    admin.cancel(running).await.expect("the admin cancels anything");
    assert!(
        wait_for(Duration::from_secs(30), || async { admin.build(running).await.is_ok_and(|b| b.state.is_finished()) })
            .await
    );
}
