//! `kiln user ...` and `kiln token ...`: users, their permissions and
//! their API tokens, through the master's API. A token is printed once,
//! when it is made.

use crate::Remote;
use clap::Subcommand;
use kiln_proto::api::{NewToken, NewUser, TokenCreated};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user and print their first token.
    Add {
        email: String,
        /// Permissions, comma-separated: own_jobs, kill_any_job, modify_users, server_admin.
        #[arg(long, value_delimiter = ',')]
        perm: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List users and their permissions.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a user and every token of theirs.
    Remove {
        email: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make an API token (your own, or with --user someone else's) and print it.
    Create {
        /// Whose token (needs modify_users unless it is you).
        #[arg(long)]
        user: Option<String>,
        /// What it is for, e.g. "laptop".
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List tokens (never their values): yours, a user's, or everyone's (`--user '*'`).
    List {
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a token by its id.
    Revoke {
        id: i64,
        #[command(flatten)]
        remote: Remote,
    },
}

fn print_token(t: &TokenCreated, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(t)?);
    } else {
        eprintln!("token {} ({}) for {}; it is shown this once:", t.id, t.name, t.user);
        println!("{}", t.token);
    }
    Ok(())
}

pub async fn user(cmd: UserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCommand::Add { email, perm, remote } => {
            let created = remote.client()?.add_user(&NewUser { email, permissions: perm }).await?;
            print_token(&created, remote.json)?;
        }
        UserCommand::List { remote } => {
            let users = remote.client()?.users().await?;
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else if users.is_empty() {
                println!("no users (the admin token is not a user)");
            } else {
                let width = users.iter().map(|u| u.email.len()).max().unwrap_or(0);
                for u in users {
                    let perms = if u.permissions.is_empty() { "(read only)".into() } else { u.permissions.join(",") };
                    println!("{:width$}  {perms}", u.email);
                }
            }
        }
        UserCommand::Remove { email, remote } => {
            let gone = remote.client()?.remove_user(&email).await?;
            println!("removed {} and their tokens", gone.email);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create { user, name, remote } => {
            let created = remote.client()?.create_token(&NewToken { user, name }).await?;
            print_token(&created, remote.json)?;
        }
        TokenCommand::List { user, remote } => {
            let tokens = remote.client()?.tokens(user.as_deref()).await?;
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                for t in tokens {
                    let state = t.revoked_at.map(|r| format!("revoked {r}")).unwrap_or_else(|| "live".into());
                    println!("{:>5}  {}  {}  made {}  {state}", t.id, t.user, t.name, t.created_at);
                }
            }
        }
        TokenCommand::Revoke { id, remote } => {
            let t = remote.client()?.revoke_token(id).await?;
            println!("revoked token {} ({}) of {}", t.id, t.name, t.user);
        }
    }
    Ok(ExitCode::SUCCESS)
}
