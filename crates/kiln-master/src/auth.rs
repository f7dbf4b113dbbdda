//! Checking who a request comes from: the admin token written on first
//! start, users' API tokens (argon2 hashes in the store, remembered by
//! their SHA-256 for a minute) and users' client certificates. Tokens are
//! never logged.

use crate::caller::{secret_matches, split_user_token, tokens_match, Caller};
use crate::shared::Shared;
use kiln_core::perm::Permissions;
use std::path::{Path, PathBuf};

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
    let token = crate::caller::random_token()?;
    // Masters sharing a data dir may start at once: the first one's token holds.
    if kiln_repo::fsio::write_new(&path, format!("{token}\n").as_bytes(), 0o600).map_err(std::io::Error::other)? {
        return Ok((token, path, true));
    }
    Ok((std::fs::read_to_string(&path)?.trim().to_string(), path, false))
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token is not valid")]
    Invalid,
    #[error("too many token checks at once; try again")]
    Busy,
    #[error("too many failed token checks from here; wait a minute")]
    Throttled,
    #[error("cannot check the token: {0}")]
    Store(#[from] kiln_db::StoreError),
}

/// The caller a user is (a verified client certificate names one; a
/// checked token belongs to one).
pub async fn user_caller(shared: &Shared, email: &str) -> Result<Caller, AuthError> {
    let user = shared.store.user(email).await?.ok_or(AuthError::Invalid)?;
    let perms = Permissions::parse(&user.permissions).map_err(|_| AuthError::Invalid)?;
    Ok(Caller { name: user.email, perms })
}

/// How many argon2 checks run at once, and how long a check waits for a turn.
static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
const ARGON2_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Finds who a token belongs to: the admin token, or a user's live token.
/// `from` is the address the request came from, when known: failures are
/// counted per address and per token id ([`crate::caller::Throttle`]).
pub async fn authenticate(shared: &Shared, token: &str, from: Option<std::net::IpAddr>) -> Result<Caller, AuthError> {
    use sha2::Digest;
    if tokens_match(&shared.admin_token, token) {
        return Ok(Caller::admin());
    }
    let throttle = &shared.auth_failures;
    let by_address = from.map(crate::caller::throttle_key);
    let address_blocked = by_address.as_deref().is_some_and(|k| throttle.blocked(k));
    let fail = |id: Option<i64>| {
        by_address.iter().for_each(|k| throttle.failed(k));
        id.iter().for_each(|id| throttle.failed(&format!("token:{id}")));
    };
    let Some((id, secret)) = split_user_token(token) else {
        fail(None);
        return Err(if address_blocked { AuthError::Throttled } else { AuthError::Invalid });
    };
    let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    if let Some(c) = shared.checked_tokens.get(&key) {
        return Ok(c);
    }
    let blocked = address_blocked || throttle.blocked(&format!("token:{id}"));
    let Some(row) = shared.store.live_token(id).await? else {
        // Made-up ids are counted by address only: they would fill the counts.
        fail(None);
        return Err(if blocked { AuthError::Throttled } else { AuthError::Invalid });
    };
    // A made-up secret stops here, before any slow hash.
    if crate::caller::quickly_refused(&row.hash, secret) {
        fail(Some(id));
        return Err(if blocked { AuthError::Throttled } else { AuthError::Invalid });
    }
    // Past the address's limit, no slow hash for a token without the fast
    // check (one that passed it is almost surely right, and goes on). A
    // token id's own count does not stop it: anyone could keep its owner out.
    if address_blocked && !row.hash.contains('#') {
        return Err(AuthError::Throttled);
    }
    // argon2 is deliberately slow and large: off the async threads, and a
    // few at a time, so a storm of checks cannot take the master's memory.
    let permit = tokio::time::timeout(ARGON2_WAIT, ARGON2_SLOTS.acquire())
        .await
        .map_err(|_| AuthError::Busy)?
        .map_err(|_| AuthError::Busy)?;
    let (hash, secret) = (row.hash.clone(), secret.to_string());
    let ok = tokio::task::spawn_blocking(move || secret_matches(&hash, &secret)).await.unwrap_or(false);
    drop(permit);
    if !ok {
        fail(Some(id));
        return Err(AuthError::Invalid);
    }
    let caller = user_caller(shared, &row.email).await?;
    shared.checked_tokens.put(key, caller.clone());
    Ok(caller)
}
