//! End-to-end tests of what starts builds and who hears about them: git
//! sources served by a real `git daemon` on loopback, forge hooks with
//! recorded payload shapes, polling, mail over STARTTLS to a real SMTP server (aiosmtpd)
//! and lines in a real IRC server's channel (ngIRCd).

use kiln_core::BuildState;
use kiln_proto::api::BuildRequestBody;
use kiln_testing::{free_addr, listening, mails, wait_for, Farm, GitHost, Server, ONE_WORKER};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

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
    assert!(farm.all_builds().await.is_empty());
    // A commit to libgrace builds it, at that commit.
    let c = host.commit(&mono, &[("libgrace/grace.c", "GRACE 2\n")], "libgrace: 2");
    let built = wait_for(Duration::from_secs(40), || async { !farm.all_builds().await.is_empty() }).await;
    assert!(built, "{}", farm.master_log());
    let builds = farm.all_builds().await;
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
