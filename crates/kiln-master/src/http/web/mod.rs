//! The web interface: server-rendered HTML (maud, escaped by construction)
//! with a little JavaScript for live updates, one file per page family.
//! Every page reads without JavaScript; with it, pages re-render their
//! `<main>` when the master says something changed (`live`, server-sent
//! events), and a running step's log is followed by polling the log API
//! from the last offset.
//!
//! Reading is anonymous unless the master says otherwise (`session`'s read
//! gate). Force, cancel, rebuild, promote and remove need a session and the
//! session's CSRF token in the form; the operation checks the permission.

pub mod build;
pub mod builders;
pub mod console;
pub mod layout;
pub mod live;
pub mod login;
pub mod packages;
pub mod queue;
pub mod repos;
pub mod session;
pub mod workers;
