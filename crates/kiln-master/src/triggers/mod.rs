//! The master's own triggers: polling git remotes and cron schedules. Both
//! request builds through [`crate::ops::requests`] as a system caller.

pub mod poller;
pub mod schedule;
