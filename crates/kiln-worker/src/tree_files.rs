//! Reading what a build left behind, as root, without being led astray:
//! the files under a directory found without following a link (a link is
//! neither a file nor a directory here), and a file opened only when it is
//! a regular one (no link at its name, no FIFO to hang on).

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What to do with a directory that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Fail the walk (artifacts a build must deliver).
    Fail,
    /// Leave it out (logs kept as well as they can be).
    Skip,
}

/// The regular files under `dir`, each with its path relative to `dir`
/// (`/`-separated), sorted; at most `max_entries` entries are looked at.
pub fn files_under(dir: &Path, max_entries: usize, unreadable: Unreadable) -> Result<Vec<(String, PathBuf)>, String> {
    let mut files = Vec::new();
    let mut seen = 0usize;
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if unreadable == Unreadable::Fail => return Err(format!("cannot read {}: {e}", d.display())),
            Err(_) => continue,
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > max_entries {
                return match unreadable {
                    Unreadable::Fail => Err(format!("more than {max_entries} files under {}", dir.display())),
                    Unreadable::Skip => Ok(sorted(files)),
                };
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push((e.path(), path)),
                Ok(t) if t.is_file() => files.push((path, e.path())),
                _ => {}
            }
        }
    }
    Ok(sorted(files))
}

fn sorted(mut files: Vec<(String, PathBuf)>) -> Vec<(String, PathBuf)> {
    files.sort();
    files
}

/// Opens `path` for reading when it is a regular file, never through a
/// link at its name; returns it with its size.
pub fn open_plain(path: &Path) -> std::io::Result<(fs::File, u64)> {
    let file = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((file, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_neither_files_nor_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("a/b")).expect("dirs");
        fs::write(dir.path().join("a/b/log.txt"), "x").expect("file");
        fs::write(dir.path().join("top.txt"), "y").expect("file");
        std::os::unix::fs::symlink("/etc", dir.path().join("etc-link")).expect("link");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("a/passwd.txt")).expect("link");
        let found = files_under(dir.path(), 100, Unreadable::Fail).expect("walk");
        let rels: Vec<&str> = found.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(rels, ["a/b/log.txt", "top.txt"]);
        assert!(open_plain(&dir.path().join("a/passwd.txt")).is_err(), "a link is not opened");
        assert_eq!(open_plain(&dir.path().join("top.txt")).expect("file").1, 1);
        assert!(files_under(dir.path(), 2, Unreadable::Fail).is_err());
        assert_eq!(files_under(dir.path(), 2, Unreadable::Skip).expect("some").len(), 1);
    }
}
