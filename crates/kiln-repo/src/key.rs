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
use pgp::packet::{Signature, SignatureConfig, SignatureType, Subpacket, SubpacketData};
use pgp::types::{KeyDetails, Password, Tag};
use std::fmt;
use std::sync::Arc;

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
        clearsign_by(&[self], text)
    }

    /// An armored detached signature over `data` (`Release.gpg`, `repomd.xml.asc`).
    pub fn detached(&self, data: &[u8]) -> Result<String> {
        detached_by(&[self], data)
    }

    /// A text-mode signature over already line-normalized `text`, as a
    /// clear-signed message holds one per signer.
    fn text_signature(&self, normalized: &str) -> pgp::errors::Result<Signature> {
        let key = &self.secret.primary_key;
        let mut config = SignatureConfig::from_key(rand::thread_rng(), key, SignatureType::Text)?;
        config.hashed_subpackets = vec![
            Subpacket::regular(SubpacketData::SignatureCreationTime(pgp::types::Timestamp::now()))?,
            Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint()))?,
        ];
        config.unhashed_subpackets = vec![Subpacket::regular(SubpacketData::IssuerKeyId(key.legacy_key_id()))?];
        config.sign(key, &self.password, normalized.as_bytes())
    }

    fn binary_signature(&self, data: &[u8]) -> Result<DetachedSignature> {
        DetachedSignature::sign_binary_data(
            rand::thread_rng(),
            &self.secret.primary_key,
            &self.password,
            HashAlgorithm::Sha256,
            data,
        )
        .map_err(sign_err)
    }

    /// Moves the key's expiry to `until` (Unix seconds) the way `gpg
    /// --quick-set-expire` does: each user ID gets a new self-signature
    /// carrying the new lifetime, replacing the key's older self-signatures
    /// (certifications by other keys stay). The key material and its
    /// fingerprint do not change, so clients that trust it keep trusting it.
    pub fn extend(&mut self, until: u64) -> Result<()> {
        let created = u64::from(self.secret.primary_key.created_at().as_secs());
        let lifetime = until
            .checked_sub(created)
            .filter(|l| *l > 0)
            .ok_or_else(|| RepoError::Key("the new expiry is before the key was made".into()))?;
        let lifetime = u32::try_from(lifetime)
            .map_err(|_| RepoError::Key("the new expiry is too far ahead for OpenPGP (136 years at most)".into()))?;
        let fingerprint = self.secret.primary_key.fingerprint();
        let key_id = self.secret.primary_key.legacy_key_id();
        let own = |s: &Signature| {
            s.issuer_fingerprint().iter().any(|f| **f == fingerprint) || s.issuer_key_id().iter().any(|k| **k == key_id)
        };
        let own_revocation = |s: &Signature| own(s) && s.typ() == Some(SignatureType::CertRevocation);
        let key = &self.secret.primary_key;
        let public = key.public_key().clone();
        // A new self-signature made afresh (the key's hash, SHA-256 here,
        // never an old SHA-1; a v6 key's own salt), carrying what the
        // newest old one said besides its dates.
        let renewed = |old: &Signature| -> Result<SignatureConfig> {
            let typ = old.typ().unwrap_or(SignatureType::CertPositive);
            let mut config = SignatureConfig::from_key(rand::thread_rng(), key, typ).map_err(key_err)?;
            config.hashed_subpackets =
                vec![Subpacket::regular(SubpacketData::SignatureCreationTime(pgp::types::Timestamp::now()))
                    .map_err(key_err)?];
            config.hashed_subpackets.extend(
                old.config()
                    .into_iter()
                    .flat_map(|c| c.hashed_subpackets.iter())
                    .filter(|p| {
                        !matches!(p.data, SubpacketData::SignatureCreationTime(_) | SubpacketData::KeyExpirationTime(_))
                    })
                    .cloned(),
            );
            config.hashed_subpackets.push(
                Subpacket::regular(SubpacketData::KeyExpirationTime(pgp::types::Duration::from_secs(lifetime)))
                    .map_err(key_err)?,
            );
            config.unhashed_subpackets = old.config().map(|c| c.unhashed_subpackets.clone()).unwrap_or_default();
            Ok(config)
        };
        // The new user ID list is built whole before it replaces the old
        // one: a failure leaves the key as it was.
        let mut users = self.secret.details.users.clone();
        for user in &mut users {
            if user.signatures.iter().any(own_revocation) {
                continue; // a revoked user ID stays revoked, unrenewed
            }
            let newest = user
                .signatures
                .iter()
                .filter(|s| own(s) && is_self_certification(s))
                .max_by_key(|s| s.created().map_or(0, |t| t.as_secs()))
                .ok_or_else(|| RepoError::Key(format!("user ID {:?} has no self-signature to renew", user.id.id())))?;
            let signature = renewed(newest)?
                .sign_certification(key, &public, &self.password, Tag::UserId, &user.id)
                .map_err(key_err)?;
            user.signatures.retain(|s| !(own(s) && is_self_certification(s)));
            user.signatures.push(signature);
        }
        // A direct-key self-signature with a lifetime is renewed too: it
        // would otherwise still say the key expires.
        let mut direct = self.secret.details.direct_signatures.clone();
        if let Some(newest) = direct
            .iter()
            .filter(|s| own(s) && s.typ() == Some(SignatureType::Key) && s.key_expiration_time().is_some())
            .max_by_key(|s| s.created().map_or(0, |t| t.as_secs()))
        {
            let signature = renewed(newest)?.sign_key(key, &self.password, &public).map_err(key_err)?;
            direct.retain(|s| !(own(s) && s.typ() == Some(SignatureType::Key)));
            direct.push(signature);
        }
        self.secret.details.users = users;
        self.secret.details.direct_signatures = direct;
        Ok(())
    }

    /// The key and passphrase as the `rpm` crate's signer, for RPM header signatures.
    pub fn rpm_signer(&self) -> Result<rpm::signature::pgp::Signer> {
        let armored = self.secret_armored()?;
        let signer = rpm::signature::pgp::Signer::from_asc(&armored).map_err(|e| RepoError::Key(e.to_string()))?;
        let pw = self.password.read();
        Ok(if pw.is_empty() { signer } else { signer.with_key_passphrase(String::from_utf8_lossy(&pw).into_owned()) })
    }
}

