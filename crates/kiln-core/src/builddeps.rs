//! Whether a Debian source package's build dependencies can be met before
//! it goes to a worker: the fields that say what it needs, the stanza
//! `dose-builddebcheck` checks for it, and what the solver's report says is
//! missing. Fetching package lists and running the solver are the master's.

use crate::deb822::{parse_paragraph, ControlError};
use std::collections::BTreeMap;

/// The fields of a source stanza that name what its build needs or must not have.
pub const NEED_FIELDS: [&str; 6] = [
    "Build-Depends",
    "Build-Depends-Arch",
    "Build-Depends-Indep",
    "Build-Conflicts",
    "Build-Conflicts-Arch",
    "Build-Conflicts-Indep",
];

/// What a source package's build needs: its `Build-*` fields, each on one line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct BuildNeeds {
    pub fields: Vec<(&'static str, String)>,
}

/// The build needs of a `debian/control` (its first paragraph, the source
/// stanza) or of a `.dsc` (clear-signed or not).
pub fn build_needs(control: &str) -> Result<BuildNeeds, ControlError> {
    let p = parse_paragraph(control)?;
    let mut fields = Vec::new();
    for name in NEED_FIELDS {
        let Some((_, value)) = p.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) else { continue };
        // Continuation lines joined; a comment line inside a field was dropped by the parser.
        let one_line: Vec<&str> = value.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let one_line = one_line.join(" ").replace('\t', " ");
        let one_line = one_line.trim().trim_end_matches(',').trim().to_string();
        if one_line.chars().any(char::is_control) {
            return Err(ControlError::BadEntry { field: name, entry: one_line.chars().take(80).collect() });
        }
        if !one_line.is_empty() {
            fields.push((name, one_line));
        }
    }
    Ok(BuildNeeds { fields })
}

/// What checking a build's dependencies found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything it needs can be installed.
    Buildable,
    /// Some of what it needs cannot.
    Unresolvable(Unmet),
    /// It could not be checked (why); it goes ahead.
    Unknown(String),
}

/// Whether a build of `component` on `target` has its build dependencies
/// checked before it goes to a worker: a deb target that checks them, and
/// the standard pipeline over a source tree (a component of its own steps
/// says what it needs itself).
pub fn is_checked(target: &crate::Target, component: &crate::Component) -> bool {
    target.family == crate::Family::Deb
        && target.check_build_depends
        && component.steps.is_empty()
        && component.source.is_some()
}

/// The name the stanza of build `id` has in the solver's input and report.
fn stanza_name(id: i64) -> String {
    format!("kiln-build-{id}")
}

/// A `Sources` stanza standing for build `id`, for `dose-builddebcheck`.
pub fn check_stanza(id: i64, needs: &BuildNeeds) -> String {
    let mut s = format!("Package: {}\nVersion: 0\nArchitecture: any\n", stanza_name(id));
    for (name, value) in &needs.fields {
        s.push_str(&format!("{name}: {value}\n"));
    }
    s.push('\n');
    s
}

/// What cannot be met for one build: each unmet relation, and the package
/// that needs it when that is not the build itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unmet {
    /// `(relation, needed_by)`, as the solver words the relation but
    /// without the native architecture's qualifier.
    pub missing: Vec<(String, Option<String>)>,
    /// Relations that conflict, as the solver words them.
    pub conflicts: Vec<String>,
}

impl Unmet {
    /// The packages that are missing, by name, for the API.
    pub fn missing_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.missing.iter().map(|(rel, _)| rel.clone()).collect();
        names.dedup();
        names
    }

    /// One sentence for people: what is missing (and for whom).
    pub fn message(&self) -> String {
        let mut parts: Vec<String> = self
            .missing
            .iter()
            .map(|(rel, by)| match by {
                Some(by) => format!("{rel} (needed by {by})"),
                None => rel.clone(),
            })
            .collect();
        parts.dedup();
        let mut message = String::new();
        if !parts.is_empty() {
            message = format!("its build dependencies cannot be met: nothing provides {}", parts.join(", "));
        }
        if !self.conflicts.is_empty() {
            if message.is_empty() {
                message.push_str("its build dependencies cannot be met");
            }
            message.push_str(&format!("; conflicting: {}", self.conflicts.join(", ")));
        }
        if message.is_empty() {
            message = "its build dependencies cannot be met (the solver gave no reason)".into();
        }
        message
    }
}

