//! The worker's caches: build roots (`roots/`, or `--root-cache`) and
//! repository mirrors (`git/`, `hg/`). Each cache entry is named by a key
//! and guarded by its `KEY.lock`, which every use opens anew (so the lock
//! file's time is when the entry was last used).
//!
//! [`clean`] removes entries unused for longer than `--cache-max-age` (two
//! days at least), and unpacked roots a newer tarball replaced three days
//! ago; both only while holding the entry's lock, so a build never loses a
//! cache it is setting up, and only after longer than any build runs, so
//! none loses the root it has mounted. [`census`] measures them for
//! `/metrics`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// An unpacked root whose tarball was replaced goes this long after: a
/// build started on it before may still run with it mounted (an overlay's
/// lower layer), and no build runs for days.
const REPLACED_ROOT_GRACE: Duration = Duration::from_secs(3 * 24 * 3600);

/// The shortest `--cache-max-age`: a build may use its root's unpacked
/// copy (unlocked, under an overlay) for as long as it runs.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(2 * 24 * 3600);

/// One cache directory and what its entries are.
#[derive(Debug, Clone)]
pub struct CacheDir {
    pub kind: &'static str,
    pub dir: PathBuf,
}

/// The cache directories of a worker.
pub fn dirs(workdir: &Path, root_cache: Option<&Path>) -> Vec<CacheDir> {
    vec![
        CacheDir { kind: "root", dir: root_cache.map(Path::to_path_buf).unwrap_or_else(|| workdir.join("roots")) },
        CacheDir { kind: "git", dir: workdir.join("git") },
        CacheDir { kind: "hg", dir: workdir.join("hg") },
    ]
}

/// One cache entry as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub kind: &'static str,
    pub key: String,
    pub bytes: u64,
    /// Since the entry was made or refreshed (a root's tarball; a mirror's
    /// last fetch is not tracked, so its last use).
    pub age: Duration,
    /// Since it was last used.
    pub unused: Duration,
}

/// What one cleaning removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub entries: u64,
    pub bytes: u64,
}

/// The keys in a cache dir: the names of its lock files.
fn keys(dir: &Path) -> Vec<String> {
    let Ok(read) = fs::read_dir(dir) else { return Vec::new() };
    let mut keys: Vec<String> = read
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".lock")).map(str::to_string))
        .collect();
    keys.sort();
    // `KEY.lists.lock` guards a part of entry KEY, not an entry of its own.
    let all = keys.clone();
    keys.retain(|k| !all.iter().any(|other| other != k && k.starts_with(&format!("{other}."))));
    keys
}

/// The files and directories of entry `key`: `KEY` (an hg mirror) and
/// `KEY.*`, all but its lock.
fn parts(dir: &Path, key: &str) -> Vec<PathBuf> {
    let Ok(read) = fs::read_dir(dir) else { return Vec::new() };
    let prefix = format!("{key}.");
    read.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name().to_str().is_some_and(|n| (n == key || n.starts_with(&prefix)) && !n.ends_with(".lock"))
        })
        .map(|e| e.path())
        .collect()
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::symlink_metadata(path).and_then(|m| m.modified()).ok()
}

fn since(now: SystemTime, t: Option<SystemTime>) -> Duration {
    t.and_then(|t| now.duration_since(t).ok()).unwrap_or_default()
}

/// Bytes under `path` (files counted once, symlinks not followed).
pub fn size_of(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    let Ok(read) = fs::read_dir(path) else { return 0 };
    read.filter_map(|e| e.ok()).map(|e| size_of(&e.path())).sum()
}

/// Every entry of every cache dir, measured.
pub fn census(dirs: &[CacheDir], now: SystemTime) -> Vec<Entry> {
    let mut out = Vec::new();
    for d in dirs {
        for key in keys(&d.dir) {
            let parts = parts(&d.dir, &key);
            let made = match d.kind {
                "root" => modified(&d.dir.join(format!("{key}.tar"))),
                _ => modified(&d.dir.join(format!("{key}.lock"))),
            };
            out.push(Entry {
                kind: d.kind,
                bytes: parts.iter().map(|p| size_of(p)).sum(),
                age: since(now, made),
                unused: since(now, modified(&d.dir.join(format!("{key}.lock")))),
                key,
            });
        }
    }
    out
}

/// Removes what is stale (see the module's doc); entries in use are
/// skipped and tried again next time.
pub fn clean(dirs: &[CacheDir], max_age: Duration, now: SystemTime) -> Cleaned {
    let mut cleaned = Cleaned::default();
    for d in dirs {
        for key in keys(&d.dir) {
            let lock_path = d.dir.join(format!("{key}.lock"));
            let Ok(lock) = fs::OpenOptions::new().read(true).open(&lock_path) else { continue };
            // A build holds it: the entry is in use now.
            if lock.try_lock().is_err() {
                continue;
            }
            let unused = since(now, modified(&lock_path));
            let stale: Vec<PathBuf> = if unused > max_age {
                parts(&d.dir, &key)
            } else if d.kind == "root" {
                replaced_roots(&d.dir, &key, now)
            } else {
                Vec::new()
            };
            for p in stale {
                let bytes = size_of(&p);
                let removed = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                match removed {
                    Ok(()) => {
                        cleaned.entries += 1;
                        cleaned.bytes += bytes;
                    }
                    Err(e) => tracing::warn!(path = %p.display(), error = %e, "cannot remove a stale cache entry"),
                }
            }
            // The lock file stays: a build may be opening it now, and two
            // lock files of one name would let two builds in at once.
            drop(lock);
        }
    }
    cleaned
}

