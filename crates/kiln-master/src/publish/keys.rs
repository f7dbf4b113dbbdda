//! Each channel's signing keys: loaded from the configured files (with
//! their passphrases), or generated under `data_dir/keys/` on first start;
//! read again when a file changes (a key extended in place) or the config
//! names another (a rotation), and the previous key of a rotation dropped
//! once its time is up.

use crate::farm::LoadedFarm;
use crate::shared::ChannelPublicKey;
use kiln_core::config::{Channel, SecretRef};
use kiln_repo::key::{Signers, SigningKey};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The Debian name of the machine's architecture, for targets without `arch`.
pub fn host_deb_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// A key file's state when it was read: another state means read it again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: (i64, i64),
    /// Changed by any write or `touch`, even one that puts the old mtime back.
    changed: (i64, i64),
    len: u64,
    device: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
            len: meta.len(),
            device: meta.dev(),
            inode: meta.ino(),
        })
    }
}

struct Loaded {
    stamp: Option<FileStamp>,
    passphrase: Option<SecretRef>,
    key: Arc<SigningKey>,
}

/// The keys read so far, by file.
#[derive(Default)]
pub struct KeyCache {
    loaded: HashMap<PathBuf, Loaded>,
}

impl KeyCache {
    /// Loads every channel's keys, as the master starts: a missing key
    /// file, a missing secret or a wrong passphrase fails here.
    pub fn load(farm: &LoadedFarm) -> anyhow::Result<(KeyCache, HashMap<String, ChannelPublicKey>)> {
        let mut cache = KeyCache::default();
        let mut public = HashMap::new();
        let now = unix_now();
        for ch in &farm.cfg.channels {
            let signers = cache.signers(farm, ch, now)?;
            public.insert(ch.name.clone(), ChannelPublicKey::of(&signers)?);
        }
        Ok((cache, public))
    }

    /// Channel `ch`'s signers at `now`: its key, and its previous key while
    /// a rotation's time lasts. A key file changed since it was read is
    /// read again.
    pub fn signers(&mut self, farm: &LoadedFarm, ch: &Channel, now: u64) -> anyhow::Result<Signers> {
        let current = match &ch.key {
            Some(k) => self.get(farm, &farm.resolve(k), ch.passphrase.as_ref(), &ch.name)?,
            None => {
                let path = farm.generated_key_path(&ch.name);
                // Generated once, when this master first looks: a key file
                // that vanishes later is an error to report, not a reason
                // to sign with a key no client knows.
                let first_look = !self.loaded.contains_key(&path);
                if let Some(key) = first_look.then(|| generate_if_missing(&path, ch)).transpose()?.flatten() {
                    let key = Arc::new(key);
                    let stamp = FileStamp::of(&path);
                    self.loaded.insert(path, Loaded { stamp, passphrase: None, key: key.clone() });
                    key
                } else {
                    self.get(farm, &path, None, &ch.name)?
                }
            }
        };
        let previous = match &ch.previous_key {
            Some(p) if p.in_effect(now) => {
                Some(self.get(farm, &farm.resolve(&p.key), p.passphrase.as_ref(), &ch.name).map_err(|e| {
                    e.context(format!(
                        "channel {}: the previous key (signing until {})",
                        ch.name,
                        kiln_core::date::format_utc(p.until)
                    ))
                })?)
            }
            _ => None,
        };
        Ok(Signers::new(current, previous))
    }

    fn get(
        &mut self,
        farm: &LoadedFarm,
        path: &Path,
        passphrase: Option<&SecretRef>,
        channel: &str,
    ) -> anyhow::Result<Arc<SigningKey>> {
        use anyhow::Context;
        let stamp = FileStamp::of(path);
        if let Some(l) = self.loaded.get(path) {
            if l.stamp == stamp && l.passphrase.as_ref() == passphrase {
                return Ok(l.key.clone());
            }
        }
        let read = || -> anyhow::Result<SigningKey> {
            let secret = passphrase.map(|r| farm.secret(r, &format!("channel {channel}'s passphrase"))).transpose()?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("channel {channel}: cannot read the key file {}", path.display()))?;
            SigningKey::from_armored(&text, secret.as_deref())
                .with_context(|| format!("channel {channel}: key file {}", path.display()))
        };
        let key = match read() {
            Ok(k) => Arc::new(k),
            // A key file that changed into something unreadable (half
            // written, removed, another owner): the channel goes on with
            // the key it had, and the log says why, once per change.
            Err(e) => match self.loaded.get_mut(path).filter(|l| l.passphrase.as_ref() == passphrase) {
                Some(l) => {
                    tracing::error!(channel, error = %format!("{e:#}"), "cannot read the changed key file; signing with the key read before");
                    l.stamp = stamp;
                    return Ok(l.key.clone());
                }
                None => return Err(e),
            },
        };
        if self.loaded.contains_key(path) {
            tracing::info!(channel, path = %path.display(), fingerprint = %key.fingerprint(), "read the changed key file");
        }
        self.loaded.insert(path.to_path_buf(), Loaded { stamp, passphrase: passphrase.cloned(), key: key.clone() });
        Ok(key)
    }
}

