//! Build dependencies checked before a deb build goes to a worker (OBS's
//! "unresolvable"): the build's `Build-Depends` (from its `debian/control`
//! or uploaded `.dsc`) are solved with Debian's `dose-builddebcheck` against
//! the package lists its build root would see: the target's archive suites
//! and repositories, and the kiln channel it builds against. A build that
//! cannot be satisfied waits, naming what is missing, and is checked again
//! when a channel publishes or the lists are refreshed.
//!
//! The dispatcher asks (one [`Check`] per ready build) and is answered with
//! an [`Event::Checked`]; builds of one target asked for together are
//! solved in one run. When the lists or the solver are not to be had, the
//! answer is [`Verdict::Unknown`] and the build goes ahead (its `deps` step
//! then says what is wrong): the check never keeps a build that could be
//! built from building.

mod lists;
mod needs;

use crate::events::{Check, Event};
use crate::shared::Shared;
use kiln_core::builddeps::{broken_builds, check_stanza, BuildNeeds, Unmet, Verdict};
use kiln_core::config::{Family, Target, HOST_MIRROR};
use kiln_repo::uploadsig::Keyring;
use lists::Archive;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// How long the solver may take over one target's builds.
const SOLVER_TIMEOUT: Duration = Duration::from_secs(300);

/// The checker's task: takes checks as they come, a batch per target.
pub async fn run(shared: Arc<Shared>, mut rx: UnboundedReceiver<Check>) {
    let http = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot make an HTTP client; build dependencies are not checked");
            while let Some(c) = rx.recv().await {
                answer(&shared, c.build_id, Verdict::Unknown("no HTTP client".into()));
            }
            return;
        }
    };
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        // One solver run per target and channel: each build is solved
        // against the lists its own build root reads.
        let farm = shared.farm();
        let mut groups: BTreeMap<(String, Option<String>), Vec<Check>> = BTreeMap::new();
        for c in batch {
            let channel = channel_of(&farm, &c).map(|ch| ch.name.clone());
            groups.entry((c.target.clone(), channel)).or_default().push(c);
        }
        for ((target, _), checks) in groups {
            for (id, verdict) in check_target(&shared, &http, &target, &checks).await {
                answer(&shared, id, verdict);
            }
        }
    }
}

fn answer(shared: &Shared, build_id: i64, verdict: Verdict) {
    if let Verdict::Unknown(why) = &verdict {
        tracing::warn!(build = build_id, reason = %why, "build dependencies not checked; the build goes ahead");
    }
    shared.send(Event::Checked { build_id, verdict });
}

/// The verdict on each of `checks`, all for `target`.
async fn check_target(shared: &Shared, http: &reqwest::Client, target: &str, checks: &[Check]) -> Vec<(i64, Verdict)> {
    let unknown = |why: String| checks.iter().map(|c| (c.build_id, Verdict::Unknown(why.clone()))).collect();
    let farm = shared.farm();
    let Some(t) = farm.cfg.target(target).filter(|t| t.family == Family::Deb) else {
        return unknown(format!("{target} is not a deb target of the config"));
    };
    let data_dir = farm.data_dir();
    let mut verdicts = Vec::new();
    let mut stanzas = String::new();
    let mut solving = Vec::new();
    for c in checks {
        match needs::of(shared, &farm, c).await {
            Ok(None) => verdicts.push((c.build_id, Verdict::Buildable)),
            Ok(Some(BuildNeeds { fields })) if fields.is_empty() => verdicts.push((c.build_id, Verdict::Buildable)),
            Ok(Some(n)) => {
                stanzas.push_str(&check_stanza(c.build_id, &n));
                solving.push(c.build_id);
            }
            Err(why) => verdicts.push((c.build_id, Verdict::Unknown(why))),
        }
    }
    if solving.is_empty() {
        return verdicts;
    }
    let arch = t.arch.clone().unwrap_or_else(|| crate::publish::host_deb_arch().to_string());
    let solved = match archives(shared, &farm, t, checks) {
        Err(why) => Err(why),
        Ok(archives) => match packages_of(http, &data_dir.join("lists"), &archives, &arch).await {
            Err(why) => Err(why),
            Ok(files) => solve(&data_dir, &files, &stanzas, &arch).await,
        },
    };
    match solved {
        Ok(mut broken) => {
            verdicts.extend(solving.into_iter().map(|id| match broken.remove(&id) {
                Some(unmet) => (id, Verdict::Unresolvable(unmet)),
                None => (id, Verdict::Buildable),
            }));
        }
        Err(why) => verdicts.extend(solving.into_iter().map(|id| (id, Verdict::Unknown(why.clone())))),
    }
    verdicts
}

