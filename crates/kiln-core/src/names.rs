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

/// Why a name from a package's control data is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is not valid: {rule}")]
pub struct PackageNameError {
    pub what: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn package_error(what: &'static str, value: &str, rule: &'static str) -> PackageNameError {
    // Control data is untrusted: quote at most a short prefix of it.
    let value: String = value.chars().take(80).collect();
    PackageNameError { what, value, rule }
}

/// A Debian package or source name (Policy 5.6.1/5.6.7): at least two
/// characters, lower-case letters, digits and `+-.`, starting with a letter
/// or digit. It becomes a directory of the pool, so nothing else passes.
pub fn check_deb_name(what: &'static str, name: &str) -> Result<(), PackageNameError> {
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.len() < 2
        || name.len() > 200
        || !first_ok
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
    {
        return Err(package_error(
            what,
            name,
            "use 2-200 lower-case letters, digits and '+-.', starting with a letter or digit",
        ));
    }
    Ok(())
}

/// A Debian version (Policy 5.6.12): `[epoch:]upstream[-revision]`, the
/// epoch digits, the rest letters, digits and `.+~-:` starting with a digit.
pub fn check_deb_version(version: &str) -> Result<(), PackageNameError> {
    let rule =
        "use [epoch:]upstream[-revision]: digits for the epoch, then letters, digits and '.+~-:' starting with a digit";
    let (epoch, rest) = match version.split_once(':') {
        Some((e, r)) => (Some(e), r),
        None => (None, version),
    };
    let epoch_ok = epoch.is_none_or(|e| !e.is_empty() && e.len() <= 10 && e.bytes().all(|b| b.is_ascii_digit()));
    let upstream = rest.rsplit_once('-').map_or(rest, |(u, _)| u);
    let rest_ok = !upstream.is_empty()
        && upstream.starts_with(|c: char| c.is_ascii_digit())
        && rest.len() <= 200
        && rest.chars().all(|c| c.is_ascii_alphanumeric() || ".+~-:".contains(c))
        && !rest.ends_with('-');
    if !(epoch_ok && rest_ok) {
        return Err(package_error("version", version, rule));
    }
    Ok(())
}

/// A Debian architecture name (`amd64`, `all`, `source`, `linux-any`).
pub fn check_deb_arch(arch: &str) -> Result<(), PackageNameError> {
    if arch.is_empty()
        || arch.len() > 64
        || !arch.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || arch.starts_with('-')
    {
        return Err(package_error("architecture", arch, "use lower-case letters, digits and '-'"));
    }
    Ok(())
}

/// An RPM name, version, release or architecture: letters, digits and
/// `._+-~^` (no path separator, no leading dot or dash), at most 200 bytes.
/// Names and architectures become parts of file names in the pool.
pub fn check_rpm_field(what: &'static str, value: &str) -> Result<(), PackageNameError> {
    if value.is_empty()
        || value.len() > 200
        || value.starts_with(['.', '-'])
        || !value.chars().all(|c| c.is_ascii_alphanumeric() || "._+-~^".contains(c))
    {
        return Err(package_error(what, value, "use letters, digits and '._+-~^', not starting with '.' or '-'"));
    }
    Ok(())
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

    #[test]
    fn package_grammars() {
        for good in ["hello", "libstdc++6", "g++-12", "0ad", "python3.11"] {
            assert!(check_deb_name("package", good).is_ok(), "{good}");
        }
        for bad in ["../../../../tmp/x", "Hello", "a", ".hidden", "-x", "a/b", "a b", "x\ny", ""] {
            let e = check_deb_name("Source", bad).expect_err(bad);
            assert!(e.to_string().starts_with("Source "), "{e}");
        }
        for good in ["1.0", "1:2.12-1", "2.12-1~nightly20261122.17", "1.0+dfsg-1+deb12u1", "0.9~rc1"] {
            assert!(check_deb_version(good).is_ok(), "{good}");
        }
        for bad in ["", "a1.0", "1.0/../x", ":1.0", "x:1.0", "1.0-", "1 0", "1.0\n"] {
            assert!(check_deb_version(bad).is_err(), "{bad}");
        }
        assert!(check_deb_arch("amd64").is_ok() && check_deb_arch("linux-any").is_ok());
        assert!(check_deb_arch("../amd64").is_err() && check_deb_arch("").is_err());
        assert!(check_rpm_field("name", "hello-libs").is_ok() && check_rpm_field("release", "1.el9^post").is_ok());
        for bad in ["", "../x", "a/b", ".x", "-x", "a b"] {
            assert!(check_rpm_field("name", bad).is_err(), "{bad}");
        }
        // A long hostile value is cut in the message.
        let long = "X".repeat(10_000);
        assert!(check_deb_name("Package", &long).expect_err("long").to_string().len() < 300);
    }
}
