//! `kiln backup DIR` and `kiln restore DIR`: a farm's database and data
//! dir, copied while the master runs, with a manifest of checksums.
//!
//! The database is copied first, consistently (SQLite's `VACUUM INTO`;
//! PostgreSQL is `pg_dump`'s job), then the files: keys, repositories,
//! logs, artifacts, uploads. Files written after the database copy are
//! harmless extras (content no row names yet); the repositories' files are
//! written as new generations and switched in by rename, so a copy holds
//! whole files. `MANIFEST` lists every file with its size and SHA-256, and
//! a restore checks each before it writes anything into the new data dir.

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The database copy's name in a backup.
const DATABASE: &str = "kiln.db";
const MANIFEST: &str = "MANIFEST";
/// Not copied: the database (copied consistently instead) and what is in
/// flight (uploads being received; they start over).
const SKIPPED: &[&str] = &["kiln.db", "kiln.db-wal", "kiln.db-shm", "incoming"];

/// What a backup or restore copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
    /// Whether the database was copied (not when it is PostgreSQL).
    pub database: bool,
}

/// Backs up the farm of `config` into `dest` (new or empty).
pub async fn backup(config: &Path, dest: &Path) -> anyhow::Result<Copied> {
    let farm = crate::farm::LoadedFarm::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let data_dir = farm.data_dir();
    empty_dir(dest)?;
    let store = kiln_db::Store::connect(&farm.database_url()).await.context("cannot open the database")?;
    let database = match store.snapshot_into(&dest.join(DATABASE)).await {
        Ok(()) => true,
        Err(kiln_db::StoreError::Unsupported(why)) => {
            tracing::warn!("{why}");
            false
        }
        Err(e) => return Err(e).context("cannot copy the database"),
    };
    store.close().await;
    let mut manifest = String::new();
    let mut copied = Copied { files: 0, bytes: 0, database };
    if database {
        let (size, sum) = checksum(&dest.join(DATABASE))?;
        manifest.push_str(&format!("{sum} {size} {DATABASE}\n"));
        copied.files += 1;
        copied.bytes += size;
    }
    let files_dir = dest.join("files");
    for rel in files_under(&data_dir, Path::new(""))? {
        if SKIPPED.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let from = data_dir.join(&rel);
        let to = files_dir.join(&rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        let meta = fs::symlink_metadata(&from)?;
        if meta.file_type().is_symlink() {
            // Repositories switch generations by symlink: kept as links.
            let target = fs::read_link(&from)?;
            std::os::unix::fs::symlink(&target, &to)?;
            manifest.push_str(&format!("link {} {}\n", target.display(), rel.display()));
            continue;
        }
        let (size, sum) = copy_summed(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        fs::set_permissions(&to, meta.permissions())?;
        manifest.push_str(&format!("{sum} {size} files/{}\n", rel.display()));
        copied.files += 1;
        copied.bytes += size;
    }
    kiln_repo::fsio::write_atomic_mode(&dest.join(MANIFEST), manifest.as_bytes(), 0o600)?;
    Ok(copied)
}

/// Restores a backup into the empty (or new) data dir of `config`,
/// checking every file against the manifest first.
pub async fn restore(src: &Path, config: &Path) -> anyhow::Result<Copied> {
    let farm = crate::farm::LoadedFarm::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let data_dir = farm.data_dir();
    let manifest = fs::read_to_string(src.join(MANIFEST))
        .with_context(|| format!("{} is not a kiln backup: no {MANIFEST}", src.display()))?;
    let mut entries = Vec::new();
    for (n, line) in manifest.lines().enumerate() {
        let mut words = line.splitn(3, ' ');
        let (Some(a), Some(b), Some(rel)) = (words.next(), words.next(), words.next()) else {
            bail!("{MANIFEST} line {}: not `SHA256 SIZE PATH` nor `link TARGET PATH`", n + 1);
        };
        if rel.split('/').any(|p| p == ".." || p.is_empty()) {
            bail!("{MANIFEST} line {}: the path {rel:?} leaves the backup", n + 1);
        }
        // A link may point within the data dir only (generations, pools).
        if a == "link" && !stays_inside(rel, b) {
            bail!("{MANIFEST} line {}: the link {rel:?} points outside the data dir", n + 1);
        }
        entries.push((a.to_string(), b.to_string(), rel.to_string()));
    }
    for (sum, size, rel) in entries.iter().filter(|e| e.0 != "link") {
        let (got_size, got_sum) =
            checksum(&src.join(rel)).with_context(|| format!("cannot read {rel} in the backup"))?;
        if &got_sum != sum || got_size.to_string() != *size {
            bail!("{rel} in the backup does not match its checksum in {MANIFEST}: the backup is damaged; nothing was restored");
        }
    }
    empty_dir(&data_dir)?;
    let mut copied = Copied { files: 0, bytes: 0, database: false };
    for (sum, size, rel) in &entries {
        let to = match rel.strip_prefix("files/") {
            Some(r) => data_dir.join(r),
            None if rel == DATABASE => {
                copied.database = true;
                data_dir.join(DATABASE)
            }
            None if sum == "link" => data_dir.join(rel.strip_prefix("files/").unwrap_or(rel)),
            None => bail!("{MANIFEST}: unexpected entry {rel:?}"),
        };
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        if sum == "link" {
            std::os::unix::fs::symlink(size, &to)?;
            continue;
        }
        let from = src.join(rel);
        copy_summed(&from, &to)?;
        fs::set_permissions(&to, fs::metadata(&from)?.permissions())?;
        copied.files += 1;
        copied.bytes += size.parse::<u64>().unwrap_or(0);
    }
    if !copied.database && farm.cfg.master.database.is_none() {
        bail!("the backup holds no database copy, and this config keeps its database in the data dir");
    }
    Ok(copied)
}

/// Whether a link at `rel` (relative to the data dir) to `target` points
/// inside the data dir, read lexically.
fn stays_inside(rel: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth: Vec<&str> = rel.split('/').collect();
    depth.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            p => depth.push(p),
        }
    }
    true
}

/// Makes `dir` if missing; refuses one that holds anything.
fn empty_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if fs::read_dir(dir)?.next().is_some() {
        bail!("{} is not empty: give a new or empty directory", dir.display());
    }
    Ok(())
}

/// Every file and symlink under `root/rel`, relative to `root`, sorted.
fn files_under(root: &Path, rel: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(root.join(rel))?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel = rel.join(e.file_name());
        let kind = e.file_type()?;
        if kind.is_dir() {
            out.extend(files_under(root, &rel)?);
        } else if kind.is_file() || kind.is_symlink() {
            out.push(rel);
        }
    }
    Ok(out)
}

fn checksum(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((n, hex::encode(h.finalize())))
}

/// Copies a file (synced), returning its size and SHA-256.
fn copy_summed(from: &Path, to: &Path) -> anyhow::Result<(u64, String)> {
    let mut input = fs::File::open(from)?;
    let mut out = fs::File::create(to)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let got = std::io::Read::read(&mut input, &mut buf)?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        out.write_all(&buf[..got])?;
        n += got as u64;
    }
    out.sync_all()?;
    Ok((n, hex::encode(h.finalize())))
}