/// A root's unpacked copies and leftovers that its current tarball
/// replaced more than [`REPLACED_ROOT_GRACE`] ago (a copy is named
/// `KEY.STAMP.dir`, STAMP being its tarball's time).
fn replaced_roots(dir: &Path, key: &str, now: SystemTime) -> Vec<PathBuf> {
    let tarball = modified(&dir.join(format!("{key}.tar")));
    let Some(current) = tarball else { return Vec::new() };
    if since(now, Some(current)) <= REPLACED_ROOT_GRACE {
        return Vec::new();
    }
    let stamp = current.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let keep = [format!("{key}.tar"), format!("{key}.lists"), format!("{key}.{stamp}.dir")];
    parts(dir, key)
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !keep.iter().any(|k| k == n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_time(path: &Path, t: SystemTime) {
        fs::File::options().write(true).open(path).expect("test set-up").set_modified(t).expect("test set-up");
    }

    #[test]
    fn entries_unused_past_the_age_go_and_those_in_use_or_recent_stay() {
        let work = tempfile::tempdir().expect("test set-up");
        let dirs = dirs(work.path(), None);
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        let git = work.path().join("git");
        fs::create_dir_all(git.join("old.git/objects")).expect("test set-up");
        fs::write(git.join("old.git/objects/pack"), vec![0u8; 1000]).expect("test set-up");
        fs::write(git.join("old.lock"), "").expect("test set-up");
        set_time(&git.join("old.lock"), now - 40 * day);
        fs::create_dir_all(git.join("new.git")).expect("test set-up");
        fs::write(git.join("new.git/HEAD"), "ref: x\n").expect("test set-up");
        fs::write(git.join("new.lock"), "").expect("test set-up");
        // Old, but a build holds its lock.
        fs::create_dir_all(git.join("busy.git")).expect("test set-up");
        fs::write(git.join("busy.lock"), "").expect("test set-up");
        set_time(&git.join("busy.lock"), now - 40 * day);
        let held = fs::File::open(git.join("busy.lock")).expect("test set-up");
        held.lock().expect("test set-up");

        let before = census(&dirs, now);
        let old = before.iter().find(|e| e.key == "old").expect("test set-up");
        assert_eq!((old.kind, old.bytes), ("git", 1000));
        assert!(old.unused >= 39 * day, "{old:?}");

        let cleaned = clean(&dirs, 30 * day, now);
        assert_eq!(cleaned, Cleaned { entries: 1, bytes: 1000 });
        assert!(!git.join("old.git").exists() && git.join("old.lock").exists());
        assert!(git.join("new.git/HEAD").exists() && git.join("busy.git").exists());
        drop(held);
        assert_eq!(clean(&dirs, 30 * day, now).entries, 1, "the busy one goes once free");
    }

    #[test]
    fn an_unpacked_root_goes_days_after_its_tarball_was_replaced() {
        let work = tempfile::tempdir().expect("test set-up");
        let dirs = dirs(work.path(), None);
        let roots = work.path().join("roots");
        fs::create_dir_all(&roots).expect("test set-up");
        let now = SystemTime::now();
        let made = now - Duration::from_secs(4 * 86400);
        let stamp = made.duration_since(SystemTime::UNIX_EPOCH).expect("test set-up").as_secs();
        let made = SystemTime::UNIX_EPOCH + Duration::from_secs(stamp);
        fs::write(roots.join("bookworm-native-1.tar"), "tar").expect("test set-up");
        set_time(&roots.join("bookworm-native-1.tar"), made);
        fs::write(roots.join("bookworm-native-1.lock"), "").expect("test set-up");
        // The apt lists' own lock belongs to the same entry.
        fs::write(roots.join("bookworm-native-1.lists"), "lists").expect("test set-up");
        fs::write(roots.join("bookworm-native-1.lists.lock"), "").expect("test set-up");
        fs::create_dir_all(roots.join(format!("bookworm-native-1.{stamp}.dir/usr"))).expect("test set-up");
        fs::create_dir_all(roots.join("bookworm-native-1.1000.dir/usr")).expect("test set-up");
        fs::write(roots.join("bookworm-native-1.1000.dir/usr/x"), "12345").expect("test set-up");

        let cleaned = clean(&dirs, Duration::from_secs(30 * 86400), now);
        assert_eq!(cleaned, Cleaned { entries: 1, bytes: 5 });
        assert!(roots.join(format!("bookworm-native-1.{stamp}.dir")).exists());
        assert!(roots.join("bookworm-native-1.tar").exists());
        assert!(!roots.join("bookworm-native-1.1000.dir").exists());
        let entries: Vec<Entry> = census(&dirs, now).into_iter().filter(|e| e.kind == "root").collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(roots.join("bookworm-native-1.lists").exists());
        let entry = entries[0].clone();
        assert!(entry.age >= Duration::from_secs(4 * 86400 - 5), "{entry:?}");
    }
}
