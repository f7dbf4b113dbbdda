//! The package lists a deb target's build root will see, fetched by the
//! master and cached under `data_dir/lists/`: each archive's `InRelease`
//! is verified against its keys before anything it lists is used, and each
//! `Packages` file must have the SHA-256 the verified `InRelease` gives.

use kiln_repo::uploadsig::{verify_cleartext, Keyring, VerifyError};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
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
    let dir = cache.join(archive_key(&archive.url, &archive.suite));
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
    let signed = fetch(http, &in_release, MAX_RELEASE).await?;
    let text = String::from_utf8(signed)
        .map_err(|_| ListsError::Signature { url: in_release.clone(), reason: "it is not text".into() })?;
    let release = verify_cleartext(&text, &archive.keys)
        .map_err(|e| {
            let reason = match e {
                VerifyError::UnknownKey(key) => format!("signed by key 0x{key}, which is not among them"),
                other => other.to_string(),
            };
            ListsError::Signature { url: in_release.clone(), reason }
        })?
        .body;
    let listed = kiln_repo::apt::release_sha256(&release);
    let mut out = Vec::new();
    for (component, name) in archive.components.iter().zip(&names) {
        let stem = format!("{component}/binary-{arch}/Packages");
        // The smallest form the archive offers (Debian's mirrors list the
        // plain file's hash but serve only compressed ones).
        let Some((hash, rel)) = [".xz", ".gz", ""]
            .iter()
            .find_map(|ext| listed.iter().find(|(_, p)| *p == format!("{stem}{ext}")).cloned())
        else {
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
        let bytes = fetch(http, &url, MAX_LIST).await?;
        if hex::encode(Sha256::digest(&bytes)) != hash {
            return Err(ListsError::Hash { url });
        }
        let plain =
            decompress(&rel, &bytes).map_err(|e| ListsError::Fetch { url: url.clone(), reason: e.to_string() })?;
        write_atomically(&path, &plain).map_err(cache_err)?;
        write_atomically(&from, hash.as_bytes()).map_err(cache_err)?;
        out.push(path);
    }
    write_atomically(&release_file, release.as_bytes()).map_err(cache_err)?;
    Ok(out)
}

/// A directory name for an archive's suite.
fn archive_key(url: &str, suite: &str) -> String {
    hex::encode(&Sha256::digest(format!("{url} {suite}").as_bytes())[..10])
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

/// Write, fsync, rename: a reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_repo::key::SigningKey;

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
        let key = SigningKey::generate("Archive <archive@example.org>", None).expect("key");
        let other = SigningKey::generate("Mallory <m@example.org>", None).expect("key");
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
