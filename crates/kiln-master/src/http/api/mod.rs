//! The JSON API under `/api/v1`, by resource. Reads are anonymous (unless
//! the master says otherwise); every mutation takes a [`Caller`] and calls
//! the operation, which checks the caller's permission.
//!
//! [`Caller`]: crate::caller::Caller

pub mod builders;
pub mod builds;
pub mod health;
pub mod metrics;
pub mod repos;
pub mod retention;
pub mod uploads;
pub mod users;
pub mod workers;
