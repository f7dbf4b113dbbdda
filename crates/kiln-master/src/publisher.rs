//! The publisher: the one task that changes repositories.
//!
//! Everything that changes what a channel holds (a build's packages, a
//! promotion, a removal, a rollback) is a request on one queue, handled one
//! at a time, so publishes to a channel are serialized and each lands once.
//!
//! A change is made in this order, which is what keeps the invariants:
//! 1. package files are placed in the channel's pool (new names only);
//! 2. the database records the channel's new contents and revision in one
//!    transaction (the source of truth);
//! 3. a new generation of indexes is written and switched in atomically
//!    ([`kiln_repo::publish::ChannelDir`]);
//! 4. pool files nothing names any more are removed.
//!
//! A crash between 2 and 3 leaves the served repository at the old
//! revision; at start the master finds the revision on disk behind the
//! database's and writes it again. A build whose publish was cut short is
//! still marked publishing in the database and is published again (its
//! rows are recognised by build id, so nothing lands twice).

use crate::clock::now_us;
use crate::dispatcher::Event;
use crate::shared::Shared;
use kiln_core::config::{Channel, Family, Target};
use kiln_db::{ArtifactRow, PackageRow};
use kiln_repo::apt::{Dist, ReleaseMeta};
use kiln_repo::deb::{DebEntry, DscEntry};
use kiln_repo::hash::file_sums;
use kiln_repo::key::SigningKey;
use kiln_repo::publish::{place_file, ChannelContent, ChannelDir, YumRepo};
use kiln_repo::yum::RpmEntry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;

/// A change to the repositories.
pub enum PublishRequest {
    /// Publish a finished build's packages; the outcome goes to the dispatcher.
    Build(i64),
    /// An operator's change; the outcome (a summary or an error) goes to `reply`.
    Op(RepoOp, oneshot::Sender<Result<String, String>>),
}

#[derive(Debug, Clone)]
pub enum RepoOp {
    Promote { name: String, version: String, from: String, to: String, replace: bool },
    Remove { channel: String, name: String, version: Option<String> },
    Snapshot { channel: String, name: String },
    Rollback { channel: String, name: String },
}

/// What a build's packages are, by file extension.
pub fn is_package(name: &str) -> bool {
    (name.ends_with(".deb") || name.ends_with(".udeb") || name.ends_with(".dsc") || name.ends_with(".rpm"))
        && !name.ends_with(".src.rpm")
}

/// The Debian name of the machine's architecture, for targets without `arch`.
pub fn host_deb_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Loads (or, for a channel without a configured key, creates under
/// `data_dir/keys/`) the signing key of every channel. A missing key file,
/// a missing secret or a wrong passphrase fails here, at start.
pub fn load_keys(farm: &crate::farm::LoadedFarm) -> anyhow::Result<HashMap<String, Arc<SigningKey>>> {
    let mut keys = HashMap::new();
    for ch in &farm.cfg.channels {
        keys.insert(ch.name.clone(), Arc::new(load_key(farm, ch)?));
    }
    Ok(keys)
}

fn load_key(farm: &crate::farm::LoadedFarm, ch: &Channel) -> anyhow::Result<SigningKey> {
    use anyhow::Context;
    let passphrase =
        ch.passphrase.as_ref().map(|r| farm.secret(r, &format!("channel {}'s passphrase", ch.name))).transpose()?;
    let path = match &ch.key {
        Some(k) => farm.resolve(k),
        None => {
            let path = farm.data_dir().join("keys").join(format!("{}.asc", ch.name));
            if !path.exists() {
                let key = SigningKey::generate(&format!("kiln {} channel <kiln@localhost>", ch.name), None)?;
                write_private(&path, key.secret_armored()?.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                tracing::info!(channel = %ch.name, path = %path.display(), fingerprint = %key.fingerprint(), "generated a signing key");
                return Ok(key);
            }
            path
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("channel {}: cannot read the key file {}", ch.name, path.display()))?;
    SigningKey::from_armored(&text, passphrase.as_deref())
        .with_context(|| format!("channel {}: key file {}", ch.name, path.display()))
}

/// Writes a secret file: mode 0600 from the start, then renamed into place.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(p) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(p)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The APT date format (`Date:` of a Release), always UTC.
fn release_date() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] UTC"
    );
    now.format(&fmt).unwrap_or_default()
}

