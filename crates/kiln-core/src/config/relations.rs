//! What a `[[component]]` says about other components and their packages:
//! `rebuild_after` (some of its own `depends_on`) and `adopts` (package
//! names it takes over from the component that published them first).

use crate::toml_reader::{Reader, Span, Tbl};

/// A component's `rebuild_after`: some of its own `depends_on`.
pub(super) fn read_rebuild_after(
    r: &mut Reader<'_>,
    tbl: Tbl<'_>,
    what: &str,
    depends_on: &[(String, Span)],
) -> Vec<String> {
    let mut rebuild_after = Vec::new();
    for (dep, dspan) in r.string_list(tbl, "rebuild_after", what).unwrap_or_default() {
        if depends_on.iter().any(|(d, _)| d == &dep) {
            rebuild_after.push(dep);
        } else {
            r.err(&dspan, format!("{what}: `rebuild_after` names {dep:?}, which is not in its `depends_on`"));
        }
    }
    rebuild_after
}

/// A component's `adopts`: package names, each valid as a Debian or an RPM
/// package name.
pub(super) fn read_adopts(r: &mut Reader<'_>, tbl: Tbl<'_>, what: &str) -> Vec<String> {
    let mut adopts = Vec::new();
    for (name, span) in r.string_list(tbl, "adopts", what).unwrap_or_default() {
        let ok = crate::names::check_deb_name("package", &name).is_ok()
            || crate::names::check_rpm_field("package", &name).is_ok();
        if ok {
            adopts.push(name);
        } else {
            r.err(&span, format!("{what}: `adopts` names {name:?}, which is not a package name"));
        }
    }
    adopts
}
