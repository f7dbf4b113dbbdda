//! Who signed an upload: OpenPGP clear-signed `.changes` and `.dsc` files
//! checked against a keyring of the people who may upload, as Debian's
//! archive (dak) and reprepro's `uploaders` do.
//!
//! A [`Keyring`] is read once, when the config is loaded. For each key it
//! keeps the parts that may sign (the primary key and signing subkeys whose
//! self-signatures hold), whether the key is revoked, and when each part
//! expires. [`verify_cleartext`] accepts a message only when one of its
//! signatures verifies with such a part, and hands back the signed text:
//! that is what must be parsed, never the outer text, whose armor headers
//! and dash-escaping are not covered by the signature.
//!
//! Third-party certifications on the keys are ignored: the keyring itself
//! is the statement of trust, made by whoever configures the farm.

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, PublicSubkey, Signature, SignatureType, SubpacketData};
use pgp::types::{Fingerprint, KeyDetails, KeyId, Tag, Timestamp};
use std::time::{Duration, SystemTime};

const SIGNED_MESSAGE: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const PUBLIC_KEY_BLOCK: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const PRIVATE_KEY_BLOCK: &str = "-----BEGIN PGP PRIVATE KEY BLOCK-----";
/// Longest user id kept (a display string, recorded with every build).
const MAX_USER_ID: usize = 200;

/// Why a keyring file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("no armored OpenPGP public key block in it (export the keys with `gpg --armor --export`)")]
    NoKeys,
    #[error("it holds a secret key; give the uploaders' public keys only (`gpg --armor --export`)")]
    SecretKey,
    #[error("not a valid OpenPGP public keyring: {0}")]
    Malformed(String),
    #[error("key 0x{0} has no user id that it certifies itself")]
    NoUserId(String),
}

/// Why an upload's control file is not accepted as signed by an uploader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not an OpenPGP clear-signed message at all.
    #[error("not signed")]
    NotSigned,
    #[error("not a valid clear-signed message: {0}")]
    Malformed(String),
    /// The signer's key is not in the keyring (key id or fingerprint as the signature names it).
    #[error("signed by key 0x{0} which is not in the uploaders keyring")]
    UnknownKey(String),
    /// A key of the keyring is named, but the signature does not verify with it.
    #[error("bad signature (by key 0x{0})")]
    BadSignature(String),
    #[error("signed by key 0x{0}, which is revoked")]
    Revoked(String),
    #[error("signed by key 0x{0}, which has expired")]
    Expired(String),
    #[error("the signature by key 0x{0} has expired")]
    SignatureExpired(String),
    #[error("signed by a part of key 0x{0} that may not sign (no valid signing self-signature)")]
    NotForSigning(String),
    #[error("the signature by key 0x{key} uses {hash}, which is too weak; sign with SHA-256 or better")]
    WeakHash { key: String, hash: String },
}

impl VerifyError {
    /// Which of several signatures' failures to report: the one that says
    /// most about a key of the keyring.
    fn rank(&self) -> u8 {
        match self {
            VerifyError::NotSigned | VerifyError::Malformed(_) => 0,
            VerifyError::UnknownKey(_) => 1,
            VerifyError::NotForSigning(_) | VerifyError::WeakHash { .. } => 2,
            VerifyError::Revoked(_) | VerifyError::Expired(_) | VerifyError::SignatureExpired(_) => 3,
            VerifyError::BadSignature(_) => 4,
        }
    }
}

/// A message that verified: the text that was signed, and who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed text, dash-escaping undone, with `\n` line ends.
    pub body: String,
    /// The signer's primary key fingerprint, upper-case hex.
    pub fingerprint: String,
    /// The signer's (primary) user id, e.g. `Jane Doe <jane@example.org>`.
    pub user_id: String,
}

/// The keys that may sign uploads.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<Uploader>,
}

/// One key of the keyring.
#[derive(Debug, Clone)]
struct Uploader {
    fingerprint: String,
    user_id: String,
    revoked: bool,
    /// The primary key, then each subkey.
    parts: Vec<KeyPart>,
}

/// A primary key or subkey, and whether it may sign.
#[derive(Debug, Clone)]
struct KeyPart {
    key_id: KeyId,
    fingerprint: Fingerprint,
    signer: Option<Signer>,
}

