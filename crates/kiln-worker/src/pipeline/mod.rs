//! The helpers behind the standard pipelines, run as `kiln internal ...`
//! by the pipeline's steps (see `kiln_core::pipeline`). Each works in the
//! build's work dir (the source tree) and its scratch dir, both given by the
//! worker in the environment, and says what it does on stderr.
//!
//! The build root is made and filled in `root`; the build then runs in
//! bubblewrap without network, as an unprivileged user with no
//! capabilities. With the `sbuild` executor, sbuild's unshare mode takes
//! the cached tarball and does the unpacking, installing and building
//! itself. The rpm helpers are in `rpm`, upstream tarballs in `orig`.

use anyhow::{bail, Context};
use kiln_core::debian::{
    changelog_entry, changelog_head, nightly_upstream_version, nightly_version, upstream_version, NightlyPlace,
};
use kiln_core::pipeline::OUTPUT_DIR;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod failure;
mod orig;
mod root;
mod rpm;
pub use failure::keep_logs;
use root::{build_root_repos, bwrap, keep_build_marks};
pub use root::{deb_deps, deb_root, root_update, RootOptions};
pub use rpm::{rpm_build, rpm_source};

/// The unprivileged user builds run as inside the root.
const BUILD_UID: u32 = 1000;

pub(crate) fn env_path(name: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .with_context(|| format!("{name} is not set; this runs as a kiln build step"))
}

/// Runs a command with its output on our stderr (stdout is for results).
fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// What `deb-source` is told by the pipeline.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// The target's suite, named in kiln's changelog entry.
    pub distribution: Option<String>,
    /// Where a `3.0 (quilt)` tree's upstream tarball comes from.
    pub orig: kiln_core::config::OrigRule,
}

