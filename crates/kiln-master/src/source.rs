//! Packing a component's source directory for a worker: a gzipped tar,
//! cached while the tree is unchanged (same paths, sizes and mtimes).

use base64::Engine;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Source archives above this size are refused rather than sent to workers.
pub const MAX_SOURCE_BYTES: usize = 48 * 1024 * 1024;

#[derive(Default)]
pub struct SourceCache {
    entries: HashMap<PathBuf, (u64, Arc<String>)>,
}

impl SourceCache {
    /// The base64 of a `.tar.gz` of `dir`, from the cache when unchanged.
    pub fn archive(&mut self, dir: &Path) -> Result<Arc<String>, String> {
        if !dir.is_dir() {
            return Err(format!("source directory {} does not exist", dir.display()));
        }
        let sig = signature(dir).map_err(|e| format!("cannot read source directory {}: {e}", dir.display()))?;
        if let Some((s, archive)) = self.entries.get(dir) {
            if *s == sig {
                return Ok(archive.clone());
            }
        }
        let archive = Arc::new(pack(dir).map_err(|e| format!("cannot pack source directory {}: {e}", dir.display()))?);
        if archive.len() > MAX_SOURCE_BYTES * 4 / 3 {
            return Err(format!(
                "source directory {} is larger than {} MiB packed",
                dir.display(),
                MAX_SOURCE_BYTES >> 20
            ));
        }
        self.entries.insert(dir.to_path_buf(), (sig, archive.clone()));
        Ok(archive)
    }
}

fn pack(dir: &Path) -> std::io::Result<String> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir)?;
    let bytes = tar.into_inner()?.finish()?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A cheap fingerprint of a tree: paths, sizes and modification times.
fn signature(dir: &Path) -> std::io::Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let md = e.metadata()?;
            e.path().hash(&mut h);
            md.len().hash(&mut h);
            md.modified().ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).hash(&mut h);
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(h.finish())
}
