//! Which uploads in an incoming directory are ready to take. Files arrive
//! there one by one (scp, sftp, dput), so an upload is taken only when its
//! control file (`.changes`, else a `.dsc` no `.changes` names, else a
//! `.src.rpm`) and every file it lists are there and none of them has
//! changed for a quiet period. One whose files never all arrive is taken
//! after `wait` anyway, to be rejected with the reason; so is a file no
//! control file names.

use std::collections::BTreeSet;
use std::time::Duration;

/// A file in the incoming directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// Time since it last changed.
    pub age: Duration,
    /// For a control file: the files it lists (a `.changes`: with what
    /// its `.dsc` lists); `None` when it cannot be read (yet).
    pub lists: Option<Vec<String>>,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// Take this upload: its control file and the listed files present.
    Upload { control: String, files: Vec<String> },
    /// A file nothing names, left longer than `wait`.
    Stray(String),
}

/// The kind of a control file name; lower sorts first (a `.changes` claims
/// its `.dsc` before the `.dsc` could count as an upload of its own).
fn control_rank(name: &str) -> Option<u8> {
    [".changes", ".dsc", ".src.rpm"].iter().position(|s| name.ends_with(s)).map(|p| p as u8)
}

pub fn ready(entries: &[Entry], quiet: Duration, wait: Duration) -> Vec<Ready> {
    let present: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let mut controls: Vec<&Entry> = entries.iter().filter(|e| control_rank(&e.name).is_some()).collect();
    controls.sort_by_key(|e| (control_rank(&e.name), e.name.clone()));
    let age = |name: &str| entries.iter().find(|e| e.name == name).map(|e| e.age);
    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    for c in controls {
        if claimed.contains(c.name.as_str()) {
            continue;
        }
        claimed.insert(&c.name);
        let listed: Vec<&str> = c.lists.iter().flatten().map(String::as_str).filter(|n| *n != c.name).collect();
        claimed.extend(listed.iter().copied());
        let here: Vec<&str> = listed.iter().copied().filter(|n| present.contains(n)).collect();
        let quiet_now = std::iter::once(c.name.as_str()).chain(here.iter().copied()).all(|n| age(n) >= Some(quiet));
        // An unreadable control file that has stopped changing will not get better.
        let complete = here.len() == listed.len();
        if quiet_now && (complete || c.age >= wait) {
            out.push(Ready::Upload { control: c.name.clone(), files: here.iter().map(|n| n.to_string()).collect() });
        }
    }
    for e in entries {
        if !claimed.contains(e.name.as_str()) && e.age >= wait {
            out.push(Ready::Stray(e.name.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, secs: u64, lists: Option<&[&str]>) -> Entry {
        Entry {
            name: name.into(),
            age: Duration::from_secs(secs),
            lists: lists.map(|l| l.iter().map(|s| s.to_string()).collect()),
        }
    }

    const QUIET: Duration = Duration::from_secs(10);
    const WAIT: Duration = Duration::from_secs(3600);

    #[test]
    fn an_upload_is_taken_once_complete_and_quiet() {
        let dsc_files: &[&str] = &["a_1.dsc", "a_1.tar.xz"];
        let mut dir = vec![entry("a_1.tar.xz", 60, None), entry("a_1.dsc", 60, Some(&["a_1.tar.xz"]))];
        // The .changes has not come: the .dsc is an upload of its own only
        // once nothing names it, which is the case now.
        assert_eq!(
            ready(&dir, QUIET, WAIT),
            [Ready::Upload { control: "a_1.dsc".into(), files: vec!["a_1.tar.xz".into()] }]
        );
        // With a .changes naming both, the .changes is the upload.
        dir.push(entry("a_1_source.changes", 30, Some(dsc_files)));
        assert_eq!(
            ready(&dir, QUIET, WAIT),
            [Ready::Upload {
                control: "a_1_source.changes".into(),
                files: vec!["a_1.dsc".into(), "a_1.tar.xz".into()]
            }]
        );
        // A file that is still changing holds it back.
        dir[0].age = Duration::from_secs(2);
        assert!(ready(&dir, QUIET, WAIT).is_empty());
    }

    #[test]
    fn an_incomplete_upload_waits_then_is_taken_to_be_rejected() {
        let dir = vec![entry("b_1_source.changes", 60, Some(&["b_1.dsc", "b_1.tar.xz"])), entry("b_1.dsc", 60, None)];
        assert!(ready(&dir, QUIET, WAIT).is_empty(), "b_1.tar.xz may still come");
        let late =
            vec![entry("b_1_source.changes", 4000, Some(&["b_1.dsc", "b_1.tar.xz"])), entry("b_1.dsc", 4000, None)];
        assert_eq!(
            ready(&late, QUIET, WAIT),
            [Ready::Upload { control: "b_1_source.changes".into(), files: vec!["b_1.dsc".into()] }]
        );
        // An unreadable control file is taken when quiet (to be rejected as malformed).
        assert_eq!(
            ready(&[entry("c.changes", 20, None)], QUIET, WAIT),
            [Ready::Upload { control: "c.changes".into(), files: vec![] }]
        );
        assert!(ready(&[entry("c.changes", 2, None)], QUIET, WAIT).is_empty());
    }

    #[test]
    fn strays_go_after_the_wait_and_rpms_come_alone() {
        let dir =
            vec![entry("x.tar.gz", 4000, None), entry("y.tar.gz", 20, None), entry("k-1-1.src.rpm", 20, Some(&[]))];
        assert_eq!(
            ready(&dir, QUIET, WAIT),
            [Ready::Upload { control: "k-1-1.src.rpm".into(), files: vec![] }, Ready::Stray("x.tar.gz".into())]
        );
    }
}
