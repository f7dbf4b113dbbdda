//! Who is asking: the admin token written on first start, users' API
//! tokens (argon2 hashes in the store), the constant-time comparison every
//! token check uses, and the callers they make. Tokens are never logged.

use kiln_core::perm::{Permission, Permissions};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

pub fn tokens_match(expected: &str, given: &str) -> bool {
    // Length differences are not secret; contents are compared in constant time.
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

pub fn random_token() -> std::io::Result<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(raw))
}

/// Reads `DATA_DIR/admin.token`, creating it (mode 0600) on first start.
/// Returns the token and whether it was created now.
pub fn admin_token(data_dir: &Path) -> std::io::Result<(String, PathBuf, bool)> {
    let path = data_dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_string(), path, false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = random_token()?;
    let tmp = data_dir.join(".admin.token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    writeln!(f, "{token}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok((token, path, true))
}

/// Who made an authenticated request, and what they may do. The admin
/// token is `admin` with every permission; a user's token is that user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub perms: Permissions,
}

impl Caller {
    pub fn admin() -> Caller {
        Caller { name: "admin".into(), perms: Permissions::admin() }
    }

    /// Ok when the caller holds `p` (or server_admin); else why not.
    pub fn require(&self, p: Permission) -> Result<(), String> {
        if self.perms.allows(p) {
            Ok(())
        } else {
            Err(format!("{} lacks the {p} permission this needs", self.name))
        }
    }
}

/// Users' API tokens look like `kiln_ID_SECRET`: the id finds the stored
/// hash, the secret is checked against it.
const USER_TOKEN_PREFIX: &str = "kiln_";

/// A new token secret and the argon2 hash the store keeps of it (a PHC
/// string, with its own random salt). The token handed out is
/// [`user_token`] of the stored row's id and this secret.
pub fn new_token_secret() -> std::io::Result<(String, String)> {
    let secret = random_token()?;
    let hash = hash_secret(&secret)?;
    Ok((secret, hash))
}

/// The token handed out for stored row `id` with `secret`.
pub fn user_token(id: i64, secret: &str) -> String {
    format!("{USER_TOKEN_PREFIX}{id}_{secret}")
}

pub fn hash_secret(secret: &str) -> std::io::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| std::io::Error::other(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| std::io::Error::other(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| std::io::Error::other(e.to_string()))
}

fn secret_matches(hash: &str, secret: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
}

/// How long a checked user token is trusted without asking the store
/// again; a revocation on another master sharing the database takes
/// effect within this time (on this master at once).
const CHECKED_TTL: Duration = Duration::from_secs(60);

/// Checked user tokens, by the SHA-256 of the token (never the token), so
/// each request does not pay for an argon2 check.
#[derive(Default)]
pub struct TokenCache(Mutex<HashMap<[u8; 32], (Caller, Instant)>>);

impl TokenCache {
    fn get(&self, key: &[u8; 32]) -> Option<Caller> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (_, at)| at.elapsed() < CHECKED_TTL);
        m.get(key).map(|(c, _)| c.clone())
    }

    fn put(&self, key: [u8; 32], caller: Caller) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (caller, Instant::now()));
    }

    /// Forgets everything checked (after a revocation, a removal or a
    /// change of permissions).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The common name of the client certificate a web connection showed (the
/// users' CA verified it): the user's email.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate(pub Option<String>);

/// The caller a user is (a verified client certificate names one; a
/// checked token belongs to one).
pub async fn user_caller(shared: &crate::shared::Shared, email: &str) -> Result<Caller, AuthError> {
    let user = shared.store.user(email).await?.ok_or(AuthError::Invalid)?;
    let perms = Permissions::parse(&user.permissions).map_err(|_| AuthError::Invalid)?;
    Ok(Caller { name: user.email, perms })
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token is not valid")]
    Invalid,
    #[error("cannot check the token: {0}")]
    Store(#[from] kiln_db::StoreError),
}

/// Finds who a token belongs to: the admin token, or a user's live token.
pub async fn authenticate(shared: &crate::shared::Shared, token: &str) -> Result<Caller, AuthError> {
    use sha2::Digest;
    if tokens_match(&shared.admin_token, token) {
        return Ok(Caller::admin());
    }
    let Some((id, secret)) = token.strip_prefix(USER_TOKEN_PREFIX).and_then(|rest| rest.split_once('_')) else {
        return Err(AuthError::Invalid);
    };
    let Ok(id) = id.parse::<i64>() else { return Err(AuthError::Invalid) };
    let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    if let Some(c) = shared.checked_tokens.get(&key) {
        return Ok(c);
    }
    let Some(row) = shared.store.live_token(id).await? else { return Err(AuthError::Invalid) };
    let (hash, secret) = (row.hash.clone(), secret.to_string());
    // argon2 is deliberately slow: off the async threads.
    let ok = tokio::task::spawn_blocking(move || secret_matches(&hash, &secret)).await.unwrap_or(false);
    if !ok {
        return Err(AuthError::Invalid);
    }
    let caller = user_caller(shared, &row.email).await?;
    shared.checked_tokens.put(key, caller.clone());
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_secret_checks_only_itself() {
        let (token, hash) = new_token_secret().expect("token");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains(&token));
        assert!(secret_matches(&hash, &token));
        assert!(!secret_matches(&hash, &format!("{token}x")));
        assert!(!secret_matches("not a hash", &token));
        assert_eq!(user_token(7, "abc"), "kiln_7_abc");
    }
}
