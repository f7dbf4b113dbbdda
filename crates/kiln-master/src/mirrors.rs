//! The master's mirrors of the repositories components build from
//! (`DATA_DIR/git/KEY.git`, `DATA_DIR/hg/KEY`): the poller fetches into
//! them to learn what a change touched, and so does a pull request or new
//! branch whose hook does not list its files ([`changed_files`]). Garbage
//! collection removes those of repositories the config no longer names.

use kiln_core::change::{check_fetch_ref, Change};
use kiln_core::config::{check_branch, check_revision, Source, Vcs};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::Duration;
use tokio::process::Command;

/// A remote that does not answer in this time is given up on.
const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// A git command that failed, in git's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GitError(pub String);

impl From<GitError> for String {
    fn from(e: GitError) -> String {
        e.0
    }
}

/// A `git` command that never prompts and dies with its task.
pub(crate) fn git() -> Command {
    let mut c = Command::new("git");
    c.env("GIT_TERMINAL_PROMPT", "0").env("GIT_ASKPASS", "true").env("LC_ALL", "C").kill_on_drop(true);
    c.stdin(std::process::Stdio::null());
    c
}

/// Runs git and returns its stdout, or its stderr as the error.
pub(crate) async fn git_output(cmd: &mut Command) -> Result<String, GitError> {
    match tokio::time::timeout(GIT_TIMEOUT, cmd.output()).await {
        Err(_) => Err(GitError("git timed out".into())),
        Ok(Err(e)) => Err(GitError(format!("cannot run git: {e}"))),
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(Ok(out)) => Err(GitError(String::from_utf8_lossy(&out.stderr).trim().chars().take(500).collect())),
    }
}

/// A git mirror held by one task: the poller, the build-dependency check
/// and hooks all fetch into the same mirrors, and two fetches at once
/// would fail on each other's ref locks.
pub(crate) struct HeldMirror {
    pub path: PathBuf,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

/// The bare mirror of `url` under `data_dir` (made when missing), once no
/// other task holds it.
async fn git_mirror(data_dir: &Path, url: &str) -> Result<HeldMirror, GitError> {
    type Locks = std::sync::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    let path = mirror_dir(data_dir, Vcs::Git, url);
    let lock = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(path.clone())
        .or_default()
        .clone();
    let held = HeldMirror { _held: lock.lock_owned().await, path };
    if !held.path.join("HEAD").exists() {
        std::fs::create_dir_all(&held.path)
            .map_err(|e| GitError(format!("cannot make {}: {e}", held.path.display())))?;
        git_output(git().arg("init").arg("--quiet").arg("--bare").arg(&held.path)).await?;
    }
    Ok(held)
}

/// The mirror of `url`, held, after fetching `refs` into it (each the
/// same ref on both sides, forced: `refs/heads/main`, `refs/pull/7/head`).
pub(crate) async fn fetched(data_dir: &Path, url: &str, refs: &[&str]) -> Result<HeldMirror, GitError> {
    let held = git_mirror(data_dir, url).await?;
    let mut fetch = git();
    fetch.arg("-C").arg(&held.path).args(["fetch", "--quiet", "--force", "--no-tags", "--", url]);
    fetch.args(refs.iter().map(|r| format!("+{r}:{r}")));
    git_output(&mut fetch).await?;
    Ok(held)
}

/// The files `change` touched, learnt from the master's mirror of `url`
/// (the repository of a component it is to): a pull request's head
/// compared with its base branch, a new branch's tip with the default
/// branch, each from where they parted (`git diff A...B`).
pub async fn changed_files(data_dir: &Path, url: &str, change: &Change) -> Result<Vec<String>, GitError> {
    let (base, head_ref) = match (&change.pull, &change.default_branch) {
        (Some(pull), _) => (change.branch.as_str(), pull.fetch_ref.clone()),
        (None, Some(default)) => (default.as_str(), format!("refs/heads/{}", change.branch)),
        (None, None) => return Err(GitError("nothing to compare the change with".into())),
    };
    // All of it goes into git command lines.
    check_branch(base).map_err(GitError)?;
    check_branch(&change.branch).map_err(GitError)?;
    check_revision(&change.revision).map_err(GitError)?;
    if change.pull.is_some() {
        check_fetch_ref(&head_ref).map_err(GitError)?;
    }
    let held = fetched(data_dir, url, &[&format!("refs/heads/{base}"), &head_ref]).await?;
    let mirror = &held.path;
    let range = format!("refs/heads/{base}...{}", change.revision);
    let out =
        git_output(git().arg("-C").arg(mirror).args(["diff", "--name-only", "--no-renames", &range, "--"])).await?;
    Ok(out.lines().map(str::to_string).collect())
}

/// Where the master mirrors repository `url`.
pub fn mirror_dir(data_dir: &Path, vcs: Vcs, url: &str) -> PathBuf {
    match vcs {
        Vcs::Git => data_dir.join("git").join(format!("{}.git", mirror_key(url))),
        Vcs::Hg => data_dir.join("hg").join(mirror_key(url)),
    }
}

fn mirror_key(url: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(url.as_bytes())[..10])
}

/// The mirrors under `data_dir` of repositories no component of `cfg`
/// builds from.
pub fn unnamed(data_dir: &Path, cfg: &kiln_core::FarmConfig) -> Vec<PathBuf> {
    let named: HashSet<PathBuf> = cfg
        .components
        .iter()
        .filter_map(|c| match &c.source {
            Some(Source::Vcs(v)) => Some(mirror_dir(data_dir, v.vcs, &v.url)),
            _ => None,
        })
        .collect();
    ["git", "hg"]
        .iter()
        .filter_map(|d| std::fs::read_dir(data_dir.join(d)).ok())
        .flat_map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()))
        .filter(|p| !named.contains(p))
        .collect()
}
