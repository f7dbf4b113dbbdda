//! Polling git and Mercurial remotes, for hosts that cannot send hooks:
//! every branch a component with `poll = "5m"` builds from is looked at
//! (`git ls-remote`, `hg identify`) at that interval. A new tip is fetched
//! into a mirror under `data_dir/git/` (`data_dir/hg/`, in `hg`) to learn
//! which files changed, then goes to
//! [`crate::ops::requests::submit_change`] like a pushed change. The last tip seen
//! is in the database and is claimed by a conditional update, so masters
//! sharing a database act on a push once; the first sight of a branch
//! builds nothing.

use crate::caller::Caller;
use crate::shared::Shared;
use kiln_core::change::Change;
use kiln_core::config::{check_revision, Source, Vcs};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the poller looks at what is due.
const TICK: Duration = Duration::from_secs(2);

use super::remote::Description;
pub use super::remote::NoTip;

use crate::mirrors::{fetched, git, git_output, mirror_dir};

/// The commit a branch of a remote points at now (git asks the remote;
/// Mercurial pulls into the master's mirror under `data_dir` first).
pub async fn remote_tip(data_dir: &Path, vcs: Vcs, url: &str, branch: &str) -> Result<String, NoTip> {
    if vcs == Vcs::Hg {
        return super::hg::remote_tip(&mirror_dir(data_dir, vcs, url), url, branch).await;
    }
    let out = git_output(git().args(["ls-remote", "--", url, &format!("refs/heads/{branch}")]))
        .await
        .map_err(|e| NoTip(e.0))?;
    let rev = out.split_whitespace().next().ok_or_else(|| NoTip(format!("{url} has no branch {branch}")))?;
    check_revision(rev).map_err(NoTip)?;
    Ok(rev.to_string())
}

pub async fn run(shared: Arc<Shared>) {
    let mut next_due: BTreeMap<(Vcs, String, String), Instant> = BTreeMap::new();
    loop {
        tokio::time::sleep(TICK).await;
        // Every polled (url, branch) with the shortest interval any component asks.
        let mut wanted: BTreeMap<(Vcs, String, String), Duration> = BTreeMap::new();
        for c in &shared.farm().cfg.components {
            if let Some(Source::Vcs(g)) = &c.source {
                if let Some(every) = g.poll {
                    let e = wanted.entry((g.vcs, g.url.clone(), g.branch.clone())).or_insert(every);
                    *e = (*e).min(every);
                }
            }
        }
        next_due.retain(|k, _| wanted.contains_key(k));
        for (key, every) in wanted {
            let now = Instant::now();
            if next_due.get(&key).is_some_and(|at| *at > now) {
                continue;
            }
            next_due.insert(key.clone(), now + every);
            let (vcs, url, branch) = key;
            if let Err(e) = poll(&shared, vcs, &url, &branch).await {
                tracing::warn!(url = %kiln_core::redact::url_for_logs(&url), %branch, error = %e, "polling failed");
            }
        }
    }
}

async fn poll(shared: &Arc<Shared>, vcs: Vcs, url: &str, branch: &str) -> Result<(), String> {
    let data_dir = shared.farm().data_dir();
    let tip = remote_tip(&data_dir, vcs, url, branch).await.map_err(|e| e.to_string())?;
    let seen = shared.store.polled_revision(url, branch).await.map_err(|e| e.to_string())?;
    if seen.as_deref() == Some(tip.as_str()) {
        return Ok(());
    }
    let won =
        shared.store.claim_polled_revision(url, branch, seen.as_deref(), &tip).await.map_err(|e| e.to_string())?;
    let Some(before) = seen.filter(|_| won) else {
        if won {
            tracing::info!(url = %kiln_core::redact::url_for_logs(url), %branch, revision = %tip, "polling a new branch; builds start with its next change");
        }
        return Ok(());
    };
    let described = match vcs {
        Vcs::Git => describe(&data_dir, url, branch, &before, &tip).await,
        Vcs::Hg => super::hg::describe(&mirror_dir(&data_dir, vcs, url), &before, &tip).await,
    };
    let (files, who, comments) = match described {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(url = %kiln_core::redact::url_for_logs(url), error = %e, "cannot tell which files changed; building every component of the branch");
            (None, None, String::new())
        }
    };
    let change = Change {
        urls: vec![url.to_string()],
        branch: branch.to_string(),
        revision: tip.clone(),
        files,
        // The poller knows the commit's author, not who pushed it.
        author: who.clone(),
        who,
        comments,
        ..Default::default()
    };
    match crate::ops::requests::submit_change(shared, &Caller::system("poller"), &change, "poller").await {
        Ok(Some(created)) => {
            tracing::info!(url = %kiln_core::redact::url_for_logs(url), %branch, revision = %tip, request = created.request_id, builds = created.builds.len(), "change found by polling")
        }
        Ok(None) => {
            tracing::info!(url = %kiln_core::redact::url_for_logs(url), %branch, revision = %tip, "change found by polling touches no component")
        }
        Err(e) => {
            tracing::error!(url = %kiln_core::redact::url_for_logs(url), error = %e, "cannot request builds for a polled change")
        }
    }
    Ok(())
}

/// Files changed between two commits, the new one's author and subject,
/// from a mirror fetched now.
async fn describe(data_dir: &Path, url: &str, branch: &str, before: &str, tip: &str) -> Result<Description, String> {
    let held = fetched(data_dir, url, &[&format!("refs/heads/{branch}")]).await?;
    let mirror = &held.path;
    let log = git_output(git().arg("-C").arg(mirror).args(["log", "-1", "--format=%an%x00%ae%x00%s", tip])).await?;
    let mut parts = log.trim_end().splitn(3, '\0');
    let (name, email, subject) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let who = (!name.is_empty()).then(|| if email.is_empty() { name.to_string() } else { format!("{name} <{email}>") });
    // An old tip that is gone (a force push) leaves the changed files unknown.
    let files = match git_output(git().arg("-C").arg(mirror).args(["diff", "--name-only", before, tip, "--"])).await {
        Ok(out) => Some(out.lines().map(str::to_string).collect()),
        Err(_) => None,
    };
    Ok((files, who, subject.to_string()))
}

/// The text of `path` in the revision a build of `url`'s `branch` would
/// check out (`revision`, else the branch's tip), read from the master's
/// mirror after fetching the branch into it. For the build-dependency
/// check: the file is only read, never run, and at most `limit` bytes.
pub async fn file_at(
    data_dir: &Path,
    url: &str,
    branch: &str,
    revision: Option<&str>,
    path: &str,
    limit: usize,
) -> Result<String, String> {
    let held = fetched(data_dir, url, &[&format!("refs/heads/{branch}")]).await?;
    let mirror = &held.path;
    let rev = match revision {
        Some(r) => {
            check_revision(r)?;
            r.to_string()
        }
        None => format!("refs/heads/{branch}"),
    };
    // One commit for both reads below (the poller may move the branch meanwhile).
    let commit = git_output(
        git()
            .arg("-C")
            .arg(mirror)
            .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
            .arg(format!("{rev}^{{commit}}")),
    )
    .await?;
    let commit = commit.trim();
    check_revision(commit)?;
    let object = format!("{commit}:{path}");
    let size = git_output(git().arg("-C").arg(mirror).args(["cat-file", "-s", &object])).await?;
    if size.trim().parse::<usize>().map_err(|e| e.to_string())? > limit {
        return Err(format!("{path} is larger than {limit} bytes"));
    }
    Ok(git_output(git().arg("-C").arg(mirror).args(["cat-file", "blob", &object])).await?)
}
