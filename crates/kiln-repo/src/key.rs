//! OpenPGP signing keys, natively (rPGP): no gpg-agent, no keychain and no
//! `expect` script typing a passphrase.
//!
//! A key file is an ASCII-armored OpenPGP secret key. Its passphrase, when
//! it has one, comes from the caller (a secret file or the environment),
//! never from the config, and is checked when the key is loaded: a wrong
//! passphrase fails at start, not at the first publish.
//!
//! Generated keys are RSA 4096 (every client verifies it, RHEL 8's rpm
//! included) or Ed25519 (v4, the "legacy" EdDSA encoding that gpgv, rpm
//! 4.16+ and librepo verify), with one primary key that signs: a repository
//! key does not encrypt, and a single key keeps `rpm --import` and
//! `signed-by=` simple. Signatures hash with SHA-256 either way.

use crate::{RepoError, Result};
pub use kiln_core::channel::KeyAlgorithm;
use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, Deserializable, DetachedSignature, EncryptionCaps, KeyType,
    SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::types::{KeyDetails, Password};
use std::fmt;

/// A secret key ready to sign, with its passphrase (zeroised on drop by rPGP).
pub struct SigningKey {
    secret: SignedSecretKey,
    password: Password,
}

impl fmt::Debug for SigningKey {
    // Never print key material or the passphrase.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.fingerprint())
    }
}

impl SigningKey {
    /// Generates a new signing key of kind `algorithm` for `user_id` (e.g.
    /// `"Example Repo <repo@example.org>"`), protected by `passphrase` when
    /// one is given.
    pub fn generate(user_id: &str, passphrase: Option<&str>, algorithm: KeyAlgorithm) -> Result<SigningKey> {
        let mut params = SecretKeyParamsBuilder::default();
        params
            .key_type(match algorithm {
                KeyAlgorithm::Rsa4096 => KeyType::Rsa(4096),
                KeyAlgorithm::Ed25519 => KeyType::Ed25519Legacy,
            })
            .can_certify(true)
            .can_sign(true)
            .can_encrypt(EncryptionCaps::None)
            .primary_user_id(user_id.to_string())
            .passphrase(passphrase.map(str::to_string));
        let params = params.build().map_err(|e| RepoError::Key(format!("key parameters: {e}")))?;
        let secret = params.generate(rand::thread_rng()).map_err(|e| RepoError::Key(format!("generating: {e}")))?;
        Ok(SigningKey { secret, password: passphrase.map(Password::from).unwrap_or_else(Password::empty) })
    }

    /// Loads an armored secret key and checks that `passphrase` unlocks it.
    pub fn from_armored(text: &str, passphrase: Option<&str>) -> Result<SigningKey> {
        let (secret, _) = SignedSecretKey::from_string(text)
            .map_err(|e| RepoError::Key(format!("not an armored OpenPGP secret key: {e}")))?;
        let key = SigningKey { secret, password: passphrase.map(Password::from).unwrap_or_else(Password::empty) };
        // A trial signature proves the passphrase now rather than at the first publish.
        key.detached(b"kiln key check").map_err(|_| {
            RepoError::Key(if passphrase.is_some() {
                "the passphrase does not unlock this key".to_string()
            } else {
                "the key is passphrase-protected and no passphrase was given".to_string()
            })
        })?;
        Ok(key)
    }

    /// The secret key, armored, for writing to a key file.
    pub fn secret_armored(&self) -> Result<String> {
        self.secret.to_armored_string(ArmorOptions::default()).map_err(|e| RepoError::Key(e.to_string()))
    }

    /// The public key, armored: what users pass to `signed-by=`, `rpm --import` and `gpgkey=`.
    pub fn public_armored(&self) -> Result<String> {
        self.public().to_armored_string(ArmorOptions::default()).map_err(|e| RepoError::Key(e.to_string()))
    }

    /// The public key in binary form (an apt `signed-by` keyring file may be binary).
    pub fn public_binary(&self) -> Result<Vec<u8>> {
        use pgp::ser::Serialize;
        self.public().to_bytes().map_err(|e| RepoError::Key(e.to_string()))
    }

    fn public(&self) -> SignedPublicKey {
        SignedPublicKey::from(self.secret.clone())
    }

    /// When the key expires (Unix seconds), as its newest self-signature
    /// says; `None` for a key that does not.
    pub fn expires_at(&self) -> Option<u64> {
        expiry(&self.secret.details, self.secret.primary_key.created_at())
    }

    /// Upper-case hex fingerprint.
    pub fn fingerprint(&self) -> String {
        hex::encode_upper(self.secret.primary_key.fingerprint().as_bytes())
    }

    /// A clear-signed document (APT's `InRelease`).
    pub fn clearsign(&self, text: &str) -> Result<String> {
        let msg = CleartextSignedMessage::sign(rand::thread_rng(), text, &self.secret.primary_key, &self.password)
            .map_err(|e| RepoError::Sign(e.to_string()))?;
        msg.to_armored_string(ArmorOptions::default()).map_err(|e| RepoError::Sign(e.to_string()))
    }

    /// An armored detached signature over `data` (`Release.gpg`, `repomd.xml.asc`).
    pub fn detached(&self, data: &[u8]) -> Result<String> {
        let sig = DetachedSignature::sign_binary_data(
            rand::thread_rng(),
            &self.secret.primary_key,
            &self.password,
            HashAlgorithm::Sha256,
            data,
        )
        .map_err(|e| RepoError::Sign(e.to_string()))?;
        sig.to_armored_string(ArmorOptions::default()).map_err(|e| RepoError::Sign(e.to_string()))
    }