pub struct Publisher {
    shared: Arc<Shared>,
    keys: HashMap<String, Arc<SigningKey>>,
    /// The config generation the served repositories were last written for.
    farm_generation: u64,
}

/// How often the publisher checks that served repositories match the database.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// A build's packages prepared for one channel.
struct Prepared {
    add: Vec<PackageRow>,
    remove: Vec<i64>,
}

impl Publisher {
    pub fn new(shared: Arc<Shared>, keys: HashMap<String, Arc<SigningKey>>) -> Self {
        let farm_generation = shared.generation();
        Publisher { shared, keys, farm_generation }
    }

    fn channel_dir(&self, channel: &str) -> ChannelDir {
        ChannelDir::new(self.shared.farm().data_dir().join("repos").join(channel))
    }

    fn key(&mut self, ch: &Channel) -> Result<Arc<SigningKey>, String> {
        if let Some(k) = self.keys.get(&ch.name) {
            return Ok(k.clone());
        }
        // A channel added by a config reload.
        let key = Arc::new(load_key(&self.shared.farm(), ch).map_err(|e| format!("{e:#}"))?);
        self.keys.insert(ch.name.clone(), key.clone());
        Ok(key)
    }

    /// Brings every channel's served generation up to its revision (an
    /// empty, valid repository for a new channel). Run before the master
    /// serves anything, so a client never finds a channel missing.
    pub async fn catch_up(&mut self) {
        let farm = self.shared.farm();
        // A changed config may add suites, architectures or rpm targets: write everything again.
        let config_changed =
            std::mem::replace(&mut self.farm_generation, self.shared.generation()) != self.shared.generation();
        for ch in &farm.cfg.channels {
            let dir = self.channel_dir(&ch.name);
            dir.clean_partial();
            let revision = self.shared.store.channel_revision(&ch.name).await.unwrap_or(-1);
            if config_changed || revision < 0 || dir.current_generation() != Some(revision as u64) {
                if let Err(e) = self.regenerate(ch).await {
                    tracing::error!(channel = %ch.name, error = %e, "cannot write the repository");
                }
            }
        }
    }

    /// Handles repository changes, one at a time.
    pub async fn run(mut self, mut rx: UnboundedReceiver<PublishRequest>) {
        // Another master sharing the database may change a channel; a config
        // reload may add a channel or a target. Look now and then.
        let mut tick = tokio::time::interval(CATCH_UP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let req = tokio::select! {
                req = rx.recv() => match req {
                    Some(r) => r,
                    None => break,
                },
                _ = tick.tick() => {
                    self.catch_up().await;
                    continue;
                }
            };
            match req {
                PublishRequest::Build(id) => {
                    let outcome = self.publish_build(id).await;
                    if let Err(e) = &outcome {
                        tracing::warn!(build = id, error = %e, "publish failed");
                    }
                    self.shared.send(Event::Published { build_id: id, outcome });
                }
                PublishRequest::Op(op, reply) => {
                    let outcome = self.operate(op).await;
                    let _ = reply.send(outcome);
                }
            }
        }
    }

