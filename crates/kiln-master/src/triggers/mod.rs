//! The master's own triggers: polling git and Mercurial remotes, cron
//! schedules, the incoming directory and the daily garbage collection. Both request builds through [`crate::ops::requests`] as a
//! system caller.

mod hg;
pub mod incoming;
pub mod poller;
mod remote;
pub mod retention;
pub mod schedule;
