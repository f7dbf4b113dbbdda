//! Who is asking: the [`Caller`] every operation takes, a browser's
//! [`Session`], the client certificate a connection showed, and the token
//! primitives (constant-time comparison, random tokens, argon2 hashes of
//! users' token secrets, the cache of checked tokens). A leaf: it imports
//! nothing of the master. Checking a request's token against the store is
//! [`crate::auth`]'s job.

use kiln_core::perm::{Permission, Permissions};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Who made a request, and what they may do. The admin token is `admin`
/// with every permission; a user's token or certificate is that user; a
/// door the master trusts by other means (a forge hook's signature, a
/// schedule, the poller) is a [`Caller::system`] named after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Recorded as who requested what this caller starts.
    pub name: String,
    pub perms: Permissions,
}

/// A caller lacks a permission; the text says who and which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

impl Caller {
    pub fn admin() -> Caller {
        Caller { name: "admin".into(), perms: Permissions::admin() }
    }

    /// A trigger of the master's own (a verified forge hook, a schedule,
    /// the poller, a dependent rebuild): it may start builds, nothing more.
    pub fn system(name: impl Into<String>) -> Caller {
        Caller { name: name.into(), perms: [Permission::OwnJobs].into_iter().collect() }
    }

    /// The master's own upkeep (the daily garbage collection): what a
    /// server admin may do, under the task's name.
    pub fn maintenance(name: impl Into<String>) -> Caller {
        Caller { name: name.into(), perms: Permissions::admin() }
    }

    /// The same caller, with permission `p` besides.
    pub fn with(mut self, p: Permission) -> Caller {
        self.perms = self.perms.iter().chain([p]).collect();
        self
    }

    /// The same permissions under another name (who a change hook's
    /// request is recorded as).
    pub fn named(&self, name: impl Into<String>) -> Caller {
        Caller { name: name.into(), perms: self.perms }
    }

    /// Ok when the caller holds `p` (or server_admin); else why not.
    pub fn require(&self, p: Permission) -> Result<(), Forbidden> {
        if self.perms.allows(p) {
            Ok(())
        } else {
            Err(Forbidden(format!("{} lacks the {p} permission this needs", self.name)))
        }
    }
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    /// The user token logged in with (`None`: the admin token): checked
    /// again on every action, so a revocation or a removed user ends the
    /// session at once, on every master.
    pub token_id: Option<i64>,
    pub csrf: String,
    pub created: Instant,
}

/// The common name of the client certificate a web connection showed (the
/// users' CA verified it): the user's email.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate(pub Option<String>);

pub fn tokens_match(expected: &str, given: &str) -> bool {
    // Length differences are not secret; contents are compared in constant time.
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

pub fn random_token() -> std::io::Result<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(raw))
}

/// Users' API tokens look like `kiln_ID_SECRET`: the id finds the stored
/// hash, the secret is checked against it.
const USER_TOKEN_PREFIX: &str = "kiln_";

/// The stored row id and the secret of a user's token, if it has that shape.
pub fn split_user_token(token: &str) -> Option<(i64, &str)> {
    let (id, secret) = token.strip_prefix(USER_TOKEN_PREFIX)?.split_once('_')?;
    Some((id.parse().ok()?, secret))
}

/// A new token secret and the argon2 hash the store keeps of it (a PHC
/// string, with its own random salt). The token handed out is
/// [`user_token`] of the stored row's id and this secret.
pub fn new_token_secret() -> std::io::Result<(String, String)> {
    let secret = random_token()?;
    let hash = format!("{}#{}", hash_secret(&secret)?, quick_check(&secret));
    Ok((secret, hash))
}

/// A fast check stored beside a token's argon2 hash: 64 bits of a SHA-256
/// of the secret. A made-up secret fails it without the argon2 work (about
/// 19 MiB and tens of milliseconds each), so guessing costs the master
/// almost nothing; and 64 bits of a hash of a 256-bit random secret tell
/// whoever reads the database nothing usable.
fn quick_check(secret: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("kiln token check:{secret}").as_bytes());
    hex::encode(&digest[..8])
}

