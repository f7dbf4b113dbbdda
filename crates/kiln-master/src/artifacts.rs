//! Artifact intake and storage.
//!
//! Workers send artifacts in pieces over their connection. A piece lands in
//! `DATA_DIR/incoming/MASTER/` (each master sharing the data dir its own);
//! when the artifact is complete its size and SHA-256
//! are checked and it moves into the content-addressed store
//! `DATA_DIR/artifacts/<first two hex digits>/<sha256>`. Nothing stays in
//! `incoming/` once no upload is in flight: a failed or abandoned upload's
//! part is removed, and a build whose upload failed is failed.

use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_core::names::valid_artifact_name;

/// How many artifacts of one build may be in flight at once.
const MAX_OPEN_PARTS: usize = 64;

const NOT_ASKED: &str = "the build was not asked for a file of that name";

/// Whether `name` matches an artifact pattern its build was sent.
fn asked(intake: &Intake, build_id: i64, name: &str) -> bool {
    intake.expected.get(&build_id).is_some_and(|globs| globs.iter().any(|g| g.matches(name)))
}

pub struct ArtifactStore {
    root: PathBuf,
    incoming: PathBuf,
    max_size: u64,
    state: Mutex<Intake>,
    /// Bytes received since the master started (for `/metrics`).
    received: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Intake {
    parts: HashMap<(i64, String), Part>,
    /// Why an artifact's last upload failed; a new upload of it (from
    /// offset 0, e.g. after a reconnect) clears this.
    failures: HashMap<(i64, String), String>,
    /// Artifacts stored whole, until their build ends.
    completed: std::collections::HashSet<(i64, String)>,
    /// The file-name part of each artifact pattern a build was sent: a
    /// worker's upload of any other name is refused.
    expected: HashMap<i64, Vec<kiln_core::glob::Pattern>>,
}

struct Part {
    file: File,
    path: PathBuf,
    written: u64,
    hash: Sha256,
    /// The worker connection sending it: frames an older connection left
    /// in flight, read after the worker reconnected and began again, are
    /// not part of it.
    conn: u64,
}

/// A checked, stored artifact.
pub struct Stored {
    pub size: u64,
    pub sha256: String,
}

impl ArtifactStore {
    /// The store under `data_dir`, taking uploads in its own intake
    /// directory `incoming/INTAKE` (a master's id: masters sharing the data
    /// dir never touch each other's uploads in flight).
    pub fn new(data_dir: &Path, intake: &str, max_size: u64) -> io::Result<ArtifactStore> {
        let root = data_dir.join("artifacts");
        let intake: String =
            intake.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.:".contains(c) { c } else { '_' }).collect();
        let incoming = data_dir.join("incoming").join(intake);
        fs::create_dir_all(&root)?;
        // Parts left by a crash are never completed: start empty.
        let _ = fs::remove_dir_all(&incoming);
        fs::create_dir_all(&incoming)?;
        Ok(ArtifactStore {
            root,
            incoming,
            max_size,
            state: Mutex::new(Intake::default()),
            received: Default::default(),
        })
    }

