//! The upstream tarball (`NAME_VERSION.orig.tar.*`) a `3.0 (quilt)` tree
//! needs beside it before `dpkg-source -b`, found the way git-buildpackage
//! finds it: from the `pristine-tar` branch, from the upstream tag as `git
//! archive`, or made from the tree without `debian/`. Runs inside the
//! build's sandbox, as the build user, on the checkout's own repository.

use super::run;
use anyhow::{bail, Context};
use kiln_core::config::{OrigRule, OrigSource};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The way an upstream tarball is made for one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Way {
    /// `pristine-tar checkout` of this file name.
    PristineTar(String),
    /// `git archive` of this tag.
    UpstreamTag(String),
    Tree,
}

impl Way {
    pub fn describe(&self) -> String {
        match self {
            Way::PristineTar(_) => "from the pristine-tar branch".into(),
            Way::UpstreamTag(tag) => format!("from the upstream tag {tag}"),
            Way::Tree => "made from the tree without debian/".into(),
        }
    }
}

/// Whether the tree is `3.0 (quilt)` (and so needs an upstream tarball).
pub fn is_quilt(tree: &Path) -> anyhow::Result<bool> {
    let format = Path::new("debian/source/format");
    if tree.join(format).symlink_metadata().is_err() {
        return Ok(false);
    }
    Ok(crate::sandbox::read_in_tree(tree, format)?.trim() == "3.0 (quilt)")
}

fn git(tree: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(tree).env("GIT_TERMINAL_PROMPT", "0").env("LC_ALL", "C").stdin(Stdio::null());
    c
}

/// The first line of a git command's output, when it succeeds.
fn git_line(tree: &Path, args: &[&str]) -> Option<String> {
    let out = git(tree).args(args).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_string())
}

/// The pristine-tar branch of the checkout: its own, else the remote's
/// (a checkout is a clone, so the branch is `origin/pristine-tar`).
fn pristine_tar_branch(tree: &Path) -> Option<&'static str> {
    ["refs/heads/pristine-tar", "refs/remotes/origin/pristine-tar"]
        .into_iter()
        .find(|r| git_line(tree, &["rev-parse", "--verify", "--quiet", r]).is_some())
}

/// Which way the tarball of `package` at upstream version `upstream` is
/// made under `rule`; an error says what the chosen way lacks.
pub fn choose(tree: &Path, package: &str, upstream: &str, rule: &OrigRule) -> anyhow::Result<Way> {
    let has_git = tree.join(".git").exists();
    let pristine = || -> Option<String> {
        let branch = pristine_tar_branch(tree)?;
        let out = git(tree).args(["ls-tree", "--name-only", branch]).stderr(Stdio::null()).output().ok()?;
        let prefix = format!("{package}_{upstream}.orig.tar.");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(".delta"))
            .find(|name| name.starts_with(&prefix) && !name[prefix.len()..].contains('/'))
            .map(str::to_string)
    };
    let tag = kiln_core::debian::upstream_tag(&rule.upstream_tag, upstream);
    let tagged =
        || git_line(tree, &["rev-parse", "--verify", "--quiet", &format!("refs/tags/{tag}^{{commit}}")]).is_some();
    let orig = format!("{package}_{upstream}.orig.tar.*");
    match rule.source {
        OrigSource::PristineTar => match has_git.then(pristine).flatten() {
            Some(name) => Ok(Way::PristineTar(name)),
            None => bail!("orig = \"pristine-tar\": the repository's pristine-tar branch has no {orig}"),
        },
        OrigSource::UpstreamTag if has_git && tagged() => Ok(Way::UpstreamTag(tag)),
        OrigSource::UpstreamTag => bail!("orig = \"upstream-tag\": the repository has no tag {tag}"),
        OrigSource::Tree => Ok(Way::Tree),
        OrigSource::Auto => Ok(match has_git.then(pristine).flatten() {
            Some(name) => Way::PristineTar(name),
            None if has_git && tagged() => Way::UpstreamTag(tag),
            None => Way::Tree,
        }),
    }
}

/// Makes the tarball in `out` the chosen way; returns its path.
/// `mtime` (seconds) dates the files of a tarball made from the tree, so
/// two builds of one tree make the same bytes.
pub fn make(way: &Way, tree: &Path, package: &str, upstream: &str, out: &Path, mtime: i64) -> anyhow::Result<PathBuf> {
    let prefix = format!("{package}-{upstream}/");
    match way {
        Way::PristineTar(name) => {
            let path = out.join(name);
            run(
                Command::new("pristine-tar").arg("checkout").arg(&path).current_dir(tree).stdin(Stdio::null()),
                "pristine-tar checkout",
            )
            .context("is pristine-tar installed on this worker?")?;
            Ok(path)
        }
        Way::UpstreamTag(tag) => {
            let path = out.join(format!("{package}_{upstream}.orig.tar.gz"));
            // git's own gzip writes no name and no time: the same tag makes the same bytes.
            run(
                git(tree)
                    .args(["archive", "--format=tar.gz", &format!("--prefix={prefix}"), "-o"])
                    .arg(&path)
                    .arg(format!("refs/tags/{tag}")),
                "git archive of the upstream tag",
            )?;
            Ok(path)
        }
        Way::Tree => {
            let path = out.join(format!("{package}_{upstream}.orig.tar.gz"));
            let tmp = out.join(format!(".{package}_{upstream}.orig.tmp"));
            let mut cmd = Command::new("tar");
            cmd.arg("-C").arg(tree).args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                &format!("--mtime=@{mtime}"),
                &format!("--transform=s,^\\.,{},", prefix.trim_end_matches('/')),
                "--exclude=./debian",
                "--exclude-vcs",
                &format!("--exclude=./{}", kiln_core::pipeline::OUTPUT_DIR),
                "--use-compress-program=gzip -n",
                "-cf",
            ]);
            cmd.arg(&tmp).arg(".");
            run(&mut cmd, "tar of the tree")?;
            fs::rename(&tmp, &path)?;
            Ok(path)
        }
    }
}
