//! Writing a channel's served generation: APT dists and YUM repodata from
//! the stored rows, signed, switched in atomically; then pool files nothing
//! names any more are removed.

use super::keys::host_deb_arch;
use crate::events::RepoRefusal;
use kiln_core::advisory::{Advisory, AdvisoryPackage};
use kiln_core::config::{Channel, Family, Target};
use kiln_db::PackageRow;
use kiln_repo::apt::{Dist, ReleaseMeta};
use kiln_repo::deb::{DebEntry, DscEntry};
use kiln_repo::key::Signers;
use kiln_repo::publish::{ChannelContent, ChannelDir, YumRepo};
use kiln_repo::stored::EntryCache;
use kiln_repo::yum::RpmEntry;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;

/// A channel's parsed entries, kept by the publisher from one generation
/// to the next ([`EntryCache`]).
#[derive(Default)]
pub(super) struct ChannelEntries {
    debs: EntryCache<DebEntry>,
    dscs: EntryCache<DscEntry>,
    rpms: EntryCache<RpmEntry>,
}

/// What a channel's new generation holds: its rows at `revision`, and the
/// pool files its snapshots still name.
pub(super) struct Contents {
    pub rows: Vec<PackageRow>,
    pub revision: u64,
    pub keep_files: HashSet<String>,
    pub advisories: Vec<Advisory>,
}

/// The binary RPMs `rows` hold, as advisories name them, each with when it
/// was published (Unix seconds), in publish order.
pub(super) fn advisory_packages(rows: &[PackageRow]) -> Vec<(AdvisoryPackage, u64)> {
    rows.iter()
        .filter(|r| r.kind == "rpm")
        .filter_map(|r| {
            let e: RpmEntry = serde_json::from_str(&r.entry).ok()?;
            let package = AdvisoryPackage {
                filename: e.location.rsplit('/').next().unwrap_or(&e.location).to_string(),
                repository: r.repo.trim_start_matches("yum:").to_string(),
                name: e.name,
                epoch: e.epoch,
                version: e.version,
                release: e.release,
                arch: e.arch,
            };
            Some((package, (r.published_at / 1_000_000).max(0) as u64))
        })
        .collect()
}

/// `updateinfo.xml` of YUM repository `target`: the advisories naming its
/// packages, each listing those only; none when no advisory does.
fn updateinfo_of(channel: &str, target: &str, advisories: &[Advisory]) -> Option<String> {
    let here: Vec<Advisory> = advisories
        .iter()
        .filter_map(|a| {
            let packages: Vec<AdvisoryPackage> =
                a.packages.iter().filter(|p| p.repository == target).cloned().collect();
            (!packages.is_empty()).then(|| Advisory { packages, ..a.clone() })
        })
        .collect();
    (!here.is_empty()).then(|| kiln_repo::yum::render_updateinfo(&here, &format!("kiln-{channel}")))
}

