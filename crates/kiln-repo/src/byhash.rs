//! APT's `by-hash` directories, shared by a channel's generations.
//!
//! A client that read an `InRelease` a moment before a publish fetches the
//! indexes it names by their SHA-256 (`DIR/by-hash/SHA256/HASH`), from the
//! generation served by then. So every generation must reach the indexes of
//! every older generation kept. They live in one store per channel,
//!
//! ```text
//! repos/CHANNEL/by-hash/apt/SUITE/main/binary-amd64/SHA256/HASH   hard links to generations' indexes
//! gens/42/apt/dists/SUITE/main/binary-amd64/by-hash -> ../../../../../../../by-hash/apt/SUITE/main/binary-amd64
//! ```
//!
//! and a generation adds its own indexes to it (a few links) instead of
//! linking every kept generation's into a directory of its own (hundreds
//! of links, and as many files to flush, on a channel that publishes every
//! few minutes). When a publish drops older generations, what no kept
//! generation lists is removed from the store.
//!
//! Generations written before the store (by an older kiln) hold by-hash
//! directories of their own; a publish links the indexes of any such
//! generation kept into the store.

use crate::fsio::{create_dirs, sync_dir};
use crate::{RepoError, Result};
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The store's directory in a channel's directory.
pub const STORE: &str = "by-hash";

/// The (SHA-256, directory, path) of every index a `Release` lists, its
/// directory relative to the suite's (every index lies in one).
fn listed(release: &str) -> Vec<(String, String, String)> {
    crate::apt::release_sha256(release)
        .into_iter()
        .filter_map(|(hash, path)| Some((hash, path.rsplit_once('/')?.0.to_string(), path)))
        .collect()
}

/// Links the indexes of generation `gen` (a tree in `gens/`, named by its
/// directory `gen_dir`) for `suite`, listed by `release`, into the store
/// of the channel at `root`, and makes each index directory's `by-hash` a
/// link into it. `older` are the kept generations' directories.
pub fn share(root: &Path, gen_dir: &Path, suite: &str, release: &str, older: &[PathBuf]) -> Result<()> {
    let store = root.join(STORE).join("apt").join(suite);
    let dist = gen_dir.join("apt/dists").join(suite);
    let mut touched = BTreeSet::new();
    if !store.is_dir() {
        create_dirs(&store)?;
        touched.extend(store.ancestors().skip(1).take_while(|d| d.starts_with(root)).map(Path::to_path_buf));
    }
    link_into(root, &store, &dist, release, &mut touched)?;
    let dirs: BTreeSet<String> = listed(release).into_iter().map(|(_, dir, _)| dir).collect();
    for prev in older {
        let prev_dist = prev.join("apt/dists").join(suite);
        // Written by an older kiln: a by-hash directory of its own.
        let own = dirs.iter().find_map(|d| fs::symlink_metadata(prev_dist.join(d).join("by-hash")).ok());
        if own.is_some_and(|m| m.is_dir()) {
            if let Ok(prev_release) = fs::read_to_string(prev_dist.join("Release")) {
                link_into(root, &store, &prev_dist, &prev_release, &mut touched)?;
            }
        }
    }
    // The links' names reach the disk before the generation is served.
    for dir in &touched {
        sync_dir(dir)?;
    }
    // Each index directory's `by-hash`, relative, so the tree may be moved
    // (a rename from `N.tmp` to `N`, a backup restored elsewhere).
    let gen_rel =
        gen_dir.strip_prefix(root).map_err(|_| RepoError::Invalid("a generation outside its channel".into()))?;
    for d in dirs {
        let link = dist.join(&d).join("by-hash");
        if fs::symlink_metadata(&link).is_ok() || !dist.join(&d).is_dir() {
            continue;
        }
        let ups = gen_rel.join("apt/dists").join(suite).join(&d).components().count();
        let target = format!("{}{STORE}/apt/{suite}/{d}", "../".repeat(ups));
        std::os::unix::fs::symlink(&target, &link).map_err(|e| RepoError::io(&link, e))?;
    }
    Ok(())
}

/// Links each index `release` lists (found under `dist`) into `store` (in
/// the channel at `root`), noting the directories to sync: those it added
/// names to, and those that hold the indexes already (a publish that failed
/// before its sync may have linked them).
fn link_into(root: &Path, store: &Path, dist: &Path, release: &str, touched: &mut BTreeSet<PathBuf>) -> Result<()> {
    for (hash, dir, path) in listed(release) {
        let into = store.join(dir).join("SHA256");
        let dest = into.join(&hash);
        if dest.exists() {
            touched.insert(into);
            continue;
        }
        let src = dist.join(&path);
        if !src.is_file() {
            continue;
        }
        if !into.is_dir() {
            create_dirs(&into)?;
            // New directories: their names too must reach the disk.
            touched.extend(into.ancestors().skip(1).take_while(|d| d.starts_with(root)).map(Path::to_path_buf));
        }
        match fs::hard_link(&src, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(RepoError::io(&dest, e)),
        }
        touched.insert(into);
    }
    Ok(())
}

