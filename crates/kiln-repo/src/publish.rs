//! A channel's directory and its atomic generations.
//!
//! ```text
//! repos/CHANNEL/
//!   pool/apt/main/h/hello/hello_2.10-3_amd64.deb     package files, shared by all generations
//!   pool/yum/el-9-x86_64/hello-2.12-1.el9.x86_64.rpm  (signed with the channel's key)
//!   gens/41/  gens/42/                                 complete index trees, numbered in order written
//!   gens/42.rev                                        the revision and shape generation 42 was written from
//!     key.asc
//!     apt/dists/bookworm/{InRelease,Release,Release.gpg,main/...}
//!     apt/pool -> ../../../pool/apt
//!     yum/el-9-x86_64/repodata/{repomd.xml,repomd.xml.asc,<sha>-primary.xml.gz,...}
//!     yum/el-9-x86_64/Packages -> ../../../../pool/yum/el-9-x86_64
//!   by-hash/apt/bookworm/main/binary-amd64/SHA256/…    every kept generation's indexes by hash (see `byhash`)
//!   current -> gens/42                                 what is served
//! ```
//!
//! A generation is written in full beside the served one (`gens/N.tmp`),
//! renamed into place, then `current` is switched with one `rename`: a
//! reader sees the old tree or the new one, never a mix, and never an index
//! naming a file that is not there (package files are placed before the
//! index that names them, and removed only after no generation names them).
//! Every generation is new: a publish, a changed config and a re-signing
//! each write the next number, never over a served one. The indexes of
//! older generations kept (for a configured time, a day by default) stay
//! reachable through `by-hash/` and their hashed repodata names, for
//! clients that read an older `InRelease` or `repomd.xml` a moment before.
//!
//! Modes are set explicitly (0644 files, 0755 directories), whatever the
//! process umask.

use crate::apt::{self, Dist, ReleaseMeta};
use crate::fsio::{create_dirs, write_or_link};
use crate::key::Signers;
use crate::pieces::PieceCache;
use crate::yum::{self, RpmEntry};
use crate::{RepoError, Result};
use std::fs;
use std::path::{Path, PathBuf};

// Other crates place package files and write files from here.
pub use crate::fsio::{place_file, write_atomic};

/// Generations kept besides the current one however old they are (for
/// by-hash readers and a quick look back).
const KEEP_OLD: usize = 2;
/// Generations kept at most, however young: a farm that publishes every
/// minute keeps the last few hours, not a day's worth.
const KEEP_MOST: usize = 100;
/// How long older generations' indexes stay reachable by default.
pub const DEFAULT_KEEP_FOR: std::time::Duration = kiln_core::channel::DEFAULT_KEEP_OLD_INDEXES;

/// What the served generation was written from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub generation: u64,
    /// The channel revision (the database's) it shows.
    pub revision: u64,
    /// What the caller said shaped it besides the revision (its config and
    /// key); empty for a generation written before this was recorded.
    pub shape: String,
    /// How long ago it was written.
    pub age: std::time::Duration,
}

/// One YUM repository of a channel: an rpm target and its packages.
#[derive(Debug, Clone)]
pub struct YumRepo<'a> {
    pub target: String,
    pub entries: Vec<&'a RpmEntry>,
    /// Its `updateinfo.xml`, when the channel has advisories for it.
    pub updateinfo: Option<String>,
}

/// Everything one generation of a channel holds.
#[derive(Debug, Clone)]
pub struct ChannelContent<'a> {
    pub meta: ReleaseMeta,
    pub apt: Vec<Dist<'a>>,
    pub yum: Vec<YumRepo<'a>>,
}

/// A channel's directory (`repos/CHANNEL`).
#[derive(Debug, Clone)]
pub struct ChannelDir {
    root: PathBuf,
    /// How long older generations are kept.
    keep_for: std::time::Duration,
}