/// Generates the key of a channel without a configured one when its file
/// does not exist yet; `None` when it does (or another master sharing the
/// data dir wrote it first).
fn generate_if_missing(path: &Path, ch: &Channel) -> anyhow::Result<Option<SigningKey>> {
    use anyhow::Context;
    if path.exists() {
        return Ok(None);
    }
    let key = SigningKey::generate(&format!("kiln {} channel <kiln@localhost>", ch.name), None, ch.key_type)?;
    if kiln_repo::fsio::write_new(path, key.secret_armored()?.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?
    {
        tracing::info!(channel = %ch.name, path = %path.display(), fingerprint = %key.fingerprint(), "generated a signing key");
        return Ok(Some(key));
    }
    Ok(None)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::channel::KeyAlgorithm;

    fn farm(dir: &Path, channels: &str) -> LoadedFarm {
        LoadedFarm::from_text(&dir.join("farm.toml"), format!("[master]\ndata_dir = \"data\"\n{channels}"))
            .expect("config")
    }

    fn write_key(path: &Path, name: &str) -> String {
        let key = SigningKey::generate(name, None, KeyAlgorithm::Ed25519).expect("key");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        kiln_repo::fsio::write_atomic_mode(path, key.secret_armored().expect("armor").as_bytes(), 0o600).expect("w");
        key.fingerprint()
    }

    fn fingerprints(s: &Signers) -> Vec<String> {
        s.keys().map(SigningKey::fingerprint).collect()
    }

    #[test]
    fn a_changed_key_file_is_read_again_and_an_unreadable_one_keeps_the_last_good_key() {
        let dir = tempfile::tempdir().expect("dir");
        let farm = farm(dir.path(), "[[channel]]\nname = \"stable\"\nkey = \"keys/stable.asc\"\n");
        let ch = farm.cfg.channel("stable").expect("stable").clone();
        let path = dir.path().join("keys/stable.asc");
        let first = write_key(&path, "First <f@example.org>");
        let mut cache = KeyCache::default();
        assert_eq!(fingerprints(&cache.signers(&farm, &ch, 0).expect("signers")), vec![first.clone()]);
        // Replaced in place (as an extension or a restore does): read again.
        let second = write_key(&path, "Second <s@example.org>");
        assert_eq!(fingerprints(&cache.signers(&farm, &ch, 0).expect("signers")), vec![second.clone()]);
        // Half written: the channel keeps signing with what it had.
        std::fs::write(&path, "-----BEGIN PGP PRIVATE KEY BLOCK-----\n").expect("garbage");
        assert_eq!(fingerprints(&cache.signers(&farm, &ch, 0).expect("kept")), vec![second.clone()]);
        // A fresh master has nothing to fall back on, and says so.
        let e = KeyCache::load(&farm).err().expect("refused at start");
        assert!(format!("{e:#}").contains("keys/stable.asc"), "{e:#}");
    }

    #[test]
    fn a_generated_key_that_vanishes_is_not_replaced_by_a_new_one() {
        let dir = tempfile::tempdir().expect("dir");
        let farm = farm(dir.path(), "[[channel]]\nname = \"dev\"\nkey_type = \"ed25519\"\n");
        let ch = farm.cfg.channel("dev").expect("dev").clone();
        let mut cache = KeyCache::default();
        let made = fingerprints(&cache.signers(&farm, &ch, 0).expect("generated"));
        let path = farm.generated_key_path("dev");
        assert!(path.exists());
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(fingerprints(&cache.signers(&farm, &ch, 0).expect("kept")), made);
        assert!(!path.exists(), "no new key was generated");
    }

    #[test]
    fn the_previous_key_signs_until_its_time_and_then_not() {
        let dir = tempfile::tempdir().expect("dir");
        let old = write_key(&dir.path().join("keys/old.asc"), "Old <o@example.org>");
        let new = write_key(&dir.path().join("keys/new.asc"), "New <n@example.org>");
        let farm = farm(
            dir.path(),
            "[[channel]]\nname = \"stable\"\nkey = \"keys/new.asc\"\n\
             previous_key = { key = \"keys/old.asc\", until = \"2027-01-15\" }\n",
        );
        let ch = farm.cfg.channel("stable").expect("stable").clone();
        let until = ch.previous_key.as_ref().expect("previous").until;
        let mut cache = KeyCache::default();
        assert_eq!(fingerprints(&cache.signers(&farm, &ch, until - 1).expect("during")), [new.clone(), old]);
        assert_eq!(fingerprints(&cache.signers(&farm, &ch, until).expect("after")), [new]);
    }
}