    /// The checksums of all stored content (`artifacts/XX/SHA256`).
    pub fn stored(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for dir in fs::read_dir(&self.root)? {
            let dir = dir?;
            if !dir.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(dir.path())? {
                let name = f?.file_name();
                if let Some(sha) = name.to_str().filter(|n| self.path_of(n).is_some()) {
                    out.push(sha.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Removes stored content `sha256` unless it was stored or reused
    /// after `unused_since` (its mtime says); returns the bytes it held, or
    /// none when it stays or is gone. Under the intake's lock, so an upload
    /// reusing it now either touched it first or finds it gone and stores it
    /// anew. With `dry_run`, only says what would go.
    pub fn remove_unused(
        &self,
        sha256: &str,
        unused_since: std::time::SystemTime,
        dry_run: bool,
    ) -> io::Result<Option<u64>> {
        let Some(path) = self.path_of(sha256) else { return Ok(None) };
        let _intake = self.lock();
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if meta.modified()? > unused_since {
            return Ok(None);
        }
        if !dry_run {
            fs::remove_file(&path)?;
        }
        Ok(Some(meta.len()))
    }

    /// Bytes of artifacts received from workers since the master started.
    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Intake> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored file for a checksum.
    pub fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        Some(self.root.join(&sha256[..2]).join(sha256))
    }

    fn fail(&self, intake: &mut Intake, build_id: i64, name: &str, why: String) {
        let key = (build_id, name.to_string());
        if let Some(p) = intake.parts.remove(&key) {
            let _ = fs::remove_file(&p.path);
        }
        tracing::warn!(build = build_id, artifact = name, "artifact upload failed: {why}");
        intake.failures.entry(key).or_insert(format!("artifact {name}: {why}"));
    }

    /// Accepts artifacts for `build_id` only under names that the last part
    /// of one of `patterns` (relative paths the worker collects) matches.
    pub fn expect(&self, build_id: i64, patterns: &[String]) {
        let names = patterns
            .iter()
            .filter_map(|p| kiln_core::glob::Pattern::new(p.rsplit('/').next().unwrap_or(p)).ok())
            .collect();
        self.lock().expected.insert(build_id, names);
    }

    /// Takes a piece of an artifact from worker connection `conn`. A piece
    /// that does not continue the upload in progress (left over from a
    /// connection that dropped, even read after the new one began) is
    /// ignored; the upload is checked as a whole when it is done.
    pub fn chunk(&self, conn: u64, build_id: i64, name: &str, offset: u64, data: &str) {
        let mut intake = self.lock();
        if !valid_artifact_name(name) {
            return self.fail(&mut intake, build_id, name, "invalid artifact name".into());
        }
        if !asked(&intake, build_id, name) {
            return self.fail(&mut intake, build_id, name, NOT_ASKED.into());
        }
        let bytes = match base64::engine::general_purpose::STANDARD.decode(data) {
            Ok(b) => b,
            Err(e) => return self.fail(&mut intake, build_id, name, format!("undecodable piece: {e}")),
        };
        let key = (build_id, name.to_string());
        if intake.parts.get(&key).is_some_and(|p| p.conn > conn) {
            return; // from a connection older than the upload's
        }
        if offset == 0 {
            // Bounds the files one build keeps open at once.
            let open = intake.parts.keys().filter(|(b, n)| *b == build_id && n != name).count();
            if open >= MAX_OPEN_PARTS {
                return self.fail(&mut intake, build_id, name, format!("more than {MAX_OPEN_PARTS} uploads at once"));
            }
            intake.failures.remove(&key);
            if let Some(old) = intake.parts.remove(&key) {
                let _ = fs::remove_file(&old.path);
            }
            let path = self.incoming.join(format!("{build_id}.{name}.part"));
            match File::create(&path) {
                Ok(file) => {
                    intake.parts.insert(key.clone(), Part { file, path, written: 0, hash: Sha256::new(), conn });
                }
                Err(e) => return self.fail(&mut intake, build_id, name, format!("cannot store: {e}")),
            }
        }
        let max = self.max_size;
        let result = match intake.parts.get_mut(&key) {
            None => return,
            Some(p) if p.written != offset || p.conn != conn => return,
            Some(p) if p.written + bytes.len() as u64 > max => Err(format!("larger than the limit of {max} bytes")),
            Some(p) => {
                p.hash.update(&bytes);
                p.written += bytes.len() as u64;
                self.received.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                p.file.write_all(&bytes).map_err(|e| format!("cannot store: {e}"))
            }
        };
        if let Err(why) = result {
            self.fail(&mut intake, build_id, name, why);
        }
    }

    /// Completes an artifact sent over worker connection `conn`: checks it
    /// and moves it into the store.
    pub fn done(&self, conn: u64, build_id: i64, name: &str, size: u64, sha256: &str) -> Option<Stored> {
        let mut intake = self.lock();
        if !valid_artifact_name(name) {
            self.fail(&mut intake, build_id, name, "invalid artifact name".into());
            return None;
        }
        if !asked(&intake, build_id, name) {
            self.fail(&mut intake, build_id, name, NOT_ASKED.into());
            return None;
        }
        if intake.parts.get(&(build_id, name.to_string())).is_some_and(|p| p.conn > conn) {
            return None; // an older connection's end of an upload sent again since
        }
        let Some(mut part) = intake.parts.remove(&(build_id, name.to_string())) else {
            // An empty file sends no piece.
            if size == 0 {
                return self.store_empty(&mut intake, build_id, name, sha256);
            }
            self.fail(&mut intake, build_id, name, "completed without any data".into());
            return None;
        };
        let digest = hex::encode(part.hash.finalize_reset());
        if part.written != size || digest != sha256 {
            let _ = fs::remove_file(&part.path);
            let why = format!(
                "checksum mismatch: got {} bytes with SHA-256 {digest}, expected {size} bytes with {sha256}",
                part.written
            );
            self.fail(&mut intake, build_id, name, why);
            return None;
        }
        // On disk before the build's result is acknowledged (the worker
        // then forgets it): flushed, and synced before it is renamed.
        if let Err(e) = part.file.flush().and_then(|()| part.file.sync_data()) {
            self.fail(&mut intake, build_id, name, format!("cannot store: {e}"));
            return None;
        }
        match self.place(&part.path, &digest) {
            Ok(()) => {
                intake.completed.insert((build_id, name.to_string()));
                Some(Stored { size, sha256: digest })
            }
            Err(e) => {
                let _ = fs::remove_file(&part.path);
                self.fail(&mut intake, build_id, name, format!("cannot store: {e}"));
                None
            }
        }
    }

    fn store_empty(&self, intake: &mut Intake, build_id: i64, name: &str, sha256: &str) -> Option<Stored> {
        let empty = hex::encode(Sha256::digest([]));
        if sha256 != empty {
            self.fail(intake, build_id, name, "checksum mismatch on an empty file".into());
            return None;
        }
        let tmp = self.incoming.join(format!("{build_id}.{name}.part"));
        let placed = File::create(&tmp).and_then(|_| self.place(&tmp, &empty));
        match placed {
            Ok(()) => {
                intake.completed.insert((build_id, name.to_string()));
                Some(Stored { size: 0, sha256: empty })
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                self.fail(intake, build_id, name, format!("cannot store: {e}"));
                None
            }
        }
    }

    /// Moves a checked part to its place by content (same content, one file).
    fn place(&self, part: &Path, sha256: &str) -> io::Result<()> {
        let dest = self.root.join(&sha256[..2]).join(sha256);
        if dest.exists() {
            // Reused now: a garbage collection under way leaves it alone
            // (read-only: the same file may be a repository's, hard-linked).
            File::open(&dest)?.set_modified(std::time::SystemTime::now())?;
            return fs::remove_file(part);
        }
        let dir = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir)?;
        fs::rename(part, &dest)?;
        // The name on disk too before the build's result is acknowledged.
        File::open(dir)?.sync_all()
    }

    /// Ends a build's intake: removes parts left in flight and says what
    /// went wrong, if anything: failed uploads, or `expected` artifacts that
    /// never arrived whole.
    pub fn finish_build(&self, build_id: i64, expected: &[String]) -> Option<String> {
        let mut intake = self.lock();
        for name in expected {
            let key = (build_id, name.clone());
            if !intake.completed.contains(&key) && !intake.failures.contains_key(&key) {
                intake.failures.insert(key, format!("artifact {name}: did not arrive"));
            }
        }
        intake.completed.retain(|(b, _)| *b != build_id);
        intake.expected.remove(&build_id);
        let stale: Vec<(i64, String)> = intake.parts.keys().filter(|(b, _)| *b == build_id).cloned().collect();
        for key in stale {
            if let Some(p) = intake.parts.remove(&key) {
                let _ = fs::remove_file(&p.path);
            }
        }
        let failed: Vec<(i64, String)> = intake.failures.keys().filter(|(b, _)| *b == build_id).cloned().collect();
        let mut reasons: Vec<String> = failed.iter().filter_map(|k| intake.failures.remove(k)).collect();
        reasons.sort();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn intake_checks_and_stores_by_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ArtifactStore::new(dir.path(), "m", 10).expect("store");
        let sha = hex::encode(Sha256::digest(b"hello world"));
        store.expect(1, &["out/*.deb".into()]);
        // Over the 10-byte limit: refused, nothing left in incoming.
        store.chunk(1, 1, "a.deb", 0, &b64(b"hello "));
        store.chunk(1, 1, "a.deb", 6, &b64(b"world"));
        assert!(store.done(1, 1, "a.deb", 11, &sha).is_none());
        assert!(store.finish_build(1, &[]).expect("failure").contains("larger than the limit"));
        assert_eq!(fs::read_dir(dir.path().join("incoming/m")).expect("dir").count(), 0);

        let store = ArtifactStore::new(dir.path(), "m", 100).expect("store");
        for build in 2..=6 {
            store.expect(build, &["out/*.deb".into(), "*.log".into()]);
        }
        store.chunk(1, 2, "a.deb", 0, &b64(b"hello "));
        store.chunk(1, 2, "a.deb", 6, &b64(b"world"));
        let stored = store.done(1, 2, "a.deb", 11, &sha).expect("stored");
        assert_eq!((stored.size, stored.sha256.as_str()), (11, sha.as_str()));
        assert_eq!(fs::read(store.path_of(&sha).expect("path")).expect("read"), b"hello world");
        assert!(store.finish_build(2, &["a.deb".into()]).is_none());

        // A wrong checksum fails the build.
        store.chunk(1, 3, "b.deb", 0, &b64(b"abc"));
        assert!(store.done(1, 3, "b.deb", 3, &sha).is_none());
        assert!(store.finish_build(3, &[]).expect("failure").contains("checksum mismatch"));
        // Pieces of an interrupted upload are dropped; its restart from 0 counts.
        store.chunk(1, 4, "c.deb", 0, &b64(b"hello "));
        store.chunk(1, 4, "c.deb", 6, &b64(b"wor"));
        assert!(store.done(1, 4, "c.deb", 11, &sha).is_none(), "incomplete");
        store.chunk(1, 4, "c.deb", 6, &b64(b"ld"));
        store.chunk(1, 4, "c.deb", 0, &b64(b"hello "));
        store.chunk(1, 4, "c.deb", 6, &b64(b"world"));
        assert!(store.done(1, 4, "c.deb", 11, &sha).is_some());
        assert!(store.finish_build(4, &["c.deb".into()]).is_none(), "the restart cleared the failure");
        // A worker that reconnected sends the upload again on connection 2
        // while frames of connection 1 are still being read: those change
        // nothing, not even a late restart from 0 or a late end.
        store.expect(9, &["d.deb".into()]);
        store.chunk(1, 9, "d.deb", 0, &b64(b"hello "));
        store.chunk(2, 9, "d.deb", 0, &b64(b"hello "));
        store.chunk(1, 9, "d.deb", 6, &b64(b"world"));
        store.chunk(1, 9, "d.deb", 0, &b64(b"hel"));
        assert!(store.done(1, 9, "d.deb", 11, &sha).is_none(), "connection 1's end is ignored");
        store.chunk(2, 9, "d.deb", 6, &b64(b"world"));
        assert!(store.done(2, 9, "d.deb", 11, &sha).is_some(), "connection 2's upload is whole");
        assert!(store.finish_build(9, &["d.deb".into()]).is_none());
        store.chunk(1, 5, "../etc", 0, &b64(b"x"));
        assert!(store.finish_build(5, &[]).expect("failure").contains("invalid artifact name"));
        // An empty file.
        let empty = hex::encode(Sha256::digest([]));
        assert!(store.done(1, 6, "empty.log", 0, &empty).is_some());
        assert!(store
            .finish_build(6, &["empty.log".into(), "lost.deb".into()])
            .expect("failure")
            .contains("lost.deb: did not arrive"));
        assert_eq!(fs::read_dir(dir.path().join("incoming/m")).expect("dir").count(), 0);
        // A file the build was not asked for, and a build nobody asked anything of.
        store.expect(7, &[".kiln-out/*.deb".into()]);
        store.chunk(1, 7, "evil.rpm", 0, &b64(b"x"));
        assert!(store.finish_build(7, &[]).expect("failure").contains("evil.rpm: the build was not asked for"));
        store.chunk(1, 8, "a.deb", 0, &b64(b"x"));
        assert!(store.done(1, 8, "a.deb", 1, &sha).is_none());
        assert!(store.finish_build(8, &[]).expect("failure").contains("not asked"));
    }
}
