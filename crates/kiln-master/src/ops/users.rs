//! Users and their API tokens. Listing and changing users needs
//! modify_users; nobody grants a permission they lack; only a server admin
//! removes a server admin. Anyone makes, lists and revokes their own
//! tokens; other users' need modify_users. A token's value is returned
//! once, when it is made; the store keeps its argon2 hash.

use super::OpError;
use crate::caller::Caller;
use crate::clock::now_us;
use crate::shared::Shared;
use kiln_core::perm::{check_email, Permission, Permissions};
use kiln_db::{TokenRow, UserRow};

/// A token just made: its value is shown this once.
#[derive(Debug, Clone)]
pub struct MadeToken {
    pub id: i64,
    pub user: String,
    pub name: String,
    pub token: String,
}

pub async fn list_users(s: &Shared, caller: &Caller) -> Result<Vec<UserRow>, OpError> {
    caller.require(Permission::ModifyUsers)?;
    Ok(s.store.users().await?)
}

/// Adds a user with `permissions` and makes their first token.
pub async fn add_user(s: &Shared, caller: &Caller, email: &str, permissions: &[String]) -> Result<MadeToken, OpError> {
    caller.require(Permission::ModifyUsers)?;
    check_email(email).map_err(OpError::Invalid)?;
    let perms = Permissions::parse(&permissions.join(",")).map_err(OpError::Invalid)?;
    for p in perms.iter() {
        caller.require(p)?;
    }
    let Some(user) = s.store.add_user(email, &perms.to_string(), now_us()).await? else {
        return Err(OpError::Conflict(format!("user {email} exists already")));
    };
    tracing::info!(user = %user.email, permissions = %perms, by = %caller.name, "user added");
    make_token(s, &user, "first").await
}

/// Removes a user and every token of theirs.
pub async fn remove_user(s: &Shared, caller: &Caller, email: &str) -> Result<UserRow, OpError> {
    caller.require(Permission::ModifyUsers)?;
    let Some(user) = s.store.user(email).await? else {
        return Err(OpError::NotFound(format!("no user {email}")));
    };
    if Permissions::parse(&user.permissions).unwrap_or_default().allows(Permission::ServerAdmin) {
        caller.require(Permission::ServerAdmin)?;
    }
    s.store.remove_user(email).await?;
    forget(s, email);
    tracing::info!(user = %email, by = %caller.name, "user removed");
    Ok(user)
}

/// Tokens (never their values) of `user` (default: the caller; `*`: everyone).
pub async fn list_tokens(s: &Shared, caller: &Caller, user: Option<String>) -> Result<Vec<TokenRow>, OpError> {
    let whose = user.unwrap_or_else(|| caller.name.clone());
    if whose != caller.name {
        caller.require(Permission::ModifyUsers)?;
    }
    Ok(s.store.tokens((whose != "*").then_some(whose.as_str())).await?)
}

/// Makes a token for `user` (default: the caller) named `name`.
pub async fn create_token(
    s: &Shared,
    caller: &Caller,
    user: Option<String>,
    name: Option<String>,
) -> Result<MadeToken, OpError> {
    let whose = user.unwrap_or_else(|| caller.name.clone());
    if whose != caller.name {
        caller.require(Permission::ModifyUsers)?;
    }
    let Some(user) = s.store.user(&whose).await? else {
        return Err(OpError::NotFound(format!("no user {whose} (the admin token is not a user)")));
    };
    // A token is its user: nobody makes one that can do more than they can.
    if whose != caller.name {
        for p in Permissions::parse(&user.permissions).unwrap_or_default().iter() {
            caller.require(p)?;
        }
    }
    let name = name.unwrap_or_else(|| "token".into());
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(OpError::Invalid("a token's name is 1 to 100 printable characters".into()));
    }
    make_token(s, &user, &name).await
}

/// Revokes token `id`: one's own, or anyone's with modify_users.
pub async fn revoke_token(s: &Shared, caller: &Caller, id: i64) -> Result<TokenRow, OpError> {
    let Some(token) = s.store.live_token(id).await? else {
        return Err(OpError::NotFound(format!("no live token {id}")));
    };
    if token.email != caller.name {
        caller.require(Permission::ModifyUsers)?;
    }
    s.store.revoke_token(id, now_us()).await?;
    forget(s, &token.email);
    tracing::info!(token = id, user = %token.email, by = %caller.name, "token revoked");
    Ok(s.store.token(id).await?.unwrap_or(token))
}

/// Forgets what was checked of `email`'s tokens: the token cache, and the
/// browser sessions they opened (they log in again, with a live token).
fn forget(s: &Shared, email: &str) {
    s.checked_tokens.clear();
    s.sessions.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, session| session.caller.name != email);
}

async fn make_token(s: &Shared, user: &UserRow, name: &str) -> Result<MadeToken, OpError> {
    let (secret, hash) = tokio::task::spawn_blocking(crate::caller::new_token_secret)
        .await
        .map_err(OpError::internal)?
        .map_err(OpError::internal)?;
    let id = s.store.add_token(user.id, name, &hash, now_us()).await?;
    tracing::info!(user = %user.email, token = id, "token made");
    Ok(MadeToken {
        id,
        user: user.email.clone(),
        name: name.to_string(),
        token: crate::caller::user_token(id, &secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{user, Tester};

    #[tokio::test]
    async fn nobody_grants_what_they_lack_and_tokens_are_their_owners() {
        let t = Tester::new().await;
        let admin = Caller::admin();
        let made = add_user(&t.shared, &admin, "mod@example.org", &["modify_users".into()]).await.expect("added");
        assert!(made.token.starts_with(&format!("kiln_{}_", made.id)));
        let moderator = user("mod@example.org", &[Permission::ModifyUsers]);
        let refused = add_user(&t.shared, &moderator, "x@example.org", &["server_admin".into()]).await;
        assert!(matches!(refused, Err(OpError::Forbidden(_))), "{refused:?}");
        add_user(&t.shared, &moderator, "ann@example.org", &[]).await.expect("ann");
        let again = add_user(&t.shared, &admin, "ann@example.org", &[]).await.expect_err("exists");
        assert_eq!(again, OpError::Conflict("user ann@example.org exists already".into()));
        let ann = user("ann@example.org", &[Permission::OwnJobs]);
        let second = create_token(&t.shared, &ann, None, Some("ci".into())).await.expect("own token");
        assert!(matches!(list_tokens(&t.shared, &ann, Some("*".into())).await, Err(OpError::Forbidden(_))));
        assert_eq!(list_tokens(&t.shared, &ann, None).await.expect("own").len(), 2);
        let bob = user("bob@example.org", &[Permission::OwnJobs]);
        assert!(matches!(revoke_token(&t.shared, &bob, second.id).await, Err(OpError::Forbidden(_))));
        let revoked = revoke_token(&t.shared, &ann, second.id).await.expect("revoked");
        assert!(revoked.revoked_at.is_some());
        assert_eq!(
            remove_user(&t.shared, &moderator, "ann@example.org").await.expect("removed").email,
            "ann@example.org"
        );
        assert!(matches!(remove_user(&t.shared, &moderator, "ann@example.org").await, Err(OpError::NotFound(_))));
    }
}
