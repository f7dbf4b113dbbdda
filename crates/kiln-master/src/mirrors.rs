//! The master's mirrors of the repositories components build from
//! (`DATA_DIR/git/KEY.git`, `DATA_DIR/hg/KEY`): the poller fetches into
//! them to learn what a change touched. Garbage collection removes those
//! of repositories the config no longer names.

use kiln_core::config::{Source, Vcs};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Where the master mirrors repository `url`.
pub fn mirror_dir(data_dir: &Path, vcs: Vcs, url: &str) -> PathBuf {
    match vcs {
        Vcs::Git => data_dir.join("git").join(format!("{}.git", mirror_key(url))),
        Vcs::Hg => data_dir.join("hg").join(mirror_key(url)),
    }
}

fn mirror_key(url: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(url.as_bytes())[..10])
}

/// The mirrors under `data_dir` of repositories no component of `cfg`
/// builds from.
pub fn unnamed(data_dir: &Path, cfg: &kiln_core::FarmConfig) -> Vec<PathBuf> {
    let named: HashSet<PathBuf> = cfg
        .components
        .iter()
        .filter_map(|c| match &c.source {
            Some(Source::Vcs(v)) => Some(mirror_dir(data_dir, v.vcs, &v.url)),
            _ => None,
        })
        .collect();
    ["git", "hg"]
        .iter()
        .filter_map(|d| std::fs::read_dir(data_dir.join(d)).ok())
        .flat_map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()))
        .filter(|p| !named.contains(p))
        .collect()
}
