//! The build root of a deb target: `mmdebstrap --variant=buildd` makes a
//! tarball per target (its suite and the suites beside it), cached under
//! the worker dir and made again when older than `max_age`. Each build
//! gets a fresh copy (an overlay on the unpacked cache, else unpacked
//! anew) and installs its build dependencies in it with network. The
//! root's apt lists are cached beside it and read again only when older
//! than the target's `lists_max_age`; kiln's own repositories are read
//! every build.

use super::{env_path, run, BUILD_UID};
use anyhow::{bail, Context};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

pub struct RootOptions {
    pub suite: String,
    pub mirror: String,
    pub components: String,
    /// More suites of the archive, each `MIRROR SUITE`.
    pub also: Vec<String>,
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
    // `host` mirrors are this worker's own, resolved here.
    let mirror = resolve_mirror(&o.mirror, &o.suite)?;
    let also = o.also.iter().map(|a| resolve_also(a)).collect::<anyhow::Result<Vec<String>>>()?;
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&mirror, &o.components).hash(&mut h);
        if !also.is_empty() {
            also.hash(&mut h);
        }
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
        let lines = source_lines(&mirror, &o.suite, &o.components, &also);
        let suites: Vec<&str> = lines.iter().filter_map(|l| l.split(' ').nth(2)).collect();
        eprintln!(
            "kiln: making the build root of {} from {} (mmdebstrap --variant=buildd)",
            suites.join(", "),
            kiln_core::redact::url_for_logs(&mirror)
        );
        // mmdebstrap picks the output format by extension: keep `.tar` last.
        let tmp = cache.join(format!("{key}.tmp.tar"));
        let mut cmd = Command::new("mmdebstrap");
        cmd.args(["--variant=buildd", "--include=fakeroot", "--components"]).arg(&o.components);
        if let Some(arch) = &o.arch {
            cmd.arg(format!("--architectures={arch}"));
        }
        // Whole `deb` lines, one per suite: they become the root's
        // sources.list, so every build's apt reads them all.
        cmd.arg(&o.suite).arg(&tmp).args(&lines);
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

/// The root's sources.list lines: the target's suite on its mirror, then
/// each further suite (`MIRROR SUITE`) on its own.
fn source_lines(mirror: &str, suite: &str, components: &str, also: &[String]) -> Vec<String> {
    let components = components.split(',').collect::<Vec<_>>().join(" ");
    let mut lines = vec![format!("deb {mirror} {suite} {components}")];
    lines.extend(also.iter().map(|a| {
        let (mirror, suite) = a.split_once(' ').unwrap_or((a, ""));
        format!("deb {mirror} {suite} {components}")
    }));
    lines
}

/// A mirror as the target names it: a URL, or `host` for the one this
/// worker's own apt reads `suite` from (its Debian mirror when no source
/// names that suite).
fn resolve_mirror(mirror: &str, suite: &str) -> anyhow::Result<String> {
    if mirror != kiln_core::config::HOST_MIRROR {
        return Ok(mirror.to_string());
    }
    kiln_core::aptsources::mirror_for(&super::host_debian_sources(), suite).with_context(|| {
        format!("the target's mirror is \"host\", and this worker's apt sources name no Debian mirror for {suite}")
    })
}

/// A further suite, `MIRROR SUITE`, with a `host` mirror resolved.
fn resolve_also(also: &str) -> anyhow::Result<String> {
    let words: Vec<&str> = also.split(' ').collect();
    let [mirror, suite] = words[..] else {
        bail!("--also {also:?}: not `MIRROR SUITE`");
    };
    if mirror.is_empty() || suite.is_empty() || also.contains(['\n', '\t']) {
        bail!("--also {also:?}: not `MIRROR SUITE`");
    }
    Ok(format!("{} {suite}", resolve_mirror(mirror, suite)?))
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

pub(super) fn bwrap(root: &Path, network: bool) -> Command {
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
pub(super) fn keep_build_marks(cmd: &mut Command) {
    for var in ["KILN_BUILD_ID", "KILN_WORKER_DIR"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
}

/// `deb-deps`: installs the build dependencies into the unpacked root (with
/// network) and records the root's packages.
/// `lists_max_age`: how old the cached lists of the archive may be.
pub fn deb_deps(lists_max_age: Duration) -> anyhow::Result<()> {
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
    // Which suites of the archive this root reads, from its own sources.
    let sources = fs::read_to_string(root.join("etc/apt/sources.list")).unwrap_or_default();
    let suites: Vec<String> = sources
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().filter(|w| !w.starts_with('[')).collect();
            (w.first() == Some(&"deb") && w.len() > 2)
                .then(|| format!("{} ({})", w[2], kiln_core::redact::url_for_logs(w[1])))
        })
        .collect();
    eprintln!("kiln: the build root's archive suites: {}", suites.join(", "));
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
    let cached = lists_from_cache(&scratch, &root, lists_max_age).unwrap_or(false);
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

/// Puts the root's cached apt lists into the build's root when they are
/// fresh; false when there are none or they are too old.
fn lists_from_cache(scratch: &Path, root: &Path, max_age: Duration) -> anyhow::Result<bool> {
    let Ok(note) = fs::read(scratch.join(LISTS_NOTE)) else { return Ok(false) };
    let cache = PathBuf::from(std::ffi::OsString::from_vec(note));
    let stamp = cache.join(".stamp");
    let age =
        fs::metadata(&stamp).and_then(|m| m.modified()).ok().and_then(|t| SystemTime::now().duration_since(t).ok());
    if age.is_none_or(|a| a > max_age) {
        eprintln!(
            "kiln: reading the archive's package lists (no cached lists younger than {} min)",
            max_age.as_secs() / 60
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
pub(super) fn build_root_repos() -> anyhow::Result<Vec<kiln_proto::wire::BuildRootRepo>> {
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
