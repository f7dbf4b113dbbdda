//! Validation of the names users give to things (components, targets,
//! workers, steps, properties). They appear in URLs, file names and
//! environment variables, so they are kept to a safe alphabet.

/// A name of a component, target, worker or step: starts with a letter or
/// digit, then letters, digits and `._+-`, at most 100 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name may not be empty".into());
    }
    if name.len() > 100 {
        return Err(format!("name is {} characters long; at most 100 are allowed", name.len()));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c)) {
        return Err(format!("invalid name {name:?}: use letters, digits and '._+-', starting with a letter or digit"));
    }
    Ok(())
}

/// A property name: letters, digits, `_`, `-` and `.`, starting with a letter
/// or `_`, at most 64 characters.
pub fn check_property_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("invalid property name {name:?}: it must be 1 to 64 characters long"));
    }
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
        return Err(format!(
            "invalid property name {name:?}: use letters, digits and '_-.', starting with a letter or '_'"
        ));
    }
    Ok(())
}

/// An artifact's file name: one path segment of letters, digits and
/// `._+-~:` (what Debian and RPM package file names use), at most 255 bytes.
pub fn valid_artifact_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._+-~:".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("debian-12-amd64").is_ok());
        assert!(check_name("libstdc++6").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("../etc").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"a".repeat(101)).is_err());
        assert!(check_property_name("release").is_ok());
        assert!(check_property_name("1x").is_err());
        assert!(check_property_name("a b").is_err());
        assert!(valid_artifact_name("hello_2.12-1~nightly20261122.17_amd64.deb"));
        assert!(!valid_artifact_name("../x") && !valid_artifact_name("..") && !valid_artifact_name("a b"));
    }
}
