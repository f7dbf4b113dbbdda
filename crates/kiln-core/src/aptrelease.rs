//! An APT archive's `Release` (the signed text of its `InRelease`), as a
//! client reads it: which suite it is, until when it is valid, and the
//! index files it lists with their sizes and SHA-256 sums. Verifying the
//! signature and fetching are the caller's.

/// What a `Release` says of itself and its index files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    pub suite: Option<String>,
    pub codename: Option<String>,
    /// As written (RFC 2822), when the archive sets it.
    pub valid_until: Option<String>,
    /// `(sha256, size, path)` of each index in its `SHA256` section.
    pub sha256: Vec<(String, u64, String)>,
}

/// Reads a `Release`'s own fields and its `SHA256` section.
pub fn parse(text: &str) -> Release {
    let mut r = Release::default();
    let mut in_sha256 = false;
    for line in text.lines() {
        if line.starts_with(' ') {
            if in_sha256 {
                if let [hash, size, path] = line.split_whitespace().collect::<Vec<_>>()[..] {
                    if let Ok(size) = size.parse() {
                        r.sha256.push((hash.to_ascii_lowercase(), size, path.to_string()));
                    }
                }
            }
            continue;
        }
        in_sha256 = false;
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim().to_string();
        match key {
            "Suite" => r.suite = Some(value),
            "Codename" => r.codename = Some(value),
            "Valid-Until" => r.valid_until = Some(value),
            "SHA256" => in_sha256 = true,
            _ => {}
        }
    }
    r
}

impl Release {
    /// Whether this is the `suite` asked for (by suite or codename, as
    /// apt checks): another suite's validly signed `Release` served in its
    /// place is refused.
    pub fn is_suite(&self, suite: &str) -> bool {
        self.suite.as_deref() == Some(suite) || self.codename.as_deref() == Some(suite)
    }

    /// The listed index at `path`: `(sha256, size)`.
    pub fn listed(&self, path: &str) -> Option<(&str, u64)> {
        self.sha256.iter().find(|(_, _, p)| p == path).map(|(h, s, _)| (h.as_str(), *s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_names_its_suite_validity_and_indexes() {
        let text = "Origin: Debian\nSuite: stable\nCodename: bookworm\nValid-Until: Sat, 17 Jun 2023 08:56:05 UTC\n\
                    MD5Sum:\n 0123 50060337 main/binary-amd64/Packages\nSHA256:\n 9E0B5A  8790396 main/binary-amd64/Packages.xz\n \
                    6777ea 12084798 main/binary-amd64/Packages.gz\nAcquire-By-Hash: yes\n";
        let r = parse(text);
        assert!(r.is_suite("bookworm") && r.is_suite("stable") && !r.is_suite("trixie"));
        assert_eq!(r.valid_until.as_deref(), Some("Sat, 17 Jun 2023 08:56:05 UTC"));
        assert_eq!(r.listed("main/binary-amd64/Packages.xz"), Some(("9e0b5a", 8790396)));
        assert_eq!(r.listed("main/binary-amd64/Packages"), None, "only the SHA256 section counts");
        assert_eq!(r.sha256.len(), 2);
    }
}