/// A certification of a user ID (generic, persona, casual or positive),
/// not its revocation.
fn is_self_certification(s: &Signature) -> bool {
    matches!(
        s.typ(),
        Some(
            SignatureType::CertGeneric
                | SignatureType::CertPersona
                | SignatureType::CertCasual
                | SignatureType::CertPositive
        )
    )
}

fn sign_err(e: pgp::errors::Error) -> RepoError {
    RepoError::Sign(e.to_string())
}

fn key_err(e: pgp::errors::Error) -> RepoError {
    RepoError::Key(e.to_string())
}

/// One clear-signed message with a signature by each of `keys` (a client
/// that trusts any one of them accepts it, as with Debian's archive keys).
fn clearsign_by(keys: &[&SigningKey], text: &str) -> Result<String> {
    let msg = CleartextSignedMessage::new_many(text, |normalized| {
        keys.iter().map(|k| k.text_signature(normalized)).collect()
    })
    .map_err(sign_err)?;
    msg.to_armored_string(ArmorOptions::default()).map_err(sign_err)
}

/// One armored block holding a detached signature by each of `keys`.
fn detached_by(keys: &[&SigningKey], data: &[u8]) -> Result<String> {
    let sigs = keys.iter().map(|k| k.binary_signature(data)).collect::<Result<Vec<_>>>()?;
    let mut out = Vec::new();
    pgp::armor::write(&sigs, pgp::armor::BlockType::Signature, &mut out, None, true).map_err(sign_err)?;
    String::from_utf8(out).map_err(|e| RepoError::Sign(e.to_string()))
}

/// The keys a channel signs with: its current key, and during a rotation
/// the key it replaces. Indexes carry a signature by each, so a client that
/// trusts either keeps updating; packages are signed by the current key
/// only (an RPM holds one signature of a kind).
#[derive(Debug, Clone)]
pub struct Signers {
    /// The current key first.
    keys: Vec<Arc<SigningKey>>,
}

impl Signers {
    pub fn new(current: Arc<SigningKey>, previous: Option<Arc<SigningKey>>) -> Self {
        let mut keys = vec![current];
        keys.extend(previous.filter(|p| p.fingerprint() != keys[0].fingerprint()));
        Signers { keys }
    }

    /// The key that signs new packages.
    pub fn current(&self) -> &Arc<SigningKey> {
        &self.keys[0]
    }

