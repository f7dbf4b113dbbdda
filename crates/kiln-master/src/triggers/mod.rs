//! The master's own triggers: polling git and Mercurial remotes, cron
//! schedules and the incoming directory. Both request builds through [`crate::ops::requests`] as a
//! system caller.

mod hg;
pub mod incoming;
pub mod poller;
mod remote;
pub mod schedule;
