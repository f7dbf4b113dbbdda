//! Repository publishing and signing.
//!
//! Everything that turns built packages into repositories that `apt` and
//! `dnf` install from: reading package metadata (`.deb` control files, RPM
//! headers), rendering indexes (APT `Packages`/`Sources`/`Release`, YUM
//! `repodata/`), signing them natively with OpenPGP (no gpg-agent, no
//! keychain), and writing a channel's indexes as a new *generation* that is
//! switched in atomically. It also checks who signed an upload
//! ([`uploadsig`]), with the same OpenPGP implementation.
//!
//! No async and no database here: the master decides *what* a channel holds
//! and calls [`publish::write_generation`] to make the files say so.

pub mod apt;
mod byhash;
pub mod deb;
pub mod debsig;
pub mod fsio;
pub mod hash;
pub mod key;
pub mod pieces;
pub mod publish;
pub mod rpmsign;
mod spread;
pub mod stored;
pub mod uploadsig;
pub mod yum;

use std::path::PathBuf;

/// What went wrong while reading a package, signing or writing a repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid package: {reason}")]
    BadPackage { path: PathBuf, reason: String },
    #[error("signing key: {0}")]
    Key(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("{0}")]
    Invalid(String),
}

impl RepoError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RepoError::Io { path: path.into(), source }
    }
    pub fn bad(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        RepoError::BadPackage { path: path.into(), reason: reason.to_string() }
    }
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;
