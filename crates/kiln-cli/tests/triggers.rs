//! End-to-end tests of what starts builds and who hears about them: git
//! sources served by a real `git daemon` on loopback, forge hooks with
//! recorded payload shapes, polling, mail over STARTTLS to a real SMTP server (aiosmtpd)
//! and lines in a real IRC server's channel (ngIRCd).

use kiln_client::BuildQuery;
use kiln_core::BuildState;
use kiln_proto::api::BuildRequestBody;
use kiln_testing::{free_addr, git, http_recorder, listening, mails, run, wait_for, Farm, Server, ONE_WORKER};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Bare repositories served read-only by `git daemon` on loopback, and a
/// working clone of each to commit in.
struct GitHost {
    dir: tempfile::TempDir,
    port: u16,
    _daemon: Server,
}

impl GitHost {
    async fn start() -> GitHost {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("srv");
        std::fs::create_dir_all(&base).expect("srv");
        let addr = free_addr();
        let daemon = Command::new("git")
            .args(["daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--base-path={}", base.display()))
            .arg(&base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        let host = GitHost { dir, port: addr.port(), _daemon: Server(daemon) };
        listening(addr, "git daemon").await;
        host
    }

    fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}.git", self.port)
    }

    /// A new repository `name` with a working clone; returns the clone's path.
    fn create(&self, name: &str) -> PathBuf {
        let bare = self.dir.path().join("srv").join(format!("{name}.git"));
        let work = self.dir.path().join("work").join(name);
        std::fs::create_dir_all(&work).expect("work dir");
        git(self.dir.path(), &["init", "--quiet", "--bare", "-b", "main", bare.to_str().expect("path")]);
        git(&work, &["init", "--quiet", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().expect("path")]);
        work
    }

    /// Writes files, commits them and pushes; returns the commit id.
    fn commit(&self, work: &Path, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
            std::fs::write(p, content).expect("write");
        }
        git(work, &["add", "-A"]);
        git(work, &["commit", "--quiet", "-m", message]);
        git(work, &["push", "--quiet", "origin", "HEAD:refs/heads/main"]);
        git(work, &["rev-parse", "HEAD"])
    }
}

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
        "head_commit": {"id": after, "message": message},
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

