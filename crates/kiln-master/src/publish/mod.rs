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

mod channel;
mod keys;
mod prepare;

pub use keys::{host_deb_arch, KeyCache};

use crate::events::{Event, PublishOutcome, PublishRequest, RepoOp, RepoRefusal};
use crate::shared::Shared;
use channel::write_channel;
use kiln_core::config::Channel;
use kiln_db::{ArtifactRow, PackageRow};
use kiln_repo::key::{Signers, SigningKey};
use kiln_repo::publish::ChannelDir;
use prepare::{prepare, promote, resign};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// A failure inside the publisher that refuses nothing in particular.
impl From<String> for RepoRefusal {
    fn from(e: String) -> Self {
        RepoRefusal::Failed(e)
    }
}

pub struct Publisher {
    shared: Arc<Shared>,
    keys: KeyCache,
    /// When each channel's key was last warned about as expiring.
    expiry_warned: HashMap<String, std::time::Instant>,
    /// Each channel's parsed entries, kept between generations.
    entries: Arc<std::sync::Mutex<HashMap<String, channel::ChannelEntries>>>,
}

/// How long a build's publish waits before it is tried again, when the
/// database could not be asked.
const RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// How often the publisher checks that served repositories match the database.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

impl Publisher {
    pub fn new(shared: Arc<Shared>, keys: KeyCache) -> Self {
        Publisher { shared, keys, expiry_warned: HashMap::new(), entries: Default::default() }
    }

    fn channel_dir(&self, channel: &str) -> ChannelDir {
        let farm = self.shared.farm();
        let keep_for = farm.cfg.channel(channel).map_or(kiln_repo::publish::DEFAULT_KEEP_FOR, |c| c.keep_old_indexes);
        ChannelDir::new(farm.data_dir().join("repos").join(channel)).keeping_old_for(keep_for)
    }

    /// The keys channel `ch` signs with now (read again when a key file
    /// changed, or a reload named others), recorded for the rest of the
    /// master to show and trust.
    fn signers(&mut self, ch: &Channel) -> Result<Signers, RepoRefusal> {
        let signers = self.keys.signers(&self.shared.farm(), ch, keys::unix_now()).map_err(|e| format!("{e:#}"))?;
        let public = crate::shared::ChannelPublicKey::of(&signers).map_err(|e| e.to_string())?;
        if self.shared.set_channel_key(&ch.name, public) {
            let fingerprints: Vec<String> = signers.keys().map(SigningKey::fingerprint).collect();
            tracing::info!(channel = %ch.name, keys = %fingerprints.join(" "), "the channel signs with these keys now");
        }
        Ok(signers)
    }

    /// The key that signs channel `ch`'s new packages.
    fn key(&mut self, ch: &Channel) -> Result<Arc<SigningKey>, RepoRefusal> {
        Ok(self.signers(ch)?.current().clone())
    }

    /// Brings every channel's served generation up to its revision (an
    /// empty, valid repository for a new channel). Run before the master
    /// serves anything, so a client never finds a channel missing.
    pub async fn catch_up(&mut self) {
        let farm = self.shared.farm();
        for ch in &farm.cfg.channels {
            let dir = self.channel_dir(&ch.name);
            dir.clean_partial();
            let Ok(revision) = self.shared.store.channel_revision(&ch.name).await else { continue };
            let signers = match self.signers(ch) {
                Ok(k) => k,
                Err(e) => {
                    tracing::error!(channel = %ch.name, error = %e, "cannot load the channel's key");
                    continue;
                }
            };
            self.warn_if_expiring(&ch.name, signers.current());
            // A new generation when the database moved on, when a reload
            // changed what the channel's indexes say (suites, targets, its
            // key, its settings), or when a Valid-Until is half gone. A
            // reload that changes none of these writes nothing. (A
            // generation an older kiln wrote records no shape; it is served
            // as it is until the channel next changes.)
            let shape = channel::shape(ch, &farm.cfg.targets, &signers);
            let stale = match dir.served_generation() {
                None => true,
                Some(served) => {
                    served.revision != revision.max(0) as u64
                        || (!served.shape.is_empty() && served.shape != shape)
                        || ch.valid_until.is_some_and(|v| served.age >= v / 2)
                }
            };
            if stale {
                if let Err(e) = self.regenerate(ch).await {
                    tracing::error!(channel = %ch.name, error = %e, "cannot write the repository");
                }
            }
        }
    }

