//! kiln's pure domain: the farm configuration and its matrix, build and step
//! states, properties, and the scheduling decisions the master acts on.
//!
//! Architecture invariant: nothing in this crate does I/O, spawns, sleeps or
//! reads the clock. Callers pass text, values and "now" in; decisions come out.

pub mod advisory;
pub mod aptrelease;
pub mod aptsources;
pub mod builddeps;
pub mod change;
pub mod channel;
pub mod config;
pub mod cron;
pub mod date;
pub mod deb822;
pub mod debian;
pub mod debuginfo;
pub mod duration;
pub mod form;
pub mod glob;
pub mod incoming;
pub mod job;
pub mod matrix;
pub mod metrics;
pub mod names;
pub mod perm;
pub mod pipeline;
pub mod props;
pub mod redact;
pub mod retention;
pub mod rpmspec;
pub mod schedule;
pub mod schema;
pub mod size;
pub mod state;
mod toml_reader;

pub use config::{Component, ConfigErrors, Family, FarmConfig, StepSpec, Target, WorkerDef};
pub use state::{BuildState, StepState};