/// Removes from the store of the channel at `root` every index that none of
/// `kept` (generation directories, the served one among them) lists.
pub fn prune(root: &Path, kept: &[PathBuf]) {
    let store = root.join(STORE).join("apt");
    let Ok(suites) = fs::read_dir(&store) else { return };
    for suite in suites.flatten() {
        let name = suite.file_name().to_string_lossy().into_owned();
        let mut wanted = HashSet::new();
        for g in kept {
            let release = match fs::read_to_string(g.join("apt/dists").join(&name).join("Release")) {
                Ok(release) => release,
                // That generation has no such suite.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // Not knowing what a kept generation lists, remove nothing.
                Err(_) => return,
            };
            wanted.extend(listed(&release).into_iter().map(|(hash, dir, _)| format!("{dir}/SHA256/{hash}")));
        }
        remove_unwanted(&suite.path(), &suite.path(), &wanted);
    }
}

/// Removes the files under `dir` whose path relative to `base` is not in
/// `wanted`.
fn remove_unwanted(base: &Path, dir: &Path, wanted: &HashSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => remove_unwanted(base, &path, wanted),
            Ok(_) => {
                let rel = path.strip_prefix(base).map(|r| r.to_string_lossy().into_owned()).unwrap_or_default();
                if !wanted.contains(&rel) {
                    let _ = fs::remove_file(&path);
                }
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::apt::{Dist, ReleaseMeta};
    use crate::deb::DebEntry;
    use crate::key::{Signers, SigningKey};
    use crate::publish::{ChannelContent, ChannelDir};
    use std::path::Path;

    fn entries(n: usize) -> Vec<DebEntry> {
        (0..n)
            .map(|i| DebEntry {
                name: format!("pkg{i}"),
                version: "1.0-1".into(),
                arch: "amd64".into(),
                source: format!("pkg{i}"),
                stanza: format!("Package: pkg{i}\nVersion: 1.0-1\nArchitecture: amd64"),
            })
            .collect()
    }

    fn publish(channel: &ChannelDir, key: &Signers, n: usize) -> String {
        let debs = entries(n);
        let content = ChannelContent {
            meta: ReleaseMeta { origin: "kiln".into(), label: "t".into(), description: "t".into(), valid_until: None },
            apt: vec![Dist {
                suite: "bookworm".into(),
                component: "main".into(),
                archs: ["amd64".to_string()].into(),
                binaries: debs.iter().collect(),
                sources: vec![],
            }],
            yum: vec![],
        };
        channel.write_generation(n as u64, "", &content, key, "Sun, 22 Nov 2026 10:00:00 UTC").expect("publish");
        std::fs::read_to_string(channel.root().join("current/apt/dists/bookworm/Release")).expect("Release")
    }

    /// Whether every index `release` lists is served by hash from the current generation.
    fn reachable(root: &Path, release: &str) -> bool {
        crate::apt::release_sha256(release).iter().all(|(hash, path)| {
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            let file = root.join("current/apt/dists/bookworm").join(dir).join("by-hash/SHA256").join(hash);
            std::fs::read(&file).is_ok_and(|b| &crate::hash::sha256(&b) == hash)
        })
    }

    fn key() -> Signers {
        let key =
            SigningKey::generate("t <t@localhost>", None, kiln_core::channel::KeyAlgorithm::Ed25519).expect("key");
        Signers::new(std::sync::Arc::new(key), None)
    }

    #[test]
    fn every_kept_generation_is_reachable_by_hash_and_a_dropped_one_is_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let channel = ChannelDir::new(dir.path()).keeping_old_for(std::time::Duration::ZERO);
        let key = key();
        let releases: Vec<String> = (1..=5).map(|n| publish(&channel, &key, n)).collect();
        let served = channel.root().join("current/apt/dists/bookworm/main/binary-amd64/by-hash");
        assert!(served.symlink_metadata().expect("by-hash").is_symlink(), "a link into the channel's store");
        // The served generation and the two kept before it.
        for release in &releases[2..] {
            assert!(reachable(channel.root(), release), "{release}");
        }
        // The dropped generations' own Packages are gone from the store.
        for release in &releases[..2] {
            let own = crate::apt::release_sha256(release)
                .into_iter()
                .filter(|(_, path)| path == "main/binary-amd64/Packages")
                .map(|(hash, _)| hash)
                .collect::<Vec<_>>();
            assert_eq!(own.len(), 1);
            let stored = channel.root().join("by-hash/apt/bookworm/main/binary-amd64/SHA256").join(&own[0]);
            assert!(!stored.exists(), "{} pruned", stored.display());
        }
    }

    #[test]
    fn generations_from_before_the_store_stay_reachable_by_hash() {
        let dir = tempfile::tempdir().expect("tmp");
        let channel = ChannelDir::new(dir.path());
        let key = key();
        let first = publish(&channel, &key, 1);
        // Make the first generation as an older kiln wrote it: by-hash
        // directories of its own, and no store.
        let gen = std::fs::canonicalize(channel.root().join("current")).expect("gen");
        for (hash, path) in crate::apt::release_sha256(&first) {
            let (d, _) = path.rsplit_once('/').expect("a directory");
            let by_hash = gen.join("apt/dists/bookworm").join(d).join("by-hash");
            if by_hash.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
                std::fs::remove_file(&by_hash).expect("unlink");
            }
            std::fs::create_dir_all(by_hash.join("SHA256")).expect("mkdir");
            let _ = std::fs::hard_link(gen.join("apt/dists/bookworm").join(&path), by_hash.join("SHA256").join(hash));
        }
        std::fs::remove_dir_all(channel.root().join(super::STORE)).expect("no store");
        let second = publish(&channel, &key, 2);
        assert!(reachable(channel.root(), &first), "the older kiln's generation, through the new one");
        assert!(reachable(channel.root(), &second));
    }
}