impl ChannelDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ChannelDir { root: root.into(), keep_for: DEFAULT_KEEP_FOR }
    }

    /// The same directory, keeping older generations for `keep_for`.
    pub fn keeping_old_for(mut self, keep_for: std::time::Duration) -> Self {
        self.keep_for = keep_for;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the file an APT index calls `pool/...` lives.
    pub fn apt_pool_file(&self, filename: &str) -> Result<PathBuf> {
        self.file(&format!("pool/apt/{}", filename.strip_prefix("pool/").unwrap_or(filename)))
    }

    /// The file at `rel` (relative to the channel directory), refused unless
    /// it stays inside: names in it came from packages, which are untrusted.
    pub fn file(&self, rel: &str) -> Result<PathBuf> {
        crate::fsio::confined(&self.root, rel)
    }

    /// The served tree (`current`), resolved.
    pub fn served(&self) -> PathBuf {
        self.root.join("current")
    }

    /// The generation being served, if any.
    pub fn current_generation(&self) -> Option<u64> {
        let target = fs::read_link(self.root.join("current")).ok()?;
        target.file_name()?.to_str()?.parse().ok()
    }

    /// The served generation and what it was written from.
    pub fn served_generation(&self) -> Option<Served> {
        let generation = self.current_generation()?;
        let dir = self.root.join("gens").join(generation.to_string());
        let age = fs::metadata(&dir).and_then(|m| m.modified()).ok()?.elapsed().unwrap_or_default();
        // Before revisions were recorded apart, a generation was named by its revision.
        let (mut revision, mut shape) = (generation, String::new());
        if let Ok(text) = fs::read_to_string(self.root.join("gens").join(format!("{generation}.rev"))) {
            for line in text.lines() {
                match line.split_once(' ') {
                    Some(("revision", r)) => revision = r.parse().unwrap_or(generation),
                    Some(("shape", s)) => shape = s.to_string(),
                    _ => {}
                }
            }
        }
        Some(Served { generation, revision, shape, age })
    }

    /// The numbers of the generations on disk, complete ones only, oldest first.
    fn generations(&self) -> Vec<u64> {
        let Ok(dir) = fs::read_dir(self.root.join("gens")) else { return Vec::new() };
        let mut gens: Vec<u64> = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
        gens.sort_unstable();
        gens
    }

    /// Removes what a crash left half-written.
    pub fn clean_partial(&self) {
        if let Ok(dir) = fs::read_dir(self.root.join("gens")) {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let _ = fs::remove_file(self.root.join("current.tmp"));
    }

    /// Writes the next generation, showing channel revision `revision`
    /// with `content`, signed by each of `key`'s keys, and serves it; returns its number.
    /// `shape` is recorded with it (what besides the revision made it: see
    /// [`Served::shape`]); `date` is the RFC 2822 date for APT's `Release`.
    pub fn write_generation(
        &self,
        revision: u64,
        shape: &str,
        content: &ChannelContent<'_>,
        key: &Signers,
        date: &str,
    ) -> Result<u64> {
        let gens = self.root.join("gens");
        create_dirs(&gens)?;
        create_dirs(&self.root.join("pool/apt"))?;
        let gen = self.generations().last().map_or(1, |g| g + 1);
        let previous = fs::read_link(self.root.join("current")).ok().map(|t| self.root.join(t));
        // Older generations whose indexes stay reachable from this one, newest first.
        let older: Vec<PathBuf> = self.kept(gen).iter().rev().map(|g| gens.join(g.to_string())).collect();
        let tmp = gens.join(format!("{gen}.tmp"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| RepoError::io(&tmp, e))?;
        }
        create_dirs(&tmp)?;
        // What did not change since the served generation is linked from
        // it, not written again: it is on disk already.
        let before = |rel: &Path| previous.as_ref().map(|p| p.join(rel));
        write_or_link(&tmp.join("key.asc"), key.public_armored()?.as_bytes(), before(Path::new("key.asc")).as_deref())?;
        write_or_link(&tmp.join("key.gpg"), &key.public_binary()?, before(Path::new("key.gpg")).as_deref())?;

        // Compressed index pieces, reused from one generation to the next.
        let cache = PieceCache::new(Some(self.root.join("pieces")));
        create_dirs(&tmp.join("apt/dists"))?;
        std::os::unix::fs::symlink("../../../pool/apt", tmp.join("apt/pool")).map_err(|e| RepoError::io(&tmp, e))?;
        for dist in &content.apt {
            let dir = tmp.join("apt/dists").join(&dist.suite);
            let files = apt::render_indexes(&content.meta, dist, &cache);
            let rel = Path::new("apt/dists").join(&dist.suite);
            // The indexes go to disk (and are synced) while their sums are
            // taken for the Release and it is signed: the disk's time and
            // the CPUs' overlap.
            let (release, text, clear, detached) = std::thread::scope(|s| {
                let writing = s.spawn(|| -> Result<()> {
                    for f in &files {
                        let path = dir.join(&f.path);
                        write_or_link(&path, &f.bytes, before(&rel.join(&f.path)).as_deref())?;
                        fs::File::open(&path).and_then(|file| file.sync_all()).map_err(|e| RepoError::io(&path, e))?;
                    }
                    Ok(())
                });
                let release = apt::render_release(&content.meta, dist, date, &files);
                let text = String::from_utf8_lossy(&release.bytes).into_owned();
                // The two signatures are made at once: with an RSA key each
                // is a private-key operation of several milliseconds.
                let (clear, detached) = std::thread::scope(|s| {
                    let clear = s.spawn(|| key.clearsign(&text));
                    let detached = key.detached(text.as_bytes());
                    (clear.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), detached)
                });
                writing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                Ok::<_, RepoError>((release, text, clear?, detached?))
            })?;
            write_or_link(&dir.join(&release.path), &release.bytes, before(&rel.join(&release.path)).as_deref())?;
            write_atomic(&dir.join("InRelease"), clear.as_bytes())?;
            write_atomic(&dir.join("Release.gpg"), detached.as_bytes())?;
            // by-hash: this generation's indexes join the channel's store,
            // where the older generations kept have theirs.
            crate::byhash::share(&self.root, &tmp, &dist.suite, &text, &older)?;
        }

        for repo in &content.yum {
            let dir = tmp.join("yum").join(&repo.target);
            create_dirs(&dir)?;
            create_dirs(&self.root.join("pool/yum").join(&repo.target))?;
            let link = format!("../../../../pool/yum/{}", repo.target);
            std::os::unix::fs::symlink(link, dir.join("Packages")).map_err(|e| RepoError::io(&dir, e))?;
            // repomd's revision and timestamps are Unix times, as createrepo_c writes them.
            let stamp =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(gen);
            let rel = Path::new("yum").join(&repo.target);
            for f in yum::render_repodata_cached(&repo.entries, stamp, &cache, repo.updateinfo.as_deref()) {
                write_or_link(&dir.join(&f.path), &f.bytes, before(&rel.join(&f.path)).as_deref())?;
                if f.path == "repodata/repomd.xml" {
                    write_atomic(&dir.join("repodata/repomd.xml.asc"), key.detached(&f.bytes)?.as_bytes())?;
                }
            }
            for prev in &older {
                carry_repodata(&prev.join("yum").join(&repo.target), &dir)?;
            }
        }

        let done = gens.join(gen.to_string());
        // On disk whole before it is named, and named before it is served:
        // after a power cut `current` names a complete generation.
        crate::fsio::sync_tree(&tmp)?;
        write_atomic(&gens.join(format!("{gen}.rev")), format!("revision {revision}\nshape {shape}\n").as_bytes())?;
        fs::rename(&tmp, &done).map_err(|e| RepoError::io(&done, e))?;
        crate::fsio::sync_dir(&gens)?;
        let link_tmp = self.root.join("current.tmp");
        let _ = fs::remove_file(&link_tmp);
        std::os::unix::fs::symlink(format!("gens/{gen}"), &link_tmp).map_err(|e| RepoError::io(&link_tmp, e))?;
        fs::rename(&link_tmp, self.root.join("current")).map_err(|e| RepoError::io(&self.root, e))?;
        crate::fsio::sync_dir(&self.root)?;
        let (dropped, kept) = self.prune(gen);
        if dropped {
            let mut kept: Vec<PathBuf> = kept.iter().map(|g| gens.join(g.to_string())).collect();
            kept.push(done);
            crate::byhash::prune(&self.root, &kept);
        }
        cache.prune();
        Ok(gen)
    }

    /// The generations before `current` that are kept, oldest first: the
    /// last [`KEEP_OLD`] whatever their age, and those younger than the
    /// channel's time, at most [`KEEP_MOST`].
    fn kept(&self, current: u64) -> Vec<u64> {
        let gens = self.root.join("gens");
        let older: Vec<u64> = self.generations().into_iter().filter(|g| *g < current).collect();
        let young = |g: &u64| {
            fs::metadata(gens.join(g.to_string()))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age <= self.keep_for)
        };
        let n = older.len();
        let mut kept: Vec<u64> =
            older.iter().enumerate().filter(|(i, g)| *i + KEEP_OLD >= n || young(g)).map(|(_, g)| *g).collect();
        let excess = kept.len().saturating_sub(KEEP_MOST);
        kept.drain(..excess);
        kept
    }

    /// Deletes the generations [`ChannelDir::kept`] does not keep; whether
    /// there were any, and those kept.
    fn prune(&self, current: u64) -> (bool, Vec<u64>) {
        let kept = self.kept(current);
        let mut any = false;
        for g in self.generations().into_iter().filter(|g| *g != current && !kept.contains(g)) {
            let _ = fs::remove_dir_all(self.root.join("gens").join(g.to_string()));
            let _ = fs::remove_file(self.root.join("gens").join(format!("{g}.rev")));
            any = true;
        }
        (any, kept)
    }
}

/// Links the previous generation's hashed repodata files into `to`, so a
/// client holding the old `repomd.xml` still finds what it names.
fn carry_repodata(from: &Path, to: &Path) -> Result<()> {
    let Ok(repomd) = fs::read_to_string(from.join("repodata/repomd.xml")) else { return Ok(()) };
    for href in repomd.split("href=\"").skip(1).filter_map(|s| s.split('"').next()) {
        if href.contains("..") || !href.starts_with("repodata/") {
            continue;
        }
        let (src, dest) = (from.join(href), to.join(href));
        if src.exists() && !dest.exists() {
            fs::hard_link(&src, &dest).map_err(|e| RepoError::io(&dest, e))?;
        }
    }
    Ok(())
}
