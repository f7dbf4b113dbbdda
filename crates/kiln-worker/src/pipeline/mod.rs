//! The helpers behind the standard pipelines, run as `kiln internal ...`
//! by the pipeline's steps (see `kiln_core::pipeline`). Each works in the
//! build's work dir (the source tree) and its scratch dir, both given by the
//! worker in the environment, and says what it does on stderr.
//!
//! The build root: `mmdebstrap --variant=buildd` makes a tarball per target,
//! cached under the worker dir and made again when older than `max_age`.
//! Each build unpacks a fresh copy, installs build dependencies in it with
//! network, then builds in bubblewrap without network, as an unprivileged
//! user with no capabilities. With the `sbuild` executor, sbuild's unshare
//! mode takes the cached tarball and does the unpacking, installing and
//! building itself. The rpm helpers are in `rpm`.

use anyhow::{bail, Context};
use kiln_core::debian::{changelog_entry, changelog_head, nightly_upstream_version, nightly_version, upstream_version};
use kiln_core::pipeline::OUTPUT_DIR;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

mod orig;
mod rpm;
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
            let version = if way == Some(orig::Way::Tree) {
                nightly_upstream_version(&head.version, &date, build_id)
            } else {
                nightly_version(&head.version, &date, build_id)
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

pub struct RootOptions {
    pub suite: String,
    pub mirror: String,
    pub components: String,
    pub arch: Option<String>,
    pub max_age: Duration,
    /// Only make sure the cached tarball is fresh and name it in
    /// SCRATCH/root-tarball (for sbuild, which unpacks it itself).
    pub tarball_only: bool,
}

/// Where cached build roots live: `kiln worker --root-cache` (several
/// workers on one host may share it), else the worker dir's `roots/`.
fn root_cache() -> anyhow::Result<PathBuf> {
    match std::env::var_os("KILN_ROOT_CACHE") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => Ok(env_path("KILN_WORKER_DIR")?.join("roots")),
    }
}

