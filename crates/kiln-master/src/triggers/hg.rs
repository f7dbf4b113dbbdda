//! What the poller asks of Mercurial: a branch's tip on the remote, and
//! what changed between two revisions, both from a mirror under
//! `data_dir/hg/` pulled now. `hg` runs with no user or system configuration (`HGRCPATH`
//! empty, `HGPLAIN`), so nothing on the master's host changes what it does
//! or prints.

use super::remote::{Description, NoTip};
use kiln_core::config::check_revision;
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;

/// A remote that does not answer in this time is tried again next interval.
const HG_TIMEOUT: Duration = Duration::from_secs(120);

fn hg() -> Command {
    let mut c = Command::new("hg");
    c.env("HGPLAIN", "1").env("HGRCPATH", "").env("LC_ALL", "C").kill_on_drop(true);
    c.args(["--noninteractive", "--config", "ui.ssh=ssh -o BatchMode=yes"]);
    c.stdin(std::process::Stdio::null());
    c
}

async fn output(cmd: &mut Command) -> Result<String, String> {
    match tokio::time::timeout(HG_TIMEOUT, cmd.output()).await {
        Err(_) => Err("hg timed out".into()),
        Ok(Err(e)) => Err(format!("cannot run hg: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(Ok(out)) => Err(String::from_utf8_lossy(&out.stderr).trim().chars().take(500).collect()),
    }
}

/// The full node id of the tip of `branch` on the remote: pulled into
/// the mirror, then the branch's newest head there. (`hg identify -r NAME`
/// on the remote would take a bookmark or tag of that name first, which
/// anyone who can push could make.)
pub(super) async fn remote_tip(mirror: &Path, url: &str, branch: &str) -> Result<String, NoTip> {
    let shown = kiln_core::redact::url_for_logs(url);
    if branch.contains(['\'', '"', '\\']) {
        return Err(NoTip(format!("the branch name {branch:?} has quotes, which kiln does not pass to hg")));
    }
    pull(mirror, url).await.map_err(|e| NoTip(format!("{shown}: {e}")))?;
    let revset = format!("max(branch('literal:{branch}'))");
    let out = output(hg().arg("-R").arg(mirror).args(["log", "-r", &revset, "-T", "{node}\n"]))
        .await
        .map_err(|e| NoTip(format!("{shown} has no branch {branch}: {e}")))?;
    let rev = out.trim();
    check_revision(rev).map_err(|_| NoTip(format!("{shown} has no branch {branch}")))?;
    Ok(rev.to_string())
}

/// Pulls everything new from the remote into the mirror (made when missing).
async fn pull(mirror: &Path, url: &str) -> Result<(), String> {
    if !mirror.join(".hg").exists() {
        std::fs::create_dir_all(mirror).map_err(|e| e.to_string())?;
        output(hg().arg("init").arg(mirror)).await?;
    }
    output(hg().arg("-R").arg(mirror).args(["pull", "--quiet", "--", url])).await.map(|_| ())
}

/// Files changed between two revisions, the new one's author and subject,
/// from the mirror [`remote_tip`] just pulled.
pub(super) async fn describe(mirror: &Path, before: &str, tip: &str) -> Result<Description, String> {
    let log = output(hg().arg("-R").arg(mirror).args(["log", "-r", tip, "-T", "{author}\\0{desc|firstline}"])).await?;
    let (who, subject) = log.split_once('\0').unwrap_or((log.as_str(), ""));
    let who = (!who.trim().is_empty()).then(|| who.trim().to_string());
    // An old revision that is gone (stripped) leaves the changed files unknown.
    let files = output(hg().arg("-R").arg(mirror).args(["status", "--no-status", "--rev", before, "--rev", tip])).await;
    Ok((files.ok().map(|o| o.lines().map(str::to_string).collect()), who, subject.to_string()))
}