/// `deb-source`: makes the source package in SCRATCH/pkg and prints its
/// version. Nightly builds (no `release=true`) get a changelog entry with
/// the nightly version first; a `3.0 (quilt)` tree gets its upstream
/// tarball first (`orig`). Runs in the build's sandbox.
pub fn deb_source(o: &SourceOptions) -> anyhow::Result<()> {
    let build_dir = env_path("KILN_BUILD_DIR")?;
    let pkg = env_path("KILN_SCRATCH")?.join("pkg");
    fs::create_dir_all(&pkg)?;
    if crate::sandbox::rerun_in_sandbox(&build_dir, &[&build_dir, &pkg])? {
        return Ok(());
    }
    let changelog = build_dir.join("debian/changelog");
    let version = if changelog.symlink_metadata().is_ok() {
        let text = crate::sandbox::read_in_tree(&build_dir, Path::new("debian/changelog"))?;
        let head = changelog_head(&text).map_err(anyhow::Error::msg)?;
        let release = std::env::var("KILN_PROP_RELEASE").is_ok_and(|v| v == "true");
        let way = if orig::is_quilt(&build_dir)? {
            let upstream = upstream_version(&head.version).with_context(|| {
                format!("debian/source/format is 3.0 (quilt) but version {} has no Debian revision", head.version)
            })?;
            Some(orig::choose(&build_dir, &head.package, upstream, &o.orig)?)
        } else {
            None
        };
        // The head entry's date dates a tarball made from the tree.
        let mtime = changelog_timestamp(&build_dir);
        let version = if release {
            head.version.clone()
        } else {
            let build_id: i64 = std::env::var("KILN_BUILD_ID").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
            let now = time::OffsetDateTime::now_utc();
            let date = format!("{:04}{:02}{:02}", now.year(), now.month() as u8, now.day());
            // A tarball made from the tree changes with the tree: each
            // nightly then has an upstream version (and tarball) of its own.
            // Below the head's version while it is UNRELEASED, above it
            // once released (an upload of it may be in the channel).
            let place = NightlyPlace::of(&head);
            let version = if way == Some(orig::Way::Tree) {
                nightly_upstream_version(&head.version, place, &date, build_id)
            } else {
                nightly_version(&head.version, place, &date, build_id)
            };
            let rfc2822 = now.format(&time::format_description::well_known::Rfc2822).context("date")?;
            let maintainer = std::env::var(kiln_proto::wire::CHANGELOG_MAINTAINER_ENV)
                .unwrap_or_else(|_| "kiln <kiln@localhost>".into());
            let entry = changelog_entry(
                &head,
                &version,
                &format!("Nightly build {build_id} by kiln."),
                &maintainer,
                &rfc2822,
                o.distribution.as_deref(),
            );
            // A new file, not a write through whatever the name links to.
            let _ = fs::remove_file(&changelog);
            fs::write(&changelog, entry + &text).context("cannot write debian/changelog")?;
            eprintln!("kiln: nightly build: version {version}");
            version
        };
        if let Some(way) = &way {
            let upstream = upstream_version(&version).context("the version lost its revision")?;
            let made = orig::make(way, &build_dir, &head.package, upstream, &pkg, mtime)?;
            let name = made.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            eprintln!("kiln: upstream tarball {name} {}", way.describe());
        }
        if way.is_some() {
            // For quilt, dpkg-source works in the source directory's parent
            // (it unpacks the upstream tarball there to compare); the tree's
            // own parent is the worker's, so it gets the tree through a
            // link in `pkg` (the native format cannot take a link).
            let link = pkg.join(format!("{}-source", head.package));
            std::os::unix::fs::symlink(&build_dir, &link).context("cannot link the tree into the package dir")?;
            let built = run(Command::new("dpkg-source").arg("-b").arg(&link).current_dir(&pkg), "dpkg-source -b");
            fs::remove_file(&link)?;
            built?;
        } else {
            run(Command::new("dpkg-source").arg("-b").arg(&build_dir).current_dir(&pkg), "dpkg-source -b")?;
        }
        version
    } else {
        // An existing source package: a .dsc and its files at the top.
        let dsc = fs::read_dir(&build_dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "dsc"))
            .with_context(|| "the source has neither debian/ nor a .dsc".to_string())?;
        for e in fs::read_dir(&build_dir)?.flatten() {
            if e.file_type()?.is_file() {
                fs::copy(e.path(), pkg.join(e.file_name()))?;
            }
        }
        let text =
            crate::sandbox::read_in_tree(&build_dir, Path::new(dsc.file_name().context("the .dsc has no name")?))?;
        text.lines()
            .find_map(|l| l.strip_prefix("Version:"))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("{} has no Version field", dsc.display()))?
    };
    println!("{version}");
    Ok(())
}

/// The date of `debian/changelog`'s first entry, in seconds (0 when dpkg
/// cannot read it).
fn changelog_timestamp(tree: &Path) -> i64 {
    Command::new("dpkg-parsechangelog")
        .args(["-l", "debian/changelog", "-STimestamp"])
        .current_dir(tree)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// The `.dsc` that `deb-source` made.
fn made_dsc(pkg: &Path) -> anyhow::Result<PathBuf> {
    fs::read_dir(pkg)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "dsc"))
        .context("no .dsc was made")
}