    /// Every key, the current one first.
    pub fn keys(&self) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter().map(|k| k.as_ref())
    }

    /// The keys in the order their signatures are written: the previous
    /// key's first, because a verifier that reads only the first signature
    /// (librepo built without gpgme) is most likely a client that has not
    /// learnt the new key yet.
    fn signing_order(&self) -> Vec<&SigningKey> {
        self.keys.iter().rev().map(|k| k.as_ref()).collect()
    }

    pub fn clearsign(&self, text: &str) -> Result<String> {
        clearsign_by(&self.signing_order(), text)
    }

    pub fn detached(&self, data: &[u8]) -> Result<String> {
        detached_by(&self.signing_order(), data)
    }

    /// Every public key in one armored block (`key.asc`), as `gpg --export
    /// --armor` writes several.
    pub fn public_armored(&self) -> Result<String> {
        let keys: Vec<SignedPublicKey> = self.keys.iter().map(|k| k.public()).collect();
        let mut out = Vec::new();
        pgp::armor::write(&keys, pgp::armor::BlockType::PublicKey, &mut out, None, true).map_err(key_err)?;
        String::from_utf8(out).map_err(|e| RepoError::Key(e.to_string()))
    }

    /// Every public key, binary (`key.gpg`).
    pub fn public_binary(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for k in &self.keys {
            out.extend(k.public_binary()?);
        }
        Ok(out)
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
        .filter(|s| is_self_certification(s))
        .chain(details.direct_signatures.iter().filter(|s| s.typ() == Some(SignatureType::Key)))
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

    fn gpg_in(home: &std::path::Path, args: &[&str]) -> std::process::Output {
        std::process::Command::new("gpg")
            .arg("--homedir")
            .arg(home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .expect("gpg runs")
    }

    #[test]
    fn an_extended_key_keeps_its_fingerprint_and_gpg_sees_the_new_expiry() {
        let home = tempfile::tempdir().expect("gnupg home");
        let out = gpg_in(home.path(), &["--quick-gen-key", "Short <s@example.org>", "ed25519", "sign", "5d"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let armored =
            String::from_utf8(gpg_in(home.path(), &["--armor", "--export-secret-keys", "s@example.org"]).stdout)
                .expect("armored");
        let mut key = SigningKey::from_armored(&armored, None).expect("load");
        let before = key.fingerprint();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
        let until = now + 400 * 86400;
        key.extend(until).expect("extend");
        assert_eq!(key.fingerprint(), before);
        assert_eq!(key.expires_at(), Some(until));
        let renewed = key.secret.details.users[0].signatures.last().expect("a self-signature");
        assert_eq!(renewed.hash_alg(), Some(HashAlgorithm::Sha256));
        assert_eq!(key.secret.details.users[0].signatures.len(), 1, "the old self-signature is replaced");
        // Saved and loaded again, and as gpg reads the public key.
        let again = SigningKey::from_armored(&key.secret_armored().expect("armor"), None).expect("reload");
        assert_eq!(again.expires_at(), Some(until));
        let public = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(public.path(), again.public_armored().expect("pub")).expect("write");
        let shown = gpg_in(home.path(), &["--with-colons", "--show-keys", &public.path().to_string_lossy()]);
        let text = String::from_utf8_lossy(&shown.stdout);
        let pub_line = text.lines().find(|l| l.starts_with("pub:")).expect("a pub line");
        assert_eq!(pub_line.split(':').nth(6), Some(until.to_string().as_str()), "{text}");
        // A date before the key existed is refused.
        assert!(key.extend(1).expect_err("before creation").to_string().contains("before the key was made"));
    }

    #[test]
    fn two_signers_sign_once_and_gpgv_with_either_key_accepts() {
        let old = Arc::new(SigningKey::generate("Old <o@example.org>", None, KeyAlgorithm::Ed25519).expect("old"));
        let new =
            Arc::new(SigningKey::generate("New <n@example.org>", Some("pw"), KeyAlgorithm::Ed25519).expect("new"));
        let both = Signers::new(new.clone(), Some(old.clone()));
        assert_eq!(both.current().fingerprint(), new.fingerprint());
        let dir = tempfile::tempdir().expect("dir");
        let release = "Origin: kiln\nSuite: stable\n";
        std::fs::write(dir.path().join("InRelease"), both.clearsign(release).expect("clearsign")).expect("w");
        std::fs::write(dir.path().join("Release"), release).expect("w");
        std::fs::write(dir.path().join("Release.gpg"), both.detached(release.as_bytes()).expect("sig")).expect("w");
        for (name, key) in [("old", &old), ("new", &new)] {
            let ring = dir.path().join(format!("{name}.gpg"));
            std::fs::write(&ring, key.public_binary().expect("pub")).expect("ring");
            // gpgv exits 1 over the signature whose key it lacks, as it
            // does for Debian's archive; apt (and librepo) accept a file
            // when a trusted key made a good signature, as the status shows.
            let gpgv = |args: &[&str]| {
                let out = std::process::Command::new("gpgv")
                    .args(["--status-fd", "1", "--keyring"])
                    .arg(&ring)
                    .args(args)
                    .current_dir(dir.path())
                    .output()
                    .expect("gpgv runs");
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            for status in [gpgv(&["InRelease"]), gpgv(&["Release.gpg", "Release"])] {
                assert!(status.contains(&format!("[GNUPG:] VALIDSIG {}", key.fingerprint())), "{name}: {status}");
                assert!(!status.contains("BADSIG"), "{name}: {status}");
                assert_eq!(status.matches("[GNUPG:] NEWSIG").count(), 2, "{name}: {status}");
            }
        }
        // key.asc holds both keys in one block.
        let asc = dir.path().join("key.asc");
        std::fs::write(&asc, both.public_armored().expect("armor")).expect("w");
        let listed = gpg_in(dir.path(), &["--with-colons", "--show-keys", &asc.to_string_lossy()]);
        let text = String::from_utf8_lossy(&listed.stdout);
        for key in [&old, &new] {
            assert!(text.contains(&format!("fpr:::::::::{}:", key.fingerprint())), "{text}");
        }
        assert_eq!(text.matches("\npub:").count() + usize::from(text.starts_with("pub:")), 2, "{text}");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = SigningKey::from_armored("hello", None).expect_err("garbage");
        assert!(e.to_string().contains("not an armored OpenPGP secret key"), "{e}");
    }
}