/// The builds a `dose-builddebcheck --failures --explain` report finds
/// broken, by id, with what they lack. `arch` is the native architecture,
/// whose qualifier (`libfoo-dev:amd64`) is dropped from what is shown.
pub fn broken_builds(report: &str, arch: &str) -> BTreeMap<i64, Unmet> {
    let qualifier = format!(":{arch}");
    let unqualify = |rel: &str| -> String {
        rel.split(" | ")
            .map(|alt| match alt.split_once(' ') {
                Some((name, rest)) => format!("{} {rest}", name.trim_end_matches(qualifier.as_str())),
                None => alt.trim_end_matches(qualifier.as_str()).to_string(),
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let mut broken: BTreeMap<i64, Unmet> = BTreeMap::new();
    let mut current: Option<i64> = None;
    // The package a `missing` reason is about (the build itself, or one of
    // the packages it pulls in).
    let mut about: Option<String> = None;
    for line in report.lines() {
        let indent = line.len() - line.trim_start().len();
        let Some((key, value)) = line.trim().split_once(':') else { continue };
        let value = value.trim();
        match (indent, key) {
            (2, "package") => {
                current = value.strip_prefix("kiln-build-").and_then(|n| n.parse().ok());
                about = None;
            }
            (2, "status") if value == "broken" => {
                if let Some(id) = current {
                    broken.entry(id).or_default();
                }
            }
            (_, "package") if indent > 2 => about = Some(value.to_string()),
            (_, "unsat-dependency") => {
                if let Some(id) = current {
                    let by = about.clone().filter(|p| !p.starts_with("kiln-build-"));
                    broken.entry(id).or_default().missing.push((unqualify(value), by));
                }
            }
            (_, "unsat-conflict") => {
                if let Some(id) = current {
                    broken.entry(id).or_default().conflicts.push(unqualify(value));
                }
            }
            _ => {}
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_come_from_the_source_stanza_on_one_line_each() {
        let control = "Source: hello\nBuild-Depends: debhelper-compat (= 13),\n libfoo-dev (>= 2),\n\
                       # a comment\n zlib1g-dev,\nbuild-conflicts: libbad-dev\n\nPackage: hello\nDepends: x\n";
        let needs = build_needs(control).expect("parses");
        assert_eq!(
            needs.fields,
            [
                ("Build-Depends", "debhelper-compat (= 13), libfoo-dev (>= 2), zlib1g-dev".to_string()),
                ("Build-Conflicts", "libbad-dev".to_string())
            ]
        );
        assert_eq!(
            check_stanza(7, &needs),
            "Package: kiln-build-7\nVersion: 0\nArchitecture: any\nBuild-Depends: debhelper-compat (= 13), \
             libfoo-dev (>= 2), zlib1g-dev\nBuild-Conflicts: libbad-dev\n\n"
        );
        assert!(build_needs("Source: x\n").expect("parses").fields.is_empty());
        assert!(build_needs("no colon here\n").is_err());
        assert!(build_needs("Source: x\nBuild-Depends: a,\r b\n").is_err(), "a control character is refused");
    }

    #[test]
    fn the_report_names_what_is_missing_and_for_whom() {
        // As dose-builddebcheck 7 words it.
        let report = "output-version: 1.2\nnative-architecture: amd64\nreport:\n -\n  package: kiln-build-7\n  \
version: 0\n  architecture: any\n  type: src\n  status: broken\n  reasons:\n   -\n    missing:\n     pkg:\n      \
package: kiln-build-7\n      version: 0\n      architecture: any\n      type: src\n      \
unsat-dependency: libnotthere-dev:amd64\n -\n  package: kiln-build-9\n  version: 0\n  status: broken\n  \
reasons:\n   -\n    missing:\n     pkg:\n      package: libmid1\n      version: 1\n      \
unsat-dependency: libgone1:amd64 (>= 2)\n     depchains:\n      -\n       depchain:\n        -\n         \
package: kiln-build-9\n         depends: libmid1:amd64\n \nbinary-packages: 63442\nbroken-packages: 2\n";
        let broken = broken_builds(report, "amd64");
        assert_eq!(broken.len(), 2);
        assert_eq!(broken[&7].missing_names(), ["libnotthere-dev"]);
        assert_eq!(broken[&7].message(), "its build dependencies cannot be met: nothing provides libnotthere-dev");
        assert_eq!(
            broken[&9].message(),
            "its build dependencies cannot be met: nothing provides libgone1 (>= 2) (needed by libmid1)"
        );
        assert!(broken_builds("report:\n", "amd64").is_empty());
    }
}
