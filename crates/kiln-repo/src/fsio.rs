//! Small file-system helpers: directories and files with explicit modes
//! (whatever the process umask), and files written whole, through a
//! temporary name and a rename, so a reader sees the old content or the new
//! one, never a part.
//!
//! A leaf module: it imports nothing else of this crate but its error type,
//! so every other module may use it.

use crate::{RepoError, Result};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the files a repository serves.
const FILE_MODE: u32 = 0o644;
/// Mode of the directories a repository serves.
const DIR_MODE: u32 = 0o755;

/// Creates `dir` and its missing parents with mode 0755.
pub fn create_dirs(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.exists() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    for m in missing.iter().rev() {
        match fs::create_dir(m) {
            Ok(()) => fs::set_permissions(m, fs::Permissions::from_mode(DIR_MODE)).map_err(|e| RepoError::io(m, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(RepoError::io(m, e)),
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename, mode 0644.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_through_temp(path, bytes, FILE_MODE, false)
}

/// Writes `bytes` to `path` through a temporary file and a rename, the file
/// created with `mode` (e.g. 0o600 for a private key or a token): the bytes
/// are never in a file with a wider mode, not even for a moment. The data
/// reaches the disk (fsync) before the rename, so after a crash `path` holds
/// the old content or the new one, never an empty file. Missing parent
/// directories are created with mode 0755.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_through_temp(path, bytes, mode, true)
}

/// Replaces the existing file `path` with `bytes` as [`write_atomic_mode`]
/// does, keeping its mode, owner and group: an operator (root, say)
/// rewriting a key file the master reads must not take it from the master.
/// The new file's owner and mode are set through its open handle, never by
/// name, so whoever may write the directory (the master's user, for its
/// data dir) cannot swap in a link and have root hand them another file. A
/// `path` that is a symbolic link is refused rather than replaced.
pub fn rewrite_keeping_owner(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path).map_err(|e| RepoError::io(path, e))?;
    if !meta.file_type().is_file() {
        return Err(RepoError::io(
            path,
            std::io::Error::other("not a regular file (a symbolic link?): rewrite the file it names instead"),
        ));
    }
    let tmp = temp_beside(path)?;
    let _ = fs::remove_file(&tmp);
    // O_EXCL: never through a link someone left at the temporary name.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| RepoError::io(&tmp, e))?;
    let done = (|| {
        let mine = f.metadata()?;
        if (mine.uid(), mine.gid()) != (meta.uid(), meta.gid()) {
            std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
        }
        f.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = done {
        let _ = fs::remove_file(&tmp);
        return Err(RepoError::io(path, e));
    }
    fs::rename(&tmp, path).map_err(|e| RepoError::io(path, e))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` (mode `mode`, on disk) only if nothing is there
/// yet, atomically: when several processes (masters sharing a data dir)
/// create the same file at once, exactly one succeeds and the others find
/// its file complete. Returns whether this call made it.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<bool> {
    let tmp = temp_beside(path)?;
    write_temp(&tmp, bytes, mode, true)?;
    // A hard link never replaces a file: the first one wins.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(RepoError::io(path, e)),
    }
}

/// A temporary file name beside `path`, its parent made if missing: named
/// by this host, process and call, so writers sharing the directory (masters
/// sharing a data dir) never share one.
fn temp_beside(path: &Path) -> Result<PathBuf> {
    // A bare file name has the empty path as its parent: the current directory.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent)?;
    }
    // Host, process and a count: masters in containers may all be pid 1.
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
    Ok(path.with_file_name(format!(
        ".{}.{host}.{}.{}.tmp",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id(),
        COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )))
}

/// Writes `.NAME.HOST.PID.N.tmp` beside `path` with exactly `mode`, then renames it to
/// `path`; with `sync`, flushes it to disk first.
fn write_through_temp(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> Result<()> {
    let tmp = temp_beside(path)?;
    write_temp(&tmp, bytes, mode, sync)?;
    fs::rename(&tmp, path).map_err(|e| RepoError::io(path, e))
}

/// Writes a new temporary file `tmp` with exactly `mode`.
fn write_temp(tmp: &Path, bytes: &[u8], mode: u32, sync: bool) -> Result<()> {
    // A temporary file a crash left behind may have another mode or owner,
    // or be open elsewhere: start from a new one.
    let _ = fs::remove_file(tmp);
    let mut f =
        fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(tmp).map_err(|e| RepoError::io(tmp, e))?;
    // The umask may have taken bits off `mode`: set it exactly.
    f.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| RepoError::io(tmp, e))?;
    f.write_all(bytes).map_err(|e| RepoError::io(tmp, e))?;
    if sync {
        f.sync_all().map_err(|e| RepoError::io(tmp, e))?;
    }
    Ok(())
}

/// `root` joined with the relative path `rel`, refused unless every part of
/// `rel` is a plain name: no `..`, no `.`, no empty part, not absolute. So
/// the result stays under `root`, whatever a package's fields said.
pub fn confined(root: &Path, rel: &str) -> Result<PathBuf> {
    let plain = |part: &str| !part.is_empty() && part != "." && part != ".." && !part.contains('\0');
    if rel.is_empty() || rel.starts_with('/') || !rel.split('/').all(plain) {
        let shown: String = rel.chars().take(120).collect();
        return Err(RepoError::Invalid(format!("refused the path {shown:?}: it would leave the repository")));
    }
    Ok(root.join(rel))
}

/// Places a package file at `dest` by hard link (same file system), else by
/// copy; mode 0644 either way. An existing `dest` is left as it is. The file
/// and its directory reach the disk before it is there under its name, so a
/// power cut never leaves an index naming a missing or partial file.
pub fn place_file(src: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        return Ok(());
    }
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dirs(parent)?;
    }
    let tmp = dest.with_extension("kiln-tmp");
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(src, &tmp).is_err() {
        fs::copy(src, &tmp).map_err(|e| RepoError::io(src, e))?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(FILE_MODE)).map_err(|e| RepoError::io(&tmp, e))?;
    fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| RepoError::io(&tmp, e))?;
    fs::rename(&tmp, dest).map_err(|e| RepoError::io(dest, e))?;
    if let Some(parent) = parent {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Flushes a directory's entries (names made, renamed or removed) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| RepoError::io(dir, e))
}

/// Flushes every file and directory under `dir` (symlinks are not
/// followed) to disk: a tree built under a temporary name is whole on disk
/// before a rename makes it visible. A file linked under several names is
/// flushed once, and the flushes run on several threads: the file system
/// then commits its journal for several of them at once instead of once
/// each (a generation holds some forty names).
pub fn sync_tree(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut todo: Vec<PathBuf> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(|e| RepoError::io(&d, e))? {
            let e = e.map_err(|e| RepoError::io(&d, e))?;
            let t = e.file_type().map_err(|err| RepoError::io(e.path(), err))?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let m = e.metadata().map_err(|err| RepoError::io(e.path(), err))?;
                if seen.insert((m.dev(), m.ino())) {
                    todo.push(e.path());
                }
            }
        }
        todo.push(d);
    }
    const THREADS: usize = 8;
    let chunk = todo.len().div_ceil(THREADS).max(1);
    std::thread::scope(|s| {
        let runs: Vec<_> = todo
            .chunks(chunk)
            .map(|paths| {
                s.spawn(move || -> Result<()> {
                    for p in paths {
                        fs::File::open(p).and_then(|f| f.sync_all()).map_err(|e| RepoError::io(p, e))?;
                    }
                    Ok(())
                })
            })
            .collect();
        runs.into_iter()
            .try_for_each(|r| r.join().unwrap_or_else(|_| Err(RepoError::Invalid("a sync thread panicked".into()))))
    })
}

/// Puts `bytes` at `path` (a new name in a tree being built): as a hard
/// link to `same_as` when that file already holds exactly these bytes (an
/// index unchanged since the previous generation is already on disk; only
/// its new name needs flushing), else written anew ([`write_atomic`]).
pub fn write_or_link(path: &Path, bytes: &[u8], same_as: Option<&Path>) -> Result<()> {
    if let Some(old) = same_as {
        let unchanged = fs::symlink_metadata(old).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
            && fs::read(old).is_ok_and(|b| b == bytes);
        if unchanged {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                create_dirs(parent)?;
            }
            if fs::hard_link(old, path).is_ok() {
                return Ok(());
            }
        }
    }
    write_atomic(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
    }

    #[test]
    fn a_rewrite_keeps_mode_and_owner_and_refuses_a_link() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("key.asc");
        write_atomic_mode(&file, b"old", 0o640).expect("write");
        rewrite_keeping_owner(&file, b"new").expect("rewrite");
        let meta = fs::metadata(&file).expect("meta");
        assert_eq!((fs::read(&file).expect("read"), meta.mode() & 0o777), (b"new".to_vec(), 0o640));
        let link = dir.path().join("link.asc");
        std::os::unix::fs::symlink(&file, &link).expect("link");
        let e = rewrite_keeping_owner(&link, b"evil").expect_err("a link is refused");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert_eq!(fs::read(&file).expect("read"), b"new");
        let left: Vec<_> = fs::read_dir(dir.path()).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "no temporary file left: {left:?}");
    }

    #[test]
    fn confined_paths_stay_under_the_root() {
        let root = Path::new("/srv/repo");
        assert_eq!(
            confined(root, "pool/apt/main/h/hello/x.deb").expect("plain"),
            root.join("pool/apt/main/h/hello/x.deb")
        );
        for bad in ["", "/etc/passwd", "pool/../../x", "pool/./x", "pool//x", "..", "pool/.."] {
            assert!(confined(root, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn write_atomic_writes_whole_files_with_mode_0644() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a/b/index");
        write_atomic(&path, b"first").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"first");
        assert_eq!(mode_of(&path), 0o644);
        assert_eq!(mode_of(&dir.path().join("a/b")), 0o755);
        write_atomic(&path, b"second").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        assert_eq!(fs::read_dir(dir.path().join("a/b")).expect("dir").count(), 1, "no temporary file is left");
    }

    #[test]
    fn write_atomic_mode_creates_the_file_with_its_mode() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("secret.key");
        write_atomic_mode(&path, b"private", 0o600).expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"private");
        assert_eq!(mode_of(&path), 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["secret.key"], "no temporary file is left");
        write_atomic_mode(&path, b"public", 0o644).expect("rewrite");
        assert_eq!(mode_of(&path), 0o644);
    }

    #[test]
    fn write_new_makes_a_file_once_whoever_comes_second() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("keys/admin.token");
        assert!(write_new(&path, b"first", 0o600).expect("write"));
        assert!(!write_new(&path, b"second", 0o600).expect("write again"));
        assert_eq!(fs::read(&path).expect("read"), b"first");
        assert_eq!(mode_of(&path), 0o600);
        let names: Vec<_> =
            fs::read_dir(path.parent().expect("dir")).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["admin.token"], "no temporary file is left");
    }

    #[test]
    fn place_file_links_or_copies_and_keeps_an_existing_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let src = dir.path().join("src.deb");
        fs::write(&src, b"package").expect("src");
        let dest = dir.path().join("pool/p/pkg.deb");
        place_file(&src, &dest).expect("place");
        assert_eq!(fs::read(&dest).expect("read"), b"package");
        assert_eq!(mode_of(&dest), 0o644);
        let other = dir.path().join("other.deb");
        fs::write(&other, b"other").expect("other");
        place_file(&other, &dest).expect("place again");
        assert_eq!(fs::read(&dest).expect("read"), b"package");
    }

    #[test]
    fn an_unchanged_file_is_linked_a_changed_one_written_and_a_tree_synced() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tmp");
        let old = dir.path().join("gens/1/Packages");
        write_atomic(&old, b"Package: a\n").expect("old");
        let same = dir.path().join("gens/2.tmp/Packages");
        write_or_link(&same, b"Package: a\n", Some(&old)).expect("same");
        assert_eq!(fs::metadata(&same).expect("same").ino(), fs::metadata(&old).expect("old").ino());
        let changed = dir.path().join("gens/2.tmp/Release");
        write_or_link(&changed, b"Package: b\n", Some(&old)).expect("changed");
        assert_ne!(fs::metadata(&changed).expect("changed").ino(), fs::metadata(&old).expect("old").ino());
        assert_eq!(fs::read(&changed).expect("read"), b"Package: b\n");
        assert_eq!(fs::read(&old).expect("read"), b"Package: a\n", "the old file is untouched");
        // Nothing to link from: written.
        write_or_link(&dir.path().join("gens/2.tmp/new"), b"x", None).expect("new");
        assert_eq!(mode_of(&dir.path().join("gens/2.tmp/new")) & 0o777, 0o644);
        sync_tree(dir.path()).expect("sync");
    }
}