    /// Publishes a build's packages into every channel that takes it.
    async fn publish_build(&mut self, id: i64) -> Result<String, String> {
        let store = self.shared.store.clone();
        let build = store.build(id).await.map_err(|e| e.to_string())?.ok_or(format!("build {id} not found"))?;
        let farm = self.shared.farm();
        let target = farm
            .cfg
            .target(&build.target)
            .cloned()
            .ok_or(format!("target {} is no longer configured", build.target))?;
        let props: BTreeMap<String, String> =
            build.properties.iter().map(|(k, p)| (k.clone(), p.value.clone())).collect();
        // All of them: a .dsc brings the tarballs it lists.
        let artifacts: Vec<ArtifactRow> = store.artifacts_of(&[id]).await.map_err(|e| e.to_string())?;
        let channels: Vec<Channel> = farm.cfg.channels.iter().filter(|c| c.accepts.takes(&props)).cloned().collect();
        if !artifacts.iter().any(|a| is_package(&a.name)) || channels.is_empty() {
            return Ok("nothing to publish".into());
        }
        let replace = props.get("replace").is_some_and(|v| v == "true");
        let files: Vec<(String, PathBuf)> = artifacts
            .iter()
            .map(|a| {
                let path =
                    self.shared.artifacts.path_of(&a.sha256).ok_or(format!("{}: not in the artifact store", a.name))?;
                Ok((a.name.clone(), path))
            })
            .collect::<Result<_, String>>()?;
        let mut summary = Vec::new();
        for ch in channels {
            let key = self.key(&ch)?;
            let existing = store.packages(&ch.name).await.map_err(|e| e.to_string())?;
            let dir = self.channel_dir(&ch.name);
            let (files, target, ch2) = (files.clone(), target.clone(), ch.clone());
            let prepared =
                tokio::task::spawn_blocking(move || prepare(&dir, &ch2, &key, &target, id, &files, &existing, replace))
                    .await
                    .map_err(|e| e.to_string())??;
            let n = prepared.add.len();
            if n > 0 || !prepared.remove.is_empty() {
                self.commit(&ch, &prepared.add, &prepared.remove).await?;
            }
            summary.push(format!("{n} to {}", ch.name));
        }
        Ok(summary.join(", "))
    }

    /// Records a channel change, applies retention, and serves the result.
    async fn commit(&mut self, ch: &Channel, add: &[PackageRow], remove: &[i64]) -> Result<i64, String> {
        let store = &self.shared.store;
        let mut remove = remove.to_vec();
        if let Some(keep) = ch.keep {
            // Newest `keep` versions of each package stay, by publish order.
            let current = store.packages(&ch.name).await.map_err(|e| e.to_string())?;
            let mut groups: HashMap<(&str, &str, &str, &str), Vec<i64>> = HashMap::new();
            for p in current.iter().filter(|p| !remove.contains(&p.id)) {
                groups.entry((&p.repo, &p.kind, &p.name, &p.arch)).or_default().push(p.id);
            }
            let mut incoming: HashMap<(&str, &str, &str, &str), usize> = HashMap::new();
            for p in add {
                *incoming.entry((&p.repo, &p.kind, &p.name, &p.arch)).or_default() += 1;
            }
            for (k, ids) in groups {
                let total = ids.len() + incoming.get(&k).copied().unwrap_or(0);
                let drop = total.saturating_sub(keep as usize).min(ids.len());
                remove.extend(&ids[..drop]);
            }
        }
        let revision = store.change_channel(&ch.name, add, &remove).await.map_err(|e| e.to_string())?;
        crash_test_pause().await;
        self.regenerate(ch).await?;
        Ok(revision)
    }

