//! Loading the farm config from disk: the pure parse from kiln-core, plus
//! what needs the file system (paths relative to the config file, worker
//! tokens from their own files, the keys of extra repositories and of
//! uploaders).

use kiln_core::config::{self, FarmConfig};
use kiln_repo::uploadsig::Keyring;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A parsed config together with what was read from files it names.
#[derive(Debug, Clone)]
pub struct LoadedFarm {
    pub cfg: FarmConfig,
    pub path: PathBuf,
    /// The directory relative paths in the config are resolved against.
    pub base_dir: PathBuf,
    /// Worker name to token; workers whose token file cannot be read are
    /// absent (and refused, with the reason logged).
    pub worker_tokens: HashMap<String, String>,
    /// Text the config was parsed from, to notice changes.
    pub text: String,
    /// The armored keys of each target's extra repositories, in the order
    /// of its `repositories`.
    pub repository_keys: HashMap<String, Vec<String>>,
    /// The keys that may sign uploads (`[uploads] keyring`), read with the
    /// config: a reload reads it again.
    pub uploaders: Option<Arc<Keyring>>,
    /// Who kiln's changelog entries for nightlies are from: the config's
    /// `changelog_maintainer`, else `kiln` at the master's URL's or host's
    /// qualified name, else a local address lintian calls bogus. Worked
    /// out once per load, not per build.
    pub changelog_maintainer: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

impl LoadedFarm {
    pub fn load(path: &Path) -> Result<LoadedFarm, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| LoadError::Read { path: path.display().to_string(), source })?;
        LoadedFarm::from_text(path, text)
    }

    pub fn from_text(path: &Path, text: String) -> Result<LoadedFarm, LoadError> {
        let cfg = config::parse(&text).map_err(|e| LoadError::Invalid(e.render(&path.display().to_string())))?;
        // Absolute: paths made from it (an upload's kept directory) are
        // resolved against it again, and a relative base would be joined twice.
        let dir =
            path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }).unwrap_or(Path::new("."));
        let base_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        for warning in config::warnings(&cfg) {
            tracing::warn!("{warning}");
        }
        let mut worker_tokens = HashMap::new();
        for w in &cfg.workers {
            let Some(token_file) = &w.token_file else { continue };
            let file = base_dir.join(token_file);
            match std::fs::read_to_string(&file) {
                Ok(t) if !t.trim().is_empty() => {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(&file).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
                    if mode & 0o077 != 0 {
                        tracing::warn!(worker = %w.name, file = %file.display(), mode = format!("{mode:o}"),
                            "the worker's token file can be read by other users, who could act as the worker; chmod 600 it");
                    }
                    worker_tokens.insert(w.name.clone(), t.trim().to_string());
                }
                Ok(_) => {
                    tracing::warn!(worker = %w.name, file = %file.display(), "token file is empty; the worker will be refused")
                }
                Err(e) => {
                    tracing::warn!(worker = %w.name, file = %file.display(), error = %e, "cannot read token file; the worker will be refused")
                }
            }
        }
        let mut repository_keys = HashMap::new();
        for t in &cfg.targets {
            let mut keys = Vec::new();
            for repo in &t.repositories {
                let file = base_dir.join(&repo.key);
                let key = std::fs::read_to_string(&file)
                    .map_err(|source| LoadError::Read { path: file.display().to_string(), source })?;
                if !key.trim_start().starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
                    return Err(LoadError::Invalid(format!(
                        "{}: the key of repository {} (target {}) is not an armored OpenPGP public key; \
                         export it with `gpg --armor --export`",
                        file.display(),
                        repo.url,
                        t.name
                    )));
                }
                keys.push(key);
            }
            repository_keys.insert(t.name.clone(), keys);
        }
        let uploaders = match &cfg.uploads.keyring {
            Some(k) => Some(Arc::new(load_keyring(&base_dir.join(k))?)),
            None => None,
        };
        let changelog_maintainer = changelog_maintainer(&cfg.master);
        let farm = LoadedFarm {
            cfg,
            path: path.to_path_buf(),
            base_dir,
            worker_tokens,
            text,
            repository_keys,
            uploaders,
            changelog_maintainer,
        };
        farm.refuse_empty_secrets()?;
        if let Some(incoming) = farm.incoming_dir() {
            // The master moves, renames and removes what it finds there:
            // never among its own files.
            let data = farm.data_dir();
            let inside = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
            let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
            if inside(&canon(&incoming), &canon(&data)) || inside(&incoming, &data) {
                return Err(LoadError::Invalid(format!(
                    "[uploads] incoming_dir {} overlaps the data dir {}; give it a directory of its own",
                    incoming.display(),
                    data.display()
                )));
            }
        }
        Ok(farm)
    }

    /// The incoming directory uploads are dropped into, when configured.
    pub fn incoming_dir(&self) -> Option<PathBuf> {
        self.cfg.uploads.incoming_dir.as_deref().map(|d| self.resolve(d))
    }

    /// A hook secret or forge token that is there but empty (or only
    /// whitespace) would accept forged deliveries or send empty
    /// credentials: the config is refused. One that cannot be read yet is
    /// reported when it is used (it may be provided after start).
    fn refuse_empty_secrets(&self) -> Result<(), LoadError> {
        let hooks = &self.cfg.hooks;
        let forges = [("github", &hooks.github), ("gitlab", &hooks.gitlab), ("gitea", &hooks.gitea)];
        for (forge, hook) in forges {
            let Some(hook) = hook else { continue };
            let refs =
                std::iter::once((&hook.secret, "secret")).chain(hook.status_token.iter().map(|t| (t, "status_token")));
            for (r, key) in refs {
                if self.read_secret(r, "").is_ok_and(|v| v.trim().is_empty()) {
                    return Err(LoadError::Invalid(format!(
                        "[hooks.{forge}] {key} is empty: an empty secret would let anyone through; put the secret in it"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Reads a secret (its first line) from where the config says it is;
    /// `what` names it in errors, which never hold the value.
    pub fn secret(&self, r: &kiln_core::config::SecretRef, what: &str) -> anyhow::Result<String> {
        let value = self.read_secret(r, what)?;
        if value.trim().is_empty() {
            anyhow::bail!("{what} is empty");
        }
        Ok(value)
    }

    fn read_secret(&self, r: &kiln_core::config::SecretRef, what: &str) -> anyhow::Result<String> {
        use anyhow::Context;
        use kiln_core::config::SecretRef;
        let text = match r {
            SecretRef::File(f) => {
                let path = self.resolve(f);
                std::fs::read_to_string(&path).with_context(|| format!("{what}: cannot read {}", path.display()))?
            }
            SecretRef::Env(var) => {
                std::env::var(var).with_context(|| format!("{what}: the variable {var} is not set"))?
            }
            SecretRef::Credential(name) => {
                let dir = std::env::var("CREDENTIALS_DIRECTORY").with_context(|| {
                    format!("{what}: credential {name}: CREDENTIALS_DIRECTORY is not set (run under systemd with LoadCredential=)")
                })?;
                let path = Path::new(&dir).join(name);
                std::fs::read_to_string(&path)
                    .with_context(|| format!("{what}: cannot read credential {}", path.display()))?
            }
        };
        Ok(text.lines().next().unwrap_or_default().to_string())
    }

    pub fn resolve(&self, p: &str) -> PathBuf {
        self.base_dir.join(p)
    }

    /// Where the key of channel `channel` lives when the config names none
    /// (the master generates it there on first start).
    pub fn generated_key_path(&self, channel: &str) -> PathBuf {
        self.data_dir().join("keys").join(format!("{channel}.asc"))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.cfg.master.data_dir)
    }

    pub fn database_url(&self) -> String {
        match &self.cfg.master.database {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir().join("kiln.db").display()),
        }
    }
}

/// Reads the uploaders keyring; a file that is missing or holds no usable
/// key is an error of the config, naming the file.
fn load_keyring(file: &Path) -> Result<Keyring, LoadError> {
    let bytes = std::fs::read(file).map_err(|source| LoadError::Read { path: file.display().to_string(), source })?;
    let invalid = |why: &dyn std::fmt::Display| {
        LoadError::Invalid(format!("{}: the uploaders keyring of [uploads]: {why}", file.display()))
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| invalid(&"not armored text; export the keys with `gpg --armor --export`"))?;
    Keyring::from_armored(text).map_err(|e| invalid(&e))
}

/// The identity of kiln's changelog entries (see [`LoadedFarm::changelog_maintainer`]).
fn changelog_maintainer(master: &config::MasterSection) -> String {
    if let Some(who) = &master.changelog_maintainer {
        return who.clone();
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    config::default_maintainer(master.url.as_deref(), &hostname).unwrap_or_else(|| {
        tracing::warn!("no qualified domain for kiln's changelog entries; lintian will report bogus-mail-host: set [master] changelog_maintainer");
        "kiln <kiln@localhost>".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uploaders_keyring_is_read_with_the_config_and_named_when_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("farm.toml");
        let text = "[uploads]\nkeyring = \"keys/uploaders.asc\"\nrequire_signature = true\n".to_string();
        let missing = LoadedFarm::from_text(&config, text.clone()).expect_err("missing keyring");
        assert!(missing.to_string().contains("keys/uploaders.asc"), "{missing}");

        std::fs::create_dir_all(dir.path().join("keys")).expect("keys dir");
        let file = dir.path().join("keys/uploaders.asc");
        for (content, want) in [
            (&b"not a key"[..], "no armored OpenPGP public key block"),
            (&b"\x99\x01\x0d"[..], "not armored text"),
            (&b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"[..], "not a valid"),
        ] {
            std::fs::write(&file, content).expect("write");
            let e = LoadedFarm::from_text(&config, text.clone()).expect_err("bad keyring").to_string();
            assert!(e.contains("keys/uploaders.asc: the uploaders keyring of [uploads]") && e.contains(want), "{e}");
        }

        let key = kiln_repo::key::SigningKey::generate(
            "Jane Doe <jane@example.org>",
            None,
            kiln_core::channel::KeyAlgorithm::Ed25519,
        )
        .expect("key");
        std::fs::write(&file, key.public_armored().expect("armor")).expect("write");
        let farm = LoadedFarm::from_text(&config, text).expect("loads");
        let ring = farm.uploaders.expect("keyring");
        assert_eq!(ring.fingerprints().collect::<Vec<_>>(), [key.fingerprint()]);
        assert!(LoadedFarm::from_text(&config, String::new()).expect("no [uploads]").uploaders.is_none());
    }
}
