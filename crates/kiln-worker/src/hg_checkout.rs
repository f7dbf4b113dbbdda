//! `kiln internal hg-checkout`: puts one revision of a Mercurial repository
//! in the build's work dir, as `git-checkout` does for git: a mirror per
//! repository URL under the worker dir (`hg/`, file-locked) pulls what is
//! new, then each build clones the revision from it into its scratch dir.
//! The clone copies (pull protocol), never hard-links, the mirror's store:
//! the tree and its `.hg` are handed to the build user.
//!
//! `hg` runs with no user or system configuration, no prompts, and
//! subrepositories refused: a tree's `.hgsub` could name any URL.
//!
//! Prints the full node id on stdout (the step sets property `revision`).

use crate::checkout::output;
use anyhow::{bail, Context};
use kiln_core::config::{check_hg_url, check_revision};
use std::fs;
use std::process::{Command, Stdio};

fn hg() -> Command {
    let mut c = Command::new("hg");
    c.env("HGPLAIN", "1").env("HGRCPATH", "").env("LC_ALL", "C").stdin(Stdio::null());
    c.args(["--noninteractive", "--config", "subrepos.allowed=false", "--config", "ui.ssh=ssh -o BatchMode=yes"]);
    c
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    crate::checkout::run_vcs(cmd, "hg (Mercurial)", what)
}

pub fn hg_checkout(url: &str, branch: &str, subdir: Option<&str>) -> anyhow::Result<()> {
    check_hg_url(url).map_err(|e| anyhow::anyhow!("repository URL {e}"))?;
    let shown = kiln_core::redact::url_for_logs(url);
    let worker_dir = crate::pipeline::env_path("KILN_WORKER_DIR")?;
    let build_dir = crate::pipeline::env_path("KILN_BUILD_DIR")?;
    let scratch = crate::pipeline::env_path("KILN_SCRATCH")?;
    let (branch, wanted) = crate::checkout::requested(branch)?;

    let cache_root = worker_dir.join("hg");
    fs::create_dir_all(&cache_root)?;
    let key = crate::checkout::mirror_key(url);
    let mirror = cache_root.join(&key);
    let lock = fs::File::create(cache_root.join(format!("{key}.lock")))?;
    lock.lock().context("cannot lock the repository mirror")?;
    if !mirror.join(".hg").exists() {
        let _ = fs::remove_dir_all(&mirror);
        run(hg().arg("init").arg(&mirror), "hg init")?;
    }
    eprintln!("kiln: pulling {shown}");
    run(hg().arg("-R").arg(&mirror).args(["pull", "--quiet", "--", url]), "hg pull")?;
    // A revision the build names, else the tip of the branch; `id(...)`
    // and `branch(...)` keep a name from being read as any other revset.
    if branch.contains(['\'', '"', '\\']) {
        bail!("the branch name {branch:?} has quotes, which kiln does not pass to hg");
    }
    let revset = match &wanted {
        Some(rev) => format!("id('{rev}')"),
        None => format!("max(branch('literal:{branch}'))"),
    };
    let commit = output(hg().arg("-R").arg(&mirror).args(["log", "-r", &revset, "-T", "{node}\\n"]))
        .and_then(|o| o.lines().last().map(str::to_string))
        .filter(|n| check_revision(n).is_ok())
        .with_context(|| match &wanted {
            Some(rev) => format!("revision {rev} is not in {shown}"),
            None => format!("{shown} has no branch {branch}"),
        })?;
    let checkout = scratch.join("checkout");
    let _ = fs::remove_dir_all(&checkout);
    run(
        hg().args(["clone", "--quiet", "--pull", "-u", &commit]).arg(&mirror).arg(&checkout),
        "hg clone from the mirror",
    )?;
    drop(lock);
    let subject = output(hg().arg("-R").arg(&checkout).args(["log", "-r", &commit, "-T", "{desc|firstline}"]))
        .unwrap_or_default();
    crate::checkout::move_into_work_dir(&checkout, subdir, &build_dir, &format!("{shown} at {commit}"))?;
    let _ = fs::remove_dir_all(&checkout);
    // One write, as the git checkout's (stdout and stderr share the log).
    let line = format!("kiln: checked out {shown} {branch} at {commit} ({subject})\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    println!("{commit}");
    Ok(())
}
