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
}

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