/// Builds with sbuild in its unshare mode over the cached tarball: sbuild
/// unpacks it in a user namespace, installs the build dependencies (with
/// network), builds without network as its own unprivileged user, and
/// removes the unpacked root. Returns the dir holding the results.
fn sbuild(scratch: &Path, suite: &str, arch: Option<&str>) -> anyhow::Result<PathBuf> {
    let pkg = scratch.join("pkg");
    let dsc = made_dsc(&pkg)?;
    let results = scratch.join("sbuild-out");
    let tmp = scratch.join("tmp");
    fs::create_dir_all(&results)?;
    fs::create_dir_all(&tmp)?;
    let mut cmd = Command::new("sbuild");
    cmd.args(["--chroot-mode=unshare", "--no-run-lintian", "--no-run-autopkgtest", "--no-run-piuparts", "--nolog"]);
    cmd.arg(format!("--chroot={}", scratch.join("root.tar").display()));
    cmd.arg(format!("--dist={suite}"));
    if let Some(arch) = arch {
        cmd.arg(format!("--arch={arch}"));
    }
    let keys = scratch.join("keys");
    for repo in build_root_repos()? {
        fs::create_dir_all(&keys)?;
        let key = keys.join(format!("{}.asc", repo.name));
        fs::write(&key, &repo.key)?;
        cmd.arg(format!("--extra-repository=deb {}", repo.source));
        cmd.arg(format!("--extra-repository-key={}", key.display()));
        eprintln!("kiln: build root uses repository {}: {}", repo.name, repo.source);
    }
    // sbuild unpacks into TMPDIR: inside the scratch dir, whatever is left
    // after a cancel goes with it.
    cmd.env("TMPDIR", &tmp).arg(&dsc).current_dir(&results);
    run(&mut cmd, "sbuild")?;
    // The source package goes with the binaries, as with the other executors.
    for e in fs::read_dir(&pkg)?.flatten() {
        if e.file_type()?.is_file() && !results.join(e.file_name()).exists() {
            fs::copy(e.path(), results.join(e.file_name()))?;
        }
    }
    // The root's packages, as the .buildinfo records them.
    if let Some(buildinfo) = find_one(&results, ".buildinfo")? {
        let text = fs::read_to_string(&buildinfo)?;
        fs::write(scratch.join("buildroot-packages.txt"), installed_build_depends(&text))?;
    }
    Ok(results)
}

/// `name=version` lines from a .buildinfo's `Installed-Build-Depends`.
fn installed_build_depends(buildinfo: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in buildinfo.lines() {
        if line.starts_with("Installed-Build-Depends:") {
            inside = true;
            continue;
        }
        if inside && !line.starts_with(' ') {
            break;
        }
        if inside {
            let entry = line.trim().trim_end_matches(',');
            if let Some((name, rest)) = entry.split_once(" (= ") {
                out.push_str(&format!("{name}={}\n", rest.trim_end_matches(')')));
            }
        }
    }
    out
}

/// `deb-build`: builds the package (in bubblewrap without network as an
/// unprivileged user, with sbuild, or on the host) and puts the results in
/// `.kiln-out/`.
/// `keep`: the component's own `artifacts_on_failure`, kept with the
/// default logs when the build fails.
pub fn deb_build(executor: &str, suite: Option<&str>, arch: Option<&str>, keep: &[String]) -> anyhow::Result<()> {
    let build_dir = env_path("KILN_BUILD_DIR")?;
    let scratch = env_path("KILN_SCRATCH")?;
    let out = output_dir(&build_dir)?;
    let results = match executor {
        "bwrap" => {
            let root = scratch.join("root");
            let build = root.join("build");
            // Maintainer scripts ran as root in the root: /build must still
            // be a directory of it, not a link out of it.
            if !fs::symlink_metadata(&build).is_ok_and(|m| m.is_dir()) {
                bail!("the build root's /build is no longer a directory");
            }
            run(Command::new("chown").arg("-R").arg(format!("{BUILD_UID}:{BUILD_UID}")).arg(&build), "chown")?;
            let setpriv = format!(
                "--reuid={BUILD_UID} --regid={BUILD_UID} --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all"
            );
            // setpriv needs CAP_SETUID to become the build user; once it has,
            // the process holds no capabilities and cannot regain any.
            let mut cmd = bwrap(&root, false);
            cmd.arg("setpriv").args(setpriv.split(' '));
            cmd.args(["--", "env", "HOME=/build", "sh", "-c", "cd /build/src && dpkg-buildpackage -us -uc"]);
            if let Err(e) = run(&mut cmd, "dpkg-buildpackage") {
                failure::keep_after_failure(&build.join("src"), keep);
                return Err(e);
            }
            build
        }
        "sbuild" => sbuild(&scratch, suite.context("the sbuild executor needs --suite")?, arch)?,
        "host" => {
            refuse_host_executor_in_sandbox()?;
            let pkg = scratch.join("pkg");
            let dsc = made_dsc(&pkg)?;
            run(Command::new("dpkg-source").arg("-x").arg(&dsc).arg("src").current_dir(&pkg), "dpkg-source -x")?;
            let built = run(
                Command::new("dpkg-buildpackage").args(["-us", "-uc"]).current_dir(pkg.join("src")),
                "dpkg-buildpackage",
            );
            if let Err(e) = built {
                failure::keep_after_failure(&pkg.join("src"), keep);
                return Err(e);
            }
            pkg
        }
        other => bail!("unknown executor {other}"),
    };
    let wanted = [".deb", ".ddeb", ".udeb", ".dsc", ".buildinfo", ".changes", ".diff.gz"];
    let mut n = 0;
    for e in fs::read_dir(&results)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_file() && (wanted.iter().any(|w| name.ends_with(w)) || name.contains(".tar.")) {
            fs::copy(e.path(), out.join(&name))?;
            n += 1;
        }
    }
    if scratch.join("buildroot-packages.txt").exists() {
        fs::copy(scratch.join("buildroot-packages.txt"), out.join("buildroot-packages.txt"))?;
    }
    if n == 0 {
        bail!("the build produced no package files");
    }
    eprintln!("kiln: {n} files produced");
    Ok(())
}