    /// The key and passphrase as the `rpm` crate's signer, for RPM header signatures.
    pub fn rpm_signer(&self) -> Result<rpm::signature::pgp::Signer> {
        let armored = self.secret_armored()?;
        let signer = rpm::signature::pgp::Signer::from_asc(&armored).map_err(|e| RepoError::Key(e.to_string()))?;
        let pw = self.password.read();
        Ok(if pw.is_empty() { signer } else { signer.with_key_passphrase(String::from_utf8_lossy(&pw).into_owned()) })
    }
}

/// When an armored public key expires (Unix seconds); `None` when it does not.
pub fn expiry_of_public(armored: &str) -> Result<Option<u64>> {
    let (key, _) = SignedPublicKey::from_string(armored).map_err(|e| RepoError::Key(e.to_string()))?;
    Ok(expiry(&key.details, key.primary_key.created_at()))
}

/// A key's expiry from its newest self-signature (user ID or direct) that
/// carries a key lifetime, counted from the key's creation.
fn expiry(details: &pgp::composed::SignedKeyDetails, created: pgp::types::Timestamp) -> Option<u64> {
    let newest = details
        .users
        .iter()
        .flat_map(|u| u.signatures.iter())
        .chain(details.direct_signatures.iter())
        .max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))?;
    let lifetime = newest.key_expiration_time()?.as_secs();
    (lifetime != 0).then(|| u64::from(created.as_secs()) + u64::from(lifetime))
}

/// The fingerprint of an armored public key.
pub fn fingerprint_of_public(armored: &str) -> Result<String> {
    let (key, _) = SignedPublicKey::from_string(armored).map_err(|e| RepoError::Key(e.to_string()))?;
    Ok(hex::encode_upper(key.fingerprint().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_of_each_kind_sign_and_verify() {
        for algorithm in [KeyAlgorithm::Ed25519, KeyAlgorithm::Rsa4096] {
            signs_and_verifies(algorithm);
        }
    }

    fn signs_and_verifies(algorithm: KeyAlgorithm) {
        let key = SigningKey::generate("Test Repo <repo@example.org>", Some("s3cret"), algorithm).expect("generate");
        let expected = match algorithm {
            KeyAlgorithm::Rsa4096 => pgp::crypto::public_key::PublicKeyAlgorithm::RSA,
            KeyAlgorithm::Ed25519 => pgp::crypto::public_key::PublicKeyAlgorithm::EdDSALegacy,
        };
        assert_eq!(key.secret.primary_key.algorithm(), expected);
        let armored = key.secret_armored().expect("armor");
        assert!(armored.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"));

        let loaded = SigningKey::from_armored(&armored, Some("s3cret")).expect("load with passphrase");
        assert_eq!(loaded.fingerprint(), key.fingerprint());
        let wrong = SigningKey::from_armored(&armored, Some("nope")).expect_err("wrong passphrase");
        assert!(wrong.to_string().contains("does not unlock"), "{wrong}");
        let missing = SigningKey::from_armored(&armored, None).expect_err("no passphrase");
        assert!(missing.to_string().contains("passphrase-protected"), "{missing}");

        let public = SignedPublicKey::from_string(&key.public_armored().expect("pub")).expect("parse pub").0;
        let signed = loaded.clearsign("Origin: kiln\nSuite: bookworm\n").expect("clearsign");
        let (msg, _) = CleartextSignedMessage::from_string(&signed).expect("parse clearsigned");
        msg.verify(&public).expect("clear signature verifies");
        assert!(signed.contains("\nOrigin: kiln\nSuite: bookworm\n"));

        let det = loaded.detached(b"repomd").expect("detached");
        let (sig, _) = DetachedSignature::from_string(&det).expect("parse sig");
        sig.verify(&public, b"repomd").expect("detached signature verifies");
        assert!(sig.verify(&public, b"tampered").is_err());
    }

    #[test]
    fn expiry_is_read_from_the_newest_self_signature() {
        let key = SigningKey::generate("No Expiry <n@example.org>", None, KeyAlgorithm::Ed25519).expect("key");
        assert_eq!(key.expires_at(), None);
        assert_eq!(expiry_of_public(&key.public_armored().expect("pub")).expect("parse"), None);
        // A key gpg made with a lifetime, as a team would bring one.
        let home = tempfile::tempdir().expect("gnupg home");
        let gpg = |args: &[&str]| {
            let out = std::process::Command::new("gpg")
                .arg("--homedir")
                .arg(home.path())
                .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
                .args(args)
                .output()
                .expect("gpg runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        gpg(&["--quick-gen-key", "Expiring <e@example.org>", "ed25519", "sign", "10d"]);
        let armored = gpg(&["--armor", "--export-secret-keys", "e@example.org"]);
        let loaded = SigningKey::from_armored(&armored, None).expect("gpg's key loads");
        let at = loaded.expires_at().expect("it expires");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
        assert!((now + 9 * 86400..=now + 11 * 86400).contains(&at), "{at} vs {now}");
        assert_eq!(expiry_of_public(&loaded.public_armored().expect("pub")).expect("parse"), Some(at));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = SigningKey::from_armored("hello", None).expect_err("garbage");
        assert!(e.to_string().contains("not an armored OpenPGP secret key"), "{e}");
    }
}
