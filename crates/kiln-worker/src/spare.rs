//! Empty directories made ahead of need. Making a directory can be slow
//! (on some file systems about 0.2 ms, a fifth of a build's way from
//! trigger to first step); a build's work and scratch dirs are instead
//! renamed into place from spares made while the worker waited, and the
//! spares are made again off that path.
//!
//! A spare is only ever a fresh, empty directory made by the worker: a
//! build's used directory is never handed to another build.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The spare directories under one directory of the worker's.
#[derive(Debug)]
pub struct SpareDirs {
    dir: PathBuf,
    ready: Mutex<Vec<PathBuf>>,
    made: AtomicU64,
    /// How many to keep ready.
    keep: usize,
}

impl SpareDirs {
    /// Spares in `dir` (what an earlier run left there is removed), keeping
    /// `keep` ready. Blocking.
    pub fn new(dir: PathBuf, keep: usize) -> std::io::Result<SpareDirs> {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(&dir)?;
        let spares = SpareDirs { dir, ready: Mutex::new(Vec::new()), made: AtomicU64::new(0), keep };
        spares.fill();
        Ok(spares)
    }

    /// Moves a spare to `to` (which must not exist); false when none was
    /// ready or it could not be moved there (another file system, say),
    /// and the caller makes `to` itself.
    pub fn take_into(&self, to: &Path) -> bool {
        let Some(spare) = self.ready.lock().unwrap_or_else(|e| e.into_inner()).pop() else { return false };
        if std::fs::rename(&spare, to).is_ok() {
            return true;
        }
        let _ = std::fs::remove_dir(&spare);
        false
    }

    /// Makes spares until `keep` are ready. Blocking; a spare that cannot
    /// be made is not (a build then makes its own directories).
    pub fn fill(&self) {
        loop {
            if self.ready.lock().unwrap_or_else(|e| e.into_inner()).len() >= self.keep {
                return;
            }
            let n = self.made.fetch_add(1, Ordering::Relaxed);
            let spare = self.dir.join(n.to_string());
            if std::fs::create_dir(&spare).is_err() {
                return;
            }
            self.ready.lock().unwrap_or_else(|e| e.into_inner()).push(spare);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_becomes_the_directory_asked_for_and_is_made_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let left = tmp.path().join("spare/7");
        std::fs::create_dir_all(&left).expect("mkdir");
        std::fs::write(left.join("file"), "from an earlier run").expect("write");
        let spares = SpareDirs::new(tmp.path().join("spare"), 2).expect("spares");
        // What an earlier run left is gone; two fresh spares wait.
        assert!(!left.exists());
        assert_eq!(std::fs::read_dir(tmp.path().join("spare")).expect("list").count(), 2);
        let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
        assert!(spares.take_into(&a) && spares.take_into(&b));
        assert!(std::fs::read_dir(&a).expect("a").next().is_none(), "a spare is empty");
        assert!(b.is_dir());
        // None left: the caller makes its own, until spares are made again.
        assert!(!spares.take_into(&c) && !c.exists());
        spares.fill();
        assert!(spares.take_into(&c) && c.is_dir());
        // A spare cannot replace a directory that holds something.
        std::fs::write(a.join("x"), "x").expect("write");
        assert!(!spares.take_into(&a));
        assert_eq!(std::fs::read_to_string(a.join("x")).expect("x"), "x");
    }
}