/// Renders and serves a channel's generation from its rows, then removes
/// pool files that neither the rows nor a snapshot name.
pub(super) fn write_channel(
    dir: &ChannelDir,
    ch: &Channel,
    signers: &Signers,
    targets: &[Target],
    contents: Contents,
    cache: &mut ChannelEntries,
) -> Result<(), RepoRefusal> {
    let Contents { rows, revision, mut keep_files, advisories } = contents;
    // What the channel no longer holds is no longer advised.
    let advisories = kiln_core::advisory::in_effect(&advisories, &advisory_packages(&rows));
    let mut debs: BTreeMap<String, Vec<Arc<DebEntry>>> = BTreeMap::new();
    let mut dscs: BTreeMap<String, Vec<Arc<DscEntry>>> = BTreeMap::new();
    let mut rpms: BTreeMap<String, Vec<Arc<RpmEntry>>> = BTreeMap::new();
    let mut archs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in targets {
        match t.family {
            Family::Deb => {
                let suite = t.suite.clone().unwrap_or_else(|| "unstable".into());
                archs.entry(suite).or_default().insert(t.arch.clone().unwrap_or_else(|| host_deb_arch().into()));
            }
            Family::Rpm => {
                // Both repositories exist from the start, so dnf can be told about either.
                rpms.entry(t.name.clone()).or_default();
                rpms.entry(format!("{}{}", t.name, kiln_core::debuginfo::DEBUGINFO_SUFFIX)).or_default();
            }
        }
    }
    // The stored entries, each kind in the rows' order: those of the last
    // generation from the cache, new ones parsed on every CPU.
    let of = |apt: bool, kind: Option<&str>| -> Vec<&PackageRow> {
        rows.iter()
            .filter(|r| r.repo.starts_with(if apt { "apt:" } else { "yum:" }) && kind.is_none_or(|k| r.kind == k))
            .collect()
    };
    fn loaded<T: serde::de::DeserializeOwned + Send>(
        cache: &mut EntryCache<T>,
        rows: &[&PackageRow],
    ) -> Result<std::vec::IntoIter<Arc<T>>, String> {
        let texts: Vec<(i64, &str)> = rows.iter().map(|r| (r.id, r.entry.as_str())).collect();
        cache
            .load(&texts)
            .map(Vec::into_iter)
            .map_err(|(i, e)| format!("package row {}: {e}", rows.get(i).map_or(0, |r| r.id)))
    }
    let mut deb_entries = loaded(&mut cache.debs, &of(true, Some("deb")))?;
    let mut dsc_entries = loaded(&mut cache.dscs, &of(true, Some("dsc")))?;
    let mut rpm_entries = loaded(&mut cache.rpms, &of(false, None))?;
    let missing = |r: &PackageRow| format!("package row {}: its entry was not parsed", r.id);
    for r in &rows {
        keep_files.insert(r.file.clone());
        if let Some(suite) = r.repo.strip_prefix("apt:") {
            let a = archs.entry(suite.to_string()).or_default();
            match r.kind.as_str() {
                "deb" => {
                    let e = deb_entries.next().ok_or_else(|| missing(r))?;
                    if e.arch != "all" {
                        a.insert(e.arch.clone());
                    }
                    debs.entry(suite.to_string()).or_default().push(e);
                }
                "dsc" => {
                    let e = dsc_entries.next().ok_or_else(|| missing(r))?;
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
            let e = rpm_entries.next().ok_or_else(|| missing(r))?;
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
        valid_until: ch.valid_until.map(crate::clock::apt_date_after),
    };
    let empty_debs = Vec::new();
    let empty_dscs = Vec::new();
    let apt = archs
        .iter()
        .map(|(suite, a)| Dist {
            suite: suite.clone(),
            component: ch.component.clone(),
            archs: a.clone(),
            binaries: debs.get(suite).unwrap_or(&empty_debs).iter().map(AsRef::as_ref).collect(),
            sources: dscs.get(suite).unwrap_or(&empty_dscs).iter().map(AsRef::as_ref).collect(),
        })
        .collect();
    let yum = rpms
        .iter()
        .map(|(t, e)| YumRepo {
            target: t.clone(),
            entries: e.iter().map(AsRef::as_ref).collect(),
            updateinfo: updateinfo_of(&ch.name, t, &advisories),
        })
        .collect();
    let content = ChannelContent { meta, apt, yum };
    let shape = shape(ch, targets, signers);
    dir.write_generation(revision, &shape, &content, signers, &crate::clock::apt_date()).map_err(|e| e.to_string())?;
    remove_unnamed(&dir.root().join("pool"), dir.root(), &keep_files);
    Ok(())
}

/// What shapes a channel's served generation besides its rows: its config,
/// the targets' suites and architectures, and the public keys it signs
/// with (their self-signatures too: an extended key is published again). A
/// config reload that leaves this alone leaves the served generation alone.
pub(super) fn shape(ch: &Channel, targets: &[Target], signers: &Signers) -> String {
    let targets: Vec<String> =
        targets.iter().map(|t| format!("{}:{:?}:{:?}:{:?}", t.name, t.family, t.suite, t.arch)).collect();
    let keys = signers.public_binary().map(|b| kiln_repo::hash::sha256(&b)).unwrap_or_default();
    kiln_repo::hash::sha256(format!("{ch:?}\n{targets:?}\n{keys}").as_bytes())
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