fn sign(secret: &str, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn post(farm: &Farm, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().post(format!("{}{path}", farm.url())).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("hook answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

async fn all_builds(farm: &Farm) -> Vec<kiln_proto::api::Build> {
    farm.client().builds(&BuildQuery { limit: Some(100), ..Default::default() }).await.expect("builds").builds
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
    let (code, v) = post(
        &farm,
        "/change_hook/github",
        &[("x-github-event", "ping"), ("x-hub-signature-256", &format!("sha256={}", sign("gh-s3cret", "{}")))],
        "{}",
    )
    .await;
    assert_eq!((code, v["message"].as_str()), (200, Some("pong")));

    // A forged delivery is refused and starts nothing.
    let body = github_push(&url, &c0, &c1, &["libgrace/grace.c"], "libgrace: 1b");
    for sig in [format!("sha256={}", sign("wrong", &body)), "sha256=zz".to_string()] {
        let (code, v) =
            post(&farm, "/change_hook/github", &[("x-github-event", "push"), ("x-hub-signature-256", &sig)], &body)
                .await;
        assert_eq!(code, 401, "{v}");
    }
    let (code, _) = post(&farm, "/change_hook/github", &[("x-github-event", "push")], &body).await;
    assert_eq!(code, 401);
    assert!(all_builds(&farm).await.is_empty(), "a refused delivery built something");

    // The real one: only libgrace's files changed, so only libgrace builds.
    let good = [("x-github-event", "push"), ("x-hub-signature-256", &format!("sha256={}", sign("gh-s3cret", &body)))];
    let (code, v) = post(&farm, "/change_hook/github", &good, &body).await;
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
    let sig = format!("sha256={}", sign("gh-s3cret", &body));
    let (code, v) =
        post(&farm, "/change_hook/github", &[("x-github-event", "push"), ("x-hub-signature-256", &sig)], &body).await;
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
    let sig = format!("sha256={}", sign("gh-s3cret", &body));
    let (code, v) =
        post(&farm, "/change_hook/github", &[("x-github-event", "push"), ("x-hub-signature-256", &sig)], &body).await;
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
        post(&farm, "/change_hook/gitlab", &[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", "nope")], &gl).await;
    assert_eq!(code, 401);
    let (code, v) =
        post(&farm, "/change_hook/gitlab", &[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", "gl-s3cret")], &gl)
            .await;
    assert_eq!(code, 200, "{v}");
    let id = v["builds"][0].as_i64().expect("one build");
    let b = farm.wait_finished(id, Duration::from_secs(60)).await;
    assert_eq!((b.component.as_str(), b.state), ("tools", BuildState::Succeeded));
    assert_eq!(b.properties["changed_by"].value, "Bo <bo@example.org>");

    // Gitea is not configured here: its hook does not exist.
    let (code, _) = post(&farm, "/change_hook/gitea", &[("x-gitea-event", "push")], "{}").await;
    assert_eq!(code, 404);
    // The secret never shows in the master's log.
    assert!(!farm.master_log().contains("gh-s3cret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn polling_builds_new_commits_that_touch_a_component() {
    let host = GitHost::start().await;
    let mono = host.create("mono");
    host.commit(&mono, &[("libgrace/grace.c", "GRACE 1\n"), ("docs/README.md", "docs\n")], "first");
    let url = host.url("mono");
    let config = format!(
        r#"{ONE_WORKER}
[[component]]
name = "libgrace"
source = {{ git = "{url}", subdir = "libgrace", poll = "10s" }}
steps = [ {{ name = "show", run = "cat grace.c" }} ]
"#
    );
    let farm = Farm::running(KILN.as_ref(), &config, &[], "w1", &["t"], 1).await;
    // The first look at the branch only records where it is.
    let first =
        wait_for(Duration::from_secs(30), || async { farm.master_log().contains("polling a new branch") }).await;
    assert!(first, "{}", farm.master_log());
    // A docs-only commit is seen and builds nothing.
    host.commit(&mono, &[("docs/README.md", "more\n")], "docs");
    let seen = wait_for(Duration::from_secs(40), || async { farm.master_log().contains("touches no component") }).await;
    assert!(seen, "{}", farm.master_log());
    assert!(all_builds(&farm).await.is_empty());
    // A commit to libgrace builds it, at that commit.
    let c = host.commit(&mono, &[("libgrace/grace.c", "GRACE 2\n")], "libgrace: 2");
    let built = wait_for(Duration::from_secs(40), || async { !all_builds(&farm).await.is_empty() }).await;
    assert!(built, "{}", farm.master_log());
    let builds = all_builds(&farm).await;
    assert_eq!(builds.len(), 1);
    let b = farm.wait_finished(builds[0].id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
    assert_eq!(b.properties["revision"].value, c);
    assert_eq!(b.properties["changed_by"].value, "Ann <ann@example.org>");
    assert_eq!(farm.client().log(b.id, "show", 0).await.expect("log").data, "GRACE 2\n");
    // A forced build with no revision builds the branch's tip and says which.
    let created = farm
        .client()
        .create_builds(&BuildRequestBody { components: vec!["libgrace".into()], ..Default::default() })
        .await
        .expect("create");
    let b = farm.wait_finished(created.builds[0].id, Duration::from_secs(60)).await;
    assert_eq!(b.properties["got_revision"].value, c);
}

/// ngIRCd on a free loopback port, and a client of our own in `#builds`.
async fn irc_server(dir: &Path) -> (Server, SocketAddr) {
    let addr = free_addr();
    let conf = dir.join("ngircd.conf");
    std::fs::write(
        &conf,
        format!(
            "[Global]\nName = irc.kiln.test\nInfo = kiln test\nListen = 127.0.0.1\nPorts = {}\n\
             [Limits]\nMaxConnectionsIP = 0\nPingTimeout = 120\n\
             [Options]\nPAM = no\nIdent = no\nDNS = no\n",
            addr.port()
        ),
    )
    .expect("conf");
    let child = Command::new("ngircd")
        .arg("--nodaemon")
        .arg("--config")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ngircd starts");
    let server = Server(child);
    listening(addr, "ngircd").await;
    (server, addr)
}

/// A minimal IRC user: registers, joins, reads lines.
struct IrcUser {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl IrcUser {
    async fn join(addr: SocketAddr, nick: &str, channel: &str) -> IrcUser {
        use tokio::io::AsyncBufReadExt;
        let (r, w) = tokio::net::TcpStream::connect(addr).await.expect("connect").into_split();
        let mut u = IrcUser { lines: tokio::io::BufReader::new(r).lines(), write: w };
        u.send(&format!("NICK {nick}\r\nUSER {nick} 0 * :test\r\n")).await;
        u.until(|l| l.contains(" 001 ")).await;
        u.send(&format!("JOIN {channel}\r\n")).await;
        u.until(|l| l.contains(" 366 ")).await; // end of the names list
        u
    }

    /// Waits until `nick` is in `channel` (asking for the names list).
    async fn wait_for_member(&mut self, channel: &str, nick: &str) {
        for _ in 0..60 {
            self.send(&format!("NAMES {channel}\r\n")).await;
            let names = self.until(|l| l.contains(" 353 ") || l.contains(" 366 ")).await;
            if names.contains(" 353 ") {
                self.until(|l| l.contains(" 366 ")).await;
                let list = names.rsplit(':').next().unwrap_or("");
                if list.split_whitespace().any(|n| n.trim_start_matches(['@', '+']) == nick) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("{nick} never joined {channel}");
    }

    async fn send(&mut self, text: &str) {
        use tokio::io::AsyncWriteExt;
        self.write.write_all(text.as_bytes()).await.expect("send");
    }

    /// Reads (answering PINGs) until a line matches; returns it.
    async fn until(&mut self, want: impl Fn(&str) -> bool) -> String {
        let read = async {
            loop {
                let line = self.lines.next_line().await.expect("read").expect("connection open");
                if let Some(token) = line.strip_prefix("PING ") {
                    self.send(&format!("PONG {token}\r\n")).await;
                } else if want(&line) {
                    return line;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read).await.expect("the expected IRC line")
    }
}

/// aiosmtpd (Debian's python3-aiosmtpd) delivering into a maildir, with
/// STARTTLS required, its certificate issued by a CA of the test's own.
/// Returns the server, its address, the maildir and the CA (PEM).
async fn smtp_server(dir: &Path) -> (Server, SocketAddr, PathBuf, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    std::fs::write(dir.join("smtp.crt"), cert.pem()).expect("cert");
    std::fs::write(dir.join("smtp.key"), key.serialize_pem()).expect("key");
    let addr = free_addr();
    let maildir = dir.join("maildir");
    let child = Command::new("/usr/bin/python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &addr.to_string(), "-c", "aiosmtpd.handlers.Mailbox"])
        .arg("--tlscert")
        .arg(dir.join("smtp.crt"))
        .arg("--tlskey")
        .arg(dir.join("smtp.key"))
        .arg(&maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("aiosmtpd starts");
    let server = Server(child);
    listening(addr, "aiosmtpd").await;
    (server, addr, maildir, ca.pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_and_fixes_are_mailed_and_announced_on_irc_which_answers_status() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (_irc, irc_addr) = irc_server(scratch.path()).await;
    let (_smtp, smtp_addr, maildir, ca) = smtp_server(scratch.path()).await;
    let config = format!(
        r##"{ONE_WORKER}
[[component]]
name = "flaky"
steps = [ {{ name = "compile", run = "echo compiling; echo 'error: it is broken' >&2; test \"$KILN_PROP_OUTCOME\" = good" }} ]

[smtp]
server = "127.0.0.1"
port = {smtp_port}
security = "starttls"
ca_file = "secrets/smtp-ca.pem"
from = "kiln <kiln@localhost>"

[irc]
server = "{irc_addr}"
nick = "kiln"

[[notify]]
name = "team-mail"
email = ["team@example.org"]
email_requester = true
on = ["failed", "fixed"]

[[notify]]
name = "team-chat"
irc = "#builds"
on = ["failed", "fixed"]
"##,
        smtp_port = smtp_addr.port()
    );
    let farm = Farm::running(KILN.as_ref(), &config, &[("secrets/smtp-ca.pem", &ca)], "w1", &["t"], 1).await;
    let mut ann = IrcUser::join(irc_addr, "ann", "#builds").await;
    // The bot joins the channel.
    ann.wait_for_member("#builds", "kiln").await;

    let client = farm.client();
    let request = |outcome: &str| BuildRequestBody {
        components: vec!["flaky".into()],
        properties: [
            ("outcome".to_string(), outcome.to_string()),
            ("changed_by".to_string(), "Ann <ann@example.org>".to_string()),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let bad = client.create_builds(&request("bad")).await.expect("create").builds[0].id;
    assert_eq!(farm.wait_finished(bad, Duration::from_secs(30)).await.state, BuildState::Failed);
    let line = ann.until(|l| l.contains("PRIVMSG #builds")).await;
    assert!(
        line.contains("flaky on t failed: step compile failed") && line.contains(&format!("/builds/{bad}")),
        "{line}"
    );

    // Asked in the channel, the bot says how the farm is.
    ann.send("PRIVMSG #builds :kiln: status\r\n").await;
    let line = ann.until(|l| l.starts_with(":kiln!") && l.contains("PRIVMSG #builds")).await;
    assert!(line.contains("1 builders: 0 green, 1 failing") && line.contains("failing: flaky/t"), "{line}");
    // And in private.
    ann.send("PRIVMSG kiln :status\r\n").await;
    let line = ann.until(|l| l.starts_with(":kiln!") && l.contains("PRIVMSG ann")).await;
    assert!(line.contains("1 failing"), "{line}");

    // The mail: to the list and to who pushed, with the failing step's log.
    let got = wait_for(Duration::from_secs(20), || async { !mails(&maildir).is_empty() }).await;
    assert!(got, "no mail arrived; master log:\n{}", farm.master_log());
    let mail = mails(&maildir).remove(0);
    assert!(mail.contains(&format!("Subject: kiln: flaky on t failed (build {bad})")), "{mail}");
    assert!(mail.contains("team@example.org") && mail.contains("ann@example.org"), "{mail}");
    assert!(mail.contains("Step compile failed") && mail.contains("error: it is broken"), "{mail}");
    assert!(mail.contains(&format!("/builds/{bad}")), "{mail}");

    // A second failure in a row is reported; then the fix is, as "fixed".
    let good = client.create_builds(&request("good")).await.expect("create").builds[0].id;
    assert_eq!(farm.wait_finished(good, Duration::from_secs(30)).await.state, BuildState::Succeeded);
    let line = ann.until(|l| l.contains("PRIVMSG #builds")).await;
    assert!(line.contains("flaky on t fixed"), "{line}");
    let fixed = wait_for(Duration::from_secs(20), || async {
        mails(&maildir).iter().any(|m| m.contains(&format!("Subject: kiln: flaky on t fixed (build {good})")))
    })
    .await;
    assert!(fixed, "{:?}", mails(&maildir));
    // A success after a success is not news.
    let again = client.create_builds(&request("good")).await.expect("create").builds[0].id;
    assert_eq!(farm.wait_finished(again, Duration::from_secs(30)).await.state, BuildState::Succeeded);
    ann.send("PRIVMSG #builds :!status\r\n").await;
    let line = ann.until(|l| l.starts_with(":kiln!") && l.contains("PRIVMSG #builds")).await;
    assert!(line.contains("1 green, 0 failing"), "the success was announced, or status is wrong: {line}");
    assert_eq!(mails(&maildir).len(), 2);
}
