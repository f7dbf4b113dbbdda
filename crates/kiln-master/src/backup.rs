//! `kiln backup DIR` and `kiln restore DIR`: a farm's database and data
//! dir, copied while the master runs, with a manifest of checksums.
//!
//! Backup: the data dir's files are first hard-linked into a staging
//! directory inside it (a moment's work, and a file the master removes
//! afterwards stays in the staging copy); then the database is copied
//! consistently (SQLite's `VACUUM INTO`; PostgreSQL is `pg_dump`'s job);
//! then files that appeared meanwhile are linked too, so every file the
//! database copy names is there. The staging copy is then copied out,
//! synced, with `MANIFEST`: every file's size and SHA-256, and each
//! symlink (repository generations) with its target.
//!
//! Restore trusts nothing in the backup: every entry is checked first
//! (paths inside the backup, symlinks pointing inside the data dir and
//! never through another symlink, no path twice, checksums), then it is
//! restored into a new directory beside the data dir — regular files
//! first, created anew without following links, modes masked to at most
//! 0755, then the symlinks — and renamed into place only once whole.

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The database copy's name in a backup.
const DATABASE: &str = "kiln.db";
const MANIFEST: &str = "MANIFEST";
/// Where a backup stages its hard links, inside the data dir.
const STAGING: &str = ".backup-staging";
/// Not copied: the database (copied consistently instead), uploads in
/// flight (they start over) and a staging area left by an interrupted backup.
const SKIPPED: &[&str] = &["kiln.db", "kiln.db-wal", "kiln.db-shm", "incoming", STAGING];

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
    new_private_dir(dest)?;
    let staging = data_dir.join(format!("{STAGING}.{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    let result = async {
        link_tree(&data_dir, &staging)?;
        let store = kiln_db::Store::connect(&farm.database_url()).await.context("cannot open the database")?;
        let snapshot = store.snapshot_into(&dest.join(DATABASE)).await;
        store.close().await;
        let database = match snapshot {
            Ok(()) => true,
            Err(kiln_db::StoreError::Unsupported(why)) => {
                tracing::warn!("{why}");
                false
            }
            Err(e) => return Err(e).context("cannot copy the database"),
        };
        // Files written while the database was copied, which it may name.
        link_tree(&data_dir, &staging)?;
        copy_out(&staging, dest, database)
    }
    .await;
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Hard-links every file of `data_dir` not linked yet into `staging` (a
/// symlink is made anew there); files that vanish meanwhile are skipped.
fn link_tree(data_dir: &Path, staging: &Path) -> anyhow::Result<()> {
    for rel in files_under(data_dir, Path::new(""))? {
        if SKIPPED.iter().any(|s| rel.starts_with(s)) || rel.to_string_lossy().starts_with(STAGING) {
            continue;
        }
        let (from, to) = (data_dir.join(&rel), staging.join(&rel));
        if to.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        let linked = match fs::symlink_metadata(&from) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => Err(e),
            Ok(m) if m.file_type().is_symlink() => {
                fs::read_link(&from).and_then(|t| std::os::unix::fs::symlink(t, &to))
            }
            Ok(_) => fs::hard_link(&from, &to),
        };
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot stage {}", from.display())),
        }
    }
    Ok(())
}

/// Copies the staged files (and the database copy already in `dest`) into
/// `dest/files/`, with the manifest.
fn copy_out(staging: &Path, dest: &Path, database: bool) -> anyhow::Result<Copied> {
    let mut manifest = String::new();
    let mut copied = Copied { files: 0, bytes: 0, database };
    if database {
        let db = dest.join(DATABASE);
        fs::set_permissions(&db, fs::Permissions::from_mode(0o600))?;
        fs::File::open(&db)?.sync_all()?;
        let (size, sum) = checksum(&db)?;
        manifest.push_str(&format!("{sum} {size} {DATABASE}\n"));
        copied.files += 1;
        copied.bytes += size;
    }
    let files_dir = dest.join("files");
    for rel in files_under(staging, Path::new(""))? {
        let from = staging.join(&rel);
        let to = files_dir.join(&rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        let meta = fs::symlink_metadata(&from)?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&from)?;
            manifest.push_str(&format!("link {} {}\n", target.display(), rel.display()));
            continue;
        }
        let (size, sum) = copy_summed(&from, &to, meta.permissions().mode())
            .with_context(|| format!("cannot copy {}", from.display()))?;
        manifest.push_str(&format!("{sum} {size} files/{}\n", rel.display()));
        copied.files += 1;
        copied.bytes += size;
    }
    kiln_repo::fsio::write_atomic_mode(&dest.join(MANIFEST), manifest.as_bytes(), 0o600)?;
    Ok(copied)
}

