//! Glob patterns for artifact paths: `*` and `?` within one path segment,
//! `**` for any number of segments. Paths use `/`; matching is exact-case.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<String>,
}

impl Pattern {
    pub fn new(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("a pattern may not be empty".into());
        }
        if text.starts_with('/') {
            return Err("a pattern is relative to the build's work dir; drop the leading '/'".into());
        }
        let segments: Vec<String> = text.split('/').map(str::to_string).collect();
        if segments.iter().any(|s| s == ".." || s.is_empty()) {
            return Err("a pattern may not contain '..' or empty segments".into());
        }
        Ok(Pattern { segments })
    }

    /// Whether a relative path (segments separated by `/`) matches.
    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        match_segments(&self.segments, &parts)
    }
}

fn match_segments(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => (0..=path.len()).any(|i| match_segments(rest, &path[i..])),
        Some((first, rest)) => match path.split_first() {
            Some((p, prest)) => match_one(first.as_bytes(), p.as_bytes()) && match_segments(rest, prest),
            None => false,
        },
    }
}

/// `*` and `?` within one segment.
fn match_one(pat: &[u8], s: &[u8]) -> bool {
    match pat.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_one(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && match_one(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_one(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p).expect("pattern").matches(s)
    }

    #[test]
    fn globs() {
        assert!(m("*.deb", "hello_1.0_amd64.deb"));
        assert!(!m("*.deb", "out/hello_1.0_amd64.deb"));
        assert!(m("out/*.deb", "out/hello_1.0_amd64.deb"));
        assert!(m("**/*.rpm", "RPMS/x86_64/hello-1.0.rpm"));
        assert!(m("**/*.rpm", "hello-1.0.rpm"));
        assert!(m("out/?.txt", "out/a.txt"));
        assert!(!m("out/?.txt", "out/ab.txt"));
        assert!(Pattern::new("../x").is_err());
        assert!(Pattern::new("/etc/*").is_err());
        assert!(Pattern::new("").is_err());
    }
}