    /// Writes the channel's current contents as a new generation, then
    /// removes pool files nothing names.
    async fn regenerate(&mut self, ch: &Channel) -> Result<(), String> {
        let store = &self.shared.store;
        let rows = store.packages(&ch.name).await.map_err(|e| e.to_string())?;
        let revision = store.channel_revision(&ch.name).await.map_err(|e| e.to_string())?;
        let keep_files: HashSet<String> =
            store.snapshot_files(&ch.name).await.map_err(|e| e.to_string())?.into_iter().collect();
        let key = self.key(ch)?;
        let farm = self.shared.farm();
        let targets = farm.cfg.targets.clone();
        let dir = self.channel_dir(&ch.name);
        let ch = ch.clone();
        tokio::task::spawn_blocking(move || {
            write_channel(&dir, &ch, &key, &targets, &rows, revision as u64, keep_files)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn operate(&mut self, op: RepoOp) -> Result<String, String> {
        let farm = self.shared.farm();
        let channel = |name: &str| farm.cfg.channel(name).cloned().ok_or(format!("no channel named {name:?}"));
        let store = self.shared.store.clone();
        match op {
            RepoOp::Remove { channel: c, name, version } => {
                let ch = channel(&c)?;
                let rows = store.packages(&c).await.map_err(|e| e.to_string())?;
                let gone: Vec<i64> = rows
                    .iter()
                    .filter(|p| p.name == name && version.as_ref().is_none_or(|v| &p.version == v))
                    .map(|p| p.id)
                    .collect();
                if gone.is_empty() {
                    return Err(match version {
                        Some(v) => format!("{name} {v} is not in channel {c}"),
                        None => format!("{name} is not in channel {c}"),
                    });
                }
                self.commit(&ch, &[], &gone).await?;
                Ok(format!("removed {} file(s) of {name} from {c}", gone.len()))
            }
            RepoOp::Promote { name, version, from, to, replace } => {
                let (src, dst) = (channel(&from)?, channel(&to)?);
                if !src.promote_to.contains(&to) {
                    return Err(format!(
                        "channel {from} does not promote to {to} (promote_to = [{}])",
                        src.promote_to.join(", ")
                    ));
                }
                let rows = store.packages(&from).await.map_err(|e| e.to_string())?;
                let picked: Vec<PackageRow> =
                    rows.into_iter().filter(|p| p.name == name && p.version == version).collect();
                if picked.is_empty() {
                    return Err(format!("{name} {version} is not in channel {from}"));
                }
                let existing = store.packages(&to).await.map_err(|e| e.to_string())?;
                let key = self.key(&dst)?;
                let (src_dir, dst_dir) = (self.channel_dir(&from), self.channel_dir(&to));
                let dst2 = dst.clone();
                let prepared = tokio::task::spawn_blocking(move || {
                    promote(&src_dir, &dst_dir, &dst2, &key, &picked, &existing, replace)
                })
                .await
                .map_err(|e| e.to_string())??;
                let n = prepared.add.len();
                self.commit(&dst, &prepared.add, &prepared.remove).await?;
                Ok(format!("promoted {n} file(s) of {name} {version} from {from} to {to}"))
            }
            RepoOp::Snapshot { channel: c, name } => {
                channel(&c)?;
                kiln_core::names::check_name(&name).map_err(|e| format!("snapshot name: {e}"))?;
                let s = store.save_snapshot(&c, &name, now_us()).await.map_err(|e| match e {
                    kiln_db::StoreError::Sql(ref s) if s.to_string().to_lowercase().contains("unique") => {
                        format!("channel {c} already has a snapshot named {name}")
                    }
                    other => other.to_string(),
                })?;
                Ok(format!("snapshot {name} of {c}: {} file(s) at revision {}", s.packages, s.revision))
            }
            RepoOp::Rollback { channel: c, name } => {
                let ch = channel(&c)?;
                let revision = store
                    .restore_snapshot(&c, &name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or(format!("channel {c} has no snapshot named {name}"))?;
                self.regenerate(&ch).await?;
                Ok(format!("{c} rolled back to snapshot {name} (revision {revision})"))
            }
        }
    }
}

/// Test hook for the crash-during-publish test: with `KILN_TEST_PUBLISH_PAUSE`
/// naming a file, the publisher creates it after recording a change and
/// before writing the repository, and waits there (to be killed).
async fn crash_test_pause() {
    let Some(marker) = std::env::var_os("KILN_TEST_PUBLISH_PAUSE") else { return };
    if std::fs::write(&marker, b"paused\n").is_ok() {
        tracing::warn!("KILN_TEST_PUBLISH_PAUSE: pausing mid-publish");
        tokio::time::sleep(std::time::Duration::from_secs(120)).await;
    }
}

/// The `repo` column of a target's packages.
fn repo_of(target: &Target) -> String {
    match target.family {
        Family::Deb => format!("apt:{}", target.suite.as_deref().unwrap_or("unstable")),
        Family::Rpm => format!("yum:{}", target.name),
    }
}

fn identity(p: &PackageRow) -> (&str, &str, &str, &str, &str) {
    (&p.repo, &p.kind, &p.name, &p.version, &p.arch)
}

/// Decides what happens to a row that has the identity of one already in
/// the channel: nothing (the same build, published again after a crash), a
/// replacement, or a refusal.
fn resolve_conflict(
    new: &PackageRow,
    existing: &[PackageRow],
    channel: &str,
    replace: bool,
) -> Result<Option<Option<i64>>, String> {
    let Some(old) = existing.iter().find(|e| identity(e) == identity(new)) else { return Ok(Some(None)) };
    if old.build_id.is_some() && old.build_id == new.build_id {
        return Ok(None);
    }
    if old.sha256 == new.sha256 {
        return Ok(None);
    }
    if replace {
        return Ok(Some(Some(old.id)));
    }
    Err(format!(
        "{} {} ({}) is already published in {channel} with different contents; a version is published once: \
         raise the version, or rebuild with --replace to overwrite it",
        new.name, new.version, new.arch
    ))
}

/// The pool path for `file_name` under `dir` (relative to the channel
/// directory): the conventional place, or, when a different file already has
/// that name (a replacement), a subdirectory named by content, so the file
/// the served index names is never overwritten.
fn pool_path(channel_root: &Path, dir: &str, file_name: &str, sha256: &str) -> String {
    let plain = format!("{dir}/{file_name}");
    match file_sums(&channel_root.join(&plain)) {
        Ok(s) if s.sha256 != sha256 => format!("{dir}/{}/{file_name}", &sha256[..16]),
        _ => plain,
    }
}

#[allow(clippy::too_many_arguments)]
fn prepare(
    dir: &ChannelDir,
    ch: &Channel,
    key: &SigningKey,
    target: &Target,
    build_id: i64,
    files: &[(String, PathBuf)],
    existing: &[PackageRow],
    replace: bool,
) -> Result<Prepared, String> {
    let repo = repo_of(target);
    let now = now_us();
    let mut rows: Vec<(PackageRow, PathBuf)> = Vec::new();
    let root = dir.root().to_path_buf();
    for (name, path) in files {
        // Errors name the artifact, not where the artifact store keeps it.
        let err = |e: kiln_repo::RepoError| e.to_string().replace(&path.display().to_string(), name);
        let row =
            |kind: &str, n: &str, v: &str, a: &str, file: String, sha: &str, size: u64, entry: String| PackageRow {
                id: 0,
                channel: ch.name.clone(),
                repo: repo.clone(),
                kind: kind.into(),
                name: n.into(),
                version: v.into(),
                arch: a.into(),
                file,
                sha256: sha.into(),
                size: size as i64,
                build_id: Some(build_id),
                entry,
                published_at: now,
            };
        match target.family {
            Family::Deb if name.ends_with(".deb") || name.ends_with(".udeb") => {
                // A channel that signs .debs gets a signed copy.
                let signed = root.join("pool/.incoming").join(format!("{build_id}-{name}"));
                let path = if ch.sign_debs {
                    kiln_repo::debsig::sign_deb(path, &signed, key).map_err(err)?;
                    &signed
                } else {
                    path
                };
                let sums = file_sums(path).map_err(err)?;
                let control = kiln_repo::deb::read_control(path).map_err(err)?;
                let bad = |reason: String| format!("{name}: {reason}");
                // The pool directory depends on the source package the control file names.
                let source = kiln_repo::deb::entry_from_control(&control, "", &sums).map_err(bad)?.source;
                let pool = kiln_repo::deb::pool_dir(&ch.component, &source);
                let rel = pool_path(&root.join("pool/apt"), pool.trim_start_matches("pool/"), name, &sums.sha256);
                let e = kiln_repo::deb::entry_from_control(&control, &format!("pool/{rel}"), &sums).map_err(bad)?;
                let entry = serde_json::to_string(&e).map_err(|e| e.to_string())?;
                rows.push((
                    row("deb", &e.name, &e.version, &e.arch, format!("pool/apt/{rel}"), &sums.sha256, sums.size, entry),
                    path.to_path_buf(),
                ));
            }
            Family::Deb if name.ends_with(".dsc") => {
                let sums = file_sums(path).map_err(err)?;
                let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
                let upload = kiln_core::deb822::parse_source_upload(&text).map_err(|e| format!("{name}: {e}"))?;
                let pool = kiln_repo::deb::pool_dir(&ch.component, &upload.source);
                let e = kiln_repo::deb::inspect_dsc(path, name, &pool, &sums).map_err(err)?;
                // The files a .dsc lists travel with it.
                for f in &e.files {
                    let (_, p) = files
                        .iter()
                        .find(|(n, _)| n == f)
                        .ok_or(format!("{name} lists {f}, which the build did not upload"))?;
                    place_file(p, &dir.apt_pool_file(&format!("{pool}/{f}"))).map_err(err)?;
                }
                let entry = serde_json::to_string(&e).map_err(|e| e.to_string())?;
                let rel = format!("{}/{name}", pool.trim_start_matches("pool/"));
                rows.push((
                    row(
                        "dsc",
                        &e.name,
                        &e.version,
                        "source",
                        format!("pool/apt/{rel}"),
                        &sums.sha256,
                        sums.size,
                        entry,
                    ),
                    path.clone(),
                ));
            }
            Family::Rpm if is_package(name) && name.ends_with(".rpm") => {
                let signed = sign_rpm_for_pool(&root, &target.name, path, name, key)?;
                let e = &signed.entry;
                let entry = serde_json::to_string(e).map_err(|e| e.to_string())?;
                let r =
                    row("rpm", &e.name, &evr(e), &e.arch, signed.file, &signed.sums.sha256, signed.sums.size, entry);
                rows.push((r, signed.staged));
            }
            _ => {}
        }
    }
    let err = |e: kiln_repo::RepoError| e.to_string();
    let mut out = Prepared { add: Vec::new(), remove: Vec::new() };
    for (row, src) in rows {
        match resolve_conflict(&row, existing, &ch.name, replace)? {
            None => {}
            Some(replaced) => {
                kiln_repo::publish::place_file(&src, &root.join(&row.file)).map_err(err)?;
                out.remove.extend(replaced);
                out.add.push(row);
            }
        }
    }
    let _ = std::fs::remove_dir_all(root.join("pool/.incoming"));
    Ok(out)
}

/// An RPM signed with a channel's key, staged in the channel's
/// `pool/.incoming`, with the pool file it becomes (relative to the channel
/// directory) and its index entry.
struct SignedRpm {
    staged: PathBuf,
    file: String,
    sums: kiln_repo::hash::Sums,
    entry: RpmEntry,
}

/// Signs `src` (named `name`) for `target`'s pool in the channel at `channel_root`.
/// Used when a build publishes and when a promotion re-signs.
fn sign_rpm_for_pool(
    channel_root: &Path,
    target: &str,
    src: &Path,
    name: &str,
    key: &SigningKey,
) -> Result<SignedRpm, String> {
    let err = |e: kiln_repo::RepoError| e.to_string().replace(&src.display().to_string(), name);
    let staged = channel_root.join("pool/.incoming").join(name);
    kiln_repo::rpmsign::sign_rpm(src, &staged, key).map_err(err)?;
    let sums = file_sums(&staged).map_err(err)?;
    let rel = pool_path(&channel_root.join("pool/yum").join(target), ".", name, &sums.sha256);
    let rel = rel.trim_start_matches("./").to_string();
    let entry = kiln_repo::yum::inspect_rpm(&staged, &format!("Packages/{rel}"), &sums.sha256, sums.size, now_s())
        .map_err(err)?;
    Ok(SignedRpm { staged, file: format!("pool/yum/{target}/{rel}"), sums, entry })
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An RPM's version as users write it: `[epoch:]version-release`.
fn evr(e: &RpmEntry) -> String {
    if e.epoch > 0 {
        format!("{}:{}-{}", e.epoch, e.version, e.release)
    } else {
        format!("{}-{}", e.version, e.release)
    }
}

/// Copies rows from one channel to another: the same pool files for APT,
/// re-signed with the target channel's key for RPM.
fn promote(
    src: &ChannelDir,
    dst: &ChannelDir,
    ch: &Channel,
    key: &SigningKey,
    picked: &[PackageRow],
    existing: &[PackageRow],
    replace: bool,
) -> Result<Prepared, String> {
    let err = |e: kiln_repo::RepoError| e.to_string();
    let mut out = Prepared { add: Vec::new(), remove: Vec::new() };
    let now = now_us();
    for p in picked {
        let from = src.root().join(&p.file);
        let mut row = PackageRow { id: 0, channel: ch.name.clone(), published_at: now, ..p.clone() };
        let replaced = match resolve_conflict(&row, existing, &ch.name, replace)? {
            None => continue,
            Some(r) => r,
        };
        match p.kind.as_str() {
            "rpm" => {
                let name = Path::new(&p.file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let signed = sign_rpm_for_pool(dst.root(), p.repo.trim_start_matches("yum:"), &from, &name, key)?;
                row.entry = serde_json::to_string(&signed.entry).map_err(|e| e.to_string())?;
                row.file = signed.file;
                row.sha256 = signed.sums.sha256;
                row.size = signed.sums.size as i64;
                place_file(&signed.staged, &dst.root().join(&row.file)).map_err(err)?;
                let _ = std::fs::remove_dir_all(dst.root().join("pool/.incoming"));
            }
            "dsc" => {
                let e: DscEntry = serde_json::from_str(&p.entry).map_err(|e| e.to_string())?;
                let parent = Path::new(&p.file).parent().map(Path::to_path_buf).unwrap_or_default();
                for f in &e.files {
                    place_file(&src.root().join(&parent).join(f), &dst.root().join(&parent).join(f)).map_err(err)?;
                }
                place_file(&from, &dst.root().join(&row.file)).map_err(err)?;
            }
            "deb" if ch.sign_debs => {
                // Re-signed by the channel it enters; a new pool path, as its bytes change.
                let staging = dst.root().join("pool/.incoming");
                let name = Path::new(&p.file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let signed = staging.join(&name);
                kiln_repo::debsig::sign_deb(&from, &signed, key).map_err(err)?;
                let sums = file_sums(&signed).map_err(err)?;
                let rel = p.file.trim_start_matches("pool/apt/");
                let (dir, _) = rel.rsplit_once('/').unwrap_or((".", rel));
                let rel = pool_path(&dst.root().join("pool/apt"), dir, &name, &sums.sha256);
                let control = kiln_repo::deb::read_control(&signed).map_err(err)?;
                let e = kiln_repo::deb::entry_from_control(&control, &format!("pool/{rel}"), &sums)
                    .map_err(|e| format!("{name}: {e}"))?;
                row.entry = serde_json::to_string(&e).map_err(|e| e.to_string())?;
                row.file = format!("pool/apt/{rel}");
                row.sha256 = sums.sha256;
                row.size = sums.size as i64;
                place_file(&signed, &dst.root().join(&row.file)).map_err(err)?;
                let _ = std::fs::remove_dir_all(&staging);
            }
            _ => place_file(&from, &dst.root().join(&row.file)).map_err(err)?,
        }
        out.remove.extend(replaced);
        out.add.push(row);
    }
    Ok(out)
}

/// Renders and serves a channel's generation `revision` from its rows, then
/// removes pool files that neither the rows nor a snapshot name.
fn write_channel(
    dir: &ChannelDir,
    ch: &Channel,
    key: &SigningKey,
    targets: &[Target],
    rows: &[PackageRow],
    revision: u64,
    mut keep_files: HashSet<String>,
) -> Result<(), String> {
    let mut debs: BTreeMap<String, Vec<DebEntry>> = BTreeMap::new();
    let mut dscs: BTreeMap<String, Vec<DscEntry>> = BTreeMap::new();
    let mut rpms: BTreeMap<String, Vec<RpmEntry>> = BTreeMap::new();
    let mut archs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in targets {
        match t.family {
            Family::Deb => {
                let suite = t.suite.clone().unwrap_or_else(|| "unstable".into());
                archs.entry(suite).or_default().insert(t.arch.clone().unwrap_or_else(|| host_deb_arch().into()));
            }
            Family::Rpm => {
                rpms.entry(t.name.clone()).or_default();
            }
        }
    }
    for r in rows {
        keep_files.insert(r.file.clone());
        let bad = |e: serde_json::Error| format!("package row {}: {e}", r.id);
        if let Some(suite) = r.repo.strip_prefix("apt:") {
            let a = archs.entry(suite.to_string()).or_default();
            match r.kind.as_str() {
                "deb" => {
                    let e: DebEntry = serde_json::from_str(&r.entry).map_err(bad)?;
                    if e.arch != "all" {
                        a.insert(e.arch.clone());
                    }
                    debs.entry(suite.to_string()).or_default().push(e);
                }
                "dsc" => {
                    let e: DscEntry = serde_json::from_str(&r.entry).map_err(bad)?;
                    let parent =
                        Path::new(&r.file).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
                    for f in &e.files {
                        keep_files.insert(format!("{parent}/{f}"));
                    }
                    dscs.entry(suite.to_string()).or_default().push(e);
                }
                _ => {}
            }
        } else if let Some(t) = r.repo.strip_prefix("yum:") {
            let e: RpmEntry = serde_json::from_str(&r.entry).map_err(bad)?;
            rpms.entry(t.to_string()).or_default().push(e);
        }
    }
    let meta = ReleaseMeta {
        origin: "kiln".into(),
        label: format!("kiln {}", ch.name),
        description: if ch.description.is_empty() {
            format!("kiln channel {}", ch.name)
        } else {
            ch.description.clone()
        },
    };
    let empty_debs = Vec::new();
    let empty_dscs = Vec::new();
    let apt = archs
        .iter()
        .map(|(suite, a)| Dist {
            suite: suite.clone(),
            component: ch.component.clone(),
            archs: a.clone(),
            binaries: debs.get(suite).unwrap_or(&empty_debs).iter().collect(),
            sources: dscs.get(suite).unwrap_or(&empty_dscs).iter().collect(),
        })
        .collect();
    let yum = rpms.iter().map(|(t, e)| YumRepo { target: t.clone(), entries: e.iter().collect() }).collect();
    let content = ChannelContent { meta, apt, yum };
    dir.write_generation(revision, &content, key, &release_date()).map_err(|e| e.to_string())?;
    remove_unnamed(&dir.root().join("pool"), dir.root(), &keep_files);
    Ok(())
}

/// Removes files under `pool` whose path (relative to `root`) is not in `keep`.
fn remove_unnamed(pool: &Path, root: &Path, keep: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(pool) else { return };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => remove_unnamed(&path, root, keep),
            Ok(_) => {
                let rel = path.strip_prefix(root).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
                if !keep.contains(&rel) {
                    let _ = std::fs::remove_file(&path);
                }
            }
            Err(_) => {}
        }
    }
}
