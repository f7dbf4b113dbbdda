//! `kiln internal git-checkout`: puts one revision of a git repository in
//! the build's work dir. Each worker keeps a bare mirror per repository URL
//! under its dir (`git/`), so a build fetches only what is new; builds that
//! share a repository take turns on its mirror (a file lock), then each
//! clones from it into its own scratch dir and checks the revision out.
//!
//! Prints the full commit id on stdout (the step sets property `revision`).

use anyhow::{bail, Context};
use kiln_core::config::{check_branch, check_revision};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// A `git` command that never prompts and never reads the user's config
/// for credentials helpers that could hang a build.
fn git() -> Command {
    let mut c = Command::new("git");
    c.env("GIT_TERMINAL_PROMPT", "0").env("GIT_ASKPASS", "true").env("LC_ALL", "C").stdin(Stdio::null());
    c
}

/// Runs git with its output on our stderr (the build log).
fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    run_vcs(cmd, "git", what)
}

/// Runs a version control tool (`tool` names it in errors) with its output
/// on our stderr (the build log).
pub(crate) fn run_vcs(cmd: &mut Command, tool: &str, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("cannot run {tool} ({what}); is {tool} installed on this worker?"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs a version control tool and returns its trimmed stdout, or `None`
/// when it fails.
pub(crate) fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The branch and exact revision a build asks for: a build may name
/// another branch (property `branch`) or a revision (`revision`, a commit
/// or node id); else `branch`, the configured one, at its tip.
pub(crate) fn requested(branch: &str) -> anyhow::Result<(String, Option<String>)> {
    let branch = match std::env::var("KILN_PROP_BRANCH") {
        Ok(b) if !b.is_empty() => b,
        _ => branch.to_string(),
    };
    check_branch(&branch).map_err(anyhow::Error::msg)?;
    let wanted = std::env::var("KILN_PROP_REVISION").ok().filter(|r| !r.is_empty());
    if let Some(r) = &wanted {
        check_revision(r).map_err(|e| anyhow::anyhow!("property revision: {e}"))?;
    }
    Ok((branch, wanted))
}

/// The pull request ref a test build's revision is on (property
/// `fetch_ref`), checked to be one: it goes into a git command line.
fn pull_ref() -> anyhow::Result<Option<String>> {
    match std::env::var("KILN_PROP_FETCH_REF") {
        Ok(r) if !r.is_empty() => {
            kiln_core::change::check_fetch_ref(&r).map_err(|e| anyhow::anyhow!("property fetch_ref: {e}"))?;
            Ok(Some(r))
        }
        _ => Ok(None),
    }
}

/// Whether the master marked this build's source untrusted.
fn untrusted_source() -> bool {
    std::env::var(kiln_proto::wire::UNTRUSTED_SOURCE_ENV).is_ok_and(|v| v == "1")
}

/// Refuses a checkout whose `.gitmodules` names a submodule by any URL
/// but one relative to the repository (`./`, `../`).
fn only_relative_submodules(checkout: &Path) -> anyhow::Result<()> {
    let listed = output(git().arg("-C").arg(checkout).args([
        "config",
        "--file",
        ".gitmodules",
        "--get-regexp",
        r"^submodule\..*\.url$",
    ]))
    .unwrap_or_default();
    for line in listed.lines() {
        let url = line.split_once(' ').map_or("", |(_, u)| u.trim());
        if !(url.starts_with("./") || url.starts_with("../")) {
            bail!(
                "this build's code is untrusted (a pull request from a fork) and its .gitmodules names {url:?}; \
                 only submodules relative to the repository (./ or ../) are fetched for it"
            );
        }
    }
    Ok(())
}

/// The name of a repository's mirror under the worker dir.
pub(crate) fn mirror_key(url: &str) -> String {
    hex::encode(&Sha256::digest(url.as_bytes())[..10])
}

pub fn git_checkout(url: &str, branch: &str, subdir: Option<&str>, submodules: bool) -> anyhow::Result<()> {
    kiln_core::config::check_git_url(url).map_err(|e| anyhow::anyhow!("repository URL {url:?} {e}"))?;
    let worker_dir = crate::pipeline::env_path("KILN_WORKER_DIR")?;
    let build_dir = crate::pipeline::env_path("KILN_BUILD_DIR")?;
    let scratch = crate::pipeline::env_path("KILN_SCRATCH")?;
    let (branch, wanted) = requested(branch)?;

    let cache_root = worker_dir.join("git");
    fs::create_dir_all(&cache_root)?;
    let key = mirror_key(url);
    let mirror = cache_root.join(format!("{key}.git"));
    let lock = fs::File::create(cache_root.join(format!("{key}.lock")))?;
    lock.lock().context("cannot lock the repository mirror")?;
    if !mirror.join("HEAD").exists() {
        let _ = fs::remove_dir_all(&mirror);
        run(git().arg("init").arg("--quiet").arg("--bare").arg(&mirror), "git init")?;
    }
    eprintln!("kiln: fetching {}", kiln_core::redact::url_for_logs(url));
    run(
        git()
            .arg("-C")
            .arg(&mirror)
            .args(["fetch", "--quiet", "--force", "--prune", "--no-tags", "--", url])
            .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]),
        "git fetch",
    )?;
    let commit = match &wanted {
        Some(rev) => {
            let have = |m: &Path| {
                output(git().arg("-C").arg(m).args(["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")]))
            };
            match have(&mirror) {
                Some(c) => c,
                None => {
                    // Not on any branch or tag: a pull request's ref has it
                    // (forges keep a fork's commits there too), else ask the
                    // server for the commit itself.
                    let what = match pull_ref()? {
                        Some(r) => format!("+{r}:{r}"),
                        None => rev.clone(),
                    };
                    let fetched = run(
                        git().arg("-C").arg(&mirror).args(["fetch", "--quiet", "--no-tags", "--", url, &what]),
                        "git fetch of the revision",
                    );
                    match (fetched, have(&mirror)) {
                        (_, Some(c)) => c,
                        _ => bail!("revision {rev} is not in {url}"),
                    }
                }
            }
        }
        None => output(git().arg("-C").arg(&mirror).args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}^{{commit}}"),
        ]))
        .with_context(|| format!("{} has no branch {branch}", kiln_core::redact::url_for_logs(url)))?,
    };
    let checkout = scratch.join("checkout");
    let _ = fs::remove_dir_all(&checkout);
    // Copies, not hard links, of the mirror's objects: the tree (and its
    // `.git`) is handed to the build user, and a hard link would hand over
    // the mirror's own files with it, for a build to rewrite what the next
    // build of the repository checks out.
    run(
        git().args(["clone", "--quiet", "--no-checkout", "--no-hardlinks"]).arg(&mirror).arg(&checkout),
        "git clone from the mirror",
    )?;
    drop(lock);
    run(git().arg("-C").arg(&checkout).args(["remote", "set-url", "origin", url]), "git remote set-url")?;
    run(git().arg("-C").arg(&checkout).args(["checkout", "--quiet", "--detach", &commit]), "git checkout")?;
    if submodules {
        eprintln!("kiln: updating submodules");
        // Relative submodule URLs resolve against origin, which is the real URL again.
        let mut update = git();
        update.arg("-C").arg(&checkout).args(["submodule", "update", "--init", "--quiet"]);
        if untrusted_source() {
            // A fork's .gitmodules must not make the worker fetch whatever
            // its credentials reach: only the repository's neighbours, and
            // no deeper (a nested .gitmodules is not read before the fetch).
            only_relative_submodules(&checkout)?;
            eprintln!("kiln: untrusted code (a pull request from a fork): nested submodules are not fetched");
        } else {
            update.arg("--recursive");
        }
        run(&mut update, "git submodule update")?;
    }
    let subject =
        output(git().arg("-C").arg(&checkout).args(["log", "-1", "--format=%s", &commit])).unwrap_or_default();
    move_into_work_dir(
        &checkout,
        subdir,
        &build_dir,
        &format!("{} at {commit}", kiln_core::redact::url_for_logs(url)),
    )?;
    let _ = fs::remove_dir_all(&checkout);
    // One write: the log interleaves stderr and stdout (the commit, below)
    // at write boundaries, and a line written in pieces could be split.
    let line = format!("kiln: checked out {} {branch} at {commit} ({subject})\n", kiln_core::redact::url_for_logs(url));
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    println!("{commit}");
    Ok(())
}

/// Moves the checkout (or its `subdir`) into the build's empty work dir,
/// which is on the same filesystem as the scratch dir the checkout is in.
pub(crate) fn move_into_work_dir(
    checkout: &Path,
    subdir: Option<&str>,
    build_dir: &Path,
    what: &str,
) -> anyhow::Result<()> {
    let tree = match subdir {
        Some(dir) => {
            // Each part a directory of the checkout itself: a repository
            // whose `subdir` is a link would have root move whatever it
            // points at into the build.
            let mut t = checkout.to_path_buf();
            for part in dir.split('/') {
                t.push(part);
                if !t.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    bail!("{what} has no directory {dir} (a link is not followed)");
                }
            }
            t
        }
        None => checkout.to_path_buf(),
    };
    for entry in fs::read_dir(&tree)? {
        let entry = entry?;
        fs::rename(entry.path(), build_dir.join(entry.file_name()))
            .with_context(|| format!("cannot move {} into the work dir", entry.path().display()))?;
    }
    Ok(())
}
