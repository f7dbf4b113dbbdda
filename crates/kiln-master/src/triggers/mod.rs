//! The master's own triggers: polling git and Mercurial remotes and cron
//! schedules. Both request builds through [`crate::ops::requests`] as a
//! system caller.

mod hg;
pub mod poller;
pub mod schedule;
