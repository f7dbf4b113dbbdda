//! The package lists a deb target's build root will see, fetched by the
//! master and cached under `data_dir/lists/`: each archive's `InRelease`
//! is verified against its keys before anything it lists is used, and each
//! `Packages` file must have the SHA-256 the verified `InRelease` gives.

use kiln_repo::uploadsig::{verify_cleartext, Keyring, VerifyError};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most a `Packages` file may take, compressed or not (Debian's main
/// for amd64 is about 50 MB uncompressed).
const MAX_LIST: u64 = 512 << 20;
/// The most an `InRelease` may take.
const MAX_RELEASE: u64 = 16 << 20;

/// One archive a build root reads: `deb URL SUITE COMPONENTS`, and the keys
/// its `InRelease` must be signed with.
#[derive(Debug, Clone)]
pub struct Archive {
    pub url: String,
    pub suite: String,
    pub components: Vec<String>,
    pub keys: std::sync::Arc<Keyring>,
    /// Lists younger than this are used without asking the archive.
    pub max_age: Duration,
}

/// Why an archive's lists cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ListsError {
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url}: the signature does not verify with the keys trusted for it: {reason}")]
    Signature { url: String, reason: String },
    #[error("{url}: its SHA-256 is not the one the archive's InRelease lists")]
    Hash { url: String },
    #[error("cannot keep the lists under {dir}: {source}")]
    Cache { dir: String, source: std::io::Error },
}

/// The uncompressed `Packages` files of `archive` for `arch` (one per
/// component the archive has for it), fresh within its `max_age`.
pub async fn packages(
    http: &reqwest::Client,
    cache: &Path,
    archive: &Archive,
    arch: &str,
) -> Result<Vec<PathBuf>, ListsError> {
    let dir = cache.join(archive_key(archive, arch));
    let cache_err = |source| ListsError::Cache { dir: dir.display().to_string(), source };
    std::fs::create_dir_all(&dir).map_err(cache_err)?;
    let names: Vec<String> = archive.components.iter().map(|c| format!("{c}_binary-{arch}_Packages")).collect();
    let release_file = dir.join("Release");
    let fresh = std::fs::metadata(&release_file)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < archive.max_age));
    if fresh {
        return Ok(names.iter().map(|n| dir.join(n)).filter(|p| p.exists()).collect());
    }
    let base = format!("{}/dists/{}", archive.url.trim_end_matches('/'), archive.suite);
    let in_release = format!("{base}/InRelease");
    let refused = |reason: String| ListsError::Signature { url: kiln_core::redact::url_for_logs(&in_release), reason };
    let signed = fetch(http, &in_release, MAX_RELEASE).await?;
    let text = String::from_utf8(signed).map_err(|_| refused("it is not text".into()))?;
    let release = verify_cleartext(&text, &archive.keys)
        .map_err(|e| {
            refused(match e {
                VerifyError::UnknownKey(key) => format!("signed by key 0x{key}, which is not among them"),
                other => other.to_string(),
            })
        })?
        .body;
    let fields = kiln_core::aptrelease::parse(&release);
    // A validly signed Release of another suite, or an old one replayed
    // past its validity, is refused as apt refuses it.
    if !fields.is_suite(&archive.suite) {
        return Err(refused(format!("it is not suite {} (a Release of another suite was served)", archive.suite)));
    }
    if let Some(until) = &fields.valid_until {
        if expired(until) {
            return Err(refused(format!("it was valid until {until} only")));
        }
    }
    let mut out = Vec::new();
    for (component, name) in archive.components.iter().zip(&names) {
        let stem = format!("{component}/binary-{arch}/Packages");
        // The smallest form the archive offers (Debian's mirrors list the
        // plain file's hash but serve only compressed ones).
        let Some((rel, hash, size)) = [".xz", ".gz", ""].iter().find_map(|ext| {
            let rel = format!("{stem}{ext}");
            fields.listed(&rel).map(|(h, size)| (rel, h.to_string(), size))
        }) else {
            // The archive has nothing for this architecture in this component.
            continue;
        };
        let path = dir.join(name);
        let from = dir.join(format!("{name}.from"));
        if std::fs::read_to_string(&from).is_ok_and(|h| h.trim() == hash) && path.exists() {
            out.push(path);
            continue;
        }
        let url = format!("{base}/{rel}");
        // No more than the signed Release says the file takes.
        let bytes = fetch(http, &url, size.min(MAX_LIST)).await?;
        let shown = kiln_core::redact::url_for_logs(&url);
        let (path2, from2) = (path.clone(), from.clone());
        // Hashing, decompressing and writing tens of MB is kept off the async threads.
        let stored = tokio::task::spawn_blocking(move || -> Result<(), ListsError> {
            if hex::encode(Sha256::digest(&bytes)) != hash {
                return Err(ListsError::Hash { url: shown });
            }
            let plain =
                decompress(&rel, &bytes).map_err(|e| ListsError::Fetch { url: shown, reason: e.to_string() })?;
            let cache_err = |source| ListsError::Cache { dir: path2.display().to_string(), source };
            write_atomically(&path2, &plain).map_err(cache_err)?;
            write_atomically(&from2, hash.as_bytes()).map_err(cache_err)
        })
        .await;
        match stored {
            Ok(result) => result?,
            Err(e) => {
                return Err(ListsError::Cache { dir: dir.display().to_string(), source: std::io::Error::other(e) })
            }
        }
        out.push(path);
    }
    write_atomically(&release_file, release.as_bytes()).map_err(cache_err)?;
    Ok(out)
}

