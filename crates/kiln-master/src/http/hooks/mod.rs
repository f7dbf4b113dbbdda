//! Change hooks: forges' push events (`forges`), checked against the
//! forge's secret before anything else, and Buildbot's base hook (`base`).
//! Both hand what they learn to [`crate::ops::requests`].

pub mod base;
pub mod forges;