/// The archives a build root of `t` reads (as the worker's `deps` step
/// sets them up): the target's suite and further suites, its repositories,
/// and the kiln channel the builds publish to.
fn archives(
    shared: &Shared,
    farm: &crate::farm::LoadedFarm,
    t: &Target,
    checks: &[Check],
) -> Result<Vec<Archive>, String> {
    let mut out = Vec::new();
    let suite = t.suite.clone().unwrap_or_else(|| "unstable".into());
    let components = if t.components.is_empty() { vec!["main".to_string()] } else { t.components.clone() };
    if let Some(mirror) = &t.mirror {
        let host = Arc::new(host_keys());
        for (mirror, suite) in std::iter::once((mirror.clone(), suite.clone()))
            .chain(t.suites.iter().map(|s| (s.mirror.clone(), s.suite.clone())))
        {
            let url = if mirror == HOST_MIRROR {
                kiln_core::aptsources::mirror_for(&host_sources(), &suite)
                    .ok_or_else(|| format!("the master's apt sources name no Debian mirror for {suite}"))?
            } else {
                mirror
            };
            out.push(Archive {
                url,
                suite,
                components: components.clone(),
                keys: host.clone(),
                max_age: t.lists_max_age,
            });
        }
    }
    let keys = farm.repository_keys.get(&t.name).map(Vec::as_slice).unwrap_or_default();
    for (repo, key) in t.repositories.iter().zip(keys) {
        let keys = Keyring::from_armored(key)
            .map_err(|e| format!("the key of {}: {e}", kiln_core::redact::url_for_logs(&repo.url)))?;
        out.push(Archive {
            url: repo.url.clone(),
            suite: repo.suite.clone(),
            components: repo.components.clone(),
            keys: Arc::new(keys),
            // Build roots read a target's extra repositories afresh for every build.
            max_age: Duration::ZERO,
        });
    }
    // Kiln's own channel, as the builds see it (the checks are grouped by
    // channel): read fresh each time (it changes with every publish;
    // unchanged lists are not fetched again).
    if let Some(ch) = checks.first().and_then(|c| channel_of(farm, c)) {
        let name = &ch.name;
        let Some(key) = shared.channel_key(name) else { return Ok(out) };
        let keys = Keyring::from_armored(&key.armored).map_err(|e| format!("the key of channel {name}: {e}"))?;
        out.push(Archive {
            url: format!("{}/repos/{name}/apt", farm.cfg.master.public_url()),
            suite: suite.clone(),
            components: vec![ch.component.clone()],
            keys: Arc::new(keys),
            max_age: Duration::ZERO,
        });
    }
    Ok(out)
}

/// The channel a build publishes to, whose repository its build root reads.
fn channel_of<'f>(farm: &'f crate::farm::LoadedFarm, c: &Check) -> Option<&'f kiln_core::channel::Channel> {
    let values: BTreeMap<String, String> = c.properties.iter().map(|(k, p)| (k.clone(), p.value.clone())).collect();
    farm.cfg.channels.iter().find(|ch| ch.accepts.takes(&values))
}

async fn packages_of(
    http: &reqwest::Client,
    cache: &Path,
    archives: &[Archive],
    arch: &str,
) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for a in archives {
        files.extend(lists::packages(http, cache, a, arch).await.map_err(|e| e.to_string())?);
    }
    if files.is_empty() {
        return Err("no package lists: the target names no mirror or repository".into());
    }
    Ok(files)
}

/// Runs `dose-builddebcheck` over `stanzas` against `packages`: the builds
/// it finds broken, with what they lack.
async fn solve(
    data_dir: &Path,
    packages: &[PathBuf],
    stanzas: &str,
    arch: &str,
) -> Result<BTreeMap<i64, Unmet>, String> {
    let scratch = Scratch::new(&data_dir.join("lists")).map_err(|e| format!("cannot make a scratch directory: {e}"))?;
    let sources = scratch.0.join("Sources");
    std::fs::write(&sources, stanzas).map_err(|e| format!("cannot write {}: {e}", sources.display()))?;
    let mut cmd = tokio::process::Command::new("dose-builddebcheck");
    cmd.arg(format!("--deb-native-arch={arch}"))
        .args(["--failures", "--explain"])
        .args(packages)
        .arg(&sources)
        .env("LC_ALL", "C.UTF-8")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(SOLVER_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(format!("dose-builddebcheck took longer than {} s", SOLVER_TIMEOUT.as_secs())),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("dose-builddebcheck is not installed on the master (Debian package dose-builddebcheck)".into())
        }
        Ok(Err(e)) => return Err(format!("cannot run dose-builddebcheck: {e}")),
        Ok(Ok(out)) => out,
    };
    // 0: all buildable; 1: some broken; anything else: it failed.
    if !matches!(out.status.code(), Some(0 | 1)) {
        let err: String = String::from_utf8_lossy(&out.stderr).trim().chars().take(500).collect();
        return Err(format!("dose-builddebcheck failed ({}): {err}", out.status));
    }
    Ok(broken_builds(&String::from_utf8_lossy(&out.stdout), arch))
}

/// A directory of its own for one solver run, removed after it.
struct Scratch(PathBuf);

impl Scratch {
    fn new(parent: &Path) -> std::io::Result<Scratch> {
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
        let dir = parent.join(format!("check-{}", hex::encode(raw)));
        std::fs::create_dir_all(parent)?;
        std::fs::create_dir(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The keys the master's own apt trusts for archives: what apt on this
/// machine verifies its mirrors with.
fn host_keys() -> Keyring {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/trusted.gpg.d")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.extend(
        ["/usr/share/keyrings/debian-archive-keyring.gpg", "/usr/share/keyrings/ubuntu-archive-keyring.gpg"]
            .map(PathBuf::from),
    );
    let mut ring: Option<Keyring> = None;
    for f in files.iter().filter(|f| f.extension().is_some_and(|x| x == "gpg" || x == "asc")) {
        let Ok(bytes) = std::fs::read(f) else { continue };
        match Keyring::from_bytes(&bytes) {
            Ok(k) => {
                ring = Some(match ring {
                    Some(r) => r.merge(k),
                    None => k,
                })
            }
            Err(e) => tracing::debug!(file = %f.display(), error = %e, "archive keyring not used"),
        }
    }
    ring.unwrap_or_else(Keyring::empty)
}

/// The master's own apt sources (for targets whose mirror is `host`).
fn host_sources() -> Vec<(String, String)> {
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
