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
    modified: Option<std::time::SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() })
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
                if let Some(key) = generate_if_missing(&path, ch)? {
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
        let secret = passphrase.map(|r| farm.secret(r, &format!("channel {channel}'s passphrase"))).transpose()?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("channel {channel}: cannot read the key file {}", path.display()))?;
        let key = Arc::new(
            SigningKey::from_armored(&text, secret.as_deref())
                .with_context(|| format!("channel {channel}: key file {}", path.display()))?,
        );
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