    /// Warns in the log, once a day, of a channel key that expires within
    /// 30 days (an error once it has: clients refuse its signatures).
    fn warn_if_expiring(&mut self, channel: &str, key: &SigningKey) {
        const AHEAD: u64 = 30 * 86400;
        let Some(at) = key.expires_at() else { return };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if at > now + AHEAD
            || self.expiry_warned.get(channel).is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(86400))
        {
            return;
        }
        self.expiry_warned.insert(channel.to_string(), std::time::Instant::now());
        if at <= now {
            tracing::error!(channel, fingerprint = %key.fingerprint(), "the channel's signing key has expired; clients refuse what it signs: give the channel a key that does not expire yet");
        } else {
            tracing::warn!(channel, fingerprint = %key.fingerprint(), days = (at - now) / 86400, "the channel's signing key expires soon; extend it (a new self-signature) or change the channel's key before then");
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
                    self.catch_up_locked().await;
                    continue;
                }
            };
            // Masters sharing the database and data dir publish one at a
            // time, and only under their lease.
            let lock = self.lock().await;
            let may = match &lock {
                Some(_) => self.shared.store.holds_lease().await.map_err(|e| e.to_string()),
                None => Err("cannot take the publish lock".to_string()),
            };
            match (req, may) {
                (PublishRequest::Build(id), Err(e)) => {
                    // The database is out of reach: the build waits, and is tried again.
                    tracing::warn!(build = id, error = %e, "cannot publish now; trying again shortly");
                    let again = self.shared.publisher.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(RETRY).await;
                        let _ = again.send(PublishRequest::Build(id));
                    });
                }
                (PublishRequest::Build(id), Ok(false)) => {
                    // The dispatcher of a master that lost its lease starts
                    // afresh; whoever owns the build now publishes it.
                    tracing::warn!(build = id, "not publishing: this master does not hold its lease now");
                }
                (PublishRequest::Build(id), Ok(true)) => {
                    let began = std::time::Instant::now();
                    let published = self.publish_build(id).await;
                    self.shared.metrics.published("build", began.elapsed());
                    let outcome = match published {
                        Ok(summary) => PublishOutcome::Published(summary),
                        Err(e) => {
                            tracing::warn!(build = id, error = %e, "publish failed");
                            PublishOutcome::Failed(e.to_string())
                        }
                    };
                    self.shared.send(Event::Published { build_id: id, outcome });
                }
                (PublishRequest::Op(_, reply), Ok(false) | Err(_)) => {
                    let _ = reply.send(Err(RepoRefusal::Failed(
                        "this master cannot publish now (the database's publish lock or its lease); try again".into(),
                    )));
                }
                (PublishRequest::Op(op, reply), Ok(true)) => {
                    let began = std::time::Instant::now();
                    let outcome = self.operate(op).await;
                    self.shared.metrics.published("operation", began.elapsed());
                    let _ = reply.send(outcome);
                }
            }
            if let Some(lock) = lock {
                lock.release().await;
            }
        }
    }

    /// [`Publisher::catch_up`] under the farm's publish lock (another
    /// master may be writing a generation this one would clean up).
    pub async fn catch_up_locked(&mut self) {
        let Some(lock) = self.lock().await else { return };
        self.catch_up().await;
        lock.release().await;
    }

    /// The farm's publish lock (masters sharing a database publish one at
    /// a time); none when the database cannot be reached.
    async fn lock(&self) -> Option<kiln_db::PublishLock> {
        match self.shared.store.publish_lock().await {
            Ok(lock) => Some(lock),
            Err(e) => {
                tracing::error!(error = %e, "cannot take the publish lock");
                None
            }
        }
    }

    /// Publishes a build's packages into every channel that takes it.
    async fn publish_build(&mut self, id: i64) -> Result<String, RepoRefusal> {
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
        let channels: Vec<Channel> = kiln_core::channel::publishing_channels(&farm.cfg.channels, &build.properties)
            .into_iter()
            .cloned()
            .collect();
        if !artifacts.iter().any(|a| kiln_core::job::is_package(&a.name)) || channels.is_empty() {
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
        let mut ready = Vec::new();
        for ch in channels {
            let key = self.key(&ch)?;
            let existing = store.packages(&ch.name).await.map_err(|e| e.to_string())?;
            let dir = self.channel_dir(&ch.name);
            let (files, target, ch2) = (files.clone(), target.clone(), ch.clone());
            let prepared =
                tokio::task::spawn_blocking(move || prepare(&dir, &ch2, &key, &target, id, &files, &existing, replace))
                    .await
                    .map_err(|e| e.to_string())??;
            ready.push((ch, prepared));
        }
        // An upload is named by its own Source: field, which anyone with
        // own_jobs chooses: it owns names apart from the configured
        // component of that name, and adopts nothing, unless the config
        // says that component takes uploads of its source.
        // (A signed one: an upload accepted before signatures were
        // required, rebuilt now, stays apart.)
        let configured = farm.cfg.component(&build.component);
        let signed = build.properties.contains_key(kiln_core::props::SIGNED_BY_PROPERTY);
        let (owner, adopts) = match kiln_core::job::BuildSource::of(&build.properties) {
            kiln_core::job::BuildSource::Upload(_) if !(signed && configured.is_some_and(|c| c.takes_uploads)) => {
                (format!("upload:{}", build.component), Vec::new())
            }
            _ => (build.component.clone(), configured.map(|c| c.adopts.clone()).unwrap_or_default()),
        };
        self.claim_names(&owner, ready.iter().flat_map(|(_, p)| &p.add), &adopts).await?;
        let mut summary = Vec::new();
        for (ch, prepared) in ready {
            let n = prepared.add.len();
            if n > 0 || !prepared.remove.is_empty() {
                self.commit(&ch, &prepared.add, &prepared.remove).await?;
            }
            summary.push(format!("{n} to {}", ch.name));
        }
        Ok(summary.join(", "))
    }

    /// Makes sure `component` may publish the packages in `rows`: a name
    /// belongs to the component that published it first (recorded now for
    /// new names), so one component's build (or a worker lying about its
    /// output) cannot replace another's packages. `adopts` names the ones
    /// the config says moved to this component.
    async fn claim_names(
        &self,
        component: &str,
        rows: impl Iterator<Item = &PackageRow>,
        adopts: &[String],
    ) -> Result<(), RepoRefusal> {
        let mut names: Vec<(String, String)> = rows.map(|r| (r.kind.clone(), r.name.clone())).collect();
        names.sort();
        names.dedup();
        let taken =
            self.shared.store.claim_package_names(component, &names, adopts).await.map_err(|e| e.to_string())?;
        if taken.is_empty() {
            return Ok(());
        }
        let list: Vec<String> =
            taken.iter().map(|t| format!("{} (a {} of component {})", t.name, t.kind, t.owner)).collect();
        Err(RepoRefusal::Conflict(format!(
            "component {component} may not publish {}: each name belongs to the component that published it first; \
             if it moved, add it to `adopts` of component {component}",
            list.join(", ")
        )))
    }

    /// Records a channel change, applies retention, and serves the result.
    async fn commit(&mut self, ch: &Channel, add: &[PackageRow], remove: &[i64]) -> Result<i64, RepoRefusal> {
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
        // On disk before the files change: after a power cut the database
        // never names an older revision than the one served.
        store.make_durable().await.map_err(|e| e.to_string())?;
        crash_test_pause().await;
        self.regenerate(ch).await?;
        Ok(revision)
    }

    /// Writes the channel's current contents as a new generation, then
    /// removes pool files nothing names.
    async fn regenerate(&mut self, ch: &Channel) -> Result<(), RepoRefusal> {
        let store = &self.shared.store;
        let rows = store.packages(&ch.name).await.map_err(|e| e.to_string())?;
        let revision = store.channel_revision(&ch.name).await.map_err(|e| e.to_string())?;
        let keep_files: HashSet<String> =
            store.snapshot_files(&ch.name).await.map_err(|e| e.to_string())?.into_iter().collect();
        // An advisory that cannot be read is left out (and said in the
        // log), never a reason for the channel to stop publishing.
        let advisories: Vec<kiln_core::advisory::Advisory> = store
            .advisories(&ch.name)
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .filter_map(|b| {
                serde_json::from_str(b)
                    .map_err(
                        |e| tracing::error!(channel = %ch.name, error = %e, "an advisory cannot be read; left out"),
                    )
                    .ok()
            })
            .collect();
        let signers = self.signers(ch)?;
        let farm = self.shared.farm();
        let targets = farm.cfg.targets.clone();
        let dir = self.channel_dir(&ch.name);
        let ch = ch.clone();
        let entries = self.entries.clone();
        tokio::task::spawn_blocking(move || {
            let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
            let cache = entries.entry(ch.name.clone()).or_default();
            let contents = channel::Contents { rows, revision: revision as u64, keep_files, advisories };
            write_channel(&dir, &ch, &signers, &targets, contents, cache)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Serves a change the database has recorded without the commit path
    /// (an advisory, a rollback): on disk first, then a new generation.
    async fn serve_recorded(&mut self, ch: &Channel) -> Result<(), RepoRefusal> {
        self.shared.store.make_durable().await.map_err(|e| e.to_string())?;
        self.regenerate(ch).await
    }

    async fn operate(&mut self, op: RepoOp) -> Result<String, RepoRefusal> {
        let farm = self.shared.farm();
        let channel = |name: &str| {
            farm.cfg.channel(name).cloned().ok_or_else(|| RepoRefusal::NotFound(format!("no channel named {name:?}")))
        };
        let store = self.shared.store.clone();
        let failed = |e: kiln_db::StoreError| RepoRefusal::Failed(e.to_string());
        match op {
            RepoOp::Remove { channel: c, name, version } => {
                let ch = channel(&c)?;
                let rows = store.packages(&c).await.map_err(failed)?;
                let gone: Vec<i64> = rows
                    .iter()
                    .filter(|p| p.name == name && version.as_ref().is_none_or(|v| &p.version == v))
                    .map(|p| p.id)
                    .collect();
                if gone.is_empty() {
                    return Err(RepoRefusal::NotFound(match version {
                        Some(v) => format!("{name} {v} is not in channel {c}"),
                        None => format!("{name} is not in channel {c}"),
                    }));
                }
                self.commit(&ch, &[], &gone).await?;
                Ok(format!("removed {} file(s) of {name} from {c}", gone.len()))
            }
            RepoOp::Promote { name, version, from, to, replace } => {
                let (src, dst) = (channel(&from)?, channel(&to)?);
                if !src.promote_to.contains(&to) {
                    return Err(RepoRefusal::Conflict(format!(
                        "channel {from} does not promote to {to} (promote_to = [{}])",
                        src.promote_to.join(", ")
                    )));
                }
                let rows = store.packages(&from).await.map_err(failed)?;
                let picked: Vec<PackageRow> =
                    rows.into_iter().filter(|p| p.name == name && p.version == version).collect();
                if picked.is_empty() {
                    return Err(RepoRefusal::NotFound(format!("{name} {version} is not in channel {from}")));
                }
                let existing = store.packages(&to).await.map_err(failed)?;
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
                kiln_core::names::check_name(&name).map_err(|e| RepoRefusal::Invalid(format!("snapshot name: {e}")))?;
                let s = store.save_snapshot(&c, &name, crate::clock::now_us()).await.map_err(|e| match e {
                    kiln_db::StoreError::Sql(ref s) if s.to_string().to_lowercase().contains("unique") => {
                        RepoRefusal::Conflict(format!("channel {c} already has a snapshot named {name}"))
                    }
                    other => failed(other),
                })?;
                Ok(format!("snapshot {name} of {c}: {} file(s) at revision {}", s.packages, s.revision))
            }
            RepoOp::Resign { channel: c } => {
                let ch = channel(&c)?;
                let rows = store.packages(&c).await.map_err(failed)?;
                let key = self.key(&ch)?;
                let fingerprint = key.fingerprint();
                let dir = self.channel_dir(&c);
                let ch2 = ch.clone();
                // Each file is signed into a new pool path beside the one
                // it replaces, which goes once no generation or snapshot
                // names it.
                let prepared = tokio::task::spawn_blocking(move || resign(&dir, &ch2, &key, &rows))
                    .await
                    .map_err(|e| e.to_string())??;
                let n = prepared.add.len();
                if n > 0 {
                    self.commit(&ch, &prepared.add, &prepared.remove).await?;
                }
                Ok(format!("re-signed {n} file(s) in {c} with key {fingerprint}"))
            }
            RepoOp::AddAdvisory { channel: c, request } => {
                let ch = channel(&c)?;
                let rows = store.packages(&c).await.map_err(failed)?;
                let held: Vec<_> = channel::advisory_packages(&rows).into_iter().map(|(p, _)| p).collect();
                let advisory = kiln_core::advisory::resolve(&request, &held, keys::unix_now())
                    .map_err(|e| RepoRefusal::Invalid(e.to_string()))?;
                let body = serde_json::to_string(&advisory).map_err(|e| e.to_string())?;
                let revision = store
                    .add_advisory(&c, &advisory.id, &body, crate::clock::now_us())
                    .await
                    .map_err(failed)?
                    .ok_or_else(|| {
                        RepoRefusal::Conflict(format!("channel {c} already has an advisory {}", advisory.id))
                    })?;
                self.serve_recorded(&ch).await?;
                let names: Vec<String> =
                    advisory.packages.iter().map(|p| p.filename.trim_end_matches(".rpm").to_string()).collect();
                Ok(format!("advisory {} in {c} (revision {revision}): {}", advisory.id, names.join(", ")))
            }
            RepoOp::RemoveAdvisory { channel: c, id } => {
                let ch = channel(&c)?;
                let revision = store
                    .remove_advisory(&c, &id)
                    .await
                    .map_err(failed)?
                    .ok_or_else(|| RepoRefusal::NotFound(format!("channel {c} has no advisory {id}")))?;
                self.serve_recorded(&ch).await?;
                Ok(format!("advisory {id} removed from {c} (revision {revision})"))
            }
            RepoOp::Rollback { channel: c, name } => {
                let ch = channel(&c)?;
                let revision = store
                    .restore_snapshot(&c, &name)
                    .await
                    .map_err(failed)?
                    .ok_or_else(|| RepoRefusal::NotFound(format!("channel {c} has no snapshot named {name}")))?;
                self.serve_recorded(&ch).await?;
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
