//! A machine's own APT sources, as text: which Debian mirror serves which
//! suite there. A target whose `mirror` is `host` reads its suites from
//! there (the worker's for build roots, the master's for checking build
//! dependencies). Reading the files is the caller's.

/// Each `deb` entry's http(s) URI and suite, in the order apt lists them:
/// first the deb822 `.sources` files (`texts`, in file-name order), then the
/// one-line `sources.list`.
pub fn debian_sources(deb822_files: &[String], sources_list: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for stanza in deb822_files.iter().flat_map(|t| t.split("\n\n")) {
        let field = |name: &str| stanza.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()));
        let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) else { continue };
        if !field("Types:").unwrap_or_default().split_whitespace().any(|t| t == "deb") {
            continue;
        }
        for uri in uris.split_whitespace().filter(|u| u.starts_with("http")) {
            found.extend(suites.split_whitespace().map(|s| (uri.to_string(), s.to_string())));
        }
    }
    found.extend(sources_list.lines().filter_map(|l| {
        let mut w = l.split_whitespace().filter(|w| !w.starts_with('['));
        (w.next()? == "deb").then_some(())?;
        let uri = w.next()?.to_string();
        let suite = w.next()?.to_string();
        uri.starts_with("http").then_some((uri, suite))
    }));
    found
}

/// The mirror that serves `suite` among `sources`, else the first that
/// serves a release suite (not `-updates` or `-security`).
pub fn mirror_for(sources: &[(String, String)], suite: &str) -> Option<String> {
    sources
        .iter()
        .find(|(_, s)| s == suite)
        .or_else(|| sources.iter().find(|(_, s)| !s.contains('-')))
        .map(|(uri, _)| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_come_from_both_formats_in_apts_order() {
        let deb822 = vec![
            "Types: deb\nURIs: http://deb.example.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
             Types: deb-src\nURIs: http://src.example.org/debian\nSuites: bookworm\n"
                .to_string(),
        ];
        let list = "# comment\ndeb [signed-by=/k.gpg] https://sec.example.org/debian-security bookworm-security main\n\
                    deb cdrom:/ bookworm main\n";
        let found = debian_sources(&deb822, list);
        let pairs: Vec<(&str, &str)> = found.iter().map(|(u, s)| (u.as_str(), s.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("http://deb.example.org/debian", "bookworm"),
                ("http://deb.example.org/debian", "bookworm-updates"),
                ("https://sec.example.org/debian-security", "bookworm-security")
            ]
        );
        assert_eq!(mirror_for(&found, "bookworm-security").as_deref(), Some("https://sec.example.org/debian-security"));
        assert_eq!(mirror_for(&found, "trixie").as_deref(), Some("http://deb.example.org/debian"));
        assert_eq!(mirror_for(&[], "trixie"), None);
    }
}
