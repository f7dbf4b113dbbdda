//! Channels: the repositories a farm publishes into, and the rule deciding
//! which builds land where.
//!
//! With no `[[channel]]` in the config a farm has `dev` (every nightly
//! build, newest few versions per package) and `stable` (builds with
//! `release=true`), and `dev` promotes to `stable`.

use std::collections::BTreeMap;

/// Which finished builds a channel takes by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// Builds without `release=true`.
    Nightly,
    /// Builds with `release=true`.
    Release,
    /// Only what is promoted into it.
    Promoted,
}

impl Accepts {
    pub fn as_str(self) -> &'static str {
        match self {
            Accepts::Nightly => "nightly",
            Accepts::Release => "release",
            Accepts::Promoted => "promoted",
        }
    }

    /// Whether a build with these properties lands in the channel.
    pub fn takes(self, properties: &BTreeMap<String, String>) -> bool {
        let release = properties.get("release").is_some_and(|v| v == "true");
        match self {
            Accepts::Nightly => !release,
            Accepts::Release => release,
            Accepts::Promoted => false,
        }
    }
}

/// The channels a finished build's packages go to: those whose rule takes
/// its properties, and none at all for a test build of a pull request
/// ([`crate::props::is_test_build`]), whatever else it says.
pub fn publishing_channels<'a>(channels: &'a [Channel], properties: &crate::props::Properties) -> Vec<&'a Channel> {
    if crate::props::is_test_build(properties) {
        return Vec::new();
    }
    let values: BTreeMap<String, String> = properties.iter().map(|(k, p)| (k.clone(), p.value.clone())).collect();
    channels.iter().filter(|c| c.accepts.takes(&values)).collect()
}

/// The kind of OpenPGP key kiln generates for signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// RSA with a 4096-bit modulus: what every client verifies, RHEL 8's
    /// rpm and older apt and gpg included.
    #[default]
    Rsa4096,
    /// Ed25519 (EdDSA): small and fast, verified by gpgv, apt, rpm 4.16+
    /// (RHEL 9, Fedora, Debian 11+) and librepo, not by RHEL 8's rpm.
    Ed25519,
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa4096 => "rsa4096",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }

    pub fn parse(s: &str) -> Result<KeyAlgorithm, String> {
        match s {
            "rsa4096" => Ok(KeyAlgorithm::Rsa4096),
            "ed25519" => Ok(KeyAlgorithm::Ed25519),
            other => Err(format!("unknown key type {other:?}; known: rsa4096, ed25519")),
        }
    }
}

/// Where a key's passphrase comes from: never the config itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// A file (relative to the config file), first line.
    File(String),
    /// An environment variable of the master.
    Env(String),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub name: String,
    /// Armored secret key file, relative to the config file; generated
    /// under `data_dir/keys/NAME.asc` on first start when absent.
    pub key: Option<String>,
    pub passphrase: Option<SecretRef>,
    pub accepts: Accepts,
    /// Channels this one's packages may be promoted to.
    pub promote_to: Vec<String>,
    /// Versions of a package kept (newest first); `None` keeps all.
    pub keep: Option<u32>,
    /// APT component of the channel's distributions.
    pub component: String,
    pub description: String,
    /// Sign each `.deb` itself too (a debsig `_gpgorigin` member), for
    /// `debsig-verify` policies.
    pub sign_debs: bool,
    /// The kind of key generated under `data_dir/keys/` when `key` is absent.
    pub key_type: KeyAlgorithm,
    /// APT's `Valid-Until`: each `Release` is valid this long after it is
    /// signed, and is signed again before half of that has passed.
    pub valid_until: Option<std::time::Duration>,
    /// How long the indexes of generations a channel no longer serves stay
    /// reachable (APT's `by-hash`, YUM's hashed repodata names).
    pub keep_old_indexes: std::time::Duration,
    /// During a key rotation, the key the channel moves away from.
    pub previous_key: Option<PreviousKey>,
}

/// The key a channel is rotating away from: until `until` it signs the
/// channel's indexes beside the current key and its public key is
/// published with it, so clients that trust only it keep updating while
/// they learn the new one. Packages are signed by the current key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousKey {
    /// Armored secret key file, relative to the config file.
    pub key: String,
    pub passphrase: Option<SecretRef>,
    /// Unix seconds after which it no longer signs.
    pub until: u64,
}

impl PreviousKey {
    /// Whether it still signs at `now` (Unix seconds).
    pub fn in_effect(&self, now: u64) -> bool {
        now < self.until
    }
}

/// How long older generations' indexes stay reachable by default: a day.
pub const DEFAULT_KEEP_OLD_INDEXES: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Channel {
    fn default_named(name: &str, accepts: Accepts, promote_to: &[&str], keep: Option<u32>, description: &str) -> Self {
        Channel {
            name: name.into(),
            key: None,
            passphrase: None,
            accepts,
            promote_to: promote_to.iter().map(|s| s.to_string()).collect(),
            keep,
            component: "main".into(),
            description: description.into(),
            sign_debs: false,
            key_type: KeyAlgorithm::default(),
            valid_until: None,
            keep_old_indexes: DEFAULT_KEEP_OLD_INDEXES,
            previous_key: None,
        }
    }

    /// The channels a farm has when its config names none.
    pub fn defaults() -> Vec<Channel> {
        vec![
            Channel::default_named("dev", Accepts::Nightly, &["stable"], Some(5), "nightly builds"),
            Channel::default_named("stable", Accepts::Release, &[], None, "releases"),
        ]
    }
}
/// A package a channel holds already under the same identity (repository,
/// kind, name, version and architecture) as one being published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held<'a> {
    /// Its row.
    pub id: i64,
    /// The build that published it, if a build did.
    pub build_id: Option<i64>,
    pub sha256: &'a str,
}

/// What publishing a package (from a build, or by promotion) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Nothing of that identity is there: add it.
    Add,
    /// It is there already (the same build published again after a crash,
    /// or the same bytes): nothing to do.
    Present,
    /// `replace` was asked for: the held row `0` goes, the new one comes.
    Replace(i64),
    /// Other contents under a version already published: refused, since
    /// clients that have the old file would never see the new one.
    Refused,
}

/// Decides what publishing a package of `build_id` with `sha256` does
/// where `held` is what the channel has under the same identity.
pub fn placement(held: Option<Held<'_>>, build_id: Option<i64>, sha256: &str, replace: bool) -> Placement {
    match held {
        None => Placement::Add,
        Some(old) if old.build_id.is_some() && old.build_id == build_id => Placement::Present,
        Some(old) if old.sha256 == sha256 => Placement::Present,
        Some(old) if replace => Placement::Replace(old.id),
        Some(_) => Placement::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_published_once_unless_replaced() {
        let held = Held { id: 7, build_id: Some(3), sha256: "aa" };
        assert_eq!(placement(None, Some(4), "bb", false), Placement::Add);
        assert_eq!(placement(Some(held), Some(3), "bb", false), Placement::Present, "the same build again");
        assert_eq!(placement(Some(held), Some(4), "aa", false), Placement::Present, "the same bytes");
        assert_eq!(placement(Some(held), Some(4), "bb", false), Placement::Refused);
        assert_eq!(placement(Some(held), Some(4), "bb", true), Placement::Replace(7));
        let promoted = Held { build_id: None, ..held };
        assert_eq!(placement(Some(promoted), None, "bb", false), Placement::Refused);
    }
}
