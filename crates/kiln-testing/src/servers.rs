//! The small pieces process tests share around the outside servers they
//! start (git daemon, `hg serve`, aiosmtpd, ngIRCd): a guard that stops a
//! server when the test ends, waiting until one listens, a `git` that
//! commits as a fixed person, repositories served by `git daemon`
//! ([`GitHost`]), and reading what a maildir received.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed when the test ends, however it ends.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) until something listens on `addr`; panics naming `what` if nothing does.
pub async fn listening(addr: SocketAddr, what: &str) {
    let up =
        crate::wait_for(Duration::from_secs(20), || async move { tokio::net::TcpStream::connect(addr).await.is_ok() })
            .await;
    assert!(up, "{what} did not start listening on {addr}");
}

/// Runs git in `dir` as Ann (author and committer); returns its trimmed
/// stdout, and panics with its stderr when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Ann")
        .env("GIT_AUTHOR_EMAIL", "ann@example.org")
        .env("GIT_COMMITTER_NAME", "Ann")
        .env("GIT_COMMITTER_EMAIL", "ann@example.org")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every mail delivered into `maildir` so far (new and seen).
pub fn mails(maildir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for e in std::fs::read_dir(maildir.join(sub)).into_iter().flatten().flatten() {
            out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}

/// Pids of processes with an environment variable `prefix...` whose value
/// starts with `value_prefix` (after the `=`).
pub(crate) fn processes_with_env(prefix: &str, value_prefix: &str) -> Vec<i32> {
    let needle = format!("{prefix}{value_prefix}");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv.starts_with(needle.as_bytes())) {
            out.push(pid);
        }
    }
    out
}

/// Bare repositories served read-only by `git daemon` on loopback, and a
/// working clone of each to commit in.
pub struct GitHost {
    pub dir: tempfile::TempDir,
    pub port: u16,
    _daemon: Server,
}

impl GitHost {
    pub async fn start() -> GitHost {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("srv");
        std::fs::create_dir_all(&base).expect("srv");
        let addr = crate::free_addr();
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

    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}.git", self.port)
    }

    /// A new repository `name` with a working clone; returns the clone's path.
    pub fn create(&self, name: &str) -> PathBuf {
        let bare = self.dir.path().join("srv").join(format!("{name}.git"));
        let work = self.dir.path().join("work").join(name);
        std::fs::create_dir_all(&work).expect("work dir");
        git(self.dir.path(), &["init", "--quiet", "--bare", "-b", "main", bare.to_str().expect("path")]);
        git(&work, &["init", "--quiet", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().expect("path")]);
        work
    }

    /// Writes files, commits them and pushes them to `main`; returns the commit id.
    pub fn commit(&self, work: &Path, files: &[(&str, &str)], message: &str) -> String {
        self.commit_to(work, files, message, "refs/heads/main")
    }

    /// Commits files in `work` on top of its `HEAD` and pushes the commit
    /// to `refname` only (a pull request's ref, a new branch); returns it.
    pub fn commit_to(&self, work: &Path, files: &[(&str, &str)], message: &str, refname: &str) -> String {
        for (path, content) in files {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
            std::fs::write(p, content).expect("write");
        }
        git(work, &["add", "-A"]);
        git(work, &["commit", "--quiet", "-m", message]);
        let commit = git(work, &["rev-parse", "HEAD"]);
        git(work, &["push", "--quiet", "origin", &format!("HEAD:{refname}")]);
        commit
    }
}

impl crate::Farm {
    /// Posts `body` to `path` on the web port with `headers`, as a forge's
    /// hook delivery; returns the status and the JSON answer (null if none).
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new().post(format!("{}{path}", self.url())).body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("the hook answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// The hex HMAC-SHA256 of `body` with `secret`: how GitHub and Gitea sign
/// a hook delivery.
pub fn hook_signature(secret: &str, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}