/// `deb-root`: makes sure the cached root tarball is fresh, then unpacks a
/// copy into SCRATCH/root.
pub fn deb_root(o: &RootOptions) -> anyhow::Result<()> {
    let cache = root_cache()?;
    fs::create_dir_all(&cache)?;
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&o.mirror, &o.components).hash(&mut h);
        format!("{}-{}-{:016x}", o.suite, o.arch.as_deref().unwrap_or("native"), h.finish())
    };
    let tarball = cache.join(format!("{key}.tar"));
    // One worker process may run several builds of a target at once, and
    // several workers may share a dir: the lock makes one of them build.
    let lock = fs::File::create(cache.join(format!("{key}.lock")))?;
    lock.lock().context("cannot lock the root cache")?;
    let age =
        fs::metadata(&tarball).and_then(|m| m.modified()).ok().and_then(|t| SystemTime::now().duration_since(t).ok());
    let refresh = std::env::var("KILN_REFRESH_ROOTS").is_ok_and(|v| v == "1");
    if age.is_none_or(|a| a > o.max_age) || refresh {
        eprintln!("kiln: making the {} build root from {} (mmdebstrap --variant=buildd)", o.suite, o.mirror);
        // mmdebstrap picks the output format by extension: keep `.tar` last.
        let tmp = cache.join(format!("{key}.tmp.tar"));
        let mut cmd = Command::new("mmdebstrap");
        cmd.args(["--variant=buildd", "--include=fakeroot", "--components"]).arg(&o.components);
        if let Some(arch) = &o.arch {
            cmd.arg(format!("--architectures={arch}"));
        }
        cmd.arg(&o.suite).arg(&tmp).arg(&o.mirror);
        let made = with_progress(&format!("making the {} build root", o.suite), || run(&mut cmd, "mmdebstrap"));
        made?;
        fs::rename(&tmp, &tarball)?;
    } else {
        eprintln!("kiln: using the cached {} build root", o.suite);
    }
    // deps keeps this root's apt lists beside it (see `deb_deps`).
    // A new file: whatever a step of the build left under the name goes first.
    let note = env_path("KILN_SCRATCH")?.join(LISTS_NOTE);
    let _ = fs::remove_file(&note);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&note)?
        .write_all(cache.join(format!("{key}.lists")).as_os_str().as_encoded_bytes())?;
    if o.tarball_only {
        // Hard-linked into the build's scratch dir: a refresh that replaces
        // the cached name leaves this build's copy whole.
        let scratch = env_path("KILN_SCRATCH")?;
        let mine = scratch.join("root.tar");
        if fs::hard_link(&tarball, &mine).is_err() {
            fs::copy(&tarball, &mine).context("cannot copy the root tarball")?;
        }
        return Ok(());
    }
    let root = env_path("KILN_SCRATCH")?.join("root");
    // An empty root of this step's own, not one a step before filled.
    if root.symlink_metadata().is_ok() {
        fs::remove_dir_all(&root).or_else(|_| fs::remove_file(&root)).context("cannot clear the build root's place")?;
    }
    fs::create_dir_all(&root)?;
    let started = std::time::Instant::now();
    // Fast path: an extracted copy of this tarball, made once, under an
    // overlay per build (needs root and overlayfs; the unpacked copy below
    // is the fallback).
    let stamp =
        fs::metadata(&tarball)?.modified()?.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = cache.join(format!("{key}.{stamp}.dir"));
    if !base.exists() {
        let tmp = cache.join(format!("{key}.{stamp}.tmpdir"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        if unpack(&tarball, &tmp).is_ok() {
            fs::rename(&tmp, &base)?;
        } else {
            let _ = fs::remove_dir_all(&tmp);
        }
    }
    // Hold the tarball open for the fallback: a refresh replaces the name, not these bytes.
    let file = fs::File::open(&tarball)?;
    drop(lock);
    if base.exists() && overlay(&base, &root).is_ok() {
        eprintln!("kiln: build root ready in {:.2}s (an overlay on the cached root)", started.elapsed().as_secs_f64());
        return Ok(());
    }
    let status = Command::new("tar")
        .args(["--numeric-owner", "-xpf", "-", "-C"])
        .arg(&root)
        .stdin(file)
        .status()
        .context("cannot run tar")?;
    if !status.success() {
        bail!("unpacking the build root failed ({status})");
    }
    eprintln!("kiln: build root unpacked in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn unpack(tarball: &Path, into: &Path) -> anyhow::Result<()> {
    let status = Command::new("tar").args(["--numeric-owner", "-xpf"]).arg(tarball).arg("-C").arg(into).status()?;
    if !status.success() {
        bail!("tar failed ({status})");
    }
    Ok(())
}

/// Mounts `root` as an overlay: `base` read-only below, the build's own
/// changes above (in the scratch dir). The worker unmounts it when the build
/// ends, and unmounts leftovers of a crashed run at start.
fn overlay(base: &Path, root: &Path) -> anyhow::Result<()> {
    let scratch = root.parent().context("root has no parent")?;
    let (upper, work) = (scratch.join("upper"), scratch.join("overlay-work"));
    fs::create_dir_all(&upper)?;
    fs::create_dir_all(&work)?;
    let opts = format!("lowerdir={},upperdir={},workdir={}", base.display(), upper.display(), work.display());
    if [base, &upper, &work].iter().any(|p| p.to_string_lossy().contains([',', ':'])) {
        bail!("paths with ',' or ':' cannot be overlay options");
    }
    let out = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(root).output()?;
    if !out.status.success() {
        bail!("mount: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The capabilities root keeps inside a build root: what dpkg and apt need
/// to install packages (own files, switch users, set file modes and
/// capabilities) and setpriv needs to drop to the build user. Not the ones
/// that reach past the root: mounting, modules, raw I/O, ptrace, opening
/// host files by handle, network administration.
const ROOT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_SETFCAP",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
];

fn bwrap(root: &Path, network: bool) -> Command {
    let mut cmd = Command::new("bwrap");
    // Maintainer scripts of build dependencies run as root in here.
    cmd.args(["--cap-drop", "ALL"]);
    for cap in ROOT_CAPS {
        cmd.args(["--cap-add", cap]);
    }
    cmd.arg("--bind").arg(root).arg("/");
    cmd.args(["--dev", "/dev", "--proc", "/proc", "--perms", "1777", "--tmpfs", "/tmp", "--die-with-parent"]);
    cmd.args(["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", "kiln-build"]);
    if network {
        cmd.args(["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]);
    } else {
        cmd.arg("--unshare-net");
    }
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("LANG", "C.UTF-8");
    keep_build_marks(&mut cmd);
    cmd
}

/// Passes the variables that mark a process as a build's into a sandbox
/// whose environment is otherwise cleared, so leftovers can still be found
/// (and killed) by them.
fn keep_build_marks(cmd: &mut Command) {
    for var in ["KILN_BUILD_ID", "KILN_WORKER_DIR"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
}

/// `deb-deps`: installs the build dependencies into the unpacked root (with
/// network) and records the root's packages.
pub fn deb_deps() -> anyhow::Result<()> {
    let scratch = env_path("KILN_SCRATCH")?;
    let root = scratch.join("root");
    let build = root.join("build");
    fs::create_dir_all(&build)?;
    // Files only: a link the source step left would be followed by root.
    for e in fs::read_dir(scratch.join("pkg"))?.flatten() {
        if e.file_type()?.is_file() {
            fs::copy(e.path(), build.join(e.file_name()))?;
        }
    }
    // The farm's own repository (what dependencies just published) and the
    // target's extra ones, each trusted through its own key only:
    // `signed-by`, nothing added to apt's global keyring.
    for repo in build_root_repos()? {
        let keyring = format!("/etc/apt/keyrings/kiln-{}.asc", repo.name);
        fs::create_dir_all(root.join("etc/apt/keyrings"))?;
        fs::write(root.join(keyring.trim_start_matches('/')), &repo.key)?;
        let line = format!("deb [signed-by={keyring}] {}\n", repo.source);
        fs::write(root.join(format!("etc/apt/sources.list.d/kiln-{}.list", repo.name)), &line)?;
        // The same, alone, for updating only kiln's repositories.
        fs::create_dir_all(root.join("etc/apt/kiln-sources.d"))?;
        fs::write(root.join(format!("etc/apt/kiln-sources.d/kiln-{}.list", repo.name)), &line)?;
        eprintln!("kiln: build root uses repository {}: {}", repo.name, repo.source);
    }
    // The source is unpacked by the build user, not root; the packages
    // are fetched with network, then installed (their maintainer scripts
    // run) without it.
    std::os::unix::fs::chown(&build, Some(BUILD_UID), Some(BUILD_UID))?;
    let unpack = format!(
        "setpriv --reuid={BUILD_UID} --regid={BUILD_UID} --clear-groups --no-new-privs --inh-caps=-all \
         --bounding-set=-all -- sh -c 'cd /build && dpkg-source -x *.dsc src'"
    );
    run(bwrap(&root, false).args(["/bin/sh", "-c", &unpack]), "unpacking the source")?;
    fs::create_dir_all(root.join("etc/apt/kiln-sources.d"))?;
    // A cache being replaced by another build as this one reads it is not
    // used: apt reads the archive instead.
    let cached = lists_from_cache(&scratch, &root).unwrap_or(false);
    // With the archive's lists fresh from the cache, only kiln's own
    // repositories (what dependencies just published) are read again.
    let update = if cached {
        "apt-get update -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/etc/apt/kiln-sources.d \
         -o APT::Get::List-Cleanup=0"
    } else {
        "apt-get update"
    };
    let fetch = format!(
        "set -e; export DEBIAN_FRONTEND=noninteractive; {update}; cd /build; \
         apt-get build-dep -y --download-only --no-install-recommends ./src"
    );
    run(bwrap(&root, true).args(["/bin/sh", "-c", &fetch]), "fetching build dependencies")?;
    if !cached {
        if let Err(e) = lists_to_cache(&scratch, &root) {
            eprintln!("kiln: the package lists are not cached for later builds: {e:#}");
        }
    }
    let install = "set -e; export DEBIAN_FRONTEND=noninteractive; cd /build; \
                   apt-get build-dep -y --no-install-recommends ./src";
    run(bwrap(&root, false).args(["/bin/sh", "-c", install]), "installing build dependencies")?;
    let list = Command::new("dpkg-query")
        .arg(format!("--admindir={}", root.join("var/lib/dpkg").display()))
        .args(["-W", "-f", "${Package}=${Version}\\n"])
        .output()
        .context("cannot run dpkg-query")?;
    fs::write(scratch.join("buildroot-packages.txt"), &list.stdout)?;
    eprintln!(
        "kiln: the build root has {} packages",
        list.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count()
    );
    Ok(())
}

/// The file in the scratch dir naming where the root's apt lists are cached.
const LISTS_NOTE: &str = "root-lists";
/// How long a root's cached apt lists are used before a build reads the
/// archive's indexes again (kiln's own repositories are read every build).
const LISTS_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

/// Puts the root's cached apt lists into the build's root when they are
/// fresh; false when there are none or they are too old.
fn lists_from_cache(scratch: &Path, root: &Path) -> anyhow::Result<bool> {
    let Ok(note) = fs::read(scratch.join(LISTS_NOTE)) else { return Ok(false) };
    let cache = PathBuf::from(std::ffi::OsString::from_vec(note));
    let stamp = cache.join(".stamp");
    let age =
        fs::metadata(&stamp).and_then(|m| m.modified()).ok().and_then(|t| SystemTime::now().duration_since(t).ok());
    if age.is_none_or(|a| a > LISTS_MAX_AGE) {
        eprintln!(
            "kiln: reading the archive's package lists (no cached lists younger than {}h)",
            LISTS_MAX_AGE.as_secs() / 3600
        );
        return Ok(false);
    }
    let lists = root.join("var/lib/apt/lists");
    fs::create_dir_all(&lists)?;
    // Shared: builds read the cache together; one replacing it waits.
    let lock = fs::File::create(cache.with_extension("lists.lock"))?;
    lock.lock_shared().context("cannot lock the package lists cache")?;
    let mut n = 0;
    for e in fs::read_dir(&cache)?.flatten() {
        let name = e.file_name();
        if e.file_type()?.is_file() && !name.to_string_lossy().starts_with('.') {
            fs::copy(e.path(), lists.join(&name))?;
            n += 1;
        }
    }
    let minutes = age.map(|a| a.as_secs() / 60).unwrap_or(0);
    eprintln!("kiln: {n} package lists from the cache ({minutes} min old); reading only kiln's repositories");
    Ok(true)
}

/// Keeps the lists apt just read beside the cached root, for the builds
/// of the next hours: written to a new directory, then renamed over the old.
fn lists_to_cache(scratch: &Path, root: &Path) -> anyhow::Result<()> {
    let Ok(note) = fs::read(scratch.join(LISTS_NOTE)) else { return Ok(()) };
    let cache = PathBuf::from(std::ffi::OsString::from_vec(note));
    let parent = cache.parent().context("the lists cache has no parent")?;
    let tmp = parent.join(format!(
        ".{}.{}",
        cache.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    for e in fs::read_dir(root.join("var/lib/apt/lists"))?.flatten() {
        let name = e.file_name();
        // Only the archive's lists: kiln's own are read every build.
        if e.file_type()?.is_file() && name.to_string_lossy() != "lock" && !name.to_string_lossy().contains("_repos_") {
            fs::copy(e.path(), tmp.join(&name))?;
        }
    }
    fs::write(tmp.join(".stamp"), b"")?;
    let lock = fs::File::create(cache.with_extension("lists.lock"))?;
    lock.lock().context("cannot lock the package lists cache")?;
    let old = parent.join(format!(
        ".{}.old.{}",
        cache.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let _ = fs::rename(&cache, &old);
    let placed = fs::rename(&tmp, &cache);
    let _ = fs::remove_dir_all(&old);
    if placed.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    Ok(placed?)
}

/// Runs `work`, saying on stderr every half minute that it still runs.
fn with_progress<T>(what: &str, work: impl FnOnce() -> T) -> T {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let started = std::time::Instant::now();
    let what = what.to_string();
    let ticker = std::thread::spawn(move || {
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(Duration::from_secs(30)) {
            eprintln!("kiln: still {what} ({}s)", started.elapsed().as_secs());
        }
    });
    let out = work();
    drop(done);
    let _ = ticker.join();
    out
}

/// `root-update`: `apt-get update` in the unpacked root, with network (the
/// first thing `deb-deps` does; alone, for measuring a root's setup).
pub fn root_update() -> anyhow::Result<()> {
    let root = env_path("KILN_SCRATCH")?.join("root");
    run(bwrap(&root, true).args(["apt-get", "update", "-q"]), "apt-get update")
}

/// The package repositories the master named for this build's root.
fn build_root_repos() -> anyhow::Result<Vec<kiln_proto::wire::BuildRootRepo>> {
    let Ok(json) = std::env::var(kiln_proto::wire::APT_REPOS_ENV) else { return Ok(Vec::new()) };
    let repos: Vec<kiln_proto::wire::BuildRootRepo> =
        serde_json::from_str(&json).context("the master's list of build root repositories is malformed")?;
    for r in &repos {
        if !r.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || r.source.contains('\n') {
            bail!("the master named an unusable repository {:?}", r.name);
        }
    }
    Ok(repos)
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
pub fn deb_build(executor: &str, suite: Option<&str>, arch: Option<&str>) -> anyhow::Result<()> {
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
            run(&mut cmd, "dpkg-buildpackage")?;
            build
        }
        "sbuild" => sbuild(&scratch, suite.context("the sbuild executor needs --suite")?, arch)?,
        "host" => {
            refuse_host_executor_in_sandbox()?;
            let pkg = scratch.join("pkg");
            let dsc = made_dsc(&pkg)?;
            run(Command::new("dpkg-source").arg("-x").arg(&dsc).arg("src").current_dir(&pkg), "dpkg-source -x")?;
            run(
                Command::new("dpkg-buildpackage").args(["-us", "-uc"]).current_dir(pkg.join("src")),
                "dpkg-buildpackage",
            )?;
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

/// The host's own Debian mirror and suite, read from its apt sources
/// (deb822 `.sources` files first, then `sources.list`), a default
/// for build roots on this host (the demo uses it; kiln never hard-codes one).
pub fn host_debian_mirror() -> Option<(String, String)> {
    let mut texts = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> =
            dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "sources")).collect();
        paths.sort();
        texts.extend(paths.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    for stanza in texts.iter().flat_map(|t| t.split("\n\n")) {
        let field = |name: &str| stanza.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()));
        let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) else { continue };
        let types = field("Types:").unwrap_or_default();
        let uri = uris.split_whitespace().next().unwrap_or_default().to_string();
        let suite = suites.split_whitespace().next().unwrap_or_default().to_string();
        if types.split_whitespace().any(|t| t == "deb") && uri.starts_with("http") && !suite.contains('-') {
            return Some((uri, suite));
        }
    }
    let list = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    list.lines().find_map(|l| {
        let mut w = l.split_whitespace().filter(|w| !w.starts_with('['));
        (w.next()? == "deb").then_some(())?;
        let uri = w.next()?.to_string();
        let suite = w.next()?.to_string();
        (uri.starts_with("http") && !suite.contains('-')).then_some((uri, suite))
    })
}