/// One checked line of a manifest.
enum Entry {
    File { sha256: String, size: u64, rel: String },
    Link { target: String, rel: String },
}

/// Reads and checks a manifest: paths inside the backup, no path twice,
/// links that stay inside the data dir and pass through no other link,
/// nothing placed under a link.
fn read_manifest(text: &str) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = n + 1;
        let mut words = line.splitn(3, ' ');
        let (Some(a), Some(b), Some(path)) = (words.next(), words.next(), words.next()) else {
            bail!("{MANIFEST} line {at}: not `SHA256 SIZE PATH` nor `link TARGET PATH`");
        };
        if path.starts_with('/') || path.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            bail!("{MANIFEST} line {at}: the path {path:?} leaves the backup");
        }
        let top = path.strip_prefix("files/").unwrap_or(path);
        if top.starts_with(".restoring.") || top.starts_with(STAGING) {
            bail!("{MANIFEST} line {at}: {path:?} is a name kiln keeps for itself");
        }
        let entry = if a == "link" {
            if !repository_link(path, b) {
                bail!("{MANIFEST} line {at}: the link {path:?} -> {b:?} is not one of a repository's own links");
            }
            Entry::Link { target: b.to_string(), rel: path.to_string() }
        } else if path == DATABASE || path.starts_with("files/") {
            let size: u64 = b.parse().map_err(|_| anyhow::anyhow!("{MANIFEST} line {at}: {b:?} is not a size"))?;
            if a.len() != 64 || !a.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("{MANIFEST} line {at}: {a:?} is not a SHA-256");
            }
            Entry::File { sha256: a.to_string(), size, rel: path.to_string() }
        } else {
            bail!("{MANIFEST} line {at}: unexpected entry {path:?}");
        };
        let placed = match &entry {
            Entry::File { rel, .. } => rel.strip_prefix("files/").unwrap_or(DATABASE).to_string(),
            Entry::Link { rel, .. } => rel.clone(),
        };
        if !seen.insert(placed.clone()) {
            bail!("{MANIFEST} line {at}: {placed:?} is named twice");
        }
        entries.push((placed, entry));
    }
    let links: HashSet<&str> =
        entries.iter().filter(|(_, e)| matches!(e, Entry::Link { .. })).map(|(p, _)| p.as_str()).collect();
    for (placed, e) in &entries {
        // Nothing goes through a link: no entry under one, no link's target through one.
        let mut prefix = String::new();
        for part in placed.split('/') {
            if links.contains(prefix.trim_end_matches('/')) && !prefix.is_empty() {
                bail!("{MANIFEST}: {placed:?} lies under the link {:?}", prefix.trim_end_matches('/'));
            }
            prefix.push_str(part);
            prefix.push('/');
        }
        if let Entry::Link { target, .. } = e {
            let resolved = resolve(placed, target).unwrap_or_default();
            let mut prefix = String::new();
            for part in resolved.split('/') {
                prefix.push_str(part);
                if links.contains(prefix.as_str()) && prefix != resolved {
                    bail!("{MANIFEST}: the link {placed:?} points through the link {prefix:?}");
                }
                prefix.push('/');
            }
        }
    }
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

