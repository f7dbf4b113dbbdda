//! YUM/DNF repository metadata (`repodata/`) for RPM packages.
//!
//! This renders the same files `createrepo_c --unique-md-filenames` writes and
//! that dnf, librepo and libsolv read:
//!
//! * `repodata/<sha256>-primary.xml.gz`: names, versions, checksums, locations,
//!   dependencies and the "primary" files (under `/etc/`, containing `bin/`, or
//!   `/usr/lib/sendmail`) of every package;
//! * `repodata/<sha256>-filelists.xml.gz`: every file of every package;
//! * `repodata/<sha256>-other.xml.gz`: changelogs (the newest
//!   [`CHANGELOG_LIMIT`] entries of each package);
//! * `repodata/repomd.xml`: the index of the three, with the sha256 of each
//!   file as stored (`checksum`) and decompressed (`open-checksum`).
//!
//! The work is split in two so that regenerating a repository never re-reads
//! package files. [`inspect_rpm`] reads an RPM's headers once, when the package
//! is published, and renders its three XML fragments into an [`RpmEntry`] that
//! the caller stores (as JSON). [`render_repodata`] then only concatenates
//! stored fragments and compresses them. Signing `repomd.xml` is the caller's
//! business.
//!
//! RPM headers are untrusted input. They are parsed here by a small,
//! bounds-checked reader rather than through the `rpm` crate's getters: that
//! reader never panics or over-allocates on a malformed header, replaces invalid
//! UTF-8 instead of rejecting the package, and gives the exact byte range of the
//! main header that `<rpm:header-range>` needs. The tag numbers and flag bits
//! come from the `rpm` crate. All text is XML-escaped, and characters that XML
//! 1.0 cannot carry at all (most C0 controls) are dropped.
//!
//! The work is done in stages, one file each: `rpmhead` reads the lead and
//! the signature and main headers of an RPM file, `xml` escapes and writes
//! XML, `entry` makes an [`RpmEntry`] from a package's headers, and
//! `repodata` renders `repodata/` from stored entries.

mod entry;
mod repodata;
mod rpmhead;
mod updateinfo;
mod xml;

pub use entry::{inspect_rpm, is_primary_file, RpmEntry, CHANGELOG_LIMIT};
pub use repodata::{render_repodata, render_repodata_cached, RepoFile, GZIP_LEVEL};
pub use rpmhead::check_rpm;
pub use updateinfo::render_updateinfo;

/// Test RPMs made by hand, for the tests of other modules.
#[cfg(test)]
pub(crate) mod rpmhead_tests {
    pub(crate) use super::rpmhead::tests::{build, Spec};
}
