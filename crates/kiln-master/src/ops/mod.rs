//! The operations: one function per thing a user or a trigger can make the
//! master do, whatever door it comes in by (the API, a web form, a forge or
//! base hook, the poller, a schedule, a dependent rebuild, an upload). Each
//! takes the [`Caller`](crate::caller::Caller), checks its permission
//! itself, and answers with domain values or an [`OpError`].
//!
//! Architecture invariant: only `ops` sends requests to the dispatcher
//! (new builds, cancels) and to the publisher (repository changes); and
//! `ops` knows nothing of HTTP (no axum, no maud, no status codes).

pub mod builds;
pub mod disk;
mod error;
pub mod health;
pub mod metrics;
pub mod pulls;
pub mod repos;
pub mod requests;
pub mod retention;
pub mod uploads;
pub mod users;
pub mod workers;

pub use error::OpError;

#[cfg(test)]
pub(crate) mod testing;