/// Whether `secret` certainly does not match the stored `hash` (its fast
/// check fails). Hashes stored before the fast check was kept have none:
/// they always need the argon2 check.
pub fn quickly_refused(hash: &str, secret: &str) -> bool {
    hash.rsplit_once('#').is_some_and(|(_, quick)| !tokens_match(quick, &quick_check(secret)))
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

pub fn secret_matches(hash: &str, secret: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    if quickly_refused(hash, secret) {
        return false;
    }
    let argon = hash.split_once('#').map_or(hash, |(a, _)| a);
    PasswordHash::new(argon).is_ok_and(|h| argon2::Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
}

/// How long a checked user token is trusted without asking the store
/// again; a revocation on another master sharing the database takes
/// effect within this time (on this master at once).
const CHECKED_TTL: Duration = Duration::from_secs(60);
/// At most this many checked tokens are remembered.
const MAX_CHECKED: usize = 10_000;

/// Checked user tokens, by the SHA-256 of the token (never the token), so
/// each request does not pay for an argon2 check.
#[derive(Default)]
pub struct TokenCache(Mutex<HashMap<[u8; 32], (Caller, Instant)>>);

impl TokenCache {
    pub fn get(&self, key: &[u8; 32]) -> Option<Caller> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (_, at)| at.elapsed() < CHECKED_TTL);
        m.get(key).map(|(c, _)| c.clone())
    }

    pub fn put(&self, key: [u8; 32], caller: Caller) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: past the limit, what expired goes, then everything.
        if m.len() >= MAX_CHECKED {
            m.retain(|_, (_, at)| at.elapsed() < CHECKED_TTL);
            if m.len() >= MAX_CHECKED {
                m.clear();
            }
        }
        m.insert(key, (caller, Instant::now()));
    }

    /// Forgets everything checked (after a revocation, a removal or a
    /// change of permissions).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The address a web request came from (set by the server for each connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::IpAddr);

/// The key failures from `ip` are counted under: the address, or for IPv6
/// its /64 (one host usually holds a whole /64).
pub fn throttle_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("ip:{v4}"),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Failed token checks, counted per address and per token id over a
/// minute. Past the limit, a check that would need the slow hash (or that
/// fails) is answered "too many" without any work; a token that passes the
/// fast check still gets through, so a guesser cannot lock its owner out.
#[derive(Default)]
pub struct Throttle(Mutex<HashMap<String, (u32, Instant)>>);

/// Failures a key may have within [`THROTTLE_WINDOW`].
const MAX_FAILURES: u32 = 30;
const THROTTLE_WINDOW: Duration = Duration::from_secs(60);
/// At most this many keys are counted; past it, the oldest counts go.
const MAX_THROTTLED: usize = 10_000;

impl Throttle {
    pub fn blocked(&self, key: &str) -> bool {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(key).is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < THROTTLE_WINDOW)
    }

    pub fn failed(&self, key: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_THROTTLED && !m.contains_key(key) {
            m.retain(|_, (_, since)| since.elapsed() < THROTTLE_WINDOW);
            // Full of live counts: a new key is not counted (dropping the
            // others would let a guesser reset its own count).
            if m.len() >= MAX_THROTTLED {
                return;
            }
        }
        let entry = m.entry(key.to_string()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= THROTTLE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
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
        // A wrong secret fails the fast check; a hash without one still checks.
        assert!(quickly_refused(&hash, "made-up") && !quickly_refused(&hash, &token));
        let legacy = hash.split_once('#').expect("a fast check").0;
        assert!(secret_matches(legacy, &token) && !quickly_refused(legacy, "made-up"));
        assert_eq!(user_token(7, "abc"), "kiln_7_abc");
        assert_eq!(split_user_token("kiln_7_abc"), Some((7, "abc")));
        assert_eq!(split_user_token("kiln_x_abc"), None);
    }

    #[test]
    fn failures_are_throttled_per_key() {
        let t = Throttle::default();
        for _ in 0..MAX_FAILURES - 1 {
            t.failed("ip:192.0.2.1");
        }
        assert!(!t.blocked("ip:192.0.2.1"));
        t.failed("ip:192.0.2.1");
        assert!(t.blocked("ip:192.0.2.1") && !t.blocked("ip:192.0.2.2"));
        let a: std::net::IpAddr = "2001:db8:1:2::7".parse().expect("ip");
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::1".parse().expect("ip");
        assert_eq!(throttle_key(a), throttle_key(b), "one /64, one count");
    }

    #[test]
    fn a_system_caller_may_start_builds_and_nothing_else() {
        let poller = Caller::system("poller");
        assert!(poller.require(Permission::OwnJobs).is_ok());
        let refused = poller.require(Permission::KillAnyJob).expect_err("refused");
        assert_eq!(refused.to_string(), "poller lacks the kill_any_job permission this needs");
    }
}
