//! The small pieces process tests share around the outside servers they
//! start (git daemon, `hg serve`, aiosmtpd, ngIRCd): a guard that stops a
//! server when the test ends, waiting until one listens, a `git` that
//! commits as a fixed person, and reading what a maildir received.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
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
