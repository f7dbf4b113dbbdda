//! Each channel's signing key: loaded from the configured file (with its
//! passphrase), or generated under `data_dir/keys/` on first start.

use crate::farm::LoadedFarm;
use kiln_core::config::Channel;
use kiln_repo::key::SigningKey;
use std::collections::HashMap;
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

/// Loads (or, for a channel without a configured key, creates under
/// `data_dir/keys/`) the signing key of every channel. A missing key file,
/// a missing secret or a wrong passphrase fails here, at start.
pub fn load_keys(farm: &LoadedFarm) -> anyhow::Result<HashMap<String, Arc<SigningKey>>> {
    let mut keys = HashMap::new();
    for ch in &farm.cfg.channels {
        keys.insert(ch.name.clone(), Arc::new(load_key(farm, ch)?));
    }
    Ok(keys)
}

pub(super) fn load_key(farm: &LoadedFarm, ch: &Channel) -> anyhow::Result<SigningKey> {
    use anyhow::Context;
    let passphrase =
        ch.passphrase.as_ref().map(|r| farm.secret(r, &format!("channel {}'s passphrase", ch.name))).transpose()?;
    let path = match &ch.key {
        Some(k) => farm.resolve(k),
        None => {
            let path = farm.data_dir().join("keys").join(format!("{}.asc", ch.name));
            if !path.exists() {
                let key =
                    SigningKey::generate(&format!("kiln {} channel <kiln@localhost>", ch.name), None, ch.key_type)?;
                // Masters sharing a data dir may start at once: the first one's key holds.
                if kiln_repo::fsio::write_new(&path, key.secret_armored()?.as_bytes(), 0o600)
                    .with_context(|| format!("cannot write {}", path.display()))?
                {
                    tracing::info!(channel = %ch.name, path = %path.display(), fingerprint = %key.fingerprint(), "generated a signing key");
                    return Ok(key);
                }
            }
            path
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("channel {}: cannot read the key file {}", ch.name, path.display()))?;
    SigningKey::from_armored(&text, passphrase.as_deref())
        .with_context(|| format!("channel {}: key file {}", ch.name, path.display()))
}