/// Where a link at `rel` to `target` points, relative to the data dir, read
/// lexically; none when it leaves it.
fn resolve(rel: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut at: Vec<&str> = rel.split('/').collect();
    at.pop();
    let mut went_down = false;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            // Up only before going down: `..` after a name could climb out
            // of a directory reached through a link.
            ".." if !went_down => {
                at.pop()?;
            }
            ".." => return None,
            p => {
                went_down = true;
                at.push(p);
            }
        }
    }
    Some(at.join("/"))
}

/// Whether a link is of the kind a farm's repositories make, and no other:
/// inside `repos/CHANNEL/`, to that channel's generations or pool, or a
/// generation's `by-hash` to the channel's APT by-hash store. A link
/// elsewhere could serve the keys or the database as repository files.
fn repository_link(rel: &str, target: &str) -> bool {
    let Some(resolved) = resolve(rel, target) else { return false };
    let (from, to): (Vec<&str>, Vec<&str>) = (rel.split('/').collect(), resolved.split('/').collect());
    from.len() >= 3
        && to.len() >= 3
        && from[0] == "repos"
        && to[0] == "repos"
        && from[1] == to[1]
        && match to[2] {
            "gens" | "pool" => true,
            "by-hash" => from.last() == Some(&"by-hash") && to.get(3) == Some(&"apt"),
            _ => false,
        }
}

/// Restores a backup into the empty (or new) data dir of `config`,
/// checking every file against the manifest first.
pub async fn restore(src: &Path, config: &Path) -> anyhow::Result<Copied> {
    let farm = crate::farm::LoadedFarm::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let data_dir = farm.data_dir();
    let text = fs::read_to_string(src.join(MANIFEST))
        .with_context(|| format!("{} is not a kiln backup: no {MANIFEST}", src.display()))?;
    let entries = read_manifest(&text)?;
    let has_database = entries.iter().any(|e| matches!(e, Entry::File { rel, .. } if rel == DATABASE));
    match (&farm.cfg.master.database, has_database) {
        (None, false) => bail!("the backup holds no database copy, and this config keeps its database in the data dir"),
        (Some(_), true) => bail!(
            "this config names its own database ([master] database): restore the backup's {DATABASE} there yourself, \
             or restore with a config that keeps the database in the data dir"
        ),
        _ => {}
    }
    for e in &entries {
        if let Entry::File { sha256, size, rel } = e {
            let (got_size, got_sum) =
                checksum(&src.join(rel)).with_context(|| format!("cannot read {rel} in the backup"))?;
            if &got_sum != sha256 || got_size != *size {
                bail!("{rel} in the backup does not match its checksum in {MANIFEST}: the backup is damaged; nothing was restored");
            }
        }
    }
    if data_dir.exists() && fs::read_dir(&data_dir)?.next().is_some() {
        bail!("{} is not empty: restore into a new or empty data dir", data_dir.display());
    }
    // Built inside the data dir (the master's user may write nowhere else),
    // then moved up entry by entry.
    fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let building = data_dir.join(format!(".restoring.{}", std::process::id()));
    new_private_dir(&building)?;
    let result = restore_into(src, &entries, &building).and_then(|copied| {
        for e in fs::read_dir(&building)? {
            let e = e?;
            fs::rename(e.path(), data_dir.join(e.file_name()))?;
        }
        fs::remove_dir(&building)?;
        Ok(copied)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&building);
    }
    result
}

/// Writes the entries into `into` (a new directory): files first, each
/// checked again as it is copied, then the links.
fn restore_into(src: &Path, entries: &[Entry], into: &Path) -> anyhow::Result<Copied> {
    let mut copied = Copied { files: 0, bytes: 0, database: false };
    for e in entries {
        let Entry::File { sha256, rel, .. } = e else { continue };
        let to = into.join(rel.strip_prefix("files/").unwrap_or(DATABASE));
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        let from = src.join(rel);
        let mode = open_regular(&from)?.metadata()?.permissions().mode();
        let (size, sum) = copy_summed(&from, &to, mode)?;
        if &sum != sha256 {
            bail!("{rel} changed while it was restored; nothing was restored");
        }
        copied.database |= rel == DATABASE;
        copied.files += 1;
        copied.bytes += size;
    }
    for e in entries {
        let Entry::Link { target, rel } = e else { continue };
        let to = into.join(rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, &to)?;
    }
    Ok(copied)
}

