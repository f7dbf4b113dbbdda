//! Users, their permissions (as the domain's text form) and their API
//! tokens. The store keeps token hashes only; hashing and checking are the
//! master's.

use crate::{Result, Store};
use sqlx::Row;

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    /// `own_jobs,kill_any_job,...` (see `kiln_core::perm`).
    pub permissions: String,
    pub created_at: i64,
}

/// An API token as stored: its hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub email: String,
    pub name: String,
    pub hash: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

fn user(r: &sqlx::any::AnyRow) -> Result<UserRow> {
    Ok(UserRow { id: r.try_get(0)?, email: r.try_get(1)?, permissions: r.try_get(2)?, created_at: r.try_get(3)? })
}

fn token(r: &sqlx::any::AnyRow) -> Result<TokenRow> {
    Ok(TokenRow {
        id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        email: r.try_get(2)?,
        name: r.try_get(3)?,
        hash: r.try_get(4)?,
        created_at: r.try_get(5)?,
        revoked_at: r.try_get(6)?,
    })
}

const TOKEN_COLUMNS: &str =
    "t.id, t.user_id, u.email, t.name, t.hash, t.created_at, t.revoked_at FROM api_tokens t JOIN users u ON u.id = t.user_id";

impl Store {
    /// Adds a user; `None` when the email is taken.
    pub async fn add_user(&self, email: &str, permissions: &str, at: i64) -> Result<Option<UserRow>> {
        let inserted = sqlx::query(
            "INSERT INTO users (email, permissions, created_at) VALUES ($1, $2, $3) ON CONFLICT (email) DO NOTHING",
        )
        .bind(email)
        .bind(permissions)
        .bind(at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(None);
        }
        self.user(email).await
    }

    pub async fn user(&self, email: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query("SELECT id, email, permissions, created_at FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user).transpose()
    }

    pub async fn users(&self) -> Result<Vec<UserRow>> {
        let rows = sqlx::query("SELECT id, email, permissions, created_at FROM users ORDER BY email")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user).collect()
    }

    /// Removes a user and their tokens; returns whether there was one.
    pub async fn remove_user(&self, email: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM api_tokens WHERE user_id IN (SELECT id FROM users WHERE email = $1)")
            .bind(email)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM users WHERE email = $1").bind(email).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Stores a token's hash for a user; returns the token's id.
    pub async fn add_token(&self, user_id: i64, name: &str, hash: &str, at: i64) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO api_tokens (user_id, name, hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(user_id)
        .bind(name)
        .bind(hash)
        .bind(at)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// A token that is not revoked, with its user.
    pub async fn live_token(&self, id: i64) -> Result<Option<TokenRow>> {
        Ok(self.token(id).await?.filter(|t| t.revoked_at.is_none()))
    }

    /// A token, revoked or not, with its user.
    pub async fn token(&self, id: i64) -> Result<Option<TokenRow>> {
        let row =
            sqlx::query(&format!("SELECT {TOKEN_COLUMNS} WHERE t.id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(token).transpose()
    }

    /// Tokens, newest first: a user's (`Some(email)`) or everyone's.
    pub async fn tokens(&self, email: Option<&str>) -> Result<Vec<TokenRow>> {
        let rows = match email {
            Some(e) => {
                sqlx::query(&format!("SELECT {TOKEN_COLUMNS} WHERE u.email = $1 ORDER BY t.id DESC"))
                    .bind(e)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => sqlx::query(&format!("SELECT {TOKEN_COLUMNS} ORDER BY t.id DESC")).fetch_all(&self.pool).await?,
        };
        rows.iter().map(token).collect()
    }

    /// Revokes a token; returns whether a live one was revoked.
    pub async fn revoke_token(&self, id: i64, at: i64) -> Result<bool> {
        let n = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Changes a user's permissions; returns whether the user exists.
    pub async fn set_permissions(&self, email: &str, permissions: &str) -> Result<bool> {
        let n = sqlx::query("UPDATE users SET permissions = $1 WHERE email = $2")
            .bind(permissions)
            .bind(email)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }
}