#[derive(Debug, Clone)]
struct Signer {
    key: SigningPart,
    expires: Option<SystemTime>,
}

#[derive(Debug, Clone)]
enum SigningPart {
    Primary(PublicKey),
    Subkey(PublicSubkey),
}

impl SigningPart {
    fn verify(&self, sig: &Signature, data: &[u8]) -> bool {
        match self {
            SigningPart::Primary(k) => sig.verify(k, data).is_ok(),
            SigningPart::Subkey(k) => sig.verify(k, data).is_ok(),
        }
    }
}

impl Keyring {
    /// Reads an armored keyring: one or more public key blocks, each with
    /// one or more keys (`gpg --armor --export A B` and `cat a.asc b.asc`
    /// both give one).
    pub fn from_armored(text: &str) -> Result<Keyring, KeyringError> {
        if text.contains(PRIVATE_KEY_BLOCK) {
            return Err(KeyringError::SecretKey);
        }
        let mut keys = Vec::new();
        let mut blocks = text.split(PUBLIC_KEY_BLOCK).skip(1).peekable();
        if blocks.peek().is_none() {
            return Err(KeyringError::NoKeys);
        }
        for block in blocks {
            let block = format!("{PUBLIC_KEY_BLOCK}{block}");
            let (parsed, _) =
                SignedPublicKey::from_string_many(&block).map_err(|e| KeyringError::Malformed(e.to_string()))?;
            for key in parsed {
                let key = key.map_err(|e| KeyringError::Malformed(e.to_string()))?;
                keys.push(Uploader::new(&key)?);
            }
        }
        if keys.is_empty() {
            return Err(KeyringError::NoKeys);
        }
        Ok(Keyring { keys })
    }

    /// Reads a keyring file as apt keeps them: armored (`.asc`) or binary
    /// (`.gpg`, as in `/usr/share/keyrings`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, KeyringError> {
        if let Ok(text) = std::str::from_utf8(bytes) {
            if text.contains(PUBLIC_KEY_BLOCK) || text.contains(PRIVATE_KEY_BLOCK) {
                return Keyring::from_armored(text);
            }
        }
        let parsed = SignedPublicKey::from_bytes_many(bytes).map_err(|e| KeyringError::Malformed(e.to_string()))?;
        let mut keys = Vec::new();
        for key in parsed {
            let key = key.map_err(|e| KeyringError::Malformed(e.to_string()))?;
            keys.push(Uploader::new(&key)?);
        }
        if keys.is_empty() {
            return Err(KeyringError::NoKeys);
        }
        Ok(Keyring { keys })
    }

    /// A keyring with no keys: nothing verifies with it.
    pub fn empty() -> Keyring {
        Keyring { keys: Vec::new() }
    }

    /// One keyring holding the keys of both.
    pub fn merge(mut self, other: Keyring) -> Keyring {
        self.keys.extend(other.keys);
        self
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The primary fingerprint of each key, upper-case hex.
    pub fn fingerprints(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.fingerprint.as_str())
    }
}

impl Uploader {
    fn new(key: &SignedPublicKey) -> Result<Uploader, KeyringError> {
        let primary = &key.primary_key;
        let fingerprint = hex::encode_upper(primary.fingerprint().as_bytes());
        let revoked = key.details.revocation_signatures.iter().any(|s| s.verify_key(primary).is_ok());
        // The user id: the newest self-certification of each, the primary one first.
        let mut users: Vec<(&[u8], &Signature)> = key
            .details
            .users
            .iter()
            .filter_map(|u| {
                let newest = newest(
                    u.signatures.iter().filter(|s| s.verify_certification(primary, Tag::UserId, &u.id).is_ok()),
                )?;
                // A user id whose newest self-signature revokes it is gone.
                (newest.typ() != Some(SignatureType::CertRevocation)).then_some((u.id.id(), newest))
            })
            .collect();
        users.sort_by_key(|(_, s)| !s.is_primary());
        let Some(&(user_id, self_sig)) = users.first() else { return Err(KeyringError::NoUserId(fingerprint)) };
        let user_id = printable(user_id);

        let mut parts = Vec::new();
        // Keys without a key-flags subpacket predate it; they may sign.
        let primary_signs = self_sig.key_flags().sign() || !has_key_flags(self_sig);
        parts.push(KeyPart {
            key_id: primary.legacy_key_id(),
            fingerprint: primary.fingerprint(),
            signer: (primary_signs && !revoked).then(|| Signer {
                key: SigningPart::Primary(primary.clone()),
                expires: expiry(primary.created_at(), self_sig),
            }),
        });
        for sub in &key.public_subkeys {
            parts.push(KeyPart {
                key_id: sub.key.legacy_key_id(),
                fingerprint: sub.key.fingerprint(),
                signer: if revoked { None } else { subkey_signer(primary, sub) },
            });
        }
        Ok(Uploader { fingerprint, user_id, revoked, parts })
    }
}