fn nightly_stamp() -> anyhow::Result<Option<(String, i64)>> {
    if std::env::var("KILN_PROP_RELEASE").is_ok_and(|v| v == "true") {
        return Ok(None);
    }
    let build_id: i64 = std::env::var("KILN_BUILD_ID").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let now = time::OffsetDateTime::now_utc();
    Ok(Some((format!("{:04}{:02}{:02}", now.year(), now.month() as u8, now.day()), build_id)))
}

/// The one file under `dir` (recursively) whose name ends with `suffix`.
fn find_one(dir: &Path, suffix: &str) -> anyhow::Result<Option<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)?.flatten() {
            let t = e.file_type()?;
            if t.is_dir() && !e.file_name().to_string_lossy().starts_with('.') {
                stack.push(e.path());
            } else if t.is_file() && e.file_name().to_string_lossy().ends_with(suffix) {
                found.push(e.path());
            }
        }
    }
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => {
            let names: Vec<String> =
                found.iter().map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string()).collect();
            bail!("several {suffix} files in the source ({}); name one with `spec = \"...\"`", names.join(", "))
        }
    }
}

/// A fresh `.kiln-out/` in the tree for root to copy results into. The tree
/// is the build's: whatever is there (a link to `/etc`, a link inside)
/// goes first, so root writes only into a directory it just made.
fn output_dir(build_dir: &Path) -> anyhow::Result<PathBuf> {
    let out = build_dir.join(OUTPUT_DIR);
    match fs::symlink_metadata(&out) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(&out)?,
        Ok(_) => fs::remove_file(&out)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    fs::create_dir(&out).with_context(|| format!("cannot make {}", out.display()))?;
    Ok(out)
}

/// The `host` executor runs the package's own build scripts on the worker
/// itself: refused where the worker sandboxes build code (it would run them
/// outside), allowed on a root worker trusted to build as root.
fn refuse_host_executor_in_sandbox() -> anyhow::Result<()> {
    if crate::sandbox::Sandbox::from_env().is_some() {
        bail!(
            "the host executor would run the package's build outside the sandbox; this worker sandboxes builds \
             (use the bwrap, sbuild or mock executor, or a worker with --build-user root for trusted components)"
        );
    }
    Ok(())
}

/// The host's own Debian sources (the ones apt on this machine reads): each
/// `deb` entry's http(s) URI and suite, in the order apt lists them.
pub fn host_debian_sources() -> Vec<(String, String)> {
    let mut texts = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> =
            dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "sources")).collect();
        paths.sort();
        texts.extend(paths.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    let list = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    kiln_core::aptsources::debian_sources(&texts, &list)
}

/// The host's Debian mirror and release suite (not `-updates` or
/// `-security`), for the demo and the tests' build roots.
pub fn host_debian_mirror() -> Option<(String, String)> {
    host_debian_sources().into_iter().find(|(_, suite)| !suite.contains('-'))
}
