//! Debug packages and where they are published: apart from what users
//! install, as Debian's debug archive and RHEL's `-debuginfo` repositories
//! keep them, for those who opt in.

/// What a target's YUM repository of debug packages is called: the
/// target's name with this after it (`el-9-x86_64-debuginfo`).
pub const DEBUGINFO_SUFFIX: &str = "-debuginfo";

/// Whether an RPM named `name` holds debug information (rpmbuild's
/// `NAME-debuginfo` and `NAME-debugsource`).
pub fn is_debuginfo_rpm(name: &str) -> bool {
    name.ends_with("-debuginfo") || name.ends_with("-debugsource")
}

/// The repository, of the two a target has, that an RPM named `name` goes to.
pub fn yum_repository_for(target: &str, name: &str) -> String {
    if is_debuginfo_rpm(name) {
        format!("{target}{DEBUGINFO_SUFFIX}")
    } else {
        target.to_string()
    }
}

/// Whether a `.deb` is debug symbols (what dh_strip makes as
/// `NAME-dbgsym`), by its control fields `Auto-Built-Package` and `Section`.
pub fn is_debug_symbols_deb(name: &str, auto_built_package: Option<&str>, section: Option<&str>) -> bool {
    auto_built_package == Some("debug-symbols") || (name.ends_with("-dbgsym") && section == Some("debug"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_packages_are_told_apart_by_their_names_and_fields() {
        assert_eq!(yum_repository_for("el-9-x86_64", "hello-debuginfo"), "el-9-x86_64-debuginfo");
        assert_eq!(yum_repository_for("el-9-x86_64", "hello-debugsource"), "el-9-x86_64-debuginfo");
        assert_eq!(yum_repository_for("el-9-x86_64", "hello-debuginfo-tools"), "el-9-x86_64");
        assert!(is_debug_symbols_deb("hello-dbgsym", Some("debug-symbols"), Some("debug")));
        assert!(is_debug_symbols_deb("hello-dbgsym", None, Some("debug")));
        assert!(!is_debug_symbols_deb("hello-dbgsym", None, Some("devel")), "only a debug section makes it one");
        assert!(!is_debug_symbols_deb("hello", None, Some("debug")));
    }
}