/// A subkey's signer, when its newest binding holds, says it may sign, and
/// carries the subkey's own signature back over the primary (without that,
/// anyone could bind someone else's signing key to their own).
fn subkey_signer(primary: &PublicKey, sub: &SignedPublicSubKey) -> Option<Signer> {
    let valid = sub.signatures.iter().filter(|s| s.verify_subkey_binding(primary, &sub.key).is_ok());
    let (revocations, bindings): (Vec<&Signature>, Vec<&Signature>) =
        valid.partition(|s| s.typ() == Some(SignatureType::SubkeyRevocation));
    if !revocations.is_empty() {
        return None;
    }
    let binding = newest(bindings.into_iter())?;
    let back = binding.embedded_signature()?;
    if !binding.key_flags().sign() || back.verify_primary_key_binding(&sub.key, primary).is_err() {
        return None;
    }
    Some(Signer { key: SigningPart::Subkey(sub.key.clone()), expires: expiry(sub.key.created_at(), binding) })
}

/// The signature with the latest creation time.
fn newest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map(Timestamp::as_secs).unwrap_or(0))
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| c.hashed_subpackets().any(|p| matches!(p.data, SubpacketData::KeyFlags(_))))
}

/// When a key made at `created` expires by what `sig` says (zero: never).
fn expiry(created: Timestamp, sig: &Signature) -> Option<SystemTime> {
    let after = sig.key_expiration_time().filter(|d| d.as_secs() > 0)?;
    Some(SystemTime::from(created) + Duration::from_secs(u64::from(after.as_secs())))
}

/// A user id as text that can be shown and recorded: no control
/// characters, bounded.
fn printable(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let clean: String = text.chars().filter(|c| !c.is_control()).take(MAX_USER_ID).collect();
    clean.trim().to_string()
}

/// What one signature names as its issuer, for messages: the fingerprint
/// when it gives one, else the key id.
fn issuer_name(sig: &Signature) -> String {
    if let Some(fp) = sig.issuer_fingerprint().first() {
        return hex::encode_upper(fp.as_bytes());
    }
    sig.issuer_key_id().first().map(hex::encode_upper).unwrap_or_default()
}

/// Whether `sig` names `part` as its issuer; a signature that names no
/// issuer at all may be from any key, and is tried with each.
fn names(sig: &Signature, part: &KeyPart) -> bool {
    let (ids, fps) = (sig.issuer_key_id(), sig.issuer_fingerprint());
    (ids.is_empty() && fps.is_empty()) || ids.contains(&&part.key_id) || fps.contains(&&part.fingerprint)
}

/// Verifies a clear-signed `text` against `keyring`: at least one of its
/// signatures must verify with a part of a key of the keyring that may sign,
/// now. Returns the signed text and who signed it.
pub fn verify_cleartext(text: &str, keyring: &Keyring) -> Result<Verified, VerifyError> {
    if !text.contains(SIGNED_MESSAGE) {
        return Err(VerifyError::NotSigned);
    }
    // rPGP refuses text before the message and data after its signature, so
    // nothing unsigned can ride along and be parsed later.
    let (msg, _) = CleartextSignedMessage::from_string(text).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if msg.signatures().is_empty() {
        return Err(VerifyError::Malformed("it holds no signature".into()));
    }
    let signed = msg.signed_text();
    let now = SystemTime::now();
    let mut worst: Option<VerifyError> = None;
    for sig in msg.signatures() {
        match check_one(sig, signed.as_bytes(), keyring, now) {
            Ok(uploader) => {
                return Ok(Verified {
                    body: signed.replace("\r\n", "\n"),
                    fingerprint: uploader.fingerprint.clone(),
                    user_id: uploader.user_id.clone(),
                })
            }
            Err(e) => {
                if worst.as_ref().is_none_or(|w| e.rank() > w.rank()) {
                    worst = Some(e);
                }
            }
        }
    }
    Err(worst.unwrap_or(VerifyError::NotSigned))
}