/// Whether a `Valid-Until` date (RFC 2822, `UTC` as Debian writes it) has passed.
fn expired(until: &str) -> bool {
    let normal = until.trim().strip_suffix("UTC").map(|d| format!("{d}+0000")).unwrap_or_else(|| until.to_string());
    jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(normal.trim()).is_ok_and(|t| t < jiff::Timestamp::now())
}

/// A directory of its own for each archive suite as one target reads it:
/// its URL and suite, the architecture and components, and the keys it is
/// trusted by (lists verified with one set of keys never serve another).
fn archive_key(archive: &Archive, arch: &str) -> String {
    let mut keys: Vec<&str> = archive.keys.fingerprints().collect();
    keys.sort_unstable();
    let id =
        format!("{}\n{}\n{arch}\n{}\n{}", archive.url, archive.suite, archive.components.join(" "), keys.join(" "));
    hex::encode(&Sha256::digest(id.as_bytes())[..10])
}

async fn fetch(http: &reqwest::Client, url: &str, limit: u64) -> Result<Vec<u8>, ListsError> {
    let failed = |reason: String| ListsError::Fetch { url: kiln_core::redact::url_for_logs(url), reason };
    // A `file:/` archive (a mirror on a local or shared disk), as apt reads it.
    if let Some(path) = url.strip_prefix("file://").or_else(|| url.strip_prefix("file:")) {
        let mut body = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(limit + 1).read_to_end(&mut body))
            .map_err(|e| failed(e.to_string()))?;
        if body.len() as u64 > limit {
            return Err(failed(format!("larger than {} MiB", limit >> 20)));
        }
        return Ok(body);
    }
    let mut resp = http.get(url).send().await.map_err(|e| failed(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(failed(format!("the server answered {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| failed(e.to_string()))? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(failed(format!("larger than {} MiB", limit >> 20)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn decompress(name: &str, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let limited = |r: &mut dyn Read, out: &mut Vec<u8>| -> std::io::Result<()> {
        r.take(MAX_LIST + 1).read_to_end(out)?;
        if out.len() as u64 > MAX_LIST {
            return Err(std::io::Error::other(format!("larger than {} MiB uncompressed", MAX_LIST >> 20)));
        }
        Ok(())
    };
    if name.ends_with(".xz") {
        limited(&mut liblzma::read::XzDecoder::new(bytes), &mut out)?;
    } else if name.ends_with(".gz") {
        limited(&mut flate2::read::MultiGzDecoder::new(bytes), &mut out)?;
    } else {
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// Write, fsync, rename (through a temporary file of this process's own,
/// as masters sharing a data dir may fetch the same lists at once): a
/// reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    kiln_repo::fsio::write_atomic_mode(path, bytes, 0o644).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_repo::key::SigningKey;
    use std::io::Write;

    /// A `file:/` archive of one suite whose `InRelease` (signed by `signer`)
    /// lists `main/binary-amd64/Packages.gz` with the hash of `listed`,
    /// while the file served holds `served`.
    fn archive(dir: &Path, signer: &SigningKey, listed: &[u8], served: &[u8]) {
        let gz = |bytes: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(bytes).expect("gzip");
            e.finish().expect("gzip")
        };
        let listed_gz = gz(listed);
        let release = format!(
            "Suite: test\nSHA256:\n {} {} main/binary-amd64/Packages.gz\n",
            hex::encode(Sha256::digest(&listed_gz)),
            listed_gz.len()
        );
        let dists = dir.join("dists/test");
        std::fs::create_dir_all(dists.join("main/binary-amd64")).expect("dirs");
        std::fs::write(dists.join("InRelease"), signer.clearsign(&release).expect("sign")).expect("InRelease");
        std::fs::write(dists.join("main/binary-amd64/Packages.gz"), gz(served)).expect("Packages.gz");
    }

    fn source(dir: &Path, trusted: &SigningKey) -> Archive {
        Archive {
            url: format!("file:{}", dir.display()),
            suite: "test".into(),
            components: vec!["main".into()],
            keys: std::sync::Arc::new(Keyring::from_armored(&trusted.public_armored().expect("key")).expect("ring")),
            max_age: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn lists_are_taken_only_when_signed_by_a_trusted_key_and_hashed_as_listed() {
        let http = reqwest::Client::new();
        let key =
            SigningKey::generate("Archive <archive@example.org>", None, kiln_core::channel::KeyAlgorithm::Ed25519)
                .expect("key");
        let other = SigningKey::generate("Mallory <m@example.org>", None, kiln_core::channel::KeyAlgorithm::Ed25519)
            .expect("key");
        let packages = b"Package: libfoo-dev\nVersion: 1\nArchitecture: all\n\n";
        let (repo, cache) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));

        archive(repo.path(), &key, packages, packages);
        let files = packages_of_one(&http, cache.path(), &source(repo.path(), &key)).await.expect("lists");
        assert_eq!(files.len(), 1);
        assert_eq!(std::fs::read(&files[0]).expect("read"), packages);

        // Unchanged lists are not fetched again: the archive losing its
        // Packages file changes nothing.
        std::fs::remove_file(repo.path().join("dists/test/main/binary-amd64/Packages.gz")).expect("rm");
        assert_eq!(packages_of_one(&http, cache.path(), &source(repo.path(), &key)).await.expect("cached"), files);

        // A Packages file that is not the one InRelease lists is refused.
        let fresh = tempfile::tempdir().expect("dir");
        archive(repo.path(), &key, packages, b"Package: evil\nVersion: 9\n\n");
        let err = packages_of_one(&http, fresh.path(), &source(repo.path(), &key)).await.expect_err("hash");
        assert!(matches!(err, ListsError::Hash { .. }), "{err}");

        // An InRelease signed by a key not trusted for the archive is refused.
        archive(repo.path(), &other, packages, packages);
        let err = packages_of_one(&http, fresh.path(), &source(repo.path(), &key)).await.expect_err("signature");
        assert!(matches!(err, ListsError::Signature { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("signed by key 0x{}, which is not among them", other.fingerprint())),
            "{err}"
        );
    }

    async fn packages_of_one(http: &reqwest::Client, cache: &Path, a: &Archive) -> Result<Vec<PathBuf>, ListsError> {
        packages(http, cache, a, "amd64").await
    }
}