/// Makes `dir` (mode 0700) if missing; refuses one that holds anything.
fn new_private_dir(dir: &Path) -> anyhow::Result<()> {
    match fs::create_dir_all(dir) {
        Ok(()) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    if fs::read_dir(dir)?.next().is_some() {
        bail!("{} is not empty: give a new or empty directory", dir.display());
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Every file and symlink under `root/rel`, relative to `root`, sorted.
fn files_under(root: &Path, rel: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = match fs::read_dir(root.join(rel)) {
        Ok(d) => d.filter_map(|e| e.ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel = rel.join(e.file_name());
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            out.extend(files_under(root, &rel)?);
        } else if kind.is_file() || kind.is_symlink() {
            out.push(rel);
        }
    }
    Ok(out)
}

/// Opens a regular file to read, never through a final link, and never
/// blocking on a FIFO or reading a device.
fn open_regular(path: &Path) -> anyhow::Result<fs::File> {
    let f = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    if !f.metadata()?.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    Ok(f)
}

fn checksum(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = open_regular(path)?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((n, hex::encode(h.finalize())))
}

/// Copies a file into a new file (never through a link; created 0600, then
/// given `mode` with no more than 0755), synced; returns its size and SHA-256.
fn copy_summed(from: &Path, to: &Path, mode: u32) -> anyhow::Result<(u64, String)> {
    let mut input = open_regular(from)?;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)
        .with_context(|| format!("cannot create {}", to.display()))?;
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
    out.set_permissions(fs::Permissions::from_mode(mode & 0o755))?;
    out.sync_all()?;
    Ok((n, hex::encode(h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn a_manifest_that_would_write_outside_the_data_dir_is_refused() {
        let ok = format!(
            "{SUM} 1 kiln.db\n{SUM} 2 files/repos/dev/gens/1/x\nlink gens/1 repos/dev/current\n\
             link ../../../pool/apt repos/dev/gens/1/apt/pool\nlink ../../../../pool/yum/el9 repos/dev/gens/1/yum/el9/Packages\n\
             link ../../../../../../../by-hash/apt/bookworm/main/binary-amd64 repos/dev/gens/1/apt/dists/bookworm/main/binary-amd64/by-hash\n"
        );
        assert_eq!(read_manifest(&ok).expect("a good manifest").len(), 6);
        for bad in [
            format!("{SUM} 1 files/../etc/passwd\n"),
            format!("{SUM} 1 /etc/passwd\n"),
            format!("{SUM} 1 other/x\n"),
            "link /etc x\n".to_string(),
            "link .. files\n".to_string(),
            "link ../.. a/b\n".to_string(),
            // A chain: L points at the top, M climbs out through it.
            "link .. a/L\nlink L/../../etc M\n".to_string(),
            "link ../.. a/b/L\nlink a/b/L/x M\n".to_string(),
            // A file placed under a link would be written through it.
            format!("link .. a/L\n{SUM} 1 files/a/L/x\n"),
            format!("{SUM} 1 files/x\n{SUM} 1 files/x\n"),
            // Inside the data dir, but serving the keys as repository files.
            "link ../../../keys repos/dev/pool/apt\n".to_string(),
            "link by-hash/apt/bookworm repos/dev/current\n".to_string(),
            "link repos/dev/pool/apt keys\n".to_string(),
            "link ../../other/pool repos/dev/x\n".to_string(),
            format!("{SUM} 1 files/.backup-staging.1/x\n"),
            format!("{SUM} 1 files/.restoring.7/x\n"),
            "nonsense\n".to_string(),
        ] {
            assert!(read_manifest(&bad).is_err(), "accepted {bad:?}");
        }
    }
}