/// The uploader whose key made `sig` over `data`, or why none did.
fn check_one<'k>(
    sig: &Signature,
    data: &[u8],
    keyring: &'k Keyring,
    now: SystemTime,
) -> Result<&'k Uploader, VerifyError> {
    let mut worst = VerifyError::UnknownKey(issuer_name(sig));
    for uploader in &keyring.keys {
        for part in uploader.parts.iter().filter(|p| names(sig, p)) {
            match check_part(sig, data, uploader, part, now, uploader.fingerprint.clone()) {
                Ok(()) => return Ok(uploader),
                Err(e) if e.rank() > worst.rank() => worst = e,
                Err(_) => {}
            }
        }
    }
    // Tried with every key, a signature that names none failed with all of
    // them: blaming one of them would mislead.
    if sig.issuer_key_id().is_empty() && sig.issuer_fingerprint().is_empty() {
        return Err(VerifyError::Malformed("its signature names no key, and no key of the keyring made it".into()));
    }
    Err(worst)
}

fn check_part(
    sig: &Signature,
    data: &[u8],
    uploader: &Uploader,
    part: &KeyPart,
    now: SystemTime,
    key: String,
) -> Result<(), VerifyError> {
    if uploader.revoked {
        return Err(VerifyError::Revoked(key));
    }
    let Some(signer) = &part.signer else { return Err(VerifyError::NotForSigning(key)) };
    // Only a signature over a document: never a certification or a
    // binding of the same key, made for another purpose.
    if !matches!(sig.typ(), Some(SignatureType::Text | SignatureType::Binary)) {
        return Err(VerifyError::BadSignature(key));
    }
    let hash = sig.hash_alg().unwrap_or(HashAlgorithm::None);
    if matches!(hash, HashAlgorithm::None | HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160) {
        return Err(VerifyError::WeakHash { key, hash: hash.to_string() });
    }
    if !signer.key.verify(sig, data) {
        return Err(VerifyError::BadSignature(key));
    }
    if signer.expires.is_some_and(|e| e <= now) {
        return Err(VerifyError::Expired(key));
    }
    let created = sig.created().map(SystemTime::from);
    let lifetime = sig.signature_expiration_time().filter(|d| d.as_secs() > 0);
    if let (Some(created), Some(lifetime)) = (created, lifetime) {
        if created + Duration::from_secs(u64::from(lifetime.as_secs())) <= now {
            return Err(VerifyError::SignatureExpired(key));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::SigningKey;

    const CHANGES: &str = "Format: 1.8\nSource: hello\nVersion: 1.0-1\n- dashed line\nFiles:\n 0123 5 x.tar.gz\n";

    fn keyring(keys: &[&SigningKey]) -> Keyring {
        let text: String = keys.iter().map(|k| k.public_armored().expect("armor")).collect::<Vec<_>>().join("\n");
        Keyring::from_armored(&text).expect("keyring")
    }

    #[test]
    fn a_message_signed_by_a_key_of_the_keyring_gives_its_body_and_signer() {
        let jane = SigningKey::generate("Jane Doe <jane@example.org>", None, kiln_core::channel::KeyAlgorithm::Ed25519)
            .expect("jane");
        let other = SigningKey::generate("Other <other@example.org>", None, kiln_core::channel::KeyAlgorithm::Ed25519)
            .expect("other");
        // Two keys, in two concatenated armor blocks.
        let ring = keyring(&[&other, &jane]);
        assert_eq!(ring.len(), 2);
        let signed = jane.clearsign(CHANGES).expect("sign");
        let v = verify_cleartext(&signed, &ring).expect("verifies");
        assert_eq!(v.fingerprint, jane.fingerprint());
        assert_eq!(v.user_id, "Jane Doe <jane@example.org>");
        assert_eq!(v.body.trim_end(), CHANGES.trim_end());
        assert!(v.body.contains("\n- dashed line\n"), "dash-escaping undone: {:?}", v.body);
        // CRLF line ends verify too (the signature covers canonical text).
        let crlf = signed.replace('\n', "\r\n");
        assert_eq!(verify_cleartext(&crlf, &ring).expect("crlf verifies").fingerprint, jane.fingerprint());
    }

    #[test]
    fn binary_keyrings_are_read_and_keyrings_merge() {
        use pgp::ser::Serialize;
        let jane = SigningKey::generate("Jane Doe <jane@example.org>", None, kiln_core::channel::KeyAlgorithm::Ed25519)
            .expect("jane");
        let other = SigningKey::generate("Other <other@example.org>", None, kiln_core::channel::KeyAlgorithm::Ed25519)
            .expect("other");
        let (key, _) = SignedPublicKey::from_string(&jane.public_armored().expect("armor")).expect("key");
        let binary = key.to_bytes().expect("binary");
        let ring = Keyring::from_bytes(&binary).expect("a binary keyring, as in /usr/share/keyrings");
        let signed = jane.clearsign(CHANGES).expect("sign");
        assert_eq!(verify_cleartext(&signed, &ring).expect("verifies").fingerprint, jane.fingerprint());
        let armored = Keyring::from_bytes(other.public_armored().expect("armor").as_bytes()).expect("armored");
        let both = armored.merge(ring);
        assert_eq!(both.len(), 2);
        assert!(verify_cleartext(&other.clearsign(CHANGES).expect("sign"), &both).is_ok());
        assert!(Keyring::from_bytes(b"not a key").is_err());
    }

    #[test]
    fn other_keys_tampering_and_unsigned_text_are_refused_by_kind() {
        let jane = SigningKey::generate("Jane Doe <jane@example.org>", None, kiln_core::channel::KeyAlgorithm::Ed25519)
            .expect("jane");
        let mallory = SigningKey::generate("Mallory <m@example.org>", None, kiln_core::channel::KeyAlgorithm::Ed25519)
            .expect("mallory");
        let ring = keyring(&[&jane]);

        let by_mallory = mallory.clearsign(CHANGES).expect("sign");
        match verify_cleartext(&by_mallory, &ring) {
            Err(VerifyError::UnknownKey(k)) => assert_eq!(k, mallory.fingerprint()),
            other => panic!("expected UnknownKey, got {other:?}"),
        }
        let e = verify_cleartext(&by_mallory, &ring).expect_err("unknown");
        assert!(e.to_string().contains("which is not in the uploaders keyring"), "{e}");

        let tampered = jane.clearsign(CHANGES).expect("sign").replace("Version: 1.0-1", "Version: 6.6-6");
        assert_eq!(verify_cleartext(&tampered, &ring), Err(VerifyError::BadSignature(jane.fingerprint())));

        assert_eq!(verify_cleartext(CHANGES, &ring), Err(VerifyError::NotSigned));
        assert_eq!(verify_cleartext("", &ring), Err(VerifyError::NotSigned));

        // Unsigned text before or after the signed message is refused, not ignored.
        let signed = jane.clearsign(CHANGES).expect("sign");
        for wrapped in [format!("Source: evil\n\n{signed}"), format!("{signed}\nSource: evil\n")] {
            assert!(matches!(verify_cleartext(&wrapped, &ring), Err(VerifyError::Malformed(_))), "{wrapped}");
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let jane = SigningKey::generate("Jane Doe <jane@example.org>", None, kiln_core::channel::KeyAlgorithm::Ed25519)
            .expect("jane");
        let ring = keyring(&[&jane]);
        let signed = jane.clearsign(CHANGES).expect("sign");
        let cut = &signed[..signed.len() - 40];
        let bad_armor =
            signed.replace("-----BEGIN PGP SIGNATURE-----\n", "-----BEGIN PGP SIGNATURE-----\n!!notbase64!!\n");
        let no_sig = format!("{SIGNED_MESSAGE}\nHash: SHA256\n\n{CHANGES}");
        for text in [
            format!("{SIGNED_MESSAGE}\n"),
            format!("{SIGNED_MESSAGE}\nHash: SHA256\n\nSource: x\n-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n"),
            format!("{SIGNED_MESSAGE}\nHash: NOPE\n\nx\n"),
            cut.to_string(),
            bad_armor,
            no_sig,
            "\u{0}\u{ff}-----BEGIN PGP SIGNED MESSAGE-----\u{0}".to_string(),
        ] {
            let e = verify_cleartext(&text, &ring).expect_err("garbage");
            assert!(matches!(e, VerifyError::Malformed(_) | VerifyError::BadSignature(_)), "{text:?}: {e:?}");
        }
        for text in [
            "",
            "hello",
            PUBLIC_KEY_BLOCK,
            &format!("{PUBLIC_KEY_BLOCK}\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"),
        ] {
            assert!(Keyring::from_armored(text).is_err(), "{text:?}");
        }
        let secret = jane.secret_armored().expect("secret");
        assert!(Keyring::from_armored(&secret).expect_err("secret").to_string().contains("secret key"));
    }

    #[test]
    fn mutations_of_a_signed_message_never_panic_nor_verify() {
        let jane = SigningKey::generate("Jane Doe <jane@example.org>", None, kiln_core::channel::KeyAlgorithm::Ed25519)
            .expect("jane");
        let ring = keyring(&[&jane]);
        let signed = jane.clearsign(CHANGES).expect("sign");
        let public = jane.public_armored().expect("armor");
        for i in (0..signed.len()).step_by(3) {
            let _ = verify_cleartext(&signed[..i], &ring);
            for c in ["A", "-", "\n", "\u{0}", "é"] {
                let mutated = format!("{}{c}{}", &signed[..i], &signed[i + 1..]);
                if let Ok(v) = verify_cleartext(&mutated, &ring) {
                    // Only a change outside what is signed (armor line ends, say) may still verify.
                    assert_eq!(v.body.trim_end(), CHANGES.trim_end(), "{mutated}");
                }
            }
        }
        for i in (0..public.len()).step_by(7) {
            let _ = Keyring::from_armored(&public[..i]);
            let _ = Keyring::from_armored(&format!("{}A{}", &public[..i], &public[i + 1..]));
        }
    }

    #[test]
    fn a_signing_subkey_signs_for_its_primary_and_a_certify_only_primary_does_not() {
        use pgp::composed::{ArmorOptions, KeyType, SecretKeyParamsBuilder, SubkeyParamsBuilder};
        use pgp::types::Password;
        let subkey = SubkeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_sign(true)
            .build()
            .expect("subkey params");
        let mut params = SecretKeyParamsBuilder::default();
        params
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(false)
            .primary_user_id("Sub Signer <sub@example.org>".into())
            .subkey(subkey);
        let secret = params.build().expect("params").generate(rand::thread_rng()).expect("generate");
        let public = SignedPublicKey::from(secret.clone()).to_armored_string(ArmorOptions::default()).expect("armor");
        let ring = Keyring::from_armored(&public).expect("keyring");
        let primary = hex::encode_upper(secret.primary_key.fingerprint().as_bytes());
        let pw = Password::empty();

        let by_sub = CleartextSignedMessage::sign(rand::thread_rng(), CHANGES, &secret.secret_subkeys[0].key, &pw)
            .and_then(|m| m.to_armored_string(ArmorOptions::default()))
            .expect("sign with the subkey");
        let v = verify_cleartext(&by_sub, &ring).expect("the subkey's signature verifies");
        assert_eq!(v.fingerprint, primary, "named by its primary key");
        assert_eq!(v.user_id, "Sub Signer <sub@example.org>");

        let by_primary = CleartextSignedMessage::sign(rand::thread_rng(), CHANGES, &secret.primary_key, &pw)
            .and_then(|m| m.to_armored_string(ArmorOptions::default()))
            .expect("sign with the primary");
        assert_eq!(verify_cleartext(&by_primary, &ring), Err(VerifyError::NotForSigning(primary)));
    }
}
