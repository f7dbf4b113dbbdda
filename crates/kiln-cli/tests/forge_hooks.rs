//! End-to-end tests of forge hooks as forges send them: GitHub and GitLab
//! deliveries (JSON and GitHub's form encoding) signed with the configured
//! secret, against a real master and worker that build from a real
//! `git daemon` repository holding the pull requests' refs, with a
//! loopback recorder in place of the forge's commit status API.

use kiln_core::BuildState;
use kiln_testing::{git, hook_signature, http_recorder, run, Farm, GitHost, MAKE_DEB, ONE_WORKER};
use std::collections::BTreeMap;
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A GitHub `push` event as GitHub shapes it (the fields kiln reads and
/// the usual ones around them).
fn github_push(clone_url: &str, before: &str, after: &str, modified: &[&str], message: &str) -> String {
    serde_json::json!({
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "compare": format!("https://github.com/grace/mono/compare/{}...{}", &before[..12], &after[..12]),
        "commits": [{
            "id": after,
            "tree_id": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
            "distinct": true,
            "message": message,
            "timestamp": "2026-11-22T10:00:00+01:00",
            "author": {"name": "Ann", "email": "ann@example.org", "username": "ann"},
            "committer": {"name": "Ann", "email": "ann@example.org", "username": "ann"},
            "added": [],
            "removed": [],
            "modified": modified
        }],
        "head_commit": {"id": after, "message": message, "author": {"name": "Ann", "email": "ann@example.org"}},
        "repository": {
            "id": 1296269,
            "name": "mono",
            "full_name": "grace/mono",
            "private": false,
            "html_url": "https://github.com/grace/mono",
            "clone_url": clone_url,
            "git_url": "git://github.com/grace/mono.git",
            "ssh_url": "git@github.com:grace/mono.git",
            "default_branch": "main"
        },
        "pusher": {"name": "ann", "email": "ann@example.org"},
        "sender": {"login": "ann", "id": 1}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_github_push_builds_the_touched_components_at_the_pushed_revision() {
    let host = GitHost::start().await;
    let vendor = host.create("vendor");
    host.commit(&vendor, &[("vendored.h", "VENDOR 1\n")], "vendor: first");
    let mono = host.create("mono");
    let c0 = host.commit(
        &mono,
        &[("libgrace/grace.c", "GRACE 1\n"), ("tools/tool.c", "TOOL 1\n"), ("docs/README.md", "docs\n")],
        "first",
    );
    // tools/vendor is a submodule, by a URL relative to mono's.
    let vendor_bare = host.dir.path().join("srv/vendor.git");
    git(
        &mono,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "--quiet",
            vendor_bare.to_str().expect("p"),
            "tools/vendor",
        ],
    );
    git(&mono, &["config", "-f", ".gitmodules", "submodule.tools/vendor.url", "../vendor.git"]);
    let c1 = host.commit(&mono, &[("libgrace/grace.c", "GRACE 1b\n")], "libgrace: 1b, tools: vendor lib");

    let (api, mut statuses) = http_recorder().await;
    let url = host.url("mono");
    let config = format!(
        r#"{ONE_WORKER}
[[component]]
name = "libgrace"
source = {{ git = "{url}", branch = "main", subdir = "libgrace" }}
steps = [ {{ name = "show", run = "cat grace.c && test ! -e tool.c && test ! -e ../tools" }} ]

[[component]]
name = "tools"
source = {{ git = "{url}", subdir = "tools", submodules = true }}
steps = [ {{ name = "show", run = "cat tool.c vendor/vendored.h" }} ]

[[component]]
name = "elsewhere"
source = {{ git = "{other}" }}
steps = [ {{ name = "show", run = "true" }} ]

[hooks.github]
secret_file = "secrets/github.secret"
status_token_file = "secrets/github.token"
api_url = "{api}"

[hooks.gitlab]
secret_file = "secrets/gitlab.secret"
"#,
        other = host.url("other")
    );
    let farm = Farm::running(
        KILN.as_ref(),
        &config,
        &[
            ("secrets/github.secret", "gh-s3cret\n"),
            ("secrets/github.token", "gh-token\n"),
            ("secrets/gitlab.secret", "gl-s3cret\n"),
        ],
        "w1",
        &["t"],
        2,
    )
    .await;

    // GitHub's ping when the hook is added.
    let (code, v) = farm
        .post(
            "/change_hook/github",
            &[
                ("x-github-event", "ping"),
                ("x-hub-signature-256", &format!("sha256={}", hook_signature("gh-s3cret", "{}"))),
            ],
            "{}",
        )
        .await;
    assert_eq!((code, v["message"].as_str()), (200, Some("pong")));

    // A forged delivery is refused and starts nothing.
    let body = github_push(&url, &c0, &c1, &["libgrace/grace.c"], "libgrace: 1b");
    for sig in [format!("sha256={}", hook_signature("wrong", &body)), "sha256=zz".to_string()] {
        let (code, v) =
            farm.post("/change_hook/github", &[("x-github-event", "push"), ("x-hub-signature-256", &sig)], &body).await;
        assert_eq!(code, 401, "{v}");
    }
    let (code, _) = farm.post("/change_hook/github", &[("x-github-event", "push")], &body).await;
    assert_eq!(code, 401);
    assert!(farm.all_builds().await.is_empty(), "a refused delivery built something");

    // The real one: only libgrace's files changed, so only libgrace builds.
    let good = [
        ("x-github-event", "push"),
        ("x-hub-signature-256", &format!("sha256={}", hook_signature("gh-s3cret", &body))),
    ];
    let (code, v) = farm.post("/change_hook/github", &good, &body).await;
    assert_eq!(code, 200, "{v}");
    let ids: Vec<i64> = v["builds"].as_array().expect("builds").iter().filter_map(|b| b.as_i64()).collect();
    assert_eq!(ids.len(), 1, "{v}");
    let b = farm.wait_finished(ids[0], Duration::from_secs(60)).await;
    assert_eq!((b.component.as_str(), b.state), ("libgrace", BuildState::Succeeded), "{:?}", b.reason);
    assert_eq!(b.properties["revision"].value, c1);
    assert_eq!(b.properties["branch"].value, "main");
    assert_eq!(b.properties["changed_by"].value, "ann <ann@example.org>");
    assert_eq!(b.requested_by.as_deref(), Some("ann <ann@example.org> (github)"));
    assert!(b.reason.is_none());
    let client = farm.client();
    let log = client.log(b.id, "checkout", 0).await.expect("checkout log").data;
    assert!(log.contains(&format!("checked out {url} main at {c1}")), "{log}");
    assert_eq!(client.log(b.id, "show", 0).await.expect("log").data, "GRACE 1b\n");

    // Commit statuses went back: pending when requested, then success.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (head, body) =
            tokio::time::timeout(Duration::from_secs(20), statuses.recv()).await.expect("a status").expect("sent");
        assert!(head.starts_with(&format!("post /repos/grace/mono/statuses/{c1} ")), "{head}");
        assert!(head.lines().any(|l| l.trim() == "authorization: bearer gh-token"), "{head}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["context"], "kiln/libgrace/t");
        assert!(v["target_url"].as_str().is_some_and(|u| u.ends_with(&format!("/builds/{}", b.id))));
        seen.push(v["state"].as_str().expect("state").to_string());
    }
    assert_eq!(seen, ["pending", "success"]);

    // Two more commits land; the hook for the first of them builds exactly
    // that revision, not the branch's tip, and both components it touched.
    let c2 = host.commit(&mono, &[("libgrace/grace.c", "GRACE 2\n"), ("tools/tool.c", "TOOL 2\n")], "both: 2");
    let _c3 = host.commit(&mono, &[("libgrace/grace.c", "GRACE 3\n")], "libgrace: 3");
    let body = github_push(&url, &c1, &c2, &["libgrace/grace.c", "tools/tool.c"], "both: 2");
    let sig = format!("sha256={}", hook_signature("gh-s3cret", &body));
    let (code, v) =
        farm.post("/change_hook/github", &[("x-github-event", "push"), ("x-hub-signature-256", &sig)], &body).await;
    assert_eq!(code, 200, "{v}");
    let ids: Vec<i64> = v["builds"].as_array().expect("builds").iter().filter_map(|b| b.as_i64()).collect();
    assert_eq!(ids.len(), 2, "{v}");
    for id in ids {
        let b = farm.wait_finished(id, Duration::from_secs(60)).await;
        assert_eq!(b.state, BuildState::Succeeded, "{}: {:?}", b.component, b.reason);
        assert_eq!(b.properties["revision"].value, c2);
        let out = client.log(id, "show", 0).await.expect("log").data;
        match b.component.as_str() {
            "libgrace" => assert_eq!(out, "GRACE 2\n"),
            _ => assert_eq!(out, "TOOL 2\nVENDOR 1\n", "the submodule is checked out"),
        }
    }

    // `kiln rebuild` of the first push's build builds that push's revision
    // again, not the branch's tip (which is c3 now).
    let first = b.id;
    let (code, out, err) = run(farm.kiln().args(["rebuild", &first.to_string()])).expect("kiln rebuild");
    assert_eq!(code, 0, "{err}");
    let again: i64 = out.split('\t').next().and_then(|id| id.trim().parse().ok()).expect("the new build's id");
    assert!(out.contains(&format!("(rebuild of #{first})")), "{out}");
    let rebuilt = farm.wait_finished(again, Duration::from_secs(60)).await;
    assert_eq!(rebuilt.state, BuildState::Succeeded, "{:?}", rebuilt.reason);
    assert_eq!(rebuilt.properties["revision"].value, c1);
    assert_eq!(client.log(again, "show", 0).await.expect("log").data, "GRACE 1b\n");
    assert_eq!(rebuilt.requested_by.as_deref(), Some("admin"));

    // A push that touches no component's files starts nothing, and says so.
    let c4 = host.commit(&mono, &[("docs/README.md", "more docs\n")], "docs");
    let body = github_push(&url, &c2, &c4, &["docs/README.md"], "docs");
    let sig = format!("sha256={}", hook_signature("gh-s3cret", &body));
    let (code, v) =
        farm.post("/change_hook/github", &[("x-github-event", "push"), ("x-hub-signature-256", &sig)], &body).await;
    assert_eq!(code, 200);
    assert!(v["message"].as_str().is_some_and(|m| m.starts_with("no component builds from")), "{v}");

    // GitLab: its token header, its payload shape.
    let gl = serde_json::json!({
        "object_kind": "push", "event_name": "push", "ref": "refs/heads/main",
        "before": c2, "after": c4, "checkout_sha": c4, "user_name": "Bo", "user_email": "bo@example.org",
        "total_commits_count": 1,
        "project": {"path_with_namespace": "grace/mono", "git_http_url": url, "web_url": "https://gitlab.example.org/grace/mono"},
        "commits": [{"id": c4, "message": "tools only", "added": [], "modified": ["tools/tool.c"], "removed": []}]
    })
    .to_string();
    let (code, _) =
        farm.post("/change_hook/gitlab", &[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", "nope")], &gl).await;
    assert_eq!(code, 401);
    let (code, v) = farm
        .post("/change_hook/gitlab", &[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", "gl-s3cret")], &gl)
        .await;
    assert_eq!(code, 200, "{v}");
    let id = v["builds"][0].as_i64().expect("one build");
    let b = farm.wait_finished(id, Duration::from_secs(60)).await;
    assert_eq!((b.component.as_str(), b.state), ("tools", BuildState::Succeeded));
    assert_eq!(b.properties["changed_by"].value, "Bo <bo@example.org>");

    // Gitea is not configured here: its hook does not exist.
    let (code, _) = farm.post("/change_hook/gitea", &[("x-gitea-event", "push")], "{}").await;
    assert_eq!(code, 404);
    // The secret never shows in the master's log.
    assert!(!farm.master_log().contains("gh-s3cret"));
}

const GH_SECRET: &str = "gh-s3cret";
const GL_SECRET: &str = "gl-s3cret";
const GT_SECRET: &str = "gt-s3cret";
const TARGET: &str = "debian-12-amd64";

/// A GitHub `pull_request` event for pull request `number` of grace/mono
/// (at `base_url`), whose head commit `head` is in repository `head_repo`.
fn github_pull(action: &str, number: u64, head: &str, head_repo: &str, base_url: &str) -> String {
    serde_json::json!({
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "state": if action == "closed" { "closed" } else { "open" },
            "title": format!("change number {number}"),
            "user": {"login": "mallory"},
            "head": {"ref": format!("topic-{number}"), "sha": head,
                "repo": {"full_name": head_repo, "clone_url": format!("https://github.com/{head_repo}.git")}},
            "base": {"ref": "main", "sha": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                "repo": {"full_name": "grace/mono", "clone_url": base_url, "ssh_url": "git@github.com:grace/mono.git",
                    "html_url": "https://github.com/grace/mono"}}
        },
        "repository": {"full_name": "grace/mono", "clone_url": base_url, "default_branch": "main"},
        "sender": {"login": "mallory"}
    })
    .to_string()
}

/// A GitHub `issue_comment` event on pull request `number`.
fn github_comment(number: u64, body: &str, login: &str, association: &str, base_url: &str) -> String {
    serde_json::json!({
        "action": "created",
        "issue": {"number": number, "pull_request": {"url": format!("https://api.github.com/repos/grace/mono/pulls/{number}")}},
        "comment": {"body": body, "user": {"login": login}, "author_association": association},
        "repository": {"full_name": "grace/mono", "clone_url": base_url},
        "sender": {"login": login}
    })
    .to_string()
}

/// A GitLab `Merge Request Hook` for merge request `iid` of grace/mono,
/// from project `source` (10 is grace/mono itself).
fn gitlab_merge_request(action: &str, iid: u64, head: &str, source: u64, url: &str) -> String {
    let source_url = if source == 10 { url.to_string() } else { "https://gitlab.example.org/eve/mono.git".to_string() };
    serde_json::json!({
        "object_kind": "merge_request",
        "user": {"name": "Bo Lee", "username": "bo", "email": "bo@example.org"},
        "project": {"id": 10, "path_with_namespace": "grace/mono", "git_http_url": url, "default_branch": "main"},
        "object_attributes": {"iid": iid, "action": action, "title": "tools: louder", "target_branch": "main",
            "source_branch": "louder", "source_project_id": source, "target_project_id": 10,
            "source": {"git_http_url": source_url},
            "last_commit": {"id": head, "message": "tools: louder\n", "author": {"name": "Bo Lee", "email": "bo@example.org"}}}
    })
    .to_string()
}

/// A GitLab `Note Hook`: a comment by `username` on merge request `iid`.
fn gitlab_note(iid: u64, note: &str, username: &str, url: &str) -> String {
    serde_json::json!({
        "object_kind": "note", "user": {"name": username, "username": username},
        "project": {"path_with_namespace": "grace/mono", "git_http_url": url},
        "object_attributes": {"noteable_type": "MergeRequest", "note": note},
        "merge_request": {"iid": iid}
    })
    .to_string()
}

/// Percent-encodes every byte but the unreserved ones, as a form does.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Delivers a GitHub event as JSON, signed with the configured secret.
async fn github(farm: &Farm, event: &str, body: &str) -> (u16, serde_json::Value) {
    let sig = format!("sha256={}", hook_signature(GH_SECRET, body));
    let headers =
        [("x-github-event", event), ("x-hub-signature-256", sig.as_str()), ("content-type", "application/json")];
    farm.post("/change_hook/github", &headers, body).await
}

/// Delivers a GitLab event with the configured token.
async fn gitlab(farm: &Farm, event: &str, body: &str) -> (u16, serde_json::Value) {
    farm.post("/change_hook/gitlab", &[("x-gitlab-event", event), ("x-gitlab-token", GL_SECRET)], body).await
}

/// The build ids a hook's answer lists under `key`.
fn listed(v: &serde_json::Value, key: &str) -> Vec<i64> {
    v[key].as_array().map(|a| a.iter().filter_map(|b| b.as_i64()).collect()).unwrap_or_default()
}

/// The commit statuses a loopback recorder received, by commit and context.
struct Statuses {
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    seen: BTreeMap<(String, String), Vec<String>>,
}

impl Statuses {
    /// Waits (bounded) until the statuses posted for `commit` and `context`
    /// are `states`, in order.
    async fn until(&mut self, commit: &str, context: &str, states: &[&str]) {
        let key = (commit.to_string(), context.to_string());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.seen.get(&key).map(|s| s.iter().map(String::as_str).collect::<Vec<_>>()) != Some(states.to_vec()) {
            let next = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let Ok(Some((head, body))) = next else {
                panic!("statuses {states:?} for {context} at {commit} never came; seen {:?}", self.seen)
            };
            let sha = head
                .split_whitespace()
                .nth(1)
                .and_then(|path| path.strip_prefix("/repos/grace/mono/statuses/"))
                .unwrap_or_else(|| panic!("not a status: {head}"))
                .to_string();
            assert!(head.lines().any(|l| l.trim() == "authorization: bearer gh-token"), "{head}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            let ctx = v["context"].as_str().expect("context").to_string();
            self.seen.entry((sha, ctx)).or_default().push(v["state"].as_str().expect("state").to_string());
        }
    }
}

async fn get(farm: &Farm, path: &str) -> Vec<u8> {
    let resp = reqwest::get(format!("{}{path}", farm.url())).await.expect("get");
    assert_eq!(resp.status(), 200, "{path}");
    resp.bytes().await.expect("body").to_vec()
}

/// A step that prints `file` and whether the component's secret reached it.
fn show(file: &str) -> String {
    format!(
        r#"{{ name = "show", run = '''cat {file}; if [ -n "$API_TOKEN" ]; then echo with-secret; else echo without-secret; fi''' }}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_requests_are_test_built_at_their_head_reported_and_never_published() {
    let host = GitHost::start().await;
    let mono = host.create("mono");
    let c0 = host.commit(&mono, &[("libgrace/grace.c", "GRACE 1\n"), ("tools/tool.c", "TOOL 1\n")], "first");
    let url = host.url("mono");
    let (api, rx) = http_recorder().await;
    let mut statuses = Statuses { rx, seen: BTreeMap::new() };
    let config = format!(
        r#"
[[worker]]
name = "w1"
token_file = "secrets/w1.token"

[[target]]
name = "{TARGET}"
family = "deb"
suite = "bookworm"
arch = "amd64"

[[component]]
name = "libgrace"
source = {{ git = "{url}", subdir = "libgrace" }}
properties = {{ pkg = "libgrace" }}
secrets = {{ API_TOKEN = {{ file = "secrets/api.token" }} }}
steps = [ {grace}, {{ name = "package", run = '''{MAKE_DEB}''' }} ]
artifacts = ["*.deb"]

[[component]]
name = "tools"
source = {{ git = "{url}", subdir = "tools" }}
properties = {{ pkg = "tools" }}
secrets = {{ API_TOKEN = {{ file = "secrets/api.token" }} }}
steps = [ {tool}, {{ name = "package", run = '''{MAKE_DEB}''' }} ]
artifacts = ["*.deb"]

[[component]]
name = "libgrace-next"
source = {{ git = "{url}", branch = "next", subdir = "libgrace" }}
steps = [ {grace} ]

[[component]]
name = "tools-next"
source = {{ git = "{url}", branch = "next", subdir = "tools" }}
steps = [ {tool} ]

[[channel]]
name = "dev"
accepts = "nightly"

[hooks.github]
secret_file = "secrets/github.secret"
status_token_file = "secrets/github.token"
api_url = "{api}"
pull_requests = true
forks = true

[hooks.gitlab]
secret_file = "secrets/gitlab.secret"
pull_requests = true
rebuild_by = ["bo"]

[hooks.gitea]
secret_file = "secrets/gitea.secret"
pull_requests = true
"#,
        grace = show("grace.c"),
        tool = show("tool.c"),
    );
    let gh_secret = format!("{GH_SECRET}\n");
    let gl_secret = format!("{GL_SECRET}\n");
    let gt_secret = format!("{GT_SECRET}\n");
    let farm = Farm::running(
        KILN.as_ref(),
        &config,
        &[
            ("secrets/github.secret", &gh_secret),
            ("secrets/github.token", "gh-token\n"),
            ("secrets/gitlab.secret", &gl_secret),
            ("secrets/gitea.secret", &gt_secret),
            ("secrets/api.token", "tok-51c2\n"),
        ],
        "w1",
        &[TARGET],
        2,
    )
    .await;
    let client = farm.client();
    let grace_ctx = format!("kiln/libgrace/{TARGET}");
    let tools_ctx = format!("kiln/tools/{TARGET}");

    // A push, delivered the way GitHub does by default: a form whose
    // `payload` field holds the JSON, signed over the raw body.
    let c1 = host.commit(&mono, &[("libgrace/grace.c", "GRACE 2\n")], "libgrace: 2");
    let json = github_push(&url, &c0, &c1, &["libgrace/grace.c"], "libgrace: 2");
    let body = format!("payload={}", form_encode(&json));
    let sig = format!("sha256={}", hook_signature(GH_SECRET, &body));
    let form = [
        ("x-github-event", "push"),
        ("x-hub-signature-256", sig.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let (code, v) = farm.post("/change_hook/github", &form, &body).await;
    assert_eq!(code, 200, "{v}");
    let pushed = listed(&v, "builds");
    assert_eq!(pushed.len(), 1, "{v}");
    let b = farm.wait_finished(pushed[0], Duration::from_secs(60)).await;
    assert_eq!((b.component.as_str(), b.state), ("libgrace", BuildState::Succeeded), "{:?}", b.reason);
    assert_eq!(b.properties["revision"].value, c1);
    assert_eq!(b.properties["changed_by"].value, "ann <ann@example.org>");
    assert_eq!(b.properties["author"].value, "Ann <ann@example.org>");
    assert!(b.properties.contains_key("published"), "a push's build is published");
    assert_eq!(client.log(b.id, "show", 0).await.expect("log").data, "GRACE 2\nwith-secret\n");
    statuses.until(&c1, &grace_ctx, &["pending", "success"]).await;
    // The same form with the signature of another body is refused.
    let forged = format!("sha256={}", hook_signature(GH_SECRET, &json));
    let (code, _) =
        farm.post("/change_hook/github", &[form[0], ("x-hub-signature-256", &forged), form[2]], &body).await;
    assert_eq!(code, 401);
    // A delivery signed only with SHA-1 is refused, and told why.
    let (code, v) =
        farm.post("/change_hook/github", &[("x-github-event", "push"), ("x-hub-signature", "sha1=00")], &json).await;
    assert_eq!(code, 401);
    assert!(v["error"].as_str().is_some_and(|e| e.contains("SHA-1")), "{v}");

    // What the channel serves now; no test build may change it.
    let packages_path = "/repos/dev/apt/dists/bookworm/main/binary-amd64/Packages";
    let inrelease_path = "/repos/dev/apt/dists/bookworm/InRelease";
    let (packages, inrelease) = (get(&farm, packages_path).await, get(&farm, inrelease_path).await);
    assert!(String::from_utf8_lossy(&packages).contains("Package: libgrace"));

    // Pull request 7, from the repository itself: its head is only on
    // refs/pull/7/head. The master's mirror tells that it touches libgrace.
    git(&mono, &["checkout", "--quiet", "-b", "topic-7"]);
    let p7 = host.commit_to(&mono, &[("libgrace/grace.c", "GRACE PR 7\n")], "libgrace: faster", "refs/pull/7/head");
    git(&mono, &["checkout", "--quiet", "main"]);
    let (code, v) = github(&farm, "pull_request", &github_pull("opened", 7, &p7, "grace/mono", &url)).await;
    assert_eq!(code, 200, "{v}");
    let test7 = listed(&v, "builds");
    assert_eq!(test7.len(), 1, "{v}");
    let b = farm.wait_finished(test7[0], Duration::from_secs(60)).await;
    assert_eq!((b.component.as_str(), b.state), ("libgrace", BuildState::Succeeded), "{:?}", b.reason);
    for (k, want) in [
        ("revision", p7.as_str()),
        ("pull_request", "7"),
        ("fetch_ref", "refs/pull/7/head"),
        ("base_branch", "main"),
        ("fork", "false"),
        ("head_repository", "https://github.com/grace/mono.git"),
        ("changed_by", "mallory"),
    ] {
        assert_eq!(b.properties[k].value, want, "{k}");
    }
    assert!(!b.properties.contains_key("published"), "a test build went to the publisher");
    assert_eq!(client.log(b.id, "show", 0).await.expect("log").data, "GRACE PR 7\nwith-secret\n");
    let checkout = client.log(b.id, "checkout", 0).await.expect("checkout log").data;
    assert!(checkout.contains(&format!("at {p7}")), "{checkout}");
    statuses.until(&p7, &grace_ctx, &["pending", "success"]).await;

    // Pull request 8 comes from a fork: it builds, without the secrets.
    git(&mono, &["checkout", "--quiet", "-b", "topic-8", "main"]);
    let p8 = host.commit_to(&mono, &[("tools/tool.c", "TOOL PR 8\n")], "tools: mine", "refs/pull/8/head");
    git(&mono, &["checkout", "--quiet", "main"]);
    let (code, v) = github(&farm, "pull_request", &github_pull("opened", 8, &p8, "mallory/mono", &url)).await;
    assert_eq!(code, 200, "{v}");
    let test8 = listed(&v, "builds");
    assert_eq!(test8.len(), 1, "{v}");
    let b = farm.wait_finished(test8[0], Duration::from_secs(60)).await;
    assert_eq!((b.component.as_str(), b.state), ("tools", BuildState::Succeeded), "{:?}", b.reason);
    assert_eq!(b.properties["fork"].value, "true");
    assert_eq!(b.properties["head_repository"].value, "https://github.com/mallory/mono.git");
    assert_eq!(client.log(b.id, "show", 0).await.expect("log").data, "TOOL PR 8\nwithout-secret\n");
    statuses.until(&p8, &tools_ctx, &["pending", "success"]).await;

    // Neither test build reached the channel.
    assert_eq!(get(&farm, packages_path).await, packages, "a test build changed the channel's index");
    assert_eq!(get(&farm, inrelease_path).await, inrelease);
    let in_channel = client.packages("dev", None, None).await.expect("packages");
    assert_eq!(in_channel.len(), 1, "{in_channel:?}");

    // A comment asks for a rebuild: only one the forge says may write.
    let (code, v) = github(&farm, "issue_comment", &github_comment(7, "kiln rebuild", "stranger", "NONE", &url)).await;
    assert_eq!(code, 200);
    assert!(v["message"].as_str().is_some_and(|m| m.contains("may not ask for rebuilds")), "{v}");
    assert!(listed(&v, "builds").is_empty());
    let owner = github_comment(7, "Flaky? Kiln rebuild please", "grace", "OWNER", &url);
    let (code, v) = github(&farm, "issue_comment", &owner).await;
    assert_eq!(code, 200, "{v}");
    let again = listed(&v, "builds");
    assert_eq!(again.len(), 1, "{v}");
    let b = farm.wait_finished(again[0], Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
    assert_eq!(b.properties["revision"].value, p7);
    assert_eq!(b.properties["pull_request"].value, "7");
    assert_eq!(b.requested_by.as_deref(), Some("grace (github comment)"));
    statuses.until(&p7, &grace_ctx, &["pending", "success", "pending", "success"]).await;

    // Closing a pull request cancels its test builds still waiting.
    client.drain_worker("w1", Some("a test holds the queue")).await.expect("drain");
    git(&mono, &["checkout", "--quiet", "-b", "topic-9", "main"]);
    let both = [("libgrace/grace.c", "GRACE PR 9\n"), ("tools/tool.c", "TOOL PR 9\n")];
    let p9 = host.commit_to(&mono, &both, "both", "refs/pull/9/head");
    git(&mono, &["checkout", "--quiet", "main"]);
    let (code, v) = github(&farm, "pull_request", &github_pull("synchronize", 9, &p9, "grace/mono", &url)).await;
    assert_eq!(code, 200, "{v}");
    let mut test9 = listed(&v, "builds");
    assert_eq!(test9.len(), 2, "{v}");
    let (code, v) = github(&farm, "pull_request", &github_pull("closed", 9, &p9, "grace/mono", &url)).await;
    assert_eq!(code, 200, "{v}");
    let mut cancelled = listed(&v, "cancelled");
    cancelled.sort();
    test9.sort();
    assert_eq!(cancelled, test9, "{v}");
    for id in &test9 {
        assert_eq!(farm.wait_finished(*id, Duration::from_secs(30)).await.state, BuildState::Cancelled);
    }
    client.resume_worker("w1").await.expect("resume");

    // A skip marker in the head commit's message builds nothing, and says so.
    let c2 = host.commit(&mono, &[("tools/tool.c", "TOOL 2\n")], "tools: wording [skip ci]");
    let skipped = github_push(&url, &c1, &c2, &["tools/tool.c"], "tools: wording [skip ci]");
    let (code, v) = github(&farm, "push", &skipped).await;
    assert_eq!(code, 200);
    assert!(v["message"].as_str().is_some_and(|m| m.contains("[skip ci]")), "{v}");
    assert!(listed(&v, "builds").is_empty());

    // A new branch whose payload lists no commits and no files: the
    // master's mirror compares it with the default branch, so only the
    // component under libgrace/ builds.
    git(&mono, &["checkout", "--quiet", "-b", "next"]);
    let n1 = host.commit_to(&mono, &[("libgrace/grace.c", "GRACE next\n")], "libgrace: next", "refs/heads/next");
    git(&mono, &["checkout", "--quiet", "main"]);
    let mut created: serde_json::Value =
        serde_json::from_str(&github_push(&url, &c2, &n1, &[], "libgrace: next")).expect("json");
    created["ref"] = "refs/heads/next".into();
    created["before"] = "0000000000000000000000000000000000000000".into();
    created["created"] = true.into();
    created["commits"] = serde_json::json!([]);
    let (code, v) = github(&farm, "push", &created.to_string()).await;
    assert_eq!(code, 200, "{v}");
    let next = listed(&v, "builds");
    assert_eq!(next.len(), 1, "{v}");
    let b = farm.wait_finished(next[0], Duration::from_secs(60)).await;
    assert_eq!((b.component.as_str(), b.state), ("libgrace-next", BuildState::Succeeded), "{:?}", b.reason);
    assert_eq!(client.log(b.id, "show", 0).await.expect("log").data, "GRACE next\nwithout-secret\n");

    // GitLab: a merge request from a fork is not built (forks = false);
    // one from the project is, at refs/merge-requests/3/head.
    git(&mono, &["checkout", "--quiet", "-b", "louder"]);
    let m3 = host.commit_to(&mono, &[("tools/tool.c", "TOOL MR 3\n")], "tools: louder", "refs/merge-requests/3/head");
    git(&mono, &["checkout", "--quiet", "main"]);
    let (code, v) = gitlab(&farm, "Merge Request Hook", &gitlab_merge_request("open", 3, &m3, 11, &url)).await;
    assert_eq!(code, 200);
    assert!(v["message"].as_str().is_some_and(|m| m.contains("another repository")), "{v}");
    assert!(listed(&v, "builds").is_empty());
    let (code, v) = gitlab(&farm, "Merge Request Hook", &gitlab_merge_request("open", 3, &m3, 10, &url)).await;
    assert_eq!(code, 200, "{v}");
    let mr = listed(&v, "builds");
    assert_eq!(mr.len(), 1, "{v}");
    let b = farm.wait_finished(mr[0], Duration::from_secs(60)).await;
    assert_eq!((b.component.as_str(), b.state), ("tools", BuildState::Succeeded), "{:?}", b.reason);
    assert_eq!(b.properties["fetch_ref"].value, "refs/merge-requests/3/head");
    assert_eq!(b.properties["author"].value, "Bo Lee <bo@example.org>");
    assert_eq!(client.log(b.id, "show", 0).await.expect("log").data, "TOOL MR 3\nwith-secret\n");
    // GitLab's note payload says nothing of permissions: rebuild_by decides.
    let (_, v) = gitlab(&farm, "Note Hook", &gitlab_note(3, "kiln rebuild", "eve", &url)).await;
    assert!(listed(&v, "builds").is_empty(), "{v}");
    let (code, v) = gitlab(&farm, "Note Hook", &gitlab_note(3, "kiln rebuild", "bo", &url)).await;
    assert_eq!(code, 200, "{v}");
    let rebuilt = listed(&v, "builds");
    assert_eq!(rebuilt.len(), 1, "{v}");
    let b = farm.wait_finished(rebuilt[0], Duration::from_secs(60)).await;
    assert_eq!((b.state, b.properties["revision"].value.as_str()), (BuildState::Succeeded, m3.as_str()));

    assert_eq!(get(&farm, packages_path).await, packages, "a test build changed the channel's index");

    // A tag and a deleted branch build nothing; a push of many commits is a
    // complete list of files (GitHub does not cut it), so only tools builds.
    let push: serde_json::Value =
        serde_json::from_str(&github_push(&url, &c1, &c2, &["tools/tool.c"], "tools: many")).expect("json");
    let mut tag = push.clone();
    tag["ref"] = "refs/tags/v1.0".into();
    let (code, v) = github(&farm, "push", &tag.to_string()).await;
    assert_eq!(code, 200);
    assert!(v["message"].as_str().is_some_and(|m| m.contains("tag")) && listed(&v, "builds").is_empty(), "{v}");
    let mut deleted = push.clone();
    deleted["ref"] = "refs/heads/old".into();
    deleted["after"] = "0000000000000000000000000000000000000000".into();
    deleted["deleted"] = true.into();
    let (code, v) = github(&farm, "push", &deleted.to_string()).await;
    assert_eq!(code, 200);
    assert!(v["message"].as_str().is_some_and(|m| m.contains("deleted")) && listed(&v, "builds").is_empty(), "{v}");
    let mut many = push;
    many["commits"] = serde_json::Value::Array(vec![many["commits"][0].clone(); 25]);
    let (code, v) = github(&farm, "push", &many.to_string()).await;
    assert_eq!(code, 200, "{v}");
    let built = listed(&v, "builds");
    assert_eq!(built.len(), 1, "{v}");
    let b = farm.wait_finished(built[0], Duration::from_secs(60)).await;
    assert_eq!((b.component.as_str(), b.state), ("tools", BuildState::Succeeded), "{:?}", b.reason);
    let packages = get(&farm, packages_path).await;
    assert!(String::from_utf8_lossy(&packages).contains("Package: tools"), "the push published tools");

    // Gitea sends GitHub's shapes under its own headers (and says
    // `synchronized`); its pull requests are test builds too.
    git(&mono, &["checkout", "--quiet", "-b", "gitea-5", "main"]);
    let g5 = host.commit_to(&mono, &[("libgrace/grace.c", "GRACE PR 5\n")], "libgrace: gitea", "refs/pull/5/head");
    git(&mono, &["checkout", "--quiet", "main"]);
    let body = github_pull("synchronized", 5, &g5, "grace/mono", &url);
    let sig = hook_signature(GT_SECRET, &body);
    let (code, v) =
        farm.post("/change_hook/gitea", &[("x-gitea-event", "pull_request"), ("x-gitea-signature", &sig)], &body).await;
    assert_eq!(code, 200, "{v}");
    let gitea = listed(&v, "builds");
    assert_eq!(gitea.len(), 1, "{v}");
    let b = farm.wait_finished(gitea[0], Duration::from_secs(60)).await;
    assert_eq!((b.component.as_str(), b.state), ("libgrace", BuildState::Succeeded), "{:?}", b.reason);
    assert_eq!(b.properties["change_source"].value, "gitea");
    assert_eq!(client.log(b.id, "show", 0).await.expect("log").data, "GRACE PR 5\nwith-secret\n");

    // Still nothing of the tests in the channel, and no secret in the log.
    assert_eq!(get(&farm, packages_path).await, packages, "a test build changed the channel's index");
    let all = farm.all_builds().await;
    let published: Vec<&str> =
        all.iter().filter(|b| b.properties.contains_key("published")).map(|b| b.component.as_str()).collect();
    assert_eq!(published, ["tools", "libgrace"], "only the pushes published");
    let log = farm.master_log();
    assert!(!log.contains(GH_SECRET) && !log.contains("tok-51c2"), "a secret reached the master's log");
}

/// A fork's `.gitmodules` must not make the worker fetch whatever its
/// credentials reach: a fork's test build takes only submodules relative
/// to the repository, while the repository's own pull request takes any.
#[tokio::test(flavor = "multi_thread")]
async fn a_forks_pull_request_fetches_only_submodules_relative_to_the_repository() {
    let host = GitHost::start().await;
    let vendor = host.create("vendor");
    host.commit(&vendor, &[("vendored.h", "VENDOR 1\n")], "vendor: first");
    let app = host.create("app");
    host.commit(&app, &[("app.c", "APP 1\n")], "first");
    let url = host.url("app");
    let config = format!(
        r#"{ONE_WORKER}
[[component]]
name = "app"
source = {{ git = "{url}", submodules = true }}
steps = [ {{ name = "show", run = "cat app.c vendor/vendored.h" }} ]

[hooks.github]
secret_file = "secrets/github.secret"
pull_requests = true
forks = true
"#
    );
    let gh_secret = format!("{GH_SECRET}\n");
    let farm = Farm::running(KILN.as_ref(), &config, &[("secrets/github.secret", &gh_secret)], "w1", &["t"], 1).await;
    // The pull request adds the vendor repository as a submodule by its
    // full URL, then by one relative to the repository.
    let vendor_bare = host.dir.path().join("srv/vendor.git");
    git(&app, &["checkout", "--quiet", "-b", "topic"]);
    git(
        &app,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "--quiet",
            vendor_bare.to_str().expect("p"),
            "vendor",
        ],
    );
    git(&app, &["config", "-f", ".gitmodules", "submodule.vendor.url", &host.url("vendor")]);
    let absolute = host.commit_to(&app, &[("app.c", "APP 2\n")], "vendor by URL", "refs/pull/1/head");
    git(&app, &["config", "-f", ".gitmodules", "submodule.vendor.url", "../vendor.git"]);
    let relative = host.commit_to(&app, &[("app.c", "APP 3\n")], "vendor, relative", "refs/pull/2/head");

    let cases = [
        (1, &absolute, "mallory/app", BuildState::Failed),
        (1, &absolute, "grace/mono", BuildState::Succeeded),
        (2, &relative, "mallory/app", BuildState::Succeeded),
    ];
    for (number, head, head_repo, want) in cases {
        let mut event: serde_json::Value =
            serde_json::from_str(&github_pull("synchronize", number, head, head_repo, &url)).expect("json");
        // The base repository is grace/mono in these payloads.
        event["pull_request"]["head"]["repo"]["full_name"] = head_repo.into();
        let (code, v) = github(&farm, "pull_request", &event.to_string()).await;
        assert_eq!(code, 200, "{v}");
        let ids = listed(&v, "builds");
        assert_eq!(ids.len(), 1, "{v}");
        let b = farm.wait_finished(ids[0], Duration::from_secs(60)).await;
        assert_eq!(b.state, want, "pull request {number} from {head_repo}: {:?}", b.reason);
        let log = farm.client().log(b.id, "checkout", 0).await.map(|l| l.data).unwrap_or_default();
        if want == BuildState::Failed {
            assert!(log.contains("only submodules relative to the repository"), "{log}");
        } else {
            assert_eq!(farm.client().log(b.id, "show", 0).await.expect("log").data.lines().last(), Some("VENDOR 1"));
        }
    }
}
